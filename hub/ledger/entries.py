"""What the ledger holds, without a database: accounts, transfers, hash-chained signed entries,
and the walk that verifies a chain.

Every entry moves a positive amount from one account to another, so balances always sum to
zero. Each carries hash = sha256(prev_hash || canonical bytes) and the hub's Ed25519 signature
over that hash; the head (the last seq and hash, signed too) catches deleting the newest
entries as well as editing, deleting or reordering any other.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, replace

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from slm.errors import SLMError

TREASURY = "treasury"
# inference_reward: asker -> node; hub_fee: asker -> treasury; grant: treasury -> key
ENTRY_KINDS = ("inference_reward", "training_reward", "penalty", "grant", "hub_fee")
GENESIS = "0" * 64


class LedgerError(SLMError):
    """A request the ledger refuses; nothing was written."""


def node_account(node_id: str) -> str:
    return f"node:{node_id}"


def payee_account(payee: str) -> str:
    """The account one segment of an answer pays: its node's, or the treasury's (a draft from
    the operator's own endpoint: the operator pays its bill)."""
    return TREASURY if payee == TREASURY else node_account(payee)


def key_account(key_id: str) -> str:
    """The account an API key's Asks are paid from."""
    return f"key:{key_id}"


@dataclass(frozen=True)
class Transfer:
    """An entry before it is chained: what moves, from whom, to whom, and why."""

    entry_id: str  # unique: recording the same fact twice credits it once
    kind: str  # one of ENTRY_KINDS
    debit: str
    credit: str
    amount: int  # micro-credits, > 0
    ref: str  # the request id or round id it pays for
    domain: str = ""
    reason: str = ""


@dataclass(frozen=True)
class Entry:
    seq: int
    entry_id: str
    kind: str
    debit: str
    credit: str
    amount: int
    ref: str
    domain: str
    reason: str
    created_at: str
    prev_hash: str = ""
    hash: str = ""
    signature: str = ""

    def canonical(self) -> bytes:
        """The bytes the hash covers: every fact of the entry, nothing derived from it."""
        facts = {
            "seq": self.seq, "entry_id": self.entry_id, "kind": self.kind, "debit": self.debit,
            "credit": self.credit, "amount": self.amount, "ref": self.ref, "domain": self.domain,
            "reason": self.reason, "created_at": self.created_at,
        }  # fmt: skip
        return json.dumps(facts, sort_keys=True, separators=(",", ":")).encode("utf-8")

    def chained(self, prev_hash: str, key: Ed25519PrivateKey) -> Entry:
        digest = hashlib.sha256(bytes.fromhex(prev_hash) + self.canonical()).hexdigest()
        signature = key.sign(bytes.fromhex(digest)).hex()
        return replace(self, prev_hash=prev_hash, hash=digest, signature=signature)


def chain(
    transfers: Iterable[Transfer], seq: int, prev: str, created_at: str, key: Ed25519PrivateKey
) -> list[Entry]:
    """The transfers as the entries that follow entry `seq` (hash `prev`), signed."""
    entries = []
    for t in transfers:
        seq += 1
        entry = Entry(
            seq, t.entry_id, t.kind, t.debit, t.credit, t.amount, t.ref, t.domain, t.reason,
            created_at,
        ).chained(prev, key)  # fmt: skip
        prev = entry.hash
        entries.append(entry)
    return entries


def head_bytes(seq: int, digest: str) -> bytes:
    """What the hub signs for the chain's head."""
    return f"swarmllm-ledger-head:{seq}:{digest}".encode()


def signed_by(public: Ed25519PublicKey, signature_hex: str, message: bytes) -> bool:
    try:
        public.verify(bytes.fromhex(signature_hex), message)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass
class Verification:
    ok: bool
    entries: int
    problem: str = ""
    bad_seq: int | None = None
    bad_entry_id: str = ""


def entry_problem(e: Entry, expected_seq: int, prev: str, public: Ed25519PublicKey) -> str:
    """Why this entry cannot follow entry `expected_seq - 1` (hash `prev`); "" if it can."""
    if e.seq != expected_seq:
        return f"entry {expected_seq} is missing (next found is {e.seq}): deleted?"
    if e.prev_hash != prev:
        return "does not link to the entry before it: reordered or one deleted?"
    if hashlib.sha256(bytes.fromhex(prev) + e.canonical()).hexdigest() != e.hash:
        return "its contents do not match its hash: edited?"
    if not signed_by(public, e.signature, bytes.fromhex(e.hash)):
        return "its signature is not the hub's"
    if e.amount <= 0 or e.debit == e.credit:
        return "it is not a transfer of a positive amount between two accounts"
    return ""


def verify_chain(
    entries: Iterable[Entry], head: tuple[int, str, str] | None, public: Ed25519PublicKey
) -> Verification:
    """Walk entries in seq order, then check the signed head (seq, hash, signature) ends them."""
    prev, expected_seq, n = GENESIS, 1, 0
    for e in entries:
        n += 1
        problem = entry_problem(e, expected_seq, prev, public)
        if problem:
            return Verification(False, n, problem, e.seq, e.entry_id)
        prev, expected_seq = e.hash, expected_seq + 1
    if head is None:
        return Verification(n == 0, n, "" if n == 0 else "the ledger head row is missing")
    seq, digest, signature = head
    if not signed_by(public, signature, head_bytes(seq, digest)):
        return Verification(False, n, "the ledger head's signature is not the hub's")
    if (seq, digest) != (expected_seq - 1, prev):
        return Verification(
            False, n, f"the chain ends at entry {expected_seq - 1} but the signed head says "
            f"{seq}: newest entries deleted?", seq,
        )  # fmt: skip
    return Verification(True, n)
