"""End-to-end replay of real recorded provider exchanges through the running gateway.

For every cell — a recording × a client surface (OpenAI chat, Anthropic Messages, Responses) —
the official SDK sends the request that, translated by `sluice` for the recording's provider,
is the recorded upstream request; a loopback replay upstream (replay_upstream.py) checks what
the gateway sent against the recording (modulo ALLOWED below) and answers with the recorded
bytes, frame by frame; then what the SDK hands the application is compared with what the
recording says (replay_wire.py). The run writes the matrix in docs/providers.md; see
tests/e2e/README.md for adding a cell and for the allowed differences.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from anthropic import Anthropic
from openai import OpenAI

import replay_wire as wire
from conftest import Process
from replay_surfaces import SURFACES, client_request, dumps, run_chat, run_messages, run_responses
from replay_upstream import Interaction, ReplayUpstream, load

DOCS = Path(__file__).resolve().parents[2] / "docs" / "providers.md"
MATRIX_START, MATRIX_END = "<!-- replay-matrix:start -->", "<!-- replay-matrix:end -->"

# ---------------------------------------------------------------------------------------------
# Providers: a row of the matrix each. `{up}` is the row's replay upstream. `family` says how
# its recordings are read (replay_wire.py); `native` is the surface that speaks the same wire
# format as the provider (the recorded request is then sent as it is).


@dataclass(frozen=True)
class Row:
    family: str
    provider: dict
    native: str | None = None
    surfaces: tuple[str, ...] = SURFACES
    why_not: str = ""  # for the surfaces this row cannot serve
    path: str = ""  # what the request path must be, when it is not the recorded one
    auth: tuple[str, str] = ("authorization", "Bearer ")  # the header that must carry the credential, and its start


def responses_upstream(provider: dict, auth: tuple[str, str] = ("authorization", "Bearer ")) -> Row:
    """A provider that implements /v1/responses itself: Responses requests pass through to it
    (docs/responses.md); Sluice never translates other surfaces into Responses."""
    return Row("responses", provider, native="responses", surfaces=("responses",),
               why_not="passthrough only", auth=auth)


ROWS: dict[str, Row] = {
    "openai": Row("openai", {"kind": "openai", "base_url": "{up}/v1", "api_key": "sk-replay"}, native="chat"),
    "openai (Responses upstream)": responses_upstream(
        {"kind": "openai", "base_url": "{up}/v1", "api_key": "sk-replay", "supports_responses": True}
    ),
    # No Azure chat recordings: OpenAI's, sent to Azure's deployment URL.
    "azure_openai (OpenAI recordings)": Row(
        "openai",
        {"kind": "azure_openai", "base_url": "{up}", "api_key": "az-replay"},
        native="chat",
        path="/openai/deployments/{model}/chat/completions",
        auth=("api-key", "az-replay"),
    ),
    "azure_openai (Responses upstream)": responses_upstream(
        {"kind": "azure_openai", "base_url": "{up}", "api_key": "az-replay", "supports_responses": True},
        auth=("api-key", "az-replay"),
    ),
    "groq (preset)": Row(
        "openai",
        {"kind": "openai_compatible", "preset": "groq", "base_url": "{up}/openai/v1", "api_key": "gsk-replay"},
        native="chat",
    ),
    "mistral (preset)": Row(
        "openai",
        {"kind": "openai_compatible", "preset": "mistral", "base_url": "{up}/v1", "api_key": "mi-replay"},
        native="chat",
    ),
    "ollama (preset, /v1)": Row(
        "openai", {"kind": "openai_compatible", "preset": "ollama", "base_url": "{up}/v1"}, native="chat",
        auth=("", ""),  # a local server: no credential configured
    ),
    "anthropic": Row(
        "anthropic", {"kind": "anthropic", "base_url": "{up}", "api_key": "sk-ant-replay"}, native="messages",
        auth=("x-api-key", "sk-ant-replay"),
    ),
    "gemini": Row("gemini", {"kind": "gemini", "base_url": "{up}", "api_key": "gm-replay"},
                  auth=("x-goog-api-key", "gm-replay")),
    "vertex (Gemini)": Row(
        "gemini",
        {"kind": "vertex", "base_url": "{up}", "region": "global", "project": "pydantic-ai", "api_key": "ya29.replay"},
        # Recorded through Google's v1beta1 endpoint; Sluice uses v1 (same body).
        path="/v1/projects/pydantic-ai/locations/global/publishers/google/models/{model}:{method}",
    ),
    "bedrock": Row(
        "bedrock",
        {
            "kind": "bedrock",
            "base_url": "{up}",
            "region": "us-east-1",
            "aws_access_key_id": "AKIDREPLAY",
            "aws_secret_access_key": "replay-secret",
        },
        auth=("authorization", "AWS4-HMAC-SHA256 Credential=AKIDREPLAY/"),
    ),
    "cohere": Row("cohere", {"kind": "cohere", "base_url": "{up}", "api_key": "co-replay"}),
    # No recordings of Claude on Vertex (rawPredict) or of Ollama's native API.
    "vertex (Claude)": Row("anthropic", {"kind": "vertex", "base_url": "{up}", "region": "global",
                                         "project": "pydantic-ai", "api_key": "ya29.replay"}, surfaces=()),
    "ollama (native /api/chat)": Row("ollama", {"kind": "ollama", "base_url": "{up}"}, surfaces=()),
}

# Recordings replayed (`folder/file.yaml#interaction`), per row. Every one runs on each of the
# row's surfaces, as JSON or stream as it was recorded.
CELLS: dict[str, list[str]] = {
    "openai": [
        "openai/test_openai_instructions.yaml",
        "openai/test_openai_tool_output.yaml",
        "openai/test_openai_model_thinking_part.yaml#1",
        "openai/test_openai_tool_output.yaml#1",
        "openai/test_run_stream_sync_streams_real_model.yaml",
        "openai/test_run_stream_sync_streams_real_model.yaml#1",
    ],
    "openai (Responses upstream)": [
        "openai_responses/test_openai_responses_model_simple_response.yaml",
        "openai_responses/test_openai_responses_model_simple_response_with_tool_call.yaml",
        "openai_responses/test_openai_responses_model_thinking_part.yaml",
        "openai_responses/test_openai_responses_stream.yaml",
    ],
    "azure_openai (OpenAI recordings)": [
        "openai/test_openai_instructions.yaml",
        "openai/test_run_stream_sync_streams_real_model.yaml",
    ],
    "azure_openai (Responses upstream)": [
        "openai_responses/test_azure_responses_reasoning_context_default_wire_contract[gpt-5.4].yaml",
    ],
    "groq (preset)": [
        "groq/test_groq_model_instructions.yaml",
        "groq/test_tool_use_failed_error_streaming.yaml#2",
    ],
    "mistral (preset)": [
        "mistral/test_mistral_forwards_penalties.yaml",
        "mistral/test_mistral_model_thinking_part.yaml#1",
        "mistral/test_mistral_model_thinking_part_iter.yaml",
    ],
    "ollama (preset, /v1)": ["ollama/test_ollama_cloud_tool_output.yaml"],
    "anthropic": [
        "anthropic/test_anthropic_model_instructions.yaml",
        "anthropic/test_multiple_parallel_tool_calls.yaml",
        "anthropic/test_anthropic_model_thinking_part.yaml",
        "anthropic/test_anthropic_model_thinking_part_stream.yaml",
        "anthropic/test_anthropic_model_thinking_part_redacted_stream.yaml",
        "anthropic/test_anthropic_tool_with_thinking.yaml#1",
        "anthropic/test_anthropic_cache_real_api.yaml#1",
        "anthropic/test_image_url_input.yaml",
    ],
    "gemini": [
        "google/test_google_model_instructions.yaml",
        "google/test_google_model_stream.yaml",
        "google/test_google_model_thinking_part.yaml",
        "google/test_google_streaming_tool_call_thought_signature.yaml",
        "google/test_google_streaming_tool_call_thought_signature.yaml#1",
    ],
    "vertex (Gemini)": [
        "google/test_google_model_vertex_provider.yaml",
        "google/test_google_vertex_service_tier_flex_stream.yaml",
        "google/test_google_url_input[ImageUrl].yaml",
    ],
    "bedrock": [
        "bedrock/test_bedrock_model.yaml",
        "bedrock/test_bedrock_model_stream.yaml",
        "bedrock/test_bedrock_cache_usage_includes_cache_tokens.yaml",
        "bedrock/test_bedrock_model_thinking_part_stream.yaml",
        "bedrock/test_bedrock_model_iter_stream.yaml",
        "bedrock/test_bedrock_model_iter_stream.yaml#1",
        "bedrock/test_bedrock_anthropic_tool_with_thinking.yaml#1",
        "bedrock/test_image_url_input.yaml#1",
        "bedrock/test_bedrock_model_structured_output.yaml",
        "bedrock/test_bedrock_moonshotai_tool_call.yaml",
    ],
    "cohere": [
        "cohere/test_cohere_model_instructions.yaml",
        "cohere/test_request_usage_with_cached_tokens.yaml",
        "cohere/test_cohere_model_thinking_part.yaml#1",
    ],
}

# Known failures: cell id -> why. The cell still runs; it must fail (or this list is stale),
# and the matrix shows it as a failure with this reason.
KNOWN_FAILURES: dict[str, str] = {}

# ---------------------------------------------------------------------------------------------
# Allowed differences between the recorded upstream request and the gateway's. Besides these,
# headers and query strings are not compared (auth, SDK and recorder headers differ by
# design), and a key whose value is null, {} or [] counts as absent on both sides.


@dataclass(frozen=True)
class Allowed:
    path: str  # dotted JSON path, `*` for any key or list item
    kind: str  # ignore: on both sides | added: the gateway may add it | default=<json>: absent equals this
    why: str
    families: tuple[str, ...] = ()  # empty: every family
    surfaces: tuple[str, ...] = ()  # empty: every surface


_MAX_TOKENS_WHY = "the Anthropic surface requires max_tokens: the harness sends 4096 where the recording has none"
_NO_FIELD_WHY = "the client surface has no such field"

ALLOWED: list[Allowed] = [
    Allowed("model", "ignore", "the model is the deployment's (compared through the path where the "
            "provider takes it there)"),
    Allowed("stream", "default=false", "`stream: false` is the default; the SDKs and the gateway leave it out"),
    Allowed("n", "default=1", "`n: 1` is the default, and the Anthropic and Responses surfaces have no `n`"),
    Allowed("store", "ignore", "the harness sends `store: false` so that a Responses request takes the "
            "stateless passthrough path", families=("responses",)),
    Allowed("stream_options", "added", "Sluice asks OpenAI-compatible vendors that take it for the final usage "
            "chunk, so that streams are metered (docs/providers.md, presets)", ("openai",)),
    Allowed("messages.*.prefix", "default=false", "Mistral's assistant-prefix flag; `false` is its default",
            ("openai",)),
    Allowed("max_completion_tokens", "added", _MAX_TOKENS_WHY, ("openai",), ("messages",)),
    Allowed("max_tokens", "added", _MAX_TOKENS_WHY, ("cohere",), ("messages",)),
    Allowed("generationConfig.maxOutputTokens", "added", _MAX_TOKENS_WHY, ("gemini",), ("messages",)),
    Allowed("inferenceConfig.maxTokens", "added", _MAX_TOKENS_WHY, ("bedrock",), ("messages",)),
    Allowed("inferenceConfig.maxTokens", "added", "Claude needs max_tokens above the thinking budget: with "
            "thinking on and none from the client, Sluice sends one", ("bedrock",), ("chat", "responses")),
    Allowed("thinking.budget_tokens", "ignore", "the Responses surface carries only an effort: the budget "
            "is that effort's (low 1024, medium 4096, high 16384)", ("anthropic",), ("responses",)),
    Allowed("max_tokens", "ignore", "raised above the effort's thinking budget (see the line above)",
            ("anthropic",), ("responses",)),
    Allowed("cache_control", "ignore", "Anthropic's automatic caching (top-level `cache_control`) has no "
            "Responses field, and Sluice refuses fields that surface does not define", ("anthropic",), ("responses",)),
    Allowed("messages.*.content.*.is_error", "default=false", "`is_error: false` is the default",
            ("anthropic",)),
    Allowed("tools.*.function.strict", "ignore", "Anthropic tool definitions have no `strict`",
            ("openai",), ("messages",)),
    Allowed("frequency_penalty", "ignore", _NO_FIELD_WHY, ("openai", "cohere"), ("messages", "responses")),
    Allowed("presence_penalty", "ignore", _NO_FIELD_WHY, ("openai", "cohere"), ("messages", "responses")),
    Allowed("systemInstruction.role", "ignore", "Gemini ignores a role on the system instruction "
            "(Google's SDK sends `user`)", ("gemini",)),
    Allowed("generationConfig.responseModalities", "ignore", "`[TEXT]` is the default for text models; "
            "no client surface has the field", ("gemini",)),
    Allowed("generationConfig.thinkingConfig.thinkingLevel", "added", "the recordings ask for thoughts at the "
            "model's default level, which no client surface can say: the harness asks for the default's "
            "effort (Gemini 3: high)", ("gemini",)),
    Allowed("generationConfig.thinkingConfig.thinkingBudget", "added", "as above, for Gemini 2.5 budgets",
            ("gemini",)),
    Allowed("messages.*.content.*.cachePoint", "ignore", "the Responses surface has no cache markers",
            ("bedrock",), ("responses",)),
    Allowed("system.*.cachePoint", "ignore", "the Responses surface has no cache markers",
            ("bedrock",), ("responses",)),
]


def _anthropic_norm(v: Any) -> Any:
    """A `tool_result` whose content is a string is one text block (Anthropic takes both)."""
    for m in v.get("messages") or [] if isinstance(v, dict) else []:
        for b in m.get("content") if isinstance(m.get("content"), list) else []:
            if b.get("type") == "tool_result" and isinstance(b.get("content"), str):
                b["content"] = [{"type": "text", "text": b["content"]}]
    return v


def _thinking_joined(v: Any) -> Any:
    """Mistral's `thinking` content parts with their text chunks joined into one: the client
    surfaces carry a turn's thinking as one text (`reasoning_content`, a thinking block, a
    reasoning item), so the recording's split into several chunks cannot be said back."""
    for m in v.get("messages") or [] if isinstance(v, dict) else []:
        for p in m.get("content") if isinstance(m.get("content"), list) else []:
            if isinstance(p, dict) and p.get("type") == "thinking" and isinstance(p.get("thinking"), list):
                text = "".join(t.get("text", "") for t in p["thinking"] if isinstance(t, dict))
                p["thinking"] = [{"type": "text", "text": text}]
    return v


