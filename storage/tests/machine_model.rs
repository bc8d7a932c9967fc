//! The booking state machine against a plain in-memory model.
//!
//! Random command sequences (holds by seat and by quantity, confirms, releases,
//! retries with the same idempotency key, keys reused for other requests, stamps
//! that go backwards) are applied through the real RocksDB state machine and
//! through [`Model`]; every outcome and every seat's status must agree. At the end
//! the state is snapshotted, installed into a second database, and must be equal.
//! Each case runs at feature level 0 or 1: the sequences span less than a
//! refusal's 10-minute memory, so both levels must answer as the model does
//! (level 1 keeps its sessions in another index, counted per user).

use std::collections::BTreeMap;

use boxoffice_raft::command::*;
use boxoffice_raft::GroupId;
use boxoffice_storage::records::SeatStatus;
use boxoffice_storage::{Db, StateMachineBackend, StateMachineStore, StorageSettings};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::EntryPayload;
use proptest::prelude::*;

const GROUP: GroupId = GroupId(1);
const SEATED: u64 = 10;
const GA: u64 = 11;
const MISSING: u64 = 12;
const TTL: u64 = 1000;
const T0: u64 = 1_000_000;

fn seated_layout() -> Layout {
    Layout::Seated {
        sections: vec![
            SectionSpec {
                name: "Stalls".into(),
                rows: vec![RowSpec {
                    name: "A".into(),
                    seats: 3,
                    price_cents: 100,
                }],
            },
            SectionSpec {
                name: "Circle".into(),
                rows: vec![
                    RowSpec {
                        name: "B".into(),
                        seats: 2,
                        price_cents: 200,
                    },
                    RowSpec {
                        name: "C".into(),
                        seats: 1,
                        price_cents: 200,
                    },
                ],
            },
        ],
    }
}

#[derive(Clone, Debug, PartialEq)]
enum HoldState {
    Active,
    Confirmed(u64),
    Released,
    /// Its payment (the last of `payments`) is in flight.
    PaymentPending,
}

/// A payment in flight adds this to a hold's life...
const GRACE: u64 = 700;
/// ...but never keeps it past this long after it was made.
const HOLD_MAX: u64 = 1500;

#[derive(Clone, Debug)]
struct MBooking {
    hold: u64,
    event: u64,
    user: String,
    seats: Vec<u32>,
    qty: u32,
    payment_ref: String,
    cancelled: bool,
}

#[derive(Clone, Debug)]
struct MHold {
    seq: u64,
    event: u64,
    user: String,
    seats: Vec<u32>,
    qty: u32,
    expires: u64,
    total: u64,
    state: HoldState,
    /// When it was made.
    made: u64,
    /// The payments of its checkouts, in order.
    payments: Vec<String>,
    /// The payment it was booked with, through the provider.
    paid: Option<String>,
}

#[derive(Clone, Debug)]
enum Owner {
    Held(u64, u64),
    Sold,
}

/// The plain model: rules written the simple way.
#[derive(Default)]
struct Model {
    time: u64,
    last_id: u64,
    holds: BTreeMap<u64, MHold>,
    seats: BTreeMap<u32, Owner>,
    ga_sold: u32,
    sold_by: BTreeMap<(u64, String), u32>,
    sessions: BTreeMap<(String, String), (Command, Outcome)>,
    /// The group's feature level.
    level: u32,
    bookings: BTreeMap<u64, MBooking>,
    /// Refunds owed, by payment.
    refunds: BTreeMap<String, RefundReason>,
}

impl Model {
    fn seat_status(&self, s: u32, t: u64) -> SeatStatus {
        match self.seats.get(&s) {
            None => SeatStatus::Available,
            Some(Owner::Held(_, exp)) if *exp > t => SeatStatus::Held,
            Some(Owner::Held(..)) => SeatStatus::Available,
            Some(Owner::Sold) => SeatStatus::Sold,
        }
    }
    fn live_holds(&self, event: u64, t: u64) -> impl Iterator<Item = &MHold> {
        self.holds.values().filter(move |h| {
            h.event == event
                && matches!(h.state, HoldState::Active | HoldState::PaymentPending)
                && h.expires > t
        })
    }
    fn current(&self, event: u64, user: &str, t: u64) -> u32 {
        self.sold_by
            .get(&(event, user.to_string()))
            .copied()
            .unwrap_or(0)
            + self
                .live_holds(event, t)
                .filter(|h| h.user == user)
                .map(|h| h.qty)
                .sum::<u32>()
    }
    fn ga_available(&self, t: u64) -> u32 {
        5 - self.ga_sold - self.live_holds(GA, t).map(|h| h.qty).sum::<u32>()
    }
    fn price(&self, seat: u32) -> u64 {
        if seat < 3 {
            100
        } else {
            200
        }
    }

