"""What the Flax examples share: data, optimizer, training bookkeeping, plots, CLI.

`flax_mlp.py` (Flax NNX) and `flax_linen_mlp.py` (Flax Linen) train the same MLP in
the same way; everything that does not depend on the Flax API lives here, once:

- data: `load_data` (scikit-learn's digits or a Keras-style `.npz`) returns a `Dataset`;
- optimizer: `make_optimizer`, global-norm clipping + AdamW + warmup-cosine schedule;
- loss: `loss_and_accuracy`;
- bookkeeping: `Run` (shuffled batches, progress bar, `History`, checkpoints, resume);
- output: `plot_histories`, and `main`, the command line of both scripts.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import jax
import numpy as np
import optax
from tqdm import tqdm

import adam_optax

# The optimizer under test, and the reference --compare-optax trains against.
ADAMW = {"adam_optax.adamw": adam_optax.adamw, "optax.adamw": optax.adamw}

State = TypeVar("State")


class UsageError(Exception):
    """Bad input the user can fix; `main` prints it on stderr, without a traceback."""


# ----------------------------------------------------------------------------- data

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")  # the layout of Keras's mnist.npz
DIGITS_TEST_SIZE = 360  # 20% of scikit-learn's 1,797 digits, held out once and for all


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Flattened images scaled to [0, 1] (float32) and labels 0..num_classes-1 (int32)."""

    x_train: np.ndarray  # (n_train, num_features)
    y_train: np.ndarray  # (n_train,)
    x_test: np.ndarray  # (n_test, num_features)
    y_test: np.ndarray  # (n_test,)
    num_classes: int

    @property
    def num_features(self) -> int:
        return self.x_train.shape[1]


def load_data(path: str | None = None) -> Dataset:
    """Loads `path`, a `.npz` with x_train, y_train, x_test, y_test, or by default
    scikit-learn's bundled 8x8 digits with a fixed train/test split."""
    return load_digits() if path is None else load_npz(path)


def load_digits() -> Dataset:
    """scikit-learn's 1,797 handwritten 8x8 digits (bundled with it: no download)."""
    from sklearn.datasets import load_digits as sklearn_digits  # slow import: only if used

    x, y = sklearn_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))  # fixed: independent of --seed
    test, train = order[:DIGITS_TEST_SIZE], order[DIGITS_TEST_SIZE:]
    return prepare(x[train], y[train], x[test], y[test], source="digits")


def load_npz(path: str) -> Dataset:
    """Reads a Keras-style `.npz`, such as MNIST's `mnist.npz`."""
    unreadable = (OSError, ValueError, EOFError, zipfile.BadZipFile)
    source = f"--data {path}"
    if not os.path.isfile(path):
        raise UsageError(f"{source}: {'not a file' if os.path.exists(path) else 'no such file'}")
    if not zipfile.is_zipfile(path):  # a .npz is a zip of .npy files, as numpy.savez writes
        raise UsageError(f"{source}: not a .npz archive (numpy.savez writes those)")
    try:
        archive = np.load(path, allow_pickle=False)
    except unreadable as error:
        raise UsageError(f"{source}: cannot read it as a .npz archive ({error})") from None
    with archive:
        missing = [key for key in NPZ_KEYS if key not in archive.files]
        if missing:
            raise UsageError(
                f"{source}: no {', '.join(missing)} in it (it has: "
                f"{', '.join(archive.files) or 'nothing'}); expected {', '.join(NPZ_KEYS)}, "
                "the layout of Keras's mnist.npz"
            )
        try:
            arrays = [archive[key] for key in NPZ_KEYS]
        except unreadable as error:
            raise UsageError(f"{source}: cannot read its arrays ({error})") from None
    return prepare(*arrays, source=source)


