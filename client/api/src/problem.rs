//! Errors of the HTTP API: RFC 9457 `application/problem+json` bodies with a
//! stable machine-readable [`ProblemCode`].
//!
//! The code decides everything a caller acts on: the HTTP status it comes with
//! ([`ProblemCode::status`]) and whether a write answered with it may still have
//! taken effect ([`ProblemCode::may_have_applied`]), so that the node, the client
//! library, the fault harness and the benchmarks cannot disagree about either.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Declares [`ProblemCode`] with each code's string, status and whether a write
/// answered with it may have been applied, from one table.
macro_rules! problem_codes {
    ($( $(#[$doc:meta])* $variant:ident = ($code:literal, $status:literal, $applied:literal), )*) => {
        /// Every error code the API answers with.
        ///
        /// Adding one: a variant here (with its status and whether a write may have
        /// applied), a row in the README's error table (a test compares them), and
        /// the place in the node that answers it.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum ProblemCode {
            $( $(#[$doc])* $variant, )*
        }

        impl ProblemCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ProblemCode] = &[$(ProblemCode::$variant),*];

            /// The code as it appears in problem bodies, e.g. `seat_unavailable`.
            pub const fn as_str(self) -> &'static str {
                match self { $(ProblemCode::$variant => $code,)* }
            }

            /// The HTTP status answered with this code.
            pub const fn status(self) -> u16 {
                match self { $(ProblemCode::$variant => $status,)* }
            }

            /// True when a write answered with this code may have been applied (or
            /// may still be): the caller must retry with the same idempotency key
            /// to learn its outcome, never assume it failed. False means nothing
            /// was applied (or the write was refused as a whole).
            pub const fn may_have_applied(self) -> bool {
                match self { $(ProblemCode::$variant => $applied,)* }
            }

            /// The code named `code`, if this version knows it.
            pub fn parse(code: &str) -> Option<ProblemCode> {
                match code { $($code => Some(ProblemCode::$variant),)* _ => None }
            }
        }
    };
}

