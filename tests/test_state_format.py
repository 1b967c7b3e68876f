"""benchmarks/state_format.py: FlashOptim's state format, checked against NumPy float64.

The reference below is written from the format's definition (FlashOptim, arXiv 2602.23349):
groups of 32 along the last axis, a float16 absmax per group, momentum companded by
φ(x) = 2x / (1 + |x|) and coded linearly in int8 (±127), variance coded as sqrt(v) / s
linearly in uint8 (0..255). Nothing here is computed by the code under test.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "state_format.py"
# The benchmarks import their siblings by name, as when run from their folder.
sys.path.insert(0, str(SCRIPT.parent))
spec = importlib.util.spec_from_file_location("state_format", SCRIPT)
sf = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sf)
# One compile per function rather than one per operation.
encode_momentum, decode_momentum = jax.jit(sf.encode_momentum), jax.jit(sf.decode_momentum)
encode_variance, decode_variance = jax.jit(sf.encode_variance), jax.jit(sf.decode_variance)


def groups(x: np.ndarray, n: int = 32) -> np.ndarray:
    count = -(-x.shape[-1] // n)
    pad = [(0, 0)] * (x.ndim - 1) + [(0, count * n - x.shape[-1])]
    return np.pad(x, pad).reshape(*x.shape[:-1], count, n)


def ref_scales(a: np.ndarray) -> np.ndarray:
    """float64 values of the float16 group absmax of a >= 0."""
    return groups(a).max(-1).astype(np.float16).astype(np.float64)


def phi(x):
    return 2 * x / (1 + np.abs(x))


def phi_inv(z):
    return z / (2 - np.abs(z))


def sample(shape=(6, 200), seed=0) -> np.ndarray:
    """Values over six decades, with zeros and a row of exact ties at group maxima."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * np.logspace(-6, 0, shape[-1])[rng.permutation(shape[-1])]
    x[0, :40] = 0.0
    return x.astype(np.float32).astype(np.float64)


def test_momentum_round_trip_matches_the_float64_reference() -> None:
    x = sample()
    q = encode_momentum(jnp.asarray(x, jnp.float32))
    assert q.codes.dtype == jnp.int8 and q.scales.dtype == jnp.float16
    s = ref_scales(np.abs(x))
    np.testing.assert_array_equal(np.asarray(q.scales, np.float64), s)
    xs = np.clip(groups(x) / np.where(s > 0, s, 1)[..., None], -1, 1)
    t = 127 * phi(xs)
    codes = np.round(t)
    ours = groups(np.asarray(q.codes, np.float64))[..., : t.shape[-1]]
    near_tie = np.abs(np.abs(t - np.trunc(t)) - 0.5) < 1e-3
    assert np.all((ours == codes) | (near_tie & (np.abs(ours - codes) == 1)))
    # The value read back: s · φ⁻¹(code / 127), and within half a code gap (plus the
    # float16 rounding of the scale) of x.
    y = np.asarray(decode_momentum(q), np.float64)
    expected = (s[..., None] * phi_inv(ours / 127)).reshape(*x.shape[:-1], -1)[..., : x.shape[-1]]
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=0)
    c = np.floor(np.abs(t))
    half_gap = 0.5 * (phi_inv(np.minimum(c + 1, 127) / 127) - phi_inv(c / 127))
    s_exact = groups(np.abs(x)).max(-1)
    bound = s[..., None] * half_gap + np.abs(s - s_exact)[..., None] + 1e-7 * s[..., None]
    error = np.abs(groups(y) - groups(x))
    assert np.all(error <= bound)
    assert np.all(y[0, :40] == 0)  # zero stays exactly zero
    # The companding spends its codes near 0: the worst relative gap is 4× finer there.
    assert half_gap[np.abs(t) < 1].max() < 0.3 * half_gap.max()


def test_variance_round_trip_matches_the_float64_reference() -> None:
    v = sample(seed=1) ** 2
    q = encode_variance(jnp.asarray(v, jnp.float32))
    assert q.codes.dtype == jnp.uint8 and q.scales.dtype == jnp.float16
    r = np.sqrt(v)
    s = ref_scales(r)
    np.testing.assert_allclose(np.asarray(q.scales, np.float64), s, rtol=2**-10)
    t = 255 * np.clip(groups(r) / np.where(s > 0, s, 1)[..., None], 0, 1)
    ours = groups(np.asarray(q.codes, np.float64))
    assert np.all(np.abs(ours - np.round(t)) <= (np.abs(t % 1 - 0.5) < 1e-3))
    w = np.asarray(decode_variance(q), np.float64)
    expected = ((s[..., None] * ours / 255) ** 2).reshape(*v.shape[:-1], -1)[..., : v.shape[-1]]
    np.testing.assert_allclose(w, expected, rtol=1e-5, atol=0)
    # sqrt(v) within half a code (s / 510) plus the scale's rounding.
    s_exact = groups(r).max(-1)
    bound = s / 510 + np.abs(s - s_exact) + 1e-7 * s
    assert np.all(np.abs(groups(np.sqrt(w)) - groups(r)) <= bound[..., None])
    # The format's known weakness: a v below (s/510)² of its group's largest reads back 0.
    tiny = groups(r) < s[..., None] / 510 * (1 - 1e-3)
    assert tiny.any() and np.all(groups(w)[tiny] == 0)


