"""Counting XLA compilations through JAX's public monitoring events.

The "no recompile" guarantees are checked here rather than with
``chex.assert_max_traces``: a step can compile again without being traced again
(a changed sharding or committedness of an argument), and that is the cost a
user pays.
"""

from __future__ import annotations

import contextlib
import re
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


_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) \((.*)\) -> .*\{$")
_DEFINITION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = ")
_FUSION_CALL = re.compile(r" fusion\(.*calls=%?([\w.\-]+)")


def fused_kernels(hlo_text: str) -> list[str]:
    """The fused computations of a compiled module's text, each with its names normalized.

    XLA compiles a kernel per fusion, and identical ones once; two fusions are
    identical here when their computations differ only in the names of the
    computation, its parameters and its instructions (numbered in order of
    appearance), and in their metadata. ``len(set(fused_kernels(text)))`` is
    then the number of distinct kernels.
    """
    bodies: dict[str, list[str]] = {}
    name = None
    for line in hlo_text.splitlines():
        if name is None:
            match = _COMPUTATION.match(line)
            if match:
                name, bodies[name] = match.group(1), [line]
        else:
            bodies[name].append(line)
            if line == "}":
                name = None
    called = {m.group(1) for body in bodies.values() for m in map(_FUSION_CALL.search, body) if m}

    def normalized(lines: list[str]) -> str:
        header = _COMPUTATION.match(lines[0])
        assert header is not None
        names = [header.group(1), *re.findall(r"([\w.\-]+): ", header.group(2))]
        names += [m.group(1) for m in map(_DEFINITION.match, lines[1:]) if m]
        renamed = {old: f"v{i}" for i, old in enumerate(names)}
        text = re.sub(r",? metadata=\{[^}]*\}", "", "\n".join(lines))
        return re.sub(
            r"%?([A-Za-z_][\w.\-]*)",
            lambda m: renamed.get(m.group(1), "callee" if m.group(1) in bodies else m.group(1)),
            text,
        )

    return [normalized(bodies[n]) for n in sorted(called)]
