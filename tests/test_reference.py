"""Every configuration against the paper's formulas in NumPy float64."""

import jax
import numpy as np
import pytest

import adam_optax
from tests import reference
from tests.cases import CONFIGS
from tests.trajectories import STEPS, gradients, initial_params, make, run

WITH_REFERENCE = [c for c in CONFIGS if c.reference is not None]


@pytest.mark.parametrize("config", WITH_REFERENCE, ids=lambda c: c.id)
def test_matches_float64_reference(config):
    shape = (4, 5)
    grads, theta0 = gradients(shape), initial_params(shape)
    kwargs = dict(config.kwargs)
    lr = kwargs.pop("learning_rate")
    for name in ("mu_dtype", "nu_dtype", "amsgrad", "eps_hat", "weight_decay"):
        kwargs.pop(name, None)
    kwargs.pop("bias_correction_mu", None)
    kwargs.pop("bias_correction_nu", None)
    expected = reference.trajectory(theta0, grads, lr, **kwargs, **config.reference)

    with jax.enable_x64(True):
        got = np.asarray(run(make(config), theta0, grads))

    assert got.dtype == np.float64
    assert len(expected) == STEPS
    np.testing.assert_allclose(got, np.stack(expected), rtol=1e-12, atol=1e-14)


def _first_update(g, b1, b2, eps, rounded):
    """Adam's first update in float64; ``rounded``: b1, b2, 1-b1, 1-b2 rounded to float32.

    The rounded form is optax's (and Keras's) bias correction 1 - b^t with a
    float32 b; the exact one is PyTorch's, computed in float64.
    """
    f = (lambda x: np.float64(np.float32(x))) if rounded else np.float64
    m_hat = f(1 - b1) * g / (1 - f(b1))
    v_hat = f(1 - b2) * g**2 / (1 - f(b2))
    return m_hat / (np.sqrt(v_hat) + eps)


@pytest.mark.parametrize("b2, cost", [(0.999, 6.6e-6), (0.9999, 8.3e-5)])
def test_bias_correction_rounds_b_to_float32_like_optax(b2, cost):
    """The Numerics guide's figure: what optax's float32 b**t costs against PyTorch's float64.

    The cost is the first update's relative difference (it shrinks once b^t is
    small); at b2=0.999, 0.2e-6 of it comes from b1 = 0.9 rounded.
    """
    g = np.array([1e-3, -0.5, 2.0, 30.0])
    tx = adam_optax.scale_by_adam(b2=b2)
    got = np.asarray(tx.update(g, tx.init(g.astype(np.float32)))[0], np.float64)
    rounded = _first_update(g, 0.9, b2, 1e-8, rounded=True)
    exact = _first_update(g, 0.9, b2, 1e-8, rounded=False)
    np.testing.assert_allclose(np.abs(rounded / exact - 1), cost, rtol=0.03)
    np.testing.assert_allclose(got, rounded, rtol=3e-7)
    np.testing.assert_allclose(np.abs(got / exact - 1), cost, atol=3e-7)