def _camel(v: Any) -> Any:
    """Protobuf JSON takes snake_case and lowerCamelCase names for the same field; Google's SDK
    sends either. Both sides are compared in lowerCamelCase."""
    if isinstance(v, dict):
        return {re.sub(r"_([a-z])", lambda m: m.group(1).upper(), k): _camel(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_camel(x) for x in v]
    return v


# Query parameters of the recorded URL that need not be sent (the rest must be).
QUERY_NOT_COMPARED = {"beta": "the Anthropic SDK's beta flag; Sluice calls the plain endpoint"}


def _cell_ids() -> list[tuple[str, str, str]]:
    out = []
    for row, recs in CELLS.items():
        for rec in recs:
            for surface in ROWS[row].surfaces:
                out.append((row, rec, surface))
    return out


def cell_id(row: str, rec: str, surface: str) -> str:
    return f"{row}|{rec}|{surface}"


def _split_rec(rec: str) -> tuple[str, int]:
    f, _, i = rec.partition("#")
    return f, int(i or 0)


def recorded_model(family: str, it: Interaction) -> str:
    if family in ("gemini",):
        return re.search(r"/models/([^:/]+):", it.path).group(1)
    if family == "bedrock":
        return re.search(r"/model/(.+)/converse", it.path).group(1)
    return it.request["model"]


def model_name(row: str, model: str) -> str:
    return f"replay-{re.sub(r'[^a-z0-9]+', '-', row.lower())}-{re.sub(r'[^a-zA-Z0-9.]+', '-', model)}"


# ---------------------------------------------------------------------------------------------
# Outbound check


def _strip(v: Any, parts: list[str], pred) -> Any:
    """`v` with the value at `parts` removed where `pred(value)` holds."""
    if not parts:
        return v
    head, rest = parts[0], parts[1:]
    if isinstance(v, dict):
        keys = list(v) if head == "*" else [head]
        out = dict(v)
        for k in keys:
            if k not in out:
                continue
            if rest:
                out[k] = _strip(out[k], rest, pred)
            elif pred(out[k]):
                del out[k]
        return out
    if isinstance(v, list) and head == "*":
        return [_strip(x, rest, pred) if rest else x for x in v]
    return v


def _get(v: Any, parts: list[str]) -> Any:
    for p in parts:
        if isinstance(v, dict) and p in v:
            v = v[p]
        else:
            return None
    return v


def _prune(v: Any) -> Any:
    if isinstance(v, dict):
        d = {k: _prune(x) for k, x in v.items()}
        return {k: x for k, x in d.items() if x not in (None, {}, [])}
    if isinstance(v, list):
        return [y for y in (_prune(x) for x in v) if y != {}]
    return v


def _diffs(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            p = f"{path}.{k}" if path else k
            if k not in a:
                out.append(f"{p}: added by the gateway: {dumps(b[k])[:200]}")
            elif k not in b:
                out.append(f"{p}: recorded {dumps(a[k])[:200]}, missing from the gateway's")
            else:
                out += _diffs(a[k], b[k], p)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diffs(x, y, f"{path}[{i}]")]
    if a != b:
        return [f"{path}: recorded {dumps(a)[:200]}, sent {dumps(b)[:200]}"]
    return []


def outbound_diffs(family: str, surface: str, recorded: Any, sent: Any) -> list[str]:
    if family == "gemini":
        recorded, sent = _camel(recorded), _camel(sent)
    if family == "anthropic":
        recorded, sent = _anthropic_norm(json.loads(json.dumps(recorded))), _anthropic_norm(sent)
    if family == "openai":
        recorded, sent = _thinking_joined(json.loads(json.dumps(recorded))), _thinking_joined(sent)
    rec, act = _prune(recorded), _prune(sent)
    for rule in ALLOWED:
        if rule.families and family not in rule.families:
            continue
        if rule.surfaces and surface not in rule.surfaces:
            continue
        parts = rule.path.split(".")
        if rule.kind == "ignore":
            rec = _strip(rec, parts, lambda _: True)
            act = _strip(act, parts, lambda _: True)
        elif rule.kind == "added":
            if _get(rec, parts) is None:
                act = _strip(act, parts, lambda _: True)
        elif rule.kind.startswith("default="):
            default = json.loads(rule.kind.removeprefix("default="))
            rec = _strip(rec, parts, lambda x: x == default)
            act = _strip(act, parts, lambda x: x == default)
    return _diffs(_prune(rec), _prune(act))


# ---------------------------------------------------------------------------------------------
# The gateway and its upstreams


@dataclass
class Bench:
    url: str
    upstreams: dict[str, ReplayUpstream]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory, sluice_bin: str):
    """One `sluice serve` with every row's provider, each on its own replay upstream."""
    workdir = tmp_path_factory.mktemp("replay")
    upstreams = {row: ReplayUpstream() for row in ROWS}
    providers, models, seen = [], [], set()
    for i, (row, spec) in enumerate(ROWS.items()):
        up = upstreams[row].url
        block = {k: (v.replace("{up}", up) if isinstance(v, str) else v) for k, v in spec.provider.items()}
        providers.append({"name": f"p{i}", **block})
        for rec in CELLS.get(row, []):
            f, idx = _split_rec(rec)
            model = recorded_model(spec.family, load(f)[idx])
            name = model_name(row, model)
            if name not in seen:
                seen.add(name)
                models.append({"name": name, "deployments": [{"provider": f"p{i}", "model": model}]})
    cfg = {"store": {"url": f"sqlite://{workdir / 'sluice.db'}"}, "providers": providers, "models": models}
    path = workdir / "sluice.yaml"
    path.write_text(json.dumps(cfg, indent=2))
    proc = Process("sluice", [sluice_bin, "serve", "--config", str(path), "--listen", "127.0.0.1:0"], workdir, workdir)
    try:
        yield Bench(proc.url, upstreams)
    finally:
        proc.stop()
        for u in upstreams.values():
            u.close()


