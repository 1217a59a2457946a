//! The role model end to end: every admin route (the router's own list) × every principal ×
//! own team / other team / organisation, against the tables in docs/governance.md; and the
//! escalation paths of issue 14 (a team_admin minting viewers, touching admin keys, users of
//! another team), `/admin/routing` and `/metrics`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::gov::*;
use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};

const OWN: &str = "team-own";
const OTHER: &str = "team-other";
const THIRD: &str = "team-third";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Own,
    Other,
    Org,
}

/// `| `GET /admin/x` | need |` rows and `| principal | ... |` rows of docs/governance.md.
/// (method, path) -> need; principal -> cells for read, read_org, write, admin.
type Tables = (
    BTreeMap<(String, String), String>,
    BTreeMap<String, Vec<String>>,
);

fn docs_tables() -> Tables {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/governance.md"
    ))
    .unwrap();
    let mut routes = BTreeMap::new();
    let mut roles = BTreeMap::new();
    let mut in_routes = false;
    for line in text.lines() {
        if line.starts_with('#') {
            in_routes = line == "### Admin routes";
        }
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        if in_routes && cells.len() == 2 {
            if let Some((m, p)) = cells[0]
                .strip_prefix('`')
                .and_then(|c| c.strip_suffix('`'))
                .and_then(|c| c.split_once(' '))
            {
                if p.starts_with("/admin") {
                    routes.insert((m.to_string(), p.to_string()), cells[1].to_string());
                }
            }
        }
        // principal | key | reach | read | read_org | write | admin
        if cells.len() == 7
            && ["admin", "team_admin", "viewer", "team_viewer", "inference"].contains(&cells[0])
        {
            roles.insert(
                cells[0].to_string(),
                cells[3..].iter().map(|c| c.to_string()).collect(),
            );
        }
    }
    (routes, roles)
}

fn need_column(need: &str) -> usize {
    match need {
        "read" => 0,
        "read_org" => 1,
        "write" => 2,
        "admin" => 3,
        other => panic!("unknown need {other:?} in docs/governance.md"),
    }
}

/// How a route relates to the target: collections take the team as a filter or a body field
/// (a team-scoped caller without one is held to its own team), items name an object.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// No team in the request at all (openapi, routing, listings without filters).
    None,
    /// `?team=` or a body's `team`; absent for the organisation target.
    Selector,
    /// A path parameter naming an object of the target.
    Item,
}

static SEQ: AtomicUsize = AtomicUsize::new(0);
fn fresh(prefix: &str) -> String {
    format!("{prefix}-{}", SEQ.fetch_add(1, Ordering::Relaxed))
}

fn team_of(t: Target) -> Option<&'static str> {
    match t {
        Target::Own => Some(OWN),
        Target::Other => Some(OTHER),
        Target::Org => None,
    }
}

