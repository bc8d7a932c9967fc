//! Scale-out: a cluster of 6 nodes keeps each of its 24 shards on 3 of them
//! (12 replicas and 4 first leaderships a node), a node serves shards it does
//! not host (writes forwarded to the leader, reads and live streams relayed
//! to a replica), and a replica moves from one node to another under booking
//! load, its leader's included, losing no acknowledged booking and selling no
//! seat twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boxoffice_client::{
    ClusterStatus, Consistency, ProblemCode, SeatStatus, Selection, StreamEvent,
};

use crate::support::*;

const NODES: u64 = 6;
const SHARDS: u16 = 24;
/// Buyers booking during the moves.
const BUYERS: usize = 4;
/// Bookings each buyer attempts at most (the load also stops when told).
const ATTEMPTS_MAX: usize = 400;
/// Seats per event.
const SEATS: u32 = 400;

async fn start() -> TestCluster {
    // Leaderships stay where the test puts them (the drain test has the
    // leader balancer on).
    TestCluster::start_with_spec(
        NODES,
        SHARDS,
        "[placement]\nbalance_leaders = false\n",
        |spec| spec.replication_factor = Some(3),
        |_| {},
    )
    .await
}

/// Node `id`'s own view.
async fn view(cluster: &TestCluster, id: u64) -> ClusterStatus {
    cluster.local.cluster_view(id).await.expect("cluster view")
}

