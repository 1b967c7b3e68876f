"""The Adam family's math: one function per leaf, mapped over pytrees.

Kingma & Ba (2014), Algorithm 1, for a gradient g at step t = 1, 2, ...::

    m_t = b1 m_{t-1} + (1 - b1) g            first moment
    v_t = b2 v_{t-1} + (1 - b2) |g|^2        second moment (real, also for complex g)
    m̂_t = m_t / (1 - b1^t),  v̂_t = v_t / (1 - b2^t)
    update = m̂_t / (sqrt(v̂_t + eps_root) + eps)

The learning rate and the sign are applied by the aliases (``adam`` and
friends), as in optax. Dtype rules, stated once: the moments are stored in
their state formats (``storage``: a dtype, 16-bit with stochastic rounding, or
8- or 4-bit blocks), which the step reads and writes without knowing them; the
step's arithmetic, the hyperparameters and the bias corrections are in at
least float32 (``_compute_dtype``); the update comes back in the gradient's
dtype.

How it fits together, for the next contributor. ``_adam_family`` builds every
Adam variant: its ``update`` computes the step's scalars once (``_scalars``:
the bias corrections, the Nesterov and AMSGrad factors, eps), then maps the
per-leaf function ``_adam_leaf`` over the tree. The variants differ only in
those scalars, so a new variant that is a new per-step scalar is a new
``_Scalars`` field, computed in ``_scalars`` and used in ``_adam_step``. A
variant whose per-leaf math or state differs, as AdaMax's running max of |g|,
gets its own leaf function and ``scale_by_*`` (``_adamax_leaf``,
``scale_by_adamax``). A new way to store the moments is a storage format in
``adam_optax/storage.py``: ``storage.apply`` reads and writes it around
``_adam_step``, which never sees it (``_adamax_leaf`` stores plain arrays
only). A new argument is validated in ``checks.py``, documented in the
``Args:`` section of every public function that takes it (written out in each,
as optax does; ``tests/test_docstrings.py`` checks the names, their order and
the stated defaults against the signatures), and gets rows in
``tests/cases.py`` and in the README's table of options.

Why the scalars are arguments of the jitted leaf function, never closed over:
``_adam_leaf`` is traced once per leaf shape and dtype, and that trace is
shared by every leaf of that shape and by every step. A value it closed over
would be baked into the trace as a constant (the step count of the first
step, forever) or, when traced (the step count under ``jax.jit``, the
hyperparameters under ``optax.inject_hyperparams``), would leak a tracer out
of its trace, and a new closure every step would retrace every step. As
arguments they are inputs of one trace that every step reuses.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.core
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike, DTypeLike
from optax import ScaleByAdamState, ScaleByAmsgradState

from adam_optax import checks, storage

_INT32_MAX = jnp.iinfo(jnp.int32).max


class _Scalars(NamedTuple):
    """Per-step scalars shared by every leaf, in at least float32.

    The variants differ only here, so the per-leaf function stays one formula.
    """

    b1: jax.Array
    b2: jax.Array
    one_minus_b1: jax.Array  # 1 - b1, computed before b1 is rounded to float32
    one_minus_b2: jax.Array
    mu_scale: jax.Array  # multiplies m_t: 1/(1-b1^t), or b1/(1-b1^(t+1)) with Nesterov
    g_scale: jax.Array | None  # multiplies g with Nesterov: (1-b1)/(1-b1^t)
    nu_max_scale: jax.Array  # multiplies v_t before the AMSGrad running max
    nu_scale: jax.Array  # multiplies v_t (or the max) in the denominator
    eps: jax.Array  # added to the square root
    eps_root: jax.Array  # added under the square root


def _float(x: Any) -> jax.Array:
    """A scalar hyperparameter as an array of at least float32."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating) or x.dtype.itemsize < 4:
        x = x.astype(jnp.float32)
    return x


def _compute_dtype(*dtypes: Any) -> jnp.dtype:
    """The dtype a leaf's step is computed in: its inputs', at least float32."""
    return jnp.result_type(jnp.float32, *dtypes)


def _real(dtype: Any) -> jnp.dtype:
    return jnp.finfo(dtype).dtype


def _like(x: jax.Array, g: jax.Array) -> jax.Array:
    """``x`` in the gradient's dtype; a complex mu_dtype with real g leaves x real."""
    if jnp.iscomplexobj(x) and not jnp.iscomplexobj(g):
        x = jnp.real(x)
    return x.astype(g.dtype)


def _increment(count: jax.Array) -> jax.Array:
    """count + 1, saturating at the int32 maximum instead of overflowing."""
    return count + (count < _INT32_MAX).astype(count.dtype)


