"""Bytes, bytes moved and step time of Adam's state choices: float32, bf16, bf16+SR, 8-, 4-bit.

For each choice of ``adam_optax`` state (and ``optax.adam``/``optax.adamw`` as references),
the compiled, donated optimizer step (``update`` + ``optax.apply_updates``, params and state
donated, grads as inputs) on a GPT-2-like tree of 11.8M params:
  - held: params + grads + state, bytes per parameter;
  - temporaries: ``compiled.memory_analysis().temp_size_in_bytes`` per parameter;
  - step peak: arguments + temporaries + outputs - aliased (donated outputs reuse inputs);
  - bytes accessed: ``compiled.cost_analysis()["bytes accessed"]`` per parameter, with each
    while loop counted once per iteration (see ``bytes_accessed``);
  - compile time, and the state bytes on a tree of leaves >= 4096 elements;
  - step time on a flat 2^23 vector and on the GPT-2-like tree: per round, each choice's
    median over a few steps; the ratio to ``optax.adam`` taken within a round (one
    process, interleaved rounds), and the median over rounds reported.
Targets for 8-bit, 4-bit and 16-bit state with stochastic rounding: see ``TARGETS``.

    python benchmarks/memory.py                           # -> benchmarks/out/
    python benchmarks/memory.py --out benchmarks/results  # update the published results
    python benchmarks/memory.py --quick                   # smaller trees, 3 rounds
    python benchmarks/memory.py --training                # params + grads + state
"""

from __future__ import annotations

import argparse
import json
import os
import re
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

TARGETS = {  # on this CPU: (set-up, figure, at most, what it is)
    "state": ("8-bit", "state_large", 2.04, "B/param of state on leaves >= 4096"),
    "temp 8-bit": ("adamw8bit", "temp", 0.5, "B/param of temporaries, GPT-2-like"),
    "temp bf16+SR": ("adamw bf16+SR", "temp", 0.5, "B/param of temporaries, GPT-2-like"),
    "temp float32": ("float32", "temp", 0.0, "B/param of temporaries, GPT-2-like"),
    "bytes": ("8-bit", "bytes", 22.0, "B/param accessed, GPT-2-like"),
    "time flat": ("8-bit", "time_flat", 2.0, "× optax.adam's step time, flat (goal 1.5)"),
    "time tree": ("8-bit", "time_tree", 2.0, "× optax.adam's step time, GPT-2-like (goal 1.5)"),
    "state 4-bit": ("4-bit", "state_large", 1.07, "B/param of state on leaves >= 4096"),
    "temp 4-bit": ("adamw4bit", "temp", 0.5, "B/param of temporaries, GPT-2-like"),
    "time 4-bit flat": ("4-bit", "time_flat/8-bit", 1.2, "× 8-bit's step time, flat"),
    "time 4-bit tree": ("4-bit", "time_tree/8-bit", 1.2, "× 8-bit's step time, GPT-2-like"),
}


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
        "optax.adamw": optax.adamw(1e-3),
        "adamw bf16+SR": adam_optax.adamw(1e-3, **bf16, stochastic_rounding=True),
        "adamw8bit": adam_optax.adamw8bit(1e-3),
        "4-bit": adam_optax.adam4bit(1e-3),
        "4-bit RTN": adam_optax.adam4bit(1e-3, stochastic_rounding=False),
        "adamw4bit": adam_optax.adamw4bit(1e-3),
    }


def large_leaves() -> dict[str, jax.ShapeDtypeStruct]:
    """Leaves of >= 4096 elements, one whose last axis 256 does not divide."""
    shapes = {"embed": (8192, 512), "dense": (1024, 1024), "odd": (1000, 1001), "v": (4096,)}
    return {k: jax.ShapeDtypeStruct(s, jnp.float32) for k, s in shapes.items()}


def gpt2_like(d: int = 192, vocab: int = 8192, context: int = 1024, blocks: int = 12) -> dict:
    """GPT-2-small's leaves with d_model 768 -> d: matrices plus many small biases and norms.

    d = 256 (the state table's tree) has 11,836,928 params, 8192 x 256 the largest leaf.
    """

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


_WHILE = re.compile(r"while\(.*body=%?([\w.\-]+).*\"known_trip_count\":\{\"n\":\"(\d+)\"")


def bytes_accessed(compiled: Any) -> tuple[float, int]:
    """XLA's "bytes accessed" of a compiled step, each while loop counted per iteration.

    XLA's cost analysis counts a while loop's body once, whatever its trip count: a
    ``fori_loop`` of k iterations that each read and write one chunk reports one
    chunk's bytes (checked by ``tests/test_benchmark.py``). So for each while loop
    with a known trip count, the body's cost (its computation analysed as a module
    of its own) is added trip count - 1 more times. Returns (bytes, loops found).
    """
    cost = compiled.cost_analysis()
    total = float((cost[0] if isinstance(cost, list) else cost)["bytes accessed"])
    text = compiled.as_text()
    loops = _WHILE.findall(text)
    if loops:
        from jax._src.lib import xla_client

        client = jax.devices()[0].client
        header = re.compile(r"\AHloModule [^\n]*")
        for body, trips in loops:  # the body as the entry of a module of its own
            module = header.sub("HloModule body", text).replace("ENTRY %", "%")
            module = re.sub(rf"^%{re.escape(body)} ", f"ENTRY %{body} ", module, flags=re.M)
            parsed = xla_client.hlo.hlo_module_from_text(module)
            once = xla_client._xla.hlo_module_cost_analysis(client, parsed)["bytes accessed"]
            total += (int(trips) - 1) * once
    return total, len(loops)


