//! The virtual waiting room (feature level 3).
//!
//! A join costs one small record and no session: its ticket is the number of
//! joins before it. Positions are derived, never stored: once the sale has
//! started, the `P` users who joined before it (the pre-queue) are at positions
//! `1 + shuffle(seed, P, ticket)` (or `1 + ticket` in FIFO order), everyone
//! after at `1 + ticket`. Admission is a watermark: positions up to it are
//! admitted. The leader's tick ([`tick`]) moves it at the queue's rate, never
//! past `active_max` open sessions, and records one batch (first and last
//! position, time) per tick that admitted anyone. A session ends by time
//! (`session_ttl_ms` after its batch) or with a booking ([`session_finished`]),
//! and either frees its slot.

use boxoffice_raft::command::*;
use boxoffice_raft::GroupId;

use super::inventory::inventory_key;
use super::{get, invalid, put};
use crate::keys::{table, Key};
use crate::kv::{Kv, KvRead};
use crate::records::*;

/// One admitted user, in units of [`Queue::credit`] (user-ms a minute).
const CREDIT_PER_USER: u64 = 60_000;
/// Most admission credit a queue banks, in ms of its rate (and at least one
/// user's worth): a tick after a long gap (a leader change, a stalled leader)
/// admits at most this much at once.
pub const QUEUE_CREDIT_MAX_MS: u64 = 5_000;

/// Key of an event's queue.
pub(crate) fn queue_key(group: GroupId, event_id: u64) -> Vec<u8> {
    Key::sm(group, table::QUEUE).u64(event_id).build()
}

/// Key of a user's place in an event's queue.
pub(crate) fn join_key(group: GroupId, event_id: u64, user: &str) -> Vec<u8> {
    Key::sm(group, table::QUEUE_JOIN)
        .u64(event_id)
        .str(user)
        .build()
}

fn batch_key(group: GroupId, event_id: u64, last: u64) -> Vec<u8> {
    Key::sm(group, table::QUEUE_BATCH)
        .u64(event_id)
        .u64(last)
        .build()
}

/// The batch that admitted `position` (its last position and the batch), if one did.
pub(crate) fn batch_of(
    kv: &dyn KvRead,
    group: GroupId,
    event_id: u64,
    position: u64,
) -> Option<(u64, AdmissionBatch)> {
    let start = batch_key(group, event_id, position);
    let end = batch_key(group, event_id, u64::MAX);
    let mut found = None;
    kv.scan_range(&start, &end, &mut |k, v| {
        let last = u64::from_be_bytes(k[k.len() - 8..].try_into().expect("8-byte suffix"));
        let batch: AdmissionBatch = boxoffice_raft::codec::decode(v)
            .unwrap_or_else(|e| panic!("admission batch at {k:?} is unreadable: {e}"));
        found = Some((last, batch));
        false
    });
    found.filter(|(_, b)| b.first <= position)
}

/// `ticket`'s place in a shuffle of `0..n` drawn from `seed`: a Feistel
/// network over the smallest even number of bits that covers `n`, walked until
/// it lands inside `0..n` (a bijection of `0..n`, so every replica, and every
/// later build, derives the same order; `storage/tests/queue.rs` pins it).
pub fn shuffled(seed: u64, n: u64, ticket: u64) -> u64 {
    assert!(ticket < n, "ticket {ticket} outside a pre-queue of {n}");
    let bits = (64 - (n - 1).leading_zeros()).max(2);
    let half = bits.div_ceil(2);
    let mask = (1u64 << half) - 1;
    let round = |x: u64| {
        let (mut l, mut r) = (x >> half, x & mask);
        for i in 0u8..4 {
            let mut input = [0u8; 9];
            input[0] = i;
            input[1..].copy_from_slice(&r.to_le_bytes());
            let f = xxhash_rust::xxh3::xxh3_64_with_seed(&input, seed) & mask;
            (l, r) = (r, l ^ f);
        }
        (l << half) | r
    };
    let mut x = ticket;
    loop {
        x = round(x);
        if x < n {
            return x;
        }
    }
}

/// The position of `ticket` (1 is the front), if it is fixed yet: a pre-queue
/// place in a shuffled queue has none until the sale starts.
pub fn position(q: &Queue, ticket: u64) -> Option<u64> {
    match q.prequeue {
        Some(p) if ticket < p && q.spec.order == QueueOrder::RandomPrequeue => {
            Some(1 + shuffled(q.seed, p, ticket))
        }
        Some(_) => Some(1 + ticket),
        None if q.spec.order == QueueOrder::Fifo => Some(1 + ticket),
        None => None,
    }
}

