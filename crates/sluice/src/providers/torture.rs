//! The streaming tool-call torture test, once per stream decoder (issue 18): three parallel
//! calls whose argument deltas interleave, one call with no arguments at all, arguments with
//! multi-byte characters (2, 3 and 4 bytes in UTF-8), and the wire cut at every byte offset
//! (and fed one byte at a time) — every way must fold to the same calls, and the OpenAI
//! chunks Sluice sends for them must reassemble to the same arguments.

use super::native::{DecodeCtx, StreamDecoder};
use crate::canonical::openai::StreamEncoder;
use crate::canonical::{ChatResponse, FinishReason, StreamEvent};
use serde_json::{json, Value};

/// Call `a`'s arguments: multi-byte characters of every width.
const ARGS_A: &str = r#"{"city":"Zürich – 日本 🦀","n":1}"#;
/// Call `c`'s arguments.
const ARGS_C: &str = r#"{"q":"naïve café ✓"}"#;

/// `s` in `n` pieces cut at character boundaries (JSON strings must stay valid).
fn pieces(s: &str, n: usize) -> Vec<&str> {
    let chars: Vec<usize> = s.char_indices().map(|(i, _)| i).collect();
    let step = chars.len().div_ceil(n);
    let mut out = Vec::new();
    let mut start = 0;
    for k in 1..n {
        let end = chars.get(k * step).copied().unwrap_or(s.len());
        out.push(&s[start..end]);
        start = end;
    }
    out.push(&s[start..]);
    out
}

/// The argument deltas in the order a provider interleaving calls `a` (0) and `c` (2)
/// sends them; `b` (1) sends none.
fn interleaved() -> Vec<(usize, &'static str)> {
    let a = pieces(ARGS_A, 3);
    let c = pieces(ARGS_C, 2);
    vec![(0, a[0]), (2, c[0]), (0, a[1]), (2, c[1]), (0, a[2])]
}

/// What the decoder is fed: whole, cut in two at every offset, and byte by byte.
fn splits(wire: &[u8]) -> Vec<Vec<&[u8]>> {
    let mut out = vec![vec![wire]];
    for i in 1..wire.len() {
        out.push(vec![&wire[..i], &wire[i..]]);
    }
    out.push(wire.chunks(1).collect());
    out
}

fn decode<D: StreamDecoder>(d: &mut D, chunks: &[&[u8]]) -> Vec<StreamEvent> {
    let mut ev = Vec::new();
    for c in chunks {
        d.feed(c, &mut ev).unwrap();
    }
    d.finish(&mut ev).unwrap();
    ev
}

/// (id, name, parsed arguments) of each call.
fn calls(r: &ChatResponse) -> Vec<(String, String, Value)> {
    r.tool_calls
        .iter()
        .map(|c| {
            let args = serde_json::from_str(&c.arguments)
                .unwrap_or_else(|e| panic!("arguments of {} are not JSON ({e}): {c:?}", c.name));
            (c.id.clone(), c.name.clone(), args)
        })
        .collect()
}

/// The arguments the OpenAI chunks carry, reassembled by index as clients do.
fn reassembled(events: &[StreamEvent]) -> Vec<Value> {
    let mut enc = StreamEncoder::new("id".into(), "m".into(), 0, false);
    let mut out = Vec::new();
    for e in events {
        enc.event(e, &mut out);
    }
    enc.finish(&mut out);
    let mut args: Vec<String> = Vec::new();
    for line in String::from_utf8(out).unwrap().lines() {
        let Some(data) = line.strip_prefix("data: ").filter(|d| *d != "[DONE]") else {
            continue;
        };
        let v: Value = serde_json::from_str(data).unwrap();
        for tc in v["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let i = usize::try_from(tc["index"].as_u64().unwrap()).unwrap();
            if args.len() <= i {
                args.resize(i + 1, String::new());
            }
            args[i].push_str(tc["function"]["arguments"].as_str().unwrap_or(""));
        }
    }
    args.iter()
        .map(|a| serde_json::from_str(a).unwrap())
        .collect()
}

