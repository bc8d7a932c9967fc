//! Abuse: rate limits per user and per client address.

use std::time::Duration;

use boxoffice_client::ProblemCode;
use serde_json::{json, Value};

use crate::support::*;

/// One `POST /v1/holds` of one seat by `token` through `addr`: status, the
/// `Retry-After` header, and the body.
async fn hold(
    http: &reqwest::Client,
    addr: &str,
    token: &str,
    event: u64,
    seat: u32,
    key: &str,
) -> (u16, Option<String>, Value) {
    let r = http
        .post(format!("http://{addr}/v1/holds"))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&json!({"event_id": event, "seat_ids": [seat]}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, retry, r.json().await.unwrap_or(Value::Null))
}

/// Issue 14: nothing limited how fast one user or one address could act; a bot
/// could send holds (or searches) as fast as the network carried them. Now each
/// user and each client address has a budget per kind of request: over it, 429
/// `rate_limited` with `Retry-After`, naming the limit, while others go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_and_one_address_are_held_to_their_rates() {
    let cluster = TestCluster::start(
        3,
        1,
        // Over-limit answers at once: the refill while the loops run stays small.
        "[rate_limits]\nuser_writes = { per_s = 1, burst = 4 }\naddress_searches = { per_s = 1, burst = 3 }\nover_limit_delay_ms = 0",
    )
    .await;
    let (event, _) = cluster.venue_and_event(40, 60, 40).await;
    let http = reqwest::Client::new();
    let addr = cluster.nodes[0].addr.clone();
    let bot = mint("bot", false);
    let mut accepted = 0;
    let mut limited = 0;
    for seat in 0..12u32 {
        let (status, retry, body) =
            hold(&http, &addr, &bot, event, seat, &format!("bot-{seat}")).await;
        match status {
            201 => accepted += 1,
            429 => {
                limited += 1;
                assert_eq!(body["code"], ProblemCode::RateLimited.as_str(), "{body}");
                assert_eq!(body["limit"], "rate_limits.user_writes", "{body}");
                let retry: u64 = retry.expect("Retry-After").parse().unwrap();
                assert!((1..=2).contains(&retry), "Retry-After {retry}");
            }
            other => panic!("hold answered {other}: {body}"),
        }
    }
    // The burst, and at most what refilled while the loop ran.
    assert!((4..=6).contains(&accepted), "{accepted} accepted");
    assert_eq!(accepted + limited, 12);
    // Another user is not held back by the bot's budget.
    let (status, _, body) = hold(&http, &addr, &mint("honest", false), event, 39, "honest-1").await;
    assert_eq!(status, 201, "{body}");
    // The bot's budget refills.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _, body) = hold(&http, &addr, &bot, event, 30, "bot-late").await;
    assert_eq!(status, 201, "{body}");
    // Searches are limited per client address, token or not.
    let mut codes = Vec::new();
    for _ in 0..6 {
        let (status, body) = search(&addr, "q=test").await;
        if status == 429 {
            assert_eq!(body["limit"], "rate_limits.address_searches", "{body}");
        }
        codes.push(status);
    }
    let limited = codes.iter().filter(|s| **s == 429).count();
    assert!((2..=3).contains(&limited), "{codes:?}");
    assert!(codes.iter().all(|s| *s == 200 || *s == 429), "{codes:?}");
    // Each node counts its own clients: another node still answers.
    let (status, body) = search(&cluster.nodes[1].addr, "q=test").await;
    assert_eq!(status, 200, "{body}");
}

