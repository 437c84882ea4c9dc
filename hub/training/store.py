"""Global models of every domain, content-addressed under <home>/models/<domain>/<sha256>.
safetensors. Which one is a domain's latest is the ledger's record of the round that made it
(`RoundBook.latest_weights`). The safetensors metadata is the model folder's, so the hash is
the version nodes report once they adopt it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from hub.training.aggregation import Weights
from hub.training.plan import TrainingError
from slm.atomic import atomic_write_bytes

WEIGHTS_FORMAT = "swarmllm-model/1"  # the model folder's safetensors metadata, so hashes agree


class GlobalStore:
    def __init__(self, home: Path) -> None:
        self.root = Path(home) / "models"

    def path(self, domain: str, sha256: str) -> Path:
        return self.root / domain / f"{sha256}.safetensors"

    def save(self, domain: str, weights: Weights) -> str:
        data = save_safetensors(
            {k: np.ascontiguousarray(v) for k, v in weights.items()},
            metadata={"format": WEIGHTS_FORMAT},
        )
        sha = hashlib.sha256(data).hexdigest()
        path = self.path(domain, sha)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            atomic_write_bytes(path, data)
        return sha

    def load(self, domain: str, sha256: str) -> Weights:
        path = self.path(domain, sha256)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise TrainingError(f"the global model {path} is missing") from None
        if hashlib.sha256(data).hexdigest() != sha256:
            raise TrainingError(f"the global model {path} does not match its hash")
        try:
            return load_safetensors(data)
        except SafetensorError as exc:
            raise TrainingError(f"the global model {path} is corrupted: {exc}") from None
