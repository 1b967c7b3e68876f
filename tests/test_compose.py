"""adam_optax inside everything optax users wrap it in, against optax's own Adam."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adam_optax
from tests import reference


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

    history = []
    for g in _grads() if grads is None else grads:
        params, state = step(params, state, g)
        history.append(params)
    assert step._cache_size() == 1, "the jitted step was compiled more than once"
    return history, state


def _assert_same(ours, theirs, rtol=2e-5, atol=1e-6):
    for a, b in zip(ours, theirs, strict=True):
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=atol), a, b)


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
    _assert_same(ours, theirs)


def test_inject_hyperparams_traces_every_numeric_argument():
    """Changing a hyperparameter in the state changes the step without recompiling."""
    tx = optax.inject_hyperparams(adam_optax.adam)(learning_rate=1e-2, b1=0.9, b2=0.999, eps=1e-8)
    params = _params()
    state = tx.init(params)
    update = jax.jit(tx.update)
    g = _grads()[1]
    fast, _ = update(g, state, params)
    state.hyperparams["learning_rate"] = jnp.asarray(2e-2, jnp.float32)
    faster, _ = update(g, state, params)
    np.testing.assert_allclose(faster["w"], 2 * fast["w"], rtol=1e-6)
    assert update._cache_size() == 1


def test_apply_if_finite_skips_a_nan_step_with_mu_dtype():
    tx = optax.apply_if_finite(
        adam_optax.adam(1e-2, mu_dtype=jnp.bfloat16), max_consecutive_errors=2
    )
    params = _params()
    state = tx.init(params)
    update = jax.jit(tx.update)
    bad = jax.tree.map(lambda x: jnp.full_like(x, jnp.nan), params)
    updates, new_state = update(bad, state, params)
    assert all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(updates))
    assert int(new_state.notfinite_count) == 1
    jax.tree.map(np.testing.assert_array_equal, new_state.inner_state, state.inner_state)
    updates, new_state = update(_grads()[1], new_state, params)
    assert int(new_state.notfinite_count) == 0
    assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))


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
    for leaf in jax.tree.leaves(history[-1]):
        assert leaf.dtype == jnp.bfloat16
    _assert_same(
        [jax.tree.map(lambda x: x.astype(jnp.float32), history[-1])],
        [reference[-1]],
        rtol=0,
        atol=0.05,
    )


def test_float16_params_follow_the_float64_reference():
    """Small float16 gradients, then zeros. (1 - b2) g² rounds to 0 in float16 below
    |g| = 5.5e-3, so nu defaults to float32 and the step is computed in float32. With
    a float16 nu the second update here was m̂/eps = -inf. (The gradients keep
    m = (1 - b1) g above float16's subnormals, whose rounding would dominate.)"""
    params = {"w": jnp.ones(3, jnp.float16)}
    g16 = np.array([1e-3, 4e-3, -2e-3], np.float16).astype(np.float64)
    grads = [g16 * s for s in (1, 0, 0, 1, 0)]
    thetas = reference.trajectory(np.ones(3), grads, 1e-3)
    expected = np.diff(np.concatenate([np.ones((1, 3)), thetas]), axis=0)
    tx = adam_optax.adam(1e-3)
    state = tx.init(params)
    for g, want in zip(grads, expected, strict=True):
        updates, state = tx.update({"w": jnp.asarray(g, jnp.float16)}, state, params)
        assert updates["w"].dtype == jnp.float16
        np.testing.assert_allclose(np.asarray(updates["w"], np.float64), want, rtol=2e-3)


def test_eager_steps_compile_nothing_new():
    """The bias corrections power b by a float step count: an integer one that is
    concrete makes jnp.power compile a new integer_pow at every eager step."""
    tx = adam_optax.nadam(1e-3, amsgrad=True)
    params, (g, *_) = _params(), _grads()
    state = tx.init(params)
    for _ in range(2):
        _, state = tx.update(g, state, params)
    compiles = []

    def listen(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        for _ in range(3):
            _, state = tx.update(g, state, params)
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert not compiles


@pytest.mark.parametrize(
    "tx",
    [adam_optax.scale_by_adam(amsgrad=True, nesterov=True), adam_optax.scale_by_adamax()],
    ids=["adam", "adamax"],
)
def test_leaves_of_one_shape_share_one_traced_step(tx):
    """A tree traces the leaf math once per shape and dtype, so tracing and
    lowering a model of many leaves stays cheap (benchmarks/ measures it)."""
    params = {f"w{i}": jnp.ones(3) for i in range(20)}
    jaxpr = jax.make_jaxpr(tx.update)(params, tx.init(params))
    calls = [e.params["jaxpr"] for e in jaxpr.eqns if e.primitive.name in ("jit", "pjit")]
    assert len(calls) == 20
    assert len({id(c) for c in calls}) == 1


def test_map_params_tree_get_and_set():
    tx = adam_optax.adam(1e-2)
    params = _params()
    _, state = _train(tx)
    halved = optax.tree.map_params(
        tx.init, lambda x: x / 2, state, transform_non_params=lambda x: x
    )
    np.testing.assert_allclose(
        optax.tree.get(halved, "mu")["w"], optax.tree.get(state, "mu")["w"] / 2
    )
    assert int(optax.tree.get(halved, "count")) == len(_grads())
    reset = optax.tree.set(state, count=jnp.zeros([], jnp.int32))
    assert int(optax.tree.get(reset, "count")) == 0
    assert jax.tree.structure(reset) == jax.tree.structure(tx.init(params))


def test_extra_arguments_to_update_and_none_leaves():
    params = {"w": jnp.ones(3), "frozen": None}
    grads = {"w": jnp.full(3, 0.5), "frozen": None}
    for tx in (adam_optax.adamw(1e-2), optax.chain(optax.clip(1.0), adam_optax.amsgrad(1e-2))):
        state = tx.init(params)
        updates, state = jax.jit(lambda g, s, p, tx=tx: tx.update(g, s, p, loss=1.0, unused=2))(
            grads, state, params
        )
        assert updates["frozen"] is None
        np.testing.assert_allclose(updates["w"], -1e-2, rtol=1e-3)  # the first step is -lr·sign(g)


def test_count_saturates_instead_of_overflowing():
    tx = adam_optax.adam(1e-2)
    params = _params()
    state = optax.tree.set(
        tx.init(params), count=jnp.asarray(jnp.iinfo(jnp.int32).max - 1, jnp.int32)
    )
    update = jax.jit(tx.update)
    for g in _grads()[1:4]:
        updates, state = update(g, state, params)
        assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))
    assert int(optax.tree.get(state, "count")) == jnp.iinfo(jnp.int32).max
