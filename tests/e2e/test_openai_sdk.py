"""Sluice driven by the official `openai` Python SDK, against a real `sluice-mock` upstream."""

from __future__ import annotations

import math
import uuid

import openai
import pytest
from openai import OpenAI

from conftest import PUBLIC_MODELS, UPSTREAM_API_KEY

CLIENT_KEY = "unused-client-key"


def make_client(url: str) -> OpenAI:
    return OpenAI(base_url=url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=15)


@pytest.fixture
def client(gateway) -> OpenAI:
    return make_client(gateway.url)


def new_id(tag: str) -> str:
    return f"e2e-{tag}-{uuid.uuid4().hex[:12]}"


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def stream_text_and_chunks(stream) -> tuple[str, list]:
    chunks = list(stream)
    text = "".join(
        c.choices[0].delta.content or "" for c in chunks if c.choices
    )
    return text, chunks


# --- zero config ---------------------------------------------------------------------------


def test_zero_config_chat_models_and_db(zero_config_gateway):
    client = make_client(zero_config_gateway.url)
    reply = client.chat.completions.create(model="mock-1", messages=user("hello zero config"))
    assert reply.choices[0].message.content == "Mock reply to: hello zero config"
    assert reply.usage is not None and reply.usage.completion_tokens > 0

    ids = {m.id for m in client.models.list()}
    assert {"mock-1", "mock-2", "mock-embed"} <= ids

    db = zero_config_gateway.db_path
    assert db.parent.name == "zero"
    assert db.is_file(), f"no sluice.db in the working directory {db.parent}"

    code = zero_config_gateway.stop()
    assert code == 0, f"sluice exited with {code}; stderr:\n{zero_config_gateway.stderr_text()}"
    rows = zero_config_gateway.usage_records()
    assert len(rows) == 1, rows
    assert rows[0]["requested_model"] == "mock-1"
    assert rows[0]["provider"] == "mock"
    assert rows[0]["status"] == 200


# --- chat completions ----------------------------------------------------------------------


def test_chat_completion_json(client):
    reply = client.chat.completions.create(
        model="public-model", messages=user("What is a sluice?")
    )
    assert reply.object == "chat.completion"
    assert len(reply.choices) == 1
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "Mock reply to: What is a sluice?"
    assert choice.finish_reason == "stop"
    usage = reply.usage
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_chat_response_headers(client):
    raw = client.chat.completions.with_raw_response.create(
        model="public-model", messages=user("headers please")
    )
    assert raw.status_code == 200
    h = raw.headers
    assert h.get("x-sluice-provider") == "upstream"
    assert h.get("x-sluice-model") == "upstream-model-v2"
    assert h.get("x-request-id"), "missing x-request-id"
    overhead = h.get("x-sluice-overhead-us")
    assert overhead is not None and overhead.isdigit(), f"x-sluice-overhead-us={overhead!r}"
    assert raw.parse().choices[0].message.content == "Mock reply to: headers please"

    # Two requests without a client id get two different ids.
    again = client.chat.completions.with_raw_response.create(
        model="public-model", messages=user("headers please")
    )
    assert again.headers.get("x-request-id") not in (None, h.get("x-request-id"))


def test_client_request_id_is_echoed(client):
    rid = new_id("echo")
    raw = client.chat.completions.with_raw_response.create(
        model="public-model", messages=user("echo my id"), extra_headers={"x-request-id": rid}
    )
    assert raw.headers.get("x-request-id") == rid


def test_model_rewritten_vendor_fields_forwarded_and_key_replaced(client, mock):
    reply = client.chat.completions.create(
        model="public-model",
        messages=user("forward my fields"),
        temperature=0.25,
        extra_body={"vendor_x": {"nested": [1, 2]}, "top_k": 5},
    )
    assert reply.choices[0].message.content == "Mock reply to: forward my fields"

    seen = mock.last_request()
    assert seen["method"] == "POST"
    assert seen["path"] == "/v1/chat/completions"
    body = seen["body"]
    assert body["model"] == "upstream-model-v2"
    assert body["vendor_x"] == {"nested": [1, 2]}
    assert body["top_k"] == 5
    assert body["temperature"] == 0.25
    assert body["messages"] == user("forward my fields")

    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert headers.get("authorization") == f"Bearer {UPSTREAM_API_KEY}"
    leaked = [k for k, v in headers.items() if CLIENT_KEY in v]
    assert not leaked, f"client key forwarded upstream in {leaked}"


# --- streaming -----------------------------------------------------------------------------


