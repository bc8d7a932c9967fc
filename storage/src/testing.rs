//! Builders of log entries for tests and benchmarks of the state machine: one
//! way to make them, so a change to the entry type is made once.

use boxoffice_raft::command::{Command, Request, Session};
use boxoffice_raft::{Entry, LogId, TypeConfig};
use openraft::{CommittedLeaderId, EntryPayload};

/// The log id of `index` in term 1, led by node 1.
pub fn log_id(index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

/// An entry at `index` with `payload`.
pub fn entry(index: u64, payload: EntryPayload<TypeConfig>) -> Entry {
    Entry {
        log_id: log_id(index),
        payload,
    }
}

/// A normal entry at `index` carrying `request`.
pub fn normal(index: u64, request: Request) -> Entry {
    entry(index, EntryPayload::Normal(request))
}

/// A request stamped `stamp_ms`, with a session of (`client`, `key`) when given.
pub fn request(stamp_ms: u64, session: Option<(&str, &str)>, command: Command) -> Request {
    Request {
        stamp_ms,
        session: session.map(|(client_id, key)| Session {
            client_id: client_id.to_string(),
            idempotency_key: key.to_string(),
        }),
        command,
    }
}
