"""Does Adam's low-memory state train as well as float32? One table of variants, three tasks.

Each task trains the same model from the same seeds for the same steps with every row of
``variants()``; each row names its optimizer, the dtype its params are stored in and any
wrapper around the optimizer:

  float32            ``adamw(...)``: the reference, 8 bytes of state per parameter
  float32 b2=0.998   ``adamw(..., b2=0.998)``: a small, harmless change of a
                     hyperparameter, the yardstick for what a "small" difference is
  bf16+SR            ``adamw(..., mu_dtype=bf16, nu_dtype=bf16, stochastic_rounding=True)``
  bf16               the same, round-to-nearest
  8-bit              ``adamw8bit(...)``: blockwise codes + scales, ~2 bytes (leaves >= 4096),
                     codes rounded stochastically (the default)
  8-bit RTN          ``adamw8bit(..., stochastic_rounding=False)``: codes rounded to nearest
  bf16 params        bfloat16 params, ``adamw(...)``, no correction
  master 8, 16       bfloat16 params, ``master_weights(adamw(...), correction_bits=8|16)``
  7 bytes            bfloat16 params, ``master_weights(adamw8bit(...))``
  4-bit, 4-bit RTN   ``adamw4bit(...)``: 4-bit codes, two per byte, ~1.06 bytes; rounded
                     stochastically (the default) or to nearest
  6 bytes            bfloat16 params, ``master_weights(adamw4bit(...))``

A row's params are cast to its ``params_dtype`` at init and stay in it; the final metrics
see them cast to float32. A row with bfloat16 params and a wrapper is one line
in ``variants()``: ``Variant(name, make, jnp.bfloat16, adam_optax.master_weights)``.

on (a) an MLP on scikit-learn's bundled digits, (b) a byte-level transformer language model
on a fixed list of the Python standard library's own sources, held-out tail included, and
(c) a student MLP regressing a fixed random tanh teacher network.
(d) shows why round-to-nearest bfloat16 fails: when the gradients shrink, its second moment
cannot decay (0.999·v rounds back to v), so the steps stay too small.

Steps: every task runs 5,000 steps = 5/(1 - b2) with AdamW's b2 = 0.999, so that the second
moment has forgotten its start about five times over and any drift of a stored moment has
had time to show. (a) can run that long but has little left to learn: digits has 1,437
training images, 5,000 steps of 64 are 220 epochs, and float32's training loss ends near
zero (the report gives it). Its
differences are then between runs that have memorized the training set, and its test loss
measures overfitting as much as optimization; the report says so beside it. (b) and (c)
draw fresh batches all along: (b) sees its corpus's training part about 3 times, (c) has
no end of data.

Sizes: the models are small so that the full run, 4 seeds × 6 rows × 3 tasks × 5,000
steps, fits in about a quarter of an hour on 2 CPU cores (``--estimate`` measures it).
Leaves of at least 4,096 elements get 8-bit (4-bit) moments: 96–99% of each task's parameters (the
report gives the share), so the 8-bit rows do test 8-bit storage. The language model's
byte embedding and output layer see gradient scales as uneven as its byte frequencies: rows
of rare bytes get rare (embedding) or small (output) gradients, the layout where 8-bit
blocks go wrong.

Seeds: 4 by default (``--seeds``). A seed draws the initial params and the batches. The
stochastic-rounding seed is fixed (0), so that one compiled run serves every seed; its
random bits still round different values in different runs.

What is reported, per task, final metric and variant, with loss_v[s] the final loss of
variant v with seed s and n the number of seeds:
  Δ          the mean over seeds of (loss_v[s] - loss_float32[s]) / loss_float32[s], with
             its standard error sd(·, ddof=1)/sqrt(n): the paired relative difference;
  spread     float32's own seed-to-seed spread: sd over seeds (ddof=1) of loss_float32[s],
             divided by its mean over seeds;
  b2=0.998   the Δ of the float32 b2=0.998 row, beside the others;
  verdict    "inside" if |Δ| <= spread, else "outside, better" (Δ < 0) or "outside, worse".
The target is "inside" for every low-bit variant, in either direction: lower
loss than float32 by more than the spread is a bias to explain, not a win.

Each run is a jitted ``lax.scan`` over chunks of ``CHUNK`` steps; the final metrics are
measured on fixed evaluation sets. ``--estimate`` compiles every task and variant, times
two chunks of one seed, and prints the estimated time of the full run without doing it.

    python benchmarks/quality.py                           # full run -> benchmarks/out/
    python benchmarks/quality.py --out benchmarks/results  # update the published results
    python benchmarks/quality.py --estimate                # per-step times, full-run estimate
    python benchmarks/quality.py --quick                   # tiny, about a minute
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from run_record import git_commit, utc_now

import adam_optax

Params = Any
Batch = Any
Data = dict[str, jax.Array]
MakeOptimizer = Callable[[optax.ScalarOrSchedule, float, int], optax.GradientTransformation]
Wrapper = Callable[[optax.GradientTransformation], optax.GradientTransformation]
MIN_QUANTIZED_SIZE = 4096  # adamw8bit's default: smaller leaves keep float32 moments
STEPS = 5000  # 5 / (1 - b2) with b2 = 0.999
SEEDS = 4
CHUNK = 250  # steps per jitted lax.scan call
REFERENCE = "float32"
B2_ROW = "float32 b2=0.998"
# The language model: (d_model, layers, heads, context, batch size)
LM_SIZE = (64, 1, 4, 32, 8)
LM_QUICK = (32, 1, 2, 16, 4)


# ---------------------------------------------------------------- the table of variants


class Variant(NamedTuple):
    """One row: how the optimizer is built, and how the params it steps are stored."""

    name: str
    make: MakeOptimizer  # (learning_rate, weight_decay, stochastic-rounding seed) -> tx
    params_dtype: Any = jnp.float32  # the params are cast to it at init, and kept in it
    wrap: Wrapper | None = None  # e.g. adam_optax.master_weights, applied to make's tx
    about: str = ""


def variants() -> list[Variant]:
    """The rows, reference first. A new row is one line here; every task runs it."""
    bf16 = {"mu_dtype": jnp.bfloat16, "nu_dtype": jnp.bfloat16}
    rows = [
        Variant(REFERENCE, lambda lr, wd, seed: adam_optax.adamw(lr, weight_decay=wd),
                about="`adamw(lr)`: float32 moments, the reference"),
        Variant(B2_ROW, lambda lr, wd, seed: adam_optax.adamw(lr, b2=0.998, weight_decay=wd),
                about="`adamw(lr, b2=0.998)`: float32, a small change of hyperparameter"),
        Variant("bf16+SR", lambda lr, wd, seed: adam_optax.adamw(
                    lr, weight_decay=wd, **bf16, stochastic_rounding=True, seed=seed),
                about="`adamw(lr, mu_dtype=bf16, nu_dtype=bf16, stochastic_rounding=True)`"),
        Variant("bf16", lambda lr, wd, seed: adam_optax.adamw(lr, weight_decay=wd, **bf16),
                about="`adamw(lr, mu_dtype=bf16, nu_dtype=bf16)`: round-to-nearest"),
        Variant("8-bit", lambda lr, wd, seed: adam_optax.adamw8bit(
                    lr, weight_decay=wd, stochastic_rounding=True, seed=seed),
                about="`adamw8bit(lr)`: blockwise 8-bit codes, rounded stochastically (default)"),
        Variant("8-bit RTN", lambda lr, wd, seed: adam_optax.adamw8bit(
                    lr, weight_decay=wd, stochastic_rounding=False),
                about="`adamw8bit(lr, stochastic_rounding=False)`: codes rounded to nearest"),
    ]  # fmt: skip
    # bfloat16 params: plain, then with master-weight corrections.
    master = adam_optax.master_weights
    rows += [
        Variant("bf16 params", rows[0].make, jnp.bfloat16,
                about="bfloat16 params, `adamw(lr)`, no correction: small updates round away"),
        Variant("bf16 params, master 8", rows[0].make, jnp.bfloat16,
                functools.partial(master, correction_bits=8),
                about="bfloat16 params, `master_weights(adamw(lr), correction_bits=8)`"),
        Variant("bf16 params, master 16", rows[0].make, jnp.bfloat16,
                functools.partial(master, correction_bits=16),
                about="bfloat16 params, `master_weights(adamw(lr), correction_bits=16)`"),
        Variant("7 bytes", rows[4].make, jnp.bfloat16, master,
                about="bfloat16 params, `master_weights(adamw8bit(lr))`: 7 bytes per parameter"),
    ]  # fmt: skip
    # 4-bit moments: as the 8-bit rows, and with master weights, 6 bytes per parameter.
    rows += [
        Variant("4-bit", lambda lr, wd, seed: adam_optax.adamw4bit(
                    lr, weight_decay=wd, stochastic_rounding=True, seed=seed),
                about="`adamw4bit(lr)`: blockwise 4-bit codes, rounded stochastically (default)"),
        Variant("4-bit RTN", lambda lr, wd, seed: adam_optax.adamw4bit(
                    lr, weight_decay=wd, stochastic_rounding=False),
                about="`adamw4bit(lr, stochastic_rounding=False)`: codes rounded to nearest"),
    ]  # fmt: skip
    rows.append(Variant("6 bytes", rows[-2].make, jnp.bfloat16, master,
                        about="bfloat16 params, `master_weights(adamw4bit(lr))`: 6 bytes per "
                              "parameter"))  # fmt: skip
    return rows


def optimizer(variant: Variant, learning_rate: optax.ScalarOrSchedule, weight_decay: float,
              seed: int = 0) -> optax.GradientTransformation:  # fmt: skip
    """The row's optimizer, wrapped as the row says."""
    tx = variant.make(learning_rate, weight_decay, seed)
    return tx if variant.wrap is None else variant.wrap(tx)


