//! Streams end to end: never buffered, failures mid-stream end with an error event, usage
//! recorded even when the client leaves, and in-flight streams survive SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use http_body_util::BodyExt;
use std::time::Duration;

fn config(mock: &str) -> String {
    format!(
        r#"
store: {{url: "{{DB}}"}}
providers:
  - name: pausing
    kind: openai_compatible
    base_url: "{mock}/v1"
    headers: {{x-mock-first-chunk-pause-ms: "500", x-mock-chunks: "6"}}
  - name: resetting
    kind: openai_compatible
    base_url: "{mock}/v1"
    headers: {{x-mock-fault: reset-after-headers, x-mock-stall-after: "2"}}
  - name: stalling
    kind: openai_compatible
    base_url: "{mock}/v1"
    stream_idle_timeout: 300ms
    headers: {{x-mock-fault: stall, x-mock-stall-after: "2"}}
  - name: slow
    kind: openai_compatible
    base_url: "{mock}/v1"
    headers: {{x-mock-chunk-delay-ms: "100", x-mock-chunks: "10"}}
models:
  - {{name: pausing, deployments: [{{provider: pausing, model: p}}]}}
  - {{name: resetting, deployments: [{{provider: resetting, model: r}}]}}
  - {{name: stalling, deployments: [{{provider: stalling, model: s}}]}}
  - {{name: slow, deployments: [{{provider: slow, model: s}}]}}
"#
    )
}

fn stream_body(model: &str, include_usage: bool) -> String {
    format!(
        r#"{{"model":"{model}","stream":true,"stream_options":{{"include_usage":{include_usage}}},"messages":[{{"role":"user","content":"count to ten"}}]}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_chunk_is_not_held_back() {
    let mock = start_mock().await;
    let gw = Gateway::start(&config(&mock));
    let url = format!("{}/v1/chat/completions", gw.url);
    // With usage requested (pure forwarding) and without (we strip the usage event).
    for include_usage in [true, false] {
        let s = stream(&url, &stream_body("pausing", include_usage)).await;
        assert_eq!(s.status, 200);
        assert!(s.frames.len() >= 2, "{}", s.text());
        let first = s.frames.first().unwrap().0;
        let last = s.frames.last().unwrap().0;
        let gap = last.duration_since(first);
        assert!(
            gap >= Duration::from_millis(400),
            "include_usage={include_usage}: first chunk only {gap:?} before the last"
        );
        assert!(s.text().ends_with("data: [DONE]\n\n"));
        let usage_events = s.events().iter().filter(|e| e["usage"].is_object()).count();
        assert_eq!(usage_events, usize::from(include_usage), "{}", s.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failure_mid_stream_ends_with_an_error_event() {
    let mock = start_mock().await;
    let gw = Gateway::start(&config(&mock));
    let url = format!("{}/v1/chat/completions", gw.url);

    let s = stream(&url, &stream_body("resetting", true)).await;
    assert_eq!(s.status, 200);
    let events = s.events();
    let last = events.last().unwrap();
    assert_eq!(
        last["error"]["code"],
        "upstream_stream_error",
        "{}",
        s.text()
    );
    assert!(last["error"]["message"]
        .as_str()
        .unwrap()
        .contains("`resetting`"));
    assert!(
        events.len() >= 3,
        "the events sent before the failure reach the client"
    );

    let started = std::time::Instant::now();
    let s = stream(&url, &stream_body("stalling", false)).await;
    let last = s.events().last().unwrap().clone();
    assert_eq!(
        last["error"]["code"],
        "upstream_stream_idle",
        "{}",
        s.text()
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_stream_finish_and_records_everything() {
    let mock = start_mock().await;
    let mut gw = Gateway::start(&config(&mock));
    let url = format!("{}/v1/chat/completions", gw.url);

    // A client that goes away mid-stream is still recorded.
    let (status, _, mut body) = open_stream(&url, &stream_body("slow", true)).await;
    assert_eq!(status, 200);
    body.frame().await.unwrap().unwrap();
    drop(body);

    let (status, _, mut body) = open_stream(&url, &stream_body("slow", false)).await;
    assert_eq!(status, 200);
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    gw.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // No new connections once draining.
    let addr = gw.url.trim_start_matches("http://").to_string();
    assert!(
        tokio::net::TcpStream::connect(&addr).await.is_err(),
        "still accepting connections while draining"
    );
    let rest = read_frames(body).await;
    let mut text = String::from_utf8_lossy(&first).into_owned();
    for (_, f) in &rest {
        text.push_str(&String::from_utf8_lossy(f));
    }
    assert!(
        text.ends_with("data: [DONE]\n\n"),
        "stream cut short: {text}"
    );
    assert!(text.matches("data: ").count() >= 12, "{text}");
    assert_eq!(
        gw.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        gw.stderr()
    );

    let rows = usage_rows(&gw.db_path()).await;
    assert_eq!(rows.len(), 2, "{rows:#?}");
    assert_eq!(rows[0]["status"], 499);
    assert_eq!(rows[0]["error_class"], "client_disconnected");
    assert_eq!(rows[1]["status"], 200);
    assert_eq!(rows[1]["streamed"], true);
    assert!(rows[1]["output_tokens"].as_i64().unwrap() > 0, "{rows:#?}");
    assert!(rows[1]["ttft_us"].as_i64().is_some());
}
