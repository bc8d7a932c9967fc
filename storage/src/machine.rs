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

use boxoffice_raft::codec;
use boxoffice_raft::command::*;
use boxoffice_raft::{Entry, GroupId, StoredMembership};
use openraft::EntryPayload;

use crate::keys::{self, table, Key};
use crate::kv::{Kv, KvRead};
use crate::records::*;

/// How long an exactly-once answer is remembered (state-machine time). A retry
/// after this is treated as a new request. Part of the replicated semantics: every
/// replica must use the same value, so it is a constant, not a node setting.
pub const SESSION_TTL_MS: u64 = 24 * 3600 * 1000;

/// Most expired session records forgotten per applied request. Pruning runs once
/// per entry, with this budget for each request in it (each request leaves at most
/// one session), so it keeps pace with new sessions and its work stays bounded.
pub const SESSION_PRUNE_PER_REQUEST: usize = 16;

/// Applies one log entry to the group's state and returns its outcome.
pub fn apply_entry(kv: &mut dyn Kv, group: GroupId, entry: &Entry) -> Outcome {
    let mut meta = read_meta(kv, group);
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
                    meta.time_ms = meta.time_ms.max(req.stamp_ms);
                    apply_request(kv, group, &mut meta, entry.log_id.index, req)
                })
                .collect();
            (Ok(Effect::Batch(outcomes)), false, None)
        }
        EntryPayload::Normal(req) => {
            meta.time_ms = meta.time_ms.max(req.stamp_ms);
            let out = apply_request(kv, group, &mut meta, entry.log_id.index, req);
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
        _ => 0,
    };
    if requests > 0 {
        prune_sessions(
            kv,
            group,
            meta.time_ms,
            SESSION_PRUNE_PER_REQUEST * requests,
        );
    }
    write_meta(kv, group, &meta);
    Outcome {
        applied: applied.unwrap_or(Applied {
            index: entry.log_id.index,
            time_ms: meta.time_ms,
        }),
        replayed,
        result,
    }
}

/// Reads the group's bookkeeping record.
pub fn read_meta(kv: &dyn KvRead, group: GroupId) -> SmMeta {
    get(kv, &Key::sm(group, table::META).build()).unwrap_or_default()
}

fn write_meta(kv: &mut dyn Kv, group: GroupId, meta: &SmMeta) {
    put(kv, Key::sm(group, table::META).build(), meta);
}

pub(crate) fn get<T: serde::de::DeserializeOwned>(kv: &dyn KvRead, key: &[u8]) -> Option<T> {
    // A record that does not decode is corruption of our own data: crash rather
    // than apply on top of it.
    kv.get(key).map(|bytes| {
        codec::decode(&bytes)
            .unwrap_or_else(|e| panic!("corrupt state-machine record {key:?}: {e}"))
    })
}

fn put<T: serde::Serialize>(kv: &mut dyn Kv, key: Vec<u8>, value: &T) {
    kv.put(key, codec::encode(value));
}

fn session_key(group: GroupId, s: &Session) -> Vec<u8> {
    Key::sm(group, table::SESSION)
        .str(&s.client_id)
        .str(&s.idempotency_key)
        .build()
}

fn session_expiry_key(group: GroupId, expires: u64, s: &Session) -> Vec<u8> {
    Key::sm(group, table::SESSION_EXPIRY)
        .u64(expires)
        .str(&s.client_id)
        .str(&s.idempotency_key)
        .build()
}

/// Hash of a command, stored with its answer to recognise a reused key.
pub fn fingerprint(command: &Command) -> u64 {
    xxhash_rust::xxh3::xxh3_64(&codec::encode(command))
}

fn apply_request(
    kv: &mut dyn Kv,
    group: GroupId,
    meta: &mut SmMeta,
    index: u64,
    req: &Request,
) -> Outcome {
    let time = meta.time_ms;
    let applied = Applied {
        index,
        time_ms: time,
    };
    let Some(session) = &req.session else {
        return Outcome {
            applied,
            replayed: false,
            result: execute(kv, group, meta, time, &req.command),
        };
    };
    if session.client_id.is_empty()
        || session.client_id.len() > CLIENT_ID_LEN_MAX
        || session.idempotency_key.is_empty()
        || session.idempotency_key.len() > IDEMPOTENCY_KEY_LEN_MAX
    {
        let reason = "client id and idempotency key must be 1..=128 bytes".to_string();
        return Outcome {
            applied,
            replayed: false,
            result: Err(Rejection::InvalidInput { reason }),
        };
    }
    let key = session_key(group, session);
    let fp = fingerprint(&req.command);
    if let Some(rec) = get::<SessionRecord>(kv, &key) {
        if rec.expires_at_ms > time {
            if rec.fingerprint == fp {
                return Outcome {
                    replayed: true,
                    ..rec.outcome
                };
            }
            return Outcome {
                applied,
                replayed: false,
                result: Err(Rejection::IdempotencyKeyReused),
            };
        }
        // Expired but not yet pruned: forget it now and treat this as new.
        kv.delete(session_expiry_key(group, rec.expires_at_ms, session));
    }
    let outcome = Outcome {
        applied,
        replayed: false,
        result: execute(kv, group, meta, time, &req.command),
    };
    let expires_at_ms = time + SESSION_TTL_MS;
    put(
        kv,
        key,
        &SessionRecord {
            fingerprint: fp,
            outcome: outcome.clone(),
            expires_at_ms,
        },
    );
    kv.put(
        session_expiry_key(group, expires_at_ms, session),
        Vec::new(),
    );
    outcome
}

