"""What a node does for the hub, without the transport: score and generate, signed.

`slm-node join`'s dispatcher (node/dispatch.py) decodes a request, calls a method here in a
worker thread (model compute never runs on the event loop), and encodes the result, which is
already the wire's own type. Signed statements come from protos.signing, the same definitions
the hub verifies.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np
from cryptography.hazmat.primitives.asymmetric import ec

from node.identity import public_openssh
from protos.signing import (
    centroid_sha256,
    completion_bytes,
    generation_input,
    node_id,
    score_bytes,
    sign,
)
from protos.wire import Piece, SamplingParams, Score
from slm.encoder import installed_encoder
from slm.errors import SLMError
from slm.generate import stream_counted
from slm.model_folder import REQUIRED, LoadedModel
from slm.offsets import Offsets, measured, pool_vectors
from slm.refine import Refiner
from slm.scoring import score
from slm.word_counts import FILE as WORDS
from slm.word_counts import WordCounts

PART_BYTES = 1 << 20  # a model file crosses the stream in pieces of at most 1 MiB


class NodeService:
    def __init__(
        self, loaded: LoadedModel, key: ec.EllipticCurvePrivateKey, min_confidence: float = 0.0,
        refiner: Refiner | None = None, centroid: np.ndarray | None = None,
        words: WordCounts | None = None,
    ) -> None:  # fmt: skip
        if not 0.0 <= min_confidence <= 1.0:
            raise SLMError(f"--min-confidence must be in [0, 1], got {min_confidence}")
        self.key = key
        self.public_key = public_openssh(key).decode()
        self.node_id = node_id(self.public_key)
        self.min_confidence = min_confidence
        self.refiner = refiner  # set: it refines drafts (swarm.proto GenerateRequest.draft)
        # what the node knows, as a sentence vector: the folder's, else the one given (its text's)
        centroid = loaded.centroid if loaded.centroid is not None else centroid
        self.encoder = installed_encoder() if centroid is not None else None
        self.centroid = centroid if self.encoder is not None else None
        self.centroid_sha256 = centroid_sha256([] if self.centroid is None else self.centroid)
        # its words, as counts: the folder's, else the ones given (its text's); kept across
        # swaps, since a round changes the model, not the node's own text
        self.words = loaded.words if loaded.words is not None else words
        self.words_sha256 = "" if self.words is None else self.words.sha256
        self.swap(loaded)

    def swap(self, loaded: LoadedModel) -> None:
        """Serve another model from the next request on; requests under way keep theirs. Its
        offsets are measured first (seconds: run it off the event loop)."""
        vectors = pool_vectors() if self.centroid is not None else None
        self._serving = (loaded, measured(loaded, self.centroid, vectors, self.words))

    @property
    def loaded(self) -> LoadedModel:
        return self._serving[0]

    @property
    def offsets(self) -> Offsets:
        return self._serving[1]

    def similarity(self, prompt: str) -> float:
        """Cosine of the prompt to the node's centroid; 0 without one."""
        if self.encoder is None or self.centroid is None:
            return 0.0
        return float(np.clip(self.encoder.embed([prompt])[0] @ self.centroid, -1.0, 1.0))

    def score(self, request_id: str, prompt: str) -> Score:
        # one model and its offsets for the whole request, even if a swap lands meanwhile
        loaded, offsets = self._serving
        s = score(loaded.model, loaded.tokenizer, loaded.quantiles, prompt)
        declined = s.confidence < self.min_confidence
        claim = Score(
            request_id, s.loglik, s.bits_per_byte, s.confidence, declined, b"", loaded.version,
            similarity=self.similarity(prompt), offset_loglik=offsets.loglik_per_byte,
            offset_similarity=offsets.similarity,
            words_loglik=0.0 if self.words is None else self.words.loglik(prompt),
            offset_words=offsets.words_per_byte,
        )  # fmt: skip
        statement = score_bytes(
            self.node_id, request_id, prompt, s.loglik, s.bits_per_byte, s.confidence, declined,
            loaded.version, claim.centred(self.centroid_sha256, self.words_sha256),
        )  # fmt: skip
        return replace(claim, signature=sign(self.key, statement))

    def model_files(
        self, version: str, words_sha256: str = ""
    ) -> Iterator[tuple[str, bytes, bool]]:
        """The model folder that signs as `version`, or with `words_sha256` the word counts of
        that digest, for the hub's auditor: (file name, next piece, whether it is the last
        piece). SLMError if this node no longer serves that version or has no such counts (the
        hub checks the digest of what it receives)."""
        if words_sha256:
            if words_sha256 != self.words_sha256 or self.words is None:
                raise SLMError(f"this node's word counts are not {words_sha256[:16]}")
            yield from _pieces([(WORDS, self.words.to_bytes())])
            return
        loaded = self.loaded
        if version != loaded.version:
            raise SLMError(f"this node serves model {loaded.version}, not {version}")
        yield from _pieces([(name, (loaded.path / name).read_bytes()) for name in REQUIRED])

    def generate(
        self, request_id: str, prompt: str, params: SamplingParams, draft: str = "",
        answer_so_far: str = "",
    ) -> Iterator[Piece]:  # fmt: skip
        """Text pieces as they are produced, then a final, signed one. With a `draft`, the
        answer refines it (the node's reference text and its writer); `answer_so_far` is
        another node's beginning, continued."""
        if not prompt:
            raise SLMError("cannot continue an empty prompt")
        pieces: list[str] = []
        tokens = 0
        loaded = self.loaded
        if not draft:
            stream = stream_counted(loaded.model, loaded.tokenizer, prompt, params, answer_so_far)
        elif self.refiner is None:
            raise SLMError("this node does not refine drafts (it joined without --reference)")
        else:
            stream = self.refiner.stream(prompt, params, answer_so_far)
        for piece, tokens in stream:
            if piece:
                pieces.append(piece)
                yield Piece(request_id, piece, tokens, done=False)
        completion = "".join(pieces)
        statement = completion_bytes(
            self.node_id, request_id, generation_input(prompt, draft, answer_so_far), completion,
            tokens, loaded.version,
        )  # fmt: skip
        yield Piece(request_id, "", tokens, done=True, signature=sign(self.key, statement),
                    model_version=loaded.version)  # fmt: skip


def _pieces(files: list[tuple[str, bytes]]) -> Iterator[tuple[str, bytes, bool]]:
    """Files in pieces of at most PART_BYTES: (name, piece, whether it is the last of all)."""
    for i, (name, data) in enumerate(files):
        for at in range(0, max(len(data), 1), PART_BYTES):
            final = i == len(files) - 1 and at + PART_BYTES >= len(data)
            yield name, data[at : at + PART_BYTES], final
