//! The usage sink: requests hand records to a bounded queue (no I/O on the request path);
//! one writer task batches them into the store, by size or after `flush_interval`.
//!
//! Nothing is dropped: when the store is slow (a write takes longer than `store_timeout`),
//! fails, or is down, batches are appended to the spill file (JSONL) and replayed into the
//! store once it answers again (checked every `retry_interval`) or at the next start. When
//! the queue itself is full, the request appends its record to the spill file directly.
//! Shutdown drains the queue into the store, or into the spill file if the store is down.
//! So a `kill -9` loses at most the records of the last `flush_interval` plus one write.

use super::spill::{ReplayReader, Spill};
use super::{UsageRecord, UsageRow, UsageStore};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

/// How the writer batches, and where it spills.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Records the queue holds before requests spill directly.
    pub queue_capacity: usize,
    /// Records per store transaction.
    pub batch_size: usize,
    /// Longest a record waits in memory before its batch is written.
    pub flush_interval: Duration,
    /// A store write slower than this is abandoned and its batch spilled.
    pub store_timeout: Duration,
    /// While spilling, how often the store is tried again.
    pub retry_interval: Duration,
    /// The spill file; `None` disables spilling (an in-memory store).
    pub spill_path: Option<PathBuf>,
    /// `usage.spill_max_size`, in bytes.
    pub spill_max_bytes: u64,
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 100_000,
            batch_size: 4000,
            flush_interval: Duration::from_millis(100),
            store_timeout: Duration::from_secs(2),
            retry_interval: Duration::from_secs(1),
            spill_path: None,
            spill_max_bytes: super::spill::DEFAULT_SPILL_MAX,
        }
    }
}

/// Cheap, cloneable handle used by requests.
#[derive(Clone)]
pub struct UsageSink {
    tx: mpsc::Sender<UsageRecord>,
    spill: Option<Arc<Spill>>,
    /// Counts completed spill replays; budgets re-seed their spend when it moves.
    replays: tokio::sync::watch::Receiver<u64>,
    /// A spill file from an earlier run was waiting at start.
    replay_pending_at_start: bool,
}

impl UsageSink {
    /// Retention for the spill file: drops compliance content recorded before `before_ms`.
    pub async fn purge_spilled_content(&self, before_ms: i64) -> std::io::Result<u64> {
        let Some(spill) = self.spill.clone() else {
            return Ok(0);
        };
        tokio::task::spawn_blocking(move || spill.purge_content(before_ms))
            .await
            .map_err(std::io::Error::other)?
    }

    /// Completed spill replays so far (watch it to learn when the store caught up).
    pub fn replays(&self) -> tokio::sync::watch::Receiver<u64> {
        self.replays.clone()
    }

    /// Waits (at most `within`) until a spill file left by an earlier run is in the store, so
    /// that spend seeded from the store counts it.
    pub async fn caught_up(&self, within: Duration) {
        if !self.replay_pending_at_start {
            return;
        }
        let mut rx = self.replays.clone();
        if tokio::time::timeout(within, rx.wait_for(|n| *n > 0))
            .await
            .is_err()
        {
            tracing::warn!(
                "the usage spill file was not replayed within {within:?}; budgets start from \
                 the stored spend and catch up once it is"
            );
        }
    }

    /// Queues a record; never waits. A full queue spills the record to the file instead.
    pub fn record(&self, rec: UsageRecord) {
        match self.tx.try_send(rec) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(rec)) => {
                let row = UsageRow::from(rec);
                match self.spill.as_ref().map(|s| s.append([&row])) {
                    Some(Ok(n)) => crate::telemetry::metrics::usage_spilled(n),
                    Some(Err(e)) => {
                        crate::telemetry::metrics::usage_dropped(1);
                        tracing::error!(
                            "usage queue full and spill failed ({e}); a record was lost"
                        );
                    }
                    None => {
                        crate::telemetry::metrics::usage_dropped(1);
                        tracing::error!("usage queue full and no spill file; a record was lost");
                    }
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                crate::telemetry::metrics::usage_dropped(1);
                tracing::error!("usage writer has stopped; a usage record was lost");
            }
        }
    }

    /// Records waiting in the queue.
    pub fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

