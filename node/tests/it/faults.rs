//! Faults: a shard leader killed under load, a full restart from disk, a
//! replica that falls behind its clock, reads under clock skew, and a panic,
//! which must end the node's process.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boxoffice_client::{Client, Consistency, ProblemCode, SeatStatus, Selection};
use serde_json::Value;

use crate::support::*;

/// Runs buyers until `stop`, recording every acknowledged booking.
async fn buyers(
    clients: Vec<Client>,
    event: u64,
    seats: u32,
    until: Instant,
    acked: Arc<Mutex<Vec<(Client, String, Vec<u32>)>>>,
) {
    let mut tasks = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u32;
            while Instant::now() < until && n < 1500 {
                n += 1;
                let seat = (i as u32 * 7919 + n * 104729) % seats;
                let Ok(h) = c.hold(event, Selection::Seats(vec![seat])).await else {
                    continue;
                };
                if let Ok(b) = c.confirm(&h.hold_id, "pay").await {
                    acked
                        .lock()
                        .unwrap()
                        .push((c.clone(), b.booking_id, b.seat_ids));
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

async fn check_acked(cluster: &TestCluster, event: u64, acked: &[(Client, String, Vec<u32>)]) {
    let mut seen = BTreeSet::new();
    for chunk in acked.chunks(32) {
        let mut set = tokio::task::JoinSet::new();
        for (c, id, seats) in chunk.iter().cloned() {
            set.spawn(async move {
                let b = c
                    .booking(&id)
                    .await
                    .unwrap_or_else(|e| panic!("acknowledged booking {id} lost: {e}"));
                assert_eq!(b.seat_ids, seats);
            });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
        for (_, _, seats) in chunk {
            for s in seats {
                assert!(seen.insert(*s), "seat {s} in two bookings");
            }
        }
    }
    let map = cluster
        .admin
        .seats(event, Consistency::Linearizable)
        .await
        .unwrap();
    for s in &seen {
        assert_eq!(map.seats[*s as usize].status, SeatStatus::Sold);
    }
    assert!(map.counts.sold as usize >= seen.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_killed_mid_load_then_full_restart() {
    let mut cluster = TestCluster::start(3, 2, "").await;
    let seats = 10_000;
    let (event, shard) = cluster.venue_and_event(seats, 600, 1000).await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<Client> = (0..8)
        .map(|i| cluster.user(&format!("buyer-{i}")))
        .collect();
    let load = tokio::spawn(buyers(
        clients,
        event,
        seats,
        Instant::now() + Duration::from_secs(8),
        acked.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let leader = cluster.leader_of(shard).await;
    let before_kill = acked.lock().unwrap().len();
    cluster.kill(leader);
    load.await.unwrap();
    let acked_all = acked.lock().unwrap().clone();
    assert!(before_kill > 0, "some bookings before the kill");
    assert!(
        acked_all.len() > before_kill,
        "bookings continued after the leader was killed ({before_kill} → {})",
        acked_all.len()
    );
    check_acked(&cluster, event, &acked_all).await;

    // The killed node comes back and catches up; new bookings succeed.
    cluster.spawn(leader);
    cluster.wait_healthy(leader).await;
    let late = cluster.user("late-buyer");
    let free = cluster
        .admin
        .seats(event, Consistency::Linearizable)
        .await
        .unwrap()
        .seats
        .into_iter()
        .find(|s| s.status == SeatStatus::Available)
        .unwrap();
    let h = late
        .hold(event, Selection::Seats(vec![free.seat_id]))
        .await
        .unwrap();
    late.confirm(&h.hold_id, "pay").await.unwrap();

    // Full restart from disk (kill -9 of every node) keeps every acknowledged booking.
    for i in 0..3 {
        cluster.kill(i);
    }
    for i in 0..3 {
        cluster.spawn(i);
    }
    for i in 0..3 {
        cluster.wait_healthy(i).await;
    }
    cluster.wait_ready().await;
    check_acked(&cluster, event, &acked_all).await;
    // Each replica serves the same seat map from its own state once caught up.
    let want = statuses(
        &cluster
            .admin
            .seats(event, Consistency::Linearizable)
            .await
            .unwrap(),
    );
    for (i, n) in cluster.nodes.iter().enumerate() {
        let c = cluster.client_at(i, "reader", false);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = statuses(&c.seats(event, Consistency::Local).await.unwrap());
            if got == want {
                break;
            }
            assert!(Instant::now() < deadline, "node {} did not converge", n.id);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_replica_refuses_local_reads() {
    let mut cluster = TestCluster::start(3, 1, "[limits]\nreplica_staleness_ms_max = 2500").await;
    let (event, _) = cluster.venue_and_event(5, 600, 4).await;
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.addr.clone()).collect();
    let url = |i: usize| format!("http://{}/v1/events/{event}/seats", addrs[i]);
    // Idle for longer than the bound: leader ticks keep every replica fresh.
    tokio::time::sleep(Duration::from_millis(4000)).await;
    for i in 0..3 {
        let r = reqwest::get(url(i)).await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "node {i} idle but healthy");
        let v: Value = r.json().await.unwrap();
        assert!(v["freshness"]["lag_ms"].as_u64().unwrap() <= 2500, "{v}");
    }
    // Node 3 alone: no quorum, no ticks; once past the bound it refuses local reads.
    cluster.kill(0);
    cluster.kill(1);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = reqwest::get(url(2)).await.unwrap();
        if r.status().as_u16() == 503 {
            assert!(r.headers().contains_key("retry-after"));
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["code"], "replica_stale", "{v}");
            break;
        }
        assert_eq!(r.status().as_u16(), 200);
        assert!(
            Instant::now() < deadline,
            "isolated replica kept serving stale reads"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Quorum back: fresh again.
    cluster.spawn(0);
    cluster.spawn(1);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = reqwest::get(url(2)).await.unwrap();
        if r.status().as_u16() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica did not become fresh again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Found by the jepsen harness (`jepsen run --nemesis clock --seed 11`): with the
/// shard leader's clock 8 s behind, a linearizable read on a follower judged a
/// hold expired by the follower's own clock while the state machine (stamped by
/// the leader) still had it live, and a competing hold was refused right after
/// the read said the seat was free. Reads now judge expiry at the state-machine
/// time of the entry they read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_judge_hold_expiry_by_state_machine_time_under_clock_skew() {
    let cluster = TestCluster::start(
        3,
        1,
        "fault_injection = true\n[limits]\nreplica_staleness_ms_max = 60000",
    )
    .await;
    let (event, _) = cluster.venue_and_event(4, 1, 4).await;
    let leader = cluster.leader_of(1).await;
    let admin_token = mint("admin", true);
    let http = reqwest::Client::new();
    let skew = |i: usize, offset_ms: i64| {
        let req = http
            .post(format!(
                "http://{}/admin/v1/fault/clock",
                cluster.nodes[i].addr
            ))
            .bearer_auth(&admin_token)
            .json(&boxoffice_client::ClockOffset { offset_ms });
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
        }
    };
    // The leader's clock falls 20 s behind: state-machine time stands still at the
    // last applied entry while real time moves past a 1 s hold lifetime.
    skew(leader, -20_000).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let alice = cluster.user("alice");
    let hold = alice.hold(event, Selection::Seats(vec![0])).await.unwrap();
    let now = boxoffice_now_ms();
    assert!(
        hold.expires_at_ms < now,
        "the hold's expiry ({}) should already be past by the wall clock ({now})",
        hold.expires_at_ms
    );
    for (i, n) in cluster.nodes.iter().enumerate() {
        if i == leader {
            continue;
        }
        let v = linearizable_seat_map(&n.addr, event).await;
        assert_eq!(
            v["seats"][0]["status"], "held",
            "node {} judged the hold by its own clock: {v}",
            n.id
        );
    }
    // What the log decides agrees: the seat is still taken.
    let bob = cluster.user("bob");
    match bob.hold(event, Selection::Seats(vec![0])).await {
        Err(e) => assert_eq!(e.code(), Some(ProblemCode::SeatUnavailable), "{e}"),
        other => panic!("expected seat_unavailable, got {other:?}"),
    }
    skew(leader, 0).await;
}

/// Issue 14: a leader whose clock ran an hour ahead moved state-machine time an
/// hour forward for good (its stamps were trusted as they were), so every hold
/// expired at once. Now a leader stamps at most `raft.clock_skew_max_ms` ahead of
/// a majority of its group's clocks: state-machine time stays within that of
/// real time, and a hold lives its lifetime less at most that bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_an_hour_ahead_moves_time_by_at_most_the_skew_bound() {
    const BOUND_MS: u64 = 2_000;
    const TTL_MS: u64 = 10_000;
    let cluster = TestCluster::start(
        3,
        1,
        &format!("fault_injection = true\n[raft]\nclock_skew_max_ms = {BOUND_MS}"),
    )
    .await;
    let (event, _) = cluster.venue_and_event(4, TTL_MS / 1000, 4).await;
    let leader = cluster.leader_of(1).await;
    let id = cluster.nodes[leader].id;
    cluster.local.set_clock_offset(id, 3_600_000).await.unwrap();
    // Let the leader tick with its new clock.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let asked = boxoffice_now_ms();
    let hold = cluster
        .user("alice")
        .hold(event, Selection::Seats(vec![0]))
        .await
        .unwrap();
    assert!(
        hold.expires_at_ms <= boxoffice_now_ms() + BOUND_MS + TTL_MS + 500,
        "the hold's expiry ({}) is more than the bound past now + its lifetime ({})",
        hold.expires_at_ms,
        boxoffice_now_ms() + TTL_MS
    );
    let follower = (leader + 1) % cluster.nodes.len();
    // Until its lifetime less the bound (and a margin) has passed, the seat stays
    // held, and state-machine time never runs more than the bound ahead.
    while boxoffice_now_ms() < asked + TTL_MS - BOUND_MS - 1_000 {
        let v = linearizable_seat_map(&cluster.nodes[follower].addr, event).await;
        let time = v["freshness"]["applied_time_ms"].as_u64().unwrap();
        assert!(
            time <= boxoffice_now_ms() + BOUND_MS + 200,
            "state-machine time {time} ran {} ms ahead",
            time.saturating_sub(boxoffice_now_ms())
        );
        assert_eq!(v["seats"][0]["status"], "held", "the hold ended early: {v}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    cluster.local.set_clock_offset(id, 0).await.unwrap();
}

/// The wall clock, ms since the Unix epoch.
pub fn boxoffice_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A panic on any of a node's tasks (as a broken invariant in apply panics
/// openraft's task) ends its process, so that a supervisor restarts it, rather
/// than leaving it up, answering, with a dead group; the cluster carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_ends_the_node_process() {
    let mut cluster = TestCluster::start(3, 1, "fault_injection = true").await;
    let (event, _) = cluster.venue_and_event(4, 600, 4).await;
    let victim = cluster.nodes[2].clone();
    let r = reqwest::Client::new()
        .post(format!("http://{}/admin/v1/fault/panic", victim.addr))
        .bearer_auth(mint("admin", true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    // Generous: the default hook prints a symbolised backtrace first (the test
    // environment sets RUST_BACKTRACE), which takes seconds on a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = cluster.local.exited(victim.id) {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the node is still running after a panic"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success(), "a panic is a failure exit: {status:?}");
    let log = std::fs::read_to_string(&cluster.local.nodes[&victim.id].log).unwrap();
    assert!(log.contains("panic: the node stops"), "the panic is logged");
    // The other two carry on.
    let h = cluster
        .user("after")
        .hold(event, Selection::Seats(vec![0]))
        .await
        .unwrap();
    assert_eq!(h.seat_ids, vec![0]);
    cluster.spawn(2);
    cluster.wait_healthy(2).await;
}