# The leaf steps are jitted so that a tree traces and lowers them once per
# leaf shape and dtype, not once per leaf. XLA inlines the calls, so the
# compiled step is the same; eager ``update`` makes one dispatch per leaf.
def _adam_step(g, mu, nu, nu_max, k: _Scalars):
    """One Adam step, elementwise. Returns (update, m_t, v_t, the AMSGrad max or None).

    The moments come as stored (plain arrays) or decoded (float32); the new
    ones go back in the compute dtype, and ``storage`` stores them.
    """
    dtype = _compute_dtype(g.dtype, mu.dtype)
    k = jax.tree.map(lambda s: s.astype(_real(dtype)), k)
    g32 = g.astype(dtype)
    mu_new = k.b1 * mu.astype(dtype) + k.one_minus_b1 * g32
    nu_new = k.b2 * nu.astype(_real(dtype)) + k.one_minus_b2 * jnp.real(g32 * jnp.conj(g32))
    nu_den = nu_new
    if nu_max is not None:
        nu_den = jnp.maximum(nu_max.astype(_real(dtype)), nu_new * k.nu_max_scale)
    m_hat = mu_new * k.mu_scale
    if k.g_scale is not None:
        m_hat = m_hat + g32 * k.g_scale
    update = m_hat / (jnp.sqrt(nu_den * k.nu_scale + k.eps_root) + k.eps)
    return _like(update, g), mu_new, nu_new, None if nu_max is None else nu_den


@jax.jit
def _adam_leaf(g, mu, nu, nu_max, k: _Scalars, key=None):
    """One Adam step for one leaf, its moments in any storage format.

    Returns (update, mu, nu, nu_max). ``key`` (None unless stochastic rounding
    is on) gives the random bits for this leaf and step.
    """

    def step(g, mu, nu, nu_max):
        return _adam_step(g, mu, nu, nu_max, k)

    # The running max is rounded up, so that its stored value never falls.
    return storage.apply(step, g, (mu, nu, nu_max), key, round_up=(False, False, True))


@jax.jit
def _adamax_leaf(g, mu, nu, k: _Scalars):
    """One AdaMax step for one leaf (Kingma & Ba §7.1). Returns (update, mu, nu)."""
    dtype = _compute_dtype(g.dtype, mu.dtype)
    k = jax.tree.map(lambda s: s.astype(_real(dtype)), k)
    g32 = g.astype(dtype)
    mu_new = k.b1 * mu.astype(dtype) + k.one_minus_b1 * g32
    nu_new = jnp.maximum(jnp.abs(g32) + k.eps, k.b2 * nu.astype(_real(dtype)))
    update = mu_new * k.mu_scale / nu_new
    return _like(update, g), mu_new.astype(mu.dtype), nu_new.astype(nu.dtype)


def _opaque_indices(n: int, count: jax.Array) -> tuple[jax.Array, ...]:
    """0, 1, ..., n - 1 as uint32 scalars whose values XLA cannot see at compile time.

    Each leaf's random bits fold in its index. XLA compiles a kernel once for
    all the leaves whose fused computations are identical, so an index folded
    in as a constant makes every leaf's kernels distinct, and compile time grow
    with the number of leaves rather than of their shapes. An optimization
    barrier does not hide a value from XLA:CPU's fusion; a loop does: the
    indices come out of a while loop whose trip count depends on the step
    count and is zero at run time (the count is never negative), so each
    leaf's kernels take the index as an argument and leaves of one shape
    share them. The body is not the identity, so that XLA cannot forward the
    inputs; were it ever entered, it exits after one trip. The loop's functions
    are module-level, so that an eager ``update`` reuses one compiled loop.

    Only on CPU and TPU, which run a while loop on the device. XLA:GPU reads a
    loop's condition back to the host, a synchronization in every step, so on
    CUDA and ROCm the indices stay constants: the same values, the kernels not
    shared.
    """
    start = (count, tuple(jnp.uint32(i) for i in range(n)))

    def opaque(start):
        return jax.lax.while_loop(_never_at_run_time, _one_trip, start)[1]

    return jax.lax.platform_dependent(start, cpu=opaque, tpu=opaque, default=lambda s: s[1])


def _never_at_run_time(carry: tuple[jax.Array, Any]) -> jax.Array:
    return carry[0] < 0


def _one_trip(carry: tuple[jax.Array, Any]) -> tuple[jax.Array, Any]:
    flag, xs = carry
    return jnp.zeros_like(flag), tuple(x * x for x in xs)


def _map_leaves(fn, n_out: int, *trees):
    """Applies ``fn`` leaf by leaf over trees of the first tree's structure.

    ``fn`` returns ``n_out`` values; the result is ``n_out`` trees. None leaves
    (empty subtrees to JAX) stay None.
    """
    treedef = jax.tree.structure(trees[0])
    columns = [
        treedef.flatten_up_to(t) if t is not None else [None] * treedef.num_leaves for t in trees
    ]
    rows = [fn(*args) for args in zip(*columns, strict=True)]
    return tuple(treedef.unflatten([row[i] for row in rows]) for i in range(n_out))


def _zeros_like(
    param: Any, dtype: Any, fill: int = 0, last: int | None = None, split: bool = False
) -> jax.Array:
    """``fill`` with the param's shape and, where it has one, its sharding.

    ``param`` may be an array, a ``jax.ShapeDtypeStruct`` or a tracer. A tracer
    carries its sharding when the mesh axes are explicit. Arrays not committed
    to a device keep the zeros uncommitted too, so that a jitted step returns
    what it was given and is not compiled a second time. ``last`` replaces the
    last axis's length, which is then not sharded (block scales) or, with
    ``split``, sharded as the param's (4-bit codes, two per byte).
    """
    if isinstance(param, jax.core.Tracer):
        if last is None:
            return jnp.full_like(param, fill, dtype) if fill else jnp.zeros_like(param, dtype)
        # Not a slice of param: explicit axes refuse to slice a sharded last axis.
        shape, sharding = (*param.shape[:-1], last), jax.typeof(param).sharding
        if sharding.mesh.empty:
            return jnp.full(shape, fill, dtype)
        return jnp.full(shape, fill, dtype, device=_resized_last(sharding, len(shape), last, split))
    shape = jnp.shape(param)
    sharding = getattr(param, "sharding", None) if getattr(param, "committed", True) else None
    if last is not None:
        shape = (*shape[:-1], last)
        if isinstance(sharding, jax.sharding.NamedSharding):
            sharding = _resized_last(sharding, len(shape), last, split)
    if fill:
        return jnp.full(shape, fill, dtype, device=sharding)
    return jnp.zeros(shape, dtype, device=sharding)


