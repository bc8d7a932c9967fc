//! Live seat maps: applied seat changes per shard, replayable for a while, and the
//! Server-Sent Events stream `GET /v1/events/{id}/seats/stream`.
//!
//! A feed task per shard turns the shard's applied outcomes into [`SeatChange`]s and
//! keeps the last [`REPLAY_MAX`] of them. Event ids are stream positions:
//! `index * POS_PER_ENTRY + pos`, where `pos` numbers the requests of one log entry
//! (a leader batches requests into one entry). A stream starts with a `snapshot`
//! event (the seat map, id = the position just past its applied index), or, when
//! the client sends `Last-Event-ID` and the ring still covers everything after it,
//! with the changes it missed; then live `change` events, each sent once.
//! Expiries are announced by `expired` events at the expiry instant (within the
//! timer's resolution, a few ms), from timers each stream keeps for the holds it
//! knows. A consumer that falls [``limits.sse_lag_max``] changes behind gets a `reset`
//! event and is dropped; it reconnects with its `Last-Event-ID`.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use boxoffice_raft::command::Effect;
use boxoffice_raft::GroupId;
use boxoffice_storage::read::Reader;
use boxoffice_storage::records::SeatStatus;
use boxoffice_storage::state_machine::StateMachineStore;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::node::now_ms;

/// Seat changes kept per shard for resuming streams.
pub const REPLAY_MAX: usize = 16_384;
/// Events queued between a stream's task and its HTTP body.
pub const STREAM_QUEUE: usize = 64;
/// Stream positions per log entry: room for a full batch of requests.
pub const POS_PER_ENTRY: u64 = 1024;
const _: () = assert!(boxoffice_raft::command::BATCH_REQUESTS_MAX as u64 <= POS_PER_ENTRY - 1);

/// The stream position of the change of request `pos` in entry `index`.
pub fn position(index: u64, pos: u32) -> u64 {
    // Leaders never batch more than BATCH_REQUESTS_MAX requests (checked above to
    // fit); the clamp only keeps a position inside its entry's range regardless.
    index
        .saturating_mul(POS_PER_ENTRY)
        .saturating_add(u64::from(pos).min(POS_PER_ENTRY - 2))
}

/// The position just past every change of entry `index` (and before `index + 1`'s).
pub fn position_after(index: u64) -> u64 {
    index
        .saturating_mul(POS_PER_ENTRY)
        .saturating_add(POS_PER_ENTRY - 1)
}

/// What happened to some seats of one event.
#[derive(Clone, Debug, Serialize)]
pub struct SeatChange {
    /// Applied log index.
    pub index: u64,
    /// Stream position (the SSE event id), see [`position`].
    #[serde(skip)]
    pub position: u64,
    /// State-machine time of the change.
    pub time_ms: u64,
    /// The event.
    pub event_id: u64,
    /// `held`, `sold` or `released`.
    pub kind: &'static str,
    /// The hold involved.
    pub hold_id: String,
    /// Seats (empty for general admission).
    pub seat_ids: Vec<u32>,
    /// Tickets.
    pub quantity: u32,
    /// For `held`: when the hold expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
}

struct Ring {
    /// Highest position whose changes are not all in `changes` (replay only after it).
    floor: u64,
    changes: VecDeque<Arc<SeatChange>>,
}

/// The seat-change feed of one shard on this node.
pub struct Feed {
    ring: Mutex<Ring>,
    tx: broadcast::Sender<Arc<SeatChange>>,
}

