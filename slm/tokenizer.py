"""Byte-level BPE trained on the node's own corpus with Hugging Face `tokenizers`.

Byte-level means every UTF-8 string is encodable: no unknown tokens, so a prompt from any
domain gets a log-likelihood. One special token, BOS, starts every scored or generated text.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from slm.errors import ModelFolderError

BOS = "<|bos|>"


class SLMTokenizer:
    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tok = tokenizer
        bos = tokenizer.token_to_id(BOS)
        if bos is None:
            raise ModelFolderError(f"tokenizer has no {BOS} token")
        self.bos_id: int = bos

    @classmethod
    def train(cls, texts: list[str], vocab_size: int) -> SLMTokenizer:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=2,
            special_tokens=[BOS],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @classmethod
    def load(cls, path: Path) -> SLMTokenizer:
        try:
            return cls(Tokenizer.from_file(str(path)))
        except Exception as exc:  # tokenizers raises a bare Exception on malformed JSON
            raise ModelFolderError(f"{path} is not a valid tokenizer: {exc}") from None

    def to_json(self) -> str:
        return self._tok.to_str()

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True)
