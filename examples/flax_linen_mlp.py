"""Train the MLP of flax_mlp.py with Flax Linen, a TrainState and adam_optax.adamw.

    python examples/flax_linen_mlp.py     # same options as flax_mlp.py

Data, optimizer, progress, checkpoints, plots and the command line come from common.py.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import common
import flax.linen as nn
import jax
from flax.training.train_state import TrainState

# Data: common.load_data gives flattened images in [0, 1] and integer labels.


class MLP(nn.Module):
    """Hidden Dense layers with ReLU, then a Dense layer of logits."""

    hidden: Sequence[int]
    num_classes: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.num_classes)(x)


def create_train_state(
    config: common.Config, data: common.Dataset, params: Any = None
) -> TrainState:
    """A fresh TrainState; `params`, if given, replaces the random initialization."""
    model = MLP(config.hidden, data.num_classes)
    if params is None:
        params = model.init(jax.random.key(config.seed), data.x_train[:1])["params"]
    return TrainState.create(
        apply_fn=model.apply, params=params, tx=common.make_optimizer(config, data)
    )


@functools.partial(jax.jit, donate_argnums=0)
def train_step(
    state: TrainState, x: jax.Array, y: jax.Array
) -> tuple[TrainState, jax.Array, jax.Array]:
    """One AdamW step on a batch; returns the new state and the batch's loss and accuracy."""

    def loss_fn(params: Any) -> tuple[jax.Array, jax.Array]:
        return common.loss_and_accuracy(state.apply_fn({"params": params}, x), y)

    (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads=grads), loss, accuracy


@jax.jit
def eval_step(state: TrainState, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    return common.loss_and_accuracy(state.apply_fn({"params": state.params}, x), y)


def train_and_evaluate(
    config: common.Config, data: common.Dataset, params: Any = None
) -> tuple[TrainState, common.History]:
    """Trains `config.epochs` epochs (resuming from `config.checkpoint_dir` if it holds a
    checkpoint), evaluating on the test set after each; returns the state and history."""
    state = create_train_state(config, data, params)
    with common.Run(config, data) as run:
        state = run.resume(state)  # a TrainState is a pytree of params, opt_state and step
        for epoch in run.epochs():
            for x, y in run.batches(epoch):
                state, loss, accuracy = train_step(state, x, y)
                run.log_step(loss, accuracy)
            test_loss, test_accuracy = eval_step(state, data.x_test, data.y_test)
            run.end_epoch(epoch, test_loss, test_accuracy, state)
    return state, run.history


def main(argv: Sequence[str] | None = None) -> common.History:
    return common.main(argv, train_and_evaluate, __doc__)


if __name__ == "__main__":
    main()
