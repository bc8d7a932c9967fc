//! The API's error type: every failure becomes an RFC 9457 problem+json body with
//! a stable machine-readable `code`. 5xx errors are logged once, here; their bodies
//! never carry internals.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use boxoffice_raft::command::Rejection;
use serde_json::{json, Map, Value};

/// An error answer of the HTTP API.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code, e.g. `seat_unavailable`.
    pub code: &'static str,
    /// Human-readable explanation for this occurrence.
    pub detail: String,
    /// Extra members (e.g. `seat_ids`, `leader`).
    pub extra: Map<String, Value>,
    /// Seconds after which a retry may succeed (429/503).
    pub retry_after_s: Option<u32>,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            detail: detail.into(),
            extra: Map::new(),
            retry_after_s: None,
        }
    }
    /// Adds an extension member.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_string(), value.into());
        self
    }
    /// Sets `Retry-After`.
    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after_s = Some(seconds);
        self
    }
    /// 400 with a code naming what is wrong.
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }
    /// 400 for a bad parameter, naming it.
    pub fn bad_param(param: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_parameter", detail).with("parameter", param)
    }
    /// 401.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }
    /// 403.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }
    /// 404 with a specific code.
    pub fn not_found(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, detail)
    }
    /// 503: try again shortly (no leader, overloaded, node not ready).
    pub fn unavailable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, detail).retry_after(1)
    }
    /// 500; the cause is logged, not sent.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the node's log",
        )
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        let status = match &r {
            Rejection::SeatUnavailable { .. }
            | Rejection::InsufficientAvailability { .. }
            | Rejection::CapExceeded { .. }
            | Rejection::HoldExpired { .. }
            | Rejection::HoldReleased
            | Rejection::HoldAlreadyConfirmed { .. } => StatusCode::CONFLICT,
            Rejection::UnknownEvent { .. }
            | Rejection::UnknownVenue { .. }
            | Rejection::UnknownPerformer { .. }
            | Rejection::UnknownHold { .. } => StatusCode::NOT_FOUND,
            Rejection::NotHoldOwner => StatusCode::FORBIDDEN,
            Rejection::InvalidInput { .. } => StatusCode::BAD_REQUEST,
            Rejection::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
        };
        let mut e = ApiError::new(status, r.code(), r.to_string());
        match &r {
            Rejection::SeatUnavailable { seat_ids } => e = e.with("seat_ids", json!(seat_ids)),
            Rejection::InsufficientAvailability {
                requested,
                available,
            } => {
                e = e
                    .with("requested", *requested)
                    .with("available", *available)
            }
            Rejection::CapExceeded {
                cap,
                current,
                requested,
            } => {
                e = e
                    .with("cap", *cap)
                    .with("current", *current)
                    .with("requested", *requested)
            }
            Rejection::UnknownEvent { event_id } => e = e.with("event_id", *event_id),
            Rejection::UnknownHold { hold_id } => e = e.with("hold_id", hold_id.to_string()),
            Rejection::HoldExpired { expired_at_ms } => e = e.with("expired_at_ms", *expired_at_ms),
            Rejection::HoldAlreadyConfirmed { booking_id } => {
                e = e.with("booking_id", booking_id.to_string())
            }
            _ => {}
        }
        e
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert(
            "type".into(),
            json!(format!("urn:boxoffice:problem:{}", self.code)),
        );
        body.insert(
            "title".into(),
            json!(self.status.canonical_reason().unwrap_or("error")),
        );
        body.insert("status".into(), json!(self.status.as_u16()));
        body.insert("code".into(), json!(self.code));
        body.insert("detail".into(), json!(self.detail));
        for (k, v) in self.extra {
            body.insert(k, v);
        }
        let mut resp = (
            self.status,
            serde_json::to_vec(&Value::Object(body)).unwrap_or_default(),
        )
            .into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(s) = self.retry_after_s {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// Result type of handlers.
pub type ApiResult<T> = Result<T, ApiError>;
