//! The virtual waiting room: an admin's settings and stats, a user's place,
//! and the header an admitted user's holds carry.

use serde::{Deserialize, Serialize};

use crate::Applied;

/// The header that carries an admission token on `POST /v1/holds`.
pub const ADMISSION_HEADER: &str = "boxoffice-admission";

/// `PUT /admin/v1/events/{id}/queue`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    /// Joins are taken from this time (RFC 3339).
    pub prequeue_opens_at: String,
    /// The sale starts: the pre-queue is shuffled and admission begins (RFC 3339).
    pub sale_starts_at: String,
    /// Users admitted a minute, at most.
    pub admit_per_minute: u32,
    /// Most admitted users whose session is still open.
    pub active_max: u32,
    /// How long an admitted user may take to hold and pay (default 600).
    #[serde(default)]
    pub session_ttl_s: Option<u64>,
    /// `random_prequeue` (default) or `fifo`.
    #[serde(default)]
    pub order: Option<QueueOrderName>,
}

/// The order of the pre-queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum QueueOrderName {
    /// Shuffled at the start; later joins in arrival order.
    RandomPrequeue,
    /// Everyone in arrival order.
    Fifo,
}

/// Where a queue stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum QueueStatusName {
    /// Taking joins; admitting once the sale has started.
    Running,
    /// Taking joins; admitting no one.
    Paused,
    /// No more joins or admissions; holds still need an admission.
    Closed,
    /// Ended: holds need no admission.
    Open,
}

/// `GET /admin/v1/events/{id}/queue`: a queue's settings and live figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueueStats {
    /// The event.
    pub event_id: u64,
    /// Where it stands.
    pub status: QueueStatusName,
    /// True once the sale has started (the pre-queue is closed).
    pub started: bool,
    /// Its settings.
    pub settings: QueueSettings,
    /// Places handed out.
    pub joined: u64,
    /// Users who joined before the sale started (once it has).
    pub prequeue: Option<u64>,
    /// Users not admitted yet.
    pub waiting: u64,
    /// Users admitted so far (positions up to this one).
    pub admitted: u64,
    /// Admitted users whose session is open.
    pub active: u64,
    /// Sessions that ended with a booking.
    pub finished: u64,
    /// Sessions that ended by time without a booking.
    pub no_shows: u64,
    /// Users admitted a minute, over the last minute.
    pub admit_rate_per_minute: f64,
    /// The replica's applied position and time these figures are at.
    pub applied: Applied,
}

/// A user's phase in a queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum QueuePhase {
    /// Joined before the sale; the position is fixed when it starts (a range
    /// until then if the pre-queue is shuffled).
    Prequeue,
    /// Waiting for admission.
    Waiting,
    /// Admitted: `admission_token` lets holds through until `session_ends_at`.
    Admitted,
    /// The admitted session ended by time without a booking.
    Expired,
    /// The admitted session ended with a booking.
    Done,
    /// The queue has ended: holds need no admission.
    Open,
}

/// `POST /v1/events/{id}/queue` and `GET /v1/events/{id}/queue/me` (and each
/// event of the position stream): where the user stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueuePlace {
    /// The event.
    pub event_id: u64,
    /// The user's queue ticket (joins before theirs); the admission names it.
    pub ticket: u64,
    /// When they joined (RFC 3339).
    pub joined_at: String,
    /// True when this join took the place (false: they had it already).
    #[serde(default)]
    pub new: bool,
    /// Their phase.
    pub phase: QueuePhase,
    /// The queue's status.
    pub queue_status: QueueStatusName,
    /// Their position (1 is the front), once fixed.
    pub position: Option<u64>,
    /// The positions they may end up at while the pre-queue is not shuffled yet.
    pub position_range: Option<[u64; 2]>,
    /// Users ahead of them still waiting (once the position is fixed).
    pub ahead: Option<u64>,
    /// Users admitted so far.
    pub admitted_so_far: u64,
    /// Estimated wait until admission, seconds: earliest and latest (equal
    /// when the position is fixed). `None` once admitted or past.
    pub wait_s: Option<[u64; 2]>,
    /// When to ask again (ms); `None` when nothing will change for them.
    pub retry_after_ms: Option<u64>,
    /// When they were admitted (ms since the Unix epoch).
    pub admitted_at_ms: Option<u64>,
    /// When the admitted session ends (ms since the Unix epoch).
    pub session_ends_at_ms: Option<u64>,
    /// Lets holds on the event through (`Boxoffice-Admission` header) while admitted.
    pub admission_token: Option<String>,
    /// The replica's applied position and time this is at.
    pub applied: Applied,
}
