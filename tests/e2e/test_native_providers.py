"""The official `openai` SDK against Sluice routed to `sluice-mock` speaking each provider's
native wire format: the client never knows which provider answered.

Adding a provider kind: add its provider block to NATIVE below.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openai import OpenAI

from conftest import Process

# kind -> provider block (without name); "{mock}" is the mock's base URL.
NATIVE: dict[str, dict] = {
    "anthropic": {"kind": "anthropic", "base_url": "{mock}", "api_key": "sk-ant-test"},
    "gemini": {"kind": "gemini", "base_url": "{mock}", "api_key": "gemini-test-key"},
    # api_key on vertex is a ready OAuth access token.
    "vertex": {
        "kind": "vertex",
        "base_url": "{mock}",
        "region": "us-central1",
        "project": "test-project",
        "api_key": "ya29.test-token",
    },
    "bedrock": {
        "kind": "bedrock",
        "base_url": "{mock}",
        "region": "us-east-1",
        "aws_access_key_id": "AKIDTEST",
        "aws_secret_access_key": "test-secret",
    },
    "cohere": {"kind": "cohere", "base_url": "{mock}", "api_key": "co-test"},
    # Ollama cannot force a tool call, which these tests ask for (tool_choice="required"):
    # by default that is a 400 (crates/sluice/tests/unsupported_params.rs), so it runs lenient.
    "ollama": {"kind": "ollama", "base_url": "{mock}", "unsupported_params": "drop"},
    "azure_openai": {"kind": "azure_openai", "base_url": "{mock}", "api_key": "az-test"},
}

# Kinds with embeddings (through the same mock), and the path the mock must have seen.
EMBEDDINGS = {
    "cohere": "/v2/embed",
    "ollama": "/api/embed",
    "azure_openai": "/openai/deployments/mock-native/embeddings",
}

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


@pytest.fixture
def native(tmp_path: Path, sluice_bin: str, mock):
    """`sluice serve` with one model per native kind, each on the `mock` server."""
    workdir = tmp_path / "native"
    workdir.mkdir()
    providers, models = [], []
    for kind, block in NATIVE.items():
        p = {k: (v.replace("{mock}", mock) if isinstance(v, str) else v) for k, v in block.items()}
        providers.append({"name": kind, **p})
        models.append({"name": f"{kind}-model", "deployments": [{"provider": kind, "model": "mock-native"}]})
    cfg = {
        "store": {"url": f"sqlite://{workdir / 'sluice.db'}"},
        "providers": providers,
        "models": models,
    }
    path = workdir / "sluice.yaml"
    path.write_text(json.dumps(cfg))
    proc = Process("sluice", [sluice_bin, "serve", "--config", str(path), "--listen", "127.0.0.1:0"], workdir, workdir)
    try:
        yield OpenAI(base_url=proc.url + "/v1", api_key="unused", max_retries=0, timeout=15)
    finally:
        proc.stop()


@pytest.mark.parametrize("kind", list(NATIVE))
def test_chat_json_and_stream(native: OpenAI, kind: str):
    model = f"{kind}-model"
    r = native.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}],
    )
    assert r.choices[0].message.content == "Mock reply to: Say hello"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None and r.usage.completion_tokens == 5 and r.usage.prompt_tokens > 0

    stream = native.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Say hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Mock reply to: Say hello"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


@pytest.mark.parametrize("kind", list(NATIVE))
def test_streamed_tool_call_reassembles(native: OpenAI, kind: str):
    stream = native.chat.completions.create(
        model=f"{kind}-model",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=TOOLS,
        tool_choice="required",
        stream=True,
    )
    calls: dict[int, dict] = {}
    finish = None
    for c in stream:
        if not c.choices:
            continue
        for tc in c.choices[0].delta.tool_calls or []:
            slot = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
            if tc.id:
                slot["id"] = tc.id
            if tc.function and tc.function.name:
                slot["name"] += tc.function.name
            if tc.function and tc.function.arguments:
                slot["arguments"] += tc.function.arguments
        finish = c.choices[0].finish_reason or finish
    assert list(calls) == [0]
    assert calls[0]["name"] == "get_weather" and calls[0]["id"]
    assert json.loads(calls[0]["arguments"]) == {"mock": True}
    assert finish == "tool_calls"


@pytest.mark.parametrize("kind", list(NATIVE))
def test_tool_result_round_trip(native: OpenAI, kind: str):
    model = f"{kind}-model"
    first = native.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Weather in Paris?"}], tools=TOOLS, tool_choice="required"
    )
    call = first.choices[0].message.tool_calls[0]
    second = native.chat.completions.create(
        model=model,
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"},
            {"role": "user", "content": "Thanks!"},
        ],
    )
    assert second.choices[0].message.content == "Mock reply to: Thanks!"


def test_anthropic_thinking_round_trips_with_signature(native: OpenAI, mock):
    """reasoning_effort turns Anthropic thinking on; the signed thinking comes back to the
    client and, sent back in the next turn, reaches Anthropic intact."""
    r = native.chat.completions.create(
        model="anthropic-model",
        messages=[{"role": "user", "content": "Think, then say hi"}],
        reasoning_effort="low",
    )
    msg = r.choices[0].message.model_dump()
    assert msg["reasoning_content"]
    blocks = msg["thinking_blocks"]
    # Tagged with the model family that made it; Anthropic gets it back bare.
    assert blocks[0]["signature"].startswith("sluice:claude:sig_mock_")
    native.chat.completions.create(
        model="anthropic-model",
        reasoning_effort="low",
        messages=[
            {"role": "user", "content": "Think, then say hi"},
            {"role": "assistant", "content": msg["content"], "thinking_blocks": blocks},
            {"role": "user", "content": "Again"},
        ],
    )
    sent = mock.last_request()
    body = json.loads(sent["body"]) if isinstance(sent.get("body"), str) else sent["body"]
    first_block = body["messages"][1]["content"][0]
    assert first_block["type"] == "thinking"
    assert first_block["signature"] == blocks[0]["signature"].removeprefix("sluice:claude:")
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 1024}


def test_anthropic_thinking_streams_through_the_sdk_stream_helper(native: OpenAI):
    """openai-python's `chat.completions.stream()` merges list deltas by `index` (and raises
    without one): every streamed thinking_blocks delta carries its block's index, so the
    helper rebuilds each signed block whole, ready to be sent back."""
    with native.chat.completions.stream(
        model="anthropic-model",
        messages=[{"role": "user", "content": "Think, then say hi"}],
        reasoning_effort="low",
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    msg = final.choices[0].message.model_dump()
    blocks = msg["thinking_blocks"]
    assert len(blocks) == 1, blocks
    assert blocks[0]["type"] == "thinking"
    assert blocks[0]["thinking"] and blocks[0]["signature"].startswith("sluice:claude:sig_mock_")


def test_gemini_thinking_round_trips_with_signature(native: OpenAI, mock):
    """reasoning_effort turns Gemini thoughts on; the signature Gemini puts on the answer comes
    back to the client and, sent back in the next turn, reaches Gemini on the text part."""
    r = native.chat.completions.create(
        model="gemini-model",
        messages=[{"role": "user", "content": "Think, then say hi"}],
        reasoning_effort="low",
    )
    msg = r.choices[0].message.model_dump()
    assert msg["reasoning_content"]
    blocks = msg["thinking_blocks"]
    assert blocks[0]["signature"].startswith("sluice:gemini:sig_mock_")
    native.chat.completions.create(
        model="gemini-model",
        messages=[
            {"role": "user", "content": "Think, then say hi"},
            {"role": "assistant", "content": msg["content"], "thinking_blocks": blocks},
            {"role": "user", "content": "Again"},
        ],
    )
    sent = mock.last_request()
    body = json.loads(sent["body"]) if isinstance(sent.get("body"), str) else sent["body"]
    parts = body["contents"][1]["parts"]
    assert parts[0] == {"text": blocks[0]["thinking"], "thought": True}
    assert parts[1]["text"] == msg["content"]
    assert parts[1]["thoughtSignature"] == blocks[0]["signature"].removeprefix("sluice:gemini:")


@pytest.mark.parametrize("kind", list(EMBEDDINGS))
def test_embeddings_through_the_sdk(native: OpenAI, mock, kind: str):
    """The SDK asks for base64 by default; native providers answer float lists, which it
    takes as they are."""
    r = native.embeddings.create(model=f"{kind}-model", input=["hello", "world"])
    assert [d.index for d in r.data] == [0, 1]
    assert all(isinstance(x, float) for x in r.data[0].embedding) and len(r.data[0].embedding) > 0
    assert r.data[0].embedding != r.data[1].embedding
    assert r.usage.prompt_tokens > 0
    assert mock.last_request()["path"] == EMBEDDINGS[kind]
