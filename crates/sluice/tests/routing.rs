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

async fn cancelled(mock: &str) -> u64 {
    let r = request("GET", &format!("{mock}/v1/_mock/stats"), &[], "").await;
    r.json()["cancelled"].as_u64().unwrap()
}

fn chat_stream(model: &str) -> String {
    format!(r#"{{"model":"{model}","stream":true,"messages":[{{"role":"user","content":"hi"}}]}}"#)
}

/// Posts a streamed chat request with extra headers and reads it whole.
async fn stream_with(url: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut h = vec![("content-type", "application/json")];
    h.extend_from_slice(headers);
    request("POST", url, &h, body.to_string()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_token_idle_and_total_timeouts_per_deployment_and_per_request() {
    let (slow, fast, gappy, long) = (
        start_mock().await,
        start_mock().await,
        start_mock().await,
        start_mock().await,
    );
    let gw = start(
        &[
            provider("slow", &slow, "x-mock-ttft-ms: \"1500\""),
            provider("fast", &fast, ""),
            provider("gappy", &gappy, "x-mock-first-chunk-pause-ms: \"1500\""),
            provider("long", &long, "x-mock-chunk-delay-ms: \"100\", x-mock-chunks: \"30\", x-mock-latency-ms: \"0\""),
        ],
        concat!(
            "  - name: ttft\n    deployments:\n",
            "      - {provider: slow, model: s, timeouts: {first_token: 200ms}}\n",
            "      - {provider: fast, model: f, priority: 1}\n",
            "  - {name: slowonly, breaker: {failures: 0}, deployments: [{provider: slow, model: s, timeouts: {first_token: 5s}}]}\n",
            "  - {name: idle, deployments: [{provider: gappy, model: g, timeouts: {idle: 200ms}}]}\n",
            "  - {name: total, deployments: [{provider: long, model: l, timeouts: {total: 500ms}}]}\n",
            "  - {name: plain, deployments: [{provider: long, model: l}]}\n",
        ),
    );
    let url = format!("{}/v1/chat/completions", gw.url);

    // A first token later than the deployment's limit: the next deployment answers.
    let t = Instant::now();
    let r = stream_with(&url, &[], &chat_stream("ttft")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-sluice-provider"), Some("fast"));
    assert_eq!(r.header("x-sluice-attempts"), Some("2"));
    assert_eq!(r.header("x-sluice-fallback-reason"), Some("timeout"));
    assert!(String::from_utf8_lossy(&r.body).contains("[DONE]"));
    assert!(
        t.elapsed() < Duration::from_millis(1200),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(count(&slow).await, 1);

    // The client shortens the configured 5 s first-token limit to 100 ms.
    let t = Instant::now();
    let r = stream_with(
        &url,
        &[("x-sluice-first-token-timeout-ms", "100")],
        &chat_stream("slowonly"),
    )
    .await;
    assert_eq!(r.status, 504, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t.elapsed()
    );
    // ... but cannot lengthen it: 10 s asked, the configured 200 ms holds (and fails over).
    let r = stream_with(
        &url,
        &[("x-sluice-first-token-timeout-ms", "10000")],
        &chat_stream("ttft"),
    )
    .await;
    assert_eq!(r.header("x-sluice-provider"), Some("fast"));

    // Silence between chunks longer than the deployment's idle limit ends the stream.
    let t = Instant::now();
    let s = stream(&url, &chat_stream("idle")).await;
    assert_eq!(s.status, 200);
    assert!(s.text().contains("upstream_stream_idle"), "{}", s.text());
    assert!(
        t.elapsed() < Duration::from_millis(1200),
        "{:?}",
        t.elapsed()
    );

    // A stream that would take 3 s is cut at the 500 ms total, with an error event.
    let t = Instant::now();
    let s = stream(&url, &chat_stream("total")).await;
    assert!(s.text().contains("upstream_total_timeout"), "{}", s.text());
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    // The same through the per-request header on a route without a configured total.
    let t = Instant::now();
    let r = stream_with(
        &url,
        &[("x-sluice-total-timeout-ms", "300")],
        &chat_stream("plain"),
    )
    .await;
    assert!(String::from_utf8_lossy(&r.body).contains("upstream_total_timeout"));
    assert!(
        t.elapsed() < Duration::from_millis(1200),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedging_serves_the_fast_deployment_and_cancels_the_slow_one() {
    let (slow, fast) = (start_mock().await, start_mock().await);
    let mut gw = start(
        &[
            provider("slow", &slow, "x-mock-ttft-ms: \"1500\""),
            provider("fast", &fast, "x-mock-ttft-ms: \"100\""),
            provider("slow-json", &slow, "x-mock-latency-ms: \"1500\""),
            provider("fast-json", &fast, "x-mock-latency-ms: \"100\""),
        ],
        concat!(
            "  - name: h\n    hedge: {after: 200ms}\n",
            "    deployments: [{provider: slow, model: s}, {provider: fast, model: f, priority: 1}]\n",
            "  - name: h-json\n    hedge: {after: 200ms}\n",
            "    deployments: [{provider: slow-json, model: s}, {provider: fast-json, model: f, priority: 1}]\n",
            "  - name: quick-first\n    hedge: {after: 300ms}\n",
            "    deployments: [{provider: fast, model: f}, {provider: slow, model: s, priority: 1}]\n",
        ),
    );
    let url = format!("{}/v1/chat/completions", gw.url);
    let t = Instant::now();
    let s = stream(&url, &chat_stream("h")).await;
    let first = s
        .frames
        .first()
        .map(|(at, _)| at.duration_since(t))
        .unwrap();
    assert_eq!(s.status, 200);
    assert_eq!(s.headers["x-sluice-provider"], "fast");
    assert_eq!(s.headers["x-sluice-route-reason"], "hedged");
    assert_eq!(s.headers["x-sluice-attempts"], "2");
    assert!(s.text().contains("[DONE]"));
    // threshold (200 ms) + the fast one's first token (100 ms), far from the slow 1.5 s.
    assert!(
        first >= Duration::from_millis(280) && first < Duration::from_millis(900),
        "first chunk after {first:?}"
    );
    assert_eq!((count(&slow).await, count(&fast).await), (1, 1));
    // The slow attempt was dropped: its stream never finished.
    let mut waited = 0;
    while cancelled(&slow).await == 0 && waited < 40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    assert_eq!(cancelled(&slow).await, 1, "the slow request was cancelled");
    assert_eq!(cancelled(&fast).await, 0);

    // A first token before the threshold sends no hedge.
    let s = stream(&url, &chat_stream("quick-first")).await;
    assert_eq!(s.headers["x-sluice-provider"], "fast");
    assert_eq!(s.headers["x-sluice-attempts"], "1");
    assert_eq!(count(&slow).await, 1, "no hedge was sent");

    // Without a stream the first token comes with the headers: the same race on them.
    let t = Instant::now();
    let r = post_json(&url, &chat("h-json")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-sluice-provider"), Some("fast-json"));
    assert_eq!(r.header("x-sluice-route-reason"), Some("hedged"));
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );

    // One record per request: the hedged ones carry the cancelled attempt as a line,
    // charged for its prompt (the provider may bill what it started).
    assert_eq!(gw.stop(Duration::from_secs(10)), Some(0));
    let rows = usage_rows(&gw.db_path()).await;
    assert_eq!(rows.len(), 3, "3 requests, one record each: {rows:#?}");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", gw.db_path().display()))
        .await
        .unwrap();
    let logs: Vec<(String, Option<String>, Option<i64>)> = sqlx::query_as(
        "SELECT provider, attempt_log, cost_micro_usd FROM usage_records ORDER BY rowid",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let hedged: Vec<_> = logs.iter().filter(|l| l.1.is_some()).collect();
    assert_eq!(hedged.len(), 2, "{logs:?}");
    for ((winner, log, cost), (loser, won_by)) in hedged
        .into_iter()
        .zip([("slow", "fast"), ("slow-json", "fast-json")])
    {
        assert_eq!(winner, won_by);
        let lines: serde_json::Value = serde_json::from_str(log.as_deref().unwrap()).unwrap();
        assert_eq!(lines[0]["provider"], loser, "{lines}");
        assert_eq!(lines[0]["outcome"], "hedge_cancelled");
        assert_eq!(lines[0]["billed"], true);
        assert!(lines[0]["input_tokens"].as_u64().unwrap() > 0, "{lines}");
        // `s` and `f` have no price: the cost is unknown (null), never 0.
        assert!(lines[0]["cost_micro_usd"].is_null(), "{lines}");
        assert!(cost.is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn most_headroom_follows_rate_limit_headers_and_tpm_capacity_is_honoured() {
    let (a, b, c, t1, t2) = (
        start_mock().await,
        start_mock().await,
        start_mock().await,
        start_mock().await,
        start_mock().await,
    );
    let gw = start(
        &[
            provider("a", &a, "x-mock-ratelimit-remaining-requests: \"10\", x-mock-ratelimit-limit-requests: \"100\""),
            provider("b", &b, "x-mock-ratelimit-remaining-requests: \"90\", x-mock-ratelimit-limit-requests: \"100\""),
            provider("c", &c, "x-mock-ratelimit-remaining-tokens: \"0\", x-mock-ratelimit-reset-tokens: \"1m\""),
            provider("t1", &t1, ""),
            provider("t2", &t2, ""),
        ],
        concat!(
            "  - name: m\n    strategy: most_headroom\n",
            "    deployments: [{provider: a, model: x}, {provider: b, model: y}, {provider: c, model: z}]\n",
            "  - name: tpm\n    deployments: [{provider: t1, model: x, tpm: 3000}, {provider: t2, model: y, priority: 1}]\n",
        ),
    );
    let url = format!("{}/v1/chat/completions", gw.url);
    let mut reasons = std::collections::HashSet::new();
    for _ in 0..30 {
        let r = post_json(&url, &chat("m")).await;
        assert_eq!(r.status, 200);
        reasons.insert(r.header("x-sluice-route-reason").unwrap().to_string());
    }
    let (ca, cb, cc) = (count(&a).await, count(&b).await, count(&c).await);
    // Until each answered once nothing is known; after that b (90 %) beats a (10 %), and c
    // (no tokens left until its reset) gets nothing more.
    assert!(cc <= 1, "c got {cc}");
    assert!(ca <= 2 && cb >= 27, "a {ca}, b {cb}, c {cc}");
    assert!(reasons.contains("most_headroom"), "{reasons:?}");
    let admin = request("GET", &format!("{}/admin/routing", gw.url), &[], "").await;
    let deps = admin.json()["deployments"].as_array().unwrap().clone();
    let by = |p: &str| deps.iter().find(|d| d["provider"] == p).unwrap().clone();
    assert_eq!(by("c")["upstream_exhausted"], true);
    assert_eq!(by("a")["upstream_headroom_permille"], 100);
    assert_eq!(by("b")["upstream_headroom_permille"], 900);

    // Each request is estimated at prompt / 4 + max_tokens (1000): three fit in 3000 tpm.
    let body = r#"{"model":"tpm","max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}"#;
    for _ in 0..5 {
        assert_eq!(post_json(&url, body).await.status, 200);
    }
    assert_eq!((count(&t1).await, count(&t2).await), (3, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cheapest_capable_picks_by_what_the_request_needs() {
    let (text, tools, vision, big) = (
        start_mock().await,
        start_mock().await,
        start_mock().await,
        start_mock().await,
    );
    let none = "{vision: false, tools: false, json_schema: false";
    let models = format!(concat!(
            "  - name: cc\n    strategy: cheapest_capable\n    deployments:\n",
            "      - {{provider: vision, model: v, price: {{input: 5, output: 15}}, capabilities: {{vision: true, tools: true, json_schema: true, context_window: 128000}}}}\n",
            "      - {{provider: text, model: t, price: {{input: 0.1, output: 0.4}}, capabilities: {none}, context_window: 100}}}}\n",
            "      - {{provider: tools, model: o, price: {{input: 1, output: 2}}, capabilities: {{vision: false, tools: true, json_schema: false, context_window: 32000}}}}\n",
            "  - name: textonly\n    strategy: cheapest_capable\n    fallbacks_by_class: {{context_window_exceeded: [large]}}\n",
            "    deployments: [{{provider: text, model: t, capabilities: {none}, context_window: 100}}}}]\n",
            "  - name: textonly-nofb\n    strategy: cheapest_capable\n",
            "    deployments: [{{provider: text, model: t, capabilities: {none}, context_window: 100}}}}]\n",
            "  - {{name: large, deployments: [{{provider: big, model: b, capabilities: {{context_window: 1000000}}}}]}}\n",
        ), none = none);
    let cfg = format!(
        "store: {{url: \"{{DB}}\"}}\nproviders:\n{}{}{}{}models:\n{models}",
        provider("text", &text, ""),
        provider("tools", &tools, ""),
        provider("vision", &vision, ""),
        provider("big", &big, ""),
    );
    let gw = Gateway::start(&cfg);
    let url = format!("{}/v1/chat/completions", gw.url);
    let long = "word ".repeat(200); // ~250 tokens: over the 100-token window of `t`
    let cases = [
        ("text", r#"{"model":"cc","messages":[{"role":"user","content":"hi"}]}"#.to_string()),
        ("tools", r#"{"model":"cc","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f","parameters":{}}}]}"#.to_string()),
        ("vision", r#"{"model":"cc","messages":[{"role":"user","content":[{"type":"text","text":"what is this?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}]}"#.to_string()),
        ("vision", r#"{"model":"cc","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{}}}}"#.to_string()),
        ("tools", format!(r#"{{"model":"cc","messages":[{{"role":"user","content":"{long}"}}]}}"#)),
    ];
    for (want, body) in &cases {
        let r = post_json(&url, body).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("x-sluice-provider"), Some(*want), "{body}");
        assert_eq!(r.header("x-sluice-route-reason"), Some("cheapest_capable"));
    }
    // Nothing capable: a 400 naming the missing capability, and nothing was sent.
    let before = count(&text).await;
    let r = post_json(&url, &cases[2].1.replace("\"cc\"", "\"textonly-nofb\"")).await;
    assert_eq!(r.status, 400);
    let e = r.openai_error();
    assert!(e["message"].as_str().unwrap().contains("vision"), "{e}");
    assert_eq!(e["param"], "messages");
    let r = post_json(&url, &cases[1].1.replace("\"cc\"", "\"textonly-nofb\"")).await;
    assert_eq!(r.status, 400);
    assert!(r.openai_error()["message"]
        .as_str()
        .unwrap()
        .contains("tool calling"));
    assert_eq!(count(&text).await, before);
    // Too long for the route's context window: its context-window fallback takes it.
    let r = post_json(&url, &cases[4].1.replace("\"cc\"", "\"textonly\"")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-sluice-provider"), Some("big"));
    assert_eq!(
        r.header("x-sluice-fallback-reason"),
        Some("context_window_exceeded")
    );
    let r = post_json(&url, &cases[4].1.replace("\"cc\"", "\"textonly-nofb\"")).await;
    assert_eq!(r.status, 400);
    assert!(r.openai_error()["message"]
        .as_str()
        .unwrap()
        .contains("context window"));
    assert_eq!(count(&text).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complexity_route_sends_simple_prompts_cheap_and_hard_ones_strong() {
    let (cheap, strong) = (start_mock().await, start_mock().await);
    let gw = start(
        &[provider("cheap", &cheap, ""), provider("strong", &strong, "")],
        concat!(
            "  - {name: small, deployments: [{provider: cheap, model: c}]}\n",
            "  - {name: large, deployments: [{provider: strong, model: s}]}\n",
            "  - name: auto\n    complexity: {simple: small, hard: large, long_prompt_tokens: 200}\n",
        ),
    );
    let url = format!("{}/v1/chat/completions", gw.url);
    let msg = |text: &str| {
        format!(r#"{{"model":"auto","messages":[{{"role":"user","content":"{text}"}}]}}"#)
    };
    let cases = [
        (msg("What is the capital of France?"), "cheap", "complexity:simple"),
        (msg("Fix this: ```fn main() { let x = 1 }```"), "strong", "complexity:hard(code)"),
        (msg("Think step by step: how many primes are below 100?"), "strong", "complexity:hard(reasoning)"),
        (msg(&"lorem ipsum ".repeat(100)), "strong", "complexity:hard(long_prompt)"),
        (
            r#"{"model":"auto","messages":[{"role":"user","content":"weather?"}],"tools":[{"type":"function","function":{"name":"w"}}]}"#.to_string(),
            "strong",
            "complexity:hard(tools)",
        ),
    ];
    for (body, provider, reason) in &cases {
        let r = post_json(&url, body).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("x-sluice-provider"), Some(*provider), "{body}");
        assert_eq!(r.header("x-sluice-route-reason"), Some(*reason));
    }
    assert_eq!((count(&cheap).await, count(&strong).await), (1, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_health_checks_open_the_breaker_of_a_dead_provider_without_traffic() {
    let (dead, up) = (start_mock().await, start_mock().await);
    let gw = start(
        &[
            format!(
                "  - {{name: dead, kind: openai_compatible, base_url: \"{dead}/v1\", headers: {{x-mock-status: \"500\"}}, health_check: {{interval: 50ms}}}}\n"
            ),
            provider("up", &up, ""),
        ],
        "  - name: m\n    breaker: {failures: 3, cooldown: 60s}\n    deployments: [{provider: dead, model: x}, {provider: up, model: y, priority: 1}]\n",
    );
    let mut open = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let admin = request("GET", &format!("{}/admin/routing", gw.url), &[], "").await;
        let deps = admin.json()["deployments"].as_array().unwrap().clone();
        let d = deps.iter().find(|d| d["provider"] == "dead").unwrap();
        if d["breaker"] == "open" {
            open = true;
            break;
        }
    }
    assert!(open, "three failed checks open the breaker");
    let last = request("GET", &format!("{dead}/v1/_mock/last_request"), &[], "").await;
    assert_eq!(last.json()["path"], "/v1/models");
    // Client traffic never touches the dead provider: the first try goes to the healthy one.
    let url = format!("{}/v1/chat/completions", gw.url);
    for _ in 0..5 {
        let r = post_json(&url, &chat("m")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-sluice-provider"), Some("up"));
        assert_eq!(r.header("x-sluice-attempts"), Some("1"));
        assert_eq!(
            r.header("x-sluice-route-reason"),
            Some("unavailable_skipped")
        );
    }
}
