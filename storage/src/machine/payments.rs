//! Payments (feature level 2): checkout, the provider's word on a payment,
//! booking cancellation and refunds.
//!
//! The lifecycle of a hold: `active → payment_pending → confirmed`, or it
//! expires, or is released; a failed payment returns a live hold to `active`
//! and closes an expired one. A booking may be cancelled, and a refund is then
//! owed: `required → pending → refunded` (a failure goes back to `required` and
//! is tried again). Every transition here is decided by the state machine's
//! state at the entry's time, never by the order notices arrive in: a notice
//! for a state already past changes nothing ([`PaymentEffect::Unchanged`]).
//!
//! The guarantee: a payment that succeeds ends in exactly one booking or
//! exactly one refund. It books its hold if the hold is live; if the hold
//! expired (or was closed) and its seats are still free and the buyer's cap
//! allows, they are taken and booked at once; otherwise a refund is owed.

use boxoffice_raft::command::*;
use boxoffice_raft::GroupId;

use super::holds::{close_hold, load_owned_hold, sell_live_hold, write_booking};
use super::inventory::*;
use super::outbox;
use super::{get, invalid, next_id, put};
use crate::keys::{table, Key};
use crate::kv::{Kv, KvRead};
use crate::records::*;

/// Most remembered provider events dropped per applied entry once past their
/// time (as sessions are pruned: a little with every entry, never a big sweep).
pub const PROVIDER_EVENT_PRUNE_PER_ENTRY: usize = 64;

/// Key of a hold's payment record.
pub(crate) fn payment_key(group: GroupId, hold_seq: u64) -> Vec<u8> {
    Key::sm(group, table::PAYMENT).u64(hold_seq).build()
}

/// Key of a hold's entry in the index of payments in flight.
pub(crate) fn payment_due_key(group: GroupId, expires_at_ms: u64, hold_seq: u64) -> Vec<u8> {
    Key::sm(group, table::PAYMENT_DUE)
        .u64(expires_at_ms)
        .u64(hold_seq)
        .build()
}

/// Key of the refund owed for a payment.
pub(crate) fn refund_key(group: GroupId, payment_id: &str) -> Vec<u8> {
    Key::sm(group, table::REFUND).str(payment_id).build()
}

/// Key of a refund's entry in the index of refunds not yet paid back.
pub(crate) fn refund_open_key(group: GroupId, payment_id: &str) -> Vec<u8> {
    Key::sm(group, table::REFUND_OPEN).str(payment_id).build()
}

/// Key of a booking's cancellation record.
pub(crate) fn booking_cancel_key(group: GroupId, booking_seq: u64) -> Vec<u8> {
    Key::sm(group, table::BOOKING_CANCEL)
        .u64(booking_seq)
        .build()
}

fn provider_event_key(group: GroupId, id: &str) -> Vec<u8> {
    Key::sm(group, table::PROVIDER_EVENT).str(id).build()
}

fn provider_event_deadline_key(group: GroupId, until: u64, id: &str) -> Vec<u8> {
    Key::sm(group, table::PROVIDER_EVENT_DEADLINE)
        .u64(until)
        .str(id)
        .build()
}

/// Runs `apply` unless the provider event was applied before; remembers it
/// when `apply` succeeds (a refusal leaves nothing behind, so the provider's
/// redelivery is judged afresh).
fn once_per_provider_event(
    kv: &mut dyn Kv,
    group: GroupId,
    time: u64,
    event: Option<&str>,
    apply: impl FnOnce(&mut dyn Kv) -> Result<Effect, Rejection>,
) -> Result<Effect, Rejection> {
    let Some(event) = event else {
        return apply(kv);
    };
    check_provider_id("provider_event", event).map_err(invalid)?;
    if kv.get(&provider_event_key(group, event)).is_some() {
        return Ok(unchanged(format!(
            "provider event {event} was applied before"
        )));
    }
    let effect = apply(kv)?;
    // Time is at most STAMP_MS_MAX (checked at apply), far below u64::MAX less 4 days.
    let until = time + PROVIDER_EVENT_TTL_MS;
    put(kv, provider_event_key(group, event), &SeenUntil(until));
    kv.put(provider_event_deadline_key(group, until, event), Vec::new());
    Ok(effect)
}

