"""master_weights: bfloat16/float16 params with an integer correction, checked against
float32 training and NumPy float64 rounding.

The trajectories feed every optimizer the same gradient sequence (independent of the
params), so that the only difference between a corrected run and float32 params is the
master weight's rounding. With correction_bits=16 the master is float32 itself and must
equal the float32 run bit for bit; with 8 it must stay within the sum of its per-step
rounding bounds.
"""

from __future__ import annotations

import functools
import importlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import adam_optax

_OPTAX = tuple(int(part) for part in optax.__version__.split(".")[:3])

BF16 = jnp.bfloat16
# the module (the package's name master_weights is the function)
mw_module = importlib.import_module("adam_optax.master_weights")


def round_to_bits(x: np.ndarray, significant: int, min_exponent: int) -> np.ndarray:
    """x (float64) rounded to nearest-even with `significant` bits, on a grid no finer than
    2^min_exponent (the subnormal floor): the value set master_weights should hold."""
    _, e = np.frexp(x)  # x = m 2^e, 0.5 <= |m| < 1: the leading bit is 2^(e-1)
    spacing = np.ldexp(1.0, np.maximum(e - significant, min_exponent))
    return np.round(x / spacing) * spacing


def special_targets(dtype) -> np.ndarray:
    """float32 values that probe the edges: powers of two and their neighbours, ties of the
    param dtype, subnormals, zeros, signs, and a wide log-uniform spread."""
    rng = np.random.default_rng(0)
    info = jnp.finfo(dtype)
    top = float(info.max) / 4
    powers = np.ldexp(1.0, np.arange(-20, 15))
    f32_ulp = np.float32(2.0**-24)
    near = np.concatenate([powers * (1 + k * f32_ulp) for k in (-3, -1, 0, 1, 2, 3)])
    values = jnp.asarray(rng.normal(size=2000) * 3).astype(dtype).astype(jnp.float32)
    ulp = np.abs(np.asarray(values)) * 2.0**-(info.nmant)  # about one param ulp
    ties = np.asarray(values) + np.ldexp(1.0, np.frexp(np.asarray(values))[1] - info.nmant - 2)
    spread = rng.choice([-1, 1], 4000) * 10.0 ** rng.uniform(-12, np.log10(top), 4000)
    tiny = float(info.smallest_subnormal)
    sub = np.array([0.0, -0.0, tiny, -tiny, tiny / 3, -tiny / 3, tiny * 2.5, tiny * 37.7])
    x = np.concatenate([near, -near, ties, -ties, values + ulp / 3, spread, sub])
    x = x[np.abs(x) < top]
    return x.astype(np.float32)


