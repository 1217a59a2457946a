//! Admin request bodies: strict JSON (unknown fields refused) and checks that name the field.

use crate::error::ApiError;
use crate::policy::limits::Period;
use crate::policy::prices::parse_usd;
use crate::store::gov::Limits;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// Parses a JSON body; a type error names its field (`rpm: invalid value ...`).
pub(crate) fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::bad_request(format!("invalid JSON body: {inner}"), None)
        } else {
            ApiError::bad_request(format!("`{path}`: {inner}"), field(&path))
        }
    })
}

/// The field names a caller can get wrong, as `'static` for the error body's `param`.
fn field(path: &str) -> Option<&'static str> {
    const FIELDS: &[&str] = &[
        "name",
        "parent",
        "team",
        "user",
        "role",
        "models",
        "rpm",
        "tpm",
        "max_concurrency",
        "budget_usd",
        "budget_period",
        "expires_at",
        "metadata",
        "grace_period",
        "model_limits",
        "request_id",
        "score",
        "label",
        "comment",
    ];
    let head = path.split(['.', '[']).next().unwrap_or(path);
    FIELDS.iter().copied().find(|f| *f == head)
}

/// Every field a team, user or key body may have; each handler refuses those its entity
/// lacks. One struct so that unknown fields are refused (`deny_unknown_fields` does not mix
/// with `flatten`) and the limit fields are read in one place.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EntityInput {
    pub name: Option<String>,
    pub parent: Option<String>,
    pub team: Option<String>,
    pub user: Option<String>,
    pub role: Option<String>,
    pub models: Option<Vec<String>>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub max_concurrency: Option<u64>,
    pub budget_usd: Option<serde_json::Value>,
    pub budget_period: Option<String>,
    pub expires_at: Option<serde_json::Value>,
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// Teams only: `{"gpt-4o": {"rpm": 10, "tpm": 10000, "max_concurrency": 2}}`.
    pub model_limits: Option<std::collections::BTreeMap<String, crate::store::gov::ModelLimits>>,
}

impl EntityInput {
    /// 400 for a field that `kind` (e.g. `team`) does not have.
    pub(crate) fn refuse(&self, kind: &str, fields: &[&'static str]) -> Result<(), ApiError> {
        for f in fields {
            let given = match *f {
                "parent" => self.parent.is_some(),
                "team" => self.team.is_some(),
                "user" => self.user.is_some(),
                "role" => self.role.is_some(),
                "expires_at" => self.expires_at.is_some(),
                "model_limits" => self.model_limits.is_some(),
                _ => false,
            };
            if given {
                return Err(ApiError::bad_request(
                    format!("`{f}` is not a field of a {kind}"),
                    Some(f),
                ));
            }
        }
        Ok(())
    }

    /// Applies the limit fields and metadata (the parts every entity has), checking each.
    pub(crate) fn apply_common(
        &mut self,
        l: &mut Limits,
        metadata: &mut serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), ApiError> {
        if let Some(m) = self.metadata.take() {
            *metadata = m;
        }
        if let Some(models) = self.models.take() {
            if models.iter().any(|m| m.trim().is_empty()) {
                return Err(ApiError::bad_request(
                    "`models` must not contain empty names",
                    Some("models"),
                ));
            }
            l.models = Some(models);
        }
        if self.rpm.is_some() {
            l.rpm = self.rpm;
        }
        if self.tpm.is_some() {
            l.tpm = self.tpm;
        }
        if self.max_concurrency.is_some() {
            l.max_concurrency = self.max_concurrency;
        }
        if let Some(b) = self.budget_usd.take() {
            let text = match &b {
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => String::new(),
                _ => "?".into(),
            };
            l.budget_micro_usd = if text.is_empty() {
                None
            } else {
                Some(parse_usd(&text).map_err(|e| {
                    ApiError::bad_request(format!("`budget_usd`: {e}"), Some("budget_usd"))
                })?)
            };
        }
        if let Some(p) = self.budget_period.take() {
            let period = Period::parse(&p).ok_or_else(|| {
                ApiError::bad_request(
                    format!("`budget_period`: {p:?} is not one of {}", Period::NAMES),
                    Some("budget_period"),
                )
            })?;
            l.budget_period = Some(period.as_str().to_string());
        }
        Ok(())
    }
}

/// Names of teams, users and keys: 1-64 of `A-Z a-z 0-9 - _ .`.
pub(crate) fn check_name(name: &str, param: &'static str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            format!(
                "`{param}`: {name:?} must be 1-64 characters of letters, digits, '-', '_' or '.'"
            ),
            Some(param),
        ))
    }
}

/// `expires_at`: unix seconds, or `YYYY-MM-DD` / `YYYY-MM-DDTHH:MM:SSZ` (UTC) -> unix ms.
pub(crate) fn parse_time(v: &serde_json::Value) -> Result<i64, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "`expires_at`: expected unix seconds or a UTC time such as 2026-12-31T23:59:59Z",
            Some("expires_at"),
        )
    };
    match v {
        serde_json::Value::Number(n) => n.as_i64().map(|s| s * 1000).ok_or_else(bad),
        serde_json::Value::String(s) => {
            let (date, time) = s.split_once('T').unwrap_or((s.as_str(), "00:00:00Z"));
            let d: Vec<&str> = date.split('-').collect();
            let t: Vec<&str> = time.trim_end_matches('Z').split(':').collect();
            if d.len() != 3 || t.len() != 3 {
                return Err(bad());
            }
            let num = |x: &str| x.parse::<i64>().map_err(|_| bad());
            let (y, m, day) = (num(d[0])?, num(d[1])?, num(d[2])?);
            let (hh, mm, ss) = (num(t[0])?, num(t[1])?, num(t[2])?);
            if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
                return Err(bad());
            }
            let days = crate::policy::clock::days_from_civil(
                y,
                u32::try_from(m).map_err(|_| bad())?,
                u32::try_from(day).map_err(|_| bad())?,
            );
            Ok((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000)
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn times_parse() {
        assert_eq!(parse_time(&serde_json::json!(10)).unwrap(), 10_000);
        assert_eq!(
            parse_time(&serde_json::json!("2023-11-14T22:13:20Z")).unwrap(),
            1_700_000_000_000
        );
        assert!(parse_time(&serde_json::json!("tomorrow")).is_err());
    }

    #[test]
    fn limits_name_the_bad_field() {
        let mut l = Limits::default();
        let mut meta = serde_json::Map::new();
        let e = EntityInput {
            budget_usd: Some(serde_json::json!(-5)),
            ..Default::default()
        }
        .apply_common(&mut l, &mut meta)
        .unwrap_err();
        assert!(matches!(
            e,
            ApiError::BadRequest {
                param: Some("budget_usd"),
                ..
            }
        ));
        let e = EntityInput {
            budget_period: Some("fortnightly".into()),
            ..Default::default()
        }
        .apply_common(&mut l, &mut meta)
        .unwrap_err();
        assert!(matches!(
            e,
            ApiError::BadRequest {
                param: Some("budget_period"),
                ..
            }
        ));
    }
}