problem_codes! {
    // ---- refusals by the state machine (definite: nothing changed) ----
    /// Some requested seats are held or sold (`seat_ids` lists them).
    SeatUnavailable = ("seat_unavailable", 409, false),
    /// Not enough tickets left for a quantity hold (`requested`, `available`).
    InsufficientAvailability = ("insufficient_availability", 409, false),
    /// The user's per-event cap would be passed (`cap`, `current`, `requested`).
    CapExceeded = ("cap_exceeded", 409, false),
    /// The hold expired before the command applied (`expired_at_ms`).
    HoldExpired = ("hold_expired", 409, false),
    /// The hold was released.
    HoldReleased = ("hold_released", 409, false),
    /// The hold was confirmed already (`booking_id`).
    HoldAlreadyConfirmed = ("hold_already_confirmed", 409, false),
    /// The hold belongs to another user. The API no longer answers it (another
    /// user's hold answers `UnknownHold`); kept so that older answers parse.
    NotHoldOwner = ("not_hold_owner", 403, false),
    /// No such event (`event_id`).
    UnknownEvent = ("unknown_event", 404, false),
    /// No such venue.
    UnknownVenue = ("unknown_venue", 404, false),
    /// No such performer.
    UnknownPerformer = ("unknown_performer", 404, false),
    /// No such hold (`hold_id`).
    UnknownHold = ("unknown_hold", 404, false),
    /// The request is malformed in a way only the whole command shows.
    InvalidInput = ("invalid_input", 400, false),
    /// The idempotency key was used before for a different request.
    IdempotencyKeyReused = ("idempotency_key_reused", 422, false),
    /// The user has as many requests remembered for retries in this shard as a
    /// user may (`max`); `Retry-After` says when to try again.
    TooManySessions = ("too_many_sessions", 429, false),
    /// The shard has not reached the feature level this needs yet (`needed`,
    /// `level`): every replica must run a build that has it. Try again later.
    FeatureNotEnabled = ("feature_not_enabled", 503, false),
    /// The hold's payment is in flight (`payment_id`): it is booked or reopened
    /// when the provider says how the payment went.
    PaymentInFlight = ("payment_in_flight", 409, false),
    /// The booking was cancelled already.
    BookingCancelled = ("booking_cancelled", 409, false),
    /// The event's cancellation cutoff has passed (`closed_at_ms`).
    CancellationClosed = ("cancellation_closed", 409, false),
    /// The event has no waiting room (`event_id`).
    NoQueue = ("no_queue", 404, false),
    /// The queue takes joins from a later time (`opens_at_ms`).
    QueueNotOpen = ("queue_not_open", 409, false),
    /// The queue takes no more joins.
    QueueClosed = ("queue_closed", 409, false),
    /// The queue has handed out as many places as a queue may (`max`).
    QueueFull = ("queue_full", 409, false),
    /// The event's queue is on: a hold needs the admission of an open session
    /// (`Boxoffice-Admission` header; `reason` says what is missing).
    QueueAdmissionRequired = ("queue_admission_required", 403, false),
    // ---- refusals by the API (definite: nothing was proposed) ----
    /// A parameter or body field is invalid (`parameter` names it).
    InvalidParameter = ("invalid_parameter", 400, false),
    /// The body is not the JSON the endpoint takes.
    MalformedJson = ("malformed_json", 400, false),
    /// The body could not be read.
    UnreadableBody = ("unreadable_body", 400, false),
    /// A write without an `Idempotency-Key` header.
    MissingIdempotencyKey = ("missing_idempotency_key", 400, false),
    /// An `Idempotency-Key` that is empty, too long or not visible ASCII.
    InvalidIdempotencyKey = ("invalid_idempotency_key", 400, false),
    /// A `Last-Event-ID` this stream never sent.
    InvalidLastEventId = ("invalid_last_event_id", 400, false),
    /// The body is larger than `limits.body_bytes_max`.
    BodyTooLarge = ("body_too_large", 413, false),
    /// No valid bearer token.
    Unauthorized = ("unauthorized", 401, false),
    /// The token may not do this (an admin endpoint, another user's booking).
    Forbidden = ("forbidden", 403, false),
    /// The fault-injection API on a node started without it.
    FaultInjectionDisabled = ("fault_injection_disabled", 403, false),
    /// No such endpoint.
    NotFound = ("not_found", 404, false),
    /// No such booking.
    UnknownBooking = ("unknown_booking", 404, false),
    /// The event has no such section.
    UnknownSection = ("unknown_section", 404, false),
    /// No such inventory shard in this cluster.
    UnknownShard = ("unknown_shard", 404, false),
    /// No such Raft group in this cluster.
    UnknownGroup = ("unknown_group", 404, false),
    /// A node already belongs to a cluster of another shape.
    ClusterMismatch = ("cluster_mismatch", 409, false),
    /// The caller (a user, or a client address) is over a rate limit of this
    /// kind of request; `Retry-After` says when one more will be accepted.
    RateLimited = ("rate_limited", 429, false),
    /// The direct confirm needs a box-office credential (a token with the
    /// `box_office` scope); buyers check out and pay through the provider.
    DirectConfirmForbidden = ("direct_confirm_forbidden", 403, false),
    /// A webhook's signature is missing, malformed, stale or wrong.
    BadSignature = ("bad_signature", 400, false),
    /// No payment provider is configured on this cluster (`payments.provider_url`).
    PaymentsNotConfigured = ("payments_not_configured", 503, false),
    /// The payment provider did not answer (or failed); nothing was committed.
    ProviderUnavailable = ("provider_unavailable", 503, false),
    /// The payment provider refused the request (`provider_code`).
    ProviderRefused = ("provider_refused", 502, false),
    // ---- try again (503 with Retry-After) ----
    /// No reachable leader for the group (`leader` names the one known, if any).
    NotLeader = ("not_leader", 503, false),
    /// Too many requests in flight on this node.
    Overloaded = ("overloaded", 503, false),
    /// The cluster is not bootstrapped, or the group does not run on this node yet.
    NotReady = ("not_ready", 503, false),
    /// The group cannot take writes now (no quorum); the write was not applied.
    Unavailable = ("unavailable", 503, false),
    /// The search index is being built.
    SearchNotReady = ("search_not_ready", 503, false),
    /// This replica lags its clock by more than `limits.replica_staleness_ms_max`.
    ReplicaStale = ("replica_stale", 503, false),
    /// No replica of the request's shard could serve it: this node does not
    /// host the shard and the nodes that do (by the placement directory) did
    /// not answer, or the directory is behind a move (`shard`).
    ShardNotHere = ("shard_not_here", 503, false),
    /// A peer needed for bootstrap could not be reached.
    PeerUnreachable = ("peer_unreachable", 503, false),
    /// The write may or may not have been applied: retry with the same key.
    OutcomeUnknown = ("outcome_unknown", 503, true),
    /// The request took longer than `limits.request_timeout_ms`; a write may
    /// still be applied.
    Timeout = ("timeout", 503, true),
    /// A bug or an I/O failure on the node (its log says which); a write may have
    /// been applied before it.
    Internal = ("internal", 500, true),
}

