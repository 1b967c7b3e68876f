"""Temporaries of master_weights' compiled step, from XLA's ``memory_analysis()``.

The figures are deterministic for one jax and XLA version (no timing): bytes of
temporaries per parameter of

- the donated optimizer step (``update`` + ``optax.apply_updates``, grads as inputs,
  params and state donated) on the GPT-like tree of ``benchmarks/memory.py``;
- the whole train step (loss, grad, update, apply) of a 16-layer MLP, small batch,
  against ``optax.adamw`` on the same bfloat16 params (issue 23, target 2).

What holds is asserted; the targets of issue 23 that do not hold yet are strict
``xfail`` rows, so that the day they hold the test says so. On XLA:CPU each corrected
leaf keeps one float32 array, its ``w + u``, which both the returned update and the
new correction read: XLA:CPU has no multi-output loop fusion, and it does not
recompute the inner transform's update (a divide and a square root) in two fusions.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax
import pytest

import adam_optax

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from memory import gpt2_like, size

BF16 = jnp.bfloat16


def _as(tree, dtype):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, dtype), tree)


def donated_step_temporaries(tx: optax.GradientTransformation, params) -> float:
    """B/param of temporaries of the donated optimizer step, grads of the params' dtypes."""

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state = jax.eval_shape(tx.init, params)
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, params).compile()
    return compiled.memory_analysis().temp_size_in_bytes / size(params)


def train_step_temporaries(tx: optax.GradientTransformation, layers=16, width=256) -> float:
    """B/param of temporaries of a jitted loss-grad-update-apply step of a deep MLP with
    bfloat16 params (batch 8), params and state donated."""
    params = {
        f"layer{i:02d}": {"w": jax.ShapeDtypeStruct((width, width), BF16)} for i in range(layers)
    }

    def loss(params, x):
        for i in range(layers):
            x = jnp.tanh(x @ params[f"layer{i:02d}"]["w"])
        return jnp.mean(x.astype(jnp.float32) ** 2)

    def step(params, state, x):
        updates, state = tx.update(jax.grad(loss)(params, x), state, params)
        return optax.apply_updates(params, updates), state

    state = jax.eval_shape(tx.init, params)
    x = jax.ShapeDtypeStruct((8, width), BF16)
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, x).compile()
    return compiled.memory_analysis().temp_size_in_bytes / size(params)


@functools.cache
def _tree(dtype) -> Any:
    """The GPT-like tree with d_model 128, 2 blocks: about 0.95M params, 28 leaves."""
    return _as(gpt2_like(d=128, vocab=4096, context=256, blocks=2), dtype)


# name: (transform, params dtype). Each figure is compiled once and shared by the tests.
DONATED = {
    "master_weights(adamw)": (lambda: adam_optax.master_weights(adam_optax.adamw(1e-3)), BF16),
    "master_weights(adamw8bit)": (
        lambda: adam_optax.master_weights(adam_optax.adamw8bit(1e-3)),
        BF16,
    ),
    "master_weights(sgd)": (lambda: adam_optax.master_weights(optax.sgd(1e-3)), BF16),
    "adamw": (lambda: adam_optax.adamw(1e-3), jnp.float32),
    "adamw8bit": (lambda: adam_optax.adamw8bit(1e-3), jnp.float32),
    "adamw bf16": (lambda: adam_optax.adamw(1e-3, mu_dtype=BF16, nu_dtype=BF16), jnp.float32),
    "adamw bf16+SR": (
        lambda: adam_optax.adamw(1e-3, mu_dtype=BF16, nu_dtype=BF16, stochastic_rounding=True),
        jnp.float32,
    ),
}
TRAIN = {
    "optax.adamw": lambda: optax.adamw(1e-3),
    "master_weights(adamw)": DONATED["master_weights(adamw)"][0],
    "master_weights(adamw8bit)": DONATED["master_weights(adamw8bit)"][0],
}


@functools.cache
def donated(name: str) -> float:
    make, dtype = DONATED[name]
    return donated_step_temporaries(make(), _tree(dtype))


@functools.cache
def train(name: str) -> float:
    return train_step_temporaries(TRAIN[name]())


@pytest.mark.parametrize("name", ["master_weights(adamw)", "master_weights(sgd)"])
def test_donated_step_keeps_at_most_one_float32_array_of_the_params(name):
    """The master arithmetic keeps w + u (4 B/param) and nothing else: no copy of the
    params or the corrections, no 16-bit intermediates."""
    assert donated(name) <= 4.0 + 0.01


def test_donated_step_of_the_7_byte_setup_adds_the_master_array_to_adamw8bit():
    """master_weights(adamw8bit): adamw8bit's own temporaries (with float32 params) plus
    the one float32 array of the master step."""
    assert donated("master_weights(adamw8bit)") <= donated("adamw8bit") + 4.0


@pytest.mark.xfail(strict=True, reason="issue 23 target 1: the w + u array is materialized")
@pytest.mark.parametrize("name", ["master_weights(adamw)", "master_weights(adamw8bit)"])
def test_donated_step_temporaries_target(name):
    assert donated(name) <= 0.5


def test_train_step_of_master_weights_adamw_keeps_gradient_release():
    """Issue 23, target 2, for master_weights(adamw): no more temporaries than
    optax.adamw on the same bfloat16 params, + 0.5 B/param."""
    assert train("master_weights(adamw)") <= train("optax.adamw") + 0.5


def test_train_step_of_the_7_byte_setup_does_not_grow():
    """A ceiling at today's figure, which the 8-bit step's own copies of its codes set;
    the target (+ 0.5) is the xfail row below."""
    assert train("master_weights(adamw8bit)") <= train("optax.adamw") + 1.25


@pytest.mark.xfail(strict=True, reason="issue 23 target 2: the 8-bit step's own copies")
def test_train_step_of_the_7_byte_setup_target():
    assert train("master_weights(adamw8bit)") <= train("optax.adamw") + 0.5


# The low-bit state's own step, on float32 params: today's ceiling in B/param.
# float32 moments need no temporaries; adamw8bit keeps one copy of one moment's codes and
# per-block arrays; 16-bit moments, rounded to nearest or stochastically, one copy of one
# old moment per leaf (storage._after chains the writes, so the other is copied into the
# buffer of the moment written last).
# XLA copies the old state because the update, fused into apply_updates, reads it after the
# new state is written; benchmarks/results/inplace.md shows why an in-place loop does not
# remove that copy on XLA:CPU.
STATE_CEILINGS = {"adamw": 0.001, "adamw8bit": 1.5, "adamw bf16": 2.01, "adamw bf16+SR": 2.01}


@pytest.mark.parametrize("name", list(STATE_CEILINGS))
def test_donated_step_of_the_state_formats_does_not_grow(name):
    assert donated(name) <= STATE_CEILINGS[name]


def test_round_to_nearest_16_bit_state_is_no_heavier_than_stochastic_rounding():
    """Round-to-nearest does less work than stochastic rounding; its step keeps no more."""
    assert donated("adamw bf16") <= donated("adamw bf16+SR") + 0.001


@pytest.mark.xfail(strict=True, reason="issue 23 target 1: XLA:CPU copies the old state")
@pytest.mark.parametrize("name", ["adamw8bit", "adamw bf16", "adamw bf16+SR"])
def test_donated_step_of_the_state_formats_target(name):
    assert donated(name) <= 0.5
