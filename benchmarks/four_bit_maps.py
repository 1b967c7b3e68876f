"""Which 4-bit code maps and normalizations keep AdamW's moments trustworthy? A simulation.

Before the library stores m and v in 4 bits it must pick, for each moment, the 16 values
a normalized element may round to (the map) and the scale it is normalized by, as Li,
Chen & Zhu, "Memory Efficient Optimizers with 4-bit States" (NeurIPS 2023) did by
measurement. This study measures the candidates on ``quality.py``'s three tasks (digits
MLP, byte-level transformer LM, teacher–student regression: 5,000 steps each), in the same
run as float32 AdamW, with ``quality.py``'s rows, runs, Δ, spread and verdicts.

Fake quantization: the moments are kept as float32 arrays, but after every step each
quantized moment is replaced by what its 4-bit storage would read back. Per leaf, with
t the step and g the gradient:

  m_t = b1·m + (1 - b1)·g,   v_t = b2·v + (1 - b2)·g²   (m, v: the stored moments, read back)
  update = -lr·(m_t/(1 - b1^t) / (sqrt(v_t/(1 - b2^t)) + eps) + wd·p)   (from the unrounded
           m_t and v_t, as AdamW with decoupled weight decay)
  stored m = dequant(quant(m_t)), stored v = dequant(quant(v_t))

with b1 = 0.9, b2 = 0.999, eps = 1e-8, float32 math. Only leaves of at least 4,096 elements
(``quality.MIN_QUANTIZED_SIZE``, adamw8bit's ``min_quantized_size``) with ndim >= 1 are
quantized; smaller ones keep float32 moments. quant(x) divides x by a per-element scale,
rounds the result to the map, and dequant multiplies back:

  scale    the exact absmax of the new finite values over the element's group: a block of
           B consecutive elements along the last axis ("B64", "B128", "B256"; a row's last
           block is shorter if B does not divide it, and B is at most the row's length), or
           "Rank-1" (Li et al. §4.2): min over axes a of max |x| over all axes but a, for a
           2-D leaf min(its row's absmax, its column's absmax); a 1-D leaf falls back to B128.
  rounding stochastic by default: the upper of the two neighbouring map values with
           probability (x - lower)/(upper - lower), unbiased in value (to 2^-16 of a gap:
           m and v take 16 bits each of one jax.random draw of 32 per element, whose key
           is folded from a fixed seed, 0, the step count and the leaf's index). Values below an
           unsigned map's smallest value round up to it. "RTN": to the nearest map value.

Maps, 16 codes each:

  DE        signed dynamic exponent, for m: ±``adam_optax.storage._magnitudes(2)``, 15
            distinct values 0, ±0.01, ±0.055, ±0.1, ±0.325, ±0.55, ±0.775, ±1 (the 16th code
            repeats 1); the 8-bit map's layout at 4 bits
  DE-0      unsigned dynamic exponent without zero, for v: ``_magnitudes(3, zero=False)``,
            1e-4 … 1
  Linear-0  unsigned linear without zero, for v: (i + 1)/16, i = 0 … 15
  DE+0      unsigned dynamic exponent with zero, for v: ``_magnitudes(3)``, 0, 1e-3 … 1: the
            zero-point problem of Li et al. §4.1 (a v that rounds to 0 makes m/sqrt(v) huge)

Rows: float32 (``adam_optax.adamw``, the reference), then one per (m format, v format):
``rows()``. Seeds: 2 by default (``--seeds``); each draws the initial params and the
batches. The report gives, per task and final loss, each row's Δ (the paired relative
difference from float32, mean over seeds ± standard error) beside float32's own
seed-to-seed spread, and quality.py's (d): mean v of a 16,384-element leaf after its
gradients shrink 100×. ``--estimate`` times two chunks per task and row and prints the
full run's time; the full run is sized to about a quarter of an hour on 2 CPU cores.

    python benchmarks/four_bit_maps.py                           # full run -> benchmarks/out/
    python benchmarks/four_bit_maps.py --out benchmarks/results  # update the published results
    python benchmarks/four_bit_maps.py --estimate                # per-step times, estimate
    python benchmarks/four_bit_maps.py --quick                   # tiny, under a minute
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import sys
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import quality
from quality import REFERENCE, Variant, percent

import adam_optax
from adam_optax.storage import _magnitudes

NAME = "four_bit_maps"  # the results files' name
SEEDS = 2
SEED = 0  # the stochastic-rounding seed: fixed, so one compiled run serves every seed

# ---------------------------------------------------------------- formats

_DE_MAGNITUDES = _magnitudes(2)  # 0, 0.01, 0.055, 0.1, 0.325, 0.55, 0.775, 1
MAPS: dict[str, tuple[float, ...]] = {  # ascending, distinct: what a normalized value rounds to
    "DE": tuple(np.unique(np.concatenate([-_DE_MAGNITUDES, _DE_MAGNITUDES])).tolist()),
    "DE-0": tuple(_magnitudes(3, zero=False).tolist()),
    "Linear-0": tuple(((np.arange(16) + 1) / 16).tolist()),
    "DE+0": tuple(_magnitudes(3).tolist()),
}
RANK1 = "Rank-1"
RANK1_FALLBACK = 128  # the block length of a 1-D leaf under Rank-1


class Format(NamedTuple):
    """How one moment is stored in 4 bits: the map its normalized values round to, and
    the normalization that gives each element its scale ("B<length>" or "Rank-1")."""

    map: str  # a key of MAPS
    normalization: str

    @property
    def name(self) -> str:
        return f"{self.map} {self.normalization}"


def finite_abs(x: jax.Array) -> jax.Array:
    return jnp.where(jnp.isfinite(x), jnp.abs(x), 0.0)


def block_absmax(a: jax.Array, block: int) -> jax.Array:
    """a's per-element block maxima, a's shape: blocks of ``block`` consecutive elements
    along the last axis (at most the row's length; a row's last block may be shorter)."""
    n = a.shape[-1]
    length = min(block, n)
    count = -(-n // length)
    padded = jnp.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, count * length - n)])
    tops = padded.reshape(*a.shape[:-1], count, length).max(-1)
    return jnp.repeat(tops, length, axis=-1)[..., :n]


def rank1_absmax(a: jax.Array) -> jax.Array:
    """min over axes k of max(a) over every axis but k, broadcast to a's shape; for a
    matrix, min(row max, column max). A vector falls back to blocks of 128."""
    if a.ndim == 1:
        return block_absmax(a, RANK1_FALLBACK)
    axes = range(a.ndim)
    per_axis = [a.max(axis=tuple(j for j in axes if j != k), keepdims=True) for k in axes]
    return jnp.broadcast_to(functools.reduce(jnp.minimum, per_axis), a.shape)


def scales(x: jax.Array, normalization: str) -> jax.Array:
    """Each element's scale, x's shape: the exact absmax of its group's finite values."""
    a = finite_abs(x)
    if normalization == RANK1:
        return rank1_absmax(a)
    if not normalization.startswith("B") or not normalization[1:].isdigit():
        raise ValueError(f"normalization: expected 'B<block length>' or {RANK1!r}, "
                         f"got {normalization!r}")  # fmt: skip
    return block_absmax(a, int(normalization[1:]))


