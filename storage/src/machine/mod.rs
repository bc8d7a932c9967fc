//! The booking state machine: a pure function of (state, entry).
//!
//! No clock, no randomness, no unordered iteration. Time comes from the entry's
//! leader stamp: `time = max(stamp, last applied time)`, so state-machine time never
//! goes backwards. A hold is live while `time < expires_at_ms`; expiry needs no
//! sweeper because every check compares against the applying entry's time.
//!
//! Every command first checks, then writes: a rejection leaves the booking state
//! untouched (only bookkeeping such as the applied log id and the remembered answer
//! for the idempotency key are written).
//!
//! [`apply_entry`] is the one door. The concerns behind it:
//!
//! - [`features`]: the group's feature level, which switches replicated
//!   behaviour at one log index on every replica.
//! - [`sessions`]: exactly-once answers per (client, idempotency key), their
//!   pruning, and (from level 1) their bound per user.
//! - [`catalogue`]: venues, performers, events and the events' change feed.
//! - [`inventory`]: an event's inventory, counts, keys, and the settling of
//!   expired holds.
//! - [`holds`]: holds, confirms and releases.
//! - [`payments`]: checkout, the provider's word on payments, cancellation
//!   and refunds (feature level 2).
//! - [`outbox`]: the site's webhook endpoints, the events for them and their
//!   deliveries (feature level 2).
//! - [`queue`]: the virtual waiting room: joins, the leader's admission
//!   ticks, and the admission a hold needs while a queue is on (feature level 3).

use boxoffice_raft::codec;
use boxoffice_raft::command::*;
use boxoffice_raft::{Entry, GroupId, StoredMembership};
use openraft::EntryPayload;

use crate::keys::{table, Key};
use crate::kv::{Kv, KvRead};
use crate::records::*;
use sessions::{apply_request, prune_sessions};

mod catalogue;
mod features;
mod holds;
pub(crate) mod inventory;
pub(crate) mod outbox;
pub(crate) mod payments;
pub(crate) mod placement;
pub mod queue;
mod sessions;

pub use features::read_features;
pub(crate) use inventory::{due_expiry_range, hold_key, load_inventory};
pub use outbox::{DELIVERY_RETRY_BASE_MS, DELIVERY_RETRY_MAX_MS};
pub use payments::PROVIDER_EVENT_PRUNE_PER_ENTRY;
pub use sessions::{
    SESSION_PRUNE_PER_REQUEST, SESSION_REJECTED_TTL_MS, SESSION_TTL_MS, USER_SESSIONS_MAX,
};

