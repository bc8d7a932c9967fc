//! Payments in the state machine (feature level 2): checkout, the provider's
//! word on a payment in any order and any number of times, late payments,
//! cancellation and refunds; and the guarantee, as a property over random
//! histories: every payment that succeeded ends in exactly one booking or
//! exactly one refund, and nothing is refunded that was not paid.

use std::collections::{BTreeMap, BTreeSet};

use boxoffice_raft::command::*;
use boxoffice_raft::GroupId;
use boxoffice_storage::read::HoldPhase;
use boxoffice_storage::records::{HoldState, SeatStatus};
use boxoffice_storage::testing::TestMachine;
use proptest::prelude::*;

const GROUP: GroupId = GroupId(1);
const SEATED: u64 = 10;
const GA: u64 = 11;
const TTL: u64 = 60_000;
const T0: u64 = 1_000_000_000;
const GRACE: u64 = 600_000;
const HOLD_MAX: u64 = 1_800_000;

/// The shared test state machine, with this file's helpers.
struct Machine(TestMachine);

impl std::ops::Deref for Machine {
    type Target = TestMachine;
    fn deref(&self) -> &TestMachine {
        &self.0
    }
}

impl std::ops::DerefMut for Machine {
    fn deref_mut(&mut self) -> &mut TestMachine {
        &mut self.0
    }
}

impl Machine {
    fn new(level: u32) -> Machine {
        let mut m = Machine(TestMachine::open(GROUP));
        for c in [
            Command::EnableFeatures { level },
            Command::CreateInventory(InventorySpec {
                event_id: SEATED,
                layout: Layout::Seated {
                    sections: vec![SectionSpec {
                        name: "Stalls".into(),
                        rows: vec![RowSpec {
                            name: "A".into(),
                            seats: 4,
                            price_cents: 100,
                        }],
                    }],
                },
                hold_ttl_ms: TTL,
                per_user_cap: 4,
            }),
            Command::CreateInventory(InventorySpec {
                event_id: GA,
                layout: Layout::GeneralAdmission {
                    capacity: 3,
                    price_cents: 50,
                },
                hold_ttl_ms: TTL,
                per_user_cap: 3,
            }),
        ] {
            m.apply(T0, c).expect("setup");
        }
        m
    }

    fn apply(&mut self, stamp: u64, command: Command) -> Result<Effect, Rejection> {
        self.apply_as(stamp, None, command)
    }

    fn hold(
        &mut self,
        t: u64,
        user: &str,
        event: u64,
        selection: Selection,
    ) -> Result<GrantedHold, Rejection> {
        match self.apply(
            t,
            Command::Hold(HoldRequest {
                event_id: event,
                user: user.into(),
                selection,
            }),
        )? {
            Effect::Held(h) => Ok(h),
            other => panic!("hold made {other:?}"),
        }
    }

    fn checkout(
        &mut self,
        t: u64,
        h: &GrantedHold,
        user: &str,
        payment: &str,
    ) -> Result<Effect, Rejection> {
        self.apply(
            t,
            Command::Checkout(CheckoutRequest {
                hold_id: h.hold_id,
                user: user.into(),
                payment_id: payment.into(),
                amount_cents: h.total_cents,
                currency: "usd".into(),
                grace_ms: GRACE,
                hold_max_ms: HOLD_MAX,
            }),
        )
    }

    fn paid(
        &mut self,
        t: u64,
        hold: HoldId,
        payment: &str,
        amount: u64,
        evt: Option<&str>,
    ) -> Result<Effect, Rejection> {
        self.apply(
            t,
            Command::PaymentSucceeded(PaymentNotice {
                hold_id: hold,
                payment_id: payment.into(),
                amount_cents: amount,
                provider_event: evt.map(str::to_string),
            }),
        )
    }

    fn failed(
        &mut self,
        t: u64,
        hold: HoldId,
        payment: &str,
        evt: Option<&str>,
    ) -> Result<Effect, Rejection> {
        self.apply(
            t,
            Command::PaymentFailed(PaymentNotice {
                hold_id: hold,
                payment_id: payment.into(),
                amount_cents: 0,
                provider_event: evt.map(str::to_string),
            }),
        )
    }