/// Forgets up to `budget` sessions that expired by `time`, oldest first. Invisible
/// to requests (an expired session counts as absent whether or not it is pruned
/// yet); it only keeps the table from growing.
fn prune_sessions(kv: &mut dyn Kv, group: GroupId, time: u64, budget: usize) {
    let prefix = Key::sm(group, table::SESSION_EXPIRY).build();
    let mut expired = Vec::new();
    kv.scan(&prefix, &prefix, &mut |k, _| {
        let expires = keys::read_u64(k, prefix.len());
        if expires > time || expired.len() >= budget {
            return false;
        }
        expired.push(k.to_vec());
        true
    });
    for k in expired {
        // Rebuild the session key from the expiry key's tail (client, key).
        let mut session_key = Key::sm(group, table::SESSION).build();
        session_key.extend_from_slice(&k[prefix.len() + 8..]);
        kv.delete(session_key);
        kv.delete(k);
    }
}

fn next_id(meta: &mut SmMeta) -> u64 {
    meta.last_id += 1;
    meta.last_id
}

fn invalid(reason: impl Into<String>) -> Rejection {
    Rejection::InvalidInput {
        reason: reason.into(),
    }
}

fn execute(
    kv: &mut dyn Kv,
    group: GroupId,
    meta: &mut SmMeta,
    time: u64,
    command: &Command,
) -> Result<Effect, Rejection> {
    let catalogue_only = matches!(
        command,
        Command::CreateVenue(_)
            | Command::CreatePerformer(_)
            | Command::CreateEvent(_)
            | Command::CreateEvents(_)
            | Command::UpdateEvent { .. }
    );
    if !matches!(command, Command::Tick) && catalogue_only != group.is_catalogue() {
        return Err(invalid(format!(
            "{} is not a command for {group}",
            command.name()
        )));
    }
    match command {
        // A batch is only ever the whole payload of an entry, without a session
        // (see `apply_entry`); anywhere else it is refused.
        Command::Batch(_) => Err(invalid(
            "a batch is a whole log entry of its own; it cannot be nested or carry a session",
        )),
        Command::CreateVenue(spec) => create_venue(kv, group, meta, spec),
        Command::CreatePerformer(spec) => {
            check_name("performer name", &spec.name).map_err(invalid)?;
            if spec.description.len() > DESCRIPTION_LEN_MAX {
                return Err(invalid(format!(
                    "description is longer than {DESCRIPTION_LEN_MAX} bytes"
                )));
            }
            let performer_id = next_id(meta);
            put(
                kv,
                Key::sm(group, table::PERFORMER).u64(performer_id).build(),
                &Performer {
                    performer_id,
                    spec: spec.clone(),
                },
            );
            Ok(Effect::PerformerCreated { performer_id })
        }
        Command::CreateEvent(spec) => create_event(kv, group, meta, time, spec),
        Command::CreateInventory(spec) => {
            check_inventory(spec)?;
            create_inventory(kv, group, spec);
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
            for spec in specs {
                check_inventory(spec)?;
            }
            for spec in specs {
                create_inventory(kv, group, spec);
            }
            Ok(Effect::InventoriesCreated {
                event_ids: specs.iter().map(|s| s.event_id).collect(),
            })
        }
        Command::CreateEvents(specs) => {
            if specs.is_empty() || specs.len() > EVENTS_BATCH_MAX {
                return Err(invalid(format!(
                    "a batch holds 1..={EVENTS_BATCH_MAX} events"
                )));
            }
            let mut layouts = Vec::with_capacity(specs.len());
            for (i, spec) in specs.iter().enumerate() {
                layouts.push(check_event(kv, group, spec).map_err(|r| match r {
                    Rejection::InvalidInput { reason } => invalid(format!("events[{i}]: {reason}")),
                    other => other,
                })?);
            }
            let events = specs
                .iter()
                .zip(layouts)
                .map(|(spec, layout)| write_event(kv, group, meta, time, spec, layout))
                .collect();
            Ok(Effect::EventsCreated { events })
        }
        Command::UpdateEvent { event_id, patch } => update_event(kv, group, meta, *event_id, patch),
        Command::Hold(req) => hold(kv, group, meta, time, req),
        Command::Confirm {
            hold_id,
            user,
            payment_ref,
        } => confirm(kv, group, meta, time, *hold_id, user, payment_ref),
        Command::Release { hold_id, user } => release(kv, group, time, *hold_id, user),
        Command::Tick => Ok(Effect::Nothing),
    }
}

