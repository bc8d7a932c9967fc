//! Each seat's writes in log order, from the answers that carried their applied
//! (index, time): the ground truth the index-based checkers replay. Writes whose
//! outcome is unknown have no index; they are listed so that a checker can tell
//! where they might explain what it sees.

use std::collections::{BTreeMap, BTreeSet};

use boxoffice_api::ProblemCode;
use boxoffice_raft::command::BatchRank;

use crate::history::{Call, Op, Outcome};

/// A write to one seat whose position in the log is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// A hold granted until `until`.
    Hold {
        hold: String,
        until: u64,
    },
    Confirm {
        hold: String,
    },
    Release {
        hold: String,
    },
    /// A single-seat hold refused as `seat_unavailable`.
    Refused,
    /// A confirm refused as `hold_expired`: the state machine judged the hold expired.
    ConfirmExpired {
        hold: String,
    },
}

/// One applied write.
#[derive(Clone, Debug)]
pub struct Applied {
    pub index: u64,
    pub time: u64,
    pub write: Write,
    /// Line of the operation in the history (1-based), for reports.
    pub line: usize,
}

/// One seat's log.
#[derive(Clone, Debug, Default)]
pub struct SeatLog {
    /// In applied order: by log index, and within an entry by [`entry_order`].
    pub writes: Vec<Applied>,
    /// Holds on this seat of unknown outcome: (invoke, line).
    pub unknown_holds: Vec<(u64, usize)>,
    /// Holds whose confirm or release has an unknown outcome.
    pub unknown_ends: BTreeSet<String>,
    /// Writes that succeeded but carried no applied position.
    pub unplaced: usize,
}

/// Seat → (event, seat) and the seats of each hold a client learned.
pub fn hold_seats(ops: &[Op]) -> BTreeMap<String, (u64, Vec<u32>, String)> {
    ops.iter()
        .filter_map(|o| match (&o.call, o.outcome, &o.answer.hold_id) {
            (Call::Hold { event, seats, user }, Outcome::Ok, Some(h)) => {
                Some((h.clone(), (*event, seats.clone(), user.clone())))
            }
            _ => None,
        })
        .collect()
}

/// Builds every seat's log.
pub fn seat_logs(ops: &[Op]) -> BTreeMap<(u64, u32), SeatLog> {
    let holds = hold_seats(ops);
    let mut logs: BTreeMap<(u64, u32), SeatLog> = BTreeMap::new();
    for (i, o) in ops.iter().enumerate() {
        let line = i + 1;
        let placed = o.applied.map(|a| (a.index, a.time_ms));
        let put =
            |logs: &mut BTreeMap<(u64, u32), SeatLog>, event: u64, seat: u32, write: Write| {
                let log = logs.entry((event, seat)).or_default();
                match placed {
                    Some((index, time)) => log.writes.push(Applied {
                        index,
                        time,
                        write,
                        line,
                    }),
                    None => log.unplaced += 1,
                }
            };
        match (&o.call, o.outcome) {
            (Call::Hold { event, seats, .. }, Outcome::Ok) => {
                if let (Some(h), Some(until)) = (&o.answer.hold_id, o.answer.expires_at_ms) {
                    for s in seats {
                        put(
                            &mut logs,
                            *event,
                            *s,
                            Write::Hold {
                                hold: h.clone(),
                                until,
                            },
                        );
                    }
                }
            }
            (Call::Hold { event, seats, .. }, Outcome::Fail)
                if seats.len() == 1
                    && o.error.as_deref() == Some(ProblemCode::SeatUnavailable.as_str()) =>
            {
                put(&mut logs, *event, seats[0], Write::Refused)
            }
            (Call::Hold { event, seats, .. }, Outcome::Info) => {
                for s in seats {
                    logs.entry((*event, *s))
                        .or_default()
                        .unknown_holds
                        .push((o.invoke_us, line));
                }
            }
            (Call::Confirm { hold_id, .. } | Call::Release { hold_id, .. }, outcome) => {
                let Some((event, seats, _)) = holds.get(hold_id) else {
                    continue;
                };
                let confirm = matches!(o.call, Call::Confirm { .. });
                for s in seats {
                    let hold = hold_id.clone();
                    match outcome {
                        Outcome::Info => {
                            logs.entry((*event, *s))
                                .or_default()
                                .unknown_ends
                                .insert(hold);
                        }
                        Outcome::Ok if confirm => {
                            put(&mut logs, *event, *s, Write::Confirm { hold })
                        }
                        Outcome::Ok => put(&mut logs, *event, *s, Write::Release { hold }),
                        Outcome::Fail
                            if confirm
                                && o.error.as_deref()
                                    == Some(ProblemCode::HoldExpired.as_str()) =>
                        {
                            put(&mut logs, *event, *s, Write::ConfirmExpired { hold })
                        }
                        Outcome::Fail => {}
                    }
                }
            }
            _ => {}
        }
    }
    for log in logs.values_mut() {
        log.writes.sort_by_key(|w| (w.index, entry_order(&w.write)));
    }
    logs
}

