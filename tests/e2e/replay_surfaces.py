"""The three client surfaces of the replay harness: an OpenAI chat request turned into the
equivalent Anthropic Messages and Responses requests, each sent through the official SDK
(JSON or stream, with the SDKs' stream helpers), and what the SDK hands the application read
back as an `Outcome`."""

from __future__ import annotations

import inspect
import json
import re
from typing import Any

from anthropic import Anthropic
from openai import OpenAI

from replay_wire import Outcome, _args, _openai_content, _openai_usage, anthropic_outcome, responses_outcome

SURFACES = ("chat", "messages", "responses")
ANTHROPIC_DEFAULT_MAX_TOKENS = 4096
_TAG = re.compile(r"^(sluice:redacted:)?sluice:[a-z0-9-]+:")


def untag(sig: str) -> str:
    """Sluice hands signatures out as `sluice:<family>:<signature>` (docs/providers.md), and
    Anthropic's redacted thinking on the Responses surface as `sluice:redacted:` + that
    (docs/responses.md)."""
    return _TAG.sub("", sig or "")


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content or [] if p.get("type") in ("text", "input_text"))


def _blocks(content: Any, surface: str = "messages") -> list[dict]:
    """Chat content as the parts of `surface` (Anthropic `messages` or `responses`): text
    (with `cache_control` where Anthropic has it) and image URLs."""
    text_type = "text" if surface == "messages" else "input_text"
    if isinstance(content, str):
        return [{"type": text_type, "text": content}]
    out = []
    for p in content or []:
        if p.get("type") == "image_url":
            url = p["image_url"]["url"]
            out.append({"type": "image", "source": {"type": "url", "url": url}} if surface == "messages"
                       else {"type": "input_image", "image_url": url})
            continue
        b = {"type": text_type, "text": p.get("text", "")}
        if surface == "messages" and "cache_control" in p:
            b["cache_control"] = p["cache_control"]
        out.append(b)
    return out


def _effort(budget: int) -> str:
    # docs/anthropic-surface.md: <= 2048 low, <= 8192 medium, else high.
    return "low" if budget <= 2048 else "medium" if budget <= 8192 else "high"


# reasoning_effort -> the thinking budget the Anthropic surface maps back to that effort.
_BUDGET = {"low": 1024, "medium": 4096, "high": 16384}


def chat_to_messages(chat: dict) -> dict:
    """The Anthropic Messages request that says what `chat` says."""
    msgs, system = chat["messages"], []
    while msgs and msgs[0]["role"] in ("system", "developer"):
        system += _blocks(msgs[0]["content"])
        msgs = msgs[1:]
    out: list[dict] = []
    for m in msgs:
        if m["role"] == "tool":
            block = {"type": "tool_result", "tool_use_id": m["tool_call_id"], "content": _text(m["content"])}
            if out and out[-1]["role"] == "user":
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
        elif m["role"] == "assistant":
            blocks = list(m.get("thinking_blocks") or [])
            if m.get("reasoning_content") and not blocks:
                blocks.append({"type": "thinking", "thinking": m["reasoning_content"], "signature": ""})
            if m.get("content"):
                blocks.append({"type": "text", "text": _text(m["content"])})
            for c in m.get("tool_calls") or []:
                blocks.append(
                    {"type": "tool_use", "id": c["id"], "name": c["function"]["name"], "input": _args(c["function"]["arguments"])}
                )
            out.append({"role": "assistant", "content": blocks})
        else:
            out.append({"role": "user", "content": _blocks(m["content"])})
    req: dict[str, Any] = {
        "model": chat["model"],
        "messages": out,
        "max_tokens": chat.get("max_tokens") or chat.get("max_completion_tokens") or ANTHROPIC_DEFAULT_MAX_TOKENS,
    }
    if system:
        cached = any("cache_control" in b for b in system)
        req["system"] = system if cached else "\n".join(b["text"] for b in system)
    if chat.get("tools"):
        req["tools"] = [
            {"name": t["function"]["name"], "input_schema": t["function"]["parameters"],
             **({"description": t["function"]["description"]} if "description" in t["function"] else {})}
            for t in chat["tools"]
        ]
    tc = chat.get("tool_choice")
    if tc:
        req["tool_choice"] = (
            {"type": {"auto": "auto", "required": "any", "none": "none"}[tc]}
            if isinstance(tc, str)
            else {"type": "tool", "name": tc["function"]["name"]}
        )
    for k in ("temperature", "top_p", "top_k", "thinking", "cache_control"):
        if k in chat:
            req[k] = chat[k]
    if chat.get("reasoning_effort") in _BUDGET:
        req["thinking"] = {"type": "enabled", "budget_tokens": _BUDGET[chat["reasoning_effort"]]}
    if chat.get("stop"):
        req["stop_sequences"] = chat["stop"] if isinstance(chat["stop"], list) else [chat["stop"]]
    return req


