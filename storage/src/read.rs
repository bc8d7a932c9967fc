//! Read-only views of a group's applied state, for the node's query paths.
//!
//! Every view reads one RocksDB snapshot, so the data and the freshness it reports
//! (applied index and time) agree. Seat status is judged at
//! `max(reader's clock, applied time)`: never earlier than the replica's own time.

use std::sync::Arc;

use boxoffice_raft::codec;
use boxoffice_raft::command::{BookingId, HoldId, Layout, RowSpec, SectionSpec};
use boxoffice_raft::GroupId;
use serde::Serialize;

use crate::db::Db;
use crate::keys::{self, table, Key};
use crate::kv::{KvRead, SnapshotView};
use crate::machine::{self, get};
use crate::records::*;

/// How fresh a read is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Freshness {
    /// Last log index applied by this replica.
    pub applied_index: u64,
    /// State-machine time of that entry (ms since the Unix epoch).
    pub applied_time_ms: u64,
    /// Time the answer was judged at (ms): max(the time asked for, applied time);
    /// the applied time for [`Reader::begin_applied`].
    pub as_of_ms: u64,
}

/// One seat on a seat map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SeatView {
    /// Seat id, used in hold requests.
    pub seat_id: u32,
    /// Section name (shared by the section's seats: one allocation per section).
    pub section: Arc<str>,
    /// Row name (shared by the row's seats).
    pub row: Arc<str>,
    /// Seat number in the row.
    pub number: u32,
    /// Price.
    pub price_cents: u64,
    /// Status at `as_of_ms`.
    pub status: SeatStatus,
    /// For a held seat: when its hold expires (state-machine time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_until_ms: Option<u64>,
}

/// An event's ticket counts, at the read's time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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

/// An event's availability, seat by seat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SeatMap {
    /// The event's counts.
    #[serde(flatten)]
    pub counts: SeatCounts,
    /// Seats, for seated events, in seat-id order (absent for general admission).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub seats: Vec<SeatView>,
}

/// One row of a compact seat map: its seats' statuses as one string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SeatRowView {
    /// Section name.
    pub section: Arc<str>,
    /// Row name.
    pub row: String,
    /// Seat id of the row's seat number 1; seat number n is `first_seat_id + n - 1`.
    pub first_seat_id: u32,
    /// Price of each seat in the row.
    pub price_cents: u64,
    /// One character per seat, in number order: `a` available, `h` held, `s` sold.
    pub status: String,
}

/// An event's availability, row by row: the same information as [`SeatMap`] but
/// hold expiry times, in about a thirtieth of the bytes, for drawing large venues.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SeatRows {
    /// The event's counts.
    #[serde(flatten)]
    pub counts: SeatCounts,
    /// Rows, for seated events, in seat-id order (absent for general admission).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rows: Vec<SeatRowView>,
}

/// One seat as a seat-map walk meets it.
struct SeatState {
    seat_id: u32,
    number: u32,
    status: SeatStatus,
    held_until_ms: Option<u64>,
}

impl SeatStatus {
    /// The status's character in a compact row ([`SeatRowView::status`]).
    pub fn code(self) -> char {
        match self {
            SeatStatus::Available => 'a',
            SeatStatus::Held => 'h',
            SeatStatus::Sold => 's',
        }
    }
}

/// A hold as its owner sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HoldStatusView {
    /// The hold.
    pub hold_id: HoldId,
    /// The event.
    pub event_id: u64,
    /// Owner.
    pub user: String,
    /// Seats.
    pub seat_ids: Vec<u32>,
    /// Tickets.
    pub quantity: u32,
    /// Expiry.
    pub expires_at_ms: u64,
    /// Sum of prices.
    pub total_cents: u64,
    /// `active`, `expired`, `confirmed` or `released`.
    pub status: &'static str,
    /// The booking, when confirmed.
    pub booking_id: Option<BookingId>,
}

/// Reads of one group's applied state.
#[derive(Clone)]
pub struct Reader {
    db: Db,
    group: GroupId,
}

/// A read at one consistent point.
pub struct ReadTx<'a> {
    view: SnapshotView<'a>,
    group: GroupId,
    /// Freshness of this read.
    pub freshness: Freshness,
}

