//! Backups of a group's state, and restoring one into an empty data directory.
//!
//! A backup of a group is a snapshot file of its applied state
//! ([`StateMachineStore::export`](crate::StateMachineStore::export)): the same
//! format, checksum and header (group, last log id, membership) as the
//! snapshots Raft sends between replicas. Restoring writes it as the group's
//! current snapshot in a node's data directory with the *new* cluster's
//! membership, and sets the group's log to "everything up to the backup's index
//! is purged": the node then starts as if it had taken that snapshot itself,
//! and the new members elect a leader among themselves.

use std::fs;
use std::path::Path;

use boxoffice_raft::{codec, GroupId, LogId, NodeId, SnapshotMeta, StoredMembership};
use openraft::{BasicNode, Vote};

/// A group's members, as a restore gives them.
pub type Membership = openraft::Membership<NodeId, BasicNode>;
use rocksdb::WriteBatch;

use crate::db::{Db, CF_LOG, CF_META};
use crate::keys::{self, meta, table, Key};
use crate::records::meta::SmMeta;
use crate::state_machine::{current_snapshot_path, group_dir, read_snapshot_file, SnapshotWriter};
use crate::StorageError;

/// What a restore put in place for one group.
#[derive(Clone, Debug)]
pub struct Restored {
    /// The group.
    pub group: GroupId,
    /// The log id the group's state is at.
    pub last_log_id: LogId,
}

/// Restores `group` from the backup file `src` into `db` and the snapshot
/// directory `snapshot_root`, with `membership` as its members. Refuses a file
/// that is damaged, of another group or of a group never initialised, and a
/// data directory that already holds the group (any log, vote or snapshot).
/// Everything is fsynced before it returns.
pub fn restore_group(
    db: &Db,
    snapshot_root: &Path,
    group: GroupId,
    src: &Path,
    membership: Membership,
) -> Result<Restored, StorageError> {
    let bad = |m: String| StorageError::BadSnapshot(format!("{}: {m}", src.display()));
    let (file_group, file_meta) = crate::state_machine::verify_file(src)?;
    if file_group != group.0 {
        return Err(bad(format!(
            "holds group {file_group}, not group {}",
            group.0
        )));
    }
    let Some(last_log_id) = file_meta.last_log_id else {
        return Err(bad("the group had applied nothing".into()));
    };
    if holds_group(db, snapshot_root, group)? {
        return Err(StorageError::BadSnapshot(format!(
            "the data directory already holds group {}: restore only into an empty one",
            group.0
        )));
    }

    let dir = group_dir(snapshot_root, group);
    crate::files::create_dir_durable(&dir)?;
    let tmp = dir.join("restoring.tmp");
    let meta_key = Key::sm(group, table::META).build();
    let prefix_len = Key::group(group).build().len();
    let meta_rel = meta_key[prefix_len..].to_vec();
    // The new members, at the log id the old ones were applied (the header's
    // membership is the meta record's, as `export` writes them).
    let stored = StoredMembership::new(file_meta.last_membership.log_id().to_owned(), membership);
    let new_meta = SnapshotMeta {
        last_log_id: Some(last_log_id),
        last_membership: stored.clone(),
        snapshot_id: format!(
            "{}-{}-{}-restored",
            group.0, last_log_id.leader_id.term, last_log_id.index
        ),
    };
    let mut w = SnapshotWriter::create(&tmp, group, &new_meta)?;
    // The records are copied as they come, except the group's bookkeeping,
    // which gets the new members, and the placement directory's nodes and
    // groups, which described the old cluster (the new cluster's leaders
    // write them again from their memberships; the policy is kept).
    let mut meta_seen = false;
    let copied = read_snapshot_file(src, |k, v| {
        let placement = matches!(
            k.first().copied(),
            Some(table::PLACEMENT_NODE | table::PLACEMENT_GROUP)
        );
        if placement {
            return Ok(());
        }
        if k != meta_rel {
            return Ok(w.record(&k, &v)?);
        }
        let mut m: SmMeta = codec::decode(&v)?;
        if m.last_applied != Some(last_log_id)
            || m.membership.log_id() != file_meta.last_membership.log_id()
        {
            return Err(bad(
                "the state-machine meta record does not match the file's header".into(),
            ));
        }
        m.membership = stored.clone();
        meta_seen = true;
        Ok(w.record(&k, &codec::encode(&m))?)
    });
    if let Err(e) = copied {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if !meta_seen {
        let _ = fs::remove_file(&tmp);
        return Err(bad("no state-machine meta record".into()));
    }
    w.finish()?;
    fs::rename(&tmp, current_snapshot_path(&dir))?;
    fs::File::open(&dir)?.sync_all()?;

    // The log: everything up to the snapshot is purged (so committed), and the
    // vote is at the snapshot's term, for the entry's own leader and not
    // committed: the new members elect a leader at a later term, and no node
    // starts as leader.
    let mut batch = WriteBatch::default();
    let vote = Vote::new(last_log_id.leader_id.term, last_log_id.leader_id.node_id);
    batch.put_cf(
        db.cf(CF_META),
        keys::meta(group.0, meta::VOTE),
        codec::encode(&vote),
    );
    batch.put_cf(
        db.cf(CF_META),
        keys::meta(group.0, meta::PURGED),
        codec::encode(&last_log_id),
    );
    batch.put_cf(
        db.cf(CF_META),
        keys::meta(group.0, meta::COMMITTED),
        codec::encode(&Some(last_log_id)),
    );
    db.write_sync(batch)?;
    Ok(Restored { group, last_log_id })
}

/// True when the data directory holds anything of `group`: a vote, a purge
/// mark, a log entry or a snapshot file.
fn holds_group(db: &Db, snapshot_root: &Path, group: GroupId) -> Result<bool, StorageError> {
    let raw = db.raw();
    for kind in [meta::VOTE, meta::PURGED, meta::COMMITTED] {
        if raw
            .get_cf(db.cf(CF_META), keys::meta(group.0, kind))?
            .is_some()
        {
            return Ok(true);
        }
    }
    let start = keys::log(group, 0);
    let mut it = raw.iterator_cf(
        db.cf(CF_LOG),
        rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward),
    );
    if let Some(item) = it.next() {
        let (k, _) = item?;
        if k.len() == start.len() && k[..2] == group.0.to_be_bytes() {
            return Ok(true);
        }
    }
    Ok(current_snapshot_path(&group_dir(snapshot_root, group)).exists())
}
