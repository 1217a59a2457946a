//! `GET /metrics`: Prometheus counters fed by every request, policy hits included; behind
//! the master key unless `server.public_metrics`.

mod common;
use common::*;

fn config(public: bool) -> String {
    format!(
        r#"
server: {{master_key: sk-metrics-test, public_metrics: {public}}}
store: {{url: "{{DB}}"}}
providers:
  - {{name: local, kind: mock}}
models:
  - {{name: mock-1, deployments: [{{provider: local, model: mock-1}}]}}
policies:
  - {{name: emails, stage: input, detect: [email], action: flag}}
"#
    )
}

fn line_value(text: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(metric) && labels.iter().all(|lab| l.contains(lab)))
        .find_map(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_tokens_and_policy_hits_are_counted() {
    let gw = Gateway::start(&config(false));
    let key = [("authorization", "Bearer sk-metrics-test")];
    let chat = format!("{}/v1/chat/completions", gw.url);
    for _ in 0..3 {
        let r = request(
            "POST",
            &chat,
            &key,
            r#"{"model":"mock-1","messages":[{"role":"user","content":"mail me at ana@example.com"}]}"#,
        )
        .await;
        assert_eq!(r.status, 200);
    }
    let r = request(
        "POST",
        &chat,
        &key,
        r#"{"model":"made-up-9","messages":[{"role":"user","content":"x"}]}"#,
    )
    .await;
    assert_eq!(r.status, 404);

    let url = format!("{}/metrics", gw.url);
    assert_eq!(request("GET", &url, &[], "").await.status, 401);
    let m = request("GET", &url, &key, "").await;
    assert_eq!(m.status, 200);
    let text = String::from_utf8_lossy(&m.body).to_string();
    assert_eq!(
        line_value(
            &text,
            "sluice_requests_total",
            &["model=\"mock-1\"", "status=\"2xx\"", "provider=\"local\""]
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        line_value(
            &text,
            "sluice_requests_total",
            &[
                "model=\"unknown\"",
                "status=\"4xx\"",
                "error=\"model_not_found\""
            ]
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        !text.contains("made-up-9"),
        "free-text model names must not become labels"
    );
    assert_eq!(
        line_value(
            &text,
            "sluice_policy_hits_total",
            &["rule=\"emails\"", "action=\"flag\"", "stage=\"input\""]
        ),
        Some(3.0),
        "{text}"
    );
    let out_tokens = line_value(
        &text,
        "sluice_tokens_total",
        &["model=\"mock-1\"", "kind=\"output\""],
    )
    .unwrap_or(0.0);
    assert!(out_tokens >= 3.0, "{text}");
    assert!(
        text.contains("sluice_request_duration_seconds_bucket"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_metrics_need_no_key() {
    let gw = Gateway::start(&config(true));
    let m = request("GET", &format!("{}/metrics", gw.url), &[], "").await;
    assert_eq!(m.status, 200);
    // Inference still needs the key.
    assert_eq!(
        post_json(&format!("{}/v1/chat/completions", gw.url), CHAT)
            .await
            .status,
        401
    );
}