@pytest.mark.parametrize("dtype", [BF16, jnp.float16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("bits", [8, 16])
def test_master_is_the_target_rounded_to_its_bits(dtype, bits):
    """Param and correction hold exactly the target rounded to nearest-even with
    8 + bits (bfloat16) or 11 + bits (float16) significant bits, at binade edges, ties,
    zeros and subnormals too; the param is a nearest value of its dtype to that master."""
    x = special_targets(dtype)
    x = x[(x == 0) | (np.abs(x) >= np.finfo(np.float32).tiny)]  # XLA:CPU flushes the rest

    @jax.jit
    def represent(t):
        p = mw_module._round(t, dtype, bits)
        c = mw_module._correction(t, p, bits)
        return p, c, mw_module._decode(p, c, bits)

    p, c, master = represent(jnp.asarray(x))
    info = jnp.finfo(dtype)
    significant = info.nmant + 1 + bits
    min_exponent = int(np.log2(float(info.smallest_subnormal))) - bits
    expected = round_to_bits(x.astype(np.float64), significant, min_exponent).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(master), expected)
    assert c.dtype == {8: jnp.int8, 16: jnp.int16}[bits]
    if bits == 16 and dtype == BF16:  # the float32 master rebuilt bit-exactly
        np.testing.assert_array_equal(np.asarray(master).view(np.uint32), x.view(np.uint32))
    # the param is a nearest dtype value to its master (either one at a tie)
    m64 = np.asarray(master, np.float64)
    p64 = np.asarray(p.astype(jnp.float32), np.float64)
    nearest = np.asarray(jnp.asarray(master).astype(dtype).astype(jnp.float32), np.float64)
    assert np.all(np.abs(m64 - p64) <= np.abs(m64 - nearest))


STEPS = 2000


def _trajectory_params():
    rng = np.random.default_rng(1)
    large = rng.uniform(0.5, 1.5, 96) * rng.choice([-1, 1], 96)  # bfloat16 stalls here
    small = rng.normal(size=96) * 2e-3  # these cross zero and binades
    edges = np.array([1.0, -1.0, 0.5, 2.0, -0.25, 0.0, 2.0**-10, -(2.0**-12)])
    w = np.concatenate([large, small, edges, rng.normal(size=56)])
    return jnp.asarray(w, jnp.float32).astype(BF16)


def _grad(t):
    g = jax.random.normal(jax.random.fold_in(jax.random.key(0), t), (256,))
    return g + 0.3 * jnp.sign(jnp.sin(t / 300.0 + jnp.arange(256.0)))  # drift, turning back


@pytest.fixture(scope="module")
def trajectories():
    """float32 adamw; master_weights(adamw) with 16 and 8 bits; plain bfloat16 adamw. All
    see the same gradients. Returns the final weights and per-step checks."""

    def adamw():
        return adam_optax.adamw(1e-3, weight_decay=0.01)

    mw16, mw8 = adam_optax.master_weights(adamw(), correction_bits=16), None
    mw8 = adam_optax.master_weights(adamw(), correction_bits=8)
    ref_tx, plain_tx = adamw(), adamw()
    p0 = _trajectory_params()
    w0 = p0.astype(jnp.float32)

    @jax.jit
    def run():
        def body(t, carry):
            (w, ws, p16, s16, p8, s8, pb, sb, off16, missed, bound, sign, binade) = carry
            g = _grad(t)
            u, ws = ref_tx.update(g, ws, w)
            w_new = optax.apply_updates(w, u)
            u, s16 = mw16.update(g, s16, p16)
            p16 = optax.apply_updates(p16, u)
            m16 = adam_optax.master_params(p16, s16)
            off16 += jnp.sum(jax.lax.bitcast_convert_type(m16, jnp.uint32) != _bits(w_new))
            u, s8 = mw8.update(g, s8, p8)
            bound += (2.0**-16 + 2.0**-23) * jnp.abs(p8.astype(jnp.float32)) + 2.0**-141
            p8 = optax.apply_updates(p8, u)
            m8 = adam_optax.master_params(p8, s8)
            for p, m, s in ((p16, m16, s16), (p8, m8, s8)):  # landed on the rounded master
                tie = s.correction == jnp.iinfo(s.correction.dtype).min
                missed += jnp.sum((p != m.astype(BF16)) & ~tie)
            u, sb = plain_tx.update(g, sb, pb)
            pb = optax.apply_updates(pb, u)
            sign |= jnp.sign(w_new) != jnp.sign(w0)
            binade |= jnp.frexp(w_new)[1] != jnp.frexp(w0)[1]
            return (w_new, ws, p16, s16, p8, s8, pb, sb, off16, missed, bound, sign, binade)

        init = (w0, ref_tx.init(w0), p0, mw16.init(p0), p0, mw8.init(p0), p0, plain_tx.init(p0))
        no = jnp.zeros(256, bool)
        return jax.lax.fori_loop(0, STEPS, body, (*init, 0, 0, jnp.zeros(256), no, no))

    out = jax.device_get(run())
    w, _, p16, s16, p8, s8, pb, _, off16, missed, bound, sign, binade = out
    return {
        "w": w,
        "m16": adam_optax.master_params(p16, s16),
        "m8": adam_optax.master_params(p8, s8),
        "plain": pb,
        "off16": off16,
        "missed": missed,
        "bound": bound,
        "sign": sign,
        "binade": binade,
    }


def _bits(x):
    return jax.lax.bitcast_convert_type(x, jnp.uint32)


def test_trajectory_crosses_zero_and_binades(trajectories):
    assert trajectories["sign"].sum() >= 20 and trajectories["binade"].sum() >= 50


def test_apply_updates_lands_on_the_rounded_master_every_step(trajectories):
    assert trajectories["missed"] == 0


def test_16_bits_equal_float32_params_bit_for_bit(trajectories):
    assert trajectories["off16"] == 0
    chex.assert_trees_all_equal(trajectories["m16"], trajectories["w"])


def test_8_bits_within_their_rounding_bound_and_bfloat16_stalls(trajectories):
    """Each step rounds the master to 16 significant bits: an error of at most 2^-16 |θ|,
    plus float32's 2^-24 |θ| per step in either run; weight decay only shrinks old errors."""
    w = np.asarray(trajectories["w"], np.float64)
    error8 = np.abs(np.asarray(trajectories["m8"], np.float64) - w)
    assert np.all(error8 <= trajectories["bound"]), (error8 / trajectories["bound"]).max()
    assert error8.max() < 5e-3  # 2,000 roundings of at most 2^-16 |θ| each
    plain_error = np.abs(np.asarray(trajectories["plain"], np.float64) - w)
    assert plain_error.max() > 100 * error8.max()
    moved = np.abs(w - np.asarray(_trajectory_params(), np.float64))
    stalled = np.asarray(trajectories["plain"]) == np.asarray(_trajectory_params())
    assert stalled[:96].mean() > 0.9 and (moved[:96] > 0.01).mean() > 0.8  # float32 moves


# ---------------------------------------------------------------------------------------


def _mixed_params():
    rng = np.random.default_rng(2)
    return {
        "w": jnp.asarray(rng.normal(size=(16, 64)), BF16),
        "h": jnp.asarray(rng.normal(size=(40,)), jnp.float16),
        "b": jnp.asarray(rng.normal(size=(64,)), jnp.float32),
    }


def _grads(params, t):
    key = jax.random.fold_in(jax.random.key(3), t)
    return jax.tree.map(lambda p: jax.random.normal(key, p.shape), params)


def _state_bytes(tree) -> int:
    return sum(leaf.nbytes for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize("bits", [8, 4])
def test_bytes_per_parameter_of_the_7_byte_setup(bits):
    """bfloat16 params (2) + bfloat16 grads (2) + 8-bit moments (2 + block scales) + int8
    correction (1): about 7 bytes per parameter, against 16 for float32 AdamW; 4-bit
    moments (1 + block scales, blocks of 128) make it about 6."""
    params = {"w": jnp.zeros((256, 512), BF16), "b": jnp.zeros(512, jnp.float32)}
    n = 256 * 512 + 512
    inner = adam_optax.adamw8bit if bits == 8 else adam_optax.adamw4bit
    state = adam_optax.master_weights(inner(1e-3)).init(params)
    total = 2 * _state_bytes(params) + _state_bytes(state)  # params, grads like params, state
    assert _state_bytes(state.correction) == 256 * 512
    moments = (state.inner[0].mu, state.inner[0].nu)
    assert all(moment.bits == bits for moment in moments)
    assert _state_bytes([m.codes["w"] for m in moments]) == 2 * 256 * 512 * bits // 8
    low = 5 + 2 * bits / 8  # params, grads, correction, moments
    assert low <= total / n <= low + 0.2, total / n
    state16 = adam_optax.master_weights(inner(1e-3), correction_bits=16).init(params)
    assert _state_bytes(state16) - _state_bytes(state) == 256 * 512


def _run(tx, params, steps, grads=_grads, jit=True):
    def step(t, carry):
        p, s = carry
        u, s = tx.update(grads(p, t), s, p)
        return optax.apply_updates(p, u), s

    if jit:
        return jax.jit(lambda p: jax.lax.fori_loop(0, steps, step, (p, tx.init(p))))(params)
    carry = (params, tx.init(params))
    for t in range(steps):
        carry = step(t, carry)
    return carry


def test_jit_equals_eager_and_resume_through_numpy_is_bit_exact():
    """Three eager steps equal three jitted ones; so does a jitted run that saves after
    step 1 and loads every leaf back through NumPy (the structure from init)."""
    # A power-of-two step: its products are exact, so an FMA that XLA:CPU may form under
    # jit cannot change a bit, and any difference would be the wrapper's own.
    tx = adam_optax.master_weights(optax.scale(-(2.0**-7)))
    grads = [jax.device_get(_grads(_mixed_params(), t)) for t in range(3)]

    def step(carry, g):
        u, s = tx.update(g, carry[1], carry[0])
        return optax.apply_updates(carry[0], u), s

    eager = jitted = (_mixed_params(), tx.init(_mixed_params()))
    for t in range(3):
        eager = step(eager, grads[t])
        if t == 1:
            jitted = jax.tree.map(jnp.asarray, jax.tree.map(np.asarray, jitted))
        jitted = jax.jit(step)(jitted, grads[t])
    chex.assert_trees_all_equal(eager, jitted)
    assert np.any(np.asarray(eager[1].correction["w"]) != 0)


def test_resume_from_an_orbax_checkpoint_is_bit_exact(tmp_path):
    """The 7-byte state (int8 corrections, 8-bit moments, float32 moments and no
    correction for the float32 leaf) saved with orbax after two steps and restored into a
    fresh init's structure: the run goes on as if never stopped."""
    ocp = pytest.importorskip("orbax.checkpoint")
    tx = adam_optax.master_weights(adam_optax.adamw8bit(1e-2, min_quantized_size=512))
    step = jax.jit(functools.partial(_step_once, tx))
    params = _mixed_params()
    run = [(params, tx.init(params))]
    for t in range(4):
        run.append(step(*run[-1], t))
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "save", {"params": run[2][0], "state": run[2][1]})
    checkpointer.wait_until_finished()
    target = {"params": params, "state": tx.init(params)}
    restored = checkpointer.restore(tmp_path / "save", jax.device_get(target))
    resumed = (restored["params"], restored["state"])
    for t in (2, 3):
        resumed = step(*resumed, t)
    chex.assert_trees_all_equal(resumed, run[4])
    assert jax.tree.structure(resumed) == jax.tree.structure(run[4])


def _step_once(tx, p, s, t):
    u, s = tx.update(_grads(p, t), s, p)
    return optax.apply_updates(p, u), s


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices (see conftest)")
def test_sharded_leaves_keep_their_sharding():
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))
    specs = {"w": P("data", "model"), "h": P("data"), "b": P(None)}
    params = {
        k: jax.device_put(v, NamedSharding(mesh, specs[k])) for k, v in _mixed_params().items()
    }
    tx = adam_optax.master_weights(optax.sgd(1e-2))
    state = tx.init(params)
    step = jax.jit(lambda p, s: _step_once(tx, p, s, 0))
    params, state = jax.block_until_ready(step(params, state))
    for name in ("w", "h"):
        want = NamedSharding(mesh, specs[name])
        assert state.correction[name].sharding.is_equivalent_to(want, params[name].ndim)
        assert params[name].sharding.is_equivalent_to(want, params[name].ndim)


