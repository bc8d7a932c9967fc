//! Read-only views of a group's applied state, for the node's query paths.
//!
//! Every view reads one consistent version of the state (a RocksDB snapshot, or
//! a version of the in-memory records), so the data and the freshness it reports
//! (applied index and time) agree. Seat status is judged at
//! `max(reader's clock, applied time)`: never earlier than the replica's own time.

use std::sync::Arc;

use boxoffice_raft::codec;
use boxoffice_raft::command::{BookingId, HoldId};
use boxoffice_raft::GroupId;

use crate::db::Db;
use crate::keys::{self, table, Key};
use crate::kv::{KvRead, SnapshotView};
use crate::machine::{self, get};
use crate::memory::{MemRef, MemState, MemView};
use crate::records::*;

/// How fresh a read is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Freshness {
    /// Last log index applied by this replica.
    pub applied_index: u64,
    /// State-machine time of that entry (ms since the Unix epoch).
    pub applied_time_ms: u64,
    /// Time the answer was judged at (ms): max(the time asked for, applied time);
    /// the applied time for [`Reader::begin_applied`].
    pub as_of_ms: u64,
}

/// An event's ticket counts, at the read's time.
#[derive(Clone, Debug, PartialEq, Eq)]
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

/// One seat as a seat-map walk ([`ReadTx::walk_seats`]) meets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeatState {
    /// Seat id.
    pub seat_id: u32,
    /// Seat number in its row, from 1.
    pub number: u32,
    /// Status at the read's time.
    pub status: SeatStatus,
    /// For a held seat: when its hold expires.
    pub held_until_ms: Option<u64>,
}

/// Where a hold is in its lifecycle at the read's time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldPhase {
    /// Live.
    Active,
    /// Its time passed.
    Expired,
    /// It became this booking.
    Confirmed(BookingId),
    /// Released by its owner (or closed after its payment failed past expiry).
    Released,
    /// Live, its payment in flight with the provider.
    PaymentPending,
}

/// Reads of one group's applied state.
#[derive(Clone)]
pub struct Reader {
    source: Source,
    group: GroupId,
}

/// Where a group's applied state is (`storage.state_machine`).
#[derive(Clone)]
enum Source {
    Rocks(Db),
    Memory(Arc<MemState>),
}

/// One consistent version of the applied state.
enum View<'a> {
    Rocks(SnapshotView<'a>),
    Memory(MemView),
    /// The current records, lent by [`MemState::peek`] for one short read.
    MemoryRef(MemRef<'a>),
}

impl KvRead for View<'_> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self {
            View::Rocks(v) => v.get(key),
            View::Memory(v) => v.get(key),
            View::MemoryRef(v) => v.get(key),
        }
    }
    fn scan_range(&self, start: &[u8], end: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) {
        match self {
            View::Rocks(v) => v.scan_range(start, end, visit),
            View::Memory(v) => v.scan_range(start, end, visit),
            View::MemoryRef(v) => v.scan_range(start, end, visit),
        }
    }
}

/// A read at one consistent point.
pub struct ReadTx<'a> {
    view: View<'a>,
    group: GroupId,
    /// Freshness of this read.
    pub freshness: Freshness,
}

impl Reader {
    /// Reads of `group` kept in `db` (`storage.state_machine = "rocksdb"`).
    pub fn new(db: Db, group: GroupId) -> Self {
        Reader {
            source: Source::Rocks(db),
            group,
        }
    }

    /// Reads of `group` kept in memory (`storage.state_machine = "memory"`).
    pub fn in_memory(state: Arc<MemState>, group: GroupId) -> Self {
        Reader {
            source: Source::Memory(state),
            group,
        }
    }

