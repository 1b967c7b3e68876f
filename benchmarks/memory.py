"""Bytes and step time of Adam's state choices: float32, bf16, bf16+SR, 8-bit (SR and RTN).

For each choice of ``adam_optax.adam`` state (and ``optax.adam`` as the reference):
  - state bytes per parameter: the sum of the state leaves' nbytes over the parameter
    count, on a tree of leaves with >= 4096 elements and on a GPT-2-like mixed tree;
  - the compiled train step's temporary bytes per parameter, from
    ``jax.jit(step, donate_argnums=(0, 1)).lower(...).compile().memory_analysis()``;
  - the donated train step's time on a flat 1e7 vector, as the median over interleaved
    rounds of its ratio to ``optax.adam`` in the same round (one process).
Targets: 8-bit state <= 2.05 B/param on large leaves (float32: 8),
temporaries <= 2 B/param, step time <= 1.5× optax.adam.

    python benchmarks/memory.py                           # -> benchmarks/out/
    python benchmarks/memory.py --out benchmarks/results  # update the published results
    python benchmarks/memory.py --quick                   # 1e6 params, 3 rounds
    python benchmarks/memory.py --training                # params + grads + state
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from run_record import git_commit, utc_now

import adam_optax

TARGETS = {"state": 2.05, "temp": 2.0, "time": 1.5}  # for 8-bit: B/param, B/param, × optax


def optimizers() -> dict[str, optax.GradientTransformation]:
    """name -> the transform. An error building one is a bug to see, not a row to skip."""
    bf16 = {"mu_dtype": jnp.bfloat16, "nu_dtype": jnp.bfloat16}
    return {
        "optax.adam": optax.adam(1e-3),
        "float32": adam_optax.adam(1e-3),
        "bf16": adam_optax.adam(1e-3, **bf16),
        "bf16+SR": adam_optax.adam(1e-3, **bf16, stochastic_rounding=True),
        "8-bit": adam_optax.adam8bit(1e-3),
        "8-bit RTN": adam_optax.adam8bit(1e-3, stochastic_rounding=False),
    }


def large_leaves() -> dict[str, jax.ShapeDtypeStruct]:
    """Leaves of >= 4096 elements, one whose last axis 256 does not divide."""
    shapes = {"embed": (8192, 512), "dense": (1024, 1024), "odd": (1000, 1001), "v": (4096,)}
    return {k: jax.ShapeDtypeStruct(s, jnp.float32) for k, s in shapes.items()}


def gpt2_like(d: int = 192, vocab: int = 8192, context: int = 1024, blocks: int = 12) -> dict:
    """GPT-2-small's leaves with d_model 768 -> 192: matrices plus many small biases and norms."""

    def leaf(*shape: int) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(shape, jnp.float32)

    def block() -> dict[str, jax.ShapeDtypeStruct]:
        return {
            "ln_1": leaf(d), "ln_1_bias": leaf(d), "attn_w": leaf(d, 3 * d), "attn_b": leaf(3 * d),
            "proj_w": leaf(d, d), "proj_b": leaf(d), "ln_2": leaf(d), "ln_2_bias": leaf(d),
            "fc_w": leaf(d, 4 * d), "fc_b": leaf(4 * d), "out_w": leaf(4 * d, d), "out_b": leaf(d),
        }  # fmt: skip

    tree = {"wte": leaf(vocab, d), "wpe": leaf(context, d), "ln_f": leaf(d), "ln_f_b": leaf(d)}
    return tree | {f"h{i}": block() for i in range(blocks)}


def size(tree: Any) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def nbytes(tree: Any) -> int:
    return sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def train_step(tx: optax.GradientTransformation) -> Callable:
    def step(params: Any, state: Any, grads: Any) -> tuple[Any, Any]:
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 1))


