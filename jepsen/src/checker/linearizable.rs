//! Linearizability of each seat's history against a sequential model of one seat
//! (available / held by a hold until a time / sold), Wing–Gong–Lowe style: search
//! for an order of the operations that respects real time (an operation that
//! completed before another was invoked comes first) and that the model accepts.
//! `info` operations may take effect at any point after their invocation, or
//! never. Seats are checked independently (P-compositionality), which is sound for
//! single-seat constraints; the coupling of a multi-seat hold is not checked here.
//!
//! Hold expiry uses state-machine time from the answers: a hold granted with
//! expiry T is live for an operation applied at t < T and expired at t ≥ T.
//! Where an operation carries no time (a failure, an unknown outcome) both are
//! allowed. Only linearizable reads are checked here; follower reads have their
//! own, weaker guarantee.

use std::collections::{BTreeMap, HashSet};

use boxoffice_api::ProblemCode;

use super::Verdict;
use crate::history::{Call, Op, Outcome, SeatStatus};

/// Search steps allowed per seat before the result is reported as undecided.
pub const SEARCH_STEPS_MAX: u64 = 2_000_000;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum St {
    Available,
    /// `hold` None: a hold of unknown outcome (id never learned); `until` None: unknown.
    Held {
        hold: Option<String>,
        until: Option<u64>,
    },
    Sold {
        hold: String,
    },
}

#[derive(Clone, Debug)]
enum Kind {
    /// A granted hold.
    HoldOk {
        hold: String,
        until: u64,
    },
    /// A single-seat hold refused because the seat was taken.
    HoldRefused,
    /// A hold that may or may not have happened.
    HoldMaybe,
    ConfirmOk {
        hold: String,
    },
    ConfirmMaybe {
        hold: String,
    },
    ReleaseOk {
        hold: String,
    },
    ReleaseMaybe {
        hold: String,
    },
    Read(SeatStatus),
}

#[derive(Clone, Debug)]
struct SeatOp {
    /// Index in the whole history (for reports).
    at: usize,
    invoke: u64,
    /// `u64::MAX` for operations of unknown outcome.
    complete: u64,
    time: Option<u64>,
    kind: Kind,
    required: bool,
}

/// (can the hold be live at `t`, can it have expired by `t`)
fn liveness(until: Option<u64>, t: Option<u64>) -> (bool, bool) {
    match (until, t) {
        (Some(u), Some(t)) => (t < u, t >= u),
        _ => (true, true),
    }
}

/// The states the seat may be in after `op`, or none if the model refuses it.
fn step(s: &St, op: &SeatOp) -> Vec<St> {
    let t = op.time;
    let free = |s: &St| match s {
        St::Available => true,
        St::Held { until, .. } => liveness(*until, t).1,
        St::Sold { .. } => false,
    };
    match &op.kind {
        Kind::HoldOk { hold, until } => {
            if free(s) {
                vec![St::Held {
                    hold: Some(hold.clone()),
                    until: Some(*until),
                }]
            } else {
                vec![]
            }
        }
        Kind::HoldMaybe => {
            if free(s) {
                vec![St::Held {
                    hold: None,
                    until: None,
                }]
            } else {
                vec![]
            }
        }
        Kind::HoldRefused => match s {
            St::Sold { .. } => vec![s.clone()],
            St::Held { until, .. } if liveness(*until, t).0 => vec![s.clone()],
            _ => vec![],
        },
        Kind::ConfirmOk { hold } | Kind::ConfirmMaybe { hold } => match s {
            St::Held {
                hold: Some(h),
                until,
            } if h == hold && liveness(*until, t).0 => vec![St::Sold { hold: hold.clone() }],
            _ => vec![],
        },
        Kind::ReleaseOk { hold } | Kind::ReleaseMaybe { hold } => match s {
            St::Held { hold: Some(h), .. } if h == hold => vec![St::Available],
            // Releasing an expired or confirmed hold changes nothing here.
            _ => vec![s.clone()],
        },
        Kind::Read(SeatStatus::Sold) => match s {
            St::Sold { .. } => vec![s.clone()],
            _ => vec![],
        },
        Kind::Read(SeatStatus::Held) => match s {
            St::Held { until, .. } if liveness(*until, t).0 => vec![s.clone()],
            _ => vec![],
        },
        Kind::Read(SeatStatus::Available) => match s {
            St::Available => vec![St::Available],
            St::Held { until, .. } => {
                let (live, expired) = liveness(*until, t);
                match (live, expired) {
                    (_, false) => vec![],
                    // Certainly expired: the seat is free.
                    (false, true) => vec![St::Available],
                    (true, true) => vec![St::Available, s.clone()],
                }
            }
            St::Sold { .. } => vec![],
        },
    }
}

