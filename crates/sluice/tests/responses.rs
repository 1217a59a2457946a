//! The OpenAI Responses API and legacy completions through the real binary, routed to a
//! mock speaking OpenAI chat completions and to one speaking Anthropic Messages: JSON and
//! the typed event stream, function tools, conversations continued with
//! `previous_response_id` right after the first answer, GET / DELETE, key scoping, errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::gov::{create_key, MASTER};
use common::*;
use serde_json::{json, Value};

fn config(mock: &str, retention: &str) -> String {
    format!(
        r#"
server: {{master_key: {MASTER}}}
store: {{url: "{{DB}}"}}
responses: {{retention: {retention}}}
providers:
  - {{name: oa, kind: openai_compatible, base_url: "{mock}/v1", api_key: sk-up}}
  - {{name: an, kind: anthropic, base_url: "{mock}", api_key: sk-ant-1}}
models:
  - {{name: oa, deployments: [{{provider: oa, model: gpt-x}}]}}
  - {{name: an, deployments: [{{provider: an, model: claude-x}}]}}
"#
    )
}

async fn call(gw: &Gateway, key: &str, method: &str, path: &str, body: &Value) -> Reply {
    let auth = format!("Bearer {key}");
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    request(
        method,
        &format!("{}{path}", gw.url),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body,
    )
    .await
}

