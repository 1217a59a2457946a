//! Bad input and upstream trouble, end to end against the real binary: every case gets the
//! right status and an OpenAI-shaped error body naming the problem.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

fn config(mock: &str) -> String {
    format!(
        r#"
server:
  max_body_size: 4KiB
store: {{url: "{{DB}}"}}
providers:
  - {{name: local, kind: mock}}
  - {{name: remote, kind: openai_compatible, base_url: "{mock}/v1"}}
  - {{name: dead, kind: openai_compatible, base_url: "http://127.0.0.1:1/v1"}}
  - name: slow
    kind: openai_compatible
    base_url: "{mock}/v1"
    timeout: 300ms
    headers: {{x-mock-latency-ms: "3000"}}
  - name: refuses
    kind: openai_compatible
    base_url: "{mock}/v1"
    headers: {{x-mock-status: "400"}}
  - name: broken
    kind: openai_compatible
    base_url: "{mock}/v1"
    headers: {{x-mock-status: "503", x-mock-retry-after: "7"}}
models:
  - {{name: mock-1, deployments: [{{provider: local, model: mock-1}}]}}
  - {{name: mock-embed, deployments: [{{provider: local, model: mock-embed}}]}}
  - {{name: remote-model, deployments: [{{provider: remote, model: m}}]}}
  - {{name: dead-model, deployments: [{{provider: dead, model: m}}]}}
  - {{name: slow-model, deployments: [{{provider: slow, model: m}}]}}
  - {{name: refused-model, deployments: [{{provider: refuses, model: m}}]}}
  - {{name: broken-model, deployments: [{{provider: broken, model: m}}]}}
"#
    )
}

struct Case {
    name: &'static str,
    path: &'static str,
    body: Vec<u8>,
    status: u16,
    param: Option<&'static str>,
    message_has: &'static [&'static str],
}