def test_stochastic_rounding_is_unbiased_in_value_and_picks_a_neighbour() -> None:
    x = np.tile(np.array([1.0, 0.3, -0.0123, 0.7, -0.55, 2e-3, 0.9, -0.07]), 4)[None, :]
    x = np.repeat(x, 4096, axis=0).astype(np.float32)
    u = np.asarray(sf.uniform(jnp.uint32(12345), x.shape))
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.01
    m = np.asarray(decode_momentum(encode_momentum(jnp.asarray(x), jnp.asarray(u))))
    grid = phi_inv(np.arange(-127, 128) / 127.0)
    for j in range(8):
        col = m[:, j].astype(np.float64)
        assert np.all(np.min(np.abs(col[:, None] - grid[None, :]), axis=1) < 1e-6)
        lo, hi = grid[grid <= x[0, j] + 1e-9].max(), grid[grid >= x[0, j] - 1e-9].min()
        assert np.all(np.minimum(np.abs(col - lo), np.abs(col - hi)) < 1e-6)
        se = max((hi - lo) / 2 / np.sqrt(len(col)), 1e-9)
        assert abs(col.mean() - x[0, j]) < 5 * se
    v = np.abs(x) ** 2
    w = np.asarray(decode_variance(encode_variance(jnp.asarray(v), jnp.asarray(u))))
    for j in range(8):
        col, target = w[:, j].astype(np.float64), float(v[0, j])
        gap = 2 * np.sqrt(target) / 255 + 1 / 255**2  # between the two codes around it (s = 1)
        assert abs(col.mean() - target) < 5 * gap / np.sqrt(len(col)) + 1e-12


def test_flash_adamw_steps_like_float64_adamw_on_the_stored_moments() -> None:
    """Two steps of flash_adamw against NumPy float64 AdamW on the moments it stored."""
    rng = np.random.default_rng(3)
    p = rng.standard_normal((64, 96)).astype(np.float32)  # 6,144 >= 4,096: quantized
    small = rng.standard_normal(10).astype(np.float32)  # float32 moments
    g1, g2 = (
        {"w": rng.standard_normal(p.shape).astype(np.float32) * 1e-2,
         "b": rng.standard_normal(10).astype(np.float32)}
        for _ in range(2)
    )  # fmt: skip
    lr, wd, b1, b2, eps = 1e-2, 1e-3, 0.9, 0.999, 1e-8
    tx = sf.flash_adamw(lr, wd)
    params = {"w": jnp.asarray(p), "b": jnp.asarray(small)}
    state, update = jax.jit(tx.init)(params), jax.jit(tx.update)
    flash = state[0]
    assert isinstance(flash.mu["w"], sf.FlashMoment) and flash.mu["b"].dtype == jnp.float32
    m = {k: np.zeros(v.shape) for k, v in params.items()}
    v = {k: np.zeros(v.shape) for k, v in params.items()}
    for t, g in enumerate((g1, g2), start=1):
        grads = {k: jnp.asarray(a) for k, a in g.items()}
        updates, state = update(grads, state, params)
        for k in params:
            gk = g[k].astype(np.float64)
            m_t, v_t = b1 * m[k] + (1 - b1) * gk, b2 * v[k] + (1 - b2) * gk**2
            pk = np.asarray(params[k], np.float64)
            step = (m_t / (1 - b1**t)) / (np.sqrt(v_t / (1 - b2**t)) + eps) + wd * pk
            np.testing.assert_allclose(np.asarray(updates[k]), -lr * step, rtol=2e-5, atol=1e-9)
        # The next step starts from what was stored: the reference reads it back itself.
        flash = state[0]
        for k in params:
            mu, nu = flash.mu[k], flash.nu[k]
            if isinstance(mu, sf.FlashMoment):
                sm, sv = (np.asarray(a.scales, np.float64)[..., None] for a in (mu, nu))
                cm = np.asarray(mu.codes, np.float64).reshape(*sm.shape[:-1], 32)
                cv = np.asarray(nu.codes, np.float64).reshape(*sv.shape[:-1], 32)
                m[k] = (sm * phi_inv(cm / 127)).reshape(p.shape)
                v[k] = ((sv * cv / 255) ** 2).reshape(p.shape)
            else:
                m[k], v[k] = np.asarray(mu, np.float64), np.asarray(nu, np.float64)
        params = {k: params[k] + updates[k] for k in params}
