"""FlashOptim's 8-bit state format against ours, on quality.py's tasks at about the same bytes.

The question: is FlashOptim's state format (companded momentum, square-root variance, groups
of 32 with float16 scales) better than our dynamic-map blocks of 256 on the same tasks, at no
more bytes? If not, the report records why not.

The format (Ortiz et al., "FlashOptim: Optimizers for Memory Efficient Training",
arXiv 2602.23349, 2026), written here from its description, per group G of ``GROUP`` = 32
consecutive elements along a leaf's last axis (a row's last group may be shorter):

  momentum m   s = fp16(max_G |m|);  code = round(127 · φ(m / s)) as int8,
               φ(x) = 2x / (1 + |x|) on [-1, 1];  read back  s · φ⁻¹(code / 127),
               φ⁻¹(z) = z / (2 - |z|)
  variance v   r = sqrt(v);  s = fp16(max_G r);  code = round(255 · r / s) as uint8;
               read back  (s · code / 255)²

fp16(·) rounds to the nearest float16 (a value that rounds below the group's absmax is
clipped to the top code). Bytes per parameter of both moments: 2 + 2 · 2/32 = 2.125,
against ours 2 + 2 · 4/256 = 2.031 (blocks of 256, float32 scales) and 2.25 (blocks of 32).

``flash_adamw`` is AdamW with the same math as ``adam_optax.adamw`` (bias-corrected,
decoupled weight decay, float32 arithmetic, ``chain(moments, add_decayed_weights,
scale_by_learning_rate)``), whose moments are stored in that format on leaves of at least
``MIN_QUANTIZED_SIZE`` elements (float32 elsewhere, as ``adamw8bit``). As in
``adamw8bit``, the update is computed from the new moments before they are stored.
With ``stochastic_rounding`` a value is stored as one of the two codes around it, chosen
at random so that the value read back is unbiased (not the code): E[read(code)] = value.
FlashOptim itself rounds to nearest.

The comparison: ``quality.run_all`` with the rows of ``rows()``, then (d) of quality.py
(mean nu of a 16,384-element leaf after the gradients shrink 100×) for each row, and the
bytes per parameter counted from each row's state. Writes state_format.md and .json.

    python benchmarks/state_format.py --estimate            # per-step times, full-run estimate
    python benchmarks/state_format.py --out benchmarks/results
    python benchmarks/state_format.py --steps 2000 --tasks lm,teacher   # a shorter run
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import adam_optax

_QUALITY = Path(__file__).resolve().parent / "quality.py"
_spec = importlib.util.spec_from_file_location("quality", _QUALITY)
quality = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(quality)

GROUP = 32
MIN_QUANTIZED_SIZE = quality.MIN_QUANTIZED_SIZE  # 4096, as adamw8bit
M_LEVELS = 127  # int8 codes -127..127
V_LEVELS = 255  # uint8 codes 0..255


# ---------------------------------------------------------------- the codec


class FlashMoment(NamedTuple):
    """A moment in FlashOptim's format: 8-bit codes and one float16 scale per group."""

    codes: jax.Array  # int8 (m) or uint8 (v), the leaf's shape
    scales: jax.Array  # float16, shape[:-1] + (ceil(shape[-1] / GROUP),)


