//! Governance through the real binary: a virtual key sees only the models it may use (in
//! `GET /v1/models`, `GET /v1/models/{id}` and a 404 list), and rolling budget periods.

mod common;
use common::*;

const CONFIG: &str = r#"
server: {master_key: sk-vis-master}
store: {url: "{DB}"}
providers:
  - {name: local, kind: mock}
models:
  - {name: mock-1, deployments: [{provider: local, model: mock-1}]}
  - {name: mock-2, deployments: [{provider: local, model: mock-2}]}
  - {name: secret-model, deployments: [{provider: local, model: mock-1}]}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_sees_only_its_models() {
    let gw = Gateway::start(CONFIG);
    let master = [
        ("authorization", "Bearer sk-vis-master"),
        ("content-type", "application/json"),
    ];
    let r = request(
        "POST",
        &format!("{}/admin/keys", gw.url),
        &master,
        r#"{"models":["mock-*"]}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let key = format!("Bearer {}", r.json()["key"].as_str().unwrap());
    let auth = [("authorization", key.as_str())];

    let models = request("GET", &format!("{}/v1/models", gw.url), &auth, "").await;
    let ids: Vec<String> = models.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["mock-1", "mock-2"]);

    let hidden = request(
        "GET",
        &format!("{}/v1/models/secret-model", gw.url),
        &auth,
        "",
    )
    .await;
    assert_eq!(hidden.status, 404);

    let r = request(
        "POST",
        &format!("{}/v1/chat/completions", gw.url),
        &auth,
        r#"{"model":"nope","messages":[{"role":"user","content":"x"}]}"#,
    )
    .await;
    assert_eq!(r.status, 404);
    let msg = r.openai_error()["message"].as_str().unwrap().to_string();
    assert!(msg.contains("Available models: mock-1, mock-2"), "{msg}");
    assert!(!msg.contains("secret-model"), "{msg}");

    // The master key still sees everything.
    let all = request("GET", &format!("{}/v1/models", gw.url), &master[..1], "").await;
    assert_eq!(all.json()["data"].as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_budget_periods_through_the_admin_api() {
    let gw = Gateway::start(CONFIG);
    let master = [
        ("authorization", "Bearer sk-vis-master"),
        ("content-type", "application/json"),
    ];
    let url = format!("{}/admin/keys", gw.url);
    let r = request(
        "POST",
        &url,
        &master,
        r#"{"budget_usd":"0.0002","budget_period":"rolling_daily"}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["budget_period"], "rolling_daily");
    let key = format!("Bearer {}", r.json()["key"].as_str().unwrap());
    let chat = format!("{}/v1/chat/completions", gw.url);
    let auth = [("authorization", key.as_str())];
    // Requests are admitted while their worst case (max_tokens 20) still fits the budget.
    let body =
        r#"{"model":"mock-1","max_tokens":20,"messages":[{"role":"user","content":"hello"}]}"#;
    let mut served = 0;
    let over = loop {
        let r = request("POST", &chat, &auth, body).await;
        if r.status != 200 {
            break r;
        }
        served += 1;
        assert!(served < 20, "the budget never stopped the key");
    };
    assert!(served > 0);
    assert_eq!(over.status, 429);
    assert_eq!(over.openai_error()["type"], "insufficient_quota");
    let retry: i64 = over.header("retry-after").unwrap().parse().unwrap();
    // A rolling day frees the spend 24-25 hours after it was charged, not at midnight.
    assert!((86_000..=90_000).contains(&retry), "retry-after {retry}");

    let bad = request(
        "POST",
        &url,
        &master,
        r#"{"budget_usd":"1","budget_period":"fortnightly"}"#,
    )
    .await;
    assert_eq!(bad.status, 400);
    assert!(bad.openai_error()["message"]
        .as_str()
        .unwrap()
        .contains("rolling_monthly"));
}