/// Forgets up to `max` provider events whose time has passed.
pub(super) fn prune_provider_events(kv: &mut dyn Kv, group: GroupId, time: u64, max: usize) {
    let prefix = Key::sm(group, table::PROVIDER_EVENT_DEADLINE).build();
    let end = Key::sm(group, table::PROVIDER_EVENT_DEADLINE)
        .u64(time.saturating_add(1))
        .build();
    let mut due = Vec::new();
    kv.scan_range(&prefix, &end, &mut |k, _| {
        due.push(k.to_vec());
        due.len() < max
    });
    for k in due {
        let id_at = prefix.len() + 8;
        let len = u16::from_be_bytes([k[id_at], k[id_at + 1]]) as usize;
        let id = std::str::from_utf8(&k[id_at + 2..id_at + 2 + len])
            .expect("provider event index entry with a non-UTF-8 id");
        kv.delete(provider_event_key(group, id));
        kv.delete(k);
    }
}

/// Counts an outcome in the shard's payment counts.
fn count(kv: &mut dyn Kv, group: GroupId, bump: impl FnOnce(&mut PaymentCounts)) {
    let key = Key::sm(group, table::PAYMENT_COUNTS).build();
    let mut c: PaymentCounts = get(kv, &key).unwrap_or_default();
    bump(&mut c);
    put(kv, key, &c);
}

/// Counts what a payment command did (called once per effect that changed something).
fn count_effect(kv: &mut dyn Kv, group: GroupId, effect: &Effect) {
    let Effect::Payment(e) = effect else { return };
    match e {
        PaymentEffect::CheckoutStarted { .. } => count(kv, group, |c| c.checkouts += 1),
        PaymentEffect::Booked { late: false, .. } => count(kv, group, |c| c.booked += 1),
        PaymentEffect::Booked { late: true, .. } => count(kv, group, |c| c.booked_late += 1),
        PaymentEffect::RefundRequired {
            reason: RefundReason::AmountMismatch,
            ..
        } => count(kv, group, |c| c.mismatch_refunds += 1),
        PaymentEffect::RefundRequired { .. } => count(kv, group, |c| c.late_refunds += 1),
        PaymentEffect::HoldReopened { .. } | PaymentEffect::HoldClosed { .. } => {
            count(kv, group, |c| c.failed += 1)
        }
        PaymentEffect::BookingCancelled { .. } => count(kv, group, |c| c.cancelled += 1),
        PaymentEffect::RefundUpdated {
            state: RefundState::Refunded { .. },
            ..
        } => count(kv, group, |c| c.refunded += 1),
        PaymentEffect::RefundUpdated {
            state: RefundState::Required { .. },
            ..
        } => count(kv, group, |c| c.refund_failures += 1),
        PaymentEffect::RefundUpdated { .. } | PaymentEffect::Unchanged { .. } => {}
    }
}

/// Runs a payment command and counts what it did.
pub(super) fn counted(
    kv: &mut dyn Kv,
    group: GroupId,
    run: impl FnOnce(&mut dyn Kv) -> Result<Effect, Rejection>,
) -> Result<Effect, Rejection> {
    let effect = run(kv)?;
    count_effect(kv, group, &effect);
    Ok(effect)
}

fn unchanged(why: impl Into<String>) -> Effect {
    Effect::Payment(PaymentEffect::Unchanged { why: why.into() })
}

fn hold_of(kv: &dyn KvRead, group: GroupId, hold_id: HoldId) -> Result<Hold, Rejection> {
    if hold_id.shard != group.0 {
        return Err(Rejection::UnknownHold { hold_id });
    }
    get(kv, &hold_key(group, hold_id.seq)).ok_or(Rejection::UnknownHold { hold_id })
}

