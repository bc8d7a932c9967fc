//! Follower (local) reads against their documented guarantee: a replica answers
//! only while its applied time is within `limits.replica_staleness_ms_max` of its
//! clock (bounded staleness); what it shows is the state after exactly the log
//! prefix it names (consistent prefix: each seat's status equals the replay of
//! the writes up to the read's applied index, expiry judged at its `as_of`); and
//! one client reading one node never sees that node's applied index go back
//! (monotonic per session).

use std::collections::BTreeMap;

use super::seat_log::{seat_logs, State};
use super::Verdict;
use crate::history::{Call, Op, Outcome, SeatStatus};

pub fn follower_reads(ops: &[Op], staleness_ms_max: u64) -> Verdict {
    let mut violations = Vec::new();
    let logs = seat_logs(ops);
    let mut last: BTreeMap<(u64, u64, u16), (u64, usize)> = BTreeMap::new();
    let mut reads: Vec<(usize, &Op)> = ops
        .iter()
        .enumerate()
        .filter(|(_, o)| {
            o.outcome == Outcome::Ok
                && matches!(
                    o.call,
                    Call::Read {
                        linearizable: false,
                        ..
                    }
                )
        })
        .collect();
    reads.sort_by_key(|(_, o)| o.invoke_us);
    let mut checked_seats = 0usize;
    for (i, o) in reads {
        let line = i + 1;
        let Call::Read { event, .. } = o.call else {
            continue;
        };
        let Some(f) = o.answer.freshness else {
            continue;
        };
        let lag = f.clock_ms.max(f.as_of_ms).saturating_sub(f.applied_time_ms);
        if lag > staleness_ms_max {
            violations.push(format!(
                "line {line}: node {} served event {event} {lag} ms behind its clock (limit {staleness_ms_max} ms)",
                f.node
            ));
        }
        let session = (o.process, f.node, f.shard);
        if let Some((prev, prev_line)) = last.get(&session) {
            if f.applied_index < *prev {
                violations.push(format!(
                    "line {line}: process {} saw node {}'s shard {} at index {} after index {prev} (line {prev_line})",
                    o.process, f.node, f.shard, f.applied_index
                ));
            }
        }
        last.insert(session, (f.applied_index, line));
        for (seat, status) in &o.answer.statuses {
            let Some(log) = logs.get(&(event, *seat)) else {
                // Never written: must be available.
                if *status != SeatStatus::Available {
                    violations.push(format!(
                        "line {line}: event {event} seat {seat} shown {status:?} but nothing was ever written to it"
                    ));
                }
                continue;
            };
            if !log.unknown_holds.is_empty() || !log.unknown_ends.is_empty() || log.unplaced > 0 {
                continue;
            }
            let mut state = State::Available;
            for w in log.writes.iter().take_while(|w| w.index <= f.applied_index) {
                state.apply(&w.write, w.time);
            }
            let expected = match state.at(f.as_of_ms) {
                State::Available => SeatStatus::Available,
                State::Held { .. } => SeatStatus::Held,
                State::Sold { .. } => SeatStatus::Sold,
            };
            checked_seats += 1;
            if expected != *status {
                violations.push(format!(
                    "line {line}: node {} showed event {event} seat {seat} {status:?} at index {} (as of {}), but the writes up to that index make it {expected:?}",
                    f.node, f.applied_index, f.as_of_ms
                ));
            }
        }
    }
    Verdict {
        checker: "follower reads: bounded staleness, consistent prefix, monotonic per session",
        violations,
        undecided: Vec::new(),
        notes: vec![format!(
            "{checked_seats} seat statuses checked against the log prefix"
        )],
    }
}
