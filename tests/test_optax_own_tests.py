"""optax's own mu_dtype test, run from the installed wheel with adam_optax in optax's place.

A fast part of the development check in tests/optax_own_tests.py (which runs all of
optax's Adam-family tests, in minutes): every Adam-family case of alias_test's
``test_explicit_dtype``, the test that found the complex ``mu_dtype`` gap.
"""

import unittest

import pytest

import adam_optax
from tests.optax_own_tests import REPLACED

alias_test = pytest.importorskip("optax._src.alias_test")  # needs absl, scipy, scikit-learn

FAMILY = REPLACED[alias_test.alias]
# Deliberate (README, "Numerics"): complex params keep a complex mu whatever mu_dtype
# says. optax casts mu to a real mu_dtype, dropping its imaginary part with a warning.
DROPS_IMAGINARY_MU = "params_dtype='complex64', state_dtype='"


def _cases():
    for method, params in alias_test.AliasTest._test_params_reprs.items():
        if not method.startswith("test_explicit_dtype"):
            continue
        if not any(f"opt_name='{name}'" in params for name in FAMILY):
            continue
        real_mu = any(f"{DROPS_IMAGINARY_MU}{d}'" in params for d in ("bfloat16", "float32"))
        marks = pytest.mark.xfail(strict=True, reason="keeps mu complex") if real_mu else ()
        yield pytest.param(method, id=f"{method}{params}", marks=marks)


@pytest.mark.parametrize("method", list(_cases()))
def test_optax_case_passes_with_adam_optax(method, monkeypatch):
    for name in FAMILY:
        monkeypatch.setattr(alias_test.alias, name, getattr(adam_optax, name))
    result = unittest.TestResult()
    alias_test.AliasTest(method).run(result)
    problems = [text for _, text in result.failures + result.errors]
    assert not problems, problems[0]
    assert result.testsRun == 1
