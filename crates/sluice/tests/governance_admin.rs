//! The governance admin surface end to end: roles on the admin API, bad admin input, and the
//! `sluice keys` / `sluice teams` CLI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::gov::*;
use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn roles_limit_the_admin_api() {
    let gw = Gateway::start(&config());
    for t in ["a", "b"] {
        assert_eq!(
            admin(&gw, MASTER, "POST", "/admin/teams", json!({"name": t}))
                .await
                .status,
            201
        );
    }
    let (_, ta) = create_key(&gw, json!({"team": "a", "role": "team_admin"})).await;
    let (b_id, _) = create_key(&gw, json!({"team": "b"})).await;
    let (_, viewer) = create_key(&gw, json!({"role": "viewer"})).await;
    let (_, plain) = create_key(&gw, json!({})).await;

    // team_admin: sees and manages its own team only.
    let list = admin(&gw, &ta, "GET", "/admin/keys", Value::Null)
        .await
        .json();
    let teams: Vec<&Value> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| &k["team"])
        .collect();
    assert!(
        !teams.is_empty() && teams.iter().all(|t| *t == "a"),
        "{teams:?}"
    );
    assert_eq!(
        admin(&gw, &ta, "GET", &format!("/admin/keys/{b_id}"), Value::Null)
            .await
            .status,
        404
    );
    assert_eq!(
        admin(
            &gw,
            &ta,
            "POST",
            &format!("/admin/keys/{b_id}/revoke"),
            Value::Null
        )
        .await
        .status,
        404
    );
    assert_eq!(
        admin(&gw, &ta, "POST", "/admin/keys", json!({"team": "b"}))
            .await
            .status,
        403
    );
    assert_eq!(
        admin(&gw, &ta, "POST", "/admin/keys", json!({"role": "admin"}))
            .await
            .status,
        403
    );
    let r = admin(&gw, &ta, "POST", "/admin/keys", json!({})).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["team"], "a");
    assert_eq!(
        admin(
            &gw,
            MASTER,
            "POST",
            "/admin/users",
            json!({"name": "ub", "team": "b"})
        )
        .await
        .status,
        201
    );
    let r = admin(&gw, &ta, "POST", "/admin/users", json!({"name": "ua"})).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["team"], "a");
    let users = admin(&gw, &ta, "GET", "/admin/users", Value::Null)
        .await
        .json();
    assert_eq!(users["data"].as_array().unwrap().len(), 1, "{users}");
    assert_eq!(
        admin(&gw, &ta, "GET", "/admin/users/ub", Value::Null)
            .await
            .status,
        404
    );
    assert_eq!(
        admin(&gw, &ta, "DELETE", "/admin/users/ub", Value::Null)
            .await
            .status,
        404
    );
    let teams = admin(&gw, &ta, "GET", "/admin/teams", Value::Null)
        .await
        .json();
    assert_eq!(teams["data"].as_array().unwrap().len(), 1);
    assert_eq!(
        admin(&gw, &ta, "GET", "/admin/teams/b", Value::Null)
            .await
            .status,
        404
    );
    assert_eq!(
        admin(&gw, &ta, "POST", "/admin/teams", json!({"name": "c"}))
            .await
            .status,
        403
    );

    // viewer: reads, never writes.
    assert_eq!(
        admin(&gw, &viewer, "GET", "/admin/keys", Value::Null)
            .await
            .status,
        200
    );
    assert_eq!(
        admin(&gw, &viewer, "POST", "/admin/keys", json!({}))
            .await
            .status,
        403
    );
    assert_eq!(
        admin(&gw, &viewer, "POST", "/admin/teams", json!({"name": "d"}))
            .await
            .status,
        403
    );

    // An inference key: no admin API at all.
    let r = admin(&gw, &plain, "GET", "/admin/keys", Value::Null).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.openai_error()["type"], "permission_error");
    assert_eq!(
        admin(&gw, &plain, "GET", "/admin/openapi.json", Value::Null)
            .await
            .status,
        403
    );
    let doc = admin(&gw, MASTER, "GET", "/admin/openapi.json", Value::Null)
        .await
        .json();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/admin/keys"]["post"].is_object());
}