def memory(tx: optax.GradientTransformation, params: Any) -> dict[str, float]:
    """State and compiled-step temporary bytes per parameter, from shapes alone."""
    state = jax.eval_shape(tx.init, params)
    start = time.perf_counter()
    compiled = train_step(tx).lower(params, state, params).compile()
    analysis = compiled.memory_analysis()
    return {
        "state_bytes_per_param": nbytes(state) / size(params),
        "temp_bytes_per_param": analysis.temp_size_in_bytes / size(params),
        "compile_s": time.perf_counter() - start,
    }


def step_times(txs: dict[str, optax.GradientTransformation], n: int, rounds: int) -> dict:
    """Donated steps on a flat n-vector: per round, each choice's median step time."""
    key = jax.random.key(0)
    grads = 0.01 * jax.random.normal(key, (n,))
    runs = {}
    for name, tx in txs.items():
        params = 0.02 * jax.random.normal(jax.random.fold_in(key, 1), (n,))
        step = train_step(tx)
        runs[name] = [step, *jax.block_until_ready(step(params, tx.init(params), grads))]
    times: dict[str, list[float]] = {name: [] for name in txs}
    for r in range(rounds):
        order = list(txs)[r % len(txs) :] + list(txs)[: r % len(txs)]  # rotate the order
        for name in order:
            step, params, state = runs[name]
            samples = []
            for _ in range(5):
                start = time.perf_counter()
                params, state = jax.block_until_ready(step(params, state, grads))
                samples.append(time.perf_counter() - start)
            runs[name][1:] = params, state
            times[name].append(statistics.median(samples))
    base = times["optax.adam"]
    return {
        name: {
            "median_ms": 1e3 * statistics.median(t),
            "ratio_to_optax": statistics.median(a / b for a, b in zip(t, base, strict=True)),
            "ratios_per_round": [a / b for a, b in zip(t, base, strict=True)],
        }
        for name, t in times.items()
    }


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [
        "# Memory and step time of Adam's state choices",
        "",
        f"`{env['command']}` at adam_optax {env['adam_optax_commit']}, "
        f"{env.get('date', 'date not recorded')}: "
        f"jax {env['jax']}, "
        f"{env['cpus']} CPUs, load average "
        f"{env['load_before']:.1f} before / {env['load_after']:.1f} after (shared machine); "
        f"step time on flat {result['n']:.0e} float32, donated, median over "
        f"{result['rounds']} interleaved rounds of the ratio to optax.adam in the same round.",
        "",
        "| state | state B/param, leaves >= 4096 | state B/param, GPT-2-like "
        f"({result['mixed_params']:,} params) | step temporaries B/param, flat / GPT-2-like | "
        "step ms | ÷ optax.adam |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in result["choices"].items():
        lines.append(
            f"| {name} | {row['large']['state_bytes_per_param']:.3f} "
            f"| {row['mixed']['state_bytes_per_param']:.3f} "
            f"| {row['flat']['temp_bytes_per_param']:.3f} / "
            f"{row['mixed']['temp_bytes_per_param']:.3f} "
            f"| {row['time']['median_ms']:.1f} | {row['time']['ratio_to_optax']:.2f} |"
        )
    if "8-bit" in result["choices"]:
        row = result["choices"]["8-bit"]
        figures = {
            "state": (row["large"]["state_bytes_per_param"], "B/param on leaves >= 4096"),
            "temp": (row["flat"]["temp_bytes_per_param"], "B/param of temporaries, flat"),
            "time": (row["time"]["ratio_to_optax"], "× optax.adam's step time"),
        }
        lines += ["", "8-bit targets:", ""]
        for key, (value, what) in figures.items():
            met = "met" if value <= TARGETS[key] else "**not met**"
            lines.append(f"- {value:.3f} {what} (target <= {TARGETS[key]}): {met}")
    return "\n".join(lines) + "\n"


# --- Training memory: params + grads + state (the 7-byte set-up) -----------------------
# Separate from the state-choice table above: run with --training.

TRAINING_TARGETS = {"held": 7.2, "checkpoint": 5.1}  # B/param for master_weights(adamw8bit)


class Setup:
    """A training set-up: the params' and grads' dtype, the transform, and whether it keeps
    a bfloat16 copy of float32 masters for the forward pass (classic mixed precision)."""

    def __init__(self, param_dtype, grad_dtype, make, bf16_copy: bool = False):
        self.param_dtype, self.grad_dtype, self.make, self.bf16_copy = (
            param_dtype,
            grad_dtype,
            make,
            bf16_copy,
        )


def training_setups() -> dict[str, Setup]:
    mw = adam_optax.master_weights
    return {
        "float32 AdamW (optax.adamw)": Setup(jnp.float32, jnp.float32, lambda: optax.adamw(1e-3)),
        "mixed precision: float32 masters + bfloat16 copy": Setup(
            jnp.float32, jnp.bfloat16, lambda: adam_optax.adamw(1e-3), bf16_copy=True
        ),
        "adamw8bit, float32 params": Setup(
            jnp.float32, jnp.float32, lambda: adam_optax.adamw8bit(1e-3)
        ),
        "master_weights(adamw), bfloat16": Setup(
            jnp.bfloat16, jnp.bfloat16, lambda: mw(adam_optax.adamw(1e-3))
        ),
        "master_weights(adamw8bit), bfloat16": Setup(
            jnp.bfloat16, jnp.bfloat16, lambda: mw(adam_optax.adamw8bit(1e-3))
        ),
        "master_weights(adamw8bit, 16 bits), bfloat16": Setup(
            jnp.bfloat16, jnp.bfloat16, lambda: mw(adam_optax.adamw8bit(1e-3), correction_bits=16)
        ),
    }


def _as(tree: Any, dtype: Any) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, dtype), tree)


