"""shard_state (ZeRO stage 1) on the 8 host devices of tests/conftest.py.

Every step's result is blocked on before the next is dispatched: collectives across 8 CPU
devices sharing 2 cores can otherwise starve and hit XLA:CPU's rendezvous timeout.
"""

import math

import chex
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

SHAPES = {"w1": (64, 24), "b1": (24,), "w2": (24, 10), "b2": (10,)}
MODEL_SPECS = {"w1": P(None, "model"), "b1": P("model"), "w2": P("model", None), "b2": P()}


def average_with_last_gradients() -> optax.GradientTransformation:
    """Averages each gradient with the previous one: a state made of the gradients alone,
    not of the old state."""

    def update(grads, last, params=None):
        return jax.tree.map(lambda g, h: (g + h) / 2, grads, last), grads

    return optax.GradientTransformation(lambda params: jax.tree.map(jnp.zeros_like, params), update)


OPTIMIZERS = {  # ours, optax's, and a chain: shard_state wraps any optax transform
    "adamw": lambda: adam_optax.adamw(1e-2, weight_decay=1e-3),
    "optax.adam": lambda: optax.adam(1e-2),
    "clip+average+amsgrad": lambda: optax.chain(
        optax.clip_by_global_norm(1.0),
        average_with_last_gradients(),
        adam_optax.adam(1e-2, amsgrad=True),
    ),
    "adamw8bit": lambda: adam_optax.adamw8bit(1e-2, min_quantized_size=1024),
}


def data_mesh():
    return Mesh(np.array(jax.devices()[:8]), ("data",))


def data_model_mesh():
    return Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))


def make_params(mesh, specs=None):
    rng = np.random.default_rng(0)
    return {
        k: jax.device_put(
            rng.normal(size=shape).astype(np.float32) * 0.3,
            NamedSharding(mesh, (specs or {}).get(k, P())),
        )
        for k, shape in SHAPES.items()
    }


def make_batch(mesh):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 64)).astype(np.float32)
    y = rng.normal(size=(32, 10)).astype(np.float32)
    return jax.device_put((x, y), NamedSharding(mesh, P("data")))


def loss(params, batch):
    x, y = batch
    hidden = jax.nn.relu(x @ params["w1"] + params["b1"])
    return jnp.mean((hidden @ params["w2"] + params["b2"] - y) ** 2)


