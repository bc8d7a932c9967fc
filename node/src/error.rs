//! The API's error type: every failure becomes an RFC 9457 problem+json body with
//! a stable [`ProblemCode`], whose status it always answers with. 5xx errors are
//! logged once, here; their bodies never carry internals.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use boxoffice_api::{Problem, ProblemCode};
use boxoffice_raft::command::Rejection;
use serde_json::{json, Map, Value};

/// An error answer of the HTTP API.
#[derive(Debug)]
pub struct ApiError {
    /// The code; it decides the HTTP status.
    pub code: ProblemCode,
    /// Human-readable explanation for this occurrence.
    pub detail: String,
    /// Extra members (e.g. `seat_ids`, `leader`).
    pub extra: Map<String, Value>,
    /// Seconds after which a retry may succeed (429/503).
    pub retry_after_s: Option<u32>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.detail)
    }
}

impl ApiError {
    /// A new error; 503s say when to retry (in a second).
    pub fn new(code: ProblemCode, detail: impl Into<String>) -> Self {
        ApiError {
            code,
            detail: detail.into(),
            extra: Map::new(),
            retry_after_s: (code.status() == 503).then_some(1),
        }
    }
    /// The HTTP status of this error (its code's).
    pub fn status(&self) -> StatusCode {
        // Every code's status is a valid HTTP status (a test of the api crate).
        StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
    /// Adds an extension member.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_string(), value.into());
        self
    }
    /// 400 for a bad parameter, naming it.
    pub fn bad_param(param: &str, detail: impl Into<String>) -> Self {
        Self::new(ProblemCode::InvalidParameter, detail).with("parameter", param)
    }
    /// 500; the cause is logged, not sent.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(ProblemCode::Internal, "internal error; see the node's log")
    }
}

/// `Retry-After` of `too_many_sessions`: how long a refused request's answer
/// is remembered, the soonest a session of a user who keeps being refused ends.
/// Sessions of accepted requests last 24 h; the exact moment is not tracked.
pub const TOO_MANY_SESSIONS_RETRY_AFTER_S: u32 = 600;
/// `Retry-After` of `feature_not_enabled`: a rolling upgrade takes minutes.
pub const FEATURE_NOT_ENABLED_RETRY_AFTER_S: u32 = 30;

