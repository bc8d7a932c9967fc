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

/// A shard's state machine on a RocksDB in a temporary directory, applying
/// one entry at a time (the scenario and property tests drive it).
pub struct TestMachine {
    _dir: tempfile::TempDir,
    /// The state machine.
    pub sm: crate::StateMachineStore,
    /// Reads of its applied state.
    pub reader: crate::read::Reader,
    /// The last log index applied.
    pub index: u64,
    rt: tokio::runtime::Runtime,
}

impl TestMachine {
    /// A fresh, empty state machine of `group`.
    pub fn open(group: boxoffice_raft::GroupId) -> TestMachine {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a test runtime");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let db = crate::Db::open(dir.path(), &Default::default()).expect("a test database");
        let sm = crate::StateMachineStore::open(
            db,
            group,
            &dir.path().join("snap"),
            &Default::default(),
        )
        .expect("a test state machine");
        TestMachine {
            _dir: dir,
            reader: sm.reader(),
            sm,
            index: 0,
            rt,
        }
    }

    /// Applies `command` alone in the next entry, stamped `stamp`, with the
    /// session (client, key) if given; its result.
    pub fn apply_as(
        &mut self,
        stamp: u64,
        session: Option<(&str, &str)>,
        command: Command,
    ) -> Result<boxoffice_raft::command::Effect, boxoffice_raft::command::Rejection> {
        use openraft::storage::RaftStateMachine;
        self.index += 1;
        let e = normal(self.index, request(stamp, session, command));
        let out = self
            .rt
            .block_on(self.sm.apply([e]))
            .expect("apply of a test entry");
        out[0].result.clone()
    }
}
