//! The web dashboard: `/ui`, three static assets compiled into the binary (no Node build,
//! nothing fetched from elsewhere). The page asks for an admin, team_admin or viewer key,
//! keeps it in `sessionStorage` and sends it as a bearer token to the admin JSON API, so the
//! API's role scoping is the only scoping (see docs/dashboard.md).

use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::header;

/// `(path, content type, body)` of every embedded asset.
pub const ASSETS: &[(&str, &str, &str)] = &[
    (
        "/ui/",
        "text/html; charset=utf-8",
        include_str!("../../ui/index.html"),
    ),
    (
        "/ui/app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/app.js"),
    ),
    (
        "/ui/app.css",
        "text/css; charset=utf-8",
        include_str!("../../ui/app.css"),
    ),
];

/// Only this origin, for everything: a dashboard that cannot load or send to anywhere else.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

fn asset(i: usize) -> Response {
    let Some((_, kind, body)) = ASSETS.get(i) else {
        return http::StatusCode::NOT_FOUND.into_response();
    };
    (
        [
            (header::CONTENT_TYPE, *kind),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        *body,
    )
        .into_response()
}

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/ui", get(|| async { asset(0) }))
        .route("/ui/", get(|| async { asset(0) }))
        .route("/ui/app.js", get(|| async { asset(1) }))
        .route("/ui/app.css", get(|| async { asset(2) }))
}
