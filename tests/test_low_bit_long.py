"""8-bit Adam over long horizons, against float32 Adam on the same gradient stream.

The 8-bit moments carry their rounding errors for about 1/(1 - b2) = 1,000
steps, so a bias in how they are stored only shows after thousands of steps:
each test here runs at least 5,000 steps inside one jitted loop (one compile)
and compares the 8-bit state and updates with ``adam_optax.scale_by_adam``'s
float32 ones, element by element. The gradients are synthetic streams that
do not depend on the params, so both optimizers see the same gradients.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import adam_optax
from adam_optax import storage

CHUNK, CHUNKS = 1000, 5  # compare every 1,000th step, up to 5,000 = 5 / (1 - b2)


def _run_side_by_side(tx8, grad_fn, params):
    """Runs tx8 and float32 Adam for CHUNKS·CHUNK steps of ``grad_fn(step)``.

    Returns, at the end of every chunk, trees of ν8, ν32 and the two updates
    of that step, as NumPy arrays of shape (CHUNKS, *leaf shape).
    """
    tx32 = adam_optax.scale_by_adam()

    def step(t, carry):
        s8, s32, _, _ = carry
        g = grad_fn(t)
        u8, s8 = tx8.update(g, s8)
        u32, s32 = tx32.update(g, s32)
        return s8, s32, u8, u32

    def chunk(carry, c):
        carry = jax.lax.fori_loop(c * CHUNK, (c + 1) * CHUNK, step, carry)
        s8, s32, u8, u32 = carry
        return carry, (adam_optax.dequantize(s8.nu), s32.nu, u8, u32)

    @jax.jit
    def run():
        carry = (tx8.init(params), tx32.init(params), params, params)
        return jax.lax.scan(chunk, carry, jnp.arange(CHUNKS))[1]

    return jax.tree.map(lambda x: np.asarray(x, np.float64), run())


# Two synthetic gradient streams, run together (one compile, one loop):
# - "spread": each element's gradient has its own scale, spread log-uniformly
#   over one decade (spread[0]) or two (spread[1]) within every block, times
#   noise of unit variance.
# - "head": an output layer's kernel (d, classes) = (16, 1024) under a softmax
#   loss whose labels are Zipf-distributed (p_c ∝ 1/(c + 1)), batches of 8, at
#   zero logits: a class gets its large gradient only when it is a label, and
#   otherwise the small one of its predicted probability.
SPREAD, HEAD, BATCH = (2, 4, 512), (16, 1024), 8
_rng = np.random.default_rng(0)
_SCALE = 10.0 ** -(np.array([1.0, 2.0])[:, None, None] * _rng.uniform(size=SPREAD))
_ZIPF = 1 / np.arange(1, HEAD[1] + 1)
_LABELS = _rng.choice(HEAD[1], size=(CHUNK * CHUNKS, BATCH), p=_ZIPF / _ZIPF.sum())
_FEATURES = _rng.standard_normal((CHUNK * CHUNKS, BATCH, HEAD[0]))


def _noise(t: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Uniform noise of unit variance from a hash of (t, element): cheap to compile."""
    x = jnp.arange(np.prod(shape), dtype=jnp.uint32).reshape(shape) + t.astype(jnp.uint32) * (
        jnp.uint32(np.prod(shape))
    )
    for multiplier in (0x7FEB352D, 0x846CA68B):  # Wellons's "lowbias32" integer hash
        x = (x ^ (x >> 16)) * jnp.uint32(multiplier)
    x = x ^ (x >> 16)
    return ((x >> 8).astype(jnp.float32) * 2.0**-24 - 0.5) * np.sqrt(12.0)


def _gradients(t):
    error = 1.0 / HEAD[1] - jax.nn.one_hot(jnp.asarray(_LABELS)[t], HEAD[1])  # softmax(0) - onehot
    return {
        "spread": jnp.asarray(_SCALE, jnp.float32) * _noise(t, SPREAD),
        "head": jnp.asarray(_FEATURES, jnp.float32)[t].T @ error / BATCH,
    }


@pytest.fixture(scope="module")
def long_run():
    """ν8, ν32, u8, u32 at every 1,000th step, with the default (stochastic) rounding."""
    params = {"spread": jnp.zeros(SPREAD), "head": jnp.zeros(HEAD)}
    tx8 = adam_optax.scale_by_adam8bit(min_quantized_size=0)
    return _run_side_by_side(tx8, _gradients, params)


@pytest.mark.parametrize("decades", [1, 2])
def test_spread_gradients_keep_nu_and_updates_unbiased_for_5000_steps(long_run, decades):
    """A block scale that is a bound (b2·old absmax + (1 - b2)·max g²) rather
    than the new absmax never stores the block's largest element exactly, and
    its rounding errors of one sign make the median ν8/ν32 drift away from 1
    over 5,000 steps. Exact block maxima keep both medians, and the updates',
    within 10% at every 1,000th step."""
    nu8, nu32, u8, u32 = (x["spread"][:, decades - 1] for x in long_run)
    nu_ratio = np.median(nu8 / nu32, axis=(1, 2))
    update_ratio = np.median(np.abs(u8 / u32), axis=(1, 2))
    assert np.all((nu_ratio >= 0.9) & (nu_ratio <= 1.1)), nu_ratio
    assert np.all((update_ratio >= 0.9) & (update_ratio <= 1.1)), update_ratio


