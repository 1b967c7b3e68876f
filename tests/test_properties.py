"""Properties of every configuration in CONFIGS, on random pytrees (hypothesis).

The trees are nested dicts, lists and tuples of 1 to 4 leaves, each of one of a
few shapes of 0 to 3 dimensions, in float32, bfloat16 or float16. The properties:

- jit equals eager, up to float32 rounding (see ``test_jit_matches_eager``);
- dtypes, shapes and the state's tree structure are preserved;
- scale invariance: with eps = eps_root = 0, the update of c·g is that of g;
- the step is bounded as in Kingma & Ba §2.1, by a rigorous Cauchy–Schwarz
  bound computed in NumPy float64 from the decay rates alone;
- the first step is lr·sign(g) (times a known factor for NAdam and for AMSGrad
  without bias correction).

The properties run eagerly, except the jit one, which compiles every example.
Either way JAX compiles per shape and dtype, which dominates the run time, so
the shapes come from a short list (the math is elementwise: what matters is the
tree, the dtypes and the values) and the example counts are small. For a deeper
run, ``ADAM_OPTAX_EXAMPLES=10 python -m pytest tests/test_properties.py`` draws
ten times as many (see ``SEED`` for how the configurations share them).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, note, seed, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import adam_optax
from tests.cases import CONFIGS, Config
from tests.trajectories import make

DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)
U32 = 2.0**-24  # float32's unit roundoff
STEPS = 3

# One seed per session, shared by all the configurations' runs of a test: they then
# draw the same shapes and dtypes, and JAX compiles each shape's kernels once rather
# than once per configuration, which is most of the run time. The seed is fixed so CI
# is deterministic (a random one failed the jit-vs-eager bound once, for
# adam_nu_float32, by 3e-6); set ADAM_OPTAX_SEED to explore others.
SEED = int(os.environ.get("ADAM_OPTAX_SEED", 0))
EXAMPLES = float(os.environ.get("ADAM_OPTAX_EXAMPLES", 1))  # multiplies every example count
# A few shapes, so that JAX's compilations are shared across examples and configurations.
SHAPES = ((), (1,), (3,), (2, 3), (4, 1, 2))


def examples(n: int):
    """Hypothesis settings for a property: n examples (times ADAM_OPTAX_EXAMPLES), the
    session's seed, no deadline."""

    def decorate(test):
        count = max(1, round(n * EXAMPLES))
        return seed(SEED)(settings(max_examples=count, deadline=None)(test))

    return decorate


# --- Strategies --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Leaf:
    """A leaf's shape and dtype; an unregistered class, so a leaf to jax.tree."""

    shape: tuple[int, ...]
    dtype: Any


def _containers(children):
    keys = st.text("abcdefgh", min_size=1, max_size=2)
    return st.one_of(
        st.lists(children, min_size=1, max_size=3),
        st.lists(children, min_size=1, max_size=3).map(tuple),
        st.dictionaries(keys, children, min_size=1, max_size=3),
    )


def tree_specs(dtypes=DTYPES):
    leaves = st.builds(Leaf, st.sampled_from(SHAPES), st.sampled_from(dtypes))
    return st.recursive(leaves, _containers, max_leaves=4).filter(
        lambda spec: 1 <= len(jax.tree.leaves(spec)) <= 4
    )


def _signed(magnitudes):
    return st.tuples(st.booleans(), magnitudes).map(lambda sm: -sm[1] if sm[0] else sm[1])


# Finite and moderate: 0 or 1e-3 <= |x| <= 1e2, which every dtype holds as a normal number.
MODERATE = st.one_of(st.just(0.0), _signed(st.floats(1e-3, 1e2)))
# Bounded away from 0, for the properties that divide by sqrt(v) with eps = 0.
NONZERO = _signed(st.floats(1e-2, 1e2))


class Problem(NamedTuple):
    params: Any
    grads: list[Any]  # one tree like params per step


