//! The OpenAPI 3.1 document of the public and admin API, served at
//! `GET /openapi.json` on the public listener (and on the admin listener when
//! it has its own).
//!
//! It is built from the code it describes: every request body and answer is a
//! type of `boxoffice_api` (their JSON schemas derived with `utoipa`), and every
//! operation is declared by a `#[utoipa::path]` on its handler, next to the
//! route, in the handler's own module (each module's `Doc` lists them). A test
//! checks that every route the routers serve is in the document, and the test
//! command runs schemathesis against a dev cluster with it.
//!
//! Errors: every operation may answer any of the problem statuses below with an
//! RFC 9457 `application/problem+json` body ([`boxoffice_api::Problem`]), whose
//! `code` says which (the README's error table lists them).

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use boxoffice_api::Problem;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::OpenApi;

/// Media type of error bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The problem answers any operation may give (RFC 9457 bodies, `code` telling
/// which problem it is). Listed on every operation.
#[allow(dead_code)] // Only its derived response map is used.
#[derive(utoipa::IntoResponses)]
pub enum Problems {
    /// Bad input: a malformed body, parameter or header (`invalid_input`,
    /// `invalid_parameter`, `invalid_idempotency_key`, ...).
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// No token, or a token that does not verify (`unauthorized`).
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The token does not allow this (`forbidden`, `not_hold_owner`, ...).
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// No such endpoint, event, hold, booking, group, ... (`not_found`,
    /// `unknown_event`, ...).
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// The request conflicts with the state (`seat_unavailable`, `sold_out`,
    /// `hold_expired`, `idempotency_key_reused`, ...).
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(Problem),
    /// The body is larger than `limits.body_bytes_max` (`body_too_large`).
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(Problem),
    /// Well-formed but not acceptable (`unprocessable`).
    #[response(status = 422, content_type = "application/problem+json")]
    Unprocessable(Problem),
    /// Over a rate limit (`rate_limited`, ...); `Retry-After` says when to retry.
    #[response(status = 429, content_type = "application/problem+json")]
    TooMany(Problem),
    /// A bug: reported, never expected (`internal`).
    #[response(status = 500, content_type = "application/problem+json")]
    Internal(Problem),
    /// The payment provider failed (`payment_provider_error`).
    #[response(status = 502, content_type = "application/problem+json")]
    BadGateway(Problem),
    /// Not now: no leader, shedding load, a timeout, not bootstrapped (`unavailable`,
    /// `overloaded`, `timeout`, ...); the code says whether a write may have applied.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// `GET /v1/events/{id}/seats` answers a seat list, or with `?view=rows` one
/// status string per row.
pub struct SeatsAnswer;

/// `?view=` of a seat map.
#[allow(dead_code)] // Only its schema is used.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum SeatView {
    /// Every seat (the default).
    Seats,
    /// One status string per row.
    Rows,
}

impl utoipa::PartialSchema for SeatsAnswer {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AnyOfBuilder, Ref};
        // anyOf, not oneOf: a general-admission event's answer (no seats, no
        // rows) is valid as both.
        AnyOfBuilder::new()
            .item(Ref::from_schema_name("SeatMap"))
            .item(Ref::from_schema_name("SeatRows"))
            .description(Some(
                "Every seat (`SeatMap`), or with `?view=rows` the rows (`SeatRows`).",
            ))
            .into()
    }
}

impl utoipa::ToSchema for SeatsAnswer {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        use utoipa::PartialSchema;
        schemas.push(("SeatMap".into(), boxoffice_api::SeatMap::schema()));
        <boxoffice_api::SeatMap as utoipa::ToSchema>::schemas(schemas);
        schemas.push(("SeatRows".into(), boxoffice_api::SeatRows::schema()));
        <boxoffice_api::SeatRows as utoipa::ToSchema>::schemas(schemas);
    }
}

/// The answer to the provider's webhook.
#[allow(dead_code)] // Only its schema is used.
#[derive(utoipa::ToSchema)]
pub struct WebhookAck {
    /// Always true: the event was verified and taken.
    pub received: bool,
    /// What it did (`ignored: ...` or the payment effect).
    pub result: String,
}

/// The bearer tokens the document names: `user` (a buyer's or box office's
/// token, for `/v1` writes and private reads) and `admin` (for `/admin/v1`).
struct Tokens;

impl utoipa::Modify for Tokens {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        for (name, what) in [
            (
                "user",
                "A user token (JWT, HS256 or EdDSA) with `sub` the user",
            ),
            ("admin", "An admin token (JWT with the `admin` role)"),
        ] {
            let mut http = Http::new(HttpAuthScheme::Bearer);
            http.bearer_format = Some("JWT".into());
            http.description = Some(what.into());
            components.add_security_scheme(name, SecurityScheme::Http(http));
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "boxoffice",
        description = "The boxoffice booking store: events, live seat maps, holds, bookings, \
                       payments, the waiting room and search (`/v1`), and the operator's API \
                       (`/admin/v1`). Writes take an `Idempotency-Key`; errors are RFC 9457 \
                       problem bodies with a stable `code`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&Tokens),
    // Named by `$ref` from responses and parameters, which do not collect them.
    components(schemas(Problem, boxoffice_api::Consistency, SeatView)),
    tags(
        (name = "events", description = "The catalogue and seat maps"),
        (name = "holds", description = "Holding seats and confirming them"),
        (name = "bookings", description = "A user's bookings"),
        (name = "payments", description = "Checkout through the payment provider"),
        (name = "queue", description = "The waiting room of a hot on-sale"),
        (name = "search", description = "Search of upcoming events"),
        (name = "cluster", description = "Health, status and membership"),
        (name = "catalogue", description = "Venues, performers and events (admin)"),
        (name = "webhooks", description = "Outgoing webhooks (admin)"),
    ),
)]
struct Base;