/// Where a user stands in a queue (what `queue/me` shows, and what a hold checks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Waiting; `position` is `None` while the pre-queue is not yet shuffled.
    Waiting {
        /// Their position, once fixed.
        position: Option<u64>,
    },
    /// Admitted, with an open session.
    Admitted {
        /// Their position.
        position: u64,
        /// When the batch that admitted them was admitted.
        admitted_at_ms: u64,
        /// When the session ends by time.
        session_ends_at_ms: u64,
    },
    /// Their session ended by time without a booking.
    Expired {
        /// Their position.
        position: u64,
        /// When they were admitted.
        admitted_at_ms: u64,
        /// When the session ended.
        ended_at_ms: u64,
    },
    /// Their session ended with a booking.
    Finished {
        /// Their position.
        position: u64,
        /// When they were admitted.
        admitted_at_ms: u64,
        /// When they booked.
        finished_at_ms: u64,
    },
}

/// Where `join` stands in `q` at state-machine time `time`.
pub fn standing(
    kv: &dyn KvRead,
    group: GroupId,
    event_id: u64,
    q: &Queue,
    join: &QueueJoin,
    time: u64,
) -> Standing {
    let Some(pos) = position(q, join.ticket) else {
        return Standing::Waiting { position: None };
    };
    if pos > q.watermark {
        return Standing::Waiting {
            position: Some(pos),
        };
    }
    let (_, batch) = batch_of(kv, group, event_id, pos).unwrap_or_else(|| {
        panic!("position {pos} of event {event_id} is admitted and no batch admitted it")
    });
    let ends = batch.admitted_at_ms.saturating_add(q.spec.session_ttl_ms);
    if let Some(at) = join.finished_at_ms {
        return Standing::Finished {
            position: pos,
            admitted_at_ms: batch.admitted_at_ms,
            finished_at_ms: at,
        };
    }
    if ends <= time {
        return Standing::Expired {
            position: pos,
            admitted_at_ms: batch.admitted_at_ms,
            ended_at_ms: ends,
        };
    }
    Standing::Admitted {
        position: pos,
        admitted_at_ms: batch.admitted_at_ms,
        session_ends_at_ms: ends,
    }
}

fn load(kv: &dyn KvRead, group: GroupId, event_id: u64) -> Result<Queue, Rejection> {
    get::<Queue>(kv, &queue_key(group, event_id)).ok_or(Rejection::NoQueue { event_id })
}

/// The sale starts at the first entry at or after `sale_starts_at_ms`: the
/// pre-queue is closed with the joins it has, and admission credit is earned
/// from the start's time on.
fn start_if_due(q: &mut Queue, time: u64) {
    if q.prequeue.is_none() && time >= q.spec.sale_starts_at_ms {
        q.prequeue = Some(q.joined);
        q.last_tick_ms = q.spec.sale_starts_at_ms;
        q.credit = 0;
    }
}

/// Creates or changes an event's queue.
pub(super) fn set_queue(
    kv: &mut dyn Kv,
    group: GroupId,
    time: u64,
    event_id: u64,
    spec: &QueueSpec,
    seed: u64,
) -> Result<Effect, Rejection> {
    spec.validate().map_err(invalid)?;
    if kv.get(&inventory_key(group, event_id)).is_none() {
        return Err(Rejection::UnknownEvent { event_id });
    }
    let q = match get::<Queue>(kv, &queue_key(group, event_id)) {
        Some(mut q) => {
            if q.prequeue.is_some()
                && (spec.sale_starts_at_ms != q.spec.sale_starts_at_ms
                    || spec.order != q.spec.order)
            {
                return Err(invalid(
                    "the sale has started: its start and the queue's order are fixed",
                ));
            }
            q.spec = spec.clone();
            q
        }
        None => Queue {
            spec: spec.clone(),
            seed,
            status: QueueStatus::Running,
            joined: 0,
            prequeue: None,
            watermark: 0,
            active: 0,
            credit: 0,
            last_tick_ms: time,
            expired_through: 0,
            finished: 0,
            no_shows: 0,
            rate_samples: Vec::new(),
        },
    };
    put(kv, queue_key(group, event_id), &q);
    Ok(Effect::Queue(QueueEffect::Configured { event_id }))
}

