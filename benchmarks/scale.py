#!/usr/bin/env python
"""Memory per device and step time of data-parallel AdamW: unsharded, shard_state, offload_state.

    python benchmarks/scale.py                           # 8 CPU devices, writes to benchmarks/out/
    python benchmarks/scale.py --out benchmarks/results  # publish scale.json and scale.md

A train step of an MLP (float32, replicated params, the batch split over a "data" axis of
every device) with `adam_optax.adamw`: its state as optax leaves it (replicated, like the
params), under `adam_optax.shard_state`, `shard_state` of `adamw8bit`, and under
`adam_optax.offload_state` alone and around `shard_state`. For each it reports the state
bytes one device holds (from the arrays' addressable shards, split by memory kind) next to
the formula's, the compiled step's per-device argument bytes (`memory_analysis()`, with
the host bytes where the backend splits them out), and the step time: interleaved rounds,
medians, and the median of the per-round ratios to the unsharded step. The offload
figures that matter (device memory saved, the cost of the transfers) need a GPU or TPU:
on CPU, host and device memory are the same RAM. Every step is blocked on, as the tests
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
    from run_record import git_commit, load_average, utc_now

    import adam_optax

    date, commit, load_before = utc_now(), git_commit(), load_average()
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

    num_weights = sum(a["w"].size for a in host_params)  # quantized by adamw8bit
    num_params = sum(a.size for a in jax.tree.leaves(host_params))
    num_biases = num_params - num_weights  # below min_quantized_size: float32 moments
    count = 4  # the int32 step count, replicated
    eight_bit = 2 * (
        1 + 4 / 256
    )  # per weight: two moments of uint8 codes + a float32 scale per 256
    # Each row: the transform, and its state bytes per device from the formula (device
    # memory, host memory), for Ψ params on n devices.
    variants = {
        "unsharded": (adam_optax.adamw(1e-3), (8 * num_params + count, 0)),
        "shard_state": (
            adam_optax.shard_state(adam_optax.adamw(1e-3), mesh),
            (8 * num_params / n + count, 0),
        ),
        "shard_state(adamw8bit)": (
            adam_optax.shard_state(adam_optax.adamw8bit(1e-3), mesh),
            ((eight_bit * num_weights + 8 * num_biases) / n + count, 0),
        ),
        # bfloat16 params (their name says so): an int8 correction per param, 8-bit moments.
        "shard_state(master_weights(adamw8bit)), bf16 params": (
            adam_optax.shard_state(adam_optax.master_weights(adam_optax.adamw8bit(1e-3)), mesh),
            ((num_params + eight_bit * num_weights + 8 * num_biases) / n + count, 0),
        ),
        "offload_state": (
            adam_optax.offload_state(adam_optax.adamw(1e-3)),
            (0, 8 * num_params + count),
        ),
        "offload_state(shard_state)": (
            adam_optax.offload_state(adam_optax.shard_state(adam_optax.adamw(1e-3), mesh)),
            (0, 8 * num_params / n + count),
        ),
    }
    device = jax.local_devices()[0]
    runs, rows = {}, {}
    for name, (tx, (formula_device, formula_host)) in variants.items():
        dtype = jax.numpy.bfloat16 if "bf16 params" in name else np.float32
        params = jax.tree.map(lambda a, d=dtype: put(a.astype(d), P()), host_params)
        batch = put(host_batch, P("data"))
        state = tx.init(params)

        def step(params, state, x, tx=tx):
            updates, state = tx.update(jax.grad(loss)(params, x), state, params)
            return optax.apply_updates(params, updates), state

        step = jax.jit(step, donate_argnums=(0, 1))
        memory = step.lower(params, state, batch).compile().memory_analysis()
        held = {"device": 0, "pinned_host": 0}  # what device 0 holds of the state, by memory
        for leaf in jax.tree.leaves(state):
            for shard in leaf.addressable_shards:
                if shard.device == device:
                    held[leaf.sharding.memory_kind or "device"] += shard.data.nbytes
        rows[name] = {
            "state_bytes_per_device": held["device"],
            "state_host_bytes_per_device": held["pinned_host"],
            "formula_state_bytes_per_device": round(formula_device),
            "formula_state_host_bytes_per_device": round(formula_host),
            "argument_bytes_per_device": memory.argument_size_in_bytes,
            "host_argument_bytes_per_device": memory.host_argument_size_in_bytes,
            "temp_bytes_per_device": memory.temp_size_in_bytes,
            "host_temp_bytes_per_device": memory.host_temp_size_in_bytes,
            "seconds_per_step": [],
        }
        params, state = jax.block_until_ready(step(params, state, batch))  # warm up
        runs[name] = [params, state, batch, step]

    names = list(runs)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate who goes first
            params, state, batch, step = runs[name]
            start = time.perf_counter()
            for _ in range(args.steps):
                params, state = jax.block_until_ready(step(params, state, batch))
            rows[name]["seconds_per_step"].append((time.perf_counter() - start) / args.steps)
            runs[name][:2] = params, state

    times = {name: row.pop("seconds_per_step") for name, row in rows.items()}
    for name, row in rows.items():
        row["median_ms_per_step"] = 1e3 * statistics.median(times[name])
        ratios = [t / u for t, u in zip(times[name], times["unsharded"], strict=True)]
        row["step_time_ratio_over_unsharded"] = statistics.median(ratios)
    platform = jax.devices()[0].platform
    result = {
        "devices": n,
        "platform": platform,
        "params": num_params,
        "jax": jax.__version__,
        "rows": rows,
        "command": "python benchmarks/scale.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": date,
        "adam_optax_commit": commit,
        "load_before": load_before,
        "load_after": load_average(),
    }

    def line(name: str, row: dict) -> str:
        held = row["state_bytes_per_device"] + row["state_host_bytes_per_device"]
        formula = row["formula_state_bytes_per_device"] + row["formula_state_host_bytes_per_device"]
        return (
            f"| {name} | {held:,} ({formula:,}) | {row['state_host_bytes_per_device']:,} | "
            f"{row['argument_bytes_per_device']:,} ({row['host_argument_bytes_per_device']:,}) | "
            f"{row['median_ms_per_step']:.1f} | {row['step_time_ratio_over_unsharded']:.2f} |"
        )

    table = [
        "# State bytes and step time of shard_state and offload_state",
        "",
        f"`{result['command'].strip()}` at adam_optax {commit}, {date}: jax {jax.__version__}, "
        f"{os.cpu_count()} CPUs, load average {load_before} before / {result['load_after']} after.",
        "",
        f"{num_params:,} float32 params, adamw, {n} {platform} devices, "
        f"{args.rounds} interleaved rounds of {args.steps} steps (jax {jax.__version__})",
        "",
        "| state | state bytes per device: measured (formula) | of which in host memory | "
        "argument bytes per device (host) | ms per step | ÷ unsharded |",
        "|---|---|---|---|---|---|",
        *(line(name, row) for name, row in rows.items()),
        "",
        "Step-time ratios are medians of the per-round ratios. On CPU, host and device memory "
        "are the same RAM: offload's transfers are copies in RAM and memory_analysis() may not "
        "split host bytes out, so the figures a user of offload_state cares about (device "
        "bytes saved, step time with the transfers over PCIe) need a GPU or TPU.",
    ]
    if jax.process_index() == 0:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "scale.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / "scale.md").write_text("\n".join(table) + "\n")
        print("\n".join(table), f"\nwritten to {args.out}/scale.json and scale.md", sep="\n")


if __name__ == "__main__":
    main()
