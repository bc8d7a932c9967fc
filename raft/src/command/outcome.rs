//! What apply returns: where and when, and an effect or a rejection.
//!
//! These are log-format types too: a node remembers outcomes for exactly-once
//! retries (`SessionRecord`) and sends them between nodes, so they change only by
//! the evolution rule of [`crate::codec`] (variants added at the end).

use serde::{Deserialize, Serialize};

use super::{BookingId, HoldId, InventorySpec, PaymentEffect, QueueEffect, WebhookEffect};

/// Result of applying one entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Where and when it was applied (for a replayed answer: the first application).
    pub applied: Applied,
    /// True when this answer was remembered from an earlier request with the same key.
    pub replayed: bool,
    /// What happened.
    pub result: Result<Effect, Rejection>,
}

/// Position and state-machine time of an applied entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Log index of the entry.
    pub index: u64,
    /// State-machine time (ms since the Unix epoch) at which it was applied.
    pub time_ms: u64,
}

/// The successful result of a command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Effect {
    /// Blank or membership entry.
    Nothing,
    /// A venue was created.
    VenueCreated {
        /// Its id.
        venue_id: u64,
    },
    /// A performer was created.
    PerformerCreated {
        /// Its id.
        performer_id: u64,
    },
    /// An event was created in the catalogue.
    EventCreated {
        /// Its id.
        event_id: u64,
        /// The inventory the owning shard must create.
        inventory: InventorySpec,
    },
    /// An event's inventory exists on its shard.
    InventoryCreated {
        /// The event.
        event_id: u64,
    },
    /// Seats are held.
    Held(GrantedHold),
    /// A hold became a booking.
    Confirmed(ConfirmedBooking),
    /// A hold was released.
    Released {
        /// The hold.
        hold_id: HoldId,
        /// Its event.
        event_id: u64,
        /// Seats this release made available (an expired hold's seats may already
        /// belong to another hold, and are not listed).
        seat_ids: Vec<u32>,
        /// Tickets this release made available (0 if the hold had expired).
        quantity: u32,
    },
    /// Events were created in the catalogue, in request order.
    EventsCreated {
        /// Each event's id and the inventory its shard must create.
        events: Vec<CreatedEvent>,
    },
    /// An event's descriptive fields changed.
    EventUpdated {
        /// The event.
        event_id: u64,
    },
    /// Inventories exist on this shard (created now or before).
    InventoriesCreated {
        /// The events, in request order.
        event_ids: Vec<u64>,
    },
    /// The outcomes of a [`Command::Batch`]'s requests, in its order.
    Batch(Vec<Outcome>),
    /// What a payment command did (feature level 2).
    Payment(PaymentEffect),
    /// What a webhook command did (feature level 2).
    Webhooks(WebhookEffect),
    /// What a waiting-room command did (feature level 3).
    Queue(QueueEffect),
    /// The placement directory was updated (feature level 4).
    PlacementSet {
        /// Groups whose entry was not newer than the stored one, left as they were.
        stale_groups: Vec<u16>,
    },
}

/// One event of a `CreateEvents` batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreatedEvent {
    /// Its id.
    pub event_id: u64,
    /// The inventory the owning shard must create.
    pub inventory: InventorySpec,
}

/// A hold as shown to its owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantedHold {
    /// The hold.
    pub hold_id: HoldId,
    /// The event.
    pub event_id: u64,
    /// Seats held (empty for general admission).
    pub seat_ids: Vec<u32>,
    /// Tickets held.
    pub quantity: u32,
    /// State-machine time at which the hold stops being live.
    pub expires_at_ms: u64,
    /// Sum of the held tickets' prices.
    pub total_cents: u64,
}

/// A confirmed booking.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmedBooking {
    /// The booking.
    pub booking_id: BookingId,
    /// The hold it came from.
    pub hold_id: HoldId,
    /// The event.
    pub event_id: u64,
    /// Who booked.
    pub user: String,
    /// Seats booked (empty for general admission).
    pub seat_ids: Vec<u32>,
    /// Tickets booked.
    pub quantity: u32,
    /// Sum of the booked tickets' prices.
    pub total_cents: u64,
    /// Payment reference given at confirm.
    pub payment_ref: String,
    /// State-machine time of the confirm.
    pub confirmed_at_ms: u64,
}