def chat_to_responses(chat: dict) -> dict:
    """The Responses request that says what `chat` says."""
    msgs, system = chat["messages"], []
    while msgs and msgs[0]["role"] in ("system", "developer"):
        system.append(_text(msgs[0]["content"]))
        msgs = msgs[1:]
    items: list[dict] = []
    for m in msgs:
        if m["role"] == "tool":
            items.append({"type": "function_call_output", "call_id": m["tool_call_id"], "output": _text(m["content"])})
        elif m["role"] == "assistant":
            # Thinking goes back as reasoning items, the signature as `encrypted_content`.
            for b in m.get("thinking_blocks") or []:
                item: dict[str, Any] = {"type": "reasoning", "summary": []}
                if b.get("thinking"):
                    item["content"] = [{"type": "reasoning_text", "text": b["thinking"]}]
                if b.get("signature") or b.get("data"):
                    item["encrypted_content"] = b.get("signature") or b.get("data")
                items.append(item)
            if m.get("reasoning_content") and not m.get("thinking_blocks"):
                items.append({"type": "reasoning", "summary": [],
                              "content": [{"type": "reasoning_text", "text": m["reasoning_content"]}]})
            if m.get("content"):
                items.append({"role": "assistant", "content": _text(m["content"])})
            for c in m.get("tool_calls") or []:
                items.append(
                    {"type": "function_call", "call_id": c["id"], "name": c["function"]["name"], "arguments": c["function"]["arguments"]}
                )
        elif isinstance(m["content"], str):
            items.append({"role": "user", "content": m["content"]})
        else:
            items.append({"role": "user", "content": _blocks(m["content"], "responses")})
    req: dict[str, Any] = {"model": chat["model"], "input": items}
    if system:
        req["instructions"] = "\n".join(system)
    if chat.get("tools"):
        req["tools"] = [
            {"type": "function", "name": t["function"]["name"], "parameters": t["function"]["parameters"],
             **{k: t["function"][k] for k in ("description", "strict") if k in t["function"]}}
            for t in chat["tools"]
        ]
    tc = chat.get("tool_choice")
    if tc:
        req["tool_choice"] = tc if isinstance(tc, str) else {"type": "function", "name": tc["function"]["name"]}
    if chat.get("max_tokens") or chat.get("max_completion_tokens"):
        req["max_output_tokens"] = chat.get("max_tokens") or chat.get("max_completion_tokens")
    for k in ("temperature", "top_p"):
        if k in chat:
            req[k] = chat[k]
    thinking = chat.get("thinking")
    if thinking and thinking.get("type") == "enabled":
        req["reasoning"] = {"effort": _effort(thinking["budget_tokens"])}
    if chat.get("reasoning_effort"):
        req["reasoning"] = {"effort": chat["reasoning_effort"]}
    return req


# ---------------------------------------------------------------------------------------------
# Driving the SDKs


