//! Holds, confirms and releases.

use boxoffice_raft::codec;
use boxoffice_raft::command::*;
use boxoffice_raft::GroupId;

use super::{get, invalid, next_id, put};
use crate::keys::{self, table, Key};
use crate::kv::{Kv, KvRead};
use crate::records::*;

use super::inventory::*;

fn validate_user(user: &str) -> Result<(), Rejection> {
    if user.is_empty() || user.len() > CLIENT_ID_LEN_MAX {
        return Err(invalid("user id must be 1..=128 bytes"));
    }
    Ok(())
}

pub(super) fn hold(
    kv: &mut dyn Kv,
    group: GroupId,
    meta: &mut SmMeta,
    time: u64,
    req: &HoldRequest,
    admission: Option<u64>,
) -> Result<Effect, Rejection> {
    validate_user(&req.user)?;
    let mut inv: Inventory =
        load_inventory(kv, group, req.event_id).ok_or(Rejection::UnknownEvent {
            event_id: req.event_id,
        })?;
    super::queue::check_hold(kv, group, time, req.event_id, &req.user, admission)?;
    // Check the request's shape.
    let requested = match &req.selection {
        Selection::Seats(seats) => {
            if inv.is_general_admission() {
                return Err(invalid(
                    "this event is general admission: ask for a quantity, not seat ids",
                ));
            }
            if seats.is_empty() {
                return Err(invalid("seat_ids must not be empty"));
            }
            if seats.len() > HOLD_SEATS_MAX as usize {
                return Err(invalid(format!("at most {HOLD_SEATS_MAX} seats per hold")));
            }
            let mut sorted = seats.clone();
            sorted.sort_unstable();
            if sorted.windows(2).any(|w| w[0] == w[1]) {
                return Err(invalid("seat_ids contains duplicates"));
            }
            if let Some(bad) = sorted.iter().find(|&&s| s >= inv.capacity) {
                return Err(invalid(format!(
                    "seat {bad} does not exist (event has seats 0..{})",
                    inv.capacity
                )));
            }
            seats.len() as u32
        }
        Selection::Quantity(q) => {
            if *q == 0 || *q > HOLD_SEATS_MAX {
                return Err(invalid(format!(
                    "quantity must be between 1 and {HOLD_SEATS_MAX}"
                )));
            }
            *q
        }
    };
    // Per-user cap.
    let ue_key = user_event_key(group, req.event_id, &req.user);
    let mut ue: UserEvent = get(kv, &ue_key).unwrap_or_default();
    let current = ue.current(time);
    if current.saturating_add(requested) > inv.per_user_cap {
        return Err(Rejection::CapExceeded {
            cap: inv.per_user_cap,
            current,
            requested,
        });
    }
    // Availability.
    settle(kv, group, &mut inv, time);
    let seats: Vec<u32> = match &req.selection {
        Selection::Seats(seats) => {
            let taken: Vec<u32> = seats
                .iter()
                .copied()
                .filter(|&s| {
                    Ticket::status_at(
                        get::<Ticket>(kv, &ticket_key(group, req.event_id, s)).as_ref(),
                        time,
                    ) != SeatStatus::Available
                })
                .collect();
            if !taken.is_empty() {
                return Err(Rejection::SeatUnavailable { seat_ids: taken });
            }
            seats.clone()
        }
        Selection::Quantity(q) => {
            let available = inv.capacity - inv.sold - inv.held_unsettled;
            if available < *q {
                return Err(Rejection::InsufficientAvailability {
                    requested: *q,
                    available,
                });
            }
            if inv.is_general_admission() {
                Vec::new()
            } else {
                best_available(kv, group, &inv, time, *q)
            }
        }
    };
    // All checks passed: write.
    let seq = next_id(meta);
    // Time is at most STAMP_MS_MAX and lifetimes at most a day; prices are
    // bounded at validation. Checked all the same: a record from before the
    // bounds existed must be refused, not crash apply.
    let expires_at_ms = time
        .checked_add(inv.hold_ttl_ms)
        .ok_or_else(|| invalid("the hold would expire past the end of time"))?;
    let total_cents = if seats.is_empty() {
        inv.price_of(None).checked_mul(u64::from(requested))
    } else {
        seats
            .iter()
            .try_fold(0u64, |sum, &s| sum.checked_add(inv.price_of(Some(s))))
    }
    .ok_or_else(|| invalid("the hold's total price is too large"))?;
    for &s in &seats {
        put(
            kv,
            ticket_key(group, req.event_id, s),
            &Ticket::Held {
                hold_seq: seq,
                expires_at_ms,
            },
        );
    }
    put(
        kv,
        expiry_key(group, req.event_id, expires_at_ms, seq),
        &ExpiringQuantity(requested),
    );
    inv.held_unsettled += requested;
    save_counts(kv, group, &inv);
    ue.holds.retain(|(_, _, exp)| *exp > time);
    ue.holds.push((seq, requested, expires_at_ms));
    put(kv, ue_key, &ue);
    let record = Hold {
        seq,
        event_id: req.event_id,
        user: req.user.clone(),
        seat_ids: seats.clone(),
        quantity: requested,
        expires_at_ms,
        total_cents,
        state: HoldState::Active,
    };
    put(kv, hold_key(group, seq), &record);
    Ok(Effect::Held(GrantedHold {
        hold_id: HoldId {
            shard: group.0,
            seq,
        },
        event_id: req.event_id,
        seat_ids: seats,
        quantity: requested,
        expires_at_ms,
        total_cents,
    }))
}

