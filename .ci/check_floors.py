"""Check that the floor job's pins (.ci/floor-requirements.txt) are pyproject.toml's floors.

pyproject.toml declares ``jax>=A`` and ``optax>=B``; the floor job must install exactly
``jax==A`` and ``optax==B``, so that the versions it tests are the ones users are promised.
"""

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    declared = {}
    for dependency in dependencies:
        match = re.fullmatch(r"([\w-]+)>=([\w.]+)", dependency)
        if match is None:
            print(f"pyproject.toml: {dependency!r} is not of the form name>=floor", file=sys.stderr)
            return 1
        declared[match[1]] = match[2]
    text = (ROOT / ".ci" / "floor-requirements.txt").read_text()
    pinned = {name: re.search(rf"^{name}==([\w.]+)$", text, re.MULTILINE) for name in declared}
    pinned = {name: match and match[1] for name, match in pinned.items()}
    if pinned != declared:
        print(
            f"pyproject.toml's floors {declared} differ from the pins in "
            f".ci/floor-requirements.txt {pinned}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