/// Moves a live hold's expiry to `new_expiry` (later than its own): its seats,
/// its entry in the expiry index, its owner's cap record and its entry in the
/// index of payments in flight, if it has one.
fn extend_hold(kv: &mut dyn Kv, group: GroupId, hold: &mut Hold, new_expiry: u64) {
    assert!(
        new_expiry >= hold.expires_at_ms,
        "a hold's expiry moved back"
    );
    if new_expiry == hold.expires_at_ms {
        return;
    }
    for &s in &hold.seat_ids {
        let key = ticket_key(group, hold.event_id, s);
        assert_eq!(
            get::<Ticket>(kv, &key),
            Some(Ticket::Held {
                hold_seq: hold.seq,
                expires_at_ms: hold.expires_at_ms
            }),
            "live hold lost its seat {s}"
        );
        put(
            kv,
            key,
            &Ticket::Held {
                hold_seq: hold.seq,
                expires_at_ms: new_expiry,
            },
        );
    }
    let old = expiry_key(group, hold.event_id, hold.expires_at_ms, hold.seq);
    assert!(kv.get(&old).is_some(), "live hold without its expiry entry");
    kv.delete(old);
    put(
        kv,
        expiry_key(group, hold.event_id, new_expiry, hold.seq),
        &ExpiringQuantity(hold.quantity),
    );
    let ue_key = user_event_key(group, hold.event_id, &hold.user);
    let mut ue: UserEvent = get(kv, &ue_key).unwrap_or_default();
    for entry in ue.holds.iter_mut().filter(|(seq, _, _)| *seq == hold.seq) {
        entry.2 = new_expiry;
    }
    put(kv, ue_key, &ue);
    if hold.state == HoldState::PaymentPending {
        kv.delete(payment_due_key(group, hold.expires_at_ms, hold.seq));
        kv.put(payment_due_key(group, new_expiry, hold.seq), Vec::new());
    }
    hold.expires_at_ms = new_expiry;
}

pub(super) fn checkout(
    kv: &mut dyn Kv,
    group: GroupId,
    time: u64,
    req: &CheckoutRequest,
) -> Result<Effect, Rejection> {
    check_provider_id("payment_id", &req.payment_id).map_err(invalid)?;
    check_currency(&req.currency).map_err(invalid)?;
    if req.grace_ms == 0 || req.grace_ms > PAYMENT_GRACE_MS_MAX {
        return Err(invalid(format!(
            "grace_ms must be 1..={PAYMENT_GRACE_MS_MAX}"
        )));
    }
    if req.hold_max_ms > PAYMENT_HOLD_MAX_MS_MAX {
        return Err(invalid(format!(
            "hold_max_ms must be at most {PAYMENT_HOLD_MAX_MS_MAX}"
        )));
    }
    let mut hold = load_owned_hold(kv, group, req.hold_id, &req.user)?;
    let previous: Option<HoldPayment> = get(kv, &payment_key(group, hold.seq));
    match hold.state {
        HoldState::Confirmed { booking_seq } => {
            return Err(Rejection::HoldAlreadyConfirmed {
                booking_id: BookingId {
                    shard: group.0,
                    seq: booking_seq,
                },
            })
        }
        HoldState::Released => return Err(Rejection::HoldReleased),
        HoldState::PaymentPending => {
            let p = previous.expect("payment_pending hold without its payment");
            if p.payment_id != req.payment_id {
                return Err(Rejection::PaymentInFlight {
                    payment_id: p.payment_id,
                });
            }
            if hold.expires_at_ms <= time {
                return Err(Rejection::HoldExpired {
                    expired_at_ms: hold.expires_at_ms,
                });
            }
            // The same checkout again (a retry under another key): as it stands.
            return Ok(checkout_started(group, &hold, &p.payment_id));
        }
        HoldState::Active if hold.expires_at_ms <= time => {
            return Err(Rejection::HoldExpired {
                expired_at_ms: hold.expires_at_ms,
            })
        }
        HoldState::Active => {}
    }
    if req.amount_cents != hold.total_cents {
        return Err(invalid(format!(
            "amount_cents {} is not the hold's total {}",
            req.amount_cents, hold.total_cents
        )));
    }
    if previous
        .as_ref()
        .is_some_and(|p| p.payment_id == req.payment_id)
    {
        // A payment that failed is not tried again under its own id: the node
        // creates a new one for each checkout.
        return Err(invalid(format!(
            "payment {} failed for this hold; check out again with a new payment",
            req.payment_id
        )));
    }
    let mut inv: Inventory =
        load_inventory(kv, group, hold.event_id).expect("hold without inventory");
    settle(kv, group, &mut inv, time);
    let hold_made_at_ms = previous
        .as_ref()
        .map(|p| p.hold_made_at_ms)
        .unwrap_or_else(|| hold.expires_at_ms.saturating_sub(inv.hold_ttl_ms));
    let latest = hold_made_at_ms.saturating_add(req.hold_max_ms);
    let wanted = time.saturating_add(req.grace_ms).min(latest);
    // A checkout never shortens the hold.
    let new_expiry = wanted.max(hold.expires_at_ms);
    extend_hold(kv, group, &mut hold, new_expiry);
    hold.state = HoldState::PaymentPending;
    put(kv, hold_key(group, hold.seq), &hold);
    kv.put(
        payment_due_key(group, hold.expires_at_ms, hold.seq),
        Vec::new(),
    );
    put(
        kv,
        payment_key(group, hold.seq),
        &HoldPayment {
            payment_id: req.payment_id.clone(),
            amount_cents: req.amount_cents,
            currency: req.currency.clone(),
            hold_made_at_ms,
            checkout_at_ms: time,
            checkouts: previous.map_or(0, |p| p.checkouts).saturating_add(1),
            phase: PaymentPhase::InFlight,
        },
    );
    Ok(checkout_started(group, &hold, &req.payment_id))
}

