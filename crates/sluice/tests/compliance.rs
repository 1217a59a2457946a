//! Compliance logging: prompts and answers stored only for opted-in teams and keys (config
//! or key/team metadata), redacted, exported as JSONL by `sluice usage export`, purged after
//! the retention; JSON logs carry request ids and never prompt text or secrets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::gov::{admin, create_key, MASTER};
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn config() -> String {
    format!(
        r#"
server: {{master_key: {MASTER}}}
store: {{url: "{{DB}}"}}
usage:
  flush_interval: 50ms
  compliance: {{teams: [eng], redact: [email], retention: 3s}}
providers:
  - {{name: local, kind: mock}}
models:
  - {{name: mock-1, deployments: [{{provider: local, model: mock-1}}]}}
policies:
  - {{name: mails, stage: input, detect: [email], action: flag}}
"#
    )
}

async fn chat(gw: &Gateway, key: &str, id: &str, stream: bool) -> Reply {
    let auth = format!("Bearer {key}");
    let body = json!({"model": "mock-1", "stream": stream,
        "messages": [{"role": "user", "content": "write to ana@example.com about the launch"}]});
    request(
        "POST",
        &format!("{}/v1/chat/completions", gw.url),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
            ("x-request-id", id),
        ],
        body.to_string(),
    )
    .await
}

fn export(gw: &Gateway) -> Vec<Value> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["usage", "export", "--since", "1h"])
        .env("SLUICE_URL", &gw.url)
        .env("SLUICE_MASTER_KEY", MASTER)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opted_in_prompts_are_stored_redacted_exported_and_purged() {
    let gw = Gateway::start_with(
        Some(&config()),
        &[],
        &[("SLUICE_LOG", "info"), ("SLUICE_LOG_FORMAT", "json")],
    );
    for t in ["eng", "ops"] {
        assert_eq!(
            admin(&gw, MASTER, "POST", "/admin/teams", json!({"name": t}))
                .await
                .status,
            201
        );
    }
    let (_, eng) = create_key(&gw, json!({"team": "eng"})).await;
    let (_, ops) = create_key(&gw, json!({"team": "ops"})).await;
    // Opted in through the admin API: key metadata.
    let (_, flagged) = create_key(
        &gw,
        json!({"team": "ops", "metadata": {"compliance_log": true}}),
    )
    .await;

    assert_eq!(chat(&gw, &eng, "c-eng", false).await.status, 200);
    assert_eq!(chat(&gw, &eng, "c-eng-stream", true).await.status, 200);
    assert_eq!(chat(&gw, &ops, "c-ops", false).await.status, 200);
    assert_eq!(chat(&gw, &flagged, "c-flagged", false).await.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let page = admin(
        &gw,
        MASTER,
        "GET",
        "/admin/requests?include_content=true",
        Value::Null,
    )
    .await
    .json();
    let by_id = |id: &str| {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["request_id"] == json!(id))
            .unwrap()
            .clone()
    };
    let eng_rec = by_id("c-eng");
    let prompt = eng_rec["prompt"].as_str().unwrap();
    assert!(
        prompt.contains("[EMAIL_1]") && prompt.contains("about the launch"),
        "{prompt}"
    );
    assert!(
        !prompt.contains("ana@example.com"),
        "redacted before storing"
    );
    assert!(eng_rec["response"]
        .as_str()
        .unwrap()
        .contains("chat.completion"));
    let stream_rec = by_id("c-eng-stream");
    assert!(
        stream_rec["response"].as_str().unwrap().contains("data: "),
        "the SSE text as sent"
    );
    assert!(
        by_id("c-ops").get("prompt").is_none(),
        "not opted in: no content"
    );
    assert!(by_id("c-flagged")["prompt"].as_str().is_some());

    let lines = export(&gw);
    let ids: Vec<&str> = lines
        .iter()
        .map(|l| l["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{ids:?}");
    assert!(!ids.contains(&"c-ops"));
    assert!(lines
        .iter()
        .all(|l| l["prompt"].is_string() && l["response"].is_string()));

    // Retention 3 s: the content goes, the usage records stay.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !export(&gw).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(export(&gw).is_empty(), "content purged after the retention");
    let page = admin(&gw, MASTER, "GET", "/admin/requests", Value::Null)
        .await
        .json();
    assert_eq!(page["data"].as_array().unwrap().len(), 4);

    // JSON logs: the policy hit's line carries the request id; no prompt text, no secrets.
    let logs = gw.stderr();
    let hit = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == json!("content policy hit"))
        .unwrap_or_else(|| panic!("no JSON policy-hit line in:\n{logs}"));
    assert!(
        hit["span"]["request_id"]
            .as_str()
            .unwrap()
            .starts_with("c-"),
        "{hit}"
    );
    assert!(!logs.contains("ana@example.com"));
    assert!(!logs.contains(MASTER) && !logs.contains(&eng));
}
