//! End-to-end: timing and fault injection (pauses, injected statuses, TCP resets, stalls).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use sluice_mock::MockSettings;

use common::{events, is_tcp_reset, start, streaming, CHAT};

#[tokio::test]
async fn first_chunk_pause_is_not_buffered() {
    let server = start(MockSettings {
        chunk_delay_ms: 5_000,
        ..MockSettings::default()
    })
    .await;
    let started = Instant::now();
    let response = server
        .call(
            Method::POST,
            "/v1/chat/completions",
            &[("x-mock-first-chunk-pause-ms", "500")],
            &streaming(false),
        )
        .await;
    let events = events(response).await;
    let first = events.first().unwrap().0;
    let last = events.last().unwrap().0;
    assert!(
        last - first >= Duration::from_millis(400),
        "first event arrived {:?} before the last",
        last - first
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "no chunk delay after the pause"
    );
}

#[tokio::test]
async fn latency_and_chunk_delay_headers() {
    let server = start(MockSettings::default()).await;
    let started = Instant::now();
    let headers = [
        ("x-mock-latency-ms", "150"),
        ("x-mock-ttft-ms", "50"),
        ("x-mock-chunks", "2"),
        ("x-mock-chunk-delay-ms", "30"),
    ];
    let response = server
        .call(
            Method::POST,
            "/v1/chat/completions",
            &headers,
            &streaming(false),
        )
        .await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    let events = events(response).await;
    assert_eq!(events.len(), 5);
    // ttft 50 + four gaps of 30 after the first event.
    assert!(started.elapsed() >= Duration::from_millis(150 + 50 + 4 * 30));
}

#[tokio::test]
async fn injected_status_with_retry_after() {
    let server = start(MockSettings::default()).await;
    let response = server
        .call(
            Method::POST,
            "/v1/chat/completions",
            &[("x-mock-status", "429")],
            CHAT,
        )
        .await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "1");
    let v: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(
        v,
        json!({"error": {"message": "mock error 429", "type": "rate_limit_error", "param": null, "code": null}})
    );

    let response = server
        .call(
            Method::POST,
            "/v1/embeddings",
            &[("x-mock-status", "503"), ("x-mock-retry-after", "7")],
            "{}",
        )
        .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "7");

    let (status, v) = server
        .json(Method::GET, "/v1/models", &[("x-mock-status", "401")], "")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(v["error"]["type"], "authentication_error");

    let always = start(MockSettings {
        failure_rate: 1.0,
        failure_status: 502,
        ..MockSettings::default()
    })
    .await;
    let (status, v) = always
        .json(Method::POST, "/v1/chat/completions", &[], CHAT)
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(v["error"]["type"], "server_error");
    let (status, _) = always
        .json(
            Method::POST,
            "/v1/chat/completions",
            &[("x-mock-failure-rate", "0")],
            CHAT,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "the header wins over the setting");
}

#[tokio::test]
async fn reset_fault_is_a_connection_error() {
    let server = start(MockSettings::default()).await;
    let result = server
        .send(
            Method::POST,
            "/v1/chat/completions",
            &[("x-mock-fault", "reset")],
            CHAT,
        )
        .await
        .await;
    let error = result.expect_err("a reset must not produce a response");
    assert!(is_tcp_reset(&error), "expected an RST, got {error:?}");
    // The server keeps serving.
    let (status, _) = server
        .json(Method::POST, "/v1/chat/completions", &[], CHAT)
        .await;
    assert_eq!(status, StatusCode::OK);

    let always = start(MockSettings {
        reset_rate: 1.0,
        ..MockSettings::default()
    })
    .await;
    assert!(always
        .send(Method::GET, "/v1/models", &[], "")
        .await
        .await
        .is_err());
}

#[tokio::test]
async fn reset_after_headers_breaks_the_body() {
    let server = start(MockSettings::default()).await;
    let headers = [
        ("x-mock-fault", "reset-after-headers"),
        ("x-mock-stall-after", "2"),
    ];
    let response = server
        .call(
            Method::POST,
            "/v1/chat/completions",
            &headers,
            &streaming(false),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut received = Vec::new();
    let error = loop {
        match body.frame().await {
            Some(Ok(frame)) => received.extend_from_slice(&frame.into_data().unwrap()),
            Some(Err(error)) => break error,
            None => panic!("the body ended cleanly"),
        }
    };
    assert_eq!(
        String::from_utf8(received)
            .unwrap()
            .matches("data: ")
            .count(),
        2,
        "{error}"
    );
    assert!(is_tcp_reset(&error), "expected an RST, got {error:?}");

    let response = server
        .call(
            Method::POST,
            "/v1/chat/completions",
            &[("x-mock-fault", "reset-after-headers")],
            CHAT,
        )
        .await;
    assert!(
        response.into_body().collect().await.is_err(),
        "JSON bodies are cut short too"
    );
}

#[tokio::test]
async fn stall_holds_the_stream_open() {
    let server = start(MockSettings::default()).await;
    let response = server
        .call(
            Method::POST,
            "/v1/chat/completions",
            &[("x-mock-fault", "stall")],
            &streaming(false),
        )
        .await;
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(first.starts_with(b"data: "));
    let next = tokio::time::timeout(Duration::from_millis(300), body.frame()).await;
    assert!(next.is_err(), "a stalled stream sent {next:?}");

    let json = server
        .send(
            Method::POST,
            "/v1/chat/completions",
            &[("x-mock-fault", "stall")],
            CHAT,
        )
        .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), json)
            .await
            .is_err(),
        "a stalled JSON reply never comes"
    );
}