def _resized_last(
    sharding: jax.sharding.NamedSharding, ndim: int, last: int, split: bool
) -> jax.sharding.NamedSharding:
    """``sharding`` of an ``ndim``-axis array, for one whose last axis is ``last`` long:
    that axis keeps its mesh axes with ``split`` where they divide ``last``, and is
    unsharded otherwise."""
    spec = (*tuple(sharding.spec), *[None] * ndim)[:ndim]
    *leading, axes = spec
    names = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    devices = math.prod(sharding.mesh.shape[name] for name in names)
    if not (split and last % devices == 0):
        axes = None
    return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(*leading, axes))


def _init_count(params: Any) -> jax.Array:
    """A zero int32 step count, replicated on the params' mesh if they have one.

    A jitted step returns the count replicated on that mesh; starting it there
    too keeps the second call from recompiling.
    """
    for leaf in jax.tree.leaves(params):
        sharding = getattr(leaf, "sharding", None)
        if isinstance(sharding, jax.sharding.NamedSharding):
            return jnp.zeros(
                [],
                jnp.int32,
                device=jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec()),
            )
    return jnp.zeros([], jnp.int32)


def _param_dtype(param: Any) -> jnp.dtype:
    """The dtype JAX gives a param, such as a Python float or a NumPy array.

    Without x64 that is float32 for float64 input, so zeros of it raise no
    "float64 ... truncated" warning.
    """
    return jax.dtypes.canonicalize_dtype(jnp.result_type(param))


# The blockwise transforms' block_size (by code width) and min_quantized_size when given
# None: bitsandbytes's for 8 bits, Li, Chen & Zhu's (2023) block for 4.
DEFAULT_BLOCK_SIZE = {8: 256, 4: 128}
DEFAULT_MIN_QUANTIZED_SIZE = 4096


class _Blocks(NamedTuple):
    """Which leaves get blockwise 8- or 4-bit moments, their block length and code width."""

    block_size: Any  # an int; an int32 array under optax.inject_hyperparams
    min_quantized_size: Any
    bits: int = 8

    def check_unchanged(self, updates: Any, moment: Any, leaves: Any) -> None:
        """At ``update``: the layout these arguments give is the one ``init`` gave ``moment``,
        whose ``per_leaf`` view is ``leaves``.

        They set the state's shapes, so a new value cannot take effect after ``init``.
        ``optax.inject_hyperparams`` makes every number passed to the transform's factory
        a hyperparameter, which a user may change in the state between steps; the change
        must not be silently ignored. Under ``jit`` such a value is traced and cannot be
        compared, so a traced one is refused: it can only be an injected one.
        """
        for name in ("block_size", "min_quantized_size"):
            if isinstance(getattr(self, name), jax.core.Tracer):
                raise TypeError(
                    f"{name} arrived traced at update: optax.inject_hyperparams made it a "
                    f"hyperparameter, but it sets the blockwise state's layout, which init fixed, "
                    f"so a new value could not take effect. Pass optax.inject_hyperparams(..., "
                    f"static_args=('block_size', 'min_quantized_size')), or do not pass {name}."
                )
        if not isinstance(moment, storage.QuantizedTree):
            return
        block_size = int(self.block_size)
        if block_size != moment.block_size:
            raise ValueError(
                f"block_size is {block_size} at update, but init made the state with "
                f"{moment.block_size}: it sets the blockwise state's layout, so it cannot change "
                "after init. Under optax.inject_hyperparams, leave "
                "state.hyperparams['block_size'] as it is, or init a new state."
            )
        stored = jax.tree.leaves(leaves, is_leaf=storage.is_quantized)
        for (path, g), m in zip(jax.tree_util.tree_leaves_with_path(updates), stored, strict=True):
            if self.applies(g) != storage.is_quantized(m):
                raise ValueError(
                    f"min_quantized_size is {int(self.min_quantized_size)} at update, which "
                    f"would {'' if self.applies(g) else 'not '}quantize params"
                    f"{jax.tree_util.keystr(path)} ({math.prod(jnp.shape(g))} elements), but "
                    "init made the state with another value: it sets the blockwise state's "
                    "layout, so it cannot change after init. Under optax.inject_hyperparams, "
                    "leave state.hyperparams['min_quantized_size'] as it is, or init a new "
                    "state."
                )

    def applies(self, param: Any) -> bool:
        """Real leaves of at least one axis, one element and ``min_quantized_size`` elements.

        An empty leaf has no blocks to quantize; its float32 moments have no bytes either.
        """
        shape = jnp.shape(param)
        smallest = checks.static_integer("min_quantized_size", self.min_quantized_size)
        return (
            len(shape) >= 1
            and math.prod(shape) >= max(smallest, 1)
            and not jnp.issubdtype(param.dtype, jnp.complexfloating)
        )

    def zeros(self, params: Any, signed: bool, plain: Any) -> storage.QuantizedTree:
        """A zero moment: 8- or 4-bit where it ``applies``, ``plain(param)`` elsewhere.

        Codes are sharded like their param; scales like it but for the last axis,
        which they share only where the param's cut of it falls on whole blocks;
        the placeholders of the other leaves' scales like it but for the last axis
        (one axis more: see ``storage.QuantizedTree``). On a params tree with no
        leaves, such as the placeholder of ``optax.tree_utils.tree_map_params``, the
        moment is a template for trees of specs (``QuantizedTree.specs_template``).
        """

        def codes(p):
            if not self.applies(p):
                return plain(p)
            fill = storage.zero_code(signed, self.bits)
            if self.bits == 8:
                return _zeros_like(p, jnp.uint8, fill=fill)
            last = storage.codes_shape(tuple(jnp.shape(p)), self.bits)[-1]
            return _zeros_like(p, jnp.uint8, fill=fill, last=last, split=True)

        def scales(p):
            if self.applies(p):
                n = jnp.shape(p)[-1]
                shape = storage.scales_shape(tuple(jnp.shape(p)), block_size, self.bits)
                # Split as the param's last axis where each device holds whole blocks, as
                # update's block maxima come out: init and update give one layout. (An
                # odd 4-bit row has one scale more, a zero: never split.)
                whole = n % min(block_size, n) == 0 and (self.bits == 8 or n % 2 == 0)
                return _zeros_like(p, jnp.float32, last=shape[-1], split=whole)
            placeholder = _zeros_like(p, jnp.uint8, last=1)  # (*shape[:-1], 1)
            return placeholder if jnp.ndim(p) == 0 else placeholder[..., None]

        codes_tree = jax.tree.map(codes, params)  # checks min_quantized_size first
        block_size = checks.static_integer("block_size", self.block_size)
        scales_tree = jax.tree.map(scales, params)
        template = not jax.tree.leaves(params)
        return storage.QuantizedTree(
            codes_tree, scales_tree, signed, block_size, self.bits, template
        )


