"""What every results file says about the run that wrote it.

A figure is only as good as what is known of its run: the command that produced it, when,
at which commit of adam_optax, and how busy the machine was (on shared cores a busy
machine slows some contenders more than others). Each benchmark script records these
with the helpers below, so that its results file names all four.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
from pathlib import Path


def git_commit() -> str:
    """The checkout's short commit, marked when the working tree differs from it."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=10).stdout.strip()  # fmt: skip

    try:
        head = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not head:
        return "unknown"
    return f"{head} with uncommitted changes" if changed else head


def utc_now() -> str:
    """The date and time, UTC, to the second: when the run started."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def load_average() -> float | None:
    """The 1-minute load average: how many processes competed for the cores."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def main(argv: list[str] | None = None) -> None:
    """Prints what a results file written now would record, besides its command."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.parse_args(argv)
    print(f"date {utc_now()}, adam_optax {git_commit()}, load average {load_average()}")


if __name__ == "__main__":
    main()
