"""Compile time of a donated AdamW train step on a tree of many leaves.

200 leaves of 7 shapes, (128, 256), (128, 288), ... (128, 448), as a model with
hundreds of parameter arrays has: the time of ``jax.jit(step, donate_argnums=
(0, 1)).lower(...).compile()`` for each optimizer, from abstract shapes, in one
process, each optimizer's median over ``--repeats`` fresh compiles (the
compilation cache is cleared between them), and its ratio to optax.adamw's.
Target: at most 3x optax.adamw for the 8-bit and the bfloat16 +
stochastic rounding states.

    python benchmarks/compile_time.py                 # -> benchmarks/out/compile_time.json
    python benchmarks/compile_time.py --repeats 1 --leaves 21 --only adamw8bit  # quick
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
import optax
from run_record import git_commit, utc_now

import adam_optax

TARGET = 3.0


def optimizers() -> dict[str, Callable[[], optax.GradientTransformation]]:
    """name -> a function that builds the transform (this adam_optax may lack some)."""
    bf16 = {"mu_dtype": jnp.bfloat16, "nu_dtype": jnp.bfloat16}
    return {
        "optax.adamw": lambda: optax.adamw(1e-3),
        "adamw": lambda: adam_optax.adamw(1e-3),
        "adamw bf16+SR": lambda: adam_optax.adamw(1e-3, **bf16, stochastic_rounding=True),
        "adamw8bit": lambda: adam_optax.adamw8bit(1e-3),
        "adamw8bit RTN": lambda: adam_optax.adamw8bit(1e-3, stochastic_rounding=False),
    }


def params(leaves: int = 200) -> dict[str, jax.ShapeDtypeStruct]:
    shapes = [(128, 256 + 32 * i) for i in range(7)]
    return {f"p{i:03d}": jax.ShapeDtypeStruct(shapes[i % 7], jnp.float32) for i in range(leaves)}


def compile_seconds(tx: optax.GradientTransformation, tree: Any) -> float:
    def step(p: Any, s: Any, g: Any) -> tuple[Any, Any]:
        updates, s = tx.update(g, s, p)
        return optax.apply_updates(p, updates), s

    state = jax.eval_shape(tx.init, tree)
    start = time.perf_counter()
    jax.jit(step, donate_argnums=(0, 1)).lower(tree, state, tree).compile()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--leaves", type=int, default=200)
    parser.add_argument("--only", default=None, help="comma-separated names to measure")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = parser.parse_args()
    tree, load_before = params(args.leaves), os.getloadavg()[0]
    makers = optimizers()
    names = ["optax.adamw", *(args.only.split(",") if args.only else list(makers)[1:])]
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.repeats):
        for name in names:
            jax.clear_caches()
            seconds[name].append(compile_seconds(makers[name](), tree))
            print(name, f"{seconds[name][-1]:.2f} s", file=sys.stderr, flush=True)
    base = statistics.median(seconds["optax.adamw"])
    result = {
        "leaves": args.leaves,
        "median_s": {k: statistics.median(v) for k, v in seconds.items()},
        "ratio_to_optax_adamw": {k: statistics.median(v) / base for k, v in seconds.items()},
        "samples_s": seconds,
        "environment": {
            "command": " ".join(["python benchmarks/compile_time.py", *sys.argv[1:]]),
            "date": utc_now(),
            "adam_optax_commit": git_commit(),
            "jax": jax.__version__,
            "cpus": os.cpu_count(),
            "load_before": load_before,
            "load_after": os.getloadavg()[0],
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compile_time.json").write_text(json.dumps(result, indent=1))
    for name, ratio in result["ratio_to_optax_adamw"].items():
        print(f"{name}: {result['median_s'][name]:.2f} s, {ratio:.2f}x optax.adamw")


if __name__ == "__main__":
    main()