    fn apply(&mut self, index: u64, req: &Request) -> Outcome {
        self.time = self.time.max(req.stamp_ms);
        let t = self.time;
        let applied = Applied { index, time_ms: t };
        let s = req
            .session
            .as_ref()
            .expect("model ops always carry a session");
        let skey = (s.client_id.clone(), s.idempotency_key.clone());
        if let Some((cmd, out)) = self.sessions.get(&skey) {
            if *cmd == req.command {
                return Outcome {
                    replayed: true,
                    ..out.clone()
                };
            }
            return Outcome {
                applied,
                replayed: false,
                result: Err(Rejection::IdempotencyKeyReused),
            };
        }
        let result = self.execute(t, &req.command);
        let out = Outcome {
            applied,
            replayed: false,
            result,
        };
        self.sessions
            .insert(skey, (req.command.clone(), out.clone()));
        out
    }

    fn execute(&mut self, t: u64, cmd: &Command) -> Result<Effect, Rejection> {
        let invalid = |r: &str| Rejection::InvalidInput {
            reason: r.to_string(),
        };
        match cmd {
            Command::Hold(h) => {
                if h.event_id != SEATED && h.event_id != GA {
                    return Err(Rejection::UnknownEvent {
                        event_id: h.event_id,
                    });
                }
                let ga = h.event_id == GA;
                let cap = if ga { 3 } else { 4 };
                let n = match &h.selection {
                    Selection::Seats(v) => {
                        let mut sorted = v.clone();
                        sorted.sort();
                        sorted.dedup();
                        if ga
                            || v.is_empty()
                            || sorted.len() != v.len()
                            || v.iter().any(|&s| s >= 6)
                        {
                            return Err(invalid("bad seats"));
                        }
                        v.len() as u32
                    }
                    Selection::Quantity(q) => {
                        if *q == 0 || *q > HOLD_SEATS_MAX {
                            return Err(invalid("bad quantity"));
                        }
                        *q
                    }
                };
                let current = self.current(h.event_id, &h.user, t);
                if current + n > cap {
                    return Err(Rejection::CapExceeded {
                        cap,
                        current,
                        requested: n,
                    });
                }
                let seats: Vec<u32> = match &h.selection {
                    Selection::Seats(v) => {
                        let taken: Vec<u32> = v
                            .iter()
                            .copied()
                            .filter(|&s| self.seat_status(s, t) != SeatStatus::Available)
                            .collect();
                        if !taken.is_empty() {
                            return Err(Rejection::SeatUnavailable { seat_ids: taken });
                        }
                        v.clone()
                    }
                    Selection::Quantity(q) => {
                        let available = if ga {
                            self.ga_available(t)
                        } else {
                            (0..6)
                                .filter(|&s| self.seat_status(s, t) == SeatStatus::Available)
                                .count() as u32
                        };
                        if available < *q {
                            return Err(Rejection::InsufficientAvailability {
                                requested: *q,
                                available,
                            });
                        }
                        if ga {
                            vec![]
                        } else {
                            (0..6)
                                .filter(|&s| self.seat_status(s, t) == SeatStatus::Available)
                                .take(*q as usize)
                                .collect()
                        }
                    }
                };
                self.last_id += 1;
                let seq = self.last_id;
                let total = if ga {
                    50 * u64::from(n)
                } else {
                    seats.iter().map(|&s| self.price(s)).sum()
                };
                for &s in &seats {
                    self.seats.insert(s, Owner::Held(seq, t + TTL));
                }
                self.holds.insert(
                    seq,
                    MHold {
                        seq,
                        event: h.event_id,
                        user: h.user.clone(),
                        seats: seats.clone(),
                        qty: n,
                        expires: t + TTL,
                        total,
                        state: HoldState::Active,
                        made: t,
                        payments: Vec::new(),
                        paid: None,
                    },
                );
                Ok(Effect::Held(GrantedHold {
                    hold_id: HoldId {
                        shard: GROUP.0,
                        seq,
                    },
                    event_id: h.event_id,
                    seat_ids: seats,
                    quantity: n,
                    expires_at_ms: t + TTL,
                    total_cents: total,
                }))
            }
            Command::Confirm {
                hold_id,
                user,
                payment_ref,
            } => {
                let h = self.owned(*hold_id, user)?;
                match h.state {
                    HoldState::Confirmed(b) => {
                        return Err(Rejection::HoldAlreadyConfirmed {
                            booking_id: BookingId {
                                shard: GROUP.0,
                                seq: b,
                            },
                        })
                    }
                    HoldState::Released => return Err(Rejection::HoldReleased),
                    HoldState::PaymentPending => return Err(in_flight(&h)),
                    HoldState::Active if h.expires <= t => {
                        return Err(Rejection::HoldExpired {
                            expired_at_ms: h.expires,
                        })
                    }
                    HoldState::Active => {}
                }
                Ok(Effect::Confirmed(self.book(&h, t, payment_ref)))
            }
            Command::Release { hold_id, user } => {
                let h = self.owned(*hold_id, user)?;
                match h.state {
                    HoldState::Confirmed(b) => {
                        return Err(Rejection::HoldAlreadyConfirmed {
                            booking_id: BookingId {
                                shard: GROUP.0,
                                seq: b,
                            },
                        })
                    }
                    HoldState::Released => {
                        return Ok(Effect::Released {
                            hold_id: *hold_id,
                            event_id: h.event,
                            seat_ids: vec![],
                            quantity: 0,
                        })
                    }
                    HoldState::PaymentPending => return Err(in_flight(&h)),
                    HoldState::Active => {}
                }
                let live = h.expires > t;
                let mut freed = vec![];
                for &s in &h.seats {
                    if matches!(self.seats.get(&s), Some(Owner::Held(seq, _)) if *seq == h.seq) {
                        self.seats.remove(&s);
                        if live {
                            freed.push(s);
                        }
                    }
                }
                self.holds.get_mut(&h.seq).unwrap().state = HoldState::Released;
                Ok(Effect::Released {
                    hold_id: *hold_id,
                    event_id: h.event,
                    seat_ids: freed,
                    quantity: if live { h.qty } else { 0 },
                })
            }
            Command::Checkout(_)
            | Command::PaymentSucceeded(_)
            | Command::PaymentFailed(_)
            | Command::CancelBooking { .. }
                if self.level < FEATURE_LEVEL_PAYMENTS =>
            {
                Err(Rejection::FeatureNotEnabled {
                    needed: FEATURE_LEVEL_PAYMENTS,
                    level: self.level,
                })
            }
            Command::Checkout(c) => {
                let h = self.owned(c.hold_id, &c.user)?;
                match h.state {
                    HoldState::Confirmed(b) => {
                        return Err(Rejection::HoldAlreadyConfirmed {
                            booking_id: BookingId {
                                shard: GROUP.0,
                                seq: b,
                            },
                        })
                    }
                    HoldState::Released => return Err(Rejection::HoldReleased),
                    HoldState::PaymentPending => {
                        if h.payments.last() != Some(&c.payment_id) {
                            return Err(in_flight(&h));
                        }
                        if h.expires <= t {
                            return Err(Rejection::HoldExpired {
                                expired_at_ms: h.expires,
                            });
                        }
                        return Ok(started(&h));
                    }
                    HoldState::Active if h.expires <= t => {
                        return Err(Rejection::HoldExpired {
                            expired_at_ms: h.expires,
                        })
                    }
                    HoldState::Active => {}
                }
                if c.amount_cents != h.total || h.payments.contains(&c.payment_id) {
                    return Err(invalid("bad checkout"));
                }
                let new = h.expires.max((t + c.grace_ms).min(h.made + c.hold_max_ms));
                for &s in &h.seats {
                    self.seats.insert(s, Owner::Held(h.seq, new));
                }
                let m = self.holds.get_mut(&h.seq).unwrap();
                m.expires = new;
                m.state = HoldState::PaymentPending;
                m.payments.push(c.payment_id.clone());
                Ok(started(m))
            }
            Command::PaymentSucceeded(n) => {
                let h = self.hold_of(n.hold_id)?;
                if self.refunds.contains_key(&n.payment_id) {
                    return Ok(unchanged());
                }
                if let HoldState::Confirmed(b) = h.state {
                    if self.bookings[&b].payment_ref == n.payment_id {
                        return Ok(unchanged());
                    }
                    return Ok(self.refund(&h, n, RefundReason::LatePayment));
                }
                if n.amount_cents != h.total {
                    self.clear_pending(&h, &n.payment_id, t);
                    return Ok(self.refund(&h, n, RefundReason::AmountMismatch));
                }
                let live = matches!(h.state, HoldState::Active | HoldState::PaymentPending)
                    && h.expires > t;
                // An expired or closed hold is booked only if its seats are
                // free and the buyer's cap allows (it is not live, so not counted).
                let free = live || {
                    let cap = if h.event == GA { 3 } else { 4 };
                    let room = if h.event == GA {
                        self.ga_available(t) >= h.qty
                    } else {
                        h.seats
                            .iter()
                            .all(|&s| self.seat_status(s, t) == SeatStatus::Available)
                    };
                    self.current(h.event, &h.user, t) + h.qty <= cap && room
                };
                if free {
                    let booking = self.book(&h, t, &n.payment_id);
                    self.holds.get_mut(&h.seq).unwrap().paid = Some(n.payment_id.clone());
                    return Ok(Effect::Payment(PaymentEffect::Booked {
                        booking,
                        late: !live,
                    }));
                }
                if h.state != HoldState::Released {
                    self.close(&h);
                }
                Ok(self.refund(&h, n, RefundReason::LatePayment))
            }
            Command::PaymentFailed(n) => {
                let h = self.hold_of(n.hold_id)?;
                if h.state != HoldState::PaymentPending || h.payments.last() != Some(&n.payment_id)
                {
                    return Ok(unchanged());
                }
                self.clear_pending(&h, &n.payment_id, t);
                Ok(Effect::Payment(if h.expires > t {
                    PaymentEffect::HoldReopened {
                        hold_id: n.hold_id,
                        expires_at_ms: h.expires,
                    }
                } else {
                    PaymentEffect::HoldClosed { hold_id: n.hold_id }
                }))
            }
            Command::CancelBooking {
                booking_id, user, ..
            } => {
                let b = self
                    .bookings
                    .get(&booking_id.seq)
                    .filter(|_| booking_id.shard == GROUP.0)
                    .cloned()
                    .ok_or(Rejection::UnknownBooking {
                        booking_id: *booking_id,
                    })?;
                if user.as_ref().is_some_and(|u| *u != b.user) {
                    return Err(Rejection::NotBookingOwner);
                }
                if b.cancelled {
                    return Err(Rejection::BookingCancelled);
                }
                for s in &b.seats {
                    self.seats.remove(s);
                }
                if b.event == GA {
                    self.ga_sold -= b.qty;
                }
                *self.sold_by.get_mut(&(b.event, b.user.clone())).unwrap() -= b.qty;
                self.bookings.get_mut(&booking_id.seq).unwrap().cancelled = true;
                let h = &self.holds[&b.hold];
                let refund = (h.paid.as_deref() == Some(b.payment_ref.as_str())
                    && !self.refunds.contains_key(&b.payment_ref))
                .then(|| b.payment_ref.clone());
                if let Some(p) = &refund {
                    let reason = if user.is_some() {
                        RefundReason::CancelledByUser
                    } else {
                        RefundReason::CancelledByAdmin
                    };
                    self.refunds.insert(p.clone(), reason);
                }
                Ok(Effect::Payment(PaymentEffect::BookingCancelled {
                    booking_id: *booking_id,
                    event_id: b.event,
                    seat_ids: b.seats.clone(),
                    quantity: b.qty,
                    refund_payment_id: refund,
                }))
            }
            other => panic!("model does not do {other:?}"),
        }
    }

