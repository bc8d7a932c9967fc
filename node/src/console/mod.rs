//! The operator console, `GET /console`: one page of plain HTML, CSS and
//! JavaScript built into the binary (no CDN, no build step) that shows this
//! node's view of the cluster (members, every group's leader, state, term, log
//! positions and lag, with unhealthy groups marked), charts of requests a
//! second and latency drawn from successive scrapes of the node's own
//! `/metrics`, an event's live seat map from its Server-Sent Events stream, and
//! the waiting rooms' and payments' figures.
//!
//! It is served with the admin API (on `admin_listen` when the node has one),
//! and the page asks nothing of any origin but its own: its
//! `Content-Security-Policy` allows scripts, styles and connections to `'self'`
//! only, and no inline script or style. The admin token is typed in (or passed
//! as `#token=…`, which the page takes out of its address) and kept in the
//! tab's `sessionStorage`; the page sends it to this node's admin API only.
//!
//! `node/tests/console/console_test.py` checks the page in headless Chromium
//! against the API.

use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use boxoffice_api::ProblemCode;

use crate::app::AppState;
use crate::error::ApiError;

/// The console's files: name under `/console/`, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("assets/index.html"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/console.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/console.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("assets/favicon.svg"),
    ),
];

/// What the page may load and where it may connect: this origin only, no
/// inline script or style, no plugins, never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Routes of the console (merged into the admin routes).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console", get(index))
        .route("/console/", get(index))
        .route("/console/{file}", get(file))
}

async fn index() -> Response {
    asset("index.html").unwrap_or_else(|| no_such_file("index.html"))
}

async fn file(Path(name): Path<String>) -> Response {
    asset(&name).unwrap_or_else(|| no_such_file(&name))
}

fn no_such_file(name: &str) -> Response {
    ApiError::new(
        ProblemCode::NotFound,
        format!("the console has no file {name:?}"),
    )
    .into_response()
}

/// The answer serving the console's file `name`, if it has one.
pub fn asset(name: &str) -> Option<Response> {
    let (_, content_type, bytes) = ASSETS.iter().find(|(n, _, _)| *n == name)?;
    let mut resp = (*bytes).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    // Revalidated on every load: a node upgraded in place serves its own page.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    Some(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_served_with_its_type_and_a_strict_policy() {
        for (name, content_type, bytes) in ASSETS {
            assert!(!bytes.is_empty(), "{name} is empty");
            let resp = asset(name).expect("served");
            let h = resp.headers();
            assert_eq!(h[header::CONTENT_TYPE], *content_type, "{name}");
            assert_eq!(h[header::CACHE_CONTROL], "no-cache");
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            let csp = h[header::CONTENT_SECURITY_POLICY].to_str().expect("ascii");
            assert!(csp.starts_with("default-src 'self'"), "{csp}");
            assert!(!csp.contains("unsafe"), "{csp}");
        }
        assert!(asset("../lib.rs").is_none());
        assert!(asset("nothing.js").is_none());
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere_and_has_no_inline_code() {
        let text = |name: &str| {
            let (_, _, bytes) = ASSETS.iter().find(|(n, _, _)| *n == name).expect(name);
            std::str::from_utf8(bytes).expect("utf-8").to_string()
        };
        let html = text("index.html");
        // Every script is a file of this origin; no handler or style attribute.
        assert_eq!(
            html.matches("<script").count(),
            html.matches("<script src=\"/console/").count()
        );
        for inline in [" onclick=", " onload=", " onsubmit=", " style=", "<style"] {
            assert!(!html.contains(inline), "index.html has {inline}");
        }
        for name in ["index.html", "console.js", "console.css"] {
            let t = text(name);
            for far in ["http://", "https://", "//cdn", "@import"] {
                assert!(!t.contains(far), "{name} names {far}");
            }
        }
    }
}
