//! Fault injection and linearizability checking for boxoffice.
//!
//! `history` is the recorded form of what clients invoked and saw; `checker`
//! holds the checkers, each able to fail and each tested against hand-written
//! histories with known violations.

pub mod checker;
pub mod history;