RESULTS: dict[tuple[str, str, str, str], list[tuple[str, str]]] = {}  # (row, surface, mode) -> [(rec, status)]


def _compare(expected: wire.Outcome, got: wire.Outcome, surface: str) -> list[str]:
    e, g = expected.as_dict(), got.as_dict()
    # An unsigned thinking block (signature "") is no signature.
    e["signatures"] = [x for x in e["signatures"] if x]
    g["signatures"] = [x for x in g["signatures"] if x]
    if surface == "messages":
        # Anthropic's usage has no reasoning count.
        e["usage"]["reasoning"] = g["usage"]["reasoning"] = None
    if e["usage"].get("reasoning") is None:
        g["usage"]["reasoning"] = None
    def show(k: str, v: Any) -> str:
        if k == "signatures":  # long opaque strings: their start, end and length tell them apart
            return dumps([f"{x[:12]}...{x[-8:]} ({len(x)})" for x in v])
        return dumps(v)[:300]

    return [f"{k}: recording says {show(k, e[k])}, the SDK got {show(k, g[k])}" for k in e if e[k] != g[k]]


def run_cell(bench: Bench, row: str, rec: str, surface: str) -> list[str]:
    spec = ROWS[row]
    f, idx = _split_rec(rec)
    it = load(f)[idx]
    model = recorded_model(spec.family, it)
    name = model_name(row, model)
    stream = it.is_stream
    if surface == spec.native:
        req = dict(it.request)
        if surface == "responses":
            req["store"] = False  # stateless, so it takes the passthrough path
    else:
        req = client_request(surface, wire.to_chat(spec.family, it, model))
    req["model"] = name
    up = bench.upstreams[row]
    up.arm(it)
    oa = OpenAI(base_url=bench.url + "/v1", api_key="unused", max_retries=0, timeout=20)
    an = Anthropic(base_url=bench.url, api_key="unused", max_retries=0, timeout=20)
    problems: list[str] = []
    try:
        if surface == "chat":
            got = run_chat(oa, req, stream)
        elif surface == "messages":
            got = run_messages(an, req, stream)
        else:
            got = run_responses(oa, req, stream)
    except Exception as e:  # noqa: BLE001 (every failure is a finding for the matrix)
        got = None
        problems.append(f"the SDK raised {type(e).__name__}: {str(e)[:300]}")
    # Outbound: one request, on the right path, with the recorded body.
    if len(up.seen) != 1:
        problems.append(f"the upstream got {len(up.seen)} requests, expected 1 ({up.errors})")
    if up.seen:
        sent = up.seen[0]
        method = it.path.rsplit(":", 1)[-1] if ":" in it.path.rsplit("/", 1)[-1] else ""
        want_path = spec.path.format(model=model, method=method) if spec.path else it.path
        if sent.path != want_path:
            problems.append(f"path: recorded {want_path}, sent {sent.path}")
        for k, v in parse_qsl(urlsplit(it.uri).query):
            if k not in QUERY_NOT_COMPARED and (k, v) not in parse_qsl(sent.query):
                problems.append(f"query: recorded {k}={v}, sent {sent.query!r}")
        header, start = spec.auth
        credential = {k.lower(): v for k, v in sent.headers.items()}.get(header, "")
        if header and not credential.startswith(start):
            problems.append(f"auth: {header} should start {start!r}, sent {credential[:24]!r}")
        problems += [f"outbound {d}" for d in outbound_diffs(spec.family, surface, it.request, sent.body)]
    if got is not None:
        problems += _compare(wire.expected(spec.family, it), got, surface)
    return problems


