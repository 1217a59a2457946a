//! The Anthropic Messages surface through the real binary: any client speaking Anthropic's
//! API reaches any model — an OpenAI-format upstream and an Anthropic one alike — with
//! Anthropic's exact shapes for answers, stream events and errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use serde_json::{json, Value};

fn config(mock: &str) -> String {
    format!(
        r#"
server: {{master_key: sk-master}}
store: {{url: "{{DB}}"}}
providers:
  - {{name: oai, kind: openai_compatible, base_url: "{mock}/v1"}}
  - {{name: ant, kind: anthropic, base_url: "{mock}", api_key: sk-ant}}
  - {{name: limited, kind: openai_compatible, base_url: "{mock}/v1", headers: {{x-mock-status: "429", x-mock-retry-after: "9"}}}}
  - {{name: slow, kind: openai_compatible, base_url: "{mock}/v1", headers: {{x-mock-latency-ms: "3000"}}}}
models:
  - {{name: via-openai, deployments: [{{provider: oai, model: m}}]}}
  - {{name: via-anthropic, deployments: [{{provider: ant, model: claude-x}}]}}
  - {{name: limited, deployments: [{{provider: limited, model: m}}]}}
  - {{name: slow, deployments: [{{provider: slow, model: m}}]}}
"#
    )
}

const AUTH: (&str, &str) = ("x-api-key", "sk-master");

async fn post(url: &str, body: &Value) -> Reply {
    post_anthropic(url, AUTH.1, body).await
}

