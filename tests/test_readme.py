"""The README's quick start runs as written and prints what its comments say."""

import contextlib
import io
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", markdown, re.M | re.S)


def test_the_quick_start_runs_and_prints_its_comments():
    """The blocks run in order in one namespace, as a reader pastes them; each ``print``
    whose line ends in a comment must print that comment."""
    pytest.importorskip("flax")
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) == 3  # the pytree example, Flax NNX, then bfloat16 params
    expected = re.findall(r"^print\(.*\)  # (.*)$", blocks[0], re.M)
    assert expected  # the check below has something to compare
    namespace: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for block in blocks:
            exec(compile(block, str(README), "exec"), namespace)
    assert out.getvalue().splitlines() == expected
    assert float(namespace["batch_loss"]) > 0  # the NNX steps ran and returned the batch's loss
    for leaf in [*jax.tree.leaves(namespace["bf16_params"]), namespace["bf16_model"].kernel]:
        assert leaf.dtype == jnp.bfloat16  # the seven-byte set-up kept the params bfloat16
