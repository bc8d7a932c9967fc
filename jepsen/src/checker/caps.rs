//! Per-user caps and general-admission capacity.
//!
//! - When a hold is granted (at applied index i, time t), the tickets its user
//!   already had on the event — earlier granted holds still live at t and not
//!   released before i, plus those confirmed before i — plus the new ones never
//!   exceed the cap. Holds of unknown outcome are not counted, and a hold with a
//!   release of unknown outcome is not counted: the sum is a lower bound, so any
//!   excess is a violation.
//! - In the final state no user has more tickets booked on an event than the cap.
//! - A general-admission event never shows more tickets held and sold than its
//!   capacity, and its final bookings add up to what it shows sold.

use std::collections::{BTreeMap, BTreeSet};

use super::Verdict;
use crate::history::{Call, Op, Outcome};

struct Granted {
    hold: String,
    index: u64,
    time: u64,
    until: u64,
    tickets: u32,
    line: usize,
}

pub fn per_user_caps(ops: &[Op], cap: u32) -> Verdict {
    let mut violations = Vec::new();
    let mut granted: BTreeMap<(String, u64), Vec<Granted>> = BTreeMap::new();
    let mut released: BTreeMap<String, u64> = BTreeMap::new();
    let mut confirmed: BTreeMap<String, u64> = BTreeMap::new();
    let mut unknown_release: BTreeSet<String> = BTreeSet::new();
    let mut booking_user: BTreeMap<String, String> = BTreeMap::new();
    for (i, o) in ops.iter().enumerate() {
        match (&o.call, o.outcome) {
            (
                Call::Hold { user, event, .. } | Call::HoldQuantity { user, event, .. },
                Outcome::Ok,
            ) => {
                let tickets = match &o.call {
                    Call::HoldQuantity { quantity, .. } => *quantity,
                    Call::Hold { seats, .. } => seats.len() as u32,
                    _ => 0,
                };
                if let (Some(h), Some(a), Some(until)) =
                    (&o.answer.hold_id, o.applied, o.answer.expires_at_ms)
                {
                    granted
                        .entry((user.clone(), *event))
                        .or_default()
                        .push(Granted {
                            hold: h.clone(),
                            index: a.index,
                            time: a.time_ms,
                            until,
                            tickets,
                            line: i + 1,
                        });
                }
            }
            (Call::Release { hold_id, .. }, Outcome::Ok) => {
                if let Some(a) = o.applied {
                    released.insert(hold_id.clone(), a.index);
                } else {
                    unknown_release.insert(hold_id.clone());
                }
            }
            (Call::Release { hold_id, .. }, Outcome::Info) => {
                unknown_release.insert(hold_id.clone());
            }
            (Call::Confirm { hold_id, user }, Outcome::Ok) => {
                if let Some(a) = o.applied {
                    confirmed.insert(hold_id.clone(), a.index);
                }
                if let Some(b) = &o.answer.booking_id {
                    booking_user.insert(b.clone(), user.clone());
                }
            }
            _ => {}
        }
    }
    for ((user, event), holds) in &granted {
        for h in holds {
            let mut had = 0;
            // Holds in h's own log entry are left out (their order among holds is
            // not known: a lower bound); confirms and releases in it came before h
            // (a leader applies them before the holds of an entry).
            for e in holds.iter().filter(|e| e.index < h.index) {
                if confirmed.get(&e.hold).is_some_and(|&c| c <= h.index) {
                    had += e.tickets;
                } else if released.get(&e.hold).is_some_and(|&r| r <= h.index)
                    || unknown_release.contains(&e.hold)
                    || e.until <= h.time
                {
                } else {
                    had += e.tickets;
                }
            }
            if had + h.tickets > cap {
                violations.push(format!(
                    "line {}: user {user} granted {} tickets of event {event} (hold {}) while holding or owning at least {had}; cap {cap}",
                    h.line, h.tickets, h.hold
                ));
            }
        }
    }
    // Final state.
    for o in ops.iter().filter(|o| o.outcome == Outcome::Ok) {
        let Call::Read { event, .. } = o.call else {
            continue;
        };
        let mut per_user: BTreeMap<&str, u32> = BTreeMap::new();
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        for (_, b) in &o.answer.bookings {
            if let Some(u) = booking_user.get(b) {
                *per_user.entry(u).or_default() += 1;
            }
            seen.insert(b);
        }
        if let Some(ga) = &o.answer.ga {
            if ga.sold + ga.held > ga.capacity {
                violations.push(format!(
                    "event {event}: {} sold + {} held exceeds capacity {}",
                    ga.sold, ga.held, ga.capacity
                ));
            }
            if o.answer.final_state {
                let total: u32 = ga.bookings.iter().map(|b| b.2).sum();
                if total != ga.sold {
                    violations.push(format!(
                        "event {event}: final bookings add up to {total} tickets but {} are sold",
                        ga.sold
                    ));
                }
                for (_, u, q) in &ga.bookings {
                    *per_user.entry(u).or_default() += q;
                }
            }
        }
        for (u, n) in per_user {
            if n > cap {
                violations.push(format!(
                    "event {event}: user {u} has {n} tickets booked; cap {cap}"
                ));
            }
        }
    }
    Verdict {
        checker: "per-user caps and general-admission capacity",
        violations,
        undecided: Vec::new(),
        notes: Vec::new(),
    }
}
