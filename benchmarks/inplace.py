#!/usr/bin/env python
"""Study: a chunked, in-place step engine for the 8-bit and 16-bit state, on XLA:CPU.

``storage.apply(step, g, moments, key)`` is the per-leaf engine of every Adam variant. This
study swaps in a second engine with the same interface and measures both in one process.
The second engine writes a large leaf's moments in place: a ``lax.fori_loop`` over chunks of
whole blocks (about 2^15 elements) whose carry is the stored moments (donated). Each
iteration slices its chunk of g and of the old moments, steps (``transforms._adam_step``),
takes the new blocks' exact absmax, encodes, and writes codes and scales back with
``dynamic_update_slice``; 16-bit moments are written with stochastic rounding. Where the
update goes is the question, since ``apply`` must return it to the caller's
``optax.apply_updates``:

- ``loop, update outside``: the update is computed from g and the old moments, fused into
  the caller's ``apply_updates`` as today; the loop writes only the moments.
- ``loop, update in g``: the loop also writes each chunk's update into g's buffer, carried
  through the loop, and returns it.

Leaves under two chunks keep the library's engine. The random bits of stochastic rounding
are drawn per chunk (the chunk's start folded into the key), so the stream differs from the
library's; the figures here do not depend on it.

Measured, bytes per parameter: the compiled, donated optimizer step's temporaries and bytes
accessed (``memory.bytes_accessed``: each loop counted once per iteration) on a flat 2^23
vector and on memory.py's GPT-2-like tree (d 256, 11.8M params); the temporaries of a whole
jitted train step (loss, grad, update, apply) of a 16 x 1024^2 tanh MLP, batch 8; the step
time of ``adam8bit`` on flat 2^23 against ``optax.adam`` (paired rounds); and the compiled
HLO that explains them. Results: ``results/inplace.md`` and ``.json``.

    python benchmarks/inplace.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import math
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
from memory import bytes_accessed, environment, gpt2_like, run_line, size, train_step, write
from run_record import git_commit

import adam_optax
from adam_optax import storage

CHUNK = 1 << 15  # elements per iteration, about
LIBRARY_APPLY = storage.apply


def _chunking(shape: tuple[int, ...], block_size: int | None) -> tuple[tuple[int, ...], int]:
    """(view, units per chunk): a flat view when blocks are contiguous, else (rows, n)."""
    block = None if block_size is None else min(block_size, shape[-1])
    rows = math.prod(shape[:-1])
    if block is None or shape[-1] % block == 0 or rows == 1:
        per = CHUNK if block is None else max(1, CHUNK // block) * block
        return (math.prod(shape),), per
    return (rows, shape[-1]), max(1, CHUNK // shape[-1])


def chunked_apply(update_in_loop: bool) -> Callable:
    """An engine with ``storage.apply``'s interface that writes large leaves in place."""

    def apply(step, g, moments, key=None, **options):
        present = [i for i, m in enumerate(moments) if m is not None]
        quantized = [i for i in present if storage.is_quantized(moments[i])]
        narrow = quantized or any(moments[i].dtype == jnp.bfloat16 for i in present)
        block_size = moments[quantized[0]].block_size if quantized else None
        flags = options.get("round_up") or (False,) * len(moments)
        rounded_up = any(f for f, m in zip(flags, moments, strict=True) if m is not None)
        if not narrow or g.ndim == 0 or g.size == 0 or rounded_up:
            return LIBRARY_APPLY(step, g, moments, key, **options)
        view, per = _chunking(tuple(g.shape), block_size)
        if view[0] // per < 2:
            return LIBRARY_APPLY(step, g, moments, key, **options)
        block = None if block_size is None else min(block_size, g.shape[-1])
        keys = [None if key is None else storage.fold_in(key, i) for i in range(len(moments))]

        def scales_view(m):
            return m.scales.reshape(-1) if len(view) == 1 else m.scales.reshape(view[0], -1)

        carry = [
            (moments[i].codes.reshape(view), scales_view(moments[i]))
            if i in quantized
            else (moments[i].reshape(view), None)
            for i in present
        ]
        g_all = g.reshape(view)

        def rows(x, start, count):
            return jax.lax.dynamic_slice_in_dim(x, start, count, axis=0)

        def piece(start, count, carry):
            g_view, carry = carry
            scale_start, scale_count = start, count
            if len(view) == 1 and block is not None:
                scale_start, scale_count = start // block, -(-count // block)
            olds: list[Any] = [None] * len(moments)
            for i, (x, scales) in zip(present, carry, strict=True):
                m = moments[i]
                if i in quantized:
                    codes = rows(x, start, count)
                    olds[i] = storage.QuantizedArray(
                        codes, rows(scales, scale_start, scale_count), codes.shape, m.signed, block
                    )
                else:
                    olds[i] = rows(x, start, count)
            g_piece = rows(g_view if update_in_loop else g_all, start, count)
            # The chunk copied out of the buffers written below, so that XLA need not
            # copy whole buffers to order these reads before those writes.
            g_piece, olds = jax.lax.optimization_barrier((g_piece, olds))
            decoded = [storage.dequantize_array(m) if storage.is_quantized(m) else m for m in olds]
            update, *new = step(g_piece, *decoded)
            if update_in_loop:
                g_view = jax.lax.dynamic_update_slice_in_dim(g_view, update, start, 0)
            tops = {}
            if quantized:
                maxima = storage._finite_block_absmax(
                    *((new[i],) for i in quantized), block_size=block
                )
                tops = dict(zip(quantized, maxima, strict=True))
            out = []
            for i, (x, scales) in zip(present, carry, strict=True):
                k = None if keys[i] is None else storage.fold_in(keys[i], start)
                if i in quantized:
                    q = storage._encode_with((new[i],), tops[i], olds[i].signed, block, 8, k)
                    x = jax.lax.dynamic_update_slice_in_dim(x, q.codes, start, 0)
                    scales = jax.lax.dynamic_update_slice_in_dim(scales, q.scales, scale_start, 0)
                else:
                    value = storage._write_plain(new[i], olds[i], k)
                    x = jax.lax.dynamic_update_slice_in_dim(x, value, start, 0)
                out.append((x, scales))
            return g_view, out

        count, tail = divmod(view[0], per)
        state = (g_all if update_in_loop else jnp.zeros(()), carry)
        state = jax.lax.fori_loop(0, count, lambda j, s: piece(j * per, per, s), state)
        if tail:
            state = piece(count * per, tail, state)
        update, carry = state
        if not update_in_loop:
            old = [storage.dequantize_array(m) if storage.is_quantized(m) else m for m in moments]
            update = step(g, *old)[0]  # fuses into the caller's apply_updates
        stored: list[Any] = [update.reshape(g.shape), *moments]
        for i, (x, scales) in zip(present, carry, strict=True):
            m = moments[i]
            if i in quantized:
                stored[1 + i] = storage.QuantizedArray(
                    x.reshape(m.shape),
                    scales.reshape(m.scales.shape),
                    m.shape,
                    m.signed,
                    m.block_size,
                )
            else:
                stored[1 + i] = x.reshape(m.shape)
        return tuple(stored)

    return apply