def _grouped(x: jax.Array, group: int) -> jax.Array:
    """(..., n) -> (..., ceil(n / group), group), the last group zero-padded."""
    n = x.shape[-1]
    count = -(-n // group)
    pad = [(0, 0)] * (x.ndim - 1) + [(0, count * group - n)]
    return jnp.pad(x, pad).reshape(*x.shape[:-1], count, group)


def _ungrouped(x: jax.Array, n: int) -> jax.Array:
    return x.reshape(*x.shape[:-2], -1)[..., :n]


def compand(x: jax.Array) -> jax.Array:
    """φ(x) = 2x / (1 + |x|): [-1, 1] -> [-1, 1], slope 2 at 0 and 1/2 at ±1."""
    return 2 * x / (1 + jnp.abs(x))


def expand(z: jax.Array) -> jax.Array:
    """φ⁻¹(z) = z / (2 - |z|)."""
    return z / (2 - jnp.abs(z))


def _round(t: jax.Array, lower: jax.Array, upper: jax.Array, value: jax.Array,
           u: jax.Array | None) -> jax.Array:  # fmt: skip
    """The code: nearest (t rounded) or, with u, floor(t) or floor(t) + 1 with the
    probability that makes the read-back value unbiased; lower/upper are the values
    the codes floor(t) and floor(t) + 1 read back as."""
    if u is None:
        return jnp.round(t)
    gap = upper - lower
    p = jnp.where(gap > 0, (value - lower) / jnp.where(gap > 0, gap, 1), 0)
    return jnp.floor(t) + (u < p)


def _scales(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(float16 scales, their float32 inverses, 0 where the scale is 0) of a >= 0 grouped."""
    scales = jnp.max(jnp.where(jnp.isfinite(a), a, 0), axis=-1).astype(jnp.float16)
    s = scales.astype(jnp.float32)
    return scales, jnp.where(s > 0, 1 / jnp.where(s > 0, s, 1), 0)


def encode_momentum(m: jax.Array, u: jax.Array | None = None, group: int = GROUP) -> FlashMoment:
    """m (float32, ndim >= 1) -> int8 codes of φ(m / s) with s the group's fp16 absmax."""
    g = _grouped(m.astype(jnp.float32), group)
    scales, inverse = _scales(jnp.abs(g))
    x = jnp.clip(g * inverse[..., None], -1, 1)
    t = M_LEVELS * jnp.abs(compand(x))
    lower = expand(jnp.floor(t) / M_LEVELS)
    upper = expand(jnp.minimum(jnp.floor(t) + 1, M_LEVELS) / M_LEVELS)
    ug = None if u is None else _grouped(u, group)
    magnitude = jnp.clip(_round(t, lower, upper, jnp.abs(x), ug), 0, M_LEVELS)
    codes = jnp.where(x < 0, -magnitude, magnitude).astype(jnp.int8)
    return FlashMoment(_ungrouped(codes, m.shape[-1]), scales)


def decode_momentum(q: FlashMoment, group: int = GROUP) -> jax.Array:
    n = q.codes.shape[-1]
    z = _grouped(q.codes.astype(jnp.float32), group) / M_LEVELS
    return _ungrouped(expand(z) * q.scales.astype(jnp.float32)[..., None], n)


def encode_variance(v: jax.Array, u: jax.Array | None = None, group: int = GROUP) -> FlashMoment:
    """v >= 0 (float32) -> uint8 codes of sqrt(v) / s, s the group's fp16 max of sqrt(v)."""
    r = _grouped(jnp.sqrt(jnp.maximum(v.astype(jnp.float32), 0)), group)
    scales, inverse = _scales(r)
    x = jnp.clip(r * inverse[..., None], 0, 1)
    t = V_LEVELS * x
    lower = (jnp.floor(t) / V_LEVELS) ** 2
    upper = (jnp.minimum(jnp.floor(t) + 1, V_LEVELS) / V_LEVELS) ** 2
    ug = None if u is None else _grouped(u, group)
    codes = jnp.clip(_round(t, lower, upper, x * x, ug), 0, V_LEVELS).astype(jnp.uint8)
    return FlashMoment(_ungrouped(codes, v.shape[-1]), scales)


def decode_variance(q: FlashMoment, group: int = GROUP) -> jax.Array:
    n = q.codes.shape[-1]
    r = _grouped(q.codes.astype(jnp.float32), group) / V_LEVELS
    return _ungrouped((r * q.scales.astype(jnp.float32)[..., None]) ** 2, n)


def _mix(x: jax.Array) -> jax.Array:
    """MurmurHash3's 32-bit finalizer (as adam_optax.storage uses for its random bits)."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def uniform(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Uniform [0, 1) float32 from a uint32 key and each element's index (24 bits)."""
    index = jax.lax.iota(jnp.uint32, math.prod(shape)).reshape(shape)
    bits = _mix(index * jnp.uint32(0x9E3779B9) + key)
    return (bits >> 8).astype(jnp.float32) * jnp.float32(2.0**-24)


# ---------------------------------------------------------------- the optimizer


class FlashAdamState(NamedTuple):
    count: jax.Array  # int32, steps taken
    mu: Any  # the params' tree: FlashMoment (int8) on large leaves, float32 elsewhere
    nu: Any  # the params' tree: FlashMoment (uint8) on large leaves, float32 elsewhere


def _quantized(p: jax.Array) -> bool:
    return p.ndim >= 1 and p.size >= MIN_QUANTIZED_SIZE


def scale_by_flash_adam(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, *,
    stochastic_rounding: bool = False, seed: int = 0,
) -> optax.GradientTransformation:  # fmt: skip
    """Adam's m̂ / (sqrt(v̂) + eps), float32 math, moments stored in FlashOptim's format."""

    def init_fn(params: Any) -> FlashAdamState:
        def zeros(p: jax.Array, encode: Any) -> Any:
            z = jnp.zeros(p.shape, jnp.float32)
            return encode(z) if _quantized(p) else z

        mu = jax.tree.map(lambda p: zeros(p, encode_momentum), params)
        nu = jax.tree.map(lambda p: zeros(p, encode_variance), params)
        return FlashAdamState(jnp.zeros([], jnp.int32), mu, nu)

    def update_fn(updates: Any, state: FlashAdamState, params: Any = None) -> tuple[Any, Any]:
        del params
        count = state.count + 1
        t = count.astype(jnp.float32)
        mu_scale = 1 / (1 - jnp.float32(b1) ** t)
        nu_scale = 1 / (1 - jnp.float32(b2) ** t)
        one_minus_b1, one_minus_b2 = jnp.float32(1 - b1), jnp.float32(1 - b2)
        leaves, treedef = jax.tree.flatten(updates)
        is_moment = lambda x: isinstance(x, FlashMoment)  # noqa: E731
        mus = treedef.flatten_up_to(state.mu)
        nus = treedef.flatten_up_to(state.nu)
        key = _mix(jnp.uint32(seed) ^ _mix(count.astype(jnp.uint32)))
        out, new_mu, new_nu = [], [], []
        for i, (g, mu, nu) in enumerate(zip(leaves, mus, nus, strict=True)):
            g32 = g.astype(jnp.float32)
            quantized = is_moment(mu)
            m_old = decode_momentum(mu) if quantized else mu
            v_old = decode_variance(nu) if quantized else nu
            m = jnp.float32(b1) * m_old + one_minus_b1 * g32
            v = jnp.float32(b2) * v_old + one_minus_b2 * g32 * g32
            out.append((m * mu_scale / (jnp.sqrt(v * nu_scale) + eps)).astype(g.dtype))
            if quantized:
                u_m = u_v = None
                if stochastic_rounding:
                    leaf_key = _mix(key ^ _mix(jnp.uint32(2 * i + 1)))
                    u_m = uniform(leaf_key, g.shape)
                    u_v = uniform(_mix(leaf_key + jnp.uint32(1)), g.shape)
                m, v = encode_momentum(m, u_m), encode_variance(v, u_v)
            new_mu.append(m)
            new_nu.append(v)
        unflat = lambda xs: jax.tree.unflatten(treedef, xs)  # noqa: E731
        return unflat(out), FlashAdamState(count, unflat(new_mu), unflat(new_nu))

    return optax.GradientTransformation(init_fn, update_fn)


def flash_adamw(
    learning_rate: optax.ScalarOrSchedule, weight_decay: float = 1e-4, *,
    stochastic_rounding: bool = False, seed: int = 0,
) -> optax.GradientTransformation:  # fmt: skip
    """AdamW as ``adam_optax.adamw`` composes it, with FlashOptim-format moments."""
    return optax.chain(
        scale_by_flash_adam(stochastic_rounding=stochastic_rounding, seed=seed),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )


def read_nu(state: Any) -> Any:
    """The float32 nu of a FlashAdamState or an adam_optax state, wherever in the chain."""
    for s in state:
        if isinstance(s, FlashAdamState):
            return jax.tree.map(
                lambda n: decode_variance(n) if isinstance(n, FlashMoment) else n,
                s.nu,
                is_leaf=lambda x: isinstance(x, FlashMoment),
            )
    return optax.tree.get(adam_optax.dequantize(state), "nu")


# ---------------------------------------------------------------- the comparison

FLASH = "FlashOptim fmt"
FLASH_SR = "FlashOptim fmt+SR"


def rows() -> list[quality.Variant]:
    """float32, ours (blocks of 256, SR and RTN; blocks of 32), FlashOptim's (RTN, SR)."""
    V = quality.Variant
    a8 = adam_optax.adamw8bit
    return [
        V(quality.REFERENCE, lambda lr, wd, seed: adam_optax.adamw(lr, weight_decay=wd),
          about="`adamw(lr)`: float32 moments, the reference"),
        V("8-bit", lambda lr, wd, seed: a8(lr, weight_decay=wd, seed=seed),
          about="`adamw8bit(lr)`: dynamic map, blocks of 256, float32 scales, SR (default)"),
        V("8-bit RTN", lambda lr, wd, seed: a8(lr, weight_decay=wd, stochastic_rounding=False),
          about="`adamw8bit(lr, stochastic_rounding=False)`"),
        V("8-bit block 32", lambda lr, wd, seed: a8(lr, weight_decay=wd, block_size=32,
                                                      seed=seed),
          about="`adamw8bit(lr, block_size=32)`: FlashOptim's group size, float32 scales, SR"),
        V(FLASH, lambda lr, wd, seed: flash_adamw(lr, wd),
          about="FlashOptim's format: companded int8 m, sqrt-coded uint8 v, groups of 32, "
                "float16 scales, round-to-nearest (as FlashOptim)"),
        V(FLASH_SR, lambda lr, wd, seed: flash_adamw(lr, wd, stochastic_rounding=True,
                                                     seed=seed),
          about="the same with stochastic rounding, unbiased in value"),
    ]  # fmt: skip


def state_bytes_per_param(variant: quality.Variant, shape: tuple[int, ...] = (256, 1024)) -> float:
    """Bytes of the row's state arrays per element, for one leaf of ``shape`` (>= 4096)."""
    params = jnp.zeros(shape, jnp.float32)
    state = quality.optimizer(variant, 1e-3, 0.0).init(params)
    total = sum(
        leaf.size * leaf.dtype.itemsize
        for leaf in jax.tree.leaves(state)
        if getattr(leaf, "ndim", 0) >= 1
    )
    return total / math.prod(shape)


def nu_decay(variant: quality.Variant, steps: int, drop_at: int) -> np.ndarray:
    """quality.nu_decay, reading nu through ``read_nu`` so that FlashOptim's state works."""
    tx = quality.optimizer(variant, 1e-3, 0.0)
    params = jnp.zeros(16384, variant.params_dtype)
    key = jax.random.key(7)

    def step(state: Any, t: jax.Array) -> tuple[Any, jax.Array]:
        scale = jnp.where(t < drop_at, 1.0, 0.01)
        grads = scale * jax.random.normal(jax.random.fold_in(key, t), params.shape)
        _, state = tx.update(grads, state, params)
        return state, read_nu(state).astype(jnp.float32).mean()

    _, means = jax.jit(lambda s: jax.lax.scan(step, s, jnp.arange(steps)))(tx.init(params))
    return np.asarray(means)


def trained_moments(task: quality.Task, steps: int, seed: int = 0) -> tuple[Any, Any]:
    """float32 AdamW's (mu, nu) after ``steps`` of ``task``'s schedule, as quality trains it."""
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, task.learning_rate, max(1, task.steps // 20), task.steps, task.learning_rate / 20
    )
    tx = adam_optax.adamw(schedule, weight_decay=task.weight_decay)
    data = jax.device_put(task.data)

    def step(carry: Any, draw: Any) -> tuple[Any, None]:
        params, state = carry
        grads = jax.grad(task.loss)(params, task.batch(data, draw))
        updates, state = tx.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), None

    params = task.init(jax.random.key(seed))
    draws = task.draw(np.random.default_rng(seed), steps)
    (_, state), _ = jax.jit(lambda c, d: jax.lax.scan(step, c, d))((params, tx.init(params)), draws)
    return state[0].mu, state[0].nu


def _formats() -> dict[str, Any]:
    """name -> (m, v) -> (m, v) read back after one round trip, round-to-nearest."""
    from adam_optax import storage

    def ours(block: int) -> Any:
        def f(m: jax.Array, v: jax.Array) -> tuple[jax.Array, jax.Array]:
            trip = lambda x, signed: storage.dequantize_array(  # noqa: E731
                storage.quantize(x, signed=signed, block_size=block)
            )
            return trip(m, True), trip(v, False)

        return f

    def flash(m: jax.Array, v: jax.Array) -> tuple[jax.Array, jax.Array]:
        return decode_momentum(encode_momentum(m)), decode_variance(encode_variance(v))

    return {"8-bit (ours, 256)": ours(256), "8-bit block 32 (ours)": ours(32), FLASH: flash}


def codec_errors(tasks: list[str], steps: int) -> dict[str, Any]:
    """One round trip of float32 AdamW's trained moments through each format.

    Per task and format, over the leaves of >= 4096 elements, with u = m / (sqrt(v) + eps)
    the update direction (bias corrections ~1 by then): the relative RMS error of m, of
    sqrt(v) and of u; the share of elements whose u read back is off by more than 2× (or
    has the other sign); and the share whose v > 0 reads back as 0.
    """
    out: dict[str, Any] = {}
    for name in tasks:
        task = quality.TASKS[name](False)
        mu, nu = trained_moments(task, steps)
        pairs = [(m, v) for m, v in zip(jax.tree.leaves(mu), jax.tree.leaves(nu), strict=True)
                 if m.ndim >= 1 and m.size >= MIN_QUANTIZED_SIZE]  # fmt: skip
        out[task.name] = {}
        for fmt, trip in _formats().items():
            sums = np.zeros(8)
            for m, v in pairs:
                mq, vq = jax.jit(trip)(m, v)
                m, v, mq, vq = (np.asarray(a, np.float64) for a in (m, v, mq, vq))
                u, uq = m / (np.sqrt(v) + 1e-8), mq / (np.sqrt(vq) + 1e-8)
                ratio = np.where(u != 0, uq / np.where(u != 0, u, 1), 1)
                off = (ratio > 2) | (ratio < 0.5)
                sums += [((mq - m) ** 2).sum(), (m**2).sum(),
                         ((np.sqrt(vq) - np.sqrt(v)) ** 2).sum(), v.sum(),
                         ((uq - u) ** 2).sum(), (u**2).sum(),
                         off.sum(), ((v > 0) & (vq == 0)).sum()]  # fmt: skip
            n = sum(m.size for m, _ in pairs)
            out[task.name][fmt] = {
                "m_rel_rms": float(np.sqrt(sums[0] / sums[1])),
                "sqrt_v_rel_rms": float(np.sqrt(sums[2] / sums[3])),
                "u_rel_rms": float(np.sqrt(sums[4] / sums[5])),
                "u_off_2x": float(sums[6] / n),
                "v_to_zero": float(sums[7] / n),
            }
    return {"steps": steps, "tasks": out}


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    names = [v["name"] for v in result["variants"]]
    others = [n for n in names if n != quality.REFERENCE]
    pct = quality.percent
    lines = [
        "# FlashOptim's 8-bit state format against ours",
        "",
        f"`{result['command']}` at adam_optax {env['adam_optax_commit']}, "
        f"{env.get('date', 'date not recorded')}: seeds "
        f"{result['seeds']}, jax {env['jax']}, {env['cpus']} CPUs, load average "
        f"{env['load_before']:.1f} before / {env['load_after']:.1f} after, "
        f"{result['seconds']:.0f} s.",
        "",
        "Δ: mean over seeds of the paired relative difference of the final loss from float32, "
        "(loss_v[s] − loss_32[s]) / loss_32[s], ± its standard error (sd over seeds, ddof=1, "
        "/ √n). *Spread*: float32's seed-to-seed sd (ddof=1) of its final loss / its mean. "
        "Both as benchmarks/quality.py defines them. *inside*: |Δ| ≤ spread.",
        "",
        "## Bytes of state per parameter (m and v, leaves of >= 4096 elements)",
        "",
        "| row | bytes/param | format |",
        "|---|---|---|",
    ]
    for v in result["variants"]:
        lines.append(f"| {v['name']} | {result['bytes'][v['name']]:.3f} | {v['about']} |")
    lines += [
        "",
        "## Final losses: Δ from float32",
        "",
        "| task | metric | steps | float32 spread | " + " | ".join(others) + " |",
        "|---" * (4 + len(others)) + "|",
    ]
    for task, by_metric in result["summary"].items():
        steps = result["tasks"][task]["steps"]
        for metric, entry in by_metric.items():
            if entry["kind"] != "relative":
                continue
            cells = []
            for n in others:
                r = entry["variants"][n]
                cells.append(f"{pct(r['delta'], r['delta_se'])}, {r['verdict']}")
            lines.append(f"| {task} | {metric} | {steps} | {100 * entry['float32_spread']:.2f}% | "
                         + " | ".join(cells) + " |")  # fmt: skip
    lines += ["", "## Mean final losses and time per step", ""]
    for task, by_metric in result["summary"].items():
        metrics = [m for m, e in by_metric.items() if e["kind"] == "relative"]
        lines += [f"### {task}", "", "| row | " + " | ".join(metrics) + " | ms/step |",
                  "|---" * (2 + len(metrics)) + "|"]  # fmt: skip
        for n in names:
            cells = [f"{by_metric[m]['variants'][n]['mean']:.4g}" for m in metrics]
            ms = result["timing"][task][n]["ms_per_step"]
            lines.append(f"| {n} | " + " | ".join(cells) + f" | {ms:.2f} |")
        lines.append("")
    decay = result["nu_decay"]
    if decay["final"]:
        f32 = decay["final"][quality.REFERENCE]
        lines += [
            f"## (d) mean nu after the gradients shrink 100× at step {decay['drop_at']}",
            "",
            f"A 16,384-element leaf, {decay['steps']} steps; float32 decays as 0.999^t "
            "towards 1e-4.",
            "",
            "| row | final mean nu | ÷ float32 |",
            "|---|---|---|",
        ]
        for n, value in decay["final"].items():
            lines.append(f"| {n} | {value:.4g} | {value / f32:.2f} |")
    codec = result.get("codec")
    if codec:
        lines += [
            "",
            f"## One round trip of float32 AdamW's moments after {codec['steps']} steps",
            "",
            f"`{codec.get('command', '')}`",
            "",
            "Leaves of >= 4096 elements, round-to-nearest, seed 0. Relative RMS errors of m, "
            "of sqrt(v) and of the update direction u = m / (sqrt(v) + eps); the share of "
            "elements whose u reads back more than 2× off (or flipped), and whose v > 0 "
            "reads back as 0 (a later step with a zero gradient then divides m by eps alone).",
            "",
            "| task | format | m rel. RMS | sqrt(v) rel. RMS | u rel. RMS | u off > 2× | v -> 0 |",
            "|---|---|---|---|---|---|---|",
        ]
        for task, by_format in codec["tasks"].items():
            for fmt, e in by_format.items():
                lines.append(
                    f"| {task} | {fmt} | {e['m_rel_rms']:.2e} | {e['sqrt_v_rel_rms']:.2e} | "
                    f"{e['u_rel_rms']:.2e} | {100 * e['u_off_2x']:.3f}% | "
                    f"{100 * e['v_to_zero']:.3f}% |"
                )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=quality.SEEDS, help="seeds 0..N-1")
    parser.add_argument("--steps", type=int, default=quality.STEPS,
                        help="steps per task, a multiple of 250 (%(default)s)")  # fmt: skip
    parser.add_argument("--tasks", default=",".join(quality.TASKS))
    parser.add_argument("--variants", default=None, help="comma-separated rows (float32 always)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    parser.add_argument("--estimate", action="store_true",
                        help="time 2 chunks per task and row; estimate the full run")  # fmt: skip
    parser.add_argument("--codec-only", type=int, metavar="STEPS", default=None,
                        help="add the round-trip errors of moments trained STEPS steps to "
                        "OUT/state_format.json and .md, and run nothing else")  # fmt: skip
    args = parser.parse_args()
    if args.codec_only is not None:
        path = args.out / "state_format.json"
        result = json.loads(path.read_text())
        result["codec"] = codec_errors(args.tasks.split(","), args.codec_only)
        result["codec"]["command"] = "python benchmarks/state_format.py " + " ".join(sys.argv[1:])
        path.write_text(json.dumps(result, indent=1))
        (args.out / "state_format.md").write_text(markdown(result))
        print(markdown(result))
        return
    quality.STEPS = args.steps  # the tasks read it when built
    quality.nu_decay = nu_decay  # (d), for run_all and estimate: reads FlashOptim's nu too
    tasks = args.tasks.split(",")
    table = quality.select(rows(), args.variants.split(",") if args.variants else None)
    if args.estimate:
        quality.estimate(False, args.seeds, tasks, table)
        return
    command = "python benchmarks/state_format.py " + " ".join(sys.argv[1:])
    seeds = list(range(args.seeds))
    with tempfile.TemporaryDirectory() as scratch:  # quality's own report is not kept
        result = quality.run_all(False, seeds, tasks, Path(scratch), command, table)
    result["bytes"] = {v.name: state_bytes_per_param(v) for v in table}
    result["command"] = command.strip()
    result.pop("curves", None)
    curves = result["nu_decay"]["curves"]  # every 20th step is plenty to plot
    result["nu_decay"]["curves"] = {k: c[::20] for k, c in curves.items()}
    result["nu_decay"]["curves_every"] = 20
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "state_format.md").write_text(markdown(result))
    (args.out / "state_format.json").write_text(json.dumps(result, indent=1))
    print(markdown(result))


if __name__ == "__main__":
    main()
