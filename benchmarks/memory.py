"""Bytes and step time of Adam's four state choices: float32, bf16, bf16+SR, 8-bit.

For each choice of ``adam_optax.adam`` state (and ``optax.adam`` as the reference):
  - state bytes per parameter: the sum of the state leaves' nbytes over the parameter
    count, on a tree of leaves with >= 4096 elements and on a GPT-2-like mixed tree;
  - the compiled train step's temporary bytes per parameter, from
    ``jax.jit(step, donate_argnums=(0, 1)).lower(...).compile().memory_analysis()``;
  - the donated train step's time on a flat 1e7 vector, as the median over interleaved
    rounds of its ratio to ``optax.adam`` in the same round (one process).
Targets (issue 12): 8-bit state <= 2.05 B/param on large leaves (float32: 8),
temporaries <= 2 B/param, step time <= 1.5× optax.adam.

    python benchmarks/memory.py                           # -> benchmarks/out/
    python benchmarks/memory.py --out benchmarks/results  # update the published results
    python benchmarks/memory.py --quick                   # 1e6 params, 3 rounds
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
from quality import git_commit

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
        f"`{env['command']}` at adam_optax {env['adam_optax_commit']}: jax {env['jax']}, "
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1e6 params, 3 rounds")
    parser.add_argument("--rounds", type=int, default=None, help="default 15 (3 with --quick)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = parser.parse_args(argv)
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
    command = " ".join(["python benchmarks/memory.py", *(sys.argv[1:] if argv is None else argv)])
    result = {
        "n": n,
        "rounds": rounds,
        "mixed_params": size(trees["mixed"]),
        "choices": choices,
        "environment": {
            "command": command,
            "jax": jax.__version__,
            "adam_optax_commit": commit,
            "cpus": os.cpu_count(),
            "load_before": load_before,
            "load_after": os.getloadavg()[0],
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "memory.json").write_text(json.dumps(result, indent=1))
    (args.out / "memory.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
