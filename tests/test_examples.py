"""The Flax examples, run small: they learn, the NNX and Linen versions agree, they
match optax.adamw, resume bit-exactly, and reject bad input with a message.

The tests call the examples' own functions (train_and_evaluate, main); none of them
re-implements the training loop.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import common
import flax_linen_mlp
import flax_mlp

TINY = common.Config(epochs=2, batch_size=64, hidden=(32,), learning_rate=1e-2)
TINY_ARGS = ["--epochs", "2", "--hidden", "32", "--learning-rate", "1e-2"]
SUMMARY = re.compile(r"^test_accuracy=0\.\d{4} loss=\d+\.\d{4} steps=\d+ seconds=\d+\.\d$")


def nnx_params(model: flax_mlp.MLP) -> dict:
    """The NNX model's parameters as Linen's MLP names them, copied to NumPy (the
    train steps donate the arrays they are given)."""
    return {
        f"Dense_{i}": {"kernel": np.array(layer.kernel[...]), "bias": np.array(layer.bias[...])}
        for i, layer in enumerate(model.layers)
    }


def linen_params(state: flax_linen_mlp.TrainState) -> dict:
    return jax.tree.map(np.array, state.params)


EXAMPLES = {  # module, and how to read its trained parameters in one layout
    "nnx": (flax_mlp, nnx_params),
    "linen": (flax_linen_mlp, linen_params),
}


@pytest.fixture(scope="module")
def digits() -> common.Dataset:
    return common.load_data()


@pytest.mark.parametrize("api", EXAMPLES)
def test_a_tiny_run_beats_chance(api, digits):
    example, _ = EXAMPLES[api]
    _, history = example.train_and_evaluate(TINY, digits)
    steps = TINY.epochs * (len(digits.x_train) // TINY.batch_size)
    assert len(history.train_loss) == steps
    assert history.epoch_end == [steps // 2, steps]
    assert history.test_accuracy[-1] > 0.5  # chance: 0.1
    assert history.train_loss[-1] < history.train_loss[0]


def test_nnx_and_linen_agree_from_the_same_initial_params(digits):
    initial = nnx_params(flax_mlp.create_model(TINY, digits))
    model, nnx_history = flax_mlp.train_and_evaluate(TINY, digits)
    state, linen_history = flax_linen_mlp.train_and_evaluate(TINY, digits, params=initial)
    np.testing.assert_allclose(nnx_history.train_loss, linen_history.train_loss, rtol=1e-5)
    np.testing.assert_allclose(nnx_history.test_loss, linen_history.test_loss, rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
        nnx_params(model),
        linen_params(state),
    )


class Stopped(Exception):
    """Stands for the run being killed."""


def stop_after(steps, train_step):
    """`train_step`, but the run is stopped instead of taking step `steps` + 1."""
    taken = 0

    def step(*args):
        nonlocal taken
        if taken == steps:
            raise Stopped
        taken += 1
        return train_step(*args)

    return step


@pytest.mark.parametrize("api", EXAMPLES)
def test_a_stopped_and_resumed_run_ends_bit_identical(api, digits, tmp_path, monkeypatch):
    example, params = EXAMPLES[api]
    config = common.Config(epochs=4, batch_size=128, hidden=(32,), learning_rate=1e-2)
    straight, straight_history = example.train_and_evaluate(config, digits)

    resumable = dataclasses.replace(config, checkpoint_dir=str(tmp_path / "ckpt"))
    steps_per_epoch = len(digits.x_train) // config.batch_size
    with monkeypatch.context() as patch:  # killed 3 steps into epoch 3, saved after epoch 2
        patch.setattr(
            example, "train_step", stop_after(2 * steps_per_epoch + 3, example.train_step)
        )
        with pytest.raises(Stopped):
            example.train_and_evaluate(resumable, digits)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["1", "2"]
    resumed, resumed_history = example.train_and_evaluate(resumable, digits)

    assert resumed_history == straight_history
    jax.tree.map(
        lambda a, b: np.testing.assert_array_equal(a, b, strict=True),
        params(resumed),
        params(straight),
    )
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["3", "4"]


def test_resuming_with_other_options_is_refused(tmp_path, capsys):
    checkpoint = ["--checkpoint-dir", str(tmp_path)]
    flax_mlp.main([*TINY_ARGS, "--epochs", "1", *checkpoint])
    with pytest.raises(SystemExit) as exited:
        flax_mlp.main([*TINY_ARGS, *checkpoint])
    assert exited.value.code == 2
    assert "holds a run with other options (epochs=1, now 2)" in capsys.readouterr().err


def test_compare_optax_matches_and_plots(tmp_path, capsys):
    plot = tmp_path / "curves.png"
    history = flax_mlp.main([*TINY_ARGS, "--compare-optax", "--plot", str(plot)])
    lines = capsys.readouterr().out.splitlines()
    compared = next(line for line in lines if line.startswith("compare_optax: max_abs"))
    relative = float(re.search(r"max_rel_loss_diff=(\S+)", compared).group(1))
    assert relative < 1e-5
    assert f"steps={len(history.train_loss)}" in compared
    assert SUMMARY.match(lines[-1]), lines[-1]
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_a_keras_layout_npz_trains(digits, tmp_path, capsys):
    """MNIST's layout: (N, height, width) uint8 images, (N,) uint8 labels."""
    path = tmp_path / "digits.npz"
    as_images = {  # back to the 8x8 images of 0..16 that scikit-learn ships
        name: np.rint(x * 16).astype(np.uint8).reshape(-1, 8, 8)
        for name, x in (("x_train", digits.x_train), ("x_test", digits.x_test))
    }
    labels = {"y_train": digits.y_train.astype(np.uint8), "y_test": digits.y_test.astype(np.uint8)}
    np.savez(path, **as_images, **labels)
    history = flax_linen_mlp.main([*TINY_ARGS, "--data", str(path)])
    assert history.test_accuracy[-1] > 0.5
    assert SUMMARY.match(capsys.readouterr().out.splitlines()[-1])


