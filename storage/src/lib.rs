//! Storage of boxoffice: one RocksDB per node, shared by every Raft group on it.
//!
//! - [`files`]: directory entries made durable (parent fsyncs).
//! - [`inspect`]: what a data directory's Raft logs hold, read offline.
//! - [`db`]: opening the database, its column families, and the WAL syncer that
//!   makes appended log entries durable (fsync) with group commit across groups.
//! - [`keys`]: byte layouts of every key.
//! - [`log_store`]: openraft's `RaftLogStorage` for one group.
//! - [`records`]: the stored record types, versioned (see `boxoffice_raft::codec`).
//! - [`machine`]: the booking state machine as a pure function of (state, entry),
//!   a module per concern behind `apply_entry`.
//! - [`kv`]: the key-value seam the machine runs on (RocksDB batch with overlay, or
//!   an in-memory map in tests).
//! - [`memory`]: a group's records in memory, when the state machine is kept
//!   there (`storage.state_machine = "memory"`), persisted by the log and snapshots.
//! - [`state_machine`]: openraft's `RaftStateMachine` for one group, and snapshots.
//! - [`backup`]: restoring a group from a backup (an exported snapshot file)
//!   into an empty data directory.
//! - [`read`]: read-only views of applied state for the node's query paths.
//! - [`testing`]: builders of log entries for tests and benchmarks.
//!
//! Storage knows nothing about HTTP. Apply never reads a clock.

pub mod backup;
pub mod db;
pub mod files;
pub mod inspect;
pub mod keys;
pub mod kv;
pub mod log_store;
pub mod machine;
pub mod memory;
pub mod metrics;
pub mod read;
pub mod records;
pub mod state_machine;
pub mod testing;

pub use db::{Db, StateMachineBackend, StorageSettings};
pub use log_store::LogStore;
pub use state_machine::StateMachineStore;

/// Errors of the storage layer that callers can act on.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// RocksDB reported an error (I/O, corruption detected by RocksDB).
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// File system error (snapshots).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A stored value could not be decoded.
    #[error("codec: {0}")]
    Codec(#[from] boxoffice_raft::codec::CodecError),
    /// A snapshot file is damaged or not a snapshot.
    #[error("bad snapshot: {0}")]
    BadSnapshot(String),
    /// The group's state is at a feature level this build does not apply.
    #[error(
        "group {group} is at feature level {level}, and this build applies levels up to {}: run a release that knows it",
        boxoffice_raft::command::FEATURE_LEVEL_MAX
    )]
    FeatureLevel {
        /// The group.
        group: u16,
        /// Its level.
        level: u32,
    },
}

/// Converts any error into openraft's storage error, tagged as a read or write of `subject`.
pub(crate) fn sto_err(
    subject: openraft::ErrorSubject<boxoffice_raft::NodeId>,
    verb: openraft::ErrorVerb,
    e: impl std::error::Error + 'static,
) -> openraft::StorageError<boxoffice_raft::NodeId> {
    openraft::StorageIOError::new(subject, verb, openraft::AnyError::new(&e)).into()
}