def _split(req: dict, method: Any) -> tuple[dict, dict]:
    """(keyword arguments the SDK method takes, everything else for `extra_body`)."""
    known = inspect.signature(method).parameters
    kw = {k: v for k, v in req.items() if k in known}
    extra = {k: v for k, v in req.items() if k not in known}
    return kw, extra


class NotOpenAI(AssertionError):
    pass


def _chat_outcome(msg: dict, finish: str | None, u: Any) -> Outcome:
    if not isinstance(msg.get("content"), (str, type(None))):
        # OpenAI's contract, which the SDK's types and its stream helper rely on.
        raise NotOpenAI(f"message.content is a {type(msg['content']).__name__}, not a string")
    text, thinking = _openai_content(msg.get("content"))
    blocks = msg.get("thinking_blocks") or []
    return Outcome(
        text=text,
        tool_calls=[(c["function"]["name"], _args(c["function"]["arguments"])) for c in msg.get("tool_calls") or []],
        finish=finish,
        usage=_openai_usage(u.model_dump(warnings=False) if u is not None else None),
        thinking=thinking + (msg.get("reasoning_content") or msg.get("reasoning") or ""),
        signatures=[untag(b.get("signature") or b.get("data") or "") for b in blocks],
    )


def run_chat(client: OpenAI, req: dict, stream: bool) -> Outcome:
    kw, extra = _split(req, client.chat.completions.create)
    kw.pop("stream", None)
    if not stream:
        r = client.chat.completions.create(**kw, extra_body=extra or None, stream=False)
        c = r.choices[0]
        return _chat_outcome(c.message.model_dump(warnings=False), c.finish_reason, r.usage)
    # The helper would insist on strict tools (it parses their arguments); they go as they are.
    if "tools" in kw:
        extra["tools"] = kw.pop("tools")
    kw["stream_options"] = {"include_usage": True}
    with client.chat.completions.stream(**kw, extra_body=extra or None) as s:
        for _ in s:
            pass
        final = s.get_final_completion()
    c = final.choices[0]
    return _chat_outcome(c.message.model_dump(warnings=False), c.finish_reason, final.usage)


def _messages_outcome(m: Any) -> Outcome:
    d = m.model_dump(warnings=False)
    out = anthropic_outcome(d["content"], d.get("stop_reason"), d.get("usage") or {})
    out.signatures = [untag(s) for s in out.signatures]
    return out


def run_messages(client: Anthropic, req: dict, stream: bool) -> Outcome:
    kw, extra = _split(req, client.messages.stream if stream else client.messages.create)
    kw.pop("stream", None)
    if not stream:
        return _messages_outcome(client.messages.create(**kw, extra_body=extra or None))
    with client.messages.stream(**kw, extra_body=extra or None) as s:
        for _ in s:
            pass
        final = s.get_final_message()
    return _messages_outcome(final)


class StreamMismatch(AssertionError):
    pass


def run_responses(client: OpenAI, req: dict, stream: bool) -> Outcome:
    kw, extra = _split(req, client.responses.create)
    kw.pop("stream", None)
    if not stream:
        r = client.responses.create(**kw, extra_body=extra or None)
        out = responses_outcome(r.model_dump(warnings=False))
    else:
        deltas, final = "", None
        for ev in client.responses.create(**kw, extra_body=extra or None, stream=True):
            if ev.type == "response.output_text.delta":
                deltas += ev.delta
            elif ev.type in ("response.completed", "response.incomplete"):
                final = ev.response
        if final is None:
            raise StreamMismatch("the stream ended without response.completed")
        out = responses_outcome(final.model_dump(warnings=False))
        if deltas != out.text:
            raise StreamMismatch(f"output_text deltas {deltas!r} differ from the completed response's text {out.text!r}")
    out.signatures = [untag(s) for s in out.signatures]
    return out


def client_request(surface: str, chat: dict) -> dict:
    if surface == "chat":
        return chat
    if surface == "messages":
        return chat_to_messages(chat)
    return chat_to_responses(chat)


def dumps(v: Any) -> str:
    return json.dumps(v, sort_keys=True, ensure_ascii=False)