@pytest.mark.parametrize(("row", "rec", "surface"), _cell_ids(), ids=[cell_id(*c) for c in _cell_ids()])
def test_replay(bench: Bench, row: str, rec: str, surface: str):
    f, idx = _split_rec(rec)
    mode = "stream" if load(f)[idx].is_stream else "json"
    problems = run_cell(bench, row, rec, surface)
    key = (row, surface, mode)
    cid = cell_id(row, rec, surface)
    known = KNOWN_FAILURES.get(cid)
    status = "pass" if not problems else f"fail: {known or problems[0]}"
    RESULTS.setdefault(key, []).append((rec, status))
    if known:
        assert problems, f"{cid} is listed in KNOWN_FAILURES but passes now: remove it"
        pytest.xfail(f"known failure, shown in the matrix: {known}\n" + "\n".join(problems))
    assert not problems, "\n".join(problems)


def test_outbound_check_can_fail():
    """The allowed differences excuse only what they name, on their family and surface."""
    rec = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": False, "n": 1}
    assert outbound_diffs("openai", "chat", rec, {"model": "x", "messages": [{"role": "user", "content": "hi"}]}) == []
    changed = {"messages": [{"role": "user", "content": "hello"}]}
    assert outbound_diffs("openai", "chat", rec, changed) == [
        'messages[0].content: recorded "hi", sent "hello"'
    ]
    added = {"messages": rec["messages"], "max_completion_tokens": 4096}
    assert outbound_diffs("openai", "messages", rec, added) == []
    assert outbound_diffs("openai", "chat", rec, added) == ["max_completion_tokens: added by the gateway: 4096"]
    assert outbound_diffs("openai", "chat", rec, {"messages": rec["messages"], "stream": True}) == [
        "stream: added by the gateway: true"
    ]
    gemini = {"contents": [{"parts": [{"text": "a"}], "role": "user"}], "systemInstruction": {"role": "user"}}
    assert outbound_diffs("gemini", "chat", gemini, {"contents": [{"parts": [{"text": "a"}], "role": "user"}]}) == []
    assert outbound_diffs("bedrock", "chat", gemini, {"contents": gemini["contents"]}) == [
        "systemInstruction: recorded {\"role\": \"user\"}, missing from the gateway's"
    ]


