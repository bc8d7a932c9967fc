//! The booking domain as it travels through the replicated log.
//!
//! A [`Request`] is what a leader appends: a [`Command`] stamped with the leader's
//! wall-clock time and, for client writes, an exactly-once [`Session`]. An
//! [`Outcome`] is what apply returns: where and when it was applied plus either an
//! [`Effect`] or a [`Rejection`]. Rejections are ordinary results (a seat was
//! taken), not errors of the system; they are remembered for retries like effects.

use std::fmt;
use std::str::FromStr;

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
/// Most events in one `CreateEvents` / `CreateInventories` command (one log entry).
pub const EVENTS_BATCH_MAX: usize = 1000;
/// Most requests a leader puts in one [`Command::Batch`] entry, whatever its
/// settings (`raft.propose_batch_max` is checked against it): the live seat-map
/// stream numbers a batch's changes within their entry and has room for this many.
pub const BATCH_REQUESTS_MAX: usize = 1000;

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
        }
    }

    /// Where a command goes in a batch: the leader orders a batch's requests by this
    /// rank (stably), so requests that free seats (confirm, release: rank 0) come
    /// before requests that take them (holds: rank 1), and everything else after
    /// (rank 2). Whoever replays applied writes in log order (the fault-injection
    /// harness) orders the requests of one entry by (log index, rank) and gets the
    /// order they were applied in wherever that order matters: two requests of one
    /// entry with the same rank never both succeed on the same seat.
    pub fn batch_rank(&self) -> u8 {
        match self {
            Command::Confirm { .. } | Command::Release { .. } => 0,
            Command::Hold(_) => 1,
            _ => 2,
        }
    }
}

/// A venue and its seat map.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VenueSpec {
    /// Display name.
    pub name: String,
    /// City, for search and display.
    pub city: String,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// Seats or general admission.
    pub layout: Layout,
}

/// How a venue sells: numbered seats or a standing capacity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Layout {
    /// Numbered seats; seat ids are assigned 0.. in section, row, number order.
    Seated {
        /// Sections in display order.
        sections: Vec<SectionSpec>,
    },
    /// A quantity of interchangeable tickets.
    GeneralAdmission {
        /// Tickets available.
        capacity: u32,
        /// Price of one ticket.
        price_cents: u64,
    },
}

impl Layout {
    /// Number of tickets this layout sells.
    pub fn capacity(&self) -> u64 {
        match self {
            Layout::Seated { sections } => sections
                .iter()
                .flat_map(|s| &s.rows)
                .map(|r| u64::from(r.seats))
                .sum(),
            Layout::GeneralAdmission { capacity, .. } => u64::from(*capacity),
        }
    }

    /// Checks names, counts and sizes; returns why the layout is unacceptable.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Layout::Seated { sections } => {
                if sections.is_empty() {
                    return Err("a seated venue needs at least one section".into());
                }
                if sections.len() > VENUE_SECTIONS_MAX {
                    return Err(format!("at most {VENUE_SECTIONS_MAX} sections"));
                }
                for s in sections {
                    check_name("section name", &s.name)?;
                    if s.rows.is_empty() {
                        return Err(format!("section {:?} has no rows", s.name));
                    }
                    if s.rows.len() > SECTION_ROWS_MAX {
                        return Err(format!(
                            "section {:?}: at most {SECTION_ROWS_MAX} rows",
                            s.name
                        ));
                    }
                    for r in &s.rows {
                        check_name("row name", &r.name)?;
                        if r.seats == 0 {
                            return Err(format!(
                                "row {:?} in section {:?} has no seats",
                                r.name, s.name
                            ));
                        }
                    }
                }
                let total = self.capacity();
                if total > u64::from(VENUE_SEATS_MAX) {
                    return Err(format!(
                        "{total} seats is more than the limit of {VENUE_SEATS_MAX}"
                    ));
                }
                Ok(())
            }
            Layout::GeneralAdmission { capacity, .. } => {
                if *capacity == 0 || *capacity > VENUE_SEATS_MAX {
                    return Err(format!("capacity must be between 1 and {VENUE_SEATS_MAX}"));
                }
                Ok(())
            }
        }
    }
}

/// Checks a name is non-empty and not too long.
pub fn check_name(what: &str, value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if value.len() > NAME_LEN_MAX {
        return Err(format!("{what} is longer than {NAME_LEN_MAX} bytes"));
    }
    Ok(())
}

/// One section of a seated venue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SectionSpec {
    /// Section name, e.g. "Floor" or "Balcony".
    pub name: String,
    /// Rows in display order.
    pub rows: Vec<RowSpec>,
}

/// One row of a section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RowSpec {
    /// Row name, e.g. "A".
    pub name: String,
    /// Seats in the row, numbered 1..=seats.
    pub seats: u32,
    /// Price of each seat in the row.
    pub price_cents: u64,
}

/// A performer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PerformerSpec {
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: String,
}

/// An event, as created by an admin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventSpec {
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Category, e.g. "concert", "sports", "theatre".
    pub category: String,
    /// Where it happens; must exist.
    pub venue_id: u64,
    /// Who performs; each must exist.
    pub performer_ids: Vec<u64>,
    /// Start time, ms since the Unix epoch.
    pub starts_at_ms: i64,
    /// How long a hold lasts.
    pub hold_ttl_ms: u64,
    /// Most tickets one user may hold or have booked for this event.
    pub per_user_cap: u32,
}

