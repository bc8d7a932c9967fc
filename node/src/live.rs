//! Live seat maps: applied seat changes per shard, replayable for a while, and the
//! Server-Sent Events stream `GET /v1/events/{id}/seats/stream`.
//!
//! A feed task per shard turns the shard's applied outcomes into [`SeatChange`]s and
//! keeps the last `limits.sse_replay_max` of them. Event ids are stream positions:
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
use boxoffice_api::{
    ProblemCode, SeatChange, SeatChangeKind, SeatStatus, SeatsExpired, StreamError,
    StreamEventKind, StreamReset, StreamSnapshot,
};
use boxoffice_raft::command::{Effect, Outcome};
use boxoffice_raft::GroupId;
use boxoffice_storage::read::Reader;
use boxoffice_storage::state_machine::StateMachineStore;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::node::now_ms;

/// Stream positions per log entry: room for a full batch of requests. Part of the
/// stream-id format clients resume with, so a constant.
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

/// One item of a shard's feed: a seat change at its stream position, or the
/// news that the replica installed a snapshot (every stream must start over).
#[derive(Clone, Debug)]
pub enum FeedItem {
    /// A change, at its stream position (the SSE event id, see [`position`]).
    Change {
        /// Stream position.
        position: u64,
        /// The change.
        change: SeatChange,
    },
    /// The state was replaced up to `position`: nothing before it is replayable.
    Reset {
        /// The position just past the installed snapshot.
        position: u64,
    },
}

impl FeedItem {
    /// Its stream position.
    pub fn position(&self) -> u64 {
        match self {
            FeedItem::Change { position, .. } | FeedItem::Reset { position } => *position,
        }
    }
}

/// The seat change an applied outcome makes, if any. Every effect is named: a
/// new one must say whether it changes seats.
fn seat_change(index: u64, outcome: &Outcome) -> Option<SeatChange> {
    let time_ms = outcome.applied.time_ms;
    let effect = outcome.result.as_ref().ok()?;
    match effect {
        Effect::Held(h) => Some(SeatChange {
            index,
            time_ms,
            event_id: h.event_id,
            kind: SeatChangeKind::Held,
            hold_id: h.hold_id.to_string(),
            seat_ids: h.seat_ids.clone(),
            quantity: h.quantity,
            expires_at_ms: Some(h.expires_at_ms),
        }),
        Effect::Confirmed(b) => Some(SeatChange {
            index,
            time_ms,
            event_id: b.event_id,
            kind: SeatChangeKind::Sold,
            hold_id: b.hold_id.to_string(),
            seat_ids: b.seat_ids.clone(),
            quantity: b.quantity,
            expires_at_ms: None,
        }),
        // An expired hold's release frees nothing (its seats were free already).
        Effect::Released {
            hold_id,
            event_id,
            seat_ids,
            quantity,
        } if *quantity > 0 => Some(SeatChange {
            index,
            time_ms,
            event_id: *event_id,
            kind: SeatChangeKind::Released,
            hold_id: hold_id.to_string(),
            seat_ids: seat_ids.clone(),
            quantity: *quantity,
            expires_at_ms: None,
        }),
        Effect::Released { .. }
        | Effect::Nothing
        | Effect::VenueCreated { .. }
        | Effect::PerformerCreated { .. }
        | Effect::EventCreated { .. }
        | Effect::InventoryCreated { .. }
        | Effect::EventsCreated { .. }
        | Effect::EventUpdated { .. }
        | Effect::InventoriesCreated { .. }
        // The state machine's change stream splits a batch into its requests.
        | Effect::Batch(_) => None,
    }
}

struct Ring {
    /// Highest position whose changes are not all in `changes` (replay only after it).
    floor: u64,
    changes: VecDeque<Arc<FeedItem>>,
}

/// The seat-change feed of one shard on this node.
pub struct Feed {
    ring: Mutex<Ring>,
    tx: broadcast::Sender<Arc<FeedItem>>,
    /// The last position of the last entry the feed has seen: a `Last-Event-ID`
    /// past it was not sent by this replica (it comes from a replica further
    /// ahead, or is made up), and gets a fresh snapshot rather than silence.
    head: std::sync::atomic::AtomicU64,
}