# Each row builds a transform from `wrap`, which is master_weights(·, correction_bits=16,
# update_dtype=jnp.float32) for the bfloat16 run and the identity for the float32
# reference. With 16 bits and float32 updates the master must equal the float32 params
# bit for bit. (With the default updates in the grads' dtype a step that is no 16-bit
# number, such as a sign change, may lose up to half a unit of itself: see
# test_a_step_that_is_no_bfloat16_loses_at_most_half_a_unit_of_itself.) The runs are
# eager (3 steps): the operations compile once for all rows. Where the wrapper's whole
# update runs inside a compiled lax.cond (MultiSteps, apply_if_finite outside it), XLA:CPU
# may fuse the inner update's last multiply with the add into the master into one FMA,
# which the float32 run's separate apply_updates does not: there the master may be 1
# float32 ulp off.
def _adamw():
    return adam_optax.adamw(1e-2, weight_decay=0.1)


def _nan_at_step_1(p, t):
    return jax.tree.map(lambda g: g * (jnp.nan if t == 1 else 1.0), _grads(p, t))


def _bfloat16_grads(p, t):
    """bfloat16 grads, but float16 ones for the float16 leaf (as jax.grad gives them): the
    updates keep the grads' dtype, and a bfloat16 update cannot carry a float16 step."""
    g = _grads(p, t)
    return {**jax.tree.map(lambda x: x.astype(BF16), g), "h": g["h"].astype(jnp.float16)}


