//! Human-friendly config values: durations (`30s`, `500ms`) and byte sizes (`32MiB`).

use std::time::Duration;

/// `"30 s"` -> `(30, "s")`; `None` when there is no leading integer.
fn number_and_unit(text: &str) -> Option<(u64, &str)> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    Some((num.parse().ok()?, unit.trim()))
}

/// A duration field that must be more than zero: `default` when absent; on an error, the
/// error (at `path`) and `default`.
pub fn positive_duration(
    path: &str,
    value: Option<&str>,
    default: Duration,
    errs: &mut Vec<super::ConfigError>,
) -> Duration {
    match value.map(parse_duration) {
        None => default,
        Some(Ok(d)) if !d.is_zero() => d,
        Some(Ok(_)) => {
            errs.push(super::ConfigError::new(path, "must be more than 0"));
            default
        }
        Some(Err(e)) => {
            errs.push(super::ConfigError::new(path, e));
            default
        }
    }
}

/// Parses `250ms`, `30s`, `5m`, `1h` (a bare integer means seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (n, unit) = number_and_unit(text)
        .ok_or_else(|| format!("invalid duration {text:?}; use e.g. 500ms, 30s, 5m, 1h"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" | "min" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => {
            return Err(format!(
                "invalid duration {text:?}: unknown unit {unit:?}; use ms, s, m or h"
            ))
        }
    };
    Ok(d)
}

/// Parses `1048576`, `512KiB`, `32MiB`, `1GiB`, `10MB`, `64kb`.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let (n, unit) = number_and_unit(text)
        .ok_or_else(|| format!("invalid size {text:?}; use e.g. 32MiB, 512KiB, 1048576"))?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" | "k" => 1 << 10,
        "mb" => 1_000_000,
        "mib" | "m" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" | "g" => 1 << 30,
        _ => return Err(format!("invalid size {text:?}: unknown unit {unit:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("7 days").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("32MiB"), Ok(32 << 20));
        assert_eq!(parse_bytes("1kb"), Ok(1000));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("12 parsecs").is_err());
    }
}
