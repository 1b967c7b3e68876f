"""Data-parallel training across processes: jax.distributed, one global mesh, and
adam_optax.shard_state (ZeRO stage 1).

    python examples/data_parallel.py                                  # 2 processes x 2 devices
    python examples/data_parallel.py --processes 4 --devices-per-process 2
    python examples/data_parallel.py --state 7byte                    # bfloat16, 8-bit state

It launches N processes on this machine, each with a few CPU devices, and every process
runs the same program (`worker`): it joins the others through `jax.distributed`, builds one
mesh over all N x k devices, and trains the digits MLP on one global batch per step, each
device taking its slice of the batch and holding 1/(N k) of AdamW's moments. The params
stay replicated. ``--state`` says how the moments are stored: float32 (8 bytes per
parameter), 8bit (``adamw8bit``: about 2, on leaves of 4096 elements or more, cut over
the devices in whole blocks with their scales), 4bit (``adamw4bit``: about 1, two codes a
byte, cut in whole blocks likewise), or 7byte (``master_weights(adamw8bit)``
with bfloat16 params: bfloat16 params and gradients, an int8 correction and 8-bit
moments, 7 bytes per parameter on one device; the correction is sharded too). The result
line's ``state_held`` is the share of the optimizer state's bytes on process 0's devices.

On a GPU or TPU cluster, start one process per host yourself (SLURM's srun, or each Cloud
TPU VM) and call `jax.distributed.initialize()` with no arguments: it reads the
coordinator, process count and id from the cluster.

Options are checked before any process starts (one line, exit code 2). If a process dies,
the launcher stops the others and exits with code 1 and one line saying which and why (its
last log line); a coordinator that never answers ends each worker after --init-timeout
seconds. Ctrl-C stops them all, with one line and exit code 130. Only the result line goes
to stdout; everything else the processes write (gloo's lines) goes to their logs.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import common
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import adam_optax


def init_params(sizes: Sequence[int], seed: int) -> list[dict[str, np.ndarray]]:
    """LeCun-normal weights and zero biases, the same in every process (same seed)."""
    rng = np.random.default_rng(seed)
    return [
        {"w": (rng.normal(size=(n, m)) / np.sqrt(n)).astype(np.float32), "b": np.zeros(m, "f4")}
        for n, m in itertools.pairwise(sizes)
    ]


def predict(params: list[dict[str, jax.Array]], x: jax.Array) -> jax.Array:
    """The MLP's logits: dense layers with ReLU between them."""
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def loss_fn(params: list[dict[str, jax.Array]], x: jax.Array, y: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(predict(params, x), y).mean()


def global_array(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """One array over the whole mesh from `x`, which every process holds in full:
    each process places only the slices its own devices hold."""
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


TRAIN_EXAMPLES = 1437  # in common.load_data()'s digits: what --batch-size may not pass
STATE_FORMATS = ("float32", "8bit", "4bit", "7byte")  # --state


def create_optimizer(state: str, mesh: Mesh) -> optax.GradientTransformation:
    """AdamW with its state stored as `state` says (see the module docstring), sharded
    over the mesh's "data" axis: ZeRO stage 1, 8- and 4-bit leaves in whole blocks."""
    if state == "float32":
        adamw = adam_optax.adamw(3e-3, weight_decay=1e-4)
    elif state == "8bit":
        adamw = adam_optax.adamw8bit(3e-3, weight_decay=1e-4)
    elif state == "4bit":
        adamw = adam_optax.adamw4bit(3e-3, weight_decay=1e-4)
    elif state == "7byte":  # the float32 master weights as bfloat16 params + int8 corrections
        adamw = adam_optax.master_weights(adam_optax.adamw8bit(3e-3, weight_decay=1e-4))
    else:
        raise ValueError(f"state must be one of {STATE_FORMATS}, got {state!r}.")
    return adam_optax.shard_state(adamw, mesh, axis="data")


def params_dtype(state: str) -> Any:
    """The params' dtype: bfloat16 in the 7-byte set-up, else float32."""
    return jnp.bfloat16 if state == "7byte" else jnp.float32


def held_share(tree: Any) -> float:
    """The fraction of `tree`'s bytes that this process's devices hold, each slice once:
    1 for a replicated tree, 1/N for one sharded evenly over N processes."""
    held = total = 0
    for leaf in jax.tree.leaves(tree):
        total += leaf.nbytes
        slices = {
            tuple((s.start, s.stop) for s in shard.index): shard.data.nbytes
            for shard in leaf.addressable_shards
        }
        held += sum(slices.values())
    return held / total


def train(
    data: common.Dataset,
    mesh: Mesh,
    *,
    steps: int,
    batch_size: int,
    hidden: int = 64,
    seed: int = 0,
    state: str = "float32",
) -> tuple[list[float], float, float]:
    """`steps` AdamW steps on global batches of `batch_size` split over the mesh's "data"
    axis, the optimizer state stored as `state` says (see `create_optimizer`); returns
    the loss of every step, the test accuracy, and the share of the optimizer state's
    bytes that this process holds (see `held_share`)."""
    replicated, split = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    sizes = [data.num_features, hidden, data.num_classes]
    dtype = params_dtype(state)
    params = jax.tree.map(
        lambda a: global_array(a.astype(dtype), replicated), init_params(sizes, seed)
    )
    tx = create_optimizer(state, mesh)
    opt_state = tx.init(params)  # each device holds 1/len(mesh.devices) of the moments
    share = held_share(opt_state)

    @jax.jit
    def step(params, state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)  # XLA sums grads over devices
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    steps_per_epoch, losses = len(data.x_train) // batch_size, []
    for i in range(steps):
        epoch, k = divmod(i, steps_per_epoch)  # a new shuffle each epoch, the same everywhere
        order = np.random.default_rng([seed, epoch]).permutation(len(data.x_train))
        batch = order[k * batch_size : (k + 1) * batch_size]
        x = global_array(data.x_train[batch], split)
        y = global_array(data.y_train[batch], split)
        params, opt_state, loss = step(params, opt_state, x, y)
        losses.append(float(loss))  # a replicated scalar: every process can read it

    x_test, y_test = (global_array(a, replicated) for a in (data.x_test, data.y_test))
    accuracy = jax.jit(lambda params: jnp.mean(jnp.argmax(predict(params, x_test), -1) == y_test))
    return losses, float(accuracy(params)), share


def worker(args: argparse.Namespace) -> None:
    """One process of the run: join the others, then train on the global mesh. Only the
    result line goes to stdout: what the C++ runtime (gloo's connection lines) and Python
    write to the process's stdout goes to its stderr, which the launcher logs."""
    result = os.fdopen(os.dup(1), "w")  # the real stdout, for the result line alone
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=args.coordinator,
        num_processes=args.processes,
        process_id=args.process_id,
        initialization_timeout=args.init_timeout,
        heartbeat_timeout_seconds=args.heartbeat_timeout,
    )
    mesh = Mesh(np.array(jax.devices()), ("data",))  # every device of every process
    start = time.perf_counter()
    losses, accuracy, share = train(
        common.load_data(),
        mesh,
        steps=args.steps,
        batch_size=args.batch_size,
        seed=args.seed,
        state=args.state,
    )
    if jax.process_index() == 0:
        if args.losses:
            np.save(args.losses, np.array(losses))
        seconds = time.perf_counter() - start
        print(
            f"test_accuracy={accuracy:.4f} loss={losses[-1]:.4f} steps={len(losses)} "
            f"state={args.state} state_held={share:.2f} seconds={seconds:.1f}",
            file=result,
            flush=True,
        )


def supervise(commands: Sequence[Sequence[str]], env: dict[str, str], timeout: float) -> int:
    """Runs the commands as processes and waits for all of them. As soon as one fails, or
    after `timeout` seconds, stops the others and says so in one line; returns the exit
    code (0 when all succeeded). Process 0's output is ours; the others' goes to log files,
    and so does every process's stderr."""
    logs = tempfile.mkdtemp(prefix="data_parallel_")
    with contextlib.ExitStack() as files:
        procs = []
        try:
            for i, command in enumerate(commands):
                log = files.enter_context(open(os.path.join(logs, f"process{i}.log"), "w"))
                stdout = None if i == 0 else log
                procs.append(subprocess.Popen(command, env=env, stdout=stdout, stderr=log))
            failure = wait_for_all(procs, timeout, logs)
        finally:  # also on Ctrl-C: no process outlives the launcher
            for p in procs:
                if p.poll() is None:
                    p.kill()
                p.wait()
    if failure:
        print(f"data_parallel: {failure}; stopped the other processes", file=sys.stderr)
        return 1
    shutil.rmtree(logs)
    return 0


def wait_for_all(procs: list[subprocess.Popen], timeout: float, logs: str) -> str | None:
    """Waits until every process has ended, one has failed or `timeout` seconds have
    passed; returns what went wrong, or None."""
    deadline = time.monotonic() + timeout
    while True:
        for i, p in enumerate(procs):
            if p.poll():  # ended, with an error code or a signal
                return describe_exit(i, p.returncode, logs)
        if all(p.poll() == 0 for p in procs):
            return None
        if time.monotonic() > deadline:
            return f"no result after {timeout:g} s (logs in {logs})"
        time.sleep(0.1)


def describe_exit(i: int, code: int, logs: str) -> str:
    """Which process ended how, with the last line of its log: a Python error's own line."""
    how = f"{signal.Signals(-code).name}" if code < 0 else f"code {code}"
    log = os.path.join(logs, f"process{i}.log")
    with open(log, errors="replace") as file:
        lines = [line.strip() for line in file if line.strip()]
    why = f": {lines[-1]}" if lines else ""
    return f"process {i} exited with {how}{why} (its log: {log})"


def launch(args: argparse.Namespace) -> int:
    """Starts `args.processes` workers on this machine, each with its own CPU devices."""
    with socket.socket() as s:  # a free port for the coordinator (process 0)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={args.devices_per_process}",
    }
    script = [sys.executable, os.path.abspath(__file__), *args.argv]
    commands = [
        [*script, "--coordinator", f"127.0.0.1:{port}", "--process-id", str(i)]
        for i in range(args.processes)
    ]
    return supervise(commands, env, args.timeout)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line, checked whole before any process starts: a bad value ends the run
    with one line and exit code 2."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.error = lambda message: parser.exit(2, f"{parser.prog}: error: {message}\n")

    def at_least(low: float, cast: type = int) -> Callable[[str], Any]:
        """An argparse `type=`: a number >= low; an integer also below 2**31."""
        kind = "an integer" if cast is int else "a number"
        high = 2**31 if cast is int else math.inf
        allowed = f"{kind} >= {low:g}" + (" and below 2**31" if cast is int else "")
        return common.number(cast, allowed, lambda v: low <= v < high, float32=False)

    def npy_file(path: str) -> str:  # an argparse `type=`: a .npy file it can write now
        if not path.endswith(".npy") or os.path.basename(path) == ".npy":
            raise argparse.ArgumentTypeError(f"must name a .npy file, got {path}")
        existed = os.path.exists(path)
        try:
            open(path, "ab").close()  # what np.save will do after training, tried first
        except OSError as error:
            raise argparse.ArgumentTypeError(f"cannot write {path} ({error.strerror})") from None
        if not existed:
            os.remove(path)
        return path

    add = parser.add_argument
    add("--processes", type=at_least(1), default=2, help="processes on this machine")
    add("--devices-per-process", type=at_least(1), default=2, help="CPU devices of each")
    add("--steps", type=at_least(1), default=200, help="AdamW steps")
    add("--batch-size", type=at_least(1), default=64, help="global batch size")
    add("--seed", type=at_least(0), default=0, help="seeds the params and the shuffles")
    add(
        "--state",
        choices=STATE_FORMATS,
        default="float32",
        help="how AdamW stores its moments: float32 (8 bytes per parameter), 8bit (about 2, "
        "on leaves of 4096 elements or more), 4bit (about 1, likewise), or 7byte "
        "(master_weights(adamw8bit) with bfloat16 params)",
    )
    add("--losses", type=npy_file, help="save the loss of every step to this .npy file")
    add("--timeout", type=at_least(1e-3, float), default=600, help="seconds for the whole run")
    add("--init-timeout", type=at_least(1), default=60, help="seconds to wait for all")
    add("--heartbeat-timeout", type=at_least(1), default=30, help="seconds of silence")
    add("--coordinator", help=argparse.SUPPRESS)  # set by the launcher
    add("--process-id", type=int, help=argparse.SUPPRESS)  # set by the launcher
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the workers get the same
    devices = args.processes * args.devices_per_process
    if args.batch_size % devices:
        parser.error(
            f"--batch-size {args.batch_size} must be a multiple of --processes x "
            f"--devices-per-process = {devices}"
        )
    if args.batch_size > TRAIN_EXAMPLES:
        parser.error(f"--batch-size {args.batch_size}: over the {TRAIN_EXAMPLES} examples")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.coordinator is not None:  # a worker
        worker(args)
        return 0
    try:
        return launch(args)
    except KeyboardInterrupt:  # supervise has stopped the workers
        sys.stderr.write("data_parallel.py: interrupted; the same command starts over\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