def test_rarely_updated_elements_keep_an_unbiased_nu_with_stochastic_rounding(long_run):
    """The v of a rare class decays by 0.1% a step, less than half a code gap:
    rounded to nearest it can only jump up, so its ν8/ν32 grows far above 1 at
    the 90th percentile, while stochastic rounding decays it on average like
    float32's."""
    nu8, nu32, _, _ = (x["head"][-1] for x in long_run)
    p90 = np.percentile(nu8 / nu32, 90)
    assert 0.9 <= p90 <= 1.15, p90


def test_a_non_finite_gradient_element_harms_no_other_element():
    """Runs of 30 steps on (4, 512) leaves (blocks of 256) whose element (1, 7)
    has a zero gradient, but for one NaN, inf or -inf at step 10, beside a
    clean run (vmapped: one compile), through the 8-bit and the float32 Adam of
    the library. float32 Adam's v of that element is then non-finite for good;
    the 8-bit state has no non-finite value (its codes cannot be, and the bad
    value is left out of its block's scale), its update of that element is
    non-finite at that step only, as float32's is, and every other element's
    update equals the clean run's at every step, bit for bit."""
    shape, bad_step, steps = (4, 512), 10, 30
    rng = np.random.default_rng(5)
    clean = rng.standard_normal((steps, *shape)).astype(np.float32)
    clean[:, 1, 7] = 0.0
    streams = {"clean": clean}
    for name, bad in (("nan", np.nan), ("inf", np.inf), ("-inf", -np.inf)):
        streams[name] = clean.copy()
        streams[name][bad_step, 1, 7] = bad
    others = np.ones(shape, bool)
    others[1, 7] = False

    def run(tx):
        """Updates and states of every stream, per step; vmapped, so that the runs share
        the leaf's index, hence its random bits."""

        def one(stream):
            def step(state, g):
                u, state = tx.update(g, state)
                return state, (u, state)

            return jax.lax.scan(step, tx.init(jnp.zeros(shape)), stream)[1]

        batched = jax.jit(jax.vmap(one))(jnp.stack([jnp.asarray(s) for s in streams.values()]))
        return (
            {name: jax.tree.map(lambda x, i=i: x[i], tree) for i, name in enumerate(streams)}
            for tree in batched
        )

    updates, states = run(adam_optax.scale_by_adam8bit(min_quantized_size=0))
    updates32, states32 = run(adam_optax.scale_by_adam())  # the library's float32 Adam
    for name in ("nan", "inf", "-inf"):
        got, expected = np.asarray(updates[name]), np.asarray(updates["clean"])
        np.testing.assert_array_equal(got[:, others], expected[:, others], err_msg=name)
        for moment in (states[name].mu, states[name].nu):
            assert np.all(np.isfinite(np.asarray(adam_optax.dequantize(moment)))), name
            assert np.all(np.isfinite(np.asarray(storage.per_leaf(moment).scales))), name
        # float32 Adam's v of the element is non-finite from the bad step on, its update
        # at that step too; the 8-bit update of that step is non-finite as float32's is.
        nu32 = np.asarray(states32[name].nu)
        assert not np.isfinite(nu32[bad_step:, 1, 7]).any(), name
        assert np.isfinite(nu32[:bad_step, 1, 7]).all(), name
        assert not np.isfinite(np.asarray(updates32[name])[bad_step, 1, 7]), name
        assert not np.isfinite(got[bad_step, 1, 7]), name
        assert np.isfinite(got[bad_step + 1 :, 1, 7]).all(), name  # the 8-bit state recovers


