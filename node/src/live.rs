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
//!
//! Streams that start from the same applied state of an event share one
//! serialized snapshot (the feed keeps the last few, by event and applied
//! index): a crowd opening the seat map of a hot on-sale at once costs one
//! seat-map read and serialization per state, not one per viewer. Events are
//! written as SSE frames of shared bytes.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::response::IntoResponse;
use boxoffice_api::{
    ProblemCode, SeatChange, SeatChangeKind, SeatStatus, SeatsExpired, StreamError,
    StreamEventKind, StreamReset, StreamSnapshot,
};
use boxoffice_raft::command::{Effect, Outcome, PaymentEffect};
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

/// Low bits of a stream id that hold the position; the shard is above them, so
/// that an id from another shard's stream is never read as a position here.
pub const STREAM_ID_POSITION_BITS: u32 = 48;
const POSITION_MASK: u64 = (1 << STREAM_ID_POSITION_BITS) - 1;

/// The SSE event id of `position` in `group`'s feed: `shard << 48 | position`
/// (positions reach 2^48 after 2^38 log entries of one shard, centuries of
/// entries; past that they stay at the last one).
pub fn stream_id(group: GroupId, position: u64) -> u64 {
    (u64::from(group.0) << STREAM_ID_POSITION_BITS) | position.min(POSITION_MASK)
}

/// The position in `group`'s feed a client's `Last-Event-ID` names, if it
/// was sent by a stream of `group` (not another shard's, nor an id of the
/// format before shards were part of it).
pub fn position_of(group: GroupId, id: u64) -> Option<u64> {
    (id >> STREAM_ID_POSITION_BITS == u64::from(group.0)).then_some(id & POSITION_MASK)
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
        Effect::Payment(PaymentEffect::CheckoutStarted {
            hold_id,
            event_id,
            seat_ids,
            quantity,
            expires_at_ms,
            ..
        }) => Some(SeatChange {
            index,
            time_ms,
            event_id: *event_id,
            kind: SeatChangeKind::Extended,
            hold_id: hold_id.to_string(),
            seat_ids: seat_ids.clone(),
            quantity: *quantity,
            expires_at_ms: Some(*expires_at_ms),
        }),
        Effect::Payment(PaymentEffect::Booked { booking: b, .. }) => Some(SeatChange {
            index,
            time_ms,
            event_id: b.event_id,
            kind: SeatChangeKind::Sold,
            hold_id: b.hold_id.to_string(),
            seat_ids: b.seat_ids.clone(),
            quantity: b.quantity,
            expires_at_ms: None,
        }),
        Effect::Payment(PaymentEffect::BookingCancelled {
            booking_id,
            event_id,
            seat_ids,
            quantity,
            ..
        }) => Some(SeatChange {
            index,
            time_ms,
            event_id: *event_id,
            kind: SeatChangeKind::Released,
            hold_id: booking_id.to_string(),
            seat_ids: seat_ids.clone(),
            quantity: *quantity,
            expires_at_ms: None,
        }),
        // The others move no seat: a reopened hold keeps its seats and expiry,
        // a closed one had expired, and refunds are about money.
        Effect::Payment(
            PaymentEffect::HoldReopened { .. }
            | PaymentEffect::HoldClosed { .. }
            | PaymentEffect::RefundRequired { .. }
            | PaymentEffect::RefundUpdated { .. }
            | PaymentEffect::Unchanged { .. },
        )
        | Effect::Webhooks(_)
        | Effect::Queue(_)
        | Effect::PlacementSet { .. }
        | Effect::Released { .. }
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
    /// Serialized snapshots by event: (applied index, frame).
    snapshots: Mutex<std::collections::HashMap<u64, (u64, Arc<SnapshotFrame>)>>,
    /// Snapshots serialized so far (each shared by the streams of its state).
    snapshots_serialized: std::sync::atomic::AtomicU64,
}

