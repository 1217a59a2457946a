//! Non-streamed upstream answers are read under `providers[].max_response_size`: a larger one
//! is a 502 naming the provider (passthrough and translated providers alike); streams are not
//! capped. The upstream is a raw HTTP/1.1 server on loopback sending 2 MiB answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIG: usize = 2 << 20;

/// Answers every request with a 2 MiB JSON body, or a 2 MiB SSE stream when the request
/// body asks for `"stream":true`.
async fn start_big_upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 8192];
                // Read the head and the body (Content-Length).
                loop {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    req.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&req).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if req.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let stream = String::from_utf8_lossy(&req).contains("\"stream\":true");
                let (ctype, body) = if stream {
                    let chunk = format!(
                        "data: {}\n\n",
                        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                               "choices": [{"index": 0, "delta": {"content": "x".repeat(1000)}}]})
                    );
                    let mut b = chunk.repeat(BIG / chunk.len() + 1);
                    b.push_str("data: [DONE]\n\n");
                    ("text/event-stream", b)
                } else {
                    let content = "x".repeat(BIG);
                    (
                        "application/json",
                        json!({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
                               "choices": [{"index": 0, "finish_reason": "stop",
                                            "message": {"role": "assistant", "content": content}}],
                               "candidates": [{"content": {"parts": [{"text": "x"}]}}]})
                        .to_string(),
                    )
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(body.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

fn config(upstream: &str, cap: &str) -> String {
    format!(
        "store: {{url: \"{{DB}}\"}}\nproviders:\n\
         - {{name: bigco, kind: openai_compatible, base_url: \"{upstream}/v1\", max_response_size: {cap}}}\n\
         - {{name: biggem, kind: gemini, base_url: \"{upstream}\", api_key: k, max_response_size: {cap}}}\n\
         models:\n\
         - {{name: big, deployments: [{{provider: bigco, model: m}}]}}\n\
         - {{name: gem, deployments: [{{provider: biggem, model: gemini-2.5-flash}}]}}\n"
    )
}

async fn chat(gw: &Gateway, model: &str, stream: bool) -> Reply {
    post_json(
        &format!("{}/v1/chat/completions", gw.url),
        &json!({"model": model, "stream": stream,
                "messages": [{"role": "user", "content": "hi"}]})
        .to_string(),
    )
    .await
}

#[tokio::test]
async fn an_answer_over_the_cap_is_a_502_naming_the_provider() {
    let upstream = start_big_upstream().await;
    let gw = Gateway::start(&config(&upstream, "1MiB"));
    for (model, provider) in [("big", "bigco"), ("gem", "biggem")] {
        let r = chat(&gw, model, false).await;
        assert_eq!(
            r.status,
            502,
            "{model}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let e = r.openai_error();
        let msg = e["message"].as_str().unwrap();
        assert!(msg.contains(provider), "{msg}");
        assert!(msg.contains("max_response_size"), "{msg}");
    }
    // Streams are forwarded as they come, never capped.
    let s = stream(
        &format!("{}/v1/chat/completions", gw.url),
        &json!({"model": "big", "stream": true, "messages": [{"role": "user", "content": "hi"}]})
            .to_string(),
    )
    .await;
    assert_eq!(s.status, 200);
    assert!(s.text().len() > BIG, "{}", s.text().len());
    assert!(s.text().ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn under_the_cap_the_answer_passes() {
    let upstream = start_big_upstream().await;
    let gw = Gateway::start(&config(&upstream, "4MiB"));
    let r = chat(&gw, "big", false).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.body.len() > BIG);
}
