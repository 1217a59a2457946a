//! Model names from wildcard routes go into upstream URL paths for Gemini, Vertex, Azure and
//! Bedrock: names outside the provider's grammar get a 400 naming the model and never reach
//! the provider; allowed names are percent-encoded as one path segment. One test per kind,
//! against sluice-mock on loopback (it records the last request's raw path).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use serde_json::{json, Value};

async fn last_path(mock: &str) -> String {
    let r = request("GET", &format!("{mock}/_mock/last_request"), &[], "").await;
    let v: Value = r.json();
    v["path"].as_str().unwrap_or_default().to_string()
}

async fn chat(gw: &Gateway, model: &str) -> Reply {
    post_json(
        &format!("{}/v1/chat/completions", gw.url),
        &json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string(),
    )
    .await
}

/// Starts a gateway with one provider (`provider` is its YAML body) behind `p/*`, checks a
/// good name reaches `good_path`, then that every hostile name is a 400 naming the model and
/// sends nothing upstream.
async fn check_kind(provider: &str, good: &str, good_path: &str, hostile: &[&str]) {
    let mock = start_mock().await;
    let provider = provider.replace("{mock}", &mock);
    let gw = Gateway::start(&format!(
        "store: {{url: \"{{DB}}\"}}\nproviders:\n  - {{name: p, {provider}}}\n\
         models:\n  - {{name: \"p/*\", deployments: [{{provider: p, model: \"*\"}}]}}\n"
    ));
    let r = chat(&gw, &format!("p/{good}")).await;
    assert!(
        r.status < 500,
        "{good}: {} {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(last_path(&mock).await, good_path);
    for name in hostile {
        let r = chat(&gw, &format!("p/{name}")).await;
        assert_eq!(
            r.status,
            400,
            "{name:?}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let e = r.openai_error();
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains(&format!("{name:?}")),
            "{name:?}: {e}"
        );
        assert_eq!(e["param"], "model");
        assert_eq!(
            last_path(&mock).await,
            good_path,
            "{name:?} reached the provider"
        );
    }
}

const HOSTILE: &[&str] = &[
    "../../v1beta/files",
    "../cachedContents",
    "x?key=other",
    "x#frag",
    "a/b",
    "x\u{1}y",
    "x\ty",
    "x%2F..%2Ffiles",
];

#[tokio::test]
async fn gemini() {
    check_kind(
        "kind: gemini, base_url: \"{mock}\", api_key: k",
        "gemini-2.5-flash",
        "/v1beta/models/gemini-2.5-flash:generateContent",
        HOSTILE,
    )
    .await;
}

#[tokio::test]
async fn vertex() {
    check_kind(
        "kind: vertex, base_url: \"{mock}\", region: us-central1, project: proj, api_key: t",
        "gemini-2.5-flash",
        "/v1/projects/proj/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent",
        HOSTILE,
    )
    .await;
    // Publisher model versions keep their `@`.
    check_kind(
        "kind: vertex, base_url: \"{mock}\", region: us-east5, project: proj, api_key: t",
        "claude-sonnet-4-5@20250929",
        "/v1/projects/proj/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5@20250929:rawPredict",
        &["claude/../x", "claude?x", "claude#x"],
    )
    .await;
}

#[tokio::test]
async fn azure_openai() {
    check_kind(
        "kind: azure_openai, base_url: \"{mock}\", api_key: k",
        "gpt-4o-mini",
        "/openai/deployments/gpt-4o-mini/chat/completions",
        HOSTILE,
    )
    .await;
}

#[tokio::test]
async fn bedrock() {
    // ARNs carry `:` and `/`: allowed, and escaped inside one label.
    check_kind(
        "kind: bedrock, base_url: \"{mock}\", region: us-east-1, aws_access_key_id: AKID, aws_secret_access_key: s",
        "arn:aws:bedrock:us-east-1:1:inference-profile/us.amazon.nova-micro-v1:0",
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.amazon.nova-micro-v1%3A0/converse",
        &["x/../../y", "x?y", "x#y", "x\u{1}y", "x%2Fy"],
    )
    .await;
}

/// The kinds that carry the model in the body only: any name is just a JSON string there,
/// and the URL path stays the provider's fixed endpoint.
#[tokio::test]
async fn body_only_kinds_never_put_the_model_in_the_path() {
    for (provider, path) in [
        (
            "kind: openai_compatible, base_url: \"{mock}/v1\"",
            "/v1/chat/completions",
        ),
        (
            "kind: anthropic, base_url: \"{mock}\", api_key: k",
            "/v1/messages",
        ),
        ("kind: cohere, base_url: \"{mock}\", api_key: k", "/v2/chat"),
        ("kind: ollama, base_url: \"{mock}\"", "/api/chat"),
    ] {
        let mock = start_mock().await;
        let provider = provider.replace("{mock}", &mock);
        let gw = Gateway::start(&format!(
            "store: {{url: \"{{DB}}\"}}\nproviders:\n  - {{name: p, {provider}}}\n\
             models:\n  - {{name: \"p/*\", deployments: [{{provider: p, model: \"*\"}}]}}\n"
        ));
        for name in ["../../admin?x=1#y", "a/b", "plain-model"] {
            let r = chat(&gw, &format!("p/{name}")).await;
            assert!(r.status < 500, "{provider} {name}: {}", r.status);
            assert_eq!(last_path(&mock).await, path, "{provider} {name}");
        }
    }
}