/// The problem code of a state-machine refusal.
pub fn rejection_code(r: &Rejection) -> ProblemCode {
    match r {
        Rejection::SeatUnavailable { .. } => ProblemCode::SeatUnavailable,
        Rejection::InsufficientAvailability { .. } => ProblemCode::InsufficientAvailability,
        Rejection::CapExceeded { .. } => ProblemCode::CapExceeded,
        Rejection::UnknownEvent { .. } => ProblemCode::UnknownEvent,
        Rejection::UnknownVenue { .. } => ProblemCode::UnknownVenue,
        Rejection::UnknownPerformer { .. } => ProblemCode::UnknownPerformer,
        Rejection::UnknownHold { .. } => ProblemCode::UnknownHold,
        Rejection::HoldExpired { .. } => ProblemCode::HoldExpired,
        Rejection::NotHoldOwner => ProblemCode::NotHoldOwner,
        Rejection::HoldReleased => ProblemCode::HoldReleased,
        Rejection::HoldAlreadyConfirmed { .. } => ProblemCode::HoldAlreadyConfirmed,
        Rejection::InvalidInput { .. } => ProblemCode::InvalidInput,
        Rejection::IdempotencyKeyReused => ProblemCode::IdempotencyKeyReused,
        Rejection::TooManySessions { .. } => ProblemCode::TooManySessions,
        Rejection::FeatureNotEnabled { .. } => ProblemCode::FeatureNotEnabled,
        Rejection::PaymentInFlight { .. } => ProblemCode::PaymentInFlight,
        Rejection::UnknownBooking { .. } => ProblemCode::UnknownBooking,
        // Another user's booking answers as one that does not exist (see api::bookings).
        Rejection::NotBookingOwner => ProblemCode::UnknownBooking,
        Rejection::BookingCancelled => ProblemCode::BookingCancelled,
        Rejection::CancellationClosed { .. } => ProblemCode::CancellationClosed,
        Rejection::NoQueue { .. } => ProblemCode::NoQueue,
        Rejection::QueueNotOpen { .. } => ProblemCode::QueueNotOpen,
        Rejection::QueueClosed => ProblemCode::QueueClosed,
        Rejection::QueueFull { .. } => ProblemCode::QueueFull,
        Rejection::QueueAdmissionRequired { .. } => ProblemCode::QueueAdmissionRequired,
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        let e = ApiError::new(rejection_code(&r), r.to_string());
        match r {
            Rejection::SeatUnavailable { seat_ids } => e.with("seat_ids", json!(seat_ids)),
            Rejection::InsufficientAvailability {
                requested,
                available,
            } => e.with("requested", requested).with("available", available),
            Rejection::CapExceeded {
                cap,
                current,
                requested,
            } => e
                .with("cap", cap)
                .with("current", current)
                .with("requested", requested),
            Rejection::UnknownEvent { event_id } => e.with("event_id", event_id),
            Rejection::UnknownVenue { venue_id } => e.with("venue_id", venue_id),
            Rejection::UnknownPerformer { performer_id } => e.with("performer_id", performer_id),
            Rejection::UnknownHold { hold_id } => e.with("hold_id", hold_id.to_string()),
            Rejection::HoldExpired { expired_at_ms } => e.with("expired_at_ms", expired_at_ms),
            Rejection::HoldAlreadyConfirmed { booking_id } => {
                e.with("booking_id", booking_id.to_string())
            }
            Rejection::TooManySessions { max } => {
                let mut e = e.with("max", max);
                e.retry_after_s = Some(TOO_MANY_SESSIONS_RETRY_AFTER_S);
                e
            }
            Rejection::FeatureNotEnabled { needed, level } => {
                let mut e = e.with("needed", needed).with("level", level);
                e.retry_after_s = Some(FEATURE_NOT_ENABLED_RETRY_AFTER_S);
                e
            }
            Rejection::PaymentInFlight { payment_id } => e.with("payment_id", payment_id),
            Rejection::UnknownBooking { booking_id } => {
                e.with("booking_id", booking_id.to_string())
            }
            Rejection::CancellationClosed { closed_at_ms } => e.with("closed_at_ms", closed_at_ms),
            Rejection::NoQueue { event_id } => e.with("event_id", event_id),
            Rejection::QueueNotOpen { opens_at_ms } => e.with("opens_at_ms", opens_at_ms),
            Rejection::QueueFull { max } => e.with("max", max),
            Rejection::QueueAdmissionRequired { reason } => e.with("reason", reason),
            Rejection::NotBookingOwner => {
                ApiError::new(ProblemCode::UnknownBooking, "unknown booking")
            }
            Rejection::NotHoldOwner
            | Rejection::HoldReleased
            | Rejection::InvalidInput { .. }
            | Rejection::IdempotencyKeyReused
            | Rejection::BookingCancelled
            | Rejection::QueueClosed => e,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let code = self.code;
        let mut problem = Problem::new(self.code, self.detail);
        problem.extra = self.extra;
        let mut resp = (status, serde_json::to_vec(&problem).unwrap_or_default()).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(s) = self.retry_after_s {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        // For the relay of reads (`crate::placement::relay`): the shard to ask
        // another node for.
        if code == ProblemCode::ShardNotHere {
            if let Some(shard) = problem
                .extra
                .get("shard")
                .and_then(Value::as_u64)
                .and_then(|s| u16::try_from(s).ok())
            {
                resp.extensions_mut()
                    .insert(crate::placement::relay::NotHostedHere(
                        boxoffice_raft::GroupId(shard),
                    ));
            }
        }
        // For the metrics layer: writes counted by their problem code.
        resp.extensions_mut()
            .insert(crate::metrics::AnsweredProblem(code.as_str()));
        resp
    }
}

/// Result type of handlers.
pub type ApiResult<T> = Result<T, ApiError>;
