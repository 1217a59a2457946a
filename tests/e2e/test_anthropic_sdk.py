"""The official `anthropic` Python SDK against Sluice's Anthropic surface, routed to
`sluice-mock` speaking Anthropic (double translation is invisible) and speaking OpenAI."""

from __future__ import annotations

import json
from pathlib import Path

import anthropic
import pytest

from conftest import Process

MODELS = ["via-anthropic", "via-openai"]
TOOLS = [
    {
        "name": "get_weather",
        "description": "Current weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]


@pytest.fixture
def claude(tmp_path: Path, sluice_bin: str, mock):
    workdir = tmp_path / "anthropic-surface"
    workdir.mkdir()
    cfg = {
        "server": {"master_key": "sk-master"},
        "store": {"url": f"sqlite://{workdir / 'sluice.db'}"},
        "providers": [
            {"name": "ant", "kind": "anthropic", "base_url": mock, "api_key": "sk-ant-upstream"},
            {"name": "oai", "kind": "openai_compatible", "base_url": f"{mock}/v1"},
            {"name": "limited", "kind": "anthropic", "base_url": mock, "api_key": "k",
             "headers": {"x-mock-status": "429", "x-mock-retry-after": "3"}},
        ],
        "models": [
            {"name": "via-anthropic", "deployments": [{"provider": "ant", "model": "claude-mock"}]},
            {"name": "via-openai", "deployments": [{"provider": "oai", "model": "gpt-mock"}]},
            {"name": "limited", "deployments": [{"provider": "limited", "model": "claude-mock"}]},
        ],
    }
    path = workdir / "sluice.yaml"
    path.write_text(json.dumps(cfg))
    proc = Process("sluice", [sluice_bin, "serve", "--config", str(path), "--listen", "127.0.0.1:0"], workdir, workdir)
    try:
        yield anthropic.Anthropic(base_url=proc.url, api_key="sk-master", max_retries=0, timeout=15)
    finally:
        proc.stop()


@pytest.mark.parametrize("model", MODELS)
def test_messages_create(claude: anthropic.Anthropic, model: str):
    m = claude.messages.create(
        model=model, max_tokens=100, system="Be brief.", messages=[{"role": "user", "content": "Say hello"}]
    )
    assert m.type == "message" and m.role == "assistant"
    assert m.content[0].type == "text" and m.content[0].text == "Mock reply to: Say hello"
    assert m.stop_reason == "end_turn"
    assert m.usage.output_tokens == 5 and m.usage.input_tokens > 0


@pytest.mark.parametrize("model", MODELS)
def test_messages_stream_final_message(claude: anthropic.Anthropic, model: str):
    with claude.messages.stream(
        model=model, max_tokens=100, messages=[{"role": "user", "content": "Say hello"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Mock reply to: Say hello"
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 5


@pytest.mark.parametrize("model", MODELS)
def test_tool_use_streamed_with_input_json_delta(claude: anthropic.Anthropic, model: str):
    with claude.messages.stream(
        model=model,
        max_tokens=100,
        tools=TOOLS,
        tool_choice={"type": "any"},
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    ) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_message()
    assert "input_json" in kinds
    assert final.stop_reason == "tool_use"
    tool = next(b for b in final.content if b.type == "tool_use")
    assert tool.name == "get_weather" and tool.input == {"mock": True}
    # ...and the result goes back.
    follow = claude.messages.create(
        model=model,
        max_tokens=100,
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [b.model_dump() for b in final.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool.id, "content": "sunny"}, {"type": "text", "text": "Thanks"}]},
        ],
    )
    assert follow.content[0].text == "Mock reply to: Thanks"


def test_thinking_round_trips_to_anthropic(claude: anthropic.Anthropic, mock):
    with claude.messages.stream(
        model="via-anthropic",
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "Think, then say hi"}],
    ) as stream:
        final = stream.get_final_message()
    thinking = next(b for b in final.content if b.type == "thinking")
    assert thinking.thinking and thinking.signature.startswith("sig_mock_")
    claude.messages.create(
        model="via-anthropic",
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[
            {"role": "user", "content": "Think, then say hi"},
            {"role": "assistant", "content": [b.model_dump() for b in final.content]},
            {"role": "user", "content": "Again"},
        ],
    )
    body = mock.last_request()["body"]
    sent = body if isinstance(body, dict) else json.loads(body)
    assert sent["messages"][1]["content"][0] == {
        "type": "thinking",
        "thinking": thinking.thinking,
        "signature": thinking.signature,
    }


@pytest.mark.parametrize("model", MODELS)
def test_count_tokens(claude: anthropic.Anthropic, model: str):
    short = claude.messages.count_tokens(model=model, messages=[{"role": "user", "content": "hi"}])
    long = claude.messages.count_tokens(model=model, messages=[{"role": "user", "content": "lorem ipsum " * 100}])
    assert 0 < short.input_tokens < long.input_tokens


def test_errors_are_anthropic_shaped(claude: anthropic.Anthropic, mock):
    with pytest.raises(anthropic.RateLimitError) as e:
        claude.messages.create(model="limited", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 429
    assert e.value.body["error"]["type"] == "rate_limit_error"
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.create(model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    bad = anthropic.Anthropic(base_url=str(claude.base_url), api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as e:
        bad.messages.create(model="via-openai", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["error"]["type"] == "authentication_error"