/// Applies one log entry to the group's state and returns its outcome.
pub fn apply_entry(kv: &mut dyn Kv, group: GroupId, entry: &Entry) -> Outcome {
    let mut meta = read_meta(kv, group);
    let mut features = features::read_features(kv, group);
    assert!(
        features.level <= FEATURE_LEVEL_MAX,
        "group {group} is at feature level {}, and this build applies levels up to {FEATURE_LEVEL_MAX}",
        features.level
    );
    let features_before = features.clone();
    if let Some(prev) = meta.last_applied {
        assert!(
            entry.log_id.index > prev.index,
            "apply out of order: {} after {}",
            entry.log_id.index,
            prev.index
        );
    }
    meta.last_applied = Some(entry.log_id);
    let (result, replayed, applied) = match &entry.payload {
        EntryPayload::Blank => (Ok(Effect::Nothing), false, None),
        EntryPayload::Membership(m) => {
            meta.membership = StoredMembership::new(Some(entry.log_id), m.clone());
            (Ok(Effect::Nothing), false, None)
        }
        EntryPayload::Normal(Request {
            command: Command::Batch(requests),
            session: None,
            ..
        }) => {
            // Each request in turn, as if it had an entry of its own; the batch's
            // own stamp (the largest of theirs) adds nothing.
            let outcomes = requests
                .iter()
                .map(|req| {
                    advance_time(&mut meta, req);
                    apply_request(kv, group, &mut meta, &mut features, entry.log_id.index, req)
                })
                .collect();
            (Ok(Effect::Batch(outcomes)), false, None)
        }
        EntryPayload::Normal(req) => {
            advance_time(&mut meta, req);
            let out = apply_request(kv, group, &mut meta, &mut features, entry.log_id.index, req);
            (out.result, out.replayed, Some(out.applied))
        }
    };
    // Once per entry rather than per request: the scan is the costly part, and a
    // busy leader's entries carry dozens of requests.
    let requests = match &entry.payload {
        EntryPayload::Normal(Request {
            command: Command::Batch(requests),
            ..
        }) => requests.len(),
        EntryPayload::Normal(_) => 1,
        EntryPayload::Blank | EntryPayload::Membership(_) => 0,
    };
    if requests > 0 {
        prune_sessions(
            kv,
            group,
            &mut features,
            meta.time_ms,
            SESSION_PRUNE_PER_REQUEST * requests,
        );
        if features.level >= FEATURE_LEVEL_PAYMENTS {
            payments::prune_provider_events(
                kv,
                group,
                meta.time_ms,
                PROVIDER_EVENT_PRUNE_PER_ENTRY,
            );
        }
    }
    write_meta(kv, group, &meta);
    // Only a change is written: a group at level 0 keeps no record of it.
    if features != features_before {
        features::write_features(kv, group, &features);
    }
    Outcome {
        applied: applied.unwrap_or(Applied {
            index: entry.log_id.index,
            time_ms: meta.time_ms,
        }),
        replayed,
        result,
    }
}

/// State-machine time after `req`: `max(stamp, time)`, unless the stamp is past
/// [`STAMP_MS_MAX`] (no honest leader stamps that; the request is refused by
/// [`sessions::apply_request`] and time stays where it was).
fn advance_time(meta: &mut SmMeta, req: &Request) {
    if req.stamp_ms <= STAMP_MS_MAX {
        meta.time_ms = meta.time_ms.max(req.stamp_ms);
    }
}

/// Reads the group's bookkeeping record.
pub fn read_meta(kv: &dyn KvRead, group: GroupId) -> SmMeta {
    get(kv, &Key::sm(group, table::META).build()).unwrap_or_default()
}

pub(super) fn write_meta(kv: &mut dyn Kv, group: GroupId, meta: &SmMeta) {
    put(kv, Key::sm(group, table::META).build(), meta);
}

/// The record at `key`, decoded as the type its table holds.
pub(crate) fn get<T: codec::Versioned>(kv: &dyn KvRead, key: &[u8]) -> Option<T> {
    // A record that does not decode is corruption of our own data: crash rather
    // than apply on top of it.
    kv.get(key).map(|bytes| {
        codec::decode(&bytes)
            .unwrap_or_else(|e| panic!("corrupt state-machine record {key:?}: {e}"))
    })
}

/// Writes a record in its type's current version.
pub(super) fn put<T: codec::Versioned>(kv: &mut dyn Kv, key: Vec<u8>, value: &T) {
    kv.put(key, codec::encode(value));
}

pub(super) fn next_id(meta: &mut SmMeta) -> u64 {
    meta.last_id += 1;
    meta.last_id
}

pub(super) fn invalid(reason: impl Into<String>) -> Rejection {
    Rejection::InvalidInput {
        reason: reason.into(),
    }
}