    fn seat(&self, t: u64, seat: u32) -> SeatStatus {
        let tx = self.reader.begin(t);
        let inv = tx.inventory(SEATED).unwrap();
        let mut status = None;
        tx.walk_seats(SEATED, &inv, None, &mut |_, _, s| {
            if s.seat_id == seat {
                status = Some(s.status);
            }
        });
        status.unwrap()
    }

    fn available(&self, t: u64, event: u64) -> u32 {
        self.reader.begin(t).available(event).unwrap()
    }
}

fn payment_effect(r: Result<Effect, Rejection>) -> PaymentEffect {
    match r {
        Ok(Effect::Payment(p)) => p,
        other => panic!("expected a payment effect, got {other:?}"),
    }
}

fn seats(s: &[u32]) -> Selection {
    Selection::Seats(s.to_vec())
}

#[test]
fn below_level_2_payments_are_refused_and_change_nothing() {
    let mut m = Machine::new(1);
    let h = m.hold(T0, "ann", SEATED, seats(&[0])).unwrap();
    assert_eq!(
        m.checkout(T0, &h, "ann", "pi_1"),
        Err(Rejection::FeatureNotEnabled {
            needed: 2,
            level: 1
        })
    );
    assert_eq!(
        m.reader.begin(T0).hold(h.hold_id).unwrap().1,
        HoldPhase::Active
    );
}

#[test]
fn checkout_extends_the_hold_within_its_bound_and_blocks_the_direct_paths() {
    let mut m = Machine::new(2);
    let h = m.hold(T0, "ann", SEATED, seats(&[0, 1])).unwrap();
    let t = T0 + 10_000;
    let PaymentEffect::CheckoutStarted { expires_at_ms, .. } =
        payment_effect(m.checkout(t, &h, "ann", "pi_1"))
    else {
        panic!()
    };
    assert_eq!(expires_at_ms, t + GRACE);
    assert_eq!(
        m.reader.begin(t).hold(h.hold_id).unwrap().1,
        HoldPhase::PaymentPending
    );
    // The seats are held until the new expiry, not the old one.
    assert_eq!(m.seat(h.expires_at_ms + 1, 0), SeatStatus::Held);
    assert_eq!(m.seat(expires_at_ms, 0), SeatStatus::Available);
    // Another user cannot take them meanwhile.
    assert!(m
        .hold(h.expires_at_ms + 1, "bob", SEATED, seats(&[0]))
        .is_err());
    let pending = Err(Rejection::PaymentInFlight {
        payment_id: "pi_1".into(),
    });
    let confirm = Command::Confirm {
        hold_id: h.hold_id,
        user: "ann".into(),
        payment_ref: "cash".into(),
    };
    assert_eq!(m.apply(t, confirm), pending);
    let release = Command::Release {
        hold_id: h.hold_id,
        user: "ann".into(),
    };
    assert_eq!(m.apply(t, release), pending);
    // Another payment for the same hold is refused; the same one is answered again.
    assert_eq!(m.checkout(t, &h, "ann", "pi_2"), pending);
    assert!(matches!(
        payment_effect(m.checkout(t + 1, &h, "ann", "pi_1")),
        PaymentEffect::CheckoutStarted { expires_at_ms: e, .. } if e == expires_at_ms
    ));
    // Only the owner checks out, and only for the hold's total.
    assert_eq!(
        m.checkout(t, &h, "bob", "pi_3"),
        Err(Rejection::NotHoldOwner)
    );
    let h2 = m.hold(t, "ann", SEATED, seats(&[2])).unwrap();
    let mut wrong = h2.clone();
    wrong.total_cents += 1;
    assert!(matches!(
        m.checkout(t, &wrong, "ann", "pi_4"),
        Err(Rejection::InvalidInput { .. })
    ));
}

