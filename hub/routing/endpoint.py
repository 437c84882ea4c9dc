"""A generalist the operator runs elsewhere: any OpenAI-compatible chat endpoint (a larger model
behind vLLM or llama.cpp's server, a hosted API, another hub) drafting the answers that domain
nodes refine (`slm-hub serve --generalist-url URL --generalist-model NAME`).

What it sends back is bounded like a node's answer: at most `max_tokens` x 128 bytes of text is
read, and the tokens paid for are the fewest of what it reports, the pieces it sent and the
bytes of text (a token is at least a byte of the byte-level vocabularies this network serves).
Its drafts are paid to the treasury: the operator pays the endpoint's bill.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from hub.routing.claims import MAX_TOKEN_BYTES
from hub.tls import is_loopback
from protos.wire import SamplingParams
from slm.errors import SLMError

TIMEOUT_S = 120.0  # one draft, connection to last byte
ENDPOINT = "endpoint:"  # who drafted: "endpoint:<model>"


class EndpointError(Exception):
    """The endpoint did not give a usable draft."""


@dataclass(frozen=True)
class EndpointConfig:
    url: str  # the API's base, e.g. https://llm.example.org/v1
    model: str
    api_key: str = ""
    ca: Path | None = None  # a CA to trust beyond the system's (a self-signed server)

    def __post_init__(self) -> None:
        parsed = httpx.URL(self.url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise SLMError(f"--generalist-url must be an http(s) URL, got {self.url!r}")
        if parsed.scheme == "http" and not is_loopback(parsed.host):
            raise SLMError("--generalist-url must be https unless the endpoint is on loopback: "
                           "prompts and the key would cross the network in clear")  # fmt: skip
        if not self.model:
            raise SLMError("--generalist-model must name the endpoint's model")


class EndpointDrafter:
    """Drafts through the endpoint's `/chat/completions`, streamed, one user message."""

    def __init__(self, config: EndpointConfig) -> None:
        self.config = config
        self.name = f"{ENDPOINT}{config.model}"[:64]
        verify: Any = str(config.ca) if config.ca else True
        headers = {"authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self.client = httpx.AsyncClient(verify=verify, headers=headers, timeout=TIMEOUT_S)

    async def draft(self, prompt: str, params: SamplingParams) -> tuple[str, int]:
        """(the draft, its tokens as paid for); EndpointError if there is none."""
        body: dict[str, Any] = {
            "model": self.config.model, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": params.max_tokens, "temperature": params.temperature,
            "top_p": params.top_p, "stream": True, "stream_options": {"include_usage": True},
        }  # fmt: skip
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        url = self.config.url.rstrip("/") + "/chat/completions"
        limit = params.max_tokens * MAX_TOKEN_BYTES
        pieces, text, reported = 0, "", None
        try:
            async with self.client.stream("POST", url, json=body) as response:
                if response.status_code != 200:
                    raise EndpointError(f"{url} answered HTTP {response.status_code}")
                async for line in response.aiter_lines():
                    piece, usage = _event(line)
                    if usage is not None:
                        reported = usage
                    if piece:
                        pieces += 1
                        text += piece
                    if len(text.encode("utf-8")) >= limit:
                        text = text.encode("utf-8")[:limit].decode("utf-8", "ignore")
                        break
        except httpx.HTTPError as exc:
            raise EndpointError(f"{url}: {type(exc).__name__}: {exc}") from None
        if not text.strip():
            raise EndpointError(f"{url} sent no draft")
        counts = [params.max_tokens, pieces, len(text.encode("utf-8"))]
        tokens = min(counts if reported is None else [*counts, reported])
        return text, tokens

    async def close(self) -> None:
        await self.client.aclose()


def _event(line: str) -> tuple[str, int | None]:
    """(text, completion tokens if the event reports usage) of one server-sent event line;
    anything else is nothing."""
    if not line.startswith("data:") or line.strip() == "data: [DONE]":
        return "", None
    try:
        event = json.loads(line[5:])
        choices = event.get("choices") or []
        delta = choices[0].get("delta", {}).get("content") if choices else None
        usage = (event.get("usage") or {}).get("completion_tokens")
    except (ValueError, AttributeError, IndexError, TypeError):
        return "", None
    tokens = usage if isinstance(usage, int) and usage >= 0 else None
    return (delta if isinstance(delta, str) else ""), tokens