COMPOSITIONS = {
    "adamw8bit": (lambda wrap: wrap(adam_optax.adamw8bit(1e-2, min_quantized_size=256)), _grads),
    "adamw4bit": (lambda wrap: wrap(adam_optax.adamw4bit(1e-2, min_quantized_size=256)), _grads),
    "chain_clip_schedule_bfloat16_grads": (
        lambda wrap: wrap(
            optax.chain(
                optax.clip_by_global_norm(0.5),
                adam_optax.adamw(optax.linear_schedule(1e-2, 1e-3, 4), weight_decay=0.1),
            )
        ),
        _bfloat16_grads,
    ),
    "optax.adamw_inject_hyperparams": (
        lambda wrap: wrap(optax.inject_hyperparams(optax.adamw)(learning_rate=1e-2)),
        _grads,
    ),
    "multisteps_inside": (
        lambda wrap: wrap(optax.MultiSteps(_adamw(), 2).gradient_transformation()),
        _grads,
    ),
    "multisteps_apply_if_finite_outside": (
        lambda wrap: optax.apply_if_finite(
            optax.MultiSteps(wrap(_adamw()), 2).gradient_transformation(), 3
        ),
        _nan_at_step_1,
    ),
    "shard_state_outside": (
        lambda wrap: adam_optax.shard_state(
            wrap(_adamw()), Mesh(np.array(jax.devices()[:1]), ("data",))
        ),
        _grads,
    ),
}


