//! The public API (`/v1`): events, seat maps, holds, bookings, search.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::common::{Applied, Freshness};

// ------------------------------------------------------------------ events

/// An event's own fields, as views show them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventInfo {
    /// Id.
    pub event_id: u64,
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Category, e.g. `concert`.
    pub category: String,
    /// Start, RFC 3339.
    pub starts_at: String,
    /// Start, ms since the Unix epoch.
    pub starts_at_ms: i64,
    /// How long a hold lasts, in seconds.
    pub hold_ttl_s: u64,
    /// Most tickets one user may hold or have booked.
    pub per_user_cap: u32,
    /// The inventory shard that sells it (`None` before bootstrap completes).
    pub shard: Option<u16>,
}

/// A venue as event views show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VenueInfo {
    /// Id.
    pub venue_id: u64,
    /// Display name.
    pub name: String,
    /// City.
    pub city: String,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// True when it sells a quantity rather than seats.
    pub general_admission: bool,
    /// Tickets it holds.
    pub capacity: u64,
}

/// A performer as event views show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PerformerInfo {
    /// Id.
    pub performer_id: u64,
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: String,
}

/// An event with its venue and performers (an item of [`EventPage`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventDetails {
    /// The event.
    pub event: EventInfo,
    /// Its venue (`None` only if the catalogue lost it, which it never should).
    pub venue: Option<VenueInfo>,
    /// Its performers, in the event's order.
    pub performers: Vec<PerformerInfo>,
}

/// `GET /v1/events/{id}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventView {
    /// The event.
    pub event: EventInfo,
    /// Its venue.
    pub venue: Option<VenueInfo>,
    /// Its performers.
    pub performers: Vec<PerformerInfo>,
    /// How fresh the catalogue replica was.
    pub freshness: Freshness,
}

impl EventView {
    /// The view of `details` read at `freshness`.
    pub fn new(details: EventDetails, freshness: Freshness) -> EventView {
        EventView {
            event: details.event,
            venue: details.venue,
            performers: details.performers,
            freshness,
        }
    }
}

/// `GET /v1/events?after=&limit=`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventPage {
    /// Events in id order.
    pub events: Vec<EventDetails>,
    /// Pass as `after` for the next page; `None` at the end.
    pub next_after: Option<u64>,
    /// How fresh the catalogue replica was.
    pub freshness: Freshness,
}

// --------------------------------------------------------------- seat maps

/// A seat's status at the read's time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SeatStatus {
    /// Can be held.
    Available,
    /// In a live hold.
    Held,
    /// Booked.
    Sold,
}

impl SeatStatus {
    /// The status's character in a compact row ([`SeatRow::status`]).
    pub const fn code(self) -> char {
        match self {
            SeatStatus::Available => 'a',
            SeatStatus::Held => 'h',
            SeatStatus::Sold => 's',
        }
    }

    /// The status of a compact row's character, if it is one.
    pub const fn from_code(c: char) -> Option<SeatStatus> {
        match c {
            'a' => Some(SeatStatus::Available),
            'h' => Some(SeatStatus::Held),
            's' => Some(SeatStatus::Sold),
            _ => None,
        }
    }
}

/// An event's ticket counts at the read's time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SeatCounts {
    /// The event.
    pub event_id: u64,
    /// True for general admission (no seats).
    pub general_admission: bool,
    /// Tickets in total.
    pub capacity: u32,
    /// Tickets available now.
    pub available: u32,
    /// Tickets in live holds.
    pub held: u32,
    /// Tickets sold.
    pub sold: u32,
    /// General-admission ticket price (0 for seated events).
    pub price_cents: u64,
    /// Hold lifetime.
    pub hold_ttl_ms: u64,
    /// Per-user cap.
    pub per_user_cap: u32,
}

