//! State-machine records as stored in the `sm` column family (see [`crate::keys`]).
//!
//! These are the stored shapes, separate from the log's commands
//! (`boxoffice_raft::command`) and from the HTTP API's views (`boxoffice-api`):
//! each implements [`Versioned`], and changes only by the evolution rule of
//! [`boxoffice_raft::codec`]. Every type is at version 1 (the first releases'
//! shape); `storage/tests/formats.rs` decodes the bytes those releases wrote
//! (`storage/tests/golden/v1.txt`).
//!
//! - [`meta`]: a group's bookkeeping (applied log id, membership, time, ids) and
//!   its feature level.
//! - [`catalogue`]: venues, performers, events and the events' change feed.
//! - [`inventory`]: an event's tickets, holds, bookings and per-user counts.
//! - [`sessions`]: remembered answers for exactly-once retries, and how many
//!   each user has.
//! - [`outbox`]: the site's webhook endpoints, the events for them and their
//!   deliveries (feature level 2).
//! - [`payments`]: a hold's payment with the provider, refunds, cancelled
//!   bookings and the provider events already applied (feature level 2).
//! - [`queue`]: an event's waiting room, its places and admissions (feature
//!   level 3).
//! - [`placement`]: the placement directory: nodes, the replication factor and
//!   each group's replicas (feature level 4, catalogue only).

pub mod catalogue;
pub mod inventory;
pub mod meta;
pub mod outbox;
pub mod payments;
pub mod placement;
pub mod queue;
pub mod sessions;

pub use catalogue::*;
pub use inventory::*;
pub use meta::*;
pub use outbox::*;
pub use payments::*;
pub use placement::*;
pub use queue::*;
pub use sessions::*;

use boxoffice_raft::codec::Versioned;

/// Decodes `value` as the record type that `sm` table `table` holds: for code
/// that walks a whole group (the upgrade and snapshot tests, diagnostics).
pub fn check_record(table: u8, value: &[u8]) -> Result<(), String> {
    use crate::keys::table;
    fn check<T: Versioned>(v: &[u8]) -> Result<(), String> {
        boxoffice_raft::codec::decode::<T>(v)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    match table {
        table::META => check::<SmMeta>(value),
        table::FEATURES => check::<Features>(value),
        table::USER_SESSIONS => check::<UserSessions>(value),
        table::VENUE => check::<Venue>(value),
        table::PERFORMER => check::<Performer>(value),
        table::EVENT => check::<Event>(value),
        table::EVENT_CHANGED_AT => check::<ChangedAt>(value),
        table::INVENTORY => check::<Inventory>(value),
        table::TICKET => check::<Ticket>(value),
        table::HOLD => check::<Hold>(value),
        table::EXPIRY => check::<ExpiringQuantity>(value),
        table::BOOKING => check::<Booking>(value),
        table::EXPIRY_SETTLED => check::<SettledMark>(value),
        table::INVENTORY_COUNTS => check::<InventoryCounts>(value),
        table::USER_EVENT => check::<UserEvent>(value),
        table::SESSION => check::<SessionRecord>(value),
        table::PAYMENT => check::<HoldPayment>(value),
        table::REFUND => check::<Refund>(value),
        table::BOOKING_CANCEL => check::<BookingCancellation>(value),
        table::PROVIDER_EVENT => check::<SeenUntil>(value),
        table::OUTBOX => check::<OutboxEvent>(value),
        table::PAYMENT_COUNTS => check::<PaymentCounts>(value),
        table::EVENT_PAYMENTS => check::<EventPaymentSettings>(value),
        table::OUTBOX_SEQ => check::<OutboxSeq>(value),
        table::WEBHOOK_ENDPOINT => check::<WebhookEndpoint>(value),
        table::DELIVERY => check::<Delivery>(value),
        table::QUEUE => check::<Queue>(value),
        table::QUEUE_JOIN => check::<QueueJoin>(value),
        table::QUEUE_BATCH => check::<AdmissionBatch>(value),
        table::PLACEMENT_NODE => check::<NodeEntry>(value),
        table::PLACEMENT_GROUP => check::<GroupPlacement>(value),
        table::PLACEMENT_POLICY => check::<PlacementPolicy>(value),
        // Index entries: the key is everything, the value is empty.
        table::EVENT_CHANGE
        | table::USER_BOOKING
        | table::SESSION_EXPIRY
        | table::SESSION_DEADLINE
        | table::PAYMENT_DUE
        | table::REFUND_OPEN
        | table::PROVIDER_EVENT_DEADLINE
        | table::DELIVERY_DUE
            if value.is_empty() =>
        {
            Ok(())
        }
        table::EVENT_CHANGE
        | table::USER_BOOKING
        | table::SESSION_EXPIRY
        | table::SESSION_DEADLINE
        | table::PAYMENT_DUE
        | table::REFUND_OPEN
        | table::PROVIDER_EVENT_DEADLINE
        | table::DELIVERY_DUE => Err(format!("index entry with a {}-byte value", value.len())),
        other => Err(format!("no sm table {other:#04x}")),
    }
}