@st.composite
def problems(draw, steps=STEPS, dtypes=DTYPES, values=MODERATE, first=None):
    """Params and a gradient tree per step; ``first`` replaces ``values`` at step 1."""
    spec = draw(tree_specs(dtypes))

    def fill(elements):
        def leaf(spec_leaf):
            x = draw(hnp.arrays(np.float32, spec_leaf.shape, elements=elements))
            return jnp.asarray(x, spec_leaf.dtype)

        return jax.tree.map(leaf, spec)

    params = fill(MODERATE)
    grads = [fill(first if (t == 0 and first is not None) else values) for t in range(steps)]
    return Problem(params, grads)


# --- Helpers -----------------------------------------------------------------------------------


def _ids(config: Config) -> str:
    return config.id


def _accepts(config: Config, name: str) -> bool:
    return name in inspect.signature(getattr(adam_optax, config.alias)).parameters


def _without_eps(config: Config) -> optax.GradientTransformation:
    """The configuration with eps = 0 and, where it has one, eps_root = 0."""
    kwargs = dict(config.kwargs, eps=0.0)
    if _accepts(config, "eps_root"):
        kwargs["eps_root"] = 0.0
    return getattr(adam_optax, config.alias)(**kwargs)


def _weight_decay(config: Config) -> float:
    if not _accepts(config, "weight_decay"):
        return 0.0
    default = inspect.signature(getattr(adam_optax, config.alias)).parameters["weight_decay"]
    return float(config.kwargs.get("weight_decay", default.default))


def _lr(config: Config, t: int) -> float:
    """The learning rate at step t = 1, 2, ...: schedules see the count t - 1."""
    lr = config.kwargs["learning_rate"]
    return float(lr(t - 1)) if callable(lr) else float(lr)


def _run(tx, problem):
    """(updates, state before, state after, params before) for each eager step."""
    note(f"ADAM_OPTAX_SEED={SEED}")
    params = problem.params
    state = tx.init(params)
    steps = []
    for g in problem.grads:
        updates, new_state = tx.update(g, state, params)
        steps.append((updates, state, new_state, params))
        params = optax.apply_updates(params, updates)
        state = new_state
    return steps


def _f64(x) -> np.ndarray:
    """An array of float32, bfloat16 or float16 in NumPy float64 (exactly)."""
    return np.asarray(jnp.asarray(x, jnp.float32), np.float64)


def _ulp(x: np.ndarray, dtype) -> np.ndarray:
    """The spacing of ``dtype`` at |x|: one unit in its last place, subnormals included."""
    info = jnp.finfo(dtype)
    eps, tiny = float(info.eps), float(info.tiny)
    x = np.maximum(np.abs(x), tiny)
    return np.maximum(2.0 ** np.floor(np.log2(x)) * eps, tiny * eps)


def _unit_roundoff(dtype) -> float:
    return float(jnp.finfo(dtype).eps) / 2


def _leaves_with_paths(tree):
    return jax.tree_util.tree_flatten_with_path(tree)[0]


