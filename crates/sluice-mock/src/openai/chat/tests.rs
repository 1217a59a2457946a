//! Tests for chat completions: token counts, reply content, tool calls, JSON and SSE shapes.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use serde_json::Value;

fn answer_for(body: &str) -> Answer {
    answer(&serde_json::from_str(body).unwrap()).unwrap()
}

fn json(body: &str) -> Value {
    match chat(body.as_bytes(), 7, 4).unwrap() {
        Payload::Json(bytes) => serde_json::from_slice(&bytes).unwrap(),
        Payload::Stream(_) => panic!("expected JSON"),
    }
}

/// The `data:` payloads of a stream, parsed, plus whether it ended with `[DONE]`.
fn stream(body: &str, chunks: usize) -> (Vec<Value>, bool) {
    let Payload::Stream(events) = chat(body.as_bytes(), 7, chunks).unwrap() else {
        panic!("expected a stream")
    };
    let mut at = 0;
    let mut values = Vec::new();
    let mut done = false;
    for len in events.lens {
        let event = std::str::from_utf8(&events.buf[at..at + len]).unwrap();
        at += len;
        let data = event
            .strip_prefix("data: ")
            .unwrap()
            .strip_suffix("\n\n")
            .unwrap();
        assert!(!done, "nothing after [DONE]");
        if data == "[DONE]" {
            done = true;
        } else {
            values.push(serde_json::from_str(data).unwrap());
        }
    }
    assert_eq!(at, events.buf.len());
    (values, done)
}

#[test]
fn token_counts() {
    // "hi there" = 8 chars -> 2 + 3; "abcde" = 5 chars -> 2 + 3; reply "Mock reply to: abcde" = 4 words.
    let a = answer_for(
        r#"{"messages":[{"role":"system","content":"hi there"},{"role":"user","content":"abcde"}]}"#,
    );
    assert_eq!((a.prompt_tokens, a.completion_tokens), (10, 4));
    // Parts: "ab" + "cd" joined by a space = 5 chars -> 2 + 3; null content -> 0 + 3.
    let b = answer_for(
        r#"{"messages":[{"role":"user","content":[{"type":"text","text":"ab"},{"type":"image_url","image_url":{}},{"type":"text","text":"cd"}]},{"role":"assistant","content":null}]}"#,
    );
    assert_eq!(b.prompt_tokens, 8);
    assert_eq!(b.content, Content::Text("Mock reply to: ab cd".into()));
    assert_eq!(words("  a b\tc\n"), 3);
    assert_eq!(estimate_tokens(0), 0);
    assert_eq!(estimate_tokens(9), 3);
}

