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

from tests.cases import CONFIGS, MORE_CONFIGS
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


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("config", CONFIGS + MORE_CONFIGS, ids=lambda c: c.id)
def test_empty_leaves_update_and_change_nothing_else(config, dtype):
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