# --- jit equals eager --------------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS, ids=_ids)
@examples(2)
@given(problem=problems())
def test_jit_matches_eager(config, problem):
    """Each step, from the same inputs, compiled and eager agree to float32 rounding.

    They are not bitwise equal: under jit XLA fuses b1·m + (1-b1)·g into a fused
    multiply-add, one rounding fewer, which moves the result by an ulp of the larger
    addend, not of the (possibly cancelled) sum. So each leaf is judged against the
    uncancelled magnitude of its computation, which is what the same transform
    returns for |g|, |state| and |params| (every formula is a sum of nonnegative
    multiples of m and g, over a denominator that ignores signs):
        |eager - jit| <= 8 u · magnitude + 1 ulp(leaf dtype).
    (The bias corrections' powers b^t agree: the step count is a float exponent,
    so eager and jit both take lax.pow. An integer one took lax.integer_pow
    eagerly, which differed by up to t·u and recompiled at every step.)
    States are fed from the eager run to both, so a one-ulp difference in a
    bfloat16 moment is not carried on and amplified.
    """
    tx = make(config)
    compiled = jax.jit(tx.update)
    for t, (updates, state, new_state, params) in enumerate(_run(tx, problem), 1):
        g = problem.grads[t - 1]
        got_updates, got_state = compiled(g, state, params)
        magnitude = tx.update(
            jax.tree.map(jnp.abs, g), jax.tree.map(jnp.abs, state), jax.tree.map(jnp.abs, params)
        )
        assert jax.tree.structure(got_state) == jax.tree.structure(new_state)
        rel = 8 * U32
        for (path, want), got, scale in zip(
            _leaves_with_paths((updates, new_state)),
            jax.tree.leaves((got_updates, got_state)),
            jax.tree.leaves(magnitude),
            strict=True,
        ):
            assert got.dtype == want.dtype and got.shape == want.shape, path
            if jnp.issubdtype(want.dtype, jnp.integer):
                assert np.array_equal(got, want), path
                continue
            dtype = want.dtype
            got, want = _f64(got), _f64(want)
            # Equal is equal, infinities and NaNs included: a float16 second moment can
            # underflow to 0 and leave m̂/eps to overflow, in both modes alike.
            same = (got == want) | (np.isnan(got) & np.isnan(want))
            diff = np.where(same, 0.0, np.abs(got - want))
            bound = rel * np.abs(_f64(scale)) + _ulp(_f64(scale), dtype)
            excess = diff - bound
            assert np.all(excess <= 0), (t, jax.tree_util.keystr(path), excess.max())


# --- dtypes and structure ----------------------------------------------------------------------


_MOMENT_STATES = (optax.ScaleByAdamState, optax.ScaleByAmsgradState)


def _moment_states(state) -> list:
    """The Adam-family states inside a chain's state."""
    nodes = jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, _MOMENT_STATES))
    return [s for s in nodes if isinstance(s, _MOMENT_STATES)]


@pytest.mark.parametrize("config", CONFIGS, ids=_ids)
@examples(5)
@given(problem=problems())
def test_dtypes_and_structure_preserved(config, problem):
    tx = make(config)
    init = tx.init(problem.params)
    (adam_state,) = _moment_states(init)
    mu_dtype = config.kwargs.get("mu_dtype")
    nu_dtype = config.kwargs.get("nu_dtype")
    for p, mu, nu in zip(
        jax.tree.leaves(problem.params),
        jax.tree.leaves(adam_state.mu),
        jax.tree.leaves(adam_state.nu),
        strict=True,
    ):
        assert mu.shape == nu.shape == p.shape
        assert mu.dtype == (p.dtype if mu_dtype is None else mu_dtype)
        # Squared float16 gradients underflow float16, so Adam's nu is float32 by
        # default; AdaMax's nu holds |g| and keeps the params' dtype.
        widen = p.dtype == jnp.float16 and not config.alias.startswith("adamax")
        default_nu = jnp.float32 if widen else p.dtype
        assert nu.dtype == (default_nu if nu_dtype is None else nu_dtype)
    if isinstance(adam_state, optax.ScaleByAmsgradState):
        assert jax.tree.structure(adam_state.nu_max) == jax.tree.structure(adam_state.nu)
        for nu, nu_max in zip(
            jax.tree.leaves(adam_state.nu), jax.tree.leaves(adam_state.nu_max), strict=True
        ):
            assert nu_max.dtype == nu.dtype and nu_max.shape == nu.shape

    init_leaves = jax.tree.leaves(init)
    for t, (updates, _, state, _) in enumerate(_run(tx, problem), 1):
        assert jax.tree.structure(updates) == jax.tree.structure(problem.params)
        grads = jax.tree.leaves(problem.grads[t - 1])
        for u, g in zip(jax.tree.leaves(updates), grads, strict=True):
            assert u.dtype == g.dtype and u.shape == g.shape
        assert jax.tree.structure(state) == jax.tree.structure(init)
        for before, after in zip(init_leaves, jax.tree.leaves(state), strict=True):
            assert after.dtype == before.dtype and after.shape == before.shape
        (adam_state,) = _moment_states(state)
        assert adam_state.count.dtype == jnp.int32 and int(adam_state.count) == t


