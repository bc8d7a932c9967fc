//! A history: every operation a client invoked, with what it saw.
//!
//! One JSON object per line. Times are the harness's monotonic clock in
//! microseconds; `applied` is the state machine's (log index, time) from the
//! answer, when there was one. `outcome` is `ok`, `fail` (definite: the cluster
//! said no, nothing changed) or `info` (unknown: timeout, reset — it may or may not
//! have taken effect, and never counts as failed).

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Fail,
    Info,
}

/// A seat's status as a read reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeatStatus {
    Available,
    Held,
    Sold,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Call {
    /// Hold these seats of the event for `user`.
    Hold {
        user: String,
        event: u64,
        seats: Vec<u32>,
    },
    /// Confirm a hold.
    Confirm { user: String, hold_id: String },
    /// Release a hold.
    Release { user: String, hold_id: String },
    /// Read seat statuses (`linearizable` or a follower read).
    Read { event: u64, linearizable: bool },
    /// Hold this many general-admission tickets for `user`.
    HoldQuantity {
        user: String,
        event: u64,
        quantity: u32,
    },
    /// A fault, from its start (`invoke_us`) to its end (`complete_us`); `fail`
    /// when it could not be applied.
    Nemesis { fault: String },
}

/// What a read of a general-admission event (or the final state of one) showed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GaState {
    pub capacity: u32,
    pub sold: u32,
    pub held: u32,
    /// Final state only: (booking, user, quantity) of every booking of the event.
    #[serde(default)]
    pub bookings: Vec<(String, String, u32)>,
}

/// Where a read was served and how fresh it was.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freshness {
    /// Node that answered.
    pub node: u64,
    pub shard: u16,
    pub applied_index: u64,
    pub applied_time_ms: u64,
    /// The time the read judged hold expiry at.
    pub as_of_ms: u64,
    /// The answering node's clock when it read (for the staleness bound).
    #[serde(default)]
    pub clock_ms: u64,
}

/// What an `ok` answer carried.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// Hold granted / confirmed / released.
    #[serde(default)]
    pub hold_id: Option<String>,
    #[serde(default)]
    pub booking_id: Option<String>,
    /// Hold expiry (state-machine time, ms).
    #[serde(default)]
    pub expires_at_ms: Option<u64>,
    /// Seats booked by a confirm.
    #[serde(default)]
    pub seats: Vec<u32>,
    /// A read: (seat, status).
    #[serde(default)]
    pub statuses: Vec<(u32, SeatStatus)>,
    /// For a read: the seats sold, with the booking each belongs to.
    #[serde(default)]
    pub bookings: Vec<(u32, String)>,
    /// Tickets of a granted general-admission hold or booking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<u32>,
    /// A read of a general-admission event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ga: Option<GaState>,
    /// A read's freshness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freshness: Option<Freshness>,
    /// A read of the final state (after the final heal, with every booking).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub final_state: bool,
}

/// Applied log position and state-machine time of the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub index: u64,
    pub time_ms: u64,
}

/// Process id of the nemesis in a history.
pub const NEMESIS_PROCESS: u64 = u64::MAX;

/// Name of the nemesis operation that marks the final heal (every fault ended).
pub const FINAL_HEAL: &str = "final heal";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// Client process.
    pub process: u64,
    pub call: Call,
    pub invoke_us: u64,
    /// None while pending (treated as `info`).
    #[serde(default)]
    pub complete_us: Option<u64>,
    pub outcome: Outcome,
    /// Problem code of a `fail`, e.g. `seat_unavailable`.
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub answer: Answer,
    #[serde(default)]
    pub applied: Option<Applied>,
}

/// Parses JSON lines.
pub fn parse(text: &str) -> anyhow::Result<Vec<Op>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| anyhow::anyhow!("history line {}: {e}", i + 1))
        })
        .collect()
}
