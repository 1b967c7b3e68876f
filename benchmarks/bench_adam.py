#!/usr/bin/env python
"""Speed and memory benchmark for ``adam_optax.adam`` against optax, torch and a roofline.

Run ``python benchmarks/bench_adam.py`` (``--help`` for options; ``--quick`` for a
smoke run).  Everything is measured in one process with *interleaved* rounds: in
round ``r`` every contender runs ``k`` optimizer steps, then the next contender
does, and so on (the order is rotated every round), so machine noise hits all
contenders alike.  Reported numbers are medians over rounds; ratios are medians
of the per-round (paired) ratios.

Contenders
    adam_optax  ``adam_optax.adam(1e-3)`` (falls back to ``optax.adam`` as a
                clearly labelled stand-in if the package cannot be imported).
    optax       ``optax.adam(1e-3)``.
    torch       ``torch.optim.Adam(params, lr=1e-3, fused=True)`` (``foreach=True``
                if fused is unsupported), stepped with ``.grad`` already set.
    roofline    one jitted function, all buffers donated, that moves exactly the
                bytes of an ideal Adam step with trivial arithmetic, per leaf:
                ``p' = p + g`` (read p, g; write p), ``m' = -m``, ``v' = -v``
                => 16 B read + 12 B written = 28 B/param, whether or not XLA
                fuses the three passes (they share no operand).
    floor       the same donated call returning its inputs untouched: 0 B moved.
                What is left is the cost of passing the tree's buffers in and
                out of a jitted call, which no per-leaf state layout can beat.

JAX modes
    update      ``jax.jit(tx.update)(g, s, p)``, no donation, state fed back.
    train       ``jax.jit(step, donate_argnums=(0, 1))`` with
                ``step(p, s, g) = (optax.apply_updates(p, u), s')``.

See ``benchmarks/README.md`` for the definition of every column.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import datetime
import fnmatch
import gc
import importlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

LEARNING_RATE = 1e-3
ADAM_BYTES_PER_PARAM = 28  # read p, g, m, v (16 B) + write p, m, v (12 B), float32
COPY_BYTES_PER_ELEM = 8  # in-place negation: read 4 B + write 4 B
SLOW_COMPILE_S = 10.0  # compiles slower than this are flagged even without an XLA warning
XLA_SLOW_COMPILE_MARKERS = ("slow compile", "slow operation")
MB = 1e6

CONTENDERS = ("adam_optax", "optax", "torch", "roofline", "floor")
JAX_OPTIMIZERS = ("adam_optax", "optax")
MODES = ("update", "train")

PyTree = Any


# ----------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A parameter pytree to optimize: ordered leaf paths ("a/b/c") and shapes."""

    name: str
    description: str
    leaves: tuple[tuple[str, tuple[int, ...]], ...]
    flat: bool = False  # True: the pytree is one bare array, not a dict

    @property
    def n_params(self) -> int:
        return sum(math.prod(shape) for _, shape in self.leaves)

    @property
    def n_leaves(self) -> int:
        return len(self.leaves)


def flat_case(n: int) -> Case:
    """A single float32 vector of ``n`` elements."""
    exponent = math.floor(math.log10(n))
    mantissa = n // 10**exponent
    tag = f"{mantissa}e{exponent}" if mantissa * 10**exponent == n else str(n)
    return Case(f"flat_{tag}", f"one f32 vector of {n:,}", (("x", (n,)),), flat=True)


def tree_case(n_leaves: int) -> Case:
    """A dict of ``n_leaves`` float32 vectors of 1,000 elements each."""
    leaves = tuple((f"w{i:05d}", (1000,)) for i in range(n_leaves))
    return Case(f"tree_{n_leaves}x1k", f"dict of {n_leaves:,} leaves x 1,000", leaves)


def gpt2_mini_case(
    d_model: int = 192, vocab: int = 8192, n_ctx: int = 1024, n_layer: int = 12
) -> Case:
    """GPT-2-small leaf structure (12 blocks), scaled to d_model=192, vocab=8192."""
    d = d_model
    leaves: list[tuple[str, tuple[int, ...]]] = [("wte", (vocab, d)), ("wpe", (n_ctx, d))]
    for i in range(n_layer):
        block = f"h/{i}/"
        leaves += [
            (block + "ln_1/weight", (d,)),
            (block + "ln_1/bias", (d,)),
            (block + "attn/c_attn/weight", (d, 3 * d)),
            (block + "attn/c_attn/bias", (3 * d,)),
            (block + "attn/c_proj/weight", (d, d)),
            (block + "attn/c_proj/bias", (d,)),
            (block + "ln_2/weight", (d,)),
            (block + "ln_2/bias", (d,)),
            (block + "mlp/c_fc/weight", (d, 4 * d)),
            (block + "mlp/c_fc/bias", (4 * d,)),
            (block + "mlp/c_proj/weight", (4 * d, d)),
            (block + "mlp/c_proj/bias", (d,)),
        ]
    leaves += [("ln_f/weight", (d,)), ("ln_f/bias", (d,))]
    desc = f"GPT-2-small shapes, d={d}, vocab={vocab}, ctx={n_ctx}, {n_layer} layers"
    return Case("gpt2_mini", desc, tuple(leaves))


def all_cases(platform_name: str) -> list[Case]:
    """Every case this device supports (the 1e8 flat case only on GPU)."""
    cases = [flat_case(10**6), flat_case(10**7), flat_case(5 * 10**7)]
    if platform_name == "gpu":
        cases.append(flat_case(10**8))
    cases += [tree_case(n) for n in (10, 100, 1000, 5000)]
    cases.append(gpt2_mini_case())
    return cases


QUICK_CASES = ("flat_1e6", "tree_100x1k", "gpt2_mini")


