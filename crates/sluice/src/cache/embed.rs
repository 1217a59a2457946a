//! The semantic cache's embedder: the last user turn sent to the route named by
//! `cache.semantic.embedding_model`, through the same router as any request (its strategy,
//! retries and fallbacks), bounded by `cache.semantic.timeout`.

use crate::config::cache::SemanticConfig;
use crate::providers::Endpoint;
use crate::router::dispatch::{dispatch, Attempt, Overrides};
use crate::store::AttemptLine;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::time::Instant;

/// One embedding, and the line it adds to the request's record (what it cost).
pub struct Embedded {
    pub vector: Vec<f32>,
    pub line: AttemptLine,
}

/// Embeds `text`; errors say what failed (they make the lookup a `bypass`).
pub async fn embed(
    gw: &crate::app::Gateway,
    sem: &SemanticConfig,
    text: &str,
    request_id: &str,
) -> Result<Embedded, String> {
    let route = gw
        .models
        .resolve(&sem.embedding_model)
        .ok_or_else(|| format!("no route named {:?}", sem.embedding_model))?;
    let plan = gw.models.plan(&route);
    let at = Attempt {
        start: Instant::now(),
        overrides: Overrides::default(),
        stream: false,
        tokens: u64::try_from(text.len() / 4).unwrap_or(u64::MAX),
    };
    let encode = |d: &crate::router::Deployment| {
        let mut body = json!({"model": &*d.model, "input": text});
        if let Some(n) = sem.dimensions {
            body["dimensions"] = json!(n);
        }
        bytes::Bytes::from(body.to_string())
    };
    let work = async {
        let done = dispatch(&route, &plan, Endpoint::Embeddings, request_id, &at, encode)
            .await
            .map_err(|f| format!("the embedding route failed: {}", f.error))?;
        let status = done.response.status;
        let body = done
            .response
            .body
            .collect()
            .await
            .map_err(|e| format!("reading the embedding: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("the embedding route answered {status}"));
        }
        let v: Value =
            serde_json::from_slice(&body).map_err(|e| format!("the embedding is not JSON: {e}"))?;
        let vector: Vec<f32> = v["data"][0]["embedding"]
            .as_array()
            .ok_or("the embedding answer has no data[0].embedding")?
            .iter()
            .map(|x| x.as_f64().map(|f| f as f32))
            .collect::<Option<_>>()
            .ok_or("the embedding holds something that is not a number")?;
        if vector.is_empty() {
            return Err("the embedding is empty".to_string());
        }
        let tokens = v["usage"]["prompt_tokens"].as_u64().unwrap_or(at.tokens);
        let d = done.deployment;
        let usage = crate::canonical::Usage {
            input_tokens: tokens,
            ..Default::default()
        };
        let line = AttemptLine {
            attempt: 0,
            provider: d.provider.name.to_string(),
            model: d.model.to_string(),
            status: status.as_u16(),
            outcome: "semantic_cache_embedding".into(),
            billed: true,
            // Not the request's own tokens: kept out of its token counts, in its cost.
            input_tokens: None,
            cost_micro_usd: Some(d.price.map_or(0, |p| p.cost(&usage))),
        };
        Ok(Embedded { vector, line })
    };
    tokio::time::timeout(sem.timeout, work)
        .await
        .map_err(|_| format!("no embedding within {:?}", sem.timeout))?
}

/// Embedding failed last time (a warning was logged; the next success logs the recovery).
static DOWN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// An embedding failed: the lookup is a `bypass`; counted, and logged once per incident.
pub fn failed(why: &str) {
    crate::telemetry::metrics::cache_error("embedding");
    if !DOWN.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            "the semantic cache cannot embed ({why}): semantic lookups are bypassed until it can"
        );
    }
}

/// An embedding worked.
pub fn healthy() {
    if DOWN.swap(false, std::sync::atomic::Ordering::Relaxed) {
        tracing::info!("the semantic cache embeds again");
    }
}
