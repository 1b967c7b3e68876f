"""Optimizer state in host memory between steps, for any optax transform.

Adam's float32 state is 8 bytes per parameter, twice the params; on an accelerator it is
often what does not fit. `offload_state` keeps it in the host's memory, the memory kind
``"pinned_host"`` of JAX's memory spaces (the "Memory spaces and host offloading" guide),
and moves it through the device only while the update runs, inside the user's ``jit``:
each leaf is brought to device memory, the wrapped transform's ``update`` runs there, and
the new state is sent back. XLA schedules the transfers; the device holds the state only
for the duration of the update, leaf by leaf where its scheduler allows.

This is what MaxText's ``optimizer_memory_host_offload``, axlearn and torchao's
``CPUOffloadOptimizer`` offer, and, composed with `shard_state`, what ZeRO-Offload
(Ren et al. 2021, *ZeRO-Offload: Democratizing Billion-Scale Model Training*) does with
the state: each device's slice lives on its own host. Unlike ZeRO-Offload, the update is
still computed on the device; only the storage moves.

The cost is the transfers: 2 × the state's bytes each step over the host link (PCIe or
its equal). Whether that is hidden behind the backward pass depends on the accelerator
and the model, and can only be measured on a GPU or TPU: on the CPU backend host and
device memory are the same RAM, so the tests there check the mechanics (the memory kind
of every leaf, bit-identical trajectories), not the speed.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.core
import numpy as np
import optax

from adam_optax import checks

# The memory kinds a transfer inside jit can name: jax.memory.Space.Host is pinned host memory.
_SPACES = {"pinned_host": jax.memory.Space.Host}


def _memory_kinds(device: Any) -> list[str]:
    """The memory kinds `device` can hold arrays in, such as ["device", "pinned_host"]."""
    return sorted(memory.kind for memory in device.addressable_memories())


@functools.cache
def _transfer_lands(device: Any, memory_kind: str) -> bool:
    """Whether an array sent to `memory_kind` on `device` arrives there. jax's CPU backend
    before 0.10.2 lists a "pinned_host" memory but leaves such an array, and the state
    sent there inside jit, in device memory without a word."""
    with jax.ensure_compile_time_eval():  # concrete even while init is being traced
        probe = jax.device_put(np.zeros((), np.float32), device)
        return jax.device_put(probe, _SPACES[memory_kind]).sharding.memory_kind == memory_kind


def _devices_of(leaf: Any) -> list[Any]:
    """The devices that will hold `leaf`: its own where it is a concrete array, else the
    default backend's (a traced array under jit, a NumPy array or a number)."""
    if isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer):
        return list(leaf.devices())
    return jax.local_devices()


def offload_state(
    tx: optax.GradientTransformation, memory_kind: str = "pinned_host"
) -> optax.GradientTransformationExtraArgs:
    """`tx` with its state kept in host memory between steps.

    `init` returns `tx`'s state with every leaf moved to `memory_kind` (each array keeps
    its sharding: under `shard_state`, each device's slice goes to its own host).
    `update` brings each state leaf to device memory, runs `tx.update`, and sends the new
    state back to `memory_kind`, all inside the caller's `jit`. The values are untouched,
    so the trajectory is bit for bit the one without offloading; the state's pytree
    structure is `tx`'s own, so `optax.tree` helpers and checkpoints see the same tree.

    Wrap the outermost transform: `offload_state(shard_state(tx, mesh))`, not the
    reverse, since `shard_state` places its state in device memory. The transfers cost
    2 × the state's bytes per step over the host link; see this module's docstring.

    Args:
        tx: any optax transform, such as `adam_optax.adamw(1e-3)`, a chain, or
            `shard_state(...)` of one.
        memory_kind: where the state lives between steps. Only ``"pinned_host"`` can be
            the target of a transfer inside `jit` (`jax.memory.Space.Host`).
            Default: ``'pinned_host'``.

    Extra keyword arguments of `update` (such as the ``value`` that
    `optax.contrib.reduce_on_plateau` needs) are passed on to `tx.update`, as `optax.chain`
    passes them: to a `GradientTransformationExtraArgs` whole, to a plain
    `GradientTransformation` not at all.

    Returns:
        A `GradientTransformationExtraArgs` whose state is `tx`'s, in `memory_kind`.

    Raises:
        TypeError: `tx` is not an optax transform (such as the uncalled factory
            `adam_optax.adamw`).
        ValueError: `memory_kind` is not ``"pinned_host"``; at `init`, a device that would
            hold the state has no such memory (the error names the kinds it has), or its
            backend leaves arrays sent there in device memory (jax's CPU backend before
            0.10.2).

    Example:
        >>> import jax, jax.numpy as jnp, adam_optax
        >>> tx = adam_optax.offload_state(adam_optax.adam(1e-3))
        >>> state = tx.init({"w": jnp.zeros((4, 2))})
        >>> state[0].mu["w"].sharding.memory_kind
        'pinned_host'
        >>> step = jax.jit(tx.update)
        >>> updates, state = step({"w": jnp.ones((4, 2))}, state)
        >>> updates["w"].sharding.memory_kind, state[0].nu["w"].sharding.memory_kind
        ('device', 'pinned_host')
    """
    checks.transformation("tx", tx)
    if memory_kind not in _SPACES:
        raise ValueError(
            f"offload_state: memory_kind={memory_kind!r} is not supported; pass "
            f"{' or '.join(map(repr, _SPACES))}: the memory kinds a transfer inside jit can "
            "name (jax.memory.Space)."
        )
    host = _SPACES[memory_kind]
    tx = optax.with_extra_args_support(tx)

    def to_host(tree: Any) -> Any:
        return jax.tree.map(lambda x: jax.device_put(x, host), tree)

    def to_device(tree: Any) -> Any:
        return jax.tree.map(lambda x: jax.device_put(x, jax.memory.Space.Device), tree)

    def init_fn(params: optax.Params) -> optax.OptState:
        state = tx.init(params)
        for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
            for device in _devices_of(leaf):
                kinds = _memory_kinds(device)
                if memory_kind not in kinds:
                    raise ValueError(
                        f"offload_state: {device} (holding state"
                        f"{jax.tree_util.keystr(path)}) has no {memory_kind!r} memory; its "
                        f"memory kinds are {kinds}. Offload needs a backend with host "
                        "memory spaces (GPU, TPU, CPU); use the transform without offload_state."
                    )
                if not _transfer_lands(device, memory_kind):
                    raise ValueError(
                        f"offload_state: jax {jax.__version__} on {device} lists "
                        f"{memory_kind!r} memory but leaves arrays sent there in device "
                        "memory (as jax's CPU backend did before 0.10.2), so the state would "
                        "not be offloaded. Upgrade jax, or use the transform without "
                        "offload_state."
                    )
        return to_host(state)

    def update_fn(
        updates: optax.Updates,
        state: optax.OptState,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, optax.OptState]:
        updates, state = tx.update(updates, to_device(state), params, **extra_args)
        return updates, to_host(state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
