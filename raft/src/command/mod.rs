//! The booking domain as it travels through the replicated log.
//!
//! A [`Request`] is what a leader appends: a [`Command`] stamped with the leader's
//! wall-clock time and, for client writes, an exactly-once [`Session`]. An
//! [`Outcome`] is what apply returns: where and when it was applied plus either an
//! [`Effect`] or a [`Rejection`]. Rejections are ordinary results (a seat was
//! taken), not errors of the system; they are remembered for retries like effects.

mod fingerprint;
mod ids;
mod outcome;
mod payments;
mod placement;
mod queue;
mod spec;

pub use fingerprint::{fingerprint, Fingerprint};
pub use ids::{BookingId, HoldId};
pub use outcome::*;
pub use payments::*;
pub use placement::*;
pub use queue::*;
pub use spec::*;

use serde::{Deserialize, Serialize};

/// Longest client id accepted in a session (bytes).
pub const CLIENT_ID_LEN_MAX: usize = 128;
/// Longest idempotency key accepted (bytes).
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 128;
/// Longest name (venue, section, row, performer, event) accepted (bytes).
pub const NAME_LEN_MAX: usize = 200;
/// Longest description accepted (bytes).
pub const DESCRIPTION_LEN_MAX: usize = 4000;
/// Most seats a venue map may have; bounds event creation and seat-map size.
pub const VENUE_SEATS_MAX: u32 = 200_000;
/// Most sections in a venue map.
pub const VENUE_SECTIONS_MAX: usize = 500;
/// Most rows in one section.
pub const SECTION_ROWS_MAX: usize = 500;
/// Most performers on one event.
pub const EVENT_PERFORMERS_MAX: usize = 50;
/// Longest hold time-to-live an event may configure (1 day).
pub const HOLD_TTL_MS_MAX: u64 = 24 * 3600 * 1000;
/// Shortest hold time-to-live an event may configure (1 second).
pub const HOLD_TTL_MS_MIN: u64 = 1000;
/// Hold time-to-live used when an event does not set one (10 minutes).
pub const HOLD_TTL_MS_DEFAULT: u64 = 600_000;
/// Per-user cap used when an event does not set one.
pub const PER_USER_CAP_DEFAULT: u32 = 8;
/// Most seats (or general-admission tickets) one hold may take, whatever the cap.
pub const HOLD_SEATS_MAX: u32 = 100;
/// Highest price of one ticket (cents): ten million in the currency. With at most
/// [`HOLD_SEATS_MAX`] tickets a hold, a hold's total fits a `u64` many times over.
pub const PRICE_CENTS_MAX: u64 = 1_000_000_000;
/// Highest per-user cap an event may set: more than any venue holds.
pub const PER_USER_CAP_MAX: u32 = VENUE_SEATS_MAX;
/// Latest time a command may be stamped with, and so the latest state-machine
/// time (2200-01-01T00:00:00Z): a stamp past it is refused at apply, so no time
/// arithmetic (expiries, session lifetimes) can overflow.
pub const STAMP_MS_MAX: u64 = 7_258_118_400_000;
/// Earliest start an event may have (the Unix epoch).
pub const STARTS_AT_MS_MIN: i64 = 0;
/// Latest start an event may have (the same bound as stamps).
pub const STARTS_AT_MS_MAX: i64 = STAMP_MS_MAX as i64;
/// Longest payment reference accepted (bytes).
pub const PAYMENT_REF_LEN_MAX: usize = NAME_LEN_MAX;
/// Most events in one `CreateEvents` / `CreateInventories` command (one log entry).
pub const EVENTS_BATCH_MAX: usize = 1000;
/// Most requests a leader puts in one [`Command::Batch`] entry, whatever its
/// settings (`raft.propose_batch_max` is checked against it): the live seat-map
/// stream numbers a batch's changes within their entry and has room for this many.
pub const BATCH_REQUESTS_MAX: usize = 1000;

