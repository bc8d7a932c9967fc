//! The virtual waiting room (feature level 3): an event's queue, the users'
//! places in it and the batches of users each tick admitted.

use boxoffice_raft::command::{QueueSpec, QueueStatus};
use serde::{Deserialize, Serialize};

/// An event's queue (`table::QUEUE`, by event).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queue {
    /// How it runs.
    pub spec: QueueSpec,
    /// Shuffles the pre-queue (the first configuration's; never shown).
    pub seed: u64,
    /// Where it stands.
    pub status: QueueStatus,
    /// Places handed out: the next join's ticket.
    pub joined: u64,
    /// Set once the sale has started: how many joined before it (the
    /// pre-queue, whose positions are shuffled if the order says so).
    pub prequeue: Option<u64>,
    /// Positions `1..=watermark` are admitted.
    pub watermark: u64,
    /// Admitted users whose session is open (neither ended by time nor
    /// finished with a booking).
    pub active: u64,
    /// Admissions earned and not yet given, in user-milliseconds a minute
    /// (`admit_per_minute` × elapsed ms; 60,000 of it is one user).
    pub credit: u64,
    /// State-machine time of the last tick.
    pub last_tick_ms: u64,
    /// Positions up to this one are in batches whose sessions have ended by
    /// time (the next tick's expiry scan starts after it).
    pub expired_through: u64,
    /// Sessions that ended with a booking.
    pub finished: u64,
    /// Sessions that ended by time without a booking.
    pub no_shows: u64,
    /// (time, watermark) samples of the last minute: the observed rate.
    pub rate_samples: Vec<(u64, u64)>,
}

/// A user's place (`table::QUEUE_JOIN`, by (event, user)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueJoin {
    /// Their ticket: joins before theirs.
    pub ticket: u64,
    /// When they joined (state-machine time).
    pub joined_at_ms: u64,
    /// When their session ended with a booking, if it has.
    pub finished_at_ms: Option<u64>,
}

/// Users one tick admitted (`table::QUEUE_BATCH`, by (event, last position)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmissionBatch {
    /// The first position admitted (the key has the last).
    pub first: u64,
    /// When (state-machine time): their sessions end `session_ttl_ms` later.
    pub admitted_at_ms: u64,
    /// Users of the batch whose session ended with a booking.
    pub finished: u64,
}

boxoffice_raft::versioned_v1! {
    Queue => "queue record",
    QueueJoin => "queue place record",
    AdmissionBatch => "admission batch record",
}
