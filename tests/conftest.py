"""Test-session setup: 8 host devices for the sharding tests, and Keras on JAX.

Both must be set before JAX or Keras is first imported.

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
from pathlib import Path

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("KERAS_BACKEND", "jax")

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