@pytest.mark.parametrize("name", list(COMPOSITIONS))
def test_composes_and_equals_float32_params(name):
    if name == "multisteps_apply_if_finite_outside" and _OPTAX < (0, 2, 8):
        pytest.skip("optax < 0.2.8: MultiSteps casts its accumulator to the updates' dtype")
    build, grads = COMPOSITIONS[name]
    params = _mixed_params()  # bfloat16 w, float16 h, float32 b
    tx = build(
        lambda inner: adam_optax.master_weights(inner, correction_bits=16, update_dtype=jnp.float32)
    )
    p, state = _run(tx, params, 3, grads, jit=False)
    masters = adam_optax.master_params(p, state)
    correction = optax.tree.get(state, "correction")
    assert isinstance(correction["b"], optax.MaskedNode)  # float32: no state
    assert correction["w"].dtype == correction["h"].dtype == jnp.int16

    def reference_grads(p, t):  # the same values, float32 where the params are
        g = grads(p, t)
        return {**g, "w": g["w"].astype(jnp.float32), "h": g["h"].astype(jnp.float32)}

    f32 = jax.tree.map(lambda x: x.astype(jnp.float32), params)
    expected, _ = _run(build(lambda inner: inner), f32, 3, reference_grads, jit=False)
    if name == "multisteps_apply_if_finite_outside":  # see above: FMAs inside lax.cond
        chex.assert_trees_all_close(masters, expected, rtol=1e-5)
    else:
        chex.assert_trees_all_equal(masters, expected)
    chex.assert_trees_all_equal_dtypes(p, params)
    assert p["w"].dtype == BF16 and not np.array_equal(p["w"], params["w"])