fn case(
    name: &'static str,
    body: &[u8],
    status: u16,
    param: Option<&'static str>,
    message_has: &'static [&'static str],
) -> Case {
    Case {
        name,
        path: "/v1/chat/completions",
        body: body.to_vec(),
        status,
        param,
        message_has,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_a_clear_4xx_and_upstream_trouble_a_clear_5xx() {
    let mock = start_mock().await;
    let gw = Gateway::start(&config(&mock));
    let deep = format!(
        r#"{{"model":"mock-1","messages":[{{"role":"user","content":{}"x"{}}}]}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let mut cases = vec![
        case("malformed JSON", br#"{"model":"mock-1","#, 400, None, &["not valid JSON"]),
        case("empty body", b"", 400, None, &["empty"]),
        case("not an object", b"[1,2]", 400, None, &["JSON object"]),
        case("invalid UTF-8", b"{\"model\":\"mock-1\",\"messages\":[{\"role\":\"user\",\"content\":\"\xc3\x28\"}]}", 400, None, &["UTF-8"]),
        case("model wrong type", br#"{"model":42,"messages":[{"role":"user","content":"x"}]}"#, 400, Some("model"), &["`model` must be a string"]),
        case("messages wrong type", br#"{"model":"mock-1","messages":"hi"}"#, 400, Some("messages"), &["`messages` must be an array"]),
        case("stream wrong type", br#"{"model":"mock-1","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#, 400, Some("stream"), &["`stream` must be a boolean"]),
        case("include_usage wrong type", br#"{"model":"mock-1","messages":[{"role":"user","content":"x"}],"stream":true,"stream_options":{"include_usage":1}}"#, 400, Some("stream_options.include_usage"), &["include_usage"]),
        case("missing model", br#"{"messages":[{"role":"user","content":"x"}]}"#, 400, Some("model"), &["missing required field `model`"]),
        case("missing messages", br#"{"model":"mock-1"}"#, 400, Some("messages"), &["missing required field `messages`"]),
        case("empty messages", br#"{"model":"mock-1","messages":[]}"#, 400, Some("messages"), &["at least one"]),
        case("nesting too deep", deep.as_bytes(), 400, None, &["nested too deeply"]),
        case("unknown model", br#"{"model":"gpt-nope","messages":[{"role":"user","content":"x"}]}"#, 404, Some("model"), &["gpt-nope", "Available models: broken-model, dead-model, mock-1, mock-embed"]),
        case("body over the limit", format!(r#"{{"model":"mock-1","messages":[{{"role":"user","content":"{}"}}]}}"#, "a".repeat(5000)).as_bytes(), 413, None, &["4096 bytes"]),
        case("upstream unreachable", br#"{"model":"dead-model","messages":[{"role":"user","content":"x"}]}"#, 502, None, &["`dead`", "unreachable", "127.0.0.1:1"]),
        case("upstream timeout", br#"{"model":"slow-model","messages":[{"role":"user","content":"x"}]}"#, 504, None, &["`slow`", "300ms"]),
        case("upstream 4xx", br#"{"model":"refused-model","messages":[{"role":"user","content":"x"}]}"#, 400, None, &["`refuses`", "returned 400", "mock error 400"]),
        case("upstream 5xx", br#"{"model":"broken-model","messages":[{"role":"user","content":"x"}]}"#, 503, None, &["`broken`", "returned 503", "mock error 503"]),
    ];
    cases.push(Case {
        name: "embeddings without input",
        path: "/v1/embeddings",
        body: br#"{"model":"mock-embed"}"#.to_vec(),
        status: 400,
        param: Some("input"),
        message_has: &["`input`"],
    });
    for c in &cases {
        let r = request(
            "POST",
            &format!("{}{}", gw.url, c.path),
            &[("content-type", "application/json")],
            c.body.clone(),
        )
        .await;
        assert_eq!(
            r.status,
            c.status,
            "{}: {}",
            c.name,
            String::from_utf8_lossy(&r.body)
        );
        let e = r.openai_error();
        let msg = e["message"].as_str().unwrap();
        for part in c.message_has {
            assert!(
                msg.contains(part),
                "{}: message {msg:?} lacks {part:?}",
                c.name
            );
        }
        if let Some(p) = c.param {
            assert_eq!(e["param"], p, "{}", c.name);
        }
        assert!(
            r.header("x-request-id").is_some(),
            "{}: no x-request-id",
            c.name
        );
    }
    // The upstream's Retry-After reaches the client.
    let r = post_json(
        &format!("{}/v1/chat/completions", gw.url),
        r#"{"model":"broken-model","messages":[{"role":"user","content":"x"}]}"#,
    )
    .await;
    assert_eq!(r.header("retry-after"), Some("7"));

    // Routes and methods.
    let r = request("GET", &format!("{}/v1/nothing-here", gw.url), &[], "").await;
    assert_eq!(r.status, 404);
    assert!(r.openai_error()["message"]
        .as_str()
        .unwrap()
        .contains("/v1/nothing-here"));
    let r = request("GET", &format!("{}/v1/chat/completions", gw.url), &[], "").await;
    assert_eq!(r.status, 405);
    r.openai_error();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_body_limit_is_32_mib_with_or_without_content_length() {
    let mut gw = Gateway::start_with(None, &[], &[]);
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = gw.url.trim_start_matches("http://").to_string();

    // A declared length over the limit is refused before any of the body is read.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        (32 << 20) + 1
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut resp = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut resp))
        .await
        .expect("413 must come without waiting for the body")
        .unwrap();
    let text = String::from_utf8_lossy(&resp[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("33554432 bytes"), "{text}");
    drop(s);

    // Chunked, no Content-Length: the limit is enforced while reading.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    // Upload from one task while reading from another, as a real client does, so the
    // answer is read as soon as it comes rather than after a write fails.
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        let chunk = vec![b' '; 1 << 20];
        for _ in 0..40 {
            let head = format!("{:x}\r\n", chunk.len());
            if wr.write_all(head.as_bytes()).await.is_err()
                || wr.write_all(&chunk).await.is_err()
                || wr.write_all(b"\r\n").await.is_err()
            {
                return; // the gateway answered and closed early, which is fine
            }
        }
        let _ = wr.write_all(b"0\r\n\r\n").await;
    });
    let mut resp = Vec::new();
    let mut buf = vec![0u8; 4096];
    while !resp.windows(4).any(|w| w == b"\r\n\r\n") {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => resp.extend_from_slice(&buf[..n]),
        }
    }
    writer.abort();
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert_eq!(gw.stop(std::time::Duration::from_secs(10)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_key_guards_everything_but_health() {
    let gw = Gateway::start_with(None, &[], &[("SLUICE_MASTER_KEY", "sk-test-master")]);
    let url = format!("{}/v1/chat/completions", gw.url);
    let none = post_json(&url, CHAT).await;
    assert_eq!(none.status, 401);
    assert!(none.openai_error()["message"]
        .as_str()
        .unwrap()
        .contains("missing API key"));
    let wrong = request("POST", &url, &[("authorization", "Bearer sk-wrong")], CHAT).await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.openai_error()["type"], "authentication_error");
    let bearer = request(
        "POST",
        &url,
        &[("authorization", "Bearer sk-test-master")],
        CHAT,
    )
    .await;
    assert_eq!(bearer.status, 200);
    let xkey = request("POST", &url, &[("x-api-key", "sk-test-master")], CHAT).await;
    assert_eq!(xkey.status, 200);
    let models = request("GET", &format!("{}/v1/models", gw.url), &[], "").await;
    assert_eq!(models.status, 401);
    for path in ["/health/live", "/health/ready"] {
        let r = request("GET", &format!("{}{path}", gw.url), &[], "").await;
        assert_eq!(r.status, 200, "{path}");
    }
    assert!(
        !gw.stderr().contains("sk-test-master"),
        "the master key leaked into logs"
    );
}

#[test]
fn open_gateway_refuses_non_loopback_without_opt_in() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env_remove("SLUICE_MASTER_KEY")
        .current_dir(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to serve without authentication on 0.0.0.0:0"),
        "{err}"
    );
    assert!(err.contains("--allow-unauthenticated"), "{err}");
}
