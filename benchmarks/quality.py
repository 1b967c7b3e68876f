"""Does Adam's low-memory state train as well as float32? Four state choices, three tasks.

Each task trains the same model from the same seed for the same steps with AdamW whose
moments are stored as
  float32   ``adamw(...)``                                   8 bytes of state per parameter
  bf16      ``adamw(..., mu_dtype=bf16, nu_dtype=bf16)``       4, round-to-nearest
  bf16+SR   the same with ``stochastic_rounding=True``         4
  8-bit     ``adamw8bit(...)``: blockwise codes + scales     ~2 (leaves >= 4096 elements)
on (a) an MLP on scikit-learn's bundled digits, (b) a character-level transformer language
model on the bytes of a fixed list of the Python standard library's own sources, held-out
tail included, and (c) a student MLP regressing a fixed random teacher network.
(d) shows why round-to-nearest bfloat16 fails: when the gradients shrink, its second moment
cannot decay (0.999·v rounds back to v), so the steps stay too small.

Targets (issue 12): 8-bit and bf16+SR final losses within 1% (relative) of float32 on
every task, and digits test accuracy within 0.5 points. Each run is one jitted
``lax.scan`` over the steps; the final losses are measured on fixed evaluation sets.

    python benchmarks/quality.py                           # full run -> benchmarks/out/
    python benchmarks/quality.py --out benchmarks/results  # update the published results
    python benchmarks/quality.py --quick                   # tiny, seconds
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import adam_optax


def git_commit() -> str:
    """The checkout's commit, so that a result names the adam_optax it measured."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                              capture_output=True, text=True, timeout=10)  # fmt: skip
        return head.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


Params = Any
Batch = Any
Data = dict[str, jax.Array]
MakeOptimizer = Callable[[optax.ScalarOrSchedule, float, int], optax.GradientTransformation]
TARGET_LOSS_REL = 0.01  # final loss within 1% of float32's
TARGET_ACCURACY_POINTS = 0.5  # digits test accuracy within 0.5 points of float32's
MIN_QUANTIZED_SIZE = 4096  # adamw8bit's default: smaller leaves keep float32 moments


# ---------------------------------------------------------------- the four state choices


def optimizer_choices() -> dict[str, MakeOptimizer | str]:
    """name -> make(learning_rate, weight_decay, seed), or why it is unavailable."""
    bf16 = {"mu_dtype": jnp.bfloat16, "nu_dtype": jnp.bfloat16}
    candidates: dict[str, MakeOptimizer] = {
        "float32": lambda lr, wd, seed: adam_optax.adamw(lr, weight_decay=wd),
        "bf16": lambda lr, wd, seed: adam_optax.adamw(lr, weight_decay=wd, **bf16),
        "bf16+SR": lambda lr, wd, seed: adam_optax.adamw(
            lr, weight_decay=wd, **bf16, stochastic_rounding=True, seed=seed
        ),
        "8-bit": lambda lr, wd, seed: adam_optax.adamw8bit(lr, weight_decay=wd),
    }
    choices: dict[str, MakeOptimizer | str] = {}
    for name, make in candidates.items():
        try:
            make(1e-3, 1e-4, 0)
            choices[name] = make
        except (AttributeError, TypeError) as error:  # not in this adam_optax
            choices[name] = f"unavailable: {type(error).__name__}: {error}"
    return choices


def dequantized(state: Any) -> Any:
    """The state with every quantized moment as a float32 array (float states unchanged)."""
    return adam_optax.dequantize(state) if hasattr(adam_optax, "dequantize") else state


# ---------------------------------------------------------------- tasks


class Task(NamedTuple):
    name: str
    init: Callable[[jax.Array], Params]  # key -> params
    loss: Callable[[Params, Batch], jax.Array]  # mean training loss of a batch
    draw: Callable[[np.random.Generator], Any]  # each step's random batch inputs, stacked
    batch: Callable[[Data, Any], Batch]  # (data, this step's draw) -> a training batch
    evaluate: Callable[[Params, Data], dict[str, jax.Array]]  # final metrics, fixed sets
    data: Data  # arrays passed to the jitted run as arguments: as constants, XLA folds them
    steps: int
    learning_rate: float
    weight_decay: float