    /// Books `h`: its seats sold, its tickets counted, the booking recorded.
    fn book(&mut self, h: &MHold, t: u64, payment_ref: &str) -> ConfirmedBooking {
        self.last_id += 1;
        let b = self.last_id;
        for &s in &h.seats {
            self.seats.insert(s, Owner::Sold);
        }
        if h.event == GA {
            self.ga_sold += h.qty;
        }
        *self.sold_by.entry((h.event, h.user.clone())).or_default() += h.qty;
        self.holds.get_mut(&h.seq).unwrap().state = HoldState::Confirmed(b);
        self.bookings.insert(
            b,
            MBooking {
                hold: h.seq,
                event: h.event,
                user: h.user.clone(),
                seats: h.seats.clone(),
                qty: h.qty,
                payment_ref: payment_ref.to_string(),
                cancelled: false,
            },
        );
        ConfirmedBooking {
            booking_id: BookingId {
                shard: GROUP.0,
                seq: b,
            },
            hold_id: HoldId {
                shard: GROUP.0,
                seq: h.seq,
            },
            event_id: h.event,
            user: h.user.clone(),
            seat_ids: h.seats.clone(),
            quantity: h.qty,
            total_cents: h.total,
            payment_ref: payment_ref.to_string(),
            confirmed_at_ms: t,
        }
    }

