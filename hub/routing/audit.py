"""Auditing what nodes claim: a sample of signed scores re-scored with the model that signed
them, in a process apart from the hub (`node.auditor`; the hub never imports torch).

The router routes by claims; the bounds in `claims` stop only impossible ones. A node that
claims a likelier prompt than its model gives wins prompts it should not and the rewards with
them. So every signed score is, with probability `audit_rate`, queued here: its signature is
checked (only a signed statement is evidence), the model folder of the version it names is
fetched from the node once (its weights must give that version: slm.version) and kept under the
hub home, and so are the node's word counts (content-addressed by the sha256 its Hello committed
to and its statement signs); the prompt is re-scored in fp32, and a claim further from the truth
than the tolerance is a fraud proof. A node that will not send the model or the counts it signed
with, or sends a model that will not load, gets no weight instead. The version does not bind
every file of a folder (a tokenizer or a norm epsilon can differ under the same weights), so a
node is audited with the folder it sent itself: another node that signs the same version cannot
make an honest node's claims look false by sending its version first with other files. What
a verdict costs (evidence kept, a penalty, the reputation that is its prior in the posterior) is
the serving process's to decide: it passes `on_verdict` in.

Tolerance: an honest node may serve in int8 while the audit runs fp32. Measured on the three
demo models over 221 prompts of 300 characters, int8 claims differ from fp32 by at most 0.31%
(p99 0.26%, at most 2.2 nats); thread counts change nothing. The tolerance, 1 nat + 1%, is three
times that; a claim 20% better than the truth is twenty times beyond it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hub.routing.audit_store import AuditError, ModelSource, ModelStore
from protos.signing import centroid_sha256, score_bytes, verify
from protos.wire import Score

log = logging.getLogger("slm-hub")

REL_TOLERANCE, ABS_TOLERANCE = 0.01, 1.0  # of the audited loglik; nats
# The offset is a mean per byte, so the loglik's absolute nat becomes a hundredth of one; a
# similarity is one encoder's cosine, the same in any precision to 1e-6.
OFFSET_TOLERANCE, SIMILARITY_TOLERANCE = 0.01, 1e-3
# Word counts are integers and their loglik the same sum of logs in float64 on both sides
WORDS_TOLERANCE = 1e-6  # relative, and absolute under one nat
# What a verdict does to a node's reputation (its prior in the posterior). A proven lie sets it
# to 0: the node is routed to no more (a smaller prior would not do: a lie of 20% on a 16 KB
# prompt is worth about 100 nats at T = 32, more than any prior above 1e-40 takes back). A
# model the node would not show halves its weight each time.
UNAVAILABLE_FACTOR, MIN_REPUTATION = 0.5, 1e-9


def reputation_after(kind: str, reputation: float) -> float:
    return 0.0 if kind == "false-score" else max(MIN_REPUTATION, reputation * UNAVAILABLE_FACTOR)


QUEUE_LIMIT = 256  # claims waiting for the auditor; more are not sampled (counted as skipped)
WORKER_TIMEOUT_S = 120.0


class InvalidModel(AuditError):
    """The model folder the node sent does not load; the version does not bind all of it, so
    this is no proof the node lied, but it showed nothing its claims can be checked against."""


class InvalidWords(AuditError):
    """The word counts the node committed to are not a valid counts file: no claim under them
    can be true, and the node signed their digest."""


def honest(claimed: float, audited: float) -> bool:
    """A claim within the tolerance of the audited loglik (either way)."""
    return abs(claimed - audited) <= ABS_TOLERANCE + REL_TOLERANCE * abs(audited)


def misclaims(score: Score, audited: Audited) -> list[str]:
    """What in a score its model and centroid do not give: empty for an honest one."""
    wrong = []
    if not honest(score.loglik, audited.loglik):
        wrong.append(f"loglik {score.loglik:.3f} (the model gives {audited.loglik:.3f})")
    pairs = (("similarity", score.similarity, audited.similarity, SIMILARITY_TOLERANCE),
             ("offset_similarity", score.offset_similarity, audited.offset_similarity,
              SIMILARITY_TOLERANCE),
             ("offset_loglik", score.offset_loglik, audited.offset_loglik,
              OFFSET_TOLERANCE * (1 + abs(audited.offset_loglik))),
             ("words_loglik", score.words_loglik, audited.words_loglik,
              WORDS_TOLERANCE * (1 + abs(audited.words_loglik))),
             ("offset_words", score.offset_words, audited.offset_words,
              WORDS_TOLERANCE * (1 + abs(audited.offset_words))))  # fmt: skip
    for name, claimed, truth, tolerance in pairs:
        if abs(claimed - truth) > tolerance:
            wrong.append(f"{name} {claimed:.4f} (the model gives {truth:.4f})")
    return wrong


@dataclass(frozen=True)
class Audited:
    """What the auditor process measured with the claim's model and the node's centroid."""

    loglik: float
    similarity: float
    offset_loglik: float
    offset_similarity: float
    words_loglik: float = 0.0
    offset_words: float = 0.0


@dataclass(frozen=True)
class Claim:
    node_id: str
    public_key: str
    request_id: str
    prompt: str
    score: Score
    impossible: bool = False  # no model can claim it (hub.routing.claims): judged unscored
    centroid: tuple[float, ...] = ()  # the one the node's Hello committed to
    words_sha256: str = ""  # of the word counts the node's Hello committed to

    def statement(self) -> bytes:
        s, centroid = self.score, centroid_sha256(self.centroid)
        return score_bytes(self.node_id, self.request_id, self.prompt, s.loglik, s.bits_per_byte,
                           s.confidence, s.declined, s.model_version,
                           s.centred(centroid, self.words_sha256))  # fmt: skip


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    kind: str  # "honest", "false-score" or "unavailable"
    audited: float | None
    detail: str = ""


class Worker:
    """The auditor process (`python -m node.auditor`), started on first use, restarted if it
    dies; one claim at a time."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._ids = 0

    async def score(self, folder: Path, prompt: str, centroid: tuple[float, ...] = (),
                    words: Path | None = None) -> Audited:  # fmt: skip
        async with self._lock:
            process = await self._started()
            assert process.stdin is not None and process.stdout is not None
            self._ids += 1
            line = json.dumps({"id": self._ids, "folder": str(folder), "prompt": prompt,
                               "centroid": list(centroid),
                               "words": "" if words is None else str(words)}) + "\n"  # fmt: skip
            try:
                process.stdin.write(line.encode())
                await process.stdin.drain()
                reply = json.loads(await asyncio.wait_for(process.stdout.readline(),
                                                          WORKER_TIMEOUT_S))  # fmt: skip
                if not isinstance(reply, dict) or reply.get("id") != self._ids:
                    raise ValueError(f"a reply to another request: {str(reply)[:200]}")
            except (TimeoutError, ConnectionError, ValueError) as exc:  # a line over the limit too
                await self.close()
                raise AuditError(f"the auditor process failed: {exc!r}") from None
            if "invalid_words" in reply:
                raise InvalidWords(str(reply["invalid_words"]))
            if "invalid_model" in reply:
                raise InvalidModel(str(reply["invalid_model"]))
            if "error" in reply:
                raise AuditError(f"the auditor could not score: {reply['error']}")
            names = ("loglik", "similarity", "offset_loglik", "offset_similarity",
                     "words_loglik", "offset_words")  # fmt: skip
            return Audited(*(float(reply[name]) for name in names))

    async def _started(self) -> asyncio.subprocess.Process:
        if self.process is None or self.process.returncode is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "ab") as err:
                self.process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "node.auditor", stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE, stderr=err,
                )  # fmt: skip
        return self.process

    async def close(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        self.process = None


@dataclass
class Auditor:
    rate: float
    store: ModelStore
    worker: Worker
    sources: Mapping[str, ModelSource]  # the connected nodes
    on_verdict: Callable[[Verdict], Awaitable[None]]  # every verdict but "honest"
    rng: random.Random = field(default_factory=random.Random)
    counts: dict[str, int] = field(default_factory=dict)  # verdicts (and "skipped") so far
    by_node: dict[str, dict[str, int]] = field(default_factory=dict)  # node -> verdict -> count
    _queue: asyncio.Queue[Claim] = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))

    def observe(
        self, request_id: str, prompt: str, scores: Mapping[str, Score],
        impossible: Mapping[str, Score],
    ) -> None:  # fmt: skip
        """The router scored a prompt: sample its claims for the audit, and take every
        impossible one (on the event loop)."""
        for node_id, score in [*scores.items(), *impossible.items()]:
            source = self.sources.get(node_id)
            lie = node_id in impossible
            if source is None or (not lie and self.rng.random() >= self.rate):
                continue
            claim = Claim(node_id, source.public_key, request_id, prompt, score, lie,
                          source.centroid, source.words_sha256)  # fmt: skip
            try:
                self._queue.put_nowait(claim)
            except asyncio.QueueFull:
                self._count("skipped")

    async def run(self, stop: asyncio.Event) -> None:
        """Audit queued claims until `stop` is set."""
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                getting = asyncio.create_task(self._queue.get())
                await asyncio.wait({getting, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not getting.done():
                    getting.cancel()
                    break
                try:
                    verdict = await self.audit(getting.result())
                except Exception as exc:  # a bug of ours must not stop the audit for good
                    log.error("audit failed: %r", exc, exc_info=exc)
                    continue
                if verdict is None:
                    continue
                self._count(verdict.kind)
                mine = self.by_node.setdefault(verdict.claim.node_id, {})
                mine[verdict.kind] = mine.get(verdict.kind, 0) + 1
                if verdict.kind != "honest":
                    try:
                        await self.on_verdict(verdict)
                    except Exception as exc:  # e.g. the database: logged, the node goes unpunished
                        log.error("could not record the audit of %s: %s", verdict.claim.node_id,
                                  exc)  # fmt: skip
        finally:
            stopping.cancel()
            await self.worker.close()
            if self.counts:
                log.info("audit: %s", ", ".join(f"{n} {k}" for k, n in sorted(self.counts.items())))

    async def audit(self, claim: Claim) -> Verdict | None:
        """The claim's verdict; None if it is not a statement the node signed (no evidence)."""
        signed = await asyncio.to_thread(
            verify, claim.public_key, claim.score.signature, claim.statement()
        )
        if not signed:
            return None
        if claim.impossible:  # signed, and no model gives it: proof enough
            detail = (f"claimed loglik {claim.score.loglik:.6g} (bits per byte "
                      f"{claim.score.bits_per_byte:.6g}, confidence {claim.score.confidence:.6g}),"
                      " which no model can give")  # fmt: skip
            return Verdict(claim, "false-score", None, detail)
        version = claim.score.model_version
        try:
            folder = self.store.folder(claim.public_key, version)
            if folder is None:
                source = self.sources.get(claim.node_id)
                if source is None:
                    raise AuditError("the node left before it sent its model")
                self.store.keep_only({s.public_key for s in self.sources.values()})
                folder = await self.store.fetch(source, version)
            words = await self._words(claim)
        except AuditError as exc:
            return Verdict(claim, "unavailable", None, str(exc))
        try:
            audited = await self.worker.score(folder, claim.prompt, claim.centroid, words)
        except InvalidWords as exc:  # the node's: it signed under counts that cannot be
            detail = f"its word counts {claim.words_sha256[:16]} are not valid: {exc}"
            return Verdict(claim, "false-score", None, detail)
        except InvalidModel as exc:  # the node's: it sent them; asked again next time
            self.store.forget(claim.public_key, version)
            return Verdict(claim, "unavailable", None, f"its model {version} does not load: {exc}")
        except AuditError as exc:  # ours, not the node's: no verdict
            log.error("audit of %s skipped: %s", claim.node_id[:12], exc)
            return None
        wrong = misclaims(claim.score, audited)
        detail = (f"model {version}: claimed " + "; ".join(wrong) if wrong else
                  f"claimed loglik {claim.score.loglik:.3f}, model {version} gives "
                  f"{audited.loglik:.3f}")  # fmt: skip
        return Verdict(claim, "false-score" if wrong else "honest", audited.loglik, detail)

    async def _words(self, claim: Claim) -> Path | None:
        """The word counts the claim is under, fetched from its node unless kept already."""
        if not claim.words_sha256:
            return None
        if (kept := self.store.words(claim.words_sha256)) is not None:
            return kept
        source = self.sources.get(claim.node_id)
        if source is None:
            raise AuditError("the node left before it sent its word counts")
        self.store.keep_only({s.public_key for s in self.sources.values()})
        return await self.store.fetch_words(source, claim.words_sha256)

    def _count(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
