"""Shared fixtures: tiny models trained once per session on the shipped corpora."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch

from slm.config import get_preset
from slm.model_folder import LoadedModel, load_model_folder
from slm.train import read_corpus, train

ROOT = Path(__file__).resolve().parent.parent
CORPORA = ROOT / "data" / "corpora"

torch.set_num_threads(min(2, os.cpu_count() or 1))


@dataclass
class TrainedDomain:
    folder: Path
    held_out: str  # the last tenth of the corpus, never seen in training

    def load(self) -> LoadedModel:
        return load_model_folder(self.folder)


def held_out_split(domain: str) -> tuple[str, str]:
    text = read_corpus(CORPORA / f"{domain}.txt")
    cut = text.rfind("\n", 0, int(len(text) * 0.9))
    return text[:cut], text[cut + 1 :]


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TrainedDomain]:
    """slm-tiny models of medicine, law and religion, trained on 90% of each corpus."""
    preset = get_preset("slm-tiny")
    out: dict[str, TrainedDomain] = {}
    for domain in ("medicine", "law", "religion"):
        seen, held_out = held_out_split(domain)
        folder = tmp_path_factory.mktemp(f"model-{domain}")
        train(seen, domain, folder, preset.model, replace(preset.train, max_steps=200))
        out[domain] = TrainedDomain(folder, held_out)
    return out
