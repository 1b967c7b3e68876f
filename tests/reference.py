"""Kingma & Ba (2014) in NumPy float64, written from the paper, independent of adam_optax.

Algorithm 1 for Adam, §7.1 for AdaMax, the §2 efficiency note for eps_hat, and
the published variants as they are usually stated:
- AMSGrad (Reddi et al., 2018) in three conventions: "raw" (PyTorch and Keras:
  the max of v_t, then the bias correction), "corrected" (optax: the max of
  v̂_t) and "uncorrected" (the paper: the max of v_t and no bias correction);
- NAdam with optax's formula for m̂_t;
- decoupled weight decay (Loshchilov & Hutter, 2019) scaled by the learning rate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def trajectory(
    theta: np.ndarray,
    grads: Sequence[np.ndarray],
    learning_rate: float | Callable[[int], float],
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    *,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    amsgrad: str | None = None,
    eps_hat: bool = False,
    adamax: bool = False,
) -> list[np.ndarray]:
    """Returns θ_1, ..., θ_T for the gradients g_1, ..., g_T, in float64."""
    theta = np.asarray(theta, np.float64)
    m = np.zeros_like(theta)  # 1st moment vector
    v = np.zeros_like(theta)  # 2nd moment vector (the infinity norm u for AdaMax)
    v_max = np.zeros_like(theta)
    thetas = []
    for t, g in enumerate(grads, start=1):
        g = np.asarray(g, np.float64)
        alpha = learning_rate(t - 1) if callable(learning_rate) else learning_rate
        m = b1 * m + (1 - b1) * g
        if adamax:
            v = np.maximum(b2 * v, np.abs(g) + eps)
            step = (alpha / (1 - b1**t)) * m / v
        else:
            v = b2 * v + (1 - b2) * g * g
            m_hat = m / (1 - b1**t)
            if nesterov:
                m_hat = b1 * m / (1 - b1 ** (t + 1)) + (1 - b1) * g / (1 - b1**t)
            if amsgrad == "raw":
                v_max = np.maximum(v_max, v)
                v_hat = v_max / (1 - b2**t)
            elif amsgrad == "corrected":
                v_max = np.maximum(v_max, v / (1 - b2**t))
                v_hat = v_max
            elif amsgrad == "uncorrected":
                v_max = np.maximum(v_max, v)
                v_hat, m_hat = v_max, m
            else:
                v_hat = v / (1 - b2**t)
            if eps_hat:
                # §2: α_t = α sqrt(1 - β2^t) / (1 - β1^t), θ -= α_t m_t / (sqrt(v_t) + ε̂).
                v_raw = v_max if amsgrad == "raw" else v
                alpha_t = alpha * np.sqrt(1 - b2**t) / (1 - b1**t)
                step = alpha_t * m / (np.sqrt(v_raw) + eps)
            else:
                step = alpha * m_hat / (np.sqrt(v_hat + eps_root) + eps)
        theta = theta - step - alpha * weight_decay * theta
        thetas.append(theta)
    return thetas