fn checkout_started(group: GroupId, hold: &Hold, payment_id: &str) -> Effect {
    Effect::Payment(PaymentEffect::CheckoutStarted {
        hold_id: HoldId {
            shard: group.0,
            seq: hold.seq,
        },
        event_id: hold.event_id,
        seat_ids: hold.seat_ids.clone(),
        quantity: hold.quantity,
        payment_id: payment_id.to_string(),
        expires_at_ms: hold.expires_at_ms,
    })
}

fn check_notice(n: &PaymentNotice) -> Result<(), Rejection> {
    check_provider_id("payment_id", &n.payment_id).map_err(invalid)
}

pub(super) fn payment_succeeded(
    kv: &mut dyn Kv,
    group: GroupId,
    meta: &mut SmMeta,
    time: u64,
    n: &PaymentNotice,
) -> Result<Effect, Rejection> {
    check_notice(n)?;
    let mut hold = hold_of(kv, group, n.hold_id)?;
    once_per_provider_event(kv, group, time, n.provider_event.as_deref(), |kv| {
        if kv.get(&refund_key(group, &n.payment_id)).is_some() {
            return Ok(unchanged(format!(
                "a refund is owed for payment {} already",
                n.payment_id
            )));
        }
        if let HoldState::Confirmed { booking_seq } = hold.state {
            let booking: Booking =
                get(kv, &Key::sm(group, table::BOOKING).u64(booking_seq).build())
                    .expect("confirmed hold without its booking");
            if booking.payment_ref == n.payment_id {
                return Ok(unchanged(format!(
                    "payment {} booked this hold already",
                    n.payment_id
                )));
            }
            // Booked by another payment: this one is owed back.
            return Ok(refund_required(
                kv,
                group,
                time,
                &hold,
                n,
                RefundReason::LatePayment,
            ));
        }
        if n.amount_cents != hold.total_cents {
            clear_pending(kv, group, time, &mut hold, &n.payment_id);
            return Ok(refund_required(
                kv,
                group,
                time,
                &hold,
                n,
                RefundReason::AmountMismatch,
            ));
        }
        let live = matches!(hold.state, HoldState::Active | HoldState::PaymentPending)
            && hold.expires_at_ms > time;
        if live {
            if hold.state == HoldState::PaymentPending {
                kv.delete(payment_due_key(group, hold.expires_at_ms, hold.seq));
            }
            let booking = sell_live_hold(kv, group, meta, time, &mut hold, &n.payment_id);
            mark_paid(kv, group, time, &hold, n);
            emit_booked(kv, group, time, &booking);
            return Ok(Effect::Payment(PaymentEffect::Booked {
                booking,
                late: false,
            }));
        }
        // Expired, or closed: book it now if its seats are still free.
        if hold.state == HoldState::PaymentPending {
            kv.delete(payment_due_key(group, hold.expires_at_ms, hold.seq));
        }
        match book_late(kv, group, meta, time, &mut hold, &n.payment_id) {
            Some(booking) => {
                mark_paid(kv, group, time, &hold, n);
                emit_booked(kv, group, time, &booking);
                Ok(Effect::Payment(PaymentEffect::Booked {
                    booking,
                    late: true,
                }))
            }
            None => {
                if hold.state != HoldState::Released {
                    close_hold(kv, group, time, &mut hold);
                }
                Ok(refund_required(
                    kv,
                    group,
                    time,
                    &hold,
                    n,
                    RefundReason::LatePayment,
                ))
            }
        }
    })
}

