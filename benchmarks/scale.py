#!/usr/bin/env python
"""Memory per device and step time of data-parallel AdamW, unsharded vs shard_state.

    python benchmarks/scale.py                           # 8 CPU devices, writes to benchmarks/out/
    python benchmarks/scale.py --out benchmarks/results  # publish scale.json and scale.md

A train step of an MLP (float32, replicated params, the batch split over a "data" axis of
every device) with `adam_optax.adamw`, once with its state as optax leaves it (replicated,
like the params) and once under `adam_optax.shard_state`. For each it reports the state
bytes one device holds (from the arrays' addressable shards), the compiled step's
per-device argument bytes (`memory_analysis()`), and the step time: interleaved rounds,
medians, and the median of the per-round ratios. Every step is blocked on, as the tests
do, so that collectives across CPU devices sharing few cores do not starve.

On CPU it makes its own devices (--devices, default 8). On a GPU or TPU cluster, run one
copy per host with --distributed: it calls `jax.distributed.initialize()` with no
arguments (Cloud TPU and SLURM fill them in) and uses every device of every host.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=8, help="CPU devices to make (not on GPU/TPU)")
    p.add_argument("--distributed", action="store_true", help="jax.distributed.initialize()")
    p.add_argument("--width", type=int, default=1024, help="hidden width of the MLP")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--batch", type=int, default=64, help="global batch size")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=5, help="steps per variant per round")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    args = p.parse_args(argv)
    os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={args.devices}")

    import jax  # after XLA_FLAGS: it fixes the number of CPU devices
    import numpy as np
    import optax
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    import adam_optax

    if args.distributed:
        jax.distributed.initialize()
    mesh = Mesh(np.array(jax.devices()), ("data",))
    n = mesh.size
    rng = np.random.default_rng(0)
    w = args.width
    host_params = [
        {"w": rng.normal(size=(w, w)).astype("f4") / w**0.5, "b": np.zeros(w, "f4")}
        for _ in range(args.layers)
    ]
    host_batch = rng.normal(size=(args.batch, args.width)).astype("f4")

    def put(x, spec):
        return jax.make_array_from_callback(x.shape, NamedSharding(mesh, spec), lambda i: x[i])

    def loss(params, x):
        for layer in params:
            x = jax.nn.tanh(x @ layer["w"] + layer["b"])
        return (x**2).mean()

    variants = {
        "unsharded": adam_optax.adamw(1e-3),
        "shard_state": adam_optax.shard_state(adam_optax.adamw(1e-3), mesh),
    }
    runs, rows = {}, {}
    for name, tx in variants.items():
        params = jax.tree.map(lambda a: put(a, P()), host_params)
        batch = put(host_batch, P("data"))
        state = tx.init(params)

        def step(params, state, x, tx=tx):
            updates, state = tx.update(jax.grad(loss)(params, x), state, params)
            return optax.apply_updates(params, updates), state

        step = jax.jit(step, donate_argnums=(0, 1))
        compiled = step.lower(params, state, batch).compile()
        device = jax.local_devices()[0]
        state_bytes = sum(
            s.data.nbytes
            for leaf in jax.tree.leaves(state)
            for s in leaf.addressable_shards
            if s.device == device
        )
        rows[name] = {
            "state_bytes_per_device": state_bytes,
            "argument_bytes_per_device": compiled.memory_analysis().argument_size_in_bytes,
            "seconds_per_step": [],
        }
        params, state = jax.block_until_ready(step(params, state, batch))  # warm up
        runs[name] = [params, state, batch, step]

    for r in range(args.rounds):
        for name in list(runs)[r % 2 :] + list(runs)[: r % 2]:  # alternate who goes first
            params, state, batch, step = runs[name]
            start = time.perf_counter()
            for _ in range(args.steps):
                params, state = jax.block_until_ready(step(params, state, batch))
            rows[name]["seconds_per_step"].append((time.perf_counter() - start) / args.steps)
            runs[name][:2] = params, state

    times = {name: row.pop("seconds_per_step") for name, row in rows.items()}
    ratios = [s / u for s, u in zip(times["shard_state"], times["unsharded"], strict=True)]
    ratio = statistics.median(ratios)
    for name, row in rows.items():
        row["median_ms_per_step"] = 1e3 * statistics.median(times[name])
    num_params = sum(a.size for a in jax.tree.leaves(host_params))
    result = {
        "devices": n,
        "platform": jax.devices()[0].platform,
        "params": num_params,
        "jax": jax.__version__,
        "rows": rows,
        "step_time_ratio_shard_state_over_unsharded": ratio,
        "command": "python benchmarks/scale.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    table = [
        f"{num_params:,} float32 params, adamw, {n} {result['platform']} devices, "
        f"{args.rounds} interleaved rounds of {args.steps} steps (jax {jax.__version__})",
        "",
        "| state | state bytes per device | argument bytes per device | ms per step |",
        "|---|---|---|---|",
        *(
            f"| {name} | {row['state_bytes_per_device']:,} | "
            f"{row['argument_bytes_per_device']:,} | {row['median_ms_per_step']:.1f} |"
            for name, row in rows.items()
        ),
        "",
        f"step time, shard_state / unsharded: {ratio:.2f} (median of rounds)",
    ]
    if jax.process_index() == 0:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "scale.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / "scale.md").write_text("\n".join(table) + "\n")
        print("\n".join(table), f"\nwritten to {args.out}/scale.json and scale.md", sep="\n")


if __name__ == "__main__":
    main()
