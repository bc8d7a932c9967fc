//! Booking through real nodes: holds, replays, conflicts, confirms, caps, expiry,
//! seat maps, and clients racing for the same seats.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use boxoffice_client::{
    BookingStatus, Client, Consistency, Error, ProblemCode, SeatStatus, Selection,
};
use serde_json::{json, Value};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
/// Holds, replays and reused keys, conflicts, confirms and the booking lists;
/// then the per-user cap and hold expiry by state-machine time.
async fn hold_confirm_replay_cap_and_expiry() {
    let cluster = TestCluster::start(3, 2, "").await;
    let (event, _) = cluster.venue_and_event(10, 2, 4).await;
    let alice = cluster.user("alice");
    let bob = cluster.user("bob");

    // Hold, replay with the same key, conflict, confirm, release.
    let h = alice
        .hold_with_key(event, Selection::Seats(vec![0, 1]), "k-1")
        .await
        .unwrap();
    assert_eq!(h.seat_ids, vec![0, 1]);
    assert_eq!(h.total_cents, 2000);
    assert!(!h.replayed);
    // Write answers name the shard's leader, and the client sends the shard's
    // next writes there first; a client that wrote nothing knows no leader.
    let leader = cluster.leader_of(h.applied.shard).await;
    assert_eq!(
        alice.leader_hint(h.applied.shard),
        Some(format!("http://{}", cluster.nodes[leader].addr))
    );
    assert_eq!(bob.leader_hint(h.applied.shard), None);
    let again = alice
        .hold_with_key(event, Selection::Seats(vec![0, 1]), "k-1")
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(
        (again.hold_id.clone(), again.applied),
        (h.hold_id.clone(), h.applied)
    );
    let reused = alice
        .hold_with_key(event, Selection::Seats(vec![5]), "k-1")
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Some(ProblemCode::IdempotencyKeyReused));
    let conflict = bob
        .hold(event, Selection::Seats(vec![1, 2]))
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), Some(ProblemCode::SeatUnavailable));
    let Error::Api(p) = &conflict else {
        panic!("{conflict}")
    };
    assert_eq!(p.status, 409);
    assert_eq!(p.extra["seat_ids"], json!([1]));
    let not_mine = bob.confirm(&h.hold_id, "pay").await.unwrap_err();
    // Another user's hold answers as one that does not exist.
    assert_eq!(not_mine.code(), Some(ProblemCode::UnknownHold));
    let booking = alice.confirm(&h.hold_id, "pay-1").await.unwrap();
    assert_eq!(
        (
            booking.status,
            booking.seat_ids.clone(),
            booking.total_cents
        ),
        (BookingStatus::Confirmed, vec![0, 1], 2000)
    );
    assert_eq!(
        alice.booking(&booking.booking_id).await.unwrap().booking_id,
        booking.booking_id
    );
    assert_eq!(
        bob.booking(&booking.booking_id).await.unwrap_err().code(),
        Some(ProblemCode::UnknownBooking)
    );
    assert_eq!(alice.bookings().await.unwrap().bookings.len(), 1);
    // One event's bookings; another event has none; a bad id is refused.
    let alice_token = mint("alice", false);
    let list = |q: String| {
        let req = reqwest::Client::new()
            .get(format!("http://{}/v1/bookings?{q}", cluster.nodes[1].addr))
            .bearer_auth(&alice_token);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, v) = list(format!("event_id={event}")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["bookings"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["truncated"], false, "{v}");
    let (s, v) = list(format!("event_id={}", event + 1000)).await;
    assert_eq!(
        (s, v["bookings"].as_array().map(|a| a.len())),
        (200, Some(0)),
        "{v}"
    );
    let (s, v) = list("event_id=abc".into()).await;
    assert_eq!(s, 400, "{v}");
    // Cap: alice has 2 booked, cap 4.
    assert_eq!(
        alice
            .hold(event, Selection::Quantity(3))
            .await
            .unwrap_err()
            .code(),
        Some(ProblemCode::CapExceeded)
    );

    // Expiry: ttl 2 s. Another user gets the seat once it expires; the owner's confirm fails.
    let h3 = alice.hold(event, Selection::Seats(vec![9])).await.unwrap();
    assert_eq!(
        bob.hold(event, Selection::Seats(vec![9]))
            .await
            .unwrap_err()
            .code(),
        Some(ProblemCode::SeatUnavailable)
    );
    let wait_ms = h3.expires_at_ms.saturating_sub(h3.applied.time_ms) + 300;
    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
    // Reads judge expiry by state-machine time: with no client write, the leader's
    // idle tick (every `raft.tick_interval_ms`, 1 s) carries time past the expiry.
    let deadline = Instant::now() + Duration::from_millis(2000);
    loop {
        let map = bob.seats(event, Consistency::Local).await.unwrap();
        if map.seats[9].status == SeatStatus::Available {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "an expired hold frees its seat without any client write"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        alice.confirm(&h3.hold_id, "late").await.unwrap_err().code(),
        Some(ProblemCode::HoldExpired)
    );
    let bobs = bob.hold(event, Selection::Seats(vec![9])).await.unwrap();
    assert!(bobs.applied.time_ms >= h3.expires_at_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
/// Best-available quantity holds, releases, section maps and the compact map,
/// which says what the per-seat map says.
async fn seat_maps_sections_and_compact_rows() {
    let cluster = TestCluster::start(3, 2, "").await;
    let (event, _) = cluster.venue_and_event(10, 600, 4).await;
    let alice = cluster.user("alice");
    let bob = cluster.user("bob");
    let h = alice
        .hold(event, Selection::Seats(vec![0, 1]))
        .await
        .unwrap();
    alice.confirm(&h.hold_id, "pay-1").await.unwrap();
    let h2 = bob.hold(event, Selection::Quantity(2)).await.unwrap();
    assert_eq!(
        h2.seat_ids,
        vec![2, 3],
        "best available are the lowest free seats"
    );
    bob.release(&h2.hold_id).await.unwrap();
    let map = bob.seats(event, Consistency::Linearizable).await.unwrap();
    assert_eq!(map.seats[2].status, SeatStatus::Available);
    assert_eq!(map.counts.sold, 2);
    // One section's seats: the only section here is the whole map; an unknown
    // section is a 404 with its own code.
    let sec = bob
        .section_seats(event, "Stalls", Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(sec.seats, map.seats);
    assert_eq!(
        (sec.counts.sold, sec.counts.capacity),
        (map.counts.sold, map.counts.capacity)
    );
    let e = bob
        .section_seats(event, "Balcony & Box", Consistency::Local)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ProblemCode::UnknownSection), "{e}");
    // The compact map (`view=rows`) says what the per-seat map says, seat by seat,
    // with sold, held and available seats in it; a bad view is a 400.
    let h5 = bob.hold(event, Selection::Seats(vec![5])).await.unwrap();
    let map = bob.seats(event, Consistency::Linearizable).await.unwrap();
    let rows = bob
        .seat_rows(event, None, Consistency::Linearizable)
        .await
        .unwrap();
    let from_rows: Vec<(u32, Option<SeatStatus>)> =
        rows.rows.iter().flat_map(|r| r.seats()).collect();
    let from_seats: Vec<(u32, Option<SeatStatus>)> = map
        .seats
        .iter()
        .map(|s| (s.seat_id, Some(s.status)))
        .collect();
    assert_eq!(from_rows, from_seats);
    let sold = Some(SeatStatus::Sold);
    assert_eq!(&from_rows[..2], &[(0, sold), (1, sold)]);
    assert_eq!(from_rows[5], (5, Some(SeatStatus::Held)));
    for r in &rows.rows {
        let first = &map.seats[r.first_seat_id as usize];
        assert_eq!(
            (&first.section, &first.row, first.number, first.price_cents),
            (&r.section, &r.row, 1, r.price_cents)
        );
    }
    assert_eq!(rows.counts, map.counts);
    let sec_rows = bob
        .seat_rows(event, Some("Stalls"), Consistency::Local)
        .await
        .unwrap();
    assert_eq!(sec_rows.rows.len(), rows.rows.len());
    let e = bob
        .seat_rows(event, Some("Balcony & Box"), Consistency::Local)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ProblemCode::UnknownSection), "{e}");
    let r = reqwest::Client::new()
        .get(format!(
            "http://{}/v1/events/{event}/seats?view=pixels",
            cluster.nodes[1].addr
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["parameter"], "view", "{v}");
    bob.release(&h5.hold_id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_clients_race_for_the_same_seats() {
    let cluster = TestCluster::start(3, 2, "").await;
    let (event, _) = cluster.venue_and_event(8, 600, 8).await;
    let clients: Vec<Client> = (0..24)
        .map(|i| cluster.user(&format!("racer-{i}")))
        .collect();
    let mut tasks = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            // Each client goes for two overlapping seats, several times.
            let mut won = Vec::new();
            for round in 0..4u32 {
                let a = (i as u32 + round) % 8;
                let seats = vec![a, (a + 1) % 8];
                match c.hold(event, Selection::Seats(seats)).await {
                    Ok(h) => won.push((c.clone(), h)),
                    Err(e) => assert_eq!(e.code(), Some(ProblemCode::SeatUnavailable), "{e}"),
                }
            }
            won
        }));
    }
    let mut holders: BTreeMap<u32, String> = BTreeMap::new();
    let mut holds = Vec::new();
    for t in tasks {
        for (c, h) in t.await.unwrap() {
            for s in &h.seat_ids {
                assert!(
                    holders.insert(*s, h.hold_id.clone()).is_none(),
                    "seat {s} held twice"
                );
            }
            holds.push((c, h));
        }
    }
    assert!(!holds.is_empty());
    for (c, h) in &holds {
        c.confirm(&h.hold_id, "pay").await.unwrap();
    }
    let map = cluster
        .admin
        .seats(event, Consistency::Linearizable)
        .await
        .unwrap();
    let sold: BTreeSet<u32> = map
        .seats
        .iter()
        .filter(|s| s.status == SeatStatus::Sold)
        .map(|s| s.seat_id)
        .collect();
    assert_eq!(sold, holders.keys().copied().collect::<BTreeSet<_>>());
    assert_eq!(map.counts.sold as usize, sold.len());
}

