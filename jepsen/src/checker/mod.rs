//! Checkers over a history. Each reports every violation it finds.

pub mod linearizable;
pub mod sales;

/// One checker's result.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub checker: &'static str,
    /// Violations, each explained with the operations involved.
    pub violations: Vec<String>,
    /// What could not be decided (e.g. a search budget exhausted): not a pass.
    pub undecided: Vec<String>,
}

impl Verdict {
    pub fn valid(&self) -> bool {
        self.violations.is_empty() && self.undecided.is_empty()
    }
}

/// Runs every checker.
pub fn check_all(ops: &[crate::history::Op]) -> Vec<Verdict> {
    vec![
        sales::no_double_sale(ops),
        sales::acked_confirms_survive(ops),
        linearizable::per_seat(ops, linearizable::SEARCH_STEPS_MAX),
    ]
}