impl ProblemCode {
    /// The `type` member of a problem body: `urn:boxoffice:problem:<code>`.
    pub fn type_uri(self) -> String {
        format!("urn:boxoffice:problem:{}", self.as_str())
    }
}

impl fmt::Display for ProblemCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ProblemCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ProblemCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ProblemCode::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown problem code {s:?}")))
    }
}

/// In the OpenAPI document a code is one of the strings of [`ProblemCode::ALL`].
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for ProblemCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(ProblemCode::ALL.iter().map(|c| c.as_str())))
            .description(Some("A stable problem code"))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for ProblemCode {}

/// A problem body as the API sends it (RFC 9457).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    /// `urn:boxoffice:problem:<code>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// The status's reason phrase.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// The stable code, as a string: a newer node may send one this version does
    /// not know ([`Problem::problem_code`] is then `None`).
    pub code: String,
    /// What went wrong this time, for people.
    pub detail: String,
    /// Extension members (`seat_ids`, `parameter`, `leader`, `applied`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Problem {
    /// A problem with `code` and `detail` and no extension members.
    pub fn new(code: ProblemCode, detail: impl Into<String>) -> Problem {
        Problem {
            type_uri: code.type_uri(),
            title: reason_phrase(code.status()).to_string(),
            status: code.status(),
            code: code.as_str().to_string(),
            detail: detail.into(),
            extra: Map::new(),
        }
    }

    /// The code, if this version knows it.
    pub fn problem_code(&self) -> Option<ProblemCode> {
        ProblemCode::parse(&self.code)
    }

    /// Whether a write answered with this problem may have been applied: as its
    /// code says; for a code this version does not know, a 5xx may have and a 4xx
    /// did not.
    pub fn may_have_applied(&self) -> bool {
        match self.problem_code() {
            Some(c) => c.may_have_applied(),
            None => self.status >= 500,
        }
    }
}

/// The reason phrase of the statuses the API answers with.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_parse_back_and_have_error_statuses() {
        let mut seen = std::collections::BTreeSet::new();
        for &c in ProblemCode::ALL {
            assert!(seen.insert(c.as_str()), "{c} twice");
            assert_eq!(ProblemCode::parse(c.as_str()), Some(c));
            assert!((400..600).contains(&c.status()), "{c}");
            assert_ne!(reason_phrase(c.status()), "Error", "{c}");
            // Only a 5xx can leave a write's outcome open.
            assert!(!c.may_have_applied() || c.status() >= 500, "{c}");
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(serde_json::from_str::<ProblemCode>(&json).unwrap(), c);
        }
        assert_eq!(ProblemCode::parse("no_such_code"), None);
    }

    #[test]
    fn problem_bodies_round_trip_with_their_extensions() {
        let mut p = Problem::new(ProblemCode::SeatUnavailable, "seats taken");
        p.extra.insert("seat_ids".into(), serde_json::json!([1, 2]));
        let text = serde_json::to_string(&p).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["type"], "urn:boxoffice:problem:seat_unavailable");
        assert_eq!(v["status"], 409);
        assert_eq!(v["seat_ids"], serde_json::json!([1, 2]));
        let back: Problem = serde_json::from_str(&text).unwrap();
        assert_eq!(back, p);
        assert!(!back.may_have_applied());
        // A code from a newer node: judged by its status.
        let newer = Problem {
            code: "brand_new".into(),
            status: 503,
            ..back
        };
        assert_eq!(newer.problem_code(), None);
        assert!(newer.may_have_applied());
    }
}