/// The whole document.
pub fn document() -> utoipa::openapi::OpenApi {
    use crate::api;
    let mut doc = Base::openapi();
    for part in [
        api::events::Doc::openapi(),
        api::seats::Doc::openapi(),
        api::streams::Doc::openapi(),
        api::holds::Doc::openapi(),
        api::bookings::Doc::openapi(),
        api::payments::Doc::openapi(),
        api::queue::Doc::openapi(),
        api::search::Doc::openapi(),
        api::batch::Doc::openapi(),
        api::cluster::Doc::openapi(),
        api::backup::Doc::openapi(),
        api::catalogue::Doc::openapi(),
        api::webhooks::Doc::openapi(),
        crate::metrics::Doc::openapi(),
        Served::openapi(),
    ] {
        doc.merge(part);
    }
    doc
}

#[derive(OpenApi)]
#[openapi(paths(serve))]
struct Served;

/// The document as JSON, rendered once.
pub fn rendered() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        // Serializing a document of plain maps and strings cannot fail.
        document()
            .to_json()
            .expect("the OpenAPI document serializes")
    })
}

/// `GET /openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "cluster",
    responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json", body = Object)),
)]
pub async fn serve() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], rendered()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_problem_answers() {
        let doc: serde_json::Value = serde_json::from_str(rendered()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let holds = &doc["paths"]["/v1/holds"]["post"];
        assert!(holds["responses"]["201"].is_object(), "{holds}");
        assert!(holds["responses"]["409"]["content"][PROBLEM_JSON].is_object());
        assert!(doc["components"]["schemas"]["Problem"].is_object());
        assert!(doc["components"]["securitySchemes"]["admin"].is_object());
    }

    #[test]
    fn every_schema_named_is_in_the_document() {
        let text = rendered();
        let doc: serde_json::Value = serde_json::from_str(text).unwrap();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let prefix = "\"#/components/schemas/";
        let mut named = 0;
        for piece in text.split(prefix).skip(1) {
            let name = &piece[..piece.find('"').unwrap()];
            assert!(
                schemas.contains_key(name),
                "{name} is named but not defined"
            );
            named += 1;
        }
        assert!(named > 50, "only {named} references");
    }

    /// Every `(method, path)` the public and admin routers declare, read from
    /// the sources of `src/api/`, `src/app.rs` and `src/metrics.rs` (not the peer API of
    /// `internal.rs`, which is the cluster's own).
    fn declared_routes() -> Vec<(String, String)> {
        let dir = std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
        let src = std::path::Path::new(&dir).join("src");
        let mut files: Vec<_> = std::fs::read_dir(src.join("api"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().is_some_and(|n| n != "internal.rs"))
            .collect();
        files.extend([src.join("metrics.rs"), src.join("app.rs")]);
        let mut routes = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for piece in text.split(".route(").skip(1) {
                // `"path", get(a).post(b))` or a constant such as BATCH_PATH.
                let piece = piece.trim_start();
                let (path, rest) = if let Some(quoted) = piece.strip_prefix('"') {
                    let end = quoted.find('"').unwrap();
                    (quoted[..end].to_string(), &quoted[end..])
                } else if piece.starts_with("boxoffice_api::BATCH_PATH") {
                    (boxoffice_api::BATCH_PATH.to_string(), piece)
                } else {
                    panic!(
                        "{}: a route path I cannot read: {piece:.40}",
                        file.display()
                    );
                };
                let call = &rest[..rest.find("\n        .").unwrap_or(rest.len()).min(200)];
                for method in ["get", "post", "put", "patch", "delete"] {
                    let plain = format!("{method}(");
                    let found = call.match_indices(&plain).any(|(i, _)| {
                        i == 0
                            || !call.as_bytes()[i - 1].is_ascii_alphanumeric()
                                && call.as_bytes()[i - 1] != b'_'
                    });
                    if found {
                        routes.push((method.to_string(), path.clone()));
                    }
                }
            }
        }
        routes
    }

    #[test]
    fn every_public_and_admin_route_is_in_the_document() {
        let doc: serde_json::Value = serde_json::from_str(rendered()).unwrap();
        let routes = declared_routes();
        assert!(
            routes.len() >= 40,
            "read only {} routes: {routes:?}",
            routes.len()
        );
        let missing: Vec<_> = routes
            .iter()
            .filter(|(m, p)| !doc["paths"][p.as_str()][m.as_str()].is_object())
            .collect();
        assert!(
            missing.is_empty(),
            "routes missing from the document: {missing:?}"
        );
        // And nothing documented that is not served.
        let paths = doc["paths"].as_object().unwrap();
        for (path, item) in paths {
            for method in item.as_object().unwrap().keys() {
                let served = routes.iter().any(|(m, p)| m == method && p == path)
                    || ["/healthz", "/readyz", "/openapi.json"].contains(&path.as_str());
                assert!(served, "{method} {path} is documented but not routed");
            }
        }
    }
}
