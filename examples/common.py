"""What flax_mlp.py and flax_linen_mlp.py share, none of it about Flax or adam_optax."""

import argparse
import atexit
import contextlib
import dataclasses
import math
import os
import re
import signal
import sys
import threading
import zipfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

_ctrl_c_pressed = threading.Event()  # set by Ctrl-C within `exit_cleanly`, read by `batches`


PLOT_FORMATS = (".png", ".pdf", ".svg")  # what --plot may write
STATE_FORMATS = ("float32", "bfloat16", "8bit")  # --state: how AdamW stores mu and nu


class UsageError(Exception):
    """Bad input the user can fix: `exit_cleanly` prints it as one line and exits with 2."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise UsageError(message)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Flattened images scaled to [0, 1] (float32) and labels 0..num_classes-1 (int32)."""

    x_train: np.ndarray  # (n_train, num_features)
    y_train: np.ndarray  # (n_train,)
    x_test: np.ndarray  # (n_test, num_features)
    y_test: np.ndarray  # (n_test,)
    num_features: int  # pixels per image
    num_classes: int


def load_data(path: str | None = None) -> Dataset:
    """`path`: a `.npz` with x_train, y_train, x_test, y_test, as MNIST's; by default scikit-
    learn's 1,797 8x8 digits, 360 held out. Checks them, flattens and scales images to [0, 1]."""
    if path is None:
        from sklearn.datasets import load_digits  # a slow import: only when used

        x, y = load_digits(return_X_y=True)
        test, train = np.split(np.random.default_rng(0).permutation(len(x)), [360])
        x_train, y_train, x_test, y_test, where = x[train], y[train], x[test], y[test], "digits"
    else:
        where, keys = f"--data {path}", ("x_train", "y_train", "x_test", "y_test")
        _require(os.path.isfile(path), f"{where}: no such file")
        _require(zipfile.is_zipfile(path), f"{where}: not a .npz archive (as np.savez writes)")
        try:
            with np.load(path, allow_pickle=False) as npz:
                missing = ", ".join(key for key in keys if key not in npz.files)
                _require(not missing, f"{where}: no {missing} in it; it needs {keys}")
                x_train, y_train, x_test, y_test = (npz[key] for key in keys)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise UsageError(f"{where}: cannot read it ({error})") from None
    for part, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        ok = x.ndim > 1 and len(x) and x.dtype.kind in "iuf" and x.shape[1:] == x_train.shape[1:]
        _require(ok and np.isfinite(x).all(), f"{where}: x_{part} {x.shape}: not N finite images")
        _require(y.shape == x.shape[:1], f"{where}: {x.shape[0]} images in x_{part}, {y.shape=}")
        labels = y.dtype.kind in "iuf" and (y == np.round(y)).all() and y.min() >= 0
        _require(labels, f"{where}: y_{part} must hold class labels 0, 1, 2, ...")
    num_classes = int(y_train.max()) + 1
    _require(y_test.max() < num_classes, f"{where}: y_test's label {y_test.max()} not in y_train")
    low, span = x_train.min(), np.ptp(x_train) or 1
    x_train, x_test = ((x.reshape(len(x), -1) - low) / span for x in (x_train, x_test))
    x_train, x_test = x_train.astype(np.float32), np.clip(x_test, 0, 1).astype(np.float32)
    y_train, y_test = y_train.astype(np.int32), y_test.astype(np.int32)
    return Dataset(x_train, y_train, x_test, y_test, x_train.shape[1], num_classes)


FLOAT32_MAX = float(np.finfo(np.float32).max)  # the step computes in float32