def select_cases(cases: Sequence[Case], patterns: str) -> list[Case]:
    """Cases whose name matches any of the comma-separated glob patterns."""
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    chosen = [c for c in cases if any(fnmatch.fnmatch(c.name, p) for p in wanted)]
    if not chosen:
        names = ", ".join(c.name for c in cases)
        raise SystemExit(f"--cases {patterns!r} matched nothing; available: {names}")
    return chosen


@dataclass
class CaseData:
    """Host (numpy) parameters and gradients of a case, in leaf order."""

    case: Case
    params: list[np.ndarray]
    grads: list[np.ndarray]


def make_case_data(case: Case, seed: int = 0) -> CaseData:
    """Deterministic random float32 parameters (~N(0, .02)) and gradients (~N(0, .01))."""
    rng = np.random.default_rng(seed)
    params, grads = [], []
    for _, shape in case.leaves:
        params.append(rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02))
        grads.append(rng.standard_normal(shape, dtype=np.float32) * np.float32(0.01))
    return CaseData(case, params, grads)


def to_pytree(case: Case, arrays: Sequence[np.ndarray]) -> PyTree:
    """Fresh device arrays arranged as the case's pytree (bare array or nested dict)."""
    device_arrays = [jax.device_put(a) for a in arrays]  # device_put copies host memory
    if case.flat:
        return device_arrays[0]
    tree: dict[str, Any] = {}
    for (path, _), arr in zip(case.leaves, device_arrays, strict=True):
        *parents, leaf = path.split("/")
        node = tree
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = arr
    return tree


def tree_bytes(tree: PyTree) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


# ----------------------------------------------------------------------------
# Optimizers
# ----------------------------------------------------------------------------


@dataclass
class OptimizerFactory:
    """How to build one JAX contender's GradientTransformation."""

    make: Callable[[], optax.GradientTransformation]
    note: str = ""


def load_adam_optax() -> OptimizerFactory:
    """``adam_optax.adam`` if importable, else ``optax.adam`` labelled as a stand-in."""
    try:
        module = importlib.import_module("adam_optax")
        adam = module.adam
    except Exception as exc:  # any import problem means "not available"
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:120]
        note = f"STAND-IN: adam_optax not importable ({reason}); optax.adam measured instead"
        return OptimizerFactory(lambda: optax.adam(LEARNING_RATE), note)
    version = getattr(module, "__version__", "?")
    where = getattr(module, "__file__", "?")
    return OptimizerFactory(lambda: adam(LEARNING_RATE), f"adam_optax {version} from {where}")


def optax_factory() -> OptimizerFactory:
    note = f"optax {optax.__version__}"
    return OptimizerFactory(lambda: optax.adam(LEARNING_RATE), note)


def make_update_fn(tx: optax.GradientTransformation) -> Callable[..., Any]:
    """``(state, grads, params) -> (updates, state)``; state first so it can be fed back."""

    def update(state: PyTree, grads: PyTree, params: PyTree) -> tuple[PyTree, PyTree]:
        return tx.update(grads, state, params)

    return update


def make_train_step(tx: optax.GradientTransformation) -> Callable[..., Any]:
    """The user's training-loop optimizer step: ``(p, s, g) -> (p', s')``."""

    def step(params: PyTree, state: PyTree, grads: PyTree) -> tuple[PyTree, PyTree]:
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def roofline_step(params: PyTree, mu: PyTree, nu: PyTree, grads: PyTree) -> tuple[PyTree, ...]:
    """Moves the bytes of an ideal Adam step (28 B/param) with trivial arithmetic.

    Per leaf: ``p + g`` reads p and g and writes p; ``-m`` and ``-v`` read and
    write m and v.  No operand is shared, so the traffic is 28 B/param whether
    XLA emits one fused loop or three.  Negation keeps values bounded (no
    denormals after many steps).
    """
    return (
        jax.tree.map(jnp.add, params, grads),
        jax.tree.map(jnp.negative, mu),
        jax.tree.map(jnp.negative, nu),
    )


def floor_step(params: PyTree, mu: PyTree, nu: PyTree, grads: PyTree) -> tuple[PyTree, ...]:
    """The roofline's donated call with nothing to do: every buffer passes through.

    Its time is the per-call cost of the tree's buffers (the donated ones come
    back aliased), so on trees of many small leaves it bounds from below any
    optimizer that keeps one state buffer per leaf, as optax's layout does.
    """
    del grads
    return params, mu, nu


def copy_step(x: jax.Array) -> jax.Array:
    """In-place streaming copy kernel (``x' = -x``, donated): 8 B/element."""
    return -x


# ----------------------------------------------------------------------------
# Measurement infrastructure
# ----------------------------------------------------------------------------


@dataclass
class CompileInfo:
    """Cost of ``jax.jit(f).lower(*args).compile()`` and what it printed."""

    lower_s: float
    compile_s: float
    host_mb: float  # RSS growth across lower + compile (after malloc_trim): retained host memory
    slow_compile_flag: bool
    xla_slow_warning: bool
    captured_stderr: str = ""
    python_warnings: list[str] = field(default_factory=list)

    @property
    def total_s(self) -> float:
        return self.lower_s + self.compile_s


@dataclass
class MemoryInfo:
    """Memory of one step.  JAX: XLA's ``compiled.memory_analysis()``; torch: live tensors."""

    source: str
    argument_bytes: int = 0
    output_bytes: int = 0
    alias_bytes: int = 0
    temp_bytes: int = 0
    total_bytes: int = 0  # JAX: argument + output + temp - alias; torch: params+grads+state
    state_bytes: int = 0  # optimizer state (mu, nu, count / exp_avg, exp_avg_sq, step)
    xla_peak_bytes: int | None = None


