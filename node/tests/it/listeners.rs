//! The cluster's own traffic is private: Raft RPC and `/internal` live on the
//! peer listener only, behind the cluster key checked before any body is read;
//! public answers name nodes by id, never by cluster address; and both
//! listeners speak TLS when given a certificate.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use boxoffice_client::{Client, Selection};
use serde_json::Value;

use crate::support::*;

async fn status_of(http: &reqwest::Client, url: String) -> (u16, Value) {
    let r = http.post(&url).body("x").send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Issue 14: Raft RPC and `/internal/*` were served on the public port, behind
/// nothing but the cluster key (and the key was checked after the body had been
/// read). Now the public port has no such routes, the peer port has no public
/// ones, and a request without the key is refused from its headers alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_routes_are_on_the_peer_listener_only() {
    let cluster = TestCluster::start(3, 1, "").await;
    let http = reqwest::Client::new();
    let public = &cluster.nodes[0].addr;
    let peer = &cluster.nodes[0].peer_addr;
    for path in [
        "/raft/v1/1/append",
        "/raft/v1/1/vote",
        "/internal/v1/clock",
        "/internal/v1/propose/1",
    ] {
        let (s, v) = status_of(&http, format!("http://{public}{path}")).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (404, Some("not_found")),
            "{path} on the public port: {v}"
        );
        // On the peer port the route exists, but not for a caller without the key.
        let (s, _) = status_of(&http, format!("http://{peer}{path}")).await;
        assert_eq!(s, 401, "{path} on the peer port without the key");
    }
    for path in ["/v1/events", "/admin/v1/cluster", "/readyz"] {
        let r = http
            .get(format!("http://{peer}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404, "{path} on the peer port");
    }

    // A stranger announcing a 60 MB body is answered 401 at once, without the
    // node waiting for (or reading) a byte of it.
    let peer = peer.clone();
    let answer = tokio::task::spawn_blocking(move || {
        let mut tcp = std::net::TcpStream::connect(&peer).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let started = Instant::now();
        write!(
            tcp,
            "POST /raft/v1/1/append HTTP/1.1\r\nhost: {peer}\r\ncontent-length: 60000000\r\nx-boxoffice-cluster-key: wrong\r\n\r\n"
        )
        .unwrap();
        let mut buf = [0u8; 512];
        let n = tcp.read(&mut buf).unwrap_or(0);
        (
            String::from_utf8_lossy(&buf[..n]).to_string(),
            started.elapsed(),
        )
    })
    .await
    .unwrap();
    assert!(
        answer.0.starts_with("HTTP/1.1 401"),
        "answer to a keyless body: {:?}",
        answer.0
    );
    assert!(answer.1 < Duration::from_secs(3), "took {:?}", answer.1);
}

/// Issue 14: with one port for everything, the leader hint of write answers
/// (and `not_leader` bodies) carried the address peers use. Now membership
/// holds cluster addresses, and public answers name the leader by its public
/// address (which peers tell each other on their answers), every answer names
/// the node that gave it by id, and no cluster address appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_never_show_cluster_addresses() {
    let cluster = TestCluster::start(3, 1, "").await;
    let (event, _) = cluster.venue_and_event(4, 60, 4).await;
    let http = reqwest::Client::new();
    let token = mint("alice", false);
    let leader = cluster.leader_of(1).await;
    for (i, n) in cluster.nodes.iter().enumerate() {
        // A node learns its peers' public addresses from their answers (clock
        // probes, every second): the hint may lag a node's first second.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut attempt = 0;
        let headers = loop {
            attempt += 1;
            let r = http
                .post(format!("http://{}/v1/holds", n.addr))
                .bearer_auth(&token)
                .header("idempotency-key", format!("k-{i}-{attempt}"))
                .json(&serde_json::json!({"event_id": event, "quantity": 1}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let h = r.headers().clone();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            // Seated: quantity holds pick best available seats; release it.
            assert_eq!(status, 201, "{body}");
            let id = body["hold_id"].as_str().unwrap();
            http.delete(format!("http://{}/v1/holds/{id}", n.addr))
                .bearer_auth(&token)
                .header("idempotency-key", format!("r-{i}-{attempt}"))
                .send()
                .await
                .unwrap();
            if (h.contains_key("x-boxoffice-leader") && h.contains_key("x-boxoffice-epoch"))
                || Instant::now() > deadline
            {
                break h;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(
            headers["x-boxoffice-node"].to_str().unwrap(),
            n.id.to_string()
        );
        assert_eq!(
            headers["x-boxoffice-leader"].to_str().unwrap(),
            cluster.nodes[leader].addr,
            "node {i}"
        );
        // The routing headers: the shard, its placement epoch, the leader's term.
        assert_eq!(
            headers
                .get("x-boxoffice-shard")
                .and_then(|v| v.to_str().ok()),
            Some("1"),
            "{headers:?}"
        );
        // A bootstrapped group's first membership is at log index 0; a move
        // makes it grow (the placement test follows one).
        let epoch: Result<u64, _> = headers["x-boxoffice-epoch"].to_str().unwrap().parse();
        assert!(epoch.is_ok(), "{headers:?}");
        let term: u64 = headers["x-boxoffice-term"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(term >= 1, "{headers:?}");
        let text = format!("{headers:?}");
        for other in &cluster.nodes {
            assert!(!text.contains(&other.peer_addr), "{text}");
        }
    }
    let alice = cluster.user("alice");
    alice.hold(event, Selection::Seats(vec![3])).await.unwrap();
    assert_eq!(alice.leader_hint(1), Some(cluster.urls()[leader].clone()));
}

/// A self-signed certificate for 127.0.0.1 and localhost, written as PEM files
/// into `dir`: (cert, key).
fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let c =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert, key) = (dir.join("node.crt"), dir.join("node.key"));
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.key_pair.serialize_pem()).unwrap();
    (cert, key)
}

/// Issue 14: nothing spoke TLS. Now a cluster whose public and peer listeners
/// both have certificates replicates over TLS (peers verify each other against
/// `tls.peer_ca_file`), the client library books over https trusting the
/// cluster's certificate, and plain HTTP to either port gets no answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_over_tls() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(certs.path());
    let settings = format!(
        "[tls]\ncert_file = {c:?}\nkey_file = {k:?}\npeer_cert_file = {c:?}\npeer_key_file = {k:?}\npeer_ca_file = {c:?}\n",
        c = cert.display().to_string(),
        k = key.display().to_string(),
    );
    let cluster = TestCluster::start(3, 1, &settings).await;
    assert!(cluster.urls().iter().all(|u| u.starts_with("https://")));
    let (event, _) = cluster.venue_and_event(4, 60, 4).await;
    let alice = cluster.user("alice");
    let hold = alice
        .hold(event, Selection::Seats(vec![0, 1]))
        .await
        .unwrap();
    let booking = alice.confirm(&hold.hold_id, "pay-1").await.unwrap();
    assert_eq!(booking.seat_ids, vec![0, 1]);
    // Written through the leader, replicated over TLS: every node has it.
    for i in 0..3 {
        let at = cluster.client_at(i, "alice", false);
        let seats = at
            .seats(event, boxoffice_client::Consistency::Linearizable)
            .await
            .unwrap();
        assert_eq!(
            seats.seats[0].status,
            boxoffice_client::SeatStatus::Sold,
            "node {i}"
        );
    }
    // Without the certificate trusted, or without TLS, nothing is served.
    let plain = Client::new(client_config(cluster.urls(), mint("alice", false))).unwrap();
    assert!(plain.event(event, Default::default()).await.is_err());
    let http = reqwest::Client::new();
    for n in &cluster.nodes {
        for addr in [&n.addr, &n.peer_addr] {
            let r = http
                .get(format!("http://{addr}/healthz"))
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            assert!(
                r.as_ref().map(|r| !r.status().is_success()).unwrap_or(true),
                "plain HTTP to {addr}: {r:?}"
            );
        }
    }
}
