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
    mu = state.inner[0].mu.per_leaf()["w1"]  # (64, 24): 1,536 elements, quantized
    assert isinstance(mu, adam_optax.QuantizedArray)
    for part in (mu.codes, mu.scales):
        assert {shard.data.shape[0] for shard in part.addressable_shards} == {64 // 8}


def test_each_device_holds_an_eighth_of_divisible_leaves():
    mesh = data_mesh()
    tx = adam_optax.shard_state(adam_optax.adam(1e-3), mesh)
    state = tx.init(make_params(mesh))
    mu, nu = state.inner[0].mu, state.inner[0].nu
    for k, shape in SHAPES.items():
        eighth = any(d % 8 == 0 for d in shape)
        for leaf in (mu[k], nu[k]):
            for shard in leaf.addressable_shards:
                assert shard.data.size == (math.prod(shape) // 8 if eighth else math.prod(shape))
    assert state.inner[0].count.sharding.is_fully_replicated


def make_mesh(kind, dims):
    axis_type = jax.sharding.AxisType.Explicit if kind == "explicit" else jax.sharding.AxisType.Auto
    if dims == 1:
        return jax.make_mesh((8,), ("data",), axis_types=(axis_type,))
    return jax.make_mesh((4, 2), ("data", "model"), axis_types=(axis_type,) * 2)


IDIOMS = {
    "jit": lambda tx, params: jax.jit(tx.init)(params),
    # The idiom for out_shardings: abstract params, each with its sharding.
    "eval_shape": lambda tx, params: jax.eval_shape(
        tx.init,
        jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), params),
    ),
}


@pytest.mark.parametrize("given", [False, True], ids=["", "param_shardings"])
@pytest.mark.parametrize("dims", [1, 2], ids=["1-D", "2-D"])
@pytest.mark.parametrize("kind", ["auto", "explicit"])
def test_every_init_idiom_lays_out_the_state_as_eager_init_or_raises(kind, dims, given):
    """jit and eval_shape give the eager init's specs and pytree structure exactly, or
    raise: on Auto axes JAX does not say a traced array's layout, so without
    param_shardings init must refuse; on explicit axes, or with param_shardings, it must
    agree with the eager init. The 8-bit state (quantized w1) is in every case."""
    mesh = make_mesh(kind, dims)
    specs = MODEL_SPECS if dims == 2 else {k: P() for k in SHAPES}
    params = make_params(mesh, specs)
    shardings = {k: NamedSharding(mesh, spec) for k, spec in specs.items()}

    def make_tx(param_shardings=None):
        inner = adam_optax.adamw8bit(1e-2, min_quantized_size=1024)
        return adam_optax.shard_state(inner, mesh, param_shardings=param_shardings)

    with jax.set_mesh(mesh):
        eager = make_tx().init(params)
        for idiom, init in IDIOMS.items():
            tx = make_tx(shardings if given else None)
            if kind == "auto" and not given:
                with pytest.raises(
                    ValueError, match=r"cannot tell how params\['b1'\].*param_shardings="
                ):
                    init(tx, params)
                continue
            state = jax.block_until_ready(init(tx, params))
            w1 = state.inner[0].mu.per_leaf()["w1"]
            assert isinstance(w1, adam_optax.QuantizedArray)
            assert jax.tree.structure(state) == jax.tree.structure(eager), idiom
            assert state.state_specs == eager.state_specs, idiom
            if idiom == "jit":  # the arrays too, not just the specs
                leaves = jax.tree.leaves(state.inner)
                for leaf, ref in zip(leaves, jax.tree.leaves(eager.inner), strict=True):
                    assert leaf.sharding.is_equivalent_to(ref.sharding, leaf.ndim)
    assert eager.update_specs == tuple(
        P(*spec, *[None] * (len(SHAPES[k]) - len(spec))) for k, spec in sorted(specs.items())
    )
    for leaf, spec in zip(jax.tree.leaves(eager.inner), eager.state_specs, strict=True):
        assert leaf.sharding.is_equivalent_to(NamedSharding(mesh, spec), leaf.ndim)


