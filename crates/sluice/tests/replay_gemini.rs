//! Replays of real Gemini (AI Studio and Vertex) transcripts through the Gemini codec: the
//! recorded answer (JSON or SSE, at several chunk splits) must decode to what the transcript
//! says, and requests built from the equivalent OpenAI input must have the recorded
//! request's structure (contents, systemInstruction, tools, toolConfig, generationConfig).
//!
//! The recordings come from the Python SDK, which spells some keys in snake_case
//! (`parameters_json_schema`, `thinking_budget`); both spellings mean the same to the API, so
//! comparisons normalise keys to camelCase on both sides.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "replay/cassette.rs"]
mod cassette;

use base64::Engine;
use serde_json::{json, Value};
use sluice::canonical::openai::{decode_request, encode_response};
use sluice::canonical::{ChatResponse, FinishReason, StreamEvent};
use sluice::providers::gemini::{map_error, Gemini};
use sluice::providers::native::{Codec, DecodeCtx};

fn codec() -> Gemini {
    Gemini::ai_studio()
}

fn ctx(model: &str) -> DecodeCtx {
    DecodeCtx {
        model: model.into(),
        json_tool: None,
    }
}

fn is_chat(uri: &str) -> bool {
    uri.contains(":generateContent") || uri.contains(":streamGenerateContent")
}

/// Decodes a stream feeding it `split` bytes at a time.
fn stream(bytes: &[u8], split: usize) -> ChatResponse {
    let mut d = codec().stream_decoder(&ctx("gemini"));
    let mut events: Vec<StreamEvent> = Vec::new();
    for chunk in bytes.chunks(split.max(1)) {
        d.feed(chunk, &mut events).unwrap();
    }
    d.finish(&mut events).unwrap();
    ChatResponse::from_events(&events)
}

/// What the transcript says, folded by hand from its chunks (one for a JSON answer).
#[derive(Debug, Default, PartialEq)]
struct Expected {
    text: String,
    thinking: String,
    calls: Vec<(String, Value)>,
    signatures: usize,
    finish: Option<FinishReason>,
    /// input, output, reasoning, cached
    usage: (u64, u64, u64, u64),
}

fn expected(chunks: &[Value]) -> Expected {
    let mut e = Expected::default();
    let mut reason: Option<String> = None;
    let mut blocked = false;
    for c in chunks {
        if c["promptFeedback"]["blockReason"].is_string() {
            blocked = true;
        }
        if let Some(u) = c.get("usageMetadata") {
            let n = |k: &str| u[k].as_u64().unwrap_or(0);
            e.usage = (
                n("promptTokenCount") + n("toolUsePromptTokenCount"),
                n("candidatesTokenCount") + n("thoughtsTokenCount"),
                n("thoughtsTokenCount"),
                n("cachedContentTokenCount"),
            );
        }
        let cand = &c["candidates"][0];
        for p in cand["content"]["parts"].as_array().into_iter().flatten() {
            if let Some(t) = p["text"].as_str() {
                if p["thought"] == true {
                    e.thinking.push_str(t);
                } else {
                    e.text.push_str(t);
                }
            } else if let Some(fc) = p.get("functionCall") {
                e.calls.push((
                    fc["name"].as_str().unwrap().to_string(),
                    fc.get("args").cloned().unwrap_or(json!({})),
                ));
            }
            if p["thoughtSignature"].is_string() {
                e.signatures += 1;
            }
        }
        if let Some(r) = cand["finishReason"].as_str() {
            reason = Some(r.to_string());
        }
    }
    let filtered = [
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "MODEL_ARMOR",
    ];
    e.finish = Some(match reason.as_deref() {
        _ if blocked => FinishReason::ContentFilter,
        Some(r) if filtered.contains(&r) => FinishReason::ContentFilter,
        _ if !e.calls.is_empty() => FinishReason::ToolCalls,
        Some("MAX_TOKENS") => FinishReason::Length,
        _ => FinishReason::Stop,
    });
    e
}

