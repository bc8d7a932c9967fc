//! Integration tests against real `boxoffice node` processes on loopback.
//!
//! Every test starts its own cluster in a temporary directory, on ports it finds
//! free on 127.0.0.1, and kills its processes when it ends. Every load loop is
//! bounded in count and in time.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boxoffice_client::{
    Client, ClientConfig, Consistency, Error, NewEvent, NewLayout, NewVenue, Selection,
};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_boxoffice");
const SECRET: &str = "test-token-secret-0123456789";
const CLUSTER_KEY: &str = "test-cluster-key-0123456789";

struct TestNode {
    id: u64,
    addr: String,
    data_dir: PathBuf,
    child: Option<Child>,
}

struct TestCluster {
    _dir: tempfile::TempDir,
    nodes: Vec<TestNode>,
    extra_args: Vec<String>,
    admin: Client,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().unwrap().port()
}

fn mint(user: &str, admin: bool) -> String {
    let mut cmd = Command::new(BIN);
    cmd.args(["token", "--user", user, "--secret", SECRET]);
    if admin {
        cmd.arg("--admin");
    }
    let out = cmd.output().expect("run boxoffice token");
    assert!(
        out.status.success(),
        "token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn client_config(urls: Vec<String>, token: String) -> ClientConfig {
    let mut c = ClientConfig::new(urls, token);
    c.attempts_max = 30;
    c.request_timeout = Duration::from_secs(12);
    c.retry_wait_max = Duration::from_millis(300);
    c
}

impl TestCluster {
    async fn start(n: u64, shards: u16, extra_args: &[&str]) -> TestCluster {
        let dir = tempfile::tempdir().unwrap();
        let nodes = (1..=n)
            .map(|id| TestNode {
                id,
                addr: format!("127.0.0.1:{}", free_port()),
                data_dir: dir.path().join(format!("node-{id}")),
                child: None,
            })
            .collect();
        let admin_token = mint("admin", true);
        let mut c = TestCluster {
            _dir: dir,
            nodes,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            admin: Client::new(ClientConfig::new(["http://127.0.0.1:1"], "x")).unwrap(),
        };
        c.admin = Client::new(client_config(c.urls(), admin_token)).unwrap();
        for i in 0..c.nodes.len() {
            c.spawn(i);
        }
        for i in 0..c.nodes.len() {
            c.wait_healthy(i).await;
        }
        let members: Vec<(u64, String)> = c.nodes.iter().map(|n| (n.id, n.addr.clone())).collect();
        let init = c
            .admin
            .init_cluster(&members, shards)
            .await
            .expect("bootstrap");
        // Each shard was initialised, and so first led, by a different member in
        // turn: shard s by the ((s - 1) mod n)-th by id.
        for s in 1..=shards {
            assert_eq!(
                init["first_leaders"][s.to_string()].as_u64(),
                Some(c.nodes[(usize::from(s) - 1) % c.nodes.len()].id),
                "{init}"
            );
        }
        assert!(init["first_leaders"]["0"].is_u64(), "{init}");
        c.wait_ready().await;
        c
    }

    fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("http://{}", n.addr))
            .collect()
    }

    fn user(&self, name: &str) -> Client {
        Client::new(client_config(self.urls(), mint(name, false))).unwrap()
    }

    fn spawn(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        std::fs::create_dir_all(&n.data_dir).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(n.data_dir.join("node.log"))
            .unwrap();
        let child = Command::new(BIN)
            .args([
                "node",
                "--id",
                &n.id.to_string(),
                "--listen",
                &n.addr,
                "--data-dir",
            ])
            .arg(&n.data_dir)
            .args(["--token-secret", SECRET, "--cluster-key", CLUSTER_KEY])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn node");
        n.child = Some(child);
    }

    /// kill -9.
    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }

    async fn wait_healthy(&self, i: usize) {
        let url = format!("http://{}/healthz", self.nodes[i].addr);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = reqwest::get(&url).await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("node {} not healthy", self.nodes[i].id);
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        'outer: while Instant::now() < deadline {
            for n in &self.nodes {
                if n.child.is_none() {
                    continue;
                }
                match reqwest::get(format!("http://{}/readyz", n.addr)).await {
                    Ok(r) if r.status().is_success() => {}
                    _ => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue 'outer;
                    }
                }
            }
            return;
        }
        panic!("cluster not ready within 60 s");
    }

    /// Index of the node leading `group`, as a live node reports it.
    async fn leader_of(&self, group: u16) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(v) = self.admin.cluster().await {
                if let Some(l) = v["groups"][group as usize]["leader"].as_u64() {
                    if let Some(i) = self
                        .nodes
                        .iter()
                        .position(|n| n.id == l && n.child.is_some())
                    {
                        return i;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no live leader for group {group}");
    }

    async fn venue_and_event(&self, seats: u32, ttl_s: u64, cap: u32) -> (u64, u16) {
        let venue = self
            .admin
            .create_venue(&NewVenue {
                name: "Test Hall".into(),
                city: "Testville".into(),
                lat: 1.0,
                lon: 2.0,
                layout: NewLayout::Seated(vec![("Stalls".into(), vec![("A".into(), seats, 1000)])]),
            })
            .await
            .expect("venue");
        let event = self
            .admin
            .create_event(&NewEvent {
                name: "Test Night".into(),
                description: "".into(),
                category: "concert".into(),
                venue_id: venue,
                performer_ids: vec![],
                starts_at: "2030-01-01T20:00:00Z".into(),
                hold_ttl_s: Some(ttl_s),
                per_user_cap: Some(cap),
            })
            .await
            .expect("event");
        let view = self
            .admin
            .event(event, Consistency::Linearizable)
            .await
            .expect("event view");
        (event, view.event.shard.expect("shard"))
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

fn statuses(map: &boxoffice_client::SeatMap) -> BTreeMap<u32, String> {
    map.seats
        .iter()
        .map(|s| (s.seat_id, s.status.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn booking_flow_expiry_and_bad_input() {
    let cluster = TestCluster::start(3, 2, &[]).await;
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
    assert_eq!(reused.code(), Some("idempotency_key_reused"));
    let conflict = bob
        .hold(event, Selection::Seats(vec![1, 2]))
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), Some("seat_unavailable"));
    let Error::Api(p) = &conflict else { panic!() };
    assert_eq!(p.status, 409);
    assert_eq!(p.body["seat_ids"], json!([1]));
    let not_mine = bob.confirm(&h.hold_id, "pay").await.unwrap_err();
    assert_eq!(not_mine.code(), Some("not_hold_owner"));
    let booking = alice.confirm(&h.hold_id, "pay-1").await.unwrap();
    assert_eq!(
        (
            booking.status.as_str(),
            booking.seat_ids.clone(),
            booking.total_cents
        ),
        ("confirmed", vec![0, 1], 2000)
    );
    assert_eq!(
        alice.booking(&booking.booking_id).await.unwrap().booking_id,
        booking.booking_id
    );
    assert_eq!(
        bob.booking(&booking.booking_id).await.unwrap_err().code(),
        Some("forbidden")
    );
    assert_eq!(alice.bookings().await.unwrap().len(), 1);
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
    let h2 = bob.hold(event, Selection::Quantity(2)).await.unwrap();
    assert_eq!(
        h2.seat_ids,
        vec![2, 3],
        "best available are the lowest free seats"
    );
    bob.release(&h2.hold_id).await.unwrap();
    let map = bob.seats(event, Consistency::Linearizable).await.unwrap();
    assert_eq!(map.seats[2].status, "available");
    assert_eq!(map.sold, 2);
    // One section's seats: the only section here is the whole map; an unknown
    // section is a 404 with its own code.
    let sec = bob
        .section_seats(event, "Stalls", Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(sec.seats, map.seats);
    assert_eq!((sec.sold, sec.capacity), (map.sold, map.capacity));
    let e = bob
        .section_seats(event, "Balcony & Box", Consistency::Local)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("unknown_section"), "{e}");
    // The compact map (`view=rows`) says what the per-seat map says, seat by seat,
    // with sold, held and available seats in it; a bad view is a 400.
    let h5 = bob.hold(event, Selection::Seats(vec![5])).await.unwrap();
    let map = bob.seats(event, Consistency::Linearizable).await.unwrap();
    let rows = bob
        .seat_rows(event, None, Consistency::Linearizable)
        .await
        .unwrap();
    let from_rows: Vec<(u32, &str)> = rows.rows.iter().flat_map(|r| r.seats()).collect();
    let from_seats: Vec<(u32, &str)> = map
        .seats
        .iter()
        .map(|s| (s.seat_id, s.status.as_str()))
        .collect();
    assert_eq!(from_rows, from_seats);
    assert_eq!(&from_rows[..2], &[(0, "sold"), (1, "sold")]);
    assert_eq!(from_rows[5], (5, "held"));
    for r in &rows.rows {
        let first = &map.seats[r.first_seat_id as usize];
        assert_eq!(
            (&first.section, &first.row, first.number, first.price_cents),
            (&r.section, &r.row, 1, r.price_cents)
        );
    }
    assert_eq!(
        (rows.sold, rows.held, rows.available),
        (map.sold, map.held, map.available)
    );
    let sec_rows = bob
        .seat_rows(event, Some("Stalls"), Consistency::Local)
        .await
        .unwrap();
    assert_eq!(sec_rows.rows.len(), rows.rows.len());
    let e = bob
        .seat_rows(event, Some("Balcony & Box"), Consistency::Local)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("unknown_section"), "{e}");
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

    // Cap: alice has 2 booked, cap 4.
    assert_eq!(
        alice
            .hold(event, Selection::Quantity(3))
            .await
            .unwrap_err()
            .code(),
        Some("cap_exceeded")
    );

    // Expiry: ttl 2 s. Another user gets the seat once it expires; the owner's confirm fails.
    let h3 = alice.hold(event, Selection::Seats(vec![9])).await.unwrap();
    assert_eq!(
        bob.hold(event, Selection::Seats(vec![9]))
            .await
            .unwrap_err()
            .code(),
        Some("seat_unavailable")
    );
    let wait_ms = h3.expires_at_ms.saturating_sub(h3.applied.time_ms) + 300;
    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
    // Reads judge expiry by state-machine time: with no client write, the leader's
    // idle tick (every `raft.tick_interval_ms`, 1 s) carries time past the expiry.
    let deadline = Instant::now() + Duration::from_millis(2000);
    loop {
        let map = bob.seats(event, Consistency::Local).await.unwrap();
        if map.seats[9].status == "available" {
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
        Some("hold_expired")
    );
    let bobs = bob.hold(event, Selection::Seats(vec![9])).await.unwrap();
    assert!(bobs.applied.time_ms >= h3.expires_at_ms);

    // Bad input: clear 4xx problem+json, and nothing changes.
    let before = statuses(&bob.seats(event, Consistency::Linearizable).await.unwrap());
    let http = reqwest::Client::new();
    let url = format!("http://{}/v1/holds", cluster.nodes[1].addr);
    let token = mint("carol", false);
    let forged = {
        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        parts[2] = "AAAA".into();
        parts.join(".")
    };
    let cases: Vec<(&str, Option<&str>, String, u16, &str)> = vec![
        (
            "malformed json",
            Some(&token),
            "{".into(),
            400,
            "malformed_json",
        ),
        (
            "unknown field",
            Some(&token),
            json!({"event_id": event, "seat_ids": [4], "user": "x"}).to_string(),
            400,
            "malformed_json",
        ),
        (
            "empty seats",
            Some(&token),
            json!({"event_id": event, "seat_ids": []}).to_string(),
            400,
            "invalid_parameter",
        ),
        (
            "too many seats",
            Some(&token),
            json!({"event_id": event, "seat_ids": (0..101).collect::<Vec<u32>>()}).to_string(),
            400,
            "invalid_parameter",
        ),
        (
            "negative quantity",
            Some(&token),
            json!({"event_id": event, "quantity": -2}).to_string(),
            400,
            "invalid_parameter",
        ),
        (
            "both seats and quantity",
            Some(&token),
            json!({"event_id": event, "quantity": 1, "seat_ids": [4]}).to_string(),
            400,
            "invalid_input",
        ),
        (
            "seat out of range",
            Some(&token),
            json!({"event_id": event, "seat_ids": [4, 10]}).to_string(),
            400,
            "invalid_input",
        ),
        (
            "duplicate seats",
            Some(&token),
            json!({"event_id": event, "seat_ids": [4, 4]}).to_string(),
            400,
            "invalid_input",
        ),
        (
            "unknown event",
            Some(&token),
            json!({"event_id": 987654, "seat_ids": [4]}).to_string(),
            404,
            "unknown_event",
        ),
        (
            "missing token",
            None,
            json!({"event_id": event, "seat_ids": [4]}).to_string(),
            401,
            "unauthorized",
        ),
        (
            "forged token",
            Some(&forged),
            json!({"event_id": event, "seat_ids": [4]}).to_string(),
            401,
            "unauthorized",
        ),
        (
            "body over limit",
            Some(&token),
            format!(
                "{{\"event_id\": {event}, \"seat_ids\": [{}4]}}",
                " ".repeat(300 * 1024)
            ),
            413,
            "body_too_large",
        ),
    ];
    for (i, (what, tok, body, status, code)) in cases.into_iter().enumerate() {
        let mut req = http
            .post(&url)
            .header("Idempotency-Key", format!("bad-{i}"))
            .body(body);
        if let Some(t) = tok {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{what}");
        assert_eq!(
            resp.headers()["content-type"],
            "application/problem+json",
            "{what}"
        );
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["code"], code, "{what}: {v}");
    }
    let resp = http
        .post(&url)
        .bearer_auth(&token)
        .body(json!({"event_id": event, "seat_ids": [4]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        400,
        "a write without an Idempotency-Key is refused"
    );
    let resp = http
        .get(format!(
            "http://{}/v1/bookings/b1-notanumber",
            cluster.nodes[0].addr
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let resp = http
        .get(format!("http://{}/admin/v1/cluster", cluster.nodes[0].addr))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        403,
        "user tokens cannot use the admin API"
    );
    let after = statuses(&bob.seats(event, Consistency::Linearizable).await.unwrap());
    assert_eq!(before, after, "bad input changed nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_clients_race_for_the_same_seats() {
    let cluster = TestCluster::start(3, 2, &[]).await;
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
                    Err(e) => assert_eq!(e.code(), Some("seat_unavailable"), "{e}"),
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
        .filter(|s| s.status == "sold")
        .map(|s| s.seat_id)
        .collect();
    assert_eq!(sold, holders.keys().copied().collect::<BTreeSet<_>>());
    assert_eq!(map.sold as usize, sold.len());
}

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
        assert_eq!(map.seats[*s as usize].status, "sold");
    }
    assert!(map.sold as usize >= seen.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_killed_mid_load_then_full_restart() {
    let mut cluster = TestCluster::start(3, 2, &[]).await;
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
        .find(|s| s.status == "available")
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
    for n in &cluster.nodes {
        let c = Client::new(client_config(
            vec![format!("http://{}", n.addr)],
            mint("reader", false),
        ))
        .unwrap();
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
async fn lagging_follower_catches_up_by_snapshot() {
    let mut cluster = TestCluster::start(
        3,
        1,
        &[
            "--snapshot-logs-since-last",
            "30",
            "--logs-kept-after-snapshot",
            "0",
        ],
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
                .unwrap()["venue_id"]
                .as_u64()
                .unwrap(),
            performer_ids: vec![],
            starts_at: "2031-01-01T20:00:00Z".into(),
            hold_ttl_s: None,
            per_user_cap: None,
        })
        .await
        .unwrap();
    for i in 0..40 {
        cluster
            .admin
            .create_performer(&format!("filler {i}"), "")
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
        let purged = v["groups"][shard as usize]["purged_index"]
            .as_u64()
            .unwrap_or(0);
        if purged > 50 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no log purge after snapshot: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.spawn(lagging);
    cluster.wait_healthy(lagging).await;
    let c = Client::new(client_config(
        vec![format!("http://{}", cluster.nodes[lagging].addr)],
        mint("reader", false),
    ))
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let map = c.seats(event, Consistency::Local).await;
        if let Ok(m) = map {
            if m.sold == 60 {
                assert!((0..60).all(|s| m.seats[s].status == "sold"));
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
    let admin_at_lagging = Client::new(client_config(
        vec![format!("http://{}", cluster.nodes[lagging].addr)],
        mint("admin", true),
    ))
    .unwrap();
    let v = admin_at_lagging.cluster().await.unwrap();
    assert!(
        v["groups"][shard as usize]["snapshot_index"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{v}"
    );
    assert!(
        v["groups"][0]["snapshot_index"].as_u64().unwrap_or(0) > 0,
        "catalogue came by snapshot too: {v}"
    );
}

async fn search(addr: &str, query: &str) -> (u16, Value) {
    let r = reqwest::get(format!("http://{addr}/v1/search?{query}"))
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn search_on_every_node_and_after_index_loss() {
    let mut cluster = TestCluster::start(3, 1, &[]).await;
    let a = cluster.admin.clone();
    let london = a
        .create_venue(&NewVenue {
            name: "Royal Albert Hall".into(),
            city: "London".into(),
            lat: 51.5,
            lon: -0.17,
            layout: NewLayout::Seated(vec![("Stalls".into(), vec![("A".into(), 5, 100)])]),
        })
        .await
        .unwrap();
    let nyc = a
        .create_venue(&NewVenue {
            name: "Madison Square Garden".into(),
            city: "New York".into(),
            lat: 40.7,
            lon: -73.9,
            layout: NewLayout::GeneralAdmission {
                capacity: 10,
                price_cents: 100,
            },
        })
        .await
        .unwrap();
    let taylor = a.create_performer("Taylor Swift", "pop").await.unwrap();
    let owls = a
        .create_performer("The Midnight Owls", "jazz")
        .await
        .unwrap();
    let mk = |name: &str, cat: &str, venue: u64, perf: u64, day: u32| NewEvent {
        name: name.into(),
        description: format!("{name} live"),
        category: cat.into(),
        venue_id: venue,
        performer_ids: vec![perf],
        starts_at: format!("2030-03-{day:02}T20:00:00Z"),
        hold_ttl_s: None,
        per_user_cap: None,
    };
    let e1 = a
        .create_event(&mk("Taylor Swift Eras", "concert", london, taylor, 10))
        .await
        .unwrap();
    let e2 = a
        .create_event(&mk("Taylor Swift Eras", "concert", nyc, taylor, 20))
        .await
        .unwrap();
    let e3 = a
        .create_event(&mk("Midnight Jazz", "jazz", london, owls, 15))
        .await
        .unwrap();
    let e4 = a
        .create_event(&mk("Taylored Suits Fashion Show", "theatre", nyc, owls, 5))
        .await
        .unwrap();
    let ids = |v: &Value| -> Vec<u64> {
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["event_id"].as_u64().unwrap())
            .collect()
    };

    // Every node's own index converges on the catalogue.
    for n in &cluster.nodes {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (s, v) = search(&n.addr, "sort=date").await;
            if s == 200 && v["total"] == 4 {
                assert_eq!(ids(&v), vec![e4, e1, e3, e2], "date order on node {}", n.id);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {} index did not converge: {s} {v}",
                n.id
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let addr = cluster.nodes[1].addr.clone();
    // Typos, and exact above fuzzy.
    let (_, v) = search(&addr, "q=tayler%20swfit").await;
    let got = ids(&v);
    assert!(got.contains(&e1) && got.contains(&e2), "fuzzy: {v}");
    let (_, v) = search(&addr, "q=taylor").await;
    let got = ids(&v);
    assert_eq!(
        got.len(),
        3,
        "taylor matches both tours exactly and 'taylored' by typo tolerance: {v}"
    );
    assert_eq!(
        *got.last().unwrap(),
        e4,
        "the fuzzy match ranks below exact ones: {v}"
    );
    // Prefix (type-ahead).
    let (_, v) = search(&addr, "q=midn").await;
    // e3 has the word in its name and performer; e4 only through its performer.
    assert_eq!(ids(&v), vec![e3, e4], "prefix: {v}");
    // Filters alone and combined.
    let (_, v) = search(&addr, "city=london&sort=date").await;
    assert_eq!(ids(&v), vec![e1, e3]);
    let (_, v) = search(&addr, "category=concert&city=New%20York").await;
    assert_eq!(ids(&v), vec![e2]);
    let (_, v) = search(&addr, &format!("performer_id={owls}&sort=date")).await;
    assert_eq!(ids(&v), vec![e4, e3]);
    let (_, v) = search(&addr, &format!("venue_id={nyc}&q=taylor")).await;
    assert!(ids(&v).contains(&e2) && !ids(&v).contains(&e1));
    let (_, v) = search(
        &addr,
        "from=2030-03-10T00:00:00Z&to=2030-03-15T23:59:59Z&sort=date",
    )
    .await;
    assert_eq!(ids(&v), vec![e1, e3]);
    // Pagination: no duplicates, no gaps.
    let mut paged = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..10 {
        let q = match &token {
            Some(t) => format!("sort=date&page_size=3&page_token={t}"),
            None => "sort=date&page_size=3".to_string(),
        };
        let (_, v) = search(&addr, &q).await;
        paged.extend(ids(&v));
        match v["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(paged, vec![e4, e1, e3, e2]);
    // Bad parameters name the parameter.
    for (q, param) in [
        ("sort=popular", "sort"),
        ("from=2030-03-10T00:00:00Z&to=2030-03-01T00:00:00Z", "to"),
        ("from=yesterday", "from"),
        ("page_size=1000", "page_size"),
        ("page_token=zzz", "page_token"),
        ("performer_id=abc", "performer_id"),
        ("colour=red", "colour"),
        ("radius_km=-1&lat=1&lon=1", "radius_km"),
    ] {
        let (s, v) = search(&addr, q).await;
        assert_eq!((s, v["parameter"].as_str()), (400, Some(param)), "{q}: {v}");
    }

    // Geo: the hall is ~4.9 km from this point; radius boundaries either side.
    let (_, v) = search(&addr, "lat=51.5&lon=-0.1&radius_km=6&sort=date").await;
    assert_eq!(ids(&v), vec![e1, e3], "{v}");
    assert!(
        (v["results"][0]["distance_km"].as_f64().unwrap() - 4.85).abs() < 0.1,
        "{v}"
    );
    let (_, v) = search(&addr, "lat=51.5&lon=-0.1&radius_km=4").await;
    assert_eq!(v["total"], 0, "{v}");
    let (_, v) = search(&addr, "lat=40.7&lon=-74.0&sort=distance").await;
    let got = ids(&v);
    assert_eq!(got.len(), 4);
    assert!(
        [e2, e4].contains(&got[0]) && [e2, e4].contains(&got[1]),
        "New York events first: {v}"
    );
    // Availability: sell out the general-admission event (capacity 10).
    let (_, v) = search(&addr, &format!("q=taylor&venue_id={nyc}")).await;
    assert_eq!(
        (
            v["results"][0]["available"].as_u64(),
            v["results"][0]["min_price_cents"].as_u64()
        ),
        (Some(10), Some(100)),
        "{v}"
    );
    for buyer in ["ga-1", "ga-2"] {
        let c = cluster.user(buyer);
        let h = c.hold(e2, Selection::Quantity(5)).await.unwrap();
        c.confirm(&h.hold_id, "pay").await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, v) = search(&addr, "available_only=true&sort=date").await;
        if !ids(&v).contains(&e2) {
            assert_eq!(ids(&v), vec![e4, e1, e3]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sold-out event still listed as available: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (q, param) in [
        ("radius_km=5", "radius_km"),
        ("sort=distance", "sort"),
        ("lat=100&lon=0", "lat"),
        ("lat=10", "lon"),
        ("available_only=maybe", "available_only"),
    ] {
        let (s, v) = search(&addr, q).await;
        assert_eq!((s, v["parameter"].as_str()), (400, Some(param)), "{q}: {v}");
    }

    // The client library pages through the same results.
    let c = cluster.user("searcher");
    let mut q = boxoffice_client::SearchQuery {
        q: Some("tayler swfit".into()),
        page_size: Some(1),
        ..Default::default()
    };
    let mut via_client = Vec::new();
    for _ in 0..5 {
        let page = c.search(&q).await.unwrap();
        assert_eq!(page.total, 2);
        via_client.extend(page.results.iter().map(|h| h.event_id));
        match page.next_page_token {
            Some(t) => q.page_token = Some(t),
            None => break,
        }
    }
    via_client.sort();
    assert_eq!(via_client, vec![e1, e2]);

    // Updates and bulk creates reach every node's index and cached event views,
    // including a node that was down when they were applied.
    let event_name = |addr: String, id: u64| async move {
        let v: Value = reqwest::get(format!("http://{addr}/v1/events/{id}"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["event"]["name"].as_str().map(str::to_string)
    };
    for n in &cluster.nodes {
        assert_eq!(
            event_name(n.addr.clone(), e3).await.as_deref(),
            Some("Midnight Jazz"),
            "cached view on node {}",
            n.id
        );
    }
    cluster.kill(0);
    let update = boxoffice_client::EventUpdate {
        name: Some("Moonlight Gala".into()),
        category: Some("gala".into()),
        ..Default::default()
    };
    a.update_event(e3, &update).await.unwrap();
    let bad = a
        .update_event(e3, &boxoffice_client::EventUpdate::default())
        .await;
    assert!(bad.is_err(), "an empty update is refused");
    let batch: Vec<NewEvent> = (1..=3)
        .map(|i| mk(&format!("Bulk Loaded Night {i}"), "club", nyc, owls, 20 + i))
        .collect();
    let bulk = a.create_events(&batch).await.unwrap();
    assert_eq!(bulk.len(), 3);
    cluster.spawn(0);
    cluster.wait_healthy(0).await;
    for n in &cluster.nodes {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let name = event_name(n.addr.clone(), e3).await;
            let (_, by_new_name) = search(&n.addr, "q=moonlight").await;
            let (_, by_category) = search(&n.addr, "category=gala").await;
            let (_, bulk_found) = search(&n.addr, "q=bulk%20loaded&sort=date").await;
            if name.as_deref() == Some("Moonlight Gala")
                && by_new_name["results"].is_array()
                && ids(&by_new_name) == vec![e3]
                && ids(&by_category) == vec![e3]
                && ids(&bulk_found) == bulk
            {
                let (_, by_old_category) = search(&n.addr, "category=jazz").await;
                assert_eq!(
                    by_old_category["total"], 0,
                    "old category still indexed on node {}: {by_old_category}",
                    n.id
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {} did not converge after update: {name:?} {by_new_name} {bulk_found}",
                n.id
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // Index directory deleted: the node rebuilds it from its replica at start-up.
    cluster.kill(2);
    std::fs::remove_dir_all(cluster.nodes[2].data_dir.join("search")).unwrap();
    cluster.spawn(2);
    cluster.wait_healthy(2).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, v) = search(&cluster.nodes[2].addr, "q=tayler%20swfit").await;
        let (_, updated) = search(&cluster.nodes[2].addr, "q=moonlight").await;
        if s == 200 && ids(&v).len() == 2 && updated["total"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "index not rebuilt: {s} {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_replica_refuses_local_reads() {
    let mut cluster = TestCluster::start(3, 1, &["--replica-staleness-ms-max", "2500"]).await;
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

/// A minimal Server-Sent Events reader.
struct SseReader {
    resp: reqwest::Response,
    buf: String,
}

#[derive(Debug)]
struct SseEvent {
    kind: String,
    id: Option<u64>,
    data: Value,
}

impl SseReader {
    async fn open(addr: &str, event: u64, last_event_id: Option<u64>) -> SseReader {
        let mut req =
            reqwest::Client::new().get(format!("http://{addr}/v1/events/{event}/seats/stream"));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        SseReader {
            resp,
            buf: String::new(),
        }
    }

    /// Next non-comment event, or None after `timeout`.
    async fn next(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut e = SseEvent {
                    kind: "message".into(),
                    id: None,
                    data: Value::Null,
                };
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        e.kind = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        e.id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if data.is_empty() {
                    continue; // keep-alive comment
                }
                e.data = serde_json::from_str(&data).unwrap();
                return Some(e);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.resp.chunk()).await {
                Ok(Ok(Some(bytes))) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_seat_map_stream_with_expiry_and_resume() {
    let cluster = TestCluster::start(3, 1, &[]).await;
    let (event, _) = cluster.venue_and_event(10, 2, 8).await;
    let addr = cluster.nodes[1].addr.clone();
    let wait = Duration::from_secs(10);
    let mut s = SseReader::open(&addr, event, None).await;
    let first = s.next(wait).await.expect("snapshot");
    assert_eq!(first.kind, "snapshot");
    assert_eq!(first.data["seat_map"]["available"], 10);
    let alice = cluster.user("alice");
    let h = alice
        .hold(event, Selection::Seats(vec![0, 1]))
        .await
        .unwrap();
    alice.confirm(&h.hold_id, "pay").await.unwrap();
    let h2 = alice.hold(event, Selection::Seats(vec![2])).await.unwrap();
    alice.release(&h2.hold_id).await.unwrap();
    let mut seen = Vec::new();
    let mut last_id = first.id.unwrap();
    for _ in 0..4 {
        let e = s.next(wait).await.expect("change");
        assert_eq!(e.kind, "change");
        let id = e.id.unwrap();
        assert!(id > last_id, "ids increase, no repeats");
        last_id = id;
        seen.push((
            e.data["kind"].as_str().unwrap().to_string(),
            e.data["seat_ids"].clone(),
        ));
    }
    assert_eq!(
        seen,
        vec![
            ("held".into(), json!([0, 1])),
            ("sold".into(), json!([0, 1])),
            ("held".into(), json!([2])),
            ("released".into(), json!([2]))
        ]
    );
    // Expiry shows up at the expiry instant.
    let h3 = alice.hold(event, Selection::Seats(vec![3])).await.unwrap();
    let e = s.next(wait).await.unwrap();
    assert_eq!(
        (e.kind.as_str(), e.data["kind"].as_str()),
        ("change", Some("held"))
    );
    last_id = e.id.unwrap();
    let e = s.next(wait).await.expect("expired");
    let now = boxoffice_now_ms();
    assert_eq!(e.kind, "expired");
    assert_eq!(e.data["seat_ids"], json!([3]));
    assert!(
        now + 50 >= h3.expires_at_ms && now <= h3.expires_at_ms + 1000,
        "expired announced at {now}, expiry {}",
        h3.expires_at_ms
    );
    drop(s);

    // Missed while disconnected: resumed from Last-Event-ID, each change once.
    let h4 = alice.hold(event, Selection::Seats(vec![5])).await.unwrap();
    let mut s = SseReader::open(&addr, event, Some(last_id)).await;
    let e = s.next(wait).await.expect("replayed change");
    assert_eq!(e.kind, "change", "{e:?}");
    assert_eq!(e.data["hold_id"], json!(h4.hold_id));
    assert!(e.id.unwrap() > last_id);
    let later = s.next(Duration::from_millis(500)).await;
    assert!(later.is_none(), "nothing else to send: {later:?}");
    // A fresh connection starts from a snapshot showing the current state.
    let mut s = SseReader::open(&cluster.nodes[2].addr, event, None).await;
    let e = s.next(wait).await.unwrap();
    assert_eq!(e.kind, "snapshot");
    let seats = e.data["seat_map"]["seats"].as_array().unwrap();
    let status = |i: usize| seats[i]["status"].as_str().unwrap().to_string();
    assert_eq!(
        (status(0), status(2), status(3), status(5)),
        (
            "sold".into(),
            "available".into(),
            "available".into(),
            "held".into()
        )
    );
}

fn boxoffice_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A consumer that stops reading its live stream is dropped (its stream slot and
/// queue freed) while a consumer that keeps up on the same node gets every change
/// exactly once. The node caps each connection's kernel send buffer at 64 KiB
/// here (`limits.socket_send_buffer_bytes`; OS autotuning would buffer a few MB).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_stream_consumer_is_dropped_and_memory_stays_bounded() {
    use futures::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SEATS: u32 = 3200;
    const BLOCK: u32 = 100;
    const PER_BLOCK: u32 = 20;
    const CHANGES: usize = 2 * (SEATS / BLOCK * PER_BLOCK) as usize;
    let cluster = TestCluster::start(
        3,
        1,
        &[
            "--limit",
            "sse_lag_max=2048",
            "--limit",
            "sse_send_timeout_ms=5000",
            "--limit",
            "socket_send_buffer_bytes=65536",
        ],
    )
    .await;
    let (event, _) = cluster.venue_and_event(SEATS, 600, SEATS).await;
    let addr = cluster.nodes[1].addr.clone();
    let node_admin = Client::new(client_config(
        vec![format!("http://{addr}")],
        mint("ops", true),
    ))
    .unwrap();
    let open_streams = || async {
        node_admin.cluster().await.unwrap()["sse_streams_open"]
            .as_u64()
            .unwrap()
    };

    // The slow consumer: a small receive window, and it never reads.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut slow = sock.connect(addr.parse().unwrap()).await.unwrap();
    slow.write_all(
        format!("GET /v1/events/{event}/seats/stream HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    // The good consumer reads everything.
    let mut good = SseReader::open(&addr, event, None).await;
    assert_eq!(
        good.next(Duration::from_secs(5)).await.unwrap().kind,
        "snapshot"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_streams().await < 2 {
        assert!(Instant::now() < deadline, "both streams should be open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reader = tokio::spawn(async move {
        let mut ids = Vec::new();
        let mut kinds = BTreeSet::new();
        while ids.len() < CHANGES {
            match good.next(Duration::from_secs(60)).await {
                Some(e) => {
                    kinds.insert(e.kind.clone());
                    if e.kind == "change" {
                        ids.push(e.id.unwrap());
                    }
                }
                None => break,
            }
        }
        (ids, kinds)
    });

    let user = cluster.user("streamer");
    let blocks = SEATS / BLOCK;
    let failures: usize = futures::stream::iter(0..blocks)
        .map(|b| {
            let user = user.clone();
            async move {
                let mut failed = 0;
                for _ in 0..PER_BLOCK {
                    let seats: Vec<u32> = (b * BLOCK..(b + 1) * BLOCK).collect();
                    match user.hold(event, Selection::Seats(seats)).await {
                        Ok(h) => failed += usize::from(user.release(&h.hold_id).await.is_err()),
                        Err(_) => failed += 1,
                    }
                }
                failed
            }
        })
        .buffer_unordered(blocks as usize)
        .fold(0, |a, b| async move { a + b })
        .await;
    assert_eq!(failures, 0, "every hold and release succeeds");

    let (ids, kinds) = reader.await.unwrap();
    assert_eq!(
        ids.len(),
        CHANGES,
        "the keeping-up consumer saw every change ({kinds:?})"
    );
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        ids.len(),
        "each change once"
    );
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in log order");
    assert!(
        !kinds.contains("reset"),
        "the keeping-up consumer was not dropped"
    );
    // The stalled stream was dropped: only the good one holds a slot.
    let deadline = Instant::now() + Duration::from_secs(30);
    while open_streams().await != 1 {
        assert!(
            Instant::now() < deadline,
            "the stalled stream still holds its slot"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // What the slow consumer finally reads is cut short, and the response ends.
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let read_until = Instant::now() + Duration::from_secs(30);
    while !got.ends_with(b"\r\n0\r\n\r\n") && Instant::now() < read_until {
        match tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => panic!("reading the slow stream: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "{}",
        &text[..text.len().min(200)]
    );
    assert!(
        text.ends_with("\r\n0\r\n\r\n"),
        "the response ended: {}",
        &text[text.len().saturating_sub(300)..]
    );
    let changes = text.matches("event: change").count();
    assert!(
        changes < CHANGES,
        "the slow consumer was cut off, not served all {CHANGES} changes ({changes})"
    );
}

/// The client library's live seat map: snapshot, then each change once, carried
/// across the death of the node it was streaming from (reconnect elsewhere with
/// Last-Event-ID).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_seat_stream_survives_its_node() {
    use boxoffice_client::StreamEvent;
    let mut cluster = TestCluster::start(3, 1, &[]).await;
    let (event, _) = cluster.venue_and_event(20, 600, 20).await;
    let urls: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("http://{}", n.addr))
        .collect();
    let watcher = Client::new(client_config(urls, mint("watcher", false))).unwrap();
    let mut stream = watcher.seat_stream(event, None).await.unwrap();
    let wait = Duration::from_secs(20);
    match tokio::time::timeout(wait, stream.next())
        .await
        .unwrap()
        .unwrap()
    {
        StreamEvent::Snapshot(map) => assert_eq!((map.capacity, map.available), (20, 20)),
        other => panic!("expected a snapshot first: {other:?}"),
    }
    let user = cluster.user("buyer");
    let mut held = Vec::new();
    let mut seen = Vec::new();
    for seat in 0..5u32 {
        held.push(
            user.hold(event, Selection::Seats(vec![seat]))
                .await
                .unwrap()
                .hold_id,
        );
    }
    while seen.len() < 5 {
        match tokio::time::timeout(wait, stream.next())
            .await
            .unwrap()
            .unwrap()
        {
            StreamEvent::Change(c) => seen.push(c),
            other => panic!("unexpected {other:?}"),
        }
    }
    // The stream is on node 0 (the first URL): kill it, keep selling.
    cluster.kill(0);
    for seat in 5..10u32 {
        held.push(
            user.hold(event, Selection::Seats(vec![seat]))
                .await
                .unwrap()
                .hold_id,
        );
    }
    while seen.len() < 10 {
        match tokio::time::timeout(wait, stream.next())
            .await
            .expect("stream resumed")
            .unwrap()
        {
            StreamEvent::Change(c) => seen.push(c),
            other => panic!("a resumable stream gets no new snapshot: {other:?}"),
        }
    }
    assert!(stream.reconnects >= 1);
    let ids: Vec<String> = seen.iter().map(|c| c.hold_id.clone()).collect();
    assert_eq!(ids, held, "every change once, in order");
    assert!(seen.windows(2).all(|w| w[0].index < w[1].index));
    assert!(seen
        .iter()
        .all(|c| c.kind == "held" && c.expires_at_ms.is_some()));
    // Stream positions are `log index x 1024 + position within the entry`.
    assert_eq!(
        stream.last_event_id().map(|p| p / 1024),
        Some(seen[9].index)
    );
}

/// The seat map of `event` as node `addr` answers a linearizable read (raw JSON).
async fn linearizable_seat_map(addr: &str, event: u64) -> Value {
    reqwest::get(format!(
        "http://{addr}/v1/events/{event}/seats?consistency=linearizable"
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap()
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
        &["--fault-injection", "--replica-staleness-ms-max", "60000"],
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
            .json(&json!({ "offset_ms": offset_ms }));
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
        Err(Error::Api(p)) => assert_eq!(p.code, "seat_unavailable"),
        other => panic!("expected seat_unavailable, got {other:?}"),
    }
    skew(leader, 0).await;
}

/// The admin API's membership changes (what the jepsen membership nemesis uses):
/// remove a voter, add it back as a learner, promote it; bad input changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_remove_add_learner_promote() {
    let cluster = TestCluster::start(3, 1, &[]).await;
    let (event, _) = cluster.venue_and_event(4, 60, 4).await;
    let admin_token = mint("admin", true);
    let http = reqwest::Client::new();
    let addr0 = cluster.nodes[0].addr.clone();
    let change = |group: u16, id: u64, body: Value| {
        let req = http
            .post(format!(
                "http://{addr0}/admin/v1/groups/{group}/members/{id}"
            ))
            .bearer_auth(&admin_token)
            .json(&body);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, v) = change(1, 3, json!({"action": "remove"})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["voters"], json!([1, 2]), "{v}");
    // Two voters left: writes still commit.
    let alice = cluster.user("alice");
    alice.hold(event, Selection::Seats(vec![0])).await.unwrap();
    // Removing again is a no-op; bad input is refused and changes nothing.
    assert_eq!(change(1, 3, json!({"action": "remove"})).await.0, 200);
    for bad in [
        json!({"action": "explode"}),
        json!({"action": "add_learner"}),
        json!({"action": "promote", "addr": "x"}),
    ] {
        let (s, v) = change(1, 3, bad).await;
        assert_eq!(s, 400, "{v}");
        assert_eq!(v["code"], "invalid_parameter", "{v}");
    }
    assert_eq!(change(9, 3, json!({"action": "remove"})).await.0, 404);
    let addr3 = cluster.nodes[2].addr.clone();
    let (s, v) = change(1, 3, json!({"action": "add_learner", "addr": addr3})).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = change(1, 3, json!({"action": "promote"})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["voters"], json!([1, 2, 3]), "{v}");
    // The returning voter catches up: its linearizable read sees the hold.
    let v = linearizable_seat_map(&cluster.nodes[2].addr, event).await;
    assert_eq!(v["seats"][0]["status"], "held", "{v}");
}