def step_memory(tx: optax.GradientTransformation, params: Any) -> dict[str, float]:
    """The compiled, donated step's bytes per parameter, from shapes alone (grads like params)."""
    state = jax.eval_shape(tx.init, params)
    n = size(params)
    start = time.perf_counter()
    compiled = train_step(tx).lower(params, state, params).compile()
    compile_s = time.perf_counter() - start
    a = compiled.memory_analysis()
    peak = a.argument_size_in_bytes + a.temp_size_in_bytes + a.output_size_in_bytes
    moved, loops = bytes_accessed(compiled)
    return {
        "state": nbytes(state) / n,
        "held": (2 * nbytes(params) + nbytes(state)) / n,
        "temp": a.temp_size_in_bytes / n,
        "peak": (peak - a.alias_size_in_bytes) / n,
        "bytes": moved / n,
        "loops": loops,
        "compile_s": compile_s,
    }


def step_times(
    txs: dict[str, optax.GradientTransformation], shapes: Any, rounds: int, samples: int = 5
) -> dict:
    """Donated steps on ``shapes``: per round, each choice's median step time."""
    key = jax.random.key(0)
    grads = jax.tree.map(lambda s: 0.01 * jax.random.normal(key, s.shape), shapes)
    runs = {}
    for name, tx in txs.items():
        params = jax.tree.map(
            lambda s: 0.02 * jax.random.normal(jax.random.fold_in(key, 1), s.shape), shapes
        )
        step = train_step(tx)
        runs[name] = [step, *jax.block_until_ready(step(params, tx.init(params), grads))]
    times: dict[str, list[float]] = {name: [] for name in txs}
    for r in range(rounds):
        order = list(txs)[r % len(txs) :] + list(txs)[: r % len(txs)]  # rotate the order
        for name in order:
            step, params, state = runs[name]
            measured = []
            for _ in range(samples):
                start = time.perf_counter()
                params, state = jax.block_until_ready(step(params, state, grads))
                measured.append(time.perf_counter() - start)
            runs[name][1:] = params, state
            times[name].append(statistics.median(measured))
    base = times["optax.adam"]
    return {
        name: {
            "median_ms": 1e3 * statistics.median(t),
            "ratio_to_optax": statistics.median(a / b for a, b in zip(t, base, strict=True)),
            "ratios_per_round": [a / b for a, b in zip(t, base, strict=True)],
        }
        for name, t in times.items()
    }


