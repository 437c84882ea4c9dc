"""The OpenAI-compatible requests the hub accepts, as pydantic models (FastAPI derives the
OpenAPI schema from them, which the fuzz test reads), and the one chat template.

The chat template: the messages' texts, in order, joined by a blank line; the answer continues
the last one. Nodes serve continuation models trained on plain domain text, so role labels
would be text they never saw, and they would weigh on every node's likelihood of the prompt,
which is what routing reads. A node serving an instruct model applies its own template to the
prompt it is given. `tests/hub/test_openai_api.py` pins this.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from protos.wire import MAX_STOP_BYTES, MAX_STOPS, MAX_TEMPERATURE, MAX_TOKENS, SamplingParams

MAX_MESSAGES = 256
MAX_PARTS = 64  # text parts of one message
PREFIX = "swarm/"
AUTO = "swarm/auto"


class RequestError(Exception):
    """An invalid or unsupported request: HTTP 400 with this message, naming `param`."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | Annotated[list[TextPart], Field(max_length=MAX_PARTS)]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


Stop = str | Annotated[list[str], Field(max_length=MAX_STOPS)] | None


class SwarmOptions(BaseModel):
    """SwarmLLM's own request fields, under `swarm` (openai's `extra_body={"swarm": {...}}`)."""

    model_config = ConfigDict(extra="forbid")
    mode: Literal["direct", "refine"] | None = Field(
        None, description="direct: the most confident node answers; refine: a generalist drafts "
        "and the most confident domain node refines; absent: the hub's default",
    )  # fmt: skip
    draft: str | None = Field(
        None, min_length=1, description="your own draft answer (a larger model's, say): the "
        "domain node that fits the prompt best refines it; implies refine",
    )  # fmt: skip


class _Common(BaseModel):
    """What both endpoints take. Unknown fields are allowed (clients send many) and ignored,
    except the ones that change the answer's meaning, which `unsupported` refuses."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(description="swarm/auto (routed by confidence) or swarm/<domain>")
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    temperature: float | None = Field(None, ge=0, le=MAX_TEMPERATURE)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, lt=2**63)
    stop: Stop = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = None
    logprobs: Any = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    swarm: SwarmOptions | None = None

    def mode(self) -> str:
        return (self.swarm.mode if self.swarm else None) or ""

    def draft(self) -> str | None:
        return self.swarm.draft if self.swarm else None

    def domain(self) -> str:
        """The domain a model name pins ("" for swarm/auto)."""
        if self.model == AUTO:
            return ""
        if not self.model.startswith(PREFIX) or not self.model[len(PREFIX) :]:
            raise RequestError(
                f"model {self.model!r} is not served here; use {AUTO} or "
                f"{PREFIX}<domain> (GET /v1/models lists them)",
                "model",
            )
        return self.model[len(PREFIX) :]

    def sampling(self, max_tokens: int | None) -> SamplingParams:
        self.unsupported()
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        for s in stops:
            try:
                size = len(s.encode("utf-8"))
            except UnicodeEncodeError:
                raise RequestError("stop strings must be valid UTF-8 text", "stop") from None
            if not 0 < size <= MAX_STOP_BYTES:
                raise RequestError(f"each stop string must be 1..{MAX_STOP_BYTES} bytes", "stop")
        given: dict[str, Any] = {"stop": tuple(stops)}
        for name, value in (("max_tokens", max_tokens), ("temperature", self.temperature),
                            ("top_p", self.top_p), ("seed", self.seed)):  # fmt: skip
            if value is not None:
                given[name] = value
        return SamplingParams(**given)

    def unsupported(self) -> None:
        """Refuse what this hub cannot do rather than silently ignore it."""
        extra = self.model_extra or {}
        for name in ("n", "best_of"):
            if getattr(self, name, None) not in (None, 1):
                raise RequestError(f"only {name}=1 is supported: one answer per request", name)
        if self.logprobs not in (None, False) or extra.get("top_logprobs") not in (None, 0):
            raise RequestError("logprobs are not supported by this hub", "logprobs")
        for name in ("tools", "functions"):
            if extra.get(name):
                raise RequestError(f"{name} are not supported: nodes answer in plain text", name)
        for name in ("tool_choice", "function_call"):
            if extra.get(name) not in (None, "none"):
                raise RequestError(f"{name} is not supported: nodes answer in plain text", name)
        fmt = extra.get("response_format")
        if fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
            raise RequestError("only text responses are supported", "response_format")
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                raise RequestError(f"{name} is not supported; leave it out or 0", name)
        if self.logit_bias:
            raise RequestError("logit_bias is not supported", "logit_bias")


class ChatRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)

    def prompt(self) -> str:
        if self.messages[-1].role not in ("user", "assistant"):
            raise RequestError("the last message must be the user's (or an assistant's text "
                               "to continue)", "messages")  # fmt: skip
        texts = [m.text() for m in self.messages]
        if not any(t.strip() for t in texts):
            raise RequestError("the messages have no text", "messages")
        return "\n\n".join(t for t in texts if t)

    def params(self) -> SamplingParams:
        return self.sampling(self.max_completion_tokens or self.max_tokens)


class CompletionRequest(_Common):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    def text(self) -> str:
        if self.echo:
            raise RequestError("echo is not supported", "echo")
        if self.suffix:
            raise RequestError("suffix is not supported", "suffix")
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def params(self) -> SamplingParams:
        return self.sampling(self.max_tokens)