# Bad input: (id, command line, message on stderr). In the command line, {tmp} is a
# temporary directory holding the .npz files of BAD_NPZ and a regular file "file".
_X = np.zeros((20, 4, 4), np.uint8)
_X[:, 0, 0] = np.arange(20)
_Y = np.arange(20, dtype=np.int64) % 3
BAD_NPZ = {
    "missing_keys": {"x_train": _X, "y_train": _Y},
    "labels_not_1d": {"x_train": _X, "y_train": np.eye(3)[_Y], "x_test": _X, "y_test": _Y},
    "shapes_differ": {"x_train": _X, "y_train": _Y, "x_test": _X[:, :3], "y_test": _Y},
    "lengths_differ": {"x_train": _X, "y_train": _Y[:15], "x_test": _X, "y_test": _Y},
    "negative_label": {"x_train": _X, "y_train": _Y - 1, "x_test": _X, "y_test": _Y},
    "unseen_label": {"x_train": _X, "y_train": _Y, "x_test": _X, "y_test": _Y + 3},
    "float_labels": {"x_train": _X, "y_train": _Y + 0.5, "x_test": _X, "y_test": _Y},
    "no_images": {"x_train": _X[:, 0, 0], "y_train": _Y, "x_test": _X, "y_test": _Y},
}
BAD_INPUTS = [
    ("no_file", ["--data", "{tmp}/absent.npz"], r"absent\.npz: no such file"),
    ("not_npz", ["--data", "{tmp}/file"], r"file: not a \.npz archive"),
    ("missing_keys", ["--data", "{tmp}/missing_keys.npz"], r"no x_test, y_test in it"),
    ("labels_not_1d", ["--data", "{tmp}/labels_not_1d.npz"], r"y_train must be labels of shape"),
    ("shapes_differ", ["--data", "{tmp}/shapes_differ.npz"], r"x_test's have shape \(3, 4\)"),
    ("lengths_differ", ["--data", "{tmp}/lengths_differ.npz"], r"20 images in x_train, 15 labe"),
    ("negative_label", ["--data", "{tmp}/negative_label.npz"], r"y_train has label -1"),
    ("unseen_label", ["--data", "{tmp}/unseen_label.npz"], r"y_test has label 5, outside"),
    ("float_labels", ["--data", "{tmp}/float_labels.npz"], r"y_train must hold integer class"),
    ("no_images", ["--data", "{tmp}/no_images.npz"], r"x_train must be images of shape"),
    ("zero_lr", ["--learning-rate", "0"], r"--learning-rate: must be a positive number, got 0"),
    ("negative_lr", ["--learning-rate", "-0.001"], r"--learning-rate: must be a positive"),
    ("nan_lr", ["--learning-rate", "nan"], r"--learning-rate: must be a finite number"),
    ("zero_epochs", ["--epochs", "0"], r"--epochs: must be a positive integer, got 0"),
    ("negative_batch", ["--batch-size", "-8"], r"--batch-size: must be a positive integer"),
    ("batch_too_big", ["--batch-size", "100000"], r"--batch-size 100000 is more than the 1437"),
    ("zero_width", ["--hidden", "256", "0"], r"--hidden: must be a positive integer, got 0"),
    ("negative_decay", ["--weight-decay", "-1"], r"--weight-decay: must be 0 or more"),
    ("unwritable_ckpt", ["--checkpoint-dir", "{tmp}/file/ckpt"], r"file/ckpt: cannot write"),
    ("unwritable_plot", ["--plot", "{tmp}/absent/p.png"], r"absent/p\.png: cannot write in"),
]


@pytest.mark.parametrize(
    ("argv", "message"), [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_input_exits_with_a_message(argv, message, tmp_path, capsys):
    (tmp_path / "file").write_text("not an archive")
    for name, arrays in BAD_NPZ.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
    with pytest.raises(SystemExit) as exited:
        flax_mlp.main([arg.format(tmp=tmp_path) for arg in argv])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert re.search(r"error: .*" + message, err), err
    assert "Traceback" not in err


def test_every_bad_npz_has_a_case():
    assert set(BAD_NPZ) <= {case[0] for case in BAD_INPUTS}


def test_the_train_steps_donate_their_state(digits):
    x, y = digits.x_train[:64], digits.y_train[:64]
    model = flax_mlp.create_model(TINY, digits)
    optimizer = nnx.Optimizer(model, common.make_optimizer(TINY, digits), wrt=nnx.Param)
    nnx_before = jax.tree.leaves(nnx.state((model, optimizer)))
    flax_mlp.train_step(model, optimizer, x, y)
    state = flax_linen_mlp.create_train_state(TINY, digits)
    linen_before = [leaf for leaf in jax.tree.leaves(state) if isinstance(leaf, jax.Array)]
    flax_linen_mlp.train_step(state, x, y)
    assert all(array.is_deleted() for array in nnx_before + linen_before)
