//! The virtual waiting room over HTTP on a 3-node cluster: joins (one place
//! per user), the pre-queue shuffled at the start, positions served by every
//! replica, admission within `active_max`, admission tokens (forged, another
//! user's, another event's, expired), holds refused without one, a booking and
//! an expired session freeing slots, pause/resume, the position stream, and a
//! shard leader killed mid-queue.

use std::collections::BTreeSet;
use std::time::Duration;

use boxoffice_api::{
    ProblemCode, QueueOrderName, QueuePhase, QueuePlace, QueueSettings, Selection,
};
use boxoffice_client::Client;

use crate::support::*;

fn rfc3339(ms: u64) -> String {
    boxoffice_node::api::rfc3339_ms(ms as i64)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn settings(start_in_ms: u64, per_minute: u32, active_max: u32, ttl_s: u64) -> QueueSettings {
    let now = now_ms();
    QueueSettings {
        prequeue_opens_at: rfc3339(now - 1000),
        sale_starts_at: rfc3339(now + start_in_ms),
        admit_per_minute: per_minute,
        active_max,
        session_ttl_s: Some(ttl_s),
        order: Some(QueueOrderName::RandomPrequeue),
    }
}

fn code(e: &boxoffice_client::Error) -> Option<ProblemCode> {
    e.code()
}

async fn place_at(c: &Client, event: u64) -> QueuePlace {
    c.queue_place(event).await.expect("queue place")
}

/// Raw `POST /v1/holds` with an admission header (or none).
async fn raw_hold(url: &str, user: &str, event: u64, admission: Option<&str>) -> (u16, String) {
    let mut r = reqwest::Client::new()
        .post(format!("{url}/v1/holds"))
        .bearer_auth(mint(user, false))
        .header("Idempotency-Key", format!("raw-{}", rand_key()))
        .json(&serde_json::json!({"event_id": event, "quantity": 1}));
    if let Some(a) = admission {
        r = r.header("Boxoffice-Admission", a);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// A client of user `u` talking to node `i` only.
fn at(cluster: &TestCluster, i: usize, u: &str) -> Client {
    cluster.client(vec![cluster.urls()[i].clone()], mint(u, false))
}

fn rand_key() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiting_room_admits_in_order_within_active_max_and_gates_holds() {
    let cluster = TestCluster::start(3, 1, "").await;
    let (event, _) = cluster.venue_and_event(50, 300, 4).await;
    let (other_event, _) = cluster.venue_and_event(10, 300, 4).await;
    let admin = &cluster.admin;
    // 600 a minute (10 a second), at most 3 open sessions of 10 s.
    let stats = admin
        .set_queue(event, &settings(2500, 600, 3, 10))
        .await
        .expect("queue set");
    assert!(!stats.started);
    // Bad settings are refused and change nothing.
    let mut bad = settings(2500, 0, 3, 10);
    let e = admin.set_queue(event, &bad).await.unwrap_err();
    assert_eq!(code(&e), Some(ProblemCode::InvalidInput), "{e}");
    bad.admit_per_minute = 600;
    bad.sale_starts_at = "not a time".into();
    let e = admin.set_queue(event, &bad).await.unwrap_err();
    assert_eq!(code(&e), Some(ProblemCode::InvalidParameter), "{e}");

    let users: Vec<String> = (0..10).map(|i| format!("q{i}")).collect();
    let clients: Vec<Client> = users.iter().map(|u| cluster.user(u)).collect();
    let mut tickets = BTreeSet::new();
    for c in &clients {
        let p = c.join_queue(event).await.expect("join");
        assert!(p.new);
        assert_eq!(p.phase, QueuePhase::Prequeue);
        assert_eq!(p.position, None, "a shuffled pre-queue has no position yet");
        assert!(p.position_range.is_some());
        tickets.insert(p.ticket);
    }
    assert_eq!(tickets, (0..10).collect());
    // Joining again keeps the place.
    let again = clients[3].join_queue(event).await.unwrap();
    assert!(!again.new);
    assert!(tickets.contains(&again.ticket));
    // No admission, no hold; a forged token is refused too.
    let e = clients[0]
        .hold(event, Selection::Quantity(1))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(ProblemCode::QueueAdmissionRequired), "{e}");
    let (s, body) = raw_hold(
        &cluster.urls()[1],
        "q0",
        event,
        Some("eyJhbGciOiJIUzI1NiJ9.e30.x"),
    )
    .await;
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("queue_admission_required"), "{body}");
    // The other event has no queue: holds there need nothing.
    clients[0]
        .hold(other_event, Selection::Quantity(1))
        .await
        .expect("an event without a queue");

    // After the start: everyone has a position, a permutation of 1..=10, and
    // the same on every replica.
    let mut positions = Vec::new();
    eventually(Duration::from_secs(20), "the sale starts", || async {
        let p = place_at(&clients[0], event).await;
        p.position.is_some()
    })
    .await;
    for (i, u) in users.iter().enumerate() {
        let mut seen = BTreeSet::new();
        for n in 0..3 {
            let c = cluster.client(vec![cluster.urls()[n].clone()], mint(u, false));
            eventually(Duration::from_secs(10), "replica has the start", || async {
                c.queue_place(event).await.unwrap().position.is_some()
            })
            .await;
            seen.insert(c.queue_place(event).await.unwrap().position.unwrap());
        }
        assert_eq!(seen.len(), 1, "{u}: replicas disagree on the position");
        positions.push((seen.into_iter().next().unwrap(), i));
    }
    let set: BTreeSet<u64> = positions.iter().map(|(p, _)| *p).collect();
    assert_eq!(set, (1..=10).collect());
    positions.sort();
    let by_pos: Vec<usize> = positions.iter().map(|(_, i)| *i).collect();

    // Admission: the first 3 by position, then nobody more while they are open.
    eventually(Duration::from_secs(10), "three admitted", || async {
        place_at(&clients[by_pos[2]], event).await.phase == QueuePhase::Admitted
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let fourth = place_at(&clients[by_pos[3]], event).await;
    assert_eq!(
        fourth.phase,
        QueuePhase::Waiting,
        "active_max holds the 4th back"
    );
    assert_eq!(fourth.admitted_so_far, 3);
    assert_eq!(fourth.ahead, Some(0));
    assert!(fourth.wait_s.is_some() && fourth.retry_after_ms.is_some());

    // The first admitted user holds with their token, on any node.
    let first = &clients[by_pos[0]];
    let p = place_at(first, event).await;
    let token = p.admission_token.clone().expect("an admitted user's token");
    let hold = first
        .hold_admitted(event, Selection::Quantity(1), &token)
        .await
        .expect("admitted hold");
    // Their token is theirs alone, and for this event only.
    let thief = &users[by_pos[5]];
    let (s, body) = raw_hold(&cluster.urls()[2], thief, event, Some(&token)).await;
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("another user"), "{body}");
    let (s, body) = raw_hold(
        &cluster.urls()[2],
        &users[by_pos[0]],
        other_event,
        Some(&token),
    )
    .await;
    assert_eq!(s, 403, "{body}");
    // A booking ends the session and frees the slot for the 4th.
    first.confirm(&hold.hold_id, "pay-1").await.expect("booked");
    eventually(
        Duration::from_secs(10),
        "done, and the 4th admitted",
        || async {
            place_at(first, event).await.phase == QueuePhase::Done
                && place_at(&clients[by_pos[3]], event).await.phase == QueuePhase::Admitted
        },
    )
    .await;
    let (s, body) = raw_hold(&cluster.urls()[0], &users[by_pos[0]], event, Some(&token)).await;
    assert_eq!(s, 403, "a finished session's token: {body}");
    assert!(body.contains("ended with a booking"), "{body}");

    // Pause: nobody more is admitted, even as slots free up.
    admin.queue_action(event, "pause").await.expect("paused");
    // The 2nd and 3rd never hold: their sessions end by time (10 s) and they
    // count as no-shows; the token expires with the session.
    let second = place_at(&clients[by_pos[1]], event).await;
    let second_token = second.admission_token.clone().unwrap();
    eventually(Duration::from_secs(20), "sessions end by time", || async {
        place_at(&clients[by_pos[1]], event).await.phase == QueuePhase::Expired
    })
    .await;
    let (s, body) = raw_hold(
        &cluster.urls()[1],
        &users[by_pos[1]],
        event,
        Some(&second_token),
    )
    .await;
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("expired"), "{body}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let paused = admin.queue_stats(event).await.unwrap();
    assert_eq!(paused.admitted, 4, "nobody admitted while paused");
    // A stream of a waiting user: its place now, then admitted after resume.
    let waiting = &clients[by_pos[4]];
    let mut stream = waiting.queue_stream(event).await.expect("stream");
    let p0 = stream.next().await.unwrap();
    assert_eq!(p0.phase, QueuePhase::Waiting);
    admin.queue_action(event, "resume").await.expect("resumed");
    let admitted = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let p = stream.next().await.unwrap();
            if p.phase == QueuePhase::Admitted {
                return p;
            }
        }
    })
    .await
    .expect("admitted on the stream");
    assert!(admitted.admission_token.is_some());
    let stats = admin.queue_stats(event).await.unwrap();
    assert_eq!(stats.joined, 10);
    assert_eq!(stats.finished, 1);
    assert!(stats.no_shows >= 2, "{stats:?}");
    assert!(stats.active <= 3, "{stats:?}");

    // Open: the waiting room ends and anyone may hold.
    admin.queue_action(event, "open").await.expect("opened");
    cluster
        .user("latecomer")
        .hold(event, Selection::Quantity(1))
        .await
        .expect("no admission needed once open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_shard_leader_loses_no_join_position_or_admission() {
    let mut cluster = TestCluster::start(3, 1, "").await;
    let (event, shard) = cluster.venue_and_event(50, 300, 4).await;
    cluster
        .admin
        .set_queue(event, &settings(1500, 120, 1000, 600))
        .await
        .expect("queue set");
    let users: Vec<String> = (0..30).map(|i| format!("f{i}")).collect();
    let mut tickets = Vec::new();
    for u in &users {
        tickets.push(
            cluster
                .user(u)
                .join_queue(event)
                .await
                .expect("join")
                .ticket,
        );
    }
    let probe = cluster.user(&users[0]);
    eventually(Duration::from_secs(20), "someone admitted", || async {
        place_at(&probe, event).await.admitted_so_far >= 2
    })
    .await;
    let leader = cluster.leader_of(shard).await;
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let mut before = Vec::new();
    for u in &users {
        before.push(place_at(&at(&cluster, others[0], u), event).await);
    }
    let watermark = before[0].admitted_so_far;
    // A stream over a follower and the leader, started on the leader.
    let stream_client = cluster.client(
        vec![
            cluster.urls()[leader].clone(),
            cluster.urls()[others[0]].clone(),
        ],
        mint(&users[29], false),
    );
    let mut stream = stream_client.queue_stream(event).await.unwrap();
    stream.next().await.unwrap();
    cluster.kill(leader);
    // Every place, position and the watermark survive on the others, and
    // admission goes on under the new leader.
    for (i, u) in users.iter().enumerate() {
        let p = place_at(&at(&cluster, others[1], u), event).await;
        assert_eq!(p.ticket, tickets[i], "{u}'s ticket");
        assert_eq!(p.position, before[i].position, "{u}'s position");
        assert!(p.admitted_so_far >= watermark);
    }
    eventually(Duration::from_secs(30), "admission goes on", || async {
        place_at(&at(&cluster, others[0], &users[0]), event)
            .await
            .admitted_so_far
            > watermark + 1
    })
    .await;
    // A join after the failover goes to the back.
    let late = cluster.user("f-late").join_queue(event).await.unwrap();
    assert_eq!(late.ticket, 30);
    assert_eq!(late.position, Some(31));
    // The stream went on elsewhere.
    tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("the stream resumed")
        .unwrap();
    assert!(stream.reconnects >= 1);
}
