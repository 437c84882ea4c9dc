"""How fast and how much: per-key token buckets and concurrency, and the hub's own cap on Asks
at once. Plain objects on the serving hub's event loop (no locks: nothing here awaits)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from hub.access.keys import KeyRecord
from hub.errors import StatusError

# Why an Ask was refused before routing: the reason label of the rejected-requests metric, and
# (for HTTP) the OpenAI error code.
RATE, CONCURRENCY, QUOTA, BUSY = "rate_limit_exceeded", "concurrency", "insufficient_quota", "busy"


class LimitError(StatusError):
    """RESOURCE_EXHAUSTED, with the limit that was hit and when trying again could work."""

    def __init__(self, reason: str, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__("RESOURCE_EXHAUSTED", message)
        self.reason = reason
        self.retry_after_s = retry_after_s


@dataclass
class TokenBucket:
    """`per_min` Asks a minute, up to a minute's worth at once."""

    per_min: int
    tokens: float
    stamp: float

    def take(self, now: float) -> float:
        """0 if an Ask may go now (and it is counted), else seconds until one may."""
        self.tokens = min(float(self.per_min), self.tokens + (now - self.stamp) * self.per_min / 60)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) * 60 / self.per_min


class Limiter:
    """Per key: its rate and its Asks in flight; for the hub: all Asks in flight."""

    def __init__(self, max_asks: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_asks = max_asks
        self.clock = clock
        self.in_flight = 0
        self._buckets: dict[str, TokenBucket] = {}
        self._by_key: dict[str, int] = {}

    def acquire(self, key: KeyRecord) -> None:
        """Count one Ask of `key` in, or raise LimitError (nothing counted)."""
        if self.in_flight >= self.max_asks:
            raise LimitError(BUSY, f"the hub is serving its limit of {self.max_asks} Asks at "
                                   "once; try again in a moment")  # fmt: skip
        busy = self._by_key.get(key.key_id, 0)
        if key.max_concurrent and busy >= key.max_concurrent:
            raise LimitError(CONCURRENCY, f"this key may have {key.max_concurrent} Asks in "
                                          "flight at once; wait for one to finish")  # fmt: skip
        self.take(key)
        self._by_key[key.key_id] = busy + 1
        self.in_flight += 1

    def take(self, key: KeyRecord) -> None:
        """Count one call of `key` against its rate, or raise LimitError. Every call a key
        makes (listing nodes, reading a balance) counts, not only Asks."""
        if not key.rate_per_min:
            return
        now = self.clock()
        bucket = self._buckets.get(key.key_id)
        if bucket is None or bucket.per_min != key.rate_per_min:
            bucket = self._buckets[key.key_id] = TokenBucket(key.rate_per_min,
                                                             key.rate_per_min, now)  # fmt: skip
        wait = bucket.take(now)
        if wait > 0:
            raise LimitError(RATE, f"this key may call {key.rate_per_min} times a minute; "
                                   f"try again in {wait:.1f} s", wait)  # fmt: skip

    def release(self, key: KeyRecord) -> None:
        self.in_flight -= 1
        left = self._by_key.get(key.key_id, 1) - 1
        if left:
            self._by_key[key.key_id] = left
        else:
            self._by_key.pop(key.key_id, None)
