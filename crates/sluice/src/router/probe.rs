//! Optional active health checks: `providers[].health_check` sends a cheap GET (default
//! `/models`) every `interval`. A failed check counts as a failure of each of the provider's
//! deployments (so a dead provider's breakers open without client traffic); a successful one
//! is the half-open probe that closes a breaker whose cooldown has passed.

use crate::app::AppState;
use crate::config::ProviderConfig;
use crate::providers::openai_compat::{basic_client, HttpsClient};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How often the loop looks for checks that are due (and for new ones when none is configured).
const TICK: Duration = Duration::from_millis(50);
const IDLE_TICK: Duration = Duration::from_secs(1);

/// Runs until `stop` fires. Reads the live config on every tick, so a reload adds, changes
/// or removes checks without a restart.
pub async fn run(state: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let client = basic_client();
    let mut due: HashMap<String, Instant> = HashMap::new();
    let mut tick = TICK;
    loop {
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let gw = state.gateway.load_full();
        let any = gw.config.providers.iter().any(|p| p.health_check.is_some());
        tick = if any { TICK } else { IDLE_TICK };
        let now = Instant::now();
        for p in &gw.config.providers {
            let Some(hc) = &p.health_check else { continue };
            let next = due.entry(p.name.clone()).or_insert(now);
            if *next > now {
                continue;
            }
            *next = now + hc.interval;
            let (gw, client, p) = (gw.clone(), client.clone(), p.clone());
            tokio::spawn(async move {
                let ok = check(&client, &p).await;
                for (health, breaker) in gw.models.deployments_of(&p.name) {
                    if ok {
                        health.probe_succeeded();
                    } else {
                        health.record_failure(&breaker);
                    }
                }
                if !ok {
                    tracing::warn!(provider = %p.name, "health check failed");
                }
            });
        }
        due.retain(|name, _| gw.config.providers.iter().any(|p| &p.name == name));
    }
}

/// One GET with the provider's headers and key; true on a 2xx within the timeout.
async fn check(client: &HttpsClient, p: &ProviderConfig) -> bool {
    let (Some(base), Some(hc)) = (&p.base_url, &p.health_check) else {
        return false;
    };
    let Ok(uri) = format!("{base}{}", hc.path).parse::<http::Uri>() else {
        return false;
    };
    let mut req = http::Request::new(Full::new(Bytes::new()));
    *req.uri_mut() = uri;
    let h = req.headers_mut();
    for (n, v) in &p.headers {
        h.insert(n, v.clone());
    }
    if let Some(key) = &p.api_key {
        if let Ok(mut v) = http::HeaderValue::from_str(&format!("Bearer {}", key.expose())) {
            v.set_sensitive(true);
            h.insert(http::header::AUTHORIZATION, v);
        }
    }
    let fut = async {
        let resp = client.request(req).await.ok()?;
        let ok = resp.status().is_success();
        // Read (and drop) the body so the connection can be reused.
        let _ = resp.into_body().collect().await;
        Some(ok)
    };
    matches!(tokio::time::timeout(hc.timeout, fut).await, Ok(Some(true)))
}
