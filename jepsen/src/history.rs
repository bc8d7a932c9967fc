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
}

/// Applied log position and state-machine time of the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub index: u64,
    pub time_ms: u64,
}

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
