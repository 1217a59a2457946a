"""The official `openai` SDK's Responses API (`client.responses.*`) and legacy completions
against Sluice routed to `sluice-mock` speaking OpenAI chat completions and Anthropic Messages:
the client never knows the provider has no Responses API of its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
from openai import OpenAI

from conftest import MockURL, Process

MODELS = ["openai-model", "anthropic-model"]

TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    }
]


@pytest.fixture
def client(tmp_path: Path, sluice_bin: str, mock: MockURL):
    """`sluice serve` with one model on each wire format, both on the `mock` server."""
    workdir = tmp_path / "responses"
    workdir.mkdir()
    cfg = {
        "store": {"url": f"sqlite://{workdir / 'sluice.db'}"},
        "responses": {"retention": "7d"},
        "providers": [
            {"name": "oa", "kind": "openai_compatible", "base_url": f"{mock}/v1", "api_key": "sk-up"},
            {"name": "an", "kind": "anthropic", "base_url": mock, "api_key": "sk-ant-test"},
        ],
        "models": [
            {"name": "openai-model", "deployments": [{"provider": "oa", "model": "gpt-x"}]},
            {"name": "anthropic-model", "deployments": [{"provider": "an", "model": "claude-x"}]},
        ],
    }
    path = workdir / "sluice.yaml"
    path.write_text(json.dumps(cfg))
    proc = Process("sluice", [sluice_bin, "serve", "--config", str(path), "--listen", "127.0.0.1:0"], workdir, workdir)
    try:
        yield OpenAI(base_url=proc.url + "/v1", api_key="unused", max_retries=0, timeout=15)
    finally:
        proc.stop()


def sent_texts(mock: MockURL) -> list[str]:
    """What the provider was last sent, as role:text lines, whatever its wire format."""
    body = mock.last_request()["body"]
    out = []
    if isinstance(body.get("system"), str):
        out.append(f"system:{body['system']}")
    for m in body["messages"]:
        content = m.get("content")
        if isinstance(content, str):
            out.append(f"{m['role']}:{content}")
        for part in content if isinstance(content, list) else []:
            if part.get("type") == "text":
                out.append(f"{m['role']}:{part['text']}")
            elif part.get("type") == "tool_use":
                out.append(f"call:{part['name']}")
            elif part.get("type") == "tool_result":
                c = part["content"]
                out.append(f"tool:{c if isinstance(c, str) else c[0]['text']}")
        for call in m.get("tool_calls") or []:
            out.append(f"call:{call['function']['name']}")
    return out


@pytest.mark.parametrize("model", MODELS)
def test_create_and_continue_at_once(client: OpenAI, mock: MockURL, model: str):
    first = client.responses.create(model=model, instructions="be brief", input="hello there")
    assert first.id.startswith("resp_")
    assert first.object == "response" and first.status == "completed"
    assert "hello there" in first.output_text
    assert first.output[0].type == "message" and first.output[0].role == "assistant"
    assert first.usage.input_tokens > 0 and first.usage.output_tokens > 0
    assert first.usage.total_tokens == first.usage.input_tokens + first.usage.output_tokens
    assert sent_texts(mock) == ["system:be brief", "user:hello there"]

    # Sent the moment the first answer arrived.
    second = client.responses.create(model=model, previous_response_id=first.id, input="and then?")
    assert "and then?" in second.output_text
    assert sent_texts(mock) == ["user:hello there", f"assistant:{first.output_text}", "user:and then?"]

    got = client.responses.retrieve(first.id)
    assert got.output_text == first.output_text
    items = client.responses.input_items.list(second.id, order="asc")
    assert [i.role for i in items.data] == ["user", "assistant", "user"]

    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=model, previous_response_id=first.id, input="x")
    assert e.value.code == "previous_response_not_found"


@pytest.mark.parametrize("model", MODELS)
def test_stream_then_continue_at_once(client: OpenAI, mock: MockURL, model: str):
    types = []
    text = ""
    with client.responses.stream(model=model, input="stream me please") as stream:
        for event in stream:
            types.append(event.type)
            if event.type == "response.output_text.delta":
                text += event.delta
        final = stream.get_final_response()
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert "stream me please" in text and final.output_text == text
    assert final.usage is not None and final.usage.output_tokens > 0

    # create(stream=True) yields the same typed events, sequence numbers in order.
    events = list(client.responses.create(model=model, input="again", stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    done = events[-1]
    assert done.type == "response.completed"

    nxt = client.responses.create(model=model, previous_response_id=done.response.id, input="more")
    assert nxt.status == "completed"
    assert sent_texts(mock) == ["user:again", f"assistant:{done.response.output_text}", "user:more"]


@pytest.mark.parametrize("model", MODELS)
def test_function_tools(client: OpenAI, mock: MockURL, model: str):
    first = client.responses.create(model=model, input="weather in Paris?", tools=TOOLS, tool_choice="required")
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) == 1
    call = calls[0]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"mock": True}
    assert call.call_id

    second = client.responses.create(
        model=model,
        previous_response_id=first.id,
        tools=TOOLS,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
    )
    assert second.output_text
    assert sent_texts(mock) == ["user:weather in Paris?", "call:get_weather", "tool:sunny"]

    # Streamed: the arguments arrive as deltas and add up in the final item.
    with client.responses.stream(
        model=model, input="weather?", tools=TOOLS, tool_choice={"type": "function", "name": "get_weather"}
    ) as stream:
        deltas = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    fc = [o for o in final.output if o.type == "function_call"][0]
    assert "".join(deltas) == fc.arguments and json.loads(fc.arguments) == {"mock": True}


def test_structured_output_and_errors(client: OpenAI):
    schema = {"type": "object", "properties": {"mock": {"type": "boolean"}}, "required": ["mock"]}
    r = client.responses.create(
        model="anthropic-model",
        input="give json",
        text={"format": {"type": "json_schema", "name": "answer", "schema": schema}},
    )
    assert json.loads(r.output_text) == {"mock": True}

    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="openai-model", input="x", tools=[{"type": "web_search"}])
    assert "web_search" in str(e.value)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", input="x")
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_missing")


@pytest.mark.parametrize("model", MODELS)
def test_legacy_completions(client: OpenAI, mock: MockURL, model: str):
    r = client.completions.create(model=model, prompt="say this", max_tokens=40)
    assert r.object == "text_completion"
    assert "say this" in r.choices[0].text
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.total_tokens > 0
    assert sent_texts(mock) == ["user:say this"]

    chunks = list(
        client.completions.create(
            model=model, prompt="streamed", max_tokens=40, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert "streamed" in text
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
