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

from adam_optax import checks
from adam_optax.transforms import (
    scale_by_adam,
    scale_by_adam4bit,
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
        learning_rate: the step size: a number >= 0, a scalar array, or an optax schedule (a
            function of the step count, from 0, returning such a number).
        b1: decay rate of the first-moment average m_t, in [0, 1). Default: ``0.9``.
        b2: decay rate of the second-moment average v_t, in [0, 1). Default: ``0.999``.
        eps: added to the denominator outside the square root, sqrt(v̂_t + eps_root) + eps, for
            numerical stability; >= 0. Default: ``1e-8``.
        eps_root: added to v̂_t inside the square root, >= 0. A positive value keeps the
            gradient of the update finite when v̂_t = 0 (meta-learning). Default: ``0.0``.
        mu_dtype: storage dtype of the first moment m, a floating or complex dtype; complex
            params get its complex counterpart. None means the params' dtype. Default: ``None``.
        nu_dtype: storage dtype of the second moment v (and of the AMSGrad max), a real floating
            dtype. None means the params' real dtype (float32 for complex64 params), but float32
            for float16 params, whose squared gradients underflow in float16. Default: ``None``.
        nesterov: use Nesterov momentum (NAdam, Dozat 2016) in optax's formula: m̂_t = b1 m_t /
            (1 - b1^(t+1)) + (1 - b1) g_t / (1 - b1^t). Default: ``False``.
        amsgrad: use AMSGrad (Reddi et al. 2018) in PyTorch's and Keras's convention: the
            denominator uses the running max of the raw v_t, bias-corrected after the max. The
            state gains ``nu_max`` (``ScaleByAmsgradState``). For optax's convention, the max of
            the bias-corrected v̂_t, use ``amsgrad``. Default: ``False``.
        eps_hat: add eps to sqrt(v_t) before the bias correction, the ε̂ of the paper's §2, as
            TensorFlow and Keras do: the denominator becomes sqrt(v̂_t) + eps / sqrt(1 - b2^t).
            Default: ``False``.
        stochastic_rounding: store the 16-bit moments (bfloat16 or float16, set by ``mu_dtype``
            and ``nu_dtype``, one of which must be 16-bit) by unbiased stochastic rounding
            instead of round-to-nearest, so that E[stored] = computed (Gupta et al. 2015;
            Zamirai et al. 2020). With round-to-nearest and b2 = 0.999, a bfloat16 v cannot
            decay: 0.999 · v rounds back to v. Default: ``False``.
        seed: an integer in [0, 2**32); the random bits of stochastic rounding derive from it,
            the step count and the leaf's index, so that a run is reproducible. Default: ``0``.

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
        learning_rate: the step size: a number >= 0, a scalar array, or an optax schedule (a
            function of the step count, from 0, returning such a number).
        b1: decay rate of the first-moment average m_t, in [0, 1). Default: ``0.9``.
        b2: decay rate of the second-moment average v_t, in [0, 1). Default: ``0.999``.
        eps: added to the denominator outside the square root, sqrt(v̂_t + eps_root) + eps, for
            numerical stability; >= 0. Default: ``1e-8``.
        eps_root: added to v̂_t inside the square root, >= 0. A positive value keeps the
            gradient of the update finite when v̂_t = 0 (meta-learning). Default: ``0.0``.
        mu_dtype: storage dtype of the first moment m, a floating or complex dtype; complex
            params get its complex counterpart. None means the params' dtype. Default: ``None``.
        weight_decay: rate of the decoupled weight decay: a number >= 0, a scalar array, or a
            schedule. The update gains -learning_rate · weight_decay · θ_{t-1}, as in PyTorch's
            AdamW and optax. Default: ``0.0001``.
        mask: where the weight decay applies: a pytree of bools with the params' structure (or a
            prefix of it), or a function params -> such a tree. None decays every param.
            Default: ``None``.
        nu_dtype: storage dtype of the second moment v (and of the AMSGrad max), a real floating
            dtype. None means the params' real dtype (float32 for complex64 params), but float32
            for float16 params, whose squared gradients underflow in float16. Default: ``None``.
        nesterov: use Nesterov momentum (NAdam, Dozat 2016) in optax's formula: m̂_t = b1 m_t /
            (1 - b1^(t+1)) + (1 - b1) g_t / (1 - b1^t). Default: ``False``.
        amsgrad: use AMSGrad (Reddi et al. 2018) in PyTorch's and Keras's convention: the
            denominator uses the running max of the raw v_t, bias-corrected after the max. The
            state gains ``nu_max`` (``ScaleByAmsgradState``). For optax's convention, the max of
            the bias-corrected v̂_t, use ``amsgrad``. Default: ``False``.
        eps_hat: add eps to sqrt(v_t) before the bias correction, the ε̂ of the paper's §2, as
            TensorFlow and Keras do: the denominator becomes sqrt(v̂_t) + eps / sqrt(1 - b2^t).
            Default: ``False``.
        stochastic_rounding: store the 16-bit moments (bfloat16 or float16, set by ``mu_dtype``
            and ``nu_dtype``, one of which must be 16-bit) by unbiased stochastic rounding
            instead of round-to-nearest, so that E[stored] = computed (Gupta et al. 2015;
            Zamirai et al. 2020). With round-to-nearest and b2 = 0.999, a bfloat16 v cannot
            decay: 0.999 · v rounds back to v. Default: ``False``.
        seed: an integer in [0, 2**32); the random bits of stochastic rounding derive from it,
            the step count and the leaf's index, so that a run is reproducible. Default: ``0``.

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
        learning_rate: the step size: a number >= 0, a scalar array, or an optax schedule (a
            function of the step count, from 0, returning such a number).
        b1: decay rate of the first-moment average m_t, in [0, 1). Default: ``0.9``.
        b2: decay rate of the second-moment average v_t, in [0, 1). Default: ``0.999``.
        eps: added to the denominator outside the square root, sqrt(v̂_t + eps_root) + eps, for
            numerical stability; >= 0. Default: ``1e-8``.
        eps_root: added to v̂_t inside the square root, >= 0. A positive value keeps the
            gradient of the update finite when v̂_t = 0 (meta-learning). Default: ``0.0``.
        mu_dtype: storage dtype of the first moment m, a floating or complex dtype; complex
            params get its complex counterpart. None means the params' dtype. Default: ``None``.
        nu_dtype: storage dtype of the second moment v (and of the AMSGrad max), a real floating
            dtype. None means the params' real dtype (float32 for complex64 params), but float32
            for float16 params, whose squared gradients underflow in float16. Default: ``None``.
        nesterov: use Nesterov momentum (NAdam, Dozat 2016) in optax's formula: m̂_t = b1 m_t /
            (1 - b1^(t+1)) + (1 - b1) g_t / (1 - b1^t). Default: ``True``.
        amsgrad: use AMSGrad (Reddi et al. 2018) in PyTorch's and Keras's convention: the
            denominator uses the running max of the raw v_t, bias-corrected after the max. The
            state gains ``nu_max`` (``ScaleByAmsgradState``). For optax's convention, the max of
            the bias-corrected v̂_t, use ``amsgrad``. Default: ``False``.
        eps_hat: add eps to sqrt(v_t) before the bias correction, the ε̂ of the paper's §2, as
            TensorFlow and Keras do: the denominator becomes sqrt(v̂_t) + eps / sqrt(1 - b2^t).
            Default: ``False``.
        stochastic_rounding: store the 16-bit moments (bfloat16 or float16, set by ``mu_dtype``
            and ``nu_dtype``, one of which must be 16-bit) by unbiased stochastic rounding
            instead of round-to-nearest, so that E[stored] = computed (Gupta et al. 2015;
            Zamirai et al. 2020). With round-to-nearest and b2 = 0.999, a bfloat16 v cannot
            decay: 0.999 · v rounds back to v. Default: ``False``.
        seed: an integer in [0, 2**32); the random bits of stochastic rounding derive from it,
            the step count and the leaf's index, so that a run is reproducible. Default: ``0``.

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
        learning_rate: the step size: a number >= 0, a scalar array, or an optax schedule (a
            function of the step count, from 0, returning such a number).
        b1: decay rate of the first-moment average m_t, in [0, 1). Default: ``0.9``.
        b2: decay rate of the second-moment average v_t, in [0, 1). Default: ``0.999``.
        eps: added to the denominator outside the square root, sqrt(v̂_t + eps_root) + eps, for
            numerical stability; >= 0. Default: ``1e-8``.
        eps_root: added to v̂_t inside the square root, >= 0. A positive value keeps the
            gradient of the update finite when v̂_t = 0 (meta-learning). Default: ``0.0``.
        mu_dtype: storage dtype of the first moment m, a floating or complex dtype; complex
            params get its complex counterpart. None means the params' dtype. Default: ``None``.
        weight_decay: rate of the decoupled weight decay: a number >= 0, a scalar array, or a
            schedule. The update gains -learning_rate · weight_decay · θ_{t-1}, as in PyTorch's
            AdamW and optax. Default: ``0.0001``.
        mask: where the weight decay applies: a pytree of bools with the params' structure (or a
            prefix of it), or a function params -> such a tree. None decays every param.
            Default: ``None``.
        nu_dtype: storage dtype of the second moment v (and of the AMSGrad max), a real floating
            dtype. None means the params' real dtype (float32 for complex64 params), but float32
            for float16 params, whose squared gradients underflow in float16. Default: ``None``.
        nesterov: use Nesterov momentum (NAdam, Dozat 2016) in optax's formula: m̂_t = b1 m_t /
            (1 - b1^(t+1)) + (1 - b1) g_t / (1 - b1^t). Default: ``True``.
        amsgrad: use AMSGrad (Reddi et al. 2018) in PyTorch's and Keras's convention: the
            denominator uses the running max of the raw v_t, bias-corrected after the max. The
            state gains ``nu_max`` (``ScaleByAmsgradState``). For optax's convention, the max of
            the bias-corrected v̂_t, use ``amsgrad``. Default: ``False``.
        eps_hat: add eps to sqrt(v_t) before the bias correction, the ε̂ of the paper's §2, as
            TensorFlow and Keras do: the denominator becomes sqrt(v̂_t) + eps / sqrt(1 - b2^t).
            Default: ``False``.
        stochastic_rounding: store the 16-bit moments (bfloat16 or float16, set by ``mu_dtype``
            and ``nu_dtype``, one of which must be 16-bit) by unbiased stochastic rounding
            instead of round-to-nearest, so that E[stored] = computed (Gupta et al. 2015;
            Zamirai et al. 2020). With round-to-nearest and b2 = 0.999, a bfloat16 v cannot
            decay: 0.999 · v rounds back to v. Default: ``False``.
        seed: an integer in [0, 2**32); the random bits of stochastic rounding derive from it,
            the step count and the leaf's index, so that a run is reproducible. Default: ``0``.

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
        learning_rate: the step size: a number >= 0, a scalar array, or an optax schedule (a
            function of the step count, from 0, returning such a number).
        b1: decay rate of the first-moment average m_t, in [0, 1). Default: ``0.9``.
        b2: decay rate of the second-moment average v_t, in [0, 1). Default: ``0.999``.
        eps: added to the denominator outside the square root, sqrt(v̂_t + eps_root) + eps, for
            numerical stability; >= 0. Default: ``1e-8``.
        eps_root: added to v̂_t inside the square root, >= 0. A positive value keeps the
            gradient of the update finite when v̂_t = 0 (meta-learning). Default: ``0.0``.
        mu_dtype: storage dtype of the first moment m, a floating or complex dtype; complex
            params get its complex counterpart. None means the params' dtype. Default: ``None``.
        bias_correction_mu: divide m_t by 1 - b1^t. False uses m_t itself. Default: ``True``.
        bias_correction_nu: take the running max of the bias-corrected v̂_t = v_t / (1 - b2^t).
            False takes the max of the raw v_t and never corrects it, as in Reddi et al.'s
            paper. Default: ``True``.
        nu_dtype: storage dtype of the second moment v (and of the AMSGrad max), a real floating
            dtype. None means the params' real dtype (float32 for complex64 params), but float32
            for float16 params, whose squared gradients underflow in float16. Default: ``None``.

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
        learning_rate: the step size: a number >= 0, a scalar array, or an optax schedule (a
            function of the step count, from 0, returning such a number).
        b1: decay rate of the first-moment average m_t, in [0, 1). Default: ``0.9``.
        b2: decay rate of the infinity norm u_t, in [0, 1). Default: ``0.999``.
        eps: added to |g_t| inside the max, >= 0; a zero first gradient then gives 0, not 0/0.
            Default: ``1e-8``.

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
        learning_rate: the step size: a number >= 0, a scalar array, or an optax schedule (a
            function of the step count, from 0, returning such a number).
        b1: decay rate of the first-moment average m_t, in [0, 1). Default: ``0.9``.
        b2: decay rate of the infinity norm u_t, in [0, 1). Default: ``0.999``.
        eps: added to |g_t| inside the max, >= 0; a zero first gradient then gives 0, not 0/0.
            Default: ``1e-8``.
        weight_decay: rate of the decoupled weight decay: a number >= 0, a scalar array, or a
            schedule. The update gains -learning_rate · weight_decay · θ_{t-1}, as in PyTorch's
            AdamW and optax. Default: ``0.0001``.
        mask: where the weight decay applies: a pytree of bools with the params' structure (or a
            prefix of it), or a function params -> such a tree. None decays every param.
            Default: ``None``.

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
    block_size: int | None = None,
    min_quantized_size: int | None = None,
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
        learning_rate: the step size: a number >= 0, a scalar array, or an optax schedule (a
            function of the step count, from 0, returning such a number).
        b1: decay rate of the first-moment average m_t, in [0, 1). Default: ``0.9``.
        b2: decay rate of the second-moment average v_t, in [0, 1). Default: ``0.999``.
        eps: added to the denominator outside the square root, sqrt(v̂_t + eps_root) + eps, for
            numerical stability; >= 0. Default: ``1e-8``.
        eps_root: added to v̂_t inside the square root, >= 0. A positive value keeps the
            gradient of the update finite when v̂_t = 0 (meta-learning). Default: ``0.0``.
        nesterov: use Nesterov momentum (NAdam, Dozat 2016) in optax's formula: m̂_t = b1 m_t /
            (1 - b1^(t+1)) + (1 - b1) g_t / (1 - b1^t). Default: ``False``.
        amsgrad: use AMSGrad (Reddi et al. 2018) in PyTorch's and Keras's convention: the
            denominator uses the running max of the raw v_t, bias-corrected after the max. The
            state gains ``nu_max`` (``ScaleByAmsgradState``). For optax's convention, the max of
            the bias-corrected v̂_t, use ``amsgrad``. The running max is stored like v, but
            rounded up (against block scales rounded up to powers of two), so that it never
            falls. Default: ``False``.
        eps_hat: add eps to sqrt(v_t) before the bias correction, the ε̂ of the paper's §2, as
            TensorFlow and Keras do: the denominator becomes sqrt(v̂_t) + eps / sqrt(1 - b2^t).
            Default: ``False``.
        block_size: elements per 8-bit block along a leaf's last axis, each block with its own
            float32 scale (its absmax); a positive integer. A row's last block is shorter when
            block_size does not divide the axis. None means 256. It sets the state's layout,
            so it is not a hyperparameter: under ``optax.inject_hyperparams``, a value passed
            is fixed at init (a new one raises at update). Default: ``None``.
        min_quantized_size: leaves with fewer elements (and scalars and complex leaves) keep
            float32 (complex64) moments; an integer >= 0. None means 4096. It sets the
            state's layout, as block_size does. Default: ``None``.
        stochastic_rounding: store each 8-bit code by rounding to one of the two neighbouring
            code values at random, with the probability that makes it unbiased in value
            (E[stored] = computed), instead of to the nearest code. On by default: with
            round-to-nearest, a v that decays by 1 - b2 per step moves less than half a code
            gap, so it can only jump up, and the v of rarely updated elements (embedding rows,
            an output layer over many classes) drifts far above float32's; stochastic
            rounding keeps it unbiased (tests/test_low_bit_long.py), for a few integer
            operations per element (a counter-based hash, as for 16-bit state) and a longer
            compile on trees of many leaves (benchmarks/compile_time.py). Default: ``True``.
        seed: an integer in [0, 2**32); the random bits of stochastic rounding derive from it,
            the step count and the leaf's index, so that a run is reproducible. Default: ``0``.

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
        >>> print(state[0].mu.codes["w"].dtype)
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
    block_size: int | None = None,
    min_quantized_size: int | None = None,
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
        learning_rate: the step size: a number >= 0, a scalar array, or an optax schedule (a
            function of the step count, from 0, returning such a number).
        b1: decay rate of the first-moment average m_t, in [0, 1). Default: ``0.9``.
        b2: decay rate of the second-moment average v_t, in [0, 1). Default: ``0.999``.
        eps: added to the denominator outside the square root, sqrt(v̂_t + eps_root) + eps, for
            numerical stability; >= 0. Default: ``1e-8``.
        eps_root: added to v̂_t inside the square root, >= 0. A positive value keeps the
            gradient of the update finite when v̂_t = 0 (meta-learning). Default: ``0.0``.
        weight_decay: rate of the decoupled weight decay: a number >= 0, a scalar array, or a
            schedule. The update gains -learning_rate · weight_decay · θ_{t-1}, as in PyTorch's
            AdamW and optax. Default: ``0.0001``.
        mask: where the weight decay applies: a pytree of bools with the params' structure (or a
            prefix of it), or a function params -> such a tree. None decays every param.
            Default: ``None``.
        nesterov: use Nesterov momentum (NAdam, Dozat 2016) in optax's formula: m̂_t = b1 m_t /
            (1 - b1^(t+1)) + (1 - b1) g_t / (1 - b1^t). Default: ``False``.
        amsgrad: use AMSGrad (Reddi et al. 2018) in PyTorch's and Keras's convention: the
            denominator uses the running max of the raw v_t, bias-corrected after the max. The
            state gains ``nu_max`` (``ScaleByAmsgradState``). For optax's convention, the max of
            the bias-corrected v̂_t, use ``amsgrad``. The running max is stored like v, but
            rounded up (against block scales rounded up to powers of two), so that it never
            falls. Default: ``False``.
        eps_hat: add eps to sqrt(v_t) before the bias correction, the ε̂ of the paper's §2, as
            TensorFlow and Keras do: the denominator becomes sqrt(v̂_t) + eps / sqrt(1 - b2^t).
            Default: ``False``.
        block_size: elements per 8-bit block along a leaf's last axis, each block with its own
            float32 scale (its absmax); a positive integer. A row's last block is shorter when
            block_size does not divide the axis. None means 256. It sets the state's layout,
            so it is not a hyperparameter: under ``optax.inject_hyperparams``, a value passed
            is fixed at init (a new one raises at update). Default: ``None``.
        min_quantized_size: leaves with fewer elements (and scalars and complex leaves) keep
            float32 (complex64) moments; an integer >= 0. None means 4096. It sets the
            state's layout, as block_size does. Default: ``None``.
        stochastic_rounding: store each 8-bit code by rounding to one of the two neighbouring
            code values at random, with the probability that makes it unbiased in value
            (E[stored] = computed), instead of to the nearest code. On by default: with
            round-to-nearest, a v that decays by 1 - b2 per step moves less than half a code
            gap, so it can only jump up, and the v of rarely updated elements (embedding rows,
            an output layer over many classes) drifts far above float32's; stochastic
            rounding keeps it unbiased (tests/test_low_bit_long.py), for a few integer
            operations per element (a counter-based hash, as for 16-bit state) and a longer
            compile on trees of many leaves (benchmarks/compile_time.py). Default: ``True``.
        seed: an integer in [0, 2**32); the random bits of stochastic rounding derive from it,
            the step count and the leaf's index, so that a run is reproducible. Default: ``0``.

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


