//! Replays of real AWS Bedrock Converse / ConverseStream transcripts through the Bedrock
//! codec: recorded JSON answers and binary event streams (fed at several chunk splits) must
//! decode to what the transcript says, errors keep their status and message, and requests
//! built from the equivalent OpenAI input have the recorded request's structure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "replay/cassette.rs"]
mod cassette;

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use serde_json::{json, Value};
use sluice::canonical::openai::decode_request;
use sluice::canonical::{ChatResponse, FinishReason, StreamEvent};
use sluice::providers::bedrock::{map_error, model_path, Bedrock};
use sluice::providers::native::{Codec, DecodeCtx};

/// The recorded event-stream bytes. The YAML crate resolves the standard `!!binary` tag
/// itself and hands the loader the base64 text, so decode it here when that happened.
fn event_stream_bytes(i: &cassette::Interaction) -> Vec<u8> {
    use base64::Engine;
    let text: String = String::from_utf8_lossy(&i.response)
        .split_whitespace()
        .collect();
    match base64::engine::general_purpose::STANDARD.decode(text.as_bytes()) {
        Ok(b) if i.response.first().is_some_and(u8::is_ascii_alphanumeric) => b,
        _ => i.response.clone(),
    }
}

fn codec() -> Bedrock {
    Bedrock {
        default_max_tokens: 4096,
    }
}

fn ctx() -> DecodeCtx {
    DecodeCtx {
        model: "bedrock-model".into(),
        json_tool: None,
    }
}

/// Converse calls (not count-tokens, not the media downloads some cassettes hold).
fn is_converse(uri: &str) -> bool {
    uri.contains("bedrock-runtime.")
        && (uri.ends_with("/converse") || uri.ends_with("/converse-stream"))
}

/// What a transcript's answer says, read straight from it.
#[derive(Debug, Default, PartialEq)]
struct Expected {
    text: String,
    thinking: String,
    signatures: Vec<String>,
    redacted: Vec<String>,
    /// (id, name, arguments as JSON)
    tools: Vec<(String, String, Value)>,
    input: u64,
    output: u64,
    stop: String,
}

fn expected_usage(e: &mut Expected, u: &Value) {
    let n = |k: &str| u[k].as_u64().unwrap_or(0);
    e.input = n("inputTokens") + n("cacheReadInputTokens") + n("cacheWriteInputTokens");
    e.output = n("outputTokens");
    // The sum above is what Bedrock counts too.
    if let Some(total) = u["totalTokens"].as_u64() {
        assert_eq!(
            total,
            e.input + e.output,
            "totalTokens = input + cache + output"
        );
    }
}

fn expected_from_json(v: &Value) -> Expected {
    let mut e = Expected::default();
    for b in v["output"]["message"]["content"].as_array().unwrap() {
        if let Some(t) = b["text"].as_str() {
            e.text.push_str(t);
        }
        if let Some(r) = b.get("reasoningContent") {
            if let Some(rt) = r.get("reasoningText") {
                e.thinking.push_str(rt["text"].as_str().unwrap());
                if let Some(s) = rt["signature"].as_str() {
                    e.signatures.push(s.to_string());
                }
            }
            if let Some(d) = r["redactedContent"].as_str() {
                e.redacted.push(d.to_string());
            }
        }
        if let Some(t) = b.get("toolUse") {
            if t["type"] != "server_tool_use" {
                e.tools.push((
                    t["toolUseId"].as_str().unwrap().to_string(),
                    t["name"].as_str().unwrap().to_string(),
                    t["input"].clone(),
                ));
            }
        }
    }
    expected_usage(&mut e, &v["usage"]);
    e.stop = v["stopReason"].as_str().unwrap().to_string();
    e
}

