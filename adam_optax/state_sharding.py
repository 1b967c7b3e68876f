"""ZeRO stage 1 for any optax transform: the optimizer state sharded over the data axis.

In data-parallel training every device holds the params, the gradients and the optimizer
state. With mixed precision and Adam, per parameter that is 2 bytes of bfloat16 params,
2 of bfloat16 gradients and 12 of float32 state (master params, ``mu``, ``nu``): for Ψ
params, (2 + 2 + 12)·Ψ bytes on each device. ZeRO stage 1 (Rajbhandari et al. 2020,
*ZeRO: Memory Optimizations Toward Training Trillion Parameter Models*, DeepSpeed) keeps
the params and gradients whole but gives each of the N data-parallel devices 1/N of the
state, (2 + 2 + 12/N)·Ψ bytes per device: 4× less as N grows. In float32 without master
params it is (4 + 4 + 8)·Ψ → (4 + 4 + 8/N)·Ψ. Each device computes its slice of the new
state and of the updates; only the updates are all-gathered, back to the params' sharding.

`shard_state` applies one rule, MaxText's ``shard_optimizer_over_data``, to every state
leaf, so it works on any pytree state: optax's, ours, and adam_optax's 8- and 4-bit state. A
state leaf that mirrors a params leaf (its path ends with the param's path and it has the
param's shape, as ``mu['w']`` mirrors ``params['w']``) starts from that param's spec; the
rule then adds the data axis to its first free dimension that the axis size divides
(`zero1_spec`). Scalars (the step count) are replicated.

The layout is computed from the params' specs and the state's shapes only, so it is the
same whether ``init`` runs eagerly, under ``jit`` or under ``eval_shape``. Where JAX does
not say how a params leaf is laid out (a traced array on a mesh with Auto axes, or with
no mesh), ``init`` raises unless ``param_shardings`` says it: it never guesses.

An 8- or 4-bit moment (a ``QuantizedTree``: a tree of uint8 ``codes`` shaped like the params,
half the last axis with 4 bits, and a tree of float32 ``scales``, one entry per block of
``block_size`` along the last axis) is
laid out leaf by leaf, each quantized leaf as a ``QuantizedArray``, cut in whole blocks:
codes and scales on the same leading dimension when the axis size divides one; else on
the last axis when every block is whole (its length divides the row) and the axis size
divides the blocks per row, each device then holding whole blocks and exactly their
scales; else it is left whole and, if large, named in the warning (tests/test_state_sharding.py).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.core
import numpy as np
import optax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from adam_optax import checks, storage

# Leaves of at least this many elements that the rule cannot shard are named in a warning.
LARGE_LEAF_SIZE = 2**16


def zero1_spec(
    shape: Sequence[int], spec: PartitionSpec, axis: str, axis_size: int
) -> PartitionSpec:
    """The rule: `spec` with `axis` added to the first dimension that `axis_size` divides.

    Only a dimension that `spec` leaves unsharded qualifies. Unchanged if `spec` already
    uses `axis` or no dimension qualifies; scalars stay replicated. The result has one
    entry per dimension of `shape`.

    Args:
        shape: the state leaf's shape.
        spec: the spec it starts from, its param's; shorter than `shape` means the
            remaining dimensions are unsharded.
        axis: the mesh axis to add.
        axis_size: the number of devices along `axis`.

    Returns:
        The `PartitionSpec` of the leaf, with one entry per dimension.

    Example:
        >>> zero1_spec((6, 16), PartitionSpec(), "data", 8)
        P(None, 'data')
        >>> zero1_spec((16, 16), PartitionSpec("model"), "data", 8)
        P('model', 'data')
    """
    entries = _entries(spec, len(shape))
    if axis not in _axes_of(spec):
        for i, size in enumerate(shape):
            if entries[i] is None and size > 0 and size % axis_size == 0:
                entries[i] = axis
                break
    return PartitionSpec(*entries)


def _shape(leaf: Any) -> tuple[int, ...]:
    """A leaf's shape: an array's, a `jax.ShapeDtypeStruct`'s, or NumPy's for a number."""
    return tuple(leaf.shape) if hasattr(leaf, "shape") else tuple(np.shape(leaf))


def _entries(spec: PartitionSpec, ndim: int) -> list[Any]:
    return list(spec) + [None] * (ndim - len(spec))


def _axes_of(spec: PartitionSpec) -> set[str]:
    return {name for entry in spec for name in (entry if isinstance(entry, tuple) else [entry])}


def _size_of(entry: Any, mesh: Mesh) -> int:
    names = entry if isinstance(entry, tuple) else (entry,)
    return math.prod(mesh.shape[name] for name in names)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ShardedState:
    """The state of a `shard_state` transform: the wrapped state and its layout.

    The layout is static pytree metadata, so that a jitted `update` knows it. It is
    computed from the params' specs and the state's shapes only, so the state's pytree
    structure is the same whether `init` ran eagerly, under `jit` or under `eval_shape`.

    Attributes:
        inner: the wrapped transform's state, each leaf laid out by `state_specs`.
        state_specs: one `PartitionSpec` per leaf of `inner`, in flattening order, with one
            entry per dimension: the params' spec with the data axis added (see
            `zero1_spec`).
        update_specs: one `PartitionSpec` per params leaf, with one entry per dimension:
            the layout the updates are returned in, the params'.

    Example:
        >>> import jax, numpy as np, adam_optax
        >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
        >>> state = adam_optax.shard_state(adam_optax.adam(1e-3), mesh).init(
        ...     {"w": jax.numpy.zeros((4, 2))}
        ... )
        >>> state.state_specs[1], state.update_specs
        (P('data', None), (P(None, None),))
    """

    inner: optax.OptState
    state_specs: tuple[PartitionSpec, ...] = dataclasses.field(metadata={"static": True})
    update_specs: tuple[PartitionSpec, ...] = dataclasses.field(metadata={"static": True})


def _known_spec(leaf: Any) -> PartitionSpec | None:
    """The leaf's partition spec where JAX says it, else None.

    Known: a concrete array's `NamedSharding`, or its one device (replicated, as are NumPy
    arrays and Python numbers); a `jax.ShapeDtypeStruct`'s `NamedSharding`; a traced
    array's type on a mesh whose axes are all explicit. Unknown: a traced array on a mesh
    with Auto axes (its type does not say how it is laid out) or on no mesh.
    """
    if isinstance(leaf, jax.core.Tracer):
        sharding = jax.typeof(leaf).sharding
        mesh = sharding.mesh
        if mesh.empty or any(t != AxisType.Explicit for t in mesh.axis_types):
            return None
        return sharding.spec
    if not hasattr(leaf, "sharding"):  # NumPy arrays, Python numbers
        return PartitionSpec()
    sharding = leaf.sharding
    if isinstance(sharding, NamedSharding):
        return sharding.spec
    if isinstance(sharding, jax.sharding.SingleDeviceSharding):
        return PartitionSpec()
    if sharding is not None and isinstance(leaf, jax.Array) and sharding.is_fully_replicated:
        return PartitionSpec()
    return None


def _full(spec: PartitionSpec, ndim: int, what: str, mesh: Mesh) -> PartitionSpec:
    """`spec` with one entry per dimension, checked against the leaf's rank and the mesh."""
    if len(spec) > ndim:
        raise ValueError(f"shard_state: {what} has {ndim} dimensions but the spec {spec}.")
    unknown = _axes_of(spec) - {None} - set(mesh.axis_names)
    if unknown:
        raise ValueError(
            f"shard_state: {what} is sharded over {sorted(unknown)}, which are not axes of "
            f"the mesh, whose axes are {tuple(mesh.axis_names)}."
        )
    return PartitionSpec(*_entries(spec, ndim))