/// Builds the request for one (route, target), creating a fresh object to act on with the
/// master key. A route without an entry here fails the test: add it, and its row in the docs.
async fn request_for(gw: &Gateway, method: &str, path: &str, t: Target) -> (Shape, String, Value) {
    let team_q = team_of(t).map_or(String::new(), |x| format!("?team={x}"));
    let team_body = team_of(t).map_or(json!({}), |x| json!({ "team": x }));
    let item_team = match t {
        Target::Own => OWN,
        Target::Other => OTHER,
        Target::Org => THIRD,
    };
    match (method, path) {
        ("GET", "/admin/openapi.json")
        | ("GET", "/admin/routing")
        | ("GET", "/admin/audit")
        | ("GET", "/admin/replicas")
        | ("GET", "/admin/cache")
        | ("DELETE", "/admin/cache") => (Shape::None, path.into(), Value::Null),
        ("GET", "/admin/teams") | ("GET", "/admin/users") | ("GET", "/admin/keys") => {
            (Shape::None, path.into(), Value::Null)
        }
        ("POST", "/admin/teams") => (Shape::None, path.into(), json!({"name": fresh("t")})),
        ("GET", "/admin/teams/{name}") | ("PATCH", "/admin/teams/{name}") => (
            Shape::Item,
            format!("/admin/teams/{item_team}"),
            json!({"rpm": 1000}),
        ),
        ("DELETE", "/admin/teams/{name}") => {
            let name = fresh("gone");
            let mut body = json!({ "name": name });
            if let Some(x) = team_of(t) {
                body["parent"] = json!(x);
            }
            assert_eq!(
                admin(gw, MASTER, "POST", "/admin/teams", body).await.status,
                201
            );
            // Deleting a child of the target team: "own" means a team under T for the scope
            // check too, which a team_admin still may not delete (teams are admin-only).
            (Shape::Item, format!("/admin/teams/{name}"), Value::Null)
        }
        ("POST", "/admin/users") => {
            let mut b = team_body;
            b["name"] = json!(fresh("u"));
            (Shape::Selector, path.into(), b)
        }
        ("POST", "/admin/keys") => (Shape::Selector, path.into(), team_body),
        ("GET", "/admin/users/{name}")
        | ("PATCH", "/admin/users/{name}")
        | ("DELETE", "/admin/users/{name}") => {
            let name = fresh("u");
            let mut b = team_body;
            b["name"] = json!(name);
            assert_eq!(
                admin(gw, MASTER, "POST", "/admin/users", b).await.status,
                201
            );
            (
                Shape::Item,
                format!("/admin/users/{name}"),
                json!({"rpm": 5}),
            )
        }
        ("GET", "/admin/keys/{id}")
        | ("PATCH", "/admin/keys/{id}")
        | ("POST", "/admin/keys/{id}/revoke")
        | ("POST", "/admin/keys/{id}/rotate") => {
            let (id, _) = create_key(gw, team_body).await;
            let body = if path.ends_with("/rotate") {
                json!({"grace_period": "0s"})
            } else if method == "PATCH" {
                json!({"rpm": 5})
            } else {
                Value::Null
            };
            (Shape::Item, path.replace("{id}", &id), body)
        }
        ("GET", "/admin/usage")
        | ("GET", "/admin/usage/export")
        | ("GET", "/admin/performance")
        | ("GET", "/admin/insights")
        | ("GET", "/admin/requests") => {
            let sep = if team_q.is_empty() { "" } else { "&" };
            let q = if path == "/admin/requests" {
                format!(
                    "{team_q}{}include_content=true",
                    if team_q.is_empty() { "?" } else { sep }
                )
            } else {
                team_q
            };
            (Shape::Selector, format!("{path}{q}"), Value::Null)
        }
        other => panic!(
            "route {other:?} has no entry in tests/roles_matrix.rs: add one (and its row in \
             docs/governance.md)"
        ),
    }
}

/// Whether the docs table lets `cell` (org / team / —) reach `t` through a route of `shape`.
fn expected(cell: &str, shape: Shape, t: Target) -> bool {
    match cell {
        "org" => true,
        "team" => match shape {
            Shape::None => true,
            Shape::Selector => t != Target::Other,
            Shape::Item => t == Target::Own,
        },
        _ => false,
    }
}

