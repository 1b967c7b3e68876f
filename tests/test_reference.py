"""Every configuration against the paper's formulas in NumPy float64."""

import jax
import numpy as np
import pytest

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