# --- scale invariance --------------------------------------------------------------------------

# Weight decay adds lr·wd·θ, which does not scale with g.
WITHOUT_DECAY = [c for c in CONFIGS if _weight_decay(c) == 0]


@pytest.mark.parametrize("config", WITHOUT_DECAY, ids=_ids)
@examples(5)
@given(
    problem=problems(dtypes=(jnp.float32, jnp.bfloat16), values=NONZERO),
    k=st.integers(-10, 10),
)
def test_power_of_two_scale_gives_identical_updates(config, problem, k):
    """With eps = eps_root = 0 the update is homogeneous of degree 0 in g.

    For c = 2^k every operation commutes exactly with the scaling (products,
    sums and maxima scale by c or c², sqrt(c² x) = c sqrt(x) exactly since c² is a
    power of 4), so the updates are bitwise equal, as long as nothing reaches the
    subnormals: here |c g| >= 1e-5 and (1-b2)(c g)² >= 1e-13 in float32, and
    bfloat16 has float32's exponent range. (Not float16: its second moment
    (1-b2) g² falls in float16's subnormals already for |g| ~ 1e-2, where
    rounding is absolute, not relative.) Weight decay adds lr·wd·θ, which does
    not scale with g.
    """
    tx = _without_eps(config)
    c = 2.0**k
    scaled = problem._replace(grads=[jax.tree.map(lambda g: g * c, g) for g in problem.grads])
    for (got, *_), (want, *_) in zip(_run(tx, scaled), _run(tx, problem), strict=True):
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(_f64(a), _f64(b))


@pytest.mark.parametrize("config", WITHOUT_DECAY, ids=_ids)
@examples(5)
@given(problem=problems(dtypes=(jnp.float32,), values=NONZERO), log_c=st.floats(-3, 3))
def test_any_scale_gives_the_same_updates(config, problem, log_c):
    """c = 10^log_c in [1e-3, 1e3]: the same updates up to rounding.

    Rounding c·g, and every later rounding, is a relative error of at most u (the
    unit roundoff of the dtype stored: float32's, or bfloat16's for mu_dtype),
    with ~8 roundings per step. They are relative to the uncancelled magnitudes,
    which is the update the transform makes of |g| (the moments sum nonnegative
    multiples of the g's, over a denominator that ignores their signs); errors
    carried in the state add up over steps, hence 8·t·u·magnitude.
    """
    tx = _without_eps(config)
    c = 10.0**log_c
    scaled = problem._replace(grads=[jax.tree.map(lambda g: g * c, g) for g in problem.grads])
    absolute = problem._replace(grads=[jax.tree.map(jnp.abs, g) for g in problem.grads])
    state_dtypes = {x.dtype for x in jax.tree.leaves(tx.init(problem.params))}
    u = max(_unit_roundoff(d) for d in state_dtypes if jnp.issubdtype(d, jnp.floating))
    runs = [_run(tx, p) for p in (scaled, problem, absolute)]
    for t, ((got, *_), (want, *_), (magnitude, *_)) in enumerate(zip(*runs, strict=True), 1):
        for a, b, m in zip(
            jax.tree.leaves(got), jax.tree.leaves(want), jax.tree.leaves(magnitude), strict=True
        ):
            bound = 8 * t * u * np.abs(_f64(m)) + _ulp(_f64(m), jnp.float32)
            excess = np.abs(_f64(a) - _f64(b)) - bound
            assert np.all(excess <= 0), (t, excess.max())


# --- the step's bound (Kingma & Ba §2.1) ---------------------------------------------------------


class Formula(NamedTuple):
    """What the test reads off a configuration, independently of adam_optax."""

    b1: float
    b2: float
    nesterov: bool
    adamax: bool
    correct_mu: bool  # m̂ = m / (1 - b1^t), or m itself
    correct_nu: bool  # v̂ = v / (1 - b2^t), or v itself


