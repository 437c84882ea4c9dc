"""Generation as small pure functions that yield: sample -> next token -> token ids -> text.

The node's streaming RPC and the CLI only iterate `stream_text`; nothing here knows about
terminals or sockets.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch

from slm.model import SLM, KVCache
from slm.tokenizer import SLMTokenizer


class SamplingParams(Protocol):
    """How to sample: what generation reads. The network's checked dataclass of these fields is
    protos.wire.SamplingParams (the model package imports nothing of the wire's)."""

    @property
    def max_tokens(self) -> int: ...  # new tokens at most
    @property
    def temperature(self) -> float: ...  # 0: greedy
    @property
    def top_k(self) -> int: ...  # 0: no cut
    @property
    def top_p(self) -> float: ...  # 1: no cut
    @property
    def stop(self) -> tuple[str, ...]: ...
    @property
    def seed(self) -> int | None: ...


# Every answer's tokens are discouraged from repeating within a window (llama.cpp's default
# penalty and window): without it a small model at low temperature loops on a phrase
# ("royalty-free, royalty-free, ..."). Only generated tokens count, so the answer may use the
# prompt's own words.
REPEAT_PENALTY, REPEAT_WINDOW = 1.1, 64


def penalize_repeats(logits: torch.Tensor, recent: list[int]) -> torch.Tensor:
    """Logits with those of `recent` tokens pushed down: positive ones divided by the penalty,
    negative ones multiplied."""
    if not recent:
        return logits
    ids = torch.tensor(sorted(set(recent)), device=logits.device)
    picked = logits[ids]
    out = logits.clone()
    out[ids] = torch.where(picked > 0, picked / REPEAT_PENALTY, picked * REPEAT_PENALTY)
    return out


def sample(logits: torch.Tensor, params: SamplingParams, gen: torch.Generator | None) -> int:
    """One token id from the last position's logits (vocab,)."""
    if params.temperature == 0:
        return int(torch.argmax(logits))
    logits = logits.float() / params.temperature
    if params.top_k:
        kth = torch.topk(logits, min(params.top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if params.top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (always at least one token).
        drop = torch.cumsum(sorted_p, dim=-1) - sorted_p >= params.top_p
        sorted_p[drop] = 0.0
        probs = torch.zeros_like(probs).scatter(0, order, sorted_p)
    return int(torch.multinomial(probs, 1, generator=gen))


@torch.inference_mode()
def generate_ids(
    model: SLM, prompt_ids: list[int], params: SamplingParams, use_cache: bool = True,
    vocab: int | None = None, said: list[int] | None = None,
) -> Iterator[int]:  # fmt: skip
    """Yield up to max_tokens new token ids after prompt_ids (which start with BOS, or with the
    chat template's first token, which cropping keeps in the same place); with
    `vocab`, only ids below it (a tokenizer trained on a small corpus learns fewer tokens than
    the model has rows; an id it never learnt decodes to nothing, yet would count as a token).
    `said`: the answer's tokens already in the prompt (a lead), penalised as repeats too.

    With the cache, each step feeds one token; when the context fills the block, the cache is
    rebuilt from BOS and the last half block. Without it, each step re-reads the whole context
    (BOS and the last block when cropped): the reference the cached path must match token for
    token while the context fits the block. Every model input starts with BOS, as in training.
    """
    block = model.config.block_size
    device = model.wte.weight.device
    gen = (
        torch.Generator(device=device).manual_seed(params.seed) if params.seed is not None else None
    )
    bos = prompt_ids[0]
    context = [bos, *prompt_ids[1:][-(block - 2) :]]  # leave room for at least one new token
    cache: KVCache | None = None
    pending = context
    generated: list[int] = list(said or [])  # the answer's tokens so far: not to be repeated
    for _ in range(params.max_tokens):
        if not use_cache:
            window = context if len(context) <= block else [bos, *context[-(block - 1) :]]
            logits = model(torch.tensor([window], device=device))[0, -1]
        else:
            if cache is None or cache.length + len(pending) > block:
                if cache is not None:  # full: restart from BOS and the last half block
                    pending = [bos, *context[-(block // 2 - 1) :]]
                cache = KVCache.empty(model.config, 1, device, model.wte.weight.dtype)
            if len(pending) == 1 and model.decode_one is not None:
                logits = model.decode_one(pending[0], cache)
            else:
                logits = model(torch.tensor([pending], device=device), cache)[0, -1]
        if vocab is not None and vocab < logits.shape[-1]:
            logits = logits[:vocab]
        token = sample(penalize_repeats(logits, generated[-REPEAT_WINDOW:]), params, gen)
        generated.append(token)
        context.append(token)
        pending = [token]
        yield token


def stream_text(
    model: SLM, tokenizer: SLMTokenizer, prompt: str, params: SamplingParams
) -> Iterator[str]:
    """Yield pieces of generated text; their concatenation is the completion."""
    for piece, _ in stream_counted(model, tokenizer, prompt, params):
        if piece:
            yield piece


@dataclass(frozen=True)
class _Budget:
    """Sampling settings with fewer tokens to sample: what a lead leaves."""

    params: SamplingParams
    max_tokens: int

    def __getattr__(self, name: str) -> object:
        return getattr(self.params, name)


def stream_counted(
    model: SLM, tokenizer: SLMTokenizer, prompt: str, params: SamplingParams,
    answer_so_far: str = "", lead: str = "",
) -> Iterator[tuple[str, int]]:  # fmt: skip
    """(piece, tokens generated so far), ending with ("", total): the count a node signs and
    is paid for, which re-encoding the text would not reproduce (BPE merges differ).

    `answer_so_far` continues an answer another node began. `lead` is text the answer opens
    with (a refinement's quoted fact): its tokens are the answer's first, counted and subject
    to the stop strings like sampled ones, and the model samples only after them.

    Byte-level tokens can split a UTF-8 character, and a stop string can span tokens, so text is
    held back until it is whole and cannot be the start of a stop string.
    """
    ids: list[int] = []
    emitted = 0
    prompt_ids = tokenizer.prompt_ids(prompt, answer_so_far)  # in the chat template, if any
    lead_ids = tokenizer.encode(lead)[: params.max_tokens] if lead else []
    left = params.max_tokens - len(lead_ids)
    sampled = (generate_ids(model, prompt_ids + lead_ids, _Budget(params, left),
                            vocab=tokenizer.vocab_size, said=lead_ids)
               if left > 0 else iter(()))  # fmt: skip
    for token in itertools.chain(lead_ids, sampled):
        if token in tokenizer.end_ids:  # BOS, or the end of the answer's chat turn
            break
        ids.append(token)
        text = tokenizer.decode(ids)
        if text.endswith("\ufffd"):
            continue  # an incomplete UTF-8 character; wait for its next byte
        cut = _first_stop(text, params.stop)
        if cut is not None:
            if cut > emitted:
                yield text[emitted:cut], len(ids)
            yield "", len(ids)
            return
        safe = len(text) - _held_back(text, params.stop)
        if safe > emitted:
            yield text[emitted:safe], len(ids)
            emitted = safe
    text = tokenizer.decode(ids)
    if len(text) > emitted:
        yield text[emitted:], len(ids)
    yield "", len(ids)


def _first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest suffix of text that is a proper prefix of some stop string."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best
