"""The Flax examples, run small: they learn, the NNX and Linen versions agree, they match
optax.adamw, resume bit-exactly after Ctrl-C, and reject bad input with one line.

The tests call the examples' own functions (train_and_evaluate, train_step, main); none
re-implements the training loop. Each tiny run compiles its own train step, so the runs
are shared: one per example (the fixtures), reused by every test that can.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from subprocess import PIPE

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES_DIR))

import common  # noqa: E402
import flax_linen_mlp  # noqa: E402
import flax_mlp  # noqa: E402

TINY_ARGS = ["--epochs", "2", "--hidden", "32", "--learning-rate", "1e-2"]
TINY = common.parse_args(TINY_ARGS, "")
SUMMARY = re.compile(
    r"^test_accuracy=0\.\d{4} state=(float32|bfloat16|8bit) state_bytes_per_param=\d+\.\d\d "
    r"loss=\d+\.\d{4} steps=\d+ seconds=\d+\.\d$"
)


def nnx_params(model: flax_mlp.MLP) -> dict:
    """The NNX model's parameters as Linen's MLP names them, copied to NumPy (the train
    steps donate the arrays they are given)."""
    return {
        f"Dense_{i}": {"kernel": np.array(layer.kernel[...]), "bias": np.array(layer.bias[...])}
        for i, layer in enumerate(model.layers)
    }


def linen_params(state: flax_linen_mlp.TrainState) -> dict:
    return jax.tree.map(np.array, state.params)


EXAMPLES = {"nnx": (flax_mlp, nnx_params), "linen": (flax_linen_mlp, linen_params)}


@pytest.fixture(scope="module", autouse=True)
def compile_once():
    """Gives the runs with the same options the same optimizer and Linen module: jit's cache
    keys hold both (the train state's static fields), so each step compiles once, not once
    per run."""
    with pytest.MonkeyPatch.context() as patch:
        for example in (flax_mlp, flax_linen_mlp):
            patch.setattr(example, "create_optimizer", one_per(example.create_optimizer))
        patch.setattr(flax_linen_mlp, "MLP", one_per(flax_linen_mlp.MLP))
        yield


def one_per(make):
    """`make`, called once per value of its arguments (an options Namespace counts by the
    options create_optimizer reads)."""
    made = {}

    def key(arg):
        if isinstance(arg, argparse.Namespace):
            return (arg.learning_rate, arg.weight_decay, arg.optimizer, arg.state)
        return tuple(arg) if isinstance(arg, list) else arg

    def cached(*args):
        keys = tuple(map(key, args))
        if keys not in made:
            made[keys] = make(*args)
        return made[keys]

    return cached


@pytest.fixture(scope="module")
def digits() -> common.Dataset:
    return common.load_data()


def start(api: str) -> dict:
    """Keyword arguments of train_and_evaluate: Linen starts from NNX's initial parameters,
    as fresh arrays at each call (a run donates the arrays it is given)."""
    if api == "nnx":
        return {}
    params = nnx_params(flax_mlp.MLP([64, 32, 10], rngs=nnx.Rngs(TINY.seed)))
    return {"params": jax.tree.map(jnp.asarray, params)}


@pytest.fixture(scope="module")
def runs(digits) -> dict:
    """One tiny run per example, from the same initial parameters: api -> (params, history),
    and "donated" -> api -> the arrays that the example's first train_step was given."""
    donated = {}

    def recording(api, train_step, arrays_of):
        def step(*args):
            if api not in donated:
                leaves = jax.tree.leaves(arrays_of(*args))
                donated[api] = [leaf for leaf in leaves if isinstance(leaf, jax.Array)]
            return train_step(*args)

        return step

    trained = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            flax_mlp,
            "train_step",
            recording("nnx", flax_mlp.train_step, lambda m, o, x, y: nnx.state((m, o))),
        )
        model, trained["nnx"] = flax_mlp.train_and_evaluate(TINY, digits, **start("nnx"))
        patch.setattr(
            flax_linen_mlp,
            "train_step",
            recording("linen", flax_linen_mlp.train_step, lambda s, x, y: s),
        )
        state, trained["linen"] = flax_linen_mlp.train_and_evaluate(TINY, digits, **start("linen"))
    return {
        "nnx": (nnx_params(model), trained["nnx"]),
        "linen": (linen_params(state), trained["linen"]),
        "donated": donated,
    }