/// One seat of a seat map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Seat {
    /// Seat id, used in hold requests.
    pub seat_id: u32,
    /// Section name (shared by the section's seats: one allocation per section).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub section: Arc<str>,
    /// Row name (shared by the row's seats).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub row: Arc<str>,
    /// Seat number in the row, from 1.
    pub number: u32,
    /// Price.
    pub price_cents: u64,
    /// Status at the read's time.
    pub status: SeatStatus,
    /// For a held seat: when its hold expires (state-machine time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_until_ms: Option<u64>,
}

/// `GET /v1/events/{id}/seats`: an event's availability, seat by seat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SeatMap {
    /// The event's counts (always the whole event's, even for one section).
    #[serde(flatten)]
    pub counts: SeatCounts,
    /// Seats in seat-id order (absent for general admission).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seats: Vec<Seat>,
    /// How fresh the shard's replica was.
    pub freshness: Freshness,
}

/// One row of a compact seat map: its seats' statuses as one string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SeatRow {
    /// Section name.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub section: Arc<str>,
    /// Row name.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub row: Arc<str>,
    /// Seat id of the row's seat number 1; seat number n is `first_seat_id + n - 1`.
    pub first_seat_id: u32,
    /// Price of each seat in the row.
    pub price_cents: u64,
    /// One character per seat, in number order ([`SeatStatus::code`]).
    pub status: String,
}

impl SeatRow {
    /// The row's seats as (seat id, status; `None` for a character this version
    /// does not know).
    pub fn seats(&self) -> impl Iterator<Item = (u32, Option<SeatStatus>)> + '_ {
        (self.first_seat_id..)
            .zip(self.status.chars())
            .map(|(id, c)| (id, SeatStatus::from_code(c)))
    }
}

/// `GET /v1/events/{id}/seats?view=rows`: the same availability as [`SeatMap`]
/// without hold expiry times, in about a thirtieth of the bytes, for drawing
/// large venues.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SeatRows {
    /// The event's counts.
    #[serde(flatten)]
    pub counts: SeatCounts,
    /// Rows in seat-id order (absent for general admission).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rows: Vec<SeatRow>,
    /// How fresh the shard's replica was.
    pub freshness: Freshness,
}

// ------------------------------------------------------------------- holds

/// What a hold asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// These seats, all or nothing.
    Seats(Vec<u32>),
    /// This many tickets: general admission, or the best available seats.
    Quantity(u32),
}

/// `POST /v1/holds`: exactly one of `seat_ids` and `quantity`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewHold {
    /// The event.
    pub event_id: u64,
    /// These seats, all or nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seat_ids: Option<Vec<u32>>,
    /// This many tickets. Signed, so that a negative count is named as a bad
    /// parameter rather than as malformed JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<i64>,
}

impl NewHold {
    /// The body asking for `selection` of `event_id`.
    pub fn new(event_id: u64, selection: Selection) -> NewHold {
        match selection {
            Selection::Seats(s) => NewHold {
                event_id,
                seat_ids: Some(s),
                quantity: None,
            },
            Selection::Quantity(q) => NewHold {
                event_id,
                seat_ids: None,
                quantity: Some(i64::from(q)),
            },
        }
    }
}

/// A granted hold (`POST /v1/holds` → 201).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Hold {
    /// Id, e.g. `h3-17`: it names its shard.
    pub hold_id: String,
    /// The event.
    pub event_id: u64,
    /// Seats held (empty for general admission).
    pub seat_ids: Vec<u32>,
    /// Tickets held.
    pub quantity: u32,
    /// Sum of the held tickets' prices.
    pub total_cents: u64,
    /// Expiry, RFC 3339.
    pub expires_at: String,
    /// Expiry (state-machine time, ms).
    pub expires_at_ms: u64,
    /// Where and when it was applied (for a replay: the first time).
    pub applied: Applied,
    /// True when this is the remembered answer to an earlier identical request.
    pub replayed: bool,
}

/// A hold's lifecycle state as its owner sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum HoldState {
    /// Live until `expires_at_ms`.
    Active,
    /// Its time passed; its seats are available again.
    Expired,
    /// It became a booking (`booking_id`).
    Confirmed,
    /// Its owner gave it back, or it was closed after its payment failed past expiry.
    Released,
    /// Its payment is in flight with the provider (`payment_id`); live until
    /// `expires_at_ms`, booked when the provider says the buyer paid.
    PaymentPending,
}

