#!/usr/bin/env python
"""Study: what the train step costs when it does not donate params and optimizer state.

``python benchmarks/donation.py`` times ``jax.jit(step, donate_argnums=...)`` of adam_optax
and optax on one float32 vector of 1e7 parameters with params and state donated ``(0, 1)``,
the state only ``(1,)``, or nothing ``()``, in interleaved rounds as bench_adam.py does. It
reports the median paired ratio to the fully donated step, and XLA's ``memory_analysis()``:
the bytes one call needs (arguments + outputs + temp - aliased) and the bytes aliased, that
is the donated inputs XLA reused for outputs. It writes donation.md and donation.json to
benchmarks/out/ (``--out benchmarks/results`` updates the published ones).
"""

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

from bench_adam import (
    DEFAULT_OUT,
    OPTIMIZERS,
    calibrate_steps,
    environment,
    flat_case,
    interleaved_rounds,
    log,
    make_case_data,
    optimizer_runner,
    paired_ratio,
    to_pytree,
)

DONATED = {"params+state": (0, 1), "state only": (1,), "none": ()}
MB = 1e6


def measure(n_params: int, rounds: int, round_seconds: float) -> list[dict]:
    """One row per optimizer and donation setting."""
    case = flat_case(n_params)
    params, grads = make_case_data(case)
    g = to_pytree(case, grads)
    settings = [(name, donated) for name in OPTIMIZERS for donated in DONATED]
    runners = [optimizer_runner(n, case, params, g, DONATED[d]) for n, d in settings]
    for (name, donated), runner in zip(settings, runners, strict=True):
        runner.compile()
        log(f"   {name} donating {donated}: compiled in {runner.compile_s:.2f} s")
    steps = [calibrate_steps(r, round_seconds) for r in runners]
    times = interleaved_rounds(runners, steps, rounds)
    full = {name: t for (name, d), t in zip(settings, times, strict=True) if d == "params+state"}
    rows = []
    for (name, donated), runner, t in zip(settings, runners, times, strict=True):
        mem = runner.compiled.memory_analysis()
        alias = mem.alias_size_in_bytes
        total = mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
        rows.append(
            {
                "case": case.name,
                "optimizer": name,
                "donated": donated,
                "median_ms": statistics.median(t) * 1e3,
                "vs_fully_donated": paired_ratio(t, full[name]),
                "total_mb": (total - alias) / MB,
                "alias_mb": alias / MB,
                "note": runner.note,
                "step_s": t,
            }
        )
    return rows


def report(env: dict, rows: Sequence[dict], rounds: int) -> str:
    lines = ["# Cost of not donating the train step", ""]
    lines += [f"- **{k}**: {v}" for k, v in env.items() if k not in ("torch", "load_1min_start")]
    lines += [
        f"- **system load** (1-min average) at start: {env['load_1min_start']}",
        f"- **rounds**: {rounds}",
        "",
        "Ratio = median over rounds of the paired ratio to the fully donated step of the same"
        " optimizer. Total = arguments + outputs + temp − aliased bytes of one call.",
        "",
        "| case | optimizer | donated | ms/step | ×fully donated | total MB | aliased MB | notes |",
        "|" + "---|" * 8,
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['optimizer']} | {r['donated']} | {r['median_ms']:.2f} "
            f"| {r['vs_fully_donated']:.2f} | {r['total_mb']:.1f} | {r['alias_mb']:.1f} "
            f"| {r['note']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--params", type=float, default=1e7, help="parameters (default 1e7)")
    p.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    p.add_argument("--round-seconds", type=float, default=0.25, help="per setting and round")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder (default benchmarks/out)")
    args = p.parse_args(argv)
    env = environment()
    rows = measure(int(args.params), args.rounds, args.round_seconds)
    text = report(env, rows, args.rounds)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "donation.md").write_text(text)
    (args.out / "donation.json").write_text(
        json.dumps({"environment": env, "rows": rows}, indent=1)
    )
    log(f"wrote donation.md, donation.json to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
