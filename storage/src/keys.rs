//! Byte layouts of every key boxoffice stores.
//!
//! All integers are big-endian so that RocksDB's byte order is numeric order.
//! Every key of a Raft group starts with the group id (`u16`), so one group's data is
//! one contiguous range in each column family.
//!
//! | CF     | key                                   | value                       |
//! |--------|---------------------------------------|-----------------------------|
//! | `log`  | group, index u64                      | `Entry`                     |
//! | `meta` | group, kind u8                        | vote / committed / purged   |
//! | `meta` | `NODE_GROUP`, kind u8                 | node-level records          |
//! | `sm`   | group, table u8, table-specific parts | see [`crate::records`]      |

use boxoffice_raft::GroupId;

/// Group id used in the `meta` CF for records about the node itself.
pub const NODE_GROUP: u16 = u16::MAX;

/// `meta` kinds.
pub mod meta {
    /// Last saved vote.
    pub const VOTE: u8 = 1;
    /// Last saved committed log id.
    pub const COMMITTED: u8 = 2;
    /// Last purged log id.
    pub const PURGED: u8 = 3;
    /// Marker: a snapshot install into the state machine was started and not finished.
    pub const INSTALLING: u8 = 4;
    /// Node-level: the cluster shape this node belongs to (under `NODE_GROUP`).
    pub const CLUSTER: u8 = 10;
    /// Node-level: the groups this node hosts (absent on a node whose data
    /// predates placement: it hosts every group).
    pub const HOSTED: u8 = 11;
}

/// `sm` tables.
pub mod table {
    /// Applied log id, membership, state-machine time, id counter.
    pub const META: u8 = 0x00;
    /// The group's feature level (absent: level 0). Written only once a level
    /// above 0 is enabled, so a group at level 0 stores what the first releases
    /// read.
    pub const FEATURES: u8 = 0x01;
    /// Catalogue: venue by id.
    pub const VENUE: u8 = 0x10;
    /// Catalogue: performer by id.
    pub const PERFORMER: u8 = 0x11;
    /// Catalogue: event by id.
    pub const EVENT: u8 = 0x12;
    /// Catalogue: change feed of events, by (log index of last change, event id).
    /// One entry per event, moved on every change; readers resume from a cursor.
    pub const EVENT_CHANGE: u8 = 0x13;
    /// Catalogue: log index of each event's last change (to move its feed entry).
    pub const EVENT_CHANGED_AT: u8 = 0x14;
    /// Catalogue (from feature level 2): an event's own payment settings.
    pub const EVENT_PAYMENTS: u8 = 0x15;
    /// Inventory: per-event inventory summary.
    pub const INVENTORY: u8 = 0x20;
    /// Inventory: seat state (absent = available), by event and seat.
    pub const TICKET: u8 = 0x21;
    /// Inventory: hold by sequence number.
    pub const HOLD: u8 = 0x22;
    /// Inventory: unsettled active holds by event, expiry time, hold.
    pub const EXPIRY: u8 = 0x23;
    /// Inventory: booking by sequence number.
    pub const BOOKING: u8 = 0x24;
    /// Inventory: per event, the time below which every expiry entry has been
    /// settled; expiry scans start there instead of at deletion markers.
    pub const EXPIRY_SETTLED: u8 = 0x27;
    /// Inventory: per-event sold and held counts, kept apart from the (large,
    /// unchanging) layout in `INVENTORY` so that a hold or confirm rewrites a few
    /// bytes, not the whole venue.
    pub const INVENTORY_COUNTS: u8 = 0x28;
    /// Inventory: per-(event, user) counters for the cap.
    pub const USER_EVENT: u8 = 0x25;
    /// Inventory: a user's bookings, by user and booking.
    pub const USER_BOOKING: u8 = 0x26;
    /// Exactly-once sessions by client and idempotency key.
    pub const SESSION: u8 = 0x30;
    /// Session expiry index by expiry time, client, key: the sessions written
    /// at feature level 0 (drained once a higher level is enabled).
    pub const SESSION_EXPIRY: u8 = 0x31;
    /// Session expiry index from feature level 1: by expiry time, counted (u8:
    /// 1 when the session counts against its user's bound), client, key.
    pub const SESSION_DEADLINE: u8 = 0x32;
    /// From feature level 1: the live counted sessions of a client, by client.
    pub const USER_SESSIONS: u8 = 0x33;
    /// From feature level 2: a hold's payment with the provider, by hold seq.
    pub const PAYMENT: u8 = 0x40;
    /// Holds whose payment is in flight, by (hold expiry, hold seq): what the
    /// reconciler checks with the provider once the expiry has passed.
    pub const PAYMENT_DUE: u8 = 0x41;
    /// Refunds owed or made, by payment id.
    pub const REFUND: u8 = 0x42;
    /// Refunds not yet paid back, by payment id: what the refund worker issues.
    pub const REFUND_OPEN: u8 = 0x43;
    /// Cancelled bookings, by booking seq.
    pub const BOOKING_CANCEL: u8 = 0x44;
    /// Provider event ids applied, by id (until when they are remembered).
    pub const PROVIDER_EVENT: u8 = 0x45;
    /// Provider event expiry index, by (until, id).
    pub const PROVIDER_EVENT_DEADLINE: u8 = 0x46;
    /// The outbox: events for the site's webhooks, by outbox seq.
    pub const OUTBOX: u8 = 0x47;
    /// The last outbox seq used (one record).
    pub const OUTBOX_SEQ: u8 = 0x48;
    /// The site's webhook endpoints, by name.
    pub const WEBHOOK_ENDPOINT: u8 = 0x49;
    /// Each outbox event's delivery to each endpoint, by (name, seq).
    pub const DELIVERY: u8 = 0x4A;
    /// Pending deliveries by (next attempt time, name, seq).
    pub const DELIVERY_DUE: u8 = 0x4B;
    /// What the shard's payments came to (one record).
    pub const PAYMENT_COUNTS: u8 = 0x4C;
    /// From feature level 3: an event's waiting room, by event.
    pub const QUEUE: u8 = 0x50;
    /// A user's place in an event's queue, by (event, user).
    pub const QUEUE_JOIN: u8 = 0x51;
    /// The users one tick admitted, by (event, last position admitted): a
    /// forward seek from a position finds the batch that admitted it.
    pub const QUEUE_BATCH: u8 = 0x52;
    /// From feature level 4, catalogue only: the placement directory's nodes,
    /// by node id.
    pub const PLACEMENT_NODE: u8 = 0x60;
    /// Each group's replicas, by group (as a u64).
    pub const PLACEMENT_GROUP: u8 = 0x61;
    /// The placement policy (one record).
    pub const PLACEMENT_POLICY: u8 = 0x62;
}