def test_inner_hyperparams_stay_reachable():
    tx = adam_optax.master_weights(
        optax.inject_hyperparams(adam_optax.adamw)(learning_rate=1e-2, weight_decay=0.0)
    )
    params = _mixed_params()
    state = tx.init(params)
    assert float(optax.tree.get(state, "learning_rate")) == pytest.approx(1e-2)
    state = optax.tree.set(state, learning_rate=jnp.asarray(0.0))
    updates, state = tx.update(_grads(params, 0), state, params)
    chex.assert_trees_all_equal(optax.apply_updates(params, updates), params)
    assert float(state.inner.hyperparams["learning_rate"]) == 0.0


def test_nnx_optimizer_on_a_bfloat16_model():
    nnx = pytest.importorskip("flax.nnx")

    model = nnx.Sequential(
        nnx.Linear(8, 16, param_dtype=BF16, dtype=BF16, rngs=nnx.Rngs(0)),
        nnx.Linear(16, 1, param_dtype=BF16, dtype=BF16, rngs=nnx.Rngs(1)),
    )
    # The 7-byte set-up: the 16x8 kernel's moments are 8-bit (min_quantized_size=128).
    inner = adam_optax.adamw8bit(1e-2, weight_decay=0.0, min_quantized_size=128)
    optimizer = nnx.Optimizer(model, adam_optax.master_weights(inner), wrt=nnx.Param)
    x = jax.random.normal(jax.random.key(0), (32, 8)).astype(BF16)
    y = jnp.sum(x.astype(jnp.float32), axis=1, keepdims=True) * 0.1

    def loss_fn(model):
        return jnp.mean((model(x).astype(jnp.float32) - y) ** 2)

    @nnx.jit
    def train_step(model, optimizer):
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(train_step(model, optimizer)) for _ in range(6)]
    assert losses[-1] < 0.7 * losses[0], losses
    params = nnx.as_pure(nnx.state(model, nnx.Param))
    assert all(leaf.dtype == BF16 for leaf in jax.tree.leaves(params))
    opt_state = nnx.as_pure(optimizer.opt_state)
    masters = adam_optax.master_params(params, opt_state)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(masters))
    corrections = jax.tree.leaves(optax.tree.get(opt_state, "correction"))
    assert corrections and all(c.dtype == jnp.int8 for c in corrections)
    assert any(np.any(np.asarray(c) != 0) for c in corrections)
    codes = optax.tree.get(opt_state, "mu").codes  # QuantizedTree: one array per params leaf
    assert sum(leaf.dtype == jnp.uint8 for leaf in jax.tree.leaves(codes)) == 1


# Errors beyond tests/cases.py's table (which holds correction_bits): they need a state.


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_update_without_params_fails(jit):
    tx = adam_optax.master_weights(optax.sgd(0.1))
    params = {"w": jnp.ones(3, BF16)}
    update = jax.jit(tx.update) if jit else tx.update
    with pytest.raises(ValueError, match=r"update needs the params"):
        update(params, tx.init(params))