def _formula(config: Config) -> Formula:
    kw = config.kwargs
    nesterov = kw.get("nesterov", config.alias in ("nadam", "nadamw"))
    return Formula(
        b1=kw.get("b1", 0.9),
        b2=kw.get("b2", 0.999),
        nesterov=nesterov,
        adamax=config.alias in ("adamax", "adamaxw"),
        correct_mu=kw.get("bias_correction_mu", True),
        correct_nu=kw.get("bias_correction_nu", True),
    )


def _hyperparameter_rounding(f: Formula) -> float:
    """Relative effect on the step of rounding b1 and b2 (or 1 - b1, 1 - b2) to float32.

    Rounding b moves 1 - b by up to u·b/(1-b) relatively (1.3e-5 for b2 = 0.999),
    and an implementation may round b and 1 - b separately (optax does, and so does
    adam_optax), so that the weights of m̂ and v̂ sum to (1-b)/(1-b^t) computed
    from two different b's: 1 only within u/(1-b). m̂ moves by that much, sqrt(v̂)
    by half of it; twice the sum allows for NAdam's 1 - b1^(t+1). With b2 = 0.999
    this is ~1.2e-4, where a wrong formula is off by a factor.
    """
    return sum(2 * U32 / (1 - b) for b in (f.b1, f.b2))


def step_bound(f: Formula, t: int) -> float:
    """B_t with |update direction at step t| <= B_t, for eps = eps_root = 0.

    Adam: m̂_t = Σ_i w_i g_i and v̂_t = Σ_i q_i g_i² (i = 1..t), with
        w_i = (1-b1) b1^(t-i) / (1-b1^t),   q_i = (1-b2) b2^(t-i) / (1-b2^t)
    (without bias corrections the denominators 1-b^t are left out). Cauchy–Schwarz,
    with the factors w_i/√q_i and √q_i·|g_i|:
        |m̂_t| <= Σ w_i |g_i| <= sqrt(Σ w_i²/q_i) · sqrt(Σ q_i g_i²) = B_t · sqrt(v̂_t).
    AMSGrad's running max (of v_t or of v̂_t, in any of the three conventions)
    only makes the denominator larger, and eps > 0 would too. NAdam's m̂_t =
    b1 m_t/(1-b1^(t+1)) + (1-b1) g_t/(1-b1^t) is again Σ w_i g_i, with
        w_i = b1 (1-b1) b1^(t-i) / (1-b1^(t+1)) + [i = t] (1-b1) / (1-b1^t).
    AdaMax with eps = 0: u_t = max_i b2^(t-i) |g_i|, so |g_i| <= u_t / b2^(t-i) and
        |m̂_t| / u_t <= Σ w_i |g_i| / u_t <= Σ w_i / b2^(t-i) = B_t.
    At t = 1 every bound is attained: the first step is B_1 · sign(g).
    (The paper's |Δ_t| ≲ α(1-b1)/sqrt(1-b2) is the bias-uncorrected B_t's limit.)
    """
    i = np.arange(1, t + 1, dtype=np.float64)
    b1, b2 = f.b1, f.b2
    if f.nesterov:
        w = b1 * (1 - b1) * b1 ** (t - i) / (1 - b1 ** (t + 1))
        w[-1] += (1 - b1) / (1 - b1**t)
    else:
        w = (1 - b1) * b1 ** (t - i) / ((1 - b1**t) if f.correct_mu else 1.0)
    if f.adamax:
        return float(np.sum(w / b2 ** (t - i)))
    q = (1 - b2) * b2 ** (t - i) / ((1 - b2**t) if f.correct_nu else 1.0)
    return float(np.sqrt(np.sum(w**2 / q)))


def test_step_bound_limits():
    """B_t against closed forms: the first step, and the paper's large-t limit."""
    adam = Formula(0.9, 0.999, False, False, True, True)
    assert step_bound(adam, 1) == pytest.approx(1.0, rel=1e-12)
    nadam = adam._replace(nesterov=True)
    assert step_bound(nadam, 1) == pytest.approx(1 + 0.9 / 1.9, rel=1e-12)
    # For t -> ∞ without bias corrections, Σ w_i²/q_i -> (1-b1)²/((1-b2)(1 - b1²/b2)).
    raw = adam._replace(correct_mu=False, correct_nu=False)
    limit = (1 - 0.9) / np.sqrt((1 - 0.999) * (1 - 0.9**2 / 0.999))
    assert step_bound(raw, 2000) == pytest.approx(limit, rel=1e-9)
    assert step_bound(adam._replace(adamax=True), 1) == pytest.approx(1.0, rel=1e-12)


