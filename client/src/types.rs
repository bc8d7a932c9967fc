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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

/// One row of a compact seat map.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct SeatRow {
    /// Section.
    pub section: String,
    /// Row.
    pub row: String,
    /// Seat id of seat number 1; seat number n is `first_seat_id + n - 1`.
    pub first_seat_id: u32,
    /// Price of each seat.
    pub price_cents: u64,
    /// One character per seat in number order: `a` available, `h` held, `s` sold.
    pub status: String,
}

impl SeatRow {
    /// The row's seats as (seat id, status word as in [`Seat::status`]:
    /// `available`, `held`, `sold`, or `unknown` for a character this client does
    /// not know).
    pub fn seats(&self) -> impl Iterator<Item = (u32, &'static str)> + '_ {
        self.status.chars().enumerate().map(|(i, c)| {
            let status = match c {
                'a' => "available",
                'h' => "held",
                's' => "sold",
                _ => "unknown",
            };
            (self.first_seat_id + i as u32, status)
        })
    }
}

/// An event's availability row by row (see [`crate::Client::seat_rows`]).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct SeatRows {
    /// Event.
    pub event_id: u64,
    /// General admission (no rows).
    pub general_admission: bool,
    /// Tickets in total.
    pub capacity: u32,
    /// Available now.
    pub available: u32,
    /// In live holds.
    pub held: u32,
    /// Sold.
    pub sold: u32,
    /// Rows (seated events).
    #[serde(default)]
    pub rows: Vec<SeatRow>,
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
            NewLayout::GeneralAdmission {
                capacity,
                price_cents,
            } => {
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

/// Changes to an event's descriptive fields; `None` leaves a field as is.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EventUpdate {
    /// New name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// New description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// New category.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// New start, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<String>,
}

/// A search: every field optional; combine freely.
#[derive(Clone, Debug, Default)]
pub struct SearchQuery {
    /// Keywords (typo-tolerant; the last word also matches as a prefix).
    pub q: Option<String>,
    /// Start time lower bound, RFC 3339.
    pub from: Option<String>,
    /// Start time upper bound, RFC 3339.
    pub to: Option<String>,
    /// City (exact, case-insensitive).
    pub city: Option<String>,
    /// Category (exact, case-insensitive).
    pub category: Option<String>,
    /// Performer id.
    pub performer_id: Option<u64>,
    /// Venue id.
    pub venue_id: Option<u64>,
    /// Order by start time instead of relevance.
    pub sort_by_date: bool,
    /// Only events with tickets available.
    pub available_only: bool,
    /// Results per page (server default 20, at most 100).
    pub page_size: Option<u32>,
    /// `next_page_token` of the previous page.
    pub page_token: Option<String>,
}

fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl SearchQuery {
    /// The query string.
    pub fn to_query_string(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut add = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                parts.push(format!("{k}={}", encode_component(&v)));
            }
        };
        add("q", self.q.clone());
        add("from", self.from.clone());
        add("to", self.to.clone());
        add("city", self.city.clone());
        add("category", self.category.clone());
        add("performer_id", self.performer_id.map(|v| v.to_string()));
        add("venue_id", self.venue_id.map(|v| v.to_string()));
        add("sort", self.sort_by_date.then(|| "date".to_string()));
        add(
            "available_only",
            self.available_only.then(|| "true".to_string()),
        );
        add("page_size", self.page_size.map(|v| v.to_string()));
        add("page_token", self.page_token.clone());
        parts.join("&")
    }
}

/// One search result.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct SearchHit {
    /// Event id.
    pub event_id: u64,
    /// Name.
    pub name: String,
    /// Start, ms since the Unix epoch.
    pub starts_at_ms: i64,
    /// Venue name.
    pub venue: String,
    /// City (lower case).
    pub city: String,
    /// Category (lower case).
    pub category: String,
    /// Relevance (0 when sorted by date).
    pub score: f32,
    /// Tickets available (refreshed about once a second).
    pub available: u64,
    /// Cheapest ticket.
    pub min_price_cents: u64,
}

/// A page of search results.
#[derive(Clone, Debug, Deserialize)]
pub struct SearchPage {
    /// Hits.
    pub results: Vec<SearchHit>,
    /// All matching events.
    pub total: usize,
    /// Token for the next page.
    pub next_page_token: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_query_string_is_encoded() {
        let q = SearchQuery {
            q: Some("tayler swfit".into()),
            city: Some("New York".into()),
            sort_by_date: true,
            page_size: Some(5),
            ..Default::default()
        };
        assert_eq!(
            q.to_query_string(),
            "q=tayler%20swfit&city=New%20York&sort=date&page_size=5"
        );
        assert_eq!(SearchQuery::default().to_query_string(), "");
    }
}