async fn create(gw: &Gateway, body: Value) -> Value {
    let r = call(gw, MASTER, "POST", "/v1/responses", &body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

async fn last_request(mock: &str) -> Value {
    request("GET", &format!("{mock}/_mock/last_request"), &[], "")
        .await
        .json()["body"]
        .clone()
}

/// The texts the provider was sent, in order, whatever its wire format.
fn sent_texts(sent: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(s) = sent["system"].as_str() {
        out.push(format!("system:{s}"));
    }
    for m in sent["messages"].as_array().unwrap() {
        let role = m["role"].as_str().unwrap();
        match &m["content"] {
            Value::String(s) => out.push(format!("{role}:{s}")),
            Value::Array(parts) => {
                for p in parts {
                    match p["type"].as_str() {
                        Some("text") => out.push(format!("{role}:{}", p["text"].as_str().unwrap())),
                        Some("tool_result") => out.push(format!(
                            "tool:{}",
                            p["content"]
                                .as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| p["content"][0]["text"]
                                    .as_str()
                                    .unwrap()
                                    .into())
                        )),
                        Some("tool_use") => {
                            out.push(format!("call:{}", p["name"].as_str().unwrap()))
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        for c in m["tool_calls"].as_array().into_iter().flatten() {
            out.push(format!("call:{}", c["function"]["name"].as_str().unwrap()));
        }
    }
    out
}

fn tools() -> Value {
    json!([{"type": "function", "name": "get_weather", "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]}, "strict": true}])
}

async fn json_and_conversation(gw: &Gateway, mock: &str, model: &str) {
    // JSON, with instructions.
    let first = create(
        gw,
        json!({"model": model, "instructions": "be brief", "input": "hello there",
               "metadata": {"k": "v"}}),
    )
    .await;
    assert!(
        first["id"].as_str().unwrap().starts_with("resp_"),
        "{first}"
    );
    assert_eq!(first["object"], "response");
    assert_eq!(first["status"], "completed");
    assert_eq!(first["model"], model);
    assert_eq!(first["instructions"], "be brief");
    assert_eq!(first["metadata"], json!({"k": "v"}));
    assert_eq!(first["store"], true);
    let out = first["output"].as_array().unwrap();
    assert_eq!(out.len(), 1, "{first}");
    assert_eq!(out[0]["type"], "message");
    assert!(out[0]["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(out[0]["role"], "assistant");
    assert_eq!(out[0]["content"][0]["type"], "output_text");
    assert_eq!(out[0]["content"][0]["annotations"], json!([]));
    let answer = out[0]["content"][0]["text"].as_str().unwrap().to_string();
    assert!(answer.contains("hello there"), "{answer}");
    let u = &first["usage"];
    assert!(u["input_tokens"].as_u64().unwrap() > 0, "{u}");
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["input_tokens"].as_u64().unwrap() + u["output_tokens"].as_u64().unwrap()
    );
    assert!(u["input_tokens_details"]["cached_tokens"].is_u64());
    assert!(u["output_tokens_details"]["reasoning_tokens"].is_u64());
    assert_eq!(
        sent_texts(&last_request(mock).await),
        ["system:be brief", "user:hello there"]
    );

    // Continued at once: the provider gets the whole conversation (instructions are not
    // carried over, as with OpenAI).
    let id = first["id"].as_str().unwrap();
    let second = create(
        gw,
        json!({"model": model, "previous_response_id": id, "input": "and then?"}),
    )
    .await;
    assert_eq!(second["previous_response_id"], id);
    assert!(second["output"][0]["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("and then?"));
    assert_eq!(
        sent_texts(&last_request(mock).await),
        vec![
            "user:hello there".to_string(),
            format!("assistant:{answer}"),
            "user:and then?".into()
        ]
    );

    // Stored: GET returns the same object; the input items are listed.
    let got = call(
        gw,
        MASTER,
        "GET",
        &format!("/v1/responses/{id}"),
        &Value::Null,
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json(), first);
    let second_id = second["id"].as_str().unwrap();
    let items = call(
        gw,
        MASTER,
        "GET",
        &format!("/v1/responses/{second_id}/input_items?order=asc"),
        &Value::Null,
    )
    .await
    .json();
    assert_eq!(items["object"], "list");
    let kinds: Vec<&str> = items["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["role"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["user", "assistant", "user"]);
    assert!(items["data"][2]["id"].as_str().unwrap().starts_with("msg_"));

    // DELETE, then it is gone everywhere.
    let del = call(
        gw,
        MASTER,
        "DELETE",
        &format!("/v1/responses/{id}"),
        &Value::Null,
    )
    .await;
    assert_eq!(del.status, 200);
    assert_eq!(
        del.json(),
        json!({"id": id, "object": "response.deleted", "deleted": true})
    );
    let r = call(
        gw,
        MASTER,
        "GET",
        &format!("/v1/responses/{id}"),
        &Value::Null,
    )
    .await;
    assert_eq!(r.status, 404);
    r.openai_error();
    let r = call(
        gw,
        MASTER,
        "DELETE",
        &format!("/v1/responses/{id}"),
        &Value::Null,
    )
    .await;
    assert_eq!(r.status, 404);
    let r = call(
        gw,
        MASTER,
        "POST",
        "/v1/responses",
        &json!({"model": model, "previous_response_id": id, "input": "x"}),
    )
    .await;
    assert_eq!(r.status, 400);
    let e = r.openai_error();
    assert_eq!(e["code"], "previous_response_not_found");
    assert_eq!(e["param"], "previous_response_id");

    // store: false keeps nothing.
    let eph = create(gw, json!({"model": model, "input": "x", "store": false})).await;
    assert_eq!(eph["store"], false);
    let r = call(
        gw,
        MASTER,
        "GET",
        &format!("/v1/responses/{}", eph["id"].as_str().unwrap()),
        &Value::Null,
    )
    .await;
    assert_eq!(r.status, 404);
}

/// Checks the typed event sequence of a stream and returns its final response.
fn check_stream(events: &[(String, Value)]) -> Value {
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(&names[..2], ["response.created", "response.in_progress"]);
    assert_eq!(*names.last().unwrap(), "response.completed", "{names:?}");
    for (i, (_, d)) in events.iter().enumerate() {
        assert_eq!(d["sequence_number"], i, "{d}");
    }
    let created = &events[0].1["response"];
    assert_eq!(created["status"], "in_progress");
    assert_eq!(created["output"], json!([]));
    let done = events.last().unwrap().1["response"].clone();
    assert_eq!(done["id"], created["id"]);
    assert_eq!(done["status"], "completed");
    assert!(
        done["usage"]["output_tokens"].as_u64().unwrap() > 0,
        "{done}"
    );
    done
}

async fn streams(gw: &Gateway, mock: &str, model: &str) {
    let r = call(
        gw,
        MASTER,
        "POST",
        "/v1/responses",
        &json!({"model": model, "input": "stream me", "stream": true}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    let events = named_sse(&r.body);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    let deltas = names
        .iter()
        .filter(|n| **n == "response.output_text.delta")
        .count();
    assert!(deltas >= 1, "{names:?}");
    let mut want = vec![
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ];
    want.extend(std::iter::repeat_n("response.output_text.delta", deltas));
    want.extend([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert_eq!(names, want);
    let done = check_stream(&events);
    let text: String = events
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap().to_string())
        .collect();
    assert!(text.contains("stream me"), "{text}");
    assert_eq!(done["output"][0]["content"][0]["text"], text.as_str());
    let added = &events[2].1;
    assert_eq!(added["output_index"], 0);
    assert_eq!(added["item"]["status"], "in_progress");
    let delta = &events[4].1;
    assert_eq!(delta["item_id"], added["item"]["id"]);
    assert_eq!(delta["content_index"], 0);

    // A follow-up the moment the stream ended finds it (held in memory until written).
    let id = done["id"].as_str().unwrap();
    let next = create(
        gw,
        json!({"model": model, "previous_response_id": id, "input": "more"}),
    )
    .await;
    assert_eq!(next["status"], "completed");
    let sent = sent_texts(&last_request(mock).await);
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(sent[1], format!("assistant:{text}"));
    // And GET serves the streamed response whole.
    let got = call(
        gw,
        MASTER,
        "GET",
        &format!("/v1/responses/{id}"),
        &Value::Null,
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json(), done);
}

async fn function_tools(gw: &Gateway, mock: &str, model: &str) {
    let first = create(
        gw,
        json!({"model": model, "input": "weather in Paris?", "tools": tools(),
               "tool_choice": "required"}),
    )
    .await;
    let call_item = &first["output"][0];
    assert_eq!(call_item["type"], "function_call", "{first}");
    assert!(call_item["id"].as_str().unwrap().starts_with("fc_"));
    assert_eq!(call_item["name"], "get_weather");
    assert_eq!(call_item["status"], "completed");
    let args: Value = serde_json::from_str(call_item["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"mock": true}));
    assert_eq!(first["tools"], tools());
    assert_eq!(first["tool_choice"], "required");
    let call_id = call_item["call_id"].as_str().unwrap();

    // The tool's result, continued from the stored call.
    let second = create(
        gw,
        json!({"model": model, "previous_response_id": first["id"], "tools": tools(),
               "input": [{"type": "function_call_output", "call_id": call_id, "output": "sunny"}]}),
    )
    .await;
    assert_eq!(second["output"][0]["type"], "message", "{second}");
    let sent = last_request(mock).await;
    assert_eq!(
        sent_texts(&sent),
        ["user:weather in Paris?", "call:get_weather", "tool:sunny"]
    );

    // Stateless, the client sending the whole conversation itself.
    let r = create(
        gw,
        json!({"model": model, "tools": tools(), "input": [
            {"role": "user", "content": "weather in Paris?"},
            {"type": "function_call", "call_id": call_id, "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": call_id, "output": "rainy"}]}),
    )
    .await;
    assert_eq!(r["status"], "completed");
    assert_eq!(
        sent_texts(&last_request(mock).await),
        ["user:weather in Paris?", "call:get_weather", "tool:rainy"]
    );

    // Streamed tool call.
    let r = call(
        gw,
        MASTER,
        "POST",
        "/v1/responses",
        &json!({"model": model, "input": "weather?", "tools": tools(), "stream": true,
                "tool_choice": {"type": "function", "name": "get_weather"}}),
    )
    .await;
    let events = named_sse(&r.body);
    let done = check_stream(&events);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[2], "response.output_item.added");
    assert_eq!(events[2].1["item"]["type"], "function_call");
    assert_eq!(events[2].1["item"]["arguments"], "");
    assert!(names.contains(&"response.function_call_arguments.delta"));
    let n = names.len();
    assert_eq!(
        &names[n - 3..],
        [
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    let args: String = events
        .iter()
        .filter(|(n, _)| n == "response.function_call_arguments.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(events[n - 3].1["arguments"], args.as_str());
    assert_eq!(done["output"][0]["arguments"], args.as_str());
    assert_eq!(done["output"][0]["status"], "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_through_openai_and_anthropic_mocks() {
    let mock = start_mock().await;
    let gw = Gateway::start(&config(&mock, "30d"));
    for model in ["oa", "an"] {
        json_and_conversation(&gw, &mock, model).await;
        streams(&gw, &mock, model).await;
        function_tools(&gw, &mock, model).await;
    }
}

/// A conversation started on one provider continues on another: the store, not the provider,
/// holds the state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_moves_between_providers() {
    let mock = start_mock().await;
    let gw = Gateway::start(&config(&mock, "30d"));
    let first = create(
        &gw,
        json!({"model": "oa", "input": "weather?", "tools": tools(), "tool_choice": "required"}),
    )
    .await;
    let call_id = first["output"][0]["call_id"].as_str().unwrap();
    let second = create(
        &gw,
        json!({"model": "an", "previous_response_id": first["id"], "tools": tools(),
               "input": [{"type": "function_call_output", "call_id": call_id, "output": "sunny"}]}),
    )
    .await;
    let answer = second["output"][0]["content"][0]["text"].as_str().unwrap();
    let sent = last_request(&mock).await;
    // Anthropic got the OpenAI-made call as tool_use and its result as tool_result.
    assert_eq!(
        sent["messages"][1]["content"][0]["type"], "tool_use",
        "{sent}"
    );
    assert_eq!(sent["messages"][1]["content"][0]["id"], call_id);
    assert_eq!(sent["messages"][2]["content"][0]["tool_use_id"], call_id);
    let third = create(
        &gw,
        json!({"model": "oa", "previous_response_id": second["id"], "input": "thanks"}),
    )
    .await;
    assert_eq!(third["status"], "completed");
    assert_eq!(
        sent_texts(&last_request(&mock).await),
        [
            "user:weather?".to_string(),
            "call:get_weather".into(),
            "tool:sunny".into(),
            format!("assistant:{answer}"),
            "user:thanks".into()
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_responses_belong_to_their_key() {
    let mock = start_mock().await;
    let gw = Gateway::start(&config(&mock, "1h"));
    let (_, a) = create_key(&gw, json!({"name": "a"})).await;
    let (_, b) = create_key(&gw, json!({"name": "b"})).await;
    let r = call(
        &gw,
        &a,
        "POST",
        "/v1/responses",
        &json!({"model": "oa", "input": "secret"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let id = r.json()["id"].as_str().unwrap().to_string();
    let path = format!("/v1/responses/{id}");
    assert_eq!(call(&gw, &a, "GET", &path, &Value::Null).await.status, 200);
    assert_eq!(
        call(&gw, MASTER, "GET", &path, &Value::Null).await.status,
        200
    );
    // Another key cannot read, list, continue or delete it, nor learn that it exists.
    let r = call(&gw, &b, "GET", &path, &Value::Null).await;
    assert_eq!(r.status, 404);
    r.openai_error();
    let r = call(&gw, &b, "GET", &format!("{path}/input_items"), &Value::Null).await;
    assert_eq!(r.status, 404);
    let r = call(
        &gw,
        &b,
        "POST",
        "/v1/responses",
        &json!({"model": "oa", "previous_response_id": id, "input": "tell me"}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.openai_error()["code"], "previous_response_not_found");
    assert_eq!(
        call(&gw, &b, "DELETE", &path, &Value::Null).await.status,
        404
    );
    // The owner can.
    let r = call(
        &gw,
        &a,
        "POST",
        "/v1/responses",
        &json!({"model": "oa", "previous_response_id": id, "input": "again"}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        call(&gw, &a, "DELETE", &path, &Value::Null).await.status,
        200
    );
    // No key at all: 401 in OpenAI's shape.
    let r = post_json(
        &format!("{}/v1/responses", gw.url),
        r#"{"model":"oa","input":"x"}"#,
    )
    .await;
    assert_eq!(r.status, 401);
    r.openai_error();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_errors_and_completions() {
    let mock = start_mock().await;
    let gw = Gateway::start(&config(&mock, "30d"));
    let bad = |body: Value| {
        let gw = &gw;
        async move { call(gw, MASTER, "POST", "/v1/responses", &body).await }
    };
    // Built-in tools are refused by name; bad items name their field.
    let r = bad(json!({"model": "oa", "input": "x", "tools": [{"type": "web_search"}]})).await;
    assert_eq!(r.status, 400);
    let e = r.openai_error();
    assert_eq!(e["param"], "tools[0].type");
    assert!(e["message"].as_str().unwrap().contains("web_search"), "{e}");
    let r = bad(
        json!({"model": "oa", "input": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.openai_error()["param"], "input[0].content[0].type");
    let r = bad(json!({"model": "oa"})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.openai_error()["param"], "input");
    let r = request(
        "POST",
        &format!("{}/v1/responses", gw.url),
        &[("authorization", &format!("Bearer {MASTER}"))],
        "{not json",
    )
    .await;
    assert_eq!(r.status, 400);
    r.openai_error();
    // Unknown model: 404 listing what exists, as on chat completions.
    let r = bad(json!({"model": "nope", "input": "x"})).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.openai_error()["code"], "model_not_found");
    // Unknown response id.
    let r = call(&gw, MASTER, "GET", "/v1/responses/resp_nope", &Value::Null).await;
    assert_eq!(r.status, 404);
    assert!(r.openai_error()["message"]
        .as_str()
        .unwrap()
        .contains("resp_nope"));
    // max_output_tokens reaches the provider as its token cap.
    let r = bad(json!({"model": "oa", "input": "x", "max_output_tokens": 7})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["max_output_tokens"], 7);
    assert_eq!(last_request(&mock).await["max_completion_tokens"], 7);

    // Legacy completions, JSON and streamed, through both providers.
    for model in ["oa", "an"] {
        let r = call(
            &gw,
            MASTER,
            "POST",
            "/v1/completions",
            &json!({"model": model, "prompt": "say this", "max_tokens": 50}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        assert_eq!(v["object"], "text_completion");
        assert!(
            v["choices"][0]["text"]
                .as_str()
                .unwrap()
                .contains("say this"),
            "{v}"
        );
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["choices"][0]["logprobs"], Value::Null);
        assert!(v["usage"]["total_tokens"].as_u64().unwrap() > 0);
        let sent = last_request(&mock).await;
        assert_eq!(sent_texts(&sent), ["user:say this"]);
        let r = call(
            &gw,
            MASTER,
            "POST",
            "/v1/completions",
            &json!({"model": model, "prompt": ["streamed"], "stream": true,
                    "stream_options": {"include_usage": true}}),
        )
        .await;
        assert_eq!(r.status, 200);
        let text = String::from_utf8_lossy(&r.body).to_string();
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        let chunks: Vec<Value> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
        let joined: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["text"].as_str())
            .collect();
        assert!(joined.contains("streamed"), "{joined}");
        let last = chunks.last().unwrap();
        assert!(
            last["usage"]["total_tokens"].as_u64().unwrap() > 0,
            "{last}"
        );
    }
    let r = call(
        &gw,
        MASTER,
        "POST",
        "/v1/completions",
        &json!({"model": "oa", "prompt": "x", "echo": true}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.openai_error()["param"], "echo");

    // Usage records carry the surface (after shutdown has flushed them).
    let mut gw = gw;
    assert_eq!(gw.stop(std::time::Duration::from_secs(10)), Some(0));
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", gw.db_path().display()))
        .await
        .unwrap();
    let surfaces: Vec<(String, i64)> = sqlx::query_as(
        "SELECT surface, COUNT(*) FROM usage_records GROUP BY surface ORDER BY surface",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    // Completions: 2 JSON + 2 streamed + 1 refused (echo). Responses: 4 refused (built-in
    // tool, audio part, no input, bad JSON), the unknown model, the max_output_tokens one.
    assert_eq!(
        surfaces,
        [
            ("openai.completions".to_string(), 5),
            ("openai.responses".to_string(), 6)
        ]
    );
    let refused: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM usage_records WHERE status = 400 AND error_class = 'bad_request'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(refused, 5);
}

/// Streams a response and, the moment `response.completed` arrives (before the stream has
/// even ended), continues it. Many at once, so a store write racing the follow-up shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_ups_sent_on_response_completed_find_the_response() {
    use http_body_util::{BodyExt, Full};
    let mock = start_mock().await;
    let gw = Gateway::start(&config(&mock, "30d"));
    let mut tasks = Vec::new();
    for i in 0..24 {
        let url = gw.url.clone();
        let model = if i % 2 == 0 { "oa" } else { "an" };
        tasks.push(tokio::spawn(async move {
            let req = http::Request::builder()
                .method("POST")
                .uri(format!("{url}/v1/responses"))
                .header("authorization", format!("Bearer {MASTER}"))
                .header("content-type", "application/json")
                .body(Full::new(bytes::Bytes::from(
                    json!({"model": model, "input": format!("q{i}"), "stream": true}).to_string(),
                )))
                .unwrap();
            let resp = client().request(req).await.unwrap();
            let mut body = resp.into_body();
            let mut seen = String::new();
            let id = loop {
                let frame = body.frame().await.expect("stream ended early").unwrap();
                if let Ok(d) = frame.into_data() {
                    seen.push_str(&String::from_utf8_lossy(&d));
                }
                if let Some(pos) = seen.find("\"type\":\"response.completed\"") {
                    let line = seen[..pos].rsplit("data: ").next().unwrap().to_string();
                    let rest = &seen[pos..];
                    let Some(end) = rest.find("\n\n") else {
                        continue;
                    };
                    let v: Value =
                        serde_json::from_str(&format!("{line}{}", &rest[..end])).unwrap();
                    break v["response"]["id"].as_str().unwrap().to_string();
                }
            };
            let r = request(
                "POST",
                &format!("{url}/v1/responses"),
                &[
                    ("authorization", &format!("Bearer {MASTER}")),
                    ("content-type", "application/json"),
                ],
                json!({"model": model, "previous_response_id": id, "input": "next"}).to_string(),
            )
            .await;
            (r.status, String::from_utf8_lossy(&r.body).to_string())
        }));
    }
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reasoning_and_broken_streams() {
    let mock = start_mock().await;
    let cfg = config(&mock, "30d").replace(
        "models:\n",
        &format!(
            "  - {{name: broken, kind: openai_compatible, base_url: \"{mock}/v1\", headers: {{x-mock-fault: reset-after-headers}}}}\nmodels:\n  - {{name: broken, deployments: [{{provider: broken, model: m}}], retries: {{max_attempts: 1}}}}\n"
        ),
    );
    let gw = Gateway::start(&cfg);

    // Anthropic thinking becomes a reasoning item before the message ...
    let r = create(
        &gw,
        json!({"model": "an", "input": "think first", "reasoning": {"effort": "low"}}),
    )
    .await;
    assert!(last_request(&mock).await["thinking"]["budget_tokens"].is_u64());
    let kinds: Vec<&str> = r["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["reasoning", "message"], "{r}");
    let thought = r["output"][0]["content"][0]["text"].as_str().unwrap();
    assert!(!thought.is_empty());
    assert_eq!(r["output"][0]["content"][0]["type"], "reasoning_text");
    // ... streamed as reasoning_text deltas in their own output item ...
    let s = call(
        &gw,
        MASTER,
        "POST",
        "/v1/responses",
        &json!({"model": "an", "input": "think first", "reasoning": {"effort": "low"},
                "stream": true}),
    )
    .await;
    let events = named_sse(&s.body);
    let done = check_stream(&events);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[2], "response.output_item.added");
    assert_eq!(events[2].1["item"]["type"], "reasoning");
    let deltas: String = events
        .iter()
        .filter(|(n, _)| n == "response.reasoning_text.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(deltas, thought);
    assert!(names.contains(&"response.reasoning_text.done"));
    assert_eq!(done["output"][0]["content"][0]["text"], thought);
    assert_eq!(done["output"][1]["type"], "message");
    assert_eq!(
        done["output"][1]["content"][0]["text"],
        r["output"][1]["content"][0]["text"]
    );
    // The thinking signature rides in encrypted_content (JSON and stream) ...
    let sig = r["output"][0]["encrypted_content"].as_str().unwrap();
    assert!(!sig.is_empty(), "{r}");
    assert!(done["output"][0]["encrypted_content"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    // ... so a continuation hands Anthropic its signed thinking block back.
    let next = create(
        &gw,
        json!({"model": "an", "input": "next", "reasoning": {"effort": "low"},
               "previous_response_id": r["id"]}),
    )
    .await;
    assert_eq!(next["status"], "completed");
    let sent = last_request(&mock).await;
    assert_eq!(
        sent_texts(&sent),
        [
            "user:think first".to_string(),
            format!(
                "assistant:{}",
                r["output"][1]["content"][0]["text"].as_str().unwrap()
            ),
            "user:next".into()
        ]
    );
    let block = &sent["messages"][1]["content"][0];
    assert_eq!(block["type"], "thinking", "{sent}");
    assert_eq!(block["thinking"], thought);
    // Tagged for the client, bare for Anthropic.
    assert_eq!(
        block["signature"],
        sig.strip_prefix("sluice:claude:").unwrap()
    );

    // The provider breaks after the stream started: `error`, then `response.failed`; the
    // failed response is not stored.
    let s = call(
        &gw,
        MASTER,
        "POST",
        "/v1/responses",
        &json!({"model": "broken", "input": "x", "stream": true}),
    )
    .await;
    assert_eq!(s.status, 200);
    let events = named_sse(&s.body);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "error",
            "response.failed"
        ]
    );
    for (i, (_, d)) in events.iter().enumerate() {
        assert_eq!(d["sequence_number"], i);
    }
    assert_eq!(events[2].1["code"], "server_error");
    let failed = &events[3].1["response"];
    assert_eq!(failed["status"], "failed");
    assert!(failed["error"]["message"]
        .as_str()
        .unwrap()
        .contains("broken"));
    let r = call(
        &gw,
        MASTER,
        "GET",
        &format!("/v1/responses/{}", failed["id"].as_str().unwrap()),
        &Value::Null,
    )
    .await;
    assert_eq!(r.status, 404);
}

/// Past `responses.retention` a response can neither be read nor continued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_expires_stored_responses() {
    let mock = start_mock().await;
    let gw = Gateway::start(&config(&mock, "1s"));
    let r = create(&gw, json!({"model": "oa", "input": "short-lived"})).await;
    let path = format!("/v1/responses/{}", r["id"].as_str().unwrap());
    assert_eq!(
        call(&gw, MASTER, "GET", &path, &Value::Null).await.status,
        200
    );
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    assert_eq!(
        call(&gw, MASTER, "GET", &path, &Value::Null).await.status,
        404
    );
    let next = call(
        &gw,
        MASTER,
        "POST",
        "/v1/responses",
        &json!({"model": "oa", "input": "x", "previous_response_id": r["id"]}),
    )
    .await;
    assert_eq!(next.status, 400);
    assert_eq!(next.openai_error()["code"], "previous_response_not_found");
}
