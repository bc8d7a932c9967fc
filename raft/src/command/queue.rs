//! The virtual waiting room (feature level 3): what its commands carry and
//! what they answer.
//!
//! A queue belongs to one event and lives on the event's shard. Users join
//! ([`super::Command::JoinQueue`], one place per user, idempotent: a join
//! carries no exactly-once session, since joining again answers the place
//! already held); the shard's leader advances an admitted watermark with one
//! small entry per tick ([`super::Command::AdmitQueue`]); while the queue is on,
//! a hold on the event needs an admitted, live session
//! ([`super::Command::AdmittedHold`]).

use serde::{Deserialize, Serialize};

/// The feature level the waiting room needs.
pub const FEATURE_LEVEL_QUEUE: u32 = 3;
/// Highest admission rate a queue may set (users a minute).
pub const QUEUE_ADMIT_PER_MINUTE_MAX: u32 = 1_000_000;
/// Highest `active_max` a queue may set (admitted users with an open session).
pub const QUEUE_ACTIVE_MAX_MAX: u32 = 10_000_000;
/// Shortest admitted session a queue may set (10 s).
pub const QUEUE_SESSION_TTL_MS_MIN: u64 = 10_000;
/// Longest admitted session a queue may set (1 day).
pub const QUEUE_SESSION_TTL_MS_MAX: u64 = 24 * 3600 * 1000;
/// Admitted session used when a queue does not set one (10 minutes).
pub const QUEUE_SESSION_TTL_MS_DEFAULT: u64 = 600_000;
/// Most places one event's queue hands out; a join past it is refused with
/// [`super::Rejection::QueueFull`]. Bounds every position and count.
pub const QUEUE_JOINS_MAX: u64 = 100_000_000;
/// Most users one tick admits, whatever the rate and the time since the last
/// tick (bounds the tick's work and a burst after a long pause of the leader).
pub const QUEUE_ADMIT_PER_TICK_MAX: u64 = 100_000;
/// Most admission batches whose sessions one tick ends (the rest end at the
/// next ticks).
pub const QUEUE_EXPIRE_PER_TICK_MAX: usize = 1000;
/// How far back the observed admission rate looks (ms of state-machine time).
pub const QUEUE_RATE_WINDOW_MS: u64 = 60_000;
/// Most samples of the admission rate a queue keeps (one per
/// [`QUEUE_RATE_SAMPLE_MS`] at most).
pub const QUEUE_RATE_SAMPLES_MAX: usize = 13;
/// Least time between two samples of the admission rate.
pub const QUEUE_RATE_SAMPLE_MS: u64 = 5_000;

/// The order of the users who joined before the sale started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum QueueOrder {
    /// The pre-queue is shuffled at the start (a seed committed with the
    /// queue's configuration); later joins go to the back in commit order.
    RandomPrequeue,
    /// Everyone in commit order.
    Fifo,
}

/// How an event's queue runs (an admin's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSpec {
    /// Joins are taken from this time (ms since the Unix epoch).
    pub prequeue_opens_at_ms: u64,
    /// The sale starts: the pre-queue is closed (and shuffled) and admission
    /// begins.
    pub sale_starts_at_ms: u64,
    /// Users admitted a minute, at most.
    pub admit_per_minute: u32,
    /// Most admitted users whose session is still open.
    pub active_max: u32,
    /// How long an admitted user may take to hold and pay.
    pub session_ttl_ms: u64,
    /// The pre-queue's order.
    pub order: QueueOrder,
}

impl QueueSpec {
    /// Checks every field against its bound.
    pub fn validate(&self) -> Result<(), String> {
        let max = super::STAMP_MS_MAX;
        if self.prequeue_opens_at_ms > max || self.sale_starts_at_ms > max {
            return Err(format!("times must be at most {max} ms since the epoch"));
        }
        if self.prequeue_opens_at_ms > self.sale_starts_at_ms {
            return Err("prequeue_opens_at must not be after sale_starts_at".into());
        }
        if !(1..=QUEUE_ADMIT_PER_MINUTE_MAX).contains(&self.admit_per_minute) {
            return Err(format!(
                "admit_per_minute must be 1..={QUEUE_ADMIT_PER_MINUTE_MAX}"
            ));
        }
        if !(1..=QUEUE_ACTIVE_MAX_MAX).contains(&self.active_max) {
            return Err(format!("active_max must be 1..={QUEUE_ACTIVE_MAX_MAX}"));
        }
        if !(QUEUE_SESSION_TTL_MS_MIN..=QUEUE_SESSION_TTL_MS_MAX).contains(&self.session_ttl_ms) {
            return Err(format!(
                "session_ttl must be {}..={} s",
                QUEUE_SESSION_TTL_MS_MIN / 1000,
                QUEUE_SESSION_TTL_MS_MAX / 1000
            ));
        }
        Ok(())
    }
}

/// An admin's action on a queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum QueueAction {
    /// Stop admitting (joins are still taken; sessions run on).
    Pause,
    /// Admit again.
    Resume,
    /// No more joins and no more admissions; holds still need an admission.
    Close,
    /// The waiting room ends: holds on the event no longer need an admission.
    Open,
}

/// Where a queue stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum QueueStatus {
    /// Taking joins, admitting once the sale has started.
    Running,
    /// Taking joins, admitting no one.
    Paused,
    /// No joins, no admissions; holds still need an admission.
    Closed,
    /// Ended: holds need no admission.
    Open,
}

/// What a queue command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueEffect {
    /// The queue was configured (created or changed).
    Configured {
        /// The event.
        event_id: u64,
    },
    /// An admin's action took effect (or the queue already stood there).
    Controlled {
        /// The event.
        event_id: u64,
        /// Where the queue stands now.
        status: QueueStatus,
    },
    /// The user holds this place (`new`: they joined now).
    Joined {
        /// The event.
        event_id: u64,
        /// The user's queue ticket: the number of joins before theirs.
        ticket: u64,
        /// When they joined (state-machine time).
        joined_at_ms: u64,
        /// False when they had joined before (the place is the one they had).
        new: bool,
    },
    /// A tick: users admitted and sessions ended.
    Ticked {
        /// The event.
        event_id: u64,
        /// Positions up to this one are admitted.
        watermark: u64,
        /// Users admitted by this tick.
        admitted: u64,
        /// Sessions this tick ended by time.
        expired: u64,
    },
}
