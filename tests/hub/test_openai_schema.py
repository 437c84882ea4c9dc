"""The one chat template, pinned, and the requests the OpenAI-compatible API refuses rather
than silently ignores (the HTTP shell is tested with real processes in test_openai_api.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from hub.api.openai_schema import ChatRequest, CompletionRequest, RequestError


def chat(**fields) -> ChatRequest:  # type: ignore[no-untyped-def]
    return ChatRequest(**{"model": "swarm/auto", **fields})


def test_the_chat_template_joins_the_messages_texts_by_a_blank_line() -> None:
    request = chat(messages=[
        {"role": "system", "content": "You answer about licences."},
        {"role": "user", "content": "What does the GPL require?"},
        {"role": "assistant", "content": "It requires"},
        {"role": "user", "content": [{"type": "text", "text": "Say more "},
                                     {"type": "text", "text": "about source code."}]},
    ])  # fmt: skip
    assert request.prompt() == (
        "You answer about licences.\n\nWhat does the GPL require?\n\nIt requires\n\n"
        "Say more about source code."
    )
    assert chat(messages=[{"role": "user", "content": "x"}]).domain() == ""
    assert chat(model="swarm/law", messages=[{"role": "user", "content": "x"}]).domain() == "law"


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"messages": [{"role": "system", "content": "only a system message"}]}, "last message"),
        ({"messages": [{"role": "user", "content": "  "}]}, "no text"),
        ({"model": "gpt-4o"}, "not served here"),
        ({"model": "swarm/"}, "not served here"),
        ({"n": 3}, "n=1"),
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"logprobs": True}, "logprobs"),
        ({"response_format": {"type": "json_object"}}, "text responses"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"stop": "s" * 65}, "1..64 bytes"),
    ],
)
def test_unsupported_or_invalid_requests_are_refused_with_a_reason(fields, words) -> None:
    request = chat(**{"messages": [{"role": "user", "content": "x"}], **fields})
    with pytest.raises(RequestError, match=words):
        request.domain()
        request.prompt()
        request.params()


def test_schema_limits_refuse_before_any_code_runs() -> None:
    for fields in (
        {"messages": []},
        {"max_tokens": 0},
        {"temperature": 6},
        {"top_p": 0},
        {"stop": ["a"] * 5},
        {"messages": [{"role": "tool", "content": "x"}]},
    ):
        with pytest.raises(ValidationError):
            chat(**{"messages": [{"role": "user", "content": "x"}], **fields})
    with pytest.raises(ValidationError):
        CompletionRequest(model="swarm/auto", prompt=["one", "two"])
    params = chat(messages=[{"role": "user", "content": "x"}], max_completion_tokens=7,
                  max_tokens=9, stop="END", seed=3, temperature=0).params()  # fmt: skip
    assert (params.max_tokens, params.stop, params.seed, params.temperature) == (7, ("END",), 3, 0)


def test_the_swarm_extension_takes_a_mode_and_a_draft_and_nothing_else() -> None:
    user = {"messages": [{"role": "user", "content": "x"}]}
    assert (chat(**user).mode(), chat(**user).draft()) == ("", None)
    mine = chat(**user, swarm={"mode": "refine", "draft": "A draft."})
    assert (mine.mode(), mine.draft()) == ("refine", "A draft.")
    for swarm in ({"mode": "sideways"}, {"mode": 1}, {"draft": ""}, {"draft": ["a"]},
                  {"node": "0" * 32}, "refine"):  # fmt: skip
        with pytest.raises(ValidationError):
            chat(**user, swarm=swarm)
