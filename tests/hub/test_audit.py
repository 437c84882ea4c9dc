"""The audit's parts (hub/routing/audit.py): the tolerance, the model store against what a
hostile node sends, and the real auditor process (`node.auditor`) against the node's own
scores, fp32 and int8. The audit in a running network: test_audit_network.py."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hub.routing.audit import (
    Audited,
    Auditor,
    Claim,
    Verdict,
    Worker,
    honest,
    misclaims,
    reputation_after,
)
from hub.routing.audit_store import (
    KEEP_PER_NODE,
    MAX_FILE_BYTES,
    MODEL_FILES,
    WORDS_FILE,
    AuditError,
    ModelStore,
)
from hub.routing.connection import NodeFailed
from node.identity import generate_key
from node.service import NodeService
from protos import swarm_pb2 as pb
from slm.model_folder import REQUIRED, load_model_folder
from tests.conftest import held_out_split


def test_the_tolerance_takes_serving_noise_and_not_a_lie() -> None:
    assert honest(-300.0, -300.0) and honest(-302.9, -300.0) and honest(-297.1, -300.0)
    assert honest(-296.0, -300.0) and not honest(-295.5, -300.0)  # 1 nat + 1% = 4 nats
    assert not honest(-240.0, -300.0)  # the 20% liar
    assert not honest(0.0, -300.0) and not honest(-900.0, -300.0)  # either way
    assert honest(-1.5, -1.0)  # short prompts: the 1-nat floor
    assert reputation_after("false-score", 1.0) == 0.0
    assert reputation_after("unavailable", 1.0) == 0.5 and reputation_after("unavailable", 0) > 0


def test_the_hub_knows_every_file_of_a_model_folder() -> None:
    assert MODEL_FILES == REQUIRED  # the hub cannot import slm (torch); the lists must agree


def test_the_hub_fetches_any_word_counts_slm_accepts_and_no_more() -> None:
    from hub.routing.audit_store import MAX_WORDS_BYTES
    from slm import word_counts

    assert (WORDS_FILE, MAX_WORDS_BYTES) == (word_counts.FILE, word_counts.MAX_BYTES)


class Source:
    """What a node sends when asked for its model: `parts`, or a refusal."""

    public_key = ""

    def __init__(self, parts: list[pb.ModelPart] | None) -> None:
        self.parts = parts

    async def fetch_model(
        self, request_id: str, version: str, words_sha256: str = ""
    ) -> AsyncIterator[pb.ModelPart]:
        if self.parts is None:
            raise NodeFailed("this node keeps its model to itself")
        for part in self.parts:
            yield part


def _parts(folder: Path, change: dict[str, bytes] | None = None) -> list[pb.ModelPart]:
    files = {name: (folder / name).read_bytes() for name in MODEL_FILES} | (change or {})
    names = list(files)
    return [pb.ModelPart(name=n, data=files[n], last=n == names[-1]) for n in names]


def test_the_store_keeps_exactly_the_model_that_signed(trained, tmp_path) -> None:
    folder = trained["law"].folder
    version = trained["law"].load().version
    store = ModelStore(tmp_path / "models")
    cases = {
        "refused": Source(None),
        "other weights": Source(_parts(folder, {"model.safetensors": b"\0" * 64})),
        "a foreign file": Source([*_parts(folder), pb.ModelPart(name="../../evil.py", data=b"x")]),
        "a file missing": Source(_parts(folder)[1:]),
    }
    for why, source in cases.items():
        with pytest.raises(AuditError, match="unavailable"):
            asyncio.run(store.fetch(source, version))
        assert store.folder("", version) is None, why
    with pytest.raises(AuditError, match="not a model version"):
        asyncio.run(store.fetch(Source(_parts(folder)), "../../etc"))
    kept = asyncio.run(store.fetch(Source(_parts(folder)), version))
    assert kept == store.folder("", version) and kept.parent == tmp_path / "models"
    assert kept.name.startswith(f"{version}-")  # and the digest of every file
    weights = (kept / "model.safetensors").read_bytes()
    assert hashlib.sha256(weights).hexdigest()[:16] == version
    assert not (tmp_path / "evil.py").exists() and sorted(p.name for p in kept.iterdir()) == sorted(
        MODEL_FILES
    )


def test_a_node_signing_ever_new_versions_cannot_fill_the_hubs_disk(trained, tmp_path) -> None:
    folder = trained["law"].folder
    (tmp_path / "models" / "0123456789abcdef").mkdir(parents=True)  # an earlier run's: nobody's
    store = ModelStore(tmp_path / "models")
    assert not (tmp_path / "models").exists()
    versions = []
    for i in range(5):  # weights the store does not load: their digest is the version
        weights = f"weights {i}".encode()
        versions.append(hashlib.sha256(weights).hexdigest()[:16])
        asyncio.run(
            store.fetch(Source(_parts(folder, {"model.safetensors": weights})), versions[-1])
        )
    kept = sorted(p.name.split("-")[0] for p in (tmp_path / "models").iterdir())
    assert kept == sorted(versions[-KEEP_PER_NODE:])
    assert store.folder("", versions[0]) is None and store.folder("", versions[-1]) is not None
    counts = [f"{{{i}}}".encode() for i in range(3)]  # the store checks digests, not contents
    for data in counts:
        source = Source([pb.ModelPart(name=WORDS_FILE, data=data, last=True)])
        asyncio.run(store.fetch_words(source, hashlib.sha256(data).hexdigest()))
    assert [p.read_bytes() for p in (tmp_path / "models" / "words").iterdir()] == counts[-1:]
    big = {"config.json": b" " * (MAX_FILE_BYTES["config.json"] + 1)}  # the hub parses it
    with pytest.raises(AuditError, match=r"config\.json is over 1 MiB"):
        asyncio.run(store.fetch(Source(_parts(folder, big)), versions[-1][::-1]))
    store.keep_only({"another node"})  # this one left: nothing of it is kept
    assert not any((tmp_path / "models").glob("*-*")) and not any(
        (tmp_path / "models" / "words").iterdir()
    )


def test_the_store_keeps_the_folders_a_node_used_last(trained, tmp_path) -> None:
    folder, store = trained["law"].folder, ModelStore(tmp_path / "models")
    versions = []
    for i in range(3):
        weights = f"weights {i}".encode()
        versions.append(hashlib.sha256(weights).hexdigest()[:16])
        if i == 2:
            assert store.folder("", versions[0]) is not None  # used again: kept, not the second
        asyncio.run(
            store.fetch(Source(_parts(folder, {"model.safetensors": weights})), versions[-1])
        )
    assert [store.folder("", v) is not None for v in versions] == [True, False, True]


def test_the_node_sends_its_model_in_parts_the_store_accepts(trained, tmp_path) -> None:
    service = NodeService(trained["medicine"].load(), generate_key())
    version = service.loaded.version
    parts = [pb.ModelPart(name=n, data=d, last=last) for n, d, last in service.model_files(version)]
    assert parts[-1].last and not any(p.last for p in parts[:-1])
    kept = asyncio.run(ModelStore(tmp_path).fetch(Source(parts), version))
    assert load_model_folder(kept).version == version
    with pytest.raises(Exception, match="serves model"):
        list(service.model_files("0" * 16))


class Sender:
    """A node as the auditor reaches it: `service` signs its claims and sends its word counts;
    `files`, if given, is the model folder it sends instead of its own."""

    def __init__(self, service: NodeService, files: dict[str, bytes] | None = None) -> None:
        self.service, self.files, self.fetched = service, files, 0
        self.public_key, self.words_sha256 = service.public_key, service.words_sha256
        assert service.centroid is not None
        self.centroid = tuple(service.centroid.tolist())

    async def fetch_model(self, request_id: str, version: str, words_sha256: str = ""
                          ) -> AsyncIterator[pb.ModelPart]:  # fmt: skip
        self.fetched += not words_sha256
        if self.files is None or words_sha256:
            for name, data, last in self.service.model_files(version, words_sha256):
                yield pb.ModelPart(name=name, data=data, last=last)
            return
        for part in _parts_of(self.files):
            yield part

    def claim(self, prompt: str) -> Claim:
        s = self.service.score("r", prompt)
        return Claim(self.service.node_id, self.public_key, "r", prompt, s,
                     centroid=self.centroid, words_sha256=self.words_sha256)  # fmt: skip


def _parts_of(files: dict[str, bytes]) -> list[pb.ModelPart]:
    names = list(files)
    return [pb.ModelPart(name=n, data=files[n], last=n == names[-1]) for n in names]


def _verdicts(senders: list[Sender], claims: list[Claim], tmp_path: Path
              ) -> tuple[list[Verdict | None], ModelStore]:  # fmt: skip
    """Each claim through a real Auditor and auditor process, in order."""
    store = ModelStore(tmp_path / "models")

    async def run() -> list[Verdict | None]:
        async def recorded(verdict: Verdict) -> None:
            return None

        sources = {s.service.node_id: s for s in senders}
        auditor = Auditor(1.0, store, Worker(tmp_path / "auditor.log"), sources, recorded)
        try:
            return [await auditor.audit(c) for c in claims]
        finally:
            await auditor.worker.close()

    return asyncio.run(run()), store


def test_a_node_is_audited_with_the_folder_it_sent_not_another_under_its_version(
    trained, tmp_path
) -> None:  # fmt: skip
    """A version binds a model's weights, not every file: a node with the same weights and
    another norm epsilon signs the same version. Sent first, its folder must not be the one
    an honest node's claims are judged by."""
    folder = trained["law"].folder
    law = load_model_folder(folder, serving="fp32")
    meta = json.loads((folder / "config.json").read_text())
    meta["model"]["norm_eps"] = 0.5
    files = {n: (folder / n).read_bytes() for n in MODEL_FILES}
    poisoner = Sender(
        NodeService(law, generate_key()), files | {"config.json": json.dumps(meta).encode()}
    )
    honest = Sender(NodeService(law, generate_key()))
    prompt = trained["law"].held_out[:300]
    first, then = _verdicts([poisoner, honest], [poisoner.claim(prompt), honest.claim(prompt)],
                            tmp_path)[0]  # fmt: skip
    assert first is not None and first.kind == "false-score"  # that folder gives other scores
    assert then is not None and then.kind == "honest", then.detail
    assert (poisoner.fetched, honest.fetched) == (1, 1)


