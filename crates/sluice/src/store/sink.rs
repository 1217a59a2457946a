//! The usage sink: requests hand records to a channel (no I/O on the request path); one
//! writer task batches them into the store and is drained on shutdown.

use super::{UsageRecord, UsageStore};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

const MAX_BATCH: usize = 512;
/// How long a first record waits for others to share its transaction.
const GATHER: Duration = Duration::from_millis(20);

/// Cheap, cloneable handle used by requests.
#[derive(Clone)]
pub struct UsageSink {
    tx: mpsc::UnboundedSender<UsageRecord>,
}

impl UsageSink {
    /// Queues a record. Unbounded on purpose for now: a slow store costs memory, never a
    /// lost record (spill-to-disk is the usage-records issue's job).
    pub fn record(&self, rec: UsageRecord) {
        if self.tx.send(rec).is_err() {
            tracing::error!("usage writer has stopped; a usage record was lost");
        }
    }
}

/// Owns the writer task; `close` flushes everything queued and waits for it.
pub struct UsageWriter {
    stop: tokio::sync::watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

impl UsageWriter {
    pub fn start<S: UsageStore>(store: S, tracker: &TaskTracker) -> (UsageSink, UsageWriter) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let handle = tracker.spawn(run(store, rx, stop_rx));
        (UsageSink { tx }, UsageWriter { stop, handle })
    }

    /// Writes everything queued so far, then stops the writer.
    pub async fn close(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.handle.await {
            tracing::error!("usage writer ended abnormally: {e}");
        }
    }
}

async fn run<S: UsageStore>(
    store: S,
    mut rx: mpsc::UnboundedReceiver<UsageRecord>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        // `wait_for` looks at the current value first, so a stop is never missed.
        let stopping = tokio::select! {
            n = rx.recv_many(&mut batch, MAX_BATCH) => n == 0,
            _ = stop.wait_for(|s| *s) => true,
        };
        if !stopping && batch.len() < MAX_BATCH {
            // Give a burst a moment to accumulate into one transaction.
            tokio::select! {
                () = tokio::time::sleep(GATHER) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
        }
        write(&store, &mut batch).await;
        if stopping || *stop.borrow() {
            while let Ok(r) = rx.try_recv() {
                batch.push(r);
                if batch.len() >= MAX_BATCH {
                    write(&store, &mut batch).await;
                }
            }
            write(&store, &mut batch).await;
            return;
        }
    }
}

async fn write<S: UsageStore>(store: &S, batch: &mut Vec<UsageRecord>) {
    if batch.is_empty() {
        return;
    }
    let mut delay = Duration::from_millis(50);
    for attempt in 1..=5 {
        match store.write_batch(batch).await {
            Ok(()) => {
                batch.clear();
                return;
            }
            Err(e) => {
                tracing::warn!(
                    attempt,
                    records = batch.len(),
                    "writing usage records failed: {e}"
                );
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    tracing::error!(
        records = batch.len(),
        "giving up on a batch of usage records"
    );
    batch.clear();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::sqlite::SqliteStore;

    #[tokio::test]
    async fn close_flushes_everything_queued() {
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        let tracker = TaskTracker::new();
        let (sink, writer) = UsageWriter::start(store.clone(), &tracker);
        for i in 0..1500 {
            sink.record(UsageRecord {
                request_id: format!("r{i}"),
                surface: "openai.chat",
                attempts: 1,
                ..Default::default()
            });
        }
        writer.close().await;
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_records")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(n, 1500);
    }

    #[tokio::test]
    async fn a_stop_during_the_gather_pause_is_not_missed() {
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        let tracker = TaskTracker::new();
        let (sink, writer) = UsageWriter::start(store.clone(), &tracker);
        sink.record(UsageRecord {
            request_id: "late".into(),
            surface: "openai.chat",
            ..Default::default()
        });
        // The writer is now inside its short gather pause when the stop arrives.
        tokio::time::sleep(Duration::from_millis(5)).await;
        tokio::time::timeout(Duration::from_secs(5), writer.close())
            .await
            .expect("close must not hang");
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_records")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(n, 1);
    }
}