def test_jitted_8bit_init_on_explicit_axes_with_a_sharded_last_axis():
    """The block scales of w1 (64, 24) sharded P(None, "model") are made, not sliced from
    the param (explicit axes refuse to slice a sharded axis): laid out like the param but
    for their last axis, as the eager init lays them out."""
    mesh = make_mesh("explicit", 2)
    with jax.set_mesh(mesh):
        params = make_params(mesh, MODEL_SPECS)
        tx = adam_optax.adamw8bit(1e-2, min_quantized_size=1024)
        jitted, eager = jax.jit(tx.init)(params), tx.init(params)
    for state in (jitted, eager):
        w1 = state[0].mu.per_leaf()["w1"]
        assert w1.codes.sharding.is_equivalent_to(NamedSharding(mesh, P(None, "model")), 2)
        assert w1.scales.shape == (64, 1)
        assert w1.scales.sharding.is_equivalent_to(NamedSharding(mesh, P()), 2)


def test_the_eager_layout_is_the_params_spec_with_the_data_axis():
    """An independent statement of the eager layout on the 4x2 mesh."""
    mesh = data_model_mesh()
    tx = adam_optax.shard_state(adam_optax.adam(1e-2), mesh)
    state = tx.init(make_params(mesh, MODEL_SPECS))
    assert state.inner[0].mu["w1"].sharding.spec == P("data", "model")  # (64, 24)
    assert state.inner[0].mu["b1"].sharding.spec == P("model")  # (24,): taken
    assert state.inner[0].mu["w2"].sharding.spec == P("model", None)  # (24, 10): 10 % 4
    assert state.inner[0].mu["b2"].sharding.spec == P(None)  # (10,): 10 % 4
    assert state.update_specs == (P("model"), P(None), P(None, "model"), P("model", None))


def test_param_shardings_that_contradict_the_params_are_refused():
    mesh = data_model_mesh()
    wrong = {k: P() for k in SHAPES}
    tx = adam_optax.shard_state(adam_optax.adam(1e-2), mesh, param_shardings=wrong)
    with pytest.raises(
        ValueError,
        match=r"params\['b1'\] \(24,\) is laid out as .*model.* but param_shardings says",
    ):
        tx.init(make_params(mesh, MODEL_SPECS))
    with pytest.raises(ValueError, match="param_shardings has 1 leaves but the params have 4"):
        adam_optax.shard_state(adam_optax.adam(1e-2), mesh, param_shardings=[P()]).init(
            make_params(mesh)
        )
    with pytest.raises(TypeError, match=r"param_shardings\['w'\] is 'data'"):
        adam_optax.shard_state(adam_optax.adam(1e-2), mesh, param_shardings={"w": "data"})
    with pytest.raises(ValueError, match=r"\['batch'\], which are not axes of the mesh"):
        adam_optax.shard_state(adam_optax.adam(1e-2), mesh, param_shardings={"w": P("batch")}).init(
            {"w": jnp.zeros(8)}
        )


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


def test_an_abstract_mesh_lays_out_the_state_as_its_mesh_does():
    """An AbstractMesh (axis names and sizes, no devices) gives the layout the concrete
    mesh gives, under eval_shape; and a jitted init and step under the concrete mesh put
    every state leaf there, as the layout says."""
    params = {"w": jnp.zeros((16, 4)), "b": jnp.zeros((3,))}
    specs = {"w": P(), "b": P()}

    def tx(mesh):
        inner = adam_optax.adamw8bit(1e-3, min_quantized_size=0, block_size=2)
        return adam_optax.shard_state(inner, mesh, param_shardings=specs)

    abstract = tx(jax.sharding.AbstractMesh((8,), ("data",)))
    got = jax.eval_shape(abstract.init, params)
    expected = jax.eval_shape(tx(data_mesh()).init, params)
    assert got.state_specs == expected.state_specs and got.update_specs == expected.update_specs
    assert P("data", None) in got.state_specs  # w's codes and scales, cut along "data"
    if not hasattr(jax, "set_mesh"):
        return
    with jax.set_mesh(data_mesh()):
        state = jax.jit(abstract.init)(params)
        _, state = jax.block_until_ready(jax.jit(abstract.update)(params, state, params))
    for leaf, spec in zip(jax.tree.leaves(state.inner), state.state_specs, strict=True):
        assert leaf.sharding.is_equivalent_to(NamedSharding(data_mesh(), spec), leaf.ndim)


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