@pytest.mark.parametrize("api", EXAMPLES)
def test_a_tiny_run_beats_chance(api, runs, digits):
    _, history = runs[api]
    steps = TINY.epochs * (len(digits.x_train) // TINY.batch_size)
    assert len(history.train_loss) == len(history.train_accuracy) == steps
    assert history.epoch_end == [steps // 2, steps]
    assert history.test_accuracy[-1] > 0.5  # chance: 0.1
    assert np.mean(history.train_loss[-5:]) < 0.5 * np.mean(history.train_loss[:5])


def test_nnx_and_linen_agree_from_the_same_initial_params(runs):
    (nnx_trained, nnx_history), (linen_trained, linen_history) = runs["nnx"], runs["linen"]
    np.testing.assert_allclose(nnx_history.train_loss, linen_history.train_loss, rtol=1e-5)
    np.testing.assert_allclose(nnx_history.test_loss, linen_history.test_loss, rtol=1e-5)
    chex.assert_trees_all_close(nnx_trained, linen_trained, rtol=1e-4, atol=1e-6)


def ctrl_c_after(calls: int, function):
    """`function`, but Ctrl-C is pressed (a real SIGINT) as call number `calls` starts."""
    made = 0

    def wrapped(*args, **kwargs):
        nonlocal made
        made += 1
        if made == calls:
            os.kill(os.getpid(), signal.SIGINT)
        return function(*args, **kwargs)

    return wrapped


# nnx: Ctrl-C as the checkpoint of epoch 1 is being saved; linen: 3 steps into epoch 2.
CTRL_C = {"nnx": ("Checkpoints", "save", 1), "linen": ("train_step", None, 22 + 3)}


@pytest.mark.parametrize("api", EXAMPLES)
def test_ctrl_c_then_the_same_command_resumes_bit_identical(
    api, runs, digits, tmp_path, monkeypatch, capsys
):
    example, params = EXAMPLES[api]
    config = common.parse_args([*TINY_ARGS, "--checkpoint-dir", str(tmp_path)], "")
    name, method, calls = CTRL_C[api]
    with monkeypatch.context() as patch:
        if method is None:
            patch.setattr(example, name, ctrl_c_after(calls, getattr(example, name)))
        else:
            owner = getattr(common, name)
            patch.setattr(owner, method, ctrl_c_after(calls, getattr(owner, method)))
        with pytest.raises(SystemExit) as exited, common.exit_cleanly(config):
            example.train_and_evaluate(config, digits, **start(api))
    assert exited.value.code == 130
    assert capsys.readouterr().err.endswith(
        f": interrupted; the same command resumes from {tmp_path}\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]  # saved whole, then stopped

    trained, history = example.train_and_evaluate(config, digits, **start(api))
    straight_params, straight_history = runs[api]
    assert history == straight_history
    chex.assert_trees_all_equal(params(trained), straight_params, strict=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2"]
    other = common.parse_args([*TINY_ARGS, "--epochs", "3", "--checkpoint-dir", str(tmp_path)], "")
    with pytest.raises(common.UsageError, match=r"other options \(epochs=2, now 3\)"):
        example.train_and_evaluate(other, digits, **start(api))


def test_ctrl_c_while_the_first_step_compiles_exits_130_with_one_line(tmp_path):
    """As a user runs it: Ctrl-C from the moment training starts, every 0.1 s until the
    script ends. Before Ctrl-C was deferred to between steps, one landing in XLA's compiler
    crashed the process (SIGSEGV) and one in its shutdown printed a traceback."""
    data = tmp_path / "small.npz"  # quicker to load than scikit-learn's digits
    x = np.arange(64 * 16).reshape(64, 16) % 7
    np.savez(data, x_train=x, y_train=np.arange(64) % 3, x_test=x, y_test=np.arange(64) % 3)
    script = EXAMPLES_DIR / "flax_mlp.py"
    command = [
        sys.executable,
        str(script),
        "--data",
        str(data),
        "--batch-size",
        "8",
        "--hidden",
        "16",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}  # no JAX logs
    env["PYTHONUNBUFFERED"] = "1"
    with subprocess.Popen(command, stdout=PIPE, stderr=PIPE, text=True, env=env) as process:
        try:
            header = process.stdout.readline()  # printed just before the first step
            for _ in range(600):
                process.send_signal(signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=0.1)
                    break
            out, err = process.communicate(timeout=10)
        finally:
            process.kill()
    assert header.startswith("adam_optax.adamw: 20 epochs of 8 steps"), header + err
    assert (process.returncode, err) == (
        130,
        "flax_mlp.py: interrupted; the same command starts over\n",
    )
    assert "epoch 1:" not in out


def test_compare_optax_matches_and_plots(runs, tmp_path, capsys):
    plot = tmp_path / "curves.png"
    histories = flax_mlp.main([*TINY_ARGS, "--compare-optax", "--plot", str(plot)])
    ours, reference = histories["adam_optax.adamw"], histories["optax.adamw"]
    assert ours == runs["nnx"][1]  # the command line trains what train_and_evaluate does
    np.testing.assert_allclose(ours.train_loss, reference.train_loss, rtol=1e-5)
    np.testing.assert_allclose(ours.test_loss, reference.test_loss, rtol=1e-5)
    lines = capsys.readouterr().out.splitlines()
    assert any(
        re.match(r"compare_optax: max_abs_loss_diff=\S+ max_rel_loss_diff=", x) for x in lines
    )
    assert SUMMARY.match(lines[-1]), lines[-1]
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_a_keras_layout_npz_loads_as_the_digits(digits, tmp_path):
    """MNIST's layout: (N, height, width) uint8 images, (N,) uint8 labels."""
    as_images = {  # back to the 8x8 images of 0..16 that scikit-learn ships
        name: np.rint(x * 16).astype(np.uint8).reshape(-1, 8, 8)
        for name, x in (("x_train", digits.x_train), ("x_test", digits.x_test))
    }
    labels = {"y_train": digits.y_train.astype(np.uint8), "y_test": digits.y_test.astype(np.uint8)}
    np.savez(tmp_path / "digits.npz", **as_images, **labels)
    loaded = common.load_data(str(tmp_path / "digits.npz"))
    for name in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(digits, name), strict=True)
    assert (loaded.num_features, loaded.num_classes) == (digits.num_features, 10) == (64, 10)


# Bad input: (id, command line, message). In the command line, {tmp} is a temporary folder
# holding the .npz files of BAD_NPZ and a regular file "file".
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
    "nan_images": {"x_train": _X, "y_train": _Y, "x_test": _X + np.nan, "y_test": _Y},
}
BAD_INPUTS = [
    ("no_file", ["--data", "{tmp}/absent.npz"], r"--data \S+/absent\.npz: no such file"),
    ("not_npz", ["--data", "{tmp}/file"], r"file: not a \.npz archive"),
    ("missing_keys", ["--data", "{tmp}/missing_keys.npz"], r"no x_test, y_test in it"),
    ("labels_not_1d", ["--data", "{tmp}/labels_not_1d.npz"], r"20 images in x_train, y\.sha"),
    ("shapes_differ", ["--data", "{tmp}/shapes_differ.npz"], r"x_test \(20, 3, 4\): not N fin"),
    ("lengths_differ", ["--data", "{tmp}/lengths_differ.npz"], r"y.shape=\(15,\)"),
    ("negative_label", ["--data", "{tmp}/negative_label.npz"], r"y_train must hold class lab"),
    ("unseen_label", ["--data", "{tmp}/unseen_label.npz"], r"y_test's label 5 not in y_train"),
    ("float_labels", ["--data", "{tmp}/float_labels.npz"], r"y_train must hold class labels"),
    ("no_images", ["--data", "{tmp}/no_images.npz"], r"x_train \(20,\): not N finite images"),
    ("nan_images", ["--data", "{tmp}/nan_images.npz"], r"x_test \(20, 4, 4\): not N finite"),
    ("zero_lr", ["--learning-rate", "0"], r"--learning-rate: must be a number > 0, got 0"),
    ("negative_lr", ["--learning-rate", "-1e-3"], r"--learning-rate: must be a number > 0, got -1"),
    ("negative_lr=", ["--learning-rate=-1e-3"], r"--learning-rate: must be a number > 0, got -1"),
    ("nan_lr", ["--learning-rate", "nan"], r"--learning-rate: must be a number > 0, got"),
    (
        "text_lr",
        ["--learning-rate", "fast"],
        r"--learning-rate: must be a number > 0, got",
    ),
    (
        "zero_epochs",
        ["--epochs", "0"],
        r"--epochs: must be a positive integer below 2\*\*31, got 0",
    ),
    ("negative_batch", ["--batch-size", "-8"], r"--batch-size: must be a positive integer"),
    ("batch_too_big", ["--batch-size", "100000"], r"--batch-size 100000: over the 1437 exam"),
    ("zero_width", ["--hidden", "256", "0"], r"--hidden: must be a positive integer below 2"),
    ("negative_width", ["--hidden", "-5"], r"--hidden: must be a positive .*, got -5"),
    ("negative_decay", ["--weight-decay", "-1"], r"--weight-decay: must be a number >= 0"),
    ("unwritable_ckpt", ["--checkpoint-dir", "{tmp}/file/ckpt"], r"cannot write in \S+file/c"),
    ("unwritable_plot", ["--plot", "{tmp}/file/p.png"], r"--plot: cannot write in \S+/file$"),
    ("unknown_option", ["--learning_rate", "1e-3"], r"unrecognized arguments: --learning_r"),
    ("negative_seed", ["--seed", "-1"], r"--seed: must be an integer in \[0, 2\*\*32\), got -1$"),
    # Out of range: a seed the optimizer's stochastic rounding refuses, one past int64
    # (once argparse's "invalid read value"), sizes past int32, a float past float32.
    ("seed_2_32", ["--seed", "4294967296"], r"--seed: must be an integer in \[0, 2\*\*32\)"),
    ("seed_huge", ["--seed", "1" + "0" * 30], r"--seed: must be an integer in .*, got 10+$"),
    ("epochs_huge", ["--epochs", "9" * 400], r"--epochs: must be a positive integer below 2\*\*31"),
    ("width_2_31", ["--hidden", "2147483648"], r"--hidden: must be a positive integer below"),
    ("lr_1e300", ["--learning-rate", "1e300"], r"--learning-rate: must be finite in float32"),
    ("decay_1e39", ["--weight-decay", "1e39"], r"--weight-decay: must be finite in float32, at"),
    ("plot_a_folder", ["--plot", "{tmp}/"], r"--plot: must name a \.png/\.pdf/\.svg file, got"),
    ("plot_no_name", ["--plot", "{tmp}/.png"], r"--plot: must name a \.png/\.pdf/\.svg file"),
    ("plot_as_text", ["--plot", "{tmp}/out.txt"], r"--plot: must name a \.png/\.pdf/\.svg fil"),
    ("plot_in_proc", ["--plot", "/proc/x.png"], r"--plot: cannot write /proc/x\.png \(\w"),
    ("plot_on_a_dir", ["--plot", "{tmp}/dir.png/"], r"--plot: must name a \.png/\.pdf/\.svg"),
    ("unknown_state", ["--state", "int4"], r"argument --state: invalid choice: 'int4'"),
]


@pytest.mark.parametrize(
    ("argv", "message"), [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_input_exits_2_with_one_line(argv, message, tmp_path, capsys):
    (tmp_path / "file").write_text("not an archive")
    for name, arrays in BAD_NPZ.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
    with pytest.raises(SystemExit) as exited:
        flax_mlp.main([arg.format(tmp=tmp_path) for arg in argv])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert re.search(r"^\S+: error: .*" + message, err, re.MULTILINE), err


def test_every_bad_npz_has_a_case():
    assert set(BAD_NPZ) <= {case[0] for case in BAD_INPUTS}


def test_the_train_steps_donate_their_state(runs):
    # 2 layers' kernels and biases, their mu and nu, AdamW's and its schedule's step counts,
    # and NNX's step count (Linen's starts as the Python int 0): all donated, none copied.
    for api, arrays in (("nnx", 4 + 2 * 4 + 2 + 1), ("linen", 4 + 2 * 4 + 2)):
        assert len(runs["donated"][api]) == arrays, api
        assert all(array.is_deleted() for array in runs["donated"][api]), api


def test_a_plot_in_the_current_folder_keeps_its_name(tmp_path, monkeypatch):
    """`--plot curves.png` once saved `./.png`: its empty folder made the check return ""."""
    monkeypatch.chdir(tmp_path)
    assert common.parse_args(["--plot", "curves.png"], "").plot == "curves.png"
    assert common.parse_args(["--plot", "sub/c.svg"], "").plot == "sub/c.svg"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]  # tried, and left no file


def test_bad_input_fails_before_the_data_loads(monkeypatch, capsys):
    """Every option is checked up front: a bad one never reaches the (slow) work."""

    def load_data(path):
        raise AssertionError("loaded the data before checking the options")

    monkeypatch.setattr(common, "load_data", load_data)
    for argv in (["--seed", "-1"], ["--plot", "out.txt"], ["--state", "4bit"]):
        with pytest.raises(SystemExit) as exited:
            flax_mlp.main(argv)
        assert exited.value.code == 2, argv
    assert "loaded the data" not in capsys.readouterr().err


COUNTS = 2 * 4  # AdamW's and the warmup-cosine schedule's int32 step counts


def moment_bytes(hidden: int, quantized_from: int | None = None) -> tuple[int, int]:
    """By hand, for the digits MLP 64-hidden-10 with biases: the bytes of AdamW's two
    moments, 4 bytes per parameter each, or, for a kernel of >= quantized_from elements, 1
    byte each plus one float32 scale per row (a row of <= 256 is one block), the other
    leaves of an 8-bit state with a one-byte placeholder per row (QuantizedTree); and the
    number of parameters."""
    kernels, biases = [64 * hidden, hidden * 10], [hidden, 10]
    eight_bit = quantized_from is not None
    state = 8 * sum(biases) + 2 * len(biases) * eight_bit
    for size, rows in zip(kernels, (64, hidden), strict=True):
        if eight_bit and size >= quantized_from:
            state += 2 * (size + 4 * rows)
        else:
            state += 8 * size + 2 * rows * eight_bit
    return state, sum(kernels) + sum(biases)


def test_the_state_option_runs_and_reports_its_bytes(runs, capsys):
    """--state bfloat16 trains (close to, but not as, the float32 run of the fixture) and
    the final line gives the state's bytes per parameter, counted by hand."""
    history = flax_mlp.main([*TINY_ARGS, "--state", "bfloat16"])["adam_optax.adamw"]
    line = capsys.readouterr().out.splitlines()[-1]
    assert SUMMARY.match(line), line
    float32 = runs["nnx"][1]
    assert history.train_loss != float32.train_loss
    np.testing.assert_allclose(history.train_loss, float32.train_loss, rtol=0.05)
    assert history.test_accuracy[-1] > 0.5
    state_bytes, params = moment_bytes(32)
    expected = (state_bytes / 2 + COUNTS) / params  # every moment in 2 bytes, none quantized
    assert history.state_bytes_per_param == pytest.approx(expected, rel=1e-6)
    assert f" state=bfloat16 state_bytes_per_param={expected:.2f} " in line


@pytest.mark.parametrize(("state", "hidden"), [("float32", 32), ("8bit", 64), ("8bit", 256)])
def test_the_state_option_picks_the_moments_format(state, hidden):
    """From shapes alone (a run of each format would compile one more train step)."""
    config = common.parse_args([*TINY_ARGS, "--hidden", str(hidden), "--state", state], "")
    model = flax_linen_mlp.MLP(config.hidden, 10)
    params = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 64), np.float32))
    tx = flax_linen_mlp.create_optimizer(config, 100)
    state_bytes, params_count = moment_bytes(hidden, 4096 if state == "8bit" else None)
    expected = (state_bytes + COUNTS) / params_count
    assert common.state_bytes_per_param(tx, params["params"]) == pytest.approx(expected, rel=1e-6)


