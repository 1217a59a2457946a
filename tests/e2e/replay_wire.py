"""What a recording says, per provider wire family, written from the providers' documentation
(not from the gateway's code): the recorded upstream request as the OpenAI chat request a
client would send for it (`to_chat`), and the recorded answer as what a client should be
handed (`expected`: text, tool calls with parsed arguments, finish reason, usage with cached
and reasoning tokens, thinking with signatures).

Families: `openai` (chat completions: OpenAI and every OpenAI-compatible vendor),
`responses` (OpenAI Responses), `anthropic` (Messages), `gemini` (AI Studio and Vertex),
`bedrock` (Converse / ConverseStream), `cohere` (v2 chat).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from replay_upstream import Interaction, eventstream_messages


@dataclass
class Outcome:
    """What an application sees of one answer, in one vocabulary for every surface."""

    text: str = ""
    tool_calls: list[tuple[str, Any]] = field(default_factory=list)  # (name, parsed arguments)
    finish: str | None = None  # stop | length | tool_calls | content_filter
    usage: dict[str, int | None] = field(default_factory=dict)  # prompt, completion, cached, reasoning
    thinking: str = ""  # all thinking text, in order
    signatures: list[str] = field(default_factory=list)  # thinking signatures, in order, untagged

    def as_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "tool_calls": self.tool_calls,
            "finish": self.finish,
            "usage": self.usage,
            "thinking": self.thinking,
            "signatures": self.signatures,
        }


def usage(prompt: int | None, completion: int | None, cached: int | None = 0, reasoning: int | None = 0) -> dict:
    return {"prompt": prompt, "completion": completion, "cached": cached, "reasoning": reasoning}


def sse_data(raw: bytes) -> list[tuple[str | None, Any]]:
    """(event name, parsed data) of every SSE event; `[DONE]` and non-JSON data are left out."""
    out = []
    for block in raw.decode().replace("\r\n", "\n").split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if not data or data == ["[DONE]"]:
            continue
        try:
            out.append((name, json.loads("\n".join(data))))
        except ValueError:
            continue
    return out


def _args(v: Any) -> Any:
    if isinstance(v, str):
        return json.loads(v) if v.strip() else {}
    return v if v is not None else {}


# ---------------------------------------------------------------------------------------------
# OpenAI chat completions (and OpenAI-compatible vendors)

_OPENAI_FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "content_filter": "content_filter"}


def _openai_content(content: Any) -> tuple[str, str]:
    """(text, thinking) of a message's content: a string, or Mistral's list of text and
    `thinking` parts."""
    if content is None:
        return "", ""
    if isinstance(content, str):
        return content, ""
    text, thinking = "", ""
    for part in content:
        if part.get("type") == "text":
            text += part.get("text", "")
        elif part.get("type") == "thinking":
            for t in part.get("thinking", []):
                thinking += t.get("text", "")
    return text, thinking


def _openai_usage(u: dict | None) -> dict:
    if not u:
        return usage(None, None, None, None)
    return usage(
        u.get("prompt_tokens"),
        u.get("completion_tokens"),
        (u.get("prompt_tokens_details") or {}).get("cached_tokens", 0) or 0,
        (u.get("completion_tokens_details") or {}).get("reasoning_tokens", 0) or 0,
    )


def openai_expected(it: Interaction) -> Outcome:
    if not it.is_stream:
        body = it.response_json()
        choice = body["choices"][0]
        msg = choice["message"]
        text, thinking = _openai_content(msg.get("content"))
        thinking += msg.get("reasoning_content") or msg.get("reasoning") or ""
        calls = [(c["function"]["name"], _args(c["function"]["arguments"])) for c in msg.get("tool_calls") or []]
        return Outcome(text, calls, _OPENAI_FINISH.get(choice["finish_reason"]), _openai_usage(body.get("usage")), thinking)
    out, calls, u = Outcome(), {}, None
    for _, chunk in sse_data(it.response):
        u = chunk.get("usage") or (chunk.get("x_groq") or {}).get("usage") or u
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            text, thinking = _openai_content(delta.get("content"))
            out.text += text
            out.thinking += thinking + (delta.get("reasoning_content") or delta.get("reasoning") or "")
            for tc in delta.get("tool_calls") or []:
                slot = calls.setdefault(tc.get("index", 0), {"name": "", "arguments": ""})
                fn = tc.get("function") or {}
                slot["name"] += fn.get("name") or ""
                slot["arguments"] += fn.get("arguments") or ""
            if choice.get("finish_reason"):
                out.finish = _OPENAI_FINISH.get(choice["finish_reason"])
    out.tool_calls = [(c["name"], _args(c["arguments"])) for _, c in sorted(calls.items())]
    out.usage = _openai_usage(u)
    return out


def openai_to_chat(req: dict) -> dict:
    """The recorded body, with Mistral's list-shaped assistant content (text and `thinking`
    parts) said the OpenAI way: `content` text plus `reasoning_content`."""
    chat = dict(req)
    messages = []
    for m in req["messages"]:
        if m.get("role") == "assistant" and isinstance(m.get("content"), list):
            text, thinking = _openai_content(m["content"])
            m = {**m, "content": text or None}
            if thinking:
                m["reasoning_content"] = thinking
        messages.append(m)
    chat["messages"] = messages
    return chat


# ---------------------------------------------------------------------------------------------
# Anthropic Messages

_ANTHROPIC_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def _anthropic_usage(u: dict) -> dict:
    reads = u.get("cache_read_input_tokens") or 0
    writes = u.get("cache_creation_input_tokens") or 0
    # Anthropic does not say how many output tokens were thinking.
    return usage((u.get("input_tokens") or 0) + reads + writes, u.get("output_tokens"), reads, None)


def anthropic_outcome(blocks: list[dict], stop_reason: str | None, u: dict) -> Outcome:
    out = Outcome(finish=_ANTHROPIC_FINISH.get(stop_reason or ""), usage=_anthropic_usage(u))
    for b in blocks:
        if b["type"] == "text":
            out.text += b["text"]
        elif b["type"] == "tool_use":
            out.tool_calls.append((b["name"], b.get("input") or {}))
        elif b["type"] == "thinking":
            out.thinking += b.get("thinking", "")
            out.signatures.append(b.get("signature", ""))
        elif b["type"] == "redacted_thinking":
            out.signatures.append(b.get("data", ""))
    return out


def anthropic_expected(it: Interaction) -> Outcome:
    if not it.is_stream:
        body = it.response_json()
        return anthropic_outcome(body["content"], body.get("stop_reason"), body.get("usage") or {})
    blocks: dict[int, dict] = {}
    partial: dict[int, str] = {}
    u: dict = {}
    stop = None
    for _, ev in sse_data(it.response):
        t = ev.get("type")
        if t == "message_start":
            u.update({k: v for k, v in ev["message"].get("usage", {}).items() if v is not None})
        elif t == "content_block_start":
            blocks[ev["index"]] = dict(ev["content_block"])
        elif t == "content_block_delta":
            b, d = blocks[ev["index"]], ev["delta"]
            if d["type"] == "text_delta":
                b["text"] = b.get("text", "") + d["text"]
            elif d["type"] == "thinking_delta":
                b["thinking"] = b.get("thinking", "") + d["thinking"]
            elif d["type"] == "signature_delta":
                b["signature"] = b.get("signature", "") + d["signature"]
            elif d["type"] == "input_json_delta":
                partial[ev["index"]] = partial.get(ev["index"], "") + d["partial_json"]
        elif t == "message_delta":
            stop = ev["delta"].get("stop_reason") or stop
            u.update({k: v for k, v in (ev.get("usage") or {}).items() if v is not None})
    for i, s in partial.items():
        blocks[i]["input"] = _args(s)
    return anthropic_outcome([blocks[i] for i in sorted(blocks)], stop, u)


def _anthropic_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content if b.get("type") == "text")


def _anthropic_part(b: dict) -> dict:
    """A user text or image block as a chat content part (URL images by link, others inline)."""
    if b["type"] == "text":
        return {"type": "text", "text": b["text"]}
    src = b["source"]
    url = src["url"] if src["type"] == "url" else f"data:{src['media_type']};base64,{src['data']}"
    return {"type": "image_url", "image_url": {"url": url}}


def anthropic_to_chat(req: dict) -> dict:
    messages: list[dict] = []
    if req.get("system"):
        messages.append({"role": "system", "content": _anthropic_text(req["system"])})
    for m in req["messages"]:
        content = m["content"]
        if isinstance(content, str):
            messages.append({"role": m["role"], "content": content})
            continue
        if m["role"] == "user":
            for b in content:
                if b["type"] == "tool_result":
                    messages.append(
                        {"role": "tool", "tool_call_id": b["tool_use_id"], "content": _anthropic_text(b.get("content", ""))}
                    )
            parts = [_anthropic_part(b) for b in content if b["type"] in ("text", "image")]
            if any(p["type"] == "image_url" for p in parts):
                messages.append({"role": "user", "content": parts})
            elif parts:
                messages.append({"role": "user", "content": _anthropic_text(content)})
        else:
            msg: dict[str, Any] = {"role": "assistant", "content": _anthropic_text(content) or None}
            calls = [
                {"id": b["id"], "type": "function", "function": {"name": b["name"], "arguments": json.dumps(b["input"])}}
                for b in content
                if b["type"] == "tool_use"
            ]
            if calls:
                msg["tool_calls"] = calls
            thinking = [b for b in content if b["type"] in ("thinking", "redacted_thinking")]
            if thinking:
                msg["thinking_blocks"] = thinking
            messages.append(msg)
    chat: dict[str, Any] = {"model": req["model"], "messages": messages, "max_tokens": req["max_tokens"]}
    if req.get("tools"):
        chat["tools"] = [
            {
                "type": "function",
                "function": {"name": t["name"], "description": t.get("description", ""), "parameters": t["input_schema"]},
            }
            for t in req["tools"]
        ]
    tc = req.get("tool_choice")
    if tc:
        chat["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}.get(tc["type"]) or {
            "type": "function",
            "function": {"name": tc.get("name")},
        }
    # `cache_control` at the top level: Anthropic's automatic prompt caching.
    for k in ("temperature", "top_p", "top_k", "thinking", "cache_control"):
        if k in req:
            chat[k] = req[k]
    if req.get("stop_sequences"):
        chat["stop"] = req["stop_sequences"]
    return chat


# ---------------------------------------------------------------------------------------------
# Gemini (AI Studio and Vertex)

_GEMINI_FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter", "RECITATION": "content_filter"}


def _gemini_usage(u: dict) -> dict:
    thoughts = u.get("thoughtsTokenCount") or 0
    return usage(
        (u.get("promptTokenCount") or 0) + (u.get("toolUsePromptTokenCount") or 0),
        (u.get("candidatesTokenCount") or 0) + thoughts,
        u.get("cachedContentTokenCount") or 0,
        thoughts,
    )


def gemini_expected(it: Interaction) -> Outcome:
    chunks = [d for _, d in sse_data(it.response)] if it.is_stream else [it.response_json()]
    out, u = Outcome(), {}
    for c in chunks:
        u = c.get("usageMetadata") or u
        for cand in c.get("candidates") or []:
            for p in (cand.get("content") or {}).get("parts") or []:
                if p.get("thought"):
                    out.thinking += p.get("text", "")
                elif "text" in p:
                    out.text += p["text"]
                if "functionCall" in p:
                    out.tool_calls.append((p["functionCall"]["name"], p["functionCall"].get("args") or {}))
                if p.get("thoughtSignature"):
                    out.signatures.append(p["thoughtSignature"])
            if cand.get("finishReason"):
                out.finish = _GEMINI_FINISH.get(cand["finishReason"], "content_filter")
    if out.tool_calls and out.finish == "stop":
        out.finish = "tool_calls"
    out.usage = _gemini_usage(u)
    return out


def _gemini_turn(c: dict) -> list[dict]:
    """One Gemini `contents` entry as chat messages: function responses become tool messages;
    thought signatures become signed thinking blocks (Sluice puts them back on the calls)."""
    parts = c["parts"]
    if c.get("role") != "model":
        out = [
            {"role": "tool", "tool_call_id": p["functionResponse"].get("id") or p["functionResponse"]["name"],
             "content": json.dumps(p["functionResponse"]["response"])}
            for p in parts
            if "functionResponse" in p
        ]
        content: list[dict] = []
        for p in parts:
            if "text" in p:
                content.append({"type": "text", "text": p["text"]})
            fd = p.get("fileData") or p.get("file_data")
            if fd and (fd.get("mimeType") or fd.get("mime_type", "")).startswith("image/"):
                content.append({"type": "image_url", "image_url": {"url": fd.get("fileUri") or fd.get("file_uri")}})
        if all(c["type"] == "text" for c in content):
            text = "".join(c["text"] for c in content)
            return out + ([{"role": "user", "content": text}] if text or not out else [])
        return out + [{"role": "user", "content": content}]
    msg: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(p["text"] for p in parts if "text" in p and not p.get("thought")) or None,
    }
    calls = [
        {"id": p["functionCall"].get("id") or f"call_{i}", "type": "function",
         "function": {"name": p["functionCall"]["name"], "arguments": json.dumps(p["functionCall"].get("args") or {})}}
        for i, p in enumerate(parts)
        if "functionCall" in p
    ]
    if calls:
        msg["tool_calls"] = calls
    thought = "".join(p.get("text", "") for p in parts if p.get("thought"))
    sigs = [p["thoughtSignature"] for p in parts if p.get("thoughtSignature")]
    if thought or sigs:
        msg["thinking_blocks"] = [{"type": "thinking", "thinking": thought if i == 0 else "", "signature": sig}
                                  for i, sig in enumerate(sigs or [""])]
    return [msg]


def gemini_to_chat(req: dict, model: str) -> dict:
    messages: list[dict] = []
    sys_parts = (req.get("systemInstruction") or {}).get("parts") or []
    if sys_parts:
        messages.append({"role": "system", "content": "".join(p.get("text", "") for p in sys_parts)})
    for c in req["contents"]:
        messages += _gemini_turn(c)
    chat: dict[str, Any] = {"model": model, "messages": messages}
    fcc = (req.get("toolConfig") or {}).get("functionCallingConfig") or {}
    if fcc.get("mode"):
        names = fcc.get("allowedFunctionNames") or []
        chat["tool_choice"] = (
            {"type": "function", "function": {"name": names[0]}}
            if fcc["mode"] == "ANY" and len(names) == 1
            else {"AUTO": "auto", "ANY": "required", "NONE": "none"}[fcc["mode"]]
        )
    decls = [d for t in req.get("tools") or [] for d in t.get("functionDeclarations") or t.get("function_declarations") or []]
    if decls:
        chat["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": d["name"],
                    "description": d.get("description", ""),
                    "parameters": d.get("parametersJsonSchema") or d.get("parameters_json_schema") or d.get("parameters"),
                },
            }
            for d in decls
        ]
    gc = req.get("generationConfig") or {}
    for src, dst in (("maxOutputTokens", "max_tokens"), ("temperature", "temperature"), ("topP", "top_p"), ("topK", "top_k")):
        if src in gc:
            chat[dst] = gc[src]
    tcfg = gc.get("thinkingConfig") or {}
    budget = tcfg.get("thinkingBudget", tcfg.get("thinking_budget"))
    if budget is not None:
        chat["thinking"] = {"type": "enabled", "budget_tokens": budget}
    elif tcfg.get("includeThoughts", tcfg.get("include_thoughts")):
        # Thoughts at the model's default level (Gemini 3: high; 2.5: dynamic, about medium).
        chat["reasoning_effort"] = "high" if model.startswith("gemini-3") else "medium"
    return chat


# ---------------------------------------------------------------------------------------------
# Bedrock Converse

_BEDROCK_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}


def _bedrock_usage(u: dict) -> dict:
    reads = u.get("cacheReadInputTokens") or 0
    writes = u.get("cacheWriteInputTokens") or 0
    return usage((u.get("inputTokens") or 0) + reads + writes, u.get("outputTokens"), reads, None)


def _bedrock_blocks(out: Outcome, blocks: list[dict]) -> None:
    for b in blocks:
        if "text" in b:
            out.text += b["text"]
        if "toolUse" in b:
            out.tool_calls.append((b["toolUse"]["name"], b["toolUse"].get("input") or {}))
        rc = b.get("reasoningContent")
        if rc:
            rt = rc.get("reasoningText") or {}
            out.thinking += rt.get("text", "")
            if rt.get("signature"):
                out.signatures.append(rt["signature"])
            if rc.get("redactedContent"):
                out.signatures.append(rc["redactedContent"])


def bedrock_expected(it: Interaction) -> Outcome:
    if not it.is_stream:
        body = it.response_json()
        out = Outcome(finish=_BEDROCK_FINISH.get(body.get("stopReason", "")), usage=_bedrock_usage(body.get("usage") or {}))
        _bedrock_blocks(out, body["output"]["message"]["content"])
        return out
    blocks: dict[int, dict] = {}
    out = Outcome()
    for headers, payload in eventstream_messages(it.response):
        kind, ev = headers.get(":event-type"), json.loads(payload or b"{}")
        if kind == "contentBlockStart":
            start = ev.get("start", {}).get("toolUse")
            if start:
                blocks[ev["contentBlockIndex"]] = {"toolUse": {"name": start["name"], "input": ""}}
        elif kind == "contentBlockDelta":
            b = blocks.setdefault(ev["contentBlockIndex"], {})
            d = ev["delta"]
            if "text" in d:
                b["text"] = b.get("text", "") + d["text"]
            if "toolUse" in d:
                b["toolUse"]["input"] += d["toolUse"].get("input", "")
            rc = d.get("reasoningContent")
            if rc:
                rt = b.setdefault("reasoningContent", {}).setdefault("reasoningText", {})
                if "text" in rc:
                    rt["text"] = rt.get("text", "") + rc["text"]
                if "signature" in rc:
                    rt["signature"] = rt.get("signature", "") + rc["signature"]
                if "redactedContent" in rc:
                    b["reasoningContent"]["redactedContent"] = rc["redactedContent"]
        elif kind == "messageStop":
            out.finish = _BEDROCK_FINISH.get(ev.get("stopReason", ""))
        elif kind == "metadata":
            out.usage = _bedrock_usage(ev.get("usage") or {})
    ordered = [blocks[i] for i in sorted(blocks)]
    for b in ordered:
        if "toolUse" in b:
            b["toolUse"]["input"] = _args(b["toolUse"]["input"])
    _bedrock_blocks(out, ordered)
    return out


def _bedrock_parts(blocks: list[dict]) -> Any:
    """Text and image blocks as chat content (images as data URLs); a `cachePoint` after a block
    is that part's `cache_control`."""
    parts: list[dict] = []
    for b in blocks:
        if "text" in b:
            parts.append({"type": "text", "text": b["text"]})
        elif "image" in b:
            img = b["image"]
            url = f"data:image/{img['format']};base64,{img['source']['bytes']}"
            parts.append({"type": "image_url", "image_url": {"url": url}})
        elif "cachePoint" in b and parts:
            parts[-1]["cache_control"] = {"type": "ephemeral"}
    if len(parts) == 1 and parts[0]["type"] == "text" and "cache_control" not in parts[0]:
        return parts[0]["text"]
    return parts