#[test]
fn content_echoes_last_user_message() {
    let a = answer_for(
        r#"{"messages":[{"role":"user","content":"first"},{"role":"assistant","content":"x"},{"role":"user","content":"second \"q\""}]}"#,
    );
    assert_eq!(
        a.content,
        Content::Text("Mock reply to: second \"q\"".into())
    );
    let empty = answer_for(
        r#"{"messages":[{"role":"user","content":"first"},{"role":"user","content":""}]}"#,
    );
    assert_eq!(empty.content, Content::Text(GREETING.into()));
    let none = answer_for(r#"{"messages":[{"role":"system","content":"be nice"}]}"#);
    assert_eq!(none.content, Content::Text(GREETING.into()));
    let long = "é".repeat(300);
    let a = answer_for(&format!(
        r#"{{"messages":[{{"role":"user","content":"{long}"}}]}}"#
    ));
    assert_eq!(
        a.content,
        Content::Text(format!("{REPLY_PREFIX}{}", "é".repeat(200)))
    );
}

#[test]
fn json_completion_shape() {
    let v = json(r#"{"model":"gpt-4o\u00e9/x","messages":[{"role":"user","content":"hello"}]}"#);
    assert_eq!(v["id"], "chatcmpl-mock-7");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-4oé/x");
    assert_eq!(v["system_fingerprint"], "fp_mock");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Mock reply to: hello"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["usage"],
        serde_json::json!({"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9})
    );
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
}

#[test]
fn stream_concatenates_to_the_json_reply() {
    let body = r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"ünïcödé text"}]}"#;
    for chunks in [1, 3, 8, 100] {
        let (events, done) = stream(body, chunks);
        assert!(done);
        assert_eq!(events.len(), 1 + chunks + 2);
        assert_eq!(
            events[0]["choices"][0]["delta"],
            serde_json::json!({"role": "assistant", "content": ""})
        );
        let text: String = events[1..=chunks]
            .iter()
            .map(|e| e["choices"][0]["delta"]["content"].as_str().unwrap())
            .collect();
        assert_eq!(text, "Mock reply to: ünïcödé text");
        let finish = &events[chunks + 1];
        assert_eq!(finish["choices"][0]["finish_reason"], "stop");
        assert_eq!(finish["choices"][0]["delta"], serde_json::json!({}));
        let usage = &events[chunks + 2];
        assert_eq!(usage["choices"], serde_json::json!([]));
        assert_eq!(usage["usage"]["completion_tokens"], 5);
        assert_eq!(usage["usage"]["prompt_tokens"], 6);
        for event in &events[..=chunks + 1] {
            assert_eq!(event["object"], "chat.completion.chunk");
            assert_eq!(event["id"], "chatcmpl-mock-7");
            assert!(event["usage"].is_null() && event.get("usage").is_some());
        }
    }
    let (events, done) = stream(
        r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"x"}]}"#,
        2,
    );
    assert!(done);
    assert_eq!(events.len(), 4, "no usage chunk unless asked for");
    assert!(events.iter().all(|e| e["usage"].is_null()));
}

#[test]
fn tool_calls_when_required_or_named() {
    let tools = r#""tools":[{"type":"function","function":{"name":"get_weather","parameters":{}}},{"type":"function","function":{"name":"other"}}]"#;
    let required = format!(
        r#"{{"model":"m",{tools},"tool_choice":"required","messages":[{{"role":"user","content":"hi"}}]}}"#
    );
    let v = json(&required);
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert!(choice["message"]["content"].is_null());
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["id"], "call_mock_7");
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], TOOL_ARGUMENTS);

    let named = required.replace(
        r#""required""#,
        r#"{"type":"function","function":{"name":"other"}}"#,
    );
    assert_eq!(
        json(&named)["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "other"
    );
    let auto = required.replace(r#""required""#, r#""auto""#);
    assert_eq!(json(&auto)["choices"][0]["finish_reason"], "stop");

    let (events, done) = stream(
        &required.replace(r#""model":"m""#, r#""model":"m","stream":true"#),
        1,
    );
    assert!(done);
    let first = &events[0]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(
        (first["id"].as_str(), first["function"]["name"].as_str()),
        (Some("call_mock_7"), Some("get_weather"))
    );
    let pieces: Vec<&Value> = events[1..events.len() - 1]
        .iter()
        .map(|e| &e["choices"][0]["delta"]["tool_calls"][0])
        .collect();
    assert!(pieces.len() >= 2);
    assert!(pieces
        .iter()
        .all(|p| p["index"] == 0 && p.get("id").is_none() && p["function"].get("name").is_none()));
    let arguments: String = pieces
        .iter()
        .map(|p| p["function"]["arguments"].as_str().unwrap())
        .collect();
    assert_eq!(arguments, TOOL_ARGUMENTS);
    assert_eq!(
        events.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );
}

#[test]
fn bad_requests() {
    for (body, param) in [
        (
            r#"{"messages":[{"role":"user","content":"x"}]}"#,
            Some("model"),
        ),
        (r#"{"model":"m"}"#, Some("messages")),
        (r#"{"model":"m","messages":[]}"#, Some("messages")),
        (
            r#"{"model":"m","messages":[{"role":"user","content":5}]}"#,
            Some("messages"),
        ),
        (r#"{"model":"m","messages":"#, None),
        (r#"{"model":3,"messages":[]}"#, None),
    ] {
        let error = chat(body.as_bytes(), 1, 1).err().unwrap();
        assert_eq!(error.status, http::StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error.param, param, "{body}");
        assert_eq!(error.kind, "invalid_request_error");
    }
}
