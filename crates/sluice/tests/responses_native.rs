//! `supports_responses: true` (issue 18 gap 11): a Responses request the gateway keeps no
//! state for (`store: false`, no `previous_response_id`) to a route whose providers all
//! implement `/v1/responses` goes there untouched, and the recorded answer comes back
//! byte for byte, JSON and stream; anything else is translated as before. The upstream is a
//! loopback server answering real recorded exchanges.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "replay/cassette.rs"]
mod cassette;
mod common;

use common::*;
use serde_json::json;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the upstream received: (path, body).
type Seen = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A loopback HTTP/1.1 upstream that answers every request with `answer` (content type,
/// bytes) and remembers what it was sent.
async fn upstream(answer: Arc<Mutex<(String, Vec<u8>)>>) -> (String, Seen) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (answer, log) = (answer.clone(), log.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let (head_end, len) = loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (i + 4, len);
                    }
                };
                while buf.len() < head_end + len {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let path = head.split(' ').nth(1).unwrap_or_default().to_string();
                log.lock().unwrap().push((path, buf[head_end..].to_vec()));
                let (ct, body) = answer.lock().unwrap().clone();
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {ct}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
                let _ = s.write_all(&body).await;
            });
        }
    });
    (url, seen)
}

/// The first recorded `POST /v1/responses` with a 200 answer of this content type.
fn recorded(content_type: &str) -> cassette::Interaction {
    cassette::list("openai_responses")
        .into_iter()
        .flat_map(|f| cassette::load(&f))
        .find(|i| {
            i.method == "POST"
                && i.uri.ends_with("/v1/responses")
                && i.status == 200
                && i.content_type().starts_with(content_type)
                && i.request["previous_response_id"].is_null()
                && i.request["model"].is_string()
        })
        .expect("a recorded exchange")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateless_requests_reach_a_native_responses_api_untouched() {
    let answer = Arc::new(Mutex::new((String::new(), Vec::new())));
    let (up, seen) = upstream(answer.clone()).await;
    let json_case = recorded("application/json");
    let sse_case = recorded("text/event-stream");
    let mut cfg = format!(
        "store: {{url: \"{{DB}}\"}}\nproviders:\n  - {{name: native, kind: openai_compatible, base_url: \"{up}/v1\", supports_responses: true}}\n  - {{name: plain, kind: openai_compatible, base_url: \"{up}/v1\"}}\nmodels:\n"
    );
    for i in [&json_case, &sse_case] {
        let m = i.request["model"].as_str().unwrap();
        cfg.push_str(&format!(
            "  - {{name: \"{m}\", deployments: [{{provider: native, model: \"{m}\"}}]}}\n"
        ));
    }
    cfg.push_str("  - {name: plain, deployments: [{provider: plain, model: m}]}\n");
    let mut gw = Gateway::start(&cfg);
    let url = format!("{}/v1/responses", gw.url);

    for case in [&json_case, &sse_case] {
        let mut body = case.request.clone();
        body["store"] = json!(false);
        let sent = serde_json::to_vec(&body).unwrap();
        *answer.lock().unwrap() = (case.content_type(), case.response.clone());
        let r = request(
            "POST",
            &url,
            &[("content-type", "application/json")],
            sent.clone(),
        )
        .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        // The client gets the provider's answer as it was, and the provider the client's
        // request as it was.
        assert_eq!(r.body.as_ref(), case.response.as_slice());
        let (path, got) = seen.lock().unwrap().last().cloned().unwrap();
        assert_eq!(path, "/v1/responses");
        assert_eq!(got, sent);
    }

    // Stored (the default) or continued responses live in the gateway: translated.
    let before = seen.lock().unwrap().len();
    for extra in [
        json!({}),
        json!({"store": false, "previous_response_id": "resp_x"}),
    ] {
        let mut body = json!({"model": json_case.request["model"], "input": "hi"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let _ = request(
            "POST",
            &url,
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await;
    }
    // A provider without supports_responses: translated too.
    let _ = request(
        "POST",
        &url,
        &[("content-type", "application/json")],
        json!({"model": "plain", "input": "hi", "store": false}).to_string(),
    )
    .await;
    let paths: Vec<String> = seen.lock().unwrap()[before..]
        .iter()
        .map(|(p, _)| p.clone())
        .collect();
    assert!(
        paths.iter().all(|p| p == "/v1/chat/completions"),
        "{paths:?}"
    );
    assert!(!paths.is_empty());

    // The passed-through answers were metered from their own usage.
    gw.stop(std::time::Duration::from_secs(10));
    let rows = usage_rows(&gw.db_path()).await;
    let want = json_case.response_json()["usage"]["input_tokens"].clone();
    assert!(
        rows.iter()
            .any(|r| r["status"] == 200 && r["input_tokens"] == want),
        "{rows:?} (want input_tokens {want})"
    );
}