@contextlib.contextmanager
def capture_fd_stderr() -> Iterator[list[str]]:
    """Capture everything written to file descriptor 2 (XLA's C++ logging included).

    Yields a list that receives the captured text on exit; the text is echoed
    back to the real stderr so nothing is hidden from the user.
    """
    out: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")
            out.append(text)
            if text:
                sys.stderr.write(text)
                sys.stderr.flush()


def memory_from_compiled(compiled: Any, state_bytes: int) -> MemoryInfo:
    """Summarise ``compiled.memory_analysis()`` (sizes of one executable call)."""
    stats = compiled.memory_analysis()
    if stats is None:
        return MemoryInfo("unavailable", state_bytes=state_bytes)
    arg, out = stats.argument_size_in_bytes, stats.output_size_in_bytes
    alias, temp = stats.alias_size_in_bytes, stats.temp_size_in_bytes
    peak = getattr(stats, "peak_memory_in_bytes", None)
    return MemoryInfo(
        "xla memory_analysis",
        argument_bytes=arg,
        output_bytes=out,
        alias_bytes=alias,
        temp_bytes=temp,
        total_bytes=arg + out + temp - alias,
        state_bytes=state_bytes,
        xla_peak_bytes=peak or None,
    )


class JaxRunner:
    """Repeatedly calls a jitted function, feeding (part of) its outputs back in.

    ``fn(*carry, *const)`` is jitted with ``donate_argnums`` given as indices
    into ``carry``; ``next_carry(outputs)`` picks the new carry from the outputs.
    """

    def __init__(
        self,
        contender: str,
        mode: str,
        fn: Callable[..., Any],
        carry: tuple[Any, ...],
        const: tuple[Any, ...],
        next_carry: Callable[[Any], tuple[Any, ...]],
        donate: tuple[int, ...] = (),
        state_bytes: int = 0,
        note: str = "",
        tx: optax.GradientTransformation | None = None,
    ) -> None:
        self.contender, self.mode, self.note, self.tx = contender, mode, note, tx
        self.carry, self.const, self.next_carry = carry, const, next_carry
        self.state_bytes = state_bytes
        self.jitted = jax.jit(fn, donate_argnums=donate)
        self.compile_info: CompileInfo | None = None
        self.memory: MemoryInfo | None = None

    def compile(self) -> None:
        """Time ``lower`` and ``compile``; the jit cache is then warm for ``run``."""
        release_host_memory()
        rss0 = rss_gb()
        with warnings.catch_warnings(record=True) as caught, capture_fd_stderr() as err:
            warnings.simplefilter("always")
            t0 = time.perf_counter()
            lowered = self.jitted.lower(*self.carry, *self.const)
            t1 = time.perf_counter()
            compiled = lowered.compile()
            t2 = time.perf_counter()
            del lowered
            release_host_memory()
            host_mb = (rss_gb() - rss0) * 1e3
            self.run(1)  # first call: donation problems are reported here
        text = err[0] if err else ""
        xla_warning = any(m in text.lower() for m in XLA_SLOW_COMPILE_MARKERS)
        self.compile_info = CompileInfo(
            lower_s=t1 - t0,
            compile_s=t2 - t1,
            host_mb=host_mb,
            slow_compile_flag=xla_warning or (t2 - t0) > SLOW_COMPILE_S,
            xla_slow_warning=xla_warning,
            captured_stderr=text[-2000:],
            python_warnings=[str(w.message)[:300] for w in caught],
        )
        self.memory = memory_from_compiled(compiled, self.state_bytes)
        if any("donated buffers were not usable" in w for w in self.compile_info.python_warnings):
            self.note = (self.note + "; " if self.note else "") + "DONATION NOT USED"

    def run(self, steps: int) -> float:
        """Wall time of ``steps`` calls, including the final ``block_until_ready``."""
        carry = self.carry
        jitted, const, next_carry = self.jitted, self.const, self.next_carry
        t0 = time.perf_counter()
        for _ in range(steps):
            carry = next_carry(jitted(*carry, *const))
        jax.block_until_ready(carry)
        elapsed = time.perf_counter() - t0
        self.carry = carry
        return elapsed


class TorchRunner:
    """``torch.optim.Adam`` (fused, else foreach) stepping with ``.grad`` preset."""

    def __init__(self, data: CaseData, device: str) -> None:
        import torch

        self.torch = torch
        self.device = device
        self.contender, self.mode = "torch", "step"
        self.params = [torch.tensor(p, device=device, requires_grad=True) for p in data.params]
        for p, g in zip(self.params, data.grads, strict=True):
            p.grad = torch.tensor(g, device=device)
        self.note = ""
        self.compile_info: CompileInfo | None = None
        self.memory: MemoryInfo | None = None
        try:
            self.opt = torch.optim.Adam(self.params, lr=LEARNING_RATE, fused=True)
            self.impl = "fused"
            self.run(1)
        except (RuntimeError, ValueError, TypeError) as exc:
            self.opt = torch.optim.Adam(self.params, lr=LEARNING_RATE, foreach=True)
            self.impl = "foreach"
            self.note = f"fused unsupported ({str(exc).splitlines()[0][:80]}); foreach=True"

    def compile(self) -> None:
        """No compilation; take one warm-up step and record the state size."""
        self.run(1)
        state = [t for s in self.opt.state.values() for t in s.values() if hasattr(t, "numel")]
        state_bytes = sum(t.numel() * t.element_size() for t in state)
        param_bytes = sum(p.numel() * p.element_size() for p in self.params)
        self.memory = MemoryInfo(
            "torch tensors",
            total_bytes=2 * param_bytes + state_bytes,  # params + grads + state
            state_bytes=state_bytes,
        )

    def synchronize(self) -> None:
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize()

    def run(self, steps: int) -> float:
        opt = self.opt
        self.synchronize()
        t0 = time.perf_counter()
        with self.torch.no_grad():
            for _ in range(steps):
                opt.step()
        self.synchronize()
        return time.perf_counter() - t0