#[test]
fn a_checkout_never_keeps_a_hold_past_its_maximum() {
    let mut m = Machine::new(2);
    let h = m.hold(T0, "ann", GA, Selection::Quantity(1)).unwrap();
    let t = T0 + HOLD_MAX - 1000;
    // Expired holds cannot check out; a hold made at T0 with TTL 60 s expired long ago.
    assert_eq!(
        m.checkout(t, &h, "ann", "pi_1"),
        Err(Rejection::HoldExpired {
            expired_at_ms: h.expires_at_ms
        })
    );
    // With a long grace and a short maximum the maximum wins.
    let h = m.hold(t, "ann", GA, Selection::Quantity(1)).unwrap();
    let r = m.apply(
        t + 1,
        Command::Checkout(CheckoutRequest {
            hold_id: h.hold_id,
            user: "ann".into(),
            payment_id: "pi_2".into(),
            amount_cents: h.total_cents,
            currency: "usd".into(),
            grace_ms: GRACE,
            hold_max_ms: TTL + 5000,
        }),
    );
    assert!(matches!(
        payment_effect(r),
        PaymentEffect::CheckoutStarted { expires_at_ms, .. } if expires_at_ms == t + TTL + 5000
    ));
}

#[test]
fn a_success_books_once_whatever_is_delivered_after_it() {
    let mut m = Machine::new(2);
    let h = m.hold(T0, "ann", SEATED, seats(&[0])).unwrap();
    m.checkout(T0, &h, "ann", "pi_1").unwrap();
    let r = m.paid(T0 + 5, h.hold_id, "pi_1", h.total_cents, Some("evt_1"));
    let PaymentEffect::Booked {
        booking,
        late: false,
    } = payment_effect(r)
    else {
        panic!()
    };
    assert_eq!(booking.payment_ref, "pi_1");
    assert_eq!(m.seat(T0 + 10, 0), SeatStatus::Sold);
    // The same event again, the same news without an event, a late failure:
    // nothing changes.
    for r in [
        m.paid(T0 + 6, h.hold_id, "pi_1", h.total_cents, Some("evt_1")),
        m.paid(T0 + 7, h.hold_id, "pi_1", h.total_cents, None),
        m.failed(T0 + 8, h.hold_id, "pi_1", Some("evt_2")),
    ] {
        assert!(matches!(payment_effect(r), PaymentEffect::Unchanged { .. }));
    }
    let tx = m.reader.begin(T0 + 10);
    assert!(tx.refund("pi_1").is_none());
    assert_eq!(tx.user_bookings("ann", 10).len(), 1);
}

#[test]
fn a_failure_reopens_a_live_hold_and_a_later_success_still_books_it() {
    let mut m = Machine::new(2);
    let h = m.hold(T0, "ann", SEATED, seats(&[0])).unwrap();
    m.checkout(T0, &h, "ann", "pi_1").unwrap();
    assert!(matches!(
        payment_effect(m.failed(T0 + 1, h.hold_id, "pi_1", Some("evt_1"))),
        PaymentEffect::HoldReopened { .. }
    ));
    assert_eq!(
        m.reader.begin(T0 + 2).hold(h.hold_id).unwrap().1,
        HoldPhase::Active
    );
    // The buyer tried another card on the same payment, which succeeded.
    assert!(matches!(
        payment_effect(m.paid(T0 + 3, h.hold_id, "pi_1", h.total_cents, Some("evt_2"))),
        PaymentEffect::Booked { late: false, .. }
    ));
    // A checkout after a failure uses a new payment.
    let h2 = m.hold(T0 + 4, "ann", SEATED, seats(&[1])).unwrap();
    m.checkout(T0 + 4, &h2, "ann", "pi_2").unwrap();
    m.failed(T0 + 5, h2.hold_id, "pi_2", None).unwrap();
    assert!(matches!(
        m.checkout(T0 + 6, &h2, "ann", "pi_2"),
        Err(Rejection::InvalidInput { .. })
    ));
    assert!(m.checkout(T0 + 6, &h2, "ann", "pi_3").is_ok());
}

#[test]
fn a_failure_after_expiry_closes_the_hold() {
    let mut m = Machine::new(2);
    let h = m.hold(T0, "ann", GA, Selection::Quantity(2)).unwrap();
    m.checkout(T0, &h, "ann", "pi_1").unwrap();
    let after = T0 + GRACE + 1;
    assert_eq!(m.available(after, GA), 3);
    assert!(matches!(
        payment_effect(m.failed(after, h.hold_id, "pi_1", None)),
        PaymentEffect::HoldClosed { .. }
    ));
    let tx = m.reader.begin(after);
    assert_eq!(tx.hold(h.hold_id).unwrap().0.state, HoldState::Released);
    assert!(tx.payments_due(u64::MAX, 10).is_empty());
    assert_eq!(tx.available(GA), Some(3));
}