/// The highest feature level this build applies (see [`Command::EnableFeatures`]).
///
/// A feature level names replicated behaviour that changed after the first
/// releases: every replica of a group must switch at the same log index, so a
/// group switches when its log says so, never when a node is upgraded. Levels:
///
/// - **0**: the first releases. Every answer is remembered for 24 h.
/// - **1**: bounded sessions. A refused request's answer is remembered for 10
///   minutes instead of 24 h, and each user has a bounded number of live
///   sessions per group (`boxoffice_storage::machine::USER_SESSIONS_MAX`);
///   past it, a user request is refused with [`Rejection::TooManySessions`]
///   and leaves nothing behind.
/// - **2**: payments. Checkout, the provider's word on a payment, booking
///   cancellation and refunds ([`Command::Checkout`] to
///   [`Command::RefundUpdate`]); below it they are refused with
///   [`Rejection::FeatureNotEnabled`].
/// - **3**: the virtual waiting room ([`Command::SetQueue`] to
///   [`Command::AdmittedHold`]); below it they are refused with
///   [`Rejection::FeatureNotEnabled`], and no hold needs an admission.
/// - **4**: the placement directory ([`Command::SetPlacement`], catalogue):
///   which nodes hold each group's replicas; below it refused with
///   [`Rejection::FeatureNotEnabled`], and every node hosts every group.
pub const FEATURE_LEVEL_MAX: u32 = 4;
/// The feature level payments need.
pub const FEATURE_LEVEL_PAYMENTS: u32 = 2;

/// One entry's application payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Leader wall-clock time in ms since the Unix epoch when the command was
    /// proposed. Apply uses `max(stamp_ms, last applied time)`; it never reads a clock.
    pub stamp_ms: u64,
    /// Exactly-once session; `None` for commands the cluster issues itself.
    pub session: Option<Session>,
    /// What to do.
    pub command: Command,
}

/// Identifies a client's request for exactly-once execution.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Session {
    /// Who is asking: the authenticated user (or admin) id.
    pub client_id: String,
    /// The client's key for this request; a retry reuses it and gets the first answer.
    pub idempotency_key: String,
}

