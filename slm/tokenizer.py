"""Byte-level BPE with Hugging Face `tokenizers`: trained on the node's own corpus, or a
pretrained base's (slm.pretrained), with its chat template.

Byte-level means every UTF-8 string is encodable: no unknown tokens, so a prompt from any
domain gets a log-likelihood. One special token, BOS, starts every scored text (a pretrained
base's document separator plays that part). With a chat template, generation wraps the prompt
in it; the prompt's own text is encoded with special tokens read as plain text, so a prompt
that contains "<|im_end|>" cannot close its turn and speak as the system.
"""

from __future__ import annotations

from pathlib import Path

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from slm.errors import ModelFolderError

BOS = "<|bos|>"
# What starts a scored text: our own BOS, else a pretrained vocabulary's document separator.
_BOS_TOKENS = (BOS, "<|endoftext|>", "<s>", "<|begin_of_text|>")
# Tokens that end a generated answer besides BOS: the end of a chat turn.
_END_TOKENS = ("<|im_end|>", "<|eot_id|>", "</s>", "<|endoftext|>")
CHAT_TEMPLATE = "chat_template.jinja"  # beside tokenizer.json in a model folder
_SLOT = "\x00PROMPT\x00"  # where the user's text goes in the rendered template


class SLMTokenizer:
    def __init__(self, tokenizer: Tokenizer, chat_template: str | None = None) -> None:
        self._tok = tokenizer
        self._plain = Tokenizer.from_str(tokenizer.to_str())  # special tokens as text
        self._plain.encode_special_tokens = True
        bos = next((i for t in _BOS_TOKENS if (i := tokenizer.token_to_id(t)) is not None), None)
        if bos is None:
            raise ModelFolderError(f"tokenizer has no {BOS} token")
        self.bos_id: int = bos
        ends = {tokenizer.token_to_id(t) for t in _END_TOKENS} - {None}
        self.end_ids: frozenset[int] = frozenset({bos, *ends})
        self.chat_template = chat_template
        self._chat: tuple[list[int], list[int]] | None = None
        if chat_template:
            self._chat = self._render(chat_template)

    def _render(self, template: str) -> tuple[list[int], list[int]]:
        """Token ids before and after the user's text in a one-turn chat, from the template
        (rendered sandboxed: a model file's template is code from a stranger)."""
        try:
            text = (
                ImmutableSandboxedEnvironment()
                .from_string(template)
                .render(messages=[{"role": "user", "content": _SLOT}], add_generation_prompt=True)
            )
        except (TemplateError, TypeError, ValueError, OverflowError, MemoryError) as exc:
            raise ModelFolderError(f"chat template does not render: {exc}") from None
        if text.count(_SLOT) != 1:
            raise ModelFolderError("chat template must place the user's message exactly once")
        before, after = text.split(_SLOT)
        return self._tok.encode(before, add_special_tokens=False).ids, self._tok.encode(
            after, add_special_tokens=False
        ).ids

    def prompt_ids(self, prompt: str, answer_so_far: str = "") -> list[int]:
        """What generation starts from: the chat-wrapped prompt with the answer's turn begun by
        `answer_so_far` (another node's, on fail-over), or BOS, the prompt and that answer."""
        if self._chat is None:
            return [self.bos_id, *self.encode(prompt + answer_so_far)]
        before, after = self._chat
        so_far = self.encode(answer_so_far) if answer_so_far else []
        return [*before, *self.encode(prompt), *after, *so_far]

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
        """tokenizer.json, and the chat template beside it if there is one."""
        path = Path(path)
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on malformed JSON
            raise ModelFolderError(f"{path} is not a valid tokenizer: {exc}") from None
        template_path = path.parent / CHAT_TEMPLATE
        template = template_path.read_text(encoding="utf-8") if template_path.is_file() else None
        return cls(tok, chat_template=template)

    def to_json(self) -> str:
        return self._tok.to_str()

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    @property
    def largest_id(self) -> int:
        """The largest id it can give: a file may number its tokens with gaps, so not always
        vocab_size - 1, and a model indexes its embedding by it."""
        return max(self._tok.get_vocab(with_added_tokens=True).values(), default=-1)

    def encode(self, text: str) -> list[int]:
        """Token ids of text, special tokens' spellings included as plain text."""
        return self._plain.encode(text, add_special_tokens=False).ids

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids of text and the characters of text each one covers."""
        encoded = self._plain.encode(text, add_special_tokens=False)
        return encoded.ids, [tuple(o) for o in encoded.offsets]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._plain.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True)