def prepare(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    source: str,
) -> Dataset:
    """Checks the arrays, flattens the images and scales them to [0, 1] with the
    training set's minimum and maximum (for MNIST's uint8 pixels: x / 255)."""
    for name, x in (("x_train", x_train), ("x_test", x_test)):
        if x.ndim < 2 or len(x) == 0:
            raise UsageError(f"{source}: {name} must be images of shape (N, ...), got {x.shape}")
        if x.dtype.kind not in "biuf" or not np.isfinite(x).all():
            raise UsageError(f"{source}: {name} must hold finite real numbers ({x.dtype})")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise UsageError(
            f"{source}: x_train's images have shape {x_train.shape[1:]}, "
            f"x_test's have shape {x_test.shape[1:]}"
        )
    for part, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if y.ndim != 1:
            raise UsageError(f"{source}: y_{part} must be labels of shape (N,), got {y.shape}")
        if len(y) != len(x):
            raise UsageError(f"{source}: {len(x)} images in x_{part}, {len(y)} labels in y_{part}")
        if not (y.dtype.kind in "iu" or (y.dtype.kind == "f" and (y == np.round(y)).all())):
            raise UsageError(f"{source}: y_{part} must hold integer class labels ({y.dtype})")
        if y.min() < 0:
            raise UsageError(f"{source}: y_{part} has label {y.min()}; labels are 0, 1, 2, ...")
    num_classes = int(y_train.max()) + 1
    if y_test.max() >= num_classes:
        raise UsageError(
            f"{source}: y_test has label {y_test.max()}, "
            f"outside y_train's labels 0..{num_classes - 1}"
        )
    if num_classes > len(y_train):
        raise UsageError(
            f"{source}: y_train has label {num_classes - 1} but only {len(y_train)} examples; "
            "labels must be class numbers 0, 1, 2, ..."
        )
    low, high = float(x_train.min()), float(x_train.max())
    if high == low:
        raise UsageError(f"{source}: every pixel of x_train is {low}; nothing to learn")

    def scale(x: np.ndarray) -> np.ndarray:
        x = (x.reshape(len(x), -1).astype(np.float32) - low) / (high - low)
        return np.clip(x, 0.0, 1.0)

    y_train, y_test = y_train.astype(np.int32), y_test.astype(np.int32)
    return Dataset(scale(x_train), y_train, scale(x_test), y_test, num_classes)


# -------------------------------------------------------------------- configuration


@dataclasses.dataclass(frozen=True)
class Config:
    """One training run; the defaults are the command line's."""

    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    hidden: tuple[int, ...] = (256, 256)
    seed: int = 0
    data: str | None = None  # None: scikit-learn's digits
    checkpoint_dir: str | None = None
    optimizer: str = "adam_optax.adamw"  # a key of ADAMW

    def trajectory(self) -> dict[str, Any]:
        """The options that decide the parameters a run ends with, as JSON values."""
        options = dataclasses.asdict(self)
        del options["checkpoint_dir"]
        options["hidden"] = list(self.hidden)
        return options


def steps_per_epoch(config: Config, data: Dataset) -> int:
    """Full batches per epoch: the last, incomplete batch is dropped, so that one
    compiled train_step serves every step."""
    return len(data.x_train) // config.batch_size


def make_optimizer(config: Config, data: Dataset) -> optax.GradientTransformation:
    """Clips the gradients to global norm 1, then AdamW with a learning rate that
    warms up linearly from 0 over the first 10% of the steps and then follows a
    cosine down to 0 at the last step."""
    total_steps = config.epochs * steps_per_epoch(config, data)
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.learning_rate,
        warmup_steps=total_steps // 10,
        decay_steps=total_steps,
    )
    adamw = ADAMW[config.optimizer]
    return optax.chain(
        optax.clip_by_global_norm(1.0),
        adamw(schedule, weight_decay=config.weight_decay),
    )