fn want_finish(stop: &str, tools: usize) -> FinishReason {
    match stop {
        "max_tokens" => FinishReason::Length,
        "tool_use" if tools > 0 => FinishReason::ToolCalls,
        "guardrail_intervened" | "content_filtered" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

fn check(file: &str, what: &str, r: &ChatResponse, e: &Expected) {
    assert_eq!(
        r.text.clone().unwrap_or_default(),
        e.text,
        "{file} {what}: text"
    );
    let th: String = r.thinking.iter().map(|t| t.text.as_str()).collect();
    assert_eq!(th, e.thinking, "{file} {what}: thinking");
    let sigs: Vec<String> = r
        .thinking
        .iter()
        .filter_map(|t| t.signature.clone())
        .collect();
    assert_eq!(sigs, e.signatures, "{file} {what}: signatures kept");
    let red: Vec<String> = r
        .thinking
        .iter()
        .filter_map(|t| t.redacted.clone())
        .collect();
    assert_eq!(red, e.redacted, "{file} {what}: redacted reasoning kept");
    let tools: Vec<(String, String, Value)> = r
        .tool_calls
        .iter()
        .map(|c| {
            let args: Value = serde_json::from_str(&c.arguments)
                .unwrap_or_else(|err| panic!("{file} {what}: arguments {:?}: {err}", c.arguments));
            (c.id.clone(), c.name.clone(), args)
        })
        .collect();
    assert_eq!(tools, e.tools, "{file} {what}: tool calls");
    let u = r.usage.unwrap();
    assert_eq!(
        (u.input_tokens, u.output_tokens),
        (e.input, e.output),
        "{file} {what}: usage"
    );
    assert_eq!(
        r.finish,
        want_finish(&e.stop, e.tools.len()),
        "{file} {what}: finish"
    );
}

#[test]
fn json_answers_decode_to_what_the_transcript_says() {
    let (mut checked, mut tools, mut thinking, mut cached) = (0, 0, 0, 0);
    for file in cassette::list("bedrock") {
        for i in cassette::load(&file) {
            if i.status != 200
                || !is_converse(&i.uri)
                || !i.content_type().starts_with("application/json")
            {
                continue;
            }
            let v = i.response_json();
            let e = expected_from_json(&v);
            let r = codec().decode(&i.response, &ctx()).unwrap();
            check(&file, "json", &r, &e);
            let u = r.usage.unwrap();
            assert_eq!(
                u.cached_input_tokens,
                v["usage"]["cacheReadInputTokens"].as_u64().unwrap_or(0),
                "{file}"
            );
            assert_eq!(
                u.cache_write_tokens,
                v["usage"]["cacheWriteInputTokens"].as_u64().unwrap_or(0),
                "{file}"
            );
            checked += 1;
            tools += usize::from(!e.tools.is_empty());
            thinking += usize::from(!e.signatures.is_empty() || !e.redacted.is_empty());
            cached += usize::from(u.cached_input_tokens > 0);
        }
    }
    eprintln!("{checked} JSON answers replayed ({tools} with tool calls, {thinking} with reasoning, {cached} with cache reads)");
    assert!(checked >= 40, "only {checked} JSON transcripts checked");
    assert!(
        tools >= 5 && thinking >= 4 && cached >= 1,
        "tools {tools}, thinking {thinking}, cached {cached}"
    );
}

/// Splits an event stream by hand (prelude, headers, payload; CRCs not checked here), so
/// the expectation does not come from the decoder under test.
fn frames(mut b: &[u8]) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let total = u32::from_be_bytes(b[0..4].try_into().unwrap()) as usize;
        let hlen = u32::from_be_bytes(b[4..8].try_into().unwrap()) as usize;
        let mut h = &b[12..12 + hlen];
        let mut event = String::new();
        while !h.is_empty() {
            let n = h[0] as usize;
            let name = std::str::from_utf8(&h[1..1 + n]).unwrap();
            assert_eq!(h[1 + n], 7, "string header");
            let vl = u16::from_be_bytes([h[2 + n], h[3 + n]]) as usize;
            let value = std::str::from_utf8(&h[4 + n..4 + n + vl]).unwrap();
            if name == ":event-type" {
                event = value.to_string();
            }
            h = &h[4 + n + vl..];
        }
        let payload = &b[12 + hlen..total - 4];
        out.push((event, serde_json::from_slice(payload).unwrap()));
        b = &b[total..];
    }
    out
}

