"""Train an MLP classifier with Flax NNX and adam_optax.adamw.

    python examples/flax_mlp.py                      # scikit-learn's 8x8 digits
    python examples/flax_mlp.py --data mnist.npz --hidden 1000 1000   # the Adam paper's MLP

The optimizer is `optax.chain(optax.clip_by_global_norm(1.0), adam_optax.adamw(schedule,
weight_decay=...))` with a warmup-cosine schedule (see common.make_optimizer). The script
reads top to bottom: data, model, train_step, eval_step, train_and_evaluate; what it shares
with flax_linen_mlp.py (data, optimizer, progress, checkpoints, plots, command line) is in
common.py.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence

import common
import jax
from flax import nnx

# Data: common.load_data gives flattened images in [0, 1] and integer labels.


class MLP(nnx.Module):
    """Dense layers of the given sizes with ReLU between them; the last returns logits."""

    def __init__(self, sizes: Sequence[int], *, rngs: nnx.Rngs):
        pairs = itertools.pairwise(sizes)
        self.layers = nnx.List([nnx.Linear(n_in, n_out, rngs=rngs) for n_in, n_out in pairs])

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers[:-1]:
            x = nnx.relu(layer(x))
        return self.layers[-1](x)


def create_model(config: common.Config, data: common.Dataset) -> MLP:
    return MLP([data.num_features, *config.hidden, data.num_classes], rngs=nnx.Rngs(config.seed))


# nnx.jit donates the model's and the optimizer's buffers: the step updates them in place.
@functools.partial(nnx.jit, donate_argnums=(0, 1))
def train_step(
    model: MLP, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """One AdamW step on a batch; returns the batch's loss and accuracy before the step."""

    def loss_fn(model: MLP) -> tuple[jax.Array, jax.Array]:
        return common.loss_and_accuracy(model(x), y)

    (loss, accuracy), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    return loss, accuracy


@nnx.jit
def eval_step(model: MLP, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    return common.loss_and_accuracy(model(x), y)


def train_and_evaluate(config: common.Config, data: common.Dataset) -> tuple[MLP, common.History]:
    """Trains `config.epochs` epochs (resuming from `config.checkpoint_dir` if it holds a
    checkpoint), evaluating on the test set after each; returns the model and history."""
    model = create_model(config, data)
    optimizer = nnx.Optimizer(model, common.make_optimizer(config, data), wrt=nnx.Param)

    def checkpoint() -> dict[str, nnx.State]:
        # The optimizer's state holds its step count and the optax state (mu, nu, ...).
        return {"params": nnx.state(model, nnx.Param), "optimizer": nnx.state(optimizer)}

    with common.Run(config, data) as run:
        restored = run.resume(checkpoint())
        nnx.update(model, restored["params"])
        nnx.update(optimizer, restored["optimizer"])
        for epoch in run.epochs():
            for x, y in run.batches(epoch):
                loss, accuracy = train_step(model, optimizer, x, y)
                run.log_step(loss, accuracy)
            test_loss, test_accuracy = eval_step(model, data.x_test, data.y_test)
            run.end_epoch(epoch, test_loss, test_accuracy, checkpoint())
    return model, run.history


def main(argv: Sequence[str] | None = None) -> common.History:
    return common.main(argv, train_and_evaluate, __doc__)


if __name__ == "__main__":
    main()