/// A stream's first event, as every stream starting from that state sends it.
struct SnapshotFrame {
    /// The SSE frame.
    bytes: Bytes,
    /// The stream position just past it.
    position: u64,
    /// Held seats and their expiry, for the stream's timers.
    held: Vec<(u32, u64)>,
}

/// Events whose last snapshot a feed keeps (emptied when full).
const SNAPSHOTS_KEPT_MAX: usize = 256;

/// Time without an event after which a stream sends a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

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
            snapshots: Mutex::new(Default::default()),
            snapshots_serialized: std::sync::atomic::AtomicU64::new(0),
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

    /// Snapshots serialized so far by this feed.
    pub fn snapshots_serialized(&self) -> u64 {
        self.snapshots_serialized
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The snapshot frame of `event_id` as `tx` reads it, serialized once per
    /// applied state; `None` if the event is unknown there.
    fn snapshot(
        &self,
        tx: &boxoffice_storage::read::ReadTx<'_>,
        group: GroupId,
        event_id: u64,
    ) -> Option<Arc<SnapshotFrame>> {
        let index = tx.freshness.applied_index;
        {
            let kept = self.snapshots.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((i, frame)) = kept.get(&event_id) {
                if *i == index {
                    return Some(frame.clone());
                }
            }
        }
        let map = crate::api::seats::seat_map(tx, group, event_id, None)?;
        let position = position_after(index);
        let held = map
            .seats
            .iter()
            .filter_map(|s| match (s.status, s.held_until_ms) {
                (SeatStatus::Held, Some(until)) => Some((s.seat_id, until)),
                _ => None,
            })
            .collect();
        let body = StreamSnapshot {
            shard: group.0,
            freshness: map.freshness,
            seat_map: map,
        };
        let frame = Arc::new(SnapshotFrame {
            bytes: sse_json(
                StreamEventKind::Snapshot,
                Some(stream_id(group, position)),
                &body,
            ),
            position,
            held,
        });
        self.snapshots_serialized
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut kept = self.snapshots.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() >= SNAPSHOTS_KEPT_MAX && !kept.contains_key(&event_id) {
            kept.clear();
        }
        // A newer state wins; an older one (a slower reader) does not replace it.
        if kept.get(&event_id).is_none_or(|(i, _)| *i < index) {
            kept.insert(event_id, (index, frame.clone()));
        }
        Some(frame)
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

/// One SSE frame: `event:`, `id:` if any, and the value as one `data:` line
/// (compact JSON has no raw newline).
pub(crate) fn sse_json<T: Serialize>(kind: StreamEventKind, id: Option<u64>, value: &T) -> Bytes {
    use std::io::Write;
    let mut out = Vec::with_capacity(256);
    let _ = write!(out, "event: {}\n", kind.as_str());
    if let Some(i) = id {
        let _ = write!(out, "id: {i}\n");
    }
    out.extend_from_slice(b"data: ");
    let data_at = out.len();
    if serde_json::to_writer(&mut out, value).is_err() {
        // Our own API types always serialize; an empty object rather than a
        // broken frame all the same.
        out.truncate(data_at);
        out.extend_from_slice(b"{}");
    }
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// A `reset` event: the node ends the stream, saying why.
fn reset(reason: &str) -> Bytes {
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
    /// Streams the node ended, by reason (`boxoffice_streams_dropped_total`).
    pub dropped: prometheus::IntCounterVec,
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
) -> axum::response::Response {
    let (out_tx, out_rx) = tokio::sync::mpsc::channel::<Bytes>(queue_max.max(1));
    // Queues an event for the consumer; false when it is gone or has taken nothing
    // for `send_timeout` (stalled: drop it rather than hold its slot and memory).
    let dropped = permit.dropped.clone();
    let stalled = dropped.with_label_values(&["stalled"]);
    let send = move |tx: tokio::sync::mpsc::Sender<Bytes>, e: Bytes| {
        let stalled = stalled.clone();
        async move {
            match tokio::time::timeout(send_timeout, tx.send(e)).await {
                Ok(Ok(())) => true,
                Ok(Err(_)) => false,
                Err(_) => {
                    stalled.inc();
                    // Best effort: tell it why, should it ever read again.
                    let _ = tx.try_send(reset("consumer stalled; reconnect with Last-Event-ID"));
                    false
                }
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
                    let e = sse_json(
                        StreamEventKind::Change,
                        Some(stream_id(group, *position)),
                        change,
                    );
                    if !send(out_tx.clone(), e).await {
                        return;
                    }
                }
            }
            None => {
                let tx = reader.begin_applied();
                let Some(frame) = feed.snapshot(&tx, group, event_id) else {
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
                drop(tx);
                last_sent = frame.position;
                for &(seat_id, until) in &frame.held {
                    let key = format!("seat:{seat_id}");
                    timers
                        .entry(until)
                        .or_default()
                        .push((key.clone(), vec![seat_id], 1));
                    held_until.insert(key, until);
                }
                if !send(out_tx.clone(), frame.bytes.clone()).await {
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
                                dropped.with_label_values(&["snapshot"]).inc();
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
                        let e = sse_json(StreamEventKind::Change, Some(stream_id(group, position)), change);
                        if !send(out_tx.clone(), e).await {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Best effort: a stalled consumer's queue is full, and waiting
                        // for it is what this drop avoids.
                        dropped.with_label_values(&["slow"]).inc();
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
    // The body: the queued frames, and a keep-alive comment after KEEP_ALIVE
    // without one (so proxies and clients can tell a quiet stream from a dead one).
    sse_response(out_rx)
}

/// The SSE answer that sends what `out_rx` receives, with a keep-alive comment
/// whenever the stream has been quiet for `KEEP_ALIVE`.
pub(crate) fn sse_response(
    mut out_rx: tokio::sync::mpsc::Receiver<Bytes>,
) -> axum::response::Response {
    let mut idle = Box::pin(tokio::time::sleep(KEEP_ALIVE));
    let body = futures::stream::poll_fn(move |cx| {
        use std::future::Future;
        use std::task::Poll;
        match out_rx.poll_recv(cx) {
            Poll::Ready(Some(frame)) => {
                idle.as_mut()
                    .reset(tokio::time::Instant::now() + KEEP_ALIVE);
                Poll::Ready(Some(Ok::<_, Infallible>(frame)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match idle.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    idle.as_mut()
                        .reset(tokio::time::Instant::now() + KEEP_ALIVE);
                    Poll::Ready(Some(Ok(Bytes::from_static(b":\n\n"))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    });
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/event-stream"),
            (axum::http::header::CACHE_CONTROL, "no-cache"),
        ],
        axum::body::Body::from_stream(body),
    )
        .into_response()
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
            // An extension is a new expiry for the same hold: the timer at the
            // old one no longer matches `held_until` and fires for nothing.
            (SeatChangeKind::Held | SeatChangeKind::Extended, Some(exp)) => {
                let qty = if seats.is_empty() { c.quantity } else { 1 };
                timers
                    .entry(exp)
                    .or_default()
                    .push((key.clone(), seats, qty));
                held_until.insert(key, exp);
            }
            // Sold or released (or a hold without an expiry, which apply never
            // makes): no timer of this stream stands for the seat any more.
            (SeatChangeKind::Held | SeatChangeKind::Extended, None)
            | (SeatChangeKind::Sold | SeatChangeKind::Released, _) => {
                held_until.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod position_tests {
    use super::*;

    #[test]
    fn stream_ids_carry_their_shard() {
        let (g3, g4) = (GroupId(3), GroupId(4));
        for p in [0, 1, position(7, 2), position_after(1 << 30)] {
            assert_eq!(position_of(g3, stream_id(g3, p)), Some(p));
            assert_eq!(position_of(g4, stream_id(g3, p)), None);
        }
        // An id of the format without the shard (a bare position) is no one's.
        assert_eq!(position_of(g3, position(7, 2)), None);
        assert!(stream_id(g3, position(7, 2)) < stream_id(g3, position(8, 0)));
    }

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