def _bedrock_turn(m: dict) -> list[dict]:
    blocks = m["content"]
    if m["role"] == "user":
        out = [
            {"role": "tool", "tool_call_id": b["toolResult"]["toolUseId"],
             "content": "".join(c.get("text", "") for c in b["toolResult"]["content"])}
            for b in blocks
            if "toolResult" in b
        ]
        rest = [b for b in blocks if "toolResult" not in b]
        return out + ([{"role": "user", "content": _bedrock_parts(rest)}] if rest or not out else [])
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(b["text"] for b in blocks if "text" in b) or None}
    calls = [
        {"id": b["toolUse"]["toolUseId"], "type": "function",
         "function": {"name": b["toolUse"]["name"], "arguments": json.dumps(b["toolUse"]["input"])}}
        for b in blocks
        if "toolUse" in b
    ]
    if calls:
        msg["tool_calls"] = calls
    thinking = [
        {"type": "thinking", "thinking": b["reasoningContent"]["reasoningText"]["text"],
         "signature": b["reasoningContent"]["reasoningText"].get("signature", "")}
        for b in blocks
        if "reasoningText" in (b.get("reasoningContent") or {})
    ]
    if thinking:
        msg["thinking_blocks"] = thinking
    return [msg]


def bedrock_to_chat(req: dict, model: str) -> dict:
    messages: list[dict] = []
    if req.get("system"):
        messages.append({"role": "system", "content": _bedrock_parts(req["system"])})
    for m in req["messages"]:
        messages += _bedrock_turn(m)
    chat: dict[str, Any] = {"model": model, "messages": messages}
    tcfg = req.get("toolConfig") or {}
    if tcfg.get("tools"):
        chat["tools"] = [
            {"type": "function", "function": {"name": t["toolSpec"]["name"], "parameters": t["toolSpec"]["inputSchema"]["json"],
                                              **({"description": t["toolSpec"]["description"]} if "description" in t["toolSpec"] else {})}}
            for t in tcfg["tools"]
        ]
    choice = tcfg.get("toolChoice") or {}
    if "auto" in choice:
        chat["tool_choice"] = "auto"
    elif "any" in choice:
        chat["tool_choice"] = "required"
    elif "tool" in choice:
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["tool"]["name"]}}
    ic = req.get("inferenceConfig") or {}
    for src, dst in (("maxTokens", "max_tokens"), ("temperature", "temperature"), ("topP", "top_p"), ("stopSequences", "stop")):
        if src in ic:
            chat[dst] = ic[src]
    thinking = (req.get("additionalModelRequestFields") or {}).get("thinking")
    if thinking:
        chat["thinking"] = thinking
    return chat


