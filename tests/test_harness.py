"""The test suite's own tools can fail: the device-count setup, the CI guard against
skipped multi-device tests, and the compile counter."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np

from tests import conftest
from tests.compiles import backend_compiles

ROOT = Path(__file__).resolve().parents[1]


def test_the_device_count_is_appended_to_other_xla_flags():
    flag = conftest.DEVICE_COUNT_FLAG
    assert conftest.with_device_count("") == f"{flag}=8"
    assert conftest.with_device_count("--xla_dump_to=/tmp/x") == f"--xla_dump_to=/tmp/x {flag}=8"
    assert conftest.with_device_count(f"--a {flag}=2") == f"--a {flag}=2"  # the user's choice
    assert flag in os.environ["XLA_FLAGS"]


def test_the_optimization_level_is_appended_unless_named():
    level = conftest.OPTIMIZATION_LEVEL_FLAG
    count = f"{conftest.DEVICE_COUNT_FLAG}=8"
    assert conftest.with_test_flags("") == f"{count} {level}=0"
    assert conftest.with_test_flags(f"{level}=3") == f"{level}=3 {count}"  # the user's choice
    assert f"{level}=" in os.environ["XLA_FLAGS"]


SKIPPING = """
import os
import pytest

def test_flags_kept():
    assert os.environ["XLA_FLAGS"].startswith("--xla_cpu_use_thunk_runtime=true ")

@pytest.mark.skipif(True, reason="needs 8 devices (see conftest)")
def test_sharded():
    pass

def test_sharded_inside():
    pytest.skip("needs 2 devices (see conftest)")

@pytest.mark.skipif(True, reason="needs torch")
def test_other():
    pass
"""


def run_pytest(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    """pytest on SKIPPING with this conftest as a plugin, XLA_FLAGS set to another flag."""
    (tmp_path / "test_skipping.py").write_text(textwrap.dedent(SKIPPING))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env["XLA_FLAGS"] = "--xla_cpu_use_thunk_runtime=true"
    env["PYTHONPATH"] = str(ROOT)
    if ci is not None:
        env["CI"] = ci
    command = [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider"]
    command += ["-q", "-rA", "-c", str(tmp_path / "pytest.ini"), str(tmp_path)]
    return subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True)


def test_under_ci_a_skipped_multi_device_test_fails(tmp_path):
    result = run_pytest(tmp_path, ci="true")
    assert result.returncode == 1, result.stdout
    # A skipif marker skips at setup, where pytest reports a failure as an error.
    assert "ERROR test_skipping.py::test_sharded " in result.stdout
    assert "FAILED test_skipping.py::test_sharded_inside " in result.stdout
    assert "under CI: the multi-device tests must run there" in result.stdout
    assert "1 failed, 1 passed, 1 skipped, 1 error" in result.stdout, result.stdout


def test_outside_ci_a_skipped_multi_device_test_skips(tmp_path):
    result = run_pytest(tmp_path, ci=None)
    assert result.returncode == 0, result.stdout
    assert "1 passed, 3 skipped" in result.stdout, result.stdout


def test_the_compile_counter_counts_a_recompile():
    """The positive control of tests/compiles.py: a new shape compiles once more, the same
    shape again does not, and nothing is counted outside the block."""

    @jax.jit
    def double(x):
        return 2 * x

    three, four, five = (np.ones(n, np.float32) for n in (3, 4, 5))  # NumPy: no compiles
    with backend_compiles() as compiles:
        double(three).block_until_ready()
        first = len(compiles)
        double(three).block_until_ready()
        cached = len(compiles)
        double(four).block_until_ready()  # a new shape: a recompile
    assert (first, cached, len(compiles)) == (1, 1, 2)
    double(five).block_until_ready()
    assert len(compiles) == 2  # the listener is gone
