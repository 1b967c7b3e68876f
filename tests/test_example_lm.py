"""The byte-level LM example (examples/bfloat16_byte_lm.py), run tiny: the 7-byte set-up,
master_weights(adamw8bit), on a transformer over the standard library's source.

A file of its own so that pytest-xdist runs it beside tests/test_examples.py.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import adam_optax

pytest.importorskip("flax")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import bfloat16_byte_lm

# bfloat16_byte_lm.py: the 7-byte set-up (master_weights(adamw8bit)) on a byte-level
# transformer over the standard library's source, run tiny.
BYTE_LM_TINY = ["--megabytes", "0.01", "--width", "32", "--layers", "1", "--heads", "2"]
BYTE_LM_TINY += ["--context", "32", "--batch-size", "8", "--learning-rate", "1e-2"]


def test_bfloat16_byte_lm_learns_in_bfloat16_with_a_small_state(capsys):
    runs = bfloat16_byte_lm.main(BYTE_LM_TINY)
    history, per_param = runs["bfloat16"]
    assert history.test_loss[-1] < np.log(256) - 1  # far below a uniform guess over bytes
    assert 7.0 < per_param < 16.0  # tiny leaves keep float32 moments; large ones 8 bits
    out = capsys.readouterr().out
    assert re.search(r"^bfloat16: validation_loss=\d+\.\d{4} bytes_per_param=\d+\.\d\d", out, re.M)


@pytest.mark.parametrize("state", ["8bit", "4bit"])
def test_bfloat16_byte_lm_state_option_picks_the_code_width(state):
    """--state sets the moments' code width under master_weights (the training itself is
    the test above, at 8 bits; the 4-bit transform's own tests are tests/test_low_bit*.py)."""
    config = bfloat16_byte_lm.parse_args(["--state", state])
    tx = bfloat16_byte_lm.create_optimizer(config, total_steps=10)
    state_tree = tx.init({"w": jnp.ones((64, 128), jnp.bfloat16)})
    moments = [x for x in jax.tree.leaves(state_tree, is_leaf=is_blockwise) if is_blockwise(x)]
    assert moments and {m.bits for m in moments} == {int(state[0])}


def is_blockwise(x) -> bool:
    return isinstance(x, adam_optax.QuantizedTree)


def test_bfloat16_byte_lm_bad_input_exits_2_with_one_line(capsys):
    with pytest.raises(SystemExit) as exited:
        bfloat16_byte_lm.main([*BYTE_LM_TINY, "--heads", "3"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert re.fullmatch(r"\S+: error: --width 32 must be a multiple of --heads 3\n", err), err


BYTE_LM_BAD_INPUTS = [  # (id, arguments, message); each once ended in a traceback
    ("negative_seed", ["--seed", "-1"], r"--seed: must be an integer in \[0, 2\*\*32\), got -1"),
    ("seed_2_32", ["--seed", "4294967296"], r"--seed: must be an integer in \[0, 2\*\*32\)"),
    ("seed_text", ["--seed", "one"], r"--seed: must be an integer in \[0, 2\*\*32\), got one"),
    ("unwritable_ckpt", ["--checkpoint-dir", "{tmp}/file/ckpt"], r"--checkpoint-dir: cannot write"),
    ("negative_decay", ["--weight-decay", "-0.1"], r"--weight-decay: must be a number >= 0"),
    ("nan_decay", ["--weight-decay", "nan"], r"--weight-decay: must be a number >= 0, got nan"),
    ("lr_1e300", ["--learning-rate", "1e300"], r"--learning-rate: must be finite in float32"),
    ("zero_megabytes", ["--megabytes", "0"], r"--megabytes: must be a number > 0, got 0"),
    ("epochs_huge", ["--epochs", "9" * 40], r"--epochs: must be a positive integer below 2"),
    ("zero_layers", ["--layers", "0"], r"--layers: must be a positive integer below 2\*\*31"),
]


@pytest.mark.parametrize(
    ("argv", "message"),
    [c[1:] for c in BYTE_LM_BAD_INPUTS],
    ids=[c[0] for c in BYTE_LM_BAD_INPUTS],
)
def test_bfloat16_byte_lm_bad_options_exit_2_with_one_line(argv, message, tmp_path, capsys):
    """Checked as common.py checks the other examples' options, before the data loads."""
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(SystemExit) as exited:
        bfloat16_byte_lm.main([arg.format(tmp=tmp_path) for arg in argv])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert re.fullmatch(r"\S+: error: argument " + message + r".*\n", err), err