def training_step(setup: Setup, tx: optax.GradientTransformation) -> Callable:
    """Donated params (and bfloat16 copy) and state; the grads come in as an argument."""

    def step(params: Any, state: Any, grads: Any) -> Any:
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        if setup.bf16_copy:  # the forward pass's copy, made from the new masters
            return params, jax.tree.map(lambda p: p.astype(jnp.bfloat16), params), state
        return params, state

    return jax.jit(step, donate_argnums=(0, 1))


def training_memory(setup: Setup, shapes: Any) -> dict[str, float]:
    """Bytes per parameter held across steps (params, grads, state, and the bfloat16 copy
    where there is one), checkpoint bytes (params + state), and the compiled step's peak:
    arguments + temporaries + outputs - aliased (donated outputs reuse their inputs)."""
    tx = setup.make()
    params, grads = _as(shapes, setup.param_dtype), _as(shapes, setup.grad_dtype)
    state = jax.eval_shape(tx.init, params)
    n = size(params)
    copy = nbytes(_as(shapes, jnp.bfloat16)) if setup.bf16_copy else 0
    a = training_step(setup, tx).lower(params, state, grads).compile().memory_analysis()
    peak = a.argument_size_in_bytes + a.temp_size_in_bytes + a.output_size_in_bytes
    peak -= a.alias_size_in_bytes
    return {
        "params": nbytes(params) / n,
        "grads": nbytes(grads) / n,
        "state": nbytes(state) / n,
        "copy": copy / n,
        "held": (nbytes(params) + nbytes(grads) + nbytes(state) + copy) / n,
        "checkpoint": (nbytes(params) + nbytes(state)) / n,
        "peak": (peak + copy) / n,  # the copy made in the previous step is held as well
    }


def checkpoint_on_disk(setup: Setup, shapes: Any, directory: Path) -> float:
    """Bytes per parameter of an orbax checkpoint of params + state after two steps, as
    written on disk (orbax's format may compress)."""
    import shutil

    import orbax.checkpoint as ocp

    tx = setup.make()
    params = jax.tree.map(
        lambda s: 0.02 * jax.random.normal(jax.random.key(0), s.shape, setup.param_dtype),
        _as(shapes, setup.param_dtype),
    )
    state = tx.init(params)
    step = training_step(setup, tx)
    for t in range(2):  # moments that are not all zeros, which would compress away
        key = jax.random.key(t + 1)
        grads = jax.tree.map(lambda p, k=key: 0.01 * jax.random.normal(k, p.shape, p.dtype), params)
        params, state = step(params, state, grads)
    path = directory / "checkpoint"
    shutil.rmtree(path, ignore_errors=True)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path.absolute(), {"params": params, "state": state})
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    shutil.rmtree(path, ignore_errors=True)
    return total / size(params)


