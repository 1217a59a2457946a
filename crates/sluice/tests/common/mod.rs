//! Test harness: a real `sluice-mock` server on loopback (in this process) and the real
//! `sluice` binary as a child process, plus a small HTTP client.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod gov;
#[path = "../../src/store/testing.rs"]
pub mod testdb;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Starts sluice-mock on a free loopback port; returns its base URL (no `/v1`).
pub async fn start_mock() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mock = sluice_mock::Mock::new(sluice_mock::MockSettings::default());
    tokio::spawn(async move {
        let _ = sluice_mock::serve(listener, mock).await;
    });
    format!("http://{addr}")
}

/// A running `sluice serve` child process.
pub struct Gateway {
    pub child: Child,
    pub url: String,
    pub dir: tempfile::TempDir,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Gateway {
    /// Starts sluice with `config` (YAML; `{DB}` is replaced by a fresh SQLite path).
    pub fn start(config: &str) -> Gateway {
        Self::start_with(Some(config), &[], &[])
    }

    pub fn start_with(config: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.arg("serve");
        if !args.contains(&"--listen") {
            cmd.arg("--listen").arg("127.0.0.1:0");
        }
        cmd.current_dir(dir.path());
        if let Some(cfg) = config {
            let db = dir.path().join("sluice.db");
            let text = cfg.replace("{DB}", &format!("sqlite://{}", db.display()));
            let path = dir.path().join("sluice.yaml");
            std::fs::write(&path, text).unwrap();
            cmd.arg("--config").arg(&path);
        }
        cmd.args(args);
        cmd.env_remove("OPENAI_API_KEY")
            .env_remove("SLUICE_MASTER_KEY")
            .env_remove("SLUICE_CONFIG")
            .env_remove("SLUICE_LISTEN")
            .env("SLUICE_LOG", "warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn sluice");
        let stdout = child.stdout.take().unwrap();
        let stderr_pipe = child.stderr.take().unwrap();
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stderr_pipe);
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let _ = tx.send(line);
            let mut rest = Vec::new();
            let _ = r.read_to_end(&mut rest);
        });
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(l) if l.starts_with("sluice listening on ") => l,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "sluice did not start ({other:?}); stderr:\n{}",
                    stderr.lock().unwrap()
                );
            }
        };
        let url = line
            .trim()
            .trim_start_matches("sluice listening on ")
            .to_string();
        Gateway {
            child,
            url,
            dir,
            stderr,
        }
    }

    /// Sends SIGHUP (reload the config file).
    pub fn hangup(&self) {
        let ok = Command::new("kill")
            .arg("-HUP")
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -HUP failed");
    }

    /// The config file it was started with.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("sluice.yaml")
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("sluice.db")
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM failed");
    }

    /// SIGTERM, then waits (at most `within`) for the exit code.
    pub fn stop(&mut self, within: Duration) -> Option<i32> {
        self.terminate();
        self.wait_exit(within)
    }

    /// Waits (at most `within`, then kills) for the exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the OpenAI error shape and returns `error`.
    pub fn openai_error(&self) -> serde_json::Value {
        let v = self.json();
        let e = v
            .get("error")
            .unwrap_or_else(|| panic!("no `error` in {v}"))
            .clone();
        for key in ["message", "type", "param", "code"] {
            assert!(e.get(key).is_some(), "error body lacks `{key}`: {v}");
        }
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
        e
    }
}

pub async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let mut req = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body.into())).unwrap();
    let resp = client().request(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

pub async fn post_json(url: &str, body: &str) -> Reply {
    request(
        "POST",
        url,
        &[("content-type", "application/json")],
        body.to_string(),
    )
    .await
}

/// A `POST /v1/messages`-style request as an Anthropic SDK sends it, with `key` as `x-api-key`.
pub async fn post_anthropic(url: &str, key: &str, body: &serde_json::Value) -> Reply {
    request(
        "POST",
        url,
        &[
            ("x-api-key", key),
            ("content-type", "application/json"),
            ("anthropic-version", "2023-06-01"),
        ],
        body.to_string(),
    )
    .await
}

/// (event name, data) of each event of an SSE body with named events (Anthropic's,
/// Responses'); each event's name must match its data's `type`.
pub fn named_sse(body: &[u8]) -> Vec<(String, serde_json::Value)> {
    let text = String::from_utf8_lossy(body);
    let mut out = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut name = String::new();
        let mut data = serde_json::Value::Null;
        for line in block.lines() {
            if let Some(n) = line.strip_prefix("event: ") {
                name = n.to_string();
            } else if let Some(d) = line.strip_prefix("data: ") {
                data = serde_json::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}"));
            }
        }
        assert_eq!(
            data["type"],
            name.as_str(),
            "event name and type differ: {block}"
        );
        out.push((name, data));
    }
    out
}

