"""The auditor's store of what nodes sent it: each node's model folder by version, and word
counts by digest, kept under the hub home and checked against what the node signed before
they are kept (hub.routing.audit explains the audit)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

from protos import swarm_pb2 as pb
from slm.version import model_version

# the files of a model folder (slm.model_folder.REQUIRED, which the hub cannot import)
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "calibration.json",
               "profile.npy")  # fmt: skip
MAX_MODEL_BYTES = 4 << 30
# each file but the weights at most this: the hub itself parses config.json (slm.version)
MAX_FILE_BYTES = {"config.json": 1 << 20, "tokenizer.json": 64 << 20,
                  "calibration.json": 1 << 20, "profile.npy": 1 << 20}  # fmt: skip
# the node's word counts (slm.word_counts, which the hub cannot import: it imports numpy)
WORDS_FOLDER, WORDS_FILE, MAX_WORDS_BYTES = "words", "words.json", 16 << 20
FETCH_TIMEOUT_S = 300.0
# A node signs whatever version it likes, and each new one sampled is a folder fetched: kept
# are the two it used last (its model and the one before a swap), so it cannot fill the disk.
KEEP_PER_NODE = 2


class AuditError(Exception):
    """The audit could not run: the model is unavailable, or the auditor failed."""


class ModelSource(Protocol):
    """A connected node, as the auditor needs it (hub.routing.connection.NodeConnection)."""

    public_key: str
    centroid: tuple[float, ...]
    words_sha256: str

    def fetch_model(
        self, request_id: str, version: str, words_sha256: str = ""
    ) -> AsyncIterator[pb.ModelPart]: ...


class ModelStore:
    """Model folders by version, fetched from the nodes that signed with them; at most
    KEEP_PER_NODE folders and one counts file kept for each node."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # (node's public key, version): the folder that node sent, under the version and the
        # digest of all its files (nodes that sent the same files share it), least recently
        # used first;
        # and the counts each node sent last. Kept in memory: after a restart each node is
        # asked again, so what an earlier run kept is nobody's and is dropped.
        self._sent: dict[tuple[str, str], Path] = {}
        self._words: dict[str, Path] = {}
        shutil.rmtree(root, ignore_errors=True)

    def words(self, sha256: str) -> Path | None:
        path = self.root / WORDS_FOLDER / f"{sha256}.json"
        return path if path.is_file() else None

    async def fetch_words(self, source: ModelSource, sha256: str) -> Path:
        """The word counts of `sha256`, fetched unless kept already; AuditError if the node will
        not send them, or sends other bytes."""
        if (kept := self.words(sha256)) is not None:
            return kept
        folder = self.root / WORDS_FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        part = folder / f".{sha256}.{uuid.uuid4().hex[:8]}"
        part.mkdir()
        try:
            async with asyncio.timeout(FETCH_TIMEOUT_S):
                parts = source.fetch_model(uuid.uuid4().hex, "", sha256)
                await self._receive(parts, part, (WORDS_FILE,), MAX_WORDS_BYTES)
            if await asyncio.to_thread(_sha256_of, part / WORDS_FILE) != sha256:
                raise AuditError(f"the word counts sent are not {sha256[:16]}")
            target = folder / f"{sha256}.json"
            os.replace(part / WORDS_FILE, target)
            before = self._words.get(source.public_key)
            self._words[source.public_key] = target
            if before is not None and before not in self._words.values():
                before.unlink(missing_ok=True)
            return target
        except Exception as exc:  # refused, timed out, left, sent junk: all the node's doing
            raise AuditError(f"word counts {sha256[:16]} unavailable: {exc}") from None
        finally:
            shutil.rmtree(part, ignore_errors=True)

    def folder(self, public_key: str, version: str) -> Path | None:
        """The folder of `version` the node of `public_key` sent, if it is kept."""
        path = self._sent.pop((public_key, version), None)
        if path is None:
            return None
        self._sent[(public_key, version)] = path  # the last used, and the last evicted
        return path if (path / MODEL_FILES[1]).is_file() else None

    def keep_only(self, public_keys: set[str]) -> None:
        """What nodes no longer connected sent is dropped: the store holds at most
        KEEP_PER_NODE folders and one counts file for each node connected now."""
        for key, version in [k for k in self._sent if k[0] not in public_keys]:
            self.forget(key, version)
        for key in [k for k in self._words if k not in public_keys]:
            path = self._words.pop(key)
            if path not in self._words.values():
                path.unlink(missing_ok=True)

    def forget(self, public_key: str, version: str) -> None:
        """A folder that would not load, or one too old: dropped, unless another node sent the
        same files."""
        path = self._sent.pop((public_key, version), None)
        if path is not None and path not in self._sent.values():
            shutil.rmtree(path, ignore_errors=True)

    async def fetch(self, source: ModelSource, version: str) -> Path:
        """The folder of `version` that `source` sends, unless kept already; AuditError if the
        node will not send it, or sends other files or other weights."""
        if not (len(version) == 16 and all(c in "0123456789abcdef" for c in version)):
            raise AuditError(f"{version!r} is not a model version")
        if (kept := self.folder(source.public_key, version)) is not None:
            return kept
        self.root.mkdir(parents=True, exist_ok=True)
        part = self.root / f".{version}.{uuid.uuid4().hex[:8]}"
        part.mkdir()
        try:
            async with asyncio.timeout(FETCH_TIMEOUT_S):
                await self._receive(source.fetch_model(uuid.uuid4().hex, version), part)
            if await asyncio.to_thread(_version_of, part) != version:
                raise AuditError(f"the weights sent are not model {version}")
            target = self.root / f"{version}-{await asyncio.to_thread(_contents_of, part)}"
            if not target.exists():
                part.rename(target)
            self._sent[(source.public_key, version)] = target
            mine = [v for key, v in self._sent if key == source.public_key]
            for old in mine[:-KEEP_PER_NODE]:
                self.forget(source.public_key, old)
            return target
        except Exception as exc:  # refused, timed out, left, sent junk: all the node's doing
            raise AuditError(f"model {version} unavailable: {exc}") from None
        finally:
            shutil.rmtree(part, ignore_errors=True)

    @staticmethod
    async def _receive(parts: AsyncIterator[pb.ModelPart], into: Path,
                       files: tuple[str, ...] = MODEL_FILES, most: int = MAX_MODEL_BYTES,
                       ) -> None:  # fmt: skip
        total, seen, sizes = 0, set(), dict.fromkeys(files, 0)
        async for p in parts:
            if p.name not in files:
                raise AuditError(f"the node sent {p.name!r}, not one of {', '.join(files)}")
            total += len(p.data)
            sizes[p.name] += len(p.data)
            if total > most:
                raise AuditError(f"what it sent is over {most >> 20} MiB")
            if sizes[p.name] > MAX_FILE_BYTES.get(p.name, most):
                raise AuditError(f"its {p.name} is over {MAX_FILE_BYTES[p.name] >> 20} MiB")
            await asyncio.to_thread(_append, into / p.name, p.data)  # off the event loop
            seen.add(p.name)
        missing = set(files) - seen
        if missing:
            raise AuditError(f"the node sent no {', '.join(sorted(missing))}")


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _contents_of(folder: Path) -> str:
    """16 hex digits of a digest of every file of a model folder."""
    digest = hashlib.sha256()
    for name in MODEL_FILES:
        digest.update(f"{name}:{_sha256_of(folder / name)}\n".encode())
    return digest.hexdigest()[:16]


def _version_of(folder: Path) -> str:
    """What a node signs as its model version (slm.version), from the folder it sent."""
    digest = hashlib.sha256()
    with open(folder / MODEL_FILES[1], "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    try:
        meta = json.loads((folder / MODEL_FILES[0]).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise AuditError(f"the node sent a config.json that is not JSON: {exc}") from None
    return model_version(digest.hexdigest(), meta)
