//! The spill file: an append-only JSONL file of usage rows the store could not take (slow,
//! locked or down), replayed into the store once it answers again, and at the next start.
//!
//! Replay renames the file to `<path>.replay` first, so new spills go to a fresh file while
//! the old one is read; a replay interrupted by a crash is simply done again at the next
//! start (the store skips rows it already has).
//!
//! It can hold compliance prompts and answers, so: created `0600`; bounded by
//! `usage.spill_max_size` (spill file and replay file together) — when full, a row's
//! compliance content is dropped before the row itself, and every drop is counted
//! (`sluice_usage_spill_content_dropped_total`, `sluice_usage_dropped_total`) and logged;
//! and the retention purge removes content older than `usage.compliance.retention` from it.

use super::UsageRow;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub struct Spill {
    path: PathBuf,
    file: Mutex<Option<File>>,
    /// `usage.spill_max_size`: spill and replay file together, in bytes.
    max_bytes: u64,
}

/// Default `usage.spill_max_size`.
pub const DEFAULT_SPILL_MAX: u64 = 1 << 30;

/// Opens for appending, creating it readable by the owner only.
fn open_private(path: &Path, append: bool) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.create(true);
    if append {
        o.append(true);
    } else {
        o.write(true).truncate(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)
}

impl Spill {
    pub fn new(path: PathBuf, max_bytes: u64) -> Self {
        Self {
            path,
            file: Mutex::new(None),
            max_bytes,
        }
    }

    /// Bytes held now (spill file plus a replay file in progress).
    fn held(&self) -> u64 {
        let len = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
        len(&self.path) + len(&self.replay_path())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn replay_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".replay");
        PathBuf::from(p)
    }

    /// Appends rows, one JSON line each, in one write (the OS has them once this returns:
    /// a `kill -9` does not lose them). Within `max_bytes`: rows whose line would not fit lose
    /// their compliance content first, then rows that still do not fit are dropped; both
    /// counted and logged here. Returns how many rows were written.
    pub fn append<'a>(
        &self,
        rows: impl IntoIterator<Item = &'a UsageRow>,
    ) -> std::io::Result<usize> {
        let mut guard = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("spill file lock poisoned"))?;
        let mut room = self.max_bytes.saturating_sub(self.held());
        let mut buf = Vec::new();
        let (mut n, mut contents_dropped, mut rows_dropped) = (0, 0u64, 0usize);
        for r in rows {
            let mut line = serde_json::to_vec(r)?;
            line.push(b'\n');
            if line.len() as u64 > room && r.content.is_some() {
                let bare = UsageRow {
                    content: None,
                    ..r.clone()
                };
                line = serde_json::to_vec(&bare)?;
                line.push(b'\n');
                contents_dropped += 1;
            }
            if line.len() as u64 > room {
                rows_dropped += 1;
                continue;
            }
            room -= line.len() as u64;
            buf.extend_from_slice(&line);
            n += 1;
        }
        if contents_dropped > 0 {
            crate::telemetry::metrics::usage_spill_content_dropped(contents_dropped);
            tracing::error!(
                dropped = contents_dropped,
                "usage spill file {} is at usage.spill_max_size ({} bytes): compliance content \
                 of spilled records was dropped (the records are kept)",
                self.path.display(),
                self.max_bytes
            );
        }
        if rows_dropped > 0 {
            crate::telemetry::metrics::usage_dropped(rows_dropped);
            tracing::error!(
                dropped = rows_dropped,
                "usage spill file {} is at usage.spill_max_size ({} bytes): usage records were lost",
                self.path.display(),
                self.max_bytes
            );
        }
        if n == 0 {
            return Ok(0);
        }
        if guard.is_none() {
            *guard = Some(open_private(&self.path, true)?);
        }
        if let Some(f) = guard.as_mut() {
            f.write_all(&buf)?;
        }
        Ok(n)
    }

    /// Retention: removes compliance content recorded before `before_ms` from the spill and
    /// replay files (rewritten whole, then renamed over the old file); returns how many
    /// contents went. A replay reading the old replay file meanwhile keeps its copy, and
    /// what it writes to the store is purged there.
    pub fn purge_content(&self, before_ms: i64) -> std::io::Result<u64> {
        let mut guard = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("spill file lock poisoned"))?;
        let mut purged = 0;
        for path in [self.path.clone(), self.replay_path()] {
            if !std::fs::metadata(&path).is_ok_and(|m| m.len() > 0) {
                continue;
            }
            // Line by line into a private temporary file: the spill can be large.
            let mut tmp = path.clone().into_os_string();
            tmp.push(".purge");
            let tmp = PathBuf::from(tmp);
            let mut out = std::io::BufWriter::new(open_private(&tmp, false)?);
            let mut changed = 0;
            for line in BufReader::new(File::open(&path)?).lines() {
                let line = line?;
                match serde_json::from_str::<UsageRow>(&line) {
                    Ok(mut r) if r.content.is_some() && r.ts_ms < before_ms => {
                        r.content = None;
                        serde_json::to_writer(&mut out, &r)?;
                        changed += 1;
                    }
                    _ => out.write_all(line.as_bytes())?,
                }
                out.write_all(b"\n")?;
            }
            let f = out
                .into_inner()
                .map_err(std::io::IntoInnerError::into_error)?;
            if changed == 0 {
                drop(f);
                std::fs::remove_file(&tmp)?;
                continue;
            }
            f.sync_all()?;
            if path == self.path {
                // The appender's handle points at the old file: reopen on the next append.
                *guard = None;
            }
            std::fs::rename(&tmp, &path)?;
            purged += changed;
        }
        Ok(purged)
    }

    /// True when there is something to replay.
    pub fn pending(&self) -> bool {
        let nonempty = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.len() > 0);
        nonempty(&self.path) || nonempty(&self.replay_path())
    }

    /// Moves the current spill file aside for replay (appending it to an unfinished earlier
    /// replay file, if one is left) and returns the file to read.
    pub fn begin_replay(&self) -> std::io::Result<Option<PathBuf>> {
        let mut guard = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("spill file lock poisoned"))?;
        *guard = None;
        let replay = self.replay_path();
        if std::fs::metadata(&self.path).is_ok_and(|m| m.len() > 0) {
            if replay.exists() {
                let mut out = open_private(&replay, true)?;
                let mut inp = File::open(&self.path)?;
                std::io::copy(&mut inp, &mut out)?;
                std::fs::remove_file(&self.path)?;
            } else {
                std::fs::rename(&self.path, &replay)?;
            }
        }
        Ok(replay.exists().then_some(replay))
    }
}

