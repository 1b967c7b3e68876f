"""Trajectory parity with PyTorch's and Keras's Adam family, in float32.

Each row pairs an optimizer of another framework with the adam_optax optimizer
that claims its math; both take the same 300 varied gradients (zeros included,
see ``tests.trajectories.gradients``) from the same initial params. The
frameworks are driven the way their users drive them: PyTorch by setting
``param.grad`` and calling ``step()``, Keras by ``apply_gradients`` on a
``keras.Variable``. Each framework's group skips where it is not installed.

Conventions the rows pin down:
- PyTorch adds eps to sqrt(v̂_t), decays weights decoupled and scaled by lr
  (AdamW), and takes AMSGrad's max of the raw v_t before the bias correction:
  ``adam_optax.adam``/``adamw`` with ``amsgrad=True``;
- Keras adds eps to sqrt(v_t) before the bias correction (the paper's ε̂, §2)
  with a default eps of 1e-7: ``eps_hat=True, eps=1e-7``;
- PyTorch's Adamax puts eps inside the max, |g| + eps, as ``adam_optax.adamax``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pytest

import adam_optax
from tests.trajectories import gradients, initial_params, run

SHAPE = (6, 7)
LR = 1e-2


class Case(NamedTuple):
    id: str
    framework: str  # "torch" or "keras": the module its factory receives
    theirs: Callable[[Any, Any], Any]  # (module, the framework's variable) -> its optimizer
    ours: Callable[[], Any]  # () -> the adam_optax GradientTransformation


CASES = [
    Case(
        "torch_adam",
        "torch",
        lambda torch, p: torch.optim.Adam([p], lr=LR),
        lambda: adam_optax.adam(LR),
    ),
    Case(
        "torch_adam_tuned",
        "torch",
        lambda torch, p: torch.optim.Adam([p], lr=3e-3, betas=(0.5, 0.9), eps=1e-6),
        lambda: adam_optax.adam(3e-3, b1=0.5, b2=0.9, eps=1e-6),
    ),
    Case(
        "torch_adamw",
        "torch",
        lambda torch, p: torch.optim.AdamW([p], lr=LR, weight_decay=0.1),
        lambda: adam_optax.adamw(LR, weight_decay=0.1),
    ),
    Case(
        "torch_adam_amsgrad",
        "torch",
        lambda torch, p: torch.optim.Adam([p], lr=LR, amsgrad=True),
        lambda: adam_optax.adam(LR, amsgrad=True),
    ),
    Case(
        "torch_adamw_amsgrad",
        "torch",
        lambda torch, p: torch.optim.AdamW([p], lr=LR, weight_decay=0.1, amsgrad=True),
        lambda: adam_optax.adamw(LR, weight_decay=0.1, amsgrad=True),
    ),
    Case(
        "torch_adamw_amsgrad_tuned",
        "torch",
        lambda torch, p: torch.optim.AdamW(
            [p], lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.3, amsgrad=True
        ),
        lambda: adam_optax.adamw(3e-3, b1=0.8, b2=0.99, eps=1e-6, weight_decay=0.3, amsgrad=True),
    ),
    Case(
        "torch_adamax",
        "torch",
        lambda torch, p: torch.optim.Adamax([p], lr=LR),
        lambda: adam_optax.adamax(LR),
    ),
    Case(
        "keras_adam",
        "keras",
        lambda keras, v: keras.optimizers.Adam(learning_rate=LR),
        lambda: adam_optax.adam(LR, eps=1e-7, eps_hat=True),
    ),
    Case(
        "keras_adam_amsgrad",
        "keras",
        lambda keras, v: keras.optimizers.Adam(learning_rate=LR, amsgrad=True),
        lambda: adam_optax.adam(LR, eps=1e-7, eps_hat=True, amsgrad=True),
    ),
    Case(
        "keras_adam_tuned",
        "keras",
        lambda keras, v: keras.optimizers.Adam(
            learning_rate=3e-3, beta_1=0.5, beta_2=0.9, epsilon=1e-5
        ),
        lambda: adam_optax.adam(3e-3, b1=0.5, b2=0.9, eps=1e-5, eps_hat=True),
    ),
    Case(
        "keras_adamw",
        "keras",
        lambda keras, v: keras.optimizers.AdamW(learning_rate=LR, weight_decay=0.1),
        lambda: adam_optax.adamw(LR, eps=1e-7, eps_hat=True, weight_decay=0.1),
    ),
]

BY_ID = {case.id: case for case in CASES}


def _inputs(scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    grads = (gradients(SHAPE) * scale).astype(np.float32)
    return grads, initial_params(SHAPE).astype(np.float32)


def _torch_trajectory(case: Case, theta0: np.ndarray, grads: np.ndarray) -> np.ndarray:
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    param = torch.nn.Parameter(torch.from_numpy(theta0.copy()))
    opt = case.theirs(torch, param)
    history = []
    for g in grads:
        # A zero tensor, never None: PyTorch skips params whose grad is None.
        param.grad = torch.from_numpy(g.copy())
        opt.step()
        history.append(param.detach().numpy().copy())
    return np.stack(history)


def _keras_trajectory(case: Case, theta0: np.ndarray, grads: np.ndarray) -> np.ndarray:
    keras = pytest.importorskip("keras")
    var = keras.Variable(theta0, dtype="float32")
    opt = case.theirs(keras, var)
    history = []
    for g in grads:
        opt.apply_gradients([(keras.ops.convert_to_tensor(g, dtype="float32"), var)])
        history.append(np.array(keras.ops.convert_to_numpy(var.value)))
    return np.stack(history)


@functools.cache
def _their_trajectory(case_id: str, scale: float = 1.0) -> np.ndarray:
    """The framework's params after each step; cached, the near-miss tests reuse it."""
    case = BY_ID[case_id]
    grads, theta0 = _inputs(scale)
    follow = {"torch": _torch_trajectory, "keras": _keras_trajectory}[case.framework]
    history = follow(case, theta0, grads)
    assert history.dtype == np.float32
    return history