def _init_moments(
    params: Any,
    mu_dtype: Any,
    nu_dtype: Any,
    *,
    squares: bool = True,
    blocks: _Blocks | None = None,
) -> tuple[Any, Any]:
    """Zero moments: mu in mu_dtype (complex for complex params), nu real.

    With ``squares`` (nu holds |g|², not AdaMax's |g|), nu defaults to float32
    for float16 params: (1-b2)·g² rounds to 0 in float16 for |g| < 5.5e-3,
    and a later zero gradient would then divide m̂ by eps alone. With
    ``blocks``, mu and nu are ``storage.QuantizedTree``s whose leaves that
    ``blocks`` applies to are 8- or 4-bit: m signed, v unsigned.
    """
    checks.inexact_params(params)

    def mu_zeros(p):
        p_dtype = _param_dtype(p)
        dtype = p_dtype if mu_dtype is None else mu_dtype
        if jnp.issubdtype(p_dtype, jnp.complexfloating):
            dtype = jnp.result_type(dtype, jnp.complex64)
        return _zeros_like(p, dtype)

    def nu_zeros(p):
        dtype = nu_dtype
        if dtype is None:
            dtype = _real(_param_dtype(p))
            if squares and dtype == jnp.float16:
                dtype = jnp.float32
        return _zeros_like(p, dtype)

    if blocks is not None:
        return blocks.zeros(params, True, mu_zeros), blocks.zeros(params, False, nu_zeros)
    return jax.tree.map(mu_zeros, params), jax.tree.map(nu_zeros, params)


def _check_decays_and_eps(b1, b2, eps, eps_root=0.0) -> None:
    checks.decay_rate("b1", b1)
    checks.decay_rate("b2", b2)
    checks.non_negative("eps", eps)
    checks.non_negative("eps_root", eps_root)