#[test]
fn a_late_success_is_booked_if_the_seats_are_free_and_refunded_if_not() {
    let mut m = Machine::new(2);
    let free = m.hold(T0, "ann", SEATED, seats(&[0])).unwrap();
    let taken = m.hold(T0, "ann", SEATED, seats(&[1])).unwrap();
    m.checkout(T0, &free, "ann", "pi_free").unwrap();
    m.checkout(T0, &taken, "ann", "pi_taken").unwrap();
    let after = T0 + GRACE + 1;
    // Bob takes seat 1 once ann's hold lapsed.
    m.hold(after, "bob", SEATED, seats(&[1])).unwrap();
    let r = m.paid(
        after + 1,
        free.hold_id,
        "pi_free",
        free.total_cents,
        Some("evt_a"),
    );
    assert!(matches!(
        payment_effect(r),
        PaymentEffect::Booked { late: true, .. }
    ));
    assert_eq!(m.seat(after + 2, 0), SeatStatus::Sold);
    let r = m.paid(
        after + 1,
        taken.hold_id,
        "pi_taken",
        taken.total_cents,
        Some("evt_b"),
    );
    assert_eq!(
        payment_effect(r),
        PaymentEffect::RefundRequired {
            payment_id: "pi_taken".into(),
            hold_id: taken.hold_id,
            event_id: SEATED,
            amount_cents: taken.total_cents,
            reason: RefundReason::LatePayment,
        }
    );
    // Bob keeps his seat; the refund is owed once, and is tracked to the end.
    assert_eq!(m.seat(after + 2, 1), SeatStatus::Held);
    let again = m.paid(
        after + 3,
        taken.hold_id,
        "pi_taken",
        taken.total_cents,
        Some("evt_c"),
    );
    assert!(matches!(
        payment_effect(again),
        PaymentEffect::Unchanged { .. }
    ));
    let tx = m.reader.begin(after + 3);
    assert_eq!(tx.open_refunds(None, 10).len(), 1);
    assert!(tx.payments_due(u64::MAX, 10).is_empty());
    drop(tx);
    let update = |report| Command::RefundUpdate {
        payment_id: "pi_taken".into(),
        report,
        provider_event: None,
    };
    let r = m.apply(
        after + 4,
        update(RefundReport::Failed {
            reason: "network".into(),
        }),
    );
    assert!(matches!(
        payment_effect(r),
        PaymentEffect::RefundUpdated {
            state: RefundState::Required { failures: 1, .. },
            ..
        }
    ));
    m.apply(
        after + 5,
        update(RefundReport::Pending {
            refund_id: "re_1".into(),
        }),
    )
    .unwrap();
    m.apply(
        after + 6,
        update(RefundReport::Succeeded {
            refund_id: "re_1".into(),
        }),
    )
    .unwrap();
    let r = m.apply(
        after + 7,
        update(RefundReport::Failed {
            reason: "late".into(),
        }),
    );
    assert!(matches!(payment_effect(r), PaymentEffect::Unchanged { .. }));
    let tx = m.reader.begin(after + 8);
    let c = tx.payment_counts();
    assert_eq!(
        (
            c.checkouts,
            c.booked_late,
            c.late_refunds,
            c.refunded,
            c.refund_failures,
            c.booked
        ),
        (2, 1, 1, 1, 1, 0),
        "{c:?}"
    );
    assert!(tx.open_refunds(None, 10).is_empty());
    assert_eq!(
        tx.refund("pi_taken").unwrap().state,
        RefundState::Refunded {
            refund_id: "re_1".into()
        }
    );
}

#[test]
fn a_payment_for_the_wrong_amount_is_refunded_and_the_hold_waits_no_more() {
    let mut m = Machine::new(2);
    let h = m.hold(T0, "ann", SEATED, seats(&[0])).unwrap();
    m.checkout(T0, &h, "ann", "pi_1").unwrap();
    let r = m.paid(T0 + 1, h.hold_id, "pi_1", h.total_cents - 1, None);
    assert!(matches!(
        payment_effect(r),
        PaymentEffect::RefundRequired {
            reason: RefundReason::AmountMismatch,
            ..
        }
    ));
    let tx = m.reader.begin(T0 + 2);
    assert_eq!(tx.hold(h.hold_id).unwrap().1, HoldPhase::Active);
    assert!(tx.payments_due(u64::MAX, 10).is_empty());
}

