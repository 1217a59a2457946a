//! `GET /admin/insights`: savings and reliability opportunities computed from the recorded
//! usage, each with a dollar figure and the config change that realises it. Same filters and
//! role scoping as `/admin/usage` (a team-scoped caller sees its team's opportunities only);
//! the range defaults to the last 30 days.
//!
//! Three kinds: `cheap_tier` (short prompts with short answers on a dearer model, priced on
//! the cheapest priced chat route), `cache` (identical requests, by the request hash, that an
//! exact cache would have answered) and `unreliable_deployment` (error or fallback rates
//! above 10 % over at least 5 attempts, with what the failed attempts were billed).

use super::usage::{filter, store_err};
use super::usd;
use crate::app::AppState;
use crate::error::ApiError;
use crate::policy::prices::Price;
use crate::policy::roles::Scope;
use crate::router::ModelTable;
use crate::store::insights::{self, InsightRow};
use crate::store::AttemptLine;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A prompt at most this many tokens with an answer at most [`SHORT_OUTPUT`] is "short and
/// simple": the cheap tier could have answered it.
pub const SHORT_INPUT: i64 = 500;
pub const SHORT_OUTPUT: i64 = 300;
/// A deployment is flagged from this failure rate over at least [`MIN_ATTEMPTS`] attempts.
pub const FAILURE_RATE: f64 = 0.10;
pub const MIN_ATTEMPTS: u64 = 5;
const DEFAULT_RANGE: &str = "30d";

pub(super) async fn insights(
    State(app): State<AppState>,
    Extension(scope): Extension<Scope>,
    Query(mut p): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    p.entry("since".into())
        .or_insert_with(|| DEFAULT_RANGE.into());
    let f = filter(&app, &scope, &p, &[])?;
    let gw = app.gateway.load();
    let cheap = cheapest_chat_route(&gw.models);
    let mut acc = Accumulator::default();
    insights::scan(&app.store, &f, |r| acc.add(&r, cheap.as_ref()))
        .await
        .map_err(store_err)?;
    let mut ops = acc.opportunities(cheap.as_ref());
    ops.sort_by(|a, b| {
        b["savings_micro_usd"]
            .as_i64()
            .cmp(&a["savings_micro_usd"].as_i64())
    });
    let total: i64 = ops
        .iter()
        .filter_map(|o| o["savings_micro_usd"].as_i64())
        .sum();
    Ok(Json(json!({
        "object": "insights",
        "since": p.get("since"),
        "until": p.get("until"),
        "records": acc.records,
        "cheapest_model": cheap.as_ref().map(|c| &c.0),
        "total_savings_micro_usd": total,
        "total_savings_usd": usd(Some(total)),
        "opportunities": ops,
    }))
    .into_response())
}

/// The route (name, price) with the lowest input + output price among plain chat routes
/// (priced, with an output price: embeddings routes have none).
fn cheapest_chat_route(models: &ModelTable) -> Option<(String, Price)> {
    models
        .names()
        .iter()
        .filter_map(|name| {
            let route = models.get(name)?;
            if route.complexity.is_some() {
                return None;
            }
            let price = route
                .deployments
                .iter()
                .filter_map(|d| d.price)
                .filter(|p| p.output > 0)
                .min_by_key(|p| p.input + p.output)?;
            Some((name.clone(), price))
        })
        .min_by_key(|(name, p)| (p.input + p.output, name.clone()))
}

fn cost_on(price: &Price, input: i64, output: i64) -> i64 {
    let u = crate::canonical::Usage {
        input_tokens: input.unsigned_abs(),
        output_tokens: output.unsigned_abs(),
        ..Default::default()
    };
    price.cost(&u)
}

#[derive(Default)]
struct CheapTier {
    requests: u64,
    cost: i64,
    on_cheap: i64,
}

#[derive(Default)]
struct Repeats {
    /// Requests after the first of each identical set.
    repeats: u64,
    cost: i64,
}

#[derive(Default)]
struct DeploymentFailures {
    attempts: u64,
    failures: u64,
    fallbacks_from: u64,
    wasted: i64,
    routes: BTreeSet<String>,
}

