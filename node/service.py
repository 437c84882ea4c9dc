"""What a node does for the hub, without the transport: score and generate, signed.

`slm-node join`'s dispatcher (node/dispatch.py) decodes a request, calls a method here in a
worker thread (model compute never runs on the event loop), and encodes the result, which is
already the wire's own type. Signed statements come from protos.signing, the same definitions
the hub verifies.
"""

from __future__ import annotations

from collections.abc import Iterator

from cryptography.hazmat.primitives.asymmetric import ec

from node.identity import public_openssh
from protos.signing import completion_bytes, node_id, score_bytes, sign
from protos.wire import Piece, SamplingParams, Score
from slm.errors import SLMError
from slm.generate import stream_counted
from slm.model_folder import REQUIRED, LoadedModel
from slm.scoring import score

PART_BYTES = 1 << 20  # a model file crosses the stream in pieces of at most 1 MiB


class NodeService:
    def __init__(
        self, loaded: LoadedModel, key: ec.EllipticCurvePrivateKey, min_confidence: float = 0.0
    ) -> None:
        if not 0.0 <= min_confidence <= 1.0:
            raise SLMError(f"--min-confidence must be in [0, 1], got {min_confidence}")
        self.loaded = loaded
        self.key = key
        self.public_key = public_openssh(key).decode()
        self.node_id = node_id(self.public_key)
        self.min_confidence = min_confidence

    def swap(self, loaded: LoadedModel) -> None:
        """Serve another model from the next request on; requests under way keep theirs."""
        self.loaded = loaded

    def score(self, request_id: str, prompt: str) -> Score:
        loaded = self.loaded  # one model for the whole request, even if a swap lands meanwhile
        s = score(loaded.model, loaded.tokenizer, loaded.quantiles, prompt)
        declined = s.confidence < self.min_confidence
        statement = score_bytes(
            self.node_id, request_id, prompt, s.loglik, s.bits_per_byte, s.confidence, declined,
            loaded.version,
        )  # fmt: skip
        return Score(
            request_id, s.loglik, s.bits_per_byte, s.confidence, declined,
            sign(self.key, statement), loaded.version,
        )  # fmt: skip

    def model_files(self, version: str) -> Iterator[tuple[str, bytes, bool]]:
        """The model folder that signs as `version`, for the hub's auditor: (file name, next
        piece, whether it is the folder's last piece). SLMError if this node no longer serves
        that version (the hub checks the digest of what it receives)."""
        loaded = self.loaded
        if version != loaded.version:
            raise SLMError(f"this node serves model {loaded.version}, not {version}")
        for i, name in enumerate(REQUIRED):
            data = (loaded.path / name).read_bytes()
            for at in range(0, max(len(data), 1), PART_BYTES):
                final = i == len(REQUIRED) - 1 and at + PART_BYTES >= len(data)
                yield name, data[at : at + PART_BYTES], final

    def generate(self, request_id: str, prompt: str, params: SamplingParams) -> Iterator[Piece]:
        """Text pieces as they are produced, then a final, signed one."""
        if not prompt:
            raise SLMError("cannot continue an empty prompt")
        pieces: list[str] = []
        tokens = 0
        loaded = self.loaded
        for piece, tokens in stream_counted(loaded.model, loaded.tokenizer, prompt, params):
            if piece:
                pieces.append(piece)
                yield Piece(request_id, piece, tokens, done=False)
        completion = "".join(pieces)
        statement = completion_bytes(
            self.node_id, request_id, prompt, completion, tokens, loaded.version
        )
        yield Piece(request_id, "", tokens, done=True, signature=sign(self.key, statement),
                    model_version=loaded.version)  # fmt: skip
