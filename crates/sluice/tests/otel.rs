//! OpenTelemetry: a loopback OTLP/HTTP collector (protobuf decoded with opentelemetry-proto)
//! receives the request's spans, in the client's trace, with GenAI attributes; the upstream
//! gets a `traceparent` naming the attempt span.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

async fn start_collector() -> (String, Arc<Mutex<Vec<Span>>>) {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let sink = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: bytes::Bytes| {
            let sink = sink.clone();
            async move {
                let req = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                for rs in req.resource_spans {
                    for ss in rs.scope_spans {
                        sink.lock().unwrap().extend(ss.spans);
                    }
                }
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), spans)
}

fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a Any> {
    s.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn text(s: &Span, key: &str) -> Option<String> {
    match attr(s, key) {
        Some(Any::StringValue(v)) => Some(v.clone()),
        _ => None,
    }
}

fn int(s: &Span, key: &str) -> Option<i64> {
    match attr(s, key) {
        Some(Any::IntValue(v)) => Some(*v),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_collector_in_the_clients_trace_with_genai_attributes() {
    let (collector, spans) = start_collector().await;
    let mock = start_mock().await;
    let config = format!(
        r#"
store: {{url: "{{DB}}"}}
providers:
  - {{name: upstream, kind: openai_compatible, base_url: "{mock}/v1"}}
models:
  - {{name: chat, deployments: [{{provider: upstream, model: mock-1}}]}}
"#
    );
    let mut gw = Gateway::start_with(
        Some(&config),
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let traceparent = format!("00-{TRACE}-{CLIENT_SPAN}-01");
    let r = request(
        "POST",
        &format!("{}/v1/chat/completions", gw.url),
        &[
            ("content-type", "application/json"),
            ("traceparent", &traceparent),
            ("x-request-id", "otel-1"),
        ],
        r#"{"model":"chat","messages":[{"role":"user","content":"hello"}]}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    let (pin, pout) = {
        let v = r.json();
        (
            v["usage"]["prompt_tokens"].as_i64().unwrap(),
            v["usage"]["completion_tokens"].as_i64().unwrap(),
        )
    };
    // What the upstream received: our trace, a span of ours as parent.
    let last = request("GET", &format!("{mock}/_mock/last_request"), &[], "")
        .await
        .json();
    let sent = last["headers"]["traceparent"]
        .as_str()
        .unwrap_or_else(|| panic!("no traceparent upstream: {last}"))
        .to_string();
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(parts[1], TRACE, "{sent}");
    assert_ne!(parts[2], CLIENT_SPAN);

    // Untraced by the client: a trace of its own.
    let r = post_json(
        &format!("{}/v1/chat/completions", gw.url),
        r#"{"model":"chat","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(r.status, 200);

    // Graceful shutdown exports what is buffered (the batch delay is 100 ms anyway).
    assert_eq!(gw.stop(Duration::from_secs(10)), Some(0));
    let deadline = Instant::now() + Duration::from_secs(5);
    while spans.lock().unwrap().len() < 10 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let spans = spans.lock().unwrap().clone();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let ours: Vec<&Span> = spans.iter().filter(|s| hex(&s.trace_id) == TRACE).collect();
    let names: Vec<&str> = ours.iter().map(|s| s.name.as_str()).collect();

    let server = ours
        .iter()
        .find(|s| s.name == "chat chat")
        .unwrap_or_else(|| panic!("no server span in {names:?}"));
    assert_eq!(
        hex(&server.parent_span_id),
        CLIENT_SPAN,
        "child of the client's span"
    );
    assert_eq!(
        text(server, "gen_ai.operation.name").as_deref(),
        Some("chat")
    );
    assert_eq!(
        text(server, "gen_ai.request.model").as_deref(),
        Some("chat")
    );
    assert_eq!(
        text(server, "gen_ai.response.model").as_deref(),
        Some("mock-1")
    );
    assert_eq!(text(server, "gen_ai.system").as_deref(), Some("upstream"));
    assert_eq!(int(server, "gen_ai.usage.input_tokens"), Some(pin));
    assert_eq!(int(server, "gen_ai.usage.output_tokens"), Some(pout));
    assert_eq!(int(server, "http.response.status_code"), Some(200));
    assert_eq!(text(server, "sluice.request_id").as_deref(), Some("otel-1"));

    for step in [
        "parse",
        "guard_input",
        "route",
        "admit",
        "dispatch",
        "respond",
    ] {
        let s = ours
            .iter()
            .find(|s| s.name == step)
            .unwrap_or_else(|| panic!("no {step} span in {names:?}"));
        assert_eq!(
            s.parent_span_id, server.span_id,
            "{step} is a child of the request"
        );
    }
    let attempt = ours
        .iter()
        .find(|s| s.name == "upstream upstream")
        .unwrap_or_else(|| panic!("no attempt span in {names:?}"));
    assert_eq!(
        hex(&attempt.span_id),
        parts[2],
        "the span named in the upstream traceparent"
    );
    assert_eq!(attempt.parent_span_id, server.span_id);
    assert_eq!(int(attempt, "http.response.status_code"), Some(200));

    // The streamed request: its own trace, a root span, streamed flag set.
    let other = spans
        .iter()
        .find(|s| s.name == "chat chat" && hex(&s.trace_id) != TRACE)
        .expect("the untraced request has a trace of its own");
    assert!(other.parent_span_id.is_empty());
    assert!(matches!(
        attr(other, "sluice.streamed"),
        Some(Any::BoolValue(true))
    ));
    assert!(int(other, "gen_ai.usage.output_tokens").unwrap_or(0) > 0);
}