ENGINES = {
    "library": LIBRARY_APPLY,
    "loop, update outside": chunked_apply(update_in_loop=False),
    "loop, update in g": chunked_apply(update_in_loop=True),
}


def use(engine: str) -> None:
    """Every later trace of the Adam leaf step runs ``engine``."""
    storage.apply = ENGINES[engine]
    jax.clear_caches()  # the jitted leaf step was traced with the engine of its time


def set_ups() -> dict[str, Callable[[], optax.GradientTransformation]]:
    bf16 = {"mu_dtype": jnp.bfloat16, "nu_dtype": jnp.bfloat16}
    return {
        "adamw8bit": lambda: adam_optax.adamw8bit(1e-3),
        "adamw bf16+SR": lambda: adam_optax.adamw(1e-3, **bf16, stochastic_rounding=True),
    }


def optimizer_step(make: Callable, shapes: Any) -> dict[str, float]:
    tx = make()
    compiled = train_step(tx).lower(shapes, jax.eval_shape(tx.init, shapes), shapes).compile()
    moved, loops = bytes_accessed(compiled)
    n = size(shapes)
    return {"temp": compiled.memory_analysis().temp_size_in_bytes / n, "bytes": moved / n,
            "loops": loops}  # fmt: skip


def whole_train_step(make: Callable, layers: int = 16, width: int = 1024) -> float:
    """Temporaries (B/param) of a jitted loss-grad-update-apply step of a tanh MLP."""
    params = {f"w{i}": jax.ShapeDtypeStruct((width, width), jnp.float32) for i in range(layers)}
    tx = make()

    def loss(p, x):
        for i in range(layers):
            x = jnp.tanh(x @ p[f"w{i}"])
        return jnp.mean(x**2)

    def step(p, s, x):
        u, s = tx.update(jax.grad(loss)(p, x), s, p)
        return optax.apply_updates(p, u), s

    x = jax.ShapeDtypeStruct((8, width), jnp.float32)
    state = jax.eval_shape(tx.init, params)
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, x).compile()
    return compiled.memory_analysis().temp_size_in_bytes / size(params)


