"""Train the MLP of flax_mlp.py with Flax Linen, a TrainState and adam_optax.adamw.

    python examples/flax_linen_mlp.py                                        # 8x8 digits
    python examples/flax_linen_mlp.py --data mnist.npz --hidden 1000 1000    # the paper's MLP
    python examples/flax_linen_mlp.py --state 8bit                           # moments in 8 bits

Top to bottom: the data, the model, the optimizer, a jitted train step that returns the
next TrainState in the buffers of the last, an eval step, the training loop and the
command line. common.py holds what flax_mlp.py shares with it: data, options, checkpoints;
the optimizer is flax_mlp.py's own.
"""

import argparse
import functools
import time
from collections.abc import Sequence
from typing import Any

import common
import flax.linen as nn
import jax
import optax
from flax.training.train_state import TrainState
from flax_mlp import create_optimizer

# 1. The data: common.load_data() gives flattened images scaled to [0, 1] and integer
#    labels: scikit-learn's 8x8 digits (1,437 to train on, 360 to test), or --data's .npz.


# 2. The model: a multilayer perceptron.
class MLP(nn.Module):
    """Hidden Dense layers with ReLU, then a Dense layer of logits."""

    hidden: Sequence[int]
    num_classes: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.num_classes)(x)


# 3. The optimizer: create_optimizer, imported from flax_mlp.py, which builds it from the
#    same options (--state, --compare-optax): gradient clipping, then adam_optax.adamw on a
#    warmup-cosine schedule.


# 4. The train and eval steps.
def loss_and_accuracy(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, (logits.argmax(axis=-1) == labels).mean()


# Donating the state (params, optimizer state, step) lets XLA update it in place.
@functools.partial(jax.jit, donate_argnums=0)
def train_step(
    state: TrainState, x: jax.Array, y: jax.Array
) -> tuple[TrainState, jax.Array, jax.Array]:
    """One step on a batch; returns the next state and the batch's loss and accuracy."""

    def loss_fn(params: Any) -> tuple[jax.Array, jax.Array]:
        return loss_and_accuracy(state.apply_fn({"params": params}, x), y)

    (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads=grads), loss, accuracy


@jax.jit
def eval_step(state: TrainState, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    return loss_and_accuracy(state.apply_fn({"params": state.params}, x), y)


# 5. The training loop.
def train_and_evaluate(
    config: argparse.Namespace,
    data: common.Dataset,
    params: Any = None,
) -> tuple[TrainState, common.History]:
    """Trains config.epochs epochs, evaluating on the test set after each, and returns the
    state and the history; `params`, if given, replaces the random initialization. With
    --checkpoint-dir, saves after each epoch and resumes from the latest save: a resumed
    run ends with the parameters of an uninterrupted one."""
    steps_per_epoch = common.steps_per_epoch(config, data)
    model = MLP(config.hidden, data.num_classes)
    if params is None:
        params = model.init(jax.random.key(config.seed), data.x_train[:1])["params"]
    tx = create_optimizer(config, config.epochs * steps_per_epoch)
    state = TrainState.create(apply_fn=model.apply, params=params, tx=tx)
    state_bytes = common.state_bytes_per_param(tx, params)

    checkpoints = common.Checkpoints(config)  # with --checkpoint-dir
    state, history = checkpoints.restore(state)  # a TrainState is a pytree of arrays
    history.state_bytes_per_param = state_bytes
    print(f"{config.optimizer}: {config.epochs} epochs of {steps_per_epoch} steps", flush=True)
    for epoch in range(len(history.epoch_end), config.epochs):
        for x, y in common.batches(config, data, epoch):  # stops here on Ctrl-C
            state, loss, accuracy = train_step(state, x, y)
            history.log_step(loss, accuracy)
        history.log_epoch(*eval_step(state, data.x_test, data.y_test))
        checkpoints.save(state, history)
    return state, history


# 6. The command line.
def main(argv: Sequence[str] | None = None) -> dict[str, common.History]:
    """Runs the command line `argv`; returns the history of each optimizer it trained."""
    config = common.parse_args(argv, __doc__)
    with common.exit_cleanly(config):  # bad input and Ctrl-C: one line, no traceback
        start = time.perf_counter()
        data = common.load_data(config.data)
        histories = {config.optimizer: train_and_evaluate(config, data)[1]}
        seconds = time.perf_counter() - start
        if config.compare_optax:
            reference = argparse.Namespace(
                **{**vars(config), "optimizer": "optax.adamw", "checkpoint_dir": None}
            )
            histories[reference.optimizer] = train_and_evaluate(reference, data)[1]
            print("compare_optax:", common.compare(*histories.values()))
        if config.plot is not None:
            common.plot(histories, config.plot)
    history = histories[config.optimizer]
    print(
        f"test_accuracy={history.test_accuracy[-1]:.4f} state={config.state} "
        f"state_bytes_per_param={history.state_bytes_per_param:.2f} "
        f"loss={history.test_loss[-1]:.4f} "
        f"steps={len(history.train_loss)} seconds={seconds:.1f}"
    )
    return histories


if __name__ == "__main__":
    main()