def training_step_times(shapes: Any, rounds: int, samples: int = 3) -> dict[str, dict]:
    """Step time of master_weights(adamw8bit) (bfloat16) against adamw8bit and optax.adamw
    (float32), and of master_weights(sgd) against sgd (the wrapper's own cost): per round,
    each one's median; ratios taken within a round, the rounds' median reported."""
    mw = adam_optax.master_weights
    runs = {
        "optax.adamw": (jnp.float32, lambda: optax.adamw(1e-3)),
        "adamw8bit": (jnp.float32, lambda: adam_optax.adamw8bit(1e-3)),
        "master_weights(adamw8bit)": (jnp.bfloat16, lambda: mw(adam_optax.adamw8bit(1e-3))),
        "optax.sgd": (jnp.float32, lambda: optax.sgd(1e-3)),
        "master_weights(optax.sgd)": (jnp.bfloat16, lambda: mw(optax.sgd(1e-3))),
    }
    key = jax.random.key(0)
    live = {}
    for name, (dtype, make) in runs.items():
        tx = make()
        params = jax.tree.map(
            lambda s: 0.02 * jax.random.normal(key, s.shape, s.dtype), _as(shapes, dtype)
        )
        grads = jax.tree.map(lambda p: 0.01 * jnp.ones_like(p), params)
        step = training_step(Setup(dtype, dtype, make), tx)
        live[name] = [step, *jax.block_until_ready(step(params, tx.init(params), grads)), grads]
    times: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(rounds):
        order = list(runs)[r % len(runs) :] + list(runs)[: r % len(runs)]
        for name in order:
            step, params, state, grads = live[name]
            measured = []
            for _ in range(samples):
                start = time.perf_counter()
                params, state = jax.block_until_ready(step(params, state, grads))
                measured.append(time.perf_counter() - start)
            live[name][1:3] = params, state
            times[name].append(statistics.median(measured))

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))

    ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}
    return {
        "ms": ms,
        "master_weights(adamw8bit) / adamw8bit": ratio("master_weights(adamw8bit)", "adamw8bit"),
        "master_weights(adamw8bit) / optax.adamw": ratio(
            "master_weights(adamw8bit)", "optax.adamw"
        ),
        "adamw8bit / optax.adamw": ratio("adamw8bit", "optax.adamw"),
        "master_weights(sgd) / sgd": ratio("master_weights(optax.sgd)", "optax.sgd"),
    }


