//! The authentication mode comes from configuration and history, not from how many keys are
//! usable now: revoking the last key keeps the gateway closed (admin API included), a restart
//! on the same store stays closed, and a reload that would expose it is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::gov::*;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn no_key(gw: &Gateway, path: &str) -> u16 {
    request("GET", &format!("{}{path}", gw.url), &[], "")
        .await
        .status
}

const OPEN: &str = r#"
store: {url: "STORE"}
providers: [{name: local, kind: mock}]
models: [{name: mock-1, deployments: [{provider: local, model: mock-1}]}]
"#;

#[tokio::test]
async fn revoking_the_last_key_does_not_reopen_the_gateway() {
    let store = tempfile::tempdir().unwrap();
    let cfg = OPEN.replace(
        "STORE",
        &format!("sqlite://{}", store.path().join("s.db").display()),
    );
    let mut gw = Gateway::start(&cfg);
    // Never held a key, no master key: open on loopback, and it says so.
    assert_eq!(no_key(&gw, "/v1/models").await, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(gw.stderr().contains("NO AUTHENTICATION"), "{}", gw.stderr());
    assert_eq!(no_key(&gw, "/admin/keys").await, 200);

    // The first key closes it.
    let r = admin(&gw, "", "POST", "/admin/keys", json!({"role": "admin"})).await;
    assert_eq!(r.status, 201);
    let (id, key) = (
        r.json()["id"].as_str().unwrap().to_string(),
        r.json()["key"].as_str().unwrap().to_string(),
    );
    assert_eq!(no_key(&gw, "/v1/models").await, 401);

    // Revoking the last (only) key: still closed, admin API included.
    let r = admin(
        &gw,
        &key,
        "POST",
        &format!("/admin/keys/{id}/revoke"),
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    for path in ["/v1/models", "/admin/keys", "/admin/usage"] {
        assert_eq!(no_key(&gw, path).await, 401, "{path}");
    }

    // A restart on the same store: still closed.
    assert_eq!(gw.stop(Duration::from_secs(10)), Some(0));
    let gw = Gateway::start(&cfg);
    assert_eq!(no_key(&gw, "/v1/models").await, 401);
    assert_eq!(no_key(&gw, "/admin/keys").await, 401);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !gw.stderr().contains("NO AUTHENTICATION"),
        "{}",
        gw.stderr()
    );
}

async fn wait_for_stderr(gw: &Gateway, needle: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if gw.stderr().contains(needle) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn a_reload_that_would_expose_the_gateway_keeps_the_old_config() {
    let with_key = format!(
        "server: {{master_key: {MASTER}}}\nstore: {{url: \"{{DB}}\"}}\n\
         providers: [{{name: local, kind: mock}}]\n\
         models: [{{name: mock-1, deployments: [{{provider: local, model: mock-1}}]}}]\n"
    );
    let gw = Gateway::start_with(
        Some(&with_key),
        &["--listen", "0.0.0.0:0"],
        &[("SLUICE_LOG", "info")],
    );
    let port = gw.url.rsplit(':').next().unwrap().to_string();
    let url = format!("http://127.0.0.1:{port}");
    let models = |key: Option<&'static str>| {
        let url = url.clone();
        async move {
            let auth = key.map(|k| format!("Bearer {k}"));
            let h: Vec<(&str, &str)> = auth
                .as_deref()
                .map(|a| vec![("authorization", a)])
                .unwrap_or_default();
            request("GET", &format!("{url}/v1/models"), &h, "")
                .await
                .status
        }
    };
    assert_eq!(models(None).await, 401);
    assert_eq!(models(Some(MASTER)).await, 200);

    // Drop the master key on a public bind: refused, the old config stays.
    let text = std::fs::read_to_string(gw.config_path()).unwrap();
    let without = text.replace(&format!("server: {{master_key: {MASTER}}}\n"), "");
    assert_ne!(text, without);
    std::fs::write(gw.config_path(), &without).unwrap();
    gw.hangup();
    assert!(
        wait_for_stderr(&gw, "reload refused, keeping the old config").await,
        "{}",
        gw.stderr()
    );
    assert!(gw
        .stderr()
        .contains("refusing to serve without authentication"));
    assert_eq!(models(None).await, 401);
    assert_eq!(models(Some(MASTER)).await, 200);

    // A safe reload still works (changing the master key).
    std::fs::write(gw.config_path(), text.replace(MASTER, "sk-master-rotated")).unwrap();
    gw.hangup();
    assert!(
        wait_for_stderr(&gw, "configuration reloaded").await,
        "{}",
        gw.stderr()
    );
    assert_eq!(models(Some("sk-master-rotated")).await, 200);
    assert_eq!(models(Some(MASTER)).await, 401);
}