fn partition(ops: &[Op]) -> BTreeMap<(u64, u32), Vec<SeatOp>> {
    // Seats of each hold id a client learned.
    let mut holds: BTreeMap<&str, (u64, &[u32])> = BTreeMap::new();
    for o in ops {
        if let (Call::Hold { event, seats, .. }, Outcome::Ok, Some(h)) =
            (&o.call, o.outcome, &o.answer.hold_id)
        {
            holds.insert(h, (*event, seats));
        }
    }
    let mut by_seat: BTreeMap<(u64, u32), Vec<SeatOp>> = BTreeMap::new();
    for (at, o) in ops.iter().enumerate() {
        let unknown = o.outcome == Outcome::Info || o.complete_us.is_none();
        let complete = if unknown {
            u64::MAX
        } else {
            o.complete_us.unwrap_or(u64::MAX)
        };
        let time = o.applied.map(|a| a.time_ms);
        let mut push = |event: u64, seat: u32, kind: Kind| {
            by_seat.entry((event, seat)).or_default().push(SeatOp {
                at,
                invoke: o.invoke_us,
                complete,
                time,
                kind,
                required: !unknown,
            });
        };
        match (&o.call, o.outcome) {
            (Call::Hold { event, seats, .. }, Outcome::Ok) => {
                let (Some(h), Some(until)) = (&o.answer.hold_id, o.answer.expires_at_ms) else {
                    continue;
                };
                for s in seats {
                    push(
                        *event,
                        *s,
                        Kind::HoldOk {
                            hold: h.clone(),
                            until,
                        },
                    );
                }
            }
            (Call::Hold { event, seats, .. }, Outcome::Fail)
                if seats.len() == 1
                    && o.error.as_deref() == Some(ProblemCode::SeatUnavailable.as_str()) =>
            {
                push(*event, seats[0], Kind::HoldRefused);
            }
            (Call::Hold { event, seats, .. }, Outcome::Info) => {
                for s in seats {
                    push(*event, *s, Kind::HoldMaybe);
                }
            }
            (
                Call::Confirm { hold_id, .. } | Call::Release { hold_id, .. },
                outcome @ (Outcome::Ok | Outcome::Info),
            ) => {
                let Some((event, seats)) = holds.get(hold_id.as_str()) else {
                    continue;
                };
                let confirm = matches!(o.call, Call::Confirm { .. });
                for s in seats.iter() {
                    let h = hold_id.clone();
                    let kind = match (confirm, outcome) {
                        (true, Outcome::Ok) => Kind::ConfirmOk { hold: h },
                        (true, _) => Kind::ConfirmMaybe { hold: h },
                        (false, Outcome::Ok) => Kind::ReleaseOk { hold: h },
                        (false, _) => Kind::ReleaseMaybe { hold: h },
                    };
                    push(*event, *s, kind);
                }
            }
            (
                Call::Read {
                    event,
                    linearizable: true,
                },
                Outcome::Ok,
            ) => {
                for (s, st) in &o.answer.statuses {
                    push(*event, *s, Kind::Read(*st));
                }
            }
            _ => {}
        }
    }
    for v in by_seat.values_mut() {
        v.sort_by_key(|o| o.invoke);
    }
    by_seat
}

enum Search {
    Found,
    Refuted,
    Budget,
}

struct Searcher<'a> {
    ops: &'a [SeatOp],
    seen: HashSet<(St, Vec<u64>)>,
    steps: u64,
    budget: u64,
}

impl Searcher<'_> {
    fn done(&self, set: &[u64], i: usize) -> bool {
        set[i / 64] & (1 << (i % 64)) != 0
    }

    fn search(&mut self, state: St, set: Vec<u64>) -> Search {
        self.steps += 1;
        if self.steps > self.budget {
            return Search::Budget;
        }
        let pending: Vec<usize> = (0..self.ops.len())
            .filter(|&i| !self.done(&set, i))
            .collect();
        if pending.iter().all(|&i| !self.ops[i].required) {
            return Search::Found;
        }
        // Whatever is linearized next must have been invoked before the earliest
        // completion among the pending operations.
        let horizon = pending
            .iter()
            .map(|&i| self.ops[i].complete)
            .min()
            .unwrap_or(u64::MAX);
        let mut budget_hit = false;
        for &i in &pending {
            let op = &self.ops[i];
            if op.invoke > horizon {
                break; // sorted by invocation
            }
            for next in step(&state, op) {
                let mut s2 = set.clone();
                s2[i / 64] |= 1 << (i % 64);
                if !self.seen.insert((next.clone(), s2.clone())) {
                    continue;
                }
                match self.search(next, s2) {
                    Search::Found => return Search::Found,
                    Search::Budget => budget_hit = true,
                    Search::Refuted => {}
                }
            }
        }
        if budget_hit {
            Search::Budget
        } else {
            Search::Refuted
        }
    }
}

/// Checks every seat's history; `budget` bounds the search per seat.
pub fn per_seat(ops: &[Op], budget: u64) -> Verdict {
    let mut violations = Vec::new();
    let mut undecided = Vec::new();
    let (mut seats, mut checked, mut steps) = (0usize, 0usize, 0u64);
    for ((event, seat), seat_ops) in partition(ops) {
        seats += 1;
        checked += seat_ops.len();
        let mut s = Searcher {
            ops: &seat_ops,
            seen: HashSet::new(),
            steps: 0,
            budget,
        };
        let result = s.search(St::Available, vec![0; seat_ops.len().div_ceil(64)]);
        steps += s.steps;
        match result {
            Search::Found => {}
            Search::Refuted => {
                let mut lines: Vec<usize> = seat_ops.iter().map(|o| o.at + 1).collect();
                lines.sort();
                let shown = match lines.as_slice() {
                    [a, .., b] if lines.len() > 8 => format!("lines {a}..={b}"),
                    l => format!("lines {l:?}"),
                };
                violations.push(format!(
                    "event {event} seat {seat}: no linearization of its {} operations ({shown}; check them with `jepsen check`)",
                    seat_ops.len()
                ));
            }
            Search::Budget => undecided.push(format!(
                "event {event} seat {seat}: search budget of {budget} steps exhausted"
            )),
        }
    }
    Verdict {
        checker: "per-seat linearizability",
        violations,
        undecided,
        notes: vec![format!(
            "{seats} seats, {checked} seat operations, {steps} search steps"
        )],
    }
}