    /// Closes a hold (released); an expired one's seats were free already.
    fn close(&mut self, h: &MHold) {
        for &s in &h.seats {
            if matches!(self.seats.get(&s), Some(Owner::Held(seq, _)) if *seq == h.seq) {
                self.seats.remove(&s);
            }
        }
        self.holds.get_mut(&h.seq).unwrap().state = HoldState::Released;
    }

    /// The hold no longer waits for `payment`: active again if live, else closed.
    fn clear_pending(&mut self, h: &MHold, payment: &str, t: u64) {
        if h.state != HoldState::PaymentPending
            || h.payments.last().map(String::as_str) != Some(payment)
        {
            return;
        }
        if h.expires > t {
            self.holds.get_mut(&h.seq).unwrap().state = HoldState::Active;
        } else {
            self.close(h);
        }
    }

    fn refund(&mut self, h: &MHold, n: &PaymentNotice, reason: RefundReason) -> Effect {
        self.refunds.insert(n.payment_id.clone(), reason);
        Effect::Payment(PaymentEffect::RefundRequired {
            payment_id: n.payment_id.clone(),
            hold_id: n.hold_id,
            event_id: h.event,
            amount_cents: n.amount_cents,
            reason,
        })
    }

    fn hold_of(&self, id: HoldId) -> Result<MHold, Rejection> {
        self.holds
            .get(&id.seq)
            .filter(|_| id.shard == GROUP.0)
            .cloned()
            .ok_or(Rejection::UnknownHold { hold_id: id })
    }

    fn owned(&self, id: HoldId, user: &str) -> Result<MHold, Rejection> {
        let h = self
            .holds
            .get(&id.seq)
            .filter(|_| id.shard == GROUP.0)
            .ok_or(Rejection::UnknownHold { hold_id: id })?;
        if h.user != user {
            return Err(Rejection::NotHoldOwner);
        }
        Ok(h.clone())
    }
}

fn in_flight(h: &MHold) -> Rejection {
    Rejection::PaymentInFlight {
        payment_id: h.payments.last().cloned().unwrap_or_default(),
    }
}

fn started(h: &MHold) -> Effect {
    Effect::Payment(PaymentEffect::CheckoutStarted {
        hold_id: HoldId {
            shard: GROUP.0,
            seq: h.seq,
        },
        event_id: h.event,
        seat_ids: h.seats.clone(),
        quantity: h.qty,
        payment_id: h.payments.last().cloned().unwrap_or_default(),
        expires_at_ms: h.expires,
    })
}

fn unchanged() -> Effect {
    Effect::Payment(PaymentEffect::Unchanged { why: String::new() })
}