def dense_init(key: jax.Array, sizes: list[int]) -> list[dict[str, jax.Array]]:
    """He-normal weights and zero biases for an MLP with these layer sizes."""
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        {"w": jax.random.normal(k, (m, n)) * math.sqrt(2.0 / m), "b": jnp.zeros(n)}
        for k, m, n in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def mlp(layers: list[dict[str, jax.Array]], x: jax.Array) -> jax.Array:
    for layer in layers[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ layers[-1]["w"] + layers[-1]["b"]


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def digits_task(quick: bool) -> Task:
    """(a) A 64-256-256-10 ReLU MLP on sklearn's 8×8 digits; a fixed 360 held out."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = (x[order] / 16.0).astype(np.float32), y[order].astype(np.int32)
    data = {"x_test": x[:360], "y_test": y[:360], "x_train": x[360:], "y_train": y[360:]}
    hidden = 64 if quick else 256

    steps = 60 if quick else 600

    def batch(data: Data, index: jax.Array) -> Batch:
        return data["x_train"][index], data["y_train"][index]

    def evaluate(params: Params, data: Data) -> dict[str, jax.Array]:
        logits = mlp(params, data["x_test"])
        return {
            "train_loss": cross_entropy(mlp(params, data["x_train"]), data["y_train"]),
            "test_loss": cross_entropy(logits, data["y_test"]),
            "test_accuracy": 100 * (logits.argmax(-1) == data["y_test"]).mean(),
        }

    return Task(
        name="digits MLP",
        init=lambda key: dense_init(key, [64, hidden, hidden, 10]),
        loss=lambda p, b: cross_entropy(mlp(p, b[0]), b[1]),
        draw=lambda rng: rng.integers(0, len(data["x_train"]), (steps, 64), dtype=np.int32),
        batch=batch,
        evaluate=evaluate,
        data=data,
        steps=steps,
        learning_rate=1e-3,
        weight_decay=1e-4,
    )


# The corpus: fixed standard-library modules, read as bytes; present wherever Python is.
CORPUS_MODULES = ("argparse", "functools", "textwrap", "dataclasses", "inspect", "typing")


def corpus_bytes(modules: tuple[str, ...] = CORPUS_MODULES) -> np.ndarray:
    stdlib = Path(os.__file__).parent
    text = b"".join((stdlib / f"{name}.py").read_bytes() for name in modules)
    return np.frombuffer(text, dtype=np.uint8)


def transformer_init(key: jax.Array, d: int, layers: int, context: int) -> Params:
    keys = iter(jax.random.split(key, 3 + 4 * layers))

    def dense(m: int, n: int) -> jax.Array:
        return jax.random.normal(next(keys), (m, n)) / math.sqrt(m)

    norm = {"scale": jnp.ones(d), "bias": jnp.zeros(d)}
    blocks = [
        {
            "norm1": norm,
            "qkv": dense(d, 3 * d),
            "proj": dense(d, d),
            "norm2": norm,
            "up": dense(d, 4 * d),
            "up_bias": jnp.zeros(4 * d),
            "down": dense(4 * d, d),
        }
        for _ in range(layers)
    ]
    return {
        "embed": jax.random.normal(next(keys), (256, d)) * 0.02,
        "position": jax.random.normal(next(keys), (context, d)) * 0.02,
        "blocks": blocks,
        "norm": norm,
        "unembed": dense(d, 256),
    }


def layer_norm(x: jax.Array, p: dict[str, jax.Array]) -> jax.Array:
    x = (x - x.mean(-1, keepdims=True)) * jax.lax.rsqrt(x.var(-1, keepdims=True) + 1e-5)
    return x * p["scale"] + p["bias"]


def transformer_logits(params: Params, tokens: jax.Array, heads: int) -> jax.Array:
    """A pre-norm causal transformer: tokens (batch, time) of bytes -> next-byte logits."""
    _, t = tokens.shape
    x = params["embed"][tokens] + params["position"][:t]
    causal = jnp.tril(jnp.ones((t, t), bool))
    for block in params["blocks"]:
        q, k, v = jnp.split(layer_norm(x, block["norm1"]) @ block["qkv"], 3, axis=-1)
        q, k, v = (a.reshape(*a.shape[:2], heads, -1) for a in (q, k, v))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
        weights = jax.nn.softmax(jnp.where(causal, scores, -jnp.inf), axis=-1)
        attended = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(x.shape)
        x = x + attended @ block["proj"]
        hidden = jax.nn.gelu(layer_norm(x, block["norm2"]) @ block["up"] + block["up_bias"])
        x = x + hidden @ block["down"]
    return layer_norm(x, params["norm"]) @ params["unembed"]


def char_lm_task(quick: bool) -> Task:
    """(b) A byte-level transformer LM; the corpus's last 10% is held out."""
    text = corpus_bytes().astype(np.int32)
    split = int(0.9 * len(text))
    d, layers, heads, context, batch_size = (32, 1, 2, 32, 8) if quick else (64, 2, 4, 64, 16)
    starts = np.random.default_rng(1)  # fixed evaluation windows
    windows = np.arange(context + 1)
    data = {
        "train": text[:split],
        "train_eval": text[starts.integers(0, split - context - 1, 256)[:, None] + windows],
        "test_eval": text[
            split + starts.integers(0, len(text) - split - context - 1, 256)[:, None] + windows
        ],
    }

    def loss(params: Params, batch: jax.Array) -> jax.Array:
        logits = transformer_logits(params, batch[:, :-1], heads)
        return cross_entropy(logits, batch[:, 1:])

    steps = 40 if quick else 800

    def draw(rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, split - context - 1, (steps, batch_size, 1), dtype=np.int32)

    def batch(data: Data, start: jax.Array) -> jax.Array:
        return data["train"][start + jnp.arange(context + 1)]

    return Task(
        name="char transformer LM",
        init=lambda key: transformer_init(key, d, layers, context),
        loss=loss,
        draw=draw,
        batch=batch,
        evaluate=lambda p, data: {
            "train_loss": loss(p, data["train_eval"]),
            "test_loss": loss(p, data["test_eval"]),
        },
        data=data,
        steps=steps,
        learning_rate=3e-3,
        weight_decay=1e-4,
    )


def teacher_student_task(quick: bool) -> Task:
    """(c) A ReLU student MLP regresses a fixed tanh teacher; loss = MSE / teacher variance."""
    d_in, d_out = 32, 16
    student = [d_in, 128, d_out] if quick else [d_in, 256, 256, d_out]  # quick: fewer leaves
    rng = np.random.default_rng(1234)  # the teacher and the evaluation set, fixed
    data = {
        "w1": rng.normal(size=(d_in, 64)).astype(np.float32) / math.sqrt(d_in),
        "w2": rng.normal(size=(64, d_out)).astype(np.float32) / 8,
        "x_eval": rng.normal(size=(4096, d_in)).astype(np.float32),
    }
    data["y_eval"] = np.tanh(data["x_eval"] @ data["w1"]) @ data["w2"]
    variance = float(data["y_eval"].var())  # the loss is relative to it

    def loss(params: Params, batch: Batch) -> jax.Array:
        x, y = batch
        return ((mlp(params, x) - y) ** 2).mean() / variance

    steps = 100 if quick else 2000

    def draw(rng: np.random.Generator) -> np.ndarray:
        return rng.standard_normal((steps, 128, d_in), dtype=np.float32)

    def batch(data: Data, x: jax.Array) -> Batch:
        return x, jnp.tanh(x @ data["w1"]) @ data["w2"]

    def evaluate(params: Params, data: Data) -> dict[str, jax.Array]:
        return {"test_loss": loss(params, (data["x_eval"], data["y_eval"]))}

    return Task(
        name="teacher-student regression",
        init=lambda key: dense_init(key, student),
        loss=loss,
        draw=draw,
        batch=batch,
        evaluate=evaluate,
        data=data,
        steps=steps,
        learning_rate=1e-3,
        weight_decay=1e-4,
    )


def quantized_fraction(params: Params) -> float:
    """The fraction of parameters in leaves big enough for 8-bit moments."""
    sizes = [leaf.size for leaf in jax.tree.leaves(params)]
    return sum(s for s in sizes if s >= MIN_QUANTIZED_SIZE) / sum(sizes)


# ---------------------------------------------------------------- training


def trainer(task: Task, make: MakeOptimizer) -> Callable[[int], tuple[np.ndarray, dict]]:
    """Compiles ``task``'s training run once -> train(seed): (loss per step, final metrics).

    The seed draws the initial params and the batches. The stochastic-rounding seed is
    fixed (0), so that one compiled run serves every seed; its random bits still differ
    between runs because they round different values.
    """
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, task.learning_rate, max(1, task.steps // 20), task.steps, task.learning_rate / 20
    )
    tx = make(schedule, task.weight_decay, 0)

    @jax.jit
    def run(params: Params, data: Data, draws: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
        def step(carry: tuple[Params, Any], draw: Any) -> tuple[tuple[Params, Any], jax.Array]:
            params, state = carry
            batch = task.batch(data, draw)
            loss, grads = jax.value_and_grad(task.loss)(params, batch)
            updates, state = tx.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), loss

        carry = (params, tx.init(params))
        (params, _), losses = jax.lax.scan(step, carry, draws)
        return losses, task.evaluate(params, data)

    def train(seed: int) -> tuple[np.ndarray, dict[str, float]]:
        params = task.init(jax.random.key(seed))
        losses, metrics = run(params, task.data, task.draw(np.random.default_rng(seed)))
        return np.asarray(losses), {k: float(v) for k, v in metrics.items()}

    return train


def nu_decay(make: MakeOptimizer, steps: int, drop_at: int) -> np.ndarray:
    """(d) Mean ``nu`` of a 16,384-element leaf whose gradients shrink 100× at ``drop_at``.

    Float32 ``nu`` then decays as 0.999^t towards the new g² = 1e-4. Round-to-nearest
    bfloat16 keeps 8 significant bits: 0.999·v rounds back to v, so its ``nu`` stays put.
    """
    tx = make(1e-3, 0.0, 0)
    params = jnp.zeros(16384)
    key = jax.random.key(7)

    def step(state: Any, t: jax.Array) -> tuple[Any, jax.Array]:
        scale = jnp.where(t < drop_at, 1.0, 0.01)
        grads = scale * jax.random.normal(jax.random.fold_in(key, t), params.shape)
        _, state = tx.update(grads, state, params)
        return state, optax.tree.get(dequantized(state), "nu").astype(jnp.float32).mean()

    _, means = jax.jit(lambda s: jax.lax.scan(step, s, jnp.arange(steps)))(tx.init(params))
    return np.asarray(means)


# ---------------------------------------------------------------- report


def summarize(runs: dict[str, Any], seeds: list[int]) -> dict[str, Any]:
    """Per task and choice: mean metrics over seeds and the paired relative deltas."""
    summary: dict[str, Any] = {}
    for task_name, by_choice in runs.items():
        base = by_choice["float32"]["metrics"]
        rows = {}
        for choice, run in by_choice.items():
            row: dict[str, Any] = {}
            for metric in base[0]:
                values = np.array([m[metric] for m in run["metrics"]])
                reference = np.array([m[metric] for m in base])
                row[metric] = float(values.mean())
                if metric == "test_accuracy":
                    row[f"{metric}_delta_points"] = float((values - reference).mean())
                else:  # paired, per seed, relative to float32
                    deltas = values / reference - 1
                    row[f"{metric}_delta_rel"] = float(deltas.mean())
                    row[f"{metric}_delta_rel_per_seed"] = deltas.tolist()
            rows[choice] = row
        losses = [np.array([m[k] for m in base]) for k in base[0] if k.endswith("loss")]
        noise = max(float(v.std(ddof=1) / v.mean()) if len(seeds) > 1 else math.nan for v in losses)
        summary[task_name] = {"choices": rows, "float32_seed_spread_rel": noise}
    return summary


def verdicts(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Each low-memory choice's deltas against the targets, read two-sided as stated:
    |Δ loss| <= 1%, |Δ accuracy| <= 0.5 points. ``better`` says which side a miss is on."""
    out = []
    for task_name, entry in summary.items():
        for choice in ("bf16+SR", "8-bit", "bf16"):
            row = entry["choices"].get(choice)
            if row is None:
                continue
            for key, value in row.items():
                if key.endswith("_delta_rel"):
                    met, better = abs(value) <= TARGET_LOSS_REL, value < 0
                    figure = f"{100 * value:+.2f}%"
                elif key.endswith("_delta_points"):
                    met, better = abs(value) <= TARGET_ACCURACY_POINTS, value > 0
                    figure = f"{value:+.2f} points"
                else:
                    continue
                metric = key.removesuffix("_delta_rel").removesuffix("_delta_points")
                out.append(
                    {"task": task_name, "choice": choice, "metric": metric, "delta": figure,
                     "met": bool(met), "better": bool(better), "target": choice != "bf16"}
                )  # fmt: skip
    return out


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [
        "# Quality of Adam's low-memory state",
        "",
        f"`{env['command']}` at adam_optax {env['adam_optax_commit']}: seeds {result['seeds']}, "
        f"jax {env['jax']}, {env['cpus']} CPUs, "
        f"load average {env['load_before']:.1f} before / {env['load_after']:.1f} after, "
        f"{result['seconds']:.0f} s.",
        "",
        "Means over seeds; Δ is the paired (same seed) relative difference from float32, "
        "averaged over seeds. *Spread*: float32's seed-to-seed standard deviation of its "
        "final losses, relative: differences below it are noise.",
        "",
    ]
    for task_name, entry in result["summary"].items():
        info = result["tasks"][task_name]
        lines += [
            f"## {task_name}",
            "",
            f"{info['params']:,} params, {100 * info['quantized_fraction']:.1f}% in leaves of "
            f">= {MIN_QUANTIZED_SIZE} elements (8-bit there, float32 elsewhere); "
            f"{info['steps']} steps; float32 spread {100 * entry['float32_seed_spread_rel']:.2f}%.",
            "",
        ]
        metrics = [k for k in next(iter(entry["choices"].values())) if "delta" not in k]
        header = " | ".join(f"{m} | Δ" for m in metrics)
        lines += [f"| state | {header} |", "|---" * (1 + 2 * len(metrics)) + "|"]
        for choice, row in entry["choices"].items():
            cells = []
            for m in metrics:
                if m == "test_accuracy":
                    cells += [f"{row[m]:.2f}%", f"{row[m + '_delta_points']:+.2f} pt"]
                else:
                    cells += [f"{row[m]:.4f}", f"{100 * row[m + '_delta_rel']:+.2f}%"]
            lines.append(f"| {choice} | " + " | ".join(cells) + " |")
        lines.append("")
    for name, note in result["unavailable"].items():
        lines.append(f"- **{name}** not measured: {note}")
    lines += [
        "## Targets",
        "",
        "Loss within 1% of float32's, digits accuracy within 0.5 points (two-sided, as stated). "
        "bf16 round-to-nearest has no target; it is judged by the same bounds.",
        "",
        "| task | state | metric | Δ vs float32 | verdict |",
    ]
    lines.append("|---|---|---|---|---|")
    for v in result["verdicts"]:
        side = "better" if v["better"] else "worse"
        mark = "within" if v["met"] else f"**outside** ({side} than float32)"
        status = ("met" if v["met"] else "not met") if v["target"] else "no target"
        mark = f"{status}: {mark}"
        lines.append(f"| {v['task']} | {v['choice']} | {v['metric']} | {v['delta']} | {mark} |")
    decay = result["nu_decay"]
    lines += [
        "",
        f"## (d) nu after the gradients shrink 100× at step {decay['drop_at']}",
        "",
        f"Mean `nu` of a 16,384-element leaf after {decay['steps']} steps (float32 decays as "
        "0.999^t towards 1e-4):",
        "",
        "| state | final mean nu | ÷ float32 |",
        "|---|---|---|",
    ]
    f32 = decay["final"]["float32"]
    for choice, value in decay["final"].items():
        lines.append(f"| {choice} | {value:.4g} | {value / f32:.2f} |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    """Top: each task's training loss (mean over seeds, moving average over 2% of the run)
    and (d)'s mean nu. Bottom: the same relative to float32's, in percent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {task: dict(by_choice) for task, by_choice in result["curves"].items()}
    curves["(d) mean nu, gradients ÷100 at step " + str(result["nu_decay"]["drop_at"])] = result[
        "nu_decay"
    ]["curves"]
    fig, axes = plt.subplots(2, len(curves), figsize=(4.5 * len(curves), 6.4), sharex="col")
    for column, (name, by_choice) in zip(axes.T, curves.items(), strict=True):
        is_nu = name.startswith("(d)")
        every = 1 if is_nu else result["curves_every"]
        window = 1 if is_nu else max(1, len(by_choice["float32"]) // 50)
        smooth = {
            choice: np.convolve(values, np.ones(window) / window, mode="valid")
            for choice, values in by_choice.items()
        }
        for choice, values in smooth.items():
            steps = (np.arange(len(values)) + window - 1) * every
            column[0].semilogy(steps, values, label=choice)
            column[1].plot(steps, 100 * (values / smooth["float32"] - 1), label=choice)
        column[0].set(title=name, ylabel="mean nu" if is_nu else "training loss")
        column[1].set(xlabel="step", ylabel="% vs float32")
        column[0].legend(fontsize=8)
        if not is_nu:
            column[1].set_ylim(-10, 10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


TASKS = {"digits": digits_task, "lm": char_lm_task, "teacher": teacher_student_task}


def run_all(quick: bool, seeds: list[int], tasks: list[str], out: Path, command: str) -> dict:
    start, load_before, commit = time.perf_counter(), os.getloadavg()[0], git_commit()
    choices = optimizer_choices()
    available = {k: v for k, v in choices.items() if not isinstance(v, str)}
    runs: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    task_info: dict[str, Any] = {}
    for task in (TASKS[name](quick) for name in tasks):
        params = jax.eval_shape(task.init, jax.random.key(0))
        task_info[task.name] = {
            "params": sum(leaf.size for leaf in jax.tree.leaves(params)),
            "quantized_fraction": quantized_fraction(params),
            "steps": task.steps,
            "learning_rate": task.learning_rate,
            "weight_decay": task.weight_decay,
        }
        runs[task.name], curves[task.name] = {}, {}
        for name, make in available.items():
            train = trainer(task, make)
            results = [train(seed) for seed in seeds]
            runs[task.name][name] = {"metrics": [m for _, m in results]}
            curves[task.name][name] = np.mean([losses for losses, _ in results], axis=0)
            print(f"{task.name:28s} {name:8s} {results[0][1]}", file=sys.stderr)
    drop_at, steps = (50, 200) if quick else (2000, 4000)
    decay = {k: nu_decay(make, steps, drop_at) for k, make in available.items()}
    summary = summarize(runs, seeds)
    result = {
        "seeds": seeds,
        "quick": quick,
        "tasks": task_info,
        "runs": runs,
        "summary": summary,
        "verdicts": verdicts(summary),
        "unavailable": {k: v for k, v in choices.items() if isinstance(v, str)},
        "nu_decay": {
            "drop_at": drop_at,
            "steps": steps,
            "final": {k: float(v[-1]) for k, v in decay.items()},
            "curves": {k: v.tolist() for k, v in decay.items()},
        },
        "seconds": time.perf_counter() - start,
        "environment": {
            "command": command,
            "jax": jax.__version__,
            "adam_optax_commit": commit,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_before": load_before,
            "load_after": os.getloadavg()[0],
            "corpus": f"{CORPUS_MODULES} from {Path(os.__file__).parent}",
        },
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.md").write_text(markdown(result))
    every = max(1, max(len(c) for v in curves.values() for c in v.values()) // 500)
    result["curves"] = {
        task: {k: c[::every].tolist() for k, c in by_choice.items()}
        for task, by_choice in curves.items()
    }
    result["curves_every"] = every
    (out / "quality.json").write_text(json.dumps(result, indent=1))
    plot(result, out / "quality.png")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny models, few steps, 1 seed")
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated: %(default)s")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    parser.add_argument(
        "--plot-only", action="store_true", help="redraw OUT/quality.png from OUT/quality.json"
    )
    args = parser.parse_args()
    if args.plot_only:
        plot(json.loads((args.out / "quality.json").read_text()), args.out / "quality.png")
        return
    seeds = list(range(args.seeds or (1 if args.quick else 3)))
    tasks = args.tasks.split(",")
    if unknown := set(tasks) - set(TASKS):
        parser.error(f"--tasks: unknown {sorted(unknown)}; choose from {list(TASKS)}")
    command = "python benchmarks/quality.py " + " ".join(sys.argv[1:])
    result = run_all(args.quick, seeds, tasks, args.out, command.strip())
    print((args.out / "quality.md").read_text())
    missed = [v for v in result["verdicts"] if v["target"] and not v["met"]]
    print(f"{len(missed)} target(s) not met", file=sys.stderr)


if __name__ == "__main__":
    main()
