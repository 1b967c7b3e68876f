"""Shared test inputs: a gradient sequence, and running an optimizer over it."""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax

import adam_optax
from tests.cases import Config

STEPS = 300


def gradients(shape: tuple[int, ...], steps: int = STEPS, seed: int = 0) -> np.ndarray:
    """Varied float64 gradients: magnitudes from 1e-3 to 1e2, sign flips, zeros.

    Whole steps are zero (every 7th), some elements are always zero (the
    first), and others are zero now and then.
    """
    rng = np.random.default_rng(seed)
    scale = 10.0 ** rng.uniform(-3, 2, size=shape)
    g = rng.standard_normal((steps, *shape)) * scale
    g[::7] = 0.0
    g[:, 0] = 0.0
    g[rng.random(g.shape) < 0.1] = 0.0
    return g


def initial_params(shape: tuple[int, ...], seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


def make(config: Config, module=adam_optax) -> optax.GradientTransformation:
    return getattr(module, config.alias)(**config.kwargs)


def optax_twin(config: Config) -> optax.GradientTransformation:
    """The optax alias with the same math; options optax lacks are left out."""
    name, extra = config.optax
    factory = getattr(optax, name)
    known = inspect.signature(factory).parameters
    return factory(**{k: v for k, v in config.kwargs.items() if k in known}, **extra)


def run(tx: optax.GradientTransformation, params, grads) -> jax.Array:
    """Params after each step, for stacked gradients (one jitted scan)."""

    def step(carry, g):
        p, state = carry
        updates, state = tx.update(g, state, p)
        p = optax.apply_updates(p, updates)
        return (p, state), p

    params = jnp.asarray(params)
    _, history = jax.lax.scan(jax.jit(step), (params, tx.init(params)), jnp.asarray(grads))
    return history