/// `GET /v1/holds/{id}`: the caller's hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HoldStatus {
    /// Id.
    pub hold_id: String,
    /// The event.
    pub event_id: u64,
    /// The owner.
    pub user: String,
    /// Seats.
    pub seat_ids: Vec<u32>,
    /// Tickets.
    pub quantity: u32,
    /// Expiry, RFC 3339.
    pub expires_at: String,
    /// Expiry (state-machine time, ms).
    pub expires_at_ms: u64,
    /// Sum of prices.
    pub total_cents: u64,
    /// Where it is in its lifecycle.
    pub status: HoldState,
    /// The booking, when confirmed.
    pub booking_id: Option<String>,
    /// The hold's latest payment with the provider, if it was checked out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<PaymentView>,
    /// The refund owed for the hold's payment, if one is (a payment that came
    /// after the hold's seats were taken).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund: Option<RefundView>,
    /// How fresh the shard's replica was.
    pub freshness: Freshness,
}

/// A hold's payment with the provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PaymentView {
    /// The provider's payment id (`pi_...`).
    pub payment_id: String,
    /// `in_flight`, `failed` or `paid`.
    pub status: String,
    /// Amount.
    pub amount_cents: u64,
    /// Currency.
    pub currency: String,
}

/// A refund owed or made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RefundView {
    /// The payment refunded.
    pub payment_id: String,
    /// `required`, `failed` (to be tried again), `pending` or `refunded`.
    pub status: String,
    /// Why it is owed: `late_payment`, `amount_mismatch`, `cancelled_by_user`,
    /// `cancelled_by_admin`.
    pub reason: String,
    /// Amount.
    pub amount_cents: u64,
    /// The provider's refund id, once it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_id: Option<String>,
    /// The last failure, when one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// `POST /v1/holds/{id}/checkout`: the hold's payment, for the front end to collect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Checkout {
    /// The hold.
    pub hold_id: String,
    /// `payment_pending`.
    pub status: HoldState,
    /// The provider's payment id (`pi_...`).
    pub payment_id: String,
    /// What the front end passes to the provider's client library to pay
    /// (Stripe.js `confirmCardPayment`), or to the sandbox's confirm.
    pub client_secret: String,
    /// Amount.
    pub amount_cents: u64,
    /// Currency.
    pub currency: String,
    /// The hold now lives until then (RFC 3339).
    pub expires_at: String,
    /// The same, ms since the Unix epoch.
    pub expires_at_ms: u64,
}

/// `POST /v1/bookings/{id}/cancel` and the admin cancel: what became of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Cancelled {
    /// The booking.
    pub booking_id: String,
    /// `cancelled`.
    pub status: BookingStatus,
    /// Seats available again.
    pub seat_ids: Vec<u32>,
    /// Tickets available again.
    pub quantity: u32,
    /// The refund owed, if the booking was paid through the provider (issued
    /// and tracked by the shard's leader; see the booking's `refund`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_payment_id: Option<String>,
}

/// `POST /v1/holds/{id}/confirm`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ConfirmHold {
    /// The payment reference recorded with the booking.
    pub payment_ref: String,
}

// ---------------------------------------------------------------- bookings

/// A booking's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BookingStatus {
    /// Booked and paid.
    Confirmed,
    /// Cancelled: its seats are available again, its payment is refunded.
    Cancelled,
}

