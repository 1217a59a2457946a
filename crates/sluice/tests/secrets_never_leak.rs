//! Secrets never leak: a full scenario — a master key, provider keys (one provider working,
//! one failing, one answering 401), virtual keys created, used, rotated and revoked, debug
//! logs, OTLP export, metrics, a spill file, compliance logging, the audit log, error
//! answers — after which every output is searched for every secret: every response the
//! clients got (except the one answer that hands out a new key), stderr at debug level, every
//! OTLP export body, `/metrics`, the spill file, the SQLite files, the compliance export.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const MASTER: &str = "sk-master-LEAKCHECK-7f3a9c1e5b2d4680";
const PROVIDER_OK: &str = "sk-prov-LEAKCHECK-ok-0a1b2c3d4e5f6789";
const PROVIDER_DEAD: &str = "sk-prov-LEAKCHECK-dead-9f8e7d6c5b4a3210";
const PROVIDER_401: &str = "sk-prov-LEAKCHECK-401-1357924680abcdef";

/// An OTLP/HTTP collector keeping every raw export body.
async fn start_collector() -> (String, Arc<Mutex<Vec<u8>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let sink = bodies.clone();
    let app = axum::Router::new().fallback(move |body: bytes::Bytes| {
        let sink = sink.clone();
        async move {
            sink.lock().unwrap().extend_from_slice(&body);
            ""
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), bodies)
}

/// An upstream that refuses every key with a 401 whose body quotes the key back (as some
/// providers do): the gateway must not pass the quote on.
async fn start_quoting_upstream() -> String {
    let app = axum::Router::new().fallback(|headers: http::HeaderMap| async move {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        (
            http::StatusCode::UNAUTHORIZED,
            [("content-type", "application/json")],
            json!({"error": {"message": format!("Incorrect API key provided: {auth}"),
                             "type": "invalid_request_error", "code": "invalid_api_key"}})
            .to_string(),
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

struct Seen {
    outputs: Vec<(String, Vec<u8>)>,
}

impl Seen {
    fn add(&mut self, what: impl Into<String>, r: &Reply) {
        let mut b = Vec::new();
        for (k, v) in &r.headers {
            b.extend_from_slice(k.as_str().as_bytes());
            b.extend_from_slice(b": ");
            b.extend_from_slice(v.as_bytes());
            b.push(b'\n');
        }
        b.extend_from_slice(&r.body);
        self.outputs.push((what.into(), b));
    }
}

async fn call(
    seen: &mut Seen,
    gw: &Gateway,
    key: &str,
    method: &str,
    path: &str,
    body: Value,
) -> Reply {
    let auth = format!("Bearer {key}");
    let r = request(
        method,
        &format!("{}{path}", gw.url),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        if body.is_null() {
            String::new()
        } else {
            body.to_string()
        },
    )
    .await;
    seen.add(format!("{method} {path} -> {}", r.status), &r);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_any_output() {
    let (collector, otlp) = start_collector().await;
    let mock = start_mock().await;
    let quoting = start_quoting_upstream().await;
    // A port nothing listens on: the failing upstream.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let config = format!(
        r#"
server: {{master_key: {MASTER}}}
store: {{url: "{{DB}}"}}
usage:
  store_timeout: 1ms
  queue_capacity: 1
  compliance: {{teams: [eng]}}
providers:
  - {{name: good, kind: openai_compatible, base_url: "{mock}/v1", api_key: {PROVIDER_OK}}}
  - {{name: dead, kind: openai_compatible, base_url: "http://{dead}/v1", api_key: {PROVIDER_DEAD}, timeout: 2s}}
  - {{name: quoting, kind: openai_compatible, base_url: "{quoting}/v1", api_key: {PROVIDER_401}}}
models:
  - {{name: chat, deployments: [{{provider: good, model: mock-1}}]}}
  - {{name: broken, deployments: [{{provider: dead, model: m}}]}}
  - {{name: refused, deployments: [{{provider: quoting, model: m}}]}}
"#
    );
    let mut gw = Gateway::start_with(
        Some(&config),
        &[],
        &[
            ("SLUICE_LOG", "debug"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let mut seen = Seen {
        outputs: Vec::new(),
    };
    let mut secrets: Vec<String> = vec![
        MASTER.into(),
        PROVIDER_OK.into(),
        PROVIDER_DEAD.into(),
        PROVIDER_401.into(),
    ];

    call(
        &mut seen,
        &gw,
        MASTER,
        "POST",
        "/admin/teams",
        json!({"name": "eng"}),
    )
    .await;
    // Creating and rotating hand out a key once: those two answers are the only exception.
    let created = request(
        "POST",
        &format!("{}/admin/keys", gw.url),
        &[
            ("authorization", &format!("Bearer {MASTER}")),
            ("content-type", "application/json"),
        ],
        json!({"team": "eng"}).to_string(),
    )
    .await;
    assert_eq!(created.status, 201);
    let id = created.json()["id"].as_str().unwrap().to_string();
    let key = created.json()["key"].as_str().unwrap().to_string();
    secrets.push(key.clone());
    let admin_key = request(
        "POST",
        &format!("{}/admin/keys", gw.url),
        &[
            ("authorization", &format!("Bearer {MASTER}")),
            ("content-type", "application/json"),
        ],
        json!({"role": "admin"}).to_string(),
    )
    .await;
    let admin_secret = admin_key.json()["key"].as_str().unwrap().to_string();
    secrets.push(admin_secret.clone());

    let chat =
        |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hello"}]});
    for _ in 0..5 {
        call(
            &mut seen,
            &gw,
            &key,
            "POST",
            "/v1/chat/completions",
            chat("chat"),
        )
        .await;
    }
    let r = call(
        &mut seen,
        &gw,
        &key,
        "POST",
        "/v1/chat/completions",
        chat("broken"),
    )
    .await;
    assert!(r.status >= 500, "{}", r.status);
    let r = call(
        &mut seen,
        &gw,
        &key,
        "POST",
        "/v1/chat/completions",
        chat("refused"),
    )
    .await;
    assert_eq!(r.status, 401);
    call(
        &mut seen,
        &gw,
        &key,
        "POST",
        "/v1/chat/completions",
        json!({"model": "chat", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    call(
        &mut seen,
        &gw,
        &key,
        "POST",
        "/v1/messages",
        json!({"model": "chat", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    // Wrong and partial keys: the error must not echo them.
    let wrong = format!("{key}x");
    secrets.push(wrong.clone());
    call(&mut seen, &gw, &wrong, "GET", "/v1/models", Value::Null).await;

    let rotated = request(
        "POST",
        &format!("{}/admin/keys/{id}/rotate", gw.url),
        &[
            ("authorization", &format!("Bearer {admin_secret}")),
            ("content-type", "application/json"),
        ],
        json!({"grace_period": "0s"}).to_string(),
    )
    .await;
    assert_eq!(rotated.status, 200);
    secrets.push(rotated.json()["key"].as_str().unwrap().to_string());
    call(&mut seen, &gw, &key, "GET", "/v1/models", Value::Null).await; // old key: 401
    call(
        &mut seen,
        &gw,
        MASTER,
        "POST",
        &format!("/admin/keys/{id}/revoke"),
        Value::Null,
    )
    .await;
    for path in [
        "/admin/keys",
        "/admin/usage?group_by=key",
        "/admin/requests?include_content=true",
        "/admin/usage/export?all=true",
        "/admin/audit",
        "/admin/routing",
        "/admin/openapi.json",
        "/metrics",
    ] {
        call(&mut seen, &gw, &admin_secret, "GET", path, Value::Null).await;
    }
    call(
        &mut seen,
        &gw,
        MASTER,
        "GET",
        &format!("/admin/keys/{id}"),
        Value::Null,
    )
    .await;

    // Let the OTLP batch go out, then stop: the sink drains into the store or the spill.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(gw.stop(Duration::from_secs(15)), Some(0));
    seen.outputs
        .push(("stderr (debug)".into(), gw.stderr().into_bytes()));
    let otlp_bytes = otlp.lock().unwrap().clone();
    assert!(
        !otlp_bytes.is_empty(),
        "no OTLP export reached the collector"
    );
    seen.outputs.push(("OTLP export bodies".into(), otlp_bytes));
    let mut files = 0;
    for entry in std::fs::read_dir(gw.dir.path()).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name == "sluice.yaml" {
            continue; // the config holds the keys by design
        }
        if p.is_file() {
            files += 1;
            seen.outputs
                .push((format!("file {name}"), std::fs::read(&p).unwrap()));
        }
    }
    assert!(files >= 1, "no store file");
    assert!(gw.stderr().contains("DEBUG"), "debug logs were not on");

    let mut leaks = Vec::new();
    for (what, bytes) in &seen.outputs {
        for s in &secrets {
            // The visible prefix (`sk-sluice-` + 8) is shown by design; the rest is the secret.
            let tail = &s[s.len() - 24..];
            if memmem(bytes, s.as_bytes()) || memmem(bytes, tail.as_bytes()) {
                leaks.push(format!("{what}: contains {}…", &s[..14]));
            }
        }
    }
    println!(
        "searched {} outputs for {} secrets",
        seen.outputs.len(),
        secrets.len()
    );
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
}

fn memmem(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}