impl Reader {
    /// Reads of `group` in `db`.
    pub fn new(db: Db, group: GroupId) -> Self {
        Reader { db, group }
    }

    /// Starts a consistent read judged at the state-machine time of the last applied
    /// entry: it shows exactly the state after that entry, hold expiry included, so
    /// it agrees with what the log decides whatever the reader's clock says.
    pub fn begin_applied(&self) -> ReadTx<'_> {
        self.begin(0)
    }

    /// Starts a consistent read judged at `max(now_ms, applied time)`.
    pub fn begin(&self, now_ms: u64) -> ReadTx<'_> {
        let view = SnapshotView::new(&self.db);
        let meta = machine::read_meta(&view, self.group);
        let freshness = Freshness {
            applied_index: meta.last_applied.map(|l| l.index).unwrap_or(0),
            applied_time_ms: meta.time_ms,
            as_of_ms: now_ms.max(meta.time_ms),
        };
        ReadTx {
            view,
            group: self.group,
            freshness,
        }
    }
}

impl ReadTx<'_> {
    fn list<T: serde::de::DeserializeOwned>(&self, table: u8, after: u64, limit: usize) -> Vec<T> {
        let prefix = Key::sm(self.group, table).build();
        let start = Key::sm(self.group, table)
            .u64(after.saturating_add(1))
            .build();
        let mut out = Vec::new();
        self.view.scan(&prefix, &start, &mut |_, v| {
            out.push(codec::decode(v).expect("corrupt catalogue record"));
            out.len() < limit
        });
        out
    }

    /// A venue.
    pub fn venue(&self, id: u64) -> Option<Venue> {
        get(
            &self.view,
            &Key::sm(self.group, table::VENUE).u64(id).build(),
        )
    }

    /// A performer.
    pub fn performer(&self, id: u64) -> Option<Performer> {
        get(
            &self.view,
            &Key::sm(self.group, table::PERFORMER).u64(id).build(),
        )
    }

    /// An event (catalogue).
    pub fn event(&self, id: u64) -> Option<Event> {
        get(
            &self.view,
            &Key::sm(self.group, table::EVENT).u64(id).build(),
        )
    }

    /// Events with id > `after`, in id order, at most `limit`.
    pub fn events(&self, after: u64, limit: usize) -> Vec<Event> {
        self.list(table::EVENT, after, limit)
    }

    /// Events changed (created or updated) after `cursor` in the change feed, in
    /// feed order (log index of the last change, event id), at most `limit`, with
    /// each one's feed position. An event appears once, at its latest change.
    pub fn events_changed_after(
        &self,
        cursor: (u64, u64),
        limit: usize,
    ) -> Vec<((u64, u64), Event)> {
        let prefix = Key::sm(self.group, table::EVENT_CHANGE).build();
        let start = Key::sm(self.group, table::EVENT_CHANGE)
            .u64(cursor.0)
            .u64(cursor.1.saturating_add(1))
            .build();
        let start = if cursor.1 == u64::MAX {
            Key::sm(self.group, table::EVENT_CHANGE)
                .u64(cursor.0.saturating_add(1))
                .build()
        } else {
            start
        };
        let mut positions = Vec::new();
        self.view.scan(&prefix, &start, &mut |k, _| {
            if positions.len() >= limit {
                return false;
            }
            positions.push((
                keys::read_u64(k, prefix.len()),
                keys::read_u64(k, prefix.len() + 8),
            ));
            true
        });
        positions
            .into_iter()
            .map(|pos| {
                // The feed and the events are written in one batch; a dangling entry is corruption.
                let e = self
                    .event(pos.1)
                    .unwrap_or_else(|| panic!("event change feed names missing event {}", pos.1));
                (pos, e)
            })
            .collect()
    }

    /// Venues with id > `after`.
    pub fn venues(&self, after: u64, limit: usize) -> Vec<Venue> {
        self.list(table::VENUE, after, limit)
    }

    /// Performers with id > `after`.
    pub fn performers(&self, after: u64, limit: usize) -> Vec<Performer> {
        self.list(table::PERFORMER, after, limit)
    }

    /// An event's inventory summary (inventory shard).
    pub fn inventory(&self, event_id: u64) -> Option<Inventory> {
        machine::load_inventory(&self.view, self.group, event_id)
    }

    /// Tickets of unsettled holds that expired by `as_of`.
    fn expired_unsettled(&self, event_id: u64, as_of: u64) -> u32 {
        let (start, end) =
            crate::machine::due_expiry_range(&self.view, self.group, event_id, as_of);
        let mut sum = 0u32;
        self.view.scan_range(&start, &end, &mut |_, v| {
            sum += codec::decode::<u32>(v).expect("corrupt expiry record");
            true
        });
        sum
    }

    /// Tickets available now, without building the seat map.
    pub fn available(&self, event_id: u64) -> Option<u32> {
        self.inventory(event_id)
            .map(|inv| self.counts(&inv).available)
    }

    /// The event's seat map (seated) or counts (general admission).
    pub fn seat_map(&self, event_id: u64) -> Option<SeatMap> {
        self.seat_map_of(event_id, None)
    }

    /// The event's seat map with only the seats of `section` (every seat when
    /// `None`; none when the event has no such section); the counts are always
    /// the event's. Reads only that section's ticket records.
    pub fn seat_map_of(&self, event_id: u64, section: Option<&str>) -> Option<SeatMap> {
        let inv = self.inventory(event_id)?;
        let mut seats = Vec::new();
        let mut names: Option<(Arc<str>, Arc<str>)> = None;
        self.walk_seats(event_id, &inv, section, &mut |s, r, seat| {
            // A walk meets a section's rows and a row's seats one after another.
            let (sec, row) = match names.take() {
                Some((sec, row)) if *sec == *s.name && *row == *r.name => (sec, row),
                Some((sec, _)) if *sec == *s.name => (sec, Arc::from(r.name.as_str())),
                _ => (Arc::from(s.name.as_str()), Arc::from(r.name.as_str())),
            };
            seats.push(SeatView {
                seat_id: seat.seat_id,
                section: sec.clone(),
                row: row.clone(),
                number: seat.number,
                price_cents: r.price_cents,
                status: seat.status,
                held_until_ms: seat.held_until_ms,
            });
            names = Some((sec, row));
        });
        Some(SeatMap {
            counts: self.counts(&inv),
            seats,
        })
    }

    /// The event's compact seat map (see [`SeatRows`]), only `section`'s rows when
    /// given; the counts are always the event's.
    pub fn seat_rows_of(&self, event_id: u64, section: Option<&str>) -> Option<SeatRows> {
        let inv = self.inventory(event_id)?;
        let mut rows: Vec<SeatRowView> = Vec::new();
        self.walk_seats(event_id, &inv, section, &mut |s, r, seat| {
            if seat.number == 1 {
                let sec = match rows.last() {
                    Some(last) if *last.section == *s.name => last.section.clone(),
                    _ => Arc::from(s.name.as_str()),
                };
                rows.push(SeatRowView {
                    section: sec,
                    row: r.name.clone(),
                    first_seat_id: seat.seat_id,
                    price_cents: r.price_cents,
                    status: String::with_capacity(r.seats as usize),
                });
            }
            if let Some(row) = rows.last_mut() {
                row.status.push(seat.status.code());
            }
        });
        Some(SeatRows {
            counts: self.counts(&inv),
            rows,
        })
    }

    /// The event's counts at this read's time.
    fn counts(&self, inv: &Inventory) -> SeatCounts {
        let held =
            inv.held_unsettled - self.expired_unsettled(inv.event_id, self.freshness.as_of_ms);
        SeatCounts {
            event_id: inv.event_id,
            general_admission: inv.is_general_admission(),
            capacity: inv.capacity,
            available: inv.capacity - inv.sold - held,
            held,
            sold: inv.sold,
            price_cents: if inv.is_general_admission() {
                inv.price_of(None)
            } else {
                0
            },
            hold_ttl_ms: inv.hold_ttl_ms,
            per_user_cap: inv.per_user_cap,
        }
    }

    /// Calls `f` for every seat of the event (of `section` only, when given), in
    /// seat-id order, with its section and row. Reads only those seats' ticket
    /// records; a general-admission event has no seats.
    fn walk_seats(
        &self,
        event_id: u64,
        inv: &Inventory,
        section: Option<&str>,
        f: &mut dyn FnMut(&SectionSpec, &RowSpec, SeatState),
    ) {
        let Layout::Seated { sections } = &*inv.layout else {
            return;
        };
        let as_of = self.freshness.as_of_ms;
        // Seat ids run through the sections and their rows in order.
        let ticket = |seat: u32| {
            Key::sm(self.group, table::TICKET)
                .u64(event_id)
                .u32(seat)
                .build()
        };
        let prefix_len = Key::sm(self.group, table::TICKET)
            .u64(event_id)
            .build()
            .len();
        let mut first = 0u32;
        let mut records = Vec::new();
        for s in sections {
            let n: u32 = s.rows.iter().map(|r| r.seats).sum();
            if section.is_some_and(|want| want != s.name) {
                first += n;
                continue;
            }
            records.clear();
            self.view
                .scan_range(&ticket(first), &ticket(first + n), &mut |k, v| {
                    records.push((
                        keys::read_u32(k, prefix_len),
                        codec::decode::<Ticket>(v).expect("corrupt ticket record"),
                    ));
                    true
                });
            let mut records = records.iter().peekable();
            let mut seat_id = first;
            for r in &s.rows {
                for number in 1..=r.seats {
                    let record = match records.peek() {
                        Some((id, _)) if *id == seat_id => records.next().map(|(_, t)| t),
                        _ => None,
                    };
                    f(
                        s,
                        r,
                        SeatState {
                            seat_id,
                            number,
                            status: Ticket::status_at(record, as_of),
                            held_until_ms: match record {
                                Some(Ticket::Held { expires_at_ms, .. })
                                    if *expires_at_ms > as_of =>
                                {
                                    Some(*expires_at_ms)
                                }
                                _ => None,
                            },
                        },
                    );
                    seat_id += 1;
                }
            }
            first += n;
        }
    }

    /// A hold's current status.
    pub fn hold(&self, hold_id: HoldId) -> Option<HoldStatusView> {
        if hold_id.shard != self.group.0 {
            return None;
        }
        let h: Hold = get(&self.view, &machine::hold_key(self.group, hold_id.seq))?;
        let (status, booking_id) = match h.state {
            HoldState::Active if h.expires_at_ms <= self.freshness.as_of_ms => ("expired", None),
            HoldState::Active => ("active", None),
            HoldState::Confirmed { booking_seq } => (
                "confirmed",
                Some(BookingId {
                    shard: self.group.0,
                    seq: booking_seq,
                }),
            ),
            HoldState::Released => ("released", None),
        };
        Some(HoldStatusView {
            hold_id,
            event_id: h.event_id,
            user: h.user,
            seat_ids: h.seat_ids,
            quantity: h.quantity,
            expires_at_ms: h.expires_at_ms,
            total_cents: h.total_cents,
            status,
            booking_id,
        })
    }

    /// A booking.
    pub fn booking(&self, booking_id: BookingId) -> Option<Booking> {
        if booking_id.shard != self.group.0 {
            return None;
        }
        get(
            &self.view,
            &Key::sm(self.group, table::BOOKING)
                .u64(booking_id.seq)
                .build(),
        )
    }

    /// A user's bookings on this shard, oldest first, at most `limit`.
    pub fn user_bookings(&self, user: &str, limit: usize) -> Vec<Booking> {
        self.user_bookings_where(user, limit, |_| true)
    }

    /// A user's bookings in this group that satisfy `keep`, oldest first, at most
    /// `limit`.
    pub fn user_bookings_where(
        &self,
        user: &str,
        limit: usize,
        keep: impl Fn(&Booking) -> bool,
    ) -> Vec<Booking> {
        let prefix = Key::sm(self.group, table::USER_BOOKING).str(user).build();
        let mut out = Vec::new();
        self.view.scan(&prefix, &prefix, &mut |k, _| {
            let seq = keys::read_u64(k, prefix.len());
            let b = self
                .booking(BookingId {
                    shard: self.group.0,
                    seq,
                })
                .expect("user booking index points at a missing booking");
            if keep(&b) {
                out.push(b);
            }
            out.len() < limit
        });
        out
    }

    /// Every state-machine key and value of the group (tests and diagnostics).
    pub fn dump(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let prefix = Key::group(self.group).build();
        let mut out = Vec::new();
        self.view.scan(&prefix, &prefix, &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            true
        });
        out
    }
}