_UNKNOWN_LAYOUT = (
    "JAX does not say how a traced array is laid out on a mesh with Auto axes (or with "
    "none), and shard_state does not guess. Call init outside jit on the params as they "
    "are laid out, use a mesh with explicit axes (jax.make_mesh(..., axis_types="
    "(jax.sharding.AxisType.Explicit,) * n) under jax.set_mesh), or pass "
    "shard_state(..., param_shardings=...): a pytree like the params of NamedSharding "
    "or PartitionSpec."
)


def _given_specs(param_shardings: Any, mesh: Mesh) -> list[PartitionSpec]:
    """The specs of `param_shardings`, a pytree of NamedSharding or PartitionSpec."""

    def is_spec(x: Any) -> bool:
        return isinstance(x, (NamedSharding, PartitionSpec))

    specs = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(param_shardings, is_leaf=is_spec)[0]:
        if not is_spec(leaf):
            raise TypeError(
                f"shard_state: param_shardings{jax.tree_util.keystr(path)} is {leaf!r}; "
                "pass a NamedSharding or a PartitionSpec for every params leaf."
            )
        if isinstance(leaf, NamedSharding) and leaf.mesh.axis_names != mesh.axis_names:
            raise ValueError(
                f"shard_state: param_shardings{jax.tree_util.keystr(path)} is on a mesh with "
                f"axes {tuple(leaf.mesh.axis_names)}, but the mesh has axes "
                f"{tuple(mesh.axis_names)}; use shardings on the same mesh."
            )
        specs.append(leaf.spec if isinstance(leaf, NamedSharding) else leaf)
    return specs