fn create_venue(
    kv: &mut dyn Kv,
    group: GroupId,
    meta: &mut SmMeta,
    spec: &VenueSpec,
) -> Result<Effect, Rejection> {
    check_name("venue name", &spec.name).map_err(invalid)?;
    check_name("city", &spec.city).map_err(invalid)?;
    if !(spec.lat.is_finite() && (-90.0..=90.0).contains(&spec.lat)) {
        return Err(invalid("lat must be between -90 and 90"));
    }
    if !(spec.lon.is_finite() && (-180.0..=180.0).contains(&spec.lon)) {
        return Err(invalid("lon must be between -180 and 180"));
    }
    spec.layout.validate().map_err(invalid)?;
    let venue_id = next_id(meta);
    put(
        kv,
        Key::sm(group, table::VENUE).u64(venue_id).build(),
        &Venue {
            venue_id,
            spec: spec.clone(),
        },
    );
    Ok(Effect::VenueCreated { venue_id })
}

fn check_event_limits(hold_ttl_ms: u64, per_user_cap: u32) -> Result<(), Rejection> {
    if !(HOLD_TTL_MS_MIN..=HOLD_TTL_MS_MAX).contains(&hold_ttl_ms) {
        return Err(invalid(format!(
            "hold ttl must be between {HOLD_TTL_MS_MIN} and {HOLD_TTL_MS_MAX} ms"
        )));
    }
    if per_user_cap == 0 {
        return Err(invalid("per_user_cap must be at least 1"));
    }
    Ok(())
}

fn check_event_text(name: &str, category: &str, description: &str) -> Result<(), Rejection> {
    check_name("event name", name).map_err(invalid)?;
    check_name("category", category).map_err(invalid)?;
    if description.len() > DESCRIPTION_LEN_MAX {
        return Err(invalid(format!(
            "description is longer than {DESCRIPTION_LEN_MAX} bytes"
        )));
    }
    Ok(())
}

/// Checks an event against the catalogue; returns its venue's layout.
fn check_event(kv: &dyn KvRead, group: GroupId, spec: &EventSpec) -> Result<Layout, Rejection> {
    check_event_text(&spec.name, &spec.category, &spec.description)?;
    check_event_limits(spec.hold_ttl_ms, spec.per_user_cap)?;
    if spec.performer_ids.len() > EVENT_PERFORMERS_MAX {
        return Err(invalid(format!(
            "at most {EVENT_PERFORMERS_MAX} performers"
        )));
    }
    let venue: Venue = get(kv, &Key::sm(group, table::VENUE).u64(spec.venue_id).build()).ok_or(
        Rejection::UnknownVenue {
            venue_id: spec.venue_id,
        },
    )?;
    for &performer_id in &spec.performer_ids {
        if kv
            .get(&Key::sm(group, table::PERFORMER).u64(performer_id).build())
            .is_none()
        {
            return Err(Rejection::UnknownPerformer { performer_id });
        }
    }
    Ok(venue.spec.layout)
}

/// Moves the event's entry in the change feed to the applying entry's index.
fn note_event_change(kv: &mut dyn Kv, group: GroupId, meta: &SmMeta, event_id: u64) {
    let index = meta
        .last_applied
        .map(|l| l.index)
        .expect("a command applies at a log index");
    let at_key = Key::sm(group, table::EVENT_CHANGED_AT)
        .u64(event_id)
        .build();
    if let Some(prev) = get::<u64>(kv, &at_key) {
        kv.delete(
            Key::sm(group, table::EVENT_CHANGE)
                .u64(prev)
                .u64(event_id)
                .build(),
        );
    }
    put(kv, at_key, &index);
    kv.put(
        Key::sm(group, table::EVENT_CHANGE)
            .u64(index)
            .u64(event_id)
            .build(),
        Vec::new(),
    );
}

