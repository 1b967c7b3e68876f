"""Every configuration with an optax twin follows optax's trajectory in float32 and keeps
optax's state layout."""

import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adam_optax
from tests.cases import CONFIGS
from tests.trajectories import gradients, initial_params, make, optax_twin, run

WITH_TWIN = [c for c in CONFIGS if c.optax is not None]


@pytest.mark.parametrize("config", WITH_TWIN, ids=lambda c: c.id)
def test_matches_optax_trajectory(config):
    shape = (6, 7)
    grads, theta0 = gradients(shape).astype(np.float32), initial_params(shape).astype(np.float32)
    got = np.asarray(run(make(config), theta0, grads))
    expected = np.asarray(run(optax_twin(config), theta0, grads))
    if config.kwargs.get("mu_dtype") == jnp.bfloat16:
        # optax does the moment arithmetic in bfloat16, we in float32 with only the
        # storage rounded; judge both against the all-float32 trajectory instead.
        full = config._replace(kwargs={k: v for k, v in config.kwargs.items() if k != "mu_dtype"})
        exact = np.asarray(run(optax_twin(full), theta0, grads))
        ours, theirs = np.abs(got - exact).max(), np.abs(expected - exact).max()
        assert ours <= theirs and ours < 5e-3, (ours, theirs)
        return
    # Both are float32 and differ at most in the last bit of a step (x * (1/c)
    # against x / c). Rounding 1 - b2 after b2 instead of before (a 1.3e-5
    # relative error in v_t) drifts by 1.2e-6 over 300 steps; a wrong formula by ~1e-2.
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=5e-7)


def _with_dtype(tree, dtype):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, dtype), tree)


@pytest.mark.parametrize("config", WITH_TWIN, ids=lambda c: c.id)
def test_state_after_a_step_has_optax_layout(config):
    """Same state types, field names, tree structure, leaf shapes and dtypes as optax's,
    after init and after a step: checkpoints move between the two. (Traced with
    jax.eval_shape: the layout is decided at trace time, and nothing is compiled.)"""
    params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3), "s": jnp.ones((), jnp.bfloat16)}
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    ours, theirs = [], []
    for tx, states in ((make(config), ours), (optax_twin(config), theirs)):
        states.append(jax.eval_shape(tx.init, params))
        states.append(jax.eval_shape(tx.update, grads, states[0], params)[1])
    if "nu_dtype" in config.kwargs:  # an option optax lacks: its nu keeps the params' dtype
        nu = [_with_dtype(optax.tree.get(s, "nu"), config.kwargs["nu_dtype"]) for s in theirs]
        theirs = [optax.tree.set(s, nu=n) for s, n in zip(theirs, nu, strict=True)]
    chex.assert_trees_all_equal_shapes_and_dtypes(ours, theirs)


def test_complex_params_match_optax():
    rng = np.random.default_rng(0)
    shape = (3, 4)
    g = (rng.standard_normal((50, *shape)) + 1j * rng.standard_normal((50, *shape))).astype(
        np.complex64
    )
    p0 = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    for name in ("adam", "adamw", "nadam", "amsgrad"):
        got = run(getattr(adam_optax, name)(1e-2), p0, g)
        expected = run(getattr(optax, name)(1e-2), p0, g)
        assert got.dtype == jnp.complex64
        chex.assert_trees_all_close(got, expected, rtol=2e-5, atol=1e-6)
    # The one layout difference: nu holds |g|², so we store it real, optax complex.
    ours = adam_optax.adam(1e-2).init(jnp.asarray(p0))
    chex.assert_trees_all_equal_shapes(ours, optax.adam(1e-2).init(jnp.asarray(p0)))
    assert ours[0].mu.dtype == jnp.complex64 and ours[0].nu.dtype == jnp.float32


def _init_and_step(tx, params):
    """init and one update, as a new user would write them: (state, updates, warnings)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state = tx.init(params)
        grads = jax.tree.map(lambda p: np.full(np.shape(p), 0.5, np.asarray(p).dtype), params)
        updates, _ = tx.update(grads, state, params)
    return state, updates, {str(w.message) for w in caught}


# Every kind of params leaf optax takes, in one tree: Python floats and NumPy arrays,
# float64 (which JAX truncates to float32 without x64), float16 and bfloat16.
EVERY_KIND = {
    "python_float": 1.0,
    "numpy_float64": np.linspace(-1.0, 1.0, 3),
    "numpy_float64_scalar": np.float64(2.0),
    "numpy_float16": np.ones(3, np.float16),
    "numpy_bfloat16": np.ones(3, jnp.bfloat16),
}


def test_params_of_every_kind_optax_takes():
    """They train as in optax, with no warning that optax does not give too."""
    ours, ours_updates, ours_warnings = _init_and_step(adam_optax.adam(0.1), EVERY_KIND)
    theirs, theirs_updates, theirs_warnings = _init_and_step(optax.adam(0.1), EVERY_KIND)
    assert ours_warnings <= theirs_warnings
    # The state as init makes it; nu differs by design for float16 params (README).
    mu = [jax.tree.leaves(optax.tree.get(s, "mu")) for s in (ours, theirs)]
    assert [a.dtype for a in mu[0]] == [b.dtype for b in mu[1]]
    for a, b in zip(jax.tree.leaves(ours_updates), jax.tree.leaves(theirs_updates), strict=True):
        # optax's bfloat16 update comes back in float32: compare to our dtype's precision.
        np.testing.assert_allclose(np.float64(a), np.float64(b), rtol=jnp.finfo(a.dtype).eps)


def test_complex_mu_dtype_is_accepted_as_in_optax():
    """Complex params store a complex mu; real params with a complex mu_dtype store
    a complex mu too (as optax does), and their updates stay real."""
    for mu_dtype in (jnp.complex64, "complex64"):
        tx = adam_optax.adam(0.1, mu_dtype=mu_dtype)
        for params in (jnp.zeros(2, jnp.complex64), jnp.zeros(2, jnp.float32)):
            assert tx.init(params)[0].mu.dtype == jnp.complex64
    grads = jnp.array([0.5, -2.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        updates, _ = tx.update(grads, tx.init(jnp.zeros(2)))
    assert updates.dtype == grads.dtype
    real_mu = adam_optax.adam(0.1)
    np.testing.assert_allclose(updates, real_mu.update(grads, real_mu.init(jnp.zeros(2)))[0])
    theirs = optax.adam(0.1, mu_dtype=jnp.complex64)
    theirs_updates, _ = theirs.update(grads, theirs.init(jnp.zeros(2)))
    np.testing.assert_allclose(updates, jnp.real(theirs_updates), rtol=1e-6)