@pytest.mark.parametrize("change", ["a billion layers", "an error of a megabyte"])
def test_a_folder_made_to_stall_or_flood_the_auditor_gets_a_verdict(trained, tmp_path, change
                                                                     ) -> None:  # fmt: skip
    """A config that would be built before its weights are checked, or whose error quotes a
    megabyte of it back (the hub reads the auditor's replies a line at a time), would otherwise
    leave the node's claims unjudged."""
    folder = trained["law"].folder
    law = load_model_folder(folder, serving="fp32")
    meta = json.loads((folder / "config.json").read_text())
    if change == "a billion layers":
        meta["model"]["n_layer"] = 10**9
    else:
        meta["model"]["x" * 1_000_000] = 1  # an unknown key, named in the error
    files = {n: (folder / n).read_bytes() for n in MODEL_FILES}
    sender = Sender(
        NodeService(law, generate_key()), files | {"config.json": json.dumps(meta).encode()}
    )
    [verdict], _ = _verdicts([sender], [sender.claim(trained["law"].held_out[:300])], tmp_path)
    assert verdict is not None and verdict.kind == "unavailable" and len(verdict.detail) < 1000


def test_a_node_whose_folder_does_not_load_is_unavailable_and_asked_again(trained, tmp_path
                                                                          ) -> None:  # fmt: skip
    folder = trained["medicine"].folder
    medicine = load_model_folder(folder, serving="fp32")
    files = {n: (folder / n).read_bytes() for n in MODEL_FILES} | {"tokenizer.json": b"{}"}
    sender = Sender(NodeService(medicine, generate_key()), files)
    prompt = trained["medicine"].held_out[:300]
    verdicts, store = _verdicts([sender], [sender.claim(prompt), sender.claim(prompt)], tmp_path)
    for verdict in verdicts:  # no proof it lied (a tokenizer is not in its version), no weight
        assert verdict is not None and verdict.kind == "unavailable"
        assert "does not load" in verdict.detail and "tokenizer.json" in verdict.detail
    assert sender.fetched == 2 and store.folder(sender.public_key, medicine.version) is None
    assert not list((tmp_path / "models").glob(f"{medicine.version}-*"))  # nothing kept


