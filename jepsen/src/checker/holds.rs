//! Holds mean what they say, judged by the log: replaying each seat's writes in
//! applied-index order, no hold is granted over another live hold or a booking,
//! no confirm succeeds on a hold that is not live, and a hold granted with expiry
//! T is never treated as expired before T (a `hold_expired` refusal, a seat
//! re-held) nor as live after T (a `seat_unavailable` refusal, a late confirm),
//! all by state-machine time.
//!
//! Writes of unknown outcome have no index: a confirm or release of unknown
//! outcome of the hold in the way, or a hold of unknown outcome on the seat, can
//! explain some of what is seen, and then the seat is not judged until a granted
//! hold pins its state again.

use super::seat_log::{seat_logs, State, Write};
use super::Verdict;
use crate::history::Op;

pub fn holds_mean_what_they_say(ops: &[Op]) -> Verdict {
    let mut violations = Vec::new();
    for ((event, seat), log) in seat_logs(ops) {
        let mut state = State::Available;
        // False once an unknown write could have changed the state unseen.
        let mut known = true;
        for w in &log.writes {
            let here = format!(
                "event {event} seat {seat}, index {} (line {})",
                w.index, w.line
            );
            let now = state.at(w.time);
            match &w.write {
                Write::Hold { hold, until } => {
                    if known {
                        match &now {
                            State::Held { hold: h, until: u } if h != hold => {
                                if !log.unknown_ends.contains(h) {
                                    violations.push(format!("{here}: hold {hold} granted at {} while hold {h} was live until {u}", w.time));
                                }
                            }
                            State::Sold { hold: h } if h != hold => {
                                violations.push(format!(
                                    "{here}: hold {hold} granted on a seat sold to hold {h}"
                                ));
                            }
                            _ => {}
                        }
                    }
                    if *until <= w.time {
                        violations.push(format!(
                            "{here}: hold {hold} granted already expired ({until} <= {})",
                            w.time
                        ));
                    }
                    state = State::Held {
                        hold: hold.clone(),
                        until: *until,
                    };
                    known = true;
                    continue;
                }
                Write::Confirm { hold } => {
                    if known {
                        match &state {
                            State::Held { hold: h, until } if h == hold && *until <= w.time => {
                                violations.push(format!("{here}: hold {hold} confirmed at {} after it expired at {until}", w.time));
                            }
                            State::Held { hold: h, .. } | State::Sold { hold: h } if h != hold => {
                                violations.push(format!(
                                    "{here}: hold {hold} confirmed while the seat belonged to hold {h}"
                                ));
                            }
                            State::Available => violations.push(format!(
                                "{here}: hold {hold} confirmed on a seat it did not hold"
                            )),
                            _ => {}
                        }
                    }
                }
                Write::ConfirmExpired { hold } => {
                    if let State::Held { hold: h, until } = &state {
                        if h == hold && *until > w.time {
                            violations.push(format!("{here}: confirm of hold {hold} refused as expired at {} though it lives until {until}", w.time));
                        }
                    }
                }
                Write::Refused => {
                    // A hold of unknown outcome may have taken the seat unseen.
                    if known && now == State::Available && log.unknown_holds.is_empty() {
                        let why = match &state {
                            State::Held { hold, until } => {
                                format!("hold {hold} had expired at {until}")
                            }
                            _ => "nothing held it".to_string(),
                        };
                        violations.push(format!(
                            "{here}: hold refused as seat_unavailable at {} though {why}",
                            w.time
                        ));
                    }
                }
                Write::Release { .. } => {}
            }
            state.apply(&w.write, w.time);
            if let State::Held { hold, .. } = &state {
                if log.unknown_ends.contains(hold) {
                    known = false;
                }
            }
        }
    }
    Verdict {
        checker: "holds mean what they say (no overlap, expiry by state-machine time)",
        violations,
        undecided: Vec::new(),
        notes: Vec::new(),
    }
}
