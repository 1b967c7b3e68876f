"""Compile time of a donated AdamW train step: on many leaves, and as the model gets deeper.

The time of ``jax.jit(step, donate_argnums=(0, 1)).lower(...).compile()`` (``step`` is
``update`` + ``optax.apply_updates``, from abstract shapes) for each set-up on two kinds
of tree:

- "200 leaves": 200 leaves of 7 shapes, (128, 256), (128, 288), ... (128, 448);
- "GPT-2-like 8 blocks" and "24 blocks": ``memory.gpt2_like`` (d_model 192), whose
  blocks have the same shapes, so a compile set by the distinct shapes takes as long at
  24 blocks as at 8.

Every compile is fresh (``jax.clear_caches()``); the set-ups take turns within each of
``--repeats`` rounds, and each figure is a median over the rounds, as wall-clock and as
this process's CPU time (the machine is shared; CPU time is less disturbed by others'
load). Ratios are to ``optax.adamw`` on the same tree, in the same process. Each
compile also records the compiled module's HLO instructions and its distinct fused
kernels (``tests.compiles.fused_kernels``), which do not depend on the machine.

Targets: ``adamw8bit``, ``adamw4bit`` and their ``master_weights`` at most 3x
``optax.adamw`` on 200 leaves; 24 blocks at most 1.5x 8 blocks.

    python benchmarks/compile_time.py      # -> benchmarks/results/compile_time.{md,json}
    python benchmarks/compile_time.py --repeats 1 --trees "200 leaves" --only adamw8bit
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax

import adam_optax

# After importing adam_optax, which may come from another checkout (PYTHONPATH):
# this repository's tests.compiles and benchmarks/memory.py.
sys.path.insert(0, str(Path(__file__).parents[1]))
sys.path.insert(0, str(Path(__file__).parent))
from memory import gpt2_like
from run_record import load_average, utc_now

from tests.compiles import fused_kernels

TARGET_RATIO, TARGET_DEPTH = 3.0, 1.5
BASELINE = "optax.adamw"


def setups() -> dict[str, tuple[Callable[[], optax.GradientTransformation], Any]]:
    """name -> (a function that builds the transform, the params dtype)."""
    bf16 = {"mu_dtype": jnp.bfloat16, "nu_dtype": jnp.bfloat16}
    return {
        BASELINE: (lambda: optax.adamw(1e-3), jnp.float32),
        "adamw8bit": (lambda: adam_optax.adamw8bit(1e-3), jnp.float32),
        "adamw8bit RTN": (
            lambda: adam_optax.adamw8bit(1e-3, stochastic_rounding=False),
            jnp.float32,
        ),
        "master_weights(adamw8bit), bf16 params": (
            lambda: adam_optax.master_weights(adam_optax.adamw8bit(1e-3)),
            jnp.bfloat16,
        ),
        "adamw bf16+SR": (
            lambda: adam_optax.adamw(1e-3, **bf16, stochastic_rounding=True),
            jnp.float32,
        ),
        "adamw4bit": (lambda: adam_optax.adamw4bit(1e-3), jnp.float32),
        "master_weights(adamw4bit), bf16 params": (
            lambda: adam_optax.master_weights(adam_optax.adamw4bit(1e-3)),
            jnp.bfloat16,
        ),
    }


def trees() -> dict[str, Any]:
    shapes = [(128, 256 + 32 * i) for i in range(7)]
    many = {f"p{i:03d}": jax.ShapeDtypeStruct(shapes[i % 7], jnp.float32) for i in range(200)}
    return {
        "200 leaves": many,
        "GPT-2-like 8 blocks": gpt2_like(blocks=8),
        "GPT-2-like 24 blocks": gpt2_like(blocks=24),
    }


def compile_once(tx: optax.GradientTransformation, tree: Any) -> dict[str, float]:
    """Wall and CPU seconds of one fresh compile, and what the compiled module holds."""

    def step(p: Any, s: Any, g: Any) -> tuple[Any, Any]:
        updates, s = tx.update(g, s, p)
        return optax.apply_updates(p, updates), s

    jax.clear_caches()
    state = jax.eval_shape(tx.init, tree)
    lowered = jax.jit(step, donate_argnums=(0, 1)).lower(tree, state, tree)
    wall, cpu = time.perf_counter(), time.process_time()
    compiled = lowered.compile()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    text = compiled.as_text() or ""
    kernels = fused_kernels(text)
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "hlo_instructions": len(re.findall(r"^\s*(?:ROOT )?%?[\w.\-]+ = ", text, re.M)),
        "fused_kernels": len(kernels),
        "distinct_kernels": len(set(kernels)),
    }


def checkout_commit() -> str:
    """The commit of the adam_optax checkout measured (which may not be this script's)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                              cwd=Path(adam_optax.__file__).parent,
                              capture_output=True, text=True, timeout=10)  # fmt: skip
        return head.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _load(average: float | None) -> str:
    return "unknown" if average is None else f"{average:.1f}"


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    median, tree_names = result["median"], list(result["median"])
    lines = [
        "# Compile time of a donated AdamW train step",
        "",
        f"`{env['command']}` at adam_optax {env['adam_optax_commit']}, {env['date']}, "
        f"jax {env['jax']}, {env['cpus']} CPUs shared with other jobs (load average "
        f"{_load(env['load_before'])} before, {_load(env['load_after'])} after). Medians of "
        f"{result['repeats']} fresh compiles per set-up, the set-ups taking turns; ratios "
        f"to {BASELINE} on the same tree in the same process. CPU is this process's CPU time.",
        "",
        f"Targets: at most {TARGET_RATIO:g}× {BASELINE} on 200 leaves; "
        f"24 blocks at most {TARGET_DEPTH:g}× 8 blocks.",
        "",
    ]
    for tree in tree_names:
        lines += [
            f"## {tree}",
            "",
            "| set-up | wall s | ÷ optax.adamw | CPU s | ÷ optax.adamw (CPU) "
            "| HLO instructions | CPU µs per instruction | fused kernels (distinct) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        base = median[tree][BASELINE]
        for name, m in median[tree].items():
            lines.append(
                f"| {name} | {m['wall_s']:.2f} | {m['wall_s'] / base['wall_s']:.2f} "
                f"| {m['cpu_s']:.2f} | {m['cpu_s'] / base['cpu_s']:.2f} "
                f"| {m['hlo_instructions']:,.0f} | {1e6 * m['cpu_s'] / m['hlo_instructions']:.0f} "
                f"| {m['fused_kernels']:.0f} ({m['distinct_kernels']:.0f}) |"
            )
        lines.append("")
    shallow, deep = "GPT-2-like 8 blocks", "GPT-2-like 24 blocks"
    if shallow in median and deep in median:
        lines += [
            "## Depth: 24 blocks ÷ 8 blocks of the same shapes",
            "",
            "| set-up | wall | CPU | distinct kernels, 8 → 24 blocks |",
            "|---|---|---|---|",
        ]
        for name in median[shallow]:
            a, b = median[shallow][name], median[deep][name]
            lines.append(
                f"| {name} | {b['wall_s'] / a['wall_s']:.2f} | {b['cpu_s'] / a['cpu_s']:.2f} "
                f"| {a['distinct_kernels']:.0f} → {b['distinct_kernels']:.0f} |"
            )
        lines.append("")
    if "before" in result:
        lines += comparison(result["before"], result)
    return "\n".join(lines)


def comparison(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Ratios to optax.adamw (CPU time) and distinct kernels, of an earlier run and this one."""
    old, new = before["environment"]["adam_optax_commit"], after["environment"]["adam_optax_commit"]
    lines = [
        f"## adam_optax {old} (run of {before['environment']['date']}) against {new}",
        "",
        f"CPU time ÷ {BASELINE}'s in the same run, and distinct fused kernels.",
        "",
        f"| tree | set-up | ÷ optax.adamw, {old} | ÷ optax.adamw, {new} "
        f"| distinct kernels, {old} → {new} |",
        "|---|---|---|---|---|",
    ]
    for tree, by_name in after["median"].items():
        if tree not in before["median"]:
            continue
        a0, b0 = before["median"][tree][BASELINE], by_name[BASELINE]
        for name, b in by_name.items():
            a = before["median"][tree].get(name)
            if name == BASELINE or a is None:
                continue
            ratio_a, ratio_b = a["cpu_s"] / a0["cpu_s"], b["cpu_s"] / b0["cpu_s"]
            lines.append(
                f"| {tree} | {name} | {ratio_a:.2f} | {ratio_b:.2f} "
                f"| {a['distinct_kernels']:.0f} → {b['distinct_kernels']:.0f} |"
            )
    return [*lines, ""]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default=None, help="comma-separated set-ups besides optax")
    parser.add_argument("--trees", default=None, help="comma-separated trees (default: all)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--stem", default="compile_time", help="the output files' name")
    parser.add_argument("--table", type=Path, help="rewrite the .md of this .json; measure nothing")
    parser.add_argument("--before", type=Path, help="an earlier run's .json to compare against")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    before = json.loads(args.before.read_text()) if args.before else None
    if args.table:
        result = json.loads(args.table.read_text()) | ({"before": before} if before else {})
        args.table.with_suffix(".md").write_text(markdown(result))
        return
    load_before, date = load_average(), utc_now()
    makers, all_trees = setups(), trees()
    names = [BASELINE, *(args.only.split(",") if args.only else list(makers)[1:])]
    tree_names = args.trees.split(",") if args.trees else list(all_trees)
    samples: dict[str, dict[str, list[dict[str, float]]]] = {
        t: {n: [] for n in names} for t in tree_names
    }
    for _ in range(args.repeats):
        for tree_name in tree_names:
            for name in names:
                make, dtype = makers[name]
                tree = jax.tree.map(
                    lambda s, dtype=dtype: jax.ShapeDtypeStruct(s.shape, dtype),
                    all_trees[tree_name],
                )
                sample = compile_once(make(), tree)
                samples[tree_name][name].append(sample)
                print(tree_name, "|", name, sample, file=sys.stderr, flush=True)

    def medians(runs: list[dict[str, float]]) -> dict[str, float]:
        return {k: statistics.median(s[k] for s in runs) for k in runs[0]}

    median = {t: {n: medians(runs) for n, runs in by.items()} for t, by in samples.items()}
    result = {
        "repeats": args.repeats,
        "median": median,
        "samples": samples,
        "environment": {
            "command": " ".join(["python benchmarks/compile_time.py", *argv]),
            "date": date,
            "adam_optax_commit": checkout_commit(),
            "adam_optax_path": str(Path(adam_optax.__file__).parent),
            "jax": jax.__version__,
            "cpus": os.cpu_count(),
            "load_before": load_before,
            "load_after": load_average(),
        },
    }
    if before:
        result["before"] = before
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.stem}.json").write_text(json.dumps(result, indent=1))
    table = markdown(result)
    (args.out / f"{args.stem}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
