"""The routing evaluation's fast version (`make eval` at the tiny preset, on the shipped
corpora): real hub and node processes, prompts from text no node trained on. Routing must
beat random by a wide margin; the full figures are in docs/evaluation.md."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evaluation.report import report, write_png
from evaluation.routers import FULL
from evaluation.run import evaluate

pytestmark = pytest.mark.slow  # training and real processes

DOMAINS = ["law", "medicine", "religion", "code"]


def test_routing_beats_random_by_a_wide_margin(tmp_path: Path) -> None:
    result = evaluate("tiny", "shipped", tmp_path, only=DOMAINS)
    assert result["domains"] == sorted(DOMAINS) and result["prompts"] == 8 * len(DOMAINS)
    accuracy = result["accuracy"]
    assert accuracy[FULL] >= 0.75, accuracy
    assert accuracy[FULL] - accuracy["random"] >= 0.4, accuracy
    assert sum(map(sum, result["confusion"])) == result["prompts"]
    assert result["bpb"]["oracle"] > 0 and result["bpb"]["generalist"] > 0
    text = report(result, "pytest")
    assert "## Routing accuracy" in text and "| law |" in text
    write_png(tmp_path / "c.png", np.array(result["confusion"]))
    assert (tmp_path / "c.png").read_bytes().startswith(b"\x89PNG")