def stored(params: Params, dtype: Any) -> Params:
    """``params`` with every floating-point leaf cast to ``dtype``."""
    return jax.tree.map(
        lambda p: p.astype(dtype) if jnp.issubdtype(p.dtype, jnp.floating) else p, params
    )


# ---------------------------------------------------------------- tasks


class Task(NamedTuple):
    name: str
    init: Callable[[jax.Array], Params]  # key -> float32 params
    loss: Callable[[Params, Batch], jax.Array]  # mean training loss of a batch
    draw: Callable[[np.random.Generator, int], Any]  # (rng, steps) -> per-step inputs, stacked
    batch: Callable[[Data, Any], Batch]  # (data, this step's draw) -> a training batch
    evaluate: Callable[[Params, Data], dict[str, jax.Array]]  # final metrics, fixed sets
    data: Data  # arrays passed to the jitted run as arguments: as constants, XLA folds them
    steps: int
    learning_rate: float
    weight_decay: float
    note: str = ""  # anything a reader of the results must know about this task


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
    steps = 100 if quick else STEPS

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
        draw=lambda rng, n: rng.integers(0, len(data["x_train"]), (n, 64), dtype=np.int32),
        batch=batch,
        evaluate=evaluate,
        data=data,
        steps=steps,
        learning_rate=1e-3,
        weight_decay=1e-4,
        note=f"{len(data['x_train'])} training images: {steps} steps of 64 are "
        f"{steps * 64 / len(data['x_train']):.0f} epochs. At 5,000 steps the training loss "
        "ends near zero (float32, seeds 0 and 1: 1.2e-4 and 5e-5; 4e-4 and 3e-4 at step 2,000), "
        "so the differences in it are between runs that have memorized the training set, and "
        "the test loss measures overfitting as much as optimization.",
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
    d, layers, heads, context, batch_size = LM_QUICK if quick else LM_SIZE
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

    steps = 100 if quick else STEPS

    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.integers(0, split - context - 1, (n, batch_size, 1), dtype=np.int32)

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

    steps = 100 if quick else STEPS

    def draw(rng: np.random.Generator, n: int) -> np.ndarray:  # one key per step
        return rng.integers(0, 2**32, (n, 2), dtype=np.uint32)

    def batch(data: Data, key: jax.Array) -> Batch:
        x = jax.random.normal(jax.random.wrap_key_data(key, impl="threefry2x32"), (128, d_in))
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


