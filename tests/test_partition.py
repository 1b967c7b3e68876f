"""A per-leaf choice of code width with optax's own tool: ``optax.partition`` of ``adamw8bit``
and ``adamw4bit``, as the memory guide shows for keeping a sensitive layer at 8 bits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import adam_optax


def width_of(params):
    """8 bits for the embedding, 4 for the rest: the labels optax.partition takes."""

    def label(path, _):
        return "8bit" if "embed" in jax.tree_util.keystr(path) else "4bit"

    return jax.tree_util.tree_map_with_path(label, params)


def test_partition_steps_each_leaf_as_its_width_alone():
    key = jax.random.key(0)
    params = {"embed": jnp.ones((64, 128)), "dense": jnp.ones((128, 128)), "bias": jnp.ones(128)}
    grads = jax.tree.map(lambda p: jax.random.normal(key, p.shape), params)
    options = {"min_quantized_size": 0, "stochastic_rounding": False}
    make = {"8bit": adam_optax.adamw8bit, "4bit": adam_optax.adamw4bit}
    tx = optax.partition({k: f(1e-3, **options) for k, f in make.items()}, width_of)
    state = tx.init(params)
    for _ in range(2):
        updates, state = jax.jit(tx.update)(grads, state, params)
        params = optax.apply_updates(params, updates)
    for width, names in (("8bit", ["embed"]), ("4bit", ["dense", "bias"])):
        alone = make[width](1e-3, **options)
        mine = {n: jnp.ones_like(params[n]) for n in names}
        alone_state, alone_grads = alone.init(mine), {n: grads[n] for n in names}
        for _ in range(2):
            step, alone_state = jax.jit(alone.update)(alone_grads, alone_state, mine)
            mine = optax.apply_updates(mine, step)
        for n in names:
            np.testing.assert_array_equal(params[n], mine[n])
    codes = state.inner_states["4bit"].inner_state[0].mu.codes
    assert codes["dense"].shape == (128, 64)  # two 4-bit codes per byte
    assert state.inner_states["8bit"].inner_state[0].mu.codes["embed"].shape == (64, 128)