#[tokio::test]
async fn bad_admin_input_names_the_field_and_writes_nothing() {
    let gw = Gateway::start(&config());
    assert_eq!(
        admin(&gw, MASTER, "POST", "/admin/teams", json!({"name": "eng"}))
            .await
            .status,
        201
    );
    let cases: &[(Value, u16, &str)] = &[
        (json!({"budget_usd": -5}), 400, "budget_usd"),
        (json!({"budget_usd": "ten"}), 400, "budget_usd"),
        (
            json!({"budget_usd": 5, "budget_period": "fortnightly"}),
            400,
            "budget_period",
        ),
        (json!({"rpm": -1}), 400, "rpm"),
        (json!({"tpm": "many"}), 400, "tpm"),
        (json!({"team": "nope"}), 404, "team"),
        (json!({"user": "nobody"}), 404, "user"),
        (json!({"role": "root"}), 400, "role"),
        (json!({"expires_at": "soon"}), 400, "expires_at"),
        (json!({"models": "gpt-4o"}), 400, "models"),
        (
            json!({"model_limits": {"m": {"rpm": 1}}}),
            400,
            "model_limits",
        ),
        (json!({"colour": "blue"}), 400, ""),
    ];
    for (body, status, param) in cases {
        let r = admin(&gw, MASTER, "POST", "/admin/keys", body.clone()).await;
        assert_eq!(
            r.status,
            *status,
            "{body}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let e = r.openai_error();
        if !param.is_empty() {
            assert_eq!(e["param"], *param, "{body}: {e}");
            assert!(e["message"].as_str().unwrap().contains(param), "{e}");
        }
    }
    let keys = admin(&gw, MASTER, "GET", "/admin/keys", Value::Null)
        .await
        .json();
    assert_eq!(
        keys["data"].as_array().unwrap().len(),
        0,
        "nothing half-written"
    );

    let r = admin(&gw, MASTER, "POST", "/admin/teams", json!({"name": "eng"})).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.openai_error()["param"], "name");
    let r = admin(
        &gw,
        MASTER,
        "POST",
        "/admin/teams",
        json!({"name": "x", "parent": "ghost"}),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.openai_error()["param"], "parent");
    let r = admin(
        &gw,
        MASTER,
        "POST",
        "/admin/teams",
        json!({"name": "bad name!"}),
    )
    .await;
    assert_eq!(r.status, 400);
    create_key(&gw, json!({"name": "dup"})).await;
    let r = admin(&gw, MASTER, "POST", "/admin/keys", json!({"name": "dup"})).await;
    assert_eq!(r.status, 409);
    let teams = admin(&gw, MASTER, "GET", "/admin/teams", Value::Null)
        .await
        .json();
    assert_eq!(teams["data"].as_array().unwrap().len(), 1);
    let keys = admin(&gw, MASTER, "GET", "/admin/keys", Value::Null)
        .await
        .json();
    assert_eq!(keys["data"].as_array().unwrap().len(), 1);
    assert_eq!(
        admin(&gw, MASTER, "GET", "/admin/keys/key_nope", Value::Null)
            .await
            .status,
        404
    );
    // A team with keys cannot be deleted.
    create_key(&gw, json!({"team": "eng"})).await;
    assert_eq!(
        admin(&gw, MASTER, "DELETE", "/admin/teams/eng", Value::Null)
            .await
            .status,
        409
    );
}

#[tokio::test]
async fn cli_mirrors_the_admin_api() {
    let gw = Gateway::start(&config());
    let (ok, out, err) = cli(&gw, &["teams", "create", "eng", "--budget", "100/month"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("budget_usd: 100"), "{out}");
    let (ok, out, err) = cli(
        &gw,
        &[
            "keys",
            "create",
            "--team",
            "eng",
            "--budget",
            "100/month",
            "--rpm",
            "60",
            "--models",
            "mock-1,claude-*",
            "--meta",
            "env=ci",
            "--json",
        ],
    );
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let (id, key) = (v["id"].as_str().unwrap(), v["key"].as_str().unwrap());
    assert_eq!(v["models"], json!(["mock-1", "claude-*"]));
    assert_eq!(v["budget_period"], "monthly");
    assert_eq!(v["metadata"]["env"], "ci");
    assert_eq!(chat_as(&gw, key, "mock-1", 5).await.status, 200);

    let (ok, out, err) = cli(
        &gw,
        &["users", "create", "ada", "--team", "eng", "--rpm", "30"],
    );
    assert!(ok, "{err}");
    assert!(out.contains("rpm: 30"), "{out}");
    let (ok, out, _) = cli(&gw, &["users", "list"]);
    assert!(
        ok && out.lines().nth(1).unwrap().starts_with("ada"),
        "{out}"
    );
    let (ok, out, _) = cli(&gw, &["keys", "list"]);
    assert!(ok);
    let mut lines = out.lines();
    assert!(lines.next().unwrap().starts_with("ID"), "{out}");
    let row = lines.next().unwrap();
    assert!(
        row.contains(id) && row.contains(&key[..18]) && row.contains("eng"),
        "{out}"
    );
    assert!(!out.contains(key), "the list never shows the key");

    let (ok, out, err) = cli(&gw, &["keys", "rotate", id, "--grace", "0s"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("key: sk-sluice-"), "{out}");
    assert_eq!(chat_as(&gw, key, "mock-1", 5).await.status, 401, "no grace");
    let (ok, _, _) = cli(&gw, &["keys", "revoke", id]);
    assert!(ok);
    let (ok, out, _) = cli(&gw, &["teams", "list"]);
    assert!(ok && out.contains("eng"), "{out}");

    // Errors from the API reach the user with the status and the message.
    let (ok, _, err) = cli(&gw, &["keys", "create", "--team", "ghost"]);
    assert!(!ok);
    assert!(err.contains("404") && err.contains("ghost"), "{err}");
    let (ok, _, err) = cli(&gw, &["keys", "create", "--budget", "5/fortnight"]);
    assert!(!ok && err.contains("fortnight"), "{err}");
}