@pytest.mark.parametrize("shape", [(8, 600), (2, 1100)])
@pytest.mark.parametrize("stochastic_rounding", [False, True], ids=["nearest", "stochastic"])
def test_update_stores_each_block_at_its_exact_absmax_and_each_element_at_a_neighbouring_code(
    stochastic_rounding, shape
):
    """The round trip through ``update`` itself: after a step from an 8-bit
    state, each block's scale is the absmax of the exact new moments (computed
    in float64 from the dequantized old state), and each stored value is the
    nearest code value (round-to-nearest) or one of the two around it
    (stochastic rounding). A ragged last block (600 = 2·256 + 88, 1100 = 4·256 + 76)
    included: ``storage.apply`` reduces the whole blocks before it in a loop of their own."""
    rng = np.random.default_rng(1)
    b1, b2 = 0.9, 0.999
    tx = adam_optax.scale_by_adam8bit(
        b1, b2, min_quantized_size=0, stochastic_rounding=stochastic_rounding
    )
    update = jax.jit(tx.update)
    state = tx.init(jnp.zeros(shape))
    grads = rng.standard_normal((4, *shape)) * 10.0 ** rng.uniform(-3, 1, (4, *shape))
    for g in grads[:-1]:
        _, state = update(jnp.asarray(g, jnp.float32), state)
    old = adam_optax.dequantize(state)
    _, new = update(jnp.asarray(grads[-1], jnp.float32), state)
    g = grads[-1].astype(np.float32).astype(np.float64)
    exact_m = b1 * np.asarray(old.mu, np.float64) + (1 - b1) * g
    exact_v = b2 * np.asarray(old.nu, np.float64) + (1 - b2) * g * g
    for stored, exact in ((new.mu, exact_m), (new.nu, exact_v)):
        stored = storage.per_leaf(stored)
        starts = range(0, shape[-1], 256)
        absmax = np.stack([np.abs(exact[:, s : s + 256]).max(-1) for s in starts], -1)
        np.testing.assert_allclose(np.asarray(stored.scales), absmax, rtol=1e-5)
        per_element = np.repeat(absmax, 256, axis=-1)[:, : shape[-1]]
        table = storage.code_map(stored.signed).astype(np.float64)
        got = np.asarray(adam_optax.dequantize(stored), np.float64) / per_element
        x = exact / per_element
        below = table[np.clip(np.searchsorted(table, x, side="right") - 1, 0, 255)]
        above = table[np.clip(np.searchsorted(table, x, side="left"), 0, 255)]
        tolerance = 1e-5
        if stochastic_rounding:
            ok = (np.abs(got - below) <= tolerance) | (np.abs(got - above) <= tolerance)
        else:
            nearest = np.where(np.abs(x - below) <= np.abs(above - x), below, above)
            ok = np.abs(got - nearest) <= tolerance
        assert ok.mean() > 0.9999, (ok.mean(), got[~ok][:5], x[~ok][:5])


def test_the_8bit_amsgrad_max_never_falls_and_stays_within_a_code_of_the_max():
    """AMSGrad's running max, stored in 8 bits, is re-encoded every step against its
    block's scale. Rounded to nearest it fell whenever the new grid had no code at its old
    value; rounded up it never falls. 240 steps on a (4, 512) leaf (blocks of 256) whose
    elements' gradient scales spread over four decades, times a per-row factor that
    changes every step over two more, so that block maxima rise and fall; b2 = 0.9, so
    that v falls often below its running max. Each step, the stored max (read back with
    ``dequantize``) is >= the one before it, exactly, and at most one code of its block's
    grid above the max the step computed, max(stored max before, v_t), recomputed here in
    float64 from the stored v before the step and the gradient. Rounding up only ever
    adds, so over the run the stored max also stays close to the exact running max of
    v_t: within a quarter, where it is above 1% of its block's scale."""
    shape, steps, b2 = (4, 512), 240, 0.9
    rng = np.random.default_rng(7)
    spread = 10.0 ** rng.uniform(-3, 1, shape)
    rows = 10.0 ** rng.uniform(-1, 1, (steps, shape[0], 1))
    grads = (rng.standard_normal((steps, *shape)) * spread * rows).astype(np.float32)
    tx = adam_optax.scale_by_adam8bit(b2=b2, amsgrad=True, min_quantized_size=0)

    @jax.jit
    def run(grads):
        def step(state, g):
            _, state = tx.update(g, state)
            scales = storage.per_leaf(state.nu_max).scales
            return state, (*adam_optax.dequantize((state.nu, state.nu_max)), scales)

        return jax.lax.scan(step, tx.init(jnp.zeros(shape)), grads)[1]

    nu, nu_max, scales = (np.asarray(x, np.float64) for x in run(jnp.asarray(grads)))
    assert not np.isnan(nu_max).any()
    falls = np.diff(nu_max, axis=0) < 0
    assert not falls.any(), f"{falls.sum()} element-steps fell, first {np.argwhere(falls)[0]}"

    # The max the step computed: v_t from the stored v_{t-1} and g_t, in float64.
    g = grads.astype(np.float64)
    nu_before = np.concatenate([np.zeros((1, *shape)), nu[:-1]])
    max_before = np.concatenate([np.zeros((1, *shape)), nu_max[:-1]])
    v = b2 * nu_before + (1 - b2) * g * g
    computed = np.maximum(max_before, v)
    # The code gap above the computed value on its block's grid.
    scale = np.repeat(scales, 256, axis=-1)
    table = storage.code_map(signed=False).astype(np.float64)
    below = np.clip(np.searchsorted(table, computed / scale, side="right") - 1, 0, 254)
    gap = (table[below + 1] - table[below]) * scale
    float32_slack = 1e-6 * computed  # v_t computed in float32 by the library
    assert np.all(nu_max >= computed - float32_slack)
    excess = nu_max - computed
    assert np.all(excess <= gap + float32_slack), (excess / gap).max()

    exact_max = np.maximum.accumulate(v, axis=0)
    large = exact_max > 0.01 * scale
    drift = nu_max[large] / exact_max[large] - 1
    assert drift.min() >= -1e-6 and drift.max() <= 0.25, (drift.min(), drift.max())