/// Tells the site a hold was booked.
fn emit_booked(kv: &mut dyn Kv, group: GroupId, time: u64, b: &ConfirmedBooking) {
    outbox::emit(
        kv,
        group,
        OutboxEvent {
            kind: OutboxKind::OrderConfirmed,
            created_at_ms: time,
            event_id: b.event_id,
            hold_seq: b.hold_id.seq,
            booking_seq: Some(b.booking_id.seq),
            user: b.user.clone(),
            payment_id: Some(b.payment_ref.clone()),
            amount_cents: b.total_cents,
            seat_ids: b.seat_ids.clone(),
            quantity: b.quantity,
        },
    );
}

/// Records that the hold was booked with this payment.
fn mark_paid(kv: &mut dyn Kv, group: GroupId, time: u64, hold: &Hold, n: &PaymentNotice) {
    let previous: Option<HoldPayment> = get(kv, &payment_key(group, hold.seq));
    let record = match previous {
        Some(mut p) => {
            p.payment_id = n.payment_id.clone();
            p.amount_cents = n.amount_cents;
            p.phase = PaymentPhase::Paid;
            p
        }
        // A payment for a hold that never checked out here (made by another
        // front end with the hold's metadata): recorded all the same.
        None => HoldPayment {
            payment_id: n.payment_id.clone(),
            amount_cents: n.amount_cents,
            currency: String::new(),
            hold_made_at_ms: time,
            checkout_at_ms: time,
            checkouts: 0,
            phase: PaymentPhase::Paid,
        },
    };
    put(kv, payment_key(group, hold.seq), &record);
}

/// A hold whose pending payment is `payment_id` no longer waits for it: a live
/// hold is active again, an expired one is closed.
fn clear_pending(kv: &mut dyn Kv, group: GroupId, time: u64, hold: &mut Hold, payment_id: &str) {
    if hold.state != HoldState::PaymentPending {
        return;
    }
    let mut p: HoldPayment =
        get(kv, &payment_key(group, hold.seq)).expect("payment_pending hold without its payment");
    if p.payment_id != payment_id {
        return;
    }
    kv.delete(payment_due_key(group, hold.expires_at_ms, hold.seq));
    p.phase = PaymentPhase::Failed;
    put(kv, payment_key(group, hold.seq), &p);
    if hold.expires_at_ms > time {
        hold.state = HoldState::Active;
        put(kv, hold_key(group, hold.seq), &*hold);
    } else {
        close_hold(kv, group, time, hold);
    }
}