/// A booking: the answer of a confirm (201, with `applied` and `replayed`) and
/// of `GET /v1/bookings/{id}` (with `freshness`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Booking {
    /// Id, e.g. `b3-18`: it names its shard.
    pub booking_id: String,
    /// Its state.
    pub status: BookingStatus,
    /// The hold it came from.
    pub hold_id: String,
    /// The event.
    pub event_id: u64,
    /// Seats (empty for general admission).
    pub seat_ids: Vec<u32>,
    /// Tickets.
    pub quantity: u32,
    /// Sum of prices.
    pub total_cents: u64,
    /// Payment reference given at confirm.
    pub payment_ref: String,
    /// Confirm time, RFC 3339.
    pub confirmed_at: String,
    /// Confirm time (state-machine time, ms).
    pub confirmed_at_ms: u64,
    /// Where and when the confirm was applied (write answers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<Applied>,
    /// True when this is a remembered answer (write answers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed: Option<bool>,
    /// How fresh the shard's replica was (reads only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freshness: Option<Freshness>,
    /// When it was cancelled (ms), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_at_ms: Option<u64>,
    /// Its refund, if it was cancelled and paid through the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund: Option<RefundView>,
}

/// `GET /v1/bookings[?event_id=]`: the caller's bookings, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BookingList {
    /// At most `limits.page_size_max` of them.
    pub bookings: Vec<Booking>,
    /// True when there were more than a page.
    pub truncated: bool,
}

// ------------------------------------------------------------------ search

/// `GET /v1/search`: every field optional; combine freely.
#[derive(Clone, Debug, Default, PartialEq)]
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
    /// Near a point: (lat, lon, radius in km, default 50).
    pub near: Option<(f64, f64, Option<f64>)>,
    /// Order of results (default: relevance).
    pub sort: Option<SearchSort>,
    /// Only events with tickets available.
    pub available_only: bool,
    /// Results per page (server default 20, at most 100).
    pub page_size: Option<u32>,
    /// `next_page_token` of the previous page.
    pub page_token: Option<String>,
    /// Facets to count over every match: any of `category`, `city`, `month`.
    pub facets: Vec<String>,
}

/// How search results are ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SearchSort {
    /// Best match first.
    Relevance,
    /// Earliest start first.
    Date,
    /// Nearest first (needs [`SearchQuery::near`]).
    Distance,
}

impl SearchSort {
    /// Query-string value.
    pub const fn as_str(self) -> &'static str {
        match self {
            SearchSort::Relevance => "relevance",
            SearchSort::Date => "date",
            SearchSort::Distance => "distance",
        }
    }
}

/// Every query parameter `GET /v1/search` takes; any other is refused.
pub const SEARCH_PARAMS: &[&str] = &[
    "q",
    "from",
    "to",
    "city",
    "category",
    "performer_id",
    "venue_id",
    "lat",
    "lon",
    "radius_km",
    "available_only",
    "sort",
    "page_size",
    "page_token",
    "facets",
];

/// Every query parameter `GET /v1/search/suggest` takes; any other is refused.
pub const SUGGEST_PARAMS: &[&str] = &["q", "limit"];

/// Percent-encodes a query-string component (RFC 3986 unreserved kept).
pub fn encode_component(s: &str) -> String {
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
    /// The query string (without `?`).
    pub fn to_query_string(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut add = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                debug_assert!(SEARCH_PARAMS.contains(&k));
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
        if let Some((lat, lon, radius)) = self.near {
            add("lat", Some(lat.to_string()));
            add("lon", Some(lon.to_string()));
            add("radius_km", radius.map(|r| r.to_string()));
        }
        add("sort", self.sort.map(|s| s.as_str().to_string()));
        add(
            "available_only",
            self.available_only.then(|| "true".to_string()),
        );
        add("page_size", self.page_size.map(|v| v.to_string()));
        add("page_token", self.page_token.clone());
        add(
            "facets",
            (!self.facets.is_empty()).then(|| self.facets.join(",")),
        );
        parts.join("&")
    }
}

/// One search result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SearchHit {
    /// Event id.
    pub event_id: u64,
    /// Name.
    pub name: String,
    /// Start, RFC 3339.
    pub starts_at: String,
    /// Start, ms since the Unix epoch.
    pub starts_at_ms: i64,
    /// Venue name.
    pub venue: String,
    /// City (lower case).
    pub city: String,
    /// Category (lower case).
    pub category: String,
    /// Relevance (0 unless sorted by relevance).
    pub score: f32,
    /// Tickets available (refreshed about once a second).
    pub available: u64,
    /// Cheapest ticket.
    pub min_price_cents: u64,
    /// Distance from the query's point, when it gave one.
    pub distance_km: Option<f64>,
}