def assert_whole_blocks(shape, codes, scales, block, bits=8):
    """Each device holds whole blocks of the codes and the scales of exactly those blocks:
    read from the shards' index ranges (JAX's, from the shardings), not from the rule.
    4-bit codes hold two elements a byte: byte j of a row holds elements 2j and 2j + 1."""
    n, per_byte = shape[-1], 8 // bits
    scales_shape = (*shape[:-1], -(-n // block))
    codes_at = codes.devices_indices_map((*shape[:-1], n // per_byte))
    scales_at = scales.devices_indices_map(scales_shape)
    for device, (*rows, cols) in codes_at.items():
        *scale_rows, scale_cols = scales_at[device]
        start, stop = (per_byte * i for i in cols.indices(n // per_byte)[:2])  # elements
        assert start % block == 0, (device, start)
        assert stop % block == 0 or stop == n, (device, stop)
        assert scale_cols.indices(scales_shape[-1])[:2] == (start // block, -(-stop // block))
        assert [r.indices(d)[:2] for r, d in zip(rows, shape, strict=False)] == [
            r.indices(d)[:2] for r, d in zip(scale_rows, shape, strict=False)
        ]


@pytest.mark.parametrize("bits", [8, 4])
def test_low_bit_leaves_are_cut_in_whole_blocks_with_their_scales(bits):
    """Blocks of 256 along the last axis, 8 devices: rows when 8 divides them; else the
    last axis when 8 divides the blocks per row and each block is whole; else whole.
    4-bit codes are the same cut, in bytes of two codes: half the elements' last axis.
    Laid out abstractly (eval_shape, no compiles); one leaf then takes real steps."""
    mesh = data_mesh()
    low_bit = adam_optax.adam8bit if bits == 8 else adam_optax.adam4bit
    per_byte = 8 // bits
    per_device = {  # shape: (8-bit codes, scales) shape on each device
        (64, 300): ((8, 300), (8, 2)),  # rows over 8; the 2 blocks (256 + 44) stay together
        (7, 2048): ((7, 256), (7, 1)),  # 8 blocks per row: one block and its scale each
        (4096,): ((512,), (2,)),  # 16 blocks: two each
        (7, 1024): ((7, 1024), (7, 4)),  # 4 blocks per row over 8: whole, small: no warning
        (7, 9472): ((7, 9472), (7, 37)),  # 37 blocks per row: whole (was 1,184 codes each)
    }
    names = {shape: f"p{i}" for i, shape in enumerate(per_device)}
    params = {names[s]: jax.ShapeDtypeStruct(s, jnp.float32) for s in per_device}
    tx = adam_optax.shard_state(
        low_bit(1e-2, min_quantized_size=1024, block_size=256),
        mesh,
        param_shardings={k: P() for k in params},
    )
    with pytest.warns(UserWarning) as caught:
        state = jax.eval_shape(tx.init, params)
    (message,) = [str(w.message) for w in caught]
    assert f"state[0].mu['p4'] (7, 9472) ({bits}-bit, blocks of 256)" in message
    assert "p3" not in message and "p1" not in message
    specs = jax.tree.unflatten(jax.tree.structure(state.inner), state.state_specs)
    for shape, (codes_shape, scales_shape) in per_device.items():
        q = state.inner[0].mu.per_leaf()[names[shape]]
        assert isinstance(q, adam_optax.QuantizedArray) and q.bits == bits
        stored = (*shape[:-1], shape[-1] // per_byte)
        assert q.codes.shape == stored
        for moment in (specs[0].mu, specs[0].nu):  # QuantizedTree of specs
            name = names[shape]
            codes, scales = (NamedSharding(mesh, t[name]) for t in (moment.codes, moment.scales))
            assert codes.shard_shape(stored) == (*codes_shape[:-1], codes_shape[-1] // per_byte)
            assert scales.shard_shape((*shape[:-1], -(-shape[-1] // 256))) == scales_shape
            assert_whole_blocks(shape, codes, scales, 256, bits)

    # Steps on a last-axis cut: what the unsharded step gives, in the same layout. The
    # second step's update reads the codes and scales the first stored (its gradient's
    # sign flipped, so that m must fall back through its codes).
    w = np.random.default_rng(0).normal(size=(7, 2048)).astype(np.float32)
    params = {"w": jnp.asarray(w)}
    plain = low_bit(1e-2, min_quantized_size=1024, block_size=256)
    tx = adam_optax.shard_state(plain, mesh)
    expected, state = plain.init(params), tx.init(params)
    plain_update, sharded_update = jax.jit(plain.update), jax.jit(tx.update)
    for sign in (1, -1):
        g = {"w": jnp.asarray(sign * np.sin(3 * w))}
        want, expected = plain_update(g, expected, params)
        updates, state = jax.block_until_ready(sharded_update(g, state, params))
        chex.assert_trees_all_close(updates, want, rtol=1e-6, atol=1e-7)
    q = state.inner[0].nu.per_leaf()["w"]
    assert {s.data.shape for s in q.codes.addressable_shards} == {(7, 256 // per_byte)}
    assert_whole_blocks(q.shape, q.codes.sharding, q.scales.sharding, 256, bits)


@pytest.mark.parametrize("bits", [8, 4])
def test_low_bit_blocks_on_a_model_sharded_last_axis(bits):
    """On the 4x2 mesh, a (8, 2048) leaf sharded P(None, "model"): 8 blocks per row, 4 per
    model device, with their scales; the data axis takes the rows."""
    mesh = data_model_mesh()
    params = {"w": jax.device_put(jnp.ones((8, 2048)), NamedSharding(mesh, P(None, "model")))}
    low_bit = adam_optax.adam8bit if bits == 8 else adam_optax.adam4bit
    tx = adam_optax.shard_state(low_bit(1e-2, min_quantized_size=1024, block_size=256), mesh)
    q = tx.init(params).inner[0].nu.per_leaf()["w"]
    assert q.bits == bits
    assert q.codes.sharding.spec == P("data", "model")
    assert q.scales.sharding.spec == P("data", "model")
    assert {s.data.shape for s in q.codes.addressable_shards} == {(2, 1024 * bits // 8)}
    assert {s.data.shape for s in q.scales.addressable_shards} == {(2, 4)}
    assert_whole_blocks(q.shape, q.codes.sharding, q.scales.sharding, 256, bits)


def test_4bit_codes_the_params_last_axis_cut_cannot_divide_are_left_whole_on_it():
    """A (8, 6) leaf sharded P(None, "model") on the 4x2 mesh, in 4-bit blocks of 2: its
    3 bytes of codes per row cannot be cut in 2, so, as tx.init alone lays them out, the
    codes and scales keep only the data axis, on the rows (init once raised JAX's
    IndivisibleError); a jitted step equals the unsharded one. 8 bits (the control)
    keep the model axis on the codes, the param's own cut."""
    mesh = data_model_mesh()
    w = np.random.default_rng(2).normal(size=(8, 6)).astype(np.float32)
    params = {"w": jax.device_put(w, NamedSharding(mesh, P(None, "model")))}
    grads = {"w": jax.device_put(np.sin(3 * w), params["w"].sharding)}
    for bits in (8, 4):
        low_bit = adam_optax.adam8bit if bits == 8 else adam_optax.adam4bit
        plain = low_bit(1e-2, min_quantized_size=0, block_size=2)
        tx = adam_optax.shard_state(plain, mesh)
        state = tx.init(params)
        q = state.inner[0].mu.per_leaf()["w"]
        assert q.codes.shape == (8, 6 * bits // 8)
        assert q.codes.sharding.spec == (P("data", "model") if bits == 8 else P("data", None))
    assert_whole_blocks(q.shape, q.codes.sharding, q.scales.sharding, 2, bits)
    assert plain.init(params)[0].mu.codes["w"].sharding.spec == P(None, None)  # tx.init's
    unsharded = {"w": jnp.asarray(w)}
    expected, _ = jax.jit(plain.update)(grads, plain.init(unsharded), unsharded)
    updates, _ = jax.block_until_ready(jax.jit(tx.update)(grads, state, params))
    np.testing.assert_allclose(updates["w"], expected["w"], rtol=1e-6, atol=1e-7)
    assert updates["w"].sharding.is_equivalent_to(params["w"].sharding, 2)
