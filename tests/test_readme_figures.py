"""The README's figures come verbatim from the files the benchmarks write.

The convention, stated once here and in a comment in README.md: a paragraph, list item or
table row of the README that quotes a measurement names its source,
``benchmarks/results/NAME.md`` (in backticks, since the README must not link into the
repository); every number in it, outside code, must occur as a number in the named file(s).
A block that names no results file must quote no measurement: a number followed by a unit
(``%``, ``×``, ``ms``, ``s``, ``B/param``, ``bytes per parameter``, ...) there is a figure
without a source. Rewriting a results file therefore
fails this test until the README quotes the new figures.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = "benchmarks/results/"

# A number as a reader sees one: 7.06, 4,198,404, 1.5e-05. Not a part of a name (bf16,
# flat_1e7, float32) and not a number that names something (8-bit, 2-core).
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*(?:e[-+]?\d+)?(?![\w]|-[A-Za-z])")
# In a results file, any run of digits counts, whatever surrounds it (flat_1e7, +0.25%).
_ANY_NUMBER = re.compile(r"(?<![\d.])\d+(?:[.,]\d+)*(?:e[-+]?\d+)?(?!\d)")
_SOURCE = re.compile(re.escape(RESULTS) + r"[\w.-]+")
_CODE_SPAN = re.compile(r"`[^`]*`")
_UNIT = re.compile(
    r"(?<![\w.])\d+(?:[.,]\d+)*(?:e[-+]?\d+)?\s*"
    r"(?:%|×|x\b|ms\b|s\b|seconds?\b|minutes?\b|B/param|bytes? (?:of state )?per param"
    r"|[KMG]B\b|GB/s)"
)


def prose_blocks(markdown: str) -> list[tuple[int, str]]:
    """The README's text outside fenced code and HTML comments, cut into the units a figure
    and its source share: a paragraph, a list item, a table row or a heading. Each comes
    with the number of its first line."""
    blocks: list[tuple[int, list[str]]] = []
    fenced = comment = False
    new_block = True
    for number, line in enumerate(markdown.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("```"):
            fenced, new_block = not fenced, True
            continue
        if "<!--" in line:
            comment = True
        if fenced or comment or not stripped:
            comment = comment and "-->" not in line
            new_block = True
            continue
        starts = re.match(r"(\||#|[-*] |\d+\. )", stripped)
        if new_block or starts:
            blocks.append((number, []))
        blocks[-1][1].append(stripped)
        new_block = stripped.startswith(("|", "#"))
    return [(number, " ".join(lines)) for number, lines in blocks]


def unbacked_figures(markdown: str, root: Path = ROOT) -> list[str]:
    """Every figure of ``markdown`` that its named results file does not hold, and every
    measurement in a block that names no results file: one message each."""
    problems = []
    numbers_in: dict[str, set[str]] = {}
    for number, block in prose_blocks(markdown):
        sources = _SOURCE.findall(block)
        text = _CODE_SPAN.sub(" ", block)
        if not sources:
            problems += [
                f"line {number}: {m.group(0)!r} is a measurement with no results file named"
                for m in _UNIT.finditer(text)
            ]
            continue
        held: set[str] = set()
        for source in sources:
            if source not in numbers_in:
                path = root / source
                numbers_in[source] = (
                    set(_ANY_NUMBER.findall(path.read_text(encoding="utf-8")))
                    if path.is_file()
                    else set()
                )
                if not path.is_file():
                    problems.append(f"line {number}: {source} does not exist")
            held |= numbers_in[source]
        problems += [
            f"line {number}: {figure} is not in {', '.join(sources)}"
            for figure in _NUMBER.findall(text)
            if figure not in held
        ]
    return problems


def test_every_readme_figure_is_in_its_results_file():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert unbacked_figures(readme) == []


def test_the_readme_quotes_figures_from_results_files():
    """The check above must have something to check: the README's offer table cites."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    cited = {s for _, block in prose_blocks(readme) for s in _SOURCE.findall(block)}
    assert {f"{RESULTS}memory.md", f"{RESULTS}memory_training.md"} <= cited


def test_a_stale_figure_is_flagged():
    """A figure changed in the README but not in the results file (or the reverse) fails."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    line = next(line for line in readme.splitlines() if f"{RESULTS}memory_training.md" in line)
    figure = _NUMBER.findall(_CODE_SPAN.sub(" ", line))[0]
    stale = readme.replace(line, line.replace(figure, "6.93", 1))
    problems = unbacked_figures(stale)
    assert len(problems) == 1
    assert "6.93 is not in benchmarks/results/memory_training.md" in problems[0]


def test_a_figure_without_a_source_is_flagged():
    planted = "The 8-bit step is 3x faster, and state takes 2.5 B/param.\n"
    problems = unbacked_figures(planted)
    assert [p.split(": ", 1)[1] for p in problems] == [
        "'3x' is a measurement with no results file named",
        "'2.5 B/param' is a measurement with no results file named",
    ]


def test_a_missing_results_file_is_flagged(tmp_path):
    problems = unbacked_figures(f"about 7 (`{RESULTS}gone.md`)\n", root=tmp_path)
    assert problems == [
        f"line 1: {RESULTS}gone.md does not exist",
        f"line 1: 7 is not in {RESULTS}gone.md",
    ]


def test_code_and_comments_are_not_figures(tmp_path):
    """Numbers in code (commands, outputs, names) and in HTML comments are not quotes."""
    (tmp_path / RESULTS).mkdir(parents=True)
    (tmp_path / RESULTS / "r.md").write_text("| 8-bit | 2.031 | flat_1e7 |\n")
    text = (
        "<!-- 9 ms, a note for editors -->\n"
        "```python\nprint(3.5)  # 3.5 ms\n```\n"
        f"8-bit state: 2.031 on `flat_1e7` (`{RESULTS}r.md`)\n"
    )
    assert unbacked_figures(text, root=tmp_path) == []
    assert unbacked_figures(text.replace("2.031", "2.03"), root=tmp_path) == [
        f"line 5: 2.03 is not in {RESULTS}r.md"
    ]