/// Runs `wire` through fresh decoders every way; checks the three calls (`ids`: the ids
/// the wire gives, `None` where the decoder makes them up) and returns nothing on success.
fn torture<D: StreamDecoder>(wire: &[u8], make: impl Fn() -> D, ids: Option<[&str; 3]>) {
    let want_args = [
        serde_json::from_str::<Value>(ARGS_A).unwrap(),
        json!({}),
        serde_json::from_str::<Value>(ARGS_C).unwrap(),
    ];
    let mut first: Option<Vec<(String, Value)>> = None;
    for (n, chunks) in splits(wire).iter().enumerate() {
        let events = decode(&mut make(), chunks);
        let r = ChatResponse::from_events(&events);
        let got = calls(&r);
        let names: Vec<&str> = got.iter().map(|(_, n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"], "way {n}: {events:?}");
        let args: Vec<&Value> = got.iter().map(|(_, _, a)| a).collect();
        assert_eq!(args, want_args.iter().collect::<Vec<_>>(), "way {n}");
        match ids {
            Some(ids) => {
                let got_ids: Vec<&str> = got.iter().map(|(i, _, _)| i.as_str()).collect();
                assert_eq!(got_ids, ids, "way {n}");
            }
            None => {
                assert!(got.iter().all(|(i, _, _)| !i.is_empty()), "way {n}");
                assert!(got[0].0 != got[1].0 && got[1].0 != got[2].0, "way {n}");
            }
        }
        assert_eq!(r.finish, FinishReason::ToolCalls, "way {n}");
        assert_eq!(reassembled(&events), want_args, "way {n}");
        // Generated ids may differ from one decoder to the next; the rest may not.
        let comparable: Vec<(String, Value)> = got.into_iter().map(|(_, n, a)| (n, a)).collect();
        match &first {
            None => first = Some(comparable),
            Some(f) => assert_eq!(f, &comparable, "way {n}"),
        }
    }
}

fn sse(events: &[(&str, Value)]) -> Vec<u8> {
    let mut out = String::new();
    for (name, data) in events {
        if !name.is_empty() {
            out.push_str(&format!("event: {name}\n"));
        }
        out.push_str(&format!("data: {data}\n\n"));
    }
    out.into_bytes()
}

fn ctx() -> DecodeCtx {
    DecodeCtx {
        model: "m".into(),
        json_tool: None,
    }
}

#[test]
fn openai_compatible() {
    let chunk = |delta: Value, finish: Value| {
        (
            "",
            json!({"id": "x", "object": "chat.completion.chunk", "model": "m",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
        )
    };
    let mut ev = vec![chunk(
        json!({"role": "assistant", "content": null}),
        Value::Null,
    )];
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        ev.push(chunk(
            json!({"tool_calls": [{"index": i, "id": format!("call_{name}"), "type": "function",
                                   "function": {"name": name, "arguments": ""}}]}),
            Value::Null,
        ));
    }
    for (i, p) in interleaved() {
        ev.push(chunk(
            json!({"tool_calls": [{"index": i, "function": {"arguments": p}}]}),
            Value::Null,
        ));
    }
    ev.push(chunk(json!({}), json!("tool_calls")));
    let mut wire = sse(&ev);
    wire.extend_from_slice(b"data: [DONE]\n\n");
    torture(
        &wire,
        crate::canonical::openai::OpenAiStream::default,
        Some(["call_a", "call_b", "call_c"]),
    );
}

#[test]
fn anthropic() {
    let mut ev = vec![(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_1", "model": "claude",
               "usage": {"input_tokens": 3, "output_tokens": 1}}}),
    )];
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        ev.push((
            "content_block_start",
            json!({"type": "content_block_start", "index": i, "content_block":
                   {"type": "tool_use", "id": format!("toolu_{name}"), "name": name, "input": {}}}),
        ));
    }
    for (i, p) in interleaved() {
        ev.push((
            "content_block_delta",
            json!({"type": "content_block_delta", "index": i,
                   "delta": {"type": "input_json_delta", "partial_json": p}}),
        ));
    }
    for i in 0..3 {
        ev.push((
            "content_block_stop",
            json!({"type": "content_block_stop", "index": i}),
        ));
    }
    ev.push((
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"},
               "usage": {"output_tokens": 9}}),
    ));
    ev.push(("message_stop", json!({"type": "message_stop"})));
    torture(
        &sse(&ev),
        || super::anthropic::AnthropicStream::new(ctx()),
        Some(["toolu_a", "toolu_b", "toolu_c"]),
    );
}

