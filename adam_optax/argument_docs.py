"""The arguments' documentation, written once for the transforms and the aliases.

Most arguments mean the same in every function that takes them. Their text
lives in ``ARGUMENTS``; ``documented`` writes it into a docstring's ``{args}``
marker, with each argument's default read from the signature, so that
``help(adam_optax.adamw)`` shows every argument in full and a default in the
text can never differ from the code's. A function whose argument means
something else (AdaMax's ``b2``) passes its own text.
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable
from typing import TypeVar

ARGUMENTS = {
    "learning_rate": (
        "the step size: a number >= 0, a scalar array, or an optax schedule (a function of "
        "the step count, from 0, returning such a number)."
    ),
    "b1": "decay rate of the first-moment average m_t, in [0, 1).",
    "b2": "decay rate of the second-moment average v_t, in [0, 1).",
    "eps": (
        "added to the denominator outside the square root, sqrt(v̂_t + eps_root) + eps, "
        "for numerical stability; >= 0."
    ),
    "eps_root": (
        "added to v̂_t inside the square root, >= 0. A positive value keeps the gradient "
        "of the update finite when v̂_t = 0 (meta-learning)."
    ),
    "mu_dtype": (
        "storage dtype of the first moment m, a floating or complex dtype; complex params "
        "get its complex counterpart. None means the params' dtype."
    ),
    "nu_dtype": (
        "storage dtype of the second moment v (and of the AMSGrad max), a real floating "
        "dtype. None means the params' real dtype (float32 for complex64 params), but "
        "float32 for float16 params, whose squared gradients underflow in float16."
    ),
    "weight_decay": (
        "rate of the decoupled weight decay: a number >= 0, a scalar array, or a schedule. "
        "The update gains -learning_rate · weight_decay · θ_{t-1}, as in PyTorch's AdamW "
        "and optax."
    ),
    "mask": (
        "where the weight decay applies: a pytree of bools with the params' structure (or "
        "a prefix of it), or a function params -> such a tree. None decays every param."
    ),
    "nesterov": (
        "use Nesterov momentum (NAdam, Dozat 2016) in optax's formula: m̂_t = b1 m_t / "
        "(1 - b1^(t+1)) + (1 - b1) g_t / (1 - b1^t)."
    ),
    "amsgrad": (
        "use AMSGrad (Reddi et al. 2018) in PyTorch's and Keras's convention: the "
        "denominator uses the running max of the raw v_t, bias-corrected after the max. "
        "The state gains ``nu_max`` (``ScaleByAmsgradState``). For optax's convention, "
        "the max of the bias-corrected v̂_t, use ``amsgrad``."
    ),
    "eps_hat": (
        "add eps to sqrt(v_t) before the bias correction, the ε̂ of the paper's §2, as "
        "TensorFlow and Keras do: the denominator becomes sqrt(v̂_t) + eps / sqrt(1 - "
        "b2^t)."
    ),
    "stochastic_rounding": (
        "store the 16-bit moments (bfloat16 or float16, set by ``mu_dtype`` and "
        "``nu_dtype``, one of which must be 16-bit) by unbiased stochastic rounding "
        "instead of round-to-nearest, so that E[stored] = computed (Gupta et al. 2015; "
        "Zamirai et al. 2020). With round-to-nearest and b2 = 0.999, a bfloat16 v cannot "
        "decay: 0.999 · v rounds back to v."
    ),
    "seed": (
        "an integer in [0, 2**32); the random bits of stochastic rounding derive from it, "
        "the step count and the leaf's index, so that a run is reproducible."
    ),
    "bias_correction_mu": "divide m_t by 1 - b1^t. False uses m_t itself.",
    "bias_correction_nu": (
        "take the running max of the bias-corrected v̂_t = v_t / (1 - b2^t). False takes "
        "the max of the raw v_t and never corrects it, as in Reddi et al.'s paper."
    ),
    "block_size": (
        "elements per 8-bit block along a leaf's last axis, each block with its own float32 "
        "scale (its absmax); a positive integer. A row's last block is shorter when "
        "block_size does not divide the axis."
    ),
    "min_quantized_size": (
        "leaves with fewer elements (and scalars and complex leaves) keep float32 (complex64) "
        "moments; an integer >= 0."
    ),
}

# AdaMax's second moment is a running max of |g|, and its eps sits inside that max.
ADAMAX = {
    "b2": "decay rate of the infinity norm u_t, in [0, 1).",
    "eps": "added to |g_t| inside the max, >= 0; a zero first gradient then gives 0, not 0/0.",
}
# The 8-bit transforms store the AMSGrad max in 8 bits too.
EIGHT_BIT = {
    "amsgrad": ARGUMENTS["amsgrad"] + " The running max is stored like v.",
    "stochastic_rounding": (
        "store each 8-bit code by rounding to one of the two neighbouring code values at "
        "random, with the probability that makes it unbiased in value (E[stored] = "
        "computed), instead of to the nearest code. On by default: with round-to-nearest, "
        "a v that decays by 1 - b2 per step moves less than half a code gap, so it can "
        "only jump up, and the v of rarely updated elements (embedding rows, an output "
        "layer over many classes) drifts far above float32's; stochastic rounding keeps "
        "it unbiased (tests/test_low_bit_long.py), for a few integer operations per "
        "element (a counter-based hash, as for 16-bit state) and a longer compile on "
        "trees of many leaves (benchmarks/compile_time.py)."
    ),
}

_MARKER = "{args}"
_Function = TypeVar("_Function", bound=Callable)


def documented(**own: str) -> Callable[[_Function], _Function]:
    """Writes the function's arguments, in signature order, into its ``{args}`` marker.

    Each entry is ``name: text Default: value.``, the text from ``own`` or else
    ``ARGUMENTS``; a required argument gets no default. An argument with no
    text is an error at import, so none goes undocumented.
    """

    def decorate(fn: _Function) -> _Function:
        doc = fn.__doc__
        if doc is None:  # python -OO strips docstrings
            return fn
        line = next(line for line in doc.splitlines() if line.strip() == _MARKER)
        indent = line[: len(line) - len(line.lstrip())]
        entries = []
        for name, parameter in inspect.signature(fn).parameters.items():
            text = own.get(name, ARGUMENTS.get(name))
            if text is None:
                raise ValueError(f"{fn.__name__}: argument {name!r} has no documentation.")
            if parameter.default is not inspect.Parameter.empty:
                text = f"{text} Default: {parameter.default!r}."
            entries.append(
                textwrap.fill(
                    f"{name}: {text}",
                    width=92,
                    initial_indent=indent,
                    subsequent_indent=indent + "    ",
                    break_on_hyphens=False,
                )
            )
        fn.__doc__ = doc.replace(line, "\n".join(entries))
        return fn

    return decorate
