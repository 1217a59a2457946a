//! Files that can hold compliance prompts are private: the SQLite store (and its WAL) is
//! created `0600`. (The spill file's mode, bound and purge are unit-tested in `store::spill`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

#[cfg(unix)]
#[tokio::test]
async fn the_store_is_created_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let gw = Gateway::start(
        "store: {url: \"{DB}\"}\nproviders: [{name: local, kind: mock}]\n\
         models: [{name: mock-1, deployments: [{provider: local, model: mock-1}]}]\n\
         usage: {compliance: {keys: [\"*\"]}}\n",
    );
    assert_eq!(
        post_json(&format!("{}/v1/chat/completions", gw.url), CHAT)
            .await
            .status,
        200
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let db = gw.db_path();
    for p in [db.clone(), db.with_extension("db-wal")] {
        if let Ok(m) = std::fs::metadata(&p) {
            assert_eq!(m.permissions().mode() & 0o777, 0o600, "{}", p.display());
        }
    }
    assert!(std::fs::metadata(&db).is_ok());
}
