//! Liveness: after the final heal (every fault ended), the cluster grants a hold
//! and confirms it again within a bound.

use super::Verdict;
use crate::history::{Call, Op, Outcome, FINAL_HEAL};

pub fn recovers_after_heal(ops: &[Op], bound_ms: u64) -> Verdict {
    let mut violations = Vec::new();
    let mut notes = Vec::new();
    let heal = ops.iter().find_map(|o| match &o.call {
        Call::Nemesis { fault } if fault == FINAL_HEAL && o.outcome == Outcome::Ok => o.complete_us,
        _ => None,
    });
    match heal {
        None => notes.push("no final heal in the history; not judged".to_string()),
        Some(healed) => {
            let first = |f: &dyn Fn(&Call) -> bool| {
                ops.iter()
                    .filter(|o| o.outcome == Outcome::Ok && o.invoke_us >= healed && f(&o.call))
                    .filter_map(|o| o.complete_us)
                    .min()
            };
            let hold = first(&|c| matches!(c, Call::Hold { .. }));
            let confirm = first(&|c| matches!(c, Call::Confirm { .. }));
            match (hold, confirm) {
                (Some(h), Some(c)) => {
                    let ms = (h.max(c) - healed) / 1000;
                    notes.push(format!(
                        "hold and confirm served {ms} ms after the final heal"
                    ));
                    if ms > bound_ms {
                        violations.push(format!(
                            "holds and confirms resumed {ms} ms after the final heal (bound {bound_ms} ms)"
                        ));
                    }
                }
                _ => violations.push(format!(
                    "no hold and confirm succeeded after the final heal (bound {bound_ms} ms)"
                )),
            }
        }
    }
    Verdict {
        checker: "liveness after the final heal",
        violations,
        undecided: Vec::new(),
        notes,
    }
}
