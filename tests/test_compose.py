"""adam_optax inside everything optax users wrap it in, against optax's own Adam."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

import adam_optax
from tests.compiles import backend_compiles


def _params():
    return {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": jnp.full((4,), 0.5, jnp.float32)}


def _grads(steps=40, seed=0):
    """Per-step gradients like _params(), zeros at every 5th step."""
    rng = np.random.default_rng(seed)
    out = []
    for t in range(steps):
        live = t % 5 != 0
        g = {"w": rng.standard_normal((3, 4)) * live, "b": rng.standard_normal(4) * 10 * live}
        out.append(jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), g))
    return out


def _train(tx, params=None, grads=None, **extra):
    """Params after every step of the user's jitted loop."""
    params = _params() if params is None else params
    state = tx.init(params)

    @jax.jit
    def step(p, s, g):
        u, s = tx.update(g, s, p, **extra)
        return optax.apply_updates(p, u), s

    first, *rest = _grads() if grads is None else grads
    params, state = step(params, state, first)
    history = [params]
    with backend_compiles() as compiled:
        for g in rest:
            params, state = step(params, state, g)
            history.append(params)
    assert not compiled, "the jitted step was compiled again"
    return history, state


def _both(wrap):
    """Trajectories of wrap(adam_optax) and wrap(optax)."""
    return _train(wrap(adam_optax))[0], _train(wrap(optax))[0]


SCHEDULE = optax.warmup_cosine_decay_schedule(0.0, 1e-2, 10, 40)
WRAPPERS = {
    "chain_clip_schedule": lambda m: optax.chain(optax.clip_by_global_norm(1.0), m.adamw(SCHEDULE)),
    "weight_decay_schedule": lambda m: m.adamw(
        1e-2, weight_decay=optax.linear_schedule(0.1, 0.0, 40)
    ),
    "adamw_mask_tree": lambda m: m.adamw(1e-2, weight_decay=0.1, mask={"w": True, "b": False}),
    "adamw_mask_callable": lambda m: m.adamw(
        1e-2, weight_decay=0.1, mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p)
    ),
    "multi_steps": lambda m: optax.MultiSteps(m.adam(1e-2), every_k_schedule=3),
    "masked": lambda m: optax.masked(m.nadam(1e-2), {"w": True, "b": False}),
    "flatten": lambda m: optax.flatten(m.adamax(1e-2)),
    "apply_if_finite": lambda m: optax.apply_if_finite(m.adam(1e-2), max_consecutive_errors=3),
    "inject_adamw": lambda m: optax.inject_hyperparams(m.adamw)(
        learning_rate=1e-2, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-9, weight_decay=0.1
    ),
    "inject_amsgrad": lambda m: optax.inject_hyperparams(m.amsgrad)(learning_rate=SCHEDULE, b1=0.8),
    "inject_adamaxw": lambda m: optax.inject_hyperparams(m.adamaxw)(
        learning_rate=1e-2, b1=0.8, b2=0.99, eps=1e-6, weight_decay=0.1
    ),
    "inject_nadam": lambda m: optax.inject_hyperparams(m.nadam)(learning_rate=1e-2, b2=0.99),
}


@pytest.mark.parametrize("name", WRAPPERS)
def test_wrapped_like_optax(name):
    ours, theirs = _both(WRAPPERS[name])
    chex.assert_trees_all_close(ours, theirs, rtol=2e-5, atol=1e-6)


def test_inject_hyperparams_traces_every_numeric_argument():
    """Changing a hyperparameter in the state changes the step without recompiling."""
    tx = optax.inject_hyperparams(adam_optax.adam)(learning_rate=1e-2, b1=0.9, b2=0.999, eps=1e-8)
    params = _params()
    state = tx.init(params)
    update = jax.jit(tx.update)
    g = _grads()[1]
    fast, _ = update(g, state, params)
    state.hyperparams["learning_rate"] = jnp.asarray(2e-2, jnp.float32)
    with backend_compiles() as compiled:
        faster, _ = update(g, state, params)
    assert not compiled
    chex.assert_trees_all_close(faster, jax.tree.map(lambda u: 2 * u, fast), rtol=1e-6)


