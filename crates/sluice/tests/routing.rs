//! Routing end to end: several sluice-mock servers that behave differently behind one route
//! (weighted split, failover, circuit breaker, retries, deadlines, tiers, latency, locality).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::time::{Duration, Instant};

async fn count(mock: &str) -> u64 {
    let r = request("GET", &format!("{mock}/v1/_mock/stats"), &[], "").await;
    r.json()["requests"].as_u64().unwrap()
}

fn chat(model: &str) -> String {
    format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#)
}

/// A provider entry pointing at `mock` with extra `x-mock-*` headers.
fn provider(name: &str, mock: &str, headers: &str) -> String {
    format!(
        "  - {{name: {name}, kind: openai_compatible, base_url: \"{mock}/v1\", headers: {{{headers}}}}}\n"
    )
}

fn start(providers: &[String], models: &str) -> Gateway {
    let cfg = format!(
        "store: {{url: \"{{DB}}\"}}\nproviders:\n{}models:\n{models}",
        providers.concat()
    );
    Gateway::start(&cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_is_within_tolerance() {
    let (a, b) = (start_mock().await, start_mock().await);
    let gw = start(
        &[provider("a", &a, ""), provider("b", &b, "")],
        "  - name: m\n    deployments:\n      - {provider: a, model: x, weight: 3}\n      - {provider: b, model: y, weight: 1}\n",
    );
    let url = format!("{}/v1/chat/completions", gw.url);
    for _ in 0..400 {
        let r = post_json(&url, &chat("m")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-sluice-route-reason"), Some("weighted"));
    }
    let (ca, cb) = (count(&a).await, count(&b).await);
    assert_eq!(ca + cb, 400);
    // 300 expected; +-45 is more than 5 standard deviations (sd ~ 8.7).
    assert!((255..=345).contains(&ca), "a got {ca}, b got {cb}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_deployment_fails_over_then_its_breaker_opens_and_later_closes() {
    let (bad, good) = (start_mock().await, start_mock().await);
    let models = "  - name: m\n    strategy: round_robin\n    breaker: {failures: 3, cooldown: 400ms}\n    deployments:\n      - {provider: a, model: x}\n      - {provider: b, model: y}\n";
    let mut gw = start(
        &[
            provider("a", &bad, "x-mock-status: \"500\""),
            provider("b", &good, ""),
        ],
        models,
    );
    let url = format!("{}/v1/chat/completions", gw.url);
    let mut failed_over = 0;
    for _ in 0..30 {
        let r = post_json(&url, &chat("m")).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("x-sluice-provider"), Some("b"));
        if r.header("x-sluice-attempts") == Some("2") {
            assert_eq!(r.header("x-sluice-fallback-reason"), Some("server_error"));
            failed_over += 1;
        }
    }
    assert_eq!(count(&bad).await, 3, "the breaker opened after 3 failures");
    assert_eq!(failed_over, 3);
    let admin = request("GET", &format!("{}/admin/routing", gw.url), &[], "").await;
    let deps = admin.json()["deployments"].as_array().unwrap().clone();
    let a = deps.iter().find(|d| d["provider"] == "a").unwrap();
    assert_eq!(a["breaker"], "open", "{admin:?}", admin = admin.json());
    assert_eq!(a["failures"], 3);
    let b = deps.iter().find(|d| d["provider"] == "b").unwrap();
    assert_eq!(b["breaker"], "closed");
    assert!(b["ewma_latency_ms"].as_f64().unwrap() > 0.0);

    // The deployment recovers (same identity, new config: its breaker state is kept).
    let cfg = format!(
        "store: {{url: \"sqlite://{}\"}}\nproviders:\n{}{}models:\n{models}",
        gw.db_path().display(),
        provider("a", &bad, ""),
        provider("b", &good, ""),
    );
    std::fs::write(gw.dir.path().join("sluice.yaml"), cfg).unwrap();
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &gw.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = count(&bad).await;
    post_json(&url, &chat("m")).await;
    assert_eq!(
        count(&bad).await,
        before,
        "still open right after the reload"
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    for _ in 0..10 {
        assert_eq!(post_json(&url, &chat("m")).await.status, 200);
    }
    assert!(
        count(&bad).await >= before + 4,
        "the probe succeeded and closed the breaker"
    );
    gw.stop(Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_bounded_by_attempts_and_by_the_deadline() {
    let (m1, m2) = (start_mock().await, start_mock().await);
    let gw = start(
        &[
            provider("a", &m1, "x-mock-status: \"500\""),
            provider("b", &m2, "x-mock-status: \"500\""),
        ],
        concat!(
            "  - name: three\n    retries: {max_attempts: 3, backoff: 5ms}\n    breaker: {failures: 0}\n",
            "    deployments: [{provider: a, model: x}]\n",
            "  - name: deadline\n    retries: {max_attempts: 1000, backoff: 40ms, max_backoff: 40ms, deadline: 400ms}\n",
            "    breaker: {failures: 0}\n    deployments: [{provider: b, model: x}]\n",
        ),
    );
    let url = format!("{}/v1/chat/completions", gw.url);
    let r = post_json(&url, &chat("three")).await;
    assert_eq!(r.status, 500);
    assert_eq!(count(&m1).await, 3);

    let t = Instant::now();
    let r = post_json(&url, &chat("deadline")).await;
    assert_eq!(r.status, 500);
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    let n = count(&m2).await;
    assert!((3..200).contains(&n), "attempts within the deadline: {n}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_only_within_the_deadline() {
    let (m1, m2) = (start_mock().await, start_mock().await);
    let limited = "x-mock-status: \"429\", x-mock-retry-after: \"1\"";
    let gw = start(
        &[provider("a", &m1, limited), provider("b", &m2, limited)],
        concat!(
            "  - name: short\n    retries: {max_attempts: 2, backoff: 1ms, deadline: 500ms}\n    breaker: {failures: 0}\n",
            "    deployments: [{provider: a, model: x}]\n",
            "  - name: long\n    retries: {max_attempts: 2, backoff: 1ms, deadline: 5s}\n    breaker: {failures: 0}\n",
            "    deployments: [{provider: b, model: x}]\n",
        ),
    );
    let url = format!("{}/v1/chat/completions", gw.url);
    let t = Instant::now();
    let r = post_json(&url, &chat("short")).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(t.elapsed() < Duration::from_millis(900));
    assert_eq!(count(&m1).await, 1, "waiting 1 s would pass the deadline");

    let t = Instant::now();
    let r = post_json(&url, &chat("long")).await;
    assert_eq!(r.status, 429);
    assert!(
        t.elapsed() >= Duration::from_millis(1000),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(count(&m2).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_retry_after_the_first_streamed_byte() {
    let (m1, m2) = (start_mock().await, start_mock().await);
    let gw = start(
        &[
            provider("a", &m1, "x-mock-fault: reset-after-headers, x-mock-stall-after: \"2\""),
            provider("b", &m2, ""),
        ],
        "  - name: m\n    retries: {max_attempts: 3}\n    deployments: [{provider: a, model: x}, {provider: b, model: y, priority: 1}]\n",
    );
    let url = format!("{}/v1/chat/completions", gw.url);
    let s = stream(
        &url,
        r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(s.status, 200);
    assert!(s.text().contains("\"error\""), "{}", s.text());
    assert_eq!(count(&m1).await, 1);
    assert_eq!(
        count(&m2).await,
        0,
        "nothing is retried once bytes went out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiers_aliases_latency_and_timeout_override() {
    let (fast, slow, t2) = (start_mock().await, start_mock().await, start_mock().await);
    let gw = start(
        &[
            provider("fast", &fast, ""),
            provider("slow", &slow, "x-mock-latency-ms: \"60\""),
            provider("tier2", &t2, ""),
        ],
        concat!(
            "  - name: lat\n    strategy: lowest_latency\n    aliases: [quick]\n",
            "    deployments: [{provider: slow, model: s}, {provider: fast, model: f}, {provider: tier2, model: t, priority: 1}]\n",
            "  - name: slowonly\n    deployments: [{provider: slow, model: s}]\n",
        ),
    );
    let url = format!("{}/v1/chat/completions", gw.url);
    for _ in 0..40 {
        let r = post_json(&url, &chat("quick")).await;
        assert_eq!(r.status, 200);
    }
    let (f, s) = (count(&fast).await, count(&slow).await);
    assert!(f >= 30 && s <= 10, "fast {f}, slow {s}");
    assert_eq!(
        count(&t2).await,
        0,
        "tier 2 only when tier 1 is unavailable"
    );
    let models = request("GET", &format!("{}/v1/models", gw.url), &[], "").await;
    assert!(String::from_utf8_lossy(&models.body).contains("\"quick\""));

    let t = Instant::now();
    let r = request(
        "POST",
        &url,
        &[
            ("content-type", "application/json"),
            ("x-sluice-timeout-ms", "20"),
        ],
        chat("slowonly"),
    )
    .await;
    assert_eq!(r.status, 504, "{}", String::from_utf8_lossy(&r.body));
    assert!(t.elapsed() < Duration::from_millis(1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_only_routes_never_reach_cloud_and_on_prem_mode_refuses_cloud_at_load() {
    let (cloud, local) = (start_mock().await, start_mock().await);
    let gw = start(
        &[
            provider("cloud", &cloud, ""),
            format!(
                "  - {{name: box, kind: openai_compatible, base_url: \"{local}/v1\", locality: on_prem}}\n"
            ),
        ],
        "  - name: m\n    data_policy: local_only\n    deployments: [{provider: cloud, model: x, weight: 100}, {provider: box, model: y}]\n",
    );
    let url = format!("{}/v1/chat/completions", gw.url);
    for _ in 0..10 {
        let r = post_json(&url, &chat("m")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-sluice-provider"), Some("box"));
    }
    assert_eq!(count(&cloud).await, 0);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.yaml");
    std::fs::write(
        &path,
        format!(
            "mode: on_prem\nproviders:\n{}models:\n  - {{name: m, deployments: [{{provider: cloud, model: x}}]}}\n",
            provider("cloud", &cloud, "")
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["config", "check"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("providers[0].locality") && text.contains("mode: on_prem"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_class_fallbacks_and_wildcard_routes() {
    let (small, big, limited, filtered) = (
        start_mock().await,
        start_mock().await,
        start_mock().await,
        start_mock().await,
    );
    let cfg = format!(
        "store: {{url: \"{{DB}}\"}}\nfallbacks_by_class: {{rate_limited: [big], content_filter: [big]}}\nproviders:\n{}{}{}{}models:\n{}",
        provider(
            "small",
            &small,
            "x-mock-status: \"400\", x-mock-error-code: context_length_exceeded"
        ),
        provider("big", &big, ""),
        provider("limited", &limited, "x-mock-status: \"429\""),
        provider(
            "filtered",
            &filtered,
            "x-mock-status: \"400\", x-mock-error-code: content_filter"
        ),
        concat!(
            "  - name: small\n    fallbacks_by_class: {context_window_exceeded: [big]}\n",
            "    deployments: [{provider: small, model: s}]\n",
            "  - {name: small-alone, deployments: [{provider: small, model: s}]}\n",
            "  - {name: big, deployments: [{provider: big, model: b}]}\n",
            "  - {name: limited, deployments: [{provider: limited, model: l}]}\n",
            "  - {name: filtered, deployments: [{provider: filtered, model: f}]}\n",
            "  - {name: \"up/*\", deployments: [{provider: big, model: \"*\"}]}\n",
        )
    );
    let gw = Gateway::start(&cfg);
    let url = format!("{}/v1/chat/completions", gw.url);

    let r = post_json(&url, &chat("small")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-sluice-provider"), Some("big"));
    assert_eq!(
        r.header("x-sluice-fallback-reason"),
        Some("context_window_exceeded")
    );
    assert_eq!(r.header("x-sluice-attempts"), Some("2"));
    assert_eq!(r.header("x-sluice-route-reason"), Some("fallback_route"));
    // Without a class fallback the client's error comes back, tried once.
    let r = post_json(&url, &chat("small-alone")).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.openai_error()["code"], "context_length_exceeded");
    assert_eq!(count(&small).await, 2);

    for (model, reason) in [("limited", "rate_limited"), ("filtered", "content_filter")] {
        let r = post_json(&url, &chat(model)).await;
        assert_eq!(r.status, 200, "{model}");
        assert_eq!(r.header("x-sluice-fallback-reason"), Some(reason));
    }

    let r = post_json(&url, &chat("up/any-model-1")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-sluice-model"), Some("any-model-1"));
    let last = request("GET", &format!("{big}/v1/_mock/last_request"), &[], "").await;
    assert!(
        String::from_utf8_lossy(&last.body).contains("any-model-1"),
        "{}",
        String::from_utf8_lossy(&last.body)
    );
    let m = request("GET", &format!("{}/v1/models/up/x", gw.url), &[], "").await;
    assert_eq!(m.status, 200);
    assert_eq!(post_json(&url, &chat("up/")).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_at_its_rpm_capacity_is_skipped() {
    let (a, b) = (start_mock().await, start_mock().await);
    let gw = start(
        &[provider("a", &a, ""), provider("b", &b, "")],
        "  - name: m\n    deployments: [{provider: a, model: x, rpm: 3}, {provider: b, model: y, priority: 1}]\n",
    );
    let url = format!("{}/v1/chat/completions", gw.url);
    let mut reasons = Vec::new();
    for _ in 0..7 {
        let r = post_json(&url, &chat("m")).await;
        assert_eq!(r.status, 200);
        reasons.push(r.header("x-sluice-route-reason").unwrap().to_string());
    }
    assert_eq!((count(&a).await, count(&b).await), (3, 4));
    assert_eq!(reasons[0], "weighted");
    assert_eq!(reasons[6], "unavailable_skipped");
}