fn got(r: &ChatResponse) -> Expected {
    let u = r.usage.unwrap_or_default();
    Expected {
        text: r.text.clone().unwrap_or_default(),
        thinking: r.thinking.iter().map(|t| t.text.as_str()).collect(),
        calls: r
            .tool_calls
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    serde_json::from_str(&c.arguments).expect("arguments are JSON"),
                )
            })
            .collect(),
        signatures: r.thinking.iter().filter(|t| t.signature.is_some()).count(),
        finish: Some(r.finish),
        usage: (
            u.input_tokens,
            u.output_tokens,
            u.reasoning_tokens,
            u.cached_input_tokens,
        ),
    }
}

fn sse_chunks(body: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str(d.trim()).ok())
        .collect()
}

fn assert_ids(r: &ChatResponse, what: &str) {
    let mut ids: Vec<&str> = r.tool_calls.iter().map(|c| c.id.as_str()).collect();
    assert!(
        ids.iter().all(|i| !i.is_empty()),
        "{what}: empty tool-call id"
    );
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), r.tool_calls.len(), "{what}: duplicate ids");
}

#[test]
fn json_answers_decode_to_what_the_transcript_says() {
    let (mut checked, mut with_tools, mut with_thoughts, mut filtered, mut vertex) =
        (0, 0, 0, 0, 0);
    let mut with_logprobs = 0;
    for file in cassette::list("google") {
        for i in cassette::load(&file) {
            if i.status != 200 || !is_chat(&i.uri) || !i.content_type().contains("json") {
                continue;
            }
            let v = i.response_json();
            let want = expected(std::slice::from_ref(&v));
            let r = codec().decode(&i.response, &ctx("gemini")).unwrap();
            assert_eq!(got(&r), want, "{file}");
            assert_ids(&r, &file);
            if let Some(id) = v["responseId"].as_str() {
                assert_eq!(r.id, id, "{file}");
            }
            // The same answer as a one-chunk stream decodes the same.
            let mut sse = b"data: ".to_vec();
            sse.extend_from_slice(&serde_json::to_vec(&v).unwrap());
            sse.extend_from_slice(b"\r\n\r\n");
            // (Log probabilities come only in whole answers.)
            let mut whole = r.clone();
            whole.logprobs = None;
            assert_eq!(stream(&sse, 5), whole, "{file}: stream vs JSON");
            if let Some(lp) = &r.logprobs {
                // The chosen tokens spell the answer.
                let tokens: String = lp["content"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t["token"].as_str().unwrap())
                    .collect();
                assert_eq!(Some(tokens), r.text, "{file}: logprobs");
                with_logprobs += 1;
            }
            checked += 1;
            with_tools += usize::from(!want.calls.is_empty());
            with_thoughts += usize::from(!want.thinking.is_empty() || want.signatures > 0);
            filtered += usize::from(want.finish == Some(FinishReason::ContentFilter));
            vertex += usize::from(i.uri.contains("aiplatform"));
        }
    }
    eprintln!("JSON answers: {checked} ({with_tools} with tools, {with_thoughts} with thinking, {filtered} filtered, {vertex} Vertex)");
    assert!(checked >= 60, "only {checked} JSON transcripts checked");
    assert!(with_tools >= 10, "{with_tools} with tool calls");
    assert!(with_thoughts >= 5, "{with_thoughts} with thinking");
    assert!(filtered >= 3, "{filtered} content-filtered");
    assert!(vertex >= 5, "{vertex} from Vertex");
    assert!(with_logprobs >= 1, "{with_logprobs} with log probabilities");
}

#[test]
fn streams_decode_to_what_the_transcript_says_at_any_split() {
    let (mut checked, mut with_tools) = (0, 0);
    for file in cassette::list("google") {
        for i in cassette::load(&file) {
            if i.status != 200 || !i.content_type().starts_with("text/event-stream") {
                continue;
            }
            let want = expected(&sse_chunks(&i.response));
            for split in [1, 7, 64, usize::MAX] {
                let r = stream(&i.response, split.min(i.response.len()));
                assert_eq!(got(&r), want, "{file} split {split}");
                assert_ids(&r, &file);
            }
            checked += 1;
            with_tools += usize::from(!want.calls.is_empty());
        }
    }
    eprintln!("streams: {checked} ({with_tools} with tools)");
    assert!(checked >= 10, "only {checked} stream transcripts checked");
    assert!(with_tools >= 3, "{with_tools} streams with tool calls");
}