# ---------------------------------------------------------------------------------------------
# Cohere v2 chat

_COHERE_FINISH = {"COMPLETE": "stop", "STOP_SEQUENCE": "stop", "MAX_TOKENS": "length", "TOOL_CALL": "tool_calls"}


def cohere_expected(it: Interaction) -> Outcome:
    body = it.response_json()
    msg = body["message"]
    out = Outcome(finish=_COHERE_FINISH.get(body.get("finish_reason", "")))
    for b in msg.get("content") or []:
        if b.get("type") == "text":
            out.text += b["text"]
        elif b.get("type") == "thinking":
            out.thinking += b.get("thinking", "")
    out.tool_calls = [(c["function"]["name"], _args(c["function"]["arguments"])) for c in msg.get("tool_calls") or []]
    u = body.get("usage") or {}
    tokens = u.get("tokens") or u.get("billed_units") or {}
    out.usage = usage(tokens.get("input_tokens"), tokens.get("output_tokens"), u.get("cached_tokens") or 0, 0)
    return out


def _cohere_message(m: dict) -> dict:
    """Cohere's assistant content list (`thinking` and `text` blocks) as chat fields."""
    if m["role"] != "assistant" or isinstance(m.get("content"), str):
        return m
    out = {k: v for k, v in m.items() if k != "content"}
    out["content"] = "".join(b.get("text", "") for b in m.get("content") or [] if b.get("type") == "text")
    thinking = "".join(b.get("thinking", "") for b in m.get("content") or [] if b.get("type") == "thinking")
    if thinking:
        out["reasoning_content"] = thinking
    return out


