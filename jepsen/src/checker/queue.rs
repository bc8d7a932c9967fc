//! Checkers of the waiting-room workload (`crate::queue`), over what the users
//! saw and the queue's final state:
//!
//! - [`joins_survive`]: every acknowledged join is in the final state with the
//!   ticket it was answered, and no two users share a ticket.
//! - [`admitted_once`]: positions are a permutation of `1..=joined`, and each
//!   user was admitted at one time only (every observation agrees).
//! - [`admission_order`]: the admitted users are exactly the first positions,
//!   admitted in position order; a user who joined after the start is at
//!   `ticket + 1`; and no replica state (log index) showed a user waiting at
//!   or after the state that showed someone behind them admitted.
//! - [`admission_rate`]: no minute admits more than the configured rate (plus
//!   the credit a queue may bank), and open sessions never exceed `active_max`.
//! - [`holds_need_admission`]: no hold on the queue's event succeeded without
//!   the user's own admission, nor outside their admitted session.
//! - [`prequeue_shuffled`]: in a shuffled queue, the pre-queue's positions do
//!   not follow join order (Spearman's rank correlation near 0).

use std::collections::{BTreeMap, BTreeSet};

use super::Verdict;

/// Where a user ended up.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FinalPlace {
    pub ticket: u64,
    pub position: Option<u64>,
    /// `prequeue`, `waiting`, `admitted`, `expired`, `done`, `open`.
    pub phase: String,
    pub admitted_at_ms: Option<u64>,
    /// When the admitted session ended (or will end).
    pub session_ends_at_ms: Option<u64>,
}

/// One read of a user's place, with the client's invoke and completion times.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub user: String,
    pub start_us: u64,
    pub end_us: u64,
    /// The applied log index of the replica that answered: every replica of
    /// the shard applies the same log, so equal indices are the same state.
    pub applied_index: u64,
    pub phase: String,
    pub position: Option<u64>,
    pub admitted_at_ms: Option<u64>,
}

/// Which admission a hold carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdmissionUsed {
    None,
    Own,
    /// Another user's token.
    Other,
}

/// One hold attempt on the queue's event.
#[derive(Clone, Debug, PartialEq)]
pub struct HoldAttempt {
    pub user: String,
    pub admission: AdmissionUsed,
    pub ok: bool,
    /// State-machine time the hold applied at (when it succeeded).
    pub applied_time_ms: Option<u64>,
}

/// Everything the checkers look at.
#[derive(Clone, Debug, Default)]
pub struct QueueFacts {
    pub admit_per_minute: u32,
    pub active_max: u32,
    /// True when the pre-queue is shuffled (`random_prequeue`).
    pub shuffled: bool,
    /// Joins before the sale started (once it has).
    pub prequeue: Option<u64>,
    /// Users whose join was answered, with the ticket answered.
    pub acked_joins: BTreeMap<String, u64>,
    /// Every user found in the final state.
    pub final_places: BTreeMap<String, FinalPlace>,
    pub observations: Vec<Observation>,
    pub holds: Vec<HoldAttempt>,
}

fn verdict(checker: &'static str) -> Verdict {
    Verdict {
        checker,
        violations: Vec::new(),
        undecided: Vec::new(),
        notes: Vec::new(),
    }
}

fn admitted(p: &FinalPlace) -> bool {
    matches!(p.phase.as_str(), "admitted" | "expired" | "done")
}

/// Every acknowledged join survives, with its ticket; tickets are distinct.
pub fn joins_survive(f: &QueueFacts) -> Verdict {
    let mut v = verdict("queue-joins");
    for (user, ticket) in &f.acked_joins {
        match f.final_places.get(user) {
            None => v.violations.push(format!(
                "{user}'s acknowledged join (ticket {ticket}) is lost"
            )),
            Some(p) if p.ticket != *ticket => v.violations.push(format!(
                "{user} was answered ticket {ticket} and holds ticket {} now",
                p.ticket
            )),
            Some(_) => {}
        }
    }
    let mut by_ticket: BTreeMap<u64, Vec<&String>> = BTreeMap::new();
    for (u, p) in &f.final_places {
        by_ticket.entry(p.ticket).or_default().push(u);
    }
    for (t, users) in by_ticket.iter().filter(|(_, u)| u.len() > 1) {
        v.violations
            .push(format!("ticket {t} is held by {users:?}"));
    }
    v.notes.push(format!(
        "{} joins acknowledged, {} places in the final state",
        f.acked_joins.len(),
        f.final_places.len()
    ));
    v
}

