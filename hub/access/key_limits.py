"""What one API key may ask: its own module, free of the key store's SQLAlchemy, so building
`slm-hub`'s parser (which derives `key create`'s flags from it) stays cheap."""

from __future__ import annotations

from dataclasses import dataclass

from slm.command import option
from slm.errors import SLMError


@dataclass(frozen=True)
class KeyLimits:
    """How much a key may ask; `slm-hub key create` derives its flags from these fields."""

    rate: int = option(
        60,
        "calls a minute (Asks, node lists, balances; a minute's worth at once); 0: none",
        metavar="N",
    )
    max_concurrent: int = option(4, "Asks in flight at once; 0: no limit", metavar="N")

    def __post_init__(self) -> None:
        for name, value in (("--rate", self.rate), ("--max-concurrent", self.max_concurrent)):
            if not 0 <= value <= 1_000_000:
                raise SLMError(f"{name} must be 0..1000000, got {value}")
