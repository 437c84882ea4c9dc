"""What an Ask passes before any node hears of it: a valid key, the hub's and the key's limits,
a request id not answered before, and credits for the most the answer can cost.

The credits are reserved, not spent: the answer is charged what it cost (the ledger records
that) and the reservation is released only after the charge is durable, so the Asks of one key
in flight on this hub can never together spend more than its balance. A balance is read in a
thread; if a reservation of the account was released meanwhile (its charge may have landed
after the read), it is read again, so a stale balance is never paired with a reservation
that is gone. Releasing is synchronous: a task cancelled again and again (as ASGI servers do
to a request whose client left) cannot leak a slot, a reservation or a request id.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable

from hub.access.keys import AuthError, KeyCache, KeyRecord
from hub.access.limits import QUOTA, Limiter, LimitError
from hub.errors import StatusError

MAX_IDEMPOTENCY_CHARS = 256


def request_id_for(key: KeyRecord, idempotency_key: str) -> str:
    """The request id a client's idempotency key stands for: the same key and value, the same
    id, so the ledger records (and charges) it once."""
    if not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_CHARS:
        raise StatusError(
            "INVALID_ARGUMENT", f"an idempotency key must be 1..{MAX_IDEMPOTENCY_CHARS} characters"
        )
    digest = hashlib.sha256(idempotency_key.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{key.key_id}-{digest[:32]}"


def bearer(value: str | None) -> str:
    """The key in an `authorization` value ("Bearer <key>"); AuthError without one."""
    if not value:
        raise AuthError("this hub needs an API key: send `authorization: Bearer <key>` "
                        "(`slm-hub key create` makes one)")  # fmt: skip
    scheme, _, key = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise AuthError("the authorization must be `Bearer <key>`")
    return key.strip()


class Gate:
    def __init__(
        self, keys: KeyCache, limiter: Limiter, balance: Callable[[str], int],
        recorded: Callable[[str], bool],
    ) -> None:  # fmt: skip
        self.keys = keys
        self.limiter = limiter
        self.balance = balance  # account -> micro-credits (blocking: one row)
        self.recorded = recorded  # request id -> already in the ledger (blocking)
        self.reserved: dict[str, int] = {}  # account -> micro-credits held by Asks in flight
        self._released: dict[str, int] = {}  # account -> reservations released so far
        self._running: set[str] = set()  # request ids in flight

    async def authenticate(self, authorization: str | None) -> KeyRecord:
        key = bearer(authorization)
        if self.keys.fresh():  # a dictionary lookup: no thread needed
            return self.keys.authenticate(key)
        return await asyncio.to_thread(self.keys.authenticate, key)

    async def enter(
        self, key: KeyRecord, request_id: str, cost: int, idempotent: bool = True
    ) -> Callable[[], None]:
        """Hold an Ask's place; the function returned gives it back (call it exactly once,
        after the Ask's charge is durable). StatusError, with nothing held, if it may not go.
        `idempotent`: the request id is the client's, so it may have been answered before (a
        fresh random id cannot have been)."""
        if request_id in self._running:
            raise StatusError("ABORTED", "a request with this idempotency key is being answered "
                                         "now; wait for it")  # fmt: skip
        self.limiter.acquire(key)
        self._running.add(request_id)
        reserved = 0

        def release() -> None:
            if reserved:
                left = self.reserved.get(key.account, 0) - reserved
                if left > 0:
                    self.reserved[key.account] = left
                else:
                    self.reserved.pop(key.account, None)
                self._released[key.account] = self._released.get(key.account, 0) + 1
            self._running.discard(request_id)
            self.limiter.release(key)

        try:
            if idempotent and await asyncio.to_thread(self.recorded, request_id):
                raise StatusError("ALREADY_EXISTS", f"request {request_id} was answered already "
                                  "(same idempotency key); it is not charged again")  # fmt: skip
            await self._reserve(key, cost)
            reserved = cost
        except BaseException:
            release()
            raise
        return release

    async def _reserve(self, key: KeyRecord, cost: int) -> None:
        if cost <= 0:
            return
        while True:
            released = self._released.get(key.account, 0)
            balance = await asyncio.to_thread(self.balance, key.account)
            if self._released.get(key.account, 0) == released:  # no charge landed unseen
                break
        held = self.reserved.get(key.account, 0)
        if balance - held < cost:
            raise LimitError(QUOTA, f"key {key.name!r} has {(balance - held) / 1e6:.6f} "
                             f"credits free and this Ask may cost {cost / 1e6:.6f}; lower "
                             "max_tokens, or ask the operator for `slm-hub ledger grant`",
                             60.0)  # fmt: skip
        self.reserved[key.account] = held + cost
