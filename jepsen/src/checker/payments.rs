//! Payment safety, judged from the provider's books and the store's final state
//! once both are quiet (every webhook delivered, every refund issued):
//!
//! - every payment that succeeded ends in exactly one booking or exactly one
//!   refund (of a late payment, or one of the wrong amount);
//! - no booking of the buyers' flow without a payment that succeeded;
//! - no payment refunded twice by the provider, and every refund the provider
//!   made is one the store owed;
//! - every refund the store owes has been paid back;
//! - a cancelled booking's seats are free again, or sold to a booking that is
//!   not cancelled;
//! - no seat is in two live bookings (no double sale through payments).

use std::collections::{BTreeMap, BTreeSet};

use super::Verdict;

/// A booking in the final state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinalBooking {
    /// Its id.
    pub booking_id: String,
    /// Its event.
    pub event: u64,
    /// Its seats.
    pub seats: Vec<u32>,
    /// The payment it was booked with.
    pub payment_ref: String,
    /// True when it was cancelled.
    pub cancelled: bool,
}

/// A refund the store owes or made, in the final state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinalRefund {
    /// Why: `late_payment`, `amount_mismatch`, `cancelled_by_user`, `cancelled_by_admin`.
    pub reason: String,
    /// `required`, `failed`, `pending` or `refunded`.
    pub status: String,
}

/// What the checker reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PaymentFacts {
    /// Payment ids the provider says succeeded.
    pub succeeded: BTreeSet<String>,
    /// Refunds the provider made, per payment id.
    pub provider_refunds: BTreeMap<String, usize>,
    /// Every booking of the run's events.
    pub bookings: Vec<FinalBooking>,
    /// Refunds the store records, by payment id.
    pub refunds: BTreeMap<String, FinalRefund>,
    /// Seats sold in the final seat maps, by (event, seat).
    pub sold: BTreeSet<(u64, u32)>,
}

/// Runs the payment checks.
pub fn payments(f: &PaymentFacts) -> Verdict {
    let mut violations = Vec::new();
    let mut booked: BTreeMap<&str, Vec<&FinalBooking>> = BTreeMap::new();
    for b in &f.bookings {
        booked.entry(b.payment_ref.as_str()).or_default().push(b);
    }
    for p in &f.succeeded {
        let bookings = booked.get(p.as_str()).map_or(0, Vec::len);
        let refunded_unbooked = f
            .refunds
            .get(p)
            .is_some_and(|r| r.reason == "late_payment" || r.reason == "amount_mismatch");
        match (bookings, refunded_unbooked) {
            (1, false) | (0, true) => {}
            (0, false) => violations.push(format!(
                "payment {p} succeeded and has neither a booking nor a refund"
            )),
            (n, r) => violations.push(format!(
                "payment {p} succeeded and has {n} bookings{}",
                if r {
                    " and a refund for a payment without a booking"
                } else {
                    ""
                }
            )),
        }
    }
    for (p, bs) in &booked {
        if !f.succeeded.contains(*p) {
            violations.push(format!(
                "booking {} was made with payment {p}, which never succeeded",
                bs[0].booking_id
            ));
        }
    }
    for (p, n) in &f.provider_refunds {
        if *n > 1 {
            violations.push(format!(
                "payment {p} was refunded {n} times by the provider"
            ));
        }
        if !f.refunds.contains_key(p) {
            violations.push(format!(
                "the provider refunded payment {p}, which the store never owed"
            ));
        }
    }
    for (p, r) in &f.refunds {
        if !f.succeeded.contains(p) {
            violations.push(format!(
                "a refund is owed for payment {p}, which never succeeded"
            ));
        }
        if r.status != "refunded" {
            violations.push(format!(
                "the refund of payment {p} is still {} after the run",
                r.status
            ));
        } else if f.provider_refunds.get(p).copied().unwrap_or(0) == 0 {
            violations.push(format!(
                "the store says payment {p} was refunded, but the provider made no refund"
            ));
        }
    }
    let mut live: BTreeSet<(u64, u32)> = BTreeSet::new();
    for b in f.bookings.iter().filter(|b| !b.cancelled) {
        for s in &b.seats {
            if !live.insert((b.event, *s)) {
                violations.push(format!(
                    "seat {s} of event {} is in two live bookings (one is {})",
                    b.event, b.booking_id
                ));
            }
        }
    }
    for b in f.bookings.iter().filter(|b| b.cancelled) {
        for s in &b.seats {
            if f.sold.contains(&(b.event, *s)) && !live.contains(&(b.event, *s)) {
                violations.push(format!(
                    "seat {s} of event {} is sold, but its booking {} was cancelled and no live booking has it",
                    b.event, b.booking_id
                ));
            }
        }
    }
    Verdict {
        checker: "payments",
        violations,
        undecided: Vec::new(),
        notes: vec![format!(
            "{} payments succeeded, {} bookings ({} cancelled), {} refunds owed, {} made by the provider",
            f.succeeded.len(),
            f.bookings.len(),
            f.bookings.iter().filter(|b| b.cancelled).count(),
            f.refunds.len(),
            f.provider_refunds.values().sum::<usize>()
        )],
    }
}

/// What the site's receiver got: (event type, booking id or payment id).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// `order.confirmed` and `order.cancelled`, by booking id.
    pub orders: BTreeSet<(String, String)>,
    /// `refund.succeeded` and `payment.late_refunded`, by payment id.
    pub refunds: BTreeSet<(String, String)>,
    /// Deliveries that arrived with a signature that did not verify.
    pub bad_signatures: usize,
}

/// The site heard of everything, at least once, signed: every booking's
/// `order.confirmed`, every cancelled booking's `order.cancelled`, every
/// refund's `refund.succeeded` (a cancellation's) or `payment.late_refunded`;
/// and nothing else.
pub fn outgoing_webhooks(f: &PaymentFacts, r: &Received) -> Verdict {
    let mut violations = Vec::new();
    let mut want_orders = BTreeSet::new();
    for b in &f.bookings {
        want_orders.insert(("order.confirmed".to_string(), b.booking_id.clone()));
        if b.cancelled {
            want_orders.insert(("order.cancelled".to_string(), b.booking_id.clone()));
        }
    }
    let want_refunds: BTreeSet<(String, String)> = f
        .refunds
        .iter()
        .filter(|(_, x)| x.status == "refunded")
        .map(|(p, x)| {
            let kind = if x.reason.starts_with("cancelled") {
                "refund.succeeded"
            } else {
                "payment.late_refunded"
            };
            (kind.to_string(), p.clone())
        })
        .collect();
    for (kind, id) in want_orders.difference(&r.orders) {
        violations.push(format!("the site never heard {kind} of booking {id}"));
    }
    for (kind, id) in r.orders.difference(&want_orders) {
        violations.push(format!(
            "the site heard {kind} of booking {id}, which the final state does not explain"
        ));
    }
    for (kind, id) in want_refunds.difference(&r.refunds) {
        violations.push(format!("the site never heard {kind} of payment {id}"));
    }
    for (kind, id) in r.refunds.difference(&want_refunds) {
        violations.push(format!(
            "the site heard {kind} of payment {id}, which the final state does not explain"
        ));
    }
    if r.bad_signatures > 0 {
        violations.push(format!(
            "{} deliveries had a signature that did not verify",
            r.bad_signatures
        ));
    }
    Verdict {
        checker: "outgoing webhooks",
        violations,
        undecided: Vec::new(),
        notes: vec![format!(
            "{} order and {} refund events received (distinct)",
            r.orders.len(),
            r.refunds.len()
        )],
    }
}
