"""Train a byte-level transformer in 7 bytes per parameter: bfloat16 params and gradients,
8-bit AdamW moments, and an int8 correction that makes each weight a 16-bit master.

    python examples/bfloat16_byte_lm.py                       # about a minute on 2 cores
    python examples/bfloat16_byte_lm.py --compare-float32     # then again in float32
    python examples/bfloat16_byte_lm.py --state 4bit          # 4-bit moments: 6 bytes

The text is the Python standard library's own source, read from this Python's install
(nothing is downloaded): files in sorted order, every tenth one held out for validation.
Top to bottom: the data, the model (Flax NNX, bfloat16 params), the optimizer, a jitted
train step through nnx.Optimizer, an eval step, the training loop and the command line.
common.py holds the batching, checkpoints and the clean exits shared with the other examples.
"""

import argparse
import functools
import os
import sys
import sysconfig
import time
from collections.abc import Sequence

import common
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import adam_optax


# 1. The data: the standard library's .py files as bytes, cut into windows of context + 1.
def load_data(config: argparse.Namespace) -> common.Dataset:
    """Up to --megabytes of the standard library's source. x is a window of `context` bytes,
    y the same window shifted by one (the next byte at each position)."""
    root = sysconfig.get_paths()["stdlib"]
    files = sorted(
        os.path.join(d, f)
        for d, dirs, names in os.walk(root)
        if "site-packages" not in d and "test" not in os.path.relpath(d, root).split(os.sep)
        for f in names
        if f.endswith(".py")
    )
    common._require(len(files) >= 20, f"only {len(files)} .py files under {root}")
    train, valid, budget = [], [], int(config.megabytes * 2**20)
    for i, path in enumerate(files):
        with open(path, "rb") as f:
            (valid if i % 10 == 9 else train).append(f.read())
        if sum(map(len, train)) >= budget:
            break
    if not valid:  # a budget smaller than the first nine files
        valid.append(train.pop())

    def windows(parts: list[bytes]) -> np.ndarray:
        text = np.frombuffer(b"\n".join(parts), np.uint8)
        n = (len(text) - 1) // config.context
        common._require(
            n > 0, f"--context {config.context}: longer than the text; raise --megabytes"
        )
        return np.stack(
            [text[i * config.context : i * config.context + config.context + 1] for i in range(n)]
        ).astype(np.int32)

    tr, va = windows(train), windows(valid)
    va = va[: max(1, len(va) // 4)]  # a quarter is enough for a steady estimate, and quick
    return common.Dataset(tr[:, :-1], tr[:, 1:], va[:, :-1], va[:, 1:], config.context, 256)


# 2. The model: a small decoder-only transformer over bytes.
class Block(nnx.Module):
    def __init__(self, width: int, heads: int, param_dtype, *, rngs: nnx.Rngs):
        kw = {"param_dtype": param_dtype, "dtype": jnp.float32, "rngs": rngs}
        self.norm1, self.norm2 = nnx.LayerNorm(width, **kw), nnx.LayerNorm(width, **kw)
        self.attention = nnx.MultiHeadAttention(heads, width, decode=False, **kw)
        self.up, self.down = nnx.Linear(width, 4 * width, **kw), nnx.Linear(4 * width, width, **kw)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        x = x + self.attention(self.norm1(x), mask=mask)
        return x + self.down(nnx.gelu(self.up(self.norm2(x))))


class ByteTransformer(nnx.Module):
    """Byte embeddings plus learned positions, `layers` pre-norm blocks, tied output. The
    params are `param_dtype`; the arithmetic is float32 (XLA:CPU emulates bfloat16 dots)."""

    def __init__(self, config: argparse.Namespace, param_dtype, *, rngs: nnx.Rngs):
        w = config.width
        self.embed = nnx.Embed(256, w, param_dtype=param_dtype, dtype=jnp.float32, rngs=rngs)
        init = nnx.initializers.normal(0.02)
        self.position = nnx.Param(init(rngs.params(), (config.context, w), param_dtype))
        self.blocks = nnx.List(
            [Block(w, config.heads, param_dtype, rngs=rngs) for _ in range(config.layers)]
        )
        self.norm = nnx.LayerNorm(w, param_dtype=param_dtype, dtype=jnp.float32, rngs=rngs)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        x = self.embed(tokens) + self.position[...].astype(jnp.float32)[: tokens.shape[1]]
        mask = nnx.make_causal_mask(tokens)
        for block in self.blocks:
            x = block(x, mask)
        return self.embed.attend(self.norm(x))  # logits over the 256 bytes


# 3. The optimizer: the 7-byte set-up (6 bytes with --state 4bit), or float32 AdamW with
# --compare-float32.
def create_optimizer(config: argparse.Namespace, total_steps: int) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, max(1, total_steps // 10), total_steps
    )
    if config.precision == "float32":
        adamw = adam_optax.adamw(schedule, b2=0.99, weight_decay=config.weight_decay)
        return optax.chain(optax.clip_by_global_norm(1.0), adamw)
    blockwise = adam_optax.adamw4bit if config.state == "4bit" else adam_optax.adamw8bit
    adamw = blockwise(schedule, b2=0.99, weight_decay=config.weight_decay)
    return adam_optax.master_weights(optax.chain(optax.clip_by_global_norm(1.0), adamw))


# 4. The train and eval steps: nnx.Optimizer steps the bfloat16 model in place.
def loss_and_accuracy(logits: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, (logits.argmax(-1) == y).mean()


# Donating the model and the optimizer lets XLA update their arrays in place.
@functools.partial(nnx.jit, donate_argnums=(0, 1))
def train_step(model: ByteTransformer, optimizer: nnx.Optimizer, x, y):
    """One step; returns the batch's loss and accuracy before it. The gradients have the
    params' dtype (bfloat16), and so have the updates master_weights returns."""

    def loss_fn(model):
        return loss_and_accuracy(model(x), y)

    (loss, accuracy), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)  # master_weights needs the params: nnx passes them
    return loss, accuracy


@nnx.jit
def eval_step(model: ByteTransformer, x, y):
    return loss_and_accuracy(model(x), y)


def evaluate(model: ByteTransformer, data: common.Dataset, batch_size: int = 64):
    """Mean loss and accuracy over the validation windows, in full batches of up to 64."""
    batch_size = min(batch_size, len(data.x_test))
    batches = len(data.x_test) // batch_size
    sums = np.zeros(2)
    for i in range(batches):
        s = slice(i * batch_size, (i + 1) * batch_size)
        sums += np.asarray(eval_step(model, data.x_test[s], data.y_test[s]))
    return sums / batches


def bytes_per_parameter(params, opt_state) -> float:
    """Held across steps: the params, gradients of the params' dtypes, and the state."""
    nbytes = lambda tree: sum(x.nbytes for x in jax.tree.leaves(tree))  # noqa: E731
    return (2 * nbytes(params) + nbytes(opt_state)) / sum(x.size for x in jax.tree.leaves(params))


# 5. The training loop.
def train_and_evaluate(config: argparse.Namespace, data: common.Dataset):
    """Trains config.epochs epochs, validating after each; resumes from --checkpoint-dir."""
    dtype = jnp.float32 if config.precision == "float32" else jnp.bfloat16
    model = ByteTransformer(config, dtype, rngs=nnx.Rngs(config.seed))
    steps = common.steps_per_epoch(config, data)
    tx = create_optimizer(config, config.epochs * steps)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    def state() -> dict[str, nnx.State]:  # what a checkpoint holds, besides the history
        return {"params": nnx.state(model, nnx.Param), "optimizer": nnx.state(optimizer)}

    saved = {k: v for k, v in vars(config).items() if k != "compare_float32"}
    checkpoints = common.Checkpoints(argparse.Namespace(**saved))
    restored, history = checkpoints.restore(state())
    nnx.update(model, restored["params"])
    nnx.update(optimizer, restored["optimizer"])  # its step count, moments and corrections
    params = nnx.as_pure(nnx.state(model, nnx.Param))
    per_param = bytes_per_parameter(params, nnx.as_pure(optimizer.opt_state))
    n = sum(x.size for x in jax.tree.leaves(params))
    print(
        f"{config.precision}: {n:,} params, {per_param:.2f} bytes/param "
        f"(params + grads + optimizer state), {config.epochs} epochs of {steps} steps",
        flush=True,
    )
    for epoch in range(len(history.epoch_end), config.epochs):
        for x, y in common.batches(config, data, epoch):  # stops here on Ctrl-C
            loss, accuracy = train_step(model, optimizer, x, y)
            history.log_step(loss, accuracy)
        history.log_epoch(*evaluate(model, data))
        checkpoints.save(state(), history)
    return history, per_param


# 6. The command line.
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line, every option checked as common.py's are: a bad value ends the run
    with one line and exit code 2, before the data loads."""
    positive = common.number(float, "a number > 0", lambda v: v > 0)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.error = lambda message: parser.exit(2, f"{parser.prog}: error: {message}\n")
    options = (  # option, type, default, help
        ("--megabytes", positive, 0.8, "of standard-library source to train on"),
        ("--epochs", common.positive_int, 1, "passes over the training text"),
        ("--batch-size", common.positive_int, 32, "windows per step"),
        ("--context", common.positive_int, 64, "bytes per window"),
        ("--width", common.positive_int, 96, "model width"),
        ("--heads", common.positive_int, 4, "attention heads"),
        ("--layers", common.positive_int, 2, "transformer blocks"),
        ("--learning-rate", positive, 3e-3, "at the peak"),
        (
            "--weight-decay",
            common.number(float, "a number >= 0", lambda v: v >= 0),
            0.01,
            "AdamW's",
        ),
        ("--seed", common.seed, 0, "seeds the initial parameters and each epoch's shuffle"),
        (
            "--checkpoint-dir",
            common.writable,
            None,
            "save after every epoch; resume from the latest",
        ),
    )
    for option, kind, default, text in options:
        parser.add_argument(
            option, type=kind, default=default, help=f"{text} (default: %(default)s)"
        )
    parser.add_argument(
        "--state",
        choices=("8bit", "4bit"),
        default="8bit",
        help="AdamW's moments in bfloat16 training: 8-bit (7 bytes per parameter) or 4-bit "
        "(6 bytes) (default: %(default)s)",
    )
    parser.add_argument(
        "--compare-float32",
        action="store_true",
        help="train the same model again with float32 params and AdamW",
    )
    args = common.negative_values_joined(sys.argv[1:] if argv is None else argv)
    config = parser.parse_args(args, argparse.Namespace(precision="bfloat16"))
    if config.width % config.heads:
        parser.error(f"--width {config.width} must be a multiple of --heads {config.heads}")
    return config


def main(argv: Sequence[str] | None = None) -> dict:
    """Runs the command line; returns {precision: (history, bytes per param)}."""
    config = parse_args(argv)
    runs = {}
    with common.exit_cleanly(config):
        start = time.perf_counter()
        data = load_data(config)
        runs["bfloat16"] = train_and_evaluate(config, data)
        seconds = time.perf_counter() - start
        if config.compare_float32:
            f32 = argparse.Namespace(
                **{**vars(config), "precision": "float32", "checkpoint_dir": None}
            )
            runs["float32"] = train_and_evaluate(f32, data)
    for name, (history, per_param) in runs.items():
        print(
            f"{name}: validation_loss={history.test_loss[-1]:.4f} "
            f"bytes_per_param={per_param:.2f} steps={len(history.train_loss)}"
        )
    print(f"seconds={seconds:.1f}")
    return runs


if __name__ == "__main__":
    main()