def _bound_slack(config: Config, dtype, t: int) -> float:
    """Relative slack for rounding: float32 arithmetic, then the stored dtypes.

    A moment stored in a dtype with unit roundoff u is off by a factor within
    (1 ± u) per step, and the update is rounded once more to the params' dtype.
    """
    u = max(_unit_roundoff(d) for d in (dtype, config.kwargs.get("mu_dtype") or dtype))
    rounding = 16 * U32 + 2 * t * u + 3 * _unit_roundoff(dtype)
    return rounding + _hyperparameter_rounding(_formula(config))


@pytest.mark.parametrize("config", CONFIGS, ids=_ids)
@examples(5)
@given(
    problem=problems(steps=6, dtypes=(jnp.float32, jnp.bfloat16), values=MODERATE, first=NONZERO)
)
def test_step_is_bounded(config, problem):
    """|u_t + lr_t·wd·θ_{t-1}| <= lr_t · B_t elementwise, with eps = eps_root = 0.

    Weight decay's term is taken off in float64 (it is lr·wd·θ by definition);
    without weight decay it is zero. The first gradient is nonzero everywhere, so
    v_t > 0 from then on although later gradients may be 0. Not float16: its
    second moment underflows (see test_power_of_two_scale_gives_identical_updates).
    """
    tx = _without_eps(config)
    f, wd = _formula(config), _weight_decay(config)
    for t, (updates, _, _, params) in enumerate(_run(tx, problem), 1):
        lr = _lr(config, t)
        for u, theta in zip(jax.tree.leaves(updates), jax.tree.leaves(params), strict=True):
            adam_part = _f64(u) + lr * wd * _f64(theta)
            slack = _bound_slack(config, u.dtype, t)
            # The decay term's own rounding: wd·θ, the sum and the product with lr are
            # each rounded to the update's dtype.
            decay_rounding = 3 * _unit_roundoff(u.dtype) * lr * wd * np.abs(_f64(theta))
            limit = lr * step_bound(f, t) * (1 + slack) + decay_rounding
            excess = np.abs(adam_part) - limit
            assert np.all(excess <= 0), (t, excess.max(), lr * step_bound(f, t))


@pytest.mark.parametrize("config", CONFIGS, ids=_ids)
@examples(5)
@given(problem=problems(steps=1, values=NONZERO))
def test_first_step_is_lr_times_sign(config, problem):
    """Step 1 with eps = 0 is -lr · B_1 · sign(g): B_1 = 1 for Adam, AMSGrad with
    bias corrections and AdaMax; (1+2 b1)/(1+b1) for NAdam; (1-b1)/sqrt(1-b2) for
    AMSGrad without bias correction (the paper's §2.1 bound, attained).

    Params are zero, so weight decay adds nothing. Rounding: ~10 float32
    roundings, then the cast to the gradient's dtype and the product with lr in
    that dtype (lr itself rounded to it), and the float32 hyperparameters (see
    ``_hyperparameter_rounding``).
    """
    tx = _without_eps(config)
    zeros = jax.tree.map(jnp.zeros_like, problem.params)
    (g,) = problem.grads
    updates, _ = tx.update(g, tx.init(zeros), zeros)
    formula = _formula(config)
    factor = _lr(config, 1) * step_bound(formula, 1)
    for u, gi in zip(jax.tree.leaves(updates), jax.tree.leaves(g), strict=True):
        expected = -factor * np.sign(_f64(gi))
        rtol = 16 * U32 + 3 * _unit_roundoff(gi.dtype) + _hyperparameter_rounding(formula)
        np.testing.assert_allclose(_f64(u), expected, rtol=rtol, atol=0)
