"""Argument validation: one function per kind of check.

Every check runs at construction or at ``init``, or at trace time for the
static facts of a traced value (its shape and dtype). Values that only exist
at run time (tracers, e.g. hyperparameters under ``optax.inject_hyperparams``
inside ``jax.jit``) are skipped, never guessed at.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.core
import jax.numpy as jnp
import numpy as np

_LOW_PRECISION = (jnp.bfloat16, jnp.float16)
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _is_traced(value: Any) -> bool:
    return isinstance(value, jax.core.Tracer)


def _dtype(value: Any) -> np.dtype:
    return value.dtype if hasattr(value, "dtype") else np.result_type(value)


def _scalar(name: str, value: Any) -> float | None:
    """Returns ``value`` as a Python float, or None when it is traced.

    Raises TypeError for anything that is not a real number, and ValueError for
    arrays that are not scalars or numbers that are not finite in float32, in
    which the step computes: ``1e300`` would make the update inf.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.number, np.ndarray, jax.Array)
    ):
        raise TypeError(
            f"{name} must be a real number, got {value!r} of type {type(value).__name__}."
        )
    dtype = _dtype(value)
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise TypeError(f"{name} must be a real number, got {value!r} of dtype {dtype}.")
    if jnp.ndim(value) != 0:
        raise ValueError(
            f"{name} must be a scalar, got an array of shape {jnp.shape(value)}. "
            "Per-parameter values are not supported; use optax.masked or "
            "optax.multi_transform to give parts of the tree their own settings."
        )
    if _is_traced(value):
        return None
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {number}.")
    if abs(number) > _FLOAT32_MAX:
        raise ValueError(
            f"{name} must be finite in float32, the precision of the step's arithmetic: at "
            f"most {_FLOAT32_MAX:.7g} in magnitude, got {number}, which float32 rounds to "
            f"{'-' if number < 0 else ''}inf."
        )
    return number


def decay_rate(name: str, value: Any) -> None:
    """Checks an exponential decay rate such as b1 or b2: 0 <= value < 1.

    The dtype is checked even when the value is traced: a decay rate carried in
    bfloat16 or float16 (as ``optax.inject_hyperparams`` does for such params)
    cannot hold 0.999, which rounds to 1 and makes the bias correction 0/0.
    """
    number = _scalar(name, value)
    if _dtype(value) in _LOW_PRECISION:
        raise TypeError(
            f"{name} arrived as {_dtype(value)}, which cannot represent a "
            f"decay rate near 1 (0.999 rounds to 1.0). Keep hyperparameters in "
            f"float32, e.g. optax.inject_hyperparams(..., "
            f"hyperparam_dtype=jnp.float32)."
        )
    if number is not None and not 0.0 <= number < 1.0:
        if number < 0.0:
            why = "a negative decay flips the average's sign at every step"
        elif number == 1.0:
            why = "1 would never forget and makes the bias correction divide by zero"
        else:
            why = "above 1 the average grows without bound"
        raise ValueError(
            f"{name} must be in [0, 1), got {number}. It is the decay of a moving average; {why}."
        )


def non_negative(name: str, value: Any) -> None:
    """Checks a finite number >= 0, such as eps, eps_root or weight_decay."""
    number = _scalar(name, value)
    if number is not None and number < 0.0:
        raise ValueError(f"{name} must be >= 0, got {number}.")


def non_negative_or_schedule(name: str, value: Any) -> None:
    """Checks a number >= 0 or a schedule: a callable of the step count."""
    if not callable(value):
        non_negative(name, value)


def state_dtype(name: str, dtype: Any, *, complex_ok: bool = False) -> None:
    """Checks that a state dtype is None or a floating dtype (complex if allowed)."""
    if dtype is None:
        return
    try:
        canonical = jnp.dtype(dtype)
    except TypeError as error:
        raise TypeError(f"{name} must be a floating dtype, got {dtype!r}.") from error
    if complex_ok and jnp.issubdtype(canonical, jnp.complexfloating):
        return
    if not jnp.issubdtype(canonical, jnp.floating):
        if complex_ok:
            kinds, note = "a floating or complex dtype", ""
        else:
            kinds, note = "a real floating dtype", " It holds |g|², real also for complex params."
        raise TypeError(
            f"{name} must be {kinds} such as jnp.float32 or jnp.bfloat16, got {canonical}.{note}"
        )


def flag(name: str, value: Any) -> None:
    """Checks a Python bool option."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}.")


def inexact_params(params: Any) -> None:
    """Checks that every parameter leaf is a float or complex array."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        try:
            dtype = _dtype(leaf)
        except TypeError:
            dtype = None
        if dtype is None or not jnp.issubdtype(dtype, jnp.inexact):
            raise TypeError(
                f"params{jax.tree_util.keystr(path)} has dtype {dtype}; Adam needs "
                f"float or complex leaves. Keep integer and boolean arrays out of "
                f"the optimized tree (e.g. with optax.masked or nnx.Param filters)."
            )


