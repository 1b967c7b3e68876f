"""The low-bit states in Flax's training loops, step for step against plain optax.

Flax NNX's ``nnx.Optimizer`` keeps the state of each params leaf in a ``Variable`` and,
after each update, writes into it what NNX flattens the new state to; Linen's
``TrainState`` keeps the state as a plain pytree field. Each test runs a few steps of a
small MLP through one of them, and the same steps through an independent path:
``tx.init``, ``tx.update`` and ``optax.apply_updates`` on a dict of params, with the
forward written in plain JAX. The params must agree to the bit: the optimizer math is
the same, so any difference is the framework losing or reshaping state (before
``QuantizedTree``, the second 8-bit update in NNX raised a tree-structure error). The
first layer's kernel is large enough to be stored in 8 or 4 bits (``MIN_QUANTIZED``),
the other leaves keep float32 moments.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import adam_optax
from tests.compiles import backend_compiles

nnx = pytest.importorskip("flax.nnx")

SIZES = (16, 64, 4)  # the first kernel, 16 x 64 = 1,024 elements, is 8- or 4-bit
MIN_QUANTIZED = 512
STEPS = 3

# One transform object each, shared: nnx.Optimizer keeps it as static data, so a new
# one would make nnx.jit trace and compile the step again.
OPTIMIZERS = {
    "adamw8bit": adam_optax.adamw8bit(
        3e-2, weight_decay=0.1, block_size=32, min_quantized_size=MIN_QUANTIZED
    ),
    "adamw4bit": adam_optax.adamw4bit(
        3e-2, weight_decay=0.1, block_size=32, min_quantized_size=MIN_QUANTIZED
    ),
    "adamw_bf16_sr": adam_optax.adamw(
        3e-2,
        weight_decay=0.1,
        mu_dtype=jnp.bfloat16,
        nu_dtype=jnp.bfloat16,
        stochastic_rounding=True,
    ),
}


def _data() -> tuple[jax.Array, jax.Array]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, SIZES[0])).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(np.tanh(2 * x[:, : SIZES[-1]]))


def _forward(params: dict, x: jax.Array) -> jax.Array:
    """The MLP on a dict of params, in plain JAX: the independent path."""
    h = jnp.tanh(x @ params["hidden"]["kernel"] + params["hidden"]["bias"])
    return h @ params["out"]["kernel"] + params["out"]["bias"]


def _loss(prediction: jax.Array) -> jax.Array:
    return jnp.mean((prediction - _data()[1]) ** 2)


class MLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(SIZES[0], SIZES[1], rngs=rngs)
        self.out = nnx.Linear(SIZES[1], SIZES[2], rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.out(jnp.tanh(self.hidden(x)))


def _initial_params() -> dict:
    """LeCun-normal kernels and small biases, drawn by NumPy (NNX's initializers would
    compile a dozen small programs)."""
    rng = np.random.default_rng(1)
    params = {}
    for name, (n_in, n_out) in (("hidden", SIZES[:2]), ("out", SIZES[1:])):
        kernel = rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)
        bias = 0.1 * rng.standard_normal(n_out)
        params[name] = {"kernel": kernel.astype(np.float32), "bias": bias.astype(np.float32)}
    return params


def _model() -> MLP:
    model = nnx.eval_shape(lambda: MLP(nnx.Rngs(0)))
    params = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(params, jax.tree.map(jnp.asarray, _initial_params()))
    nnx.update(model, params)
    return model


def _params(model: MLP) -> dict:
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


@functools.cache
def _plain(name: str, steps: int, jitted: bool = True) -> tuple[dict, ...]:
    """The params after each of ``steps`` plain-optax steps from MLP's init.

    The gradients are always jitted; ``jitted`` says whether the update is, as a
    whole step with them, or runs op by op. XLA rounds some fused arithmetic
    differently in the last bit (weight decay, learning rate and apply_updates,
    for one), so each way of running is compared with the same way.
    """
    tx = OPTIMIZERS[name]
    grads = jax.jit(jax.grad(lambda p: _loss(_forward(p, _data()[0]))))

    def step(params, state):
        updates, state = tx.update(grads(params), state, params)
        return optax.apply_updates(params, updates), state

    step = jax.jit(step) if jitted else step
    params = jax.tree.map(jnp.asarray, _initial_params())
    state, history = tx.init(params), []
    for _ in range(steps):
        params, state = step(params, state)
        history.append(params)
    return tuple(history)


def _grads(model: MLP) -> nnx.State:
    return nnx.grad(lambda m: _loss(m(_data()[0])))(model)


def _step(model: MLP, optimizer: nnx.Optimizer) -> None:
    optimizer.update(model, _grads(model))


_jit_step = nnx.jit(_step)  # one trace for every test that steps an MLP and its optimizer


def _assert_bit_equal(got: dict, expected: dict) -> None:
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# 4-bit under nnx.jit only: eagerly, NNX's handling of the state is the same for both.
@pytest.mark.parametrize(
    ("name", "jitted"),
    [("adamw8bit", True), ("adamw8bit", False), ("adamw4bit", True)],
    ids=["8bit-nnx.jit", "8bit-eager", "4bit-nnx.jit"],
)
def test_nnx_optimizer_steps_low_bit_like_plain_optax(name, jitted):
    """Eagerly, the update runs op by op on both sides, the gradients jitted."""
    model = _model()
    optimizer = nnx.Optimizer(model, OPTIMIZERS[name], wrt=nnx.Param)
    grads = nnx.jit(_grads)
    for expected in _plain(name, STEPS, jitted):
        if jitted:
            _jit_step(model, optimizer)
        else:
            optimizer.update(model, grads(model))
        _assert_bit_equal(_params(model), expected)
    mu = optimizer.opt_state[0].mu
    assert isinstance(mu, adam_optax.QuantizedTree) and mu.bits == int(name[5])
    codes = mu.codes["hidden"]["kernel"]
    assert codes.dtype == jnp.uint8
    assert codes.shape == (SIZES[0], SIZES[1] * mu.bits // 8)  # 4 bits: two codes a byte
    assert mu.codes["out"]["kernel"].dtype == jnp.float32


def test_nnx_optimizer_steps_bfloat16_stochastic_rounding_like_plain_optax():
    model = _model()
    optimizer = nnx.Optimizer(model, OPTIMIZERS["adamw_bf16_sr"], wrt=nnx.Param)
    for _ in range(STEPS):
        _jit_step(model, optimizer)
    _assert_bit_equal(_params(model), _plain("adamw_bf16_sr", STEPS)[-1])
    assert optimizer.opt_state[0].nu["hidden"]["kernel"].dtype == jnp.bfloat16


def _opt_state_leaves(optimizer: nnx.Optimizer) -> list:
    return jax.tree.leaves(nnx.state(optimizer, nnx.OptState))


@pytest.mark.parametrize("name", ["adamw8bit", "adamw4bit"])
def test_nnx_low_bit_state_resumes_bit_exactly_from_an_orbax_checkpoint(name, tmp_path):
    """Saved after one step and restored into a fresh model and optimizer, the run goes
    on as if never stopped: the same params, 8- or 4-bit codes and scales, and step
    count."""
    ocp = pytest.importorskip("orbax.checkpoint")

    def state(model, optimizer):
        return {"params": nnx.state(model, nnx.Param), "optimizer": nnx.state(optimizer)}

    model = _model()
    optimizer = nnx.Optimizer(model, OPTIMIZERS[name], wrt=nnx.Param)
    _jit_step(model, optimizer)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "state", state(model, optimizer))
    checkpointer.wait_until_finished()
    resumed = _model()
    nnx.update(resumed, jax.tree.map(jnp.zeros_like, nnx.state(resumed, nnx.Param)))
    resumed_optimizer = nnx.Optimizer(resumed, OPTIMIZERS[name], wrt=nnx.Param)
    target = jax.device_get(state(resumed, resumed_optimizer))  # as examples/common.py does
    restored = checkpointer.restore(tmp_path / "state", target)
    nnx.update(resumed, restored["params"])
    nnx.update(resumed_optimizer, restored["optimizer"])
    for _ in range(STEPS - 1):
        _jit_step(model, optimizer)
        _jit_step(resumed, resumed_optimizer)
    _assert_bit_equal(_params(resumed), _params(model))
    _assert_bit_equal(_opt_state_leaves(resumed_optimizer), _opt_state_leaves(optimizer))
    _assert_bit_equal(_params(resumed), _plain(name, STEPS)[-1])
    assert int(resumed_optimizer.step[...]) == STEPS
    assert resumed_optimizer.opt_state[0].mu.bits == int(name[5])


def test_linen_train_state_steps_8bit_like_plain_optax():
    nn = pytest.importorskip("flax.linen")
    train_state = pytest.importorskip("flax.training.train_state")

    class LinenMLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = jnp.tanh(nn.Dense(SIZES[1], name="hidden")(x))
            return nn.Dense(SIZES[2], name="out")(h)

    module = LinenMLP()
    state = train_state.TrainState.create(
        apply_fn=module.apply,
        params=_params(_model()),  # the same initial params as _plain's
        tx=OPTIMIZERS["adamw8bit"],
    )

    @jax.jit
    def step(state):
        loss = lambda params: _loss(state.apply_fn({"params": params}, _data()[0]))  # noqa: E731
        return state.apply_gradients(grads=jax.grad(loss)(state.params))

    for expected in _plain("adamw8bit", STEPS):
        state = step(state)
        _assert_bit_equal(state.params, expected)
    assert isinstance(state.opt_state[0].mu, adam_optax.QuantizedTree)


@pytest.mark.skipif(jax.device_count() < 2, reason="needs 2 devices (see conftest)")
def test_nnx_optimizer_steps_sharded_8bit_state_like_plain_optax():
    """shard_state(adamw8bit) in an nnx.Optimizer: the 8-bit codes and scales of the
    first kernel (16 rows) are cut over 2 devices, no step after the first compiles
    again, and the params are the same up to float32 rounding (XLA partitions some of
    the gradients' sums, in another order; a lost or misplaced state would be off by
    up to the learning rate, 3e-2)."""
    mesh = jax.make_mesh((2,), ("data",), devices=jax.devices()[:2])
    replicated = NamedSharding(mesh, P())
    model = _model()
    nnx.update(model, jax.device_put(nnx.state(model, nnx.Param), replicated))
    tx = adam_optax.shard_state(OPTIMIZERS["adamw8bit"], mesh)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    # Flax makes its step counter on the default device; a jitted step returns it on
    # the mesh, and the second step would compile again for that (float32 Adam too).
    optimizer.step.set_value(jax.device_put(optimizer.step.get_value(), replicated))
    _jit_step(model, optimizer)
    with backend_compiles() as compiles:
        for _ in range(STEPS - 1):
            _jit_step(model, optimizer)
    assert not compiles, "a step after the first compiled again"
    got, expected = _params(model), _plain("adamw8bit", STEPS)[-1]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, expected)
    mu = optimizer.opt_state.inner[0].mu
    for part in (mu.codes["hidden"]["kernel"], mu.scales["hidden"]["kernel"]):
        assert {shard.data.shape[0] for shard in part.get_value().addressable_shards} == {16 // 2}
