//! The spill file: an append-only JSONL file of usage rows the store could not take (slow,
//! locked or down), replayed into the store once it answers again, and at the next start.
//!
//! Replay renames the file to `<path>.replay` first, so new spills go to a fresh file while
//! the old one is read; a replay interrupted by a crash is simply done again at the next
//! start (the store skips rows it already has).

use super::UsageRow;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub struct Spill {
    path: PathBuf,
    file: Mutex<Option<File>>,
}

impl Spill {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            file: Mutex::new(None),
        }
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
    /// a `kill -9` does not lose them).
    pub fn append<'a>(
        &self,
        rows: impl IntoIterator<Item = &'a UsageRow>,
    ) -> std::io::Result<usize> {
        let mut buf = Vec::new();
        let mut n = 0;
        for r in rows {
            serde_json::to_writer(&mut buf, r)?;
            buf.push(b'\n');
            n += 1;
        }
        if n == 0 {
            return Ok(0);
        }
        let mut guard = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("spill file lock poisoned"))?;
        if guard.is_none() {
            *guard = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            );
        }
        if let Some(f) = guard.as_mut() {
            f.write_all(&buf)?;
        }
        Ok(n)
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
                let mut out = OpenOptions::new().append(true).open(&replay)?;
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