/// Builds keys by appending parts.
#[derive(Clone, Debug, Default)]
pub struct Key(pub Vec<u8>);

impl Key {
    /// Start a key with a group prefix.
    pub fn group(group: GroupId) -> Key {
        Key(group.0.to_be_bytes().to_vec())
    }
    /// Start a state-machine key: group, table.
    pub fn sm(group: GroupId, table: u8) -> Key {
        Key::group(group).u8(table)
    }
    /// Append a byte.
    pub fn u8(mut self, v: u8) -> Key {
        self.0.push(v);
        self
    }
    /// Append a big-endian u32.
    pub fn u32(mut self, v: u32) -> Key {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Append a big-endian u64.
    pub fn u64(mut self, v: u64) -> Key {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Append a length-prefixed string (u16 length), so strings never prefix-collide.
    pub fn str(mut self, s: &str) -> Key {
        // Ids are bounded far below 64 KiB by the command validators.
        let len = u16::try_from(s.len()).expect("key string longer than 64 KiB");
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    /// The bytes.
    pub fn build(self) -> Vec<u8> {
        self.0
    }
}

/// Log key: group, index.
pub fn log(group: GroupId, index: u64) -> Vec<u8> {
    Key::group(group).u64(index).build()
}

/// Meta key: group, kind.
pub fn meta(group: u16, kind: u8) -> Vec<u8> {
    let mut k = group.to_be_bytes().to_vec();
    k.push(kind);
    k
}

/// The smallest key after every key with `prefix` (exclusive upper bound).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xFF: no finite upper bound; callers never build such a prefix.
    vec![0xFF; prefix.len() + 1]
}

/// Reads a big-endian u64 at `at`. Keys are built by this module, so a short key is
/// a broken storage invariant.
pub fn read_u64(key: &[u8], at: usize) -> u64 {
    let bytes: [u8; 8] = key[at..at + 8]
        .try_into()
        .expect("key too short for u64 field");
    u64::from_be_bytes(bytes)
}

/// Reads a big-endian u32 at `at`.
pub fn read_u32(key: &[u8], at: usize) -> u32 {
    let bytes: [u8; 4] = key[at..at + 4]
        .try_into()
        .expect("key too short for u32 field");
    u32::from_be_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_bounds() {
        let g = GroupId(3);
        assert!(log(g, 9) < log(g, 10));
        assert!(log(g, u64::MAX) < log(GroupId(4), 0));
        assert_eq!(prefix_end(&[1, 2]), vec![1, 3]);
        assert_eq!(prefix_end(&[1, 0xFF]), vec![2]);
        // Length prefix keeps "ab"+"c" apart from "a"+"bc".
        let a = Key::sm(g, 1).str("ab").str("c").build();
        let b = Key::sm(g, 1).str("a").str("bc").build();
        assert_ne!(a, b);
        let k = Key::sm(g, 1).u64(42).u32(7).build();
        assert_eq!(read_u64(&k, 3), 42);
        assert_eq!(read_u32(&k, 11), 7);
    }
}
