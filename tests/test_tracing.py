"""What a step traces and compiles: the leaf math once per shape, nothing new per eager step."""

import jax
import pytest

import adam_optax
from tests.compiles import backend_compiles


def _params(n=2):
    return {f"w{i}": jax.numpy.linspace(-1.0, 1.0, 12).reshape(3, 4) for i in range(n)}


def test_eager_steps_compile_nothing_new():
    """The bias corrections power b by a float step count: an integer one that is
    concrete makes jnp.power compile a new integer_pow at every eager step."""
    tx = adam_optax.nadam(1e-3, amsgrad=True)
    params = _params()
    g = jax.tree.map(lambda p: 0.1 * p, params)
    state = tx.init(params)
    for _ in range(2):
        _, state = tx.update(g, state, params)
    with backend_compiles() as compiled:
        for _ in range(3):
            _, state = tx.update(g, state, params)
    assert not compiled


@pytest.mark.parametrize(
    "tx",
    [adam_optax.scale_by_adam(amsgrad=True, nesterov=True), adam_optax.scale_by_adamax()],
    ids=["adam", "adamax"],
)
def test_leaves_of_one_shape_share_one_traced_step(tx):
    """A tree traces the leaf math once per shape and dtype, so tracing and
    lowering a model of many leaves stays cheap (benchmarks/ measures it)."""
    params = {f"w{i}": jax.numpy.ones(3) for i in range(20)}
    jaxpr = jax.make_jaxpr(tx.update)(params, tx.init(params))
    calls = [e.params["jaxpr"] for e in jaxpr.eqns if e.primitive.name in ("jit", "pjit")]
    assert len(calls) == 20
    assert len({id(c) for c in calls}) == 1