/// Issue 14: a user could hold seats, release them (or let them expire) and
/// hold again without end, keeping seats from everyone with nothing bought.
/// Now holds per user per event are limited (`rate_limits.user_event_holds`),
/// counted by the shard's leader whichever node took the request; the user's
/// other events and other users are not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holding_and_releasing_over_and_over_is_limited_per_user_and_event() {
    let cluster = TestCluster::start(
        3,
        1,
        "[rate_limits]\nuser_event_holds = { max = 3, window_s = 3600 }",
    )
    .await;
    let (event, _) = cluster.venue_and_event(10, 60, 10).await;
    let (other_event, _) = cluster.venue_and_event(10, 60, 10).await;
    let churner = cluster.user("churner");
    for _ in 0..3 {
        let h = churner
            .hold(event, boxoffice_client::Selection::Seats(vec![0]))
            .await
            .unwrap();
        churner.release(&h.hold_id).await.unwrap();
    }
    // The fourth, through any node, is refused before anything is proposed.
    let http = reqwest::Client::new();
    let token = mint("churner", false);
    for (i, n) in cluster.nodes.iter().enumerate() {
        let (status, retry, body) =
            hold(&http, &n.addr, &token, event, 0, &format!("again-{i}")).await;
        assert_eq!(status, 429, "node {i}: {body}");
        assert_eq!(body["limit"], "rate_limits.user_event_holds", "{body}");
        let retry: u64 = retry.expect("Retry-After").parse().unwrap();
        assert!((1..=1200).contains(&retry), "Retry-After {retry}");
    }
    let seats = cluster
        .user("viewer")
        .seats(event, boxoffice_client::Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(
        seats.seats[0].status,
        boxoffice_client::SeatStatus::Available
    );
    // The same user on another event, and another user on this one, go on.
    churner
        .hold(other_event, boxoffice_client::Selection::Seats(vec![0]))
        .await
        .unwrap();
    cluster
        .user("honest")
        .hold(event, boxoffice_client::Selection::Seats(vec![0]))
        .await
        .unwrap();
}

/// Issue 14 (the abuse figures): a flood from one address was answered as fast
/// as it came, each 429 costing the node as much as the flood cared to spend.
/// Now a request over its address's limit is answered after
/// `rate_limits.over_limit_delay_ms`, at most
/// `over_limit_delayed_per_address_max` of them at once (the rest at once),
/// so a bot with a fixed number of requests in flight slows to that many per delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_over_its_address_limit_is_answered_slowly() {
    let cluster = TestCluster::start(
        1,
        1,
        "[rate_limits]\naddress_searches = { per_s = 1, burst = 1 }\nover_limit_delay_ms = 800\nover_limit_delayed_per_address_max = 2",
    )
    .await;
    let addr = cluster.nodes[0].addr.clone();
    let (status, body) = search(&addr, "q=test").await;
    assert_eq!(status, 200, "{body}");
    let timed = |addr: String| async move {
        let t = std::time::Instant::now();
        let (status, body) = search(&addr, "q=test").await;
        (status, body, t.elapsed())
    };
    let answers = futures::future::join_all((0..4).map(|_| timed(addr.clone()))).await;
    let mut slow = 0;
    for (status, body, took) in &answers {
        assert_eq!(*status, 429, "{body}");
        assert_eq!(body["limit"], "rate_limits.address_searches", "{body}");
        if *took >= Duration::from_millis(700) {
            slow += 1;
        } else {
            assert!(*took < Duration::from_millis(400), "took {took:?}");
        }
    }
    assert_eq!(
        slow,
        2,
        "{:?}",
        answers.iter().map(|a| a.2).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
/// `limits.in_flight_max` counts every route of a listener together: while a
/// write waits for a quorum that is gone, a health check on the same node is
/// shed with 503 `overloaded`, and answered again once the write has ended.
async fn in_flight_max_counts_every_route_of_a_listener() {
    let mut cluster = TestCluster::start(
        3,
        1,
        "[limits]\nin_flight_max = 1\nwrite_timeout_ms = 4000\n",
    )
    .await;
    let (event, _) = cluster.venue_and_event(10, 60, 4).await;
    cluster.kill(1);
    cluster.kill(2);
    let http = reqwest::Client::new();
    let addr = cluster.nodes[0].addr.clone();
    let token = mint("alice", false);
    let write = tokio::spawn({
        let http = http.clone();
        let addr = addr.clone();
        async move { hold(&http, &addr, &token, event, 1, "slow-1").await }
    });
    // The write is in flight (it waits up to write_timeout_ms for a quorum).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !write.is_finished(),
        "the write should still wait for a quorum"
    );
    let r = http
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(
        (status, &body["code"]),
        (503, &json!("overloaded")),
        "{body}"
    );
    let (status, _, body) = write.await.unwrap();
    assert_ne!(status, 200, "no quorum, no hold: {body}");
    let r = http
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
