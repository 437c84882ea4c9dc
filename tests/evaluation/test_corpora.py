"""`make corpora` (evaluation/corpora.py) without the network: the sources that need no
download (this Python's standard library) build, cap and skip on a second run."""

from __future__ import annotations

from pathlib import Path

from evaluation.corpora import MAX_BYTES, SOURCES, build, cap


def test_a_second_build_does_nothing_and_sources_are_capped(tmp_path: Path) -> None:
    local = [s for s in SOURCES if all(p.registry == "local" for p in s.packages)]
    assert {s.domain for s in local} == {"code"}
    lines: list[str] = []
    manifest = build(tmp_path, local, lines.append)
    for source in local:
        text = (tmp_path / "code" / f"{source.name}.txt").read_text(encoding="utf-8")
        assert 1_000_000 < len(text.encode()) <= MAX_BYTES
        assert "def " in text and "import " in text
        assert manifest[f"code/{source.name}"]["licence"] == "PSF-2.0"
    lines.clear()
    build(tmp_path, local, lines.append)
    assert all("up to date" in line for line in lines) and len(lines) == len(local)


def test_cap_cuts_at_a_line_end_and_normalises_blank_runs() -> None:
    text = "a" * 10 + "\n\n\n\n" + "b" * 10 + "\n" + "c" * 10
    assert cap(text, 1000) == "a" * 10 + "\n\n" + "b" * 10 + "\n" + "c" * 10 + "\n"
    assert cap(text, 20) == "a" * 10 + "\n\n"


def test_every_domain_has_two_sources_and_every_package_is_pinned() -> None:
    domains: dict[str, int] = {}
    for s in SOURCES:
        domains[s.domain] = domains.get(s.domain, 0) + 1
        assert all(p.version for p in s.packages) and s.licence
    assert len(domains) >= 7 and min(domains.values()) >= 2
