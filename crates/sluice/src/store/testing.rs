//! Store tests run on every engine this machine has: SQLite in a temporary directory, and
//! the machine's PostgreSQL (127.0.0.1:5432, database `test`) in a schema of the test's own,
//! dropped afterwards. Without PostgreSQL the PostgreSQL half is skipped, and says so, unless
//! `SLUICE_REQUIRE_SERVICES=1`. The integration tests include this file too (`#[path]`).
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::time::Duration;

pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// One fresh, empty database for a test.
pub struct TestDb {
    pub engine: &'static str,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    schema: Option<String>,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(schema) = self.schema.take() {
            // Drop is synchronous and may run inside a runtime: use a thread of its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(p) = sqlx::PgPool::connect(PG_ADMIN_URL).await {
                        // The test's own connections may still hold locks (a transaction an
                        // error dropped is rolled back by its runtime, which this thread
                        // blocks): end them first; never wait on a lock for long.
                        let _ = sqlx::raw_sql(&format!(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                             WHERE application_name = '{schema}' AND pid <> pg_backend_pid(); \
                             SET lock_timeout = '10s'; \
                             DROP SCHEMA IF EXISTS {schema} CASCADE"
                        ))
                        .execute(&p)
                        .await;
                    }
                });
            })
            .join();
        }
    }
}

/// A fresh SQLite file in a temporary directory.
pub fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    TestDb {
        engine: "sqlite",
        url: format!("sqlite://{}", dir.path().join("s.db").display()),
        _dir: Some(dir),
        schema: None,
    }
}

/// SQLite, then PostgreSQL when it is up (or required).
pub async fn databases(test: &str) -> Vec<TestDb> {
    let mut out = vec![sqlite()];
    out.extend(postgres(test).await);
    out
}

/// The store of a fleet: PostgreSQL, or a shared SQLite file when PostgreSQL is down and
/// not required.
pub async fn fleet(test: &str) -> TestDb {
    match postgres(test).await {
        Some(db) => db,
        None => sqlite(),
    }
}

/// A schema of this test's own on the machine's PostgreSQL, or `None` when it is down and
/// not required.
pub async fn postgres(test: &str) -> Option<TestDb> {
    let admin =
        match tokio::time::timeout(Duration::from_secs(3), sqlx::PgPool::connect(PG_ADMIN_URL))
            .await
        {
            Ok(Ok(p)) => p,
            _ => {
                assert!(
                    std::env::var("SLUICE_REQUIRE_SERVICES").as_deref() != Ok("1"),
                    "{test}: PostgreSQL at {PG_ADMIN_URL} is down and SLUICE_REQUIRE_SERVICES=1"
                );
                eprintln!(
                    "SKIPPED {test} on PostgreSQL: none at {PG_ADMIN_URL} \
                 (set SLUICE_REQUIRE_SERVICES=1 to require it)"
                );
                return None;
            }
        };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let schema = format!("t_{test}_{}_{nanos}", std::process::id()).to_lowercase();
    sqlx::raw_sql(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await
        .unwrap();
    Some(TestDb {
        engine: "postgres",
        url: format!(
            "{PG_ADMIN_URL}?options=-c%20search_path%3D{schema}&application_name={schema}"
        ),
        _dir: None,
        schema: Some(schema),
    })
}
