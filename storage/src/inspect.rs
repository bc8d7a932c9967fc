//! What a node's data directory holds of each Raft group's log, read offline
//! (the node must not be running): the saved vote, the last log id, the
//! purged log id and the saved committed log id. The fault harness reads it
//! after a simulated power cut, before the node restarts and catches up, to
//! check that no replica came back with less than it had acknowledged.

use std::collections::BTreeMap;
use std::path::Path;

use boxoffice_raft::{GroupId, LogId, NodeId};
use openraft::storage::{RaftLogReader, RaftLogStorage};
use openraft::Vote;
use serde::Serialize;

use crate::db::{Db, CF_META};
use crate::keys::{meta, NODE_GROUP};
use crate::{LogStore, StorageError, StorageSettings};

/// One group's log as a restart would find it.
#[derive(Clone, Debug, Serialize)]
pub struct RecoveredLog {
    /// The group.
    pub group: u16,
    /// The saved vote's term (0: none saved).
    pub vote_term: u64,
    /// Whom the saved vote is for, if anyone.
    pub voted_for: Option<NodeId>,
    /// Whether the saved vote is committed (the node knew a leader of that term).
    pub vote_committed: bool,
    /// Index of the last entry (or of the purged id when every entry is purged).
    pub last_index: Option<u64>,
    /// Term of the last entry.
    pub last_term: Option<u64>,
    /// Index of the last purged entry.
    pub purged_index: Option<u64>,
    /// The saved committed index (saved without fsync: may be behind).
    pub committed_index: Option<u64>,
}

/// Opens the database under `data_dir` (as a restart would: RocksDB replays
/// its WAL) and reads every group's log state.
pub fn recovered_logs(data_dir: &Path) -> Result<BTreeMap<u16, RecoveredLog>, StorageError> {
    let db = Db::open(data_dir, &StorageSettings::default())?;
    let mut groups: Vec<u16> = Vec::new();
    for item in db
        .raw()
        .iterator_cf(db.cf(CF_META), rocksdb::IteratorMode::Start)
    {
        let (key, _) = item?;
        if key.len() == 3 && key[2] == meta::VOTE {
            let g = u16::from_be_bytes([key[0], key[1]]);
            if g != NODE_GROUP {
                groups.push(g);
            }
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let mut out = BTreeMap::new();
    for g in groups {
        let mut store = LogStore::new(db.clone(), GroupId(g));
        let read = rt.block_on(async {
            let vote: Option<Vote<NodeId>> = store.read_vote().await?;
            let state = store.get_log_state().await?;
            let committed = store.read_committed().await?;
            // The last entry itself, so a log whose tail is damaged is seen.
            let last = match state.last_log_id {
                Some(l) if Some(l) != state.last_purged_log_id => store
                    .try_get_log_entries(l.index..=l.index)
                    .await?
                    .first()
                    .map(|e| e.log_id),
                other => other,
            };
            Ok::<_, openraft::StorageError<NodeId>>((
                vote,
                state.last_purged_log_id,
                last,
                committed,
            ))
        });
        let (vote, purged, last, committed): (
            Option<Vote<NodeId>>,
            Option<LogId>,
            Option<LogId>,
            Option<LogId>,
        ) = read.map_err(|e| std::io::Error::other(format!("group {g}: {e}")))?;
        out.insert(
            g,
            RecoveredLog {
                group: g,
                vote_term: vote.map(|v| v.leader_id().term).unwrap_or(0),
                voted_for: vote.and_then(|v| v.leader_id().voted_for()),
                vote_committed: vote.map(|v| v.is_committed()).unwrap_or(false),
                last_index: last.map(|l| l.index),
                last_term: last.map(|l| l.leader_id.term),
                purged_index: purged.map(|l| l.index),
                committed_index: committed.map(|l| l.index),
            },
        );
    }
    Ok(out)
}