def _our_trajectory(tx, scale: float = 1.0) -> np.ndarray:
    grads, theta0 = _inputs(scale)
    history = np.asarray(run(tx, theta0, grads))
    assert history.dtype == np.float32
    return history


# Both sides are float32 and differ only in rounding (the order of operations, and
# PyTorch's bias corrections in float64), which accumulates over 300 steps to ~1e-6
# in params of size ~1. A wrong convention is off by up to ~learning_rate = 1e-2.
RTOL, ATOL = 2e-5, 1e-5


# The gradients span 1e-3..1e2 (times the scale): at scale 1 eps hardly matters, so
# the rows check the moments, the bias corrections and the decay; at 1e-4, where
# sqrt(v̂_t) comes down to eps, they also check where eps sits.
SCALES = [1.0, 1e-4]


@pytest.mark.parametrize("scale", SCALES, ids=lambda s: f"scale{s:g}")
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_matches_framework_trajectory(case, scale):
    expected = _their_trajectory(case.id, scale)
    got = _our_trajectory(case.ours(), scale)
    assert got.shape == expected.shape == (300, *SHAPE)
    # The gradients' first row is always zero, so without weight decay those params
    # never move; with it they shrink by (1 - lr·wd) each step on both sides.
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


class NearMiss(NamedTuple):
    id: str
    case: str  # the framework row whose trajectory is the target
    ours: Callable[[], Any]  # an adam_optax optimizer with another convention
    scale: float  # multiplies the gradients: small ones make eps matter


# A convention that looks interchangeable but is not: each must miss its framework
# by far more than the parity tolerance, or the parity rows above could not tell
# the conventions apart.
NEAR_MISSES = [
    # Keras's ε̂: eps added before the bias correction, 1/sqrt(1-b2^t) (up to ~30)
    # times larger early on; it matters when sqrt(v_t) is not far above eps.
    NearMiss("keras_without_eps_hat", "keras_adam", lambda: adam_optax.adam(LR, eps=1e-7), 1e-4),
    NearMiss(
        "keras_amsgrad_without_eps_hat",
        "keras_adam_amsgrad",
        lambda: adam_optax.adam(LR, eps=1e-7, amsgrad=True),
        1e-4,
    ),
    # optax's AMSGrad takes the max of v̂_t, which is not the max of v_t corrected:
    # after a burst of large gradients, the early v̂ (corrected by a large 1/(1-b2^t))
    # dominates the max much longer.
    NearMiss("torch_amsgrad_as_optax", "torch_adam_amsgrad", lambda: adam_optax.amsgrad(LR), 1.0),
]


@pytest.mark.parametrize("miss", NEAR_MISSES, ids=lambda m: m.id)
def test_other_convention_misses_framework(miss):
    expected = _their_trajectory(miss.case, miss.scale)
    right = _our_trajectory(BY_ID[miss.case].ours(), miss.scale)
    wrong = _our_trajectory(miss.ours(), miss.scale)
    np.testing.assert_allclose(right, expected, rtol=RTOL, atol=ATOL)
    # Measured as the parity test measures: the worst excess over the tolerance.
    excess = np.abs(wrong - expected) / (ATOL + RTOL * np.abs(expected))
    assert excess.max() > 10, excess.max()