/// Without `alt=sse`, `streamGenerateContent` answers with a JSON array of the same chunks:
/// it decodes to the same answer as the SSE stream.
#[test]
fn chunk_arrays_decode_like_streams() {
    let mut checked = 0;
    for file in cassette::list("google") {
        for i in cassette::load(&file) {
            if i.status != 200 || !i.content_type().starts_with("text/event-stream") {
                continue;
            }
            let array = Value::Array(sse_chunks(&i.response));
            let r = codec()
                .decode(&serde_json::to_vec(&array).unwrap(), &ctx("gemini"))
                .unwrap();
            assert_eq!(r, stream(&i.response, 64), "{file}");
            checked += 1;
        }
    }
    assert!(checked >= 10);
}

/// Streamed function calls come whole: one start and one argument delta each, in order.
#[test]
fn streamed_function_calls_are_one_start_and_one_delta() {
    let i = &cassette::load("google/test_google_model_iter_stream.yaml")[0];
    let mut d = codec().stream_decoder(&ctx("gemini"));
    let mut ev = Vec::new();
    d.feed(&i.response, &mut ev).unwrap();
    d.finish(&mut ev).unwrap();
    let calls: Vec<&StreamEvent> = ev
        .iter()
        .filter(|e| {
            matches!(
                e,
                StreamEvent::ToolCallStart { .. } | StreamEvent::ToolCallArgs { .. }
            )
        })
        .collect();
    assert_eq!(calls.len(), 2, "{ev:?}");
    assert!(
        matches!(calls[0], StreamEvent::ToolCallStart { index: 0, name, .. } if name == "get_capital")
    );
    assert!(
        matches!(calls[1], StreamEvent::ToolCallArgs { index: 0, delta } if serde_json::from_str::<Value>(delta).unwrap() == json!({"country": "France"}))
    );
    // Usage comes once, at the end, with the final counts.
    let usages: Vec<_> = ev
        .iter()
        .filter(|e| matches!(e, StreamEvent::Usage(_)))
        .collect();
    assert_eq!(usages.len(), 1);
    assert!(matches!(ev.last(), Some(StreamEvent::Usage(_))));
}

/// No Google transcript records an error, so these bodies are Google's documented error
/// shape with messages as the API words them.
#[test]
fn errors_keep_status_and_message() {
    let s = |c| http::StatusCode::from_u16(c).unwrap();
    let quota = br#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}"#;
    let m = map_error(s(429), quota);
    assert_eq!(m.status.as_u16(), 429);
    assert_eq!(m.kind, "rate_limit_error");
    assert_eq!(m.message, "Resource has been exhausted (e.g. check quota).");
    assert_eq!(m.code, Some("rate_limit_exceeded"));

    let bad = br#"{"error":{"code":400,"message":"* GenerateContentRequest.contents: contents is not specified\n","status":"INVALID_ARGUMENT"}}"#;
    let m = map_error(s(400), bad);
    assert_eq!((m.status.as_u16(), m.kind), (400, "invalid_request_error"));
    assert!(m.message.contains("contents is not specified"));
    assert_eq!(m.code, None);

    let long = br#"[{"error":{"code":400,"message":"The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}]"#;
    let m = map_error(s(400), long);
    assert_eq!(m.code, Some("context_length_exceeded"));
    assert!(m.message.starts_with("The input token count"));

    let m = map_error(s(503), b"upstream connect error");
    assert_eq!(
        (m.status.as_u16(), m.message.as_str()),
        (503, "upstream connect error")
    );

    // An error inside a stream ends it with the provider's message.
    let mut d = codec().stream_decoder(&ctx("gemini"));
    let mut ev = Vec::new();
    let e = d
        .feed(
            b"data: {\"error\":{\"code\":500,\"message\":\"An internal error has occurred.\",\"status\":\"INTERNAL\"}}\r\n\r\n",
            &mut ev,
        )
        .unwrap_err();
    assert!(e.message.contains("INTERNAL") && e.message.contains("internal error"));
}

/// Keys in camelCase, values untouched, so SDK spellings compare equal.
fn norm(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| {
                    let mut out = String::new();
                    let mut up = false;
                    for ch in k.chars() {
                        if ch == '_' && !out.is_empty() {
                            up = true;
                        } else if up {
                            out.extend(ch.to_uppercase());
                            up = false;
                        } else {
                            out.push(ch);
                        }
                    }
                    (out, norm(v))
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(norm).collect()),
        other => other.clone(),
    }
}