/// The voters of `group` in the directory of node `id`.
async fn directory_voters(cluster: &TestCluster, id: u64, group: u16) -> BTreeSet<u64> {
    let v = view(cluster, id).await;
    let p = v.placement.expect("a placement directory");
    p.groups
        .iter()
        .find(|g| g.group == group)
        .map(|g| g.voters.iter().copied().collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn six_nodes_hold_each_shard_three_times_route_and_move_replicas_under_load() {
    let mut cluster = start().await;

    // Placement: every shard on exactly 3 nodes, 12 replicas and 4 leaderships
    // a node; each node runs the catalogue and its 12 shards, nothing else.
    let mut hosted: BTreeMap<u64, BTreeSet<u16>> = BTreeMap::new();
    for id in 1..=NODES {
        let v = view(&cluster, id).await;
        hosted.insert(id, v.groups.iter().map(|g| g.group).collect());
    }
    let mut replicas: BTreeMap<u16, BTreeSet<u64>> = BTreeMap::new();
    for (id, groups) in &hosted {
        assert!(groups.contains(&0), "node {id} lacks the catalogue");
        assert_eq!(groups.len(), 13, "node {id} hosts {groups:?}");
        for g in groups.iter().filter(|g| **g != 0) {
            replicas.entry(*g).or_default().insert(*id);
        }
    }
    assert_eq!(replicas.len(), usize::from(SHARDS));
    assert!(replicas.values().all(|r| r.len() == 3), "{replicas:?}");
    let leaders = cluster.local.leaders().await;
    let mut leads: BTreeMap<u64, usize> = BTreeMap::new();
    for s in 1..=SHARDS {
        *leads.entry(leaders[&s]).or_default() += 1;
    }
    assert!(
        leads.len() == 6 && leads.values().all(|c| *c == 4),
        "leaderships {leads:?}"
    );
    // The directory says the same, on every node, and the catalogue has a
    // replica everywhere: voters on 3, learners on the others.
    for id in 1..=NODES {
        eventually(
            Duration::from_secs(20),
            "the directory complete",
            || async {
                let Some(p) = view(&cluster, id).await.placement else {
                    return false;
                };
                let cat = p.groups.iter().find(|g| g.group == 0);
                p.replication_factor == Some(3)
                    && p.nodes.len() == 6
                    && cat.is_some_and(|c| c.voters.len() == 3 && c.learners.len() == 3)
                    && (1..=SHARDS).all(|s| {
                        p.groups.iter().find(|g| g.group == s).is_some_and(|g| {
                            g.voters.iter().copied().collect::<BTreeSet<_>>() == replicas[&s]
                        })
                    })
            },
        )
        .await;
    }

    // Routing: events on shards node 1 does not host, booked and read through
    // node 1 alone (writes forwarded, reads relayed, the live stream relayed).
    let mut events = Vec::new();
    let mut foreign = None;
    while events.len() < 4 || foreign.is_none() {
        let (event, shard) = cluster.venue_and_event(SEATS, 600, 1000).await;
        if !hosted[&1].contains(&shard) && foreign.is_none() {
            foreign = Some((event, shard));
        }
        events.push((event, shard));
        assert!(events.len() < 60, "no event on a shard node 1 lacks");
    }
    let (event, shard) = foreign.unwrap();
    let at_1 = cluster.client_at(0, "router", false);
    let hold = at_1
        .hold(event, Selection::Seats(vec![1, 2]))
        .await
        .unwrap();
    let booking = at_1.confirm(&hold.hold_id, "pay-router").await.unwrap();
    let map = at_1.seats(event, Consistency::Linearizable).await.unwrap();
    assert_eq!(statuses(&map)[&1], SeatStatus::Sold);
    assert_eq!(map.freshness.shard, shard);
    let local_map = at_1.seats(event, Consistency::Local).await.unwrap();
    assert_eq!(statuses(&local_map)[&2], SeatStatus::Sold);
    let mine = at_1.bookings().await.unwrap();
    assert!(
        mine.bookings
            .iter()
            .any(|b| b.booking_id == booking.booking_id),
        "{mine:?}"
    );
    assert_eq!(
        at_1.booking(&booking.booking_id).await.unwrap().seat_ids,
        vec![1, 2]
    );
    let mut stream = at_1.seat_stream(event, None).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the relayed stream's first event")
        .expect("a stream event");
    assert!(matches!(first, StreamEvent::Snapshot(_)), "{first:?}");
    drop(stream);

    // Moves under load: buyers on every node book on the four events while a
    // replica of the foreign event's shard moves twice: a follower's, then
    // its leader's.
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for b in 0..BUYERS {
        let name = format!("buyer-{b}");
        let client = cluster.user(&name);
        let events: Vec<u64> = events.iter().map(|e| e.0).take(3).chain([event]).collect();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut errors = Vec::new();
            let mut slowest = Duration::ZERO;
            for i in 0..ATTEMPTS_MAX {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let event = events[(i + b) % events.len()];
                let seat = 3 + ((i * 7 + b * 13) as u32) % (SEATS - 4);
                let started = Instant::now();
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
                slowest = slowest.max(started.elapsed());
                let started = Instant::now();
                match client.confirm(&hold.hold_id, &format!("pay-{b}-{i}")).await {
                    Ok(bk) => acked.push((name.clone(), bk.booking_id, bk.event_id, bk.seat_ids)),
                    Err(e) => errors.push(format!("confirm: {e}")),
                }
                slowest = slowest.max(started.elapsed());
            }
            (acked, errors, slowest)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let admin = &cluster.admin;
    let leader = cluster
        .local
        .leader_of(shard, Duration::from_secs(10))
        .await
        .unwrap();
    let follower = *replicas[&shard].iter().find(|v| **v != leader).unwrap();
    let spare: Vec<u64> = (1..=NODES)
        .filter(|id| !replicas[&shard].contains(id))
        .collect();
    let moved = admin.move_replica(shard, follower, spare[0]).await.unwrap();
    assert!(moved.moved);
    let mut expected: BTreeSet<u64> = replicas[&shard].clone();
    expected.remove(&follower);
    expected.insert(spare[0]);
    assert_eq!(
        moved.voters.iter().copied().collect::<BTreeSet<_>>(),
        expected
    );
    // Again: done already, nothing to do.
    let again = admin.move_replica(shard, follower, spare[0]).await.unwrap();
    assert!(!again.moved);
    // The leader's own replica.
    let t = Instant::now();
    let moved = admin.move_replica(shard, leader, spare[1]).await.unwrap();
    println!("the leader's replica moved in {:?}", t.elapsed());
    assert!(moved.moved);
    expected.remove(&leader);
    expected.insert(spare[1]);
    assert_eq!(
        moved.voters.iter().copied().collect::<BTreeSet<_>>(),
        expected
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // A leadership handed to another voter, still under load: the old leader
    // holds the shard's writes for about a lease, the new one wins at once.
    let leader_now = cluster
        .local
        .leader_of(shard, Duration::from_secs(10))
        .await
        .unwrap();
    let next = *expected.iter().find(|v| **v != leader_now).unwrap();
    let handed = admin.transfer_leader(shard, next).await.unwrap();
    assert!(handed.moved, "{handed:?}");
    assert_eq!(handed.leader, next);
    assert!(handed.writes_held_ms < 2000, "{handed:?}");
    assert_eq!(
        cluster
            .local
            .leader_of(shard, Duration::from_secs(5))
            .await
            .unwrap(),
        next
    );
    let again = admin.transfer_leader(shard, next).await.unwrap();
    assert!(!again.moved && again.leader == next, "{again:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    let mut slowest = Duration::ZERO;
    for t in tasks {
        let (a, errors, s) = t.await.unwrap();
        assert!(errors.is_empty(), "the load saw errors: {errors:?}");
        acked.extend(a);
        slowest = slowest.max(s);
    }
    println!(
        "{} bookings acknowledged during two moves and a leadership handoff (writes held {} ms); slowest write {slowest:?}",
        acked.len(),
        handed.writes_held_ms
    );
    assert!(acked.len() >= 20, "too little load: {}", acked.len());
    // The leader's replica moved after a handoff (no election timeout), so
    // no write waited as long as 2 s.
    assert!(slowest < Duration::from_secs(2), "a write took {slowest:?}");

    // The old replicas are gone, the new ones serve, the directory follows.
    eventually(Duration::from_secs(20), "old replicas deleted", || async {
        let a = view(&cluster, follower).await;
        let b = view(&cluster, leader).await;
        !a.groups.iter().any(|g| g.group == shard) && !b.groups.iter().any(|g| g.group == shard)
    })
    .await;
    for id in &expected {
        let v = view(&cluster, *id).await;
        assert!(
            v.groups.iter().any(|g| g.group == shard),
            "node {id} lacks {shard}"
        );
    }
    for id in 1..=NODES {
        eventually(
            Duration::from_secs(20),
            "the directory shows the moves",
            || async { directory_voters(&cluster, id, shard).await == expected },
        )
        .await;
    }
    // Write answers name the shard's placement epoch, the log index of its
    // membership: past the bootstrap's 0 once replicas have moved.
    let r = reqwest::Client::new()
        .post(format!("http://{}/v1/holds", cluster.nodes[0].addr))
        .bearer_auth(mint("epoch-reader", false))
        .header("idempotency-key", "epoch-1")
        .json(&serde_json::json!({"event_id": event, "quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    assert_eq!(r.headers()["x-boxoffice-shard"], shard.to_string().as_str());
    let epoch: u64 = r.headers()["x-boxoffice-epoch"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(epoch > 0, "{:?}", r.headers());

    // Every acknowledged booking is there, confirmed, with its seats; no seat
    // is in two bookings; the seat maps agree.
    let mut owner: BTreeMap<(u64, u32), String> = BTreeMap::new();
    for (buyer, id, event_id, seats) in &acked {
        let b = cluster.user(buyer).booking(id).await.unwrap();
        assert_eq!(&b.seat_ids, seats, "{id}");
        for s in seats {
            if let Some(other) = owner.insert((*event_id, *s), id.clone()) {
                panic!("seat {s} of event {event_id} in {other} and {id}");
            }
        }
    }
    for (buyer, id, _, _) in acked.iter().filter(|a| a.2 == event) {
        let b = cluster
            .client_at(0, buyer, false)
            .booking(id)
            .await
            .unwrap();
        assert_eq!(b.booking_id, *id);
    }
    let map = at_1.seats(event, Consistency::Linearizable).await.unwrap();
    for ((e, s), _) in owner.iter().filter(|((e, _), _)| *e == event) {
        assert_eq!(statuses(&map)[s], SeatStatus::Sold, "event {e} seat {s}");
    }

    // A node told to stop (SIGTERM) hands its leaderships over first: as
    // soon as it is gone, each of its shards has a new leader already, with
    // no election timeout waited out.
    let leaders = cluster.local.leaders().await;
    let stopping = (2..=NODES)
        .max_by_key(|id| leaders.values().filter(|l| *l == id).count())
        .unwrap();
    let led: Vec<u16> = leaders
        .iter()
        .filter(|(g, l)| **g != 0 && **l == stopping)
        .map(|(g, _)| *g)
        .collect();
    assert!(
        !led.is_empty(),
        "node {stopping} leads nothing: {leaders:?}"
    );
    cluster.local.stop(stopping).await;
    let after = cluster.local.leaders().await;
    for g in &led {
        assert!(
            after.get(g).is_some_and(|l| *l != stopping),
            "shard {g} still led by the stopped node {stopping}: {after:?}"
        );
    }
}

/// Settings of the balancer test: quick steps, a node silent for 3 s is down.
const BALANCER_SETTINGS: &str = "[placement]\nbalance_interval_ms = 200\ndown_after_ms = 3000\n";

/// Voters per node (every node of the directory, zero included).
async fn voter_counts(cluster: &TestCluster, at: u64) -> BTreeMap<u64, usize> {
    let p = view(cluster, at).await.placement.expect("a directory");
    p.nodes.iter().map(|n| (n.id, n.voters)).collect()
}

/// Each shard's voters in node `at`'s directory.
async fn shard_voters(cluster: &TestCluster, at: u64) -> BTreeMap<u16, BTreeSet<u64>> {
    let p = view(cluster, at).await.placement.expect("a directory");
    p.groups
        .iter()
        .filter(|g| g.group != 0)
        .map(|g| (g.group, g.voters.iter().copied().collect()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_add_a_node_and_recreate_a_dead_nodes_replicas() {
    // Seven nodes, six in the cluster: 24 shards, 3 voters each.
    let mut cluster = TestCluster::start_members(7, 6, SHARDS, 3, BALANCER_SETTINGS).await;
    let members: Vec<String> = cluster.urls()[..6].to_vec();
    let (event, _) = cluster.venue_and_event(SEATS, 600, 1000).await;
    let (event2, _) = cluster.venue_and_event(SEATS, 600, 1000).await;

    // Drain node 6 under booking load.
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for b in 0..BUYERS {
        let name = format!("drain-buyer-{b}");
        // Not through node 6 (it is going away) nor 7 (not a member yet).
        let client = cluster.client(members[..5].to_vec(), mint(&name, false));
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut errors = Vec::new();
            let mut slowest = Duration::ZERO;
            for i in 0..ATTEMPTS_MAX * 4 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let ev = if i % 2 == 0 { event } else { event2 };
                let seat = ((i * 7 + b * 13) as u32) % (SEATS - 1);
                let started = Instant::now();
                let hold = match client
                    .hold(ev, Selection::Seats(vec![seat, seat + 1]))
                    .await
                {
                    Ok(h) => h,
                    Err(e) if e.code() == Some(ProblemCode::SeatUnavailable) => continue,
                    Err(e) => {
                        errors.push(format!("hold: {e}"));
                        continue;
                    }
                };
                slowest = slowest.max(started.elapsed());
                let started = Instant::now();
                match client.confirm(&hold.hold_id, &format!("pay-{b}-{i}")).await {
                    Ok(bk) => acked.push((name.clone(), bk.booking_id, bk.event_id, bk.seat_ids)),
                    Err(e) => errors.push(format!("confirm: {e}")),
                }
                slowest = slowest.max(started.elapsed());
            }
            (acked, errors, slowest)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let drained = cluster.admin.set_node_draining(6, true).await.unwrap();
    assert_eq!(drained.state, "draining");
    eventually(Duration::from_secs(120), "node 6 drained", || async {
        let counts = voter_counts(&cluster, 1).await;
        counts.get(&6) == Some(&0)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    let mut slowest = Duration::ZERO;
    for t in tasks {
        let (a, errors, s) = t.await.unwrap();
        assert!(errors.is_empty(), "the load saw errors: {errors:?}");
        acked.extend(a);
        slowest = slowest.max(s);
    }
    println!(
        "drain: {} bookings acknowledged, slowest write {slowest:?}",
        acked.len()
    );
    assert!(acked.len() >= 10, "too little load: {}", acked.len());
    // No write waited for longer than 2 s while replicas and leaderships moved.
    assert!(slowest < Duration::from_secs(2), "a write took {slowest:?}");
    let voters = shard_voters(&cluster, 1).await;
    assert!(
        voters.values().all(|v| v.len() == 3 && !v.contains(&6)),
        "{voters:?}"
    );
    let mut owner: BTreeMap<(u64, u32), String> = BTreeMap::new();
    for (buyer, id, event_id, seats) in &acked {
        let b = cluster
            .client(members[..5].to_vec(), mint(buyer, false))
            .booking(id)
            .await
            .unwrap();
        assert_eq!(&b.seat_ids, seats, "{id}");
        for s in seats {
            if let Some(other) = owner.insert((*event_id, *s), id.clone()) {
                panic!("seat {s} of event {event_id} in {other} and {id}");
            }
        }
    }
    // Node 6 hosts nothing but a catalogue replica.
    eventually(Duration::from_secs(30), "node 6 emptied", || async {
        view(&cluster, 6).await.groups.iter().all(|g| g.group == 0)
    })
    .await;

    // A seventh node joins: the balancer evens the counts out.
    cluster.spawn(6);
    cluster.wait_healthy(6).await;
    cluster
        .admin
        .add_node(7, &cluster.nodes[6].peer_addr, BTreeMap::new())
        .await
        .unwrap();
    eventually(Duration::from_secs(180), "node 7 balanced in", || async {
        let counts = voter_counts(&cluster, 1).await;
        let up: Vec<usize> = [1, 2, 3, 4, 5, 7].iter().map(|id| counts[id]).collect();
        let (min, max) = (up.iter().min().unwrap(), up.iter().max().unwrap());
        max - min <= 1 && counts[&7] >= 11
    })
    .await;
    let voters = shard_voters(&cluster, 1).await;
    assert!(voters.values().all(|v| v.len() == 3), "{voters:?}");
    // Node 7 serves: a booking through it alone.
    let at_7 = cluster.client_at(6, "newcomer", false);
    let hold = at_7.hold(event, Selection::Seats(vec![SEATS - 1])).await;
    assert!(
        hold.is_ok() || matches!(&hold, Err(e) if e.code() == Some(ProblemCode::SeatUnavailable)),
        "{hold:?}"
    );
    let map = at_7.seats(event2, Consistency::Linearizable).await.unwrap();
    assert_eq!(map.seats.len(), SEATS as usize);
    // Leaderships are even too: each up node within one of the mean (4), the
    // drained node leading nothing.
    eventually(Duration::from_secs(120), "leaderships balanced", || async {
        let leaders = cluster.local.leaders().await;
        let mut leads: BTreeMap<u64, usize> =
            [1, 2, 3, 4, 5, 7].iter().map(|id| (*id, 0)).collect();
        for s in 1..=SHARDS {
            match leaders.get(&s) {
                Some(l) if leads.contains_key(l) => *leads.get_mut(l).unwrap() += 1,
                _ => return false,
            }
        }
        let mean = usize::from(SHARDS) / leads.len();
        leads.values().all(|c| c.abs_diff(mean) <= 1)
    })
    .await;

    // A backup through node 1 takes the shards it does not hold from nodes
    // that do.
    let backup_dir = tempfile::tempdir().unwrap();
    let to = backup_dir.path().join("b");
    let endpoint = format!("http://{}", cluster.nodes[0].addr);
    let token = mint("ops", true);
    let (ok, out, err) = {
        let to = to.clone();
        tokio::task::spawn_blocking(move || {
            run_ctl(&[
                "--endpoint",
                &endpoint,
                "--token",
                &token,
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
    let manifest: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        manifest["groups"].as_array().unwrap().len(),
        usize::from(SHARDS) + 1
    );
    let (ok, out, err) = run_ctl(&["restore", "--check", "--from", to.to_str().unwrap()]);
    assert!(ok && out.contains("backup is whole"), "{out}{err}");

    // Node 5 dies: after placement.down_after_ms its replicas are recreated.
    let before = voter_counts(&cluster, 1).await[&5];
    assert!(before > 0);
    cluster.kill(4);
    eventually(
        Duration::from_secs(180),
        "node 5's replicas recreated",
        || async {
            let voters = shard_voters(&cluster, 1).await;
            voters
                .values()
                .all(|v| v.len() == 3 && !v.contains(&5) && !v.contains(&6))
        },
    )
    .await;
    let p = view(&cluster, 1).await.placement.unwrap();
    let n5 = p.nodes.iter().find(|n| n.id == 5).unwrap();
    assert_eq!(n5.state, "down");
    // Every acknowledged booking is still there.
    for (buyer, id, _, seats) in &acked {
        let c = cluster.client(members[..4].to_vec(), mint(buyer, false));
        assert_eq!(&c.booking(id).await.unwrap().seat_ids, seats);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_placement_requests_are_refused_and_change_nothing() {
    let cluster = TestCluster::start(3, 2, "").await;
    let admin = mint("admin", true);
    let http = reqwest::Client::new();
    let base = format!("http://{}", cluster.nodes[0].addr);
    let post = |path: String, body: serde_json::Value| {
        let req = http
            .post(format!("{base}{path}"))
            .bearer_auth(&admin)
            .json(&body);
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let v: serde_json::Value = r.json().await.unwrap();
            (status, v["code"].as_str().unwrap_or_default().to_string())
        }
    };
    let before = view(&cluster, 1).await;
    let node2 = cluster.nodes[1].peer_addr.clone();
    for (path, body, status, code) in [
        (
            "/admin/v1/groups/9/move",
            serde_json::json!({"from": 1, "to": 2}),
            404,
            "unknown_group",
        ),
        (
            "/admin/v1/groups/x/move",
            serde_json::json!({"from": 1, "to": 2}),
            400,
            "invalid_parameter",
        ),
        (
            "/admin/v1/groups/1/move",
            serde_json::json!({"from": 1, "to": 1}),
            400,
            "invalid_parameter",
        ),
        (
            "/admin/v1/groups/1/move",
            serde_json::json!({"from": 1, "to": 9}),
            400,
            "invalid_parameter",
        ),
        (
            "/admin/v1/groups/1/move",
            serde_json::json!({"from": 1, "to": 2}),
            400,
            "invalid_parameter",
        ),
        (
            "/admin/v1/groups/1/move",
            serde_json::json!({"from": 1}),
            400,
            "malformed_json",
        ),
        (
            "/admin/v1/groups/1/leader",
            serde_json::json!({"to": 9}),
            400,
            "invalid_parameter",
        ),
        (
            "/admin/v1/groups/9/leader",
            serde_json::json!({"to": 1}),
            404,
            "unknown_group",
        ),
        (
            "/admin/v1/groups/1/leader",
            serde_json::json!({}),
            400,
            "malformed_json",
        ),
        (
            "/admin/v1/nodes/9/drain",
            serde_json::json!(null),
            404,
            "not_found",
        ),
        (
            "/admin/v1/nodes/x/up",
            serde_json::json!(null),
            400,
            "invalid_parameter",
        ),
        (
            "/admin/v1/nodes",
            serde_json::json!({"id": 0, "addr": "127.0.0.1:1"}),
            400,
            "invalid_parameter",
        ),
        (
            "/admin/v1/nodes",
            serde_json::json!({"id": 4, "addr": node2}),
            400,
            "invalid_parameter",
        ),
        (
            "/admin/v1/nodes",
            serde_json::json!({"id": 2, "addr": "127.0.0.1:1"}),
            400,
            "invalid_parameter",
        ),
        (
            "/admin/v1/nodes",
            serde_json::json!({"id": 4, "addr": "not an address"}),
            400,
            "invalid_parameter",
        ),
        (
            "/admin/v1/nodes",
            serde_json::json!({"id": 4, "addr": "127.0.0.1:1", "labels": {"zone": ""}}),
            400,
            "invalid_parameter",
        ),
    ] {
        let (s, c) = post(path.to_string(), body.clone()).await;
        assert_eq!((s, c.as_str()), (status, code), "{path} {body}");
    }
    // A user may do none of it.
    let r = http
        .post(format!("{base}/admin/v1/nodes/2/drain"))
        .bearer_auth(mint("alice", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let after = view(&cluster, 1).await;
    assert_eq!(before.placement, after.placement);
    let voters = |s: &ClusterStatus| -> Vec<Vec<u64>> {
        s.groups.iter().map(|g| g.voters.clone()).collect()
    };
    assert_eq!(voters(&before), voters(&after));
}