fn expected_from_stream(body: &[u8]) -> Expected {
    let mut e = Expected::default();
    let mut server = Vec::new();
    let mut args: Vec<String> = Vec::new();
    for (event, v) in frames(body) {
        let idx = v["contentBlockIndex"].as_u64();
        match event.as_str() {
            "contentBlockStart" => {
                let t = &v["start"]["toolUse"];
                if t.is_object() {
                    if t["type"] == "server_tool_use" {
                        server.push(idx);
                    } else {
                        e.tools.push((
                            t["toolUseId"].as_str().unwrap().into(),
                            t["name"].as_str().unwrap().into(),
                            Value::Null,
                        ));
                        args.push(String::new());
                    }
                }
            }
            "contentBlockDelta" => {
                let d = &v["delta"];
                if let Some(t) = d["text"].as_str() {
                    e.text.push_str(t);
                }
                let r = &d["reasoningContent"];
                if let Some(t) = r["text"].as_str() {
                    e.thinking.push_str(t);
                }
                if let Some(s) = r["signature"].as_str() {
                    e.signatures.push(s.into());
                }
                if let Some(x) = r["redactedContent"].as_str() {
                    e.redacted.push(x.into());
                }
                if let Some(i) = d["toolUse"]["input"].as_str() {
                    if !server.contains(&idx) {
                        args.last_mut().unwrap().push_str(i);
                    }
                }
            }
            "messageStop" => e.stop = v["stopReason"].as_str().unwrap().into(),
            "metadata" => expected_usage(&mut e, &v["usage"]),
            _ => {}
        }
    }
    for (t, a) in e.tools.iter_mut().zip(args) {
        t.2 = serde_json::from_str(&a).unwrap();
    }
    e
}

/// Decodes a stream feeding it `split` bytes at a time.
fn stream(bytes: &[u8], split: usize, ctx: &DecodeCtx) -> Result<ChatResponse, String> {
    let mut d = codec().stream_decoder(ctx);
    let mut events: Vec<StreamEvent> = Vec::new();
    for chunk in bytes.chunks(split.max(1)) {
        d.feed(chunk, &mut events).map_err(|e| e.message)?;
    }
    d.finish(&mut events).map_err(|e| e.message)?;
    Ok(ChatResponse::from_events(&events))
}

#[test]
fn event_streams_decode_to_what_the_transcript_says_at_any_split() {
    let (mut checked, mut tools, mut thinking) = (0, 0, 0);
    for file in cassette::list("bedrock") {
        for i in cassette::load(&file) {
            if i.status != 200
                || !i
                    .content_type()
                    .starts_with("application/vnd.amazon.eventstream")
            {
                continue;
            }
            let body = event_stream_bytes(&i);
            let e = expected_from_stream(&body);
            for split in [1, 3, 7, 64, 1000, usize::MAX] {
                let r = stream(&body, split.min(body.len()), &ctx()).unwrap();
                check(&file, &format!("split {split}"), &r, &e);
            }
            checked += 1;
            tools += usize::from(!e.tools.is_empty());
            thinking += usize::from(!e.signatures.is_empty() || !e.redacted.is_empty());
        }
    }
    eprintln!("{checked} event streams replayed at 6 splits ({tools} with tool calls, {thinking} with reasoning)");
    assert!(checked >= 8, "only {checked} stream transcripts checked");
    assert!(
        tools >= 2 && thinking >= 2,
        "tools {tools}, thinking {thinking}"
    );
}

fn frame(headers: &[(&str, &str)], payload: &Value) -> Vec<u8> {
    let mut m = Message::new(payload.to_string().into_bytes());
    for (k, v) in headers {
        m = m.add_header(Header::new(
            k.to_string(),
            HeaderValue::String(v.to_string().into()),
        ));
    }
    let mut out = Vec::new();
    write_message_to(&m, &mut out).unwrap();
    out
}