def figure(choices: dict[str, Any], choice: str, field: str) -> float:
    """A TARGETS field of a choice's results: its state, a GPT-2-like figure, or a ratio of
    step times, to optax.adam's or ("time_flat/8-bit") the median over rounds of the ratio
    to another choice's in the same round."""
    row = choices[choice]
    if field == "state_large":
        return row[field]
    if "/" in field:
        field, other = field.split("/")
        mine, theirs = row[field]["ratios_per_round"], choices[other][field]["ratios_per_round"]
        pairs = zip(mine, theirs, strict=True)
        return statistics.median(a / b for a, b in pairs)
    if field.startswith("time"):
        return row[field]["ratio_to_optax"]
    return row["tree"][field]


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [
        "# Memory, bytes moved and step time of Adam's state choices",
        "",
        run_line(env),
        "",
        "The compiled optimizer step (`update` + `optax.apply_updates`, params and state "
        f"donated, grads as inputs) on a GPT-2-like tree of {result['mixed_params']:,} "
        "params; bytes per parameter. Held: params + grads + state. Step peak: arguments + "
        "temporaries + outputs - aliased. Bytes accessed: XLA's cost analysis, each while "
        "loop counted once per iteration (XLA counts a loop body once; the benchmark adds "
        "the rest). Step time: the median over "
        f"{result['rounds']} interleaved rounds of the ratio to optax.adam in the same round, "
        f"on flat {result['n']:,} float32 and on the GPT-2-like tree.",
        "",
        "| set-up | state, leaves >= 4096 | held | temporaries | step peak | bytes accessed "
        "| compile s | step ÷ optax.adam, flat | step ÷ optax.adam, GPT-2-like "
        "| step ms, flat / tree |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in result["choices"].items():
        t = row["tree"]
        lines.append(
            f"| {name} | {row['state_large']:.3f} | {t['held']:.2f} | {t['temp']:.3f} "
            f"| {t['peak']:.2f} | {t['bytes']:.1f} | {t['compile_s']:.1f} "
            f"| {row['time_flat']['ratio_to_optax']:.2f} "
            f"| {row['time_tree']['ratio_to_optax']:.2f} "
            f"| {row['time_flat']['median_ms']:.1f} / {row['time_tree']['median_ms']:.1f} |"
        )
    flat = ", ".join(f"{name} {row['flat']['temp']:.3f}" for name, row in result["choices"].items())
    lines += ["", f"Temporaries on flat {result['n']:,} (B/param): {flat}."]
    lines += ["", "Targets:", ""]
    for choice, field, target, what in TARGETS.values():
        value = figure(result["choices"], choice, field)
        met = "met" if round(value, 3) <= target else "**not met**"
        lines.append(f"- {choice}: {value:.3f} {what} (target <= {target}): {met}")
    return "\n".join(lines) + "\n"


# --- Training memory: params + grads + state (the 7-byte set-up) -----------------------
# Separate from the state-choice table above: run with --training.

TRAINING_TARGETS = {  # (set-up, figure): at most, B/param, with bfloat16 params and grads
    ("master_weights(adamw8bit), bfloat16", "held"): 7.2,
    ("master_weights(adamw8bit), bfloat16", "checkpoint"): 5.1,
    ("master_weights(adamw4bit), bfloat16", "held"): 6.15,
}


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
        "master_weights(adamw4bit), bfloat16": Setup(
            jnp.bfloat16, jnp.bfloat16, lambda: mw(adam_optax.adamw4bit(1e-3))
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
    (float32), of master_weights(adamw4bit) against master_weights(adamw8bit), and of
    master_weights(sgd) against sgd (the wrapper's own cost): per round, each one's
    median; ratios taken within a round, the rounds' median reported."""
    mw = adam_optax.master_weights
    runs = {
        "optax.adamw": (jnp.float32, lambda: optax.adamw(1e-3)),
        "adamw8bit": (jnp.float32, lambda: adam_optax.adamw8bit(1e-3)),
        "master_weights(adamw8bit)": (jnp.bfloat16, lambda: mw(adam_optax.adamw8bit(1e-3))),
        "master_weights(adamw4bit)": (jnp.bfloat16, lambda: mw(adam_optax.adamw4bit(1e-3))),
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
        "master_weights(adamw4bit) / master_weights(adamw8bit)": ratio(
            "master_weights(adamw4bit)", "master_weights(adamw8bit)"
        ),
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
        f"{run_line(env)} GPT-2-like tree "
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
    lines += ["", "Targets, with bfloat16 params and grads:", ""]
    for (name, key), target in TRAINING_TARGETS.items():
        value = result["setups"][name][key]
        met = "met" if value <= target else "**not met**"
        what = "held across steps" if key == "held" else key
        lines.append(f"- {name}: {value:.2f} B/param {what} (target <= {target}): {met}")
    for tree, timing in result["time"].items():
        lines += ["", f"Step time, {tree} (median ms over {result['rounds']} rounds):", ""]
        lines.append(", ".join(f"{k} {v:.1f}" for k, v in timing["ms"].items()))
        lines.append("")
        for key, value in timing.items():
            if key != "ms":
                lines.append(f"- {key}: {value:.2f}×")
    return "\n".join(lines) + "\n"


def run_line(env: dict[str, Any]) -> str:
    """The sentence a results file opens with: the command, commit, date, jax and load."""
    return (
        f"`{env['command']}` at adam_optax {env['adam_optax_commit']}, "
        f"{env.get('date', 'date not recorded')}: jax {env['jax']}, {env['cpus']} CPUs, load "
        f"average {env['load_before']:.1f} before / {env['load_after']:.1f} after (shared "
        "machine)."
    )


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
    parser.add_argument("--quick", action="store_true", help="smaller trees, 3 rounds")
    parser.add_argument("--rounds", type=int, default=None, help="default 7 (3 with --quick)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    parser.add_argument("--training", action="store_true", help="params+grads+state instead")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if args.training:
        return training_main(args, argv)
    n, d, rounds = (2**20, 128, 3) if args.quick else (2**23, 256, 7)
    rounds = args.rounds or rounds
    load_before, commit = os.getloadavg()[0], git_commit()
    txs = optimizers()
    tree = gpt2_like(d=d)
    flat = jax.ShapeDtypeStruct((n,), jnp.float32)
    choices: dict[str, dict[str, Any]] = {name: {} for name in txs}
    for name, tx in txs.items():
        row = choices[name]
        row["state_large"] = nbytes(jax.eval_shape(tx.init, large_leaves())) / size(large_leaves())
        row["tree"] = step_memory(tx, tree)
        row["flat"] = step_memory(tx, flat)
        print(name, row, file=sys.stderr, flush=True)
    for key, shapes in (("time_flat", flat), ("time_tree", tree)):
        for name, timing in step_times(txs, shapes, rounds).items():
            choices[name][key] = timing
    result = {
        "n": n,
        "rounds": rounds,
        "mixed_params": size(tree),
        "choices": choices,
        "environment": environment(argv, commit, load_before),
    }
    write(args.out, "memory", result, markdown(result))


if __name__ == "__main__":
    main()
