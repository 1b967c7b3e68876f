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
leaf, so it works on any pytree state: optax's, ours, and adam_optax's 8-bit state, whose
``QuantizedArray`` nodes are two arrays to it, ``codes`` (laid out like the moment) and
``scales``, both cut along their first dimension (tests/test_state_sharding.py).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.core
import optax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from adam_optax import checks

# Leaves of at least this many elements that the rule cannot shard are named in a warning.
LARGE_LEAF_SIZE = 2**16


def zero1_spec(
    shape: Sequence[int], spec: PartitionSpec, axis: str, axis_size: int
) -> PartitionSpec:
    """The rule: `spec` with `axis` added to the first dimension of `shape` that
    `axis_size` divides and that `spec` leaves unsharded. Unchanged if `spec` already uses
    `axis` or no dimension qualifies; scalars stay replicated.

    >>> zero1_spec((6, 16), PartitionSpec(), "data", 8)
    P(None, 'data')
    >>> zero1_spec((16, 16), PartitionSpec("model"), "data", 8)
    P('model', 'data')
    """
    entries = list(spec) + [None] * (len(shape) - len(spec))
    if axis not in _axes_of(spec):
        for i, size in enumerate(shape):
            if entries[i] is None and size > 0 and size % axis_size == 0:
                entries[i] = axis
                break
    return PartitionSpec(*entries)


def _axes_of(spec: PartitionSpec) -> set[str]:
    return {name for entry in spec for name in (entry if isinstance(entry, tuple) else [entry])}


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ShardedState:
    """The state of a `shard_state` transform: the wrapped state and its layout.

    Attributes:
        inner: the wrapped transform's state, each leaf laid out by `state_specs`.
        state_specs: one `PartitionSpec` per leaf of `inner`, in flattening order: the
            params' spec with the data axis added (see `zero1_spec`). Static pytree
            metadata, so that a jitted `update` knows it.
        update_specs: one `PartitionSpec` per params leaf, the layout the updates are
            returned in. Static too.

    Example:
        >>> import jax, numpy as np, adam_optax
        >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
        >>> state = adam_optax.shard_state(adam_optax.adam(1e-3), mesh).init(
        ...     {"w": jax.numpy.zeros((4, 2))}
        ... )
        >>> state.state_specs[1], state.update_specs
        (P('data', None), (P(),))
    """

    inner: optax.OptState
    state_specs: tuple[PartitionSpec, ...] = dataclasses.field(metadata={"static": True})
    update_specs: tuple[PartitionSpec, ...] = dataclasses.field(metadata={"static": True})


def _spec_of(leaf: Any) -> PartitionSpec:
    """The leaf's partition spec where JAX knows it: the NamedSharding of an array or a
    `jax.ShapeDtypeStruct`, or a traced array's type on a mesh with explicit axes.
    Otherwise (Auto axes under jit, one device, NumPy) replicated."""
    if isinstance(leaf, jax.core.Tracer):
        sharding = jax.typeof(leaf).sharding
    else:
        sharding = getattr(leaf, "sharding", None)
    return sharding.spec if isinstance(sharding, NamedSharding) else PartitionSpec()


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
    tx: optax.GradientTransformation, mesh: Mesh, axis: str = "data"
) -> optax.GradientTransformation:
    """`tx` with its state sharded over the mesh axis `axis` (ZeRO stage 1).

    Every state leaf gets `axis` added to its first dimension that the axis size divides
    and that is not already sharded (see `zero1_spec`); other leaves keep their params'
    sharding, and scalars (the step count) are replicated. `update` constrains the new
    state to the same layout, so XLA computes only each device's slice of the moments, and
    the updates to the params' sharding, so only the updates are all-gathered. One warning
    names the leaves of `LARGE_LEAF_SIZE` elements or more that no dimension lets it shard.

    The layout is read from the params given to `init`: call it outside `jit`, or under
    `jit` on a mesh with explicit axes (`jax.make_mesh`'s default), since with Auto axes
    JAX does not tell a traced array's sharding (params would be taken as replicated).
    The state is a `ShardedState` holding `tx`'s state in `inner`.

    Per device, Adam's state goes from 8·Ψ to 8·Ψ/N bytes in float32, for Ψ params on N
    devices along `axis`; see this module's docstring and the README's "Scale" section.

    Args:
        tx: any optax transform, such as `adam_optax.adamw(1e-3)`.
        mesh: the device mesh the params live on; it must have an axis named `axis`.
        axis: the name of the data-parallel axis of `mesh` to shard the state over.
            Default: ``'data'``.

    Returns:
        A `GradientTransformation` whose state is a `ShardedState`.

    Raises:
        TypeError: `tx` is not an optax transform (such as the uncalled factory
            `adam_optax.adamw`), or `mesh` is not a `jax.sharding.Mesh` or `AbstractMesh`.
        ValueError: `mesh` has no axis named `axis`.

    Example:
        >>> import jax, numpy as np, adam_optax
        >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
        >>> tx = adam_optax.shard_state(adam_optax.adam(1e-3), mesh)
        >>> state = tx.init({"w": jax.numpy.zeros((4, 2))})
        >>> state.inner[0].mu["w"].sharding.spec
        P('data', None)
    """
    checks.transformation("tx", tx)
    checks.mesh("mesh", mesh)
    checks.mesh_axis("axis", axis, mesh)
    axis_size = mesh.shape[axis]

    def init_fn(params: optax.Params) -> ShardedState:
        inner = tx.init(params)
        paths_and_leaves = jax.tree_util.tree_flatten_with_path(inner)[0]
        state_specs, unsharded = [], []
        for path, leaf in paths_and_leaves:
            spec = zero1_spec(jax.numpy.shape(leaf), _spec_of(leaf), axis, axis_size)
            state_specs.append(spec)
            shape = jax.numpy.shape(leaf)
            if axis not in _axes_of(spec) and math.prod(shape) >= LARGE_LEAF_SIZE:
                unsharded.append(f"state{jax.tree_util.keystr(path)} {shape}")
        if unsharded:
            warnings.warn(
                f"shard_state: no unsharded dimension of these leaves is divisible by the "
                f"{axis!r} axis size {axis_size}, so every device along it holds them whole: "
                + ", ".join(unsharded),
                stacklevel=2,
            )
        update_specs = tuple(_spec_of(p) for p in jax.tree.leaves(params))
        state_specs = tuple(state_specs)
        return ShardedState(_place(inner, state_specs, mesh), state_specs, update_specs)

    def update_fn(
        updates: optax.Updates, state: ShardedState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, ShardedState]:
        updates, inner = tx.update(updates, state.inner, params)
        inner = _place(inner, state.state_specs, mesh)
        updates = _place(updates, state.update_specs, mesh)
        return updates, ShardedState(inner, state.state_specs, state.update_specs)

    # optax types a state as chex's ArrayTree (arrays, iterables, mappings), which leaves out
    # registered dataclass pytrees such as ShardedState; optax itself accepts any pytree.
    return optax.GradientTransformation(init_fn, update_fn)  # pyright: ignore[reportArgumentType]