Runner = JaxRunner | TorchRunner


def runner_label(r: Runner) -> str:
    if isinstance(r, TorchRunner):
        return f"torch ({r.impl})"
    return f"{r.contender} {r.mode}"


def calibrate_steps(runner: Runner, target_s: float, max_steps: int = 5000) -> int:
    """Steps per round so that one round of this runner lasts about ``target_s``.

    A first estimate from single steps is refined with a batch lasting about a
    quarter of the target (single steps over-estimate when dispatch is async).
    """
    one = min(runner.run(1) for _ in range(3))
    n = max(1, min(max_steps, int(target_s / 4 / max(one, 1e-7))))
    per_step = runner.run(n) / n if n > 1 else one
    return max(1, min(max_steps, math.ceil(target_s / max(per_step, 1e-7))))


def interleaved_rounds(
    runners: Sequence[Runner], steps: Sequence[int], rounds: int
) -> list[list[float]]:
    """Per-step seconds ``times[i][r]`` of runner ``i`` in round ``r``.

    Every round runs each runner once for its ``steps[i]`` steps; the starting
    runner rotates each round so no runner always follows the same neighbour.
    """
    times: list[list[float]] = [[] for _ in runners]
    n = len(runners)
    for r in range(rounds):
        for j in range(n):
            i = (j + r) % n
            times[i].append(runners[i].run(steps[i]) / steps[i])
    return times


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """Median over rounds of ``a[r] / b[r]``."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


# ----------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------


@dataclass
class Measurement:
    """One contender x mode on one case."""

    case: str
    contender: str
    mode: str
    label: str
    n_params: int
    n_leaves: int
    steps_per_round: int
    step_s: list[float]
    median_ms: float
    iqr_pct: float  # (p75 - p25) / median, in percent
    gbps: float | None  # ADAM_BYTES_PER_PARAM * n_params / median step time; None for floor
    pct_copy_bw: float | None
    vs_optax: float | None  # same mode (torch and roofline: vs optax train)
    vs_torch: float | None
    vs_roofline: float | None
    compile: CompileInfo | None
    memory: MemoryInfo | None
    note: str = ""
    load_1min: float | None = None  # system load average when the case started


@dataclass
class DonationMeasurement:
    """Train step of one optimizer under one donation setting."""

    case: str
    contender: str
    donated: str
    median_ms: float
    vs_fully_donated: float
    total_mb: float | None
    alias_mb: float | None
    note: str = ""


@dataclass
class CopyBandwidth:
    """Device-to-device streaming bandwidth from a donated in-place ``x' = -x``."""

    n_elems: int
    median_ms: float
    gbps: float


@dataclass
class Environment:
    """What ran the benchmark."""

    date: str
    device_kind: str
    platform: str
    n_devices: int
    cpu_model: str
    cpu_cores: int
    xla_flags: str
    python: str
    jax: str
    jaxlib: str
    optax: str
    torch: str
    torch_device: str
    torch_threads: int | None
    adam_optax: str
    command: str
    load_1min_start: float | None = None
    load_1min_end: float | None = None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_cores() -> int:
    """Cores this process may run on (what XLA's CPU thread pool is sized to)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def rss_gb() -> float:
    """Current resident memory of this process in GB (0 where /proc is unavailable)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e9