def test_apply_if_finite_skips_a_nan_step_with_mu_dtype():
    tx = optax.apply_if_finite(
        adam_optax.adam(1e-2, mu_dtype=jnp.bfloat16), max_consecutive_errors=2
    )
    params = _params()
    state = tx.init(params)
    update = jax.jit(tx.update)
    bad = jax.tree.map(lambda x: jnp.full_like(x, jnp.nan), params)
    updates, new_state = update(bad, state, params)
    chex.assert_trees_all_equal(updates, jax.tree.map(jnp.zeros_like, params))
    assert int(new_state.notfinite_count) == 1
    chex.assert_trees_all_equal(new_state.inner_state, state.inner_state)
    updates, new_state = update(_grads()[1], new_state, params)
    assert int(new_state.notfinite_count) == 0
    chex.assert_tree_all_finite(updates)


def test_bfloat16_params_under_inject_hyperparams():
    """optax rounds b2=0.999 to bfloat16 1.0 here; we refuse it, and work in float32."""
    params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), _params())
    with pytest.raises(TypeError, match="b1 arrived as bfloat16"):
        optax.inject_hyperparams(adam_optax.adam)(learning_rate=1e-2).init(params)
    with pytest.raises(TypeError, match="b1 arrived as bfloat16"):
        jax.jit(optax.inject_hyperparams(adam_optax.adam)(learning_rate=1e-2).init)(params)
    tx = optax.inject_hyperparams(adam_optax.adam, hyperparam_dtype=jnp.float32)(learning_rate=1e-2)
    grads = [jax.tree.map(lambda x: x.astype(jnp.bfloat16), g) for g in _grads()]
    history, _ = _train(tx, params, grads)
    reference, _ = _train(adam_optax.adam(1e-2))
    chex.assert_trees_all_equal_dtypes(history[-1], params)
    chex.assert_trees_all_close(
        jax.tree.map(lambda x: x.astype(jnp.float32), history[-1]), reference[-1], rtol=0, atol=0.05
    )


def test_map_params_tree_get_and_set():
    tx = adam_optax.adam(1e-2)
    params = _params()
    _, state = _train(tx)
    halved = optax.tree.map_params(
        tx.init, lambda x: x / 2, state, transform_non_params=lambda x: x
    )
    chex.assert_trees_all_close(
        optax.tree.get(halved, "mu"), jax.tree.map(lambda m: m / 2, optax.tree.get(state, "mu"))
    )
    assert int(optax.tree.get(halved, "count")) == len(_grads())
    reset = optax.tree.set(state, count=jnp.zeros([], jnp.int32))
    assert int(optax.tree.get(reset, "count")) == 0
    chex.assert_trees_all_equal_structs(reset, tx.init(params))


class ExtraArgumentsAndNoneLeaves(chex.TestCase):
    """optax passes extra keyword arguments to update, and None marks a frozen leaf."""

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        ("adamw", lambda: adam_optax.adamw(1e-2)),
        ("chain_amsgrad", lambda: optax.chain(optax.clip(1.0), adam_optax.amsgrad(1e-2))),
    )
    def test_update(self, make):
        tx = make()
        params = {"w": jnp.ones(3), "frozen": None}
        grads = {"w": jnp.full(3, 0.5), "frozen": None}
        update = self.variant(lambda g, s, p: tx.update(g, s, p, loss=1.0, unused=2))
        updates, _ = update(grads, tx.init(params), params)
        assert updates["frozen"] is None
        # The first step is -lr·sign(g).
        chex.assert_trees_all_close(updates, {"w": jnp.full(3, -1e-2), "frozen": None}, rtol=1e-3)