def training_markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [
        "# Training memory: params + grads + optimizer state",
        "",
        f"`{env['command']}` at adam_optax {env['adam_optax_commit']}, "
        f"{env.get('date', 'date not recorded')}: "
        f"jax {env['jax']}, "
        f"{env['cpus']} CPUs, load average {env['load_before']:.1f} before / "
        f"{env['load_after']:.1f} after (shared machine). GPT-2-like tree "
        f"({result['mixed_params']:,} params, d_model 192). Bytes per parameter held across "
        "steps; the peak is the compiled, donated step's arguments + temporaries + outputs - "
        "aliased; checkpoint: params + state (logical) and an orbax checkpoint on disk.",
        "",
        "| set-up | params | grads | state | held | step peak | checkpoint | on disk |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in result["setups"].items():
        params = f"{row['params']:.2f}" + (f" + {row['copy']:.0f} copy" if row["copy"] else "")
        on_disk = f"{row['on_disk']:.2f}" if "on_disk" in row else "—"
        lines.append(
            f"| {name} | {params} | {row['grads']:.2f} | {row['state']:.3f} | "
            f"**{row['held']:.2f}** | {row['peak']:.2f} | {row['checkpoint']:.2f} | {on_disk} |"
        )
    row = result["setups"]["master_weights(adamw8bit), bfloat16"]
    lines += ["", "Targets for master_weights(adamw8bit) with bfloat16 params and grads:", ""]
    for key, what in (("held", "held across steps"), ("checkpoint", "checkpoint")):
        met = "met" if row[key] <= TRAINING_TARGETS[key] else "**not met**"
        lines.append(f"- {row[key]:.2f} B/param {what} (target <= {TRAINING_TARGETS[key]}): {met}")
    for tree, timing in result["time"].items():
        lines += ["", f"Step time, {tree} (median ms over {result['rounds']} rounds):", ""]
        lines.append(", ".join(f"{k} {v:.1f}" for k, v in timing["ms"].items()))
        lines.append("")
        for key, value in timing.items():
            if key != "ms":
                lines.append(f"- {key}: {value:.2f}×")
    return "\n".join(lines) + "\n"


def environment(argv: list[str], commit: str, load_before: float) -> dict[str, Any]:
    """The run's command, versions and machine load, stored beside its figures."""
    return {
        "command": " ".join(["python benchmarks/memory.py", *argv]),
        "date": utc_now(),
        "jax": jax.__version__,
        "adam_optax_commit": commit,
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }


def write(out: Path, stem: str, result: dict[str, Any], table: str) -> None:
    """``stem``.json and ``stem``.md in ``out``; the table is printed too."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    (out / f"{stem}.md").write_text(table)
    print(table)


def training_main(args: argparse.Namespace, argv: list[str]) -> None:
    n, rounds = (10**6, 3) if args.quick else (10**7, args.rounds or 5)
    load_before, commit = os.getloadavg()[0], git_commit()
    shapes = gpt2_like()
    setups = {}
    for name, setup in training_setups().items():
        setups[name] = training_memory(setup, shapes)
        print(name, setups[name], file=sys.stderr, flush=True)
    for name in ("float32 AdamW (optax.adamw)", "master_weights(adamw8bit), bfloat16"):
        setups[name]["on_disk"] = checkpoint_on_disk(training_setups()[name], shapes, args.out)
    flat = {"flat": jax.ShapeDtypeStruct((n,), jnp.float32)}
    timing = {f"flat {n:.0e}": training_step_times(flat, rounds)}
    timing["GPT-2-like"] = training_step_times(shapes, rounds)
    result = {
        "mixed_params": size(shapes),
        "rounds": rounds,
        "setups": setups,
        "time": timing,
        "environment": environment(argv, commit, load_before),
    }
    write(args.out, "memory_training", result, training_markdown(result))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1e6 params, 3 rounds")
    parser.add_argument("--rounds", type=int, default=None, help="default 15 (3 with --quick)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    parser.add_argument("--training", action="store_true", help="params+grads+state instead")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if args.training:
        return training_main(args, argv)
    n, rounds = (10**6, 3) if args.quick else (10**7, 15)
    rounds = args.rounds or rounds
    load_before, commit = os.getloadavg()[0], git_commit()
    txs = optimizers()
    trees = {"large": large_leaves(), "mixed": gpt2_like()}
    trees["flat"] = jax.ShapeDtypeStruct((n,), jnp.float32)
    choices: dict[str, dict[str, Any]] = {name: {} for name in txs}
    for name, tx in txs.items():
        for tree_name, tree in trees.items():
            choices[name][tree_name] = memory(tx, tree)
            print(name, tree_name, choices[name][tree_name], file=sys.stderr, flush=True)
    for name, timing in step_times(txs, n, rounds).items():
        choices[name]["time"] = timing
    result = {
        "n": n,
        "rounds": rounds,
        "mixed_params": size(trees["mixed"]),
        "choices": choices,
        "environment": environment(argv, commit, load_before),
    }
    write(args.out, "memory", result, markdown(result))


if __name__ == "__main__":
    main()
