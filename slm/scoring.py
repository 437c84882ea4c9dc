"""The confidence contract: loglik in nats, bits per byte, and calibrated confidence.

loglik is the BOS-conditioned log-likelihood of the prompt's UTF-8 bytes, so two nodes with
different tokenizers are compared on the same byte string. confidence is the share of the
node's own validation passages whose bits-per-byte is at least the prompt's: 1.0 means "more
typical than anything I validated on", 0.0 "less typical than all of it".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from slm.errors import SLMError
from slm.model import SLM
from slm.tokenizer import SLMTokenizer

QUANTILE_LEVELS = np.linspace(0.0, 1.0, 101)


@dataclass(frozen=True)
class Score:
    loglik: float  # nats, summed over the prompt's tokens
    bits_per_byte: float
    confidence: float  # in [0, 1]
    n_bytes: int
    n_tokens: int


@torch.inference_mode()
def token_logprobs(model: SLM, ids: list[int], bos_id: int) -> torch.Tensor:
    """log p(ids[i] | BOS, ids[:i]) for every i, through sliding windows past block_size."""
    block = model.config.block_size
    device = model.wte.weight.device
    seq = torch.tensor([bos_id, *ids], dtype=torch.long, device=device)
    out: list[torch.Tensor] = []
    scored = 0  # tokens of `ids` scored so far
    while scored < len(ids):
        # Every window after the first keeps half a block of real context before new tokens.
        start = 0 if scored == 0 else max(0, scored + 1 - block // 2)
        end = min(len(seq), start + block)
        window = seq[start : end - 1].clone()
        window[0] = bos_id  # every model input starts with BOS, as in training
        hidden = model.hidden_states(window.unsqueeze(0))[0]  # (T, C)
        picked = model.target_logprobs(hidden, seq[start + 1 : end])
        first_new = scored - start  # index within `targets` of the first unscored token
        out.append(picked[first_new:])
        scored = end - 1
    return torch.cat(out) if out else torch.zeros(0)


def loglik(model: SLM, tokenizer: SLMTokenizer, text: str) -> tuple[float, int]:
    """(log-likelihood in nats, token count) of `text`."""
    ids = tokenizer.encode(text)
    return float(token_logprobs(model, ids, tokenizer.bos_id).sum()), len(ids)


def bits_per_byte(loglik_nats: float, n_bytes: int) -> float:
    return -loglik_nats / (n_bytes * math.log(2))


def confidence(bpb: float, quantiles: np.ndarray) -> float:
    """Share of validation passages with bits-per-byte >= bpb, read off the stored quantiles."""
    below = float(np.interp(bpb, quantiles, QUANTILE_LEVELS, left=0.0, right=1.0))
    return min(1.0, max(0.0, 1.0 - below))


def score(model: SLM, tokenizer: SLMTokenizer, quantiles: np.ndarray, text: str) -> Score:
    n_bytes = len(text.encode("utf-8"))
    if n_bytes == 0:
        raise SLMError("cannot score an empty prompt")
    ll, n_tokens = loglik(model, tokenizer, text)
    bpb = bits_per_byte(ll, n_bytes)
    return Score(ll, bpb, confidence(bpb, quantiles), n_bytes, n_tokens)


def calibration_passages(text: str, limit: int = 200) -> list[str]:
    """Validation passages of prompt-like lengths (64 to 512 bytes), cut at spaces."""
    lengths = (64, 128, 256, 512)
    out: list[str] = []
    pos = 0
    while pos < len(text) and len(out) < limit:
        size = lengths[len(out) % len(lengths)]
        end = text.find(" ", pos + size)
        end = len(text) if end < 0 else end
        passage = text[pos:end].strip()
        if passage:
            out.append(passage)
        pos = end + 1
    return out


def calibrate(model: SLM, tokenizer: SLMTokenizer, passages: list[str]) -> np.ndarray:
    """The bits-per-byte quantiles (at QUANTILE_LEVELS) of the node's validation passages."""
    values = []
    for p in passages:
        ll, _ = loglik(model, tokenizer, p)
        values.append(bits_per_byte(ll, len(p.encode("utf-8"))))
    if not values:
        raise SLMError("no validation passages to calibrate confidence on")
    return np.quantile(np.asarray(values), QUANTILE_LEVELS)
