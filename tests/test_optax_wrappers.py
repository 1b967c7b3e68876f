"""Every optax wrapper that takes an inner transform, around and inside ``master_weights``
and ``adamw8bit`` or ``adamw4bit``, jitted, with bfloat16 params and grads.

One table of wrappers drives the test: a new wrapper is one new row. Each row is
placed in three positions, which between them run both code widths:

- ``around_master``: ``wrapper(master_weights(adamw8bit))``;
- ``inside_master_4bit``: ``master_weights(wrapper(adamw4bit))``;
- ``around_8bit``: ``wrapper(adamw8bit)`` on bfloat16 params, without master weights.

In each, three jitted steps (update, then ``optax.apply_updates``) must keep every
update in its gradient's dtype (optax's contract, which ``apply_if_finite``'s skip
branch and ``MultiSteps``'s accumulator rely on), keep the params' dtypes, and move
the params. Where a row feeds a NaN gradient, the wrapper must skip that step:
params and every state leaf but the wrapper's own counters stay as they were.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adam_optax

BF16 = jnp.bfloat16

Make = Callable[[Any], optax.GradientTransformation]  # learning rate -> transform


class Wrapper(NamedTuple):
    id: str
    wrap: Callable[[Make], optax.GradientTransformation]  # wraps the transform `make` builds
    nan_step_skipped: bool = False  # feed a NaN gradient at step 1: the wrapper skips it
    optax_casts: str = ""  # why optax's wrapper itself casts updates of bfloat16 params


def _labels(params: Any) -> Any:
    return {k: "inner" if k != "b" else "sgd" for k in params}


WRAPPERS = [
    Wrapper("apply_if_finite", lambda make: optax.apply_if_finite(make(1e-2), 3), True),
    Wrapper("MultiSteps", lambda make: optax.MultiSteps(make(1e-2), 2).gradient_transformation()),
    Wrapper(
        "MultiSteps_under_apply_if_finite",
        lambda make: optax.apply_if_finite(
            optax.MultiSteps(make(1e-2), 2).gradient_transformation(), 3
        ),
        True,
    ),
    Wrapper("masked", lambda make: optax.masked(make(1e-2), {"w": True, "v": True, "b": False})),
    Wrapper(
        "partition",
        lambda make: optax.partition({"inner": make(1e-2), "sgd": optax.sgd(1e-2)}, _labels),
    ),
    Wrapper(
        "inject_hyperparams",
        lambda make: optax.inject_hyperparams(make)(1e-2),
        optax_casts="inject_hyperparams stores the learning rate as a float32 array for these "
        "mixed params, so the inner alias's update is float32 (optax.adamw's too); "
        "master_weights, around or inside, casts it back",
    ),
    Wrapper(
        "chain_with_schedule",
        lambda make: optax.chain(
            optax.clip_by_global_norm(1.0), make(optax.linear_schedule(1e-2, 1e-3, 4))
        ),
    ),
    Wrapper("conditionally_mask", lambda make: optax.conditionally_mask(make(1e-2), _even)),
    Wrapper(
        "conditionally_transform", lambda make: optax.conditionally_transform(make(1e-2), _even)
    ),
]


def _even(step: jax.Array) -> jax.Array:
    return step % 2 == 0


def _adamw8bit(learning_rate: Any) -> optax.GradientTransformation:
    # min_quantized_size=256: the (16, 64) leaf has 8-bit moments, the others float32.
    return adam_optax.adamw8bit(learning_rate, weight_decay=0.01, min_quantized_size=256)


def _adamw4bit(learning_rate: Any) -> optax.GradientTransformation:
    # The (16, 64) leaf has 4-bit moments, two codes a byte: (16, 32) bytes.
    return adam_optax.adamw4bit(learning_rate, weight_decay=0.01, min_quantized_size=256)


POSITIONS: dict[str, Callable[[Wrapper], optax.GradientTransformation]] = {
    "around_master": lambda row: row.wrap(lambda lr: adam_optax.master_weights(_adamw8bit(lr))),
    "inside_master_4bit": lambda row: adam_optax.master_weights(row.wrap(_adamw4bit)),
    "around_8bit": lambda row: row.wrap(_adamw8bit),
}
BITS = {"around_master": 8, "inside_master_4bit": 4, "around_8bit": 8}


def _params() -> dict[str, jax.Array]:
    rng = np.random.default_rng(0)
    return {
        "w": jnp.asarray(rng.normal(size=(16, 64)), BF16),  # 8-bit moments
        "v": jnp.asarray(rng.normal(size=(40,)), BF16),  # float32 moments
        "b": jnp.asarray(rng.normal(size=(8,)), jnp.float32),  # no correction
    }


def _grads(params: Any, t: int, nan: bool) -> Any:
    key = jax.random.fold_in(jax.random.key(1), t)
    grads = jax.tree.map(lambda p: jax.random.normal(key, p.shape).astype(p.dtype), params)
    if nan:
        grads["w"] = grads["w"].at[0, 0].set(jnp.nan)
    return grads


def _skipped_leaves(before: Any, after: Any) -> list[str]:
    """The float state leaves whose value changed: none must, on a skipped step."""
    changed = []
    for (path, a), b in zip(
        jax.tree_util.tree_leaves_with_path(before), jax.tree.leaves(after), strict=True
    ):
        if a.ndim == 0 and not jnp.issubdtype(a.dtype, jnp.floating):
            continue  # the wrappers' own step and skip counters and flags
        if not np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True):
            changed.append(jax.tree_util.keystr(path))
    return changed


@pytest.mark.parametrize("position", list(POSITIONS))
@pytest.mark.parametrize("row", WRAPPERS, ids=[row.id for row in WRAPPERS])
def test_wrapper_keeps_grads_dtype_and_skips_nan(row, position):
    if row.optax_casts and position == "around_8bit":
        pytest.skip(f"optax's own behaviour: {row.optax_casts}")
    tx = POSITIONS[position](row)
    params = _params()
    state = tx.init(params)

    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, updates

    first = params
    for t in range(3):
        nan = row.nan_step_skipped and t == 1
        grads = _grads(params, t, nan)
        new_params, new_state, updates = step(params, state, grads)
        assert jax.tree.map(lambda u: u.dtype, updates) == jax.tree.map(lambda g: g.dtype, grads)
        assert jax.tree.map(lambda p: p.dtype, new_params) == jax.tree.map(
            lambda p: p.dtype, params
        )
        if nan:
            assert _skipped_leaves(params, new_params) == []
            assert _skipped_leaves(state, new_state) == []
        params, state = new_params, new_state
    assert all(np.all(np.isfinite(np.asarray(x, np.float32))) for x in jax.tree.leaves(params))
    assert not np.array_equal(np.asarray(params["w"]), np.asarray(first["w"]))
    moments = jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, adam_optax.QuantizedTree))
    moments = [m for m in moments if isinstance(m, adam_optax.QuantizedTree)]
    assert moments and {m.bits for m in moments} == {BITS[position]}
    assert {m.codes["w"].shape for m in moments} == {(16, 64 * BITS[position] // 8)}


def test_apply_if_finite_around_float32_updates_is_optax_own_limit():
    """With ``update_dtype=jnp.float32`` the updates of bfloat16 params are float32 while
    the grads are bfloat16: ``apply_if_finite``'s skip branch returns zeros like the grads,
    so ``lax.cond``'s branches differ and jit fails. The default composes (above)."""
    tx = optax.apply_if_finite(
        adam_optax.master_weights(_adamw8bit(1e-2), update_dtype=jnp.float32), 3
    )
    params = _params()
    with pytest.raises(TypeError, match="branch"):
        jax.jit(tx.update)(_grads(params, 0, False), tx.init(params), params)