class Run(NamedTuple):
    losses: np.ndarray  # the training loss of every step
    metrics: dict[str, float]  # task.evaluate at the end
    chunk_seconds: list[float]  # wall time of each jitted chunk, the first one compiles
    chunk_cpu_seconds: list[float]  # the process's CPU time (all threads) of each chunk


def trainer(task: Task, variant: Variant, chunk: int = CHUNK) -> Callable[..., Run]:
    """Compiles ``task`` for one row once -> train(seed, steps=task.steps) -> Run.

    The seed draws the initial params and the batches. The params are stored in the row's
    ``params_dtype``; the final metrics see them cast to float32.
    """
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, task.learning_rate, max(1, task.steps // 20), task.steps, task.learning_rate / 20
    )
    tx = optimizer(variant, schedule, task.weight_decay)
    data = jax.device_put(task.data)

    def step(carry: tuple[Params, Any], data: Data, draw: Any) -> tuple[Any, jax.Array]:
        params, state = carry
        loss, grads = jax.value_and_grad(task.loss)(params, task.batch(data, draw))
        updates, state = tx.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), loss.astype(jnp.float32)

    @jax.jit  # data as an argument: as a constant, XLA would fold it
    def run_chunk(carry: tuple[Params, Any], data: Data, draws: Any) -> tuple[Any, jax.Array]:
        return jax.lax.scan(lambda c, draw: step(c, data, draw), carry, draws)

    def init(key: jax.Array) -> tuple[Params, Any]:  # eager: its ops compile once for all rows
        params = stored(task.init(key), variant.params_dtype)
        return params, tx.init(params)

    evaluate = lambda params: task.evaluate(stored(params, jnp.float32), data)  # noqa: E731

    def train(seed: int, steps: int = task.steps) -> Run:
        if steps % chunk:
            raise ValueError(f"steps must be a multiple of the chunk {chunk}, got {steps}")
        carry = init(jax.random.key(seed))
        draws = task.draw(np.random.default_rng(seed), steps)
        losses, seconds, cpu_seconds = [], [], []
        for start in range(0, steps, chunk):
            begin, begin_cpu = time.perf_counter(), time.process_time()
            carry, chunk_losses = run_chunk(carry, data, draws[start : start + chunk])
            losses.append(np.asarray(chunk_losses))  # waits for the chunk
            seconds.append(time.perf_counter() - begin)
            cpu_seconds.append(time.process_time() - begin_cpu)
        metrics = {k: float(v) for k, v in evaluate(carry[0]).items()}
        return Run(np.concatenate(losses), metrics, seconds, cpu_seconds)

    return train