#[test]
fn cancelling_a_booking_frees_its_seats_restores_the_cap_and_owes_the_refund() {
    let mut m = Machine::new(2);
    let h = m.hold(T0, "ann", GA, Selection::Quantity(3)).unwrap();
    m.checkout(T0, &h, "ann", "pi_1").unwrap();
    let PaymentEffect::Booked { booking, .. } =
        payment_effect(m.paid(T0 + 1, h.hold_id, "pi_1", h.total_cents, None))
    else {
        panic!()
    };
    assert_eq!(m.available(T0 + 2, GA), 0);
    // At the cap, and sold out.
    assert!(m.hold(T0 + 2, "ann", GA, Selection::Quantity(1)).is_err());
    let cancel = |user: Option<&str>, not_after: Option<u64>| Command::CancelBooking {
        booking_id: booking.booking_id,
        user: user.map(str::to_string),
        not_after_ms: not_after,
    };
    assert_eq!(
        m.apply(T0 + 3, cancel(Some("bob"), None)),
        Err(Rejection::NotBookingOwner)
    );
    assert_eq!(
        m.apply(T0 + 3, cancel(Some("ann"), Some(T0 + 2))),
        Err(Rejection::CancellationClosed {
            closed_at_ms: T0 + 2
        })
    );
    let r = m.apply(T0 + 3, cancel(Some("ann"), Some(T0 + 100)));
    assert!(matches!(
        payment_effect(r),
        PaymentEffect::BookingCancelled { quantity: 3, refund_payment_id: Some(ref p), .. } if p == "pi_1"
    ));
    assert_eq!(m.available(T0 + 4, GA), 3);
    assert_eq!(
        m.apply(T0 + 4, cancel(None, None)),
        Err(Rejection::BookingCancelled)
    );
    let tx = m.reader.begin(T0 + 4);
    let refund = tx.refund("pi_1").unwrap();
    assert_eq!(refund.reason, RefundReason::CancelledByUser);
    assert_eq!(refund.amount_cents, h.total_cents);
    assert!(tx.booking_cancellation(booking.booking_id.seq).is_some());
    drop(tx);
    // The cap counts the cancelled tickets no more.
    assert!(m.hold(T0 + 5, "ann", GA, Selection::Quantity(3)).is_ok());
}

#[test]
fn a_booking_paid_elsewhere_is_cancelled_without_a_provider_refund() {
    let mut m = Machine::new(2);
    let h = m.hold(T0, "ann", SEATED, seats(&[3])).unwrap();
    let Effect::Confirmed(b) = m
        .apply(
            T0,
            Command::Confirm {
                hold_id: h.hold_id,
                user: "ann".into(),
                payment_ref: "cash-desk-7".into(),
            },
        )
        .unwrap()
    else {
        panic!()
    };
    let r = m.apply(
        T0 + 1,
        Command::CancelBooking {
            booking_id: b.booking_id,
            user: None,
            not_after_ms: None,
        },
    );
    assert!(matches!(
        payment_effect(r),
        PaymentEffect::BookingCancelled {
            refund_payment_id: None,
            ..
        }
    ));
    assert_eq!(m.seat(T0 + 2, 3), SeatStatus::Available);
}

#[test]
fn provider_events_are_remembered_for_four_days_and_then_forgotten() {
    let mut m = Machine::new(2);
    let h = m.hold(T0, "ann", SEATED, seats(&[0])).unwrap();
    m.checkout(T0, &h, "ann", "pi_1").unwrap();
    m.failed(T0 + 1, h.hold_id, "pi_1", Some("evt_1")).unwrap();
    m.checkout(T0 + 2, &h, "ann", "pi_2").unwrap();
    // A redelivery of evt_1 within 4 days is recognised.
    assert!(matches!(
        payment_effect(m.failed(T0 + 3, h.hold_id, "pi_2", Some("evt_1"))),
        PaymentEffect::Unchanged { .. }
    ));
    let later = T0 + 1 + PROVIDER_EVENT_TTL_MS + 1;
    m.apply(later, Command::Tick).unwrap();
    let dump = m.reader.begin(later).dump();
    assert!(
        !dump.iter().any(|(k, _)| k[2] == 0x45 || k[2] == 0x46),
        "the provider event is still remembered"
    );
}

