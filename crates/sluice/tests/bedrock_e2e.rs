//! Bedrock through the real binary against sluice-mock, beyond the conformance suite:
//! signed requests to the escaped inference-profile path, thinking with signatures on a
//! ConverseStream, Titan and Cohere embeddings, and the start-up error without credentials.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use serde_json::{json, Value};

const CLAUDE: &str = "us.anthropic.claude-sonnet-4-5-20250929-v1:0";

fn config(mock: &str) -> String {
    format!(
        "store: {{url: \"{{DB}}\"}}\nproviders:\n  - {{name: aws, kind: bedrock, base_url: \"{mock}\", region: eu-west-3, aws_access_key_id: AKIDMOCK, aws_secret_access_key: mock-secret, aws_session_token: mock-token}}\nmodels:\n  - {{name: claude, deployments: [{{provider: aws, model: \"{CLAUDE}\"}}]}}\n  - {{name: titan, deployments: [{{provider: aws, model: \"amazon.titan-embed-text-v2:0\"}}]}}\n  - {{name: cohere, deployments: [{{provider: aws, model: cohere.embed-english-v3}}]}}\n"
    )
}

async fn last_request(mock: &str) -> Value {
    let r = request("GET", &format!("{mock}/_mock/last_request"), &[], "").await;
    r.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thinking_stream_signed_paths_and_embeddings() {
    let mock = start_mock().await;
    let gw = Gateway::start(&config(&mock));
    let chat = format!("{}/v1/chat/completions", gw.url);

    let body = json!({"model": "claude", "stream": true, "seed": 7,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [{"role": "user", "content": "Say hello"}]});
    let s = stream(&chat, &body.to_string()).await;
    assert_eq!(s.status, 200, "{}", s.text());
    let events = s.events();
    let reasoning: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["reasoning_content"].as_str())
        .collect();
    assert!(!reasoning.is_empty(), "{}", s.text());
    let signed = events.iter().any(|e| {
        e["choices"][0]["delta"]["thinking_blocks"][0]["signature"]
            .as_str()
            .is_some_and(|s| s.starts_with("sluice:claude:sig_mock_"))
    });
    assert!(signed, "the signature reaches the client: {}", s.text());
    let text: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Mock reply to: Say hello");

    let seen = last_request(&mock).await;
    assert_eq!(
        seen["path"],
        "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse-stream"
    );
    let auth = seen["headers"]["authorization"].as_str().unwrap();
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDMOCK/")
            && auth.contains("/eu-west-3/bedrock/aws4_request"),
        "{auth}"
    );
    assert!(!auth.contains("mock-secret"));
    assert_eq!(seen["headers"]["x-amz-security-token"], "mock-token");
    assert!(seen["headers"]["x-amz-date"].is_string());
    assert_eq!(
        seen["body"]["additionalModelRequestFields"]["thinking"],
        json!({"type": "enabled", "budget_tokens": 1024})
    );

    // The signed reasoning, sent back in the next turn, reaches Bedrock intact.
    let r = post_json(
        &chat,
        &json!({"model": "claude", "reasoning_effort": "low",
                "messages": [{"role": "user", "content": "Think, then say hi"}]})
        .to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let msg = r.json()["choices"][0]["message"].clone();
    let blocks = msg["thinking_blocks"].clone();
    let sig = blocks[0]["signature"].as_str().unwrap().to_string();
    // Tagged with the family that made it; Bedrock gets it back bare.
    assert!(sig.starts_with("sluice:claude:sig_mock_"), "{msg}");
    let r = post_json(
        &chat,
        &json!({"model": "claude", "reasoning_effort": "low", "messages": [
            {"role": "user", "content": "Think, then say hi"},
            {"role": "assistant", "content": msg["content"], "thinking_blocks": blocks},
            {"role": "user", "content": "Again"}]})
        .to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let sent = last_request(&mock).await["body"].clone();
    let rt = &sent["messages"][1]["content"][0]["reasoningContent"]["reasoningText"];
    assert_eq!(
        rt["signature"],
        sig.strip_prefix("sluice:claude:").unwrap(),
        "{sent}"
    );
    assert_eq!(rt["text"], msg["reasoning_content"]);

    // A parameter Converse cannot take is dropped and named.
    let r = post_json(
        &chat,
        &json!({"model": "claude", "seed": 7, "messages": [{"role": "user", "content": "hi"}]})
            .to_string(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-sluice-dropped-params"), Some("seed"));

    let emb = format!("{}/v1/embeddings", gw.url);
    let r = post_json(
        &emb,
        &json!({"model": "titan", "input": "hello", "dimensions": 256}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 256);
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        last_request(&mock).await["path"],
        "/model/amazon.titan-embed-text-v2%3A0/invoke"
    );

    let r = post_json(
        &emb,
        &json!({"model": "cohere", "input": ["a", "b"]}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][1]["index"], 1);
    assert_ne!(v["data"][0]["embedding"], v["data"][1]["embedding"]);
}

/// An exception frame in the middle of a ConverseStream reaches the client after the text
/// that came before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exception_inside_a_stream() {
    let mock = start_mock().await;
    let gw = Gateway::start(&format!(
        "store: {{url: \"{{DB}}\"}}\nproviders:\n  - {{name: aws, kind: bedrock, base_url: \"{mock}\", region: us-east-1, aws_access_key_id: AKID, aws_secret_access_key: s, headers: {{x-mock-bedrock-exception: throttlingException}}}}\nmodels:\n  - {{name: nova, deployments: [{{provider: aws, model: us.amazon.nova-micro-v1:0}}]}}\n"
    ));
    let (status, _, body) = open_stream(
        &format!("{}/v1/chat/completions", gw.url),
        &json!({"model": "nova", "stream": true,
                "messages": [{"role": "user", "content": "Say hello"}]})
        .to_string(),
    )
    .await;
    assert_eq!(status, 200);
    let frames = read_frames(body).await;
    let text: String = frames
        .iter()
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .collect();
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    let content: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    let full = "Mock reply to: Say hello";
    assert!(
        !content.is_empty() && content.len() < full.len() && full.starts_with(&content),
        "the text before the exception arrives, and no more: {text}"
    );
    let err = events.last().unwrap()["error"]["message"].as_str().unwrap();
    assert!(err.contains("throttlingException"), "{text}");
}

/// A Bedrock API key (`api_key`) is sent as a bearer token instead of signing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_is_a_bearer_token() {
    let mock = start_mock().await;
    let gw = Gateway::start(&format!(
        "store: {{url: \"{{DB}}\"}}\nproviders:\n  - {{name: aws, kind: bedrock, base_url: \"{mock}\", region: us-west-2, api_key: br-key}}\nmodels:\n  - {{name: nova, deployments: [{{provider: aws, model: us.amazon.nova-micro-v1:0}}]}}\n"
    ));
    let r = post_json(
        &format!("{}/v1/chat/completions", gw.url),
        &json!({"model": "nova", "messages": [{"role": "user", "content": "Say hello"}]})
            .to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let seen = last_request(&mock).await;
    assert_eq!(seen["headers"]["authorization"], "Bearer br-key");
    assert!(seen["headers"]["x-amz-date"].is_null());
}

/// With no config, AWS keys and a region in the environment make a `bedrock` provider with
/// `bedrock/<model id>` routes (the endpoint override is the AWS SDKs' own variable).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovered_from_the_aws_environment() {
    let mock = start_mock().await;
    let gw = Gateway::start_with(
        None,
        &[],
        &[
            ("AWS_ACCESS_KEY_ID", "AKIDENV"),
            ("AWS_SECRET_ACCESS_KEY", "env-secret"),
            ("AWS_REGION", "ap-southeast-2"),
            ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", &mock),
        ],
    );
    let r = post_json(
        &format!("{}/v1/chat/completions", gw.url),
        &json!({"model": "bedrock/us.amazon.nova-micro-v1:0",
                "messages": [{"role": "user", "content": "Say hello"}]})
        .to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "Mock reply to: Say hello"
    );
    let seen = last_request(&mock).await;
    assert_eq!(seen["path"], "/model/us.amazon.nova-micro-v1%3A0/converse");
    let auth = seen["headers"]["authorization"].as_str().unwrap();
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDENV/")
            && auth.contains("/ap-southeast-2/bedrock/"),
        "{auth}"
    );
}

#[test]
fn no_credentials_is_a_clear_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.yaml");
    std::fs::write(
        &path,
        format!(
            "store: {{url: \"sqlite://{}\"}}\nproviders:\n  - {{name: aws, kind: bedrock, region: us-east-1}}\nmodels:\n  - {{name: c, deployments: [{{provider: aws, model: x}}]}}\n",
            dir.path().join("s.db").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_BEARER_TOKEN_BEDROCK")
        .env("SLUICE_LOG", "warn")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("AWS_ACCESS_KEY_ID") && err.contains("aws"),
        "{err}"
    );
}