/// Reads the usage records table of a stopped gateway.
pub async fn usage_rows(db: &Path) -> Vec<serde_json::Value> {
    use sqlx::Row;
    let url = format!("sqlite://{}", db.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let rows = sqlx::query(
        "SELECT request_id, requested_model, provider, status, error_class, streamed, \
         input_tokens, output_tokens, ttft_us FROM usage_records ORDER BY ts_ms, rowid",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    rows.iter()
        .map(|r| {
            serde_json::json!({
                "request_id": r.get::<String, _>(0),
                "requested_model": r.get::<String, _>(1),
                "provider": r.get::<Option<String>, _>(2),
                "status": r.get::<i64, _>(3),
                "error_class": r.get::<Option<String>, _>(4),
                "streamed": r.get::<bool, _>(5),
                "input_tokens": r.get::<Option<i64>, _>(6),
                "output_tokens": r.get::<Option<i64>, _>(7),
                "ttft_us": r.get::<Option<i64>, _>(8),
            })
        })
        .collect()
}

/// Every usage record of the store at `url` (either engine), oldest first, as the request
/// log shows them.
pub async fn usage_rows_at(url: &str) -> Vec<serde_json::Value> {
    let store = sluice::store::Store::open(url).await.unwrap();
    let filter = sluice::store::query::Filter::default();
    let mut rows = Vec::new();
    let mut cursor = None;
    loop {
        let (page, next) = sluice::store::query::requests(&store, &filter, cursor, 1000, false)
            .await
            .unwrap();
        rows.extend(page);
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    rows.reverse();
    rows
}

pub const CHAT: &str = r#"{"model":"mock-1","messages":[{"role":"user","content":"hello"}]}"#;

/// A streamed response read frame by frame, each with its arrival time.
pub struct Streamed {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub frames: Vec<(Instant, Bytes)>,
}

impl Streamed {
    pub fn text(&self) -> String {
        self.frames
            .iter()
            .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
            .collect()
    }

    /// The JSON payloads of the `data:` lines (without `[DONE]`).
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.text()
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }
}

/// Starts a request and returns the response head plus its body, unread.
pub async fn open_stream(url: &str, body: &str) -> (u16, http::HeaderMap, hyper::body::Incoming) {
    let req = http::Request::builder()
        .method("POST")
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.into_body())
}

pub async fn read_frames(mut body: hyper::body::Incoming) -> Vec<(Instant, Bytes)> {
    let mut frames = Vec::new();
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.unwrap().into_data() {
            frames.push((Instant::now(), d));
        }
    }
    frames
}

pub async fn stream(url: &str, body: &str) -> Streamed {
    let (status, headers, b) = open_stream(url, body).await;
    Streamed {
        status,
        headers,
        frames: read_frames(b).await,
    }
}

/// A loopback TCP proxy to `target` (the machine's Redis or PostgreSQL) that can be cut and
/// restored: an outage without stopping the machine's service.
pub struct Proxy {
    pub port: u16,
    target: &'static str,
    /// Held before each chunk of the target's answers is passed on (a slow network).
    delay: Duration,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    pub async fn start(target: &'static str) -> Self {
        Self::start_delayed(target, Duration::ZERO).await
    }

    /// A proxy whose answers from `target` arrive `delay` late.
    pub async fn start_delayed(target: &'static str, delay: Duration) -> Self {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let mut p = Proxy {
            port,
            target,
            delay,
            task: None,
        };
        p.run(l);
        p
    }

    fn run(&mut self, l: tokio::net::TcpListener) {
        let (target, delay) = (self.target, self.delay);
        self.task = Some(tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = l.accept().await {
                conns.spawn(async move {
                    let Ok(mut out) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    if delay.is_zero() {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                        return;
                    }
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let (mut in_r, mut in_w) = inbound.into_split();
                    let (mut out_r, mut out_w) = out.into_split();
                    let up = async move {
                        let _ = tokio::io::copy(&mut in_r, &mut out_w).await;
                    };
                    let down = async move {
                        let mut buf = vec![0u8; 16 << 10];
                        while let Ok(n) = out_r.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            tokio::time::sleep(delay).await;
                            if in_w.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    };
                    tokio::join!(up, down);
                });
            }
        }));
    }

    /// Closes the listener and every connection through it (the JoinSet aborts on drop).
    pub fn cut(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    pub async fn restore(&mut self) {
        let l = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        self.run(l);
    }
}