fn encode(openai: &Value) -> (String, Value) {
    let req = decode_request(openai.to_string().as_bytes()).unwrap();
    let enc = codec().encode(&req).unwrap();
    (enc.path, norm(&serde_json::from_slice(&enc.body).unwrap()))
}

fn path_of(uri: &str) -> &str {
    &uri[uri.find("/v1beta").unwrap()..]
}

/// The text of the system instruction and of each turn's parts, without SDK-only fields.
fn strip_system_role(mut v: Value) -> Value {
    if let Some(s) = v
        .get_mut("systemInstruction")
        .and_then(Value::as_object_mut)
    {
        s.remove("role");
    }
    v
}

#[test]
fn plain_request_has_the_recorded_structure() {
    let i = &cassette::load("google/test_google_model_stream.yaml")[0];
    let rec = strip_system_role(norm(&i.request));
    let (path, body) = encode(&json!({
        "model": "gemini-2.0-flash-exp", "stream": true, "temperature": 0.0,
        "messages": [{"role": "system", "content": "You are a helpful chatbot."},
                     {"role": "user", "content": "What is the capital of France?"}]}));
    assert_eq!(path, path_of(&i.uri));
    assert_eq!(body, rec);

    for (file, openai_extra) in [
        ("test_google_model_top_p.yaml", json!({"top_p": 0.5})),
        (
            "test_google_model_max_tokens.yaml",
            json!({"max_tokens": 5}),
        ),
    ] {
        let i = &cassette::load(&format!("google/{file}"))[0];
        let rec = norm(&i.request);
        let mut openai = json!({"model": "m", "messages": [
            {"role": "system", "content": rec["systemInstruction"]["parts"][0]["text"]},
            {"role": "user", "content": rec["contents"][0]["parts"][0]["text"]}]});
        openai
            .as_object_mut()
            .unwrap()
            .extend(openai_extra.as_object().unwrap().clone());
        let (_, body) = encode(&openai);
        assert_eq!(body["contents"], rec["contents"], "{file}");
        assert_eq!(
            body["systemInstruction"]["parts"],
            rec["systemInstruction"]["parts"]
        );
        for (k, v) in body["generationConfig"].as_object().unwrap() {
            assert_eq!(
                &rec["generationConfig"][k], v,
                "{file}: generationConfig.{k}"
            );
        }
    }
}

#[test]
fn structured_output_and_images_have_the_recorded_structure() {
    let i = &cassette::load("google/test_google_native_output.yaml")[0];
    let rec = norm(&i.request);
    let g = &rec["generationConfig"];
    let (_, body) = encode(&json!({"model": "gemini-2.0-flash",
        "messages": [{"role": "user", "content": rec["contents"][0]["parts"][0]["text"]}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "CityLocation",
            "schema": g["responseJsonSchema"], "strict": true}}}));
    assert_eq!(body["contents"], rec["contents"]);
    assert_eq!(
        body["generationConfig"]["responseJsonSchema"],
        g["responseJsonSchema"]
    );
    assert_eq!(
        body["generationConfig"]["responseMimeType"],
        g["responseMimeType"]
    );

    // An inline image: a data URL becomes inlineData with the same bytes.
    let i = &cassette::load("google/test_google_model_image_url_input.yaml")[1];
    let rec = norm(&i.request);
    let part = &rec["contents"][0]["parts"][1]["inlineData"];
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(part["data"].as_str().unwrap())
        .unwrap();
    let std_b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let (_, body) = encode(
        &json!({"model": "gemini-2.0-flash", "messages": [{"role": "user",
        "content": [{"type": "text", "text": "What is this vegetable?"},
                    {"type": "image_url", "image_url": {"url": format!("data:image/jpeg;base64,{std_b64}")}}]}]}),
    );
    let got = &body["contents"][0]["parts"];
    assert_eq!(got[0], rec["contents"][0]["parts"][0]);
    assert_eq!(got[1]["inlineData"]["mimeType"], part["mimeType"]);
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(got[1]["inlineData"]["data"].as_str().unwrap())
            .unwrap(),
        bytes
    );

    // A URL becomes fileData with a media type from its extension.
    let i = &cassette::load("google/test_google_url_input[ImageUrl].yaml")[0];
    let rec = norm(&i.request);
    let fd = &rec["contents"][0]["parts"][1]["fileData"];
    let (_, body) = encode(&json!({"model": "m", "messages": [{"role": "user",
        "content": [{"type": "text", "text": rec["contents"][0]["parts"][0]["text"]},
                    {"type": "image_url", "image_url": {"url": fd["fileUri"]}}]}]}));
    assert_eq!(body["contents"][0]["parts"][1]["fileData"], *fd);
}