def step_time_ratios(n: int, rounds: int, samples: int = 3) -> dict[str, float]:
    """adam8bit's step time on flat n with each engine, ÷ optax.adam's in the same round."""
    key = jax.random.key(0)
    params = 0.02 * jax.random.normal(key, (n,))
    grads = 0.01 * jax.random.normal(jax.random.fold_in(key, 1), (n,))
    runs = {}
    for name in ["optax.adam", *ENGINES]:
        tx = optax.adam(1e-3) if name == "optax.adam" else adam_optax.adam8bit(1e-3)
        if name != "optax.adam":
            use(name)
        step = train_step(tx)
        runs[name] = [step, *jax.block_until_ready(step(params + 0, tx.init(params), grads))]
    use("library")
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            measured = []
            for _ in range(samples):
                start = time.perf_counter()
                run[1:] = jax.block_until_ready(run[0](run[1], run[2], grads))
                measured.append(time.perf_counter() - start)
            times[name].append(statistics.median(measured))
    base = times["optax.adam"]
    return {
        name: statistics.median(a / b for a, b in zip(t, base, strict=True))
        for name, t in times.items()
        if name != "optax.adam"
    }


ONE_THREAD = " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def one_core_ratios(rounds: int) -> dict[str, float]:
    """``step_time_ratios`` in a child process pinned to one core, XLA on one thread: the
    same comparison with the thread pool taken out."""
    command = [sys.executable, __file__, "--one-core", "--rounds", str(rounds)]
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return json.loads(child.stdout.strip().splitlines()[-1])


def entry_lines(compiled: Any, keep: Callable[[str], bool]) -> list[str]:
    """The compiled entry computation's instructions (scheduled order) that ``keep`` picks."""
    text = compiled.as_text()
    entry = text[text.index("\nENTRY") :].splitlines()[1:]
    lines = [re.sub(r", metadata=.*|, backend_config=.*", "", line).strip() for line in entry]
    return [line[:160] for line in lines if keep(line)]


def hlo_evidence() -> dict[str, list[str]]:
    """Two leaves with the loop and the update outside: where XLA copies the codes."""
    shapes = {"a": jax.ShapeDtypeStruct((256, 1024), jnp.float32),
              "b": jax.ShapeDtypeStruct((512, 512), jnp.float32)}  # fmt: skip
    use("loop, update outside")
    tx = adam_optax.adamw8bit(1e-3)
    compiled = train_step(tx).lower(shapes, jax.eval_shape(tx.init, shapes), shapes).compile()
    order = entry_lines(
        compiled,
        lambda line: (
            any(f" {op}(" in line for op in ("copy", "while", "fusion"))
            and "[]" not in line.split("=")[1].split("(")[0]
        ),
    )
    use("loop, update in g")
    compiled = train_step(tx).lower(shapes, jax.eval_shape(tx.init, shapes), shapes).compile()
    text = compiled.as_text()
    body = re.search(r"body=%?([\w.\-]+)", text)
    assert body is not None
    start = text.index(f"\n%{body.group(1)} ")
    fusions = [
        re.sub(r", metadata=.*|, kind=.*", "", line).strip()[:160]
        for line in text[start:].split("\n}\n")[0].splitlines()
        if " fusion(" in line
    ]
    use("library")
    return {"update outside, entry (scheduled order)": order, "update in g, loop body": fusions}


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [
        "# A chunked in-place step engine on XLA:CPU",
        "",
        f"{run_line(env)} What the engines are: the docstring of `benchmarks/inplace.py`.",
        "",
        "Optimizer step (`update` + `apply_updates`, params and state donated, grads as "
        "inputs), B/param: temporaries / bytes accessed (loops counted per iteration).",
        "",
        "| set-up | engine | flat 2^23 | GPT-2-like, 11.8M | whole train step temporaries "
        f"(optax.adamw: {result['whole_optax']:.2f}) |",
        "|---|---|---|---|---|",
    ]
    for name, engines in result["setups"].items():
        for engine, row in engines.items():
            f, t = row["flat"], row["tree"]
            lines.append(
                f"| {name} | {engine} | {f['temp']:.2f} / {f['bytes']:.1f} "
                f"| {t['temp']:.2f} / {t['bytes']:.1f} | {row['whole']:.2f} |"
            )
    ratios = ", ".join(f"{k} {v:.2f}×" for k, v in result["time"].items())
    one = ", ".join(f"{k} {v:.2f}×" for k, v in result["time_one_core"].items())
    lines += ["", f"adam8bit step time ÷ optax.adam, flat 2^23, median of "
              f"{result['rounds']} paired rounds: {ratios}. Pinned to one core with one "
              f"XLA thread (`--one-core`): {one}.", ""]  # fmt: skip
    lines += READING
    for title, hlo in result["hlo"].items():
        lines += [f"Compiled HLO, {title}:", "", "```", *hlo, "```", ""]
    return "\n".join(lines)