def round_to_map(x: jax.Array, values: tuple[float, ...], u: jax.Array | None) -> jax.Array:
    """x (normalized, float32) rounded to ``values`` (ascending, distinct).

    With ``u`` (uniform in [0, 1), x's shape) stochastically: the upper of x's two
    neighbours in ``values`` with probability (x - lower)/(upper - lower), so that the
    mean is x. Without, to the nearest (the lower on a tie). x outside the map's range is
    first clipped to it.
    """
    x = jnp.clip(x, values[0], values[-1])
    lower, upper = jnp.full_like(x, values[0]), jnp.full_like(x, values[1])
    for value, above in itertools.pairwise(values[1:]):  # no gather: XLA:CPU's is slow
        lower = jnp.where(x >= value, jnp.float32(value), lower)
        upper = jnp.where(x >= value, jnp.float32(above), upper)
    up = (x - lower > upper - x) if u is None else (u * (upper - lower) < x - lower)
    return jnp.where(up, upper, lower)


def fake_quantize(x: jax.Array, fmt: Format, u: jax.Array | None = None) -> jax.Array:
    """dequant(quant(x)): float32 x as its 4-bit storage in ``fmt`` reads it back.

    ``u`` (uniform in [0, 1), x's shape) rounds stochastically; None rounds to the
    nearest map value. Non-finite elements are returned as they are; an all-zero group
    reads back as zeros.
    """
    x = x.astype(jnp.float32)
    scale = scales(x, fmt.normalization)
    normalized = x / jnp.where(scale > 0, scale, 1.0)
    return jnp.where(jnp.isfinite(x), round_to_map(normalized, MAPS[fmt.map], u) * scale, x)


