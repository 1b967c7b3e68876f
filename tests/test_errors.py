"""Every bad input in tests/cases.py fails early, with its exception and message."""

import chex
import pytest
from absl.testing import parameterized

import adam_optax
from tests.cases import ERRORS

AT_UPDATE = [c for c in ERRORS if c.grads is not None]


@pytest.mark.parametrize("case", [c for c in ERRORS if c.grads is None], ids=lambda c: c.id)
def test_bad_input_fails_at_construction_or_init(case):
    factory = getattr(adam_optax, case.alias)
    if case.params is None:
        with pytest.raises(case.error, match=case.match):
            factory(**case.kwargs)
        return
    tx = factory(**case.kwargs)
    with pytest.raises(case.error, match=case.match):
        tx.init(case.params)


class BadGradientsFailAtUpdate(chex.TestCase):
    """Shapes are static, so a mismatch fails at trace time under jit, as eagerly."""

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters((c.id, c) for c in AT_UPDATE)
    def test_bad_gradients(self, case):
        tx = getattr(adam_optax, case.alias)(**case.kwargs)
        state = tx.init(case.params)
        with pytest.raises(case.error, match=case.match):
            self.variant(tx.update)(case.grads, state, case.params)


def test_every_alias_has_an_error_case():
    assert {c.alias for c in ERRORS} >= {"adam", "adamw", "nadam", "amsgrad", "adamax", "adamaxw"}
    names = ("adam", "adamw", "scale_by_adam")
    blockwise = {f"{name}{bits}bit" for name in names for bits in (8, 4)}
    assert {c.alias for c in ERRORS} >= blockwise