#[derive(Clone, Debug)]
enum Kind {
    HoldSeats(u64, Vec<u32>),
    HoldQty(u64, u32),
    Confirm(usize),
    Release(usize),
    /// Check out the n-th hold: a new payment, or (`.1`) its last one again.
    Checkout(usize, bool),
    /// The provider says the n-th hold's last payment succeeded (for the
    /// wrong amount when `.1`).
    Paid(usize, bool),
    /// The provider says the n-th hold's last payment failed.
    Failed(usize),
    /// Cancel the n-th booking, as its owner or (`.1`) an admin.
    Cancel(usize, bool),
}

#[derive(Clone, Debug)]
struct Op {
    dt: i64,
    user: u8,
    key: Option<u8>,
    kind: Kind,
    /// Shares the previous op's log entry (a leader's batch) instead of taking one
    /// of its own.
    join: bool,
}

fn op() -> impl Strategy<Value = Op> {
    let event = prop_oneof![4 => Just(SEATED), 4 => Just(GA), 1 => Just(MISSING)];
    let kind = prop_oneof![
        3 => (event.clone(), proptest::collection::vec(0u32..7, 0..4)).prop_map(|(e, s)| Kind::HoldSeats(e, s)),
        3 => (event, 0u32..5).prop_map(|(e, q)| Kind::HoldQty(e, q)),
        3 => (0usize..8).prop_map(Kind::Confirm),
        2 => (0usize..8).prop_map(Kind::Release),
        3 => (0usize..8, proptest::bool::weighted(0.2)).prop_map(|(i, r)| Kind::Checkout(i, r)),
        3 => (0usize..8, proptest::bool::weighted(0.1)).prop_map(|(i, w)| Kind::Paid(i, w)),
        1 => (0usize..8).prop_map(Kind::Failed),
        1 => (0usize..8, any::<bool>()).prop_map(|(i, a)| Kind::Cancel(i, a)),
    ];
    (
        -300i64..1300,
        0u8..3,
        proptest::option::weighted(0.3, 0u8..4),
        kind,
        proptest::bool::weighted(0.4),
    )
        .prop_map(|(dt, user, key, kind, join)| Op {
            dt,
            user,
            key,
            kind,
            join,
        })
}

/// Invalid-input reasons and why nothing changed are prose; compare them by code only.
fn normalize(mut o: Outcome) -> Outcome {
    match &mut o.result {
        Err(Rejection::InvalidInput { reason }) => reason.clear(),
        Ok(Effect::Payment(PaymentEffect::Unchanged { why })) => why.clear(),
        _ => {}
    }
    o
}

use boxoffice_storage::testing::entry;

/// Storage settings keeping the records in `backend`.
fn kept_in(backend: StateMachineBackend) -> StorageSettings {
    StorageSettings {
        state_machine: backend,
        ..Default::default()
    }
}

/// The other place to keep the records.
fn other(backend: StateMachineBackend) -> StateMachineBackend {
    match backend {
        StateMachineBackend::Memory => StateMachineBackend::Rocksdb,
        StateMachineBackend::Rocksdb => StateMachineBackend::Memory,
    }
}

