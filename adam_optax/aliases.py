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

from collections.abc import Callable
from typing import Any

import optax
from jax.typing import ArrayLike, DTypeLike
from optax import ScalarOrSchedule

from adam_optax import argument_docs, checks
from adam_optax.transforms import (
    scale_by_adam,
    scale_by_adam8bit,
    scale_by_adamax,
    scale_by_amsgrad,
)

# A pytree of bools like the params, or a function params -> such a tree.
Mask = Any | Callable[[optax.Params], Any]


def _finish(
    scaling: optax.GradientTransformation,
    learning_rate: ScalarOrSchedule,
    weight_decay: ScalarOrSchedule | None = None,
    mask: Mask | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Appends the optional decoupled weight decay and the learning rate."""
    checks.non_negative_or_schedule("learning_rate", learning_rate)
    steps = [scaling]
    if weight_decay is not None:
        checks.non_negative_or_schedule("weight_decay", weight_decay)
        steps.append(optax.add_decayed_weights(weight_decay, mask))
    steps.append(optax.scale_by_learning_rate(learning_rate))
    return optax.chain(*steps)


@argument_docs.documented()
def adam(
    learning_rate: ScalarOrSchedule,
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.999,
    eps: ArrayLike = 1e-8,
    eps_root: ArrayLike = 0.0,
    mu_dtype: DTypeLike | None = None,
    *,
    nu_dtype: DTypeLike | None = None,
    nesterov: bool = False,
    amsgrad: bool = False,
    eps_hat: bool = False,
    stochastic_rounding: bool = False,
    seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
    r"""Adam (Kingma & Ba, 2014): ``scale_by_adam`` and then ``-learning_rate``.

    .. math::
        \theta_t = \theta_{t-1} - \eta_t \, \hat m_t
        / (\sqrt{\hat v_t + \epsilon_{root}} + \epsilon),

    with η_t the learning rate and m̂_t, v̂_t the bias-corrected moments of
    ``scale_by_adam``. A drop-in for ``optax.adam``: the same positional
    arguments, defaults and state.

    Reference: Kingma & Ba, "Adam: A Method for Stochastic Optimization",
    ICLR 2015, https://arxiv.org/abs/1412.6980.

    Args:
        {args}

    Returns:
        An optax ``GradientTransformationExtraArgs``: ``chain(scale_by_adam(...),
        scale_by_learning_rate(learning_rate))``.

    Raises:
        ValueError, TypeError: an argument out of its range or of the wrong type.

    Example:
        >>> import jax.numpy as jnp, numpy as np, optax, adam_optax
        >>> tx = adam_optax.adam(0.1)
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> state = tx.init(params)
        >>> updates, state = tx.update({"w": jnp.array([0.5, -0.5])}, state, params)
        >>> new = optax.apply_updates(params, updates)  # θ - lr·sign(g)
        >>> print(np.asarray(new["w"]).round(4))
        [ 0.9 -1.9]
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


@argument_docs.documented()
def adamw(
    learning_rate: ScalarOrSchedule,
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.999,
    eps: ArrayLike = 1e-8,
    eps_root: ArrayLike = 0.0,
    mu_dtype: DTypeLike | None = None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: Mask | None = None,
    *,
    nu_dtype: DTypeLike | None = None,
    nesterov: bool = False,
    amsgrad: bool = False,
    eps_hat: bool = False,
    stochastic_rounding: bool = False,
    seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
    r"""AdamW (Loshchilov & Hutter, 2019): Adam with decoupled weight decay.

    .. math::
        \theta_t = \theta_{t-1} - \eta_t \, (\hat m_t / (\sqrt{\hat v_t + \epsilon_{root}}
        + \epsilon) + \lambda \, \theta_{t-1}),

    with η_t the learning rate and λ ``weight_decay``, applied where ``mask``
    is True. The decay is scaled by the learning rate, as in PyTorch's
    ``AdamW`` and optax. A drop-in for ``optax.adamw``.

    Reference: Loshchilov & Hutter, "Decoupled Weight Decay Regularization",
    ICLR 2019, https://arxiv.org/abs/1711.05101.

    Args:
        {args}

    Returns:
        An optax ``GradientTransformationExtraArgs``: ``chain(scale_by_adam(...),
        add_decayed_weights(weight_decay, mask), scale_by_learning_rate(learning_rate))``.
        ``update`` needs the params.

    Raises:
        ValueError, TypeError: an argument out of its range or of the wrong type.

    Example:
        >>> import jax.numpy as jnp, numpy as np, optax, adam_optax
        >>> tx = adam_optax.adamw(0.1, weight_decay=0.5, mask={"w": True, "b": False})
        >>> params = {"w": jnp.array([1.0, -2.0]), "b": jnp.array([1.0])}
        >>> grads = {"w": jnp.array([0.5, -0.5]), "b": jnp.array([0.5])}
        >>> updates, state = tx.update(grads, tx.init(params), params)
        >>> new = optax.apply_updates(params, updates)  # θ - lr·(sign(g) + wd·θ) on w
        >>> print(np.asarray(new["w"]).round(4), np.asarray(new["b"]).round(4))
        [ 0.85 -1.8 ] [0.9]
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


@argument_docs.documented()
def nadam(
    learning_rate: ScalarOrSchedule,
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.999,
    eps: ArrayLike = 1e-8,
    eps_root: ArrayLike = 0.0,
    mu_dtype: DTypeLike | None = None,
    *,
    nu_dtype: DTypeLike | None = None,
    nesterov: bool = True,
    amsgrad: bool = False,
    eps_hat: bool = False,
    stochastic_rounding: bool = False,
    seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
    r"""NAdam (Dozat, 2016): ``adam`` with Nesterov momentum, in optax's formula.

    .. math::
        \hat m_t = \beta_1 m_t / (1 - \beta_1^{t+1}) + (1 - \beta_1) g_t / (1 - \beta_1^t),

    in place of Adam's m̂_t; the rest is ``adam``. This is optax's ``nadam``,
    not PyTorch's ``NAdam``, which adds a momentum decay schedule.

    Reference: Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016
    workshop, https://openreview.net/forum?id=OM0jvwB8jIp57ZJjtNEZ.

    Args:
        {args}

    Returns:
        An optax ``GradientTransformationExtraArgs``, as ``adam``'s.

    Raises:
        ValueError, TypeError: an argument out of its range or of the wrong type.

    Example:
        >>> import jax.numpy as jnp, numpy as np, optax, adam_optax
        >>> tx = adam_optax.nadam(0.1)
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, state = tx.update({"w": jnp.array([0.5, -0.5])}, tx.init(params))
        >>> # the first step is lr·(1 + b1/(1 + b1))·sign(g) = 0.1473…·sign(g)
        >>> new = optax.apply_updates(params, updates)
        >>> print(np.asarray(new["w"]).round(4))
        [ 0.8526 -1.8526]
    """
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


@argument_docs.documented()
def nadamw(
    learning_rate: ScalarOrSchedule,
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.999,
    eps: ArrayLike = 1e-8,
    eps_root: ArrayLike = 0.0,
    mu_dtype: DTypeLike | None = None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: Mask | None = None,
    *,
    nu_dtype: DTypeLike | None = None,
    nesterov: bool = True,
    amsgrad: bool = False,
    eps_hat: bool = False,
    stochastic_rounding: bool = False,
    seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
    r"""NAdamW: ``nadam`` with decoupled weight decay, as ``adamw`` adds it to ``adam``.

    .. math::
        \theta_t = \theta_{t-1} - \eta_t \, (\hat m_t / (\sqrt{\hat v_t + \epsilon_{root}}
        + \epsilon) + \lambda \, \theta_{t-1}),

    with NAdam's m̂_t (see ``nadam``), η_t the learning rate and λ
    ``weight_decay``. A drop-in for ``optax.nadamw``.

    References: Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016
    workshop; Loshchilov & Hutter, "Decoupled Weight Decay Regularization",
    ICLR 2019, https://arxiv.org/abs/1711.05101.

    Args:
        {args}

    Returns:
        An optax ``GradientTransformationExtraArgs``, as ``adamw``'s.

    Raises:
        ValueError, TypeError: an argument out of its range or of the wrong type.

    Example:
        >>> import jax.numpy as jnp, numpy as np, optax, adam_optax
        >>> tx = adam_optax.nadamw(0.1, weight_decay=0.5)
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, _ = tx.update({"w": jnp.array([0.5, -0.5])}, tx.init(params), params)
        >>> # θ - lr·((1 + b1/(1 + b1))·sign(g) + wd·θ)
        >>> new = optax.apply_updates(params, updates)
        >>> print(np.asarray(new["w"]).round(4))
        [ 0.8026 -1.7526]
    """
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


@argument_docs.documented()
def amsgrad(
    learning_rate: ScalarOrSchedule,
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.999,
    eps: ArrayLike = 1e-8,
    eps_root: ArrayLike = 0.0,
    mu_dtype: DTypeLike | None = None,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
    *,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""AMSGrad (Reddi et al., 2018) in optax's convention, for drop-in use.

    .. math::
        \theta_t = \theta_{t-1} - \eta_t \, \hat m_t / (\sqrt{\hat v^{max}_t
        + \epsilon_{root}} + \epsilon), \quad
        \hat v^{max}_t = \max(\hat v^{max}_{t-1}, \hat v_t):

    the running max is of the bias-corrected v̂_t (see ``scale_by_amsgrad``),
    as ``optax.amsgrad`` does. For PyTorch's and Keras's ``amsgrad=True`` (the
    max of the raw v_t) use ``adam(..., amsgrad=True)``.

    Reference: Reddi, Kale & Kumar, "On the Convergence of Adam and Beyond",
    ICLR 2018, https://openreview.net/forum?id=ryQu7f-RZ.

    Args:
        {args}

    Returns:
        An optax ``GradientTransformationExtraArgs``: ``chain(scale_by_amsgrad(...),
        scale_by_learning_rate(learning_rate))``.

    Raises:
        ValueError, TypeError: an argument out of its range or of the wrong type.

    Example:
        >>> import jax.numpy as jnp, numpy as np, optax, adam_optax
        >>> tx = adam_optax.amsgrad(0.1)
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> state = tx.init(params)
        >>> for g in (4.0, 0.5):  # a large gradient, then a small one
        ...     updates, state = tx.update({"w": jnp.full(2, g)}, state)
        >>> print(np.asarray(state[0].nu_max["w"]).round(2))  # the max keeps v̂ of the large one
        [16. 16.]
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


@argument_docs.documented(**argument_docs.ADAMAX)
def adamax(
    learning_rate: ScalarOrSchedule,
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.999,
    eps: ArrayLike = 1e-8,
) -> optax.GradientTransformationExtraArgs:
    r"""AdaMax (Kingma & Ba, 2014, §7.1): Adam with the infinity norm.

    .. math::
        u_t = \max(|g_t| + \epsilon, \beta_2 u_{t-1}), \quad
        \theta_t = \theta_{t-1} - \eta_t \, m_t / ((1 - \beta_1^t) \, u_t),

    with η_t the learning rate and m_t Adam's first moment (see
    ``scale_by_adamax``). A drop-in for ``optax.adamax``.

    Reference: Kingma & Ba, "Adam: A Method for Stochastic Optimization",
    ICLR 2015, §7.1, https://arxiv.org/abs/1412.6980.

    Args:
        {args}

    Returns:
        An optax ``GradientTransformationExtraArgs``: ``chain(scale_by_adamax(...),
        scale_by_learning_rate(learning_rate))``.

    Raises:
        ValueError, TypeError: an argument out of its range or of the wrong type.

    Example:
        >>> import jax.numpy as jnp, numpy as np, optax, adam_optax
        >>> tx = adam_optax.adamax(0.1)
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, state = tx.update({"w": jnp.array([0.5, -0.5])}, tx.init(params))
        >>> new = optax.apply_updates(params, updates)  # θ - lr·sign(g)
        >>> print(np.asarray(new["w"]).round(4))
        [ 0.9 -1.9]
    """
    return _finish(scale_by_adamax(b1, b2, eps), learning_rate)


@argument_docs.documented(**argument_docs.ADAMAX)
def adamaxw(
    learning_rate: ScalarOrSchedule,
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.999,
    eps: ArrayLike = 1e-8,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: Mask | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""AdaMaxW: ``adamax`` with decoupled weight decay, as ``adamw`` adds it to ``adam``.

    .. math::
        \theta_t = \theta_{t-1} - \eta_t \, (m_t / ((1 - \beta_1^t) \, u_t)
        + \lambda \, \theta_{t-1}),

    with u_t AdaMax's infinity norm (see ``scale_by_adamax``), η_t the
    learning rate and λ ``weight_decay``. A drop-in for ``optax.adamaxw``.

    References: Kingma & Ba, "Adam: A Method for Stochastic Optimization",
    ICLR 2015, §7.1; Loshchilov & Hutter, "Decoupled Weight Decay
    Regularization", ICLR 2019, https://arxiv.org/abs/1711.05101.

    Args:
        {args}

    Returns:
        An optax ``GradientTransformationExtraArgs``: ``chain(scale_by_adamax(...),
        add_decayed_weights(weight_decay, mask), scale_by_learning_rate(learning_rate))``.
        ``update`` needs the params.

    Raises:
        ValueError, TypeError: an argument out of its range or of the wrong type.

    Example:
        >>> import jax.numpy as jnp, numpy as np, optax, adam_optax
        >>> tx = adam_optax.adamaxw(0.1, weight_decay=0.5)
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, _ = tx.update({"w": jnp.array([0.5, -0.5])}, tx.init(params), params)
        >>> new = optax.apply_updates(params, updates)  # θ - lr·(sign(g) + wd·θ)
        >>> print(np.asarray(new["w"]).round(4))
        [ 0.85 -1.8 ]
    """
    return _finish(scale_by_adamax(b1, b2, eps), learning_rate, weight_decay, mask)


@argument_docs.documented(**argument_docs.EIGHT_BIT)
def adam8bit(
    learning_rate: ScalarOrSchedule,
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.999,
    eps: ArrayLike = 1e-8,
    eps_root: ArrayLike = 0.0,
    *,
    nesterov: bool = False,
    amsgrad: bool = False,
    eps_hat: bool = False,
    block_size: int = 256,
    min_quantized_size: int = 4096,
    stochastic_rounding: bool = True,
    seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
    r"""``adam`` with 8-bit blockwise moments (Dettmers et al. 2021): a quarter of the memory.

    The math is ``adam``'s, computed in float32. Leaves of at least
    ``min_quantized_size`` elements store m and v as uint8 codes plus a
    float32 scale per ``block_size`` elements of the last axis, about 2 bytes
    per parameter instead of 8; see ``scale_by_adam8bit`` for the format and
    its error.

    Reference: Dettmers, Lewis, Shleifer & Zettlemoyer, "8-bit Optimizers via
    Block-wise Quantization", ICLR 2022, https://arxiv.org/abs/2110.02861.

    Args:
        {args}

    Returns:
        An optax ``GradientTransformationExtraArgs``: ``chain(scale_by_adam8bit(...),
        scale_by_learning_rate(learning_rate))``.

    Raises:
        ValueError, TypeError: an argument out of its range or of the wrong type.

    Example:
        >>> import jax.numpy as jnp, numpy as np, optax, adam_optax
        >>> tx = adam_optax.adam8bit(0.1, min_quantized_size=2)
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> state = tx.init(params)
        >>> updates, state = tx.update({"w": jnp.array([0.5, -0.5])}, state, params)
        >>> new = optax.apply_updates(params, updates)  # θ - lr·sign(g)
        >>> print(np.asarray(new["w"]).round(4))
        [ 0.9 -1.9]
        >>> print(state[0].mu["w"].codes.dtype)
        uint8
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
            stochastic_rounding=stochastic_rounding,
            seed=seed,
        ),
        learning_rate,
    )


@argument_docs.documented(**argument_docs.EIGHT_BIT)
def adamw8bit(
    learning_rate: ScalarOrSchedule,
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.999,
    eps: ArrayLike = 1e-8,
    eps_root: ArrayLike = 0.0,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: Mask | None = None,
    *,
    nesterov: bool = False,
    amsgrad: bool = False,
    eps_hat: bool = False,
    block_size: int = 256,
    min_quantized_size: int = 4096,
    stochastic_rounding: bool = True,
    seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
    r"""``adamw`` with 8-bit blockwise moments: ``adam8bit`` plus decoupled weight decay.

    .. math::
        \theta_t = \theta_{t-1} - \eta_t \, (\hat m_t / (\sqrt{\hat v_t + \epsilon_{root}}
        + \epsilon) + \lambda \, \theta_{t-1}),

    computed in float32 from moments stored in 8 bits (see
    ``scale_by_adam8bit``), with η_t the learning rate and λ ``weight_decay``.

    References: Dettmers, Lewis, Shleifer & Zettlemoyer, "8-bit Optimizers via
    Block-wise Quantization", ICLR 2022, https://arxiv.org/abs/2110.02861;
    Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.

    Args:
        {args}

    Returns:
        An optax ``GradientTransformationExtraArgs``: ``chain(scale_by_adam8bit(...),
        add_decayed_weights(weight_decay, mask), scale_by_learning_rate(learning_rate))``.
        ``update`` needs the params.

    Raises:
        ValueError, TypeError: an argument out of its range or of the wrong type.

    Example:
        >>> import jax.numpy as jnp, numpy as np, optax, adam_optax
        >>> tx = adam_optax.adamw8bit(0.1, weight_decay=0.5, min_quantized_size=2)
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, _ = tx.update({"w": jnp.array([0.5, -0.5])}, tx.init(params), params)
        >>> new = optax.apply_updates(params, updates)  # θ - lr·(sign(g) + wd·θ)
        >>> print(np.asarray(new["w"]).round(4))
        [ 0.85 -1.8 ]
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
            stochastic_rounding=stochastic_rounding,
            seed=seed,
        ),
        learning_rate,
        weight_decay,
        mask,
    )
