"""The user-facing optimizers: compositions of the transforms with optax's.

Each alias takes the same positional arguments, in the same order and with the
same defaults, as its namesake in optax, so ``optax.adam`` → ``adam_optax.adam``
changes nothing for existing code. They are chains of

    scale_by_adam / scale_by_amsgrad / scale_by_adamax   (this package)
    optax.add_decayed_weights(weight_decay, mask)        (the ...w variants)
    optax.scale_by_learning_rate(learning_rate)          (multiplies by -lr)

so ``params += updates`` gives θ_t = θ_{t-1} - lr (u_t + weight_decay θ_{t-1}),
the decoupled weight decay of Loshchilov & Hutter (2019), scaled by the
learning rate as in PyTorch's AdamW and optax.
"""

from __future__ import annotations

from typing import Any

import optax

from adam_optax import checks
from adam_optax.transforms import (
    scale_by_adam,
    scale_by_adam8bit,
    scale_by_adamax,
    scale_by_amsgrad,
)

ScalarOrSchedule = float | Any  # a number, a scalar array, or a schedule: step -> value


def _finish(
    scaling: optax.GradientTransformation,
    learning_rate: ScalarOrSchedule,
    weight_decay: ScalarOrSchedule | None = None,
    mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """Appends the optional decoupled weight decay and the learning rate."""
    checks.non_negative_or_schedule("learning_rate", learning_rate)
    steps = [scaling]
    if weight_decay is not None:
        checks.non_negative_or_schedule("weight_decay", weight_decay)
        steps.append(optax.add_decayed_weights(weight_decay, mask))
    steps.append(optax.scale_by_learning_rate(learning_rate))
    return optax.chain(*steps)


def adam(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    *,
    nu_dtype: Any = None,
    nesterov: bool = False,
    amsgrad: bool = False,
    eps_hat: bool = False,
    stochastic_rounding: bool = False,
    seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
    """Adam (Kingma & Ba, 2014): θ_t = θ_{t-1} - lr · m̂_t / (sqrt(v̂_t + eps_root) + eps).

    Args:
      learning_rate: a number >= 0 or a schedule (step -> number).
      b1, b2, eps, eps_root, mu_dtype, nu_dtype, nesterov, amsgrad, eps_hat,
        stochastic_rounding, seed: as in ``scale_by_adam``, whose docstring
        carries the math.

    Example:
      >>> import jax.numpy as jnp, optax, adam_optax
      >>> tx = adam_optax.adam(0.1)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> state = tx.init(params)
      >>> updates, state = tx.update({"w": jnp.array([0.5, -0.5])}, state, params)
      >>> optax.apply_updates(params, updates)["w"]
      Array([ 0.9, -1.9], dtype=float32)
    """
    return _finish(
        scale_by_adam(
            b1,
            b2,
            eps,
            eps_root,
            mu_dtype,
            nu_dtype=nu_dtype,
            nesterov=nesterov,
            amsgrad=amsgrad,
            eps_hat=eps_hat,
            stochastic_rounding=stochastic_rounding,
            seed=seed,
        ),
        learning_rate,
    )


def adamw(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: Any = None,
    *,
    nu_dtype: Any = None,
    nesterov: bool = False,
    amsgrad: bool = False,
    eps_hat: bool = False,
    stochastic_rounding: bool = False,
    seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
    """AdamW (Loshchilov & Hutter, 2019): Adam plus decoupled weight decay.

    θ_t = θ_{t-1} - lr · (m̂_t / (sqrt(v̂_t + eps_root) + eps) + weight_decay · θ_{t-1}).

    Args:
      weight_decay: a number >= 0 or a schedule. Default 1e-4, as optax.
      mask: a pytree of bools like the params, or a callable params -> such a
        tree; weight decay applies where it is True. Default: everywhere.
      Others: as in ``adam``.
    """
    return _finish(
        scale_by_adam(
            b1,
            b2,
            eps,
            eps_root,
            mu_dtype,
            nu_dtype=nu_dtype,
            nesterov=nesterov,
            amsgrad=amsgrad,
            eps_hat=eps_hat,
            stochastic_rounding=stochastic_rounding,
            seed=seed,
        ),
        learning_rate,
        weight_decay,
        mask,
    )


def nadam(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    *,
    nu_dtype: Any = None,
    nesterov: bool = True,
    amsgrad: bool = False,
    eps_hat: bool = False,
    stochastic_rounding: bool = False,
    seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
    """NAdam (Dozat, 2016): ``adam`` with ``nesterov=True``, optax's formula."""
    return adam(
        learning_rate,
        b1,
        b2,
        eps,
        eps_root,
        mu_dtype,
        nu_dtype=nu_dtype,
        nesterov=nesterov,
        amsgrad=amsgrad,
        eps_hat=eps_hat,
        stochastic_rounding=stochastic_rounding,
        seed=seed,
    )


def nadamw(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: Any = None,
    *,
    nu_dtype: Any = None,
    nesterov: bool = True,
    amsgrad: bool = False,
    eps_hat: bool = False,
    stochastic_rounding: bool = False,
    seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
    """NAdamW: ``adamw`` with ``nesterov=True``, optax's formula."""
    return adamw(
        learning_rate,
        b1,
        b2,
        eps,
        eps_root,
        mu_dtype,
        weight_decay,
        mask,
        nu_dtype=nu_dtype,
        nesterov=nesterov,
        amsgrad=amsgrad,
        eps_hat=eps_hat,
        stochastic_rounding=stochastic_rounding,
        seed=seed,
    )


def amsgrad(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
    *,
    nu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """AMSGrad (Reddi et al., 2018) in optax's convention, for drop-in use.

    The running max is of the bias-corrected v̂_t (see ``scale_by_amsgrad``).
    For PyTorch's ``Adam(amsgrad=True)`` use ``adam(..., amsgrad=True)``.
    """
    return _finish(
        scale_by_amsgrad(
            b1,
            b2,
            eps,
            eps_root,
            mu_dtype,
            bias_correction_mu,
            bias_correction_nu,
            nu_dtype=nu_dtype,
        ),
        learning_rate,
    )


def adamax(
    learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> optax.GradientTransformationExtraArgs:
    """AdaMax (Kingma & Ba, 2014, §7.1): θ_t = θ_{t-1} - lr · m̂_t / u_t.

    See ``scale_by_adamax`` for u_t.
    """
    return _finish(scale_by_adamax(b1, b2, eps), learning_rate)


def adamaxw(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """AdaMax with decoupled weight decay, as ``adamw`` adds it to Adam."""
    return _finish(scale_by_adamax(b1, b2, eps), learning_rate, weight_decay, mask)


def adam8bit(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    *,
    nesterov: bool = False,
    amsgrad: bool = False,
    eps_hat: bool = False,
    block_size: int = 256,
    min_quantized_size: int = 4096,
) -> optax.GradientTransformationExtraArgs:
    """``adam`` with 8-bit blockwise moments (Dettmers et al. 2021): a quarter of the memory.

    Leaves of at least ``min_quantized_size`` elements store m and v as uint8
    codes plus a float32 scale per ``block_size`` elements of the last axis;
    see ``scale_by_adam8bit`` for the format and the math.

    Example:
      >>> import jax.numpy as jnp, optax, adam_optax
      >>> tx = adam_optax.adam8bit(0.1, min_quantized_size=2)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> state = tx.init(params)
      >>> updates, state = tx.update({"w": jnp.array([0.5, -0.5])}, state, params)
      >>> optax.apply_updates(params, updates)["w"].round(4)
      Array([ 0.9, -1.9], dtype=float32)
      >>> state[0].mu["w"].codes.dtype
      dtype('uint8')
    """
    return _finish(
        scale_by_adam8bit(
            b1,
            b2,
            eps,
            eps_root,
            nesterov=nesterov,
            amsgrad=amsgrad,
            eps_hat=eps_hat,
            block_size=block_size,
            min_quantized_size=min_quantized_size,
        ),
        learning_rate,
    )


def adamw8bit(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: Any = None,
    *,
    nesterov: bool = False,
    amsgrad: bool = False,
    eps_hat: bool = False,
    block_size: int = 256,
    min_quantized_size: int = 4096,
) -> optax.GradientTransformationExtraArgs:
    """``adamw`` with 8-bit blockwise moments: ``adam8bit`` plus decoupled weight decay.

    Args: as in ``adamw`` (weight_decay, mask) and ``adam8bit`` (the rest).
    """
    return _finish(
        scale_by_adam8bit(
            b1,
            b2,
            eps,
            eps_root,
            nesterov=nesterov,
            amsgrad=amsgrad,
            eps_hat=eps_hat,
            block_size=block_size,
            min_quantized_size=min_quantized_size,
        ),
        learning_rate,
        weight_decay,
        mask,
    )