/// Why a command was refused. Nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    /// Some requested seats are held or sold.
    #[error("seats not available: {seat_ids:?}")]
    SeatUnavailable {
        /// The seats already taken.
        seat_ids: Vec<u32>,
    },
    /// Not enough tickets left for a quantity hold.
    #[error("only {available} tickets available, {requested} requested")]
    InsufficientAvailability {
        /// Asked for.
        requested: u32,
        /// Left.
        available: u32,
    },
    /// The user's per-event cap would be passed.
    #[error(
        "per-user cap of {cap} would be exceeded: {current} held or booked, {requested} requested"
    )]
    CapExceeded {
        /// The event's cap.
        cap: u32,
        /// Tickets the user holds (live) or has booked.
        current: u32,
        /// Tickets asked for.
        requested: u32,
    },
    /// No such event (on this shard).
    #[error("unknown event {event_id}")]
    UnknownEvent {
        /// The id asked for.
        event_id: u64,
    },
    /// No such venue.
    #[error("unknown venue {venue_id}")]
    UnknownVenue {
        /// The id asked for.
        venue_id: u64,
    },
    /// No such performer.
    #[error("unknown performer {performer_id}")]
    UnknownPerformer {
        /// The id asked for.
        performer_id: u64,
    },
    /// No such hold.
    #[error("unknown hold {hold_id}")]
    UnknownHold {
        /// The id asked for.
        hold_id: HoldId,
    },
    /// The hold expired before the command applied.
    #[error("hold expired at {expired_at_ms}")]
    HoldExpired {
        /// When it expired (state-machine time).
        expired_at_ms: u64,
    },
    /// The hold belongs to another user.
    #[error("hold belongs to another user")]
    NotHoldOwner,
    /// The hold was released.
    #[error("hold was released")]
    HoldReleased,
    /// The hold was already confirmed.
    #[error("hold already confirmed as {booking_id}")]
    HoldAlreadyConfirmed {
        /// The booking it became.
        booking_id: BookingId,
    },
    /// The command is malformed (caught at apply as a last line of defence).
    #[error("invalid input: {reason}")]
    InvalidInput {
        /// What is wrong.
        reason: String,
    },
    /// The idempotency key was used before for a different request.
    #[error("idempotency key already used for a different request")]
    IdempotencyKeyReused,
    /// The user has as many live sessions in this group as a user may (from
    /// feature level 1): nothing was done, and nothing is remembered.
    #[error(
        "{max} requests of this user are remembered for retries already; a request's answer is kept 24 h (10 min for a refusal)"
    )]
    TooManySessions {
        /// The bound.
        max: u32,
    },
    /// The command needs a feature level the group has not reached yet (every
    /// member must allow it first; see `FEATURE_LEVEL_MAX`).
    #[error("this needs feature level {needed}; the group is at level {level}")]
    FeatureNotEnabled {
        /// The level the command needs.
        needed: u32,
        /// The group's level.
        level: u32,
    },
    /// The hold's payment is in flight with the provider: it is booked or
    /// reopened when the provider says how it went, not before.
    #[error("a payment is in flight for this hold ({payment_id})")]
    PaymentInFlight {
        /// The provider's payment id.
        payment_id: String,
    },
    /// No such booking (on this shard).
    #[error("unknown booking {booking_id}")]
    UnknownBooking {
        /// The id asked for.
        booking_id: BookingId,
    },
    /// The booking belongs to another user.
    #[error("booking belongs to another user")]
    NotBookingOwner,
    /// The booking was cancelled already.
    #[error("booking was cancelled")]
    BookingCancelled,
    /// The event's cancellation cutoff has passed.
    #[error("cancellation closed at {closed_at_ms}")]
    CancellationClosed {
        /// The cutoff (state-machine time).
        closed_at_ms: u64,
    },
    /// The event has no waiting room.
    #[error("event {event_id} has no queue")]
    NoQueue {
        /// The event.
        event_id: u64,
    },
    /// The queue takes joins from a later time.
    #[error("the queue opens at {opens_at_ms}")]
    QueueNotOpen {
        /// When it opens (ms since the Unix epoch).
        opens_at_ms: u64,
    },
    /// The queue takes no more joins.
    #[error("the queue is closed")]
    QueueClosed,
    /// The queue has handed out as many places as a queue may.
    #[error("the queue is full ({max} places)")]
    QueueFull {
        /// The bound.
        max: u64,
    },
    /// The event's queue is on and this hold has no admitted, live session.
    #[error("a hold on this event needs an admission from its queue: {reason}")]
    QueueAdmissionRequired {
        /// Why the admission given (if any) does not do.
        reason: String,
    },
}
