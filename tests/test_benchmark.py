"""The speed benchmark and the donation study, run through their command lines but tiny:
they finish, write their files, measure the real adam_optax, agree with optax, and really
donate. They run in this process, which shares its imports (jax, torch, matplotlib) with
the other tests.

No timing is asserted: the machines are shared and noisy.
"""

import importlib
import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import adam_optax

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
BENCH = BENCHMARKS / "bench_adam.py"
FLAT_1E5_MB = 0.4  # one float32 buffer of 1e5 parameters


@pytest.fixture(scope="module")
def benchmarks() -> Iterator[None]:
    """The benchmarks' folder on sys.path, as when a user runs a script from it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(BENCHMARKS))
        yield


@pytest.fixture(scope="module")
def results(benchmarks: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    import bench_adam

    out = tmp_path_factory.mktemp("bench")
    tiny = ["--cases", "tree_10x1k", "--rounds", "1", "--round-seconds", "0.01"]
    threads = torch_threads()
    try:  # one torch thread: on a busy machine two wait on each other at every step
        assert bench_adam.main([*tiny, "--torch-threads", "1", "--out", str(out)]) == 0
    finally:
        torch_threads(threads)
    return out, json.loads((out / "results.json").read_text())


def torch_threads(n: int | None = None) -> int | None:
    """torch's thread count, set to ``n`` first if given; None without torch."""
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    if n is not None:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def test_writes_the_table_the_json_and_the_plot(results: tuple[Path, dict]) -> None:
    out, _ = results
    assert "| tree_10x1k | adam_optax |" in (out / "results.md").read_text()
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_measures_the_real_adam_optax_and_every_contender(results: tuple[Path, dict]) -> None:
    _, data = results
    assert data["environment"]["adam_optax"].endswith(adam_optax.__file__)
    labels = {m["label"] for m in data["measurements"]}
    expected = {"adam_optax", "optax", "roofline 28B", "floor 0B"}
    if importlib.util.find_spec("torch") is not None:
        expected.add("torch (fused)")
    assert labels == expected
    assert all(m["median_ms"] > 0 for m in data["measurements"])


def test_checks_adam_optax_against_optax(results: tuple[Path, dict]) -> None:
    _, data = results
    (row,) = [m for m in data["measurements"] if m["label"] == "adam_optax"]
    assert "max|dp| vs optax" in row["note"]
    assert "MISMATCH" not in row["note"]


def test_without_adam_optax_it_fails_in_one_line() -> None:
    hide = "import runpy, sys; sys.modules['adam_optax'] = None; "
    run = f"runpy.run_path({str(BENCH)!r}, run_name='__main__')"
    cmd = [sys.executable, "-c", hide + run]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert "cannot import adam_optax" in done.stderr


def test_donation_study_aliases_what_it_donates(benchmarks: None, tmp_path: Path) -> None:
    """Donating params and state aliases p, mu and nu; state only, mu and nu; none, nothing."""
    import donation

    tiny = ["--params", "1e5", "--rounds", "1", "--round-seconds", "0.005"]
    assert donation.main([*tiny, "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "donation.json").read_text())["rows"]
    aliased = {(r["optimizer"], r["donated"]): r["alias_mb"] for r in rows}
    for optimizer in ("adam_optax", "optax"):
        assert aliased[optimizer, "params+state"] == pytest.approx(3 * FLAT_1E5_MB, abs=1e-3)
        assert aliased[optimizer, "state only"] == pytest.approx(2 * FLAT_1E5_MB, abs=1e-3)
        assert aliased[optimizer, "none"] == 0


SCRIPTS = sorted(p.stem for p in BENCHMARKS.glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_prints_usage_and_runs_nothing(
    script: str, benchmarks: None, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """`step_bytes.py --help` once ran the benchmark: every script parses its options first."""
    module = importlib.import_module(script)
    monkeypatch.setattr(sys, "argv", [f"{script}.py", "--help"])
    with pytest.raises(SystemExit) as exited:
        module.main()
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: {script}.py")


def test_memory_lets_a_library_error_surface(
    benchmarks: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure to build a state choice is a bug to see, not a row marked unavailable."""
    import memory

    def broken(*args, **kwargs):
        raise TypeError("adam8bit() got an unexpected keyword argument")

    monkeypatch.setattr(adam_optax, "adam8bit", broken)
    with pytest.raises(TypeError, match="adam8bit"):
        memory.optimizers()


def test_memory_counts_a_loop_once_per_iteration(benchmarks: None) -> None:
    """XLA's cost analysis counts a while loop's body once; ``memory.bytes_accessed`` adds
    the other iterations. A loop of 64 iterations, each reading and writing its own 1024
    float32 of a donated vector, moves 8 bytes per element, as one whole-vector step does."""
    import jax
    import jax.numpy as jnp
    import memory

    n, chunk = 2**16, 1024

    def double_by_chunks(x):
        def body(i, x):
            piece = jax.lax.dynamic_slice_in_dim(x, i * chunk, chunk)
            return jax.lax.dynamic_update_slice_in_dim(x, 2 * piece, i * chunk, 0)

        return jax.lax.fori_loop(0, n // chunk, body, x)

    vector = jax.ShapeDtypeStruct((n,), jnp.float32)
    compiled = jax.jit(double_by_chunks, donate_argnums=0).lower(vector).compile()
    cost = compiled.cost_analysis()
    once = (cost[0] if isinstance(cost, list) else cost)["bytes accessed"] / n
    moved, loops = memory.bytes_accessed(compiled)
    assert loops == 1
    assert once < 0.2  # XLA's own count: about one chunk's 8 KiB
    assert moved / n == pytest.approx(8.0, rel=0.02)
    whole = jax.jit(lambda x: 2 * x, donate_argnums=0).lower(vector).compile()
    assert memory.bytes_accessed(whole) == (pytest.approx(8.0 * n, rel=0.02), 0)