#[derive(Default)]
struct Accumulator {
    records: u64,
    cheap: BTreeMap<String, CheapTier>,
    /// (cache scope, request hash) seen.
    seen: BTreeSet<(String, i64)>,
    repeats: BTreeMap<String, Repeats>,
    deployments: BTreeMap<(String, String), DeploymentFailures>,
}

impl Accumulator {
    fn add(&mut self, r: &InsightRow, cheap: Option<&(String, Price)>) {
        self.records += 1;
        let ok = r.status < 400;
        let hit = r.cache.as_deref() == Some("hit");
        let cost = r.cost_micro_usd.unwrap_or(0);
        let (input, output) = (r.input_tokens.unwrap_or(0), r.output_tokens.unwrap_or(0));
        if let Some((cheap_name, price)) = cheap {
            if ok
                && !hit
                && cost > 0
                && &r.requested_model != cheap_name
                && !r.surface.contains("embeddings")
                && input <= SHORT_INPUT
                && output <= SHORT_OUTPUT
            {
                let there = cost_on(price, input, output);
                if there < cost {
                    let c = self.cheap.entry(r.requested_model.clone()).or_default();
                    c.requests += 1;
                    c.cost += cost;
                    c.on_cheap += there;
                }
            }
        }
        if let (true, false, Some(h)) = (ok, hit, r.request_hash) {
            // The cache's default scope: the team (the key for callers without one).
            let scope = r
                .team
                .clone()
                .or_else(|| r.key_id.clone())
                .unwrap_or_default();
            if !self.seen.insert((scope, h)) {
                let e = self.repeats.entry(r.requested_model.clone()).or_default();
                e.repeats += 1;
                e.cost += cost;
            }
        }
        if let (Some(p), Some(m)) = (&r.provider, &r.deployment_model) {
            let d = self.deployments.entry((p.clone(), m.clone())).or_default();
            d.attempts += 1;
            d.routes.insert(r.requested_model.clone());
            if !ok {
                d.failures += 1;
                d.wasted += cost;
            }
        }
        let lines: Vec<AttemptLine> = r
            .attempt_log
            .as_deref()
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default();
        for l in lines {
            if l.outcome == "hedge_cancelled" {
                continue;
            }
            let d = self.deployments.entry((l.provider, l.model)).or_default();
            d.attempts += 1;
            d.failures += 1;
            d.fallbacks_from += 1;
            d.wasted += l.cost_micro_usd.unwrap_or(0);
            d.routes.insert(r.requested_model.clone());
        }
    }