def loss_and_accuracy(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean softmax cross-entropy, and the fraction of argmax predictions that are right."""
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    accuracy = (logits.argmax(axis=-1) == labels).mean()
    return loss, accuracy


# -------------------------------------------------------------- training bookkeeping


@dataclasses.dataclass
class History:
    """What a run measured: training metrics per step, test metrics per epoch."""

    train_loss: list[float] = dataclasses.field(default_factory=list)  # per step
    train_accuracy: list[float] = dataclasses.field(default_factory=list)  # per step
    epoch_end: list[int] = dataclasses.field(default_factory=list)  # per epoch: steps so far
    test_loss: list[float] = dataclasses.field(default_factory=list)  # per epoch
    test_accuracy: list[float] = dataclasses.field(default_factory=list)  # per epoch

    def epoch_in_progress(self) -> slice:
        """The steps since the last recorded epoch, for slicing the per-step lists."""
        return slice(self.epoch_end[-1] if self.epoch_end else 0, None)


class Run:
    """The bookkeeping around a training loop, whatever the Flax API:

        with Run(config, data) as run:
            state = run.resume(state)  # the latest checkpoint, if there is one
            for epoch in run.epochs():  # the epochs not trained yet
                for x, y in run.batches(epoch):
                    state, loss, accuracy = train_step(state, x, y)
                    run.log_step(loss, accuracy)
                run.end_epoch(epoch, *eval_step(state, x_test, y_test), checkpoint=state)

    Each epoch's shuffle is a function of (seed, epoch) alone, and a checkpoint holds
    the rest of what a run depends on, so a run stopped after any epoch and started
    again with the same options ends with bit-identical parameters.
    """

    def __init__(self, config: Config, data: Dataset):
        self.config = config
        self.data = data
        self.steps_per_epoch = steps_per_epoch(config, data)
        self.history = History()
        self._first_epoch = 0
        self._checkpoints = None  # an orbax CheckpointManager with --checkpoint-dir
        self._bar = None

    def __enter__(self) -> Run:
        if self.config.checkpoint_dir is not None:
            import orbax.checkpoint as ocp  # slow import: only runs that checkpoint pay it

            options = ocp.CheckpointManagerOptions(
                max_to_keep=2,
                create=True,
                # Synchronous saves, as the train steps donate the buffers being saved.
                enable_async_checkpointing=False,
            )
            directory = os.path.abspath(self.config.checkpoint_dir)
            self._checkpoints = ocp.CheckpointManager(directory, options=options)
        self._bar = tqdm(
            total=self.config.epochs * self.steps_per_epoch,
            desc=self.config.optimizer,
            unit="step",
            leave=False,
        )
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._bar.close()
        if self._checkpoints is not None:
            self._checkpoints.close()

    def resume(self, state: State) -> State:
        """Returns the latest checkpoint restored into `state`'s tree structure, or
        `state` itself if there is none."""
        if self._checkpoints is None or self._checkpoints.latest_step() is None:
            return state
        import orbax.checkpoint as ocp

        epoch = self._checkpoints.latest_step()
        where = f"--checkpoint-dir {self.config.checkpoint_dir}"
        run = ocp.args.Composite(run=ocp.args.JsonRestore())
        saved = self._checkpoints.restore(epoch, args=run).run
        now = self.config.trajectory()
        changed = [
            f"{k}={v!r}, now {now.get(k)!r}" for k, v in saved["config"].items() if v != now.get(k)
        ]
        if changed:
            raise UsageError(
                f"{where} holds a run with other options ({'; '.join(changed)}); "
                "resume with the same options, or use another directory"
            )
        try:
            arrays = ocp.args.Composite(state=ocp.args.StandardRestore(state))
            restored = self._checkpoints.restore(epoch, args=arrays).state
        except Exception as error:  # orbax raises many types; its message is what helps
            raise UsageError(f"{where}: cannot restore epoch {epoch} ({error})") from None
        self.history = History(**saved["history"])
        self._first_epoch = epoch
        self._bar.update(epoch * self.steps_per_epoch)
        tqdm.write(f"resumed from {where} after epoch {epoch}")
        return restored

    def epochs(self) -> range:
        """The epochs (numbered from 0) still to train."""
        return range(self._first_epoch, self.config.epochs)

    def batches(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The training set, shuffled by (seed, epoch), in full batches."""
        shuffle = np.random.default_rng([self.config.seed, epoch])
        order = shuffle.permutation(len(self.data.x_train))
        size = self.config.batch_size
        for start in range(0, self.steps_per_epoch * size, size):
            batch = order[start : start + size]
            yield self.data.x_train[batch], self.data.y_train[batch]

    def log_step(self, loss: jax.Array, accuracy: jax.Array) -> None:
        """Records one step's training loss and accuracy and advances the progress bar."""
        history = self.history
        history.train_loss.append(float(loss))
        history.train_accuracy.append(float(accuracy))
        this_epoch = history.epoch_in_progress()
        self._bar.set_postfix(  # running means over this epoch's steps
            {
                "loss": f"{np.mean(history.train_loss[this_epoch]):.4f}",
                "accuracy": f"{np.mean(history.train_accuracy[this_epoch]):.4f}",
            },
            refresh=False,
        )
        self._bar.update()

    def end_epoch(
        self, epoch: int, test_loss: jax.Array, test_accuracy: jax.Array, checkpoint: Any
    ) -> None:
        """Records the test metrics, prints them, and saves `checkpoint`, a pytree of
        arrays holding everything the next epoch needs."""
        history = self.history
        this_epoch = history.epoch_in_progress()
        history.epoch_end.append(len(history.train_loss))
        history.test_loss.append(float(test_loss))
        history.test_accuracy.append(float(test_accuracy))
        tqdm.write(
            f"epoch {epoch + 1}/{self.config.epochs}"
            f"  train_loss={np.mean(history.train_loss[this_epoch]):.4f}"
            f"  train_accuracy={np.mean(history.train_accuracy[this_epoch]):.4f}"
            f"  test_loss={history.test_loss[-1]:.4f}"
            f"  test_accuracy={history.test_accuracy[-1]:.4f}"
        )
        if self._checkpoints is not None:
            import orbax.checkpoint as ocp

            run = {"config": self.config.trajectory(), "history": dataclasses.asdict(history)}
            items = ocp.args.Composite(
                state=ocp.args.StandardSave(checkpoint), run=ocp.args.JsonSave(run)
            )
            self._checkpoints.save(epoch + 1, args=items)


# --------------------------------------------------------------------------- output


def max_loss_difference(a: History, b: History) -> tuple[float, float]:
    """The largest absolute and relative difference between two per-step loss curves."""
    loss_a, loss_b = np.asarray(a.train_loss), np.asarray(b.train_loss)
    difference = np.abs(loss_a - loss_b)
    relative = difference / np.maximum(np.abs(loss_b), np.finfo(np.float32).tiny)
    return float(difference.max()), float(relative.max())


def plot_histories(histories: dict[str, History], path: str) -> None:
    """Saves loss and accuracy against the step: each batch's (faint), each epoch's mean
    over its batches (squares) and the test set's after each epoch (dots); one color and
    line style per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = ({"linestyle": "-", "color": "C0"}, {"linestyle": "--", "color": "C1"})
    for (label, history), style in zip(histories.items(), styles, strict=False):
        steps = np.arange(1, len(history.train_loss) + 1)
        for axes, train, test in (
            (loss_axes, history.train_loss, history.test_loss),
            (accuracy_axes, history.train_accuracy, history.test_accuracy),
        ):
            epoch_means = [np.mean(e) for e in np.split(train, history.epoch_end[:-1])]
            axes.plot(steps, train, **style, alpha=0.2, linewidth=0.8)
            axes.plot(
                history.epoch_end, epoch_means, **style, marker="s", ms=3, label=f"{label} train"
            )
            axes.plot(
                history.epoch_end,
                test,
                **style,
                marker="o",
                ms=4,
                mfc="none",
                label=f"{label} test",
            )
    loss_axes.set(title="loss", xlabel="step", ylabel="cross-entropy", yscale="log")
    accuracy_axes.set(title="accuracy", xlabel="step", ylabel="accuracy", ylim=(0, 1.01))
    for axes in (loss_axes, accuracy_axes):
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# --------------------------------------------------------------------- command line


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = _finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = _finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def build_parser(description: str) -> argparse.ArgumentParser:
    """The options of both examples."""
    default = Config()
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data",
        metavar="PATH.npz",
        help="train on this .npz, with arrays x_train, y_train, x_test, y_test (the layout of "
        "Keras's mnist.npz); images are flattened and scaled to [0, 1] "
        f"(default: scikit-learn's 1,797 8x8 digits, {DIGITS_TEST_SIZE} of them held out)",
    )
    parser.add_argument(
        "--epochs",
        metavar="N",
        type=_positive_int,
        default=default.epochs,
        help=f"passes over the training set (default: {default.epochs})",
    )
    parser.add_argument(
        "--batch-size",
        metavar="N",
        type=_positive_int,
        default=default.batch_size,
        help="examples per step; each epoch drops its last incomplete batch "
        f"(default: {default.batch_size})",
    )
    parser.add_argument(
        "--learning-rate",
        metavar="LR",
        type=_positive_float,
        default=default.learning_rate,
        help="peak learning rate: a linear warmup from 0 over the first 10%% of the steps, "
        f"then a cosine decay to 0 (default: {default.learning_rate:g})",
    )
    parser.add_argument(
        "--weight-decay",
        metavar="WD",
        type=_non_negative_float,
        default=default.weight_decay,
        help=f"AdamW's decoupled weight decay (default: {default.weight_decay:g})",
    )
    parser.add_argument(
        "--hidden",
        type=_positive_int,
        nargs="+",
        default=list(default.hidden),
        metavar="UNITS",
        help=f"widths of the hidden ReLU layers (default: {' '.join(map(str, default.hidden))}). "
        "The Adam paper's MLP (Kingma & Ba 2015, section 6.2) has two hidden layers of 1000 "
        "units for MNIST's 784 pixels; the default keeps the two layers and scales their width "
        "to the digits' 64 pixels, which it fits in seconds. For the paper's MLP on MNIST: "
        "--hidden 1000 1000",
    )
    parser.add_argument(
        "--seed",
        metavar="N",
        type=int,
        default=default.seed,
        help=f"seeds the initial parameters and each epoch's shuffle (default: {default.seed})",
    )
    parser.add_argument(
        "--checkpoint-dir",
        metavar="DIR",
        help="save parameters, optimizer state and step here with orbax after every epoch, and "
        "resume from the latest checkpoint: a stopped run, started again with the same "
        "options, ends bit-identical to an uninterrupted one (default: no checkpoints)",
    )
    parser.add_argument(
        "--plot",
        metavar="PATH.png",
        help="save train and test loss and accuracy curves to this image (default: no plot)",
    )
    parser.add_argument(
        "--compare-optax",
        action="store_true",
        help="train again from the same seed with optax.adamw (same schedule, clipping and "
        "weight decay) and print the largest difference between the per-step loss curves",
    )
    return parser


def _check_output_paths(args: argparse.Namespace) -> None:
    """Fails before training, rather than after, when a result could not be written."""
    if args.checkpoint_dir is not None:
        try:
            os.makedirs(args.checkpoint_dir, exist_ok=True)
            with tempfile.TemporaryFile(dir=args.checkpoint_dir):
                pass
        except OSError as error:
            raise UsageError(
                f"--checkpoint-dir {args.checkpoint_dir}: cannot write there ({error.strerror})"
            ) from None
    if args.plot is not None:
        from matplotlib.backend_bases import FigureCanvasBase

        folder = os.path.dirname(os.path.abspath(args.plot))
        suffix = os.path.splitext(args.plot)[1].lstrip(".").lower()
        if suffix not in FigureCanvasBase.get_supported_filetypes():
            raise UsageError(f"--plot {args.plot}: not an image name matplotlib knows (.png...)")
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise UsageError(f"--plot {args.plot}: cannot write in {folder}")


def main(
    argv: Sequence[str] | None,
    train_and_evaluate: Callable[[Config, Dataset], tuple[Any, History]],
    description: str,
) -> History:
    """The command line of both examples; returns the main run's history."""
    parser = build_parser(description)
    args = parser.parse_args(argv)
    config = Config(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        hidden=tuple(args.hidden),
        seed=args.seed,
        data=args.data,
        checkpoint_dir=args.checkpoint_dir,
    )
    start = time.perf_counter()
    try:
        _check_output_paths(args)
        data = load_data(config.data)
        if steps_per_epoch(config, data) == 0:
            raise UsageError(
                f"--batch-size {config.batch_size} is more than the "
                f"{len(data.x_train)} training examples"
            )
        _, history = train_and_evaluate(config, data)
        seconds = time.perf_counter() - start
        histories = {config.optimizer: history}
        if args.compare_optax:
            reference = dataclasses.replace(config, optimizer="optax.adamw", checkpoint_dir=None)
            print(f"compare_optax: the same run with {reference.optimizer}")
            _, histories[reference.optimizer] = train_and_evaluate(reference, data)
            absolute, relative = max_loss_difference(history, histories[reference.optimizer])
            print(
                f"compare_optax: max_abs_loss_diff={absolute:.3e} "
                f"max_rel_loss_diff={relative:.3e} steps={len(history.train_loss)}"
            )
        if args.plot is not None:
            plot_histories(histories, args.plot)
            print(f"plot: {args.plot}")
    except UsageError as error:
        parser.error(str(error))
    except KeyboardInterrupt:
        resume = (
            f"; the same command resumes from {args.checkpoint_dir}" if args.checkpoint_dir else ""
        )
        parser.exit(130, f"{parser.prog}: interrupted{resume}\n")
    print(
        f"test_accuracy={history.test_accuracy[-1]:.4f} loss={history.test_loss[-1]:.4f} "
        f"steps={len(history.train_loss)} seconds={seconds:.1f}"
    )
    return history
