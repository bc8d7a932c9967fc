//! Booking safety: no seat sold to two bookings; every acknowledged confirm is in
//! the final state; no booking exists that no client asked for.

use std::collections::{BTreeMap, BTreeSet};

use super::Verdict;
use crate::history::{Call, Op, Outcome, SeatStatus};

/// Seats by event, as (event, seat).
type SeatKey = (u64, u32);

/// The event of each hold, from the hold operations that returned it.
fn hold_events(ops: &[Op]) -> BTreeMap<String, u64> {
    ops.iter()
        .filter_map(|o| match (&o.call, o.outcome, &o.answer.hold_id) {
            (Call::Hold { event, .. }, Outcome::Ok, Some(h)) => Some((h.clone(), *event)),
            _ => None,
        })
        .collect()
}

/// No seat is ever sold to two bookings: neither in what confirms answered nor in
/// what any read showed.
pub fn no_double_sale(ops: &[Op]) -> Verdict {
    let events = hold_events(ops);
    let mut sold: BTreeMap<SeatKey, BTreeSet<String>> = BTreeMap::new();
    for o in ops.iter().filter(|o| o.outcome == Outcome::Ok) {
        match &o.call {
            Call::Confirm { hold_id, .. } => {
                if let (Some(b), Some(e)) = (&o.answer.booking_id, events.get(hold_id)) {
                    for s in &o.answer.seats {
                        sold.entry((*e, *s)).or_default().insert(b.clone());
                    }
                }
            }
            Call::Read { event, .. } => {
                for (s, b) in &o.answer.bookings {
                    sold.entry((*event, *s)).or_default().insert(b.clone());
                }
            }
            _ => {}
        }
    }
    let violations = sold
        .into_iter()
        .filter(|(_, b)| b.len() > 1)
        .map(|((e, s), b)| format!("event {e} seat {s} sold to {} bookings: {b:?}", b.len()))
        .collect();
    Verdict {
        checker: "no double sale",
        violations,
        undecided: Vec::new(),
        notes: Vec::new(),
    }
}

/// Every acknowledged confirm is in the final state (the last linearizable read of
/// each event), and every booking there is explained by a confirm a client made
/// (acknowledged, or of unknown outcome).
pub fn acked_confirms_survive(ops: &[Op]) -> Verdict {
    let events = hold_events(ops);
    let mut violations = Vec::new();
    let mut undecided = Vec::new();
    // The final read of each event: the reads marked `final_state` when the
    // history has any (a run's), else each event's last linearizable read.
    let marked = ops.iter().any(|o| o.answer.final_state);
    let mut finals: BTreeMap<u64, &Op> = BTreeMap::new();
    for o in ops
        .iter()
        .filter(|o| o.outcome == Outcome::Ok && (o.answer.final_state || !marked))
    {
        if let Call::Read {
            event,
            linearizable: true,
        } = o.call
        {
            if finals.get(&event).is_none_or(|f| f.invoke_us < o.invoke_us) {
                finals.insert(event, o);
            }
        }
    }
    let mut acked: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    let mut unknown: BTreeMap<u64, usize> = BTreeMap::new();
    for o in ops {
        let Call::Confirm { hold_id, .. } = &o.call else {
            continue;
        };
        let Some(&event) = events.get(hold_id) else {
            continue;
        };
        match o.outcome {
            Outcome::Ok => {
                let Some(b) = &o.answer.booking_id else {
                    continue;
                };
                acked.entry(event).or_default().insert(b.clone());
                let Some(fin) = finals.get(&event) else {
                    undecided.push(format!("no final read of event {event}"));
                    continue;
                };
                let present: BTreeMap<u32, &String> =
                    fin.answer.bookings.iter().map(|(s, b)| (*s, b)).collect();
                for s in &o.answer.seats {
                    if present.get(s) != Some(&b) {
                        violations.push(format!("acknowledged booking {b} (seat {s} of event {event}) is missing from the final state"));
                    }
                }
            }
            Outcome::Info => *unknown.entry(event).or_default() += 1,
            Outcome::Fail => {}
        }
    }
    for (event, fin) in finals {
        let in_final: BTreeSet<&String> = fin.answer.bookings.iter().map(|(_, b)| b).collect();
        let none = BTreeSet::new();
        let unexplained: Vec<&&String> = in_final
            .iter()
            .filter(|b| !acked.get(&event).unwrap_or(&none).contains(**b))
            .collect();
        let budget = unknown.get(&event).copied().unwrap_or(0);
        if unexplained.len() > budget {
            violations.push(format!(
                "event {event}: {} bookings nobody was told of ({unexplained:?}) but only {budget} confirms of unknown outcome",
                unexplained.len()
            ));
        }
        for (s, st) in &fin.answer.statuses {
            if *st == SeatStatus::Sold && !fin.answer.bookings.iter().any(|(bs, _)| bs == s) {
                violations.push(format!(
                    "event {event}: seat {s} sold without a booking in the final read"
                ));
            }
        }
    }
    Verdict {
        checker: "acknowledged confirms survive, no phantom bookings",
        violations,
        undecided,
        notes: Vec::new(),
    }
}