def test_stream_with_include_usage(client, mock):
    prompt = "stream this reply to me please"
    reference = client.chat.completions.create(model="public-model", messages=user(prompt))

    stream = client.chat.completions.create(
        model="public-model",
        messages=user(prompt),
        stream=True,
        stream_options={"include_usage": True},
    )
    text, chunks = stream_text_and_chunks(stream)
    assert len(chunks) > 2, "expected the reply in several chunks"
    assert text == reference.choices[0].message.content == f"Mock reply to: {prompt}"
    assert all(c.object == "chat.completion.chunk" for c in chunks)

    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]

    with_usage = [c for c in chunks if c.usage is not None]
    assert len(with_usage) == 1, "exactly one chunk should carry usage"
    final = chunks[-1]
    assert final is with_usage[0], "usage must come on the final chunk"
    assert final.choices == []
    assert final.usage.prompt_tokens == reference.usage.prompt_tokens
    assert final.usage.completion_tokens == reference.usage.completion_tokens
    assert final.usage.total_tokens == reference.usage.total_tokens

    assert mock.last_request()["body"]["stream_options"] == {"include_usage": True}


def test_stream_without_include_usage_is_stripped_but_recorded(gateway, client, mock):
    prompt = "no usage for me in the stream"
    reference = client.chat.completions.create(model="public-model", messages=user(prompt))

    rid = new_id("stream-no-usage")
    stream = client.chat.completions.create(
        model="public-model",
        messages=user(prompt),
        stream=True,
        extra_headers={"x-request-id": rid},
    )
    text, chunks = stream_text_and_chunks(stream)
    assert text == f"Mock reply to: {prompt}"
    assert chunks, "no chunks"
    carrying = [i for i, c in enumerate(chunks) if c.usage is not None]
    assert not carrying, f"chunks {carrying} carry usage the client did not ask for"
    empty = [i for i, c in enumerate(chunks) if not c.choices]
    assert not empty, f"chunks {empty} have empty choices (the injected usage chunk leaked)"

    # Sluice asked the upstream for usage for its own records.
    upstream_body = mock.last_request()["body"]
    assert upstream_body.get("stream") is True
    assert (upstream_body.get("stream_options") or {}).get("include_usage") is True

    code = gateway.stop()
    assert code == 0, f"sluice exited with {code}; stderr:\n{gateway.stderr_text()}"
    rows = [r for r in gateway.usage_records() if r["request_id"] == rid]
    assert len(rows) == 1, rows
    row = rows[0]
    assert row["streamed"] == 1
    assert row["status"] == 200
    assert row["input_tokens"] == reference.usage.prompt_tokens
    assert row["output_tokens"] == reference.usage.completion_tokens


# --- embeddings ----------------------------------------------------------------------------


def _norm(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


def test_embeddings_base64_and_float(client, mock):
    single = client.embeddings.create(model="embed-model", input="one sentence")
    assert mock.last_request()["body"]["encoding_format"] == "base64"
    assert mock.last_request()["body"]["model"] == "mock-embed"
    assert len(single.data) == 1
    assert single.data[0].index == 0
    vec = single.data[0].embedding
    dims = len(vec)
    assert dims > 0
    assert all(isinstance(x, float) for x in vec)
    assert _norm(vec) == pytest.approx(1.0, abs=1e-3)
    assert single.usage.prompt_tokens > 0

    texts = ["first text", "second text", "one sentence"]
    many = client.embeddings.create(model="embed-model", input=texts)
    assert [d.index for d in many.data] == [0, 1, 2]
    assert all(len(d.embedding) == dims for d in many.data)
    # Deterministic per input: the same text gives the same vector, different texts differ.
    assert many.data[2].embedding == pytest.approx(vec, abs=1e-6)
    assert many.data[0].embedding != pytest.approx(many.data[1].embedding, abs=1e-6)

    single_f = client.embeddings.create(model="embed-model", input="one sentence", encoding_format="float")
    assert mock.last_request()["body"]["encoding_format"] == "float"
    assert len(single_f.data) == 1
    assert len(single_f.data[0].embedding) == dims
    assert single_f.data[0].embedding == pytest.approx(vec, abs=1e-6)

    many_f = client.embeddings.create(model="embed-model", input=texts, encoding_format="float")
    assert len(many_f.data) == 3
    for d_b64, d_f in zip(many.data, many_f.data):
        assert d_f.index == d_b64.index
        assert d_f.embedding == pytest.approx(d_b64.embedding, abs=1e-6)


def test_embeddings_dimensions(client):
    r = client.embeddings.create(model="embed-model", input=["a", "b"], dimensions=7, encoding_format="float")
    assert [len(d.embedding) for d in r.data] == [7, 7]


# --- models --------------------------------------------------------------------------------


def test_models_list_is_exactly_the_public_names(client):
    ids = [m.id for m in client.models.list()]
    assert sorted(ids) == sorted(PUBLIC_MODELS)
    assert client.models.retrieve("public-model").id == "public-model"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("upstream-model-v2")


# --- errors --------------------------------------------------------------------------------


def test_unknown_model_is_not_found_listing_models(client, mock):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="no-such-model", messages=user("hi"))
    err = info.value
    assert err.status_code == 404
    assert "no-such-model" in err.message
    for name in PUBLIC_MODELS:
        assert name in err.message
    assert err.code == "model_not_found"
    assert err.response.headers.get("x-request-id")
    assert mock.request_count() == 0, "an unknown model must not reach the upstream"


