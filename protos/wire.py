"""The wire types hub and node share: one dataclass per concept, one conversion each way.

A sampling request, a signed score and a piece of a streamed completion each cross the routing
plane as a protobuf message; in Python they are these frozen dataclasses, checked once, in
`__post_init__`, whoever builds them (a CLI from its flags, the hub from a client's Ask, the node
from the hub's request). Only `to_proto` and `from_proto` know the messages' field layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from protos import swarm_pb2 as pb
from protos.errors import WireError
from protos.signing import Centred

MAX_TOKENS = 4096  # per answer, whatever a client asks
MAX_TEMPERATURE = 5.0
MAX_VERSION_CHARS = 64  # a model version a node reports; longer is cut, never trusted whole
MAX_PRESET_CHARS = 64  # a preset name is shown, never trusted: longer is cut
CENTROID_DIM = 384  # a node's centroid (slm.encoder.DIM, which protos cannot import)
# Stop strings as OpenAI allows them (at most 4), each a short marker: a node checks every one
# against the text's tail at every token, so their count and size are its cost per token.
MAX_STOPS = 4
MAX_STOP_BYTES = 64


def _flag(text: str, metavar: str) -> dict[str, str]:
    """Field metadata a CLI turns into the flag's help (slm/command.py)."""
    return {"help": text, "metavar": metavar}


@dataclass(frozen=True)
class SamplingParams:
    """How to sample a completion; the defaults here are the network's (swarm.proto says them
    too, and tests/protos checks the two agree)."""

    max_tokens: int = field(default=128, metadata=_flag(f"tokens at most, 1..{MAX_TOKENS}", "N"))
    temperature: float = field(default=0.8, metadata=_flag("0 for greedy, up to 5", "T"))
    top_k: int = field(default=0, metadata=_flag("sample from the k likeliest tokens; 0: all", "K"))
    top_p: float = field(default=1.0, metadata=_flag("nucleus mass in (0, 1]; 1: no cut", "P"))
    stop: tuple[str, ...] = field(default=(), metadata=_flag("stop string (repeatable)", "TEXT"))
    seed: int | None = field(
        default=None, metadata=_flag("sampling seed, for repeatable text", "N")
    )

    def __post_init__(self) -> None:
        if not 1 <= self.max_tokens <= MAX_TOKENS:
            raise WireError(f"max_tokens must be between 1 and {MAX_TOKENS}, got {self.max_tokens}")
        if not 0.0 <= self.temperature <= MAX_TEMPERATURE:
            raise WireError(
                f"temperature must be between 0 and {MAX_TEMPERATURE:g}, got {self.temperature}"
            )
        if self.top_k < 0:
            raise WireError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise WireError(f"top_p must be in (0, 1], got {self.top_p}")
        if len(self.stop) > MAX_STOPS:
            raise WireError(f"at most {MAX_STOPS} stop strings, got {len(self.stop)}")
        if any(not s for s in self.stop):
            raise WireError("stop strings must not be empty")
        try:
            longest = max((len(s.encode("utf-8")) for s in self.stop), default=0)
        except UnicodeEncodeError:
            raise WireError("stop strings must be valid UTF-8 text") from None
        if longest > MAX_STOP_BYTES:
            raise WireError(f"a stop string may be at most {MAX_STOP_BYTES} bytes, got {longest}")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise WireError(f"seed must be between 0 and 2**63 - 1, got {self.seed}")

    def to_proto(self) -> pb.SamplingParams:
        message = pb.SamplingParams(
            max_tokens=self.max_tokens, temperature=self.temperature, top_k=self.top_k,
            top_p=self.top_p, stop=self.stop,
        )  # fmt: skip
        if self.seed is not None:
            message.seed = self.seed
        return message

    @classmethod
    def from_proto(cls, message: pb.SamplingParams) -> SamplingParams:
        """The message's settings, a field left out taking the default; WireError if out of
        range."""
        given = {
            name: getattr(message, name)
            for name in ("max_tokens", "temperature", "top_k", "top_p", "seed")
            if message.HasField(name)
        }
        return cls(stop=tuple(message.stop), **given)


@dataclass(frozen=True)
class Score:
    """A node's signed claim about a prompt (the confidence contract, DESIGN.md)."""

    request_id: str
    loglik: float  # nats, BOS-conditioned, summed over the prompt's tokens
    bits_per_byte: float
    confidence: float  # [0, 1]
    declined: bool  # below the node's --min-confidence
    signature: bytes  # over protos.signing.score_bytes(...)
    model_version: str  # the model that scored, which the signature covers
    node_ms: float = 0.0  # the node's own time on it, receipt to reply (0: unknown)
    similarity: float = 0.0  # cosine of the prompt to the node's centroid, signed; 0: none
    offset_loglik: float = 0.0  # nats per byte: its model's mean on the calibration pool
    offset_similarity: float = 0.0  # its centroid's mean similarity to the pool
    words_loglik: float = 0.0  # nats of the prompt's words under its word counts, signed; 0: none
    offset_words: float = 0.0  # nats per byte: its word counts' mean on the calibration pool

    def centred(self, centroid_sha256: str, words_sha256: str = "") -> Centred:
        """The signed statement's part beside the loglik (protos.signing.score_bytes), with
        the digests of the centroid and word counts the node committed to when it joined."""
        return Centred(self.similarity, self.offset_loglik, self.offset_similarity,
                       centroid_sha256, self.words_loglik, self.offset_words,
                       words_sha256)  # fmt: skip

    def to_proto(self) -> pb.ScoreReply:
        return pb.ScoreReply(
            request_id=self.request_id, loglik=self.loglik, bits_per_byte=self.bits_per_byte,
            confidence=self.confidence, declined=self.declined, signature=self.signature,
            node_ms=self.node_ms, model_version=self.model_version, similarity=self.similarity,
            offset_loglik=self.offset_loglik, offset_similarity=self.offset_similarity,
            words_loglik=self.words_loglik, offset_words=self.offset_words,
        )  # fmt: skip

    @classmethod
    def from_proto(cls, m: pb.ScoreReply) -> Score:
        return cls(
            m.request_id, m.loglik, m.bits_per_byte, m.confidence, m.declined, m.signature,
            m.model_version[:MAX_VERSION_CHARS], _finite_ms(m.node_ms), m.similarity,
            m.offset_loglik, m.offset_similarity, m.words_loglik, m.offset_words,
        )  # fmt: skip


@dataclass(frozen=True)
class Piece:
    """The next piece of a streamed completion; the last (`done`) is signed over the whole."""

    request_id: str
    text: str  # may be empty on the last piece
    tokens: int  # generated so far, this piece's included
    done: bool
    signature: bytes = b""  # on the last piece: over protos.signing.completion_bytes(...)
    model_version: str = ""  # on the last piece: the model that generated, signed
    node_ms: float = 0.0  # on the last piece: the node's own time on the request

    def to_proto(self) -> pb.GenerateChunk:
        return pb.GenerateChunk(
            request_id=self.request_id, text=self.text, tokens=self.tokens, done=self.done,
            signature=self.signature, node_ms=self.node_ms, model_version=self.model_version,
        )  # fmt: skip

    @classmethod
    def from_proto(cls, m: pb.GenerateChunk) -> Piece:
        return cls(
            m.request_id, m.text, m.tokens, m.done, m.signature,
            m.model_version[:MAX_VERSION_CHARS], _finite_ms(m.node_ms),
        )  # fmt: skip


def _finite_ms(value: float) -> float:
    """A node's own timing, for reports only: anything but a finite non-negative number is 0."""
    return value if math.isfinite(value) and value >= 0 else 0.0