    /// Starts a consistent read judged at the state-machine time of the last applied
    /// entry: it shows exactly the state after that entry, hold expiry included, so
    /// it agrees with what the log decides whatever the reader's clock says.
    pub fn begin_applied(&self) -> ReadTx<'_> {
        self.begin(0)
    }

    /// Starts a consistent read judged at `max(now_ms, applied time)`.
    pub fn begin(&self, now_ms: u64) -> ReadTx<'_> {
        let view = match &self.source {
            Source::Rocks(db) => View::Rocks(SnapshotView::new(db)),
            Source::Memory(state) => View::Memory(state.view()),
        };
        self.read_at(view, now_ms)
    }

    /// Runs `f` over a read of the applied state judged at its time, as
    /// [`Reader::begin_applied`] does, but for a short read: in memory it reads
    /// the current records under the state's lock (apply waits meanwhile) and
    /// keeps no version of them, so it costs apply no copies. For checks on the
    /// write path (an event's inventory, its queue), not for rendering.
    pub fn peek<R>(&self, f: impl FnOnce(&ReadTx<'_>) -> R) -> R {
        match &self.source {
            Source::Rocks(_) => f(&self.begin_applied()),
            Source::Memory(state) => {
                state.peek(|records| f(&self.read_at(View::MemoryRef(MemRef(records)), 0)))
            }
        }
    }

    fn read_at<'a>(&self, view: View<'a>, now_ms: u64) -> ReadTx<'a> {
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
    fn list<T: codec::Versioned>(&self, table: u8, after: u64, limit: usize) -> Vec<T> {
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

    /// An event's own payment settings (catalogue), if it set any.
    pub fn event_payments(&self, id: u64) -> Option<EventPaymentSettings> {
        get(
            &self.view,
            &Key::sm(self.group, table::EVENT_PAYMENTS).u64(id).build(),
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

    /// Whether the shard has the event's inventory (without reading it).
    pub fn has_inventory(&self, event_id: u64) -> bool {
        self.view
            .get(&machine::inventory::inventory_key(self.group, event_id))
            .is_some()
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
            sum += codec::decode::<ExpiringQuantity>(v)
                .expect("corrupt expiry record")
                .0;
            true
        });
        sum
    }

    /// Tickets available now, without building the seat map.
    pub fn available(&self, event_id: u64) -> Option<u32> {
        self.inventory(event_id)
            .map(|inv| self.counts(&inv).available)
    }

    /// The event's counts at this read's time.
    pub fn counts(&self, inv: &Inventory) -> SeatCounts {
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
    pub fn walk_seats(
        &self,
        event_id: u64,
        inv: &Inventory,
        section: Option<&str>,
        f: &mut dyn FnMut(&Section, &Row, SeatState),
    ) {
        let VenueLayout::Seated { sections } = &*inv.layout else {
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

    /// A hold and where it is in its lifecycle at this read's time.
    pub fn hold(&self, hold_id: HoldId) -> Option<(Hold, HoldPhase)> {
        if hold_id.shard != self.group.0 {
            return None;
        }
        let h: Hold = get(&self.view, &machine::hold_key(self.group, hold_id.seq))?;
        let phase = match h.state {
            HoldState::Active if h.expires_at_ms <= self.freshness.as_of_ms => HoldPhase::Expired,
            HoldState::Active => HoldPhase::Active,
            HoldState::Confirmed { booking_seq } => HoldPhase::Confirmed(BookingId {
                shard: self.group.0,
                seq: booking_seq,
            }),
            HoldState::Released => HoldPhase::Released,
            HoldState::PaymentPending if h.expires_at_ms <= self.freshness.as_of_ms => {
                HoldPhase::Expired
            }
            HoldState::PaymentPending => HoldPhase::PaymentPending,
        };
        Some((h, phase))
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

    /// A hold's latest payment with the provider.
    pub fn hold_payment(&self, hold_seq: u64) -> Option<HoldPayment> {
        get(
            &self.view,
            &machine::payments::payment_key(self.group, hold_seq),
        )
    }

    /// A booking's cancellation, if it was cancelled.
    pub fn booking_cancellation(&self, booking_seq: u64) -> Option<BookingCancellation> {
        get(
            &self.view,
            &machine::payments::booking_cancel_key(self.group, booking_seq),
        )
    }

    /// The refund owed or made for a payment.
    pub fn refund(&self, payment_id: &str) -> Option<Refund> {
        get(
            &self.view,
            &machine::payments::refund_key(self.group, payment_id),
        )
    }

    /// Holds whose payment is in flight and whose expiry is at or before
    /// `until_ms`, earliest first, at most `limit`: what the reconciler checks.
    pub fn payments_due(&self, until_ms: u64, limit: usize) -> Vec<(Hold, HoldPayment)> {
        let prefix = Key::sm(self.group, table::PAYMENT_DUE).build();
        let end = Key::sm(self.group, table::PAYMENT_DUE)
            .u64(until_ms.saturating_add(1))
            .build();
        let mut out = Vec::new();
        self.view.scan_range(&prefix, &end, &mut |k, _| {
            let seq = keys::read_u64(k, prefix.len() + 8);
            let hold: Hold = get(&self.view, &machine::hold_key(self.group, seq))
                .expect("payment index points at a missing hold");
            let payment = self
                .hold_payment(seq)
                .expect("payment index points at a hold without its payment");
            out.push((hold, payment));
            out.len() < limit
        });
        out
    }

    /// Refunds not yet paid back, by payment id, at most `limit`, starting after
    /// `after` (a payment id): what the refund worker issues.
    pub fn open_refunds(&self, after: Option<&str>, limit: usize) -> Vec<(String, Refund)> {
        let prefix = Key::sm(self.group, table::REFUND_OPEN).build();
        let start = match after {
            Some(a) => {
                let mut k = machine::payments::refund_open_key(self.group, a);
                k.push(0);
                k
            }
            None => prefix.clone(),
        };
        let end = keys::prefix_end(&prefix);
        let mut out = Vec::new();
        self.view.scan_range(&start, &end, &mut |k, _| {
            let len = u16::from_be_bytes([k[prefix.len()], k[prefix.len() + 1]]) as usize;
            let id =
                String::from_utf8_lossy(&k[prefix.len() + 2..prefix.len() + 2 + len]).into_owned();
            let refund = self
                .refund(&id)
                .expect("open refund index points at a missing refund");
            out.push((id, refund));
            out.len() < limit
        });
        out
    }

    /// What the group's payments came to (all zero before any).
    pub fn payment_counts(&self) -> PaymentCounts {
        get(
            &self.view,
            &Key::sm(self.group, table::PAYMENT_COUNTS).build(),
        )
        .unwrap_or_default()
    }

    /// An event's queue.
    pub fn queue(&self, event_id: u64) -> Option<Queue> {
        get(&self.view, &machine::queue::queue_key(self.group, event_id))
    }

    /// Every event of this shard with a queue, and the queue (in event order).
    pub fn queues(&self) -> Vec<(u64, Queue)> {
        let prefix = Key::sm(self.group, table::QUEUE).build();
        let mut out = Vec::new();
        self.view.scan(&prefix, &prefix, &mut |k, v| {
            let id = u64::from_be_bytes(k[k.len() - 8..].try_into().expect("8-byte event id"));
            out.push((id, codec::decode(v).expect("corrupt queue record")));
            true
        });
        out
    }

    /// A user's place in an event's queue, and where they stand (judged at
    /// this read's time).
    pub fn queue_place(
        &self,
        event_id: u64,
        q: &Queue,
        user: &str,
    ) -> Option<(QueueJoin, machine::queue::Standing)> {
        let join: QueueJoin = get(
            &self.view,
            &machine::queue::join_key(self.group, event_id, user),
        )?;
        let standing = machine::queue::standing(
            &self.view,
            self.group,
            event_id,
            q,
            &join,
            self.freshness.as_of_ms,
        );
        Some((join, standing))
    }

    /// The placement directory (catalogue): the policy, if set, every node
    /// and every group's replicas.
    pub fn placement(&self) -> Placement {
        Placement {
            policy: machine::placement::policy(&self.view, self.group),
            nodes: machine::placement::nodes(&self.view, self.group),
            groups: machine::placement::groups(&self.view, self.group),
        }
    }

    /// The site's webhook endpoints, by name.
    pub fn webhook_endpoints(&self) -> Vec<(String, WebhookEndpoint)> {
        machine::outbox::endpoints(&self.view, self.group)
    }

    /// An outbox event.
    pub fn outbox_event(&self, seq: u64) -> Option<OutboxEvent> {
        get(&self.view, &machine::outbox::outbox_key(self.group, seq))
    }

    /// An event's delivery to an endpoint.
    pub fn delivery(&self, endpoint: &str, seq: u64) -> Option<Delivery> {
        get(
            &self.view,
            &machine::outbox::delivery_key(self.group, endpoint, seq),
        )
    }

    /// Deliveries due at or before `until_ms`, earliest first, at most `limit`:
    /// (endpoint, seq, the event, the endpoint's record).
    pub fn deliveries_due(
        &self,
        until_ms: u64,
        limit: usize,
    ) -> Vec<(String, u64, OutboxEvent, WebhookEndpoint)> {
        let prefix = Key::sm(self.group, table::DELIVERY_DUE).build();
        let end = Key::sm(self.group, table::DELIVERY_DUE)
            .u64(until_ms.saturating_add(1))
            .build();
        let endpoints: std::collections::BTreeMap<String, WebhookEndpoint> =
            self.webhook_endpoints().into_iter().collect();
        let mut out = Vec::new();
        self.view.scan_range(&prefix, &end, &mut |k, _| {
            let at = prefix.len() + 8;
            let len = u16::from_be_bytes([k[at], k[at + 1]]) as usize;
            let name = String::from_utf8_lossy(&k[at + 2..at + 2 + len]).into_owned();
            let seq = keys::read_u64(k, at + 2 + len);
            let event = self
                .outbox_event(seq)
                .expect("delivery index points at a missing outbox event");
            if let Some(e) = endpoints.get(&name) {
                out.push((name, seq, event, e.clone()));
            }
            out.len() < limit
        });
        out
    }

    /// An endpoint's deliveries of outbox entries after `after`, in seq order,
    /// at most `limit`: (seq, delivery, event).
    pub fn deliveries(
        &self,
        endpoint: &str,
        after: u64,
        limit: usize,
    ) -> Vec<(u64, Delivery, OutboxEvent)> {
        let prefix = Key::sm(self.group, table::DELIVERY).str(endpoint).build();
        let start = Key::sm(self.group, table::DELIVERY)
            .str(endpoint)
            .u64(after.saturating_add(1))
            .build();
        let mut out = Vec::new();
        self.view.scan(&prefix, &start, &mut |k, v| {
            let seq = keys::read_u64(k, prefix.len());
            let d: Delivery = codec::decode(v).expect("corrupt delivery record");
            let e = self
                .outbox_event(seq)
                .expect("delivery of a missing outbox event");
            out.push((seq, d, e));
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

/// The placement directory as the catalogue holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// The policy, once set.
    pub policy: Option<PlacementPolicy>,
    /// Every node, by id.
    pub nodes: Vec<(u64, NodeEntry)>,
    /// Every group's replicas, by group.
    pub groups: Vec<(u16, GroupPlacement)>,
}
