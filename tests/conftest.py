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


@pytest.fixture(scope="session")
def law_adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A law adapter (rank 2) of the embedded base, trained 2 steps of one 32-token window on
    the first 20,000 characters of the law corpus: a real adapted model folder in about half a
    minute, not a useful one. Its recorded settings make a round's local steps as small."""
    from slm import pretrained
    from slm.config import ADAPTER_TRAIN, DEFAULT_BASE, AdapterConfig
    from slm.offsets import measured

    base = pretrained.load(DEFAULT_BASE)
    tiny = replace(ADAPTER_TRAIN, batch_size=1, seq_len=32, max_steps=2, max_epochs=None,
                   eval_interval=2, eval_batches=1, warmup_steps=1)  # fmt: skip
    folder = tmp_path_factory.mktemp("adapter-law")
    text = read_corpus(CORPORA / "law.txt")[:20_000]
    train(text, "law", folder, base.config, tiny, base=base, adapter=AdapterConfig(rank=2))
    measured(load_model_folder(folder, serving="fp32"), None, None)  # kept: nodes start faster
    return folder
