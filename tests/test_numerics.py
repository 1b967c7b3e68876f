"""Numerics the tables do not cover: float16 params and the step count's saturation."""

import chex
import jax.numpy as jnp
import numpy as np
import optax

import adam_optax
from tests import reference

INT32_MAX = int(np.iinfo(np.int32).max)


def test_float16_params_follow_the_float64_reference():
    """Small float16 gradients, then zeros. (1 - b2) g² rounds to 0 in float16 below
    |g| = 5.5e-3, so nu defaults to float32 and the step is computed in float32. With
    a float16 nu the second update here was m̂/eps = -inf. (The gradients keep
    m = (1 - b1) g above float16's subnormals, whose rounding would dominate.)"""
    params = {"w": jnp.ones(3, jnp.float16)}
    g16 = np.array([1e-3, 4e-3, -2e-3], np.float16).astype(np.float64)
    grads = [g16 * s for s in (1, 0, 0, 1, 0)]
    thetas = reference.trajectory(np.ones(3), grads, 1e-3)
    expected = np.diff(np.concatenate([np.ones((1, 3)), thetas]), axis=0)
    tx = adam_optax.adam(1e-3)
    state = tx.init(params)
    for g, want in zip(grads, expected, strict=True):
        updates, state = tx.update({"w": jnp.asarray(g, jnp.float16)}, state, params)
        assert updates["w"].dtype == jnp.float16
        np.testing.assert_allclose(np.asarray(updates["w"], np.float64), want, rtol=2e-3)


class CountSaturates(chex.TestCase):
    """The int32 step count stops at its maximum instead of wrapping to negative."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_count_saturates_instead_of_overflowing(self):
        tx = adam_optax.adamw(1e-2)
        params = {"w": jnp.linspace(-1.0, 1.0, 6)}
        state = optax.tree.set(tx.init(params), count=jnp.asarray(INT32_MAX - 1, jnp.int32))
        update = self.variant(tx.update)
        for scale in (1.0, 0.0, -2.0):
            updates, state = update({"w": jnp.full(6, scale)}, state, params)
            chex.assert_tree_all_finite(updates)
        assert int(optax.tree.get(state, "count")) == INT32_MAX
