//! The node's integration tests: one test binary, a module per capability.
//!
//! Cluster tests start real `boxoffice node` processes on loopback ports the OS
//! finds free (through the node's own launcher), each cluster in a temporary
//! directory whose processes end with the test; route tests drive one node's
//! router in-process, without a socket. Every load loop is bounded in count and
//! in time.

mod abuse;
mod backup;
mod booking;
mod ctl;
mod docs;
mod faults;
mod features;
mod listeners;
mod logs;
mod membership;
mod metrics;
mod payments;
mod placement;
mod queue;
mod routes;
mod search;
mod snapshots;
mod streams;
mod support;
mod upgrade;