/// Reads a replay file in chunks; a line that does not parse (a torn last line after a
/// crash mid-write) is counted and skipped.
pub struct ReplayReader {
    lines: std::io::Lines<BufReader<File>>,
    pub bad_lines: u64,
}

impl ReplayReader {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            lines: BufReader::new(File::open(path)?).lines(),
            bad_lines: 0,
        })
    }

    /// Up to `n` rows; empty at the end of the file.
    pub fn next_chunk(&mut self, n: usize) -> std::io::Result<Vec<UsageRow>> {
        let mut chunk = Vec::with_capacity(n.min(4096));
        while chunk.len() < n {
            let Some(line) = self.lines.next() else { break };
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<UsageRow>(&line) {
                Ok(r) => chunk.push(r),
                Err(_) => self.bad_lines += 1,
            }
        }
        Ok(chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Content;

    fn row(id: usize, ts_ms: i64, content: usize) -> UsageRow {
        UsageRow {
            request_id: format!("req_{id}"),
            ts_ms,
            content: (content > 0).then(|| Content {
                prompt: "p".repeat(content),
                response: "r".into(),
            }),
            ..UsageRow::default()
        }
    }

    #[cfg(unix)]
    #[test]
    fn created_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let s = Spill::new(dir.path().join("s.jsonl"), DEFAULT_SPILL_MAX);
        s.append([&row(1, 1, 10)]).unwrap();
        let mode = std::fs::metadata(s.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        s.purge_content(i64::MAX).unwrap();
        let mode = std::fs::metadata(s.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the purge's rewrite is private too");
    }

    #[test]
    fn bounded_content_goes_before_records() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spill::new(dir.path().join("s.jsonl"), 30_000);
        let mut written = 0;
        for i in 0..100 {
            written += s.append([&row(i, 1, 3_000)]).unwrap();
        }
        let size = std::fs::metadata(s.path()).unwrap().len();
        assert!(size <= 30_000, "{size}");
        let rows: Vec<UsageRow> = std::fs::read_to_string(s.path())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows.len(), written);
        let with = rows.iter().filter(|r| r.content.is_some()).count();
        let without = rows.len() - with;
        // First rows kept their content; then contents went while records still fit; then
        // records were dropped.
        assert!(with >= 3 && without >= 1, "{with} with, {without} without");
        assert!(rows[..with].iter().all(|r| r.content.is_some()));
        assert!(written < 100);
    }

    #[test]
    fn purge_removes_only_expired_content() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spill::new(dir.path().join("s.jsonl"), DEFAULT_SPILL_MAX);
        s.append([&row(1, 1_000, 10), &row(2, 5_000, 10), &row(3, 1_000, 0)])
            .unwrap();
        assert_eq!(s.purge_content(2_000).unwrap(), 1);
        // Appending after a purge goes to the new file.
        s.append([&row(4, 9_000, 10)]).unwrap();
        let rows: Vec<UsageRow> = std::fs::read_to_string(s.path())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let content: Vec<bool> = rows.iter().map(|r| r.content.is_some()).collect();
        assert_eq!(content, [false, true, false, true]);
    }
}