/// The `q` lowest-numbered seats available at `time`. The caller checked there are
/// at least `q`.
fn best_available(kv: &dyn KvRead, group: GroupId, inv: &Inventory, time: u64, q: u32) -> Vec<u32> {
    let prefix = Key::sm(group, table::TICKET).u64(inv.event_id).build();
    let mut picked = Vec::with_capacity(q as usize);
    let mut next_free = 0u32;
    kv.scan(&prefix, &prefix, &mut |k, v| {
        let seat = keys::read_u32(k, prefix.len());
        while next_free < seat && picked.len() < q as usize {
            picked.push(next_free);
            next_free += 1;
        }
        if picked.len() >= q as usize {
            return false;
        }
        let t: Ticket = codec::decode(v).expect("corrupt ticket record");
        if Ticket::status_at(Some(&t), time) == SeatStatus::Available {
            picked.push(seat);
        }
        next_free = seat + 1;
        picked.len() < q as usize
    });
    while picked.len() < q as usize && next_free < inv.capacity {
        picked.push(next_free);
        next_free += 1;
    }
    assert_eq!(
        picked.len(),
        q as usize,
        "availability count and ticket records disagree"
    );
    picked
}

/// The refusal for a hold whose payment is in flight.
fn payment_in_flight(kv: &dyn KvRead, group: GroupId, hold: &Hold) -> Rejection {
    let payment: HoldPayment = get(kv, &super::payments::payment_key(group, hold.seq))
        .expect("payment_pending hold without its payment");
    Rejection::PaymentInFlight {
        payment_id: payment.payment_id,
    }
}

pub(super) fn load_owned_hold(
    kv: &dyn KvRead,
    group: GroupId,
    hold_id: HoldId,
    user: &str,
) -> Result<Hold, Rejection> {
    validate_user(user)?;
    if hold_id.shard != group.0 {
        return Err(Rejection::UnknownHold { hold_id });
    }
    let hold: Hold =
        get(kv, &hold_key(group, hold_id.seq)).ok_or(Rejection::UnknownHold { hold_id })?;
    if hold.user != user {
        return Err(Rejection::NotHoldOwner);
    }
    Ok(hold)
}

pub(super) fn confirm(
    kv: &mut dyn Kv,
    group: GroupId,
    meta: &mut SmMeta,
    time: u64,
    hold_id: HoldId,
    user: &str,
    payment_ref: &str,
) -> Result<Effect, Rejection> {
    if payment_ref.len() > PAYMENT_REF_LEN_MAX {
        return Err(invalid(format!(
            "payment_ref is longer than {PAYMENT_REF_LEN_MAX} bytes"
        )));
    }
    let mut hold = load_owned_hold(kv, group, hold_id, user)?;
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
        HoldState::PaymentPending => return Err(payment_in_flight(kv, group, &hold)),
        HoldState::Active if hold.expires_at_ms <= time => {
            return Err(Rejection::HoldExpired {
                expired_at_ms: hold.expires_at_ms,
            })
        }
        HoldState::Active => {}
    }
    let booking = sell_live_hold(kv, group, meta, time, &mut hold, payment_ref);
    Ok(Effect::Confirmed(booking))
}

/// Books a live hold: its seats (held by it) become sold, its tickets move from
/// held to sold in the counts and the owner's cap, and the booking is written.
/// The caller checked the hold is live and neither booked nor released.
pub(super) fn sell_live_hold(
    kv: &mut dyn Kv,
    group: GroupId,
    meta: &mut SmMeta,
    time: u64,
    hold: &mut Hold,
    payment_ref: &str,
) -> ConfirmedBooking {
    let mut inv: Inventory =
        load_inventory(kv, group, hold.event_id).expect("hold without inventory");
    settle(kv, group, &mut inv, time);
    let booking_seq = next_id(meta);
    for &s in &hold.seat_ids {
        let key = ticket_key(group, hold.event_id, s);
        let t: Option<Ticket> = get(kv, &key);
        assert_eq!(
            t,
            Some(Ticket::Held {
                hold_seq: hold.seq,
                expires_at_ms: hold.expires_at_ms
            }),
            "live hold lost its seat {s}"
        );
        put(kv, key, &Ticket::Sold { booking_seq });
    }
    kv.delete(expiry_key(
        group,
        hold.event_id,
        hold.expires_at_ms,
        hold.seq,
    ));
    inv.held_unsettled = inv
        .held_unsettled
        .checked_sub(hold.quantity)
        .expect("held count below zero at confirm");
    inv.sold += hold.quantity;
    assert!(inv.sold <= inv.capacity, "sold more than capacity");
    save_counts(kv, group, &inv);
    let ue_key = user_event_key(group, hold.event_id, &hold.user);
    let mut ue: UserEvent = get(kv, &ue_key).unwrap_or_default();
    ue.holds
        .retain(|(seq, _, exp)| *seq != hold.seq && *exp > time);
    ue.booked += hold.quantity;
    put(kv, ue_key, &ue);
    write_booking(kv, group, time, hold, booking_seq, payment_ref)
}