/// Positions are a permutation, and nobody is admitted twice.
pub fn admitted_once(f: &QueueFacts) -> Verdict {
    let mut v = verdict("queue-admitted-once");
    if f.prequeue.is_some() {
        let positions: Vec<u64> = f.final_places.values().filter_map(|p| p.position).collect();
        let set: BTreeSet<u64> = positions.iter().copied().collect();
        let n = f.final_places.len() as u64;
        if positions.len() as u64 != n || set != (1..=n).collect() {
            v.violations.push(format!(
                "the positions of {n} places are not 1..={n}: {positions:?}"
            ));
        }
    }
    let mut times: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for o in &f.observations {
        if let Some(t) = o.admitted_at_ms {
            times.entry(&o.user).or_default().insert(t);
        }
    }
    for (u, p) in &f.final_places {
        if let Some(t) = p.admitted_at_ms {
            times.entry(u).or_default().insert(t);
        }
    }
    for (u, ts) in times.iter().filter(|(_, ts)| ts.len() > 1) {
        v.violations
            .push(format!("{u} was admitted more than once: at {ts:?}"));
    }
    v
}

/// Admission follows position order.
pub fn admission_order(f: &QueueFacts) -> Verdict {
    let mut v = verdict("queue-order");
    let mut by_pos: BTreeMap<u64, (&String, &FinalPlace)> = BTreeMap::new();
    for (u, p) in &f.final_places {
        if let Some(pos) = p.position {
            by_pos.insert(pos, (u, p));
        }
    }
    // The admitted set is a prefix of the positions, in admission-time order.
    let mut gap: Option<u64> = None;
    let mut last: Option<(u64, u64)> = None;
    for (&pos, (u, p)) in &by_pos {
        if admitted(p) {
            if let Some(g) = gap {
                v.violations.push(format!(
                    "{u} at position {pos} is admitted and position {g} is not"
                ));
            }
            if let (Some(t), Some((lp, lt))) = (p.admitted_at_ms, last) {
                if t < lt {
                    v.violations.push(format!(
                        "{u} at position {pos} was admitted at {t}, before position {lp} (at {lt})"
                    ));
                }
            }
            if let Some(t) = p.admitted_at_ms {
                last = Some((pos, t));
            }
        } else if gap.is_none() {
            gap = Some(pos);
        }
    }
    // After the start, the back of the queue is in join (commit) order.
    if let Some(pre) = f.prequeue {
        for (u, p) in &f.final_places {
            if p.ticket >= pre && p.position.is_some_and(|pos| pos != p.ticket + 1) {
                v.violations.push(format!(
                    "{u} joined after the start (ticket {}) and is at position {:?}",
                    p.ticket, p.position
                ));
            }
        }
    }
    // Replica states: someone seen admitted at log index j, and someone ahead
    // of them seen waiting at an index >= j. (Reads are served by any replica,
    // so a lagging one may show an earlier state after a fresher one did:
    // the log index, not real time, orders what was seen.)
    let pos_of: BTreeMap<&str, u64> = f
        .final_places
        .iter()
        .filter_map(|(u, p)| p.position.map(|pos| (u.as_str(), pos)))
        .collect();
    let mut admitted_seen: Vec<(u64, u64, &str)> = f
        .observations
        .iter()
        .filter(|o| matches!(o.phase.as_str(), "admitted" | "expired" | "done"))
        .filter_map(|o| {
            pos_of
                .get(o.user.as_str())
                .map(|&p| (o.applied_index, p, o.user.as_str()))
        })
        .collect();
    admitted_seen.sort();
    for o in f.observations.iter().filter(|o| o.phase == "waiting") {
        let Some(&pa) = pos_of.get(o.user.as_str()) else {
            continue;
        };
        // Any admission of someone behind `o.user` completed before `o` began?
        if let Some((end, pb, ub)) = admitted_seen
            .iter()
            .take_while(|(at, _, _)| *at <= o.applied_index)
            .find(|(_, pb, _)| *pb > pa)
        {
            v.violations.push(format!(
                "{ub} (position {pb}) was seen admitted at log index {end}, and {} (position {pa}) was seen waiting at index {}, a state as late or later",
                o.user, o.applied_index
            ));
            break;
        }
    }
    let n = by_pos.values().filter(|(_, p)| admitted(p)).count();
    v.notes
        .push(format!("{n} of {} users admitted", by_pos.len()));
    v
}

