//! Snapshots: a follower that missed more than the log keeps catches up by
//! installing one, search included.

use std::time::{Duration, Instant};

use boxoffice_client::{Consistency, NewEvent, SeatStatus, Selection};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lagging_follower_catches_up_by_snapshot() {
    let mut cluster = TestCluster::start(
        3,
        1,
        "[raft]\nsnapshot_logs_since_last = 30\nlogs_kept_after_snapshot = 0",
    )
    .await;
    let (event, shard) = cluster.venue_and_event(200, 600, 1000).await;
    let leader = cluster.leader_of(shard).await;
    let lagging = (leader + 1) % 3;
    cluster.kill(lagging);
    // Catalogue writes while it is down: enough for a catalogue snapshot and purge.
    let missed = cluster
        .admin
        .create_event(&NewEvent {
            name: "Zanzibar Unplugged".into(),
            description: String::new(),
            category: "concert".into(),
            venue_id: cluster
                .admin
                .event(event, Consistency::Linearizable)
                .await
                .unwrap()
                .venue
                .unwrap()
                .venue_id,
            performer_ids: vec![],
            starts_at: "2031-01-01T20:00:00Z".into(),
            hold_ttl_s: None,
            per_user_cap: None,
        })
        .await
        .unwrap()
        .event_id;
    for i in 0..40 {
        cluster
            .admin
            .create_performer(&performer(&format!("filler {i}"), ""))
            .await
            .unwrap();
    }
    let buyer = cluster.user("buyer");
    for s in 0..60u32 {
        let h = buyer.hold(event, Selection::Seats(vec![s])).await.unwrap();
        buyer.confirm(&h.hold_id, "pay").await.unwrap();
    }
    // The leader's log was purged past what the stopped node has.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = cluster.admin.cluster().await.unwrap();
        let purged = v.groups[shard as usize].purged_index.unwrap_or(0);
        if purged > 50 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no log purge after snapshot: {v:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.spawn(lagging);
    cluster.wait_healthy(lagging).await;
    let c = cluster.client_at(lagging, "reader", false);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let map = c.seats(event, Consistency::Local).await;
        if let Ok(m) = map {
            if m.counts.sold == 60 {
                assert!((0..60).all(|s| m.seats[s].status == SeatStatus::Sold));
                break;
            }
        }
        assert!(Instant::now() < deadline, "lagging node did not catch up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Its search index has the event it only learned of through the snapshot.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, v) = search(&cluster.nodes[lagging].addr, "q=zanzibar").await;
        if s == 200 && v["results"][0]["event_id"].as_u64() == Some(missed) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "event from the snapshot not searchable: {s} {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // It got there by installing a snapshot: its own snapshot index is set.
    let admin_at_lagging = cluster.client_at(lagging, "admin", true);
    let v = admin_at_lagging.cluster().await.unwrap();
    assert!(
        v.groups[shard as usize].snapshot_index.unwrap_or(0) > 0,
        "{v:?}"
    );
    assert!(
        v.groups[0].snapshot_index.unwrap_or(0) > 0,
        "catalogue came by snapshot too: {v:?}"
    );
}
