//! Backup and restore: `boxoffice ctl backup` taken while buyers book,
//! restored by `boxoffice ctl restore` into a new cluster on other ports, holds
//! every booking acknowledged before the backup began and sells no seat twice;
//! a damaged backup is refused, naming what is wrong, before anything is
//! written.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boxoffice_client::{BookingStatus, Consistency, ProblemCode, SeatStatus, Selection};

use crate::support::*;

/// Buyers booking at once during the backup.
const BUYERS: usize = 4;
/// Bookings each buyer attempts at most (the load also stops when told).
const ATTEMPTS_MAX: usize = 300;
/// Seats per event.
const SEATS: u32 = 300;

fn ctl(args: &[&str]) -> (bool, String, String) {
    run_ctl(args)
}

/// One acknowledged booking: who, which, and when the answer came.
#[derive(Clone, Debug)]
struct Acked {
    buyer: String,
    booking_id: String,
    event_id: u64,
    seat_ids: Vec<u32>,
    at: Instant,
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_under_load_restores_every_acknowledged_booking_once() {
    let cluster = TestCluster::start(3, 4, "").await;
    let mut events = Vec::new();
    for _ in 0..4 {
        events.push(cluster.venue_and_event(SEATS, 600, 1000).await.0);
    }
    let stop = Arc::new(AtomicBool::new(false));
    // Bookings acknowledged so far: the backup starts once there are some,
    // while most seats are still free (the load would run out of seats).
    let booked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for b in 0..BUYERS {
        let name = format!("buyer-{b}");
        let client = cluster.user(&name);
        let events = events.clone();
        let stop = stop.clone();
        let booked = booked.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut errors = Vec::new();
            for i in 0..ATTEMPTS_MAX {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let event = events[(i + b) % events.len()];
                // Buyers reach for overlapping seats, so some holds are refused.
                let seat = ((i * 7 + b * 13) as u32) % (SEATS - 1);
                let hold = match client
                    .hold(event, Selection::Seats(vec![seat, seat + 1]))
                    .await
                {
                    Ok(h) => h,
                    Err(e) if e.code() == Some(ProblemCode::SeatUnavailable) => continue,
                    Err(e) => {
                        errors.push(format!("hold: {e}"));
                        continue;
                    }
                };
                match client.confirm(&hold.hold_id, &format!("pay-{b}-{i}")).await {
                    Ok(bk) => acked.push({
                        booked.fetch_add(1, Ordering::Relaxed);
                        Acked {
                            buyer: name.clone(),
                            booking_id: bk.booking_id,
                            event_id: bk.event_id,
                            seat_ids: bk.seat_ids,
                            at: Instant::now(),
                        }
                    }),
                    Err(e) => errors.push(format!("confirm: {e}")),
                }
            }
            (acked, errors)
        }));
    }
    // Let the load run, then back up while it goes on.
    eventually(
        Duration::from_secs(30),
        "bookings before the backup",
        || async { booked.load(Ordering::Relaxed) >= 40 },
    )
    .await;
    let backup_dir = tempfile::tempdir().unwrap();
    let to = backup_dir.path().join("b1");
    let endpoint = format!("http://{}", cluster.nodes[1].addr);
    let admin = mint("ops", true);
    let started = Instant::now();
    let (ok, out, err) = {
        let to = to.clone();
        tokio::task::spawn_blocking(move || {
            ctl(&[
                "--endpoint",
                &endpoint,
                "--token",
                &admin,
                "--output",
                "json",
                "backup",
                "--to",
                to.to_str().unwrap(),
            ])
        })
        .await
        .unwrap()
    };
    assert!(ok, "backup failed: {err}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for t in tasks {
        let (a, errors) = t.await.unwrap();
        assert!(errors.is_empty(), "the load saw errors: {errors:?}");
        acked.extend(a);
    }
    let manifest: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(manifest["format"], "boxoffice-backup");
    assert_eq!(manifest["shards"], 4);
    assert_eq!(manifest["groups"].as_array().unwrap().len(), 5);
    let before: Vec<&Acked> = acked.iter().filter(|a| a.at < started).collect();
    let after = acked.len() - before.len();
    assert!(
        before.len() >= 20 && after >= 1,
        "the load must book before and during the backup: {} before, {after} after",
        before.len()
    );

    // A damaged backup is refused before anything is written, naming the file.
    let damaged = |name: &str, damage: &dyn Fn(&Path), expect: &str| {
        let dir = backup_dir.path().join(name);
        copy_dir(&to, &dir);
        damage(&dir);
        let (ok, _, err) = ctl(&["restore", "--check", "--from", dir.to_str().unwrap()]);
        assert!(!ok && err.contains(expect), "{name}: {err}");
        let data = backup_dir.path().join(format!("{name}-data"));
        let (ok, _, err) = ctl(&[
            "restore",
            "--from",
            dir.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--node-id",
            "1",
            "--members",
            "1=127.0.0.1:1",
        ]);
        assert!(!ok && err.contains(expect), "{name}: {err}");
        assert!(
            !data.join("db").exists(),
            "{name}: a refused restore wrote a database"
        );
    };
    damaged(
        "flipped",
        &|d| {
            let p = d.join("g1.snap");
            let mut b = std::fs::read(&p).unwrap();
            let mid = b.len() / 2;
            b[mid] ^= 0x40;
            std::fs::write(&p, b).unwrap();
        },
        "g1.snap is corrupted",
    );
    damaged(
        "truncated",
        &|d| {
            let p = d.join("g2.snap");
            let b = std::fs::read(&p).unwrap();
            std::fs::write(&p, &b[..b.len() - 100]).unwrap();
        },
        "g2.snap is truncated",
    );
    damaged(
        "unfinished",
        &|d| std::fs::remove_file(d.join("manifest.json")).unwrap(),
        "did not finish",
    );
    damaged(
        "missing",
        &|d| std::fs::remove_file(d.join("g0.snap")).unwrap(),
        "g0.snap is missing",
    );
    let (ok, out, err) = ctl(&["restore", "--check", "--from", to.to_str().unwrap()]);
    assert!(ok && out.contains("backup is whole"), "{out}{err}");
    drop(cluster);

    // Restored into a new cluster (new ports, new data directories).
    let restored = TestCluster::start_restored(3, &to).await;
    for a in &before {
        let b = restored
            .user(&a.buyer)
            .booking(&a.booking_id)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "booking {} acknowledged before the backup: {e}",
                    a.booking_id
                )
            });
        assert_eq!(b.status, BookingStatus::Confirmed);
        assert_eq!((b.event_id, &b.seat_ids), (a.event_id, &a.seat_ids));
    }
    // Nothing sold twice, and nothing that was never acknowledged.
    let all: BTreeSet<&str> = acked.iter().map(|a| a.booking_id.as_str()).collect();
    let mut sold: BTreeMap<u64, BTreeSet<u32>> = BTreeMap::new();
    for b in 0..BUYERS {
        let list = restored
            .user(&format!("buyer-{b}"))
            .bookings()
            .await
            .unwrap();
        assert!(!list.truncated);
        for bk in list.bookings {
            assert!(
                all.contains(bk.booking_id.as_str()),
                "unknown booking {bk:?}"
            );
            for s in &bk.seat_ids {
                assert!(
                    sold.entry(bk.event_id).or_default().insert(*s),
                    "seat {s} of event {} sold twice",
                    bk.event_id
                );
            }
        }
    }
    for e in &events {
        let map = restored
            .admin
            .seats(*e, Consistency::Linearizable)
            .await
            .unwrap();
        let shown: BTreeSet<u32> = map
            .seats
            .iter()
            .filter(|s| s.status == SeatStatus::Sold)
            .map(|s| s.seat_id)
            .collect();
        assert_eq!(&shown, sold.get(e).unwrap_or(&BTreeSet::new()), "event {e}");
        assert_eq!(map.counts.sold as usize, shown.len());
    }
    // The restored cluster sells: a sold seat is refused, a free one is not.
    let buyer = restored.user("after-restore");
    let a = before[0];
    let e = buyer
        .hold(a.event_id, Selection::Seats(vec![a.seat_ids[0]]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ProblemCode::SeatUnavailable), "{e}");
    let free = (0..SEATS)
        .find(|s| !sold[&a.event_id].contains(s))
        .expect("a free seat");
    let h = buyer
        .hold(a.event_id, Selection::Seats(vec![free]))
        .await
        .unwrap();
    buyer.confirm(&h.hold_id, "pay-after").await.unwrap();
}
