//! Inventory records: an event's tickets, holds, bookings and per-user counts.

use std::sync::Arc;

use boxoffice_raft::command::{BookingId, HoldId};
use serde::{Deserialize, Serialize};

use super::catalogue::VenueLayout;

/// The counts of an event's inventory that change with every hold and confirm
/// (`table::INVENTORY_COUNTS`); when present they supersede those in [`Inventory`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryCounts {
    /// Tickets sold.
    pub sold: u32,
    /// Tickets in active holds not yet settled.
    pub held_unsettled: u32,
}

/// An event's inventory summary on its shard (`table::INVENTORY`). Written once
/// at creation; its counts as of then, later ones in [`InventoryCounts`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    /// The event.
    pub event_id: u64,
    /// Seat map or capacity (shared: decoded once per distinct record, see
    /// `machine::inventory::load_inventory`; encoded exactly as a plain layout).
    pub layout: Arc<VenueLayout>,
    /// Hold lifetime.
    pub hold_ttl_ms: u64,
    /// Per-user cap.
    pub per_user_cap: u32,
    /// Tickets in total.
    pub capacity: u32,
    /// Tickets sold.
    pub sold: u32,
    /// Tickets in active holds not yet settled (some may have expired since; see
    /// `table::EXPIRY`).
    pub held_unsettled: u32,
    /// Prefix sums of seats per row, to map a seat id to its row: `row_starts[i]` is
    /// the first seat id of the i-th row in section/row order (shared like the
    /// layout; encoded exactly as a plain list).
    pub row_starts: Arc<Vec<u32>>,
}

impl Inventory {
    /// Builds the summary for a new event. The layout was validated: its capacity
    /// is at most `VENUE_SEATS_MAX`, which fits a `u32`.
    pub fn new(event_id: u64, layout: VenueLayout, hold_ttl_ms: u64, per_user_cap: u32) -> Self {
        let mut row_starts = Vec::new();
        let mut next = 0u32;
        if let VenueLayout::Seated { sections } = &layout {
            for s in sections {
                for r in &s.rows {
                    row_starts.push(next);
                    next += r.seats;
                }
            }
        }
        let capacity = u32::try_from(layout.capacity()).expect("validated capacity fits u32");
        Inventory {
            event_id,
            layout: Arc::new(layout),
            hold_ttl_ms,
            per_user_cap,
            capacity,
            sold: 0,
            held_unsettled: 0,
            row_starts: Arc::new(row_starts),
        }
    }

    /// True for general admission.
    pub fn is_general_admission(&self) -> bool {
        self.layout.is_general_admission()
    }

    /// Section name, row name, seat number and price of a seat, if it exists.
    pub fn seat(&self, seat_id: u32) -> Option<SeatInfo<'_>> {
        let VenueLayout::Seated { sections } = &*self.layout else {
            return None;
        };
        if seat_id >= self.capacity {
            return None;
        }
        // Index of the last row starting at or before seat_id.
        let row_index = self.row_starts.partition_point(|&start| start <= seat_id) - 1;
        // Skip whole sections (linear in sections, not rows).
        let mut i = 0;
        for s in sections {
            if row_index < i + s.rows.len() {
                let r = &s.rows[row_index - i];
                return Some(SeatInfo {
                    section: &s.name,
                    row: &r.name,
                    number: seat_id - self.row_starts[row_index] + 1,
                    price_cents: r.price_cents,
                });
            }
            i += s.rows.len();
        }
        None
    }

    /// Price of one ticket: the seat's price, or the general-admission price.
    pub fn price_of(&self, seat_id: Option<u32>) -> u64 {
        match (&*self.layout, seat_id) {
            (VenueLayout::GeneralAdmission { price_cents, .. }, _) => *price_cents,
            (VenueLayout::Seated { .. }, Some(s)) => {
                self.seat(s).map(|i| i.price_cents).unwrap_or(0)
            }
            (VenueLayout::Seated { .. }, None) => 0,
        }
    }
}

/// Where a seat is and what it costs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeatInfo<'a> {
    /// Section name.
    pub section: &'a str,
    /// Row name.
    pub row: &'a str,
    /// Seat number within the row, from 1.
    pub number: u32,
    /// Price.
    pub price_cents: u64,
}

/// A seat that is not simply available (`table::TICKET`). No record = available.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ticket {
    /// In a hold; available again once `expires_at_ms` has passed.
    Held {
        /// The hold.
        hold_seq: u64,
        /// When the hold stops being live.
        expires_at_ms: u64,
    },
    /// Sold in a booking.
    Sold {
        /// The booking.
        booking_seq: u64,
    },
}

/// Status of a seat at a point in state-machine time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeatStatus {
    /// Can be held.
    Available,
    /// In a live hold.
    Held,
    /// Booked.
    Sold,
}

impl Ticket {
    /// The seat's status at time `now_ms`.
    pub fn status_at(record: Option<&Ticket>, now_ms: u64) -> SeatStatus {
        match record {
            None => SeatStatus::Available,
            Some(Ticket::Held { expires_at_ms, .. }) if *expires_at_ms > now_ms => SeatStatus::Held,
            Some(Ticket::Held { .. }) => SeatStatus::Available,
            Some(Ticket::Sold { .. }) => SeatStatus::Sold,
        }
    }
}

/// A hold (`table::HOLD`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// Sequence number in the shard.
    pub seq: u64,
    /// The event.
    pub event_id: u64,
    /// The owner.
    pub user: String,
    /// Seats held (empty for general admission).
    pub seat_ids: Vec<u32>,
    /// Tickets held.
    pub quantity: u32,
    /// When it stops being live.
    pub expires_at_ms: u64,
    /// Sum of prices.
    pub total_cents: u64,
    /// What became of it.
    pub state: HoldState,
}

/// Lifecycle of a hold. Expiry is not a stored state: an `Active` hold whose
/// `expires_at_ms` has passed is expired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HoldState {
    /// Live until it expires.
    Active,
    /// Became a booking.
    Confirmed {
        /// The booking.
        booking_seq: u64,
    },
    /// Given back by its owner, or closed after its payment failed past its expiry.
    Released,
    /// Its payment is in flight with the provider (from feature level 2; see
    /// `table::PAYMENT`). Live until it expires, like `Active`.
    PaymentPending,
}

/// A booking (`table::BOOKING`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Booking {
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

/// Per-(event, user) record for the cap (`table::USER_EVENT`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEvent {
    /// Tickets booked.
    pub booked: u32,
    /// Active holds: (hold seq, quantity, expires_at_ms). Expired ones are pruned on write.
    pub holds: Vec<(u64, u32, u64)>,
}

impl UserEvent {
    /// Tickets counted against the cap at `now_ms`.
    pub fn current(&self, now_ms: u64) -> u32 {
        self.holds
            .iter()
            .filter(|(_, _, exp)| *exp > now_ms)
            .fold(self.booked, |sum, (_, q, _)| sum.saturating_add(*q))
    }
}

/// The tickets of one unsettled hold, by its expiry (`table::EXPIRY`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ExpiringQuantity(pub u32);

/// Per event, the state-machine time below which every expiry entry is settled
/// (`table::EXPIRY_SETTLED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SettledMark(pub u64);

boxoffice_raft::versioned_v1! {
    InventoryCounts => "inventory counts record",
    Inventory => "inventory record",
    Ticket => "ticket record",
    Hold => "hold record",
    Booking => "booking record",
    UserEvent => "user-event record",
    ExpiringQuantity => "expiry record",
    SettledMark => "settled mark",
}