fn write_event(
    kv: &mut dyn Kv,
    group: GroupId,
    meta: &mut SmMeta,
    time: u64,
    spec: &EventSpec,
    layout: Layout,
) -> CreatedEvent {
    let event_id = next_id(meta);
    put(
        kv,
        Key::sm(group, table::EVENT).u64(event_id).build(),
        &Event {
            event_id,
            spec: spec.clone(),
            created_at_ms: time,
        },
    );
    note_event_change(kv, group, meta, event_id);
    let inventory = InventorySpec {
        event_id,
        layout,
        hold_ttl_ms: spec.hold_ttl_ms,
        per_user_cap: spec.per_user_cap,
    };
    CreatedEvent {
        event_id,
        inventory,
    }
}

fn create_event(
    kv: &mut dyn Kv,
    group: GroupId,
    meta: &mut SmMeta,
    time: u64,
    spec: &EventSpec,
) -> Result<Effect, Rejection> {
    let layout = check_event(kv, group, spec)?;
    let CreatedEvent {
        event_id,
        inventory,
    } = write_event(kv, group, meta, time, spec, layout);
    Ok(Effect::EventCreated {
        event_id,
        inventory,
    })
}

fn update_event(
    kv: &mut dyn Kv,
    group: GroupId,
    meta: &SmMeta,
    event_id: u64,
    patch: &EventPatch,
) -> Result<Effect, Rejection> {
    if patch.is_empty() {
        return Err(invalid("the update changes nothing"));
    }
    let key = Key::sm(group, table::EVENT).u64(event_id).build();
    let mut event: Event = get(kv, &key).ok_or(Rejection::UnknownEvent { event_id })?;
    let spec = &mut event.spec;
    if let Some(v) = &patch.name {
        spec.name = v.clone();
    }
    if let Some(v) = &patch.description {
        spec.description = v.clone();
    }
    if let Some(v) = &patch.category {
        spec.category = v.clone();
    }
    if let Some(v) = patch.starts_at_ms {
        spec.starts_at_ms = v;
    }
    check_event_text(&spec.name, &spec.category, &spec.description)?;
    put(kv, key, &event);
    note_event_change(kv, group, meta, event_id);
    Ok(Effect::EventUpdated { event_id })
}

fn check_inventory(spec: &InventorySpec) -> Result<(), Rejection> {
    spec.layout.validate().map_err(invalid)?;
    check_event_limits(spec.hold_ttl_ms, spec.per_user_cap)
}

/// Creates an event's inventory unless it exists (a retried or duplicated create).
fn create_inventory(kv: &mut dyn Kv, group: GroupId, spec: &InventorySpec) {
    let key = inventory_key(group, spec.event_id);
    if kv.get(&key).is_none() {
        put(
            kv,
            key,
            &Inventory::new(
                spec.event_id,
                spec.layout.clone(),
                spec.hold_ttl_ms,
                spec.per_user_cap,
            ),
        );
    }
}

/// The event's inventory with its current counts.
pub(crate) fn load_inventory(kv: &dyn KvRead, group: GroupId, event_id: u64) -> Option<Inventory> {
    let bytes = kv.get(&inventory_key(group, event_id))?;
    let mut inv = decode_inventory(&bytes);
    if let Some(c) = get::<InventoryCounts>(kv, &inventory_counts_key(group, event_id)) {
        inv.sold = c.sold;
        inv.held_unsettled = c.held_unsettled;
    }
    Some(inv)
}

/// Distinct inventory records kept decoded (emptied when full).
const INVENTORY_CACHE_MAX: usize = 1024;

/// Decodes an inventory record, reusing an earlier decoding of the same bytes:
/// the record never changes after creation, and on a 50,000-seat venue decoding
/// its layout (a thousand rows) on every hold and confirm was a large part of
/// apply. Keyed by a 128-bit hash of the bytes, so the answer is the decoding of
/// exactly these bytes whatever database or snapshot they came from.
fn decode_inventory(bytes: &[u8]) -> Inventory {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<u128, Inventory>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let h = xxhash_rust::xxh3::xxh3_128(bytes);
    if let Some(inv) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&h) {
        return inv.clone();
    }
    let inv: Inventory = codec::decode(bytes).expect("corrupt inventory record");
    let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
    if c.len() >= INVENTORY_CACHE_MAX {
        c.clear();
    }
    c.insert(h, inv.clone());
    inv
}

/// Stores the inventory's counts (its layout and settings never change).
fn save_counts(kv: &mut dyn Kv, group: GroupId, inv: &Inventory) {
    put(
        kv,
        inventory_counts_key(group, inv.event_id),
        &InventoryCounts {
            sold: inv.sold,
            held_unsettled: inv.held_unsettled,
        },
    );
}