/// A state-machine command.
///
/// Stored in the log and sent between nodes: variants are only ever added at the
/// end, and an existing variant's payload never changes (see the evolution rule
/// in [`crate::codec`]). Adding one is a checklist in `ARCHITECTURE.md`; the
/// compiler finds every match that must handle it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Catalogue: add a venue with its seat map.
    CreateVenue(VenueSpec),
    /// Catalogue: add a performer.
    CreatePerformer(PerformerSpec),
    /// Catalogue: add an event; the outcome carries the inventory to create on the shard.
    CreateEvent(EventSpec),
    /// Inventory: create an event's tickets from its venue map. Idempotent per event.
    CreateInventory(InventorySpec),
    /// Inventory: hold seats (all or nothing) for a user until the hold expires.
    Hold(HoldRequest),
    /// Inventory: turn a live hold into a confirmed booking.
    Confirm {
        /// The hold to confirm.
        hold_id: HoldId,
        /// The authenticated user; must own the hold.
        user: String,
        /// The payment reference recorded with the booking.
        payment_ref: String,
    },
    /// Inventory: give a hold's seats back at once.
    Release {
        /// The hold to release.
        hold_id: HoldId,
        /// The authenticated user; must own the hold.
        user: String,
    },
    /// Any group: advances state-machine time to the leader's stamp. The leader
    /// appends one when its group has been idle, so every replica can tell how far
    /// behind it is from its applied time alone.
    Tick,
    /// Catalogue: add many events in one entry, all or none (bulk loading).
    CreateEvents(Vec<EventSpec>),
    /// Catalogue: change an event's descriptive fields. Venue, performers, hold
    /// lifetime and cap are fixed once the event's inventory exists.
    UpdateEvent {
        /// The event.
        event_id: u64,
        /// The fields to change.
        patch: EventPatch,
    },
    /// Inventory: `CreateInventory` for many events; idempotent per event.
    CreateInventories(Vec<InventorySpec>),
    /// Any group: several client requests in one log entry, applied one after
    /// another in this order, each as if it had an entry of its own (its own stamp,
    /// exactly-once session and outcome). The leader gathers the requests waiting
    /// for the same group into one entry, so one fsync and one Raft round carry them
    /// all. Its outcome is [`Effect::Batch`]. The leader puts them in
    /// [`Command::batch_rank`] order; a batch never contains a batch.
    Batch(Vec<Request>),
    /// Any group: raises the group's feature level (see [`FEATURE_LEVEL_MAX`]).
    /// Levels never go down; enabling the current level again changes nothing.
    /// A leader proposes it once every member of the group has said it applies
    /// that level; a replica whose build does not know the level stops (as it
    /// would on a command it cannot decode) rather than apply it differently.
    EnableFeatures {
        /// The level to reach.
        level: u32,
    },
    /// Inventory (level 2): the hold's payment was created with the provider;
    /// the hold waits for it (`payment_pending`), a little longer than it would have.
    Checkout(CheckoutRequest),
    /// Inventory (level 2): the provider says the payment succeeded. The hold is
    /// booked; if it expired and its seats are still free they are taken and
    /// booked at once; otherwise a refund is owed.
    PaymentSucceeded(PaymentNotice),
    /// Inventory (level 2): the provider says the payment failed or was
    /// cancelled. A live hold is active again; an expired one is closed.
    PaymentFailed(PaymentNotice),
    /// Inventory (level 2): cancel a booking; its seats are available again and
    /// its payment, if made through the provider, is owed back.
    CancelBooking {
        /// The booking.
        booking_id: BookingId,
        /// The owner cancelling it; `None` for an admin.
        user: Option<String>,
        /// Refused after this state-machine time (the event's cancellation
        /// cutoff, worked out by the node from the catalogue); `None`: no cutoff.
        not_after_ms: Option<u64>,
    },
    /// Inventory (level 2): where a refund stands with the provider.
    RefundUpdate {
        /// The payment refunded.
        payment_id: String,
        /// What the provider said.
        report: RefundReport,
        /// The provider event that said so, if it came by webhook.
        provider_event: Option<String>,
    },
    /// Inventory (level 2): register or change an endpoint of the site's
    /// outgoing webhooks (an admin's; proposed to every shard).
    SetWebhookEndpoint(WebhookEndpointSpec),
    /// Inventory (level 2): what a delivery attempt of an outgoing webhook got.
    DeliveryReport(DeliveryAttempt),
    /// Inventory (level 2): queue an outgoing webhook again (an admin's replay).
    ReplayDelivery {
        /// The endpoint.
        endpoint: String,
        /// The outbox entry.
        seq: u64,
    },
    /// Catalogue (level 2): an event's own payment settings (grace, maximum
    /// hold with a payment in flight, cancellation cutoff), read by the node
    /// that makes a checkout or a cancellation.
    SetEventPayments {
        /// The event.
        event_id: u64,
        /// The settings.
        settings: EventPayments,
    },
    /// Inventory (level 3): create or change an event's waiting room. The
    /// sale's start and the order may change only until the sale starts.
    SetQueue {
        /// The event.
        event_id: u64,
        /// How it runs.
        spec: QueueSpec,
        /// Shuffles the pre-queue (drawn by the node that proposes; only the
        /// first configuration's is kept, and it is never shown).
        seed: u64,
    },
    /// Inventory (level 3): pause, resume, close or open an event's queue.
    QueueControl {
        /// The event.
        event_id: u64,
        /// What to do.
        action: QueueAction,
    },
    /// Inventory (level 3): a user takes a place in an event's queue, or is
    /// told the one they hold. Proposed without a session: it is idempotent.
    JoinQueue {
        /// The event.
        event_id: u64,
        /// The authenticated user.
        user: String,
    },
    /// Inventory (level 3): the shard leader's tick of an event's queue: ends
    /// the sessions whose time is up and admits users at the queue's rate.
    AdmitQueue {
        /// The event.
        event_id: u64,
    },
    /// Inventory (level 3): a hold by an admitted user; while the event's
    /// queue is on, a plain [`Command::Hold`] is refused.
    AdmittedHold {
        /// The hold.
        hold: HoldRequest,
        /// The queue ticket the user's admission names.
        ticket: u64,
    },
    /// Catalogue (level 4): updates the placement directory (nodes, the
    /// replication factor, groups' replicas; a group's entry only if newer).
    SetPlacement(PlacementUpdate),
}