def release_host_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``).

    Large-tree executables take GBs of host memory to build; without trimming,
    glibc keeps the freed pages and RSS ratchets up from case to case.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def load_average() -> float | None:
    """1-minute system load average (other processes compete for the same cores)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def quantile(xs: Sequence[float], q: float) -> float:
    return float(np.quantile(np.asarray(xs), q))


# ----------------------------------------------------------------------------
# Benchmark driver
# ----------------------------------------------------------------------------


@dataclass
class Config:
    """Command-line options, resolved."""

    cases: list[Case]
    contenders: tuple[str, ...]
    modes: tuple[str, ...]
    rounds: int
    round_target_s: float
    out: Path
    skip_slow_compile: bool
    donation_case: Case | None
    check: bool
    plot: bool
    copy_bw_elems: int
    torch_threads: int | None


@dataclass
class Setup:
    """Objects shared by all cases."""

    optimizers: dict[str, OptimizerFactory]
    torch_device: str | None  # None: torch not measured


def optimizer_runner(
    name: str,
    factory: OptimizerFactory,
    data: CaseData,
    grads: PyTree,
    mode: str,
    donate: tuple[int, ...] = (0, 1),
) -> JaxRunner:
    """A JAX optimizer's runner on fresh params and state: ``update`` (no donation)
    or any other mode, which is the train step donating ``donate``."""
    tx = factory.make()
    params = to_pytree(data.case, data.params)
    state = tx.init(params)
    common = {
        "state_bytes": tree_bytes(state),
        "note": "stand-in = optax.adam" if factory.note.startswith("STAND-IN") else "",
        "tx": tx,
    }
    if mode == "update":  # the updates are dropped and the state is fed back
        update = make_update_fn(tx)
        return JaxRunner(
            name, mode, update, (state,), (grads, params), lambda out: (out[1],), **common
        )
    train = make_train_step(tx)
    return JaxRunner(name, mode, train, (params, state), (grads,), tuple, donate=donate, **common)


def build_runners(data: CaseData, cfg: Config, setup: Setup) -> list[Runner]:
    """All contenders x modes for one case, each with its own fresh buffers."""
    case = data.case
    grads = to_pytree(case, data.grads)  # read-only, shared by the JAX runners
    runners: list[Runner] = []
    slow_skip = cfg.skip_slow_compile and case.n_leaves > 1000
    for name in JAX_OPTIMIZERS:
        if name not in cfg.contenders:
            continue
        for mode in cfg.modes:
            if mode == "update" and slow_skip:
                continue
            runners.append(optimizer_runner(name, setup.optimizers[name], data, grads, mode))
    if "torch" in cfg.contenders and setup.torch_device is not None:
        runners.append(TorchRunner(data, setup.torch_device))
    for name, mode, fn in (("roofline", "28B", roofline_step), ("floor", "0B", floor_step)):
        if name not in cfg.contenders:
            continue
        params = to_pytree(case, data.params)
        mu = jax.tree.map(jnp.zeros_like, params)
        nu = jax.tree.map(jnp.ones_like, params)
        runners.append(
            JaxRunner(
                name, mode, fn, (params, mu, nu), (grads,), next_carry=tuple, donate=(0, 1, 2)
            )
        )
    return runners


def check_against_optax(runners: Sequence[Runner], data: CaseData) -> dict[str, float]:
    """Max |p - p_optax| / lr after 3 train steps with varying gradients, per JAX optimizer.

    Reuses the already-compiled train steps (fresh buffers, since they donate).
    """
    train = {r.contender: r for r in runners if isinstance(r, JaxRunner) and r.mode == "train"}
    if "optax" not in train:
        return {}
    case = data.case
    scales = (1.0, -0.5, 2.0)
    grad_seq = [to_pytree(case, [g * np.float32(c) for g in data.grads]) for c in scales]

    def final_params(runner: JaxRunner) -> list[np.ndarray]:
        params = to_pytree(case, data.params)
        state = runner.tx.init(params)
        for g in grad_seq:
            params, state = runner.jitted(params, state, g)
        return [np.asarray(x) for x in jax.tree.leaves(params)]

    ref = final_params(train["optax"])
    diffs = {}
    for name, runner in train.items():
        if name == "optax":
            continue
        got = final_params(runner)
        err = max(float(np.max(np.abs(a - b))) for a, b in zip(got, ref, strict=True))
        diffs[name] = err / LEARNING_RATE
    return diffs


def measure_case(
    data: CaseData, cfg: Config, setup: Setup, copy_bw: CopyBandwidth | None
) -> list[Measurement]:
    """Compile, calibrate and time every runner of one case in interleaved rounds."""
    case = data.case
    load = load_average()
    print(
        f"\n== {case.name}: {case.description} ({case.n_params:,} params, "
        f"{case.n_leaves:,} leaves)",
        file=sys.stderr,
        flush=True,
    )
    runners = build_runners(data, cfg, setup)
    for r in runners:
        t0 = time.perf_counter()
        r.compile()
        print(
            f"   {runner_label(r):<22} ready in {time.perf_counter() - t0:7.2f} s"
            f"  (RSS {rss_gb():.2f} GB)",
            file=sys.stderr,
            flush=True,
        )
    diffs = check_against_optax(runners, data) if cfg.check else {}
    steps = [calibrate_steps(r, cfg.round_target_s) for r in runners]
    times = interleaved_rounds(runners, steps, cfg.rounds)

    by_key = {(r.contender, r.mode): t for r, t in zip(runners, times, strict=True)}
    torch_t, roof_t = by_key.get(("torch", "step")), by_key.get(("roofline", "28B"))
    results = []
    for r, t, k in zip(runners, times, steps, strict=True):
        ref_mode = r.mode if r.contender in JAX_OPTIMIZERS else "train"
        optax_t = by_key.get(("optax", ref_mode))
        median = statistics.median(t)
        gbps = (
            ADAM_BYTES_PER_PARAM * case.n_params / median / 1e9 if r.contender != "floor" else None
        )
        note = r.note
        if r.contender in diffs and r.mode == "train":
            d = diffs[r.contender]
            flag = " MISMATCH" if d > 1e-2 else ""
            note = (note + "; " if note else "") + f"max|dp| vs optax {d:.1e} lr{flag}"
        if r.compile_info and r.compile_info.slow_compile_flag:
            why = "XLA warning" if r.compile_info.xla_slow_warning else f">{SLOW_COMPILE_S:.0f} s"
            note = (note + "; " if note else "") + f"slow compile ({why})"
        results.append(
            Measurement(
                case=case.name,
                contender=r.contender,
                mode=r.mode,
                label=runner_label(r),
                n_params=case.n_params,
                n_leaves=case.n_leaves,
                steps_per_round=k,
                step_s=t,
                median_ms=median * 1e3,
                iqr_pct=100 * (quantile(t, 0.75) - quantile(t, 0.25)) / median,
                gbps=gbps,
                pct_copy_bw=100 * gbps / copy_bw.gbps if copy_bw and gbps else None,
                vs_optax=paired_ratio(t, optax_t) if optax_t else None,
                vs_torch=paired_ratio(t, torch_t) if torch_t else None,
                vs_roofline=paired_ratio(t, roof_t) if roof_t else None,
                compile=r.compile_info,
                memory=r.memory,
                note=note,
                load_1min=load,
            )
        )
    return results


def measure_copy_bandwidth(n_elems: int, rounds: int, target_s: float) -> CopyBandwidth:
    """Streaming bandwidth of a donated in-place negation on one large buffer."""
    x = jax.device_put(np.ones(n_elems, dtype=np.float32))
    runner = JaxRunner(
        "copy", "copy", copy_step, (x,), (), next_carry=lambda out: (out,), donate=(0,)
    )
    runner.compile()
    k = calibrate_steps(runner, target_s)
    times = interleaved_rounds([runner], [k], rounds)[0]
    median = statistics.median(times)
    return CopyBandwidth(n_elems, median * 1e3, COPY_BYTES_PER_ELEM * n_elems / median / 1e9)


def measure_donation(case: Case, cfg: Config, setup: Setup) -> list[DonationMeasurement]:
    """Train step with params+state, state only, or nothing donated (JAX optimizers)."""
    print(f"\n== donation study on {case.name}", file=sys.stderr, flush=True)
    data = make_case_data(case)
    grads = to_pytree(case, data.grads)
    variants = (("params+state", (0, 1)), ("state only", (1,)), ("none", ()))
    runners: list[JaxRunner] = []
    for name in JAX_OPTIMIZERS:
        if name not in cfg.contenders:
            continue
        for label, donate in variants:
            r = optimizer_runner(name, setup.optimizers[name], data, grads, label, donate)
            r.compile()
            runners.append(r)
    steps = [calibrate_steps(r, cfg.round_target_s) for r in runners]
    times = interleaved_rounds(runners, steps, cfg.rounds)
    full = {r.contender: t for r, t in zip(runners, times, strict=True) if r.mode == "params+state"}
    out = []
    for r, t in zip(runners, times, strict=True):
        out.append(
            DonationMeasurement(
                case=case.name,
                contender=r.contender,
                donated=r.mode,
                median_ms=statistics.median(t) * 1e3,
                vs_fully_donated=paired_ratio(t, full[r.contender]),
                total_mb=r.memory.total_bytes / MB if r.memory else None,
                alias_mb=r.memory.alias_bytes / MB if r.memory else None,
                note=r.note,
            )
        )
    return out


def setup_torch(jax_platform: str, threads: int | None) -> tuple[str | None, str, int | None, str]:
    """(torch device or None, note, threads, version).  CPU threads default to XLA's cores."""
    try:
        import torch
    except ImportError:
        return None, "torch not installed: skipped", None, "absent"
    if jax_platform == "cpu":
        threads = threads or cpu_cores()
        torch.set_num_threads(threads)
        return "cpu", "", threads, torch.__version__
    if jax_platform == "gpu" and torch.cuda.is_available():
        return "cuda", "", torch.get_num_threads(), torch.__version__
    return None, f"torch has no {jax_platform} support: skipped", None, torch.__version__


