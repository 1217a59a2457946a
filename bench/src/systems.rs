//! The systems under test: direct-to-mock (the baseline), Sluice, and peer gateways installed
//! into bench-local folders (LiteLLM from PyPI, Portkey's gateway from npm).

use crate::procs::{self, Proc};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// LiteLLM 1.107 was compromised on PyPI; never move this past 1.81.
pub const LITELLM_VERSION: &str = "1.79.3";
pub const PORTKEY_VERSION: &str = "1.15.2";

/// How a system is asked for a completion.
pub struct System {
    pub name: String,
    pub proc: Option<Proc>,
    pub base: String,
    pub headers: Vec<(&'static str, String)>,
    /// Model names for the plain, paced (1 ms between chunks) and long-held streams.
    pub model: &'static str,
    pub paced_model: Option<&'static str>,
    pub version: String,
}

impl System {
    pub fn chat_url(&self) -> String {
        format!("{}/v1/chat/completions", self.base)
    }
}

pub fn sluice_config(mock: &str, dir: &Path) -> String {
    format!(
        r#"store: {{url: "sqlite://{db}"}}
providers:
  - {{name: upstream, kind: openai_compatible, base_url: "{mock}/v1", api_key: sk-bench}}
  - name: paced
    kind: openai_compatible
    base_url: "{mock}/v1"
    headers: {{x-mock-chunk-delay-ms: "1"}}
  - name: hold
    kind: openai_compatible
    base_url: "{mock}/v1"
    headers: {{x-mock-chunk-delay-ms: "50"}}
  - {{name: anthropic, kind: anthropic, base_url: "{mock}", api_key: sk-bench}}
  - name: anthropic-paced
    kind: anthropic
    base_url: "{mock}"
    api_key: sk-bench
    headers: {{x-mock-chunk-delay-ms: "1"}}
models:
  - {{name: bench, deployments: [{{provider: upstream, model: bench}}]}}
  - {{name: bench-paced, deployments: [{{provider: paced, model: bench}}]}}
  - {{name: bench-hold, deployments: [{{provider: hold, model: bench}}]}}
  - {{name: bench-anthropic, deployments: [{{provider: anthropic, model: bench}}]}}
  - {{name: bench-anthropic-paced, deployments: [{{provider: anthropic-paced, model: bench}}]}}
  - {{name: bench-10, deployments: [{ten}]}}
  - {{name: bench-10-cc, strategy: cheapest_capable, deployments: [{ten}]}}
"#,
        db = dir.join("sluice.db").display(),
        ten = ten_deployments(),
    )
}

/// Ten distinct deployments (one upstream, ten model names), priced apart, for the
/// routing-cost rows: what choosing among ten adds over a one-deployment route.
fn ten_deployments() -> String {
    (0..10)
        .map(|i| {
            format!(
                "{{provider: upstream, model: bench-{i}, weight: {w}, price: {{input: {i}, output: 1}}, capabilities: {{context_window: 100000}}}}",
                w = i + 1
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn start_sluice(bin: &Path, config: &Path, cpu: Option<usize>) -> anyhow::Result<Proc> {
    let args = vec![
        "serve".to_string(),
        "--config".into(),
        config.display().to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
    ];
    let mut cmd = procs::command(bin, &args, cpu);
    cmd.env("SLUICE_LOG", "error")
        .env_remove("SLUICE_MASTER_KEY");
    procs::spawn_announcing("sluice", cmd, "sluice listening on ")
}

fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".peers")
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| what.to_string())?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .chars()
                .take(400)
                .collect::<String>()
        );
    }
    Ok(())
}

/// Installs LiteLLM into bench/.peers/litellm (once) and starts its proxy, one worker.
pub async fn start_litellm(mock: &str, dir: &Path, cpu: Option<usize>) -> anyhow::Result<System> {
    let venv = peers_dir().join("litellm");
    let bin = venv.join("bin/litellm");
    let marker = venv.join(format!(".installed-{LITELLM_VERSION}"));
    if !marker.exists() {
        eprintln!(
            "installing LiteLLM {LITELLM_VERSION} into {} ...",
            venv.display()
        );
        run(
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            "python3 -m venv",
        )?;
        run(
            Command::new(venv.join("bin/pip")).args([
                "install",
                "--quiet",
                &format!("litellm[proxy]=={LITELLM_VERSION}"),
            ]),
            "pip install litellm",
        )?;
        std::fs::write(&marker, "")?;
    }
    let cfg = dir.join("litellm.yaml");
    std::fs::write(
        &cfg,
        format!(
            "model_list:\n  - model_name: bench\n    litellm_params: {{model: openai/bench, api_base: \"{mock}/v1\", api_key: sk-bench}}\n\
             litellm_settings: {{set_verbose: false, turn_off_message_logging: true}}\n\
             general_settings: {{disable_spend_logs: true, disable_error_logs: true}}\n"
        ),
    )?;
    let port = procs::free_port()?;
    let args = vec![
        "--config".to_string(),
        cfg.display().to_string(),
        "--port".into(),
        port.to_string(),
        "--host".into(),
        "127.0.0.1".into(),
        "--num_workers".into(),
        "1".into(),
    ];
    let mut cmd = procs::command(&bin, &args, cpu);
    cmd.env("LITELLM_LOG", "ERROR")
        .env("LITELLM_TELEMETRY", "False")
        .env_remove("DATABASE_URL");
    let base = format!("http://127.0.0.1:{port}");
    let proc = procs::spawn_polling(
        "litellm",
        cmd,
        base.clone(),
        &format!("{base}/health/liveliness"),
        Duration::from_secs(120),
    )
    .await?;
    Ok(System {
        name: "LiteLLM".into(),
        proc: Some(proc),
        base,
        headers: vec![("authorization", "Bearer sk-bench".into())],
        model: "bench",
        paced_model: None,
        version: LITELLM_VERSION.into(),
    })
}