/// Fields of an event that may change after creation; `None` leaves one as is.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EventPatch {
    /// New display name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New category.
    pub category: Option<String>,
    /// New start time, ms since the Unix epoch.
    pub starts_at_ms: Option<i64>,
}

impl EventPatch {
    /// True when the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.description.is_none()
            && self.category.is_none()
            && self.starts_at_ms.is_none()
    }
}

impl Command {
    /// Short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::CreateVenue(_) => "create_venue",
            Command::CreatePerformer(_) => "create_performer",
            Command::CreateEvent(_) => "create_event",
            Command::CreateInventory(_) => "create_inventory",
            Command::Hold(_) => "hold",
            Command::Confirm { .. } => "confirm",
            Command::Release { .. } => "release",
            Command::Tick => "tick",
            Command::CreateEvents(_) => "create_events",
            Command::UpdateEvent { .. } => "update_event",
            Command::CreateInventories(_) => "create_inventories",
            Command::Batch(_) => "batch",
            Command::EnableFeatures { .. } => "enable_features",
            Command::Checkout(_) => "checkout",
            Command::PaymentSucceeded(_) => "payment_succeeded",
            Command::PaymentFailed(_) => "payment_failed",
            Command::CancelBooking { .. } => "cancel_booking",
            Command::RefundUpdate { .. } => "refund_update",
            Command::SetWebhookEndpoint(_) => "set_webhook_endpoint",
            Command::DeliveryReport(_) => "delivery_report",
            Command::ReplayDelivery { .. } => "replay_delivery",
            Command::SetEventPayments { .. } => "set_event_payments",
            Command::SetQueue { .. } => "set_queue",
            Command::QueueControl { .. } => "queue_control",
            Command::JoinQueue { .. } => "join_queue",
            Command::AdmitQueue { .. } => "admit_queue",
            Command::AdmittedHold { .. } => "admitted_hold",
            Command::SetPlacement(_) => "set_placement",
        }
    }

    /// Where a command goes in a batch: the leader orders a batch's requests by this
    /// rank (stably), so requests that free seats come before requests that take
    /// them, and everything else after. Whoever replays applied writes in log order
    /// (the fault-injection harness) orders the requests of one entry by (log index,
    /// rank) and gets the order they were applied in wherever that order matters:
    /// two requests of one entry with the same rank never both succeed on the same
    /// seat.
    pub fn batch_rank(&self) -> BatchRank {
        match self {
            Command::Confirm { .. }
            | Command::Release { .. }
            | Command::PaymentFailed(_)
            | Command::CancelBooking { .. } => BatchRank::FreesSeats,
            // A payment that succeeds after its hold expired takes its seats again.
            Command::Hold(_) | Command::PaymentSucceeded(_) | Command::AdmittedHold { .. } => {
                BatchRank::TakesSeats
            }
            Command::CreateVenue(_)
            | Command::CreatePerformer(_)
            | Command::CreateEvent(_)
            | Command::CreateInventory(_)
            | Command::Tick
            | Command::CreateEvents(_)
            | Command::UpdateEvent { .. }
            | Command::CreateInventories(_)
            | Command::Batch(_)
            | Command::EnableFeatures { .. }
            | Command::Checkout(_)
            | Command::RefundUpdate { .. }
            | Command::SetWebhookEndpoint(_)
            | Command::DeliveryReport(_)
            | Command::ReplayDelivery { .. }
            | Command::SetEventPayments { .. }
            | Command::SetQueue { .. }
            | Command::QueueControl { .. }
            | Command::JoinQueue { .. }
            | Command::AdmitQueue { .. }
            | Command::SetPlacement(_) => BatchRank::Other,
        }
    }

    /// True for the commands any group takes (the catalogue and every shard).
    pub fn is_any_group(&self) -> bool {
        matches!(self, Command::Tick | Command::EnableFeatures { .. })
    }

    /// The user a user's own request acts for (holds, confirms, releases); `None`
    /// for the commands of admins, of the payment provider and of the cluster itself. From feature level
    /// 1, the sessions of user requests are counted per user and bounded.
    pub fn user(&self) -> Option<&str> {
        match self {
            Command::Hold(h) => Some(&h.user),
            Command::Confirm { user, .. } | Command::Release { user, .. } => Some(user),
            Command::Checkout(c) => Some(&c.user),
            Command::CancelBooking { user, .. } => user.as_deref(),
            Command::JoinQueue { user, .. } => Some(user),
            Command::AdmittedHold { hold, .. } => Some(&hold.user),
            Command::SetQueue { .. }
            | Command::QueueControl { .. }
            | Command::AdmitQueue { .. } => None,
            Command::PaymentSucceeded(_)
            | Command::PaymentFailed(_)
            | Command::RefundUpdate { .. }
            | Command::SetWebhookEndpoint(_)
            | Command::DeliveryReport(_)
            | Command::ReplayDelivery { .. }
            | Command::SetEventPayments { .. }
            | Command::SetPlacement(_)
            | Command::CreateVenue(_)
            | Command::CreatePerformer(_)
            | Command::CreateEvent(_)
            | Command::CreateInventory(_)
            | Command::Tick
            | Command::CreateEvents(_)
            | Command::UpdateEvent { .. }
            | Command::CreateInventories(_)
            | Command::Batch(_)
            | Command::EnableFeatures { .. } => None,
        }
    }

    /// True for commands of the catalogue group; every other command but those
    /// any group takes ([`Command::is_any_group`]) belongs to an inventory shard.
    pub fn is_catalogue(&self) -> bool {
        match self {
            Command::CreateVenue(_)
            | Command::CreatePerformer(_)
            | Command::CreateEvent(_)
            | Command::CreateEvents(_)
            | Command::UpdateEvent { .. }
            | Command::SetEventPayments { .. }
            | Command::SetPlacement(_) => true,
            Command::CreateInventory(_)
            | Command::Hold(_)
            | Command::Confirm { .. }
            | Command::Release { .. }
            | Command::Tick
            | Command::CreateInventories(_)
            | Command::Batch(_)
            | Command::EnableFeatures { .. }
            | Command::Checkout(_)
            | Command::PaymentSucceeded(_)
            | Command::PaymentFailed(_)
            | Command::CancelBooking { .. }
            | Command::RefundUpdate { .. }
            | Command::SetWebhookEndpoint(_)
            | Command::DeliveryReport(_)
            | Command::ReplayDelivery { .. }
            | Command::SetQueue { .. }
            | Command::QueueControl { .. }
            | Command::JoinQueue { .. }
            | Command::AdmitQueue { .. }
            | Command::AdmittedHold { .. } => false,
        }
    }

    /// The feature level a group must be at to apply this command (below it,
    /// [`Rejection::FeatureNotEnabled`]).
    pub fn level_needed(&self) -> u32 {
        match self {
            Command::Checkout(_)
            | Command::PaymentSucceeded(_)
            | Command::PaymentFailed(_)
            | Command::CancelBooking { .. }
            | Command::RefundUpdate { .. }
            | Command::SetWebhookEndpoint(_)
            | Command::DeliveryReport(_)
            | Command::ReplayDelivery { .. }
            | Command::SetEventPayments { .. } => FEATURE_LEVEL_PAYMENTS,
            Command::SetQueue { .. }
            | Command::QueueControl { .. }
            | Command::JoinQueue { .. }
            | Command::AdmitQueue { .. }
            | Command::AdmittedHold { .. } => FEATURE_LEVEL_QUEUE,
            Command::SetPlacement(_) => FEATURE_LEVEL_PLACEMENT,
            Command::CreateVenue(_)
            | Command::CreatePerformer(_)
            | Command::CreateEvent(_)
            | Command::CreateInventory(_)
            | Command::Hold(_)
            | Command::Confirm { .. }
            | Command::Release { .. }
            | Command::Tick
            | Command::CreateEvents(_)
            | Command::UpdateEvent { .. }
            | Command::CreateInventories(_)
            | Command::Batch(_)
            | Command::EnableFeatures { .. } => 0,
        }
    }
}

/// The order of a batch's requests (see [`Command::batch_rank`]): lower first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BatchRank {
    /// Confirms and releases: they free seats, or keep them from being taken.
    FreesSeats = 0,
    /// Holds: they take seats.
    TakesSeats = 1,
    /// Everything else.
    Other = 2,
}
