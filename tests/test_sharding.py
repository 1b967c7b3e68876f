"""State follows its params' sharding on an 8-device mesh (conftest forces 8 host devices)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import adam_optax
from tests.compiles import backend_compiles

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices (see conftest)")


def _mesh():
    return Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))


def _specs():
    return {"w": P("data", "model"), "b": P("model"), "scale": P()}


def _shapes():
    return {"w": (8, 6), "b": (6,), "scale": ()}


def _sharded_params(mesh):
    return {
        k: jax.device_put(jnp.ones(shape, jnp.float32) * 0.5, NamedSharding(mesh, _specs()[k]))
        for k, shape in _shapes().items()
    }


def _moments(state):
    """Every params-shaped tree in an optimizer state, by field name."""
    inner = state[0]
    return {name: getattr(inner, name) for name in inner._fields if name != "count"}


@pytest.mark.parametrize(
    "make",
    [
        lambda: adam_optax.adamw(1e-2),
        lambda: adam_optax.adam(1e-2, amsgrad=True, mu_dtype=jnp.bfloat16),
    ],
)
def test_state_keeps_sharding_through_jit(make):
    tx = make()
    mesh = _mesh()
    params = _sharded_params(mesh)
    state = tx.init(params)
    for tree in _moments(state).values():
        for k, leaf in tree.items():
            assert leaf.sharding.is_equivalent_to(params[k].sharding, leaf.ndim), k

    @jax.jit
    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    grads = jax.tree.map(lambda x: x * 0.1, params)
    params, state = step(params, state, grads)
    with backend_compiles() as compiled:
        for _ in range(2):
            params, state = jax.block_until_ready(step(params, state, grads))
    assert not compiled, "the second call recompiled"
    for tree in _moments(state).values():
        for k, leaf in tree.items():
            assert leaf.sharding.is_equivalent_to(NamedSharding(mesh, _specs()[k]), leaf.ndim), k


def test_init_accepts_shape_dtype_structs():
    mesh = _mesh()
    abstract = {
        k: jax.ShapeDtypeStruct(shape, jnp.bfloat16, sharding=NamedSharding(mesh, _specs()[k]))
        for k, shape in _shapes().items()
    }
    tx = adam_optax.adam(1e-2, nu_dtype=jnp.float32)
    state = tx.init(abstract)[0]
    for k, struct in abstract.items():
        assert state.mu[k].shape == struct.shape and state.mu[k].dtype == jnp.bfloat16
        assert state.nu[k].dtype == jnp.float32
        assert state.mu[k].sharding.is_equivalent_to(struct.sharding, len(struct.shape))
        assert not np.any(np.asarray(state.nu[k]))
    shapes = jax.eval_shape(tx.init, abstract)[0]
    assert shapes.mu["w"].shape == (8, 6) and shapes.nu["w"].dtype == jnp.float32


@pytest.mark.skipif(not hasattr(jax, "set_mesh"), reason="explicit mesh axes need a newer jax")
@pytest.mark.parametrize(
    "make", [lambda: adam_optax.adam(1e-2, amsgrad=True), lambda: adam_optax.adamax(1e-2)]
)
def test_jitted_init_keeps_explicit_sharding(make):
    """With explicit mesh axes (``jax.make_mesh``'s default), a jitted init
    shards the moments like their params, as optax's does, and a step keeps it."""
    tx = make()
    mesh = jax.make_mesh(
        (4, 2), ("data", "model"), axis_types=(jax.sharding.AxisType.Explicit,) * 2
    )
    with jax.set_mesh(mesh):
        params = _sharded_params(mesh)
        state = jax.jit(tx.init)(params)
        updates, state = jax.jit(tx.update)(params, state)
    for tree in [updates, *_moments(state).values()]:
        for k, leaf in tree.items():
            assert leaf.sharding.is_equivalent_to(params[k].sharding, leaf.ndim), k


# 4-bit codes hold two elements a byte, in blocks of 4 here, on the 4x2 mesh: (shape,
# the param's spec, the codes' and the scales' spec). w's and v's codes, 8 and 6 bytes a
# row, keep their P("data", "model"); w's 4 blocks a row split over "model" with their
# scales, v's 3 do not, so its scales keep only the rows' axis; b's one byte (one block
# of 2) cannot be cut in 2: whole.
FOUR_BIT = {
    "w": ((8, 16), P("data", "model"), P("data", "model"), P("data", "model")),
    "v": ((8, 12), P("data", "model"), P("data", "model"), P("data", None)),
    "b": ((2,), P("model"), P(None), P(None)),
}


def test_4bit_state_keeps_sharding_through_jit():
    """Eager init lays out the codes and scales as above, and a jitted step keeps them
    without compiling again. (tests/test_state_sharding.py and test_low_bit.py compare
    sharded 4-bit steps with unsharded ones.)"""
    mesh = _mesh()
    rng = np.random.default_rng(0)
    values = {k: rng.normal(size=shape).astype(np.float32) for k, (shape, *_) in FOUR_BIT.items()}
    params = {k: jax.device_put(values[k], NamedSharding(mesh, FOUR_BIT[k][1])) for k in values}
    tx = adam_optax.adamw4bit(1e-2, min_quantized_size=0, block_size=4)

    def assert_layout(state):
        for moment in (state[0].mu, state[0].nu):
            for k, q in moment.per_leaf().items():
                shape, _, codes_spec, scales_spec = FOUR_BIT[k]
                assert isinstance(q, adam_optax.QuantizedArray) and q.bits == 4, k
                assert q.codes.shape == (*shape[:-1], shape[-1] // 2), k
                assert q.codes.sharding.is_equivalent_to(NamedSharding(mesh, codes_spec), q.ndim)
                assert q.scales.sharding.is_equivalent_to(NamedSharding(mesh, scales_spec), q.ndim)

    state = tx.init(params)
    assert_layout(state)
    step = jax.jit(tx.update)
    grads = {k: jax.device_put(np.sin(values[k]), params[k].sharding) for k in values}
    updates, state = step(grads, state, params)
    with backend_compiles() as compiled:
        for _ in range(2):
            updates, state = jax.block_until_ready(step(grads, state, params))
    assert not compiled, "the second call recompiled"
    assert_layout(state)
    for k, leaf in updates.items():
        assert leaf.sharding.is_equivalent_to(params[k].sharding, leaf.ndim), k
        assert np.all(np.isfinite(np.asarray(leaf))) and np.any(np.asarray(leaf) != 0), k