/// The writes of one client's users (one `Client`, `with_token` per user) made
/// at the same time go in batches (`POST /v1/batch`) and race exactly as
/// separate requests do; a node whose `limits.batch_requests_max` is below the
/// client's batches refuses them, and the client sends its writes one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batched_writes_race_as_single_ones_and_a_refused_batch_falls_back() {
    let cluster = TestCluster::start(3, 2, "[limits]\nbatch_requests_max = 8").await;
    let (event, _) = cluster.venue_and_event(8, 600, 8).await;
    for (round, batch_writes_max) in [(0, 8), (1, 32)] {
        let mut cfg = client_config(cluster.urls(), mint_buyer("base"));
        cfg.batch_writes_max = batch_writes_max;
        // One request in flight per node: everything else waits and is batched.
        cfg.batch_in_flight_max = 1;
        let base = Client::new(cfg).unwrap();
        let clients: Vec<Client> = (0..24)
            .map(|i| base.with_token(mint_buyer(&format!("batcher-{round}-{i}"))))
            .collect();
        let mut tasks = Vec::new();
        for (i, c) in clients.into_iter().enumerate() {
            tasks.push(tokio::spawn(async move {
                let seats = vec![i as u32 % 8, (i as u32 + 1) % 8];
                match c.hold(event, Selection::Seats(seats)).await {
                    Ok(h) => Some((c, h)),
                    Err(e) => {
                        assert_eq!(e.code(), Some(ProblemCode::SeatUnavailable), "{e}");
                        None
                    }
                }
            }));
        }
        let mut held: BTreeMap<u32, String> = BTreeMap::new();
        let mut holds = Vec::new();
        for t in tasks {
            if let Some((c, h)) = t.await.unwrap() {
                for s in &h.seat_ids {
                    assert!(
                        held.insert(*s, h.hold_id.clone()).is_none(),
                        "seat {s} held twice"
                    );
                }
                holds.push((c, h));
            }
        }
        assert!(!holds.is_empty());
        let stats = base.batch_stats();
        assert_eq!(stats.batched_writes + stats.single_writes, 24, "{stats:?}");
        if round == 0 {
            assert!(stats.batches > 0, "no batch was sent: {stats:?}");
            assert_eq!(stats.unbatched_nodes, 0, "{stats:?}");
        } else {
            // A batch of more than 8 was refused whole; its writes went alone.
            assert!(stats.unbatched_nodes > 0, "{stats:?}");
        }
        // Release them all again (also batched), for the next round.
        let mut releases = Vec::new();
        for (c, h) in holds {
            releases.push(tokio::spawn(
                async move { c.release(&h.hold_id).await.unwrap() },
            ));
        }
        for r in releases {
            r.await.unwrap();
        }
        let map = cluster
            .admin
            .seats(event, Consistency::Linearizable)
            .await
            .unwrap();
        assert_eq!(map.counts.held, 0, "round {round}");
    }
}