/// Where a write falls among the writes on one seat that share a log entry: the
/// leader's own batch order, [`Command::batch_rank`], which applies confirms and
/// releases (granted or refused) before holds.
///
/// [`Command::batch_rank`]: boxoffice_raft::command::Command::batch_rank
fn entry_order(w: &Write) -> u8 {
    match w {
        Write::Confirm { .. } | Write::Release { .. } | Write::ConfirmExpired { .. } => {
            BatchRank::FreesSeats as u8
        }
        Write::Hold { .. } => BatchRank::TakesSeats as u8,
        Write::Refused => REFUSED_ORDER,
    }
}

/// A refused single-seat hold is a hold like any other in the leader's order, but
/// among the holds of one entry the one granted the seat came before every hold
/// refused it (a refusal before it would have found the seat free and taken it):
/// so a refusal goes after every real rank, holds included.
const REFUSED_ORDER: u8 = BatchRank::Other as u8 + 1;

/// A seat's state in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    Available,
    Held { hold: String, until: u64 },
    Sold { hold: String },
}

impl State {
    /// Applies a known write (the effect a correct state machine gives it).
    pub fn apply(&mut self, w: &Write, time: u64) {
        match w {
            Write::Hold { hold, until } => {
                *self = State::Held {
                    hold: hold.clone(),
                    until: *until,
                }
            }
            Write::Confirm { hold } => {
                *self = State::Sold { hold: hold.clone() };
            }
            Write::Release { hold } => {
                if matches!(self, State::Held { hold: h, .. } if h == hold) {
                    *self = State::Available;
                }
            }
            Write::Refused | Write::ConfirmExpired { .. } => {}
        }
        let _ = time;
    }

    /// Held, but expired at `t`, counts as available.
    pub fn at(&self, t: u64) -> State {
        match self {
            State::Held { until, .. } if *until <= t => State::Available,
            s => s.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use boxoffice_raft::command::{Command, HoldId, HoldRequest, Selection};

    use super::*;

    #[test]
    fn entry_order_is_the_leaders_batch_order() {
        let hold_id = HoldId { shard: 1, seq: 7 };
        let hold = || "h1-7".to_string();
        let user = || "u".to_string();
        // Each real command with the writes it leaves in a seat log.
        let pairs: Vec<(Command, Write)> = vec![
            (
                Command::Hold(HoldRequest {
                    event_id: 1,
                    user: user(),
                    selection: Selection::Seats(vec![3]),
                }),
                Write::Hold {
                    hold: hold(),
                    until: 10,
                },
            ),
            (
                Command::Confirm {
                    hold_id,
                    user: user(),
                    payment_ref: "p".into(),
                },
                Write::Confirm { hold: hold() },
            ),
            (
                Command::Confirm {
                    hold_id,
                    user: user(),
                    payment_ref: "p".into(),
                },
                Write::ConfirmExpired { hold: hold() },
            ),
            (
                Command::Release {
                    hold_id,
                    user: user(),
                },
                Write::Release { hold: hold() },
            ),
        ];
        for (c, w) in &pairs {
            assert_eq!(c.batch_rank() as u8, entry_order(w), "{} / {w:?}", c.name());
            for (c2, w2) in &pairs {
                assert_eq!(
                    c.batch_rank().cmp(&c2.batch_rank()),
                    entry_order(w).cmp(&entry_order(w2)),
                    "{} vs {}",
                    c.name(),
                    c2.name()
                );
            }
        }
        // Sorting the writes by entry order gives the leader's order of the commands.
        let mut by_rank: Vec<&(Command, Write)> = pairs.iter().collect();
        by_rank.sort_by_key(|(c, _)| c.batch_rank());
        let mut by_order: Vec<&(Command, Write)> = pairs.iter().collect();
        by_order.sort_by_key(|(_, w)| entry_order(w));
        assert_eq!(by_rank, by_order);
        // A refusal comes after every real rank, the granted hold's included.
        for r in [
            BatchRank::FreesSeats,
            BatchRank::TakesSeats,
            BatchRank::Other,
        ] {
            assert!(entry_order(&Write::Refused) > r as u8, "{r:?}");
        }
        assert!(entry_order(&Write::Refused) > entry_order(&pairs[0].1));
    }
}
