//! Helpers for the governance tests: a gateway with a master key, admin calls, keys.

use super::*;
use serde_json::{json, Value};

pub const MASTER: &str = "sk-master-test";

pub fn config() -> String {
    format!(
        r#"
server: {{master_key: {MASTER}}}
store: {{url: "{{DB}}"}}
providers:
  - {{name: local, kind: mock}}
  - name: slow
    kind: mock
    mock: {{latency: 400ms}}
  - name: trickle
    kind: mock
    mock: {{chunks: 40, chunk_delay: 50ms}}
models:
  - {{name: mock-1, deployments: [{{provider: local, model: mock-1}}]}}
  - {{name: mock-2, deployments: [{{provider: local, model: mock-2}}]}}
  - {{name: slow-1, deployments: [{{provider: slow, model: mock-1}}]}}
  - {{name: trickle-1, deployments: [{{provider: trickle, model: mock-1}}]}}
  - name: priced
    deployments: [{{provider: local, model: mock-1, price: {{input: 10, output: "20"}}}}]
"#
    )
}

pub async fn admin(gw: &Gateway, key: &str, method: &str, path: &str, body: Value) -> Reply {
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

pub async fn create_key(gw: &Gateway, body: Value) -> (String, String) {
    let r = admin(gw, MASTER, "POST", "/admin/keys", body).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    (
        v["id"].as_str().unwrap().to_string(),
        v["key"].as_str().unwrap().to_string(),
    )
}

pub async fn chat_as(gw: &Gateway, key: &str, model: &str, max_tokens: u64) -> Reply {
    let auth = format!("Bearer {key}");
    let body = json!({"model": model, "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "hello there"}]});
    request(
        "POST",
        &format!("{}/v1/chat/completions", gw.url),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body.to_string(),
    )
    .await
}

/// Runs the `sluice` CLI against `gw` with the master key: (success, stdout, stderr).
pub fn cli(gw: &Gateway, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env("SLUICE_URL", &gw.url)
        .env("SLUICE_MASTER_KEY", MASTER)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