/// What the inventory shard needs to sell an event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InventorySpec {
    /// The event.
    pub event_id: u64,
    /// The venue's map at the time the event was created.
    pub layout: Layout,
    /// How long a hold lasts.
    pub hold_ttl_ms: u64,
    /// Most tickets one user may hold or have booked for this event.
    pub per_user_cap: u32,
}

/// A hold request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HoldRequest {
    /// The event.
    pub event_id: u64,
    /// The authenticated user.
    pub user: String,
    /// Which seats, or how many.
    pub selection: Selection,
}

/// What a hold asks for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Selection {
    /// These seat ids, all or nothing.
    Seats(Vec<u32>),
    /// This many tickets: general admission, or the best available seats.
    Quantity(u32),
}

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
    Held(HoldView),
    /// A hold became a booking.
    Confirmed(BookingView),
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
pub struct HoldView {
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
pub struct BookingView {
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
}

impl Rejection {
    /// Stable machine-readable code, as sent in problem+json bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::SeatUnavailable { .. } => "seat_unavailable",
            Rejection::InsufficientAvailability { .. } => "insufficient_availability",
            Rejection::CapExceeded { .. } => "cap_exceeded",
            Rejection::UnknownEvent { .. } => "unknown_event",
            Rejection::UnknownVenue { .. } => "unknown_venue",
            Rejection::UnknownPerformer { .. } => "unknown_performer",
            Rejection::UnknownHold { .. } => "unknown_hold",
            Rejection::HoldExpired { .. } => "hold_expired",
            Rejection::NotHoldOwner => "not_hold_owner",
            Rejection::HoldReleased => "hold_released",
            Rejection::HoldAlreadyConfirmed { .. } => "hold_already_confirmed",
            Rejection::InvalidInput { .. } => "invalid_input",
            Rejection::IdempotencyKeyReused => "idempotency_key_reused",
        }
    }
}

macro_rules! shard_scoped_id {
    ($name:ident, $prefix:literal, $what:literal) => {
        #[doc = concat!("Identifies a ", $what, ": the shard that owns it and its sequence number there.")]
        ///
        /// Rendered as `<prefix><shard>-<seq>`, so any node can route it to its shard.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name {
            /// Owning inventory shard (group id).
            pub shard: u16,
            /// Sequence number within the shard.
            pub seq: u64,
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}-{}"), self.shard, self.seq)
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                let bad = || format!(concat!("malformed ", $what, " id {:?}: expected ", $prefix, "<shard>-<n>"), s);
                let rest = s.strip_prefix($prefix).ok_or_else(bad)?;
                let (shard, seq) = rest.split_once('-').ok_or_else(bad)?;
                let shard: u16 = shard.parse().map_err(|_| bad())?;
                let seq: u64 = seq.parse().map_err(|_| bad())?;
                if shard == 0 {
                    return Err(bad());
                }
                Ok($name { shard, seq })
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.collect_str(self)
                } else {
                    (self.shard, self.seq).serialize(s)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = String::deserialize(d)?;
                    s.parse().map_err(serde::de::Error::custom)
                } else {
                    let (shard, seq) = <(u16, u64)>::deserialize(d)?;
                    Ok($name { shard, seq })
                }
            }
        }
    };
}

shard_scoped_id!(HoldId, "h", "hold");
shard_scoped_id!(BookingId, "b", "booking");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_render_and_parse() {
        let h = HoldId { shard: 3, seq: 17 };
        assert_eq!(h.to_string(), "h3-17");
        assert_eq!("h3-17".parse::<HoldId>().unwrap(), h);
        for bad in [
            "", "h", "h3", "h-17", "x3-17", "h0-1", "h3-", "h3-1x", "b3-17",
        ] {
            assert!(bad.parse::<HoldId>().is_err(), "{bad} parsed");
        }
        let b: BookingId = serde_json::from_str("\"b2-5\"").unwrap();
        assert_eq!(b, BookingId { shard: 2, seq: 5 });
        assert_eq!(serde_json::to_string(&b).unwrap(), "\"b2-5\"");
        let bytes = crate::codec::encode(&b);
        assert_eq!(crate::codec::decode::<BookingId>(&bytes).unwrap(), b);
    }

    #[test]
    fn layout_validation() {
        let ok = Layout::Seated {
            sections: vec![SectionSpec {
                name: "Floor".into(),
                rows: vec![RowSpec {
                    name: "A".into(),
                    seats: 10,
                    price_cents: 100,
                }],
            }],
        };
        assert!(ok.validate().is_ok());
        assert_eq!(ok.capacity(), 10);
        assert!(Layout::Seated { sections: vec![] }.validate().is_err());
        assert!(Layout::GeneralAdmission {
            capacity: 0,
            price_cents: 1
        }
        .validate()
        .is_err());
        let too_big = Layout::Seated {
            sections: vec![SectionSpec {
                name: "X".into(),
                rows: vec![RowSpec {
                    name: "A".into(),
                    seats: VENUE_SEATS_MAX + 1,
                    price_cents: 1,
                }],
            }],
        };
        assert!(too_big.validate().is_err());
    }
}
