"""shard_state and offload_state pass update's extra keyword arguments on, as optax.chain does.

optax.contrib.reduce_on_plateau needs the loss as ``update(..., value=loss)``. It is tried
after a wrapper in a chain (the wrapper must accept ``value`` and pass it by) and inside one
(the wrapper must hand ``value`` to it). Each wrapped run must equal the same chain without
the wrapper, step by step (to float32's last bit, for the sharded runs), and the plateau
must have cut the learning rate: a dropped ``value`` would raise, and a value that never
arrived could not cut it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest
from jax.sharding import Mesh

import adam_optax
from tests.test_offload import needs_host_memory

FACTOR, PATIENCE, STEPS = 0.5, 2, 6


def data_mesh():
    return Mesh(np.array(jax.devices()[:8]), ("data",))


needs_8_devices = pytest.mark.skipif(
    jax.device_count() < 8, reason="needs 8 devices (see conftest)"
)

WRAPPERS = {
    "shard_state": pytest.param(
        lambda tx: adam_optax.shard_state(tx, data_mesh()), marks=needs_8_devices
    ),
    "offload_state": pytest.param(adam_optax.offload_state, marks=needs_host_memory),
}


def plateau():
    return optax.contrib.reduce_on_plateau(factor=FACTOR, patience=PATIENCE)


PLACEMENTS = {  # name: (wrap -> the transform); wrap is the wrapper, or the identity
    "chain(wrapper(adam), reduce_on_plateau)": lambda wrap: optax.chain(
        wrap(adam_optax.adam(0.1)), plateau()
    ),
    "wrapper(chain(adam, reduce_on_plateau))": lambda wrap: wrap(
        optax.chain(adam_optax.adam(0.1), plateau())
    ),
}


def run(tx):
    """STEPS jitted steps on a loss that never improves; the updates and the last state."""
    params = {"w": jnp.arange(16.0).reshape(8, 2) / 16, "b": jnp.ones(3)}

    @jax.jit
    def step(params, state):
        grads = jax.tree.map(jnp.cos, params)
        updates, state = tx.update(grads, state, params, value=jnp.float32(1.0))
        return updates, optax.apply_updates(params, updates), state

    state, history = tx.init(params), []
    for _ in range(STEPS):
        updates, params, state = jax.block_until_ready(step(params, state))
        history.append(updates)
    return history, state


@pytest.mark.parametrize("placement", list(PLACEMENTS))
@pytest.mark.parametrize("wrapper", WRAPPERS.values(), ids=list(WRAPPERS))
def test_reduce_on_plateau_gets_the_value_through_the_wrapper(wrapper, placement):
    make = PLACEMENTS[placement]
    tx = make(wrapper)
    assert isinstance(tx, optax.GradientTransformationExtraArgs)
    got, state = run(tx)
    expected, unwrapped = run(make(lambda tx: tx))
    for step, (g, e) in enumerate(zip(got, expected, strict=True)):
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(e), strict=True):
            # Sharded, XLA may fuse the arithmetic differently: a last-bit difference.
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, err_msg=f"{step}")
    # The loss has not improved for STEPS > PATIENCE steps: the learning rate was cut.
    scale = float(optax.tree.get(state, "scale"))
    assert scale <= FACTOR and scale == float(optax.tree.get(unwrapped, "scale"))


@pytest.mark.parametrize("wrapper", WRAPPERS.values(), ids=list(WRAPPERS))
def test_a_plain_inner_transform_is_not_given_the_extra_args(wrapper):
    """As optax.chain does: a GradientTransformation without extra-args support gets none."""

    def update(updates, state, params=None):
        return updates, state

    inner = optax.GradientTransformation(lambda params: optax.EmptyState(), update)
    tx = wrapper(inner)
    params = {"w": jnp.ones((8, 2))}
    updates, _ = tx.update(params, tx.init(params), params, value=1.0)
    np.testing.assert_array_equal(np.asarray(updates["w"]), np.ones((8, 2)))
