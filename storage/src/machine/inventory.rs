//! An event's inventory on its shard: creation, the stored counts, the keys of
//! its records, and the settling of expired holds.

use boxoffice_raft::codec;
use boxoffice_raft::command::*;
use boxoffice_raft::GroupId;

use super::{get, invalid, put};
use crate::keys::{table, Key};
use crate::kv::{Kv, KvRead};
use crate::records::*;

fn check_inventory(spec: &InventorySpec) -> Result<(), Rejection> {
    spec.validate().map_err(invalid)
}

/// Creates the inventories of `specs`, all checked first; one that exists already
/// (a retried or duplicated create) is left as it is.
pub(super) fn create_inventories(
    kv: &mut dyn Kv,
    group: GroupId,
    specs: &[InventorySpec],
) -> Result<(), Rejection> {
    for spec in specs {
        check_inventory(spec)?;
    }
    for spec in specs {
        let key = inventory_key(group, spec.event_id);
        if kv.get(&key).is_none() {
            put(
                kv,
                key,
                &Inventory::new(
                    spec.event_id,
                    VenueLayout::from(&spec.layout),
                    spec.hold_ttl_ms,
                    spec.per_user_cap,
                ),
            );
        }
    }
    Ok(())
}

/// The event's inventory with its current counts.
pub(crate) fn load_inventory(kv: &dyn KvRead, group: GroupId, event_id: u64) -> Option<Inventory> {
    let key = inventory_key(group, event_id);
    // Apply's cache keeps the decoding (no copy or hash of the record per
    // request); other readers go through the content-keyed cache below.
    let decoded = kv.get_decoded(&key, &|bytes| {
        std::sync::Arc::new(decode_inventory(bytes)) as crate::kv::Decoded
    })?;
    let mut inv = match decoded.downcast_ref::<Inventory>() {
        Some(inv) => inv.clone(),
        // Only inventories are read by this key; decode afresh all the same.
        None => decode_inventory(&kv.get(&key)?),
    };
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
pub(super) fn save_counts(kv: &mut dyn Kv, group: GroupId, inv: &Inventory) {
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

pub(super) fn expiry_key(group: GroupId, event_id: u64, expires: u64, seq: u64) -> Vec<u8> {
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
    let SettledMark(settled) =
        get(kv, &expiry_settled_key(group, event_id)).unwrap_or(SettledMark(0));
    let at = |t: u64| Key::sm(group, table::EXPIRY).u64(event_id).u64(t).build();
    (at(settled), at(time.saturating_add(1)))
}

pub(super) fn user_event_key(group: GroupId, event_id: u64, user: &str) -> Vec<u8> {
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
pub(super) fn settle(kv: &mut dyn Kv, group: GroupId, inv: &mut Inventory, time: u64) {
    let (start, end) = due_expiry_range(kv, group, inv.event_id, time);
    let mut done = Vec::new();
    kv.scan_range(&start, &end, &mut |k, v| {
        let ExpiringQuantity(qty) = codec::decode(v).expect("corrupt expiry record");
        done.push((k.to_vec(), qty));
        true
    });
    // Everything due by `time` is settled now; a hold made from here on expires
    // at least HOLD_TTL_MS_MIN later (apply time never goes back), so above it.
    let mark = time.saturating_add(1);
    if get::<SettledMark>(kv, &expiry_settled_key(group, inv.event_id)) != Some(SettledMark(mark)) {
        put(
            kv,
            expiry_settled_key(group, inv.event_id),
            &SettledMark(mark),
        );
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