fn tools() -> Value {
    json!([{"name": "get_weather", "description": "Weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_surface_to_any_provider() {
    let mock = start_mock().await;
    let mut gw = Gateway::start(&config(&mock));
    let url = format!("{}/v1/messages", gw.url);

    for model in ["via-openai", "via-anthropic"] {
        // JSON
        let r = post(
            &url,
            &json!({"model": model, "max_tokens": 100, "system": "Be brief.",
                    "messages": [{"role": "user", "content": "Say hello"}]}),
        )
        .await;
        assert_eq!(
            r.status,
            200,
            "{model}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let v = r.json();
        assert_eq!(v["type"], "message");
        assert_eq!(v["role"], "assistant");
        // Anthropic to Anthropic passes through: the provider's own model id comes back.
        let upstream_model = if model == "via-anthropic" {
            "claude-x"
        } else {
            model
        };
        assert_eq!(v["model"], upstream_model);
        assert!(v["id"].as_str().unwrap().starts_with("msg_"));
        assert_eq!(
            v["content"],
            json!([{"type": "text", "text": "Mock reply to: Say hello"}]),
            "{model}"
        );
        assert_eq!(v["stop_reason"], "end_turn");
        assert_eq!(v["usage"]["output_tokens"], 5, "{model}");
        assert!(v["usage"]["input_tokens"].as_u64().unwrap() > 0);

        // Stream: Anthropic's exact event sequence.
        let r = post(
            &url,
            &json!({"model": model, "max_tokens": 100, "stream": true,
                    "messages": [{"role": "user", "content": "Say hello"}]}),
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("text/event-stream"));
        let ev = named_sse(&r.body);
        let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names[..3],
            ["message_start", "ping", "content_block_start"],
            "{names:?}"
        );
        assert_eq!(
            names[names.len() - 3..],
            ["content_block_stop", "message_delta", "message_stop"]
        );
        assert!(names[3..names.len() - 3]
            .iter()
            .all(|n| *n == "content_block_delta"));
        let text: String = ev
            .iter()
            .filter_map(|(_, d)| d["delta"]["text"].as_str().map(str::to_string))
            .collect();
        assert_eq!(text, "Mock reply to: Say hello");
        let delta = &ev[ev.len() - 2].1;
        assert_eq!(delta["delta"]["stop_reason"], "end_turn");
        assert_eq!(delta["usage"]["output_tokens"], 5);
        assert_eq!(ev[0].1["message"]["model"], upstream_model);

        // Tools, forced: tool_use with its input; streamed as input_json_delta.
        let body = json!({"model": model, "max_tokens": 100, "tools": tools(),
                          "tool_choice": {"type": "any"},
                          "messages": [{"role": "user", "content": "Weather in Paris?"}]});
        let v = post(&url, &body).await.json();
        assert_eq!(v["stop_reason"], "tool_use", "{v}");
        let block = v["content"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["type"] == "tool_use")
            .unwrap()
            .clone();
        assert_eq!(block["name"], "get_weather");
        assert_eq!(block["input"], json!({"mock": true}));
        let mut sbody = body.clone();
        sbody["stream"] = json!(true);
        let ev = named_sse(&post(&url, &sbody).await.body);
        let start = ev
            .iter()
            .find(|(n, d)| n == "content_block_start" && d["content_block"]["type"] == "tool_use")
            .unwrap();
        assert_eq!(start.1["content_block"]["name"], "get_weather");
        let idx = start.1["index"].clone();
        let args: String = ev
            .iter()
            .filter(|(_, d)| d["index"] == idx && d["delta"]["type"] == "input_json_delta")
            .map(|(_, d)| d["delta"]["partial_json"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            serde_json::from_str::<Value>(&args).unwrap(),
            json!({"mock": true})
        );
        assert_eq!(ev[ev.len() - 2].1["delta"]["stop_reason"], "tool_use");

        // The tool result goes back; the conversation continues.
        let v = post(
            &url,
            &json!({"model": model, "max_tokens": 100, "tools": tools(), "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": [block]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": block["id"], "content": "sunny"},
                    {"type": "text", "text": "Thanks"}]}
            ]}),
        )
        .await;
        assert_eq!(
            v.status,
            200,
            "{model}: {}",
            String::from_utf8_lossy(&v.body)
        );
        assert_eq!(
            v.json()["content"][0]["text"],
            "Mock reply to: Thanks",
            "{model}"
        );

        // count_tokens: exact from Anthropic, estimated otherwise; more text, more tokens.
        let count = |text: &str| {
            let url = format!("{}/v1/messages/count_tokens", gw.url);
            let body = json!({"model": model, "messages": [{"role": "user", "content": text}]});
            async move {
                post(&url, &body).await.json()["input_tokens"]
                    .as_u64()
                    .unwrap()
            }
        };
        let short = count("hi").await;
        let long = count(&"the quick brown fox ".repeat(50)).await;
        assert!(short > 0 && long > short * 10, "{model}: {short} {long}");
    }

    // Passthrough keeps what only Anthropic understands (a server tool); translation refuses it.
    let body = |model: &str| {
        json!({"model": model, "max_tokens": 50, "metadata": {"user_id": "u-7"},
               "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 1}],
               "messages": [{"role": "user", "content": "Search"}]})
    };
    let r = post(&url, &body("via-anthropic")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-sluice-provider"), Some("ant"));
    let seen = request("GET", &format!("{mock}/_mock/last_request"), &[], "")
        .await
        .json();
    assert_eq!(seen["body"]["tools"][0]["type"], "web_search_20250305");
    assert_eq!(seen["body"]["model"], "claude-x");
    assert_eq!(seen["body"]["metadata"]["user_id"], "u-7");
    assert_eq!(seen["headers"]["x-api-key"], "sk-ant");
    let r = post(&url, &body("via-openai")).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("web_search_20250305"));

    // Errors in Anthropic's shape: bad request, unknown model, auth, upstream 429.
    let e = post(&url, &json!({"model": "via-openai", "messages": []})).await;
    assert_eq!(e.status, 400);
    assert_eq!(e.json()["type"], "error");
    assert_eq!(e.json()["error"]["type"], "invalid_request_error");
    assert!(e.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_tokens"));
    let e = post(
        &url,
        &json!({"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(e.status, 404);
    assert_eq!(e.json()["error"]["type"], "not_found_error");
    let e = request(
        "POST",
        &url,
        &[("x-api-key", "wrong"), ("content-type", "application/json")],
        json!({"model": "via-openai", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}).to_string(),
    )
    .await;
    assert_eq!(e.status, 401);
    assert_eq!(e.json()["error"]["type"], "authentication_error");
    let e = post(&url, &json!({"model": "limited", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!(e.status, 429);
    assert_eq!(e.header("retry-after"), Some("9"));
    assert_eq!(e.json()["error"]["type"], "rate_limit_error");

    // Per-request overrides reach the pipeline: a 200 ms total timeout cuts a 3 s upstream short.
    let t0 = std::time::Instant::now();
    let e = request(
        "POST",
        &url,
        &[
            AUTH,
            ("content-type", "application/json"),
            ("x-sluice-total-timeout-ms", "200"),
        ],
        json!({"model": "slow", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
            .to_string(),
    )
    .await;
    assert_eq!(e.status, 504, "{}", String::from_utf8_lossy(&e.body));
    assert_eq!(e.json()["error"]["type"], "timeout_error");
    assert!(
        t0.elapsed() < std::time::Duration::from_millis(2000),
        "{:?}",
        t0.elapsed()
    );

    // Recorded under the Anthropic surface.
    gw.stop(std::time::Duration::from_secs(10));
    let rows = usage_rows(&gw.db_path()).await;
    assert!(
        rows.iter().filter(|r| r["status"] == 200).count() >= 10,
        "{rows:?}"
    );
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", gw.db_path().display()))
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM usage_records WHERE surface = 'anthropic.messages'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(n >= 10, "{n}");
}
