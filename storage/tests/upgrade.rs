//! A data directory written by the release before stored types had versions of
//! their own (`fixtures/v1`, made by `fixtures/v1/make.sh` with that release's
//! binary: one node, two shards, snapshots taken and the log purged, then more
//! writes) opens with this build: every stored value decodes, every booking is
//! there as that node reported it, and a confirm retried with its idempotency key
//! gets its first answer back (its remembered fingerprint still matches).

use std::path::{Path, PathBuf};

use boxoffice_raft::codec;
use boxoffice_raft::command::*;
use boxoffice_raft::{Entry, GroupId, LogId};
use boxoffice_storage::db::{CF_LOG, CF_META, CF_SM};
use boxoffice_storage::keys::{meta, NODE_GROUP};
use boxoffice_storage::read::Reader;
use boxoffice_storage::records::check_record;
use boxoffice_storage::testing::{normal, request};
use boxoffice_storage::{Db, StateMachineBackend, StateMachineStore, StorageSettings};
use openraft::storage::RaftStateMachine;
use serde_json::Value;

/// The crate's directory as cargo gives it to the running test (a build moved
/// from another checkout keeps its compile-time path), else the compile-time one.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}

/// The fixture: a data directory of the first release and its answers.
fn fixture() -> String {
    format!("{}/tests/fixtures/v1", manifest_dir().display())
}

/// Unpacks the fixture's data directory into `dir`; returns the node's data dir.
pub fn unpack(dir: &Path) -> PathBuf {
    let status = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(format!("{}/node-1.tar.gz", fixture()))
        .arg("-C")
        .arg(dir)
        .status()
        .expect("run tar");
    assert!(status.success(), "tar failed");
    dir.join("node-1")
}

fn answer(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("{}/answers/{name}.json", fixture())).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn every_value_in_an_old_data_directory_decodes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = unpack(tmp.path());
    let db = Db::open(&data, &Default::default()).unwrap();
    let raw = db.raw();
    let mut records = 0;
    for item in raw.iterator_cf(db.cf(CF_SM), rocksdb::IteratorMode::Start) {
        let (k, v) = item.unwrap();
        check_record(k[2], &v).unwrap_or_else(|e| panic!("sm key {k:?}: {e}"));
        records += 1;
    }
    let mut entries = 0;
    for item in raw.iterator_cf(db.cf(CF_LOG), rocksdb::IteratorMode::Start) {
        let (k, v) = item.unwrap();
        codec::decode::<Entry>(&v).unwrap_or_else(|e| panic!("log key {k:?}: {e}"));
        entries += 1;
    }
    let mut metas = 0;
    for item in raw.iterator_cf(db.cf(CF_META), rocksdb::IteratorMode::Start) {
        let (k, v) = item.unwrap();
        let group = u16::from_be_bytes([k[0], k[1]]);
        let r = match (group, k[2]) {
            (NODE_GROUP, meta::CLUSTER) => Ok(()), // the node's own record: node tests
            (_, meta::VOTE) => codec::decode::<openraft::Vote<u64>>(&v).map(|_| ()),
            (_, meta::COMMITTED) => codec::decode::<Option<LogId>>(&v).map(|_| ()),
            (_, meta::PURGED) => codec::decode::<LogId>(&v).map(|_| ()),
            (g, kind) => panic!("unexpected meta record {kind} of group {g}"),
        };
        r.unwrap_or_else(|e| panic!("meta key {k:?}: {e}"));
        metas += 1;
    }
    assert!(
        records > 100 && entries > 10 && metas >= 9,
        "{records} {entries} {metas}"
    );
    // The snapshot files (and their headers) open too.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for g in 0..=2 {
            let mut sm = StateMachineStore::open(
                db.clone(),
                GroupId(g),
                &data.join("snapshots"),
                &Default::default(),
            )
            .unwrap();
            let snap = sm.get_current_snapshot().await.unwrap();
            assert!(snap.is_some(), "group {g} had a snapshot");
        }
    });
}

