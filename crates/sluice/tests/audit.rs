//! The audit log: every admin write (teams, users, keys: create, update, revoke, rotate,
//! delete) is recorded with who, what, when, before and after — and no secret; refused
//! writes are not. Read through `GET /admin/audit` and `sluice audit`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::gov::*;
use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn every_admin_write_is_in_the_audit_log_without_secrets() {
    let gw = Gateway::start(&config());
    let mut secrets = vec![MASTER.to_string()];
    let ok = |r: &Reply| assert!(r.status < 300, "{}", String::from_utf8_lossy(&r.body));
    ok(&admin(&gw, MASTER, "POST", "/admin/teams", json!({"name": "eng"})).await);
    ok(&admin(
        &gw,
        MASTER,
        "PATCH",
        "/admin/teams/eng",
        json!({"rpm": 100}),
    )
    .await);
    ok(&admin(
        &gw,
        MASTER,
        "POST",
        "/admin/users",
        json!({"name": "ada", "team": "eng"}),
    )
    .await);
    let (ta_id, ta) = create_key(&gw, json!({"team": "eng", "role": "team_admin"})).await;
    secrets.push(ta.clone());
    // The team_admin's own writes carry its key id.
    let r = admin(
        &gw,
        &ta,
        "POST",
        "/admin/keys",
        json!({"user": "ada", "rpm": 5}),
    )
    .await;
    ok(&r);
    let id = r.json()["id"].as_str().unwrap().to_string();
    secrets.push(r.json()["key"].as_str().unwrap().to_string());
    ok(&admin(
        &gw,
        &ta,
        "PATCH",
        &format!("/admin/keys/{id}"),
        json!({"rpm": 7}),
    )
    .await);
    let r = admin(
        &gw,
        &ta,
        "POST",
        &format!("/admin/keys/{id}/rotate"),
        json!({}),
    )
    .await;
    ok(&r);
    secrets.push(r.json()["key"].as_str().unwrap().to_string());
    ok(&admin(
        &gw,
        &ta,
        "POST",
        &format!("/admin/keys/{id}/revoke"),
        Value::Null,
    )
    .await);
    ok(&admin(&gw, MASTER, "POST", "/admin/users", json!({"name": "bob"})).await);
    ok(&admin(&gw, MASTER, "DELETE", "/admin/users/bob", Value::Null).await);
    // Refused writes leave no entry.
    assert_eq!(
        admin(&gw, &ta, "POST", "/admin/keys", json!({"role": "admin"}))
            .await
            .status,
        403
    );

    let r = admin(&gw, MASTER, "GET", "/admin/audit", Value::Null).await;
    assert_eq!(r.status, 200);
    let text = String::from_utf8_lossy(&r.body).into_owned();
    for s in &secrets {
        assert!(!text.contains(s.as_str()), "a secret is in the audit log");
    }
    let v = r.json();
    let rows = v["data"].as_array().unwrap();
    let seen: Vec<(String, String, String)> = rows
        .iter()
        .rev()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_string(),
                e["action"].as_str().unwrap().to_string(),
                e["target_kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String, String)> = [
        ("master", "create", "team"),
        ("master", "update", "team"),
        ("master", "create", "user"),
        ("master", "create", "key"),
        (ta_id.as_str(), "create", "key"),
        (ta_id.as_str(), "update", "key"),
        (ta_id.as_str(), "rotate", "key"),
        (ta_id.as_str(), "revoke", "key"),
        ("master", "create", "user"),
        ("master", "delete", "user"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(seen, want);
    // Before and after, as the API shows them.
    let update = rows
        .iter()
        .find(|e| e["action"] == "update" && e["target"] == id)
        .unwrap();
    assert_eq!(update["before"]["rpm"], 5);
    assert_eq!(update["after"]["rpm"], 7);
    assert!(update["at"].as_str().unwrap().ends_with('Z'));
    assert!(update["request_id"].as_str().unwrap().starts_with("req_"));
    let rotate = rows.iter().find(|e| e["action"] == "rotate").unwrap();
    assert_ne!(rotate["before"]["prefix"], rotate["after"]["prefix"]);
    let delete = rows.iter().find(|e| e["action"] == "delete").unwrap();
    assert_eq!(delete["before"]["name"], "bob");
    assert!(delete["after"].is_null());

    // Filters, and the CLI.
    let r = admin(
        &gw,
        MASTER,
        "GET",
        &format!("/admin/audit?actor={ta_id}&limit=2"),
        Value::Null,
    )
    .await;
    let v = r.json();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][0]["action"], "revoke");
    let next = v["next_cursor"].as_str().unwrap();
    let r = admin(
        &gw,
        MASTER,
        "GET",
        &format!("/admin/audit?actor={ta_id}&cursor={next}"),
        Value::Null,
    )
    .await;
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 2);
    let (ok, out, err) = cli(&gw, &["audit", "--target", &id]);
    assert!(ok, "{err}");
    assert!(out.contains("ROTATE") || out.contains("rotate"), "{out}");
    assert_eq!(out.lines().count(), 1 + 4, "{out}");
    // The team_admin may not read the organisation's audit log.
    assert_eq!(
        admin(&gw, &ta, "GET", "/admin/audit", Value::Null)
            .await
            .status,
        403
    );
}