def cohere_to_chat(req: dict) -> dict:
    chat = {k: v for k, v in req.items() if k not in ("stream",)}
    chat["messages"] = [_cohere_message(m) for m in req["messages"]]
    for src, dst in (("p", "top_p"), ("k", "top_k"), ("stop_sequences", "stop")):
        if src in chat:
            chat[dst] = chat.pop(src)
    return chat


# ---------------------------------------------------------------------------------------------
# OpenAI Responses (only ever passed through, see the matrix)


def responses_outcome(resp: dict) -> Outcome:
    out = Outcome()
    for item in resp.get("output") or []:
        if item["type"] == "message":
            out.text += "".join(c.get("text", "") for c in item.get("content") or [] if c.get("type") == "output_text")
        elif item["type"] == "function_call":
            out.tool_calls.append((item["name"], _args(item.get("arguments"))))
        elif item["type"] == "reasoning":
            out.thinking += "".join(c.get("text", "") for c in item.get("content") or [])
            if item.get("encrypted_content"):
                out.signatures.append(item["encrypted_content"])
    if resp.get("status") == "incomplete":
        reason = (resp.get("incomplete_details") or {}).get("reason")
        out.finish = "length" if reason == "max_output_tokens" else "content_filter"
    else:
        out.finish = "tool_calls" if out.tool_calls else "stop"
    u = resp.get("usage") or {}
    out.usage = usage(
        u.get("input_tokens"),
        u.get("output_tokens"),
        (u.get("input_tokens_details") or {}).get("cached_tokens", 0) or 0,
        (u.get("output_tokens_details") or {}).get("reasoning_tokens", 0) or 0,
    )
    return out


def responses_expected(it: Interaction) -> Outcome:
    if not it.is_stream:
        return responses_outcome(it.response_json())
    for _, ev in sse_data(it.response):
        if ev.get("type") in ("response.completed", "response.incomplete"):
            return responses_outcome(ev["response"])
    return Outcome()


# ---------------------------------------------------------------------------------------------


def expected(family: str, it: Interaction) -> Outcome:
    return {
        "openai": openai_expected,
        "anthropic": anthropic_expected,
        "gemini": gemini_expected,
        "bedrock": bedrock_expected,
        "cohere": cohere_expected,
        "responses": responses_expected,
    }[family](it)


def to_chat(family: str, it: Interaction, model: str) -> dict:
    """The OpenAI chat request whose translation for `family` is the recorded request."""
    req = it.request
    if family == "openai":
        return openai_to_chat(req)
    if family == "anthropic":
        return anthropic_to_chat(req)
    if family == "gemini":
        return gemini_to_chat(req, model)
    if family == "bedrock":
        return bedrock_to_chat(req, model)
    if family == "cohere":
        return cohere_to_chat(req)
    raise ValueError(f"no chat form for {family}")