/// Owns the writer task; `close` flushes everything queued and waits for it.
pub struct UsageWriter {
    stop: tokio::sync::watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

impl UsageWriter {
    pub fn start<S: UsageStore>(
        store: S,
        tracker: &TaskTracker,
        cfg: SinkConfig,
    ) -> (UsageSink, UsageWriter) {
        let (tx, rx) = mpsc::channel(cfg.queue_capacity.max(1));
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let spill = cfg
            .spill_path
            .clone()
            .map(|p| Arc::new(Spill::new(p, cfg.spill_max_bytes)));
        let pending = spill.as_ref().is_some_and(|s| s.pending());
        let (replayed_tx, replays) = tokio::sync::watch::channel(0u64);
        let writer = Writer {
            store,
            replayed: replayed_tx,
            // A spill file left by an earlier run is replayed at once.
            spilling: pending,
            next_retry: Instant::now(),
            spill: spill.clone(),
            cfg,
        };
        let handle = tracker.spawn(writer.run(rx, stop_rx));
        (
            UsageSink {
                tx,
                spill,
                replays,
                replay_pending_at_start: pending,
            },
            UsageWriter { stop, handle },
        )
    }

    /// Writes everything queued so far, then stops the writer.
    pub async fn close(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.handle.await {
            tracing::error!("usage writer ended abnormally: {e}");
        }
    }
}

struct Writer<S> {
    store: S,
    replayed: tokio::sync::watch::Sender<u64>,
    cfg: SinkConfig,
    spill: Option<Arc<Spill>>,
    /// The store failed: batches go to the spill file until a retry succeeds.
    spilling: bool,
    next_retry: Instant,
}

impl<S: UsageStore> Writer<S> {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<UsageRecord>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let max = self.cfg.batch_size.max(1);
        let mut batch: Vec<UsageRecord> = Vec::with_capacity(max);
        loop {
            if self.spilling && Instant::now() >= self.next_retry {
                self.try_replay().await;
            }
            let retry_at = self.next_retry;
            let spilling = self.spilling;
            // `wait_for` looks at the current value first, so a stop is never missed.
            let mut stopping = tokio::select! {
                n = rx.recv_many(&mut batch, max) => n == 0,
                _ = stop.wait_for(|s| *s) => true,
                () = tokio::time::sleep_until(retry_at), if spilling => continue,
            };
            // Gather until the batch is full or its first record has waited flush_interval.
            let deadline = Instant::now() + self.cfg.flush_interval;
            while !stopping && batch.len() < max {
                let room = max - batch.len();
                tokio::select! {
                    n = rx.recv_many(&mut batch, room) => if n == 0 { stopping = true },
                    () = tokio::time::sleep_until(deadline) => break,
                    _ = stop.wait_for(|s| *s) => stopping = true,
                }
            }
            crate::telemetry::metrics::usage_queue_depth(rx.len());
            self.flush(&mut batch).await;
            if stopping || *stop.borrow() {
                rx.close();
                while rx.recv_many(&mut batch, max).await > 0 {
                    self.flush(&mut batch).await;
                }
                crate::telemetry::metrics::usage_queue_depth(0);
                return;
            }
        }
    }

    async fn flush(&mut self, batch: &mut Vec<UsageRecord>) {
        if batch.is_empty() {
            return;
        }
        let rows: Vec<UsageRow> = batch.drain(..).map(UsageRow::from).collect();
        if !self.spilling {
            match tokio::time::timeout(self.cfg.store_timeout, self.store.write_batch(&rows)).await
            {
                Ok(Ok(())) => {
                    crate::telemetry::metrics::usage_written(rows.len());
                    return;
                }
                Ok(Err(e)) => {
                    tracing::warn!(records = rows.len(), "writing usage records failed: {e}")
                }
                Err(_) => tracing::warn!(
                    records = rows.len(),
                    "writing usage records took longer than {:?}",
                    self.cfg.store_timeout
                ),
            }
            if self.spill.is_none() {
                // No spill file (in-memory store): a few retries, then give up loudly.
                self.retry_then_drop(&rows).await;
                return;
            }
            tracing::warn!(
                "usage store unavailable: spilling records to the spill file until it answers"
            );
            self.spilling = true;
            self.next_retry = Instant::now() + self.cfg.retry_interval;
        }
        self.spill_rows(&rows);
    }