def number(
    cast: Callable[[str], Any], allowed: str, ok: Callable[[Any], bool], float32: bool = True
) -> Any:
    """An argparse `type=`: `cast(text)`, a finite number that `ok` accepts, else one line
    saying `allowed`. With `float32`, a float beyond float32's range is refused too: the
    optimizer computes in float32 (and refuses it). A `ValueError` or `OverflowError` of
    `cast` or of the check is refused as not `allowed`: left to argparse, the first gave
    "invalid read value" and the second a traceback."""

    def read(text: str) -> Any:
        try:
            value = cast(text)
            good = math.isfinite(value) and ok(value)
        except (ValueError, OverflowError):
            good = False
        if not good:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text}")
        if float32 and isinstance(value, float) and abs(value) > FLOAT32_MAX:
            raise argparse.ArgumentTypeError(
                f"must be finite in float32, at most {FLOAT32_MAX:.4g} in magnitude, got {text}"
            )
        return value

    return read


# Integer options: sizes and counts below 2**31 (array dimensions are int32 in places),
# and a seed in the range the optimizer's stochastic rounding takes.
positive_int = number(int, "a positive integer below 2**31", lambda v: 0 < v < 2**31)
seed = number(int, "an integer in [0, 2**32)", lambda v: 0 <= v < 2**32)


def writable(path: str) -> str:
    """An argparse `type=`: a folder it can write in (made if missing), checked now rather
    than after training."""
    with contextlib.suppress(OSError):
        os.makedirs(path or ".", exist_ok=True)
    if not (os.path.isdir(path or ".") and os.access(path or ".", os.W_OK)):
        raise argparse.ArgumentTypeError(f"cannot write in {path}")
    return path


def parse_args(argv: Sequence[str] | None, description: str) -> argparse.Namespace:
    """The command line of both examples (a run's config). A bad value ends it with one line
    and exit code 2 (argparse's own `error` prints its usage block first)."""

    def plot_file(path: str) -> str:  # an argparse `type=`: an image file it can write now
        folder, name = os.path.split(path)
        stem, suffix = os.path.splitext(name)
        if not stem or suffix.lower() not in PLOT_FORMATS:
            raise argparse.ArgumentTypeError(
                f"must name a {'/'.join(PLOT_FORMATS)} file, got {path}"
            )
        writable(folder)
        existed = os.path.exists(path)
        try:
            open(path, "ab").close()  # what savefig will do after training, tried first
        except OSError as error:
            raise argparse.ArgumentTypeError(f"cannot write {path} ({error.strerror})") from None
        if not existed:
            os.remove(path)
        return path

    options = (  # option, argparse type, default, help
        ("--data", str, None, "a .npz with x_train, y_train, x_test, y_test, not the digits"),
        ("--epochs", positive_int, 20, "passes over the training set"),
        ("--batch-size", positive_int, 64, "examples per step; the last partial batch is dropped"),
        ("--learning-rate", number(float, "a number > 0", lambda v: v > 0), 2e-3, "at the peak"),
        ("--weight-decay", number(float, "a number >= 0", lambda v: v >= 0), 1e-4, "AdamW's"),
        ("--hidden", positive_int, [256, 256], "widths of the hidden ReLU layers"),
        ("--seed", seed, 0, "seeds the initial parameters and each epoch's shuffle"),
        ("--checkpoint-dir", writable, None, "save after every epoch; resume from the latest"),
        ("--plot", plot_file, None, "save the curves to this .png (or .pdf, .svg)"),
    )
    parser = argparse.ArgumentParser(description=description)
    parser.error = lambda message: parser.exit(2, f"{parser.prog}: error: {message}\n")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # keeps the docstring's lines
    for option, kind, default, text in options:
        nargs = "+" if option == "--hidden" else None
        text += " (default: %(default)s)"
        parser.add_argument(option, type=kind, default=default, nargs=nargs, help=text)
    parser.add_argument(
        "--state",
        choices=STATE_FORMATS,
        default="float32",
        help="how AdamW stores its moments: float32 (8 bytes per parameter), bfloat16 "
        "rounded stochastically (4), or 8bit, blockwise quantized (about 2, on leaves of 4096 "
        "elements or more) (default: %(default)s)",
    )
    parser.add_argument("--compare-optax", action="store_true", help="train again with optax.adamw")
    args = negative_values_joined(sys.argv[1:] if argv is None else argv)
    return parser.parse_args(args, argparse.Namespace(optimizer="adam_optax.adamw"))


