"""The docstrings' ``Args:`` sections agree with the signatures they document.

Every public function writes its arguments out in Google style (as optax does), so
that an editor's hover and a reader of the source see them. This test keeps the text
honest: the ``Args:`` section names exactly the signature's parameters, in order; an
argument with a default ends its text with ``Default: ``value``.``, the value equal to
the signature's; a required argument states none. Dataclasses list their fields under
``Attributes:`` in the same way.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re

import pytest

import adam_optax

# The one convention for stating a default: the entry's last sentence.
_DEFAULT = re.compile(r"Default: ``(?P<value>[^`]+)``\.$")
# An entry's first line: "name: text" or "name (type): text".
_ENTRY = re.compile(r"^(?P<name>\*{0,2}\w+)(?: \([^)]*\))?:(?: (?P<text>.*))?$")


def section(doc: str, title: str) -> list[tuple[str, str]] | None:
    """The (name, text) entries of a Google-style section, or None if there is none.

    Continuation lines are joined to their entry with single spaces.
    """
    lines = inspect.cleandoc(doc).splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.rstrip() == f"{title}:")
    except StopIteration:
        return None
    entries: list[tuple[str, str]] = []
    entry_indent = None
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent == 0:  # the next section ("Returns:") or the prose after it
            break
        if entry_indent is None:
            entry_indent = indent
        if indent == entry_indent:
            match = _ENTRY.match(line.strip())
            if match is None:
                entries.append((line.strip(), ""))  # not an entry: reported by name
            else:
                entries.append((match["name"], match["text"] or ""))
        elif entries and indent > entry_indent:
            name, text = entries[-1]
            entries[-1] = (name, f"{text} {line.strip()}".strip())
        else:
            break
    return entries


def _same(stated: str, default: object) -> bool:
    """Whether the text's default (a Python literal) equals the signature's."""
    try:
        value = ast.literal_eval(stated)
    except (ValueError, SyntaxError):
        return stated == repr(default)
    return type(value) is type(default) and value == default


def check_entries(
    what: str, entries: list[tuple[str, str]] | None, expected: dict[str, object]
) -> list[str]:
    """Problems with ``entries`` against ``expected``: name -> default (``_REQUIRED``)."""
    if entries is None:
        return [f"{what}: no section"]
    problems = []
    names = [name for name, _ in entries]
    if names != list(expected):
        problems.append(f"{what}: documents {names}, but the signature is {list(expected)}")
    for name, text in entries:
        if name not in expected:
            continue
        default = expected[name]
        match = _DEFAULT.search(text)
        if "Default" in _DEFAULT.sub("", text):
            problems.append(f"{what}: {name}: a default stated other than as 'Default: ``x``.'")
        if default is _REQUIRED:
            if match:
                problems.append(f"{what}: {name} is required but states a default")
        elif match is None:
            problems.append(f"{what}: {name} does not state its default {default!r}")
        elif not _same(match["value"], default):
            problems.append(
                f"{what}: {name} states the default {match['value']}, but it is {default!r}"
            )
        if not text or "{" + name + "}" in text or text.strip() == "{args}":
            problems.append(f"{what}: {name} has no text")
    return problems


_REQUIRED = object()


def problems_of(obj: object) -> list[str]:
    """Everything wrong with ``obj``'s docstring against its signature or fields."""
    name = getattr(obj, "__name__", repr(obj))
    doc = inspect.getdoc(obj)
    if not doc:
        return [f"{name}: no docstring"]
    if "{args}" in doc:
        return [f"{name}: the docstring has an unfilled {{args}} marker"]
    if inspect.isclass(obj):
        if not dataclasses.is_dataclass(obj):
            return []
        fields = {
            f.name: _REQUIRED if f.default is dataclasses.MISSING else f.default
            for f in dataclasses.fields(obj)
        }
        return check_entries(f"{name} Attributes", section(doc, "Attributes"), fields)
    parameters = inspect.signature(obj).parameters.values()
    expected = {
        p.name: _REQUIRED if p.default is inspect.Parameter.empty else p.default for p in parameters
    }
    problems = check_entries(f"{name} Args", section(doc, "Args"), expected)
    for title in ("Returns", "Example"):
        if f"\n{title}:" not in doc:
            problems.append(f"{name}: no {title}: section")
    return problems


