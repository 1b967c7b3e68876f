#!/usr/bin/env python
"""Speed of one Adam train step: ``adam_optax.adam`` against ``optax.adam``, torch's fused
Adam, a 28 B/param roofline and the floor of a jitted call.

``python benchmarks/bench_adam.py`` writes results.md, .json and .png to benchmarks/out/
(``--quick`` for a smoke run; ``--out benchmarks/results`` updates the published results).
Every contender runs in one process, in interleaved rounds whose starting contender
rotates, so machine noise hits all alike: step times are medians over rounds, ratios
medians of the per-round ratios. benchmarks/README.md defines every contender and column.
"""

import sys

try:
    import adam_optax
except ImportError as exc:
    sys.exit(f"bench_adam.py: cannot import adam_optax ({exc}); run `pip install -e .` first")

import argparse
import contextlib
import ctypes
import dataclasses
import datetime
import fnmatch
import functools
import gc
import json
import math
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from run_record import git_commit

LEARNING_RATE = 1e-3
ADAM_BYTES_PER_PARAM = 28  # float32: read p, g, m, v (16 B) + write p, m, v (12 B)
OPTIMIZERS = {"adam_optax": adam_optax.adam, "optax": optax.adam}
CONTENDERS = (*OPTIMIZERS, "torch", "roofline", "floor")
QUICK_CASES = ("flat_1e6", "tree_100x1k", "gpt2_mini")
MISMATCH_LR = 1e-2  # the numerical check flags |p - p_optax| above this many learning rates
DEFAULT_OUT = Path(__file__).resolve().parent / "out"
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
log = functools.partial(print, file=sys.stderr, flush=True)  # progress goes to stderr

PyTree = Any


# --- Cases --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    """A parameter pytree to optimize: leaf paths ("a/b/c") and shapes, in order."""

    name: str
    leaves: tuple[tuple[str, tuple[int, ...]], ...]
    flat: bool = False  # True: the pytree is one bare array, not a dict

    @property
    def n_params(self) -> int:
        return sum(math.prod(shape) for _, shape in self.leaves)


def flat_case(n: int) -> Case:
    """One float32 vector of ``n`` elements, named like ``flat_5e7``."""
    exponent = math.floor(math.log10(n))
    return Case(f"flat_{n // 10**exponent}e{exponent}", (("x", (n,)),), flat=True)


def tree_case(n_leaves: int) -> Case:
    """A dict of ``n_leaves`` float32 vectors of 1,000 elements."""
    leaves = tuple((f"w{i:05d}", (1000,)) for i in range(n_leaves))
    return Case(f"tree_{n_leaves}x1k", leaves)


def gpt2_mini_case(d: int = 192, vocab: int = 8192, n_ctx: int = 1024, n_layer: int = 12) -> Case:
    """GPT-2-small's leaf structure (12 blocks), scaled down to d_model 192, vocab 8192."""
    leaves: list[tuple[str, tuple[int, ...]]] = [("wte", (vocab, d)), ("wpe", (n_ctx, d))]
    block = {"ln_1": (d,), "attn/c_attn": (d, 3 * d), "attn/c_proj": (d, d), "ln_2": (d,)}
    block |= {"mlp/c_fc": (d, 4 * d), "mlp/c_proj": (4 * d, d)}
    for i in range(n_layer):
        for name, weight in block.items():  # each bias is as long as its weight's last axis
            leaves += [(f"h/{i}/{name}/weight", weight), (f"h/{i}/{name}/bias", weight[-1:])]
    leaves += [("ln_f/weight", (d,)), ("ln_f/bias", (d,))]
    return Case("gpt2_mini", tuple(leaves))


def all_cases(platform_name: str) -> list[Case]:
    """Every case for this platform (``flat_1e8`` on GPU only)."""
    sizes = [10**6, 10**7, 5 * 10**7] + ([10**8] if platform_name == "gpu" else [])
    return [*map(flat_case, sizes), *map(tree_case, (10, 100, 1000, 5000)), gpt2_mini_case()]