# ---------------------------------------------------------------------------------------------
# The matrix in docs/providers.md


def _status(row: str, surface: str, mode: str) -> str:
    spec = ROWS[row]
    if surface not in spec.surfaces:
        return f"unsupported ({spec.why_not})" if spec.why_not else "no recording"
    runs = RESULTS.get((row, surface, mode))
    if not runs:
        return "no recording"
    fails = [s for _, s in runs if s != "pass"]
    if not fails:
        return f"pass ({len(runs)})"
    why = fails[0].removeprefix("fail: ")
    return f"**fail** ({len(fails)}/{len(runs)}): {why if len(why) <= 160 else why[:157] + '...'}"


def render_matrix() -> str:
    cols = [(s, m) for s in SURFACES for m in ("json", "stream")]
    names = {"chat": "OpenAI chat", "messages": "Anthropic messages", "responses": "Responses"}
    head = "| provider | " + " | ".join(f"{names[s]} {m}" for s, m in cols) + " |"
    lines = [MATRIX_START, "", head, "|" + "---|" * (len(cols) + 1)]
    for row in sorted(ROWS):
        cells = [_status(row, s, m).replace("|", "\\|") for s, m in cols]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines += ["", "`pass (n)`: n recordings replayed in that cell, all passing. `no recording`: the recorded "
              "exchanges hold none for it. `unsupported (passthrough only)`: a Responses upstream gets "
              "Responses requests only, passed through; Sluice does not translate the other surfaces "
              "into Responses.", "", "Recordings per row:", ""]
    for row in sorted(CELLS):
        lines.append(f"- {row}: " + ", ".join(f"`{r}`" for r in CELLS[row]))
    lines += ["", "Besides the body, every cell checks the path, the recorded query parameters (except "
              + "; ".join(f"`{k}`: {why}" for k, why in QUERY_NOT_COMPARED.items())
              + ") and that the provider's credential header is sent. "
              "Allowed differences between the recorded upstream request body and the gateway's (other "
              "headers are not compared; null, {} and [] count as absent; "
              "Gemini field names are compared in lowerCamelCase, as protobuf JSON takes both "
              "spellings; an Anthropic `tool_result` whose content is a string equals one text block; "
              "a Mistral `thinking` part's text chunks are compared joined, as every client surface "
              "carries a turn's thinking as one text):", ""]
    for a in ALLOWED:
        scope = ", ".join(x for x in (" / ".join(a.families), " / ".join(a.surfaces)) if x) or "all"
        lines.append(f"- `{a.path}` ({a.kind}; {scope}): {a.why}")
    lines += ["", MATRIX_END]
    return "\n".join(lines)


def test_matrix_in_docs_is_current():
    """Runs last. With SLUICE_UPDATE_MATRIX=1 it writes the matrix; otherwise a committed matrix
    that differs from this run's fails (CI catches a stale one)."""
    if len([r for runs in RESULTS.values() for r in runs]) != len(_cell_ids()):
        pytest.skip("not every replay cell ran (a -k selection): the matrix is left as it is")
    doc = DOCS.read_text()
    start, end = doc.index(MATRIX_START), doc.index(MATRIX_END) + len(MATRIX_END)
    fresh = render_matrix()
    if os.environ.get("SLUICE_UPDATE_MATRIX") == "1":
        DOCS.write_text(doc[:start] + fresh + doc[end:])
        return
    assert doc[start:end] == fresh, (
        "docs/providers.md's replay matrix is stale: rerun with SLUICE_UPDATE_MATRIX=1 and commit it\n" + fresh
    )
