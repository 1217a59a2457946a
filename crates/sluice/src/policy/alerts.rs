//! Budget soft-threshold alerts: when settling a request moves a budget's spend across one of
//! the configured percentages (default 50, 80, 100), a warning is logged and a JSON POST goes
//! to `governance.alert_webhook`, retried with exponential backoff. Spend only grows within a
//! period, so each threshold fires once per budget period (per process).

use bytes::Bytes;
use http_body_util::Full;
use std::time::Duration;
use tokio::sync::mpsc;

const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const TIMEOUT: Duration = Duration::from_secs(10);

/// One budget crossing one threshold.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BudgetAlert {
    /// `budget.threshold`
    pub event: &'static str,
    /// e.g. `key "ci" (key_12ab)` or `team "eng"`.
    pub scope: String,
    pub threshold_percent: u32,
    pub spend_usd: String,
    pub budget_usd: String,
    pub period: &'static str,
    pub at: String,
}

/// Where crossings go; cheap to clone, never blocks.
#[derive(Clone)]
pub struct AlertSink {
    thresholds: std::sync::Arc<[u32]>,
    tx: Option<mpsc::UnboundedSender<BudgetAlert>>,
}

impl AlertSink {
    /// Starts the sender when a webhook is configured. Not on the shutdown tracker: alerts
    /// are notifications, not books, and a dead webhook must not hold up shutdown.
    pub fn start(webhook: Option<http::Uri>, thresholds: Vec<u32>) -> Self {
        let tx = webhook.map(|uri| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(send_all(uri, rx));
            tx
        });
        Self {
            thresholds: thresholds.into(),
            tx,
        }
    }

    /// Thresholds crossed going from `before` to `after` spend of `limit` (all micro-USD).
    pub fn crossed(&self, before: i64, after: i64, limit: i64) -> Vec<u32> {
        if limit <= 0 || after <= before {
            return Vec::new();
        }
        self.thresholds
            .iter()
            .copied()
            .filter(|t| {
                let mark = i128::from(limit) * i128::from(*t);
                i128::from(before) * 100 < mark && mark <= i128::from(after) * 100
            })
            .collect()
    }

    /// Sends an alert for every threshold a settled request's spend moves crossed.
    pub fn spend_moved(&self, moves: &[super::limits::SpendMove], now_ms: i64) {
        for m in moves {
            for t in self.crossed(m.before, m.after, m.limit) {
                self.send(BudgetAlert {
                    event: "budget.threshold",
                    scope: m.label.to_string(),
                    threshold_percent: t,
                    spend_usd: super::prices::format_usd(m.after),
                    budget_usd: super::prices::format_usd(m.limit),
                    period: m.period.as_str(),
                    at: super::governance::rfc3339(now_ms),
                });
            }
        }
    }

    pub fn send(&self, alert: BudgetAlert) {
        tracing::warn!(
            scope = %alert.scope,
            threshold = alert.threshold_percent,
            spend_usd = %alert.spend_usd,
            budget_usd = %alert.budget_usd,
            period = alert.period,
            "budget threshold reached"
        );
        if let Some(tx) = &self.tx {
            let _ = tx.send(alert);
        }
    }
}

async fn send_all(uri: http::Uri, mut rx: mpsc::UnboundedReceiver<BudgetAlert>) {
    let client = crate::providers::openai_compat::basic_client();
    while let Some(alert) = rx.recv().await {
        let Ok(body) = serde_json::to_vec(&alert) else {
            continue;
        };
        let body = Bytes::from(body);
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            let req = http::Request::post(uri.clone())
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(
                    http::header::USER_AGENT,
                    concat!("sluice/", env!("CARGO_PKG_VERSION")),
                )
                .body(Full::new(body.clone()));
            let Ok(req) = req else { break };
            match tokio::time::timeout(TIMEOUT, client.request(req)).await {
                Ok(Ok(resp)) if resp.status().is_success() => break,
                outcome => {
                    let why = match outcome {
                        Ok(Ok(resp)) => format!("status {}", resp.status()),
                        Ok(Err(e)) => e.to_string(),
                        Err(_) => "timed out".to_string(),
                    };
                    if attempt == ATTEMPTS {
                        tracing::error!(
                            "budget alert webhook failed {ATTEMPTS} times, giving up: {why}"
                        );
                    } else {
                        tracing::warn!(attempt, "budget alert webhook failed ({why}); retrying");
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_fire_once_when_crossed() {
        let s = AlertSink {
            thresholds: vec![50, 80, 100].into(),
            tx: None,
        };
        assert_eq!(s.crossed(0, 49, 100), Vec::<u32>::new());
        assert_eq!(s.crossed(49, 50, 100), vec![50]);
        assert_eq!(s.crossed(50, 60, 100), Vec::<u32>::new());
        assert_eq!(s.crossed(60, 120, 100), vec![80, 100]);
        assert_eq!(s.crossed(0, 10, 0), Vec::<u32>::new());
    }
}