def describe_environment(
    torch_device: str, torch_threads: int | None, torch_version: str, adam_note: str
) -> Environment:
    dev = jax.devices()[0]
    import jaxlib

    return Environment(
        date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        device_kind=dev.device_kind,
        platform=dev.platform,
        n_devices=len(jax.devices()),
        cpu_model=cpu_model(),
        cpu_cores=cpu_cores(),
        xla_flags=os.environ.get("XLA_FLAGS", ""),
        python=platform.python_version(),
        jax=jax.__version__,
        jaxlib=getattr(jaxlib, "__version__", "?"),
        optax=optax.__version__,
        torch=torch_version,
        torch_device=torch_device,
        torch_threads=torch_threads,
        adam_optax=adam_note,
        command=" ".join([Path(sys.executable).name, *sys.argv]),
        load_1min_start=load_average(),
    )


# ----------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------


def fmt(x: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:{spec}}{suffix}"


def fmt_ratio(x: float | None) -> str:
    """Ratios with about three significant digits (0.00123, 0.87, 12.3, 360)."""
    if x is None or math.isnan(x):
        return "—"
    if x >= 100:
        return f"{x:.0f}"
    return f"{x:.2f}" if x >= 0.1 else f"{x:.2g}"


def fmt_ms(ms: float) -> str:
    if ms >= 100:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3f}"


def busy_warning(env: Environment) -> str | None:
    """A warning if other processes competed for the CPU cores during the run."""
    load = max(env.load_1min_start or 0.0, env.load_1min_end or 0.0)
    if env.platform != "cpu" or load <= 0.5 + 0.25 * env.cpu_cores:
        return None
    return (
        f" — **WARNING: other processes were using the {env.cpu_cores} cores; timings "
        "(torch's above all) are unreliable**"
    )


def environment_markdown(env: Environment, copy_bw: CopyBandwidth | None) -> str:
    lines = [
        "# Adam optimizer-step benchmark",
        "",
        f"- **device**: `{env.device_kind}` (platform `{env.platform}`, {env.n_devices} device(s))",
        f"- **CPU**: {env.cpu_model}, {env.cpu_cores} cores available; "
        f"torch threads: {fmt(env.torch_threads, 'd') if env.torch_threads else '—'} "
        f"(torch device: {env.torch_device})",
        f"- **versions**: python {env.python}, jax {env.jax}, jaxlib {env.jaxlib}, "
        f"optax {env.optax}, torch {env.torch}",
        f"- **adam_optax**: {env.adam_optax}",
        f"- **XLA_FLAGS**: `{env.xla_flags or '(unset)'}`",
        f"- **date**: {env.date}",
        f"- **command**: `{env.command}`",
        f"- **system load** (1-min average): {fmt(env.load_1min_start)} at start, "
        f"{fmt(env.load_1min_end)} at end" + (busy_warning(env) or ""),
    ]
    if copy_bw:
        lines.append(
            f"- **copy bandwidth** (donated in-place `x' = -x` on {copy_bw.n_elems:,} f32, "
            f"8 B/elem): **{copy_bw.gbps:.1f} GB/s** ({copy_bw.median_ms:.2f} ms)"
        )
    return "\n".join(lines)