@pytest.mark.parametrize(
    ("before", "after", "match"),
    [
        (BF16, jnp.float32, r"\['w'\] is float32, but at init it was bfloat16 or float16"),
        (jnp.float32, BF16, r"\['w'\] is bfloat16, but at init it had a dtype"),
    ],
)
def test_changed_param_dtype_fails(before, after, match):
    tx = adam_optax.master_weights(optax.sgd(0.1))
    state = tx.init({"w": jnp.ones(3, before)})
    params = {"w": jnp.ones(3, after)}
    for update in (tx.update, jax.jit(tx.update)):
        with pytest.raises(ValueError, match=match):
            update(params, state, params)
    with pytest.raises(ValueError, match=match):
        adam_optax.master_params(params, state)


def test_not_a_transform_fails():
    match = r"tx must be an optax\.GradientTransformation \(with init and update\), got 0\.001"
    with pytest.raises(TypeError, match=match):
        adam_optax.master_weights(1e-3)


def test_a_weight_that_falls_near_zero_or_changes_sign_in_one_step_lands_exactly():
    """Steps that take a weight to 2^-23 of itself, across zero, or 20 binades down: the
    difference p' - p is then no bfloat16, but the float32 update still lands exactly."""
    tx = adam_optax.master_weights(optax.sgd(1.0), correction_bits=16)
    p = jnp.array([1.0, -3.0, 0.5, 2.0**-20], BF16)
    g = jnp.array([1.0 - 1.3e-7, -3.0 + 2.7e-6, 0.99, 2.0**-20 + 1e-12], jnp.float32)
    updates, state = tx.update(g, tx.init(p), p)
    new = optax.apply_updates(p, updates)
    target = np.asarray(p, np.float32) - np.asarray(g)  # float32, as a float32 run computes
    np.testing.assert_array_equal(np.asarray(adam_optax.master_params(new, state)), target)
    np.testing.assert_array_equal(np.asarray(new), target.astype(BF16))


# --- Updates in the gradients' dtype (the default) --------------------------------------


def _bfloat16_ulp(x: np.ndarray) -> np.ndarray:
    """The spacing of bfloat16 numbers at |x| (float64; normal numbers)."""
    return np.ldexp(1.0, np.frexp(np.abs(x))[1] - 8)


def test_bfloat16_grads_follow_the_float64_master_trajectory():
    """sgd with bfloat16 grads on bfloat16 params, 300 jitted steps that each stay within a
    factor of two of the weight: the updates are bfloat16, every step lands on the rounded
    master, and the master is float64's ``w + u`` rounded to 16 significant bits each step.
    (lr = 2^-8 and |g| >= 2^-6 make every float32 sum exact, so float64 is the reference.)"""
    steps, lr = 300, 2.0**-8
    rng = np.random.default_rng(4)
    w0 = rng.uniform(0.5, 3.0, 512) * rng.choice([-1, 1], 512)
    g = rng.uniform(2.0**-6, 1.0, (steps, 512)) * rng.choice([-1, 1], (steps, 512))
    g = np.asarray(jnp.asarray(g, BF16).astype(jnp.float32), np.float64)  # bfloat16 values
    p0 = jnp.asarray(w0, BF16)
    tx = adam_optax.master_weights(optax.sgd(lr))  # correction_bits=8: 16-bit masters
    update = jax.jit(tx.update)
    assert jax.eval_shape(update, p0, tx.init(p0), p0)[0].dtype == BF16

    @jax.jit
    def run(p, grads):
        def body(carry, g_t):
            p, state = carry
            updates, state = tx.update(g_t.astype(BF16), state, p)
            p = optax.apply_updates(p, updates)
            return (p, state), (p, adam_optax.master_params(p, state))

        return jax.lax.scan(body, (p, tx.init(p)), grads)[1]

    params, masters = jax.device_get(run(p0, jnp.asarray(g, jnp.float32)))
    reference = np.asarray(p0.astype(jnp.float32), np.float64)
    min_exponent = -133 - 8
    for t in range(steps):
        reference = round_to_bits(reference - lr * g[t], 16, min_exponent)
        np.testing.assert_array_equal(np.asarray(masters[t], np.float64), reference, f"step {t}")
        # the param is the master's nearest bfloat16 (the neighbour above at a tie)
        p = np.asarray(params[t].astype(np.float32), np.float64)
        assert np.all(np.abs(reference - p) <= _bfloat16_ulp(p) / 2), t
    # against the unrounded run: at most 2^-16 |w| < 2^-14 per step (|w| < 4)
    w_float64 = np.asarray(p0.astype(jnp.float32), np.float64) - lr * g.sum(axis=0)
    assert np.abs(reference - w_float64).max() <= steps * 2.0**-14