impl Feed {
    /// Starts the feed of a shard's state machine.
    /// `lag_max` is how far a subscriber may fall behind (`limits.sse_lag_max`).
    pub fn start(sm: StateMachineStore, lag_max: usize) -> Arc<Feed> {
        let mut changes = sm.changes();
        let start = position_after(sm.applied().borrow().index);
        let (tx, _) = broadcast::channel(lag_max.max(1));
        let feed = Arc::new(Feed {
            ring: Mutex::new(Ring {
                floor: start,
                changes: VecDeque::new(),
            }),
            tx,
        });
        let f = feed.clone();
        tokio::spawn(async move {
            loop {
                let c = match changes.recv().await {
                    Ok(c) => c,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Changes were lost: nothing before now can be replayed.
                        let now = position_after(sm.applied().borrow().index);
                        let mut ring = f.ring.lock().unwrap_or_else(|e| e.into_inner());
                        ring.changes.clear();
                        ring.floor = now;
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if c.snapshot_installed {
                    // The state jumped: nothing before it can be replayed, and every
                    // stream must start over from a snapshot.
                    {
                        let mut ring = f.ring.lock().unwrap_or_else(|e| e.into_inner());
                        ring.changes.clear();
                        ring.floor = position_after(c.index);
                    }
                    let reset = SeatChange {
                        index: c.index,
                        position: position_after(c.index),
                        time_ms: c.outcome.applied.time_ms,
                        event_id: 0,
                        kind: "reset",
                        hold_id: String::new(),
                        seat_ids: vec![],
                        quantity: 0,
                        expires_at_ms: None,
                    };
                    let _ = f.tx.send(Arc::new(reset));
                    continue;
                }
                if c.outcome.replayed {
                    continue;
                }
                let change = match &c.outcome.result {
                    Ok(Effect::Held(h)) => Some(SeatChange {
                        index: c.index,
                        position: position(c.index, c.pos),
                        time_ms: c.outcome.applied.time_ms,
                        event_id: h.event_id,
                        kind: "held",
                        hold_id: h.hold_id.to_string(),
                        seat_ids: h.seat_ids.clone(),
                        quantity: h.quantity,
                        expires_at_ms: Some(h.expires_at_ms),
                    }),
                    Ok(Effect::Confirmed(b)) => Some(SeatChange {
                        index: c.index,
                        position: position(c.index, c.pos),
                        time_ms: c.outcome.applied.time_ms,
                        event_id: b.event_id,
                        kind: "sold",
                        hold_id: b.hold_id.to_string(),
                        seat_ids: b.seat_ids.clone(),
                        quantity: b.quantity,
                        expires_at_ms: None,
                    }),
                    Ok(Effect::Released {
                        hold_id,
                        event_id,
                        seat_ids,
                        quantity,
                    }) if *quantity > 0 => Some(SeatChange {
                        index: c.index,
                        position: position(c.index, c.pos),
                        time_ms: c.outcome.applied.time_ms,
                        event_id: *event_id,
                        kind: "released",
                        hold_id: hold_id.to_string(),
                        seat_ids: seat_ids.clone(),
                        quantity: *quantity,
                        expires_at_ms: None,
                    }),
                    _ => None,
                };
                let Some(change) = change else { continue };
                let change = Arc::new(change);
                {
                    let mut ring = f.ring.lock().unwrap_or_else(|e| e.into_inner());
                    if ring.changes.len() >= REPLAY_MAX {
                        if let Some(old) = ring.changes.pop_front() {
                            ring.floor = old.position;
                        }
                    }
                    ring.changes.push_back(change.clone());
                }
                // No subscribers is fine.
                let _ = f.tx.send(change);
            }
        });
        feed
    }

    /// Live changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<SeatChange>> {
        self.tx.subscribe()
    }

    /// Subscribes, and returns the changes after `after` if the ring covers them.
    fn subscribe_from(
        &self,
        after: Option<u64>,
    ) -> (
        broadcast::Receiver<Arc<SeatChange>>,
        Option<Vec<Arc<SeatChange>>>,
    ) {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        // Subscribing under the lock: nothing pushed after this is missed, nothing
        // before it is received live.
        let rx = self.tx.subscribe();
        let replay = after.filter(|&a| a >= ring.floor).map(|a| {
            ring.changes
                .iter()
                .filter(|c| c.position > a)
                .cloned()
                .collect()
        });
        (rx, replay)
    }
}

fn sse_json<T: Serialize>(kind: &str, id: Option<u64>, value: &T) -> Event {
    let e = Event::default()
        .event(kind)
        .json_data(value)
        .unwrap_or_else(|_| Event::default().event(kind));
    match id {
        Some(i) => e.id(i.to_string()),
        None => e,
    }
}

