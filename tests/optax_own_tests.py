"""A pytest plugin that runs optax's own tests with adam_optax in optax's place.

The optax wheel ships its test modules. This plugin replaces optax's Adam-family
functions by adam_optax's before those modules are imported, keeps only the tests
that mention the Adam family, and counts the cases that really used adam_optax (called
one of its functions, or the init or update of a transformation it made).
A development check, run by hand from the repository root (it takes about 15 minutes
on 2 cores; tests/test_optax_own_tests.py runs a fast part of it in the suite)::

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m pytest \\
        -p tests.optax_own_tests -o addopts="" -q -p no:cacheprovider --pyargs \\
        $(python -c 'import tests.optax_own_tests as t; print(*t.OPTAX_ADAM_TESTS)')

It ends with the count per optax test module and every failed case.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import re
from typing import Any

import jax
import optax
import pytest
from optax._src import alias, transform

import adam_optax

REPLACED = {
    alias: ("adam", "adamw", "nadam", "nadamw", "amsgrad", "adamax", "adamaxw"),
    transform: ("scale_by_adam", "scale_by_amsgrad", "scale_by_adamax"),
}

# optax's test modules that use the Adam family.
OPTAX_ADAM_TESTS = (
    "optax._src.alias_test",
    "optax._src.transform_test",
    "optax._src.combine_test",
    "optax._src.float64_test",
    "optax._src.sharding_test",
    "optax._src.linesearch_test",
    "optax.schedules._inject_test",
    "optax.transforms._accumulation_test",
    "optax.transforms._combining_test",
    "optax.tree_utils._state_utils_test",
    "optax.contrib._complex_valued_test",
)

# Letters around the name, not underscores, end it: test_init_adam, opt_name='adam'.
_ADAM_NAME = re.compile(r"(?<![a-z])(n?adamw?|adamaxw?|amsgrad)(?![a-z])")
_called = False
_outcomes: dict[str, str] = {}


def _note_call(fn):
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any):
        global _called
        _called = True
        return fn(*args, **kwargs)

    return wrapper


def _counting(factory):
    """``factory``, noting each call of it and of its transformation's init and update.

    Some optax tests build their optimizers at import and only use them in the test.
    """

    @functools.wraps(factory)
    def wrapper(*args: Any, **kwargs: Any):
        tx = _note_call(factory)(*args, **kwargs)
        return tx._replace(init=_note_call(tx.init), update=_note_call(tx.update))

    return wrapper


def pytest_configure(config: pytest.Config) -> None:
    for module, names in REPLACED.items():
        for name in names:
            ours = _counting(getattr(adam_optax, name))
            setattr(module, name, ours)
            setattr(optax, name, ours)


def _mentions_adam(item: pytest.Item) -> bool:
    reprs = getattr(getattr(item, "cls", None), "_test_params_reprs", {})
    text = item.name + reprs.get(item.name, "")
    with contextlib.suppress(OSError, TypeError):
        text += inspect.getsource(item.obj)
    return bool(_ADAM_NAME.search(text))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept = [i for i in items if _mentions_adam(i)]
    config.hook.pytest_deselected(items=[i for i in items if i not in kept])
    items[:] = kept


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Forgets the last case's use, and its compiled functions so that this one traces."""
    global _called
    _called = False
    jax.clear_caches()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    failed_early = report.when == "setup" and not report.passed
    if (report.when == "call" or failed_early) and _called:
        case = report.location[0].rsplit("/", 1)[-1] + report.nodeid
        if _outcomes.get(case) != "failed":
            _outcomes[case] = report.outcome


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The count per optax test module, then every failed case."""
    counts: dict[str, dict[str, int]] = {}
    for case, outcome in _outcomes.items():
        per_module = counts.setdefault(case.split("::")[0], {})
        per_module[outcome] = per_module.get(outcome, 0) + 1
    total: dict[str, int] = {}
    for module, per_module in sorted(counts.items()):
        terminalreporter.write_line(f"  {module}: {per_module}")
        for outcome, n in per_module.items():
            total[outcome] = total.get(outcome, 0) + n
    terminalreporter.write_line(f"optax Adam-family cases run on adam_optax: {total}")
    for case, outcome in sorted(_outcomes.items()):
        if outcome == "failed":
            terminalreporter.write_line(f"  failed: {case}")
