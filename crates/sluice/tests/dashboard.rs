//! Issue 17 end to end against the real binary: `POST /v1/feedback` (who may send it, bad
//! input, storage, the analytics and `sluice usage quality`), `GET /admin/insights` from
//! requests made through the gateway, and the dashboard's embedded assets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::gov::*;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

fn config_with(extra_providers: &str, extra_models: &str) -> String {
    let base = config();
    let base = base.replacen("providers:\n", &format!("providers:\n{extra_providers}"), 1);
    format!("{base}{extra_models}")
}

fn request_id(r: &Reply) -> String {
    r.header("x-request-id").unwrap().to_string()
}

async fn feedback(gw: &Gateway, key: &str, body: Value) -> Reply {
    admin(gw, key, "POST", "/v1/feedback", body).await
}

/// The request log rows once `n` records are stored (the sink writes within ~100 ms).
async fn logged(gw: &Gateway, query: &str, n: usize) -> Vec<Value> {
    for _ in 0..100 {
        let r = admin(
            gw,
            MASTER,
            "GET",
            &format!("/admin/requests?limit=1000{query}"),
            Value::Null,
        )
        .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let rows = r.json()["data"].as_array().unwrap().clone();
        if rows.len() >= n {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} records were stored");
}

#[tokio::test]
async fn feedback_is_accepted_from_the_requesting_key_or_an_admin_and_shows_in_analytics() {
    let gw = Gateway::start(&config());
    for t in ["t1", "t2"] {
        let r = admin(&gw, MASTER, "POST", "/admin/teams", json!({"name": t})).await;
        assert_eq!(r.status, 201);
    }
    let (a_id, a) = create_key(&gw, json!({"team": "t1"})).await;
    let (_, b) = create_key(&gw, json!({"team": "t1"})).await;
    let (_, viewer) = create_key(&gw, json!({"role": "viewer"})).await;
    let (_, team_admin) = create_key(&gw, json!({"role": "team_admin", "team": "t1"})).await;
    let (_, admin_key) = create_key(&gw, json!({"role": "admin", "team": "t2"})).await;

    let first = chat_as(&gw, &a, "mock-1", 8).await;
    assert_eq!(first.status, 200);
    let first = request_id(&first);
    let second = chat_as(&gw, &a, "mock-2", 8).await;
    let second = request_id(&second);
    let third = chat_as(&gw, MASTER, "mock-1", 8).await;
    let third = request_id(&third);

    // Right after the answer: the record may still be in the sink's queue; it is waited for.
    let r = feedback(
        &gw,
        &a,
        json!({"request_id": first, "score": 0.9, "label": "helpful"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["score"], 0.9);

    // Another key of the same team, a viewer, a team_admin: not theirs to score.
    for key in [&b, &viewer, &team_admin] {
        let r = feedback(&gw, key, json!({"request_id": first, "score": 0.1})).await;
        assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
        assert!(r.openai_error()["message"]
            .as_str()
            .unwrap()
            .contains("made the request"));
    }
    // An admin key (of another team) and the master key may.
    let r = feedback(&gw, &admin_key, json!({"request_id": second, "score": 1})).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = feedback(
        &gw,
        MASTER,
        json!({"request_id": third, "score": 0.2, "comment": "wrong"}),
    )
    .await;
    assert_eq!(r.status, 200);
    // The key that made it replaces its own earlier score.
    let r = feedback(&gw, &a, json!({"request_id": first, "score": 0.6})).await;
    assert_eq!(r.status, 200);

    // Bad input names the field; an unknown request is a 404.
    for (body, param) in [
        (json!({"request_id": first, "score": 1.5}), "score"),
        (json!({"request_id": first, "score": -0.1}), "score"),
        (json!({"request_id": first, "score": "good"}), "score"),
        (
            json!({"request_id": first, "score": 1, "label": "x".repeat(65)}),
            "label",
        ),
        (json!({"request_id": "", "score": 1}), "request_id"),
    ] {
        let r = feedback(&gw, &a, body.clone()).await;
        assert_eq!(
            r.status,
            400,
            "{body}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.openai_error()["param"], param, "{body}");
    }
    let r = feedback(
        &gw,
        &a,
        json!({"request_id": first, "score": 1, "stars": 5}),
    )
    .await;
    assert_eq!(r.status, 400);
    let r = feedback(&gw, &a, json!({"request_id": "req_nope", "score": 1})).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.openai_error()["param"], "request_id");
    // Without a key at all: 401 like every other route.
    let r = post_json(&format!("{}/v1/feedback", gw.url), "{}").await;
    assert_eq!(r.status, 401);

    // Stored with the record: the request log shows it, the analytics average it.
    let rows = logged(&gw, &format!("&request_id={first}"), 1).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["feedback"]["score"], 0.6);
    assert_eq!(rows[0]["feedback"]["label"], Value::Null);
    assert_eq!(rows[0]["key_id"], a_id.as_str());
    let by_model = admin(
        &gw,
        MASTER,
        "GET",
        "/admin/usage?group_by=model",
        Value::Null,
    )
    .await;
    let by_model = by_model.json()["rows"].as_array().unwrap().clone();
    let model = |m: &str| by_model.iter().find(|r| r["model"] == m).unwrap().clone();
    assert_eq!(model("mock-1")["feedback_count"], 2);
    assert_eq!(model("mock-1")["mean_score"], 0.4); // (0.6 + 0.2) / 2
    assert_eq!(model("mock-2")["feedback_count"], 1);
    assert_eq!(model("mock-2")["mean_score"], 1.0);
    let by_team = admin(
        &gw,
        MASTER,
        "GET",
        "/admin/usage?group_by=team,deployment",
        Value::Null,
    )
    .await;
    let t1: Vec<Value> = by_team.json()["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["team"] == "t1")
        .cloned()
        .collect();
    assert_eq!(
        t1.iter()
            .map(|r| r["feedback_count"].as_u64().unwrap())
            .sum::<u64>(),
        2
    );
    // A team-scoped reader sees its team's scores only (not the master's request).
    let (_, t1_viewer) = create_key(&gw, json!({"role": "viewer", "team": "t1"})).await;
    let r = admin(&gw, &t1_viewer, "GET", "/admin/usage", Value::Null).await;
    assert_eq!(r.json()["rows"][0]["feedback_count"], 2);
    assert_eq!(r.json()["rows"][0]["mean_score"], 0.8); // (0.6 + 1.0) / 2
    let r = admin(&gw, MASTER, "GET", "/admin/usage", Value::Null).await;
    assert_eq!(r.json()["rows"][0]["feedback_count"], 3);

    // `sluice usage quality` prints the same figures.
    let (ok, out, err) = cli(
        &gw,
        &["usage", "quality", "--by", "model", "--format", "json"],
    );
    assert!(ok, "{err}");
    let printed: Value = serde_json::from_str(&out).unwrap();
    let m1 = printed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["model"] == "mock-1")
        .unwrap();
    assert_eq!(m1["mean_score"], 0.4);
    let (ok, out, err) = cli(&gw, &["usage", "quality"]);
    assert!(ok, "{err}");
    assert!(out.contains("MEAN_SCORE") && out.contains("0.4"), "{out}");
}

#[tokio::test]
async fn insights_find_cheap_tier_cache_and_unreliable_deployment_savings() {
    let mock = start_mock().await;
    let gw = Gateway::start(&config_with(
        &format!(
            "  - name: broken\n    kind: openai_compatible\n    base_url: {mock}/v1\n    \
             headers: {{x-mock-status: \"500\"}}\n"
        ),
        "  - name: big\n    deployments: [{provider: local, model: mock-1, price: {input: 10, output: 20}}]\n\
         \x20 - name: small\n    deployments: [{provider: local, model: mock-1, price: {input: \"0.1\", output: \"0.2\"}}]\n\
         \x20 - name: flaky\n    deployments: [{provider: broken, model: m}]\n    fallbacks: [small]\n",
    ));
    assert_eq!(
        admin(&gw, MASTER, "POST", "/admin/teams", json!({"name": "t1"}))
            .await
            .status,
        201
    );
    let (_, key) = create_key(&gw, json!({"team": "t1"})).await;
    // Three identical short requests and one other, all on the dear model.
    for _ in 0..3 {
        assert_eq!(chat_as(&gw, &key, "big", 8).await.status, 200);
    }
    assert_eq!(chat_as(&gw, &key, "big", 9).await.status, 200);
    // Five requests whose first deployment fails, answered by the fallback.
    for _ in 0..5 {
        let r = chat_as(&gw, &key, "flaky", 8).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    let rows = logged(&gw, "", 9).await;
    let big: Vec<&Value> = rows
        .iter()
        .filter(|r| r["requested_model"] == "big")
        .collect();
    assert_eq!(big.len(), 4);
    let cost: i64 = big
        .iter()
        .map(|r| r["cost_micro_usd"].as_i64().unwrap())
        .sum();
    let on_small: i64 = big
        .iter()
        .map(|r| {
            let (i, o) = (
                r["input_tokens"].as_i64().unwrap(),
                r["output_tokens"].as_i64().unwrap(),
            );
            // $0.10 and $0.20 per 1M tokens, rounded up to the micro-USD.
            (i * 100_000 + o * 200_000 + 999_999) / 1_000_000
        })
        .sum();
    assert!(cost > 0 && on_small < cost);
    // The repeated requests: the records of the first body (max_tokens 8) after its first.
    let mut repeats: Vec<&&Value> = big
        .iter()
        .filter(|r| r["request_hash"] == big[3]["request_hash"])
        .collect();
    assert_eq!(
        repeats.len(),
        3,
        "the three identical bodies share a hash: {big:?}"
    );
    repeats.sort_by_key(|r| r["ts_ms"].as_i64());
    let repeat_cost: i64 = repeats[1..]
        .iter()
        .map(|r| r["cost_micro_usd"].as_i64().unwrap())
        .sum();
    // The flaky route answered from `small` after a failed attempt on `broken`.
    let flaky: Vec<&Value> = rows
        .iter()
        .filter(|r| r["requested_model"] == "flaky")
        .collect();
    assert!(
        flaky
            .iter()
            .all(|r| r["attempt_log"][0]["provider"] == "broken"),
        "{flaky:?}"
    );
    let broken_attempts: usize = flaky
        .iter()
        .map(|r| r["attempt_log"].as_array().unwrap().len())
        .sum();

    let r = admin(&gw, MASTER, "GET", "/admin/insights", Value::Null).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["cheapest_model"], "small");
    assert_eq!(v["records"], 9);
    let ops = v["opportunities"].as_array().unwrap();
    let find = |kind: &str, model: &str| {
        ops.iter()
            .find(|o| o["kind"] == kind && (o["model"] == model || o["deployment"] == model))
            .unwrap_or_else(|| panic!("no {kind} opportunity for {model}: {v}"))
            .clone()
    };
    let cheap = find("cheap_tier", "big");
    assert_eq!(cheap["requests"], 4);
    assert_eq!(cheap["cost_micro_usd"], cost);
    assert_eq!(cheap["cheap_cost_micro_usd"], on_small);
    assert_eq!(cheap["savings_micro_usd"], cost - on_small);
    assert!(cheap["config_change"]
        .as_str()
        .unwrap()
        .contains("complexity: {simple: small, hard: big}"));
    let cache = find("cache", "big");
    assert_eq!(cache["requests"], 2);
    assert_eq!(cache["savings_micro_usd"], repeat_cost);
    assert!(cache["config_change"]
        .as_str()
        .unwrap()
        .starts_with("cache:"));
    let unreliable = find("unreliable_deployment", "m");
    assert_eq!(unreliable["provider"], "broken");
    assert_eq!(unreliable["attempts"], broken_attempts);
    assert_eq!(unreliable["failure_rate"], 1.0);
    assert_eq!(unreliable["routes"], json!(["flaky"]));
    assert!(ops
        .iter()
        .all(|o| o["kind"] != "cheap_tier" || o["model"] != "small"));
    let total: i64 = ops
        .iter()
        .map(|o| o["savings_micro_usd"].as_i64().unwrap())
        .sum();
    assert_eq!(v["total_savings_micro_usd"], total);

    // Scoped like /admin/usage: another team's reader finds nothing; asking for t1 is a 403.
    assert_eq!(
        admin(&gw, MASTER, "POST", "/admin/teams", json!({"name": "t9"}))
            .await
            .status,
        201
    );
    let (_, other) = create_key(&gw, json!({"role": "viewer", "team": "t9"})).await;
    let r = admin(&gw, &other, "GET", "/admin/insights", Value::Null).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["records"], 0);
    assert_eq!(r.json()["opportunities"], json!([]));
    let r = admin(&gw, &other, "GET", "/admin/insights?team=t1", Value::Null).await;
    assert_eq!(r.status, 403);
    let r = admin(&gw, &key, "GET", "/admin/insights", Value::Null).await;
    assert_eq!(r.status, 403, "an inference key has no admin role");
    let r = admin(
        &gw,
        MASTER,
        "GET",
        "/admin/insights?since=yesterday",
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.openai_error()["param"], "since");
    // `sluice usage insights` prints them.
    let (ok, out, err) = cli(&gw, &["usage", "insights"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("cheap_tier") && out.contains("unreliable_deployment"),
        "{out}"
    );
}

/// `http://` or `https://` anywhere: the dashboard must not load or post anything elsewhere.
fn external_urls(text: &str) -> Vec<String> {
    let lower = text.to_ascii_lowercase();
    let mut found = Vec::new();
    // Absolute URLs, and protocol-relative ones (`"//host`, `(//host`).
    for scheme in ["http://", "https://", "\"//", "'//", "(//", "`//"] {
        let mut from = 0;
        while let Some(i) = lower[from..].find(scheme) {
            let at = from + i;
            found.push(text[at..(at + 60).min(text.len())].to_string());
            from = at + scheme.len();
        }
    }
    found
}

#[test]
fn the_external_url_check_can_fail() {
    assert_eq!(
        external_urls("<script src=\"https://cdn.example/x.js\">").len(),
        1
    );
    assert_eq!(external_urls("fetch('HTTP://10.0.0.1/')").len(), 1);
    assert_eq!(external_urls("url(//fonts.example/a.woff)").len(), 1);
    assert!(external_urls("fetch('/admin/usage') // a comment").is_empty());
}

#[tokio::test]
async fn the_dashboard_is_embedded_small_self_contained_and_public() {
    let assets = sluice::api::ui::ASSETS;
    let total: usize = assets.iter().map(|(_, _, body)| body.len()).sum();
    assert!(total < 200 * 1024, "the first page loads {total} bytes");
    for (path, _, body) in assets {
        let urls = external_urls(body);
        assert!(urls.is_empty(), "{path} refers elsewhere: {urls:?}");
    }
    let (_, _, html) = assets[0];
    // Every src / href of the page is this gateway's own asset, an anchor or a data: URL.
    for attr in ["src=\"", "href=\""] {
        for part in html.split(attr).skip(1) {
            let v = part.split('"').next().unwrap();
            assert!(
                v.starts_with("/ui/") || v.starts_with('#') || v.starts_with("data:"),
                "{attr}{v}"
            );
        }
    }
    assert_eq!(html.matches("type=\"password\"").count(), 1);

    let gw = Gateway::start(&config());
    for (path, kind, body) in assets {
        let r = request("GET", &format!("{}{path}", gw.url), &[], "").await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some(*kind));
        assert!(r
            .header("content-security-policy")
            .unwrap()
            .contains("default-src 'none'"));
        assert_eq!(r.body.as_ref(), body.as_bytes());
    }
    let r = request("GET", &format!("{}/ui", gw.url), &[], "").await;
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("<form id=\"login-form\""));
    // The assets are public; the data is not.
    let r = request("GET", &format!("{}/admin/usage", gw.url), &[], "").await;
    assert_eq!(r.status, 401);
    let r = request("GET", &format!("{}/ui/secret.json", gw.url), &[], "").await;
    assert_eq!(r.status, 401);
}