#[test]
fn gemini() {
    // Gemini sends each call whole; two in one chunk, the third in the next.
    let call = |name: &str, args: &str| json!({"functionCall": {"name": name, "args": serde_json::from_str::<Value>(args).unwrap()}});
    let ev = [
        (
            "",
            json!({"responseId": "r1", "candidates": [{"content": {"role": "model",
                   "parts": [call("a", ARGS_A), call("b", "{}")]}}]}),
        ),
        (
            "",
            json!({"responseId": "r1", "candidates": [{"content": {"role": "model",
                   "parts": [call("c", ARGS_C)]}, "finishReason": "STOP"}],
                   "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 9}}),
        ),
    ];
    torture(&sse(&ev), || super::gemini::GeminiStream::new(ctx()), None);
}

#[test]
fn bedrock_event_stream() {
    use aws_smithy_eventstream::frame::write_message_to;
    use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
    let mut wire = Vec::new();
    let mut frame = |kind: &'static str, payload: Value| {
        let m = Message::new(payload.to_string().into_bytes())
            .add_header(Header::new(":event-type", HeaderValue::String(kind.into())))
            .add_header(Header::new(
                ":content-type",
                HeaderValue::String("application/json".into()),
            ))
            .add_header(Header::new(
                ":message-type",
                HeaderValue::String("event".into()),
            ));
        write_message_to(&m, &mut wire).unwrap();
    };
    frame("messageStart", json!({"role": "assistant"}));
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        frame(
            "contentBlockStart",
            json!({"contentBlockIndex": i,
                   "start": {"toolUse": {"toolUseId": format!("tooluse_{name}"), "name": name}}}),
        );
    }
    for (i, p) in interleaved() {
        frame(
            "contentBlockDelta",
            json!({"contentBlockIndex": i, "delta": {"toolUse": {"input": p}}}),
        );
    }
    for i in 0..3 {
        frame("contentBlockStop", json!({"contentBlockIndex": i}));
    }
    frame("messageStop", json!({"stopReason": "tool_use"}));
    frame(
        "metadata",
        json!({"usage": {"inputTokens": 3, "outputTokens": 9, "totalTokens": 12}}),
    );
    torture(
        &wire,
        || super::bedrock::stream::ConverseStream::new(ctx()),
        Some(["tooluse_a", "tooluse_b", "tooluse_c"]),
    );
}

#[test]
fn cohere() {
    let mut ev = vec![(
        "message-start",
        json!({"id": "s1", "type": "message-start",
               "delta": {"message": {"role": "assistant", "content": [], "tool_calls": []}}}),
    )];
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        ev.push((
            "tool-call-start",
            json!({"type": "tool-call-start", "index": i, "delta": {"message": {"tool_calls":
                   {"id": format!("{name}_1"), "type": "function",
                    "function": {"name": name, "arguments": ""}}}}}),
        ));
    }
    for (i, p) in interleaved() {
        ev.push((
            "tool-call-delta",
            json!({"type": "tool-call-delta", "index": i,
                   "delta": {"message": {"tool_calls": {"function": {"arguments": p}}}}}),
        ));
    }
    for i in 0..3 {
        ev.push((
            "tool-call-end",
            json!({"type": "tool-call-end", "index": i}),
        ));
    }
    ev.push((
        "message-end",
        json!({"type": "message-end", "delta": {"finish_reason": "TOOL_CALL",
               "usage": {"tokens": {"input_tokens": 3, "output_tokens": 9}}}}),
    ));
    torture(
        &sse(&ev),
        || super::cohere::CohereStream::new(ctx()),
        Some(["a_1", "b_1", "c_1"]),
    );
}

#[test]
fn ollama() {
    // NDJSON; calls arrive whole, with arguments as objects.
    let call = |name: &str, args: &str| json!({"function": {"name": name, "arguments": serde_json::from_str::<Value>(args).unwrap()}});
    let lines = [
        json!({"model": "m", "message": {"role": "assistant", "content": "",
               "tool_calls": [call("a", ARGS_A), call("b", "{}")]}, "done": false}),
        json!({"model": "m", "message": {"role": "assistant", "content": "",
               "tool_calls": [call("c", ARGS_C)]}, "done": false}),
        json!({"model": "m", "message": {"role": "assistant", "content": ""}, "done": true,
               "done_reason": "stop", "prompt_eval_count": 3, "eval_count": 9}),
    ];
    let wire: String = lines.iter().map(|l| format!("{l}\n")).collect();
    torture(
        wire.as_bytes(),
        || super::ollama::OllamaStream::new(ctx()),
        None,
    );
}
