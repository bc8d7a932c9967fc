//! Where a group's records are kept (`storage.state_machine`): a node that
//! keeps them in memory starts again from its last snapshot and the log after
//! it, and a node may switch between memory and RocksDB across restarts
//! without losing or rolling back anything (it starts from whichever of the
//! two holds the later state).

use boxoffice_raft::command::*;
use boxoffice_raft::{Entry, GroupId};
use boxoffice_storage::testing::{normal, request};
use boxoffice_storage::{Db, StateMachineBackend, StateMachineStore, StorageSettings};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};

const GROUP: GroupId = GroupId(1);
const T0: u64 = 1_800_000_000_000;
const EVENT: u64 = 7;

type Dump = Vec<(Vec<u8>, Vec<u8>)>;

fn settings(backend: StateMachineBackend) -> StorageSettings {
    StorageSettings {
        state_machine: backend,
        ..Default::default()
    }
}

/// The entries of a small sale: an event, then holds of one seat each.
fn sale(entries: u64) -> Vec<Entry> {
    let create = Command::CreateInventory(InventorySpec {
        event_id: EVENT,
        layout: Layout::GeneralAdmission {
            capacity: 1000,
            price_cents: 100,
        },
        hold_ttl_ms: 600_000,
        per_user_cap: 1000,
    });
    (1..=entries)
        .map(|i| {
            let command = if i == 1 {
                create.clone()
            } else {
                Command::Hold(HoldRequest {
                    event_id: EVENT,
                    user: format!("u{}", i % 5),
                    selection: Selection::Quantity(1),
                })
            };
            let key = format!("k{i}");
            normal(i, request(T0 + i, Some(("c", key.as_str())), command))
        })
        .collect()
}

/// A data directory: the node's database and its snapshots.
struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn open(&self, backend: StateMachineBackend) -> StateMachineStore {
        let s = settings(backend);
        let db = Db::open(self.dir.path(), &s).unwrap();
        StateMachineStore::open(db, GROUP, &self.dir.path().join("snap"), &s).unwrap()
    }
}

fn dump(sm: &StateMachineStore) -> Dump {
    sm.reader().begin_applied().dump()
}

async fn apply(sm: &mut StateMachineStore, entries: &[Entry]) {
    for out in sm.apply(entries.to_vec()).await.unwrap() {
        assert!(out.result.is_ok(), "{out:?}");
    }
}

async fn applied_index(sm: &mut StateMachineStore) -> u64 {
    let (last, _) = sm.applied_state().await.unwrap();
    last.map(|l| l.index).unwrap_or(0)
}

#[tokio::test]
async fn records_survive_restarts_and_switches_between_memory_and_rocksdb() {
    use StateMachineBackend::*;
    let node = Node {
        dir: tempfile::tempdir().unwrap(),
    };
    let entries = sale(60);
    // The whole sale's state, applied once in RocksDB: what every path below
    // must arrive at.
    let reference = {
        let other = Node {
            dir: tempfile::tempdir().unwrap(),
        };
        let mut sm = other.open(Rocksdb);
        apply(&mut sm, &entries).await;
        dump(&sm)
    };

    // 1. Kept in RocksDB: entries 1..=20.
    let after_20 = {
        let mut sm = node.open(Rocksdb);
        apply(&mut sm, &entries[..20]).await;
        dump(&sm)
    };
    // 2. In memory: it starts from what RocksDB held (no snapshot yet), takes a
    // snapshot at 40, then applies up to 50, which only the log would have.
    let after_40 = {
        let mut sm = node.open(Memory);
        assert_eq!(
            dump(&sm),
            after_20,
            "memory starts from the RocksDB records"
        );
        assert_eq!(applied_index(&mut sm).await, 20);
        apply(&mut sm, &entries[20..40]).await;
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(40));
        let at_40 = dump(&sm);
        apply(&mut sm, &entries[40..50]).await;
        at_40
    };
    // 3. In memory again: the snapshot, then the log after it applied again
    // (what openraft does on start: the entries after the applied index).
    {
        let mut sm = node.open(Memory);
        assert_eq!(dump(&sm), after_40, "memory restarts from its snapshot");
        assert_eq!(applied_index(&mut sm).await, 40);
        apply(&mut sm, &entries[40..50]).await;
    }
    // 4. Back in RocksDB: its column family has nothing newer than the snapshot
    // (the snapshot in memory dropped the old records), so it loads the snapshot
    // rather than roll back to entry 20.
    {
        let mut sm = node.open(Rocksdb);
        assert_eq!(
            dump(&sm),
            after_40,
            "RocksDB starts from the later snapshot"
        );
        assert_eq!(applied_index(&mut sm).await, 40);
        apply(&mut sm, &entries[40..]).await;
        assert_eq!(dump(&sm), reference);
    }
    // 5. In memory once more: the RocksDB records (entry 60) are later than the
    // snapshot (40), and win.
    {
        let mut sm = node.open(Memory);
        assert_eq!(applied_index(&mut sm).await, 60);
        assert_eq!(dump(&sm), reference);
    }
}

/// Reads see an apply's writes all at once, and a read begun before an apply
/// keeps seeing the state it began on.
#[tokio::test]
async fn a_read_in_memory_sees_one_version() {
    let node = Node {
        dir: tempfile::tempdir().unwrap(),
    };
    let mut sm = node.open(StateMachineBackend::Memory);
    let entries = sale(30);
    apply(&mut sm, &entries[..10]).await;
    let reader = sm.reader();
    let before = reader.begin_applied();
    let held_before = before.inventory(EVENT).map(|inv| before.counts(&inv).held);
    apply(&mut sm, &entries[10..]).await;
    let after = reader.begin_applied();
    let held_after = after.inventory(EVENT).map(|inv| after.counts(&inv).held);
    assert_eq!(held_before, Some(9));
    assert_eq!(held_after, Some(29));
    // The old read still shows its version, whole.
    assert_eq!(before.freshness.applied_index, 10);
    assert_eq!(
        before.inventory(EVENT).map(|inv| before.counts(&inv).held),
        Some(9)
    );
    assert_eq!(after.freshness.applied_index, 30);
}