#[tokio::test]
async fn every_admin_route_for_every_principal_matches_the_docs_table() {
    let (doc_routes, doc_roles) = docs_tables();
    // The router's own list: a route added without a docs row (or the other way) fails here.
    let router_routes: BTreeMap<(String, String), String> = sluice::api::admin::route_list()
        .into_iter()
        .map(|(m, p, n)| ((m.to_string(), p.to_string()), n.as_str().to_string()))
        .collect();
    assert_eq!(
        router_routes, doc_routes,
        "docs/governance.md's route table and the router disagree"
    );
    assert_eq!(
        doc_roles
            .keys()
            .map(String::as_str)
            .collect::<BTreeSet<_>>(),
        BTreeSet::from(["admin", "inference", "team_admin", "team_viewer", "viewer"])
    );

    let gw = Gateway::start(&config());
    for t in [OWN, OTHER, THIRD] {
        assert_eq!(
            admin(&gw, MASTER, "POST", "/admin/teams", json!({"name": t}))
                .await
                .status,
            201
        );
    }
    // Usage of the other team, so that filtered answers have something to leak.
    let (_, other_inference) = create_key(&gw, json!({"team": OTHER})).await;
    assert_eq!(
        chat_as(&gw, &other_inference, "mock-1", 8).await.status,
        200
    );

    let principals: Vec<(&str, String)> = vec![
        ("admin", MASTER.to_string()),
        (
            "admin",
            create_key(&gw, json!({"role": "admin", "team": OWN}))
                .await
                .1,
        ),
        (
            "team_admin",
            create_key(&gw, json!({"role": "team_admin", "team": OWN}))
                .await
                .1,
        ),
        ("viewer", create_key(&gw, json!({"role": "viewer"})).await.1),
        (
            "team_viewer",
            create_key(&gw, json!({"role": "viewer", "team": OWN}))
                .await
                .1,
        ),
        ("inference", create_key(&gw, json!({"team": OWN})).await.1),
    ];

    let mut failures = Vec::new();
    let mut walked = 0;
    for ((method, path), need) in &router_routes {
        for (role, key) in &principals {
            for t in [Target::Own, Target::Other, Target::Org] {
                let (shape, url, body) = request_for(&gw, method, path, t).await;
                let cell = &doc_roles[*role][need_column(need)];
                let allow = expected(cell, shape, t);
                let r = admin(&gw, key, method, &url, body).await;
                walked += 1;
                let allowed = !matches!(r.status, 401 | 403 | 404);
                if allowed != allow {
                    failures.push(format!(
                        "{role} {method} {url} ({t:?}): expected {}, got {} {}",
                        if allow { "allowed" } else { "denied" },
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    ));
                }
                if allowed && cell == "team" {
                    let text = String::from_utf8_lossy(&r.body);
                    if text.contains(OTHER) || text.contains(THIRD) {
                        failures.push(format!(
                            "{role} {method} {url} ({t:?}) leaked another team: {text}"
                        ));
                    }
                }
            }
        }
    }
    assert!(walked >= router_routes.len() * principals.len() * 3);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn a_team_admin_cannot_escalate() {
    let gw = Gateway::start(&config());
    for t in [OWN, OTHER] {
        assert_eq!(
            admin(&gw, MASTER, "POST", "/admin/teams", json!({"name": t}))
                .await
                .status,
            201
        );
    }
    let (_, ta) = create_key(&gw, json!({"role": "team_admin", "team": OWN})).await;
    let (admin_in_own, _) = create_key(&gw, json!({"role": "admin", "team": OWN})).await;
    let (plain_in_own, _) = create_key(&gw, json!({"team": OWN})).await;
    let other_user = admin(
        &gw,
        MASTER,
        "POST",
        "/admin/users",
        json!({"name": "bob", "team": OTHER}),
    )
    .await;
    assert_eq!(other_user.status, 201);

    // An admin key that bills to the team is out of reach: no rotate, update or revoke.
    for (method, path, body) in [
        (
            "POST",
            format!("/admin/keys/{admin_in_own}/rotate"),
            json!({}),
        ),
        (
            "PATCH",
            format!("/admin/keys/{admin_in_own}"),
            json!({"role": "viewer"}),
        ),
        (
            "POST",
            format!("/admin/keys/{admin_in_own}/revoke"),
            Value::Null,
        ),
    ] {
        let r = admin(&gw, &ta, method, &path, body).await;
        assert_eq!(
            r.status,
            403,
            "{method} {path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("more reach"));
    }
    // No admin keys, no promotion to admin.
    assert_eq!(
        admin(&gw, &ta, "POST", "/admin/keys", json!({"role": "admin"}))
            .await
            .status,
        403
    );
    assert_eq!(
        admin(
            &gw,
            &ta,
            "PATCH",
            &format!("/admin/keys/{plain_in_own}"),
            json!({"role": "admin"})
        )
        .await
        .status,
        403
    );
    // No keys for another team's user.
    assert_eq!(
        admin(&gw, &ta, "POST", "/admin/keys", json!({"user": "bob"}))
            .await
            .status,
        403
    );

    // The viewer it creates is scoped to its team.
    let r = admin(&gw, &ta, "POST", "/admin/keys", json!({"role": "viewer"})).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["team"], OWN);
    let viewer = r.json()["key"].as_str().unwrap().to_string();
    let keys = admin(&gw, &viewer, "GET", "/admin/keys", Value::Null).await;
    assert_eq!(keys.status, 200);
    assert!(keys.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k["team"] == OWN));
    for path in [
        format!("/admin/usage/export?team={OTHER}"),
        format!("/admin/requests?team={OTHER}&include_content=true"),
        "/admin/routing".to_string(),
        "/metrics".to_string(),
    ] {
        assert_eq!(
            admin(&gw, &viewer, "GET", &path, Value::Null).await.status,
            403,
            "{path}"
        );
    }

    // /admin/routing and /metrics: organisation-wide readers only.
    let (_, inference) = create_key(&gw, json!({})).await;
    let (_, org_viewer) = create_key(&gw, json!({"role": "viewer"})).await;
    for path in ["/admin/routing", "/metrics"] {
        assert_eq!(
            admin(&gw, &inference, "GET", path, Value::Null)
                .await
                .status,
            403,
            "{path}"
        );
        assert_eq!(
            admin(&gw, &org_viewer, "GET", path, Value::Null)
                .await
                .status,
            200,
            "{path}"
        );
    }
}
