"""The 8- and 4-bit state under optax's tree tools: tree_map_params, tree_cast, repr, get.

Which leaves are 8-bit is static structure (``QuantizedTree``): a cast of the whole state
raises at ``update`` instead of reading codes as moments, and optax's sharding recipe
(``tree_map_params`` from the params' specs) lays the state out validly, the scales with
their param's spec minus the last axis.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import adam_optax

# (8, 64) in blocks of 64: one block per row, which the model axis (2) cannot divide;
# (4096,) over data; a small (8, 4) kernel, a bias and a scalar keep float32 moments.
SHAPES = {"w": (8, 64), "flat": (4096,), "small": (8, 4), "b": (8,), "scale": ()}
SPECS = {
    "w": P("data", "model"),
    "flat": P("data"),
    "small": P("data", "model"),
    "b": P("model"),
    "scale": P(),
}
OPTIMIZERS = {  # 4-bit: w's codes are (8, 32), flat's (2048,): the params' specs divide them
    "adamw8bit": lambda: adam_optax.adamw8bit(1e-2, block_size=64, min_quantized_size=64),
    "adamw4bit amsgrad": lambda: adam_optax.adamw4bit(
        1e-2, block_size=64, min_quantized_size=64, amsgrad=True
    ),
    "adamw4bit": lambda: adam_optax.adamw4bit(1e-2, block_size=64, min_quantized_size=64),
}


def make_params() -> dict:
    rng = np.random.default_rng(0)
    return {k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in SHAPES.items()}


def grads_of(params: dict) -> dict:
    return jax.tree.map(lambda p: jnp.sin(3 * p) + 0.1, params)


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices (see conftest)")
@pytest.mark.parametrize("name", ["adamw8bit", "adamw4bit amsgrad"])
def test_tree_map_params_lays_out_the_low_bit_state_on_a_4x2_mesh(name):
    """optax's recipe: the state's specs from the params', device_put, one jitted step;
    it equals the unsharded step, and the scales keep their rows' sharding. (4-bit
    amsgrad stands for 8-bit amsgrad too: nu_max is one more moment of either width.)"""
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))
    tx = OPTIMIZERS[name]()
    params = make_params()
    state = tx.init(params)
    specs = optax.tree_utils.tree_map_params(
        tx, lambda _, spec: spec, state, SPECS, transform_non_params=lambda _: P()
    )
    shardings = jax.tree.map(lambda spec: NamedSharding(mesh, spec), specs)
    mu = shardings[0].mu
    assert mu.codes["w"].spec == P("data", "model")
    assert mu.scales["w"].spec == P("data", None)  # the param's, minus the last axis
    assert mu.scales["flat"].spec == P(None)
    assert mu.scales["small"].spec == P("data", None)  # a placeholder, uint8 (8, 1, 1)

    sharded = jax.device_put(state, shardings)
    assert sharded[0].mu.scales["w"].sharding.spec == P("data", None)
    placed_params = jax.device_put(params, jax.tree.map(lambda s: NamedSharding(mesh, s), SPECS))
    step = jax.jit(tx.update)
    expected = jax.block_until_ready(step(grads_of(params), state, params))
    got = jax.block_until_ready(step(grads_of(placed_params), sharded, placed_params))
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    codes = got[1][0].nu.codes["w"]
    assert codes.dtype == jnp.uint8 and codes.shape == (8, 64 * got[1][0].nu.bits // 8)
    assert codes.sharding.spec == P("data", "model")
    np.testing.assert_array_equal(np.asarray(codes), np.asarray(expected[1][0].nu.codes["w"]))


def test_without_the_template_the_param_spec_reaches_the_scales():
    """The control: a tree of specs built on a real state's structure keeps what it is
    given, so the scales' spec above came from the template, not from any rebuild."""
    state = OPTIMIZERS["adamw8bit"]().init(make_params())
    specs = jax.tree.map(lambda _: P("data", "model"), state[0].mu)
    assert specs.scales["w"] == P("data", "model")
    assert not state[0].mu.specs_template


# The 8-bit state every way; the 4-bit one once, its codes cast to float32.
CASTS = [("adamw8bit", d, j) for d in (jnp.float32, jnp.bfloat16) for j in (True, False)]
CASTS += [("adamw4bit", jnp.float32, True)]


@pytest.mark.parametrize(
    ("name", "dtype", "jitted"),
    CASTS,
    ids=[f"{n}-{'jit' if j else 'eager'}-{jnp.dtype(d).name}" for n, d, j in CASTS],
)
def test_a_cast_state_raises_at_update(name, dtype, jitted):
    """tree_cast casts the codes too: update names what changed instead of reading codes
    as moments. The uncast state steps (the control)."""
    tx = OPTIMIZERS[name]()
    params = make_params()
    state = tx.init(params)
    update = jax.jit(tx.update) if jitted else tx.update
    update(grads_of(params), state, params)
    cast = optax.tree_utils.tree_cast(state, dtype)
    dtype_name = jnp.dtype(dtype).name
    with pytest.raises(TypeError, match=rf"scales\['b'\] is {dtype_name}, but .* must be uint8"):
        update(grads_of(params), cast, params)  # b's placeholder
    only_low_bit = {"w": params["w"]}
    cast = optax.tree_utils.tree_cast(tx.init(only_low_bit), dtype)
    where = r"codes\['w'\]" if dtype == jnp.float32 else r"scales\['w'\]"
    with pytest.raises(TypeError, match=rf"{where} is {dtype_name}.*tree_cast") as caught:
        update(grads_of(only_low_bit), cast, only_low_bit)
    assert "must be uint8" in str(caught.value) or "must be float32" in str(caught.value)
    bits = name[5]
    assert str(caught.value).startswith(f"The {bits}-bit moment")
    if dtype == jnp.float32:
        assert f"stored in {bits} bits" in str(caught.value)