def _param_specs(
    params: Any, given: list[PartitionSpec] | None, mesh: Mesh
) -> list[tuple[Any, tuple[int, ...], PartitionSpec]]:
    """(path, shape, full spec) of every params leaf: from `given`, else from JAX."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    if given is not None and len(given) != len(flat):
        raise ValueError(
            f"shard_state: param_shardings has {len(given)} leaves but the params have "
            f"{len(flat)}; pass one NamedSharding or PartitionSpec per params leaf."
        )
    out = []
    for i, (path, leaf) in enumerate(flat):
        what = f"params{jax.tree_util.keystr(path)} {_shape(leaf)}"
        ndim = len(_shape(leaf))
        known = _known_spec(leaf)
        if given is not None:
            spec = _full(given[i], ndim, f"param_shardings for {what}", mesh)
            told = isinstance(getattr(leaf, "sharding", None), NamedSharding) or (
                isinstance(leaf, jax.core.Tracer) and known is not None
            )
            if told and known is not None and _full(known, ndim, what, mesh) != spec:
                raise ValueError(
                    f"shard_state: {what} is laid out as {known}, but param_shardings says "
                    f"{given[i]}; make them agree."
                )
        elif known is None:
            raise ValueError(f"shard_state: cannot tell how {what} is laid out. {_UNKNOWN_LAYOUT}")
        else:
            spec = _full(known, ndim, what, mesh)
        out.append((path, _shape(leaf), spec))
    return out


def _mirrored_spec(
    path: tuple[Any, ...], shape: tuple[int, ...], params: dict[tuple[Any, ...], Any]
) -> PartitionSpec | None:
    """The spec of the params leaf this state leaf mirrors: the longest params path that
    ends its path, with the same shape; None if there is none. `params` maps each params
    path to its (shape, spec)."""
    for start in range(len(path) + 1):
        found = params.get(tuple(path[start:]))
        if found is not None and found[0] == shape:
            return found[1]
    return None


def _quantized_specs(
    q: Any, spec: PartitionSpec, mesh: Mesh, axis: str
) -> tuple[PartitionSpec, PartitionSpec]:
    """(codes spec, scales spec) of a QuantizedArray whose moment is laid out by `spec`,
    with `axis` added where it cuts whole blocks only (see the module docstring)."""
    shape, ndim = tuple(q.shape), len(q.shape)
    n = shape[-1]
    block = min(q.block_size, n)
    blocks = -(-n // block)

    def aligned(count: int) -> bool:  # each of `count` devices gets whole blocks
        return n % block == 0 and blocks % count == 0

    codes = _entries(spec, ndim)
    last = codes[-1]
    if last is not None and storage.codes_shape(shape, q.bits)[-1] % _size_of(last, mesh):
        codes[-1] = last = None  # 4-bit codes, half as many, that the param's axes cannot cut
    scales = [*codes[:-1], last if last is None or aligned(_size_of(last, mesh)) else None]
    if axis not in _axes_of(spec):
        axis_size = mesh.shape[axis]
        leading = [i for i in range(ndim - 1) if codes[i] is None and shape[i] > 0]
        divided = [i for i in leading if shape[i] % axis_size == 0]
        if divided:
            codes[divided[0]] = scales[divided[0]] = axis
        elif last is None and aligned(axis_size):
            codes[-1] = scales[-1] = axis
    return PartitionSpec(*codes), PartitionSpec(*scales)


def _state_layout(
    inner: Any, params: list[tuple[Any, tuple[int, ...], Any]], mesh: Mesh, axis: str
) -> tuple[tuple[PartitionSpec, ...], list[str]]:
    """One spec per leaf of `inner`, and the large leaves the rule leaves whole."""
    specs, unsharded = [], []
    by_path = {tuple(p_path): (p_shape, p_spec) for p_path, p_shape, p_spec in params}

    def layout(path: tuple[Any, ...], node: Any) -> list[PartitionSpec]:
        """The specs of `node`'s leaves, in flattening order: an array or a QuantizedArray."""
        quantized = storage.is_quantized(node)
        shape = tuple(node.shape) if quantized else _shape(node)
        what = f"state{jax.tree_util.keystr(path)} {shape}"
        base = _mirrored_spec(path, shape, by_path)
        if base is None and not shape:
            base = PartitionSpec()
        if base is None:
            known = _known_spec(node.codes if quantized else node)
            if known is None:
                raise ValueError(
                    f"shard_state: cannot tell how {what} is laid out: it mirrors no params "
                    f"leaf (no params path ends its path with its shape). {_UNKNOWN_LAYOUT}"
                )
            base = _full(known, len(shape), what, mesh)
        out = []
        if quantized:
            codes_spec, scales_spec = _quantized_specs(node, base, mesh, axis)
            for leaf in jax.tree.leaves(node):  # by identity: whatever the node's field order
                if leaf is node.codes:
                    out.append(codes_spec)
                elif leaf is node.scales:
                    out.append(scales_spec)
                else:
                    out.append(PartitionSpec(*[None] * len(_shape(leaf))))
            spec = codes_spec
            what += f" ({node.bits}-bit, blocks of {min(node.block_size, shape[-1])})"
        else:
            spec = zero1_spec(shape, base, axis, mesh.shape[axis])
            out.append(spec)
        if axis not in _axes_of(spec) and math.prod(shape) >= LARGE_LEAF_SIZE:
            unsharded.append(what)
        return out

    def is_node(x: Any) -> bool:
        return isinstance(x, (storage.QuantizedArray, storage.QuantizedTree))

    for path, node in jax.tree_util.tree_flatten_with_path(inner, is_leaf=is_node)[0]:
        if not isinstance(node, storage.QuantizedTree):
            specs += layout(tuple(path), node)
            continue
        # Laid out leaf by leaf (QuantizedArray views), then listed in the node's own
        # order (all codes, then all scales), matched by identity. The scales
        # placeholders of unquantized leaves (a byte per row) are replicated.
        by_array = {}
        view = jax.tree_util.tree_flatten_with_path(node.per_leaf(), is_leaf=storage.is_quantized)
        for leaf_path, leaf in view[0]:
            leaf_specs = layout((*path, *leaf_path), leaf)
            by_array.update(zip(map(id, jax.tree.leaves(leaf)), leaf_specs, strict=True))
        specs += [by_array.get(id(x), PartitionSpec()) for x in jax.tree.leaves(node)]
    return tuple(specs), unsharded