fn run_case(ops: Vec<Op>, level: u32, backend: StateMachineBackend) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let settings = kept_in(backend);
        let db = Db::open(dir.path(), &settings).unwrap();
        let mut sm =
            StateMachineStore::open(db, GROUP, &dir.path().join("snap"), &settings).unwrap();
        let reader = sm.reader();
        let setup = [
            Command::EnableFeatures { level },
            Command::CreateInventory(InventorySpec {
                event_id: SEATED,
                layout: seated_layout(),
                hold_ttl_ms: TTL,
                per_user_cap: 4,
            }),
            Command::CreateInventory(InventorySpec {
                event_id: GA,
                layout: Layout::GeneralAdmission {
                    capacity: 5,
                    price_cents: 50,
                },
                hold_ttl_ms: TTL,
                per_user_cap: 3,
            }),
        ];
        let mut index = 0u64;
        for command in setup {
            index += 1;
            let req = Request {
                stamp_ms: T0,
                session: None,
                command,
            };
            let out = sm
                .apply([entry(index, EntryPayload::Normal(req))])
                .await
                .unwrap();
            prop_assert!(out[0].result.is_ok());
        }
        let mut model = Model {
            time: T0,
            level,
            ..Default::default()
        };
        let mut stamp = T0 as i64;
        // Ops are grouped into log entries: an op with `join` shares the previous
        // op's entry, applied as a `Command::Batch` in the same order.
        let mut entries: Vec<Vec<(usize, Op)>> = Vec::new();
        for (step, op) in ops.into_iter().enumerate() {
            match entries.last_mut() {
                Some(last) if op.join && last.len() < BATCH_REQUESTS_MAX => last.push((step, op)),
                _ => entries.push(vec![(step, op)]),
            }
        }
        for ops in entries {
            index += 1;
            let step = ops[0].0;
            let mut requests = Vec::new();
            let mut expected = Vec::new();
            for (step, op) in ops {
                stamp = (stamp + op.dt).max(0);
                let user = format!("user{}", op.user);
                let pick = |i: usize| {
                    let ids: Vec<u64> = model.holds.keys().copied().collect();
                    if ids.is_empty() {
                        HoldId {
                            shard: GROUP.0,
                            seq: 999,
                        }
                    } else {
                        HoldId {
                            shard: GROUP.0,
                            seq: ids[i % ids.len()],
                        }
                    }
                };
                let command = match &op.kind {
                    Kind::HoldSeats(e, s) => Command::Hold(HoldRequest {
                        event_id: *e,
                        user: user.clone(),
                        selection: Selection::Seats(s.clone()),
                    }),
                    Kind::HoldQty(e, q) => Command::Hold(HoldRequest {
                        event_id: *e,
                        user: user.clone(),
                        selection: Selection::Quantity(*q),
                    }),
                    Kind::Confirm(i) => Command::Confirm {
                        hold_id: pick(*i),
                        user: user.clone(),
                        payment_ref: "pay".into(),
                    },
                    Kind::Release(i) => Command::Release {
                        hold_id: pick(*i),
                        user: user.clone(),
                    },
                    Kind::Checkout(i, reuse) => {
                        let id = pick(*i);
                        let h = model.holds.get(&id.seq);
                        let n = h.map_or(0, |h| h.payments.len());
                        let payment_id = match (reuse, h.and_then(|h| h.payments.last())) {
                            (true, Some(last)) => last.clone(),
                            _ => format!("pi_{}_{n}", id.seq),
                        };
                        Command::Checkout(CheckoutRequest {
                            hold_id: id,
                            // Mostly as the owner.
                            user: h
                                .filter(|_| op.user != 2)
                                .map_or(user.clone(), |h| h.user.clone()),
                            payment_id,
                            amount_cents: h.map_or(0, |h| h.total),
                            currency: "usd".into(),
                            grace_ms: GRACE,
                            hold_max_ms: HOLD_MAX,
                        })
                    }
                    Kind::Paid(i, _) | Kind::Failed(i) => {
                        let id = pick(*i);
                        let h = model.holds.get(&id.seq);
                        let notice = PaymentNotice {
                            hold_id: id,
                            payment_id: h
                                .and_then(|h| h.payments.last().cloned())
                                .unwrap_or_else(|| format!("pi_{}_x", id.seq)),
                            amount_cents: h.map_or(0, |h| h.total)
                                + u64::from(matches!(op.kind, Kind::Paid(_, true))),
                            provider_event: None,
                        };
                        if matches!(op.kind, Kind::Paid(..)) {
                            Command::PaymentSucceeded(notice)
                        } else {
                            Command::PaymentFailed(notice)
                        }
                    }
                    Kind::Cancel(i, admin) => {
                        let ids: Vec<u64> = model.bookings.keys().copied().collect();
                        let seq = if ids.is_empty() {
                            999
                        } else {
                            ids[i % ids.len()]
                        };
                        Command::CancelBooking {
                            booking_id: BookingId {
                                shard: GROUP.0,
                                seq,
                            },
                            user: (!admin).then(|| {
                                model
                                    .bookings
                                    .get(&seq)
                                    .map_or(user.clone(), |b| b.user.clone())
                            }),
                            not_after_ms: None,
                        }
                    }
                };
                let key = match op.key {
                    Some(k) => format!("k{k}"),
                    None => format!("unique-{step}"),
                };
                let req = Request {
                    stamp_ms: stamp as u64,
                    session: Some(Session {
                        client_id: user.clone(),
                        idempotency_key: key,
                    }),
                    command,
                };
                expected.push(model.apply(index, &req));
                requests.push((step, req));
            }
            let got: Vec<Outcome> = if requests.len() == 1 {
                sm.apply([entry(index, EntryPayload::Normal(requests[0].1.clone()))])
                    .await
                    .unwrap()
            } else {
                let batch = Request {
                    stamp_ms: requests.iter().map(|(_, r)| r.stamp_ms).max().unwrap_or(0),
                    session: None,
                    command: Command::Batch(requests.iter().map(|(_, r)| r.clone()).collect()),
                };
                let mut out = sm
                    .apply([entry(index, EntryPayload::Normal(batch))])
                    .await
                    .unwrap();
                prop_assert_eq!(out.len(), 1);
                match out.remove(0).result {
                    Ok(Effect::Batch(outcomes)) => outcomes,
                    other => {
                        return Err(TestCaseError::fail(format!(
                            "a batch entry answered {other:?}"
                        )))
                    }
                }
            };
            prop_assert_eq!(got.len(), requests.len());
            for ((got, expected), (step, req)) in got.into_iter().zip(expected).zip(&requests) {
                prop_assert_eq!(
                    normalize(got),
                    normalize(expected),
                    "step {} {:?}",
                    step,
                    req
                );
            }
            {
                // Every seat's status and the GA counts agree, judged at the current time
                // and at a later instant (expiry seen by a reader without any write).
                for later in [0, TTL / 2, TTL] {
                    let tx = reader.begin(model.time + later);
                    let t = tx.freshness.as_of_ms;
                    let inv = tx.inventory(SEATED).unwrap();
                    let walk = |section: Option<&str>| {
                        let mut seats = Vec::new();
                        tx.walk_seats(SEATED, &inv, section, &mut |s, r, seat| {
                            seats.push((s.name.clone(), r.name.clone(), seat))
                        });
                        seats
                    };
                    let all = walk(None);
                    let statuses: Vec<SeatStatus> = all.iter().map(|(_, _, s)| s.status).collect();
                    let want: Vec<SeatStatus> = (0..6).map(|s| model.seat_status(s, t)).collect();
                    prop_assert_eq!(statuses, want, "seats at step {} (+{} ms)", step, later);
                    // A held seat says until when; no other seat does.
                    for (_, _, seat) in &all {
                        prop_assert_eq!(
                            seat.held_until_ms.is_some(),
                            seat.status == SeatStatus::Held
                        );
                    }
                    // Section walks are the whole walk, section by section.
                    let stalls = walk(Some("Stalls"));
                    let circle = walk(Some("Circle"));
                    let joined: Vec<_> = stalls.iter().chain(&circle).cloned().collect();
                    prop_assert_eq!(&joined, &all);
                    prop_assert_eq!(stalls.len(), 3);
                    prop_assert!(walk(Some("Gods")).is_empty());
                    let places: Vec<(&str, &str, u32, u32)> = all
                        .iter()
                        .map(|(s, r, seat)| (s.as_str(), r.as_str(), seat.number, seat.seat_id))
                        .collect();
                    prop_assert_eq!(
                        places,
                        vec![
                            ("Stalls", "A", 1, 0),
                            ("Stalls", "A", 2, 1),
                            ("Stalls", "A", 3, 2),
                            ("Circle", "B", 1, 3),
                            ("Circle", "B", 2, 4),
                            ("Circle", "C", 1, 5)
                        ]
                    );
                    let counts = tx.counts(&inv);
                    prop_assert_eq!(
                        counts.available as usize,
                        (0..6)
                            .filter(|&s| model.seat_status(s, t) == SeatStatus::Available)
                            .count()
                    );
                    prop_assert_eq!(
                        counts.held as usize,
                        (0..6)
                            .filter(|&s| model.seat_status(s, t) == SeatStatus::Held)
                            .count()
                    );
                    let ga_inv = tx.inventory(GA).unwrap();
                    let ga = tx.counts(&ga_inv);
                    prop_assert_eq!(
                        ga.available,
                        model.ga_available(t),
                        "GA available at step {} (+{} ms)",
                        step,
                        later
                    );
                    prop_assert_eq!(ga.sold, model.ga_sold);
                    let mut ga_seats = 0;
                    tx.walk_seats(GA, &ga_inv, None, &mut |_, _, _| ga_seats += 1);
                    prop_assert_eq!(ga_seats, 0);
                }
            }
        }

        // Snapshot: build, install elsewhere (with the records kept in the other
        // place: the file is the same), compare every record.
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let dir2 = tempfile::tempdir().unwrap();
        let settings2 = kept_in(other(backend));
        let db2 = Db::open(dir2.path(), &settings2).unwrap();
        let mut sm2 =
            StateMachineStore::open(db2, GROUP, &dir2.path().join("snap"), &settings2).unwrap();
        let mut recv = sm2.begin_receiving_snapshot().await.unwrap();
        let mut src = snap.snapshot;
        tokio::io::copy(&mut src, &mut *recv).await.unwrap();
        sm2.install_snapshot(&snap.meta, recv).await.unwrap();
        let a = sm.reader().begin(0).dump();
        let b = sm2.reader().begin(0).dump();
        prop_assert!(!a.is_empty());
        prop_assert_eq!(a, b, "state after snapshot install differs");
        prop_assert_eq!(
            sm.applied_state().await.unwrap(),
            sm2.applied_state().await.unwrap()
        );
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn machine_agrees_with_model(
        ops in proptest::collection::vec(op(), 1..60),
        level in 0..=FEATURE_LEVEL_MAX,
        in_memory in any::<bool>(),
    ) {
        let backend = if in_memory {
            StateMachineBackend::Memory
        } else {
            StateMachineBackend::Rocksdb
        };
        run_case(ops, level, backend)?;
    }
}