@pytest.fixture
def a_save(tmp_path) -> tuple[argparse.Namespace, dict]:
    """A --checkpoint-dir holding one save of a small state, as the examples write it."""
    config = common.parse_args(["--checkpoint-dir", str(tmp_path)], "")
    state = {"w": np.ones((3, 4), np.float32), "b": np.zeros(4, np.float32)}
    common.Checkpoints(config).save(state, common.History(epoch_end=[1]))
    return config, state


@pytest.mark.parametrize("part", ["state", "run"])
def test_a_damaged_save_is_named_in_one_line(part, a_save, tmp_path):
    config, state = a_save
    shutil.rmtree(tmp_path / "1" / part)
    with pytest.raises(common.UsageError, match=rf"epoch 1 has no {part}; .*remove \S+/1 to"):
        common.Checkpoints(config).restore(state)


def test_an_error_restoring_a_sound_save_surfaces_whole(a_save, monkeypatch):
    """Restore once turned every exception into a usage error, hiding orbax's and ours."""
    config, state = a_save
    checkpoints = common.Checkpoints(config)
    restore = checkpoints.manager.restore

    def failing(step, args):
        if "state" in args:
            raise RuntimeError("a bug in the library")
        return restore(step, args=args)

    monkeypatch.setattr(checkpoints.manager, "restore", failing)
    with pytest.raises(RuntimeError, match="a bug in the library"):
        checkpoints.restore(state)
    restored, history = common.Checkpoints(config).restore(state)  # and a sound one restores
    chex.assert_trees_all_equal(restored, state)
    assert history.epoch_end == [1]