/// The rate and `active_max` hold.
pub fn admission_rate(f: &QueueFacts) -> Verdict {
    let mut v = verdict("queue-rate");
    let rate = u64::from(f.admit_per_minute);
    // A queue banks at most 5 s of its rate (and at least one user's worth).
    let bound = rate + (rate * 5 / 60).max(1) + 1;
    let mut at: Vec<u64> = f
        .final_places
        .values()
        .filter_map(|p| p.admitted_at_ms)
        .collect();
    at.sort_unstable();
    for (i, &t) in at.iter().enumerate() {
        let n = at[i..].iter().take_while(|&&u| u < t + 60_000).count() as u64;
        if n > bound {
            v.violations.push(format!(
                "{n} admitted in the minute from {t} ms; the rate is {rate} a minute"
            ));
            break;
        }
    }
    let sessions: Vec<(u64, u64)> = f
        .final_places
        .values()
        .filter_map(|p| Some((p.admitted_at_ms?, p.session_ends_at_ms?)))
        .collect();
    for &(t, _) in &sessions {
        let open = sessions.iter().filter(|(a, e)| *a <= t && *e > t).count() as u64;
        if open > u64::from(f.active_max) {
            v.violations.push(format!(
                "{open} sessions open at {t} ms; active_max is {}",
                f.active_max
            ));
            break;
        }
    }
    if let (Some(first), Some(last)) = (at.first(), at.last()) {
        if last > first {
            v.notes.push(format!(
                "{} admitted over {:.1} s ({:.1} a minute; configured {rate})",
                at.len(),
                (last - first) as f64 / 1000.0,
                at.len() as f64 * 60_000.0 / (last - first) as f64
            ));
        }
    }
    v
}

/// No hold without the user's own admission, within their session.
pub fn holds_need_admission(f: &QueueFacts) -> Verdict {
    let mut v = verdict("queue-holds");
    for h in f.holds.iter().filter(|h| h.ok) {
        match h.admission {
            AdmissionUsed::None => v
                .violations
                .push(format!("{} held without an admission", h.user)),
            AdmissionUsed::Other => v
                .violations
                .push(format!("{} held with another user's admission", h.user)),
            AdmissionUsed::Own => {
                let p = f.final_places.get(&h.user);
                let window = p.and_then(|p| Some((p.admitted_at_ms?, p.session_ends_at_ms?)));
                match (window, h.applied_time_ms) {
                    (Some((a, e)), Some(t)) if t >= a && t <= e => {}
                    (w, t) => v.violations.push(format!(
                        "{}'s hold applied at {t:?} outside their session {w:?}",
                        h.user
                    )),
                }
            }
        }
    }
    let refused = f.holds.iter().filter(|h| !h.ok).count();
    v.notes.push(format!(
        "{} holds made with an admission, {refused} refused",
        f.holds.iter().filter(|h| h.ok).count()
    ));
    v
}

/// Spearman's rank correlation of join order and position over the pre-queue.
pub fn spearman(pairs: &[(u64, u64)]) -> f64 {
    let rank = |mut xs: Vec<(u64, usize)>| {
        xs.sort();
        let mut r = vec![0.0; xs.len()];
        for (rank, (_, i)) in xs.into_iter().enumerate() {
            r[i] = rank as f64;
        }
        r
    };
    let a = rank(pairs.iter().enumerate().map(|(i, p)| (p.0, i)).collect());
    let b = rank(pairs.iter().enumerate().map(|(i, p)| (p.1, i)).collect());
    let n = pairs.len() as f64;
    let d2: f64 = a.iter().zip(&b).map(|(x, y)| (x - y).powi(2)).sum();
    1.0 - 6.0 * d2 / (n * (n * n - 1.0))
}

/// The pre-queue's order does not depend on join time.
pub fn prequeue_shuffled(f: &QueueFacts) -> Verdict {
    let mut v = verdict("queue-prequeue-order");
    let Some(pre) = f.prequeue else {
        v.notes.push("the sale did not start".into());
        return v;
    };
    let pairs: Vec<(u64, u64)> = f
        .final_places
        .values()
        .filter(|p| p.ticket < pre)
        .filter_map(|p| Some((p.ticket, p.position?)))
        .collect();
    if !f.shuffled || pairs.len() < 10 {
        v.notes.push(format!(
            "{} pre-queue users (shuffled: {}): not tested",
            pairs.len(),
            f.shuffled
        ));
        return v;
    }
    let rho = spearman(&pairs);
    // A random order's rho has a standard error of 1/sqrt(n-1): 4 of them is
    // a false alarm about once in 30,000 runs.
    let limit = 4.0 / ((pairs.len() - 1) as f64).sqrt();
    if rho.abs() >= limit.min(0.9) {
        v.violations.push(format!(
            "pre-queue positions follow join order: Spearman rho {rho:.2} over {} users (limit {limit:.2})",
            pairs.len()
        ));
    }
    v.notes.push(format!(
        "pre-queue of {}: Spearman rho of join order and position {rho:.2}",
        pairs.len()
    ));
    v
}

/// Every queue checker.
pub fn check(f: &QueueFacts) -> Vec<Verdict> {
    vec![
        joins_survive(f),
        admitted_once(f),
        admission_order(f),
        admission_rate(f),
        holds_need_admission(f),
        prequeue_shuffled(f),
    ]
}
