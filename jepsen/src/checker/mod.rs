//! Checkers over a history. Each reports every violation it finds.

pub mod caps;
pub mod follower;
pub mod holds;
pub mod linearizable;
pub mod liveness;
pub mod payments;
pub mod queue;
pub mod sales;
pub mod seat_log;

/// One checker's result.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub checker: &'static str,
    /// Violations, each explained with the operations involved.
    pub violations: Vec<String>,
    /// What could not be decided (e.g. a search budget exhausted): not a pass.
    pub undecided: Vec<String>,
    /// Figures worth reporting (what was checked, how long recovery took).
    pub notes: Vec<String>,
}

impl Verdict {
    pub fn valid(&self) -> bool {
        self.violations.is_empty() && self.undecided.is_empty()
    }
}

/// What the checkers need to know about the run.
#[derive(Clone, Copy, Debug)]
pub struct CheckConfig {
    /// Per-user cap of every event in the run.
    pub per_user_cap: u32,
    /// The nodes' `limits.replica_staleness_ms_max`.
    pub staleness_ms_max: u64,
    /// Time after the final heal by which holds and confirms must succeed again.
    pub recovery_ms_max: u64,
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig {
            per_user_cap: 4,
            staleness_ms_max: 5000,
            recovery_ms_max: 30_000,
        }
    }
}

/// Runs every checker.
pub fn check_all(ops: &[crate::history::Op], config: &CheckConfig) -> Vec<Verdict> {
    vec![
        sales::no_double_sale(ops),
        sales::acked_confirms_survive(ops),
        holds::holds_mean_what_they_say(ops),
        linearizable::per_seat(ops, linearizable::SEARCH_STEPS_MAX),
        follower::follower_reads(ops, config.staleness_ms_max),
        caps::per_user_caps(ops, config.per_user_cap),
        liveness::recovers_after_heal(ops, config.recovery_ms_max),
    ]
}
