//! Request and response types of the public and admin API.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Read consistency.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Consistency {
    /// From the answering node's replica (fast; says how fresh it is).
    #[default]
    Local,
    /// After a read index from the leader.
    Linearizable,
}

impl Consistency {
    /// Query-string value.
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Local => "local",
            Consistency::Linearizable => "linearizable",
        }
    }
}

/// What a hold asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// These seats, all or nothing.
    Seats(Vec<u32>),
    /// This many tickets (general admission, or best available seats).
    Quantity(u32),
}

/// Where and when a write was applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct AppliedAt {
    /// Group (0 = catalogue, 1.. = inventory shard).
    pub shard: u16,
    /// Log index.
    pub index: u64,
    /// State-machine time, ms since the Unix epoch.
    pub time_ms: u64,
}

/// How fresh a read is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct Freshness {
    /// Group read.
    pub shard: u16,
    /// Last applied log index of the answering replica.
    pub applied_index: u64,
    /// Its state-machine time.
    pub applied_time_ms: u64,
    /// Time the answer was judged at.
    pub as_of_ms: u64,
}

/// A granted hold.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Hold {
    /// Id, e.g. `h3-17`.
    pub hold_id: String,
    /// Event.
    pub event_id: u64,
    /// Seats held (empty for general admission).
    pub seat_ids: Vec<u32>,
    /// Tickets held.
    pub quantity: u32,
    /// Sum of prices.
    pub total_cents: u64,
    /// Expiry (state-machine time, ms).
    pub expires_at_ms: u64,
    /// Where and when it was applied.
    pub applied: AppliedAt,
    /// True when this is the remembered answer to an earlier identical request.
    pub replayed: bool,
}

/// A hold's status.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct HoldStatus {
    /// Id.
    pub hold_id: String,
    /// Event.
    pub event_id: u64,
    /// Seats.
    pub seat_ids: Vec<u32>,
    /// Tickets.
    pub quantity: u32,
    /// Expiry.
    pub expires_at_ms: u64,
    /// `active`, `expired`, `confirmed` or `released`.
    pub status: String,
    /// The booking, when confirmed.
    pub booking_id: Option<String>,
}

/// A confirmed booking.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Booking {
    /// Id, e.g. `b3-18`.
    pub booking_id: String,
    /// Always `confirmed`.
    pub status: String,
    /// The hold it came from.
    pub hold_id: String,
    /// Event.
    pub event_id: u64,
    /// Seats.
    pub seat_ids: Vec<u32>,
    /// Tickets.
    pub quantity: u32,
    /// Sum of prices.
    pub total_cents: u64,
    /// Payment reference.
    pub payment_ref: String,
    /// Confirm time (state-machine time, ms).
    pub confirmed_at_ms: u64,
    /// Where and when the confirm was applied (write answers only).
    #[serde(default)]
    pub applied: Option<AppliedAt>,
    /// Remembered answer (write answers only).
    #[serde(default)]
    pub replayed: Option<bool>,
}

/// A seat on a seat map.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Seat {
    /// Seat id.
    pub seat_id: u32,
    /// Section.
    pub section: String,
    /// Row.
    pub row: String,
    /// Number in the row.
    pub number: u32,
    /// Price.
    pub price_cents: u64,
    /// `available`, `held` or `sold`.
    pub status: String,
}

/// An event's availability.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct SeatMap {
    /// Event.
    pub event_id: u64,
    /// General admission (no seats listed).
    pub general_admission: bool,
    /// Tickets in total.
    pub capacity: u32,
    /// Available now.
    pub available: u32,
    /// In live holds.
    pub held: u32,
    /// Sold.
    pub sold: u32,
    /// Seats (seated events).
    #[serde(default)]
    pub seats: Vec<Seat>,
    /// Freshness.
    pub freshness: Freshness,
}

/// An event with venue and performers.
#[derive(Clone, Debug, Deserialize)]
pub struct EventView {
    /// Event fields.
    pub event: EventInfo,
    /// Venue fields.
    pub venue: Option<Value>,
    /// Performers.
    pub performers: Vec<Value>,
    /// Freshness.
    pub freshness: Freshness,
}

/// Event fields.
#[derive(Clone, Debug, Deserialize)]
pub struct EventInfo {
    /// Id.
    pub event_id: u64,
    /// Name.
    pub name: String,
    /// Category.
    pub category: String,
    /// Start, ms since the Unix epoch.
    pub starts_at_ms: i64,
    /// Owning shard.
    pub shard: Option<u16>,
}

/// A page of events.
#[derive(Clone, Debug, Deserialize)]
pub struct EventPage {
    /// Events.
    pub events: Vec<EventView>,
    /// Pass as `after` for the next page; `None` at the end.
    pub next_after: Option<u64>,
}

/// A venue to create.
#[derive(Clone, Debug)]
pub struct NewVenue {
    /// Name.
    pub name: String,
    /// City.
    pub city: String,
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
    /// Seats or capacity.
    pub layout: NewLayout,
}

/// A venue's layout.
#[derive(Clone, Debug)]
pub enum NewLayout {
    /// Sections of rows: (section, [(row, seats, price_cents)]).
    Seated(Vec<(String, Vec<(String, u32, u64)>)>),
    /// General admission.
    GeneralAdmission {
        /// Capacity.
        capacity: u32,
        /// Price.
        price_cents: u64,
    },
}

impl NewVenue {
    pub(crate) fn to_json(&self) -> Value {
        let mut v = json!({"name": self.name, "city": self.city, "lat": self.lat, "lon": self.lon});
        match &self.layout {
            NewLayout::Seated(sections) => {
                v["sections"] = sections
                    .iter()
                    .map(|(name, rows)| {
                        json!({"name": name, "rows": rows.iter().map(|(r, n, p)| json!({"name": r, "seats": n, "price_cents": p})).collect::<Vec<_>>()})
                    })
                    .collect();
            }
            NewLayout::GeneralAdmission { capacity, price_cents } => {
                v["general_admission"] = json!({"capacity": capacity, "price_cents": price_cents});
            }
        }
        v
    }
}

/// An event to create.
#[derive(Clone, Debug, Serialize)]
pub struct NewEvent {
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Category.
    pub category: String,
    /// Venue.
    pub venue_id: u64,
    /// Performers.
    pub performer_ids: Vec<u64>,
    /// Start, RFC 3339.
    pub starts_at: String,
    /// Hold lifetime in seconds (default 600).
    pub hold_ttl_s: Option<u64>,
    /// Per-user cap (default 8).
    pub per_user_cap: Option<u32>,
}