def _one_big_step(update_dtype):
    """Five small steps (corrections accumulate), then one large: sign changes, falls to a
    fraction of the weight, growth past twice it. sgd(1.0) with bfloat16 grads, 16-bit
    corrections (the float32 master exactly). Returns the params before the big step, its
    update, and the params and masters after it."""
    rng = np.random.default_rng(5)
    n = 4096
    p = jnp.asarray(rng.uniform(0.01, 4.0, n) * rng.choice([-1, 1], n), BF16)
    tx = adam_optax.master_weights(optax.sgd(1.0), correction_bits=16, update_dtype=update_dtype)
    state = tx.init(p)
    step = jax.jit(lambda g, s, p: tx.update(g, s, p))
    for _ in range(5):
        small = jnp.asarray(p.astype(jnp.float32) * rng.uniform(-1e-3, 1e-3, n), BF16)
        updates, state = step(small, state, p)
        p = optax.apply_updates(p, updates)
    kind = rng.integers(0, 3, n)  # 0: across zero, 1: down to a fraction, 2: up past 2x
    factor = np.choose(kind, [rng.uniform(-3, -0.01, n), rng.uniform(1e-4, 0.5, n),
                              rng.uniform(2.0, 50.0, n)])  # fmt: skip
    masters = adam_optax.master_params(p, state)
    big = jnp.asarray(np.asarray(masters) * (1 - factor), BF16)  # w' = w - g ~ factor * w
    updates, state = step(big, state, p)
    new = optax.apply_updates(p, updates)
    return p, updates, new, adam_optax.master_params(new, state)


def test_a_step_that_is_no_bfloat16_loses_at_most_half_a_unit_of_itself():
    """Where p' - p is a bfloat16 the bfloat16 update lands on p' and keeps the master of
    float32 updates bit for bit; where it is not, the master loses at most half a bfloat16
    unit of that step's update (plus 2^-17 ulp of rounding), never the small steps before."""
    p, updates, new, masters = jax.device_get(_one_big_step(None))
    _, exact_updates, exact_new, exact_masters = jax.device_get(_one_big_step(jnp.float32))
    assert updates.dtype == BF16 and exact_updates.dtype == jnp.float32
    p64, exact64 = np.asarray(p, np.float64), np.asarray(exact_new, np.float64)
    difference = exact64 - p64  # p' - p, exact
    fits = np.asarray(jnp.asarray(difference, BF16), np.float64) == difference
    assert fits.sum() > 100 and (~fits).sum() > 1000  # both cases, many times
    np.testing.assert_array_equal(new[fits], exact_new[fits])
    np.testing.assert_array_equal(masters[fits], exact_masters[fits])
    u64 = np.asarray(updates, np.float64)[~fits]
    loss = np.abs(np.asarray(masters, np.float64) - np.asarray(exact_masters, np.float64))[~fits]
    landed = np.asarray(new, np.float64)[~fits]
    bound = _bfloat16_ulp(u64) / 2 + _bfloat16_ulp(landed) * 2.0**-17 + 2.0**-24 * np.abs(u64)
    assert np.all(loss <= bound), (loss / bound).max()
    assert np.any(loss > _bfloat16_ulp(u64) / 8)  # the bound is not vacuous
    crossed = np.sign(landed) != np.sign(p64[~fits])
    assert crossed.sum() > 100
