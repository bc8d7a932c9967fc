//! The payments checker against hand-made final states: a valid run passes,
//! and each bug it exists for is reported.

use jepsen::checker::payments::{payments, FinalBooking, FinalRefund, PaymentFacts};

fn booking(id: &str, seat: u32, payment: &str, cancelled: bool) -> FinalBooking {
    FinalBooking {
        booking_id: id.into(),
        event: 1,
        seats: vec![seat],
        payment_ref: payment.into(),
        cancelled,
    }
}

fn refund(reason: &str, status: &str) -> FinalRefund {
    FinalRefund {
        reason: reason.into(),
        status: status.into(),
    }
}

/// Three payments: one booked, one booked and then cancelled (refunded), one
/// late with its seat taken (refunded); seat 1 was re-sold after the cancel.
fn valid() -> PaymentFacts {
    PaymentFacts {
        succeeded: ["pi_a", "pi_b", "pi_c", "pi_d"].map(String::from).into(),
        provider_refunds: [("pi_b".to_string(), 1), ("pi_c".to_string(), 1)].into(),
        bookings: vec![
            booking("b1-1", 0, "pi_a", false),
            booking("b1-2", 1, "pi_b", true),
            booking("b1-3", 1, "pi_d", false),
        ],
        refunds: [
            ("pi_b".to_string(), refund("cancelled_by_user", "refunded")),
            ("pi_c".to_string(), refund("late_payment", "refunded")),
        ]
        .into(),
        sold: [(1, 0), (1, 1)].into(),
    }
}

fn fails_with(f: &PaymentFacts, needle: &str) {
    let v = payments(f);
    assert!(
        v.violations.iter().any(|m| m.contains(needle)),
        "expected a violation with {needle:?}, got {:?}",
        v.violations
    );
}

#[test]
fn a_valid_run_passes() {
    let v = payments(&valid());
    assert!(v.valid(), "{:?}", v.violations);
}

#[test]
fn a_payment_without_a_booking_or_a_refund_is_caught() {
    let mut f = valid();
    f.succeeded.insert("pi_lost".into());
    fails_with(&f, "neither a booking nor a refund");
}

#[test]
fn a_payment_booked_twice_or_booked_and_refunded_is_caught() {
    let mut f = valid();
    f.bookings.push(booking("b1-9", 3, "pi_a", false));
    fails_with(&f, "has 2 bookings");
    let mut f = valid();
    f.refunds
        .insert("pi_a".into(), refund("late_payment", "refunded"));
    f.provider_refunds.insert("pi_a".into(), 1);
    fails_with(&f, "and a refund for a payment without a booking");
}

#[test]
fn a_booking_without_a_successful_payment_is_caught() {
    let mut f = valid();
    f.bookings.push(booking("b1-9", 3, "pi_never_paid", false));
    fails_with(&f, "which never succeeded");
}

#[test]
fn a_double_refund_and_a_refund_nobody_owed_are_caught() {
    let mut f = valid();
    f.provider_refunds.insert("pi_c".into(), 2);
    fails_with(&f, "refunded 2 times");
    let mut f = valid();
    f.provider_refunds.insert("pi_a".into(), 1);
    fails_with(&f, "which the store never owed");
}

#[test]
fn a_refund_left_unpaid_or_paid_only_on_paper_is_caught() {
    let mut f = valid();
    f.refunds
        .insert("pi_c".into(), refund("late_payment", "failed"));
    fails_with(&f, "still failed");
    let mut f = valid();
    f.provider_refunds.remove("pi_c");
    fails_with(&f, "the provider made no refund");
}

#[test]
fn a_seat_sold_twice_through_payments_is_caught() {
    let mut f = valid();
    f.succeeded.insert("pi_e".into());
    f.bookings.push(booking("b1-4", 0, "pi_e", false));
    fails_with(&f, "in two live bookings");
}

#[test]
fn a_cancelled_bookings_seat_still_sold_is_caught() {
    let mut f = valid();
    // Seat 1 was not re-sold: the cancel left it sold.
    f.bookings.retain(|b| b.booking_id != "b1-3");
    f.succeeded.remove("pi_d");
    fails_with(&f, "was cancelled and no live booking has it");
}

fn received_all(f: &PaymentFacts) -> jepsen::checker::payments::Received {
    let mut r = jepsen::checker::payments::Received::default();
    for b in &f.bookings {
        r.orders
            .insert(("order.confirmed".into(), b.booking_id.clone()));
        if b.cancelled {
            r.orders
                .insert(("order.cancelled".into(), b.booking_id.clone()));
        }
    }
    r.refunds.insert(("refund.succeeded".into(), "pi_b".into()));
    r.refunds
        .insert(("payment.late_refunded".into(), "pi_c".into()));
    r
}

#[test]
fn the_site_hearing_of_everything_passes_and_each_gap_is_caught() {
    use jepsen::checker::payments::outgoing_webhooks;
    let f = valid();
    let r = received_all(&f);
    assert!(
        outgoing_webhooks(&f, &r).valid(),
        "{:?}",
        outgoing_webhooks(&f, &r).violations
    );
    let mut lost = r.clone();
    lost.orders
        .remove(&("order.confirmed".into(), "b1-3".into()));
    assert!(outgoing_webhooks(&f, &lost)
        .violations
        .iter()
        .any(|v| v.contains("never heard order.confirmed of booking b1-3")));
    let mut lost = r.clone();
    lost.refunds
        .remove(&("payment.late_refunded".into(), "pi_c".into()));
    assert!(outgoing_webhooks(&f, &lost)
        .violations
        .iter()
        .any(|v| v.contains("payment.late_refunded of payment pi_c")));
    let mut phantom = r.clone();
    phantom
        .orders
        .insert(("order.confirmed".into(), "b1-77".into()));
    assert!(outgoing_webhooks(&f, &phantom)
        .violations
        .iter()
        .any(|v| v.contains("does not explain")));
    let mut forged = r;
    forged.bad_signatures = 1;
    assert!(!outgoing_webhooks(&f, &forged).valid());
}