#[test]
fn stream_exceptions_and_broken_frames_are_errors() {
    let i = &cassette::load("bedrock/test_bedrock_model_stream.yaml")[0];
    let recorded = event_stream_bytes(i);
    // Cut the recorded stream after three frames and append a throttling exception.
    let mut cut = 0;
    for _ in 0..3 {
        cut += u32::from_be_bytes(recorded[cut..cut + 4].try_into().unwrap()) as usize;
    }
    let mut body = recorded[..cut].to_vec();
    body.extend(frame(
        &[
            (":message-type", "exception"),
            (":exception-type", "throttlingException"),
            (":content-type", "application/json"),
        ],
        &json!({"message": "Too many requests, please wait before trying again."}),
    ));
    for split in [1, 5, usize::MAX] {
        let err = stream(&body, split.min(body.len()), &ctx()).unwrap_err();
        assert!(
            err.contains("throttlingException") && err.contains("Too many requests"),
            "{err}"
        );
    }
    // A stream that stops inside a frame.
    let err = stream(&recorded[..recorded.len() - 5], 64, &ctx()).unwrap_err();
    assert!(err.contains("ended inside a frame"), "{err}");
    // A forged frame length is refused before anything is buffered.
    let mut forged = recorded.clone();
    forged[..4].copy_from_slice(&u32::MAX.to_be_bytes());
    let err = stream(&forged, 64, &ctx()).unwrap_err();
    assert!(err.contains("malformed"), "{err}");
    // A flipped payload byte fails the CRC.
    let mut bad = recorded.clone();
    bad[30] ^= 0x20;
    assert!(stream(&bad, 64, &ctx()).is_err());
}

#[test]
fn structured_output_tool_becomes_text_in_streams() {
    let ctx = DecodeCtx {
        model: "m".into(),
        json_tool: Some("json_response".into()),
    };
    let mut body = Vec::new();
    body.extend(frame(
        &[(":message-type", "event"), (":event-type", "messageStart")],
        &json!({"role": "assistant"}),
    ));
    body.extend(frame(&[(":message-type", "event"), (":event-type", "contentBlockStart")],
        &json!({"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": "t1", "name": "json_response"}}})));
    for part in ["{\"a\":", "1}"] {
        body.extend(frame(
            &[
                (":message-type", "event"),
                (":event-type", "contentBlockDelta"),
            ],
            &json!({"contentBlockIndex": 0, "delta": {"toolUse": {"input": part}}}),
        ));
    }
    body.extend(frame(
        &[(":message-type", "event"), (":event-type", "messageStop")],
        &json!({"stopReason": "tool_use"}),
    ));
    let r = stream(&body, 9, &ctx).unwrap();
    assert_eq!(r.text.as_deref(), Some("{\"a\":1}"));
    assert!(r.tool_calls.is_empty());
    assert_eq!(r.finish, FinishReason::Stop);
}

#[test]
fn errors_keep_status_and_message() {
    let mut checked = 0;
    for file in cassette::list("bedrock") {
        for i in cassette::load(&file) {
            if i.status < 400 {
                continue;
            }
            let m = map_error(http::StatusCode::from_u16(i.status).unwrap(), &i.response);
            assert_eq!(
                m.message,
                i.response_json()["message"].as_str().unwrap(),
                "{file}"
            );
            assert_eq!(m.status.as_u16(), i.status, "{file}");
            assert_eq!(m.kind, "invalid_request_error", "{file}");
            checked += 1;
        }
    }
    assert!(checked >= 2, "only {checked} error transcripts");
    let t = map_error(
        http::StatusCode::TOO_MANY_REQUESTS,
        br#"{"message":"Too many requests, please wait before trying again."}"#,
    );
    assert_eq!((t.status.as_u16(), t.kind), (429, "rate_limit_error"));
    let o = map_error(
        http::StatusCode::BAD_REQUEST,
        br#"{"message":"Input is too long for requested model."}"#,
    );
    assert_eq!(o.code, Some("context_length_exceeded"));
    let u = map_error(
        http::StatusCode::SERVICE_UNAVAILABLE,
        br#"{"message":"Bedrock is unable to process your request."}"#,
    );
    assert_eq!((u.status.as_u16(), u.kind), (503, "server_error"));
}

/// The recorded request's path (model id escaped as the AWS SDK did).
fn path_of(uri: &str) -> &str {
    &uri[uri.find("/model/").unwrap()..]
}

fn encode(openai: &Value) -> (String, Value) {
    let req = decode_request(openai.to_string().as_bytes()).unwrap();
    let enc = codec().encode(&req).unwrap();
    (enc.path, serde_json::from_slice(&enc.body).unwrap())
}

fn model_of(uri: &str) -> String {
    let p = path_of(uri);
    let id = p.trim_start_matches("/model/").rsplit_once('/').unwrap().0;
    percent_encoding::percent_decode_str(id)
        .decode_utf8()
        .unwrap()
        .into_owned()
}

