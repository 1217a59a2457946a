//! End-to-end: `serve` on a loopback port; chat, streams, embeddings, models, control endpoints.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use sluice_mock::MockSettings;

use common::{events, start, streaming, CHAT};

#[tokio::test]
async fn json_chat_echoes_model_and_counts_tokens() {
    let server = start(MockSettings::default()).await;
    let response = server
        .call(
            Method::POST,
            "/v1/chat/completions",
            &[("x-request-id", "req-42"), ("authorization", "Bearer sk")],
            CHAT,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["x-mock-request-id"], "req-42");
    assert_eq!(response.headers()["x-mock-saw-authorization"], "yes");
    let v: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["model"], "gpt-4o-mini");
    assert_eq!(v["id"], "chatcmpl-mock-1");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Mock reply to: What is a sluice?"
    );
    // "be brief" 8 chars -> 2 + 3; "What is a sluice?" 17 chars -> 5 + 3; reply has 7 words.
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 13, "completion_tokens": 7, "total_tokens": 20})
    );

    let response = server
        .call(Method::POST, "/chat/completions", &[], CHAT)
        .await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "the /v1 prefix is optional"
    );
    assert_eq!(response.headers()["x-mock-saw-authorization"], "no");
    assert!(response.headers().get("x-mock-request-id").is_none());
}

#[tokio::test]
async fn streams_in_order_and_match_the_json_reply() {
    let server = start(MockSettings::default()).await;
    let (_, whole) = server
        .json(Method::POST, "/v1/chat/completions", &[], CHAT)
        .await;
    let expected = whole["choices"][0]["message"]["content"].as_str().unwrap();

    for include_usage in [false, true] {
        let response = server
            .call(
                Method::POST,
                "/v1/chat/completions",
                &[("x-mock-chunks", "5")],
                &streaming(include_usage),
            )
            .await;
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let events = events(response).await;
        let (last, payloads) = events.split_last().unwrap();
        assert_eq!(last.1, "[DONE]");
        let chunks: Vec<Value> = payloads
            .iter()
            .map(|(_, data)| serde_json::from_str(data).unwrap())
            .collect();
        assert_eq!(chunks.len(), 1 + 5 + 1 + usize::from(include_usage));
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let text: String = chunks[1..6]
            .iter()
            .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
            .collect();
        assert_eq!(text, expected);
        assert_eq!(chunks[6]["choices"][0]["finish_reason"], "stop");
        if include_usage {
            assert_eq!(chunks[7]["choices"], json!([]));
            assert_eq!(chunks[7]["usage"], whole["usage"]);
        }
        assert!(chunks[..7]
            .iter()
            .all(|c| c["usage"].is_null() && c["model"] == "gpt-4o-mini"));
    }
}

#[tokio::test]
async fn counters_and_last_request() {
    let server = start(MockSettings::default()).await;
    let (status, v) = server
        .json(Method::GET, "/_mock/last_request", &[], "")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(v["error"]["message"].is_string());

    server.json(Method::GET, "/v1/models", &[], "").await;
    server
        .json(
            Method::POST,
            "/v1/chat/completions?api-version=1",
            &[("X-Custom", "Yes")],
            CHAT,
        )
        .await;
    let (_, stats) = server.json(Method::GET, "/_mock/stats", &[], "").await;
    assert_eq!(
        stats,
        json!({"requests": 2, "cancelled": 0}),
        "control endpoints are not counted"
    );
    assert_eq!(server.mock.request_count(), 2);

    let (status, last) = server
        .json(Method::GET, "/_mock/last_request", &[], "")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(last["method"], "POST");
    assert_eq!(last["path"], "/v1/chat/completions");
    assert_eq!(last["query"], "api-version=1");
    assert_eq!(last["headers"]["x-custom"], "Yes");
    assert_eq!(last["body"], serde_json::from_str::<Value>(CHAT).unwrap());

    server
        .json(Method::POST, "/v1/chat/completions", &[], "not json")
        .await;
    let (_, last) = server
        .json(Method::GET, "/_mock/last_request", &[], "")
        .await;
    assert_eq!(last["body"], "not json");

    let (status, _) = server.json(Method::POST, "/_mock/reset", &[], "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.mock.request_count(), 0);
    let (status, _) = server
        .json(Method::GET, "/_mock/last_request", &[], "")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn embeddings_and_models() {
    let server = start(MockSettings {
        embedding_dims: 24,
        ..MockSettings::default()
    })
    .await;
    let (status, v) = server
        .json(
            Method::POST,
            "/v1/embeddings",
            &[],
            r#"{"model":"mock-embed","input":["a","b"]}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["model"], "mock-embed");
    assert_eq!(v["data"][1]["embedding"].as_array().unwrap().len(), 24);
    let (_, v) = server
        .json(
            Method::POST,
            "/embeddings",
            &[],
            r#"{"model":"m","input":"a","dimensions":7}"#,
        )
        .await;
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 7);

    let (_, models) = server.json(Method::GET, "/v1/models", &[], "").await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["mock-1", "mock-2", "mock-embed"]);
    assert_eq!(models["data"][0]["owned_by"], "sluice-mock");
    let (status, model) = server.json(Method::GET, "/v1/models/mock-2", &[], "").await;
    assert_eq!(
        (status, model["id"].as_str()),
        (StatusCode::OK, Some("mock-2"))
    );
}

fn assert_openai_error(v: &Value) {
    let error = v["error"]
        .as_object()
        .unwrap_or_else(|| panic!("not an OpenAI error: {v}"));
    assert!(error["message"].is_string());
    assert_eq!(error["type"], "invalid_request_error");
    assert!(error.contains_key("param") && error.contains_key("code"));
}

#[tokio::test]
async fn error_shapes() {
    let server = start(MockSettings::default()).await;
    let (status, v) = server.json(Method::POST, "/v1/nope", &[], "{}").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_openai_error(&v);

    let response = server
        .call(Method::GET, "/v1/chat/completions", &[], "")
        .await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "POST");
    let (status, v) = server.json(Method::DELETE, "/_mock/stats", &[], "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_openai_error(&v);

    let (status, v) = server
        .json(Method::POST, "/v1/chat/completions", &[], "{oops")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_openai_error(&v);
    let (status, v) = server
        .json(
            Method::POST,
            "/v1/chat/completions",
            &[],
            r#"{"messages":[]}"#,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_openai_error(&v);
    assert_eq!(v["error"]["param"], "model");
}

#[tokio::test]
async fn h2c_prior_knowledge() {
    let server = start(MockSettings::default()).await;
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let request = Request::post(format!("http://{}/v1/chat/completions", server.addr))
        .body(Full::new(Bytes::from_static(CHAT.as_bytes())))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
}