def test_upstream_429_is_rate_limit_error(client):
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="limited-model", messages=user("hi"))
    err = info.value
    assert err.status_code == 429
    assert "mock error 429" in err.message
    assert "limited" in err.message
    assert err.type == "rate_limit_error"
    assert err.response.headers.get("x-request-id")


# --- usage records -------------------------------------------------------------------------


def test_usage_records_one_row_per_request(gateway, client):
    ids = {k: new_id(k) for k in ("chat", "stream", "embed", "unknown", "limited")}

    chat = client.chat.completions.create(
        model="public-model", messages=user("record me"), extra_headers={"x-request-id": ids["chat"]}
    )
    stream = client.chat.completions.create(
        model="public-model",
        messages=user("record my stream"),
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-request-id": ids["stream"]},
    )
    _, chunks = stream_text_and_chunks(stream)
    stream_usage = chunks[-1].usage
    assert stream_usage is not None
    embed = client.embeddings.create(
        model="embed-model", input=["x", "y"], extra_headers={"x-request-id": ids["embed"]}
    )
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="nope", messages=user("x"), extra_headers={"x-request-id": ids["unknown"]}
        )
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(
            model="limited-model", messages=user("x"), extra_headers={"x-request-id": ids["limited"]}
        )

    code = gateway.stop()
    assert code == 0, f"sluice exited with {code}; stderr:\n{gateway.stderr_text()}"
    rows = gateway.usage_records()
    by_id = {}
    for r in rows:
        assert r["request_id"] not in by_id, f"duplicate usage record for {r['request_id']}"
        by_id[r["request_id"]] = r
    assert set(by_id) == set(ids.values()), rows

    for r in rows:
        assert r["principal"] == "anonymous"
        assert r["latency_us"] > 0
        assert r["ts_ms"] > 1_600_000_000_000

    r = by_id[ids["chat"]]
    assert r["surface"] == "openai.chat"
    assert r["status"] == 200
    assert r["error_class"] is None
    assert r["requested_model"] == "public-model"
    assert r["provider"] == "upstream"
    assert r["deployment_model"] == "upstream-model-v2"
    assert r["streamed"] == 0
    assert r["attempts"] == 1
    assert r["input_tokens"] == chat.usage.prompt_tokens
    assert r["output_tokens"] == chat.usage.completion_tokens

    r = by_id[ids["stream"]]
    assert r["surface"] == "openai.chat"
    assert r["status"] == 200
    assert r["error_class"] is None
    assert r["provider"] == "upstream"
    assert r["deployment_model"] == "upstream-model-v2"
    assert r["streamed"] == 1
    assert r["input_tokens"] == stream_usage.prompt_tokens
    assert r["output_tokens"] == stream_usage.completion_tokens
    assert r["ttft_us"] is not None and 0 < r["ttft_us"] <= r["latency_us"]

    r = by_id[ids["embed"]]
    assert r["surface"] == "openai.embeddings"
    assert r["status"] == 200
    assert r["error_class"] is None
    assert r["requested_model"] == "embed-model"
    assert r["provider"] == "upstream"
    assert r["deployment_model"] == "mock-embed"
    assert r["input_tokens"] == embed.usage.prompt_tokens

    r = by_id[ids["unknown"]]
    assert r["status"] == 404
    assert r["error_class"] == "model_not_found"
    assert r["requested_model"] == "nope"
    assert r["provider"] is None
    assert r["input_tokens"] is None and r["output_tokens"] is None

    r = by_id[ids["limited"]]
    assert r["status"] == 429
    assert r["error_class"] == "upstream_4xx"
    assert r["requested_model"] == "limited-model"
    assert r["provider"] == "limited"
    assert r["deployment_model"] == "m"
    assert r["attempts"] >= 1
    assert r["input_tokens"] is None and r["output_tokens"] is None