def _adam_family(
    b1,
    b2,
    eps,
    eps_root,
    mu_dtype,
    nu_dtype,
    *,
    nesterov,
    max_convention,
    eps_hat,
    correct_mu=True,
    stochastic_rounding=False,
    seed=0,
    blocks: _Blocks | None = None,
) -> optax.GradientTransformation:
    """Builds every Adam variant; they differ only in their per-step scalars.

    ``max_convention`` is None (no AMSGrad), "raw" (the max of v_t, then the
    bias correction: PyTorch and Keras) or "corrected" (the max of v̂_t: optax's
    ``amsgrad``) or "uncorrected" (the max of v_t, never corrected: optax's
    ``amsgrad(bias_correction_nu=False)``). The storage of the moments is
    ``mu_dtype``/``nu_dtype``, or 8- or 4-bit ``blocks``, with ``stochastic_rounding``
    for 16-bit and blockwise ones (random bits from ``seed``, the step count and
    the leaf's index).
    """
    _check_decays_and_eps(b1, b2, eps, eps_root)
    checks.state_dtype("mu_dtype", mu_dtype, complex_ok=True)
    checks.state_dtype("nu_dtype", nu_dtype)
    for name, value in (
        ("nesterov", nesterov),
        ("eps_hat", eps_hat),
        ("bias_correction_mu", correct_mu),
        ("stochastic_rounding", stochastic_rounding),
    ):
        checks.flag(name, value)
    checks.seed(seed)
    if stochastic_rounding and blocks is None:
        checks.sixteen_bit_state(mu_dtype, nu_dtype)

    def init_fn(params):
        mu, nu = _init_moments(params, mu_dtype, nu_dtype, blocks=blocks)
        count = _init_count(params)
        if max_convention is None:
            return ScaleByAdamState(count=count, mu=mu, nu=nu)
        return ScaleByAmsgradState(
            count=count, mu=mu, nu=nu, nu_max=jax.tree.map(jnp.zeros_like, nu)
        )

    def update_fn(updates, state, params=None):
        del params
        # Leaf by leaf: 8- and 4-bit moments as QuantizedArray, the others as stored.
        mu, nu = storage.per_leaf(state.mu), storage.per_leaf(state.nu)
        nu_max = storage.per_leaf(getattr(state, "nu_max", None))
        checks.updates_match(updates, mu, is_leaf=storage.is_quantized)
        if blocks is not None:
            blocks.check_unchanged(updates, state.mu, mu)
        count = _increment(state.count)
        k = _scalars(
            count=count,
            b1=b1,
            b2=b2,
            eps=eps,
            eps_root=eps_root,
            nesterov=nesterov,
            max_convention=max_convention,
            eps_hat=eps_hat,
            correct_mu=correct_mu,
        )
        keys = None
        if stochastic_rounding:
            treedef = jax.tree.structure(updates)
            step_key = storage.fold_in(seed, count)
            indices = _opaque_indices(treedef.num_leaves, count)
            keys = treedef.unflatten([storage.fold_in(step_key, i) for i in indices])
        updates, mu, nu, nu_max = _map_leaves(
            lambda g, m, v, vmax, key: _adam_leaf(g, m, v, vmax, k, key),
            4,
            updates,
            mu,
            nu,
            nu_max,
            keys,
        )
        mu, nu = storage.stored_like(state.mu, mu), storage.stored_like(state.nu, nu)
        nu_max = storage.stored_like(getattr(state, "nu_max", None), nu_max)
        if max_convention is None:
            return updates, ScaleByAdamState(count=count, mu=mu, nu=nu)
        return updates, ScaleByAmsgradState(count=count, mu=mu, nu=nu, nu_max=nu_max)

    return optax.GradientTransformation(init_fn, update_fn)


def _scalars(
    *,
    count: jax.Array,
    b1: jax.typing.ArrayLike,
    b2: jax.typing.ArrayLike,
    eps: jax.typing.ArrayLike,
    eps_root: jax.typing.ArrayLike,
    nesterov: bool,
    max_convention: str | None,
    eps_hat: bool,
    correct_mu: bool,
) -> _Scalars:
    """The per-step scalars of ``_adam_leaf`` for step ``count`` (>= 1).

    The arguments are ``_adam_family``'s; the hyperparameters may be traced.
    """
    # 1 - b2 first, in the caller's precision: 1 - float32(0.999) is off by 1.3e-5.
    one_minus_b1, one_minus_b2 = _float(1 - b1), _float(1 - b2)
    b1, b2, eps, eps_root = map(_float, (b1, b2, eps, eps_root))
    one = jnp.ones_like(b2)
    # A float exponent: an integer one that is concrete (eager) makes jnp.power
    # compile an integer_pow for every new step.
    t = count.astype(b2.dtype)
    bias_correction_mu = 1 - b1**t  # m̂_t = m_t / bias_correction_mu
    bias_correction_nu = 1 - b2**t  # v̂_t = v_t / bias_correction_nu
    inv_bias_correction_nu = 1 / bias_correction_nu
    if not correct_mu:
        mu_scale, g_scale = one, None
    elif nesterov:
        mu_scale, g_scale = b1 / (1 - b1 ** (t + 1)), one_minus_b1 / bias_correction_mu
    else:
        mu_scale, g_scale = 1 / bias_correction_mu, None
    nu_max_scale, nu_scale = {
        None: (one, inv_bias_correction_nu),
        "raw": (one, inv_bias_correction_nu),
        "corrected": (inv_bias_correction_nu, one),
        "uncorrected": (one, one),
    }[max_convention]
    if eps_hat:
        eps = eps * jnp.sqrt(inv_bias_correction_nu)
    return _Scalars(
        b1, b2, one_minus_b1, one_minus_b2, mu_scale, g_scale, nu_max_scale, nu_scale, eps, eps_root
    )


