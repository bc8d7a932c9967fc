//! The live seat map, `GET /v1/events/{id}/seats/stream` (Server-Sent Events).
//!
//! Each SSE event's `event:` field is one of [`StreamEventKind`] and its `data:`
//! the JSON of the matching type here. `snapshot` and `change` events carry an
//! `id:` (a stream position: `applied index × 1024 + position in the entry`) that a
//! reconnecting client sends back as `Last-Event-ID`.

use serde::{Deserialize, Serialize};

use crate::common::Freshness;
use crate::public::SeatMap;

/// The kinds of events a seat-map stream sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StreamEventKind {
    /// [`StreamSnapshot`]: the whole seat map, first (unless resuming).
    Snapshot,
    /// [`SeatChange`]: seats held, sold or released, once each, in log order.
    Change,
    /// [`SeatsExpired`]: a hold's seats became available at its expiry instant.
    Expired,
    /// [`StreamReset`]: the node drops this stream; reconnect with `Last-Event-ID`.
    Reset,
    /// [`StreamError`]: the stream cannot go on (the event is unknown).
    Error,
    /// [`crate::QueuePlace`]: the user's place in a queue (the queue stream's only kind).
    Place,
}

impl StreamEventKind {
    /// Every kind.
    pub const ALL: &'static [StreamEventKind] = &[
        StreamEventKind::Snapshot,
        StreamEventKind::Change,
        StreamEventKind::Expired,
        StreamEventKind::Reset,
        StreamEventKind::Error,
        StreamEventKind::Place,
    ];

    /// The SSE `event:` name.
    pub const fn as_str(self) -> &'static str {
        match self {
            StreamEventKind::Snapshot => "snapshot",
            StreamEventKind::Change => "change",
            StreamEventKind::Expired => "expired",
            StreamEventKind::Reset => "reset",
            StreamEventKind::Error => "error",
            StreamEventKind::Place => "place",
        }
    }

    /// The kind named `name`, if this version knows it.
    pub fn parse(name: &str) -> Option<StreamEventKind> {
        Self::ALL.iter().copied().find(|k| k.as_str() == name)
    }
}

/// `snapshot`: the seat map the stream starts from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StreamSnapshot {
    /// The event's shard.
    pub shard: u16,
    /// How fresh the replica was (the same as `seat_map.freshness`).
    pub freshness: Freshness,
    /// The seat map.
    pub seat_map: SeatMap,
}

/// What a change did to its seats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SeatChangeKind {
    /// A hold took them (until `expires_at_ms`).
    Held,
    /// A confirm booked them.
    Sold,
    /// A release gave them back (or a cancelled booking did).
    Released,
    /// A payment in flight keeps them held longer (until `expires_at_ms`).
    Extended,
}

/// `change`: one applied write's effect on an event's seats.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SeatChange {
    /// Applied log index (several changes can share one: a leader batches
    /// requests into one entry; the SSE id tells them apart).
    pub index: u64,
    /// State-machine time of the change.
    pub time_ms: u64,
    /// The event.
    pub event_id: u64,
    /// What happened.
    pub kind: SeatChangeKind,
    /// The hold involved.
    pub hold_id: String,
    /// Seats (empty for general admission).
    #[serde(default)]
    pub seat_ids: Vec<u32>,
    /// Tickets.
    pub quantity: u32,
    /// For `held`: when the hold expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
}

/// `expired`: a hold's tickets became available because it expired.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SeatsExpired {
    /// The event.
    pub event_id: u64,
    /// Seats (empty for general admission).
    #[serde(default)]
    pub seat_ids: Vec<u32>,
    /// Tickets.
    pub quantity: u32,
    /// The expiry instant (state-machine time).
    pub expired_at_ms: u64,
}

/// `reset`: why the node ends the stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StreamReset {
    /// For people.
    pub reason: String,
}

/// `error`: why the stream cannot go on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StreamError {
    /// A problem code (`unknown_event`).
    pub code: crate::ProblemCode,
    /// The event asked for.
    pub event_id: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_their_names() {
        for &k in StreamEventKind::ALL {
            assert_eq!(StreamEventKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(StreamEventKind::parse("message"), None);
    }
}