/// Builds the SSE stream for one event.
pub fn stream(
    feed: Arc<Feed>,
    reader: Reader,
    group: GroupId,
    event_id: u64,
    last_event_id: Option<u64>,
    permit: tokio::sync::OwnedSemaphorePermit,
    send_timeout: Duration,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Event>(STREAM_QUEUE);
    // Queues an event for the consumer; false when it is gone or has taken nothing
    // for `send_timeout` (stalled: drop it rather than hold its slot and memory).
    let send = move |tx: tokio::sync::mpsc::Sender<Event>, e: Event| async move {
        match tokio::time::timeout(send_timeout, tx.send(e)).await {
            Ok(Ok(())) => true,
            Ok(Err(_)) => false,
            Err(_) => {
                // Best effort: tell it why, should it ever read again.
                let _ = tx.try_send(sse_json("reset", None, &serde_json::json!({"reason": "consumer stalled; reconnect with Last-Event-ID"})));
                false
            }
        }
    };
    tokio::spawn(async move {
        // Held for the life of the stream.
        let _permit = permit;
        let (mut rx, replay) = feed.subscribe_from(last_event_id);
        // Seat (or hold, for GA) -> expiry, for the holds this stream knows of.
        let mut timers: BTreeMap<u64, Vec<(String, Vec<u32>, u32)>> = BTreeMap::new();
        let mut held_until: BTreeMap<String, u64> = BTreeMap::new();
        let mut last_sent: u64;
        match replay {
            Some(changes) => {
                last_sent = last_event_id.unwrap_or(0);
                for c in changes {
                    if c.event_id != event_id {
                        continue;
                    }
                    track(&mut timers, &mut held_until, &c);
                    last_sent = c.position;
                    if !send(out_tx.clone(), sse_json("change", Some(c.position), &*c)).await {
                        return;
                    }
                }
            }
            None => {
                let tx = reader.begin_applied();
                let Some(map) = tx.seat_map(event_id) else {
                    let _ = send(
                        out_tx.clone(),
                        sse_json(
                            "error",
                            None,
                            &serde_json::json!({"code": "unknown_event", "event_id": event_id}),
                        ),
                    )
                    .await;
                    return;
                };
                last_sent = position_after(tx.freshness.applied_index);
                for s in &map.seats {
                    if let (SeatStatus::Held, Some(until)) = (s.status, s.held_until_ms) {
                        timers.entry(until).or_default().push((
                            format!("seat:{}", s.seat_id),
                            vec![s.seat_id],
                            1,
                        ));
                        held_until.insert(format!("seat:{}", s.seat_id), until);
                    }
                }
                let body = serde_json::json!({"shard": group.0, "freshness": tx.freshness, "seat_map": map});
                if !send(out_tx.clone(), sse_json("snapshot", Some(last_sent), &body)).await {
                    return;
                }
            }
        }
        loop {
            let next_timer = timers.keys().next().copied();
            let sleep_ms = next_timer
                .map(|t| t.saturating_sub(now_ms()))
                .unwrap_or(3_600_000);
            tokio::select! {
                r = rx.recv() => match r {
                    Ok(c) => {
                        if c.kind == "reset" {
                            let _ = send(out_tx.clone(), sse_json("reset", None, &serde_json::json!({"reason": "replica installed a snapshot; reconnect"}))).await;
                            return;
                        }
                        if c.event_id != event_id || c.position <= last_sent {
                            continue;
                        }
                        track(&mut timers, &mut held_until, &c);
                        last_sent = c.position;
                        if !send(out_tx.clone(), sse_json("change", Some(c.position), &*c)).await {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Best effort: a stalled consumer's queue is full, and waiting
                        // for it is what this drop avoids.
                        let _ = out_tx.try_send(sse_json("reset", None, &serde_json::json!({"reason": "consumer too slow; reconnect with Last-Event-ID"})));
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tokio::time::sleep(Duration::from_millis(sleep_ms)) => {
                    let Some(t) = next_timer else { continue };
                    let due = timers.remove(&t).unwrap_or_default();
                    for (key, seats, quantity) in due {
                        // Still held by the hold that set this timer?
                        if held_until.get(&key) != Some(&t) {
                            continue;
                        }
                        held_until.remove(&key);
                        let body = serde_json::json!({"event_id": event_id, "seat_ids": seats, "quantity": quantity, "expired_at_ms": t});
                        if !send(out_tx.clone(), sse_json("expired", None, &body)).await {
                            return;
                        }
                    }
                }
            }
        }
    });
    let stream = futures::stream::poll_fn(move |cx| out_rx.poll_recv(cx).map(|o| o.map(Ok)));
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// Keeps a stream's expiry timers in step with a change.
fn track(
    timers: &mut BTreeMap<u64, Vec<(String, Vec<u32>, u32)>>,
    held_until: &mut BTreeMap<String, u64>,
    c: &SeatChange,
) {
    let keys: Vec<(String, Vec<u32>)> = if c.seat_ids.is_empty() {
        vec![(format!("hold:{}", c.hold_id), vec![])]
    } else {
        c.seat_ids
            .iter()
            .map(|s| (format!("seat:{s}"), vec![*s]))
            .collect()
    };
    for (key, seats) in keys {
        match (c.kind, c.expires_at_ms) {
            ("held", Some(exp)) => {
                let qty = if seats.is_empty() { c.quantity } else { 1 };
                timers
                    .entry(exp)
                    .or_default()
                    .push((key.clone(), seats, qty));
                held_until.insert(key, exp);
            }
            _ => {
                held_until.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod position_tests {
    use super::*;

    #[test]
    fn positions_order_changes_by_entry_then_within_it() {
        let max = boxoffice_raft::command::BATCH_REQUESTS_MAX as u32;
        for index in [0u64, 1, 7, 1 << 40] {
            let mut last = None;
            for pos in [0, 1, 2, max - 1, max] {
                let p = position(index, pos);
                assert!(last.is_none_or(|l| l < p), "index {index} pos {pos}");
                assert!(p < position_after(index));
                assert!(position_after(index) < position(index + 1, 0));
                last = Some(p);
            }
        }
        // A snapshot taken at index i resumes after every change of entry i.
        assert!(position(5, 3) <= position_after(5));
    }
}