def scale_by_adam(
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
) -> optax.GradientTransformation:
    r"""Rescales updates by Adam (Kingma & Ba, 2014, Algorithm 1).

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) |g_t|^2, \\
        \hat m_t = m_t / (1-\beta_1^t), \quad \hat v_t = v_t / (1-\beta_2^t), \quad
        u_t = \hat m_t / (\sqrt{\hat v_t + \epsilon_{root}} + \epsilon).

    The result is the direction u_t; ``adam`` multiplies it by ``-learning_rate``.
    A drop-in for ``optax.scale_by_adam``: the same positional arguments and
    state, plus the keyword-only options below. Complex gradients get a
    complex m and a real v of |g|².

    Reference: Kingma & Ba, "Adam: A Method for Stochastic Optimization",
    ICLR 2015, https://arxiv.org/abs/1412.6980.

    Args:
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
            the bias-corrected v̂_t, use ``scale_by_amsgrad``. Default: ``False``.
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
        A ``GradientTransformation`` with state ``ScaleByAdamState(count, mu,
        nu)``, or ``ScaleByAmsgradState(count, mu, nu, nu_max)`` with amsgrad.
        ``count`` is int32 and saturates at its maximum.

    Raises:
        ValueError, TypeError: an argument out of its range or of the wrong type.

    Example:
        >>> import jax.numpy as jnp, numpy as np, adam_optax
        >>> tx = adam_optax.scale_by_adam()
        >>> state = tx.init({"w": jnp.ones(3)})
        >>> updates, state = tx.update({"w": jnp.array([0.5, -2.0, 0.0])}, state)
        >>> print(np.asarray(updates["w"]).round(4))  # the first step's direction is g / |g|
        [ 1. -1.  0.]
    """
    checks.flag("amsgrad", amsgrad)
    return _adam_family(
        b1,
        b2,
        eps,
        eps_root,
        mu_dtype,
        nu_dtype,
        nesterov=nesterov,
        max_convention="raw" if amsgrad else None,
        eps_hat=eps_hat,
        stochastic_rounding=stochastic_rounding,
        seed=seed,
    )


def scale_by_adam8bit(
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
) -> optax.GradientTransformation:
    r"""``scale_by_adam`` with 8-bit blockwise moments (Dettmers et al. 2021).

    The math is ``scale_by_adam``'s, computed in float32; only the storage
    differs. For every real leaf with at least ``min_quantized_size`` elements
    (and at least one axis), m and v are stored as uint8 codes of the leaf's
    shape plus one float32 scale per block: 2 + 8/``block_size`` bytes per
    parameter for both, instead of 8. Each step reads them back, updates them
    in float32, computes the update from the float32 values, and stores them
    again:

    .. math::
        s_B = \max_{i \in B} |x_i|, \quad
        \mathrm{code}_i = \mathrm{argmin}_c |Q[c] - x_i / s_B|, \quad
        \tilde x_i = Q[\mathrm{code}_i]\, s_B,

    with Q the dynamic code map, signed for m and unsigned for v
    (``adam_optax.storage.code_map``): exact at each block's absmax and (for
    m) at 0, with relative steps of 0.9/64 (m) and 0.9/128 (v) of the absmax
    in the top decade, halving in each decade below, down to 1e-6 and 1e-7.
    v's map has no 0 (its smallest value is 1e-8 of the absmax), so a zero-
    gradient step never divides a stored m by eps alone.

    s_B is the exact absmax of the block's new values, as in bitsandbytes and
    torchao, so each block's largest element is stored exactly and no
    rounding error builds up in the scale. With ``stochastic_rounding`` (the
    default) the argmin is replaced by a random choice between the two code
    values around x_i / s_B, unbiased in value. A non-finite new value (from a
    NaN or inf gradient element) is left out of s_B and stored as m = 0 and
    v = s_B (its block's largest v, so its next updates are small); the
    update of that element is non-finite this step, as float32 Adam's, and no
    other element is affected.

    Blocks are ``block_size`` consecutive elements along the last axis, so a
    leaf sharded on its leading axes keeps each block on one device. When
    ``block_size`` does not divide the last axis, each row's last block is
    shorter (the codes are never padded); a last axis shorter than
    ``block_size`` is one block per row. Smaller leaves, scalars and complex
    leaves keep float32 (complex64) moments. The defaults of ``block_size``
    and ``min_quantized_size`` are bitsandbytes's.

    Reference: Dettmers, Lewis, Shleifer & Zettlemoyer, "8-bit Optimizers via
    Block-wise Quantization", ICLR 2022, https://arxiv.org/abs/2110.02861.

    Args:
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
            the bias-corrected v̂_t, use ``scale_by_amsgrad``. The running max is stored like
            v, but rounded up (against block scales rounded up to powers of two), so that it
            never falls. Default: ``False``.
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
        A ``GradientTransformation`` with state ``ScaleByAdamState(count, mu,
        nu)`` (``ScaleByAmsgradState`` with amsgrad) whose moments are
        ``adam_optax.QuantizedTree`` nodes: a tree of codes (or float32
        moments, for the leaves left unquantized) and a tree of block scales;
        ``adam_optax.dequantize`` reads them back.

    Raises:
        ValueError, TypeError: an argument out of its range or of the wrong type.

    Example:
        >>> import jax.numpy as jnp, numpy as np, adam_optax
        >>> tx = adam_optax.scale_by_adam8bit(min_quantized_size=4)
        >>> state = tx.init({"w": jnp.ones((2, 4))})
        >>> print(state.mu.codes["w"].dtype, state.mu.scales["w"].shape)
        uint8 (2, 1)
        >>> updates, state = tx.update({"w": jnp.full((2, 4), 0.5)}, state)
        >>> print(np.asarray(updates["w"][0]).round(4))  # the first step's direction is g / |g|
        [1. 1. 1. 1.]
    """
    return _blockwise(
        8,
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
    )