def nu_decay(variant: Variant, steps: int, drop_at: int) -> np.ndarray:
    """(d) Mean ``nu`` of a 16,384-element leaf whose gradients shrink 100× at ``drop_at``.

    Float32 ``nu`` then decays as 0.999^t towards the new g² = 1e-4. Round-to-nearest
    bfloat16 keeps 8 significant bits: 0.999·v rounds back to v, so its ``nu`` stays put.
    """
    tx = optimizer(variant, 1e-3, 0.0)
    params = jnp.zeros(16384, variant.params_dtype)
    key = jax.random.key(7)

    def step(state: Any, t: jax.Array) -> tuple[Any, jax.Array]:
        scale = jnp.where(t < drop_at, 1.0, 0.01)
        grads = scale * jax.random.normal(jax.random.fold_in(key, t), params.shape)
        _, state = tx.update(grads.astype(params.dtype), state, params)
        nu = optax.tree.get(adam_optax.dequantize(state), "nu")
        return state, nu.astype(jnp.float32).mean()

    _, means = jax.jit(lambda s: jax.lax.scan(step, s, jnp.arange(steps)))(tx.init(params))
    return np.asarray(means)


# ---------------------------------------------------------------- report


def verdict(delta: float, spread: float) -> str:
    """ "inside" if |delta| <= spread, else which side of float32 the row lies on."""
    if not math.isfinite(spread):
        return "n/a (one seed)"
    if abs(delta) <= spread:
        return "inside"
    return "outside, better" if delta < 0 else "outside, worse"


