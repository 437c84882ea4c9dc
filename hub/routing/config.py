"""How the hub routes: the settings `slm-hub serve` derives its routing flags from.

Its own module, free of the router's imports, so building the CLI's parser stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

from slm.command import flag_of, option
from slm.errors import ConfigError

# A prompt, and on fail-over the prompt and the answer so far (at most MAX_TOKENS x 128 bytes),
# crosses to a node in one GenerateRequest, which must stay under gRPC's 4 MiB receive limit.
MAX_PROMPT_LIMIT = 1 << 20


@dataclass(frozen=True)
class RouterConfig:
    """How the hub routes; `slm-hub serve` derives its flags from these fields."""

    max_prompt_bytes: int = option(16_384, "larger prompts are refused")
    candidates: int = option(8, "nodes scored per prompt: the top M by domain profile")
    score_deadline_s: float = option(2.0, "seconds a node has to score a prompt, else skipped")
    stall_s: float = option(10.0, "seconds without a piece of answer, then the next node goes on")
    # Set by temperature scaling: the T with the lowest mean -log p(true domain | prompt) over
    # the routing evaluation's held-out prompts (docs/evaluation.md). Logliks are sums over a
    # prompt's tokens, so T = 1 is near 0/1.
    posterior_temperature: float = option(32.0, "T in p(node|prompt) ∝ prior·exp(evidence/T)")
    # Both chosen together on the even prompts of the routing evaluation's two settings (large
    # and little data, adapter nodes), judged on the odd ones (docs/evaluation.md)
    similarity_weight: float = option(
        0.35, "nats per prompt byte per unit of a node's similarity to the prompt (its "
        "centroid's), beside its loglik; 0: likelihood alone",
    )  # fmt: skip
    words_weight: float = option(
        0.5, "nats per nat of the loglik of a prompt's words under a node's word counts "
        "(its training text's), beside its loglik; 0: no word counts",
    )  # fmt: skip
    # With the default penalty a lie's expected fine exceeds the most an Ask can pay (rewards.py)
    audit_rate: float = option(0.05, "share of signed scores the hub re-scores; 0: none")
    max_asks: int = option(64, "Asks served at once; more are refused (RESOURCE_EXHAUSTED)")
    ask_deadline_s: float = option(300.0, "seconds one Ask may take, fail-overs included")
    # Refine by default: on the fact evaluation it recalls what neither model alone does, and
    # its own words (outside the quote) read as the generalist's (docs/evaluation.md); it
    # costs a draft's time and tokens
    mode: str = option(
        "refine", "how an Ask that names no mode is answered: refine (a generalist drafts, the "
        "most confident domain node refines; direct while either is missing) or direct",
        choices=("direct", "refine"),
    )  # fmt: skip

    def __post_init__(self) -> None:
        if self.max_prompt_bytes > MAX_PROMPT_LIMIT:
            flag = flag_of(RouterConfig, "max_prompt_bytes")
            raise ConfigError(
                f"{flag} must be at most {MAX_PROMPT_LIMIT}: a prompt goes to every node in one "
                "message, under their 4 MiB receive limit"
            )
        for name in ("max_prompt_bytes", "candidates", "max_asks"):
            if getattr(self, name) < 1:
                flag = flag_of(RouterConfig, name)
                raise ConfigError(f"{flag} must be at least 1, got {getattr(self, name)}")
        if self.mode not in ("direct", "refine"):
            raise ConfigError(f"--mode must be direct or refine, got {self.mode!r}")
        if not 0.0 <= self.audit_rate <= 1.0:
            flag = flag_of(RouterConfig, "audit_rate")
            raise ConfigError(f"{flag} must be between 0 and 1, got {self.audit_rate}")
        for name in ("similarity_weight", "words_weight"):
            if not 0 <= getattr(self, name) < 1000:
                flag = flag_of(RouterConfig, name)
                raise ConfigError(f"{flag} must be between 0 and 1000, got {getattr(self, name)}")
        for name in ("score_deadline_s", "stall_s", "posterior_temperature", "ask_deadline_s"):
            if not getattr(self, name) > 0:
                flag = flag_of(RouterConfig, name)
                raise ConfigError(f"{flag} must be positive, got {getattr(self, name)}")
