"""Blockwise 8- and 4-bit Adam over long horizons, against float32 Adam on the same gradients.

The blockwise moments carry their rounding errors for about 1/(1 - b2) = 1,000
steps, so a bias in how they are stored only shows after thousands of steps:
each test here runs at least 5,000 steps inside one jitted loop (one compile)
and compares the blockwise state and updates with ``adam_optax.scale_by_adam``'s
float32 ones, element by element. The gradients are synthetic streams that
do not depend on the params, so every optimizer sees the same gradients. Each
check of the 4-bit runs is shown to fail on a bias planted in the stored moments.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adam_optax
from adam_optax import storage
from tests.codes import BITS, BLOCK, TOP_GAP, code_values, dynamic_map, unpack

CHUNK, CHUNKS = 1000, 5  # compare every 1,000th step, up to 5,000 = 5 / (1 - b2)
B2 = 0.999  # scale_by_adam's default, which every run here uses
BLOCKWISE = {8: adam_optax.scale_by_adam8bit, 4: adam_optax.scale_by_adam4bit}
# The long run is compiled with LLVM's default optimizations, as the benchmarks are, not
# the suite's level 0 (see conftest.py): it runs 5,000 steps, which then take longer than
# the compile. The same HLO, but not the same bits: stochastic rounding makes each run one
# sample of the statistics below, whichever arithmetic computes it.
COMPILER_OPTIONS = {"xla_backend_optimization_level": 3}


def _run_side_by_side(runs, grad_fn, params):
    """Runs each of ``runs`` (name -> (transform, part), where ``part`` picks from a tree
    like ``params`` the leaves, or the slices of leaves, that it steps) and float32 Adam
    (all of ``params``) for CHUNKS·CHUNK steps of ``grad_fn(step)``, in one jitted loop.

    Returns name -> (ν, ν32, u, u32) at the end of every chunk: ν and the update u
    of that run and step, ν32 and u32 float32 Adam's of the same part, as trees of
    NumPy arrays of shape (CHUNKS, *shape of the part's leaf)).
    """
    tx32 = adam_optax.scale_by_adam()

    def step(t, carry):
        states, s32, _, _ = carry
        g = grad_fn(t)
        stepped = {name: tx.update(part(g), states[name]) for name, (tx, part) in runs.items()}
        u32, s32 = tx32.update(g, s32)
        return (
            {k: v[1] for k, v in stepped.items()},
            s32,
            {k: v[0] for k, v in stepped.items()},
            u32,
        )

    def chunk(carry, c):
        carry = jax.lax.fori_loop(c * CHUNK, (c + 1) * CHUNK, step, carry)
        states, s32, updates, u32 = carry
        return carry, (
            {k: adam_optax.dequantize(s.nu) for k, s in states.items()},
            s32.nu,
            updates,
            u32,
        )

    def run():
        inits = {name: tx.init(part(params)) for name, (tx, part) in runs.items()}
        zeros = {name: part(params) for name, (_, part) in runs.items()}
        return jax.lax.scan(chunk, (inits, tx32.init(params), zeros, params), jnp.arange(CHUNKS))[1]

    nu, nu32, updates, u32 = jax.tree.map(
        lambda x: np.asarray(x, np.float64), jax.jit(run).lower().compile(COMPILER_OPTIONS)()
    )
    return {
        name: (nu[name], part(nu32), updates[name], part(u32)) for name, (_, part) in runs.items()
    }


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


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """How far from 1 a statistic of the ratios to float32 Adam may be."""

    nu: float  # of ν's ratio: its mean or median over elements
    update: float  # of the median |update ratio|
    p90: tuple[float, float]  # the band of the 90th percentile of ν's ratio, rare classes


# 8 bits: the bands these tests had before 4 bits. 4 bits: one code gap at the top of a
# block, the most one store can move a value, relative to the block's scale: 0.9/8 for v
# and 0.9/4 for m (tests.codes.TOP_GAP). A statistic that moves further than one such gap
# has drifted by more than any single rounding explains. An update is m / √v, so its
# relative error is m's plus half v's: 0.9/4 + 0.9/8 / 2. The 90th percentile is allowed
# the same gap as the mean on either side.
TOLERANCE = {
    8: Tolerance(nu=0.1, update=0.1, p90=(0.9, 1.15)),
    4: Tolerance(
        nu=TOP_GAP[4, False],
        update=TOP_GAP[4, True] + TOP_GAP[4, False] / 2,
        p90=(1 - TOP_GAP[4, False], 1 + TOP_GAP[4, False]),
    ),
}


def _planted(tx: optax.GradientTransformation, factors) -> optax.GradientTransformation:
    """``tx`` with its stored v multiplied by ``factors`` after every step (its block
    scales are; ``factors`` is a tree like the params of arrays that broadcast against
    them): a bias of one sign per element, planted to show that a check catches it."""

    def update(updates, state, params=None):
        updates, state = tx.update(updates, state, params)
        scales = jax.tree.map(lambda s, f: s * f, state.nu.scales, factors)
        return updates, state._replace(nu=dataclasses.replace(state.nu, scales=scales))

    return optax.GradientTransformation(tx.init, update)


def _factor_for(ratio: float) -> float:
    """The factor that, applied to v after every step, makes v in the long run ``ratio``
    times float32's: v = b2·factor·v + (1 - b2)·g² settles at (1 - b2) / (1 - b2·factor)
    times g²."""
    return (1 - (1 - B2) / ratio) / B2


def _both(tree):
    return tree


def _rows(leaf: str, rows: int):
    """The part of a tree (or of one stacked per checkpoint) that is the first ``rows``
    rows of ``leaf``: a planted run needs no more to fail a check."""
    return lambda tree: {leaf: tree[leaf][..., :rows, :]}


_FOUR = TOLERANCE[4]
# The biases planted in 4-bit runs, each far below a code gap per store, and the part of
# the streams each runs on. On the spread's first row, v 2·tol above float32's in the long
# run (+1.8e-4 per store); on its second, v low enough that the updates, ∝ 1/√v, are 2·tol
# above float32's (-1.4e-3 per store). On the head, round-to-nearest, which ratchets a
# decaying v up (see the rare-class test). A planted run costs as much per step as the
# leaves it steps, whatever their size: hence two rows each, and two runs.
_V_SCALED = np.array([_factor_for(1 + 2 * _FOUR.nu), _factor_for((1 + 2 * _FOUR.update) ** -2)])
PLANTED = {
    "v_scaled": (
        _planted(BLOCKWISE[4](min_quantized_size=0), {"spread": _V_SCALED[:, None]}),
        _rows("spread", 2),
    ),
    "nearest": (BLOCKWISE[4](min_quantized_size=0, stochastic_rounding=False), _rows("head", 2)),
}


def _row(run, leaf: str, row: int):
    """(ν, ν32, u, u32) of one row of ``leaf`` in a run's results."""
    return tuple({leaf: x[leaf][..., row : row + 1, :]} for x in run)


@pytest.fixture(scope="module")
def long_run():
    """name -> (ν, ν32, u, u32) at every 1,000th step: for 8 and 4 bits (the default,
    stochastic rounding), both streams; for each planted bias, its rows of one."""
    params = {"spread": jnp.zeros(SPREAD), "head": jnp.zeros(HEAD)}
    runs = {f"{bits}bit": (BLOCKWISE[bits](min_quantized_size=0), _both) for bits in BITS}
    results = _run_side_by_side(runs | PLANTED, _gradients, params)
    scaled = results.pop("v_scaled")
    return results | {"v_high": _row(scaled, "spread", 0), "v_low": _row(scaled, "spread", 1)}


def _spread_statistic(run, decades: int, statistic: str) -> np.ndarray:
    """Per 1,000th step, a statistic over the elements of the one- or two-decade spread:
    ν's ratio to float32's ("mean" or "median"), or the median |update ratio| ("updates")."""
    nu, nu32, u, u32 = (x["spread"][:, decades - 1] for x in run)
    if statistic == "updates":
        return np.median(np.abs(u / u32), axis=(1, 2))
    return getattr(np, statistic)(nu / nu32, axis=(1, 2))


def _rare_statistic(run, statistic: str) -> float:
    """At the last step, ν's ratio to float32's over the head: its "mean" or 90th
    percentile ("p90")."""
    nu, nu32, _, _ = (x["head"][-1] for x in run)
    ratio = nu / nu32
    return float(np.percentile(ratio, 90) if statistic == "p90" else ratio.mean())


def _band(bits: int, statistic: str) -> tuple[float, float]:
    """Where ``statistic`` must lie for ``bits``-bit moments."""
    tolerance = TOLERANCE[bits]
    if statistic == "p90":
        return tolerance.p90
    width = tolerance.update if statistic == "updates" else tolerance.nu
    return 1 - width, 1 + width


def _within(value, band: tuple[float, float]) -> bool:
    return bool(np.all((value >= band[0]) & (value <= band[1])))


# What the 4-bit runs fail, with stochastic rounding unbiased in value (the mean passes):
# each element's v sits on one of a few codes of its decade, more often on the lower one,
# so the ratios are skewed; an independent float64 simulation of 4-bit stochastic rounding
# at exact block maxima on these gradients gives the same medians (0.90-0.91, 0.79-0.82).
# The one-decade median lies at the band's edge, which it crosses or not by chance.
MEDIAN_NU_AT_4_BITS = {
    1: ("median ν/ν32 0.885-0.91 over the 1,000th steps, the band's edge 0.8875", False),
    2: ("median ν/ν32 0.79-0.82 over the 1,000th steps, below the band's 0.8875", True),
}
P90_AT_4_BITS = "the 90th percentile of ν/ν32 is 1.61, above the band's 1.1125"


def _fails_at_4_bits(reason: str, strict: bool = True):
    return pytest.mark.xfail(strict=strict, reason=f"4 bits: {reason}")


SPREAD_CASES = [
    pytest.param(bits, decades, statistic, id=f"{bits}bit-{decades}-{statistic}", marks=marks)
    for bits in BITS
    for decades in (1, 2)
    for statistic in ("mean", "median", "updates")
    for marks in [
        _fails_at_4_bits(*MEDIAN_NU_AT_4_BITS[decades])
        if (bits, statistic) == (4, "median")
        else ()
    ]
]


@pytest.mark.parametrize("bits, decades, statistic", SPREAD_CASES)
def test_spread_gradients_keep_nu_and_updates_unbiased_for_5000_steps(
    long_run, bits, decades, statistic
):
    """A block scale that is a bound (b2·old absmax + (1 - b2)·max g²) rather
    than the new absmax never stores the block's largest element exactly, and
    its rounding errors of one sign make ν/ν32 drift away from 1 over 5,000
    steps. Exact block maxima keep its mean and median, and the median
    |update ratio|, within the tolerance of the code width at every 1,000th
    step. Stochastic rounding is unbiased in value, so the mean is the statistic
    it promises; the median also sees how far a typical element strays."""
    value = _spread_statistic(long_run[f"{bits}bit"], decades, statistic)
    assert _within(value, _band(bits, statistic)), value


RARE_CASES = [
    pytest.param(bits, statistic, marks=_fails_at_4_bits(P90_AT_4_BITS))
    if (bits, statistic) == (4, "p90")
    else pytest.param(bits, statistic)
    for bits in BITS
    for statistic in ("mean", "p90")
]


@pytest.mark.parametrize("bits, statistic", RARE_CASES)
def test_rarely_updated_elements_keep_an_unbiased_nu_with_stochastic_rounding(
    long_run, bits, statistic
):
    """The v of a rare class decays by 0.1% a step, less than half a code gap:
    rounded to nearest it can only jump up, so its ν/ν32 grows far above 1,
    on average and at the 90th percentile, while stochastic rounding decays it
    on average like float32's."""
    value = _rare_statistic(long_run[f"{bits}bit"], statistic)
    assert _within(value, _band(bits, statistic)), value


@pytest.mark.parametrize(
    "plant, stream, statistic",
    [
        ("v_high", 1, "mean"),
        ("v_high", 2, "mean"),
        ("v_low", 1, "updates"),
        ("v_low", 2, "updates"),
        ("nearest", "rare", "mean"),
    ],
)
def test_each_4bit_drift_check_fails_on_a_planted_bias(long_run, plant, stream, statistic):
    """Each check that the 4-bit runs pass above (a spread's decades, or the rare
    classes), on a 4-bit run with a bias planted (see PLANTED): it fails. The
    planted v biases are a fraction of a percent per store, far below a 4-bit
    code gap (11% of the block's scale at its top)."""
    run = long_run[plant]
    if stream == "rare":
        value = _rare_statistic(run, statistic)
    else:
        value = _spread_statistic(run, stream, statistic)
    assert not _within(value, _band(4, statistic)), value


_SHAPE, _BAD_STEP, _STEPS = (4, 512), 10, 30


@functools.cache
def _non_finite_streams() -> dict[str, np.ndarray]:
    """Gradients on a (4, 512) leaf whose element (1, 7) is zero, but for one NaN, inf or
    -inf at step 10, and the clean stream."""
    rng = np.random.default_rng(5)
    clean = rng.standard_normal((_STEPS, *_SHAPE)).astype(np.float32)
    clean[:, 1, 7] = 0.0
    streams = {"clean": clean}
    for name, bad in (("nan", np.nan), ("inf", np.inf), ("-inf", -np.inf)):
        streams[name] = clean.copy()
        streams[name][_BAD_STEP, 1, 7] = bad
    return streams


def _run_streams(tx):
    """Updates and states of every stream, per step; vmapped, so that the runs share
    the leaf's index, hence its random bits."""
    streams = _non_finite_streams()

    def one(stream):
        def step(state, g):
            u, state = tx.update(g, state)
            return state, (u, state)

        return jax.lax.scan(step, tx.init(jnp.zeros(_SHAPE)), stream)[1]

    batched = jax.jit(jax.vmap(one))(jnp.stack([jnp.asarray(s) for s in streams.values()]))
    return tuple(
        {name: jax.tree.map(lambda x, i=i: x[i], tree) for i, name in enumerate(streams)}
        for tree in batched
    )


@functools.cache
def _float32_streams():
    return _run_streams(adam_optax.scale_by_adam())  # the library's float32 Adam


@pytest.mark.parametrize("bits", BITS)
def test_a_non_finite_gradient_element_harms_no_other_element(bits):
    """Runs of 30 steps on (4, 512) leaves (blocks of 256 or 128) whose element
    (1, 7) has a zero gradient, but for one NaN, inf or -inf at step 10, beside
    a clean run (vmapped: one compile), through the blockwise and the float32
    Adam of the library. float32 Adam's v of that element is then non-finite for
    good; the blockwise state has no non-finite value (its codes cannot be, and
    the bad value is left out of its block's scale), its update of that element
    is non-finite at that step only, as float32's is, and every other element's
    update equals the clean run's at every step, bit for bit: with 4 bits, (1, 6)
    too, whose code shares the bad element's byte."""
    others = np.ones(_SHAPE, bool)
    others[1, 7] = False
    updates, states = _run_streams(BLOCKWISE[bits](min_quantized_size=0))
    updates32, states32 = _float32_streams()
    for name in ("nan", "inf", "-inf"):
        got, expected = np.asarray(updates[name]), np.asarray(updates["clean"])
        np.testing.assert_array_equal(got[:, others], expected[:, others], err_msg=name)
        for moment in (states[name].mu, states[name].nu):
            assert moment.bits == bits
            assert np.all(np.isfinite(np.asarray(adam_optax.dequantize(moment)))), name
            assert np.all(np.isfinite(np.asarray(storage.per_leaf(moment).scales))), name
        # float32 Adam's v of the element is non-finite from the bad step on, its update
        # at that step too; the blockwise update of that step is non-finite as float32's is.
        nu32 = np.asarray(states32[name].nu)
        assert not np.isfinite(nu32[_BAD_STEP:, 1, 7]).any(), name
        assert np.isfinite(nu32[:_BAD_STEP, 1, 7]).all(), name
        assert not np.isfinite(np.asarray(updates32[name])[_BAD_STEP, 1, 7]), name
        assert not np.isfinite(got[_BAD_STEP, 1, 7]), name
        assert np.isfinite(got[_BAD_STEP + 1 :, 1, 7]).all(), name  # the state recovers


@pytest.mark.parametrize(
    "bits, shape",
    [
        pytest.param(bits, shape, id=f"{bits}bit-{shape[0]}x{shape[1]}")
        for bits, shape in [(8, (8, 600)), (8, (2, 1100)), (4, (2, 601))]
    ],
)
@pytest.mark.parametrize("stochastic_rounding", [False, True], ids=["nearest", "stochastic"])
def test_update_stores_each_block_at_its_exact_absmax_and_each_element_at_a_neighbouring_code(
    stochastic_rounding, bits, shape
):
    """The round trip through ``update`` itself: after a step from a blockwise
    state, each block's scale is the absmax of the exact new moments (computed
    in float64 from the dequantized old state), and each stored value is the
    nearest code value (round-to-nearest) or one of the two around it
    (stochastic rounding). The stored values are read from the codes here, by
    tests/codes.py's map and unpacking, as well as by dequantize. A ragged last
    block (600 = 2·256 + 88, 1100 = 4·256 + 76, 601 = 4·128 + 89) included:
    ``storage.apply`` reduces the whole blocks before it in a loop of their own. An odd
    4-bit row (601) leaves its last byte's high half unused, and has one scale more, 0."""
    rng = np.random.default_rng(1)
    b1, b2, block = 0.9, 0.999, BLOCK[bits]
    tx = BLOCKWISE[bits](b1, b2, min_quantized_size=0, stochastic_rounding=stochastic_rounding)
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
        assert stored.bits == bits and stored.block_size == block
        starts = range(0, shape[-1], block)
        absmax = np.stack([np.abs(exact[:, s : s + block]).max(-1) for s in starts], -1)
        stored_scales = np.asarray(stored.scales, np.float64)
        if bits == 4 and shape[-1] % 2:  # the odd row's marker
            np.testing.assert_array_equal(stored_scales[:, -1], 0.0)
            stored_scales = stored_scales[:, :-1]
        np.testing.assert_allclose(stored_scales, absmax, rtol=1e-5)
        per_element = np.repeat(absmax, block, axis=-1)[:, : shape[-1]]
        got = code_values(stored.signed, bits)[unpack(stored.codes, bits)[:, : shape[-1]]]
        scales = np.repeat(stored_scales, block, -1)[:, : shape[-1]]
        read = np.asarray(adam_optax.dequantize(stored))  # as the reference reads the codes
        np.testing.assert_allclose(read, got * scales, rtol=1e-6, atol=0)
        table = dynamic_map(stored.signed, bits)
        x = exact / per_element
        top = len(table) - 1
        below = table[np.clip(np.searchsorted(table, x, side="right") - 1, 0, top)]
        above = table[np.clip(np.searchsorted(table, x, side="left"), 0, top)]
        tolerance = 1e-5
        if stochastic_rounding:
            ok = (np.abs(got - below) <= tolerance) | (np.abs(got - above) <= tolerance)
        else:
            nearest = np.where(np.abs(x - below) <= np.abs(above - x), below, above)
            ok = np.abs(got - nearest) <= tolerance
        assert ok.mean() > 0.9999, (ok.mean(), got[~ok][:5], x[~ok][:5])


# Per code width, where the stored running max is compared with the exact one (above this
# fraction of its block's scale) and how far above it may be, relative: about two code gaps
# at that fraction. 8 bits: above 0.01, where a gap is 0.09/64, 14% of 0.01, within 0.25.
# 4 bits: in v's top decade, above 0.1, where a gap is 0.9/8: within 2 · 0.9/8 / 0.1.
AMSGRAD_DRIFT = {8: (0.01, 0.25), 4: (0.1, 2 * TOP_GAP[4, False] / 0.1)}


@pytest.mark.parametrize("bits", BITS)
def test_the_amsgrad_max_never_falls_and_stays_within_a_code_of_the_max(bits):
    """AMSGrad's running max, stored in 8 or 4 bits, is re-encoded every step against its
    block's scale. Rounded to nearest it fell whenever the new grid had no code at its old
    value; rounded up it never falls. 240 steps on a (4, 512) leaf (blocks of 256 or 128) whose
    elements' gradient scales spread over four decades, times a per-row factor that
    changes every step over two more, so that block maxima rise and fall; b2 = 0.9, so
    that v falls often below its running max. Each step, the stored max (read back with
    ``dequantize``) is >= the one before it, exactly, and at most one code of its block's
    grid above the max the step computed, max(stored max before, v_t), recomputed here in
    float64 from the stored v before the step and the gradient. Rounding up only ever
    adds, so over the run the stored max also stays close to the exact running max of
    v_t: within about two code gaps, where it is well within the map's range
    (AMSGRAD_DRIFT)."""
    shape, steps, b2 = (4, 512), 240, 0.9
    rng = np.random.default_rng(7)
    spread = 10.0 ** rng.uniform(-3, 1, shape)
    rows = 10.0 ** rng.uniform(-1, 1, (steps, shape[0], 1))
    grads = (rng.standard_normal((steps, *shape)) * spread * rows).astype(np.float32)
    tx = BLOCKWISE[bits](b2=b2, amsgrad=True, min_quantized_size=0)

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
    scale = np.repeat(scales, BLOCK[bits], axis=-1)
    table = dynamic_map(signed=False, bits=bits)
    below = np.clip(np.searchsorted(table, computed / scale, side="right") - 1, 0, 2**bits - 2)
    gap = (table[below + 1] - table[below]) * scale
    float32_slack = 1e-6 * computed  # v_t computed in float32 by the library
    assert np.all(nu_max >= computed - float32_slack)
    excess = nu_max - computed
    assert np.all(excess <= gap + float32_slack), (excess / gap).max()

    exact_max = np.maximum.accumulate(v, axis=0)
    floor, most = AMSGRAD_DRIFT[bits]
    large = exact_max > floor * scale
    drift = nu_max[large] / exact_max[large] - 1
    assert drift.min() >= -1e-6 and drift.max() <= most, (drift.min(), drift.max())
