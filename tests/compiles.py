"""Counting XLA compilations through JAX's public monitoring events.

The "no recompile" guarantees are checked here rather than with
``chex.assert_max_traces``: a step can compile again without being traced again
(a changed sharding or committedness of an argument), and that is the cost a
user pays.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax

_BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def backend_compiles() -> Iterator[list[float]]:
    """Yields a list that gains one entry (its duration) per XLA compilation in the block."""
    durations: list[float] = []

    def listen(event: str, duration: float, **kwargs) -> None:
        if event == _BACKEND_COMPILE:
            durations.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield durations
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
