"""The speed benchmark, run as a user runs it but tiny: it finishes, writes its three
files, measures the real adam_optax, agrees with optax, and really donates.

No timing is asserted: the machines are shared and noisy.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_adam.py"
FLAT_1E6_MB = 4.0  # one float32 buffer of the donation study's 1e6 parameters


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bench")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one device, as a user has
    cmd = [sys.executable, str(BENCH), "--quick", "--cases", "tree_10x1k", "--rounds", "1"]
    done = subprocess.run(
        [*cmd, "--out", str(out)], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out, json.loads((out / "results.json").read_text())


def test_writes_the_table_the_json_and_the_plot(results: tuple[Path, dict]) -> None:
    out, _ = results
    assert "| tree_10x1k | adam_optax | train |" in (out / "results.md").read_text()
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_measures_every_contender_and_mode(results: tuple[Path, dict]) -> None:
    _, data = results
    assert not data["environment"]["adam_optax"].startswith("STAND-IN")
    labels = {m["label"] for m in data["measurements"]}
    expected = {"adam_optax update", "adam_optax train", "optax update", "optax train"}
    expected |= {"roofline 28B", "floor 0B"}
    if importlib.util.find_spec("torch") is not None:
        expected.add("torch (fused)")
    assert labels == expected
    assert all(m["median_ms"] > 0 for m in data["measurements"])


def test_checks_adam_optax_against_optax(results: tuple[Path, dict]) -> None:
    _, data = results
    (train,) = [m for m in data["measurements"] if m["label"] == "adam_optax train"]
    assert "max|dp| vs optax" in train["note"]
    assert "MISMATCH" not in train["note"]


def test_donation_study_aliases_what_it_donates(results: tuple[Path, dict]) -> None:
    """Donating params and state aliases p, mu and nu; state only, mu and nu; none, nothing."""
    _, data = results
    aliased = {(r["contender"], r["donated"]): r["alias_mb"] for r in data["donation"]}
    for contender in ("adam_optax", "optax"):
        assert aliased[contender, "params+state"] == pytest.approx(3 * FLAT_1E6_MB, abs=1e-3)
        assert aliased[contender, "state only"] == pytest.approx(2 * FLAT_1E6_MB, abs=1e-3)
        assert aliased[contender, "none"] == 0