def _blockwise(
    bits: int,
    b1,
    b2,
    eps,
    eps_root,
    *,
    nesterov,
    amsgrad,
    eps_hat,
    block_size,
    min_quantized_size,
    stochastic_rounding,
    seed,
) -> optax.GradientTransformation:
    """``scale_by_adam8bit`` and ``scale_by_adam4bit``: their arguments checked, defaults
    filled in for ``bits``."""
    checks.flag("amsgrad", amsgrad)
    block_size = DEFAULT_BLOCK_SIZE[bits] if block_size is None else block_size
    min_quantized_size = (
        DEFAULT_MIN_QUANTIZED_SIZE if min_quantized_size is None else min_quantized_size
    )
    checks.block_size(block_size, even=bits == 4)
    checks.min_quantized_size(min_quantized_size)
    return _adam_family(
        b1,
        b2,
        eps,
        eps_root,
        jnp.float32,
        jnp.float32,
        nesterov=nesterov,
        max_convention="raw" if amsgrad else None,
        eps_hat=eps_hat,
        stochastic_rounding=stochastic_rounding,
        seed=seed,
        blocks=_Blocks(block_size, min_quantized_size, bits),
    )


def scale_by_adam4bit(
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
) -> optax.GradientTransformation:
    r"""``scale_by_adam`` with 4-bit blockwise moments (Li, Chen & Zhu 2023).

    ``scale_by_adam8bit`` with 4-bit codes, two per byte, and blocks of 128:
    for every real leaf with at least ``min_quantized_size`` elements and an
    even last axis, m and v take 1 + 8/``block_size`` bytes per parameter for
    both (1.0625 with the default block), instead of 8. The math, the exact
    block statistics, stochastic rounding and the handling of non-finite values
    are ``scale_by_adam8bit``'s:

    .. math::
        s_B = \max_{i \in B} |x_i|, \quad
        \mathrm{code}_i = \mathrm{argmin}_c |Q[c] - x_i / s_B|, \quad
        \tilde x_i = Q[\mathrm{code}_i]\, s_B,

    with Q the 4-bit dynamic maps (``adam_optax.storage.code_map(signed, 4)``):
    m's is signed, 0, ±0.01, ±0.055, ±0.1, ±0.325, ±0.55, ±0.775, ±1; v's has no
    zero, 16 values from 1e-4 to 1 (1e-4, 1e-3, then 2, 4 and 8 equal steps in the
    decades up to 0.01, 0.1 and 1). v's smallest value is above zero so that a v
    too small for its block reads back as 1e-4 of the block's largest, never as
    0: with a 0, the next step of that element would divide its m by eps alone
    (the paper's "zero-point problem"). ``benchmarks/four_bit_maps.py``
    compares these maps and blocks with the paper's alternatives (a linear v map,
    rank-1 normalization), trained to the quality benchmark's horizon.

    Leaves with an odd last axis, fewer than ``min_quantized_size`` elements,
    scalars and complex leaves keep float32 (complex64) moments.

    Reference: Li, Chen & Zhu, "Memory Efficient Optimizers with 4-bit States",
    NeurIPS 2023, https://arxiv.org/abs/2309.01507.

    Args:
        b1: decay rate of the first-moment average m_t, in [0, 1). Default: ``0.9``.
        b2: decay rate of the second-moment average v_t, in [0, 1). Default: ``0.999``.
        eps: added to the denominator outside the square root, sqrt(v̂_t + eps_root) + eps, for
            numerical stability; >= 0. Default: ``1e-8``.
        eps_root: added to v̂_t inside the square root, >= 0. Default: ``0.0``.
        nesterov: use Nesterov momentum (NAdam), as ``scale_by_adam8bit``. Default: ``False``.
        amsgrad: use AMSGrad in PyTorch's convention, as ``scale_by_adam8bit``; the running
            max is stored in 4 bits, rounded up so that it never falls. Default: ``False``.
        eps_hat: add eps to sqrt(v_t) before the bias correction, as ``scale_by_adam8bit``.
            Default: ``False``.
        block_size: elements per block along a leaf's last axis, each block with its own
            float32 scale (its absmax); a positive even integer. None means 128. It sets the
            state's layout, as in ``scale_by_adam8bit``. Default: ``None``.
        min_quantized_size: leaves with fewer elements keep float32 moments; an integer >= 0.
            None means 4096. It sets the state's layout, as block_size does. Default: ``None``.
        stochastic_rounding: store each code by rounding to one of the two neighbouring code
            values at random, unbiased in value, instead of to the nearest; with 4-bit codes a
            decaying v moves far less than half a code gap per step, so round-to-nearest
            holds it still. Default: ``True``.
        seed: an integer in [0, 2**32); the random bits of stochastic rounding derive from it,
            the step count and the leaf's index. Default: ``0``.

    Returns:
        A ``GradientTransformation`` with state ``ScaleByAdamState(count, mu,
        nu)`` (``ScaleByAmsgradState`` with amsgrad) whose moments are
        ``adam_optax.QuantizedTree`` nodes with ``bits=4``; ``adam_optax.dequantize``
        reads them back.

    Raises:
        ValueError, TypeError: an argument out of its range or of the wrong type.

    Example:
        >>> import jax.numpy as jnp, adam_optax
        >>> tx = adam_optax.scale_by_adam4bit(min_quantized_size=4)
        >>> state = tx.init({"w": jnp.ones((2, 8))})
        >>> print(state.mu.codes["w"].shape, state.mu.scales["w"].shape)  # 2 codes per byte
        (2, 4) (2, 1)
    """
    return _blockwise(
        4,
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
    )