def _prompts(n: int) -> list[str]:
    texts = [held_out_split(d)[1] for d in ("medicine", "law", "religion")]
    out = []
    for i in range(n):
        text = texts[i % 3]
        at = (i // 3 * 97) % max(1, len(text) - 400)
        out.append(text[at : at + 120 + (i % 5) * 60])
    return out


def _audited(
    worker: Worker, folder: Path, prompts: list[str], centroid: tuple[float, ...] = (),
    words: Path | None = None,
) -> list[Audited]:  # fmt: skip
    async def run() -> list[Audited]:
        try:
            return [await worker.score(folder, p, centroid, words) for p in prompts]
        finally:
            await worker.close()

    return asyncio.run(run())


def _audit_all(worker: Worker, folder: Path, prompts: list[str]) -> list[float]:
    return [a.loglik for a in _audited(worker, folder, prompts)]


def test_the_auditor_process_reproduces_an_fp32_node_exactly(trained, tmp_path) -> None:
    folder = trained["law"].folder
    service = NodeService(load_model_folder(folder, serving="fp32"), generate_key())
    assert service.centroid is not None  # training wrote the folder's centroid.npy
    prompts = _prompts(12)
    assert service.words is not None  # and its words.json
    audited = _audited(Worker(tmp_path / "auditor.log"), folder, prompts,
                       tuple(service.centroid.tolist()), folder / "words.json")  # fmt: skip
    claimed = [service.score("r", p) for p in prompts]
    assert [a.loglik for a in audited] == pytest.approx([c.loglik for c in claimed], rel=1e-6)
    assert [a.similarity for a in audited] == pytest.approx(
        [c.similarity for c in claimed], abs=1e-5)  # fmt: skip
    assert audited[0].offset_loglik == pytest.approx(claimed[0].offset_loglik, rel=1e-6)
    assert audited[0].offset_similarity == pytest.approx(claimed[0].offset_similarity, abs=1e-5)
    assert [a.words_loglik for a in audited] == [c.words_loglik for c in claimed]  # exactly
    assert audited[0].offset_words == claimed[0].offset_words < 0
    assert all(not misclaims(c, a) for c, a in zip(claimed, audited, strict=True))


@pytest.mark.slow
def test_an_int8_node_is_never_found_false_over_1000_audited_claims(trained, tmp_path) -> None:
    folder = trained["religion"].folder
    node = NodeService(load_model_folder(folder, serving="int8"), generate_key())
    prompts = _prompts(1000)
    claimed = [node.score("r", p).loglik for p in prompts]
    audited = _audit_all(Worker(tmp_path / "auditor.log"), folder, prompts)
    misses = [abs(c - a) / abs(a) for c, a in zip(claimed, audited, strict=True)]
    assert all(honest(c, a) for c, a in zip(claimed, audited, strict=True)), max(misses)
    assert max(misses) < 0.01 / 3  # the tolerance keeps a threefold margin


def test_the_auditor_reports_a_broken_folder_as_its_own_failure(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(AuditError, match="could not score"):
        _audit_all(Worker(tmp_path / "auditor.log"), tmp_path / "empty", ["hello"])