def negative_values_joined(argv: Sequence[str]) -> list[str]:
    """`argv` with "--learning-rate -1e-3" as "--learning-rate=-1e-3": argparse reads "-1e-3"
    as an option, and then says the option before it expected a value, not that it is
    negative."""
    args = list(argv)
    for i in reversed(range(1, len(args))):
        if re.fullmatch(r"--[\w-]+", args[i - 1]) and re.match(r"-\.?\d|-inf|-nan", args[i]):
            args[i - 1 : i + 1] = [f"{args[i - 1]}={args[i]}"]
    return args


def steps_per_epoch(config: argparse.Namespace, data: Dataset) -> int:
    """Full batches: the last, partial one is dropped, so one compiled step serves all."""
    n = len(data.x_train)
    _require(config.batch_size <= n, f"--batch-size {config.batch_size}: over the {n} examples")
    return n // config.batch_size


def batches(config: argparse.Namespace, data: Dataset, epoch: int) -> Iterator[tuple]:
    """Full batches shuffled by (seed, epoch) alone, as a resumed run needs, and a progress
    bar on a terminal. After Ctrl-C, raises KeyboardInterrupt here, between two steps."""
    order = np.random.default_rng([config.seed, epoch]).permutation(len(data.x_train))
    steps = range(steps_per_epoch(config, data))
    for step in tqdm(steps, f"epoch {epoch + 1}", leave=False, disable=None):
        if _ctrl_c_pressed.is_set():
            raise KeyboardInterrupt
        batch = order[step * config.batch_size : (step + 1) * config.batch_size]
        yield data.x_train[batch], data.y_train[batch]


def state_bytes_per_param(tx: Any, params: Any) -> float:
    """The bytes of `tx`'s state (all its leaves) per parameter, from shapes alone."""
    state = jax.eval_shape(tx.init, params)
    state_bytes = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(state))
    return state_bytes / sum(leaf.size for leaf in jax.tree.leaves(params))


@dataclasses.dataclass
class History:
    """Training loss and accuracy per step, test loss and accuracy per epoch."""

    train_loss: list[float] = dataclasses.field(default_factory=list)
    train_accuracy: list[float] = dataclasses.field(default_factory=list)
    epoch_end: list[int] = dataclasses.field(default_factory=list)  # steps after each epoch
    test_loss: list[float] = dataclasses.field(default_factory=list)
    test_accuracy: list[float] = dataclasses.field(default_factory=list)
    state_bytes_per_param: float | None = None  # the optimizer state's (see --state)

    def log_step(self, loss: Any, accuracy: Any) -> None:
        self.train_loss.append(float(loss))
        self.train_accuracy.append(float(accuracy))

    def log_epoch(self, test_loss: Any, test_accuracy: Any) -> None:
        """Records the test metrics and prints them with the epoch's mean training loss."""
        train_loss = np.mean(self.train_loss[self.epoch_end[-1] if self.epoch_end else 0 :])
        self.epoch_end.append(len(self.train_loss))
        self.test_loss.append(test_loss := float(test_loss))
        self.test_accuracy.append(test_accuracy := float(test_accuracy))
        print(
            f"epoch {len(self.test_loss)}: {train_loss=:.4f} {test_loss=:.4f} {test_accuracy=:.4f}"
        )