def scale_by_amsgrad(
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.999,
    eps: ArrayLike = 1e-8,
    eps_root: ArrayLike = 0.0,
    mu_dtype: DTypeLike | None = None,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
    *,
    nu_dtype: DTypeLike | None = None,
) -> optax.GradientTransformation:
    r"""Rescales updates by AMSGrad in optax's convention (Reddi et al., 2018).

    Adam's m_t and v_t, with the running max taken of the bias-corrected
    second moment:

    .. math::
        \hat v^{max}_t = \max(\hat v^{max}_{t-1}, \hat v_t), \quad
        u_t = \hat m_t / (\sqrt{\hat v^{max}_t + \epsilon_{root}} + \epsilon).

    ``bias_correction_mu=False`` uses m_t for m̂_t, and
    ``bias_correction_nu=False`` takes the max of the raw v_t and never
    corrects it, as in the original paper. A drop-in for
    ``optax.scale_by_amsgrad``. For PyTorch's and Keras's convention (the max
    of the raw v_t, then the bias correction) use
    ``scale_by_adam(amsgrad=True)``.

    Reference: Reddi, Kale & Kumar, "On the Convergence of Adam and Beyond",
    ICLR 2018, https://openreview.net/forum?id=ryQu7f-RZ.

    Args:
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
        A ``GradientTransformation`` with state ``ScaleByAmsgradState(count, mu,
        nu, nu_max)``.

    Raises:
        ValueError, TypeError: an argument out of its range or of the wrong type.

    Example:
        >>> import jax.numpy as jnp, numpy as np, adam_optax
        >>> tx = adam_optax.scale_by_amsgrad()
        >>> state = tx.init({"w": jnp.ones(2)})
        >>> updates, state = tx.update({"w": jnp.array([0.5, -2.0])}, state)
        >>> print(np.asarray(updates["w"]).round(4))
        [ 1. -1.]
        >>> print(np.asarray(state.nu_max["w"]).round(2))  # v̂_1 = g²
        [0.25 4.  ]
    """
    checks.flag("bias_correction_nu", bias_correction_nu)
    return _adam_family(
        b1,
        b2,
        eps,
        eps_root,
        mu_dtype,
        nu_dtype,
        nesterov=False,
        max_convention="corrected" if bias_correction_nu else "uncorrected",
        eps_hat=False,
        correct_mu=bias_correction_mu,
    )


def scale_by_adamax(
    b1: ArrayLike = 0.9, b2: ArrayLike = 0.999, eps: ArrayLike = 1e-8
) -> optax.GradientTransformation:
    r"""Rescales updates by AdaMax (Kingma & Ba, 2014, §7.1).

    Adam with the infinity norm in place of the second moment:

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        u_t = \max(|g_t| + \epsilon, \beta_2 u_{t-1}), \quad
        \text{update} = m_t / ((1-\beta_1^t)\, u_t).

    eps sits inside the max as in optax, so a zero gradient at the first step
    gives 0 rather than 0/0. No bias correction is needed for u_t. A drop-in
    for ``optax.scale_by_adamax``.

    Reference: Kingma & Ba, "Adam: A Method for Stochastic Optimization",
    ICLR 2015, §7.1, https://arxiv.org/abs/1412.6980.

    Args:
        b1: decay rate of the first-moment average m_t, in [0, 1). Default: ``0.9``.
        b2: decay rate of the infinity norm u_t, in [0, 1). Default: ``0.999``.
        eps: added to |g_t| inside the max, >= 0; a zero first gradient then gives 0, not 0/0.
            Default: ``1e-8``.

    Returns:
        A ``GradientTransformation`` with state ``ScaleByAdamState(count, mu,
        nu)``, nu holding u_t.

    Raises:
        ValueError, TypeError: an argument out of its range or of the wrong type.

    Example:
        >>> import jax.numpy as jnp, numpy as np, adam_optax
        >>> tx = adam_optax.scale_by_adamax()
        >>> state = tx.init({"w": jnp.ones(2)})
        >>> updates, state = tx.update({"w": jnp.array([0.5, -2.0])}, state)
        >>> print(np.asarray(updates["w"]).round(4))
        [ 1. -1.]
        >>> print(np.asarray(state.nu["w"]).round(4))  # u_1 = |g| + eps
        [0.5 2. ]
    """
    _check_decays_and_eps(b1, b2, eps)

    def init_fn(params):
        mu, nu = _init_moments(params, None, None, squares=False)
        return ScaleByAdamState(count=_init_count(params), mu=mu, nu=nu)

    def update_fn(updates, state, params=None):
        del params
        checks.updates_match(updates, state.mu)
        count = _increment(state.count)
        k = _scalars(
            count=count,
            b1=b1,
            b2=b2,
            eps=eps,
            eps_root=0.0,
            nesterov=False,
            max_convention=None,
            eps_hat=False,
            correct_mu=True,
        )
        updates, mu, nu = _map_leaves(
            lambda g, m, v: _adamax_leaf(g, m, v, k), 3, updates, state.mu, state.nu
        )
        return updates, ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)