    fn spill_rows(&self, rows: &[UsageRow]) {
        let Some(spill) = &self.spill else { return };
        match spill.append(rows) {
            Ok(n) => crate::telemetry::metrics::usage_spilled(n),
            Err(e) => {
                crate::telemetry::metrics::usage_dropped(rows.len());
                tracing::error!(
                    records = rows.len(),
                    "could not append to the usage spill file {}: {e}; records lost",
                    spill.path().display()
                );
            }
        }
    }

    async fn retry_then_drop(&self, rows: &[UsageRow]) {
        let mut delay = Duration::from_millis(50);
        for _ in 0..4 {
            tokio::time::sleep(delay).await;
            delay *= 2;
            if let Ok(Ok(())) =
                tokio::time::timeout(self.cfg.store_timeout, self.store.write_batch(rows)).await
            {
                crate::telemetry::metrics::usage_written(rows.len());
                return;
            }
        }
        crate::telemetry::metrics::usage_dropped(rows.len());
        tracing::error!(
            records = rows.len(),
            "giving up on a batch of usage records"
        );
    }

    /// Replays the spill file into the store; on success the writer stops spilling.
    async fn try_replay(&mut self) {
        self.next_retry = Instant::now() + self.cfg.retry_interval;
        let Some(spill) = self.spill.clone() else {
            self.spilling = false;
            return;
        };
        let path = match spill.begin_replay() {
            Ok(Some(p)) => p,
            Ok(None) => {
                self.spilling = false;
                return;
            }
            Err(e) => {
                tracing::warn!("could not open the usage spill file for replay: {e}");
                return;
            }
        };
        let mut reader = match ReplayReader::open(&path) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("could not read {}: {e}", path.display());
                return;
            }
        };
        let mut replayed = 0;
        loop {
            let chunk = match reader.next_chunk(self.cfg.batch_size.max(1)) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("reading {}: {e}", path.display());
                    return;
                }
            };
            if chunk.is_empty() {
                break;
            }
            match tokio::time::timeout(self.cfg.store_timeout, self.store.write_batch_dedup(&chunk))
                .await
            {
                Ok(Ok(())) => replayed += chunk.len(),
                _ => {
                    // Still down: try again later (rows already replayed are skipped then).
                    return;
                }
            }
        }
        if reader.bad_lines > 0 {
            tracing::warn!(
                lines = reader.bad_lines,
                "skipped unreadable lines in the usage spill file"
            );
        }
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!("could not remove {}: {e}", path.display());
            return;
        }
        crate::telemetry::metrics::usage_replayed(replayed);
        self.replayed.send_modify(|n| *n += 1);
        tracing::info!(
            records = replayed,
            "usage store is back: replayed the spilled records"
        );
        // Records spilled by full-queue requests meanwhile are picked up at the next retry.
        self.spilling = spill.pending();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::store::Store;
    use crate::store::StoreError;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn rec(i: usize) -> UsageRecord {
        UsageRecord {
            request_id: format!("r{i}"),
            ts_ms: i64::try_from(i).unwrap(),
            surface: "openai.chat",
            attempts: 1,
            ..Default::default()
        }
    }

    async fn count(store: &Store) -> i64 {
        scalar(store, "SELECT COUNT(*) FROM usage_records").await
    }

    async fn scalar(store: &Store, sql: &'static str) -> i64 {
        crate::store::db::on_pool!(store.pool(), |p| sqlx::query_scalar(sql)
            .fetch_one(p)
            .await
            .unwrap())
    }

    #[tokio::test]
    async fn close_flushes_everything_queued() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let tracker = TaskTracker::new();
        let (sink, writer) = UsageWriter::start(store.clone(), &tracker, SinkConfig::default());
        for i in 0..1500 {
            sink.record(rec(i));
        }
        writer.close().await;
        assert_eq!(count(&store).await, 1500);
    }

    #[tokio::test]
    async fn a_stop_during_the_gather_pause_is_not_missed() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let tracker = TaskTracker::new();
        let cfg = SinkConfig {
            flush_interval: Duration::from_secs(30),
            ..SinkConfig::default()
        };
        let (sink, writer) = UsageWriter::start(store.clone(), &tracker, cfg);
        sink.record(rec(1));
        // The writer is now inside its gather pause when the stop arrives.
        tokio::time::sleep(Duration::from_millis(5)).await;
        tokio::time::timeout(Duration::from_secs(5), writer.close())
            .await
            .expect("close must not hang");
        assert_eq!(count(&store).await, 1);
    }

    #[tokio::test]
    async fn records_are_written_within_the_flush_interval() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let tracker = TaskTracker::new();
        let (sink, writer) = UsageWriter::start(store.clone(), &tracker, SinkConfig::default());
        sink.record(rec(1));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            count(&store).await,
            1,
            "not written after 4 flush intervals"
        );
        writer.close().await;
    }

    /// A store that fails while `down` is set, then writes into SQLite.
    #[derive(Clone)]
    struct Flaky {
        inner: Store,
        down: Arc<AtomicBool>,
    }

    impl UsageStore for Flaky {
        async fn write_batch(&self, rows: &[UsageRow]) -> Result<(), StoreError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(StoreError::Unsupported("down".into()));
            }
            self.inner.write_batch(rows).await
        }
        async fn write_batch_dedup(&self, rows: &[UsageRow]) -> Result<(), StoreError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(StoreError::Unsupported("down".into()));
            }
            self.inner.write_batch_dedup(rows).await
        }
        async fn ping(&self) -> Result<(), StoreError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_down_store_spills_then_replays_everything_once() {
        for db in crate::store::testing::databases("sink_spill_replay").await {
            spill_and_replay(Store::open(&db.url).await.unwrap()).await;
        }
    }

    async fn spill_and_replay(inner: Store) {
        let dir = tempfile::tempdir().unwrap();
        let down = Arc::new(AtomicBool::new(true));
        let store = Flaky {
            inner: inner.clone(),
            down: down.clone(),
        };
        let tracker = TaskTracker::new();
        let cfg = SinkConfig {
            queue_capacity: 100,
            batch_size: 50,
            flush_interval: Duration::from_millis(10),
            retry_interval: Duration::from_millis(50),
            spill_path: Some(dir.path().join("spill.jsonl")),
            ..SinkConfig::default()
        };
        let (sink, writer) = UsageWriter::start(store, &tracker, cfg);
        // More than the queue holds at once: some spill from the request side.
        for i in 0..1000 {
            sink.record(rec(i));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(count(&inner).await, 0);
        // Spilled (a failed replay attempt may have moved the file aside already).
        assert!(Spill::new(
            dir.path().join("spill.jsonl"),
            crate::store::spill::DEFAULT_SPILL_MAX
        )
        .pending());
        down.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        writer.close().await;
        assert_eq!(count(&inner).await, 1000);
        let distinct = scalar(
            &inner,
            "SELECT COUNT(DISTINCT request_id) FROM usage_records",
        )
        .await;
        assert_eq!(distinct, 1000);
        assert!(!dir.path().join("spill.jsonl").exists());
        assert!(!dir.path().join("spill.jsonl.replay").exists());
    }

    #[tokio::test]
    async fn a_spill_file_left_by_an_earlier_run_is_replayed_at_start() {
        for db in crate::store::testing::databases("sink_replay_at_start").await {
            replayed_at_start(Store::open(&db.url).await.unwrap()).await;
        }
    }

    async fn replayed_at_start(store: Store) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spill.jsonl");
        let spill = Spill::new(path.clone(), crate::store::spill::DEFAULT_SPILL_MAX);
        let rows: Vec<UsageRow> = (0..10).map(|i| UsageRow::from(rec(i))).collect();
        spill.append(&rows).unwrap();
        // A torn last line, as after a crash mid-write.
        std::fs::write(
            &path,
            format!(
                "{}{{\"request_id\":\"tor",
                std::fs::read_to_string(&path).unwrap()
            ),
        )
        .unwrap();
        // One of them already made it into the store before the crash.
        store.write_batch(&rows[..1]).await.unwrap();
        let tracker = TaskTracker::new();
        let cfg = SinkConfig {
            spill_path: Some(path.clone()),
            ..SinkConfig::default()
        };
        let (_sink, writer) = UsageWriter::start(store.clone(), &tracker, cfg);
        tokio::time::sleep(Duration::from_millis(100)).await;
        writer.close().await;
        assert_eq!(count(&store).await, 10);
        assert!(!path.exists());
    }
}