#[test]
fn the_outbox_queues_each_event_for_the_endpoints_that_want_it_and_retries_it() {
    use boxoffice_storage::records::DeliveryState;
    let mut m = Machine::new(2);
    let endpoint = |name: &str, kinds: Vec<OutboxKind>, enabled: bool| {
        Command::SetWebhookEndpoint(WebhookEndpointSpec {
            name: name.into(),
            url: format!("http://127.0.0.1:9/{name}"),
            secret: "whsec_t".into(),
            kinds,
            enabled,
        })
    };
    m.apply(T0, endpoint("site", vec![], true)).unwrap();
    m.apply(
        T0,
        endpoint("refunds", vec![OutboxKind::RefundSucceeded], true),
    )
    .unwrap();
    m.apply(T0, endpoint("off", vec![], false)).unwrap();
    assert!(matches!(
        m.apply(T0, endpoint("Bad Name", vec![], true)),
        Err(Rejection::InvalidInput { .. })
    ));
    let h = m.hold(T0, "ann", SEATED, seats(&[0])).unwrap();
    m.checkout(T0, &h, "ann", "pi_1").unwrap();
    let PaymentEffect::Booked { booking, .. } =
        payment_effect(m.paid(T0 + 1, h.hold_id, "pi_1", h.total_cents, None))
    else {
        panic!()
    };
    let due = |m: &Machine, t: u64| -> Vec<(String, u64, OutboxKind)> {
        m.reader
            .begin(t)
            .deliveries_due(t, 10)
            .into_iter()
            .map(|(n, s, e, _)| (n, s, e.kind))
            .collect()
    };
    assert_eq!(
        due(&m, T0 + 1),
        vec![("site".into(), 1, OutboxKind::OrderConfirmed)]
    );
    let report = |delivered: bool| {
        Command::DeliveryReport(DeliveryAttempt {
            endpoint: "site".into(),
            seq: 1,
            status: if delivered { 200 } else { 503 },
            delivered,
        })
    };
    // Failures are retried after 1 s, then 2 s.
    m.apply(T0 + 2, report(false)).unwrap();
    assert!(due(&m, T0 + 1001).is_empty());
    assert_eq!(due(&m, T0 + 1002).len(), 1);
    m.apply(T0 + 1002, report(false)).unwrap();
    assert!(due(&m, T0 + 3001).is_empty());
    assert_eq!(due(&m, T0 + 3002).len(), 1);
    m.apply(T0 + 3002, report(true)).unwrap();
    assert!(due(&m, u64::MAX / 2).is_empty());
    let d = m.reader.begin(T0 + 3003).delivery("site", 1).unwrap();
    assert_eq!((d.attempts, d.last_status), (3, 200));
    assert!(matches!(d.state, DeliveryState::Delivered { .. }));
    assert!(matches!(
        m.apply(T0 + 3004, report(true)),
        Ok(Effect::Webhooks(WebhookEffect::Unchanged { .. }))
    ));
    // A cancellation, then its refund: the refunds endpoint hears only of the refund.
    let t = T0 + 5000;
    m.apply(
        t,
        Command::CancelBooking {
            booking_id: booking.booking_id,
            user: None,
            not_after_ms: None,
        },
    )
    .unwrap();
    m.apply(
        t,
        Command::RefundUpdate {
            payment_id: "pi_1".into(),
            report: RefundReport::Succeeded {
                refund_id: "re_1".into(),
            },
            provider_event: None,
        },
    )
    .unwrap();
    assert_eq!(
        due(&m, t),
        // By due time, then endpoint (length-prefixed in the key), then seq.
        vec![
            ("site".into(), 2, OutboxKind::OrderCancelled),
            ("site".into(), 3, OutboxKind::RefundSucceeded),
            ("refunds".into(), 3, OutboxKind::RefundSucceeded),
        ]
    );
    // An endpoint that never answers is given up after the retry window, and
    // an admin may queue it again.
    let fail = Command::DeliveryReport(DeliveryAttempt {
        endpoint: "refunds".into(),
        seq: 3,
        status: 0,
        delivered: false,
    });
    m.apply(t + 1, fail.clone()).unwrap();
    m.apply(t + DELIVERY_RETRY_WINDOW_MS, fail).unwrap();
    let d = m
        .reader
        .begin(t + DELIVERY_RETRY_WINDOW_MS)
        .delivery("refunds", 3)
        .unwrap();
    assert!(matches!(d.state, DeliveryState::GaveUp { .. }), "{d:?}");
    let later = t + DELIVERY_RETRY_WINDOW_MS + 10;
    m.apply(
        later,
        Command::ReplayDelivery {
            endpoint: "refunds".into(),
            seq: 3,
        },
    )
    .unwrap();
    assert!(due(&m, later).contains(&("refunds".into(), 3, OutboxKind::RefundSucceeded)));
}

