"""The byte-level LM example (examples/bfloat16_byte_lm.py), run tiny: the 7-byte set-up,
master_weights(adamw8bit), on a transformer over the standard library's source.

A file of its own so that pytest-xdist runs it beside tests/test_examples.py.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

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


def test_bfloat16_byte_lm_bad_input_exits_2_with_one_line(capsys):
    with pytest.raises(SystemExit) as exited:
        bfloat16_byte_lm.main([*BYTE_LM_TINY, "--heads", "3"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert re.fullmatch(r"\S+: error: --width 32 must be a multiple of --heads 3\n", err), err
