"""`slm-node plan`: what a folder of mixed data holds and how long training it takes here."""

from __future__ import annotations

import re
import wave
from pathlib import Path

import pytest

from harness import cli
from tests.conftest import CORPORA

pytestmark = pytest.mark.slow  # the CLI as a process


def _media_folder(root: Path) -> Path:
    folder = root / "data"
    (folder / "photos").mkdir(parents=True)
    (folder / "notes.txt").write_text((CORPORA / "law.txt").read_text()[:30_000])
    for name in ("a.png", "b.jpg", "c.webp"):
        (folder / "photos" / name).write_bytes(b"\x89PNG" + bytes(2000))
    with wave.open(str(folder / "voice.wav"), "wb") as w:  # 4 s of 16 kHz mono silence
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes(bytes(2 * 16_000 * 4))
    (folder / ".hidden.txt").write_text("not data")
    return folder


def test_plan_counts_every_modality_and_times_an_epoch(tmp_path: Path) -> None:
    done = cli("slm-node", "plan", "--data", str(_media_folder(tmp_path)), "--preset", "slm-tiny")
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines() if line.strip()}
    assert rows["text"][1] == "1" and int(rows["text"][4].replace(",", "")) > 5_000
    assert rows["image"][1:2] == ["3"] and rows["image"][4] == "768"  # 256 tokens each
    assert rows["audio"][1] == "1" and rows["audio"][4] == "100"  # 4 s at 25 tokens/s
    assert "video" not in rows and ".hidden" not in done.stdout
    assert re.search(r"measured\s+[\d,]+ training tokens/s", done.stdout)
    assert re.search(r"epoch\s+[\d,]+ training tokens .*: \d", done.stdout)


@pytest.mark.parametrize("kind", ["missing", "empty", "no text"])
def test_plan_refuses_what_it_cannot_plan_in_one_line(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "data"
    if kind != "missing":
        path.mkdir()
    if kind == "no text":
        (path / "x.png").write_bytes(bytes(100))
    done = cli("slm-node", "plan", "--data", str(path), "--preset", "slm-tiny")
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    expected = {"missing": "does not exist", "empty": "holds no files", "no text": "no UTF-8 text"}
    assert len(lines) == 1 and expected[kind] in lines[0], done.stderr
