"""Leaves with no elements, such as (4, 0) and (0,), in every transform of tests/cases.py.

A model can hold one (a layer of width 0, an unused embedding table). Each transform must
init and update such a tree, eagerly and under jit, return empty updates of the leaves'
shapes (in the dtype of its other updates), and leave the other leaves' updates as they
are without the empty ones.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import adam_optax
from tests.cases import CONFIGS, MORE_CONFIGS
from tests.test_offload import needs_host_memory
from tests.trajectories import make

# "w" sorts first, so it is leaf 0 with or without the empty leaves: stochastic rounding
# draws its random bits from the leaf's index.
SHAPES = {"w": (3, 8), "x_empty": (4, 0), "y_empty": (0,)}


def params_and_grads(dtype):
    rng = np.random.default_rng(0)
    params = {k: jnp.asarray(rng.standard_normal(s), dtype) for k, s in SHAPES.items()}
    grads = [{k: jnp.asarray(rng.standard_normal(s), dtype) for k, s in SHAPES.items()}]
    return params, [*grads, jax.tree.map(lambda g: -2 * g, grads[0])]


def run(tx, params, grads, step):
    state = tx.init(params)
    history = []
    for g in grads:
        updates, state = step(g, state, params)
        history.append(updates)
    return history


@pytest.mark.parametrize("config", CONFIGS + MORE_CONFIGS, ids=lambda c: c.id)
def test_empty_leaves_update_and_change_nothing_else(config):
    # bfloat16 params for master_weights, which corrects only 16-bit leaves; float32 for
    # the others, whose empty leaves take the same path in any dtype.
    dtype = jnp.bfloat16 if config.id.startswith("master_weights") else jnp.float32
    tx = make(config)
    params, grads = params_and_grads(dtype)
    eager = run(tx, params, grads, tx.update)
    jitted = run(tx, params, grads, jax.jit(tx.update))
    without = run(
        tx,
        {"w": params["w"]},
        [{"w": g["w"]} for g in grads],
        tx.update,
    )
    for step, (e, j, w) in enumerate(zip(eager, jitted, without, strict=True)):
        assert jax.tree.structure(e) == jax.tree.structure(params)
        for name, shape in SHAPES.items():
            assert e[name].shape == j[name].shape == shape, (step, name)
            # The dtype the transform gives updates (tests/test_properties.py checks which).
            assert e[name].dtype == j[name].dtype == e["w"].dtype, (step, name)
        assert np.all(np.isfinite(np.asarray(e["w"], np.float32))), step
        np.testing.assert_array_equal(np.asarray(e["w"]), np.asarray(w["w"]), err_msg=str(step))
        np.testing.assert_allclose(
            np.asarray(j["w"], np.float32), np.asarray(e["w"], np.float32), rtol=1e-2, atol=1e-6
        )


def _data_mesh():
    return jax.sharding.Mesh(np.array(jax.devices()[:8]), ("data",))


WRAPPERS = {
    "shard_state(adamw8bit)": pytest.param(
        lambda: adam_optax.shard_state(
            adam_optax.adamw8bit(1e-2, min_quantized_size=0), _data_mesh()
        ),
        marks=pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices (see conftest)"),
    ),
    "offload_state(adamw8bit)": pytest.param(
        lambda: adam_optax.offload_state(adam_optax.adamw8bit(1e-2, min_quantized_size=0)),
        marks=needs_host_memory,
    ),
}


@pytest.mark.parametrize("make_tx", WRAPPERS.values(), ids=list(WRAPPERS))
def test_empty_leaves_through_the_state_wrappers(make_tx):
    """shard_state leaves an empty leaf's state whole (no dimension to cut), offload_state
    moves it to host memory; the other leaf's updates are those without the empty ones."""
    tx = make_tx()
    params, grads = params_and_grads(jnp.float32)
    jitted = run(tx, params, grads, jax.jit(tx.update))
    without = run(tx, {"w": params["w"]}, [{"w": g["w"]} for g in grads], jax.jit(tx.update))
    for step, (j, w) in enumerate(zip(jitted, without, strict=True)):
        assert {k: v.shape for k, v in j.items()} == SHAPES, step
        np.testing.assert_array_equal(np.asarray(j["w"]), np.asarray(w["w"]), err_msg=str(step))