#[test]
fn bookings_survive_and_a_retried_confirm_gets_its_first_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let data = unpack(tmp.path());
    let db = Db::open(&data, &Default::default()).unwrap();
    // Every booking each user had, as the old node listed it.
    for user in ["alice", "bob", "carol"] {
        let want = answer(&format!("bookings-{user}"));
        let want = want["bookings"].as_array().unwrap();
        let mut got = Vec::new();
        for g in 1..=2 {
            got.extend(
                Reader::new(db.clone(), GroupId(g))
                    .begin_applied()
                    .user_bookings(user, 100),
            );
        }
        got.sort_by_key(|b| b.confirmed_at_ms);
        assert_eq!(got.len(), want.len(), "{user}'s bookings");
        for (b, w) in got.iter().zip(want) {
            assert_eq!(b.booking_id.to_string(), w["booking_id"], "{user}");
            assert_eq!(b.hold_id.to_string(), w["hold_id"]);
            assert_eq!(b.event_id, w["event_id"].as_u64().unwrap());
            assert_eq!(serde_json::json!(b.seat_ids), w["seat_ids"]);
            assert_eq!(b.quantity, w["quantity"].as_u64().unwrap() as u32);
            assert_eq!(b.total_cents, w["total_cents"].as_u64().unwrap());
            assert_eq!(b.payment_ref, w["payment_ref"]);
            assert_eq!(b.confirmed_at_ms, w["confirmed_at_ms"].as_u64().unwrap());
        }
    }
    // Bob's confirm (key `c2`), retried: the same booking, replayed.
    let first = answer("confirm-bob-1");
    let hold_id: HoldId = first["hold_id"].as_str().unwrap().parse().unwrap();
    let group = GroupId(hold_id.shard);
    // With the records kept in memory (loaded from the old `sm` column family,
    // which is later than the old snapshots) and in RocksDB as they were. The
    // first run writes nothing to the column family: the second starts from
    // the same data.
    let rt = tokio::runtime::Runtime::new().unwrap();
    for backend in [StateMachineBackend::Memory, StateMachineBackend::Rocksdb] {
        let settings = StorageSettings {
            state_machine: backend,
            ..Default::default()
        };
        rt.block_on(bob_retries_his_confirm(
            &db, &data, group, hold_id, &first, &settings,
        ));
    }
}

/// Bob's confirm retried against the old data: its first answer, replayed.
async fn bob_retries_his_confirm(
    db: &Db,
    data: &Path,
    group: GroupId,
    hold_id: HoldId,
    first: &Value,
    settings: &StorageSettings,
) {
    {
        let mut sm =
            StateMachineStore::open(db.clone(), group, &data.join("snapshots"), settings).unwrap();
        // The group moves to the newest feature level first: the old sessions
        // stay in force under it.
        let applied = *sm.applied().borrow();
        let enable = normal(
            applied.index + 1,
            request(
                applied.time_ms + 1000,
                None,
                Command::EnableFeatures {
                    level: FEATURE_LEVEL_MAX,
                },
            ),
        );
        let out = sm.apply([enable]).await.unwrap().pop().unwrap();
        assert_eq!(out.result, Ok(Effect::Nothing));
        let applied = *sm.applied().borrow();
        let confirm = Command::Confirm {
            hold_id,
            user: "bob".into(),
            payment_ref: "pay_bob_1".into(),
        };
        let retry = normal(
            applied.index + 1,
            request(applied.time_ms + 1000, Some(("bob", "c2")), confirm),
        );
        let out = sm.apply([retry]).await.unwrap().pop().unwrap();
        assert!(out.replayed, "{out:?}");
        assert_eq!(
            out.applied.index,
            first["applied"]["index"].as_u64().unwrap()
        );
        let Ok(Effect::Confirmed(b)) = &out.result else {
            panic!("{out:?}")
        };
        assert_eq!(b.booking_id.to_string(), first["booking_id"]);
        assert_eq!(serde_json::json!(b.seat_ids), first["seat_ids"]);
        // The same key for another command is still told apart.
        let other = normal(
            applied.index + 2,
            request(
                applied.time_ms + 1000,
                Some(("bob", "c2")),
                Command::Release {
                    hold_id,
                    user: "bob".into(),
                },
            ),
        );
        let out = sm.apply([other]).await.unwrap().pop().unwrap();
        assert_eq!(out.result, Err(Rejection::IdempotencyKeyReused));
    }
}

/// The other way: a node of an older release opening data a newer one left at a
/// feature level it does not know refuses to start on it, naming the level,
/// rather than apply the group's next entries by its own older rules.
#[test]
fn data_at_a_feature_level_this_build_does_not_know_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let group = GroupId(1);
    {
        let db = Db::open(dir.path(), &Default::default()).unwrap();
        let newer = boxoffice_storage::records::Features {
            level: FEATURE_LEVEL_MAX + 1,
            legacy_session_expiry: false,
        };
        let key = boxoffice_storage::keys::Key::sm(group, boxoffice_storage::keys::table::FEATURES)
            .build();
        db.raw()
            .put_cf(db.cf(CF_SM), key, codec::encode(&newer))
            .unwrap();
    }
    let db = Db::open(dir.path(), &Default::default()).unwrap();
    let err = StateMachineStore::open(db, group, &dir.path().join("snap"), &Default::default())
        .err()
        .expect("a level from the future is refused");
    let text = err.to_string();
    assert!(
        text.contains(&format!("feature level {}", FEATURE_LEVEL_MAX + 1)),
        "{text}"
    );
}
