"""Compile cost that follows the distinct shapes, not the depth: leaves of one shape share kernels.

XLA compiles a kernel per fused computation and identical ones once. These
tests count the distinct fused computations of the compiled, donated train step
(``tests.compiles.fused_kernels``) for 2 and 5 layers of the same shapes: a
count that grows with depth means some per-leaf constant (a leaf index, a slice
offset) made each leaf's kernels distinct. A count, not a timing.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
import pytest

import adam_optax
from adam_optax import transforms
from tests.compiles import backend_compiles, fused_kernels

BF16_SR = {"mu_dtype": jnp.bfloat16, "nu_dtype": jnp.bfloat16, "stochastic_rounding": True}

# name -> (transform, params dtype)
SETUPS: dict[str, tuple[Callable[[], optax.GradientTransformation], jnp.dtype]] = {
    "adamw8bit": (lambda: adam_optax.adamw8bit(1e-3), jnp.float32),
    "adamw8bit RTN": (lambda: adam_optax.adamw8bit(1e-3, stochastic_rounding=False), jnp.float32),
    "master_weights(adamw8bit)": (
        lambda: adam_optax.master_weights(adam_optax.adamw8bit(1e-3)),
        jnp.bfloat16,
    ),
    "adamw bf16+SR": (lambda: adam_optax.adamw(1e-3, **BF16_SR), jnp.float32),
    "optax.adamw": (lambda: optax.adamw(1e-3), jnp.float32),
}


def layers(depth: int, dtype: jnp.dtype) -> dict[str, dict[str, jax.ShapeDtypeStruct]]:
    """``depth`` layers of the same shapes: two 8-bit matrices (one whose rows end in a
    short block) and a bias small enough to stay float32."""

    def layer() -> dict[str, jax.ShapeDtypeStruct]:
        shapes = {"w": (16, 512), "v": (16, 288), "b": (288,)}
        return {k: jax.ShapeDtypeStruct(s, dtype) for k, s in shapes.items()}

    return {f"layer{i}": layer() for i in range(depth)}


def distinct_kernels(tx: optax.GradientTransformation, params: object) -> int:
    def step(p, s, g):
        updates, s = tx.update(g, s, p)
        return optax.apply_updates(p, updates), s

    state = jax.eval_shape(tx.init, params)
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, params).compile()
    return len(set(fused_kernels(compiled.as_text())))


@pytest.mark.parametrize("name", list(SETUPS))
def test_distinct_kernels_do_not_grow_with_depth(name):
    make, dtype = SETUPS[name]
    shallow = distinct_kernels(make(), layers(2, dtype))
    deep = distinct_kernels(make(), layers(5, dtype))
    assert deep == shallow, f"{name}: {shallow} distinct kernels at 2 layers, {deep} at 5"


def test_the_count_catches_a_leaf_index_folded_in_as_a_constant(monkeypatch):
    """Positive control: the leaf indices as plain constants (how the keys were built
    before) make every leaf's stochastic-rounding kernels distinct, and the count sees it."""
    make, dtype = SETUPS["adamw8bit"]
    monkeypatch.setattr(
        transforms, "_opaque_indices", lambda n, count: tuple(jnp.uint32(i) for i in range(n))
    )
    shallow = distinct_kernels(make(), layers(2, dtype))
    deep = distinct_kernels(make(), layers(5, dtype))
    assert deep > shallow


def test_the_count_ignores_names_and_sees_constants():
    """Same-shape leaves of a plain elementwise map share one kernel; a per-leaf constant
    gives each its own."""
    tree = {f"x{i}": jax.ShapeDtypeStruct((8, 128), jnp.float32) for i in range(4)}

    def count(fn):
        compiled = jax.jit(fn).lower(tree).compile()
        return len(set(fused_kernels(compiled.as_text())))

    def shared(t):
        return {k: jnp.sin(x) * 3.0 + 1.0 for k, x in t.items()}

    def per_leaf(t):
        return {k: jnp.sin(x) * 3.0 + i for i, (k, x) in enumerate(t.items())}

    assert count(shared) == 1
    assert count(per_leaf) == len(tree)


@pytest.mark.parametrize("name", ["adamw8bit", "adamw bf16+SR"])
def test_eager_steps_after_the_first_compile_nothing(name):
    """The indices' loop is built from module-level functions: an eager ``update``
    (no jit around it) compiles it once, not once per step."""
    make, dtype = SETUPS[name]
    tx = make()
    params = {"w": jnp.ones((8, 512), dtype), "b": jnp.ones(8, dtype)}
    state = tx.init(params)
    _, state = tx.update(params, state, params)
    with backend_compiles() as compiled:
        for _ in range(2):
            _, state = tx.update(params, state, params)
    assert compiled == []