fn inventory_counts_key(group: GroupId, event_id: u64) -> Vec<u8> {
    Key::sm(group, table::INVENTORY_COUNTS)
        .u64(event_id)
        .build()
}

pub(crate) fn inventory_key(group: GroupId, event_id: u64) -> Vec<u8> {
    Key::sm(group, table::INVENTORY).u64(event_id).build()
}

pub(crate) fn ticket_key(group: GroupId, event_id: u64, seat: u32) -> Vec<u8> {
    Key::sm(group, table::TICKET)
        .u64(event_id)
        .u32(seat)
        .build()
}

fn expiry_key(group: GroupId, event_id: u64, expires: u64, seq: u64) -> Vec<u8> {
    Key::sm(group, table::EXPIRY)
        .u64(event_id)
        .u64(expires)
        .u64(seq)
        .build()
}

pub(crate) fn expiry_settled_key(group: GroupId, event_id: u64) -> Vec<u8> {
    Key::sm(group, table::EXPIRY_SETTLED).u64(event_id).build()
}

/// The expiry entries of `event_id` not yet settled that expire at or before
/// `time`, as the `[start, end)` key range to scan. Entries below the settled mark
/// are gone (settled, or deleted by a confirm or release); starting the scan there
/// keeps it from stepping over their deletion markers, which on a busy event
/// number in the thousands.
pub(crate) fn due_expiry_range(
    kv: &dyn KvRead,
    group: GroupId,
    event_id: u64,
    time: u64,
) -> (Vec<u8>, Vec<u8>) {
    let settled: u64 = get(kv, &expiry_settled_key(group, event_id)).unwrap_or(0);
    let at = |t: u64| Key::sm(group, table::EXPIRY).u64(event_id).u64(t).build();
    (at(settled), at(time.saturating_add(1)))
}

fn user_event_key(group: GroupId, event_id: u64, user: &str) -> Vec<u8> {
    Key::sm(group, table::USER_EVENT)
        .u64(event_id)
        .str(user)
        .build()
}

pub(crate) fn hold_key(group: GroupId, seq: u64) -> Vec<u8> {
    Key::sm(group, table::HOLD).u64(seq).build()
}

/// Folds holds that expired at or before `time` out of the event's unsettled count
/// and removes their expiry index entries. Observable state does not change: an
/// expired hold's seats were already available.
fn settle(kv: &mut dyn Kv, group: GroupId, inv: &mut Inventory, time: u64) {
    let (start, end) = due_expiry_range(kv, group, inv.event_id, time);
    let mut done = Vec::new();
    kv.scan_range(&start, &end, &mut |k, v| {
        let qty: u32 = codec::decode(v).expect("corrupt expiry record");
        done.push((k.to_vec(), qty));
        true
    });
    // Everything due by `time` is settled now; a hold made from here on expires
    // at least HOLD_TTL_MS_MIN later (apply time never goes back), so above it.
    let mark = time.saturating_add(1);
    if get::<u64>(kv, &expiry_settled_key(group, inv.event_id)) != Some(mark) {
        put(kv, expiry_settled_key(group, inv.event_id), &mark);
    }
    if done.is_empty() {
        return;
    }
    for (k, qty) in done {
        inv.held_unsettled = inv
            .held_unsettled
            .checked_sub(qty)
            .expect("held count below zero: expiry index out of step");
        kv.delete(k);
    }
    // Written here, together with the index deletes, so that a command rejected
    // after settling still leaves count and index in step.
    save_counts(kv, group, inv);
}

fn validate_user(user: &str) -> Result<(), Rejection> {
    if user.is_empty() || user.len() > CLIENT_ID_LEN_MAX {
        return Err(invalid("user id must be 1..=128 bytes"));
    }
    Ok(())
}