/// Marks `hold` booked as `booking_seq` and writes the booking and its index
/// entry; the seats and counts are the caller's.
pub(super) fn write_booking(
    kv: &mut dyn Kv,
    group: GroupId,
    time: u64,
    hold: &mut Hold,
    booking_seq: u64,
    payment_ref: &str,
) -> ConfirmedBooking {
    hold.state = HoldState::Confirmed { booking_seq };
    put(kv, hold_key(group, hold.seq), &*hold);
    let booking = Booking {
        booking_id: BookingId {
            shard: group.0,
            seq: booking_seq,
        },
        hold_id: HoldId {
            shard: group.0,
            seq: hold.seq,
        },
        event_id: hold.event_id,
        user: hold.user.clone(),
        seat_ids: hold.seat_ids.clone(),
        quantity: hold.quantity,
        total_cents: hold.total_cents,
        payment_ref: payment_ref.to_string(),
        confirmed_at_ms: time,
    };
    put(
        kv,
        Key::sm(group, table::BOOKING).u64(booking_seq).build(),
        &booking,
    );
    super::queue::session_finished(kv, group, time, hold.event_id, &hold.user);
    kv.put(
        Key::sm(group, table::USER_BOOKING)
            .str(&hold.user)
            .u64(booking_seq)
            .build(),
        Vec::new(),
    );
    ConfirmedBooking {
        booking_id: booking.booking_id,
        hold_id: booking.hold_id,
        event_id: booking.event_id,
        user: booking.user,
        seat_ids: booking.seat_ids,
        quantity: booking.quantity,
        total_cents: booking.total_cents,
        payment_ref: booking.payment_ref,
        confirmed_at_ms: booking.confirmed_at_ms,
    }
}

pub(super) fn release(
    kv: &mut dyn Kv,
    group: GroupId,
    time: u64,
    hold_id: HoldId,
    user: &str,
) -> Result<Effect, Rejection> {
    let mut hold = load_owned_hold(kv, group, hold_id, user)?;
    match hold.state {
        HoldState::Confirmed { booking_seq } => {
            return Err(Rejection::HoldAlreadyConfirmed {
                booking_id: BookingId {
                    shard: group.0,
                    seq: booking_seq,
                },
            })
        }
        HoldState::Released => {
            return Ok(Effect::Released {
                hold_id,
                event_id: hold.event_id,
                seat_ids: vec![],
                quantity: 0,
            })
        }
        HoldState::PaymentPending => return Err(payment_in_flight(kv, group, &hold)),
        HoldState::Active => {}
    }
    let (freed, quantity) = close_hold(kv, group, time, &mut hold);
    Ok(Effect::Released {
        hold_id,
        event_id: hold.event_id,
        seat_ids: freed,
        quantity,
    })
}

/// Closes a hold that is neither booked nor released: a live one gives its
/// seats and count back at once, an expired one only drops its records (its
/// seats may belong to another hold by now). Returns the seats and tickets made
/// available.
pub(super) fn close_hold(
    kv: &mut dyn Kv,
    group: GroupId,
    time: u64,
    hold: &mut Hold,
) -> (Vec<u32>, u32) {
    let mut inv: Inventory =
        load_inventory(kv, group, hold.event_id).expect("hold without inventory");
    settle(kv, group, &mut inv, time);
    let live = hold.expires_at_ms > time;
    let mut freed = Vec::new();
    if live {
        // Still live: it is unsettled; give its count back now.
        kv.delete(expiry_key(
            group,
            hold.event_id,
            hold.expires_at_ms,
            hold.seq,
        ));
        inv.held_unsettled = inv
            .held_unsettled
            .checked_sub(hold.quantity)
            .expect("held count below zero at release");
    }
    save_counts(kv, group, &inv);
    for &s in &hold.seat_ids {
        let key = ticket_key(group, hold.event_id, s);
        // Only this hold's own record: after expiry the seat may belong to another hold.
        if let Some(Ticket::Held { hold_seq, .. }) = get::<Ticket>(kv, &key) {
            if hold_seq == hold.seq {
                kv.delete(key);
                if live {
                    freed.push(s);
                }
            }
        }
    }
    let ue_key = user_event_key(group, hold.event_id, &hold.user);
    let mut ue: UserEvent = get(kv, &ue_key).unwrap_or_default();
    ue.holds
        .retain(|(seq, _, exp)| *seq != hold.seq && *exp > time);
    put(kv, ue_key, &ue);
    hold.state = HoldState::Released;
    put(kv, hold_key(group, hold.seq), &*hold);
    (freed, if live { hold.quantity } else { 0 })
}
