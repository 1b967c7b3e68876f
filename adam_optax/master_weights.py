r"""Master weights for bfloat16/float16 params, kept as a small integer correction.

A bfloat16 param has 8 significant bits: an update below half its ulp (about 0.4%
of the weight) rounds away, and late in training most updates are that small.
The usual fix keeps a float32 copy of every weight (4 more bytes per param).
``master_weights`` keeps only the rounding error, as an int8 or int16 *correction*
``c`` per element, so that param and correction together hold the master weight to
``correction_bits`` (B) more significant bits than the param's dtype: 16 bits for
bfloat16 with B = 8, the whole float32 with B = 16 (FlashOptim, Hu et al. 2026).

**The representation.** For a finite param ``p`` let ``up(p)`` and ``down(p)`` be
the distances to the next representable value of its dtype above and below (they
differ only at a power of two, where the spacing below is half the spacing above,
and at zero both are the smallest subnormal). The master weight is

.. math::
    w = p + c \cdot 2^{-B} \cdot \begin{cases} up(p) & c \ge 0 \\ down(p) & c < 0
    \end{cases}, \qquad c \in [-2^{B-1}, 2^{B-1} - 1].

Rounding ``w`` to nearest gives ``p`` with ``w - p`` in ``[-down(p)/2, up(p)/2]``,
so ``c`` covers it; measuring below ``p`` in ``down(p)`` (not in ``p``'s own ulp)
keeps every bit at a binade edge (``w`` just below 2^e, ``p`` = 2^e). The one value
outside the range, ``c = 2^{B-1}`` (``w`` exactly half an ulp above ``p``, where
ties-to-even went down), is written as the next value up with ``c = -2^{B-1}``:
the same ``w``. So the masters are exactly the numbers with 8 + B significant
bits (bfloat16), rounded to nearest-even; with B = 16 that is every float32
(bfloat16 is float32's top half), rebuilt bit-exactly, subnormals and sign
changes included. For float16 (11 bits) the master has 19 or 27 bits, the latter
read back as its nearest float32. (Backends that flush float32 subnormals to
zero, as XLA:CPU does, flush masters below 2^-126 ≈ 1.2e-38 too, as they would
float32 weights.)

**One step.** ``update`` rebuilds ``w`` in float32, passes it to ``tx`` as the
params (weight decay sees the master), and with ``tx``'s update ``u`` forms
``w' = w + u`` in float32. It rounds ``w'`` to nearest in the param dtype, ``p'``,
and returns ``p' - p`` as the update, so that ``optax.apply_updates`` lands on
``p'``. The new correction is ``w'``'s rounding error against the value
``apply_updates`` lands on, ``\hat p = \mathrm{cast}(p + \mathrm{update})``,
rounded to nearest-even in steps of ``2^{-B}`` ulp: the master keeps
``|w' - \tilde w'| \le 2^{-B-1}`` ulp of ``\hat p``, a relative error of at most
:math:`2^{-(8+B)}` per step for bfloat16.

**The updates' dtype.** By default (``update_dtype=None``) each update has its
gradient's dtype, as optax's own transforms keep it, so that the wrappers which
assume it (``optax.apply_if_finite``'s skipped step, ``optax.MultiSteps``'s
accumulator) compose. With bfloat16 gradients the update is ``p' - p`` rounded to
bfloat16. It is exact, and ``apply_updates`` lands on ``p'`` bit for bit, whenever
``p' - p`` is a bfloat16: every step that keeps the weight within a factor of two
of itself, since the difference of two bfloat16 numbers within a factor of two of
each other is a bfloat16 (Sterbenz's lemma), and most larger ones. Where it is not
(a sign change, a weight that falls to a fraction of itself or grows past twice
itself), the update is the master's own step ``w' - p`` rounded to bfloat16, ``U``;
``apply_updates`` lands on ``\hat p``, the param nearest ``p + U``, and the
correction is taken against ``\hat p``. Its range covers every value that rounds
to ``\hat p``, ``p + U`` among them, so the master loses at most
``|w' - (p + U)|``, half a bfloat16 unit of that one step's update (plus the
correction's own rounding). The steps before are never lost: they live in ``w``,
which ``\hat p`` and its correction carry on.

``update_dtype=jnp.float32`` returns float32 updates instead, the exact emulation
of float32 master weights: ``p' - p`` is exact in float32 when ``p'`` and ``p``
are within a factor 2^15 of each other, so ``apply_updates`` (which adds in
float32, then casts back) lands on ``p'`` every step. (For a weight that in one
step falls to less than 2^-15 of its magnitude, it lands at most 2^-24 of the old
weight away, and the correction is again taken there.) The price is that optax
wrappers that keep the gradients' dtype see two dtypes: ``apply_if_finite``
around it fails under ``jit``, and ``MultiSteps`` around it needs optax 0.2.8.

Reference: Hu et al., "FlashOptim: Optimizers for Memory Efficient Training",
arXiv 2602.23349, 2026 (bfloat16 weights plus an int8 correction).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from adam_optax import checks
from adam_optax.transforms import _zeros_like

_CORRECTED = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
_CORRECTION_DTYPE = {8: jnp.dtype(jnp.int8), 16: jnp.dtype(jnp.int16)}


class MasterWeightsState(NamedTuple):
    """The state of ``master_weights``.

    ``correction`` is shaped like the params: for a bfloat16 or float16 leaf an
    int8 (``correction_bits=8``) or int16 array of the param's shape and sharding;
    for any other leaf ``optax.MaskedNode()``, an empty subtree that holds no bytes.
    ``inner`` is the wrapped transform's state, as it would be without the wrapper.
    """

    correction: Any  # per leaf: int8/int16 like the param, or optax.MaskedNode()
    inner: optax.OptState


def _is_corrected(param: Any) -> bool:
    return jnp.dtype(jnp.result_type(param)) in _CORRECTED


def _is_marker(x: Any) -> bool:
    return isinstance(x, optax.MaskedNode)


def _next_up(x: jax.Array) -> jax.Array:
    """The next representable value above each finite ``x`` (16-bit floats)."""
    bits = lax.bitcast_convert_type(x, jnp.uint16).astype(jnp.int32)
    negative = bits >= 0x8000
    up = jnp.where(negative, bits - 1, bits + 1)
    up = jnp.where(bits == 0x8000, 1, up)  # -0 -> the smallest positive subnormal
    return lax.bitcast_convert_type(up.astype(jnp.uint16), x.dtype)


# The arithmetic below holds 16-bit values in float32 (exactly: float32 holds every
# bfloat16 and float16). For bfloat16, rounding and stepping to a neighbour are integer
# operations on float32's bits, which XLA fuses into each consumer and recomputes there,
# instead of keeping arrays of intermediate 16-bit values across the step.


def _on_grid(x: jax.Array, dtype: Any) -> jax.Array:
    """float32 ``x`` rounded to nearest-even in ``dtype``, held in float32."""
    dtype = jnp.dtype(dtype)
    if dtype == jnp.float32:
        return x
    if dtype != jnp.bfloat16:
        return x.astype(dtype).astype(jnp.float32)
    bits = lax.bitcast_convert_type(x, jnp.uint32)
    rounded = (bits + (0x7FFF + ((bits >> 16) & 1))) & jnp.uint32(0xFFFF0000)
    return jnp.where(jnp.isnan(x), x, lax.bitcast_convert_type(rounded, jnp.float32))


def _next_up32(f: jax.Array, dtype: Any) -> jax.Array:
    """The next value of ``dtype`` above each finite ``f`` (a ``dtype`` value in float32)."""
    if jnp.dtype(dtype) != jnp.bfloat16:
        return _next_up(f.astype(dtype)).astype(jnp.float32)
    bits = lax.bitcast_convert_type(f, jnp.uint32)
    step = jnp.uint32(0x10000)  # one bfloat16 unit in the last place
    up = jnp.where(bits >= jnp.uint32(0x80000000), bits - step, bits + step)
    up = jnp.where(bits == jnp.uint32(0x80000000), step, up)  # -0 -> the smallest subnormal
    return lax.bitcast_convert_type(up, jnp.float32)


def _unit(f: jax.Array, upward: jax.Array, dtype: Any) -> jax.Array:
    """The spacing from ``f`` (a ``dtype`` value in float32) to its neighbour above
    (``upward``) or below."""
    above = _next_up32(f, dtype) - f
    below = f + _next_up32(-f, dtype)  # f - next_down(f)
    return jnp.where(upward, above, below)


def _reciprocal(unit: jax.Array) -> jax.Array:
    """1 / ``unit`` for a float32 power of two, exactly, from its exponent bits; NaN for
    0 (a flushed subnormal), inf or NaN. A multiply, not a divide, so that XLA may
    recompute it in each fusion that needs it instead of keeping an array of it."""
    exponent = (lax.bitcast_convert_type(unit, jnp.uint32) >> 23) & 0xFF
    inverse = (jnp.uint32(254) - exponent) << 23
    usable = (exponent > 0) & (exponent < 254)
    return jnp.where(usable, lax.bitcast_convert_type(inverse, jnp.float32), jnp.nan)


def _scaled_error(target: jax.Array, f: jax.Array, bits: int, dtype: Any) -> jax.Array:
    """(target - f) in units of 2^-bits of f's spacing on that side, rounded to nearest-even.

    ``f`` is a ``dtype`` value in float32. Both the difference and the scaling by powers
    of two are exact in float32. Non-finite values give 0.
    """
    r = target - f
    s = jnp.round(r * _reciprocal(_unit(f, r >= 0, dtype)) * 2.0**bits)
    return jnp.where(jnp.isfinite(s), s, 0.0)


@functools.partial(jax.jit, static_argnums=2)
def _decode(p: jax.Array, c: jax.Array, bits: int) -> jax.Array:
    """The float32 master weight of param ``p`` and its correction ``c``."""
    f = p.astype(jnp.float32)
    delta = c.astype(jnp.float32) * (_unit(f, c >= 0, p.dtype) * 2.0**-bits)
    return jnp.where(c == 0, f, f + delta)


def _round32(target: jax.Array, dtype: Any, bits: int) -> jax.Array:
    """The param nearest ``target`` whose correction fits in ``bits`` (see the module doc),
    in float32."""
    f = _on_grid(target, dtype)
    tie_went_down = _scaled_error(target, f, bits, dtype) >= 2.0 ** (bits - 1)
    return jnp.where(tie_went_down, _next_up32(f, dtype), f)


def _round(target: jax.Array, dtype: Any, bits: int) -> jax.Array:
    return _round32(target, dtype, bits).astype(dtype)


def _correction32(target: jax.Array, f: jax.Array, bits: int, dtype: Any) -> jax.Array:
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    error = _scaled_error(target, f, bits, dtype)
    return jnp.clip(error, lo, hi).astype(_CORRECTION_DTYPE[bits])


def _correction(target: jax.Array, p: jax.Array, bits: int) -> jax.Array:
    return _correction32(target, p.astype(jnp.float32), bits, p.dtype)


# The leaf functions are jitted so that eager ``update`` makes one dispatch per leaf
# (and compiles once per shape), not one per operation; under jit XLA inlines them.
@functools.partial(jax.jit, static_argnums=4)
def _step(
    p: jax.Array, c: jax.Array, master: jax.Array, u: jax.Array, update_dtype: Any
) -> tuple[jax.Array, jax.Array]:
    """One leaf: the update that takes ``p`` to the rounded master, and the new correction.

    The update is ``p' - p`` in ``update_dtype`` where that holds it, else the master's
    own step ``w' - p`` rounded to it; the correction is measured from the value
    ``optax.apply_updates`` lands on.
    """
    bits = 8 * c.dtype.itemsize
    f = p.astype(jnp.float32)
    target = master + u.astype(jnp.float32)
    difference = _round32(target, p.dtype, bits) - f
    update = _on_grid(difference, update_dtype)
    # Where p' - p is no such number, step towards the master itself: apply_updates then
    # lands within half a unit of the update from it, which the correction covers.
    update = jnp.where(update == difference, update, _on_grid(target - f, update_dtype))
    # What optax.apply_updates lands on: p + update, exact or rounded once in float32, then
    # rounded to p's dtype. Computed in float32 because XLA may keep a bfloat16 sum's
    # excess precision inside a fusion (xla_allow_excess_precision); the output cannot.
    update = update.astype(update_dtype)
    landed = (f + update.astype(jnp.float32)).astype(p.dtype)
    return update, _correction(target, landed, bits)


def _path(path: Any) -> str:
    return jax.tree_util.keystr(path)


def _check_leaf(path: Any, p: Any, c: Any) -> None:
    if _is_marker(p):  # a leaf masked out by optax.masked or optax.partition around us
        return
    dtype = jnp.dtype(jnp.result_type(p))
    if _is_marker(c) and dtype in _CORRECTED:
        raise ValueError(
            f"master_weights: params leaf {_path(path)} is {dtype}, but at init it had a "
            "dtype that master_weights leaves alone (such as float32), so the state holds "
            "no correction for it. Params must keep their dtypes from init to update; call "
            "init again after casting them."
        )
    if not _is_marker(c) and dtype not in _CORRECTED:
        raise ValueError(
            f"master_weights: params leaf {_path(path)} is {dtype}, but at init it was "
            f"bfloat16 or float16 (the state holds its {c.dtype} correction). Params must "
            "keep their dtypes from init to update; call init again after casting them."
        )


def master_weights(
    tx: optax.GradientTransformation, *, correction_bits: int = 8, update_dtype: Any = None
) -> optax.GradientTransformationExtraArgs:
    r"""Wraps ``tx`` so that bfloat16/float16 params train as if their weights were float32.

    For each bfloat16 or float16 params leaf the state holds an integer correction
    (int8 for ``correction_bits=8``, int16 for 16) with which the param gives the
    master weight to ``correction_bits`` more significant bits than its dtype has.
    ``update`` rebuilds the masters in float32, passes them to ``tx`` as the params
    (with the gradients of those leaves in float32), adds ``tx``'s update to the
    master in float32, rounds the sum to nearest in the param dtype, and returns
    the difference to the params in the gradients' dtype, keeping as the new
    correction the rounding error against the value ``optax.apply_updates(params,
    updates)`` lands on. That value is the rounded master bit for bit whenever the
    difference is representable (every step that keeps a weight within a factor of
    two of itself); otherwise the update is the master's step rounded to the
    gradients' dtype, and the master loses at most half a unit of that update.
    Other leaves (float32, integers) pass to ``tx`` and back untouched, with no state.

    .. math::
        w_t = w_{t-1} + u_t(g_t, w_{t-1}), \qquad \theta_t = \mathrm{round}(w_t), \qquad
        c_t = \mathrm{round}\big((w_t - \theta_t) \, 2^{B} / \mathrm{ulp}(\theta_t)\big)

    with the ulp taken on the side of ``θ_t`` where ``w_t`` lies; see the module
    docstring for the exact representation, its edges, and the error bound
    (relative :math:`2^{-(8+B)}` per step for bfloat16; with ``B = 16`` the float32
    master is rebuilt exactly). bfloat16 params, bfloat16 gradients, 8-bit moments
    (``adamw8bit``) and an int8 correction hold 7 bytes per parameter across steps.

    Reference: Hu et al., "FlashOptim: Optimizers for Memory Efficient Training",
    arXiv 2602.23349, 2026.

    Args:
        tx: any optax transform, e.g. ``adam_optax.adamw8bit(...)``. It sees float32
            params and float32 gradients for the corrected leaves, so its state is
            the one it would have for float32 params.
        correction_bits: 8 (int8 corrections, a 16-bit master for bfloat16) or 16
            (int16; the float32 master exactly). Default: ``8``.
        update_dtype: the dtype of the returned updates of the corrected leaves.
            ``None`` (the default) gives each the dtype of its gradient, as optax's
            transforms do, so that ``optax.apply_if_finite`` and ``optax.MultiSteps``
            compose with bfloat16 gradients. ``jnp.float32`` gives float32 updates,
            with which ``apply_updates`` lands on the rounded master every step (a
            bit-exact emulation of float32 master weights), but which those wrappers
            do not expect (see the module docstring). Default: ``None``.

    Returns:
        An optax ``GradientTransformationExtraArgs`` whose state is a
        ``MasterWeightsState(correction, inner)``. ``update`` needs the params.
        Extra keyword arguments of ``update`` go to ``tx``. Every optax wrapper
        composes around and inside it (``apply_if_finite``, ``MultiSteps``,
        ``masked``, ``partition``, ``inject_hyperparams``, ``conditionally_mask``,
        ``chain``), with the default ``update_dtype``. With
        ``update_dtype=jnp.float32`` and bfloat16 gradients,
        ``optax.MultiSteps(master_weights(...))`` needs optax 0.2.8 or newer (0.2.7's
        casts its accumulator to the updates' dtype, which then changes after the
        first step) and ``optax.apply_if_finite`` around it fails under ``jit``
        (``lax.cond``'s branches differ in dtype): optax's wrappers assume updates in
        the gradients' dtype.

    Raises:
        ValueError: ``correction_bits`` other than 8 or 16; ``update`` without the
            params; a params leaf whose dtype changed between ``init`` and ``update``.
        TypeError: ``tx`` that is not an optax transform; ``update_dtype`` that is not
            a real floating dtype; ``correction_bits`` given as an array, as
            ``optax.inject_hyperparams`` passes it unless it is in ``static_args``.

    Example:
        >>> import jax.numpy as jnp, numpy as np, optax, adam_optax
        >>> tx = adam_optax.master_weights(optax.sgd(1e-3), correction_bits=16)
        >>> params = {"w": jnp.ones(2, jnp.bfloat16)}
        >>> state = tx.init(params)
        >>> for _ in range(10):  # each step is 1/4 of a bfloat16 ulp below 1.0
        ...     updates, state = tx.update({"w": jnp.ones(2)}, state, params)
        ...     params = optax.apply_updates(params, updates)
        >>> print(params["w"], np.round(adam_optax.master_params(params, state)["w"], 6))
        [0.988281 0.988281] [0.99 0.99]
        >>> print(state.correction["w"].dtype)  # plain bfloat16 params would stay at 1
        int16
    """
    checks.transformation("tx", tx)
    if isinstance(correction_bits, jax.Array):
        raise TypeError(
            f"correction_bits must be a Python int, 8 or 16, got an array ({correction_bits!r}): "
            "it sets the correction's dtype, which init fixes. Under optax.inject_hyperparams, "
            "pass static_args=('correction_bits',)."
        )
    if isinstance(correction_bits, bool) or correction_bits not in _CORRECTION_DTYPE:
        raise ValueError(
            f"correction_bits must be 8 or 16, got {correction_bits!r}. 8 stores an int8 "
            "correction (a 16-bit master for bfloat16 params), 16 an int16 one (the float32 "
            "master exactly)."
        )
    checks.state_dtype("update_dtype", update_dtype)
    fixed_dtype = None if update_dtype is None else jnp.dtype(update_dtype)
    inner_tx = optax.with_extra_args_support(tx)
    correction_dtype = _CORRECTION_DTYPE[correction_bits]

    def init_fn(params: optax.Params) -> MasterWeightsState:
        def correction(p):
            if _is_corrected(p):
                return _zeros_like(p, correction_dtype)
            return optax.MaskedNode()

        def master(p):
            if not _is_corrected(p):
                return p
            if isinstance(p, jax.ShapeDtypeStruct):
                return jax.ShapeDtypeStruct(p.shape, jnp.float32, sharding=p.sharding)
            return p.astype(jnp.float32)

        corrections = jax.tree.map(correction, params)
        return MasterWeightsState(corrections, inner_tx.init(jax.tree.map(master, params)))

    def update_fn(updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError(
                "master_weights: update needs the params, the bfloat16/float16 values the "
                "corrections belong to: call tx.update(grads, state, params)."
            )
        jax.tree_util.tree_map_with_path(_check_leaf, params, state.correction, is_leaf=_is_marker)

        def master(p, c):
            return p if _is_marker(c) else _decode(p, c, 8 * c.dtype.itemsize)

        def grad(g, c):
            return g if _is_marker(c) or g is None else g.astype(jnp.float32)

        masters = jax.tree.map(master, params, state.correction, is_leaf=_is_marker)
        grads = jax.tree.map(grad, updates, state.correction, is_leaf=_is_marker)
        inner_updates, inner_state = inner_tx.update(grads, state.inner, masters, **extra_args)

        treedef = jax.tree.structure(params)
        rows = [
            (u, c) if _is_marker(c) else _step(p, c, w, u, fixed_dtype or jnp.result_type(g))
            for p, c, w, u, g in zip(
                treedef.flatten_up_to(params),
                treedef.flatten_up_to(state.correction),
                treedef.flatten_up_to(masters),
                treedef.flatten_up_to(inner_updates),
                treedef.flatten_up_to(updates),
                strict=True,
            )
        ]
        new_updates = treedef.unflatten([row[0] for row in rows])
        corrections = treedef.unflatten([row[1] for row in rows])
        return new_updates, MasterWeightsState(corrections, inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def master_params(params: optax.Params, state: optax.OptState) -> optax.Params:
    """The float32 master weights of ``params``, for evaluation and export.

    Args:
        params: the params as trained (bfloat16/float16 leaves and others).
        state: the state of ``master_weights``, or any state that holds exactly one
            ``MasterWeightsState`` (e.g. inside ``optax.MultiSteps`` or
            ``optax.apply_if_finite``), as ``optax.tree.get`` finds it.

    Returns:
        ``params`` with each corrected leaf replaced by its float32 master weight;
        other leaves as they are.

    Raises:
        ValueError: no ``MasterWeightsState`` in ``state``, or params whose dtypes
            differ from those at ``init``.

    Example:
        >>> import jax.numpy as jnp, optax, adam_optax
        >>> tx = adam_optax.master_weights(optax.sgd(1.0), correction_bits=16)
        >>> params = {"w": jnp.array([1.0], jnp.bfloat16), "b": jnp.zeros(1)}
        >>> state = tx.init(params)
        >>> updates, state = tx.update({"w": jnp.array([-1e-4]), "b": jnp.ones(1)}, state, params)
        >>> params = optax.apply_updates(params, updates)
        >>> masters = adam_optax.master_params(params, state)
        >>> print(params["w"], masters["w"], masters["w"].dtype, masters["b"])
        [1] [1.0001] float32 [-1.]
    """
    if isinstance(state, MasterWeightsState):
        correction = state.correction
    else:
        found = optax.tree.get(state, "correction", None)
        if found is None:
            raise ValueError(
                "master_params: state holds no MasterWeightsState; pass the state of "
                "adam_optax.master_weights(...)."
            )
        correction = found
    jax.tree_util.tree_map_with_path(_check_leaf, params, correction, is_leaf=_is_marker)
    return jax.tree.map(
        lambda p, c: p if _is_marker(c) else _decode(p, c, 8 * c.dtype.itemsize),
        params,
        correction,
        is_leaf=_is_marker,
    )