/// Installs Portkey's gateway into bench/.peers/portkey (once) and starts it.
pub async fn start_portkey(mock: &str, cpu: Option<usize>) -> anyhow::Result<System> {
    let root = peers_dir().join("portkey");
    let script = root.join("node_modules/@portkey-ai/gateway/build/start-server.js");
    if !script.exists() {
        eprintln!(
            "installing @portkey-ai/gateway {PORTKEY_VERSION} into {} ...",
            root.display()
        );
        std::fs::create_dir_all(&root)?;
        run(
            Command::new("npm")
                .args(["install", "--silent", "--prefix"])
                .arg(&root)
                .arg(format!("@portkey-ai/gateway@{PORTKEY_VERSION}")),
            "npm install @portkey-ai/gateway",
        )?;
    }
    let port = procs::free_port()?;
    let args = vec![
        script.display().to_string(),
        format!("--port={port}"),
        "--headless".to_string(),
    ];
    let node = PathBuf::from("/usr/bin/node");
    let cmd = procs::command(&node, &args, cpu);
    let base = format!("http://127.0.0.1:{port}");
    let proc = procs::spawn_polling(
        "portkey",
        cmd,
        base.clone(),
        &format!("{base}/"),
        Duration::from_secs(60),
    )
    .await?;
    Ok(System {
        name: "Portkey".into(),
        proc: Some(proc),
        base,
        headers: vec![
            ("authorization", "Bearer sk-bench".into()),
            ("x-portkey-provider", "openai".into()),
            ("x-portkey-custom-host", format!("{mock}/v1")),
        ],
        model: "bench",
        paced_model: None,
        version: PORTKEY_VERSION.into(),
    })
}

/// Scenario (d): the same upstream behind a virtual key with RPM/TPM limits and a budget,
/// usage records written to SQLite. Limits are far above what the run can reach, so they are
/// checked on every request without ever refusing one.
pub fn sluice_governed_config(mock: &str, dir: &Path) -> String {
    format!(
        r#"server: {{master_key: sk-bench-master}}
store: {{url: "sqlite://{db}"}}
providers:
  - {{name: upstream, kind: openai_compatible, base_url: "{mock}/v1", api_key: sk-bench}}
models:
  - name: bench
    price: {{input: 1, output: 2}}
    deployments: [{{provider: upstream, model: bench}}]
"#,
        db = dir.join("sluice-governed.db").display()
    )
}

/// Scenario (f): scenario (d)'s gateway as one replica of a fleet: keys, usage and the audit
/// log on PostgreSQL (`store`), limits, budgets and concurrency on Redis (`redis`).
pub fn sluice_fleet_config(
    mock: &str,
    store: &str,
    redis: &str,
    prefix: &str,
    spill: &Path,
) -> String {
    format!(
        r#"server: {{master_key: sk-bench-master}}
store: {{url: "{store}"}}
redis: {{url: "{redis}", key_prefix: "{prefix}", replicas: 2}}
usage: {{spill_path: "{spill}"}}
providers:
  - {{name: upstream, kind: openai_compatible, base_url: "{mock}/v1", api_key: sk-bench}}
models:
  - name: bench
    price: {{input: 1, output: 2}}
    deployments: [{{provider: upstream, model: bench}}]
"#,
        spill = spill.display()
    )
}

/// Creates a team and a limited, budgeted virtual key through the admin API.
pub async fn create_bench_key(
    client: &crate::load::HttpClient,
    base: &str,
) -> anyhow::Result<String> {
    use http_body_util::BodyExt;
    let post = |path: &str, body: serde_json::Value| {
        http::Request::post(format!("{base}{path}"))
            .header("authorization", "Bearer sk-bench-master")
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_string(),
            )))
    };
    let resp = client
        .request(post("/admin/teams", serde_json::json!({"name": "bench"}))?)
        .await?;
    anyhow::ensure!(
        resp.status().is_success(),
        "creating the bench team: {}",
        resp.status()
    );
    let key_req = serde_json::json!({
        "team": "bench", "name": "bench-key", "models": ["bench"],
        "rpm": 100_000_000, "tpm": 1_000_000_000_000u64, "max_concurrency": 100_000,
        "budget_usd": 1_000_000, "budget_period": "monthly"
    });
    let resp = client.request(post("/admin/keys", key_req)?).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    anyhow::ensure!(
        status.is_success(),
        "creating the bench key: {status} {}",
        String::from_utf8_lossy(&body)
    );
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    v["key"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("no key in {v}"))
}
