"""Every configuration with an optax twin follows optax's trajectory in float32 and keeps
optax's state layout."""

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