/// A tool conversation: declarations, toolConfig, the model's call and the tool's answer
/// (matched to the call's function name by id), with the call's thought signature sent
/// back on the function-call part.
#[test]
fn tool_turns_have_the_recorded_structure() {
    let turns = cassette::load("google/test_google_streaming_tool_call_thought_signature.yaml");
    let rec = norm(&turns[1].request);
    let tools: Vec<Value> = rec["tools"][0]["functionDeclarations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            json!({"type": "function", "function": {"name": d["name"],
            "description": d["description"], "parameters": d["parametersJsonSchema"]}})
        })
        .collect();
    let user = rec["contents"][0]["parts"][0]["text"].clone();
    // Turn 1's answer, decoded and encoded as the OpenAI message a client keeps.
    let answer = stream(&turns[0].response, 64);
    let msg = encode_response(&answer, 0)["choices"][0]["message"].clone();
    let call_id = msg["tool_calls"][0]["id"].clone();
    let (path, body) = encode(&json!({"model": "gemini-3-pro-preview", "stream": true,
        "tools": tools, "tool_choice": "auto",
        "messages": [{"role": "user", "content": user}, msg,
                     {"role": "tool", "tool_call_id": call_id, "content": "Mexico"}]}));
    assert_eq!(path, path_of(&turns[1].uri));
    assert_eq!(body["tools"], rec["tools"]);
    assert_eq!(body["toolConfig"]["functionCallingConfig"]["mode"], "AUTO");
    let (got, want) = (
        body["contents"].as_array().unwrap(),
        rec["contents"].as_array().unwrap(),
    );
    assert_eq!(got.len(), want.len(), "{body:#}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g["role"], w["role"]);
    }
    let (gc, wc) = (&got[1]["parts"][0], &want[1]["parts"][0]);
    assert_eq!(gc["functionCall"]["name"], wc["functionCall"]["name"]);
    assert_eq!(gc["functionCall"]["args"], wc["functionCall"]["args"]);
    // The call and its answer carry the call's id, as the recorded client sent its own.
    assert_eq!(gc["functionCall"]["id"], call_id);
    // The recording holds the signature URL-safe; the API sent it standard.
    let b64 =
        |v: &Value, e: &base64::engine::GeneralPurpose| e.decode(v.as_str().unwrap()).unwrap();
    assert_eq!(
        b64(
            &gc["thoughtSignature"],
            &base64::engine::general_purpose::STANDARD
        ),
        b64(
            &wc["thoughtSignature"],
            &base64::engine::general_purpose::URL_SAFE
        )
    );
    let (gr, wr) = (&got[2]["parts"][0], &want[2]["parts"][0]);
    assert_eq!(
        gr["functionResponse"]["name"],
        wr["functionResponse"]["name"]
    );
    assert_eq!(
        gr["functionResponse"]["response"],
        json!({"output": "Mexico"})
    );
    assert_eq!(gr["functionResponse"]["id"], call_id);
    assert_eq!(
        wr["functionResponse"]["id"], wc["functionCall"]["id"],
        "the recording answers the call by its id"
    );

    // A call that comes back without its signature (history from another provider) gets
    // Google's placeholder on Gemini 3, which refuses unsigned calls, and nothing elsewhere.
    let unsigned = |model: &str| {
        encode(&json!({"model": model, "tools": tools, "messages": [
            {"role": "user", "content": user},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "get_country", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "Mexico"}]}))
        .1["contents"][1]["parts"][0]
            .clone()
    };
    assert_eq!(
        unsigned("gemini-3-pro-preview")["thoughtSignature"],
        "skip_thought_signature_validator"
    );
    assert!(unsigned("gemini-2.5-flash")
        .get("thoughtSignature")
        .is_none());

    // tool_choice required / named -> mode ANY (+ allowedFunctionNames).
    let i = &cassette::load("google/test_google_tool_config_any_with_tool_without_args.yaml")[0];
    let rec = norm(&i.request);
    let fcc = &rec["toolConfig"]["functionCallingConfig"];
    let (_, body) = encode(
        &json!({"model": "m", "tool_choice": {"type": "function", "function": {"name": "bar"}},
        "tools": [{"type": "function", "function": {"name": "bar", "parameters": {"type": "object", "properties": {}}}}],
        "messages": [{"role": "user", "content": rec["contents"][0]["parts"][0]["text"]}]}),
    );
    assert_eq!(
        body["toolConfig"]["functionCallingConfig"]["mode"],
        fcc["mode"]
    );
    assert_eq!(
        body["toolConfig"]["functionCallingConfig"]["allowedFunctionNames"],
        json!(["bar"])
    );
    assert_eq!(body["contents"], rec["contents"]);
}