// ------------------------------------------------------------- the property

#[derive(Clone, Debug)]
enum Op {
    Hold {
        user: u8,
        seat: u32,
    },
    HoldGa {
        user: u8,
        q: u32,
    },
    Checkout {
        hold: usize,
    },
    Succeed {
        hold: usize,
        nth_payment: u8,
        dup_event: bool,
    },
    Fail {
        hold: usize,
        nth_payment: u8,
    },
    Cancel {
        booking: usize,
        admin: bool,
    },
    Refund {
        nth: usize,
        ok: bool,
    },
    Wait {
        ms: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..3, 0u32..4).prop_map(|(user, seat)| Op::Hold { user, seat }),
        (0u8..3, 1u32..3).prop_map(|(user, q)| Op::HoldGa { user, q }),
        (0usize..8).prop_map(|hold| Op::Checkout { hold }),
        (0usize..8, 0u8..3, any::<bool>()).prop_map(|(hold, nth_payment, dup_event)| Op::Succeed {
            hold,
            nth_payment,
            dup_event
        }),
        (0usize..8, 0u8..3).prop_map(|(hold, nth_payment)| Op::Fail { hold, nth_payment }),
        (0usize..4, any::<bool>()).prop_map(|(booking, admin)| Op::Cancel { booking, admin }),
        (0usize..4, any::<bool>()).prop_map(|(nth, ok)| Op::Refund { nth, ok }),
        prop_oneof![Just(1_000u64), Just(TTL), Just(GRACE), Just(HOLD_MAX)]
            .prop_map(|ms| Op::Wait { ms }),
    ]
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut m = Machine::new(2);
    let mut t = T0;
    let mut holds: Vec<(GrantedHold, String)> = Vec::new();
    // Payment ids the provider created per hold, in order.
    let mut payments: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut succeeded: BTreeSet<String> = BTreeSet::new();
    let mut bookings: Vec<BookingId> = Vec::new();
    let mut next_event = 0u32;
    let users = ["u0", "u1", "u2"];
    for op in ops {
        t += 1;
        match op {
            Op::Hold { user, seat } => {
                if let Ok(h) = m.hold(t, users[user as usize], SEATED, seats(&[seat])) {
                    holds.push((h, users[user as usize].into()));
                }
            }
            Op::HoldGa { user, q } => {
                if let Ok(h) = m.hold(t, users[user as usize], GA, Selection::Quantity(q)) {
                    holds.push((h, users[user as usize].into()));
                }
            }
            Op::Checkout { hold } if hold < holds.len() => {
                let (h, user) = holds[hold].clone();
                let list = payments.entry(hold).or_default();
                let id = format!("pi_{hold}_{}", list.len());
                list.push(id.clone());
                let _ = m.checkout(t, &h, &user, &id);
            }
            Op::Succeed {
                hold,
                nth_payment,
                dup_event,
            } if hold < holds.len() => {
                let Some(id) = payments
                    .get(&hold)
                    .and_then(|l| l.get(nth_payment as usize % l.len()))
                    .cloned()
                else {
                    continue;
                };
                let h = holds[hold].0.clone();
                next_event += 1;
                let evt = format!("evt_{next_event}");
                let r = m.paid(t, h.hold_id, &id, h.total_cents, Some(&evt));
                prop_assert!(r.is_ok(), "{r:?}");
                if dup_event {
                    let again = m.paid(t + 1, h.hold_id, &id, h.total_cents, Some(&evt));
                    let unchanged =
                        matches!(again, Ok(Effect::Payment(PaymentEffect::Unchanged { .. })));
                    prop_assert!(unchanged, "a redelivery changed something: {:?}", again);
                }
                succeeded.insert(id);
            }
            Op::Fail { hold, nth_payment } if hold < holds.len() => {
                let Some(id) = payments
                    .get(&hold)
                    .and_then(|l| l.get(nth_payment as usize % l.len()))
                    .cloned()
                else {
                    continue;
                };
                // The provider never fails a payment that succeeded.
                if succeeded.contains(&id) {
                    continue;
                }
                let r = m.failed(t, holds[hold].0.hold_id, &id, None);
                prop_assert!(r.is_ok(), "{r:?}");
            }
            Op::Cancel { booking, admin } if booking < bookings.len() => {
                let b = bookings[booking];
                let owner = m.reader.begin(t).booking(b).unwrap().user;
                let _ = m.apply(
                    t,
                    Command::CancelBooking {
                        booking_id: b,
                        user: (!admin).then_some(owner),
                        not_after_ms: None,
                    },
                );
            }
            Op::Refund { nth, ok } => {
                let open = m.reader.begin(t).open_refunds(None, 10);
                if let Some((id, _)) = open.get(nth % open.len().max(1)) {
                    let report = if ok {
                        RefundReport::Succeeded {
                            refund_id: format!("re_{id}"),
                        }
                    } else {
                        RefundReport::Failed {
                            reason: "declined".into(),
                        }
                    };
                    let r = m.apply(
                        t,
                        Command::RefundUpdate {
                            payment_id: id.clone(),
                            report,
                            provider_event: None,
                        },
                    );
                    prop_assert!(r.is_ok(), "{r:?}");
                }
            }
            Op::Wait { ms } => t += ms,
            _ => {}
        }
        // Learn the bookings made so far (for cancels).
        let tx = m.reader.begin(t);
        bookings = users
            .iter()
            .flat_map(|u| tx.user_bookings(u, 100))
            .map(|b| b.booking_id)
            .collect();
        // The guarantee.
        let mut booked_by: BTreeMap<String, usize> = BTreeMap::new();
        for u in users {
            for b in tx.user_bookings(u, 100) {
                if b.payment_ref.starts_with("pi_") {
                    *booked_by.entry(b.payment_ref.clone()).or_default() += 1;
                }
            }
        }
        for id in &succeeded {
            let booked = booked_by.get(id).copied().unwrap_or(0);
            let refund = tx.refund(id);
            let late_refund = refund.as_ref().is_some_and(|r| {
                matches!(
                    r.reason,
                    RefundReason::LatePayment | RefundReason::AmountMismatch
                )
            });
            prop_assert!(booked <= 1, "{id} booked {booked} times");
            prop_assert!(
                (booked == 1) != late_refund,
                "{id}: {booked} bookings and refund {refund:?}"
            );
        }
        for (id, n) in &booked_by {
            prop_assert!(
                succeeded.contains(id),
                "{id} booked {n} times without succeeding"
            );
        }
        for (id, _) in tx.open_refunds(None, 100) {
            prop_assert!(
                succeeded.contains(&id),
                "a refund for {id}, which never succeeded"
            );
        }
        // Nothing is over-sold: availability never goes negative (apply
        // asserts the counts), and every seat sold has exactly one live booking.
        let inv = tx.inventory(SEATED).unwrap();
        let mut sold = 0;
        tx.walk_seats(SEATED, &inv, None, &mut |_, _, s| {
            if s.status == SeatStatus::Sold {
                sold += 1;
            }
        });
        let live_seated = users
            .iter()
            .flat_map(|u| tx.user_bookings(u, 100))
            .filter(|b| b.event_id == SEATED && tx.booking_cancellation(b.booking_id.seq).is_none())
            .map(|b| b.quantity)
            .sum::<u32>();
        prop_assert_eq!(sold, live_seated);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn every_successful_payment_ends_in_one_booking_or_one_refund(ops in proptest::collection::vec(op(), 1..80)) {
        run(ops)?;
    }
}
