"""optax.inject_hyperparams over the 8-bit transforms: the numbers that are hyperparameters
inject; the ones that set the state's layout (block_size, min_quantized_size) are not
hyperparameters, and a change after init raises instead of being silently ignored."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import adam_optax

PARAMS = {"w": jnp.linspace(-1.0, 1.0, 4096).reshape(64, 64), "b": jnp.ones(3)}  # w: 8-bit
GRADS = jax.tree.map(lambda p: jnp.cos(3 * p), PARAMS)
BASE = {"learning_rate": 0.1, "b1": 0.9, "b2": 0.999, "eps": 1e-8, "weight_decay": 0.1}
NEW = {"learning_rate": 0.05, "b1": 0.5, "b2": 0.9, "eps": 0.3, "weight_decay": 0.7}


# Rounded to nearest, so that runs with the same moments store the same codes.
adamw8bit = functools.partial(adam_optax.adamw8bit, stochastic_rounding=False)


def second_update(tx, state=None):
    """The update of a second step, the first on which b1 and b2 matter."""
    state = tx.init(PARAMS) if state is None else state
    step = jax.jit(tx.update)
    _, state = step(GRADS, state, PARAMS)
    return step(jax.tree.map(lambda g: jnp.sin(7 * g), GRADS), state, PARAMS)[0]


def test_the_layout_arguments_are_not_hyperparameters():
    tx = optax.inject_hyperparams(adam_optax.adamw8bit)(learning_rate=0.1)
    hyperparams = tx.init(PARAMS).hyperparams
    assert "block_size" not in hyperparams and "min_quantized_size" not in hyperparams
    assert {"learning_rate", "b1", "b2", "eps", "eps_root", "weight_decay"} <= set(hyperparams)
    tx = optax.inject_hyperparams(adam_optax.scale_by_adam8bit)()
    assert "block_size" not in tx.init(PARAMS).hyperparams


@pytest.mark.parametrize("name", list(NEW))
def test_a_numeric_hyperparameter_changed_after_init_takes_effect(name):
    """A change in state.hyperparams gives the update of adamw8bit built with the new value,
    and not the old one's (the 8-bit state layout of "w" is kept throughout)."""
    tx = optax.inject_hyperparams(adamw8bit, hyperparam_dtype=jnp.float32)(**BASE)
    state = tx.init(PARAMS)
    state.hyperparams[name] = jnp.asarray(NEW[name], jnp.float32)
    got = second_update(tx, state)
    expected = second_update(adamw8bit(**{**BASE, name: NEW[name]}))
    old = second_update(adamw8bit(**BASE))
    # Not bit for bit: injected, 1 - b2 is computed from b2 in float32 (tests/test_compose.py).
    for key in PARAMS:
        change = np.abs(np.asarray(expected[key]) - np.asarray(old[key]))
        error = np.abs(np.asarray(got[key]) - np.asarray(expected[key]))
        assert change.max() > 1e-3 * np.abs(np.asarray(old[key])).max(), key
        assert np.all(error <= 1e-3 * change.max()), (key, error.max(), change.max())


@pytest.mark.parametrize(
    ("name", "new", "message"),
    [
        ("block_size", 8, r"block_size is 8 at update, but init made the state with 16"),
        ("min_quantized_size", 4097, r"min_quantized_size is 4097 at update, which would not "),
        ("min_quantized_size", 3, r"would quantize params\['b'\] \(3 elements\)"),
    ],
)
def test_a_layout_argument_changed_after_init_raises(name, new, message):
    """Passed explicitly, they become hyperparameters: eagerly, a changed one raises at
    update; under jit (traced, so not comparable) any such one is refused, with the fix."""
    tx = optax.inject_hyperparams(adamw8bit)(
        learning_rate=0.1, block_size=16, min_quantized_size=4096
    )
    state = tx.init(PARAMS)
    tx.update(GRADS, state, PARAMS)  # unchanged: fine
    state.hyperparams[name] = jnp.asarray(new)
    with pytest.raises(ValueError, match=message + r".*cannot change after init"):
        tx.update(GRADS, state, PARAMS)
    with pytest.raises(TypeError, match=r"arrived traced at update: .*static_args="):
        jax.jit(tx.update)(GRADS, tx.init(PARAMS), PARAMS)


def test_static_layout_arguments_inject_nothing_and_run_under_jit():
    layout = ("block_size", "min_quantized_size")
    tx = optax.inject_hyperparams(adamw8bit, static_args=layout)(learning_rate=0.1, block_size=8)
    state = tx.init(PARAMS)
    assert not set(layout) & set(state.hyperparams)
    got = second_update(tx, state)
    expected = second_update(adamw8bit(learning_rate=0.1, block_size=8))
    np.testing.assert_allclose(got["w"], expected["w"], rtol=1e-4, atol=1e-7)
