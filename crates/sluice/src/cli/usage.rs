//! `sluice usage ...`: usage analytics, performance, the request log and the compliance
//! export, through a running gateway's admin API; tables, CSV or JSON.

use super::admin::{call_raw, cell, Conn};
use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;
use std::io::Write;

#[derive(Args, Debug, Default, Clone)]
pub struct UsageFilters {
    /// Start: `7d`, `24h`, `30m` ago, unix seconds, or `2026-11-01T00:00:00Z`.
    #[arg(long)]
    pub since: Option<String>,
    /// End (exclusive), same forms as --since.
    #[arg(long)]
    pub until: Option<String>,
    /// Virtual key id.
    #[arg(long)]
    pub key: Option<String>,
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long)]
    pub team: Option<String>,
    /// Requested model name.
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long)]
    pub provider: Option<String>,
    /// ok, error, or a status code such as 429.
    #[arg(long)]
    pub status: Option<String>,
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Csv,
    Json,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct UsageArgs {
    #[command(subcommand)]
    pub command: Option<UsageCommand>,
    #[command(flatten)]
    pub grouped: Grouped,
}

#[derive(Subcommand, Debug)]
pub enum UsageCommand {
    /// Latency, TTFT, tokens per second, error and fallback rates per provider/deployment.
    Performance(Grouped),
    /// Quality feedback (`POST /v1/feedback`): mean score and count, by model (default),
    /// deployment, team or any other group.
    Quality(Grouped),
    /// The response cache: hits (exact and semantic), hit rate and what the hits saved, by
    /// route (default), team or any other group.
    Cache(Grouped),
    /// Savings and reliability opportunities (`GET /admin/insights`).
    Insights {
        #[command(flatten)]
        filters: UsageFilters,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// The request log, newest first.
    Requests {
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        filters: UsageFilters,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// The compliance log (records with prompt and answer) as JSONL on stdout.
    Export {
        /// Every record, not only those with stored content.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        filters: UsageFilters,
    },
}

/// A grouped view: `--by`, the filters, the output format.
#[derive(Args, Debug)]
pub struct Grouped {
    /// Group by: key, user, team, model, provider, deployment, status, surface, error_class,
    /// and at most one of hour, day, week, month (comma-separated).
    #[arg(long)]
    pub by: Option<String>,
    #[command(flatten)]
    pub filters: UsageFilters,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Percent-encodes a query value.
pub(crate) fn enc(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b',' | b':') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn query(f: &UsageFilters, extra: &[(&str, Option<String>)]) -> String {
    let mut parts = Vec::new();
    for (k, v) in [
        ("since", &f.since),
        ("until", &f.until),
        ("key", &f.key),
        ("user", &f.user),
        ("team", &f.team),
        ("model", &f.model),
        ("provider", &f.provider),
        ("status", &f.status),
    ] {
        if let Some(v) = v {
            parts.push(format!("{k}={}", enc(v)));
        }
    }
    for (k, v) in extra {
        if let Some(v) = v {
            parts.push(format!("{k}={}", enc(v)));
        }
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

pub fn run(conn: &Conn, args: UsageArgs) -> anyhow::Result<()> {
    match args.command {
        None => {
            let args = args.grouped;
            let by = args.by.clone();
            let v = fetch(
                conn,
                "/admin/usage",
                &args.filters,
                &[("group_by", by.clone())],
            )?;
            let mut cols = group_columns(by.as_deref());
            cols.extend([
                "requests",
                "input_tokens",
                "output_tokens",
                "cached_input_tokens",
                "cost_usd",
                "errors",
                "p50_latency_ms",
                "p95_latency_ms",
            ]);
            print_rows(&v["rows"], &cols, pick(conn, args.format))
        }
        Some(UsageCommand::Performance(Grouped {
            by,
            filters,
            format,
        })) => {
            let v = fetch(
                conn,
                "/admin/performance",
                &filters,
                &[("group_by", by.clone())],
            )?;
            let mut cols = group_columns(by.as_deref().or(Some("provider,deployment")));
            cols.extend([
                "requests",
                "error_rate",
                "fallback_rate",
                "p50_latency_ms",
                "p95_latency_ms",
                "p50_ttft_ms",
                "p95_ttft_ms",
                "output_tokens_per_second",
            ]);
            print_rows(&v["rows"], &cols, pick(conn, format))
        }
        Some(UsageCommand::Quality(g)) => {
            usage_view(conn, g, &["requests", "feedback_count", "mean_score"])
        }
        Some(UsageCommand::Cache(g)) => usage_view(
            conn,
            g,
            &[
                "requests",
                "cache_hits",
                "cache_hit_rate",
                "cost_saved_usd",
                "cost_usd",
            ],
        ),
        Some(UsageCommand::Insights { filters, format }) => {
            let v = fetch(conn, "/admin/insights", &filters, &[])?;
            let cols = vec![
                "kind",
                "model",
                "provider",
                "deployment",
                "requests",
                "savings_usd",
                "summary",
            ];
            print_rows(&v["opportunities"], &cols, pick(conn, format))
        }
        Some(UsageCommand::Requests {
            limit,
            filters,
            format,
        }) => {
            let v = fetch(
                conn,
                "/admin/requests",
                &filters,
                &[("limit", Some(limit.to_string()))],
            )?;
            let cols = vec![
                "time",
                "request_id",
                "key_prefix",
                "team",
                "requested_model",
                "provider",
                "status",
                "error_class",
                "input_tokens",
                "output_tokens",
                "cost_usd",
                "latency_us",
            ];
            print_rows(&v["data"], &cols, pick(conn, format))
        }
        Some(UsageCommand::Export { all, filters }) => {
            let path = format!(
                "/admin/usage/export{}",
                query(&filters, &[("all", all.then(|| "true".to_string()))])
            );
            let bytes = call_raw(conn, "GET", &path, None)?;
            std::io::stdout().lock().write_all(&bytes)?;
            Ok(())
        }
    }
}

/// `--json` (shared by every admin command) wins over `--format`.
/// `/admin/usage` grouped by `--by` (the route, `model`, by default) with `columns` after the
/// group's own.
fn usage_view(conn: &Conn, g: Grouped, columns: &[&'static str]) -> anyhow::Result<()> {
    let by = g.by.unwrap_or_else(|| "model".into());
    let v = fetch(
        conn,
        "/admin/usage",
        &g.filters,
        &[("group_by", Some(by.clone()))],
    )?;
    let mut cols = group_columns(Some(&by));
    cols.extend_from_slice(columns);
    print_rows(&v["rows"], &cols, pick(conn, g.format))
}

fn pick(conn: &Conn, format: Format) -> Format {
    if conn.json {
        Format::Json
    } else {
        format
    }
}

/// `GET route?filters&extra` on the admin API.
fn fetch(
    conn: &Conn,
    route: &str,
    filters: &UsageFilters,
    extra: &[(&str, Option<String>)],
) -> anyhow::Result<Value> {
    get(conn, &format!("{route}{}", query(filters, extra)))
}

fn get(conn: &Conn, path: &str) -> anyhow::Result<Value> {
    let bytes = call_raw(conn, "GET", path, None)?;
    serde_json::from_slice(&bytes).context("the gateway's answer is not JSON")
}

fn group_columns(by: Option<&str>) -> Vec<&'static str> {
    let mut cols = Vec::new();
    for part in by.unwrap_or("").split(',').map(str::trim) {
        let c = match part {
            "hour" | "day" | "week" | "month" => "bucket",
            "key" | "key_id" => "key",
            "user" => "user",
            "team" => "team",
            "model" => "model",
            "provider" => "provider",
            "deployment" | "deployment_model" => "deployment",
            "status" => "status",
            "surface" => "surface",
            "error" | "error_class" => "error_class",
            "cache" => "cache",
            _ => continue,
        };
        if c == "bucket" {
            cols.insert(0, c);
        } else {
            cols.push(c);
        }
    }
    cols
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn print_rows(rows: &Value, cols: &[&str], format: Format) -> anyhow::Result<()> {
    let empty = Vec::new();
    let rows = rows.as_array().unwrap_or(&empty);
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(rows)?)?,
        Format::Csv => {
            writeln!(out, "{}", cols.join(","))?;
            for r in rows {
                let line: Vec<String> = cols
                    .iter()
                    .map(|c| match &r[*c] {
                        Value::Null => String::new(),
                        v => csv_cell(&cell(v)),
                    })
                    .collect();
                writeln!(out, "{}", line.join(","))?;
            }
        }
        Format::Table => {
            write!(out, "{}", super::admin::render_table(rows, cols))?;
            if rows.is_empty() {
                writeln!(out, "(no usage in this range)")?;
            }
        }
    }
    Ok(())
}