def _ours(name: str) -> bool:
    """Public names defined in adam_optax (optax's state classes are optax's to document)."""
    return getattr(getattr(adam_optax, name), "__module__", "").startswith("adam_optax")


@pytest.mark.parametrize("name", [n for n in adam_optax.__all__ if _ours(n)])
def test_public_docstring_matches_signature(name):
    assert problems_of(getattr(adam_optax, name)) == []


def test_every_public_function_is_checked():
    functions = [n for n in adam_optax.__all__ if inspect.isfunction(getattr(adam_optax, n))]
    assert len(functions) >= 15 and all(_ours(n) for n in functions)


# --- The checker rejects what it should ---------------------------------------------------------


def good(learning_rate, b1=0.9, *, nesterov=False, name="x"):
    """Example.

    Args:
        learning_rate: the step size.
        b1: a decay rate,
            over two lines. Default: ``0.9``.
        nesterov: a flag. Default:
            ``False``.
        name: a name. Default: ``'x'``.

    Returns:
        Nothing.

    Example:
        good(1.0)
    """


def wrong_default(learning_rate, b1=0.9):
    """Example.

    Args:
        learning_rate: the step size.
        b1: a decay rate. Default: ``0.99``.

    Returns:
        Nothing.

    Example:
        wrong_default(1.0)
    """


def missing_argument(learning_rate, b1=0.9, b2=0.999):
    """Example.

    Args:
        learning_rate: the step size.
        b1: a decay rate. Default: ``0.9``.

    Returns:
        Nothing.

    Example:
        missing_argument(1.0)
    """


def out_of_order(learning_rate, b1=0.9, b2=0.999):
    """Example.

    Args:
        learning_rate: the step size.
        b2: a decay rate. Default: ``0.999``.
        b1: a decay rate. Default: ``0.9``.

    Returns:
        Nothing.

    Example:
        out_of_order(1.0)
    """


def unstated_default(learning_rate, flag=False):
    """Example.

    Args:
        learning_rate: the step size. Default: ``1.0``.
        flag: a flag, by default off. Defaults to False.

    Returns:
        Nothing.

    Example:
        unstated_default(1.0)
    """


def type_mismatch(flag=False):
    """Example.

    Args:
        flag: a flag. Default: ``0``.

    Returns:
        Nothing.

    Example:
        type_mismatch()
    """


def placeholder(learning_rate):
    """Example.

    Args:
        {args}

    Returns:
        Nothing.
    """


def test_checker_accepts_a_correct_docstring():
    assert problems_of(good) == []


@pytest.mark.parametrize(
    "fn, message",
    [
        (wrong_default, r"b1 states the default 0.99, but it is 0.9"),
        (missing_argument, r"documents \['learning_rate', 'b1'\], but the signature is"),
        (out_of_order, r"documents \['learning_rate', 'b2', 'b1'\]"),
        (unstated_default, r"learning_rate is required but states a default"),
        (unstated_default, r"flag: a default stated other than"),
        (unstated_default, r"flag does not state its default False"),
        (type_mismatch, r"flag states the default 0, but it is False"),
        (placeholder, r"unfilled \{args\} marker"),
    ],
)
def test_checker_rejects(fn, message):
    problems = problems_of(fn)
    assert any(re.search(message, p) for p in problems), problems


def test_checker_rejects_a_dataclass_whose_attributes_differ():
    @dataclasses.dataclass
    class Pair:
        """Two numbers.

        Attributes:
            first: the first.
        """

        first: int
        second: int

    assert any("documents ['first']" in p for p in problems_of(Pair))
