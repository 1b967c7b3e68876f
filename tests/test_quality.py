"""The quality benchmark, tiny: its own functions, run in-process, its report re-derived.

The full run (benchmarks/quality.py) takes about a quarter of an hour; here the
teacher–student task trains for 100 steps, three seeds, with two rows of the table, and
the report on disk is checked against NumPy recomputations from the per-seed final losses
it also records. No figure below comes from the code under test: the spread, the paired
differences, their standard errors and the verdicts are recomputed from their definitions.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"
# The benchmarks import their siblings by name, as when run from their folder.
sys.path.insert(0, str(SCRIPT.parent))
spec = importlib.util.spec_from_file_location("quality", SCRIPT)
quality = importlib.util.module_from_spec(spec)
spec.loader.exec_module(quality)

SEEDS = [0, 1, 2]
ROWS = (quality.REFERENCE, "8-bit")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("quality")
    rows = quality.select(quality.variants(), list(ROWS))
    quality.run_all(True, SEEDS, ["teacher"], out, "test", rows, nu_decay_steps=(0, 0))
    assert (out / "quality.md").read_text().count("| teacher-student regression |") == 1
    assert (out / "quality.png").stat().st_size > 0
    return json.loads((out / "quality.json").read_text())


def test_the_report_has_every_row_seed_and_metric(report: dict) -> None:
    assert [v["name"] for v in report["variants"]] == list(ROWS)
    assert all(v["params_dtype"] == "float32" and v["wrap"] is None for v in report["variants"])
    (task,) = report["summary"]
    assert report["tasks"][task]["steps"] == 100
    for name in ROWS:
        metrics = report["runs"][task][name]["metrics"]
        assert len(metrics) == len(SEEDS)
        assert all(math.isfinite(m["test_loss"]) for m in metrics)
        assert report["timing"][task][name]["ms_per_step"] > 0
    entry = report["summary"][task]["test_loss"]
    assert set(entry["variants"]) == set(ROWS)
    assert len(report["curves"][task][quality.REFERENCE]) == 100


def test_differences_spread_and_verdicts_follow_their_definitions(report: dict) -> None:
    (task,) = report["summary"]
    entry = report["summary"][task]["test_loss"]
    per_seed = {
        name: np.array([m["test_loss"] for m in report["runs"][task][name]["metrics"]])
        for name in ROWS
    }
    reference = per_seed[quality.REFERENCE]
    spread = reference.std(ddof=1) / reference.mean()
    assert entry["float32_spread"] == pytest.approx(spread, rel=1e-12)
    assert spread > 0  # seeds draw different params and batches
    float32 = entry["variants"][quality.REFERENCE]
    assert float32["delta_per_seed"] == [0.0] * len(SEEDS)
    assert float32["delta"] == 0.0 and float32["verdict"] == "inside"
    for name in ROWS[1:]:
        deltas = (per_seed[name] - reference) / reference
        row = entry["variants"][name]
        assert row["delta"] == pytest.approx(deltas.mean(), rel=1e-12, abs=1e-15)
        se = deltas.std(ddof=1) / np.sqrt(len(SEEDS))
        assert row["delta_se"] == pytest.approx(se, rel=1e-12)
        side = "better" if deltas.mean() < 0 else "worse"
        expected = "inside" if abs(deltas.mean()) <= spread else f"outside, {side}"
        assert row["verdict"] == expected
        assert not np.array_equal(per_seed[name], reference), name  # a different run
    assert entry["b2_delta"] is None  # no b2=0.998 row in this run


def test_the_b2_row_is_reported_beside_the_others() -> None:
    losses = {quality.REFERENCE: [1.0, 2.0, 4.0], quality.B2_ROW: [1.1, 1.9, 4.4]}
    runs = {"task": {k: {"metrics": [{"loss": v} for v in vs]} for k, vs in losses.items()}}
    entry = quality.summarize(runs)["task"]["loss"]
    assert entry["b2_delta"] == pytest.approx(np.mean([0.1, -0.05, 0.1]))
    assert entry["float32_spread"] == pytest.approx(np.std([1, 2, 4], ddof=1) / (7 / 3))


def test_verdict_is_two_sided() -> None:
    assert quality.verdict(0.019, 0.02) == "inside"
    assert quality.verdict(-0.02, 0.02) == "inside"
    assert quality.verdict(-0.021, 0.02) == "outside, better"
    assert quality.verdict(0.03, 0.02) == "outside, worse"
    assert quality.verdict(0.0, math.nan) == "n/a (one seed)"


def test_the_table_starts_with_the_reference_and_names_each_row_once() -> None:
    names = [v.name for v in quality.variants()]
    assert names[:2] == [quality.REFERENCE, quality.B2_ROW]
    assert {"bf16+SR", "bf16", "8-bit", "8-bit RTN", "7 bytes"} <= set(names)
    assert len(set(names)) == len(names)
    with pytest.raises(ValueError, match="unknown"):
        quality.select(quality.variants(), ["no such row"])


def test_a_row_declares_its_params_dtype_and_wrapper() -> None:
    jnp, optax = quality.jnp, quality.optax
    wrap = functools.partial(optax.apply_if_finite, max_consecutive_errors=3)
    row = quality.Variant("wrapped", quality.variants()[0].make, jnp.bfloat16, wrap)
    params = quality.stored({"w": jnp.ones(3), "n": jnp.arange(2)}, row.params_dtype)
    assert params["w"].dtype == jnp.bfloat16 and params["n"].dtype == jnp.arange(2).dtype
    state = quality.optimizer(row, 1e-3, 0.0).init({"w": params["w"]})
    assert isinstance(state, optax.ApplyIfFiniteState)  # the wrapper is applied
    described = quality.describe(row)
    assert described["params_dtype"] == "bfloat16"
    assert described["wrap"] == "apply_if_finite(max_consecutive_errors=3)"
    assert quality.callable_name(quality.adam_optax.adamw) == "adam_optax.adamw"