/// Books an expired or closed hold if every one of its seats (or enough
/// general-admission tickets) is free at `time` and the owner's cap allows it;
/// `None` (and nothing written but settling) otherwise.
fn book_late(
    kv: &mut dyn Kv,
    group: GroupId,
    meta: &mut SmMeta,
    time: u64,
    hold: &mut Hold,
    payment_ref: &str,
) -> Option<ConfirmedBooking> {
    let mut inv: Inventory =
        load_inventory(kv, group, hold.event_id).expect("hold without inventory");
    settle(kv, group, &mut inv, time);
    let ue_key = user_event_key(group, hold.event_id, &hold.user);
    let mut ue: UserEvent = get(kv, &ue_key).unwrap_or_default();
    ue.holds
        .retain(|(seq, _, exp)| *seq != hold.seq && *exp > time);
    if ue.current(time).saturating_add(hold.quantity) > inv.per_user_cap {
        return None;
    }
    let free = if hold.seat_ids.is_empty() {
        inv.capacity - inv.sold - inv.held_unsettled >= hold.quantity
    } else {
        hold.seat_ids.iter().all(|&s| {
            Ticket::status_at(
                get::<Ticket>(kv, &ticket_key(group, hold.event_id, s)).as_ref(),
                time,
            ) == SeatStatus::Available
        })
    };
    if !free {
        return None;
    }
    let booking_seq = next_id(meta);
    for &s in &hold.seat_ids {
        put(
            kv,
            ticket_key(group, hold.event_id, s),
            &Ticket::Sold { booking_seq },
        );
    }
    inv.sold += hold.quantity;
    assert!(inv.sold <= inv.capacity, "sold more than capacity");
    save_counts(kv, group, &inv);
    ue.booked += hold.quantity;
    put(kv, ue_key, &ue);
    Some(write_booking(
        kv,
        group,
        time,
        hold,
        booking_seq,
        payment_ref,
    ))
}

/// Records that `n`'s payment is owed back.
fn refund_required(
    kv: &mut dyn Kv,
    group: GroupId,
    time: u64,
    hold: &Hold,
    n: &PaymentNotice,
    reason: RefundReason,
) -> Effect {
    owe_refund(
        kv,
        group,
        &n.payment_id,
        Refund {
            hold_seq: hold.seq,
            booking_seq: None,
            event_id: hold.event_id,
            user: hold.user.clone(),
            amount_cents: n.amount_cents,
            reason,
            state: RefundState::Required {
                failures: 0,
                last_error: None,
            },
            created_at_ms: time,
            updated_at_ms: time,
        },
    );
    Effect::Payment(PaymentEffect::RefundRequired {
        payment_id: n.payment_id.clone(),
        hold_id: HoldId {
            shard: group.0,
            seq: hold.seq,
        },
        event_id: hold.event_id,
        amount_cents: n.amount_cents,
        reason,
    })
}

fn owe_refund(kv: &mut dyn Kv, group: GroupId, payment_id: &str, refund: Refund) {
    assert!(
        kv.get(&refund_key(group, payment_id)).is_none(),
        "a second refund for payment {payment_id}"
    );
    put(kv, refund_key(group, payment_id), &refund);
    kv.put(refund_open_key(group, payment_id), Vec::new());
}

pub(super) fn payment_failed(
    kv: &mut dyn Kv,
    group: GroupId,
    time: u64,
    n: &PaymentNotice,
) -> Result<Effect, Rejection> {
    check_notice(n)?;
    let mut hold = hold_of(kv, group, n.hold_id)?;
    once_per_provider_event(kv, group, time, n.provider_event.as_deref(), |kv| {
        if hold.state != HoldState::PaymentPending {
            return Ok(unchanged("the hold is not waiting for a payment"));
        }
        let p: HoldPayment = get(kv, &payment_key(group, hold.seq))
            .expect("payment_pending hold without its payment");
        if p.payment_id != n.payment_id {
            return Ok(unchanged(format!(
                "the hold waits for payment {}, not {}",
                p.payment_id, n.payment_id
            )));
        }
        clear_pending(kv, group, time, &mut hold, &n.payment_id);
        let hold_id = n.hold_id;
        if hold.state != HoldState::Active {
            outbox::emit(
                kv,
                group,
                OutboxEvent {
                    kind: OutboxKind::HoldExpired,
                    created_at_ms: time,
                    event_id: hold.event_id,
                    hold_seq: hold.seq,
                    booking_seq: None,
                    user: hold.user.clone(),
                    payment_id: Some(n.payment_id.clone()),
                    amount_cents: hold.total_cents,
                    seat_ids: hold.seat_ids.clone(),
                    quantity: hold.quantity,
                },
            );
        }
        Ok(Effect::Payment(if hold.state == HoldState::Active {
            PaymentEffect::HoldReopened {
                hold_id,
                expires_at_ms: hold.expires_at_ms,
            }
        } else {
            PaymentEffect::HoldClosed { hold_id }
        }))
    })
}