/// A hold expires exactly at `expires_at_ms`: one millisecond before, its seats are
/// taken; at that instant another user gets them and the owner's confirm fails.
#[tokio::test]
async fn hold_expires_exactly_at_its_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), &Default::default()).unwrap();
    let mut sm =
        StateMachineStore::open(db, GROUP, &dir.path().join("snap"), &Default::default()).unwrap();
    let mut index = 0;
    let mut apply = |stamp: u64, user: &str, key: &str, command: Command| {
        index += 1;
        let req = Request {
            stamp_ms: stamp,
            session: Some(Session {
                client_id: user.into(),
                idempotency_key: key.into(),
            }),
            command,
        };
        entry(index, EntryPayload::Normal(req))
    };
    let e1 = apply(
        T0,
        "admin",
        "inv",
        Command::CreateInventory(InventorySpec {
            event_id: SEATED,
            layout: seated_layout(),
            hold_ttl_ms: TTL,
            per_user_cap: 4,
        }),
    );
    let hold = |u: &str| {
        Command::Hold(HoldRequest {
            event_id: SEATED,
            user: u.into(),
            selection: Selection::Seats(vec![2]),
        })
    };
    let e2 = apply(T0, "alice", "h", hold("alice"));
    let e3 = apply(T0 + TTL - 1, "bob", "h1", hold("bob"));
    let e4 = apply(T0 + TTL, "bob", "h2", hold("bob"));
    let confirm = Command::Confirm {
        hold_id: HoldId {
            shard: GROUP.0,
            seq: 1,
        },
        user: "alice".into(),
        payment_ref: "p".into(),
    };
    let e5 = apply(T0 + TTL, "alice", "c", confirm);
    let out = sm.apply([e1, e2, e3, e4, e5]).await.unwrap();
    assert!(matches!(out[1].result, Ok(Effect::Held(ref h)) if h.expires_at_ms == T0 + TTL));
    assert_eq!(
        out[2].result,
        Err(Rejection::SeatUnavailable { seat_ids: vec![2] })
    );
    assert!(matches!(out[3].result, Ok(Effect::Held(_))));
    assert_eq!(
        out[4].result,
        Err(Rejection::HoldExpired {
            expired_at_ms: T0 + TTL
        })
    );
}