/// How fresh the answering node's search index is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SearchFreshness {
    /// Catalogue log index the index has caught up with.
    pub indexed_through_index: u64,
    /// Catalogue log index this node's replica has applied.
    pub catalogue_applied_index: u64,
    /// How often availability is re-indexed (ms).
    pub availability_refresh_ms: u64,
}

/// `GET /v1/search`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SearchPage {
    /// Hits, best first (or in the asked order).
    pub results: Vec<SearchHit>,
    /// Every matching event.
    pub total: usize,
    /// Token for the next page; `None` at the end.
    pub next_page_token: Option<String>,
    /// Counts over every match, for the facets asked for (`facets=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facets: Option<SearchFacets>,
    /// How fresh the index is.
    pub freshness: SearchFreshness,
}

/// One value of a facet and how many matches have it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FacetValue {
    /// The value, as the matching filter takes it (category and city in
    /// lower case; a month as `YYYY-MM`, UTC).
    pub value: String,
    /// Matches with it.
    pub count: u64,
}

/// Facet counts over a search's matches (its filters applied). Each list
/// present only when asked for; at most 50 values each.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SearchFacets {
    /// By category, most frequent first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<Vec<FacetValue>>,
    /// By city, most frequent first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<Vec<FacetValue>>,
    /// By month of the start, earliest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub month: Option<Vec<FacetValue>>,
}

/// One type-ahead suggestion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Suggestion {
    /// `performer`, `venue` or `event`.
    pub kind: String,
    /// The performer's, venue's or event's id.
    pub id: u64,
    /// Its name.
    pub text: String,
    /// An event's start, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<String>,
    /// A venue's city, or an event's (lower case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
}

/// `GET /v1/search/suggest`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SuggestPage {
    /// Best first: performers and venues, then upcoming events.
    pub suggestions: Vec<Suggestion>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_query_string_is_encoded_and_names_known_parameters() {
        let q = SearchQuery {
            q: Some("tayler swfit".into()),
            city: Some("New York".into()),
            sort: Some(SearchSort::Date),
            near: Some((40.5, -73.25, None)),
            page_size: Some(5),
            ..Default::default()
        };
        assert_eq!(
            q.to_query_string(),
            "q=tayler%20swfit&city=New%20York&lat=40.5&lon=-73.25&sort=date&page_size=5"
        );
        assert_eq!(SearchQuery::default().to_query_string(), "");
    }

    #[test]
    fn compact_rows_decode_their_statuses() {
        let row = SeatRow {
            section: "Floor".into(),
            row: "A".into(),
            first_seat_id: 10,
            price_cents: 100,
            status: "ahsx".into(),
        };
        let seats: Vec<_> = row.seats().collect();
        assert_eq!(
            seats,
            vec![
                (10, Some(SeatStatus::Available)),
                (11, Some(SeatStatus::Held)),
                (12, Some(SeatStatus::Sold)),
                (13, None)
            ]
        );
        for s in [SeatStatus::Available, SeatStatus::Held, SeatStatus::Sold] {
            assert_eq!(SeatStatus::from_code(s.code()), Some(s));
        }
    }

    #[test]
    fn a_hold_body_carries_exactly_its_selection() {
        let seats = serde_json::to_value(NewHold::new(7, Selection::Seats(vec![1, 2]))).unwrap();
        assert_eq!(
            seats,
            serde_json::json!({"event_id": 7, "seat_ids": [1, 2]})
        );
        let qty = serde_json::to_value(NewHold::new(7, Selection::Quantity(3))).unwrap();
        assert_eq!(qty, serde_json::json!({"event_id": 7, "quantity": 3}));
        assert!(serde_json::from_str::<NewHold>(r#"{"event_id": 1, "seats": [1]}"#).is_err());
    }
}
