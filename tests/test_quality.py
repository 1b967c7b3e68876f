"""The quality benchmark, tiny: its own training functions, run in-process.

The full runs (benchmarks/quality.py) take minutes; here the teacher–student task trains
for 100 steps with float32 and 8-bit state, and the report's verdicts are checked on
made-up figures. No figure below comes from the code under test: the bounds are stated
ones. bfloat16 with stochastic rounding is left to tests/test_low_bit.py (unbiased, and
its nu tracks float32's): its random bits cost seconds of compile, over this file's budget.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"
spec = importlib.util.spec_from_file_location("quality", SCRIPT)
quality = importlib.util.module_from_spec(spec)
spec.loader.exec_module(quality)

# Loose on purpose: 100 steps of a tiny student. The full run's target is 1%.
LOW_MEMORY_VS_FLOAT32 = 0.10
TESTED = ("float32", "8-bit")


@pytest.fixture(scope="module")
def teacher_student() -> dict[str, tuple[np.ndarray, dict[str, float]]]:
    task = quality.teacher_student_task(quick=True)
    choices = quality.optimizer_choices()
    assert quality.quantized_fraction(task.init(quality.jax.random.key(0))) > 0.5
    return {name: quality.trainer(task, choices[name])(0) for name in TESTED}


def test_every_state_choice_is_available() -> None:
    unavailable = {k: v for k, v in quality.optimizer_choices().items() if isinstance(v, str)}
    assert not unavailable


def test_float32_and_8bit_state_learn(teacher_student: dict) -> None:
    for name, (losses, metrics) in teacher_student.items():
        assert np.isfinite(losses).all(), name
        assert metrics["test_loss"] < 0.5 * losses[:5].mean(), (name, losses[:5], metrics)


def test_8bit_state_tracks_float32(teacher_student: dict) -> None:
    float32 = teacher_student["float32"][1]["test_loss"]
    other = teacher_student["8-bit"][1]["test_loss"]
    assert abs(other / float32 - 1) < LOW_MEMORY_VS_FLOAT32, (float32, other)
    # and it is a different run, not float32 again under another name
    assert not np.array_equal(teacher_student["8-bit"][0], teacher_student["float32"][0])


def test_verdicts_judge_the_stated_targets() -> None:
    def metrics(loss: float, accuracy: float) -> dict[str, float]:
        return {"test_loss": loss, "test_accuracy": accuracy}

    runs = {
        "task": {
            "float32": {"metrics": [metrics(1.00, 90.0), metrics(2.00, 80.0)]},
            "8-bit": {"metrics": [metrics(1.005, 89.8), metrics(2.01, 79.8)]},  # +0.5%, -0.2 pt
            "bf16+SR": {"metrics": [metrics(1.03, 89.0), metrics(2.02, 79.0)]},  # +2%, -1 pt
        }
    }
    summary = quality.summarize(runs, seeds=[0, 1])
    row = summary["task"]["choices"]["bf16+SR"]
    assert row["test_loss_delta_rel_per_seed"] == pytest.approx([0.03, 0.01])
    assert row["test_accuracy_delta_points"] == pytest.approx(-1.0)
    met = {(v["choice"], v["metric"]): v["met"] for v in quality.verdicts(summary)}
    assert met == {
        ("8-bit", "test_loss"): True,
        ("8-bit", "test_accuracy"): True,
        ("bf16+SR", "test_loss"): False,
        ("bf16+SR", "test_accuracy"): False,
    }