def select_cases(cases: Sequence[Case], patterns: str) -> list[Case]:
    """The cases whose name matches one of the comma-separated glob patterns."""
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    chosen = [c for c in cases if any(fnmatch.fnmatch(c.name, p) for p in wanted)]
    if not chosen:
        names = ", ".join(c.name for c in cases)
        raise SystemExit(f"--cases {patterns!r} matched no case; available: {names}")
    return chosen


def make_case_data(case: Case, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Fixed-seed float32 parameters ~N(0, 0.02²) and gradients ~N(0, 0.01²), leaf by leaf."""
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s, dtype=np.float32) * np.float32(0.02) for _, s in case.leaves]
    grads = [rng.standard_normal(s, dtype=np.float32) * np.float32(0.01) for _, s in case.leaves]
    return params, grads


def to_pytree(case: Case, arrays: Sequence[np.ndarray]) -> PyTree:
    """Fresh device copies of ``arrays`` arranged as the case's pytree."""
    device_arrays = [jax.device_put(a) for a in arrays]
    if case.flat:
        return device_arrays[0]
    tree: dict[str, Any] = {}
    for (path, _), array in zip(case.leaves, device_arrays, strict=True):
        *parents, leaf = path.split("/")
        node = tree
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = array
    return tree


# --- Steps and runners --------------------------------------------------------------


def make_train_step(tx: optax.GradientTransformation) -> Callable[..., Any]:
    """The user's optimizer step in a training loop: ``(p, s, g) -> (p', s')``."""

    def step(params: PyTree, state: PyTree, grads: PyTree) -> tuple[PyTree, PyTree]:
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def roofline_step(params: PyTree, mu: PyTree, nu: PyTree, grads: PyTree) -> tuple[PyTree, ...]:
    """Moves an ideal Adam step's 28 B/param: ``p + g`` reads p, g and writes p; ``-m`` and
    ``-v`` read and write m and v. No operand is shared, so fused or not the traffic is the
    same, and negation keeps the values bounded over many steps."""
    neg = jnp.negative
    return jax.tree.map(jnp.add, params, grads), jax.tree.map(neg, mu), jax.tree.map(neg, nu)


def floor_step(params: PyTree, mu: PyTree, nu: PyTree, grads: PyTree) -> tuple[PyTree, ...]:
    """The roofline's donated call with nothing to do: every buffer passes through."""
    del grads
    return params, mu, nu


class JaxRunner:
    """Calls ``jax.jit(fn)(*carry, *const)`` again and again, the outputs becoming the carry.

    ``donate`` indexes ``carry`` (default: all of it). ``tx`` is the optimizer, if any.
    """

    def __init__(
        self,
        label: str,
        fn: Callable[..., Any],
        carry: tuple[Any, ...],
        const: tuple[Any, ...],
        donate: tuple[int, ...] | None = None,
        tx: optax.GradientTransformation | None = None,
    ) -> None:
        donate = tuple(range(len(carry))) if donate is None else donate
        self.label, self.carry, self.const, self.tx = label, carry, const, tx
        self.jitted = jax.jit(fn, donate_argnums=donate)
        self.compiled: Any = None
        self.compile_s: float | None = None
        self.note = ""

    def compile(self) -> None:
        """Time ``lower`` + ``compile`` (the jit cache is then warm) and take a first step."""
        t0 = time.perf_counter()
        self.compiled = self.jitted.lower(*self.carry, *self.const).compile()
        self.compile_s = time.perf_counter() - t0
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.run(1)
        if any("donated buffers were not usable" in str(w.message) for w in caught):
            self.note = "DONATION NOT USED"

    def run(self, steps: int) -> float:
        """Wall time of ``steps`` calls, up to ``block_until_ready`` of the last outputs."""
        carry, jitted, const = self.carry, self.jitted, self.const
        t0 = time.perf_counter()
        for _ in range(steps):
            carry = tuple(jitted(*carry, *const))
        jax.block_until_ready(carry)
        elapsed = time.perf_counter() - t0
        self.carry = carry
        return elapsed


def optimizer_runner(
    name: str,
    case: Case,
    params: Sequence[np.ndarray],
    grads: PyTree,
    donate: tuple[int, ...] = (0, 1),
) -> JaxRunner:
    """The train step of optimizer ``name`` on fresh parameters and state."""
    tx = OPTIMIZERS[name](LEARNING_RATE)
    p = to_pytree(case, params)
    return JaxRunner(name, make_train_step(tx), (p, tx.init(p)), (grads,), donate, tx)


class TorchRunner:
    """``torch.optim.Adam`` (fused, else foreach) stepping with ``.grad`` preset once."""

    def __init__(
        self, params: Sequence[np.ndarray], grads: Sequence[np.ndarray], device: str
    ) -> None:
        import torch

        self.torch, self.device, self.note, self.compile_s = torch, device, "", None
        tensors = [torch.tensor(p, device=device, requires_grad=True) for p in params]
        for t, g in zip(tensors, grads, strict=True):
            t.grad = torch.tensor(g, device=device)
        try:
            self.opt = torch.optim.Adam(tensors, lr=LEARNING_RATE, fused=True)
            self.run(1)
            self.label = "torch (fused)"
        except (RuntimeError, ValueError, TypeError) as exc:
            self.opt = torch.optim.Adam(tensors, lr=LEARNING_RATE, foreach=True)
            self.label = "torch (foreach)"
            self.note = f"fused failed ({str(exc).splitlines()[0][:80]})"

    def compile(self) -> None:
        """Nothing to compile: one warm-up step."""
        self.run(1)

    def run(self, steps: int) -> float:
        sync = self.torch.cuda.synchronize if self.device == "cuda" else lambda: None
        sync()
        t0 = time.perf_counter()
        with self.torch.no_grad():
            for _ in range(steps):
                self.opt.step()
        sync()
        return time.perf_counter() - t0


Runner = JaxRunner | TorchRunner


# --- Timing -------------------------------------------------------------------------


def calibrate_steps(runner: Runner, target_s: float, max_steps: int = 5000) -> int:
    """Steps per round so that one round of ``runner`` lasts about ``target_s``.

    Single steps give a first estimate, refined by a batch of a quarter of the target
    (single steps overestimate when dispatch is asynchronous).
    """
    one = min(runner.run(1) for _ in range(3))
    n = max(1, min(max_steps, int(target_s / 4 / max(one, 1e-7))))
    per_step = runner.run(n) / n if n > 1 else one
    return max(1, min(max_steps, math.ceil(target_s / max(per_step, 1e-7))))


def interleaved_rounds(
    runners: Sequence[Runner], steps: Sequence[int], rounds: int
) -> list[list[float]]:
    """Seconds per step ``times[i][r]`` of runner ``i`` in round ``r``; each round starts
    one runner later, so no runner always follows the same neighbour."""
    times: list[list[float]] = [[] for _ in runners]
    for r in range(rounds):
        for j in range(len(runners)):
            i = (j + r) % len(runners)
            times[i].append(runners[i].run(steps[i]) / steps[i])
    return times


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """Median over rounds of ``a[r] / b[r]``."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def release_host_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``);
    without it, RSS ratchets up from case to case as big trees' executables come and go."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def load_average() -> float | None:
    """1-minute load average: other processes compete for the same cores."""
    with contextlib.suppress(AttributeError, OSError):
        return round(os.getloadavg()[0], 2)
    return None


@dataclasses.dataclass
class Measurement:
    """One contender on one case."""

    case: str
    label: str
    steps_per_round: int
    step_s: list[float]  # seconds per step, one per round
    median_ms: float
    iqr_pct: float  # (p75 - p25) / median, in percent
    gbps: float | None  # 28 B x params / median step; None for the floor
    vs_optax: float | None
    vs_torch: float | None
    vs_roofline: float | None
    compile_s: float | None
    note: str
    load_1min: float | None  # when the case started


def build_runners(case: Case, contenders: Sequence[str], torch_device: str | None) -> list[Runner]:
    """Every requested contender on one case, each on its own fresh buffers."""
    params, grads_np = make_case_data(case)
    grads = to_pytree(case, grads_np)  # read-only, shared by the JAX runners
    runners: list[Runner] = [
        optimizer_runner(n, case, params, grads) for n in OPTIMIZERS if n in contenders
    ]
    if "torch" in contenders and torch_device:
        runners.append(TorchRunner(params, grads_np, torch_device))
    for name, fn in (("roofline 28B", roofline_step), ("floor 0B", floor_step)):
        if name.split()[0] in contenders:
            p = to_pytree(case, params)
            moments = (jax.tree.map(jnp.zeros_like, p), jax.tree.map(jnp.ones_like, p))
            runners.append(JaxRunner(name, fn, (p, *moments), (grads,)))
    return runners


def check_against_optax(runners: Sequence[Runner], case: Case) -> dict[str, float]:
    """``max |p - p_optax| / lr`` after 3 compiled train steps (gradients g, -g/2, 2g)."""
    train = {r.label: r for r in runners if isinstance(r, JaxRunner) and r.tx is not None}
    if "optax" not in train:
        return {}
    params, grads = make_case_data(case)
    grad_seq = [to_pytree(case, [g * np.float32(c) for g in grads]) for c in (1.0, -0.5, 2.0)]

    def final_params(runner: JaxRunner) -> list[np.ndarray]:
        p = to_pytree(case, params)
        s = runner.tx.init(p)
        for g in grad_seq:
            p, s = runner.jitted(p, s, g)
        return [np.asarray(x) for x in jax.tree.leaves(p)]

    ref = final_params(train.pop("optax"))
    diffs = {}
    for name, runner in train.items():
        got = final_params(runner)
        diffs[name] = max(float(np.max(np.abs(a - b))) for a, b in zip(got, ref, strict=True))
    return {name: d / LEARNING_RATE for name, d in diffs.items()}


def measure_case(case: Case, cfg: argparse.Namespace) -> list[Measurement]:
    """Compile, check, calibrate and time every contender of one case."""
    load = load_average()
    log(f"\n== {case.name}: {case.n_params:,} params, {len(case.leaves)} leaves")
    runners = build_runners(case, cfg.contenders, cfg.torch_device)
    for r in runners:
        t0 = time.perf_counter()
        r.compile()
        log(f"   {r.label:<16} ready in {time.perf_counter() - t0:7.2f} s")
    diffs = check_against_optax(runners, case)
    steps = [calibrate_steps(r, cfg.round_seconds) for r in runners]
    times = interleaved_rounds(runners, steps, cfg.rounds)
    by_label = {r.label.split()[0]: t for r, t in zip(runners, times, strict=True)}
    rows = []
    for r, t, k in zip(runners, times, steps, strict=True):
        median = statistics.median(t)
        gbps = ADAM_BYTES_PER_PARAM * case.n_params / median / 1e9
        note = r.note
        if r.label in diffs:
            flag = " MISMATCH" if diffs[r.label] > MISMATCH_LR else ""
            check = f"max|dp| vs optax {diffs[r.label]:.1e} lr{flag}"
            note = f"{note}; {check}" if note else check
        ratios = {
            ref: paired_ratio(t, by_label[ref]) if ref in by_label else None
            for ref in ("optax", "torch", "roofline")
        }
        rows.append(
            Measurement(
                case=case.name,
                label=r.label,
                steps_per_round=k,
                step_s=t,
                median_ms=median * 1e3,
                iqr_pct=100 * float(np.subtract(*np.quantile(t, [0.75, 0.25]))) / median,
                gbps=None if r.label.startswith("floor") else gbps,
                vs_optax=ratios["optax"],
                vs_torch=ratios["torch"],
                vs_roofline=ratios["roofline"],
                compile_s=r.compile_s,
                note=note,
                load_1min=load,
            )
        )
    return rows


def setup_torch(jax_platform: str, threads: int | None) -> tuple[str | None, str]:
    """(torch device or None, what to report). On CPU torch gets as many threads as XLA's cores."""
    try:
        import torch
    except ImportError:
        return None, "not installed: skipped"
    if jax_platform == "cpu":
        torch.set_num_threads(threads or CORES)
        return "cpu", f"{torch.__version__} on cpu, {torch.get_num_threads()} threads"
    if jax_platform == "gpu" and torch.cuda.is_available():
        return "cuda", f"{torch.__version__} on {torch.cuda.get_device_name()}"
    return None, f"{torch.__version__} has no {jax_platform}: skipped"


# --- Report -------------------------------------------------------------------------


def environment(torch_note: str = "not measured") -> dict[str, Any]:
    """What ran the benchmark."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(
            (ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), cpu
        )
    device = jax.devices()[0]
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": f"{device.device_kind} ({device.platform}, {jax.device_count()} device(s))",
        "cpu": f"{cpu}, {CORES} cores available",
        "versions": f"python {platform.python_version()}, jax {jax.__version__}, "
        f"optax {optax.__version__}",
        "torch": torch_note,
        "adam_optax": f"{adam_optax.__version__} from {adam_optax.__file__}",
        "commit": git_commit(),
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", "(unset)"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "load_1min_start": load_average(),
    }


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "—" if x is None else f"{x:{spec}}"


def fmt_ratio(x: float | None) -> str:
    """About three significant digits: 0.00123, 0.87, 12.3, 360."""
    if x is None:
        return "—"
    return f"{x:.0f}" if x >= 100 else f"{x:.2f}" if x >= 0.1 else f"{x:.2g}"


def fmt_ms(ms: float) -> str:
    return f"{ms:.1f}" if ms >= 100 else f"{ms:.2f}" if ms >= 1 else f"{ms:.3f}"


TABLE_HEADER = """\
Step time = median over interleaved rounds of (wall time of k steps incl. `block_until_ready`) / k.
Ratios are medians of the per-round paired ratios (lower is faster). **Roofline** = one jitted,
fully donated call moving an ideal Adam step's 28 B/param with trivial math (`p+g`, `-m`, `-v`).
**Floor** = the same call returning its inputs untouched (0 B): the cost of passing the tree's
buffers in and out. GB/s = 28 B × params / step time. Compile = `jit(f).lower(...).compile()` s."""


def report(
    env: dict[str, Any], rows: Sequence[Measurement], cfg: argparse.Namespace, wall_s: float
) -> str:
    """The markdown report: environment, the table, the load average per case."""
    load = max(env["load_1min_start"] or 0, env["load_1min_end"] or 0)
    busy = load > 0.5 + 0.25 * CORES and jax.default_backend() == "cpu"
    warning = " — **WARNING: other processes used the cores; timings are unreliable**"
    lines = ["# Adam optimizer-step benchmark", ""]
    lines += [f"- **{k}**: {v}" for k, v in env.items() if not k.startswith("load")]
    lines += [
        f"- **system load** (1-min average): {fmt(env['load_1min_start'])} at start, "
        f"{fmt(env['load_1min_end'])} at end{warning * busy}",
        f"- **rounds**: {cfg.rounds}, ~{cfg.round_seconds:g} s per contender per round; "
        f"wall time {wall_s:.0f} s",
        "",
        TABLE_HEADER,
        "",
        "| case | contender | ms/step | IQR | ×optax | ×torch | ×roofline | GB/s | compile s | k "
        "| notes |",
        "|" + "---|" * 11,
    ]
    for m in rows:
        cells = [m.case, m.label, fmt_ms(m.median_ms), f"{m.iqr_pct:.0f}%"]
        cells += [fmt_ratio(m.vs_optax), fmt_ratio(m.vs_torch), fmt_ratio(m.vs_roofline)]
        cells += [fmt(m.gbps, ".1f"), fmt(m.compile_s), str(m.steps_per_round), m.note]
        lines.append("| " + " | ".join(cells) + " |")
    loads = ", ".join(f"{c} {fmt(v)}" for c, v in {m.case: m.load_1min for m in rows}.items())
    lines += ["", f"Load average (1 min) when each case started: {loads}"]
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[Measurement], path: Path, title: str) -> bool:
    """Step time, × optax, × roofline and compile time; False without matplotlib."""
    try:
        import matplotlib.pyplot as plt
        from matplotlib import ticker
    except ImportError:
        return False

    cases = list(dict.fromkeys(m.case for m in rows))
    labels = list(dict.fromkeys(m.label for m in rows))
    by_key = {(m.case, m.label): m for m in rows}

    def ratio(field: str) -> Callable[[Measurement], float | None]:  # the floor's are tiny
        return lambda m: None if m.label.startswith("floor") else getattr(m, field)

    panels = (
        ("median step time (ms)", lambda m: m.median_ms),
        ("× optax.adam (lower = faster)", ratio("vs_optax")),
        ("× roofline (28 B/param)", ratio("vs_roofline")),
        ("compile time (s)", lambda m: m.compile_s),
    )
    fig, axes = plt.subplots(2, 2, figsize=(16, 10))
    x, width = np.arange(len(cases)), 0.8 / len(labels)
    for ax, (ylabel, value) in zip(axes.flat, panels, strict=True):
        for j, label in enumerate(labels):  # one colour per contender in every panel
            ms = [by_key.get((c, label)) for c in cases]
            vals = [np.nan if m is None or value(m) is None else value(m) for m in ms]
            ax.bar(x + (j - (len(labels) - 1) / 2) * width, vals, width, label=label, color=f"C{j}")
        if "×" in ylabel:
            ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter("{x:g}")
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xticks(x, cases, rotation=25, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", which="both", alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def parse_args(argv: Sequence[str] | None, cases: Sequence[Case]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a smoke run: 3 cases, 3 short rounds")
    p.add_argument("--cases", help="names or globs, e.g. 'flat_*,gpt2_mini' (default: all)")
    p.epilog = "cases: " + ", ".join(c.name for c in cases)
    p.add_argument("--contenders", default=",".join(CONTENDERS), help="a subset of %(default)s")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 15; --quick 3)")
    p.add_argument("--round-seconds", type=float, help="per contender and round (0.25; quick 0.04)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder (default benchmarks/out)")
    p.add_argument("--torch-threads", type=int, help="on CPU (default: the cores XLA may use)")
    args = p.parse_args(argv)
    args.cases = select_cases(cases, args.cases or (",".join(QUICK_CASES) if args.quick else "*"))
    args.contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    if unknown := set(args.contenders) - set(CONTENDERS):
        p.error(f"--contenders: unknown {sorted(unknown)}; choose from {','.join(CONTENDERS)}")
    args.rounds = args.rounds or (3 if args.quick else 15)
    args.round_seconds = args.round_seconds or (0.04 if args.quick else 0.25)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    t_start = time.perf_counter()
    platform_name = jax.default_backend()
    cfg = parse_args(argv, all_cases(platform_name))
    cfg.torch_device, torch_note = (None, "not requested")
    if "torch" in cfg.contenders:
        cfg.torch_device, torch_note = setup_torch(platform_name, cfg.torch_threads)
    env = environment(torch_note)
    rows: list[Measurement] = []
    for case in cfg.cases:
        rows += measure_case(case, cfg)
        release_host_memory()  # free the case's buffers and executables
    wall = time.perf_counter() - t_start
    env["load_1min_end"] = load_average()
    text = report(env, rows, cfg, wall)
    print(text)
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "results.md").write_text(text)
    config = {k: v for k, v in vars(cfg).items() if k not in ("cases", "out")}
    payload = {"environment": env, "config": config, "measurements": rows, "wall_s": wall}
    config["cases"] = {c.name: {"params": c.n_params, "leaves": len(c.leaves)} for c in cfg.cases}
    (cfg.out / "results.json").write_text(json.dumps(payload, indent=1, default=dataclasses.asdict))
    title = f"Adam step on {env['device']}, jax {jax.__version__}"
    plotted = bool(rows) and plot(rows, cfg.out / "results.png", title)
    log(f"wrote results.md, results.json{', results.png' * plotted} to {cfg.out} in {wall:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
