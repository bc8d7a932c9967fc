//! openraft's own storage test suite against the RocksDB log store and state machine.

use boxoffice_raft::{GroupId, NodeId, TypeConfig};
use boxoffice_storage::{Db, LogStore, StateMachineStore};
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open(dir.path(), &Default::default()).expect("open db");
        // Use a shard group that is not the first one, so the group prefix matters.
        let group = GroupId(3);
        let log = LogStore::new(db.clone(), group);
        let sm = StateMachineStore::open(
            db,
            group,
            &dir.path().join("snapshots"),
            &Default::default(),
        )
        .expect("open sm");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() -> Result<(), StorageError<NodeId>> {
    Suite::test_all(Builder)
}

/// Two groups in one database do not see each other's log entries or votes.
#[test]
fn groups_share_a_db_without_interfering() {
    use openraft::storage::{RaftLogReader, RaftLogStorage};
    use openraft::{CommittedLeaderId, EntryPayload, LogId, Vote};
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), &Default::default()).unwrap();
        let mut a = LogStore::new(db.clone(), GroupId(1));
        let mut b = LogStore::new(db.clone(), GroupId(2));
        let entry = |i| boxoffice_storage::testing::entry(i, EntryPayload::Blank);
        use openraft::storage::RaftLogStorageExt;
        a.blocking_append([entry(1), entry(2), entry(3)])
            .await
            .unwrap();
        b.blocking_append([entry(1)]).await.unwrap();
        a.save_vote(&Vote::new(5, 1)).await.unwrap();
        assert_eq!(a.try_get_log_entries(0..10).await.unwrap().len(), 3);
        assert_eq!(b.try_get_log_entries(0..10).await.unwrap().len(), 1);
        assert_eq!(
            b.get_log_state().await.unwrap().last_log_id.unwrap().index,
            1
        );
        assert_eq!(b.read_vote().await.unwrap(), None);
        a.truncate(LogId::new(CommittedLeaderId::new(1, 1), 2))
            .await
            .unwrap();
        assert_eq!(
            a.get_log_state().await.unwrap().last_log_id.unwrap().index,
            1
        );
        assert_eq!(
            b.get_log_state().await.unwrap().last_log_id.unwrap().index,
            1
        );
        // Reopen: everything is still there.
        drop((a, b));
        drop(db);
        let db = Db::open(dir.path(), &Default::default()).unwrap();
        let mut a = LogStore::new(db.clone(), GroupId(1));
        assert_eq!(a.read_vote().await.unwrap(), Some(Vote::new(5, 1)));
        assert_eq!(a.try_get_log_entries(0..10).await.unwrap().len(), 1);
    });
}

/// A replication read (`limited_get_log_entries`) stops at the byte budget,
/// returns at least one entry however large, and a plain read is not bounded.
#[test]
fn replication_reads_stop_at_the_byte_budget() {
    use openraft::storage::{RaftLogReader, RaftLogStorageExt};
    use openraft::EntryPayload;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(dir.path(), &Default::default()).unwrap();
        let entry = |i| boxoffice_storage::testing::entry(i, EntryPayload::Blank);
        let size = boxoffice_raft::codec::encode(&entry(1)).len() as u64;
        // Room for three and a half entries: three are read.
        db.set_log_read_bytes_max(3 * size + size / 2);
        let mut log = LogStore::new(db.clone(), GroupId(5));
        log.blocking_append((1..=10).map(entry)).await.unwrap();
        let got = log.limited_get_log_entries(2, 11).await.unwrap();
        let indexes: Vec<u64> = got.iter().map(|e| e.log_id.index).collect();
        assert_eq!(indexes, vec![2, 3, 4]);
        assert_eq!(log.try_get_log_entries(1..11).await.unwrap().len(), 10);
        // Not even one fits: one is read anyway, so replication moves on.
        db.set_log_read_bytes_max(1);
        let mut tight = LogStore::new(db.clone(), GroupId(5));
        let got = tight.limited_get_log_entries(7, 11).await.unwrap();
        assert_eq!(
            got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
            vec![7]
        );
        // An empty range reads nothing.
        assert!(tight
            .limited_get_log_entries(11, 11)
            .await
            .unwrap()
            .is_empty());
    });
}