def test_a_float32_leaf_with_8bit_scales_raises():
    """A state whose codes and scales disagree (here, scales of blocks given to a float32
    leaf) is refused with the shapes named."""
    tx = OPTIMIZERS["adamw8bit"]()
    params = make_params()
    mu = tx.init(params)[0].mu
    scales = dict(mu.scales, small=jnp.zeros((8, 1), jnp.float32))
    bad = adam_optax.QuantizedTree(mu.codes, scales, mu.signed, mu.block_size)
    with pytest.raises(TypeError, match=r"codes\['small'\] is float32.*\(8, 1\)"):
        bad.per_leaf()
    scales = dict(mu.scales, w=jnp.zeros((8, 3), jnp.float32))
    bad = adam_optax.QuantizedTree(mu.codes, scales, mu.signed, mu.block_size)
    with pytest.raises(ValueError, match=r"scales\['w'\] has shape \(8, 3\).*needs? \(8, 1\)"):
        bad.per_leaf()


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize(
    "shapes",
    [
        {"w": (64, 512), "b": (512,)},
        {"embed": (256, 64), "w1": (64, 256), "w2": (256, 64), "b": (64,), "scale": ()},
        {"w": (8, 4), "b": (4,)},  # no low-bit leaf
    ],
    ids=["mlp", "transformer-ish", "small"],
)
def test_repr_is_at_most_twice_optax_adamw(shapes, bits):
    params = {k: jnp.ones(s) for k, s in shapes.items()}
    low_bit = adam_optax.adamw8bit if bits == 8 else adam_optax.adamw4bit
    ours = repr(low_bit(1e-3, min_quantized_size=1024).init(params))
    theirs = repr(optax.adamw(1e-3).init(params))
    assert len(ours) <= 2 * len(theirs), (len(ours), len(theirs))
    assert ("bits=4" in ours) == (bits == 4)
    if "w" in shapes and shapes["w"] == (64, 512):
        # 8-bit: a code a byte, blocks of 256; 4-bit: two codes a byte, blocks of 128
        codes, blocks = (512, 2) if bits == 8 else (256, 4)
        assert f"uint8[64,{codes}]" in ours and f"float32[64,{blocks}]" in ours


def test_optax_tree_get_and_norm_read_the_dequantized_moment():
    tx = OPTIMIZERS["adamw8bit"]()
    params = make_params()
    _, state = tx.update(grads_of(params), tx.init(params), params)
    mu = optax.tree.get(state, "mu")
    assert isinstance(mu, adam_optax.QuantizedTree)
    values = adam_optax.dequantize(mu)
    assert set(values) == set(SHAPES)
    assert values["w"].dtype == jnp.float32 and values["w"].shape == SHAPES["w"]
    # m_1 = (1 - b1) g, up to the 8-bit rounding (about 1% of each block's absmax)
    expected = jax.tree.map(lambda g: 0.1 * g, grads_of(params))
    norm = float(optax.tree.norm(values))
    assert norm == pytest.approx(float(optax.tree.norm(expected)), rel=1e-2)
    assert float(optax.tree.norm(mu)) > 10 * norm  # the raw tree measures the codes


def test_an_orbax_checkpoint_of_the_8bit_state_restores_and_steps(tmp_path):
    """The placeholders are saved as arrays (orbax cannot save an empty one)."""
    ocp = pytest.importorskip("orbax.checkpoint")
    tx = OPTIMIZERS["adamw8bit"]()
    params = make_params()
    _, state = tx.update(grads_of(params), tx.init(params), params)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "state", state)
    checkpointer.wait_until_finished()
    restored = checkpointer.restore(tmp_path / "state", jax.tree.map(jnp.zeros_like, state))
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    expected = tx.update(grads_of(params), state, params)
    got = tx.update(grads_of(params), restored, params)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_an_empty_leaf_is_never_quantized():
    """min_quantized_size=0 quantizes every real leaf with elements; an empty one keeps
    float32 moments (and a placeholder), so its blocks are never counted."""
    tx = adam_optax.adamw8bit(1e-3, min_quantized_size=0, block_size=4)
    params = {"empty": jnp.zeros((4, 0)), "w": jnp.ones((2, 8))}
    state = tx.init(params)
    moments = state[0].nu.per_leaf()
    assert isinstance(moments["w"], adam_optax.QuantizedArray)
    assert moments["empty"].dtype == jnp.float32 and moments["empty"].shape == (4, 0)
    assert state[0].nu.scales["empty"].shape == (4, 1, 1)
    updates, _ = jax.jit(tx.update)(params, state, params)
    assert updates["empty"].shape == (4, 0)