#[test]
fn simple_requests_match_the_recording_exactly() {
    // (file, interaction, the OpenAI request fields besides model and messages)
    let cases: &[(&str, usize, Value)] = &[
        (
            "test_bedrock_model_stream.yaml",
            0,
            json!({"temperature": 0.0, "stream": true}),
        ),
        (
            "test_bedrock_model_max_tokens.yaml",
            0,
            json!({"max_tokens": 5}),
        ),
        ("test_bedrock_model_top_p.yaml", 0, json!({"top_p": 0.5})),
        (
            "test_bedrock_top_k_anthropic_variant.yaml",
            0,
            json!({"top_k": 20}),
        ),
        (
            "test_bedrock_top_k_nova_variant.yaml",
            0,
            json!({"top_k": 20}),
        ),
        (
            "test_bedrock_thinking_high_openai_variant.yaml",
            0,
            json!({"reasoning_effort": "high"}),
        ),
        ("test_bedrock_error.yaml", 0, json!({})),
        ("test_bedrock_inference_profile_converse.yaml", 0, json!({})),
        (
            "test_bedrock_anthropic_message_history_starting_with_response.yaml",
            0,
            json!({}),
        ),
    ];
    for (file, n, extra) in cases {
        let i = &cassette::load(&format!("bedrock/{file}"))[*n];
        let rec = &i.request;
        let mut msgs = Vec::new();
        for s in rec["system"].as_array().unwrap() {
            msgs.push(json!({"role": "system", "content": s["text"]}));
        }
        for m in rec["messages"].as_array().unwrap() {
            msgs.push(json!({"role": m["role"], "content": m["content"][0]["text"]}));
        }
        let mut openai = json!({"model": model_of(&i.uri), "messages": msgs});
        for (k, v) in extra.as_object().unwrap() {
            openai[k] = v.clone();
        }
        let (path, body) = encode(&openai);
        assert_eq!(path, path_of(&i.uri), "{file}");
        assert_eq!(&body, rec, "{file}");
    }
    assert_eq!(
        model_path("arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc", "converse"),
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aapplication-inference-profile%2Fabc/converse"
    );
}

fn openai_tools(rec: &Value) -> Vec<Value> {
    rec["toolConfig"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let s = &t["toolSpec"];
            json!({"type": "function", "function": {"name": s["name"], "description": s["description"],
                "parameters": s["inputSchema"]["json"]}})
        })
        .collect()
}

#[test]
fn tool_and_thinking_turns_have_the_recorded_structure() {
    // Turn 2 of a tool call with thinking: signed reasoning, text and toolUse go back in the
    // assistant turn, the result as a user toolResult.
    let turns = cassette::load("bedrock/test_bedrock_anthropic_tool_with_thinking.yaml");
    let rec = &turns[1].request;
    let first = turns[0].response_json();
    let content = first["output"]["message"]["content"].as_array().unwrap();
    let rt = &content[0]["reasoningContent"]["reasoningText"];
    let call = &content[2]["toolUse"];
    let openai = json!({
        "model": model_of(&turns[1].uri),
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tools": openai_tools(rec),
        "messages": [
            {"role": "user", "content": rec["messages"][0]["content"][0]["text"]},
            {"role": "assistant", "content": content[1]["text"],
             "thinking_blocks": [{"type": "thinking", "thinking": rt["text"], "signature": rt["signature"]}],
             "tool_calls": [{"id": call["toolUseId"], "type": "function",
                "function": {"name": call["name"], "arguments": call["input"].to_string()}}]},
            {"role": "tool", "tool_call_id": call["toolUseId"], "content": "Mexico"},
        ],
    });
    let (path, body) = encode(&openai);
    assert_eq!(path, path_of(&turns[1].uri));
    assert_eq!(body["messages"], rec["messages"]);
    assert_eq!(body["toolConfig"]["tools"], rec["toolConfig"]["tools"]);
    assert_eq!(
        body["additionalModelRequestFields"],
        rec["additionalModelRequestFields"]
    );
    assert_eq!(body["system"], rec["system"]);
    // Anthropic needs max_tokens above the budget.
    assert!(body["inferenceConfig"]["maxTokens"].as_u64().unwrap() > 1024);

    // tool_choice required -> any; multi-turn tool results.
    let turns = cassette::load("bedrock/test_bedrock_model_structured_output.yaml");
    let rec = &turns[1].request;
    let call = &rec["messages"][1]["content"][0]["toolUse"];
    let openai = json!({
        "model": model_of(&turns[1].uri),
        "tools": openai_tools(rec),
        "tool_choice": "required",
        "messages": [
            {"role": "system", "content": rec["system"][0]["text"]},
            {"role": "user", "content": rec["messages"][0]["content"][0]["text"]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": call["toolUseId"], "type": "function",
                "function": {"name": call["name"], "arguments": call["input"].to_string()}}]},
            {"role": "tool", "tool_call_id": call["toolUseId"], "content": "30°C"},
        ],
    });
    let (_, body) = encode(&openai);
    assert_eq!(body["messages"], rec["messages"]);
    assert_eq!(body["toolConfig"], rec["toolConfig"]);
    assert_eq!(body["system"], rec["system"]);

    // Redacted reasoning goes back as redactedContent.
    let turns = cassette::load("bedrock/test_bedrock_model_thinking_part_redacted.yaml");
    let rec = &turns[1].request;
    let a = rec["messages"][1]["content"].as_array().unwrap();
    let openai = json!({
        "model": model_of(&turns[1].uri),
        "messages": [
            {"role": "user", "content": rec["messages"][0]["content"][0]["text"]},
            {"role": "assistant", "content": a[1]["text"], "thinking_blocks": [
                {"type": "redacted_thinking", "data": a[0]["reasoningContent"]["redactedContent"]}]},
            {"role": "user", "content": rec["messages"][2]["content"][0]["text"]},
        ],
    });
    let (_, body) = encode(&openai);
    assert_eq!(body["messages"], rec["messages"]);
}

