"""Every bad input in tests/cases.py fails early, with its exception and message."""

import jax
import pytest

import adam_optax
from tests.cases import ERRORS


@pytest.mark.parametrize("case", ERRORS, ids=lambda c: c.id)
def test_bad_input_fails_early_and_clearly(case):
    factory = getattr(adam_optax, case.alias)
    if case.params is None:
        with pytest.raises(case.error, match=case.match):
            factory(**case.kwargs)
        return
    tx = factory(**case.kwargs)
    if case.grads is None:
        with pytest.raises(case.error, match=case.match):
            tx.init(case.params)
        return
    state = tx.init(case.params)
    with pytest.raises(case.error, match=case.match):
        jax.jit(tx.update)(case.grads, state, case.params)
    with pytest.raises(case.error, match=case.match):
        tx.update(case.grads, state, case.params)


def test_every_alias_has_an_error_case():
    assert {c.alias for c in ERRORS} >= {"adam", "adamw", "nadam", "amsgrad", "adamax", "adamaxw"}