fn hold(
    kv: &mut dyn Kv,
    group: GroupId,
    meta: &mut SmMeta,
    time: u64,
    req: &HoldRequest,
) -> Result<Effect, Rejection> {
    validate_user(&req.user)?;
    let mut inv: Inventory =
        load_inventory(kv, group, req.event_id).ok_or(Rejection::UnknownEvent {
            event_id: req.event_id,
        })?;
    // Check the request's shape.
    let requested = match &req.selection {
        Selection::Seats(seats) => {
            if inv.is_general_admission() {
                return Err(invalid(
                    "this event is general admission: ask for a quantity, not seat ids",
                ));
            }
            if seats.is_empty() {
                return Err(invalid("seat_ids must not be empty"));
            }
            if seats.len() > HOLD_SEATS_MAX as usize {
                return Err(invalid(format!("at most {HOLD_SEATS_MAX} seats per hold")));
            }
            let mut sorted = seats.clone();
            sorted.sort_unstable();
            if sorted.windows(2).any(|w| w[0] == w[1]) {
                return Err(invalid("seat_ids contains duplicates"));
            }
            if let Some(bad) = sorted.iter().find(|&&s| s >= inv.capacity) {
                return Err(invalid(format!(
                    "seat {bad} does not exist (event has seats 0..{})",
                    inv.capacity
                )));
            }
            seats.len() as u32
        }
        Selection::Quantity(q) => {
            if *q == 0 || *q > HOLD_SEATS_MAX {
                return Err(invalid(format!(
                    "quantity must be between 1 and {HOLD_SEATS_MAX}"
                )));
            }
            *q
        }
    };
    // Per-user cap.
    let ue_key = user_event_key(group, req.event_id, &req.user);
    let mut ue: UserEvent = get(kv, &ue_key).unwrap_or_default();
    let current = ue.current(time);
    if current + requested > inv.per_user_cap {
        return Err(Rejection::CapExceeded {
            cap: inv.per_user_cap,
            current,
            requested,
        });
    }
    // Availability.
    settle(kv, group, &mut inv, time);
    let seats: Vec<u32> = match &req.selection {
        Selection::Seats(seats) => {
            let taken: Vec<u32> = seats
                .iter()
                .copied()
                .filter(|&s| {
                    Ticket::status_at(
                        get::<Ticket>(kv, &ticket_key(group, req.event_id, s)).as_ref(),
                        time,
                    ) != SeatStatus::Available
                })
                .collect();
            if !taken.is_empty() {
                return Err(Rejection::SeatUnavailable { seat_ids: taken });
            }
            seats.clone()
        }
        Selection::Quantity(q) => {
            let available = inv.capacity - inv.sold - inv.held_unsettled;
            if available < *q {
                return Err(Rejection::InsufficientAvailability {
                    requested: *q,
                    available,
                });
            }
            if inv.is_general_admission() {
                Vec::new()
            } else {
                best_available(kv, group, &inv, time, *q)
            }
        }
    };
    // All checks passed: write.
    let seq = next_id(meta);
    let expires_at_ms = time + inv.hold_ttl_ms;
    let total_cents = if seats.is_empty() {
        inv.price_of(None) * u64::from(requested)
    } else {
        seats.iter().map(|&s| inv.price_of(Some(s))).sum()
    };
    for &s in &seats {
        put(
            kv,
            ticket_key(group, req.event_id, s),
            &Ticket::Held {
                hold_seq: seq,
                expires_at_ms,
            },
        );
    }
    put(
        kv,
        expiry_key(group, req.event_id, expires_at_ms, seq),
        &requested,
    );
    inv.held_unsettled += requested;
    save_counts(kv, group, &inv);
    ue.holds.retain(|(_, _, exp)| *exp > time);
    ue.holds.push((seq, requested, expires_at_ms));
    put(kv, ue_key, &ue);
    let record = Hold {
        seq,
        event_id: req.event_id,
        user: req.user.clone(),
        seat_ids: seats.clone(),
        quantity: requested,
        expires_at_ms,
        total_cents,
        state: HoldState::Active,
    };
    put(kv, hold_key(group, seq), &record);
    Ok(Effect::Held(HoldView {
        hold_id: HoldId {
            shard: group.0,
            seq,
        },
        event_id: req.event_id,
        seat_ids: seats,
        quantity: requested,
        expires_at_ms,
        total_cents,
    }))
}

/// The `q` lowest-numbered seats available at `time`. The caller checked there are
/// at least `q`.
fn best_available(kv: &dyn KvRead, group: GroupId, inv: &Inventory, time: u64, q: u32) -> Vec<u32> {
    let prefix = Key::sm(group, table::TICKET).u64(inv.event_id).build();
    let mut picked = Vec::with_capacity(q as usize);
    let mut next_free = 0u32;
    kv.scan(&prefix, &prefix, &mut |k, v| {
        let seat = keys::read_u32(k, prefix.len());
        while next_free < seat && picked.len() < q as usize {
            picked.push(next_free);
            next_free += 1;
        }
        if picked.len() >= q as usize {
            return false;
        }
        let t: Ticket = codec::decode(v).expect("corrupt ticket record");
        if Ticket::status_at(Some(&t), time) == SeatStatus::Available {
            picked.push(seat);
        }
        next_free = seat + 1;
        picked.len() < q as usize
    });
    while picked.len() < q as usize && next_free < inv.capacity {
        picked.push(next_free);
        next_free += 1;
    }
    assert_eq!(
        picked.len(),
        q as usize,
        "availability count and ticket records disagree"
    );
    picked
}