#[test]
fn images_go_inline_and_urls_are_refused() {
    let i = &cassette::load("bedrock/test_image_url_input.yaml")[1];
    let rec = &i.request;
    let img = &rec["messages"][0]["content"][1]["image"];
    let openai = json!({"model": model_of(&i.uri), "messages": [
        {"role": "system", "content": rec["system"][0]["text"]},
        {"role": "user", "content": [
            {"type": "text", "text": rec["messages"][0]["content"][0]["text"]},
            {"type": "image_url", "image_url": {"url": format!("data:image/jpeg;base64,{}", img["source"]["bytes"].as_str().unwrap())}},
        ]},
    ]});
    let (_, body) = encode(&openai);
    assert_eq!(&body, rec);

    let req = decode_request(
        json!({"model": "us.amazon.nova-pro-v1:0", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let err = codec().encode(&req).err().unwrap();
    assert!(err.message.contains("data: URL"), "{}", err.message);
}

#[test]
fn inline_files_become_documents() {
    let i = &cassette::load("bedrock/test_text_as_binary_content_input.yaml")[0];
    let rec = &i.request;
    let doc = &rec["messages"][0]["content"][1]["document"];
    let openai = json!({"model": model_of(&i.uri), "messages": [
        {"role": "system", "content": rec["system"][0]["text"]},
        {"role": "user", "content": [
            {"type": "text", "text": rec["messages"][0]["content"][0]["text"]},
            {"type": "file", "file": {"filename": "notes.txt",
                "file_data": format!("data:text/plain;base64,{}", doc["source"]["bytes"].as_str().unwrap())}},
        ]},
    ]});
    let (_, body) = encode(&openai);
    assert_eq!(&body, rec);
    let req = decode_request(
        json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let err = codec().encode(&req).err().unwrap();
    assert!(err.message.contains("input_audio"), "{}", err.message);
}

#[test]
fn json_schema_uses_a_forced_tool_and_none_leaves_tools_out() {
    let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
    let (_, body) = encode(&json!({"model": "us.amazon.nova-micro-v1:0",
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}));
    assert_eq!(
        body["toolConfig"]["toolChoice"],
        json!({"tool": {"name": "json_response"}})
    );
    assert_eq!(
        body["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"],
        schema
    );

    let decoded = codec()
        .decode(
            br#"{"output":{"message":{"role":"assistant","content":[{"toolUse":{"toolUseId":"t","name":"json_response","input":{"a":1}}}]}},"stopReason":"tool_use","usage":{"inputTokens":3,"outputTokens":4}}"#,
            &DecodeCtx { model: "m".into(), json_tool: Some("json_response".into()) },
        )
        .unwrap();
    assert_eq!(decoded.text.as_deref(), Some(r#"{"a":1}"#));
    assert_eq!(decoded.finish, FinishReason::Stop);

    let tools =
        json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
    let (_, body) = encode(
        &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
        "tools": tools, "tool_choice": "none"}),
    );
    assert!(body.get("toolConfig").is_none(), "{body}");
    let (_, body) = encode(
        &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
        "tools": tools, "tool_choice": {"type": "function", "function": {"name": "f"}}}),
    );
    assert_eq!(
        body["toolConfig"]["toolChoice"],
        json!({"tool": {"name": "f"}})
    );
}

#[test]
fn unsupported_parameters_are_listed_as_dropped() {
    let req = decode_request(
        json!({"model": "us.amazon.nova-micro-v1:0", "seed": 1,
        "frequency_penalty": 0.5, "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let enc = codec().encode(&req).unwrap();
    assert_eq!(
        enc.dropped,
        vec!["seed".to_string(), "frequency_penalty".to_string()]
    );
}

#[test]
fn embeddings_titan_and_cohere() {
    let enc = codec()
        .encode_embeddings(
            br#"{"model":"amazon.titan-embed-text-v2:0","input":"hello","dimensions":256}"#,
        )
        .unwrap()
        .unwrap();
    assert_eq!(enc.path, "/model/amazon.titan-embed-text-v2%3A0/invoke");
    let b: Value = serde_json::from_slice(&enc.body).unwrap();
    assert_eq!(b, json!({"inputText": "hello", "dimensions": 256}));
    let out: Value = serde_json::from_slice(
        &codec()
            .decode_embeddings(
                br#"{"embedding":[0.1,0.2],"inputTextTokenCount":2}"#,
                &enc.ctx,
            )
            .unwrap(),
    )
    .unwrap();
    assert_eq!(out["data"][0]["embedding"], json!([0.1, 0.2]));
    assert_eq!(out["usage"]["prompt_tokens"], 2);
    assert_eq!(out["object"], "list");
    // Titan takes one text per request.
    let err = codec()
        .encode_embeddings(br#"{"model":"amazon.titan-embed-text-v2:0","input":["a","b"]}"#)
        .unwrap()
        .err()
        .unwrap();
    assert_eq!(err.param.as_deref(), Some("input"));

    let enc = codec()
        .encode_embeddings(br#"{"model":"cohere.embed-english-v3","input":["a","b"]}"#)
        .unwrap()
        .unwrap();
    let b: Value = serde_json::from_slice(&enc.body).unwrap();
    assert_eq!(
        b,
        json!({"texts": ["a", "b"], "input_type": "search_document"})
    );
    let out: Value = serde_json::from_slice(
        &codec()
            .decode_embeddings(
                br#"{"id":"x","embeddings":[[1.0],[2.0]],"texts":["a","b"]}"#,
                &enc.ctx,
            )
            .unwrap(),
    )
    .unwrap();
    assert_eq!(out["data"][1]["index"], 1);
    assert_eq!(out["data"][1]["embedding"], json!([2.0]));
}

/// Damaged streams (bytes flipped, cut, lengths forged) give errors or partial answers,
/// never a panic or a runaway allocation. A bounded stand-in for the fuzz target.
#[test]
fn damaged_event_streams_never_panic() {
    let recorded = event_stream_bytes(
        &cassette::load("bedrock/test_bedrock_model_thinking_part_stream.yaml")[0],
    );
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut errors, mut total) = (0, 0);
    for round in 0..400 {
        let mut b = recorded.clone();
        let n = (next() % 4 + 1) as usize;
        for _ in 0..n {
            let at = (next() as usize) % b.len();
            b[at] = next() as u8;
        }
        if round % 4 == 0 {
            // A forged total length in the first prelude.
            b[..4].copy_from_slice(&(next() as u32).to_be_bytes());
        }
        if round % 5 == 0 {
            b.truncate((next() as usize) % b.len());
        }
        let split = (next() % 97 + 1) as usize;
        total += 1;
        if stream(&b, split, &ctx()).is_err() {
            errors += 1;
        }
    }
    assert!(
        errors > total / 2,
        "most damaged streams are refused ({errors}/{total})"
    );
}