def summarize(runs: dict[str, Any]) -> dict[str, Any]:
    """task -> metric -> the float32 spread, the b2=0.998 Δ and each row's Δ and verdict.

    For a loss (lower is better): per seed d[s] = (loss_v[s] - loss_32[s]) / loss_32[s];
    Δ = mean(d), its standard error sd(d, ddof=1)/sqrt(n); the spread is
    sd(loss_32, ddof=1) / mean(loss_32). For an accuracy: Δ in points, no verdict.
    """
    summary: dict[str, Any] = {}
    for task_name, by_variant in runs.items():
        base = by_variant[REFERENCE]["metrics"]
        summary[task_name] = {}
        for metric in base[0]:
            reference = np.array([m[metric] for m in base])
            n = len(reference)
            is_loss = metric.endswith("loss")
            spread = float(reference.std(ddof=1) / reference.mean()) if n > 1 else math.nan
            rows = {}
            for name, run in by_variant.items():
                values = np.array([m[metric] for m in run["metrics"]])
                deltas = (values - reference) / reference if is_loss else values - reference
                se = float(deltas.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
                rows[name] = {
                    "mean": float(values.mean()),
                    "per_seed": values.tolist(),
                    "delta_per_seed": deltas.tolist(),
                    "delta": float(deltas.mean()),
                    "delta_se": se,
                    "verdict": verdict(float(deltas.mean()), spread) if is_loss else None,
                }
            summary[task_name][metric] = {
                "kind": "relative" if is_loss else "points",
                "float32_spread": spread if is_loss else None,
                "b2_delta": rows[B2_ROW]["delta"] if B2_ROW in rows else None,
                "variants": rows,
            }
    return summary


def percent(value: float | None, se: float | None = None) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    text = f"{100 * value:+.2f}%"
    return text if se is None or not math.isfinite(se) else f"{text} ± {100 * se:.2f}"


def task_section(result: dict[str, Any], task: str, names: list[str], stored: str) -> list[str]:
    """A task's heading, its sizes and settings, and its table: each row's final metrics, Δ
    and time per step. ``stored`` names the format of the large leaves ("8-bit")."""
    info, by_metric = result["tasks"][task], result["summary"][task]
    lines = [
        f"## {task}",
        "",
        f"{info['params']:,} params, {100 * info['quantized_fraction']:.1f}% in leaves of "
        f">= {MIN_QUANTIZED_SIZE} elements ({stored} there, float32 elsewhere); "
        f"{info['steps']} steps, learning rate {info['learning_rate']:g} (warmup and "
        f"cosine decay), weight decay {info['weight_decay']:g}.",
        "",
    ]
    if info["note"]:
        lines += [f"Note: {info['note']}", ""]
    metrics = list(by_metric)
    header = " | ".join(f"{m} | Δ" for m in metrics)
    lines += [f"| row | {header} | ms/step |", "|---" * (2 + 2 * len(metrics)) + "|"]
    for name in names:
        cells = []
        for m in metrics:
            row = by_metric[m]["variants"][name]
            if by_metric[m]["kind"] == "relative":
                cells += [f"{row['mean']:.4g}", percent(row["delta"], row["delta_se"])]
            else:
                cells += [f"{row['mean']:.2f}", f"{row['delta']:+.2f} pt"]
        ms = result["timing"][task][name]["ms_per_step"]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ms:.2f} |")
    return [*lines, ""]


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    names = [v["name"] for v in result["variants"]]
    low_bit = [n for n in names if n not in (REFERENCE, B2_ROW)]
    lines = [
        "# Quality of Adam's low-memory state",
        "",
        f"`{env['command']}` at adam_optax {env['adam_optax_commit']}, "
        f"{env.get('date', 'date not recorded')}: seeds {result['seeds']}, "
        f"jax {env['jax']}, {env['cpus']} CPUs, "
        f"load average {env['load_before']:.1f} before / {env['load_after']:.1f} after, "
        f"{result['seconds']:.0f} s.",
        "",
        "Δ: the mean over seeds of the paired relative difference from float32, "
        "(loss_v[s] − loss_32[s]) / loss_32[s], ± its standard error (sd over seeds, ddof=1, "
        "/ √n). *Spread*: float32's own seed-to-seed spread, the standard deviation over "
        "seeds (ddof=1) of its final loss divided by its mean. *b2=0.998*: Δ of float32 AdamW "
        "with b2 = 0.998 instead of 0.999. Verdict: *inside* if |Δ| ≤ spread, else *outside, "
        "better* (lower loss) or *outside, worse*. The target is *inside*, in either "
        "direction: lower loss than float32 by more than the spread is a bias to explain, "
        "not a win.",
        "",
        "| task | metric | steps | float32 spread | b2=0.998 Δ | "
        + " | ".join(low_bit) + " |",
        "|---" * (5 + len(low_bit)) + "|",
    ]  # fmt: skip
    for task_name, by_metric in result["summary"].items():
        steps = result["tasks"][task_name]["steps"]
        for metric, entry in by_metric.items():
            if entry["kind"] != "relative":
                continue
            cells = [
                f"{percent(r['delta'], r['delta_se'])}, {r['verdict']}"
                for r in (entry["variants"][n] for n in low_bit)
            ]
            lines.append(
                f"| {task_name} | {metric} | {steps} | {100 * entry['float32_spread']:.2f}% | "
                f"{percent(entry['b2_delta'])} | " + " | ".join(cells) + " |"
            )
    lines += ["", "Rows:", ""]
    for v in result["variants"]:
        wrap = f", wrapped by `{v['wrap']}`" if v["wrap"] else ""
        lines.append(f"- **{v['name']}**: {v['about']}; params {v['params_dtype']}{wrap}")
    lines.append("")
    for task_name in result["summary"]:
        lines += task_section(result, task_name, names, "8-bit")
    decay = result["nu_decay"]
    if decay["final"]:
        lines += [
            f"## (d) nu after the gradients shrink 100× at step {decay['drop_at']}",
            "",
            f"Mean `nu` of a 16,384-element leaf after {decay['steps']} steps (float32 decays "
            "as 0.999^t towards 1e-4):",
            "",
            "| row | final mean nu | ÷ float32 |",
            "|---|---|---|",
        ]
        f32 = decay["final"][REFERENCE]
        for name, value in decay["final"].items():
            lines.append(f"| {name} | {value:.4g} | {value / f32:.2f} |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    """Top: each task's training loss (mean over seeds, moving average over 2% of the run)
    and (d)'s mean nu. Bottom: the same relative to float32's, in percent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {task: dict(by_variant) for task, by_variant in result["curves"].items()}
    if result["nu_decay"]["curves"]:
        title = f"(d) mean nu, gradients ÷100 at step {result['nu_decay']['drop_at']}"
        curves[title] = result["nu_decay"]["curves"]
    fig, axes = plt.subplots(2, len(curves), figsize=(4.5 * len(curves), 6.4), sharex="col")
    axes = np.asarray(axes).reshape(2, len(curves))
    for column, (name, by_variant) in zip(axes.T, curves.items(), strict=True):
        is_nu = name.startswith("(d)")
        every = 1 if is_nu else result["curves_every"]
        window = 1 if is_nu else max(1, len(by_variant[REFERENCE]) // 50)
        smooth = {
            variant: np.convolve(values, np.ones(window) / window, mode="valid")
            for variant, values in by_variant.items()
        }
        for variant, values in smooth.items():
            steps = (np.arange(len(values)) + window - 1) * every
            column[0].semilogy(steps, values, label=variant)
            column[1].plot(steps, 100 * (values / smooth[REFERENCE] - 1), label=variant)
        column[0].set(title=name, ylabel="mean nu" if is_nu else "training loss")
        column[1].set(xlabel="step", ylabel="% vs float32")
        column[0].legend(fontsize=7)
        if not is_nu:
            column[1].set_ylim(-10, 10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


TASKS = {"digits": digits_task, "lm": char_lm_task, "teacher": teacher_student_task}


def select(rows: list[Variant], names: list[str] | None) -> list[Variant]:
    """The rows named (all if None); the reference is always run, first."""
    if names is None:
        return rows
    known = [v.name for v in rows]
    if unknown := set(names) - set(known):
        raise ValueError(f"variants: unknown {sorted(unknown)}; this table has {known}")
    return [v for v in rows if v.name == REFERENCE or v.name in names]


def callable_name(f: Callable[..., Any]) -> str:
    """``adam_optax.master_weights(correction_bits=8)`` for a partial of it, and so on."""
    if isinstance(f, functools.partial):
        keywords = ", ".join(f"{k}={v!r}" for k, v in f.keywords.items())
        return f"{callable_name(f.func)}({keywords})"
    name = getattr(f, "__qualname__", type(f).__name__)
    module = getattr(f, "__module__", None) or ""
    return f"adam_optax.{name}" if module.startswith("adam_optax") else name


def describe(variant: Variant) -> dict[str, Any]:
    wrap = None if variant.wrap is None else callable_name(variant.wrap)
    return {"name": variant.name, "params_dtype": jnp.dtype(variant.params_dtype).name,
            "wrap": wrap, "about": variant.about}  # fmt: skip


def task_info(task: Task) -> dict[str, Any]:
    params = jax.eval_shape(task.init, jax.random.key(0))
    return {
        "params": sum(leaf.size for leaf in jax.tree.leaves(params)),
        "quantized_fraction": quantized_fraction(params),
        "steps": task.steps,
        "learning_rate": task.learning_rate,
        "weight_decay": task.weight_decay,
        "note": task.note,
    }


def run_all(
    quick: bool,
    seeds: list[int],
    tasks: list[str],
    out: Path,
    command: str,
    rows: list[Variant] | None = None,
    nu_decay_steps: tuple[int, int] | None = None,
    name: str = "quality",
    report: Callable[[dict[str, Any]], str] = markdown,
) -> dict[str, Any]:
    """Trains every task with every row and seed; writes NAME.md, .json and .png to out.

    ``nu_decay_steps``: (drop_at, steps) for (d); (0, 0) skips it. ``name`` and ``report``
    (result -> the .md's text) let another study of other rows reuse the run and its files.
    """
    start, load_before, commit = time.perf_counter(), os.getloadavg()[0], git_commit()
    date = utc_now()
    rows = variants() if rows is None else rows
    if rows[0].name != REFERENCE:
        raise ValueError(f"rows: the first must be {REFERENCE!r}, got {rows[0].name!r}")
    chunk = 50 if quick else CHUNK
    runs: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    infos: dict[str, Any] = {}
    timing: dict[str, Any] = {}
    for task in (TASKS[key](quick) for key in tasks):
        infos[task.name] = task_info(task)
        runs[task.name], curves[task.name], timing[task.name] = {}, {}, {}
        for variant in rows:
            begin = time.perf_counter()
            train = trainer(task, variant, chunk)
            results = [train(seed) for seed in seeds]
            steady = [s for r in results for s in r.chunk_seconds[1:]] or [math.nan]
            timing[task.name][variant.name] = {
                "seconds": time.perf_counter() - begin,
                "ms_per_step": 1e3 * float(np.median(steady)) / chunk,
            }
            runs[task.name][variant.name] = {"metrics": [r.metrics for r in results]}
            curves[task.name][variant.name] = np.mean([r.losses for r in results], axis=0)
            print(f"{task.name:28s} {variant.name:18s} {time.perf_counter() - begin:6.1f} s "
                  f"{results[0].metrics}", file=sys.stderr, flush=True)  # fmt: skip
    drop_at, steps = nu_decay_steps or ((50, 200) if quick else (2000, 4000))
    decay = {v.name: nu_decay(v, steps, drop_at) for v in rows} if steps else {}
    summary = summarize(runs)
    result = {
        "seeds": seeds,
        "quick": quick,
        "chunk": chunk,
        "reference": REFERENCE,
        "b2_row": B2_ROW,
        "variants": [describe(v) for v in rows],
        "tasks": infos,
        "runs": runs,
        "summary": summary,
        "timing": timing,
        "nu_decay": {
            "drop_at": drop_at,
            "steps": steps,
            "final": {k: float(v[-1]) for k, v in decay.items()},
            "curves": {k: v.tolist() for k, v in decay.items()},
        },
        "seconds": time.perf_counter() - start,
        "environment": {
            "command": command,
            "date": date,
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
    (out / f"{name}.md").write_text(report(result))
    every = max(1, max(len(c) for v in curves.values() for c in v.values()) // 500)
    result["curves"] = {
        task: {k: c[::every].tolist() for k, c in by_variant.items()}
        for task, by_variant in curves.items()
    }
    result["curves_every"] = every
    (out / f"{name}.json").write_text(json.dumps(result, indent=1))
    plot(result, out / f"{name}.png")
    return result


def estimate(quick: bool, seeds: int, tasks: list[str], rows: list[Variant]) -> float:
    """Times two chunks of one seed per task and row; prints and returns the full run's time.

    Full time = Σ over tasks and rows of (compile + seeds × steps × time per step), with
    compile = the first chunk's time less the second's, plus (d) timed in full. It is
    given twice: from wall time, and from the process's CPU time (all threads). On a busy
    machine the wall time counts the other processes' share of the cores; the CPU time
    does not, and bounds a quiet machine's wall time from above unless XLA runs a step on
    both cores at once.
    """
    chunk = 50 if quick else CHUNK
    total = np.zeros(2)  # wall, CPU
    print(f"{'task':28s} {'row':18s} {'compile s':>9s} {'ms/step':>8s} {'CPU ms/step':>11s} "
          f"{'est. s':>7s} {'CPU est. s':>10s}")  # fmt: skip
    for task in (TASKS[name](quick) for name in tasks):
        for variant in rows:
            run = trainer(task, variant, chunk)(0, 2 * chunk)
            per_step = np.array([run.chunk_seconds[1], run.chunk_cpu_seconds[1]]) / chunk
            compile_s = np.maximum(
                0.0, np.subtract([run.chunk_seconds[0], run.chunk_cpu_seconds[0]], per_step * chunk)
            )
            seconds = compile_s + seeds * task.steps * per_step
            total += seconds
            ms = 1e3 * per_step
            print(f"{task.name:28s} {variant.name:18s} {compile_s[0]:9.1f} {ms[0]:8.2f} "
                  f"{ms[1]:11.2f} {seconds[0]:7.0f} {seconds[1]:10.0f}", flush=True)  # fmt: skip
    drop_at, steps = (50, 200) if quick else (2000, 4000)
    begin, begin_cpu = time.perf_counter(), time.process_time()
    for variant in rows:
        nu_decay(variant, steps, drop_at)
    decay = np.array([time.perf_counter() - begin, time.process_time() - begin_cpu])
    total += decay
    print(f"(d) nu decay, all rows, {steps} steps: {decay[0]:.0f} s, CPU {decay[1]:.0f} s")
    print(f"estimated full run: {total[0]:.0f} s = {total[0] / 60:.1f} min of wall time, "
          f"{total[1] / 60:.1f} min of CPU time; {seeds} seeds, {len(rows)} rows, "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    return float(total[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny models, 100 steps, 2 seeds")
    parser.add_argument("--seeds", type=int, default=None, help=f"seeds 0..N-1 ({SEEDS})")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated: %(default)s")
    parser.add_argument("--variants", default=None,
                        help="comma-separated rows (float32 always runs); default: all of "
                        + ", ".join(v.name for v in variants()))  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    parser.add_argument(
        "--estimate", action="store_true", help="time 2 chunks per task and row; estimate the run"
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite OUT/quality.md and redraw OUT/quality.png from OUT/quality.json",
    )
    args = parser.parse_args()
    if args.report_only:
        result = json.loads((args.out / "quality.json").read_text())
        (args.out / "quality.md").write_text(markdown(result))
        plot(result, args.out / "quality.png")
        return
    seeds = list(range(args.seeds or (2 if args.quick else SEEDS)))
    tasks = args.tasks.split(",")
    if unknown := set(tasks) - set(TASKS):
        parser.error(f"--tasks: unknown {sorted(unknown)}; choose from {list(TASKS)}")
    try:
        rows = select(variants(), args.variants.split(",") if args.variants else None)
    except ValueError as error:
        parser.error(f"--{error}")
    if args.estimate:
        estimate(args.quick, len(seeds), tasks, rows)
        return
    command = "python benchmarks/quality.py " + " ".join(sys.argv[1:])
    result = run_all(args.quick, seeds, tasks, args.out, command.strip(), rows)
    print((args.out / "quality.md").read_text())
    verdicts = [
        row["verdict"]
        for by_metric in result["summary"].values()
        for entry in by_metric.values()
        for name, row in entry["variants"].items()
        if entry["kind"] == "relative" and name not in (REFERENCE, B2_ROW)
    ]
    outside = sum(v.startswith("outside") for v in verdicts)
    print(f"{outside} of {len(verdicts)} low-bit differences outside float32's spread",
          file=sys.stderr)  # fmt: skip


if __name__ == "__main__":
    main()