fn load_owned_hold(
    kv: &dyn KvRead,
    group: GroupId,
    hold_id: HoldId,
    user: &str,
) -> Result<Hold, Rejection> {
    validate_user(user)?;
    if hold_id.shard != group.0 {
        return Err(Rejection::UnknownHold { hold_id });
    }
    let hold: Hold =
        get(kv, &hold_key(group, hold_id.seq)).ok_or(Rejection::UnknownHold { hold_id })?;
    if hold.user != user {
        return Err(Rejection::NotHoldOwner);
    }
    Ok(hold)
}

fn confirm(
    kv: &mut dyn Kv,
    group: GroupId,
    meta: &mut SmMeta,
    time: u64,
    hold_id: HoldId,
    user: &str,
    payment_ref: &str,
) -> Result<Effect, Rejection> {
    if payment_ref.len() > NAME_LEN_MAX {
        return Err(invalid(format!(
            "payment_ref is longer than {NAME_LEN_MAX} bytes"
        )));
    }
    let mut hold = load_owned_hold(kv, group, hold_id, user)?;
    match hold.state {
        HoldState::Confirmed { booking_seq } => {
            return Err(Rejection::HoldAlreadyConfirmed {
                booking_id: BookingId {
                    shard: group.0,
                    seq: booking_seq,
                },
            })
        }
        HoldState::Released => return Err(Rejection::HoldReleased),
        HoldState::Active if hold.expires_at_ms <= time => {
            return Err(Rejection::HoldExpired {
                expired_at_ms: hold.expires_at_ms,
            })
        }
        HoldState::Active => {}
    }
    let mut inv: Inventory =
        load_inventory(kv, group, hold.event_id).expect("hold without inventory");
    settle(kv, group, &mut inv, time);
    let booking_seq = next_id(meta);
    for &s in &hold.seat_ids {
        let key = ticket_key(group, hold.event_id, s);
        let t: Option<Ticket> = get(kv, &key);
        assert_eq!(
            t,
            Some(Ticket::Held {
                hold_seq: hold.seq,
                expires_at_ms: hold.expires_at_ms
            }),
            "live hold lost its seat {s}"
        );
        put(kv, key, &Ticket::Sold { booking_seq });
    }
    kv.delete(expiry_key(
        group,
        hold.event_id,
        hold.expires_at_ms,
        hold.seq,
    ));
    inv.held_unsettled = inv
        .held_unsettled
        .checked_sub(hold.quantity)
        .expect("held count below zero at confirm");
    inv.sold += hold.quantity;
    assert!(inv.sold <= inv.capacity, "sold more than capacity");
    save_counts(kv, group, &inv);
    let ue_key = user_event_key(group, hold.event_id, user);
    let mut ue: UserEvent = get(kv, &ue_key).unwrap_or_default();
    ue.holds
        .retain(|(seq, _, exp)| *seq != hold.seq && *exp > time);
    ue.booked += hold.quantity;
    put(kv, ue_key, &ue);
    hold.state = HoldState::Confirmed { booking_seq };
    put(kv, hold_key(group, hold.seq), &hold);
    let booking = BookingView {
        booking_id: BookingId {
            shard: group.0,
            seq: booking_seq,
        },
        hold_id,
        event_id: hold.event_id,
        user: user.to_string(),
        seat_ids: hold.seat_ids.clone(),
        quantity: hold.quantity,
        total_cents: hold.total_cents,
        payment_ref: payment_ref.to_string(),
        confirmed_at_ms: time,
    };
    put(
        kv,
        Key::sm(group, table::BOOKING).u64(booking_seq).build(),
        &booking,
    );
    kv.put(
        Key::sm(group, table::USER_BOOKING)
            .str(user)
            .u64(booking_seq)
            .build(),
        Vec::new(),
    );
    Ok(Effect::Confirmed(booking))
}