pub(super) fn cancel_booking(
    kv: &mut dyn Kv,
    group: GroupId,
    time: u64,
    booking_id: BookingId,
    user: Option<&str>,
    not_after_ms: Option<u64>,
) -> Result<Effect, Rejection> {
    if booking_id.shard != group.0 {
        return Err(Rejection::UnknownBooking { booking_id });
    }
    let booking_key = Key::sm(group, table::BOOKING).u64(booking_id.seq).build();
    let booking: Booking = get(kv, &booking_key).ok_or(Rejection::UnknownBooking { booking_id })?;
    if let Some(user) = user {
        if booking.user != user {
            return Err(Rejection::NotBookingOwner);
        }
    }
    if kv.get(&booking_cancel_key(group, booking_id.seq)).is_some() {
        return Err(Rejection::BookingCancelled);
    }
    if let Some(cutoff) = not_after_ms {
        if time > cutoff {
            return Err(Rejection::CancellationClosed {
                closed_at_ms: cutoff,
            });
        }
    }
    let mut inv: Inventory =
        load_inventory(kv, group, booking.event_id).expect("booking without inventory");
    settle(kv, group, &mut inv, time);
    for &s in &booking.seat_ids {
        let key = ticket_key(group, booking.event_id, s);
        assert_eq!(
            get::<Ticket>(kv, &key),
            Some(Ticket::Sold {
                booking_seq: booking_id.seq
            }),
            "booking lost its seat {s}"
        );
        kv.delete(key);
    }
    inv.sold = inv
        .sold
        .checked_sub(booking.quantity)
        .expect("sold count below zero at cancel");
    save_counts(kv, group, &inv);
    let ue_key = user_event_key(group, booking.event_id, &booking.user);
    let mut ue: UserEvent = get(kv, &ue_key).unwrap_or_default();
    ue.booked = ue
        .booked
        .checked_sub(booking.quantity)
        .expect("booked count below zero at cancel");
    ue.holds.retain(|(_, _, exp)| *exp > time);
    put(kv, ue_key, &ue);
    let reason = if user.is_some() {
        RefundReason::CancelledByUser
    } else {
        RefundReason::CancelledByAdmin
    };
    // Paid through the provider: the hold's payment record names the booking's payment.
    let paid = get::<HoldPayment>(kv, &payment_key(group, booking.hold_id.seq)).filter(|p| {
        p.phase == PaymentPhase::Paid
            && p.payment_id == booking.payment_ref
            && kv.get(&refund_key(group, &p.payment_id)).is_none()
    });
    let refund_payment_id = paid.map(|p| {
        owe_refund(
            kv,
            group,
            &p.payment_id,
            Refund {
                hold_seq: booking.hold_id.seq,
                booking_seq: Some(booking_id.seq),
                event_id: booking.event_id,
                user: booking.user.clone(),
                amount_cents: p.amount_cents,
                reason,
                state: RefundState::Required {
                    failures: 0,
                    last_error: None,
                },
                created_at_ms: time,
                updated_at_ms: time,
            },
        );
        p.payment_id
    });
    put(
        kv,
        booking_cancel_key(group, booking_id.seq),
        &BookingCancellation {
            cancelled_at_ms: time,
            reason,
            refund_payment_id: refund_payment_id.clone(),
        },
    );
    outbox::emit(
        kv,
        group,
        OutboxEvent {
            kind: OutboxKind::OrderCancelled,
            created_at_ms: time,
            event_id: booking.event_id,
            hold_seq: booking.hold_id.seq,
            booking_seq: Some(booking_id.seq),
            user: booking.user.clone(),
            payment_id: refund_payment_id.clone(),
            amount_cents: booking.total_cents,
            seat_ids: booking.seat_ids.clone(),
            quantity: booking.quantity,
        },
    );
    Ok(Effect::Payment(PaymentEffect::BookingCancelled {
        booking_id,
        event_id: booking.event_id,
        seat_ids: booking.seat_ids,
        quantity: booking.quantity,
        refund_payment_id,
    }))
}

