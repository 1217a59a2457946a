//! The `responses:` section: how long stored Responses API objects are kept.

use super::units::parse_duration;
use serde::Deserialize;
use std::time::Duration;

pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 86_400);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResponses {
    /// How long a stored response stays readable (and continuable): `30d` (default), `12h`;
    /// `0` keeps them forever.
    pub retention: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponsesConfig {
    /// `None`: kept forever.
    pub retention: Option<Duration>,
}

impl Default for ResponsesConfig {
    fn default() -> Self {
        Self {
            retention: Some(DEFAULT_RETENTION),
        }
    }
}

/// `30d`, or any duration `parse_duration` takes.
fn parse_retention(text: &str) -> Result<Duration, String> {
    if let Some(days) = text.trim().strip_suffix('d') {
        let n: u64 = days
            .trim()
            .parse()
            .map_err(|_| format!("invalid duration {text:?}; use e.g. 30d, 12h"))?;
        return Ok(Duration::from_secs(n.saturating_mul(86_400)));
    }
    parse_duration(text).map_err(|_| format!("invalid duration {text:?}; use e.g. 30d, 12h, 90m"))
}

impl RawResponses {
    pub fn validate(self) -> Result<ResponsesConfig, (String, String)> {
        let retention = match self.retention.as_deref() {
            None => Some(DEFAULT_RETENTION),
            Some(t) => {
                let d = parse_retention(t).map_err(|e| ("responses.retention".to_string(), e))?;
                (!d.is_zero()).then_some(d)
            }
        };
        Ok(ResponsesConfig { retention })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn retention_takes_days_and_zero() {
        let v = |t: &str| {
            RawResponses {
                retention: Some(t.into()),
            }
            .validate()
        };
        assert_eq!(
            v("7d").unwrap().retention,
            Some(Duration::from_secs(7 * 86_400))
        );
        assert_eq!(v("90m").unwrap().retention, Some(Duration::from_secs(5400)));
        assert_eq!(v("0").unwrap().retention, None);
        let e = v("x").unwrap_err();
        assert_eq!(e.0, "responses.retention");
        assert!(e.1.contains("30d"), "{}", e.1);
        assert_eq!(
            RawResponses::default().validate().unwrap().retention,
            Some(DEFAULT_RETENTION)
        );
    }
}