READING = [
    "## Reading",
    "",
    "- **Why temporaries stay on the optimizer step.** `apply` returns each leaf's update to "
    "the caller's `optax.apply_updates`, so the update outlives the writes of the new "
    "moments. Either it is computed where it is used, from the old moments (update "
    "outside: the old codes must survive the loop that overwrites them), or it is "
    "materialized (update in g: 4 bytes per element, in g's own buffer where g is a "
    "temporary, as in a whole train step, but in a copy of g where g is an argument of "
    "the step, as here). In the first HLO below XLA's schedule already runs each leaf's "
    "update fusion before that leaf's loop, yet copy insertion, which runs before "
    "scheduling and orders instructions by data dependence only, has copied every leaf's "
    "codes and scales at the top of the program: those copies are live together, so the "
    "temporaries are the whole tree's codes, not one leaf's. The library's engine gets "
    "the same structure down to one moment's codes by chaining its encodings.",
    "- **What a backend that orders by its schedule would do.** Copy insertion that follows "
    "the schedule (or a way for the caller to order the update before the writes) needs "
    "no copy: the loop's temporaries are one chunk's float32 values. The whole-train-step "
    "column shows the other half: there g is a temporary, and writing the update into its "
    "buffer needs no new one, so that engine's whole step holds the fewest temporaries of "
    "the three, though still more than optax.adamw's (the rest is not analysed here).",
    "- **Bytes accessed.** XLA:CPU's loop fusions have one output each (multi-output "
    "fusion is off by default; see `step_bytes.py`), so in the loop body each chunk of g "
    "and of the codes is read by the fusion that writes the update, by the block maxima "
    "and by each moment's encoding, and the decoded moments are written and read back as "
    "chunk-sized arrays. Those re-reads stay in cache, but cost analysis counts them. One "
    "kernel per chunk computing update, maxima and codes together, as multi-output fusion "
    "on a GPU builds, reads params 4 + g 4 + codes 2 and writes params 4 + codes 2: "
    "16 B/param; a two-pass kernel (maxima, then step and encode) reads g and the codes "
    "once more: 22.",
    "- **The 16-bit loop copies whole buffers every iteration** (its bytes column): each "
    "moment's step and write fuse into one dynamic-update-slice fusion that reads its "
    "chunk from the buffer it writes, which XLA:CPU does not update in place, so it "
    "writes a new buffer and copies it back. The 8-bit body first materializes each "
    "decoded chunk (its block maxima read it too), so its writes are in place.",
    "- **Step time.** With XLA's thread pool or without it (the one-core line), the loop "
    "engines run about as fast as the library's. The 8-bit step here is bound by its "
    "arithmetic (decode, step, encode: tens of operations per element), not by the bytes "
    "it moves, and `optax.adam`, bound by memory bandwidth, gains more from a second "
    "thread than the 8-bit step does. On a GPU the step is bandwidth-bound, and the bytes "
    "column is the figure that sets its time.",
    "",
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    parser.add_argument(
        "--one-core", action="store_true", help="only the step times, one core, one XLA thread"
    )
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if args.one_core:  # before jax starts its backend, which reads XLA_FLAGS
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + ONE_THREAD
        print(json.dumps(step_time_ratios(2**23, args.rounds)))
        return
    load_before, commit = os.getloadavg()[0], git_commit()
    trees = {"flat": jax.ShapeDtypeStruct((2**23,), jnp.float32), "tree": gpt2_like(d=256)}
    setups: dict[str, dict[str, Any]] = {}
    for name, make in set_ups().items():
        setups[name] = {}
        for engine in ENGINES:
            use(engine)
            row = {k: optimizer_step(make, shapes) for k, shapes in trees.items()}
            row["whole"] = whole_train_step(make)
            setups[name][engine] = row
            print(name, engine, row, file=sys.stderr, flush=True)
    use("library")
    result = {
        "setups": setups,
        "whole_optax": whole_train_step(lambda: optax.adamw(1e-3)),
        "rounds": args.rounds,
        "time": step_time_ratios(2**23, args.rounds),
        "time_one_core": one_core_ratios(args.rounds),
        "hlo": hlo_evidence(),
        "environment": environment(argv, commit, load_before),
    }
    result["environment"]["command"] = " ".join(["python benchmarks/inplace.py", *argv])
    write(args.out, "inplace", result, markdown(result))


if __name__ == "__main__":
    main()