impl Feed {
    /// Starts the feed of a shard's state machine.
    /// `lag_max` is how far a subscriber may fall behind (`limits.sse_lag_max`).
    pub fn start(sm: StateMachineStore, limits: &crate::config::Limits) -> Arc<Feed> {
        let mut changes = sm.changes();
        let start = position_after(sm.applied().borrow().index);
        let (tx, _) = broadcast::channel(limits.sse_lag_max.max(1));
        let replay_max = limits.sse_replay_max.max(1);
        let feed = Arc::new(Feed {
            ring: Mutex::new(Ring {
                floor: start,
                changes: VecDeque::new(),
            }),
            tx,
            head: std::sync::atomic::AtomicU64::new(start),
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
                f.head.fetch_max(
                    position_after(c.index),
                    std::sync::atomic::Ordering::Relaxed,
                );
                if c.snapshot_installed {
                    // The state jumped: nothing before it can be replayed, and every
                    // stream must start over from a snapshot.
                    {
                        let mut ring = f.ring.lock().unwrap_or_else(|e| e.into_inner());
                        ring.changes.clear();
                        ring.floor = position_after(c.index);
                    }
                    let _ = f.tx.send(Arc::new(FeedItem::Reset {
                        position: position_after(c.index),
                    }));
                    continue;
                }
                if c.outcome.replayed {
                    continue;
                }
                let change = seat_change(c.index, &c.outcome).map(|change| FeedItem::Change {
                    position: position(c.index, c.pos),
                    change,
                });
                let Some(change) = change else { continue };
                let change = Arc::new(change);
                {
                    let mut ring = f.ring.lock().unwrap_or_else(|e| e.into_inner());
                    if ring.changes.len() >= replay_max {
                        if let Some(old) = ring.changes.pop_front() {
                            ring.floor = old.position();
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
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<FeedItem>> {
        self.tx.subscribe()
    }

    /// Subscribes, and returns the changes after `after` if the ring covers them.
    fn subscribe_from(
        &self,
        after: Option<u64>,
    ) -> (
        broadcast::Receiver<Arc<FeedItem>>,
        Option<Vec<Arc<FeedItem>>>,
    ) {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        // Subscribing under the lock: nothing pushed after this is missed, nothing
        // before it is received live.
        let rx = self.tx.subscribe();
        let head = self.head.load(std::sync::atomic::Ordering::Relaxed);
        let replay = after.filter(|&a| a >= ring.floor && a <= head).map(|a| {
            ring.changes
                .iter()
                .filter(|c| c.position() > a)
                .cloned()
                .collect()
        });
        (rx, replay)
    }
}

fn sse_json<T: Serialize>(kind: StreamEventKind, id: Option<u64>, value: &T) -> Event {
    let kind = kind.as_str();
    let e = Event::default()
        .event(kind)
        .json_data(value)
        .unwrap_or_else(|_| Event::default().event(kind));
    match id {
        Some(i) => e.id(i.to_string()),
        None => e,
    }
}

/// A `reset` event: the node ends the stream, saying why.
fn reset(reason: &str) -> Event {
    sse_json(
        StreamEventKind::Reset,
        None,
        &StreamReset {
            reason: reason.into(),
        },
    )
}

/// The places a live stream holds while it runs: one of the node's, and one of
/// its client address's and its user's when those are limited.
pub struct StreamPermits {
    /// `limits.sse_streams_max`.
    pub node: tokio::sync::OwnedSemaphorePermit,
    /// `limits.sse_streams_per_address_max`.
    pub address: Option<crate::rate_limits::Slot<std::net::IpAddr>>,
    /// `limits.sse_streams_per_user_max`.
    pub user: Option<crate::rate_limits::Slot<String>>,
}

/// How often a quiet stream looks whether its consumer is still there.
const CONSUMER_CHECK: Duration = Duration::from_secs(1);

/// Builds the SSE stream for one event.
pub fn stream(
    feed: Arc<Feed>,
    reader: Reader,
    group: GroupId,
    event_id: u64,
    last_event_id: Option<u64>,
    permit: StreamPermits,
    send_timeout: Duration,
    queue_max: usize,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Event>(queue_max.max(1));
    // Queues an event for the consumer; false when it is gone or has taken nothing
    // for `send_timeout` (stalled: drop it rather than hold its slot and memory).
    let send = move |tx: tokio::sync::mpsc::Sender<Event>, e: Event| async move {
        match tokio::time::timeout(send_timeout, tx.send(e)).await {
            Ok(Ok(())) => true,
            Ok(Err(_)) => false,
            Err(_) => {
                // Best effort: tell it why, should it ever read again.
                let _ = tx.try_send(reset("consumer stalled; reconnect with Last-Event-ID"));
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
            Some(items) => {
                last_sent = last_event_id.unwrap_or(0);
                for item in items {
                    // The ring holds changes only (a reset empties it).
                    let FeedItem::Change { position, change } = &*item else {
                        continue;
                    };
                    if change.event_id != event_id {
                        continue;
                    }
                    track(&mut timers, &mut held_until, change);
                    last_sent = *position;
                    let e = sse_json(StreamEventKind::Change, Some(*position), change);
                    if !send(out_tx.clone(), e).await {
                        return;
                    }
                }
            }
            None => {
                let tx = reader.begin_applied();
                let Some(map) = crate::api::seats::seat_map(&tx, group, event_id, None) else {
                    let error = StreamError {
                        code: ProblemCode::UnknownEvent,
                        event_id,
                    };
                    let _ = send(
                        out_tx.clone(),
                        sse_json(StreamEventKind::Error, None, &error),
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
                let body = StreamSnapshot {
                    shard: group.0,
                    freshness: map.freshness,
                    seat_map: map,
                };
                let e = sse_json(StreamEventKind::Snapshot, Some(last_sent), &body);
                if !send(out_tx.clone(), e).await {
                    return;
                }
            }
        }
        loop {
            // The consumer is gone (it left, or its connection was closed for
            // not reading): give its places back, quiet event or not. Looked
            // at on every wake, which is at least every CONSUMER_CHECK.
            if out_tx.is_closed() {
                return;
            }
            let next_timer = timers.keys().next().copied();
            let sleep_ms = next_timer
                .map(|t| t.saturating_sub(now_ms()))
                .unwrap_or(u64::MAX)
                .min(CONSUMER_CHECK.as_millis() as u64);
            tokio::select! {
                r = rx.recv() => match r {
                    Ok(item) => {
                        let (position, change) = match &*item {
                            FeedItem::Reset { .. } => {
                                let _ = send(out_tx.clone(), reset("replica installed a snapshot; reconnect")).await;
                                return;
                            }
                            FeedItem::Change { position, change } => (*position, change),
                        };
                        if change.event_id != event_id || position <= last_sent {
                            continue;
                        }
                        track(&mut timers, &mut held_until, change);
                        last_sent = position;
                        let e = sse_json(StreamEventKind::Change, Some(position), change);
                        if !send(out_tx.clone(), e).await {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Best effort: a stalled consumer's queue is full, and waiting
                        // for it is what this drop avoids.
                        let _ = out_tx.try_send(reset("consumer too slow; reconnect with Last-Event-ID"));
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tokio::time::sleep(Duration::from_millis(sleep_ms)) => {
                    let Some(t) = next_timer.filter(|t| *t <= now_ms()) else { continue };
                    let due = timers.remove(&t).unwrap_or_default();
                    for (key, seats, quantity) in due {
                        // Still held by the hold that set this timer?
                        if held_until.get(&key) != Some(&t) {
                            continue;
                        }
                        held_until.remove(&key);
                        let body = SeatsExpired {
                            event_id,
                            seat_ids: seats,
                            quantity,
                            expired_at_ms: t,
                        };
                        if !send(out_tx.clone(), sse_json(StreamEventKind::Expired, None, &body)).await {
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
            (SeatChangeKind::Held, Some(exp)) => {
                let qty = if seats.is_empty() { c.quantity } else { 1 };
                timers
                    .entry(exp)
                    .or_default()
                    .push((key.clone(), seats, qty));
                held_until.insert(key, exp);
            }
            // Sold or released (or a hold without an expiry, which apply never
            // makes): no timer of this stream stands for the seat any more.
            (SeatChangeKind::Held, None) | (SeatChangeKind::Sold | SeatChangeKind::Released, _) => {
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
