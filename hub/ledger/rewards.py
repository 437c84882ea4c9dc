"""What the hub pays and for what: credits, the reward settings, and the transfers an inference
or a training round earns. Plain arithmetic, no database: the SQL ledger records what these
functions decide."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from hub.ledger.entries import TREASURY, LedgerError, Transfer, payee_account

MICRO = 1_000_000  # micro-credits per credit
MAX_CREDITS = 10**9  # one transfer; keeps every sum far inside a 64-bit integer
# partial: the client left, or the Ask failed, after text was delivered: it pays what it got
OUTCOMES = ("success", "partial", "failed", "unverified", "timeout")


def parse_credits(text: str) -> int:
    """'1.5' -> 1_500_000 micro-credits; refuses negatives, zero, junk and sub-micro digits."""
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError):
        raise LedgerError(f"amount {text!r} is not a number; give credits like 2 or 0.25") from None
    if not value.is_finite() or value <= 0:
        raise LedgerError(f"amount {text!r} must be a positive number of credits")
    if value > MAX_CREDITS:
        raise LedgerError(f"amount {text!r} is larger than the limit of {MAX_CREDITS:,} credits")
    micro = value * MICRO
    if micro != micro.to_integral_value():
        raise LedgerError(f"amount {text!r} has more than 6 decimal places")
    return int(micro)


def format_credits(micro: int) -> str:
    return f"{Decimal(micro) / MICRO:.6f}"


@dataclass(frozen=True)
class Rewards:
    """What the hub pays, in micro-credits (`[rewards]` in hub.toml)."""

    inference_base: int = 1 * MICRO
    inference_per_token: int = 10_000  # 0.01 credit per delivered token
    training_round: int = 10 * MICRO  # split among a round's participants
    # What a claim the audit proves false costs. An Ask pays at most 1 + 0.01 x 4096 = 42
    # credits, so at the default audit rate (0.05) a lie's expected fine, 0.05 x 1000 = 50
    # credits, exceeds the most it can win, before counting the reputation it loses.
    audit_penalty: int = 1000 * MICRO
    # What the hub keeps on top of what the nodes earn, in parts per million of it (100000:
    # 10%): the asker pays both, the treasury receives the fee.
    hub_fee_ppm: int = 100_000

    def __post_init__(self) -> None:
        if not 0 <= self.hub_fee_ppm <= 1_000_000:
            raise LedgerError(f"rewards.hub_fee_ppm must be 0..1000000, got {self.hub_fee_ppm}")

    def earned(self, tokens: int) -> int:
        """What the nodes of an answer of `tokens` paid tokens share; 0 for no tokens."""
        return self.inference_base + self.inference_per_token * tokens if tokens > 0 else 0

    def fee(self, earned: int) -> int:
        return earned * self.hub_fee_ppm // 1_000_000

    def price(self, tokens: int) -> int:
        """What an asker pays for an answer of `tokens` paid tokens: the nodes' pay and the
        hub's fee. `price(max_tokens)` is what an Ask must be able to pay before it is routed."""
        earned = self.earned(tokens)
        return earned + self.fee(earned)


@dataclass(frozen=True)
class InferenceRecord:
    """One routed request, as the routing plane reports it."""

    request_id: str
    prompt_sha256: str
    outcome: str  # one of OUTCOMES
    segments: Sequence[tuple[str, int]]  # (node id, tokens it delivered), in stream order
    candidates: Sequence[dict[str, Any]] = ()
    domain: str = ""
    latency_ms: float = 0.0
    completion_signature: str = ""
    prompt: str | None = None
    payer: str = TREASURY  # the account that pays: the asking key's ("key:<id>")
    draft_segments: int = 0  # how many of the first segments are a draft (refine mode)

    def __post_init__(self) -> None:
        if not self.request_id or len(self.request_id) > 100:
            raise LedgerError(f"request id must be 1-100 characters, got {self.request_id!r}")
        if self.outcome not in OUTCOMES:
            raise LedgerError(f"outcome {self.outcome!r} is not one of {', '.join(OUTCOMES)}")
        for node, tokens in self.segments:
            if not isinstance(tokens, int) or tokens < 0:
                raise LedgerError(f"node {node} delivered {tokens!r} tokens; need an integer >= 0")
        if not 0 <= self.draft_segments <= len(self.segments):
            raise LedgerError(f"{self.draft_segments} draft segments of {len(self.segments)}")


def split(total: int, weights: Sequence[int]) -> list[int]:
    """Shares of `total` proportional to non-negative integer `weights` (floored); the largest
    weight takes the rounding remainder, so the shares add up to exactly `total` and a zero
    weight always gets zero."""
    whole = sum(weights)
    shares = [total * w // whole for w in weights]
    shares[max(range(len(weights)), key=weights.__getitem__)] += total - sum(shares)
    return shares


def _payouts(
    kind: str, ref: str, domain: str, total: int, recipients: Sequence[tuple[str, str, int, str]],
    payer: str = TREASURY,
) -> list[Transfer]:  # fmt: skip
    """Payer -> node transfers of `total` split by weight; recipients are (entry id,
    node, weight, reason). A zero share is no transfer."""
    shares = split(total, [weight for _, _, weight, _ in recipients])
    return [
        Transfer(entry_id, kind, payer, payee_account(node), share, ref, domain, reason)
        for (entry_id, node, _, reason), share in zip(recipients, shares, strict=True)
        if share > 0
    ]


def inference_transfers(record: InferenceRecord, rewards: Rewards) -> list[Transfer]:
    """A successful (or partly delivered) inference: the payer pays the nodes base +
    per-token, split by tokens actually delivered, and the hub its fee. Anything else costs
    nothing and earns nothing."""
    delivered = [(i, node, tokens) for i, (node, tokens) in enumerate(record.segments)
                 if tokens > 0]  # fmt: skip
    if record.outcome not in ("success", "partial") or not delivered:
        return []
    total_tokens = sum(t for _, _, t in delivered)
    total = rewards.earned(total_tokens)
    recipients = [
        (f"inference:{record.request_id}:{n}", node, tokens,
         f"{tokens} of {total_tokens} tokens" + (" (draft)" if i < record.draft_segments else ""))
        for n, (i, node, tokens) in enumerate(delivered)
    ]  # fmt: skip
    paid = _payouts("inference_reward", record.request_id, record.domain, total, recipients,
                    record.payer)  # fmt: skip
    fee = rewards.fee(total)
    if record.payer != TREASURY and fee > 0:
        paid.append(Transfer(f"fee:{record.request_id}", "hub_fee", record.payer, TREASURY, fee,
                             record.request_id, record.domain, "the hub's fee"))  # fmt: skip
    return paid


def charged(transfers: Sequence[Transfer], payer: str) -> int:
    """What `payer` paid in these transfers."""
    return sum(t.amount for t in transfers if t.debit == payer)


def round_transfers(
    round_id: str, domain: str, participants: Sequence[tuple[str, int]], rewards: Rewards,
    by_examples: bool,
) -> list[Transfer]:  # fmt: skip
    """A completed round's reward, split equally or by examples trained on."""
    recipients = [
        (f"round:{round_id}:{node}", node, examples if by_examples else 1, f"{examples} examples")
        for node, examples in participants
    ]
    if sum(weight for _, _, weight, _ in recipients) <= 0:
        return []
    return _payouts("training_reward", round_id, domain, rewards.training_round, recipients)