def adam4bit(
    learning_rate: ScalarOrSchedule,
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.999,
    eps: ArrayLike = 1e-8,
    eps_root: ArrayLike = 0.0,
    *,
    nesterov: bool = False,
    amsgrad: bool = False,
    eps_hat: bool = False,
    block_size: int | None = None,
    min_quantized_size: int | None = None,
    stochastic_rounding: bool = True,
    seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
    r"""``adam`` with 4-bit blockwise moments (Li, Chen & Zhu 2023): an eighth of the memory.

    The math is ``adam``'s, computed in float32. Leaves of at least
    ``min_quantized_size`` elements with an even last axis store m and v as
    4-bit codes, two per byte, plus a float32 scale per ``block_size`` elements
    of the last axis: about 1.06 bytes per parameter instead of 8. See
    ``scale_by_adam4bit`` for the format and ``scale_by_adam8bit`` for what the
    two share.

    Reference: Li, Chen & Zhu, "Memory Efficient Optimizers with 4-bit States",
    NeurIPS 2023, https://arxiv.org/abs/2309.01507.

    Args:
        learning_rate: the step size: a number >= 0, a scalar array, or an optax schedule (a
            function of the step count, from 0, returning such a number).
        b1: decay rate of the first-moment average m_t, in [0, 1). Default: ``0.9``.
        b2: decay rate of the second-moment average v_t, in [0, 1). Default: ``0.999``.
        eps: added to the denominator outside the square root, sqrt(v̂_t + eps_root) + eps, for
            numerical stability; >= 0. Default: ``1e-8``.
        eps_root: added to v̂_t inside the square root, >= 0. Default: ``0.0``.
        nesterov: use Nesterov momentum (NAdam), as ``adam8bit``. Default: ``False``.
        amsgrad: use AMSGrad in PyTorch's convention, as ``adam8bit``. Default: ``False``.
        eps_hat: add eps to sqrt(v_t) before the bias correction, as ``adam8bit``.
            Default: ``False``.
        block_size: elements per block along a leaf's last axis; a positive even integer. None
            means 128. It sets the state's layout, so it is not a hyperparameter.
            Default: ``None``.
        min_quantized_size: leaves with fewer elements keep float32 moments; an integer >= 0.
            None means 4096. Default: ``None``.
        stochastic_rounding: round each code to one of its two neighbouring values at random,
            unbiased in value, instead of to the nearest. Default: ``True``.
        seed: an integer in [0, 2**32) for the random bits of stochastic rounding.
            Default: ``0``.

    Returns:
        An optax ``GradientTransformationExtraArgs``: ``chain(scale_by_adam4bit(...),
        scale_by_learning_rate(learning_rate))``.

    Raises:
        ValueError, TypeError: an argument out of its range or of the wrong type.

    Example:
        >>> import jax.numpy as jnp, numpy as np, optax, adam_optax
        >>> tx = adam_optax.adam4bit(0.1, min_quantized_size=2)
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> state = tx.init(params)
        >>> updates, state = tx.update({"w": jnp.array([0.5, -0.5])}, state, params)
        >>> print(np.asarray(optax.apply_updates(params, updates)["w"]).round(4))  # θ - lr·sign(g)
        [ 0.9 -1.9]
        >>> print(state[0].mu.codes["w"].shape)  # two codes in one byte
        (1,)
    """
    return _finish(
        scale_by_adam4bit(
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


def adamw4bit(
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
    block_size: int | None = None,
    min_quantized_size: int | None = None,
    stochastic_rounding: bool = True,
    seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
    r"""``adamw`` with 4-bit blockwise moments: ``adam4bit`` plus decoupled weight decay.

    .. math::
        \theta_t = \theta_{t-1} - \eta_t \, (\hat m_t / (\sqrt{\hat v_t + \epsilon_{root}}
        + \epsilon) + \lambda \, \theta_{t-1}),

    computed in float32 from moments stored in 4 bits (see
    ``scale_by_adam4bit``), with η_t the learning rate and λ ``weight_decay``.

    References: Li, Chen & Zhu, "Memory Efficient Optimizers with 4-bit States",
    NeurIPS 2023, https://arxiv.org/abs/2309.01507; Loshchilov & Hutter,
    "Decoupled Weight Decay Regularization", ICLR 2019.

    Args:
        learning_rate: the step size: a number >= 0, a scalar array, or an optax schedule (a
            function of the step count, from 0, returning such a number).
        b1: decay rate of the first-moment average m_t, in [0, 1). Default: ``0.9``.
        b2: decay rate of the second-moment average v_t, in [0, 1). Default: ``0.999``.
        eps: added to the denominator outside the square root, sqrt(v̂_t + eps_root) + eps, for
            numerical stability; >= 0. Default: ``1e-8``.
        eps_root: added to v̂_t inside the square root, >= 0. Default: ``0.0``.
        weight_decay: rate of the decoupled weight decay: a number >= 0, a scalar array, or a
            schedule, as in ``adamw``. Default: ``0.0001``.
        mask: where the weight decay applies: a pytree of bools with the params' structure (or a
            prefix of it), or a function params -> such a tree. None decays every param.
            Default: ``None``.
        nesterov: use Nesterov momentum (NAdam), as ``adam8bit``. Default: ``False``.
        amsgrad: use AMSGrad in PyTorch's convention, as ``adam8bit``. Default: ``False``.
        eps_hat: add eps to sqrt(v_t) before the bias correction, as ``adam8bit``.
            Default: ``False``.
        block_size: elements per block along a leaf's last axis; a positive even integer. None
            means 128. It sets the state's layout, so it is not a hyperparameter.
            Default: ``None``.
        min_quantized_size: leaves with fewer elements keep float32 moments; an integer >= 0.
            None means 4096. Default: ``None``.
        stochastic_rounding: round each code to one of its two neighbouring values at random,
            unbiased in value, instead of to the nearest. Default: ``True``.
        seed: an integer in [0, 2**32) for the random bits of stochastic rounding.
            Default: ``0``.

    Returns:
        An optax ``GradientTransformationExtraArgs``: ``chain(scale_by_adam4bit(...),
        add_decayed_weights(weight_decay, mask), scale_by_learning_rate(learning_rate))``.
        ``update`` needs the params.

    Raises:
        ValueError, TypeError: an argument out of its range or of the wrong type.

    Example:
        >>> import jax.numpy as jnp, numpy as np, optax, adam_optax
        >>> tx = adam_optax.adamw4bit(0.1, weight_decay=0.5, min_quantized_size=2)
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, _ = tx.update({"w": jnp.array([0.5, -0.5])}, tx.init(params), params)
        >>> print(np.asarray(optax.apply_updates(params, updates)["w"]).round(4))
        [ 0.85 -1.8 ]
    """
    return _finish(
        scale_by_adam4bit(
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
