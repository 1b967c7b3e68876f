"""Test-session setup: 8 host devices for the sharding tests, and Keras on JAX.

Both must be set before JAX or Keras is first imported. The device count is appended to
any ``XLA_FLAGS`` already set, unless they set a device count themselves: with
``setdefault``, any other flag left the suite on one device, and the multi-device tests
skipped while the run stayed green. Under CI (``CI`` set to ``true`` or ``1``, as GitHub
Actions and ``.ci/run`` do), a multi-device test that skips (its reason says "needs N
devices") fails instead.

The tests' programs are compiled with LLVM's optimizations off
(``--xla_backend_optimization_level=0``, unless ``XLA_FLAGS`` names a level): XLA builds
the same HLO, so the same fusions, buffers and ``memory_analysis()`` figures, and IEEE
arithmetic gives the same bits, but most of the suite's time is compiling many small
programs that then run for milliseconds. The benchmarks, which time what they run,
compile at XLA's default level.

``--package-only`` collects the package's own tests and doctests and leaves out every test
file that runs the examples or the benchmarks (they need Flax, Matplotlib and the like).
CI runs it in an environment with the oldest jax and optax that pyproject.toml allows.
A test file counts as one of those when its code names the folder: a string ``"examples"``
or ``"benchmarks"``, or one that starts with ``"examples/"`` or ``"benchmarks/"``
(docstrings aside), as ``Path(__file__).parents[1] / "examples"`` does.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest

DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def with_device_count(flags: str, count: int = 8) -> str:
    """``flags`` (the XLA_FLAGS) with ``count`` host devices appended, unless they name a
    device count already."""
    if DEVICE_COUNT_FLAG in flags:
        return flags
    return f"{flags} {DEVICE_COUNT_FLAG}={count}".strip()


OPTIMIZATION_LEVEL_FLAG = "--xla_backend_optimization_level"


def with_test_flags(flags: str) -> str:
    """``flags`` with the device count and LLVM's optimization level 0 appended, each
    unless ``flags`` names it already."""
    flags = with_device_count(flags)
    if OPTIMIZATION_LEVEL_FLAG in flags:
        return flags
    return f"{flags} {OPTIMIZATION_LEVEL_FLAG}=0"


os.environ["XLA_FLAGS"] = with_test_flags(os.environ.get("XLA_FLAGS", ""))
os.environ.setdefault("KERAS_BACKEND", "jax")

# The reason every multi-device test gives when it skips, such as "needs 8 devices (see
# conftest)".
MULTI_DEVICE_SKIP = re.compile(r"needs \d+ devices")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


APPLICATION_FOLDERS = ("examples", "benchmarks")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--package-only",
        action="store_true",
        help="leave out the test files that run examples/ or benchmarks/",
    )


def names_application_folder(path: Path) -> bool:
    """Whether the test file's code (not its docstrings) names examples/ or benchmarks/."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ):
            text = node.value
            if text in APPLICATION_FOLDERS or text.startswith(
                tuple(f"{folder}/" for folder in APPLICATION_FOLDERS)
            ):
                return True
    return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if not config.getoption("--package-only"):
        return None
    if (
        collection_path.suffix == ".py"
        and collection_path.name.startswith("test_")
        and collection_path.parent == Path(__file__).parent
        and names_application_folder(collection_path)
    ):
        return True
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """offload_state's example needs a jax that puts arrays in host memory: its CPU backend
    before 0.10.2 does not, and offload_state then refuses (tests/test_offload.py)."""
    doctests = [item for item in items if item.name == "adam_optax.offload.offload_state"]
    if not doctests:
        return
    import jax

    import adam_optax.offload

    if not adam_optax.offload._transfer_lands(jax.devices()[0], "pinned_host"):
        for item in doctests:
            item.add_marker(pytest.mark.skip(reason=f"jax {jax.__version__}: no host memory"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    """Under CI, a multi-device test that skips fails: a green run must have run them."""
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and in_ci()) or hasattr(report, "wasxfail"):
        return
    if not isinstance(report.longrepr, tuple):
        return
    reason = str(report.longrepr[2])
    if MULTI_DEVICE_SKIP.search(reason):
        report.outcome = "failed"
        report.longrepr = (
            f"{reason}, under CI: the multi-device tests must run there. XLA_FLAGS is "
            f"{os.environ.get('XLA_FLAGS')!r}; leave out its {DEVICE_COUNT_FLAG}, or set it "
            "to 8."
        )
