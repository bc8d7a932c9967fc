//! Fault injection and linearizability checking for boxoffice.
//!
//! `history` is the recorded form of what clients invoked and saw; `checker`
//! holds the checkers, each able to fail and each tested against hand-written
//! histories with known violations. `net`, `nemesis`, `workload` and `run`
//! attack real node processes, started by the node's own launcher
//! (`boxoffice_node::local_cluster`), and record such histories.

pub mod checker;
pub mod history;
pub mod nemesis;
pub mod net;
pub mod payments;
pub mod power;
pub mod powerfs;
pub mod queue;
pub mod run;
pub mod workload;