def _integer(name: str, value: Any) -> int | None:
    """Returns ``value`` as a Python int, or None when it is traced.

    Integer scalar arrays are accepted, as ``optax.inject_hyperparams`` turns
    every numeric argument into one.
    """
    dtype = None if isinstance(value, (bool, np.bool_)) else getattr(value, "dtype", None)
    is_int = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if not is_int and (dtype is None or not jnp.issubdtype(dtype, jnp.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r} of type {type(value).__name__}.")
    if jnp.ndim(value) != 0:
        raise ValueError(f"{name} must be a scalar, got an array of shape {jnp.shape(value)}.")
    return None if _is_traced(value) else int(value)


def block_size(value: Any, even: bool = False) -> None:
    """Checks the block length of blockwise moments: an integer >= 1, ``even`` for 4-bit
    codes, two of which share a byte."""
    number = _integer("block_size", value)
    if number is not None and number < 1:
        raise ValueError(f"block_size must be a positive integer, got {number}.")
    if number is not None and even and number % 2:
        raise ValueError(
            f"block_size must be even for 4-bit moments (two codes share a byte), got {number}."
        )


def min_quantized_size(value: Any) -> None:
    """Checks the smallest leaf size that gets blockwise moments: an integer >= 0."""
    number = _integer("min_quantized_size", value)
    if number is not None and number < 0:
        raise ValueError(f"min_quantized_size must be >= 0, got {number}.")


def static_integer(name: str, value: Any) -> int:
    """A value that sets array shapes, as a Python int; traced values cannot."""
    if _is_traced(value):
        raise TypeError(
            f"{name} sets the state's shapes, so it must be known when tracing, but it "
            f"is traced. Under optax.inject_hyperparams, pass static_args=({name!r}, ...) "
            f"or call init outside jax.jit."
        )
    return int(value)


def seed(value: Any) -> None:
    """Checks a random seed: an integer in [0, 2**32)."""
    number = _integer("seed", value)
    if number is not None and not 0 <= number < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {number}.")


def sixteen_bit_state(mu_dtype: Any, nu_dtype: Any) -> None:
    """Checks that stochastic rounding has a 16-bit moment to round to."""
    dtypes = [jnp.dtype(d) for d in (mu_dtype, nu_dtype) if d is not None]
    if not any(d in _LOW_PRECISION for d in dtypes):
        raise ValueError(
            f"stochastic_rounding applies to 16-bit state only, got mu_dtype="
            f"{mu_dtype!r} and nu_dtype={nu_dtype!r}. Set mu_dtype and/or nu_dtype "
            f"to jnp.bfloat16 or jnp.float16, or leave stochastic_rounding False."
        )


def updates_match(updates: Any, moments: Any, is_leaf: Any = None) -> None:
    """Checks that gradients have the state's tree structure and leaf shapes.

    Shapes are static under ``jax.jit``, so this runs at trace time.
    ``is_leaf`` tells which state nodes stand for one parameter leaf.
    """
    expected = jax.tree.structure(moments, is_leaf=is_leaf)
    got = jax.tree.structure(updates)
    if got != expected:
        raise ValueError(
            f"The gradients' tree structure differs from the optimizer state's, "
            f"which was made by init from the params.\n  gradients: {got}\n"
            f"  state:     {expected}"
        )
    for (path, g), m in zip(
        jax.tree_util.tree_leaves_with_path(updates),
        jax.tree.leaves(moments, is_leaf=is_leaf),
        strict=True,
    ):
        if np.shape(g) != np.shape(m):
            raise ValueError(
                f"Gradient leaf {jax.tree_util.keystr(path)} has shape "
                f"{np.shape(g)}, but its parameter has shape {np.shape(m)}. "
                f"Adam does not broadcast."
            )


def transformation(name: str, value: Any) -> None:
    """Checks an optax transform: an object with callable ``init`` and ``update``, such as
    an ``optax.GradientTransformation``. Names the usual mistake, an uncalled factory."""
    if callable(getattr(value, "init", None)) and callable(getattr(value, "update", None)):
        return
    if callable(value):
        what = f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', value)}"
        raise TypeError(
            f"{name} must be an optax.GradientTransformation, got the function "
            f"{what.lstrip('.')} itself: call it, e.g. {name}=adam_optax.adamw(1e-3), not "
            f"{name}=adam_optax.adamw."
        )
    raise TypeError(
        f"{name} must be an optax.GradientTransformation (with init and update), got "
        f"{value!r} of type {type(value).__name__}."
    )


def mesh(name: str, value: Any) -> None:
    """Checks a device mesh: a ``jax.sharding.Mesh`` or ``AbstractMesh``."""
    if not isinstance(value, (jax.sharding.Mesh, jax.sharding.AbstractMesh)):
        raise TypeError(
            f"{name} must be a jax.sharding.Mesh (or AbstractMesh), got {value!r} of type "
            f"{type(value).__name__}; e.g. jax.make_mesh((jax.device_count(),), ('data',))."
        )


def mesh_axis(name: str, value: Any, mesh: Any) -> None:
    """Checks that ``value`` names an axis of ``mesh``."""
    if value not in mesh.axis_names:
        raise ValueError(
            f"{name}={value!r} is not an axis of the mesh, whose axes are "
            f"{tuple(mesh.axis_names)}; pass one of them as {name}."
        )