def make_step(tx):
    def step(params, state, batch):
        updates, state = tx.update(jax.grad(loss)(params, batch), state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(step)


def train(tx, params, batch, steps):
    """`steps` steps; returns the params, the state, how many compiles the calls after the
    first set off (an unwrapped optax.adam's first call commits its uncommitted count, so
    its second call compiles again), and the step's per-device argument bytes."""
    step = make_step(tx)
    state = tx.init(params)
    params, state = jax.block_until_ready(step(params, state, batch))
    with backend_compiles() as compiles:
        for _ in range(steps - 1):
            params, state = jax.block_until_ready(step(params, state, batch))
    memory = step.lower(params, state, batch).compile().memory_analysis()
    return params, state, len(compiles), memory.argument_size_in_bytes


def expected_cuts(shape, spec, axis_size):
    """How many slices the data and model axes cut a state leaf into, from its shape and
    its params' spec alone: the data axis cuts it if it divides a dimension the spec
    leaves unsharded."""
    model_cut = 2 if "model" in spec else 1
    free = [d for d, s in zip(shape, [*spec, None, None], strict=False) if s is None]
    data_cut = axis_size if any(d % axis_size == 0 for d in free) else 1
    return data_cut, model_cut


@pytest.mark.parametrize(
    ("mesh_kind", "name"), [("data", "clip+average+amsgrad"), ("data x model", "optax.adam")]
)
def test_sharded_training_matches_unsharded(mesh_kind, name):
    mesh = data_mesh() if mesh_kind == "data" else data_model_mesh()
    specs = MODEL_SPECS if mesh_kind == "data x model" else {}
    batch = make_batch(mesh)
    expected, plain_state, _, plain_bytes = train(
        OPTIMIZERS[name](), make_params(mesh, specs), batch, steps=20
    )
    tx = adam_optax.shard_state(OPTIMIZERS[name](), mesh)
    params, state, recompiles, sharded_bytes = train(tx, make_params(mesh, specs), batch, steps=20)
    assert recompiles == 0, "a call after the first compiled again"
    chex.assert_trees_all_close(params, expected, rtol=1e-6, atol=1e-6)
    for k, leaf in params.items():
        assert leaf.sharding.is_equivalent_to(expected[k].sharding, leaf.ndim), k

    # Per-device argument bytes drop by what each device no longer holds of the state:
    # its shard in the plain run (XLA's choice there) less the shard the rule gives.
    axis_size, saved = mesh.shape["data"], 0
    plain_leaves = jax.tree.leaves(plain_state)
    sharded = jax.tree_util.tree_flatten_with_path(state.inner)[0]
    assert len(plain_leaves) == len(sharded)
    for (path, leaf), plain in zip(sharded, plain_leaves, strict=True):
        spec = specs.get(path[-1].key, P()) if leaf.ndim else P()
        data_cut, model_cut = expected_cuts(leaf.shape, spec, axis_size)
        shards = leaf.addressable_shards
        assert len(shards) == 8
        for shard in shards:
            assert shard.data.size * data_cut * model_cut == leaf.size, (path, shard.data.shape)
        distinct = {tuple((s.start, s.stop) for s in shard.index) for shard in shards}
        assert len(distinct) == data_cut * model_cut, path
        saved += plain.addressable_shards[0].data.nbytes - leaf.nbytes // (data_cut * model_cut)
    assert plain_bytes - sharded_bytes == saved


def test_8bit_state_is_sharded_like_any_other():
    """The 8-bit state's codes (the params' shape) and block scales (one per row here) are
    plain leaves to the rule: both are cut along their first dimension, 64 rows over 8."""
    mesh = data_mesh()
    batch = make_batch(mesh)
    expected, _, _, _ = train(OPTIMIZERS["adamw8bit"](), make_params(mesh), batch, steps=5)
    tx = adam_optax.shard_state(OPTIMIZERS["adamw8bit"](), mesh)
    params, state, recompiles, _ = train(tx, make_params(mesh), batch, steps=5)
    assert recompiles == 0
    chex.assert_trees_all_close(params, expected, rtol=1e-6, atol=1e-6)
    mu = state.inner[0].mu["w1"]  # (64, 24): 1,536 elements, quantized
    assert isinstance(mu, adam_optax.QuantizedArray)
    for part in (mu.codes, mu.scales):
        assert {shard.data.shape[0] for shard in part.addressable_shards} == {64 // 8}


@pytest.mark.parametrize("jitted", [False, True], ids=["init", "jit(init)"])
def test_each_device_holds_an_eighth_of_divisible_leaves(jitted):
    mesh = data_mesh()
    tx = adam_optax.shard_state(adam_optax.adam(1e-3), mesh)
    state = (jax.jit(tx.init) if jitted else tx.init)(make_params(mesh))
    mu, nu = state.inner[0].mu, state.inner[0].nu
    for k, shape in SHAPES.items():
        eighth = any(d % 8 == 0 for d in shape)
        for leaf in (mu[k], nu[k]):
            for shard in leaf.addressable_shards:
                assert shard.data.size == (math.prod(shape) // 8 if eighth else math.prod(shape))
    assert state.inner[0].count.sharding.is_fully_replicated


@pytest.mark.skipif(not hasattr(jax, "set_mesh"), reason="explicit mesh axes need a newer jax")
def test_jitted_init_on_explicit_axes_keeps_the_model_axis():
    mesh = jax.make_mesh(
        (4, 2), ("data", "model"), axis_types=(jax.sharding.AxisType.Explicit,) * 2
    )
    with jax.set_mesh(mesh):
        params = make_params(mesh, MODEL_SPECS)
        tx = adam_optax.shard_state(adam_optax.adam(1e-2), mesh)
        state = jax.jit(tx.init)(params)
        updates, state = jax.block_until_ready(jax.jit(tx.update)(params, state, params))
    assert state.inner[0].mu["w1"].sharding.spec == P("data", "model")
    assert state.inner[0].nu["w2"].sharding.spec == P("model", None)  # 10 % 4 != 0
    assert state.inner[0].mu["b1"].sharding.spec == P("model")  # its one dimension is taken
    for k, leaf in updates.items():
        assert leaf.sharding.is_equivalent_to(params[k].sharding, leaf.ndim), k


def test_a_mesh_without_the_axis_is_refused():
    with pytest.raises(ValueError, match=r"axis='batch' is not an axis of the mesh.*\('data',\)"):
        adam_optax.shard_state(adam_optax.adam(1e-3), data_mesh(), axis="batch")


BAD_ARGUMENTS = {  # id: (tx, mesh, axis, error, message); once, each failed late or vaguely
    "uncalled_factory": (
        adam_optax.adam,
        data_mesh,
        "data",
        TypeError,
        r"tx must be an optax\.GradientTransformation, got the function adam_optax\.aliases\.ada"
        r"m itself: call it, e.g\. tx=adam_optax\.adamw\(1e-3\)",
    ),
    "not_a_transform": (
        {"lr": 1e-3},
        data_mesh,
        "data",
        TypeError,
        r"tx must be an optax\.GradientTransformation .*got \{'lr': 0\.001\} of type dict",
    ),
    "no_mesh": (
        adam_optax.adam(1e-3),
        lambda: None,
        "data",
        TypeError,
        r"mesh must be a jax\.sharding\.Mesh \(or AbstractMesh\), got None of type NoneType",
    ),
    "devices_not_a_mesh": (
        adam_optax.adam(1e-3),
        lambda: jax.devices()[:8],
        "data",
        TypeError,
        r"mesh must be a jax\.sharding\.Mesh .* of type list",
    ),
    "abstract_mesh_without_the_axis": (
        adam_optax.adam(1e-3),
        lambda: jax.sharding.AbstractMesh((8,), ("batch",)),
        "data",
        ValueError,
        r"axis='data' is not an axis of the mesh, whose axes are \('batch',\)",
    ),
    "axis_not_a_name": (
        adam_optax.adam(1e-3),
        data_mesh,
        0,
        ValueError,
        r"axis=0 is not an axis of the mesh",
    ),
}


@pytest.mark.parametrize("case", BAD_ARGUMENTS.values(), ids=BAD_ARGUMENTS)
def test_bad_arguments_fail_at_construction(case):
    tx, mesh, axis, error, message = case
    with pytest.raises(error, match=message):
        adam_optax.shard_state(tx, mesh(), axis=axis)


def test_an_abstract_mesh_is_accepted():
    tx = adam_optax.shard_state(adam_optax.adam(1e-3), jax.sharding.AbstractMesh((8,), ("data",)))
    assert callable(tx.init) and callable(tx.update)


def test_one_warning_names_the_large_leaves_left_whole():
    mesh = data_mesh()
    params = {"odd": jnp.zeros((257, 259)), "small": jnp.zeros((3,)), "even": jnp.zeros((8, 9))}
    tx = adam_optax.shard_state(adam_optax.adam(1e-3), mesh)
    with pytest.warns(UserWarning) as caught:
        tx.init(params)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "state[0].mu['odd'] (257, 259)" in message
    assert "state[0].nu['odd'] (257, 259)" in message
    assert "small" not in message and "even" not in message
