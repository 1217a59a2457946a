//! Wall-clock time for limits and budget periods, injectable so tests can move it.
//!
//! `SLUICE_TEST_CLOCK_FILE=/path` makes the gateway add the number of seconds written in that
//! file (an integer, may be absent or empty = 0) to the system time. For tests only: the file
//! is re-read at most every 50 ms.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync + 'static {
    /// Unix time in milliseconds.
    fn now_ms(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        system_ms()
    }
}

fn system_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// System time plus an offset read from a file.
pub struct FileClock {
    path: std::path::PathBuf,
    offset_ms: AtomicI64,
    read_at: std::sync::Mutex<Option<Instant>>,
}

impl FileClock {
    pub fn new(path: std::path::PathBuf) -> Self {
        Self {
            path,
            offset_ms: AtomicI64::new(0),
            read_at: std::sync::Mutex::new(None),
        }
    }
}

impl Clock for FileClock {
    fn now_ms(&self) -> i64 {
        if let Ok(mut at) = self.read_at.lock() {
            if at.is_none_or(|t| t.elapsed().as_millis() >= 50) {
                *at = Some(Instant::now());
                let secs = std::fs::read_to_string(&self.path)
                    .ok()
                    .and_then(|t| t.trim().parse::<i64>().ok())
                    .unwrap_or(0);
                self.offset_ms
                    .store(secs.saturating_mul(1000), Ordering::Relaxed);
            }
        }
        system_ms().saturating_add(self.offset_ms.load(Ordering::Relaxed))
    }
}

/// A clock tests set by hand.
#[derive(Default)]
pub struct ManualClock(pub AtomicI64);

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The system clock, or the file clock when `SLUICE_TEST_CLOCK_FILE` is set.
pub fn from_env() -> Arc<dyn Clock> {
    match std::env::var_os("SLUICE_TEST_CLOCK_FILE") {
        Some(p) if !p.is_empty() => {
            tracing::warn!("using the test clock from SLUICE_TEST_CLOCK_FILE");
            Arc::new(FileClock::new(p.into()))
        }
        _ => Arc::new(SystemClock),
    }
}

/// Days since 1970-01-01 -> (year, month 1-12, day 1-31) (Howard Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) -> days since 1970-01-01.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2024, 2, 29), 19782);
        for d in [-1000, 0, 59, 60, 19782, 20_000, 30_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }
}