/// Carries out one command at state-machine time `time`: checks, then writes.
pub(super) fn execute(
    kv: &mut dyn Kv,
    group: GroupId,
    meta: &mut SmMeta,
    features: &mut Features,
    time: u64,
    command: &Command,
) -> Result<Effect, Rejection> {
    if !command.is_any_group() && command.is_catalogue() != group.is_catalogue() {
        return Err(invalid(format!(
            "{} is not a command for {group}",
            command.name()
        )));
    }
    let needed = command.level_needed();
    if features.level < needed {
        return Err(Rejection::FeatureNotEnabled {
            needed,
            level: features.level,
        });
    }
    match command {
        // A batch is only ever the whole payload of an entry, without a session
        // (see `apply_entry`); anywhere else it is refused.
        Command::Batch(_) => Err(invalid(
            "a batch is a whole log entry of its own; it cannot be nested or carry a session",
        )),
        Command::CreateVenue(spec) => catalogue::create_venue(kv, group, meta, spec),
        Command::CreatePerformer(spec) => catalogue::create_performer(kv, group, meta, spec),
        Command::CreateEvent(spec) => catalogue::create_event(kv, group, meta, time, spec),
        Command::CreateEvents(specs) => catalogue::create_events(kv, group, meta, time, specs),
        Command::UpdateEvent { event_id, patch } => {
            catalogue::update_event(kv, group, meta, *event_id, patch)
        }
        Command::CreateInventory(spec) => {
            inventory::create_inventories(kv, group, std::slice::from_ref(spec))?;
            Ok(Effect::InventoryCreated {
                event_id: spec.event_id,
            })
        }
        Command::CreateInventories(specs) => {
            if specs.is_empty() || specs.len() > EVENTS_BATCH_MAX {
                return Err(invalid(format!(
                    "a batch holds 1..={EVENTS_BATCH_MAX} inventories"
                )));
            }
            inventory::create_inventories(kv, group, specs)?;
            Ok(Effect::InventoriesCreated {
                event_ids: specs.iter().map(|s| s.event_id).collect(),
            })
        }
        Command::Hold(req) => holds::hold(kv, group, meta, time, req, None),
        Command::AdmittedHold { hold, ticket } => {
            holds::hold(kv, group, meta, time, hold, Some(*ticket))
        }
        Command::Confirm {
            hold_id,
            user,
            payment_ref,
        } => holds::confirm(kv, group, meta, time, *hold_id, user, payment_ref),
        Command::Release { hold_id, user } => holds::release(kv, group, time, *hold_id, user),
        Command::Tick => Ok(Effect::Nothing),
        Command::EnableFeatures { level } => features::enable(features, *level),
        Command::Checkout(req) => {
            payments::counted(kv, group, |kv| payments::checkout(kv, group, time, req))
        }
        Command::PaymentSucceeded(n) => payments::counted(kv, group, |kv| {
            payments::payment_succeeded(kv, group, meta, time, n)
        }),
        Command::PaymentFailed(n) => {
            payments::counted(kv, group, |kv| payments::payment_failed(kv, group, time, n))
        }
        Command::CancelBooking {
            booking_id,
            user,
            not_after_ms,
        } => payments::counted(kv, group, |kv| {
            payments::cancel_booking(kv, group, time, *booking_id, user.as_deref(), *not_after_ms)
        }),
        Command::RefundUpdate {
            payment_id,
            report,
            provider_event,
        } => payments::counted(kv, group, |kv| {
            payments::refund_update(
                kv,
                group,
                time,
                payment_id,
                report,
                provider_event.as_deref(),
            )
        }),
        Command::SetWebhookEndpoint(spec) => outbox::set_endpoint(kv, group, time, spec),
        Command::DeliveryReport(a) => outbox::report(kv, group, time, a),
        Command::ReplayDelivery { endpoint, seq } => {
            outbox::replay(kv, group, time, endpoint, *seq)
        }
        Command::SetEventPayments { event_id, settings } => {
            catalogue::set_event_payments(kv, group, *event_id, settings)
        }
        Command::SetQueue {
            event_id,
            spec,
            seed,
        } => queue::set_queue(kv, group, time, *event_id, spec, *seed),
        Command::QueueControl { event_id, action } => {
            queue::control(kv, group, time, *event_id, *action)
        }
        Command::JoinQueue { event_id, user } => queue::join(kv, group, time, *event_id, user),
        Command::AdmitQueue { event_id } => queue::tick(kv, group, time, *event_id),
        Command::SetPlacement(update) => placement::set(kv, group, time, update),
    }
}