pub(super) fn refund_update(
    kv: &mut dyn Kv,
    group: GroupId,
    time: u64,
    payment_id: &str,
    report: &RefundReport,
    provider_event: Option<&str>,
) -> Result<Effect, Rejection> {
    check_provider_id("payment_id", payment_id).map_err(invalid)?;
    match report {
        RefundReport::Pending { refund_id } | RefundReport::Succeeded { refund_id } => {
            check_provider_id("refund_id", refund_id).map_err(invalid)?
        }
        RefundReport::Failed { reason } if reason.len() > REFUND_REASON_LEN_MAX => {
            return Err(invalid(format!(
                "a refund failure reason is at most {REFUND_REASON_LEN_MAX} bytes"
            )))
        }
        RefundReport::Failed { .. } => {}
    }
    once_per_provider_event(kv, group, time, provider_event, |kv| {
        let key = refund_key(group, payment_id);
        let Some(mut refund): Option<Refund> = get(kv, &key) else {
            return Ok(unchanged(format!(
                "no refund is owed for payment {payment_id}"
            )));
        };
        let next = match (&refund.state, report) {
            (RefundState::Refunded { .. }, _) => None,
            (_, RefundReport::Succeeded { refund_id }) => Some(RefundState::Refunded {
                refund_id: refund_id.clone(),
            }),
            (RefundState::Pending { .. }, RefundReport::Pending { .. }) => None,
            (RefundState::Required { .. }, RefundReport::Pending { refund_id }) => {
                Some(RefundState::Pending {
                    refund_id: refund_id.clone(),
                })
            }
            (RefundState::Required { failures, .. }, RefundReport::Failed { reason }) => {
                Some(RefundState::Required {
                    failures: failures.saturating_add(1),
                    last_error: Some(reason.clone()),
                })
            }
            (RefundState::Pending { .. }, RefundReport::Failed { reason }) => {
                Some(RefundState::Required {
                    failures: 1,
                    last_error: Some(reason.clone()),
                })
            }
        };
        let Some(next) = next else {
            return Ok(unchanged(format!(
                "the refund for payment {payment_id} is {} already",
                refund.state.as_str()
            )));
        };
        if next.is_final() {
            kv.delete(refund_open_key(group, payment_id));
        }
        refund.state = next.clone();
        refund.updated_at_ms = time;
        put(kv, key, &refund);
        if next.is_final() {
            let kind = match refund.reason {
                RefundReason::CancelledByUser | RefundReason::CancelledByAdmin => {
                    OutboxKind::RefundSucceeded
                }
                RefundReason::LatePayment | RefundReason::AmountMismatch => {
                    OutboxKind::PaymentLateRefunded
                }
            };
            outbox::emit(
                kv,
                group,
                OutboxEvent {
                    kind,
                    created_at_ms: time,
                    event_id: refund.event_id,
                    hold_seq: refund.hold_seq,
                    booking_seq: refund.booking_seq,
                    user: refund.user.clone(),
                    payment_id: Some(payment_id.to_string()),
                    amount_cents: refund.amount_cents,
                    seat_ids: Vec::new(),
                    quantity: 0,
                },
            );
        }
        Ok(Effect::Payment(PaymentEffect::RefundUpdated {
            payment_id: payment_id.to_string(),
            state: next,
        }))
    })
}