RESULTS_HEADER = """\
Step time = median over interleaved rounds of (wall time of k steps incl. `block_until_ready`) / k.
Ratios are medians of per-round paired ratios (lower is faster). `×optax` compares with optax.adam
in the same mode (torch and roofline: vs optax train step). **Roofline** = one jitted, fully donated
function moving exactly an ideal Adam step's bytes with trivial math, per leaf `p+g`, `-m`, `-v`
(28 B/param: read p,g,m,v + write p,m,v). **Floor** = the same donated call returning its
inputs untouched (0 B): the per-call cost of the tree's buffers, which bounds any optimizer that
keeps one state buffer per leaf. GB/s = 28 B × params / step time for every row but the floor.
`%copy` = GB/s / measured copy bandwidth. Compile = `jit(f).lower(...)` + `.compile()` seconds;
host MB = process RSS growth across lower + compile (after `malloc_trim`): host memory the
compiled step keeps.
Memory (JAX) = XLA `memory_analysis()` of the step: temp, and
total = args + outputs + temp − aliased; (torch) total = params + grads + optimizer state.
`state` = optimizer state bytes."""


def results_table(rows: Sequence[Measurement]) -> str:
    head = (
        "| case | contender | mode | ms/step | IQR | ×optax | ×torch | ×roofline | GB/s "
        "| %copy | compile s | host MB | temp MB | total MB | state MB | k | notes |"
    )
    sep = "|" + "---|" * 17
    lines = [head, sep]
    for m in rows:
        mem = m.memory
        xla_mem = mem is not None and mem.source.startswith("xla")
        lines.append(
            "| "
            + " | ".join(
                [
                    m.case,
                    m.contender if m.contender != "torch" else m.label,
                    m.mode,
                    fmt_ms(m.median_ms),
                    f"{m.iqr_pct:.0f}%",
                    fmt_ratio(m.vs_optax),
                    fmt_ratio(m.vs_torch),
                    fmt_ratio(m.vs_roofline),
                    fmt(m.gbps, ".1f"),
                    fmt(m.pct_copy_bw, ".0f", "%"),
                    fmt(m.compile.total_s if m.compile else None),
                    fmt(m.compile.host_mb if m.compile else None, ".0f"),
                    fmt(mem.temp_bytes / MB if xla_mem else None, ".1f"),
                    fmt(mem.total_bytes / MB if mem else None, ".1f"),
                    fmt(mem.state_bytes / MB if mem and mem.state_bytes else None, ".1f"),
                    str(m.steps_per_round),
                    m.note,
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def donation_table(rows: Sequence[DonationMeasurement]) -> str:
    lines = [
        "| case | contender | donated | ms/step | × fully donated | total MB | aliased MB "
        "| notes |",
        "|" + "---|" * 8,
    ]
    for d in rows:
        lines.append(
            f"| {d.case} | {d.contender} | {d.donated} | {fmt_ms(d.median_ms)} | "
            f"{fmt_ratio(d.vs_fully_donated)} | {fmt(d.total_mb, '.1f')} | "
            f"{fmt(d.alias_mb, '.1f')} | {d.note} |"
        )
    return "\n".join(lines)


def full_report(
    env: Environment,
    copy_bw: CopyBandwidth | None,
    rows: Sequence[Measurement],
    donation: Sequence[DonationMeasurement],
    cfg: Config,
    wall_s: float,
) -> str:
    parts = [
        environment_markdown(env, copy_bw),
        f"- **rounds**: {cfg.rounds}, ~{cfg.round_target_s:g} s per contender per round; "
        f"total benchmark wall time {wall_s:.0f} s",
        "",
        "## Optimizer step",
        "",
        RESULTS_HEADER,
        "",
        results_table(rows),
        "",
        "Load average (1 min) when each case started: "
        + ", ".join(f"{c} {fmt(ld)}" for c, ld in {m.case: m.load_1min for m in rows}.items()),
    ]
    if donation:
        parts += [
            "",
            "## Cost of not donating (train step)",
            "",
            "`jax.jit(step, donate_argnums=...)` with params+state `(0, 1)`, state only `(1,)`, "
            "or nothing; ratio = median paired ratio to the fully donated step of the same "
            "optimizer.",
            "",
            donation_table(donation),
        ]
    return "\n".join(parts) + "\n"


def plot_results(rows: Sequence[Measurement], path: Path, title: str) -> None:
    """2x2 panel: step time, ratio vs optax, ratio vs roofline, compile time.

    The floor rows appear in the absolute panels only: on flat cases their
    ratios (~1e-3) would squash the ratio axes around 1.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    cases = list(dict.fromkeys(m.case for m in rows))
    labels = list(dict.fromkeys(m.label for m in rows))
    by_key = {(m.case, m.label): m for m in rows}
    palette = {
        "adam_optax": "tab:blue",
        "optax": "tab:orange",
        "torch": "tab:green",
        "roofline": "tab:gray",
        "floor": "tab:brown",
    }
    style = {
        m.label: (palette.get(m.contender, "tab:purple"), "//" if m.mode == "update" else "")
        for m in rows
    }
    fig, axes = plt.subplots(2, 2, figsize=(16, 10))
    panels = [
        (axes[0, 0], "median step time (ms, log)", lambda m: m.median_ms, None),
        (
            axes[0, 1],
            "× optax.adam (same mode; lower = faster)",
            lambda m: m.vs_optax if m.contender != "floor" else None,
            1.0,
        ),
        (
            axes[1, 0],
            "× roofline (28 B/param moved by a trivial kernel)",
            lambda m: m.vs_roofline if m.contender != "floor" else None,
            1.0,
        ),
        (
            axes[1, 1],
            "compile time (s, log): lower + compile",
            lambda m: m.compile.total_s if m.compile else None,
            None,
        ),
    ]
    x = np.arange(len(cases))
    width = 0.8 / max(1, len(labels))
    for ax, ylabel, value, hline in panels:
        for j, lab in enumerate(labels):
            vals = []
            for c in cases:
                m = by_key.get((c, lab))
                v = value(m) if m is not None else None
                vals.append(np.nan if v is None else v)
            if all(np.isnan(v) for v in vals):
                continue
            color, hatch = style[lab]
            ax.bar(
                x + (j - (len(labels) - 1) / 2) * width,
                vals,
                width,
                label=lab,
                color=color,
                hatch=hatch,
                edgecolor="white" if hatch else None,
            )
        if hline is not None:
            ax.axhline(hline, color="k", lw=0.8, ls="--")
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xticks(x, cases, rotation=25, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", which="both", alpha=0.3)
    axes[0, 0].legend(fontsize=8, ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> Config:
    platform_name = jax.devices()[0].platform
    cases = all_cases(platform_name)
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: cases {','.join(QUICK_CASES)}, 3 rounds, short rounds",
    )
    p.add_argument(
        "--cases",
        default=None,
        help="comma-separated names or globs, e.g. 'flat_*,gpt2_mini'; available: "
        + ", ".join(c.name for c in cases),
    )
    p.add_argument(
        "--contenders", default=",".join(CONTENDERS), help="subset of " + ",".join(CONTENDERS)
    )
    p.add_argument("--modes", default=",".join(MODES), help="JAX modes: update,train")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (15; quick 3)")
    p.add_argument(
        "--round-seconds",
        type=float,
        default=None,
        help="target seconds per contender per round (0.25; quick 0.04)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results",
        help="output directory (default benchmarks/results/)",
    )
    p.add_argument(
        "--skip-slow-compile",
        action="store_true",
        help="skip the 'update' mode on cases with >1000 leaves (optax's update "
        "compiles for ~100 s at 5000 leaves on a 2-core CPU)",
    )
    p.add_argument("--no-donation", action="store_true", help="skip the donation study")
    p.add_argument(
        "--no-check",
        action="store_true",
        help="skip the 3-step numerical comparison of adam_optax against optax",
    )
    p.add_argument("--no-plot", action="store_true", help="do not write results.png")
    p.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="torch.set_num_threads on CPU (default: the cores XLA uses)",
    )
    a = p.parse_args(argv)

    pattern = a.cases or (",".join(QUICK_CASES) if a.quick else "*")
    chosen = select_cases(cases, pattern)
    contenders = tuple(c.strip() for c in a.contenders.split(",") if c.strip())
    modes = tuple(m.strip() for m in a.modes.split(",") if m.strip())
    bad = [c for c in contenders if c not in CONTENDERS] + [m for m in modes if m not in MODES]
    if bad:
        p.error(f"unknown contender/mode: {bad}")
    by_name = {c.name: c for c in cases}
    donation_case = None if a.no_donation else by_name["flat_1e6" if a.quick else "flat_1e7"]
    return Config(
        cases=chosen,
        contenders=contenders,
        modes=modes,
        rounds=a.rounds or (3 if a.quick else 15),
        round_target_s=a.round_seconds or (0.04 if a.quick else 0.25),
        out=a.out,
        skip_slow_compile=a.skip_slow_compile,
        donation_case=donation_case,
        check=not a.no_check,
        plot=not a.no_plot,
        copy_bw_elems=(10**7 if a.quick else 5 * 10**7) * (5 if platform_name == "gpu" else 1),
        torch_threads=a.torch_threads,
    )


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(argv)
    t_start = time.perf_counter()
    jax_platform = jax.devices()[0].platform
    adam = load_adam_optax()
    optimizers = {"adam_optax": adam, "optax": optax_factory()}
    torch_device, torch_note, torch_threads, torch_version = (None, "not requested", None, "—")
    if "torch" in cfg.contenders:
        torch_device, torch_note, torch_threads, torch_version = setup_torch(
            jax_platform, cfg.torch_threads
        )
    env = describe_environment(torch_device or torch_note, torch_threads, torch_version, adam.note)
    setup = Setup(optimizers, torch_device)
    print(environment_markdown(env, None), file=sys.stderr, flush=True)

    copy_bw = measure_copy_bandwidth(cfg.copy_bw_elems, cfg.rounds, cfg.round_target_s)
    print(f"copy bandwidth: {copy_bw.gbps:.1f} GB/s", file=sys.stderr, flush=True)

    rows: list[Measurement] = []
    for case in cfg.cases:
        try:
            rows += measure_case(make_case_data(case), cfg, setup, copy_bw)
            release_host_memory()  # free the case's buffers and executables
        except Exception:  # report and go on with the other cases
            traceback.print_exc()
            print(f"!! case {case.name} failed; continuing", file=sys.stderr, flush=True)
    donation = measure_donation(cfg.donation_case, cfg, setup) if cfg.donation_case else []

    wall = time.perf_counter() - t_start
    env.load_1min_end = load_average()
    report = full_report(env, copy_bw, rows, donation, cfg, wall)
    print(report)
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "results.md").write_text(report)
    payload = {
        "environment": env,
        "config": {
            "cases": [c.name for c in cfg.cases],
            "contenders": list(cfg.contenders),
            "modes": list(cfg.modes),
            "rounds": cfg.rounds,
            "round_target_s": cfg.round_target_s,
            "skip_slow_compile": cfg.skip_slow_compile,
            "adam_bytes_per_param": ADAM_BYTES_PER_PARAM,
        },
        "copy_bandwidth": copy_bw,
        "measurements": rows,
        "donation": donation,
        "wall_s": wall,
    }
    (cfg.out / "results.json").write_text(json.dumps(payload, indent=1, default=dataclasses.asdict))
    if cfg.plot and rows:
        title = f"Adam step on {env.device_kind} ({env.platform}), jax {env.jax}"
        plot_results(rows, cfg.out / "results.png", title)
    print(
        f"wrote {cfg.out}/results.md, results.json"
        + (", results.png" if cfg.plot and rows else "")
        + f" in {wall:.0f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