/// Thinking: the thought part goes back as a thought, and the signature Gemini put on the
/// answer's text part goes back on the text part.
#[test]
fn thinking_turns_round_trip() {
    let turns = cassette::load("google/test_google_model_thinking_part.yaml");
    let rec = norm(&turns[1].request);
    let answer = codec()
        .decode(&turns[0].response, &ctx("gemini-3-pro-preview"))
        .unwrap();
    let msg = encode_response(&answer, 0)["choices"][0]["message"].clone();
    assert!(msg["reasoning_content"]
        .as_str()
        .unwrap()
        .contains("Street-Crossing"));
    let (_, body) = encode(
        &json!({"model": "gemini-3-pro-preview", "reasoning_effort": "high",
        "messages": [
            {"role": "system", "content": rec["systemInstruction"]["parts"][0]["text"]},
            {"role": "user", "content": rec["contents"][0]["parts"][0]["text"]},
            msg,
            {"role": "user", "content": rec["contents"][2]["parts"][0]["text"]}]}),
    );
    let (g, w) = (&body["contents"][1]["parts"], &rec["contents"][1]["parts"]);
    assert_eq!(g.as_array().unwrap().len(), 2, "{g:#}");
    assert_eq!(g[0]["text"], w[0]["text"]);
    assert_eq!(g[0]["thought"], true);
    assert_eq!(g[1]["text"], w[1]["text"]);
    assert!(g[1]["thoughtSignature"].is_string());
    assert_eq!(
        body["generationConfig"]["thinkingConfig"],
        json!({"thinkingLevel": "high", "includeThoughts": true})
    );
    assert_eq!(
        rec["generationConfig"]["thinkingConfig"]["includeThoughts"],
        true
    );
    // Gemini 2.5 takes a budget.
    let (_, body) = encode(
        &json!({"model": "gemini-2.5-flash", "reasoning_effort": "low",
        "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(
        body["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": 1024, "includeThoughts": true})
    );
}

#[test]
fn embeddings_round_trip() {
    let c = codec();
    let enc = c
        .encode_embeddings(
            br#"{"model":"gemini-embedding-001","input":["a b c d","e"],"dimensions":8}"#,
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        enc.path,
        "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    );
    let b: Value = serde_json::from_slice(&enc.body).unwrap();
    assert_eq!(b["requests"][1]["content"]["parts"][0]["text"], "e");
    assert_eq!(b["requests"][0]["model"], "models/gemini-embedding-001");
    assert_eq!(b["requests"][0]["outputDimensionality"], 8);
    let out = c
        .decode_embeddings(
            br#"{"embeddings":[{"values":[0.1,0.2]},{"values":[0.3,0.4]}]}"#,
            &enc.ctx,
        )
        .unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][1]["index"], 1);
    assert_eq!(v["data"][1]["embedding"], json!([0.3, 0.4]));
    assert_eq!(v["usage"]["prompt_tokens"], 3);
    assert!(c
        .encode_embeddings(br#"{"model":"m","input":[[1,2,3]]}"#)
        .unwrap()
        .is_err());
}
