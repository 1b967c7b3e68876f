#!/usr/bin/env python
"""Study: the bytes per parameter XLA's compiled train step moves, and in how many loops.

``python benchmarks/step_bytes.py`` compiles the donated train step of adam_optax and
optax, and the roofline of bench_adam.py, on one float32 vector of 1e6 parameters. It
prints ``compiled.cost_analysis()["bytes accessed"]`` per parameter and the number of
loops (XLA loop fusions) over the parameters in the compiled HLO. An ideal Adam step moves
28 B/param in one loop. XLA:CPU's multi-output fusion is off by default; to see what it
changes, run with ``XLA_FLAGS=--xla_backend_extra_options=xla_cpu_use_multi_output_fusion``.
"""

import argparse
import os
import sys
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from bench_adam import (
    LEARNING_RATE,
    OPTIMIZERS,
    flat_case,
    make_case_data,
    make_train_step,
    roofline_step,
    to_pytree,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.parse_args(argv)  # no options: --help, and an unknown option fails, before any work
    case = flat_case(10**6)
    params, grads = make_case_data(case)
    p, g = to_pytree(case, params), to_pytree(case, grads)
    steps = {}
    for name, make in OPTIMIZERS.items():
        tx = make(LEARNING_RATE)
        steps[name] = (make_train_step(tx), (p, tx.init(p), g), (0, 1))
    steps["roofline"] = (roofline_step, (p, jnp.zeros_like(p), jnp.ones_like(p), g), (0, 1, 2))
    print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '(unset)')}, jax {jax.__version__}")
    print(f"{'step':<12} {'B/param':>8} {'loops':>6}")
    for name, (fn, args, donate) in steps.items():
        compiled = jax.jit(fn, donate_argnums=donate).lower(*args).compile()
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost  # a list in older jax
        kernels = [
            ln.split(" fusion(")[0] for ln in compiled.as_text().splitlines() if "kLoop" in ln
        ]
        loops = sum(f"[{case.n_params}]" in k for k in kernels)  # over the parameters
        print(f"{name:<12} {cost['bytes accessed'] / case.n_params:8.1f} {loops:6d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
