//! `sluice keys ...` and `sluice teams ...`: the admin API over HTTP, printed as tables (or
//! the API's JSON with `--json`).

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Map, Value};

#[derive(Args, Debug)]
pub struct Conn {
    /// The gateway's address.
    #[arg(
        long,
        env = "SLUICE_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// A key with an admin role (usually the master key).
    #[arg(long, env = "SLUICE_MASTER_KEY", hide_env_values = true, global = true)]
    pub master_key: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Limits shared by keys and teams.
#[derive(Args, Debug, Default)]
pub struct LimitArgs {
    /// Allowed models, comma-separated; `*` wildcards (`gpt-4o,claude-*`).
    #[arg(long)]
    pub models: Option<String>,
    #[arg(long)]
    pub rpm: Option<u64>,
    #[arg(long)]
    pub tpm: Option<u64>,
    #[arg(long)]
    pub max_concurrency: Option<u64>,
    /// USD budget with its period: `100/month`, `5/day`, `20/week`, `50/total`.
    #[arg(long)]
    pub budget: Option<String>,
    /// Metadata, repeatable: `--meta env=prod`.
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a key; the key is printed once.
    Create {
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        team: Option<String>,
        #[arg(long)]
        user: Option<String>,
        /// admin, team_admin or viewer (default: inference only).
        #[arg(long)]
        role: Option<String>,
        /// Unix seconds or a UTC time such as 2026-12-31T23:59:59Z.
        #[arg(long)]
        expires_at: Option<String>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    List,
    Get {
        id: String,
    },
    Revoke {
        id: String,
    },
    /// Issue a new secret; the old one keeps working for the grace period.
    Rotate {
        id: String,
        #[arg(long, default_value = "1h")]
        grace: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum TeamsCommand {
    Create {
        name: String,
        #[arg(long)]
        parent: Option<String>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    List,
    Get {
        name: String,
    },
    Delete {
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum UsersCommand {
    Create {
        name: String,
        #[arg(long)]
        team: Option<String>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    List,
    Get {
        name: String,
    },
    Delete {
        name: String,
    },
}

pub fn users(conn: &Conn, cmd: UsersCommand) -> anyhow::Result<()> {
    let (method, path, body) = match cmd {
        UsersCommand::Create { name, team, limits } => {
            let mut b = Map::new();
            b.insert("name".into(), json!(name));
            put(&mut b, "team", team);
            limits_body(limits, &mut b)?;
            ("POST", "/admin/users".to_string(), Some(Value::Object(b)))
        }
        UsersCommand::List => ("GET", "/admin/users".into(), None),
        UsersCommand::Get { name } => ("GET", format!("/admin/users/{name}"), None),
        UsersCommand::Delete { name } => ("DELETE", format!("/admin/users/{name}"), None),
    };
    let v = call(conn, method, &path, body)?;
    print(
        conn,
        &v,
        &[
            "name",
            "team",
            "models",
            "rpm",
            "tpm",
            "budget_usd",
            "budget_period",
            "spend_usd",
        ],
    )
}

fn limits_body(l: LimitArgs, body: &mut Map<String, Value>) -> anyhow::Result<()> {
    if let Some(m) = l.models {
        let list: Vec<&str> = m
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        body.insert("models".into(), json!(list));
    }
    for (k, v) in [
        ("rpm", l.rpm),
        ("tpm", l.tpm),
        ("max_concurrency", l.max_concurrency),
    ] {
        if let Some(v) = v {
            body.insert(k.into(), json!(v));
        }
    }
    if let Some(b) = l.budget {
        let (amount, period) = b.split_once('/').unwrap_or((&b, "month"));
        let period = match period {
            "day" | "daily" => "daily",
            "week" | "weekly" => "weekly",
            "month" | "monthly" => "monthly",
            "total" => "total",
            "rolling_day" | "rolling_daily" | "24h" => "rolling_daily",
            "rolling_week" | "rolling_weekly" | "7d" => "rolling_weekly",
            "rolling_month" | "rolling_monthly" | "30d" => "rolling_monthly",
            other => {
                bail!("--budget: unknown period {other:?} (day, week, month, total, 24h, 7d, 30d)")
            }
        };
        body.insert("budget_usd".into(), json!(amount));
        body.insert("budget_period".into(), json!(period));
    }
    if !l.meta.is_empty() {
        let mut m = Map::new();
        for kv in l.meta {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--meta {kv:?}: expected KEY=VALUE"))?;
            m.insert(k.to_string(), json!(v));
        }
        body.insert("metadata".into(), Value::Object(m));
    }
    Ok(())
}

fn put(body: &mut Map<String, Value>, k: &str, v: Option<String>) {
    if let Some(v) = v {
        body.insert(k.into(), json!(v));
    }
}

pub fn keys(conn: &Conn, cmd: KeysCommand) -> anyhow::Result<()> {
    let (method, path, body) = match cmd {
        KeysCommand::Create {
            name,
            team,
            user,
            role,
            expires_at,
            limits,
        } => {
            let mut b = Map::new();
            put(&mut b, "name", name);
            put(&mut b, "team", team);
            put(&mut b, "user", user);
            put(&mut b, "role", role);
            if let Some(e) = expires_at {
                let v = e.parse::<i64>().map_or_else(|_| json!(e), |n| json!(n));
                b.insert("expires_at".into(), v);
            }
            limits_body(limits, &mut b)?;
            ("POST", "/admin/keys".to_string(), Some(Value::Object(b)))
        }
        KeysCommand::List => ("GET", "/admin/keys".into(), None),
        KeysCommand::Get { id } => ("GET", format!("/admin/keys/{id}"), None),
        KeysCommand::Revoke { id } => ("POST", format!("/admin/keys/{id}/revoke"), None),
        KeysCommand::Rotate { id, grace } => (
            "POST",
            format!("/admin/keys/{id}/rotate"),
            Some(json!({"grace_period": grace})),
        ),
    };
    let v = call(conn, method, &path, body)?;
    print(
        conn,
        &v,
        &[
            "id",
            "prefix",
            "name",
            "team",
            "user",
            "role",
            "models",
            "rpm",
            "tpm",
            "budget_usd",
            "spend_usd",
            "status",
        ],
    )
}

pub fn teams(conn: &Conn, cmd: TeamsCommand) -> anyhow::Result<()> {
    let (method, path, body) = match cmd {
        TeamsCommand::Create {
            name,
            parent,
            limits,
        } => {
            let mut b = Map::new();
            b.insert("name".into(), json!(name));
            put(&mut b, "parent", parent);
            limits_body(limits, &mut b)?;
            ("POST", "/admin/teams".to_string(), Some(Value::Object(b)))
        }
        TeamsCommand::List => ("GET", "/admin/teams".into(), None),
        TeamsCommand::Get { name } => ("GET", format!("/admin/teams/{name}"), None),
        TeamsCommand::Delete { name } => ("DELETE", format!("/admin/teams/{name}"), None),
    };
    let v = call(conn, method, &path, body)?;
    print(
        conn,
        &v,
        &[
            "name",
            "parent",
            "models",
            "rpm",
            "tpm",
            "max_concurrency",
            "budget_usd",
            "budget_period",
            "spend_usd",
        ],
    )
}

fn call(conn: &Conn, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
    let bytes = call_raw(conn, method, path, body)?;
    serde_json::from_slice(&bytes).context("the gateway's answer is not JSON")
}

/// Calls the admin API; the body of a 2xx answer, or the error's message.
pub(crate) fn call_raw(
    conn: &Conn,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Bytes> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let url = format!("{}{path}", conn.url.trim_end_matches('/'));
        let mut req = http::Request::builder()
            .method(method)
            .uri(&url)
            .header("content-type", "application/json");
        if let Some(k) = &conn.master_key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let req = req.body(Full::new(body)).context("building the request")?;
        let client = crate::providers::openai_compat::basic_client();
        let resp = client
            .request(req)
            .await
            .with_context(|| format!("calling {url}"))?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            let v: Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| json!({"error": {"message": String::from_utf8_lossy(&bytes)}}));
            let msg = v["error"]["message"].as_str().unwrap_or("request failed");
            bail!("{status}: {msg}");
        }
        Ok(bytes)
    })
}

pub(crate) fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Rows as an aligned text table with an upper-case header line.
pub(crate) fn render_table(rows: &[Value], columns: &[&str]) -> String {
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|c| cell(&r[*c])).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            table
                .iter()
                .map(|r| r[i].len())
                .max()
                .unwrap_or(0)
                .max(c.len())
        })
        .collect();
    let line = |cells: Vec<String>| {
        let mut l = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string();
        l.push('\n');
        l
    };
    let mut out = line(columns.iter().map(|c| c.to_uppercase()).collect());
    for r in table {
        out.push_str(&line(r));
    }
    out
}

fn print(conn: &Conn, v: &Value, columns: &[&str]) -> anyhow::Result<()> {
    if conn.json {
        println!("{}", serde_json::to_string_pretty(v)?);
        return Ok(());
    }
    let Some(rows) = v["data"].as_array() else {
        // One object: key/value lines, the secret first when there is one.
        if let Some(k) = v["key"].as_str() {
            println!("key: {k}\n(store it now: it is not shown again)");
        }
        if let Some(o) = v.as_object() {
            for (k, val) in o.iter().filter(|(k, _)| *k != "key") {
                println!("{k}: {}", cell(val));
            }
        }
        return Ok(());
    };
    print!("{}", render_table(rows, columns));
    Ok(())
}

/// `sluice audit`: the audit log of admin writes, newest first.
#[derive(Args, Debug, Default)]
pub struct AuditArgs {
    /// From: `7d`, `24h` (ago), unix seconds or an RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Until (exclusive), same forms.
    #[arg(long)]
    pub until: Option<String>,
    /// Only writes by this principal (`master`, a key id).
    #[arg(long)]
    pub actor: Option<String>,
    /// Only writes to this key id, user or team name.
    #[arg(long)]
    pub target: Option<String>,
    /// At most this many entries (1-1000).
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
}

pub fn audit(conn: &Conn, args: AuditArgs) -> anyhow::Result<()> {
    let mut q = vec![format!("limit={}", args.limit)];
    for (k, v) in [
        ("since", args.since),
        ("until", args.until),
        ("actor", args.actor),
        ("target", args.target),
    ] {
        if let Some(v) = v {
            q.push(format!("{k}={}", super::usage::enc(&v)));
        }
    }
    let v = call(conn, "GET", &format!("/admin/audit?{}", q.join("&")), None)?;
    print(
        conn,
        &v,
        &[
            "at",
            "actor",
            "action",
            "target_kind",
            "target",
            "request_id",
        ],
    )
}