class Checkpoints:
    """With --checkpoint-dir, saves arrays and history; orbax writes a save whole or not."""

    def __init__(self, config: argparse.Namespace):
        self.dir, run_only = config.checkpoint_dir, ("checkpoint_dir", "plot", "compare_optax")
        self.options = {k: v for k, v in vars(config).items() if k not in run_only}
        if self.dir is not None:
            import orbax.checkpoint as ocp  # a slow import: only when used

            sync = ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False)
            self.manager = ocp.CheckpointManager(os.path.abspath(self.dir), options=sync)
            self.args = ocp.args

    def restore(self, state: Any) -> tuple[Any, History]:
        """The latest save restored into `state`'s structure, and its history, if any."""
        if self.dir is None or (epoch := self.manager.latest_step()) is None:
            return state, History()
        a, where, now = self.args, f"--checkpoint-dir {self.dir}", self.options
        save = os.path.join(self.dir, str(epoch))  # orbax writes a save whole, so a part
        missing = [part for part in ("run", "state") if not os.path.isdir(f"{save}/{part}")]
        _require(  # missing is another program's save, or one damaged since
            not missing,
            f"{where}: the save of epoch {epoch} has no {' or '.join(missing)}; not a save of "
            f"this example, or a damaged one: remove {save} to resume from the one before",
        )
        saved = self.manager.restore(epoch, args=a.Composite(run=a.JsonRestore())).run
        changed = [f"{k}={v!r}, now {now[k]!r}" for k, v in saved["options"].items() if v != now[k]]
        _require(not changed, f"{where} holds a run with other options ({'; '.join(changed)})")
        # The same options give the same structure, so an error from here on is a bug: it
        # surfaces whole, with its traceback.
        host = jax.device_get(state)  # NumPy: the first step places them, as it does fresh ones
        state = self.manager.restore(epoch, args=a.Composite(state=a.StandardRestore(host)))
        tqdm.write(f"resumed from {where} after epoch {epoch}")
        return state.state, History(**saved["history"])

    def save(self, state: Any, history: History) -> None:
        if self.dir is not None:
            run = self.args.JsonSave({"options": self.options, "history": vars(history)})
            both = self.args.Composite(state=self.args.StandardSave(state), run=run)
            self.manager.save(len(history.epoch_end), args=both)


@contextlib.contextmanager
def exit_cleanly(config: argparse.Namespace) -> Iterator[None]:
    """Ends bad input and Ctrl-C with one line and exit code 2 or 130. Ctrl-C only sets a
    flag, which `batches` checks: raised inside XLA's compiler or a save, it can crash it."""
    prog = os.path.basename(sys.argv[0])
    previous = signal.signal(signal.SIGINT, lambda signum, frame: _ctrl_c_pressed.set())
    try:
        yield
    except UsageError as error:
        sys.stderr.write(f"{prog}: error: {error}\n")
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        again = f"resumes from {config.checkpoint_dir}" if config.checkpoint_dir else "starts over"
        sys.stderr.write(f"{prog}: interrupted; the same command {again}\n")
        atexit.register(signal.signal, signal.SIGINT, signal.SIG_IGN)  # again: no traceback
        raise SystemExit(130) from None
    finally:
        signal.signal(signal.SIGINT, previous)
        _ctrl_c_pressed.clear()


def compare(history: History, reference: History) -> str:
    """The largest difference between two runs' per-step training losses."""
    loss, reference_loss = np.asarray(history.train_loss), np.asarray(reference.train_loss)
    difference, relative = np.abs(loss - reference_loss), np.abs(loss / reference_loss - 1)
    return f"max_abs_loss_diff={difference.max():.3e} max_rel_loss_diff={relative.max():.3e}"


def plot(histories: dict[str, History], path: str) -> None:
    """Saves loss and accuracy per step (training) and per epoch (test), a style per run."""
    import matplotlib.pyplot as plt  # a slow import: only when used

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="tight")
    for (name, h), style in zip(histories.items(), ("-", "--"), strict=False):
        for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
            train, test = getattr(h, f"train_{metric}"), getattr(h, f"test_{metric}")
            ax.plot(range(1, len(train) + 1), train, style, alpha=0.3, label=f"{name} train")
            ax.plot(h.epoch_end, test, style, marker="o", label=f"{name} test")
            ax.set(title=metric, xlabel="step", yscale="log" if metric == "loss" else "linear")
            ax.legend(fontsize="small")
    figure.savefig(path, dpi=120)