/// An admin's pause, resume, close or open.
pub(super) fn control(
    kv: &mut dyn Kv,
    group: GroupId,
    time: u64,
    event_id: u64,
    action: QueueAction,
) -> Result<Effect, Rejection> {
    let mut q = load(kv, group, event_id)?;
    start_if_due(&mut q, time);
    let to = match action {
        QueueAction::Pause => QueueStatus::Paused,
        QueueAction::Resume => QueueStatus::Running,
        QueueAction::Close => QueueStatus::Closed,
        QueueAction::Open => QueueStatus::Open,
    };
    if q.status == QueueStatus::Open && to != QueueStatus::Open {
        return Err(invalid("the queue has ended (opened); it cannot run again"));
    }
    if q.status != to || q.prequeue.is_some() {
        q.status = to;
        // Credit is earned only while running: nobody is owed the pause.
        q.credit = 0;
        q.last_tick_ms = time;
        put(kv, queue_key(group, event_id), &q);
    }
    Ok(Effect::Queue(QueueEffect::Controlled {
        event_id,
        status: q.status,
    }))
}

/// A user joins, or is told the place they hold.
pub(super) fn join(
    kv: &mut dyn Kv,
    group: GroupId,
    time: u64,
    event_id: u64,
    user: &str,
) -> Result<Effect, Rejection> {
    if user.is_empty() || user.len() > CLIENT_ID_LEN_MAX {
        return Err(invalid("user id must be 1..=128 bytes"));
    }
    let mut q = load(kv, group, event_id)?;
    let key = join_key(group, event_id, user);
    if let Some(j) = get::<QueueJoin>(kv, &key) {
        return Ok(Effect::Queue(QueueEffect::Joined {
            event_id,
            ticket: j.ticket,
            joined_at_ms: j.joined_at_ms,
            new: false,
        }));
    }
    match q.status {
        QueueStatus::Closed | QueueStatus::Open => return Err(Rejection::QueueClosed),
        QueueStatus::Running | QueueStatus::Paused => {}
    }
    if time < q.spec.prequeue_opens_at_ms {
        return Err(Rejection::QueueNotOpen {
            opens_at_ms: q.spec.prequeue_opens_at_ms,
        });
    }
    if q.joined >= QUEUE_JOINS_MAX {
        return Err(Rejection::QueueFull {
            max: QUEUE_JOINS_MAX,
        });
    }
    start_if_due(&mut q, time);
    let ticket = q.joined;
    q.joined += 1;
    put(
        kv,
        key,
        &QueueJoin {
            ticket,
            joined_at_ms: time,
            finished_at_ms: None,
        },
    );
    put(kv, queue_key(group, event_id), &q);
    Ok(Effect::Queue(QueueEffect::Joined {
        event_id,
        ticket,
        joined_at_ms: time,
        new: true,
    }))
}