    fn opportunities(&self, cheap: Option<&(String, Price)>) -> Vec<Value> {
        let mut out = Vec::new();
        if let Some((cheap_name, _)) = cheap {
            for (model, c) in &self.cheap {
                let saving = c.cost - c.on_cheap;
                out.push(json!({
                    "kind": "cheap_tier",
                    "model": model,
                    "requests": c.requests,
                    "cost_micro_usd": c.cost,
                    "cost_usd": usd(Some(c.cost)),
                    "cheap_model": cheap_name,
                    "cheap_cost_micro_usd": c.on_cheap,
                    "cheap_cost_usd": usd(Some(c.on_cheap)),
                    "savings_micro_usd": saving,
                    "savings_usd": usd(Some(saving)),
                    "summary": format!(
                        "{} short, simple requests (at most {SHORT_INPUT} prompt and \
                         {SHORT_OUTPUT} answer tokens) went to {model}; on {cheap_name} they \
                         would have cost {} instead of {}",
                        c.requests, usd_text(c.on_cheap), usd_text(c.cost)
                    ),
                    "config_change": format!(
                        "models:\n  - name: {model}-auto\n    complexity: {{simple: {cheap_name}, \
                         hard: {model}}}\n# then send clients to {model}-auto (short, simple \
                         prompts go to {cheap_name})"
                    ),
                }));
            }
        }
        for (model, r) in &self.repeats {
            out.push(json!({
                "kind": "cache",
                "model": model,
                "requests": r.repeats,
                "savings_micro_usd": r.cost,
                "savings_usd": usd(Some(r.cost)),
                "summary": format!(
                    "{} requests to {model} repeated an earlier identical request of the same \
                     team; an exact cache would have answered them for free (saving {})",
                    r.repeats, usd_text(r.cost)
                ),
                "config_change": format!(
                    "cache: {{backend: memory, ttl: 1h, scope: team}}\n# or for this route only: \
                     models[name={model}].cache: {{ttl: 1h}}"
                ),
            }));
        }
        for ((provider, model), d) in &self.deployments {
            let rate = d.failures as f64 / d.attempts.max(1) as f64;
            if d.attempts < MIN_ATTEMPTS || rate < FAILURE_RATE {
                continue;
            }
            let routes: Vec<&String> = d.routes.iter().collect();
            out.push(json!({
                "kind": "unreliable_deployment",
                "provider": provider,
                "deployment": model,
                "routes": routes,
                "attempts": d.attempts,
                "failures": d.failures,
                "fallbacks_from": d.fallbacks_from,
                "failure_rate": (rate * 1000.0).round() / 1000.0,
                "savings_micro_usd": d.wasted,
                "savings_usd": usd(Some(d.wasted)),
                "summary": format!(
                    "{provider}/{model} failed {} of {} attempts ({:.0} %); the failed attempts \
                     were billed {} and every fallback added latency",
                    d.failures, d.attempts, rate * 100.0, usd_text(d.wasted)
                ),
                "config_change": format!(
                    "in models[{}].deployments, for {{provider: {provider}, model: {model}}}: \
                     set priority: 2 (tried only after the others) or lower its weight; or fix \
                     or remove the provider",
                    routes.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
                ),
            }));
        }
        out
    }
}

fn usd_text(micro: i64) -> String {
    format!("${}", crate::policy::prices::format_usd(micro))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(model: &str, input: i64, output: i64, cost: i64, hash: i64) -> InsightRow {
        InsightRow {
            surface: "openai.chat".into(),
            requested_model: model.into(),
            provider: Some("p".into()),
            deployment_model: Some(model.into()),
            team: Some("t".into()),
            status: 200,
            input_tokens: Some(input),
            output_tokens: Some(output),
            cost_micro_usd: Some(cost),
            request_hash: Some(hash),
            ..Default::default()
        }
    }

    #[test]
    fn short_prompts_repeats_and_failures_become_opportunities() {
        let cheap = (
            "small".to_string(),
            Price {
                input: 100_000,
                output: 200_000,
                ..Default::default()
            },
        );
        let mut acc = Accumulator::default();
        // Two identical short requests on `big` (10 / 20 micro-USD per token), one long one.
        acc.add(&row("big", 10, 5, 200, 1), Some(&cheap));
        acc.add(&row("big", 10, 5, 200, 1), Some(&cheap));
        acc.add(&row("big", 10_000, 5, 100_100, 2), Some(&cheap));
        // A deployment failing 5 of 5 times.
        for _ in 0..5 {
            let mut r = row("flaky", 1, 0, 0, 3);
            r.status = 502;
            r.request_hash = None;
            acc.add(&r, Some(&cheap));
        }
        let ops = acc.opportunities(Some(&cheap));
        let cheap_op = ops.iter().find(|o| o["kind"] == "cheap_tier").unwrap();
        assert_eq!(cheap_op["requests"], 2);
        // On `small`: ceil(10 * 0.1 + 5 * 0.2) = 2 micro-USD each.
        assert_eq!(cheap_op["cheap_cost_micro_usd"], 4);
        assert_eq!(cheap_op["savings_micro_usd"], 396);
        let cache = ops.iter().find(|o| o["kind"] == "cache").unwrap();
        assert_eq!(cache["requests"], 1);
        assert_eq!(cache["savings_micro_usd"], 200);
        let flaky = ops
            .iter()
            .find(|o| o["kind"] == "unreliable_deployment")
            .unwrap();
        assert_eq!(flaky["deployment"], "flaky");
        assert_eq!(flaky["failure_rate"], 1.0);
    }
}