def uniform_pair(key: jax.Array, shape: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """Two independent uniform draws in [0, 1) of ``shape``, 16 random bits each, from one
    draw of 32 bits (threefry's cost dominates the step): enough resolution to round to a
    16-value map without a bias above 2^-16 of a gap."""
    bits = jax.random.bits(key, shape, jnp.uint32)
    scale = jnp.float32(2.0**-16)
    return (bits >> 16).astype(jnp.float32) * scale, (bits & 0xFFFF).astype(jnp.float32) * scale


# ---------------------------------------------------------------- the optimizer


class FakeQuantAdamState(NamedTuple):
    """The state of ``scale_by_fake_quantized_adam``."""

    count: jax.Array  # int32, (): the number of steps taken
    mu: optax.Updates  # float32, the params' shapes: m as its storage reads it back
    nu: optax.Updates  # float32, the params' shapes: v as its storage reads it back


def scale_by_fake_quantized_adam(
    m_format: Format,
    v_format: Format,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    stochastic_rounding: bool = True,
    seed: int = SEED,
    min_quantized_size: int = quality.MIN_QUANTIZED_SIZE,
) -> optax.GradientTransformation:
    """Adam's scaling, with m and v stored as 4-bit ``m_format`` and ``v_format`` would.

    m_t = b1·m + (1 - b1)·g and v_t = b2·v + (1 - b2)·g² from the stored moments; the
    update m_t/(1 - b1^t) / (sqrt(v_t/(1 - b2^t)) + eps) from the unrounded m_t, v_t; then
    the stored moments are ``fake_quantize(m_t)`` and ``fake_quantize(v_t)`` in leaves of
    at least ``min_quantized_size`` elements and ndim >= 1, m_t and v_t elsewhere.

    Args:
        m_format: the first moment's format.
        v_format: the second moment's format.
        b1: the first moment's decay (0.9).
        b2: the second moment's decay (0.999).
        eps: added to sqrt(v̂) (1e-8).
        stochastic_rounding: round to the map stochastically (True) or to nearest.
        seed: the stochastic rounding's seed; the key of a step and leaf is folded from
            it, the step count and the leaf's index in the flattened tree.
        min_quantized_size: smaller leaves keep float32 moments (4,096).
    """

    def init_fn(params: optax.Params) -> FakeQuantAdamState:
        zeros = lambda p: jnp.zeros(p.shape, jnp.float32)  # noqa: E731
        return FakeQuantAdamState(
            jnp.zeros([], jnp.int32), jax.tree.map(zeros, params), jax.tree.map(zeros, params)
        )

    def leaf(g, m, v, t, key):  # one leaf's step: (update, stored m, stored v)
        g32 = g.astype(jnp.float32)
        m = b1 * m + (1 - b1) * g32
        v = b2 * v + (1 - b2) * g32 * g32
        update = (m / (1 - b1**t)) / (jnp.sqrt(v / (1 - b2**t)) + eps)
        if g.ndim >= 1 and g.size >= min_quantized_size:
            um, uv = uniform_pair(key, g.shape) if stochastic_rounding else (None, None)
            m, v = fake_quantize(m, m_format, um), fake_quantize(v, v_format, uv)
        return update.astype(g.dtype), m, v

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        t = count.astype(jnp.float32)
        step_key = jax.random.fold_in(jax.random.key(seed), count)
        grads, treedef = jax.tree.flatten(updates)
        mus, nus = treedef.flatten_up_to(state.mu), treedef.flatten_up_to(state.nu)
        stepped = [
            leaf(g, m, v, t, jax.random.fold_in(step_key, i))
            for i, (g, m, v) in enumerate(zip(grads, mus, nus, strict=True))
        ]
        new, mu, nu = ([s[k] for s in stepped] for k in range(3))
        return treedef.unflatten(new), FakeQuantAdamState(
            count, treedef.unflatten(mu), treedef.unflatten(nu)
        )

    return optax.GradientTransformation(init_fn, update_fn)


def adamw_fake4bit(
    learning_rate: optax.ScalarOrSchedule,
    weight_decay: float,
    m_format: Format,
    v_format: Format,
    stochastic_rounding: bool = True,
    seed: int = SEED,
) -> optax.GradientTransformation:
    """AdamW (decoupled weight decay, as ``adam_optax.adamw``) with fake 4-bit moments:
    update = -lr·(m̂/(sqrt(v̂) + eps) + wd·p).

    Args:
        learning_rate: a float or a schedule of the step.
        weight_decay: wd, multiplied by the learning rate.
        m_format: the first moment's 4-bit format.
        v_format: the second moment's 4-bit format.
        stochastic_rounding: round to the maps stochastically (True) or to nearest.
        seed: the stochastic rounding's seed.
    """
    return optax.chain(
        scale_by_fake_quantized_adam(
            m_format, v_format, stochastic_rounding=stochastic_rounding, seed=seed
        ),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )


# ---------------------------------------------------------------- the rows


def four_bit(m_format: Format, v_format: Format, stochastic: bool = True) -> Variant:
    """The row of AdamW with m and v in these formats."""
    name = f"m {m_format.name}, v {v_format.name}" + ("" if stochastic else " RTN")
    rounding = "stochastic rounding" if stochastic else "round-to-nearest"
    return Variant(
        name,
        lambda lr, wd, seed: adamw_fake4bit(lr, wd, m_format, v_format, stochastic, seed),
        about=f"m: map {m_format.map}, normalization {m_format.normalization}; v: map "
        f"{v_format.map}, normalization {v_format.normalization}; {rounding}",
    )


def rows() -> list[Variant]:
    """The reference, then the 4-bit candidates. A new candidate is one line here."""
    m = Format("DE", "B128")
    return [
        Variant(
            REFERENCE,
            lambda lr, wd, seed: adam_optax.adamw(lr, weight_decay=wd),
            about="`adam_optax.adamw(lr)`: float32 moments, the reference",
        ),
        four_bit(m, Format("DE-0", "B128")),
        four_bit(m, Format("Linear-0", "B128")),
        four_bit(m, Format("Linear-0", RANK1)),  # Li et al.'s pick
        four_bit(m, Format("DE-0", RANK1)),
        four_bit(Format("DE", "B64"), Format("DE-0", "B64")),
        four_bit(Format("DE", "B256"), Format("DE-0", "B256")),
        four_bit(m, Format("DE+0", "B128")),  # a zero in v's map: the zero-point problem
        four_bit(m, Format("DE-0", "B128"), stochastic=False),
        four_bit(m, Format("Linear-0", RANK1), stochastic=False),
    ]


QUICK_ROWS = ("m DE B128, v DE-0 B128", "m DE B128, v Linear-0 Rank-1")


# ---------------------------------------------------------------- report


def cell(row: dict[str, Any]) -> str:
    """Δ ± se, with the verdict when outside the spread; a non-finite loss says so."""
    if not math.isfinite(row["delta"]):
        bad = sum(not math.isfinite(v) for v in row["per_seed"])
        return f"diverged: non-finite on {bad} of {len(row['per_seed'])} seeds"
    verdict = "" if row["verdict"] in ("inside", None) else f" ({row['verdict']})"
    return percent(row["delta"], row["delta_se"]) + verdict


def findings(result: dict[str, Any]) -> list[str]:
    """Sentences derived from the summary: each row's worst |Δ test loss| over the tasks
    and how often it is outside float32's spread, best row first."""
    entries = {
        task: by_metric["test_loss"]
        for task, by_metric in result["summary"].items()
        if "test_loss" in by_metric
    }

    def deltas(name: str) -> list[float]:
        return [e["variants"][name]["delta"] for e in entries.values()]

    def worst(name: str) -> float:
        return max(abs(d) if math.isfinite(d) else math.inf for d in deltas(name))

    lines = []
    for name in sorted([v["name"] for v in result["variants"]][1:], key=worst):
        if diverged := [
            t for t, e in entries.items() if not math.isfinite(e["variants"][name]["delta"])
        ]:
            lines.append(f"- {name}: diverged (non-finite test loss) on {', '.join(diverged)}")
            continue
        count = sum(e["variants"][name]["verdict"].startswith("outside") for e in entries.values())
        lines.append(f"- {name}: largest |Δ test loss| {100 * worst(name):.2f}%, mean Δ "
                     f"{100 * np.mean(deltas(name)):+.2f}%; outside float32's spread on {count} "
                     f"of {len(entries)} tasks")  # fmt: skip
    return lines


def report(result: dict[str, Any]) -> str:
    """The results' markdown: one table of Δ per row and task, then per-task details."""
    env = result["environment"]
    names = [v["name"] for v in result["variants"]]
    columns = [
        (task, metric)
        for task, by_metric in result["summary"].items()
        for metric in ("test_loss", "train_loss")
        if metric in by_metric
    ]
    lines = [
        "# 4-bit moments: code maps and normalizations, simulated",
        "",
        f"`{env['command']}` at adam_optax {env['adam_optax_commit']}, {env['date']}: "
        f"seeds {result['seeds']}, jax {env['jax']}, {env['cpus']} CPUs, load average "
        f"{env['load_before']:.1f} before / {env['load_after']:.1f} after, "
        f"{result['seconds']:.0f} s.",
        "",
        "Each 4-bit row is AdamW whose quantized moments (leaves of >= "
        f"{quality.MIN_QUANTIZED_SIZE} elements) are replaced after every step by "
        "dequant(quant(·)) of their new value in the row's format (fake quantization; see "
        "`four_bit_maps.py`). Δ: the mean over seeds of the paired relative difference from "
        "float32, (loss_v[s] − loss_32[s]) / loss_32[s], ± its standard error (sd over "
        "seeds, ddof=1, / √n). *Spread*: float32's seed-to-seed sd (ddof=1) of the final "
        "loss over its mean. A cell is marked *outside* when |Δ| > spread.",
        "",
        "| row | " + " | ".join(f"{task}, {metric}" for task, metric in columns) + " |",
        "|---" * (1 + len(columns)) + "|",
        "| float32 spread | "
        + " | ".join(f"{100 * result['summary'][t][m]['float32_spread']:.2f}%" for t, m in columns)
        + " |",
    ]
    for name in names[1:]:
        cells = [cell(result["summary"][t][m]["variants"][name]) for t, m in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Rows ordered by their largest |Δ test loss| over the tasks:", ""]
    lines += findings(result)
    lines += ["", "Maps (normalized values a stored element may read back as):", ""]
    lines += [f"- **{k}**: " + ", ".join(f"{v:g}" for v in values) for k, values in MAPS.items()]
    lines += ["", "Rows:", ""]
    lines += [f"- **{v['name']}**: {v['about']}" for v in result["variants"]]
    lines.append("")
    for task in result["summary"]:
        lines += quality.task_section(result, task, names, "4-bit")
    decay = result["nu_decay"]
    if decay["final"]:
        f32 = decay["final"][REFERENCE]
        lines += [
            f"## v after the gradients shrink 100× at step {decay['drop_at']}",
            "",
            f"quality.py's (d): mean stored v of a 16,384-element leaf (1-D: Rank-1 falls back "
            f"to B{RANK1_FALLBACK}) after {decay['steps']} steps; float32's decays as "
            "0.999^t towards 1e-4.",
            "",
            "| row | final mean v | ÷ float32 |",
            "|---|---|---|",
            *(f"| {k} | {v:.4g} | {v / f32:.3f} |" for k, v in decay["final"].items()),
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny models, 100 steps, 2 seeds, the rows " + ", ".join(QUICK_ROWS)
                        + " and float32")  # fmt: skip
    parser.add_argument("--seeds", type=int, default=SEEDS, help="seeds 0..N-1 (%(default)s)")
    parser.add_argument("--tasks", default=",".join(quality.TASKS),
                        help="comma-separated: %(default)s")  # fmt: skip
    parser.add_argument("--variants", default=None,
                        help="semicolon-separated rows (float32 always runs); default: all of "
                        + "; ".join(v.name for v in rows()))  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    parser.add_argument("--estimate", action="store_true",
                        help="time 2 chunks per task and row; estimate the full run")  # fmt: skip
    parser.add_argument("--report-only", action="store_true",
                        help=f"rewrite OUT/{NAME}.md from OUT/{NAME}.json")  # fmt: skip
    args = parser.parse_args()
    if args.report_only:
        (args.out / f"{NAME}.md").write_text(report(json.loads((args.out / f"{NAME}.json")
                                                               .read_text())))  # fmt: skip
        return
    tasks = args.tasks.split(",")
    if unknown := set(tasks) - set(quality.TASKS):
        parser.error(f"--tasks: unknown {sorted(unknown)}; choose from {list(quality.TASKS)}")
    names = [n.strip() for n in args.variants.split(";")] if args.variants else None
    if names is None and args.quick:
        names = list(QUICK_ROWS)
    try:
        selected = quality.select(rows(), names)
    except ValueError as error:
        parser.error(f"--{error}")
    seeds = list(range(args.seeds))
    if args.estimate:
        quality.estimate(args.quick, len(seeds), tasks, selected)
        return
    command = f"python benchmarks/{NAME}.py " + " ".join(sys.argv[1:])
    result = quality.run_all(args.quick, seeds, tasks, args.out, command.strip(), selected,
                             name=NAME, report=report)  # fmt: skip
    print((args.out / f"{NAME}.md").read_text())
    print(f"{result['seconds']:.0f} s in all", file=sys.stderr)


if __name__ == "__main__":
    main()