fn release(
    kv: &mut dyn Kv,
    group: GroupId,
    time: u64,
    hold_id: HoldId,
    user: &str,
) -> Result<Effect, Rejection> {
    let mut hold = load_owned_hold(kv, group, hold_id, user)?;
    match hold.state {
        HoldState::Confirmed { booking_seq } => {
            return Err(Rejection::HoldAlreadyConfirmed {
                booking_id: BookingId {
                    shard: group.0,
                    seq: booking_seq,
                },
            })
        }
        HoldState::Released => {
            return Ok(Effect::Released {
                hold_id,
                event_id: hold.event_id,
                seat_ids: vec![],
                quantity: 0,
            })
        }
        HoldState::Active => {}
    }
    let mut inv: Inventory =
        load_inventory(kv, group, hold.event_id).expect("hold without inventory");
    settle(kv, group, &mut inv, time);
    let live = hold.expires_at_ms > time;
    let mut freed = Vec::new();
    if live {
        // Still live: it is unsettled; give its count back now.
        kv.delete(expiry_key(
            group,
            hold.event_id,
            hold.expires_at_ms,
            hold.seq,
        ));
        inv.held_unsettled = inv
            .held_unsettled
            .checked_sub(hold.quantity)
            .expect("held count below zero at release");
    }
    save_counts(kv, group, &inv);
    for &s in &hold.seat_ids {
        let key = ticket_key(group, hold.event_id, s);
        // Only this hold's own record: after expiry the seat may belong to another hold.
        if let Some(Ticket::Held { hold_seq, .. }) = get::<Ticket>(kv, &key) {
            if hold_seq == hold.seq {
                kv.delete(key);
                if live {
                    freed.push(s);
                }
            }
        }
    }
    let ue_key = user_event_key(group, hold.event_id, user);
    let mut ue: UserEvent = get(kv, &ue_key).unwrap_or_default();
    ue.holds
        .retain(|(seq, _, exp)| *seq != hold.seq && *exp > time);
    put(kv, ue_key, &ue);
    hold.state = HoldState::Released;
    put(kv, hold_key(group, hold.seq), &hold);
    let quantity = if live { hold.quantity } else { 0 };
    Ok(Effect::Released {
        hold_id,
        event_id: hold.event_id,
        seat_ids: freed,
        quantity,
    })
}

#[cfg(test)]
mod tests {
    use boxoffice_raft::command::Session;
    use openraft::{CommittedLeaderId, LogId};

    use super::*;
    use crate::kv::MemKv;

    const GROUP: GroupId = GroupId(1);

    fn entry(index: u64, req: Request) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(req),
        }
    }

    fn ticks(n: usize, stamp_ms: u64, key: &str) -> Request {
        Request {
            stamp_ms,
            session: None,
            command: Command::Batch(
                (0..n)
                    .map(|i| Request {
                        stamp_ms,
                        session: Some(Session {
                            client_id: "alice".into(),
                            idempotency_key: format!("{key}-{i}"),
                        }),
                        command: Command::Tick,
                    })
                    .collect(),
            ),
        }
    }

    fn count(kv: &MemKv, table: u8) -> usize {
        let prefix = Key::sm(GROUP, table).build();
        kv.map.keys().filter(|k| k.starts_with(&prefix)).count()
    }

    #[test]
    fn expired_sessions_are_pruned_once_per_entry_within_the_budget() {
        let mut kv = MemKv::default();
        let t0 = 1_000_000;
        // 40 sessions at t0 in one entry, 5 more just before a day has passed.
        apply_entry(&mut kv, GROUP, &entry(1, ticks(40, t0, "a")));
        apply_entry(
            &mut kv,
            GROUP,
            &entry(2, ticks(5, t0 + SESSION_TTL_MS - 1, "b")),
        );
        assert_eq!(count(&kv, table::SESSION), 45);
        assert_eq!(count(&kv, table::SESSION_EXPIRY), 45);
        // A day later, a one-request entry forgets at most its budget of the 40
        // expired ones; the next entries forget the rest, never the 5 live ones.
        let later = t0 + SESSION_TTL_MS;
        let next = |kv: &mut MemKv, index| {
            let req = Request {
                stamp_ms: later,
                session: None,
                command: Command::Tick,
            };
            apply_entry(kv, GROUP, &entry(index, req));
        };
        next(&mut kv, 3);
        assert_eq!(count(&kv, table::SESSION), 45 - SESSION_PRUNE_PER_REQUEST);
        next(&mut kv, 4);
        next(&mut kv, 5);
        assert_eq!(count(&kv, table::SESSION), 5);
        assert_eq!(count(&kv, table::SESSION_EXPIRY), 5);
        // A retry of a pruned session's key is a new request, as it would be
        // unpruned past its lifetime.
        let out = apply_entry(&mut kv, GROUP, &entry(6, ticks(1, later, "a")));
        let Ok(Effect::Batch(outcomes)) = out.result else {
            panic!("{out:?}")
        };
        assert!(!outcomes[0].replayed);
        // A live one is replayed.
        let out = apply_entry(&mut kv, GROUP, &entry(7, ticks(1, later, "b")));
        let Ok(Effect::Batch(outcomes)) = out.result else {
            panic!("{out:?}")
        };
        assert!(outcomes[0].replayed);
    }
}
