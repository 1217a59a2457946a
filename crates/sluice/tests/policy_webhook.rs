//! The webhook detector against a loopback guardrail server that answers, is slow, or is
//! down, with fail-open and fail-closed rules; plus config validation of `policies:`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::time::{Duration, Instant};

/// A guardrail: `/check` flags texts containing "forbidden"; `/slow` answers after 2 s.
async fn guardrail() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let slow = req.uri().path() == "/slow";
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    assert_eq!(v["stage"], "input");
                    if slow {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                    let flagged = v["text"].as_str().unwrap().contains("forbidden");
                    let answer = serde_json::json!({ "flagged": flagged }).to_string();
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(answer))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

/// A loopback address nobody listens on.
async fn down() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/check")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_verdicts_and_fail_open_or_closed() {
    let mock = start_mock().await;
    let g = guardrail().await;
    let dead = down().await;
    let models: String = ["ok", "slow-open", "slow-closed", "down-open", "down-closed"]
        .iter()
        .map(|m| format!("  - {{name: {m}, deployments: [{{provider: up, model: x}}]}}\n"))
        .collect();
    let rule = |name: &str, url: &str, on_error: &str| {
        format!("  - {{name: {name}, detect: [{{webhook: {{url: \"{url}\", timeout: 300ms, on_error: {on_error}}}}}], action: block, scope: {{model: {name}}}}}\n")
    };
    let cfg = format!(
        "store: {{url: \"{{DB}}\"}}\nproviders:\n  - {{name: up, kind: openai_compatible, base_url: \"{mock}/v1\"}}\nmodels:\n{models}policies:\n{}{}{}{}{}",
        rule("ok", &format!("{g}/check"), "closed"),
        rule("slow-open", &format!("{g}/slow"), "open"),
        rule("slow-closed", &format!("{g}/slow"), "closed"),
        rule("down-open", &dead, "open"),
        rule("down-closed", &dead, "closed"),
    );
    let gw = Gateway::start(&cfg);
    let url = format!("{}/v1/chat/completions", gw.url);
    let ask = |model: &str, text: &str| {
        serde_json::json!({"model": model, "messages": [{"role": "user", "content": text}]})
            .to_string()
    };

    // The guardrail's verdict.
    assert_eq!(post_json(&url, &ask("ok", "all fine")).await.status, 200);
    let r = post_json(&url, &ask("ok", "this is forbidden stuff")).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.openai_error()["type"], "content_policy_violation");
    assert!(!String::from_utf8_lossy(&r.body).contains("forbidden stuff"));

    // Slow: the timeout (300 ms) decides, never the 2 s answer.
    let started = Instant::now();
    let r = post_json(&url, &ask("slow-open", "this is forbidden stuff")).await;
    assert_eq!(r.status, 200, "fail-open lets it through");
    let r = post_json(&url, &ask("slow-closed", "all fine")).await;
    assert_eq!(r.status, 400, "fail-closed blocks");
    let msg = r.openai_error()["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("slow-closed") && msg.contains("fail-closed"),
        "{msg}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1800),
        "{:?}",
        started.elapsed()
    );

    // Down.
    assert_eq!(post_json(&url, &ask("down-open", "x")).await.status, 200);
    assert_eq!(post_json(&url, &ask("down-closed", "x")).await.status, 400);
}

fn config_errors(policies: &str) -> String {
    let yaml = format!(
        "providers:\n  - {{name: p, kind: mock}}\nmodels:\n  - {{name: m, deployments: [{{provider: p, model: x}}]}}\npolicies:\n{policies}"
    );
    match sluice::config::from_yaml(&yaml, &|_| None) {
        Ok(_) => String::new(),
        Err(errs) => errs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

#[test]
fn policies_are_validated_with_field_paths() {
    assert_eq!(
        config_errors("  - {name: a, detect: [email, {regex: 'x\\d+'}], action: redact, stage: both, scope: {model: m}}\n"),
        ""
    );
    let e = config_errors(concat!(
        "  - {name: a, detect: [email], action: block}\n",
        "  - {name: b, detect: [{regex: '(unclosed'}], action: block}\n",
        "  - {name: c, detect: [credit_card], action: block}\n",
        "  - {name: d, detect: [{webhook: {url: 'http://127.0.0.1:1/x'}}], action: redact}\n",
        "  - {name: e, detect: [email], action: route_local, stage: output}\n",
        "  - {name: f, detect: [email], action: block, scope: {model: nope}}\n",
        "  - {name: a, detect: [], action: flag}\n",
        "  - {name: g, detect: [{keywords: []}], action: flag}\n",
        "  - {name: h, detect: [{regex: 'a*'}], action: flag}\n",
        "  - {name: i, detect: [{webhook: {url: 'ftp://x', timeout: 5 days}}], action: flag}\n",
    ));
    for want in [
        "policies[1].detect[0].regex: invalid regex",
        "policies[2].detect[0]: unknown detector \"credit_card\"",
        "policies[3].detect[0]: max_size and webhook judge the whole text",
        "policies[4].action: route_local",
        "policies[5].scope.model: no model named \"nope\"",
        "policies[6].name: duplicate policy name",
        "policies[6].detect: at least one detector",
        "policies[7].detect[0].keywords: must be a non-empty list",
        "policies[8].detect[0].regex: matches the empty string",
        "policies[9].detect[0].webhook.url: invalid URL",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
    // Typos in a rule are caught by the strict raw structs.
    let e = config_errors("  - {name: a, detect: [email], action: block, stgae: input}\n");
    assert!(e.contains("policies[0]") && e.contains("stgae"), "{e}");
    let e = config_errors("  - {name: a, detect: [email], action: delete}\n");
    assert!(e.contains("policies[0].action"), "{e}");
}