/// The leader's tick: ends the sessions whose time is up, then admits at the
/// queue's rate within `active_max`.
pub(super) fn tick(
    kv: &mut dyn Kv,
    group: GroupId,
    time: u64,
    event_id: u64,
) -> Result<Effect, Rejection> {
    let mut q = load(kv, group, event_id)?;
    if q.status == QueueStatus::Open {
        return Ok(Effect::Queue(QueueEffect::Ticked {
            event_id,
            watermark: q.watermark,
            admitted: 0,
            expired: 0,
        }));
    }
    start_if_due(&mut q, time);
    // Sessions that ended by time, oldest batch first.
    let mut ended = Vec::new();
    {
        let start = batch_key(group, event_id, q.expired_through.saturating_add(1));
        let end = batch_key(group, event_id, u64::MAX);
        let ttl = q.spec.session_ttl_ms;
        kv.scan_range(&start, &end, &mut |k, v| {
            let last = u64::from_be_bytes(k[k.len() - 8..].try_into().expect("8-byte suffix"));
            let b: AdmissionBatch = boxoffice_raft::codec::decode(v)
                .unwrap_or_else(|e| panic!("admission batch at {k:?} is unreadable: {e}"));
            if b.admitted_at_ms.saturating_add(ttl) > time {
                return false;
            }
            ended.push((last, b));
            ended.len() < QUEUE_EXPIRE_PER_TICK_MAX
        });
    }
    let mut expired = 0;
    for (last, b) in &ended {
        let size = last - b.first + 1;
        let open = size
            .checked_sub(b.finished)
            .unwrap_or_else(|| panic!("batch ending at {last} has more finished than admitted"));
        q.active = q
            .active
            .checked_sub(open)
            .unwrap_or_else(|| panic!("queue of event {event_id}: fewer active than open"));
        q.no_shows += open;
        q.expired_through = *last;
        expired += open;
    }
    // Admissions.
    let elapsed = time.saturating_sub(q.last_tick_ms);
    q.last_tick_ms = time;
    let mut admitted = 0;
    if q.status == QueueStatus::Running && q.prequeue.is_some() {
        let rate = u64::from(q.spec.admit_per_minute);
        // At least one user's worth, or a slow queue would never admit anyone.
        let cap = (rate * QUEUE_CREDIT_MAX_MS).max(CREDIT_PER_USER);
        q.credit = q
            .credit
            .saturating_add(rate.saturating_mul(elapsed))
            .min(cap);
        let earned = q.credit / CREDIT_PER_USER;
        let slots = u64::from(q.spec.active_max).saturating_sub(q.active);
        let waiting = q.joined - q.watermark;
        admitted = earned.min(slots).min(waiting).min(QUEUE_ADMIT_PER_TICK_MAX);
        q.credit -= admitted * CREDIT_PER_USER;
        if admitted < earned {
            // Nobody to take it, or no slot: credit is not banked for later.
            q.credit %= CREDIT_PER_USER;
        }
        if admitted > 0 {
            let first = q.watermark + 1;
            q.watermark += admitted;
            q.active += admitted;
            put(
                kv,
                batch_key(group, event_id, q.watermark),
                &AdmissionBatch {
                    first,
                    admitted_at_ms: time,
                    finished: 0,
                },
            );
        }
    }
    if q.prequeue.is_some()
        && q.rate_samples
            .last()
            .is_none_or(|&(t, _)| time >= t + QUEUE_RATE_SAMPLE_MS)
    {
        q.rate_samples.push((time, q.watermark));
        let horizon = time.saturating_sub(QUEUE_RATE_WINDOW_MS);
        while q.rate_samples.len() > QUEUE_RATE_SAMPLES_MAX
            || (q.rate_samples.len() > 2 && q.rate_samples[1].0 <= horizon)
        {
            q.rate_samples.remove(0);
        }
    }
    put(kv, queue_key(group, event_id), &q);
    Ok(Effect::Queue(QueueEffect::Ticked {
        event_id,
        watermark: q.watermark,
        admitted,
        expired,
    }))
}

/// Checks that `user` may hold on `event_id`: always when the event has no
/// queue or its queue has ended; otherwise only with the admission of an open
/// session (`ticket`, from the admission the node verified).
pub(super) fn check_hold(
    kv: &dyn KvRead,
    group: GroupId,
    time: u64,
    event_id: u64,
    user: &str,
    ticket: Option<u64>,
) -> Result<(), Rejection> {
    let Some(q) = get::<Queue>(kv, &queue_key(group, event_id)) else {
        return Ok(());
    };
    if q.status == QueueStatus::Open {
        return Ok(());
    }
    let refuse = |reason: &str| {
        Err(Rejection::QueueAdmissionRequired {
            reason: reason.to_string(),
        })
    };
    let Some(ticket) = ticket else {
        return refuse("no admission was given");
    };
    let Some(join) = get::<QueueJoin>(kv, &join_key(group, event_id, user)) else {
        return refuse("you are not in this event's queue");
    };
    if join.ticket != ticket {
        return refuse("the admission is for another place in the queue");
    }
    match standing(kv, group, event_id, &q, &join, time) {
        Standing::Admitted { .. } => Ok(()),
        Standing::Waiting { .. } => refuse("you have not been admitted yet"),
        Standing::Expired { .. } => refuse("your admitted session has ended"),
        Standing::Finished { .. } => refuse("your admitted session ended with a booking"),
    }
}

/// A booking by `user` on `event_id` ends their admitted session, if they had
/// one open: its slot goes to the next person.
pub(super) fn session_finished(
    kv: &mut dyn Kv,
    group: GroupId,
    time: u64,
    event_id: u64,
    user: &str,
) {
    let Some(mut q) = get::<Queue>(kv, &queue_key(group, event_id)) else {
        return;
    };
    let key = join_key(group, event_id, user);
    let Some(mut join) = get::<QueueJoin>(kv, &key) else {
        return;
    };
    let Standing::Admitted { position, .. } = standing(kv, group, event_id, &q, &join, time) else {
        return;
    };
    let (last, mut batch) =
        batch_of(kv, group, event_id, position).expect("an admitted position has its batch");
    join.finished_at_ms = Some(time);
    batch.finished += 1;
    q.active = q
        .active
        .checked_sub(1)
        .unwrap_or_else(|| panic!("queue of event {event_id}: an open session and none active"));
    q.finished += 1;
    put(kv, key, &join);
    put(kv, batch_key(group, event_id, last), &batch);
    put(kv, queue_key(group, event_id), &q);
}
