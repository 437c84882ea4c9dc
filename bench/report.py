"""docs/benchmarks.md holds one section per benchmark; each run replaces only its own."""

from __future__ import annotations

import re
from pathlib import Path

from slm.atomic import atomic_write_text

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\n"
    "Each section is written by its benchmark in `bench/` (`make bench` runs them); every\n"
    "figure is compared with a peer measured in the same run. Do not edit the sections by hand.\n"
)


def write_section(path: Path, key: str, title: str, body: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else HEADER
    start, end = f"<!-- bench:{key}:start -->", f"<!-- bench:{key}:end -->"
    section = f"{start}\n## {title}\n\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    atomic_write_text(path, text)


def publish(key: str, title: str, body: str, write: bool = True) -> None:
    """Print a benchmark's section and, unless told not to, put it in docs/benchmarks.md."""
    print(body)
    if write:
        write_section(DOCS, key, title, body)
        print("wrote docs/benchmarks.md")