/// State-machine time never goes backwards, even if a new leader's clock is behind.
#[tokio::test]
async fn time_is_monotonic_across_stamps() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), &Default::default()).unwrap();
    let mut sm =
        StateMachineStore::open(db, GROUP, &dir.path().join("snap"), &Default::default()).unwrap();
    let mk = |i: u64, stamp: u64| {
        let spec = InventorySpec {
            event_id: 100 + i,
            layout: seated_layout(),
            hold_ttl_ms: TTL,
            per_user_cap: 1,
        };
        entry(
            i,
            EntryPayload::Normal(Request {
                stamp_ms: stamp,
                session: None,
                command: Command::CreateInventory(spec),
            }),
        )
    };
    let out = sm
        .apply([mk(1, 5000), mk(2, 3000), mk(3, 7000)])
        .await
        .unwrap();
    let times: Vec<u64> = out.iter().map(|o| o.applied.time_ms).collect();
    assert_eq!(times, vec![5000, 5000, 7000]);
}

#[tokio::test]
async fn batches_apply_in_order_and_never_nest() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), &Default::default()).unwrap();
    let mut sm =
        StateMachineStore::open(db, GROUP, &dir.path().join("snap"), &Default::default()).unwrap();
    let mut changes = sm.changes();
    let inv = |event_id: u64| Request {
        stamp_ms: 5000,
        session: None,
        command: Command::CreateInventory(InventorySpec {
            event_id,
            layout: seated_layout(),
            hold_ttl_ms: TTL,
            per_user_cap: 4,
        }),
    };
    let hold = |user: &str, key: &str, seats: Vec<u32>| Request {
        stamp_ms: 6000,
        session: Some(Session {
            client_id: user.into(),
            idempotency_key: key.into(),
        }),
        command: Command::Hold(HoldRequest {
            event_id: 7,
            user: user.into(),
            selection: Selection::Seats(seats),
        }),
    };
    let batch = |requests: Vec<Request>, session: Option<Session>| Request {
        stamp_ms: 6000,
        session,
        command: Command::Batch(requests),
    };
    let out = sm
        .apply([
            entry(1, EntryPayload::Normal(inv(7))),
            entry(
                2,
                EntryPayload::Normal(batch(
                    vec![
                        hold("a", "k1", vec![1, 2]),
                        // Same seat, later in the entry: refused.
                        hold("b", "k1", vec![2]),
                        // The first request again (a retry that caught up): replayed.
                        hold("a", "k1", vec![1, 2]),
                        batch(vec![hold("c", "k9", vec![3])], None),
                    ],
                    None,
                )),
            ),
            entry(
                3,
                EntryPayload::Normal(batch(
                    vec![hold("d", "k1", vec![4])],
                    Some(Session {
                        client_id: "d".into(),
                        idempotency_key: "outer".into(),
                    }),
                )),
            ),
        ])
        .await
        .unwrap();
    let Ok(Effect::Batch(inner)) = &out[1].result else {
        panic!("a batch entry answered {:?}", out[1]);
    };
    assert_eq!(inner.len(), 4);
    assert!(inner.iter().all(|o| o.applied.index == 2));
    let Ok(Effect::Held(first)) = &inner[0].result else {
        panic!("{:?}", inner[0]);
    };
    assert_eq!(first.seat_ids, vec![1, 2]);
    assert!(matches!(
        inner[1].result,
        Err(Rejection::SeatUnavailable { .. })
    ));
    assert!(inner[2].replayed && inner[2].result == inner[0].result);
    assert!(matches!(
        inner[3].result,
        Err(Rejection::InvalidInput { .. })
    ));
    // A batch carrying a session of its own is not applied as a batch.
    assert!(matches!(out[2].result, Err(Rejection::InvalidInput { .. })));
    // One change per request, numbered within the entry.
    let mut seen = Vec::new();
    while let Ok(c) = changes.try_recv() {
        seen.push((c.index, c.pos));
    }
    assert_eq!(seen, vec![(1, 0), (2, 0), (2, 1), (2, 2), (2, 3), (3, 0)]);
}