def _place(tree: Any, specs: tuple[PartitionSpec, ...], mesh: Mesh) -> Any:
    """`tree` with its leaves laid out by `specs`: a constraint under jit, a transfer outside."""
    leaves, treedef = jax.tree.flatten(tree)
    if len(leaves) != len(specs):
        raise ValueError(
            f"shard_state: the state or updates have {len(leaves)} leaves, but init laid out "
            f"{len(specs)}; pass update the state that this transform's init returned."
        )
    shardings = [NamedSharding(mesh, spec) for spec in specs]
    if not any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
        return jax.tree.unflatten(treedef, jax.device_put(leaves, shardings))
    explicit = all(t == AxisType.Explicit for t in mesh.axis_types)
    place = jax.sharding.reshard if explicit else jax.lax.with_sharding_constraint
    placed = [place(x, s) for x, s in zip(leaves, shardings, strict=True)]
    return jax.tree.unflatten(treedef, placed)


def shard_state(
    tx: optax.GradientTransformation,
    mesh: Mesh,
    axis: str = "data",
    *,
    param_shardings: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """`tx` with its state sharded over the mesh axis `axis` (ZeRO stage 1).

    Every state leaf that mirrors a params leaf starts from that param's spec, and gets
    `axis` added to its first dimension that the axis size divides and that is not
    already sharded (see `zero1_spec`); scalars (the step count) are replicated, and 8- and
    4-bit leaves are cut in whole blocks (see this module's docstring). `update` constrains the
    new state to the same layout, so XLA computes only each device's slice of the moments,
    and the updates to the params' sharding, so only the updates are all-gathered. One
    warning names the leaves of `LARGE_LEAF_SIZE` elements or more left whole.

    The layout comes from the params' specs: `param_shardings` if given, else where JAX
    says them: concrete arrays (eager `init`), `jax.ShapeDtypeStruct(..., sharding=...)`
    and traced arrays on a mesh with explicit axes (`jit` or `eval_shape`). Under `jit`
    or `eval_shape` on a mesh with Auto axes, JAX does not say them, and `init` raises a
    `ValueError` unless `param_shardings` is given. Whichever way `init` is called, the
    state (a `ShardedState` holding `tx`'s state in `inner`) has the same layout and the
    same pytree structure.

    Per device, Adam's state goes from 8·Ψ to 8·Ψ/N bytes in float32, for Ψ params on N
    devices along `axis`; see this module's docstring and the README's "Scale" section.

    Args:
        tx: any optax transform, such as `adam_optax.adamw(1e-3)`.
        mesh: the device mesh the params live on; it must have an axis named `axis`.
        axis: the name of the data-parallel axis of `mesh` to shard the state over.
            Default: ``'data'``.
        param_shardings: the params' layout, a pytree like the params with one
            `NamedSharding` (on `mesh`) or `PartitionSpec` per leaf; needed to call `init`
            under `jit` or `eval_shape` on a mesh with Auto axes. If the params say their
            layout too, the two must agree. None reads it from the params.
            Default: ``None``.

    Extra keyword arguments of `update` (such as the ``value`` that
    `optax.contrib.reduce_on_plateau` needs) are passed on to `tx.update`, as `optax.chain`
    passes them: to a `GradientTransformationExtraArgs` whole, to a plain
    `GradientTransformation` not at all.

    Returns:
        A `GradientTransformationExtraArgs` whose state is a `ShardedState`.

    Raises:
        TypeError: `tx` is not an optax transform (such as the uncalled factory
            `adam_optax.adamw`), or `mesh` is not a `jax.sharding.Mesh` or `AbstractMesh`;
            at `init`, a leaf of `param_shardings` is neither a `NamedSharding` nor a
            `PartitionSpec`.
        ValueError: `mesh` has no axis named `axis`; at `init`, the layout of a params
            leaf cannot be read and `param_shardings` is not given, or it disagrees with
            the params, or names an axis the mesh lacks.

    Example:
        >>> import jax, numpy as np, adam_optax
        >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
        >>> tx = adam_optax.shard_state(adam_optax.adam(1e-3), mesh)
        >>> state = tx.init({"w": jax.numpy.zeros((4, 2))})
        >>> state.inner[0].mu["w"].sharding.spec
        P('data', None)
        >>> specs = {"w": jax.sharding.PartitionSpec()}  # for jax.jit(tx.init) on Auto axes
        >>> tx = adam_optax.shard_state(adam_optax.adam(1e-3), mesh, param_shardings=specs)
        >>> jax.jit(tx.init)({"w": jax.numpy.zeros((4, 2))}).state_specs[1]
        P('data', None)
    """
    checks.transformation("tx", tx)
    checks.mesh("mesh", mesh)
    checks.mesh_axis("axis", axis, mesh)
    given = None if param_shardings is None else _given_specs(param_shardings, mesh)
    tx = optax.with_extra_args_support(tx)

    def init_fn(params: optax.Params) -> ShardedState:
        param_specs = _param_specs(params, given, mesh)
        inner = tx.init(params)
        state_specs, unsharded = _state_layout(inner, param_specs, mesh, axis)
        if unsharded:
            warnings.warn(
                f"shard_state: no unsharded dimension of these leaves is divisible by the "
                f"{axis!r} axis size {mesh.shape[axis]} (in whole blocks, for quantized leaves), "
                "so every device along it holds them whole: " + ", ".join(unsharded),
                stacklevel=2,
            )
        update_specs = tuple(spec for _, _, spec in param_specs)
        return ShardedState(_place(inner, state_specs, mesh), state_specs, update_specs)

    def update_fn(
        updates: optax.Updates,
        state: ShardedState,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, ShardedState]:
        updates, inner = tx.update(updates, state.inner, params, **extra_args)
        inner = _place(inner, state.state_specs, mesh)
        updates = _place(updates, state.update_specs, mesh)
        return updates, ShardedState(inner, state.state_specs, state.update_specs)

    # optax types a state as chex's ArrayTree (arrays, iterables, mappings), which leaves out
    # registered dataclass pytrees such as ShardedState; optax itself accepts any pytree.
    return optax.GradientTransformationExtraArgs(init_fn, update_fn)  # pyright: ignore[reportArgumentType]
