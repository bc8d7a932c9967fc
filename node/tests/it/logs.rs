//! Request ids and JSON logs: an id given by a client (or made up by the node)
//! comes back on the answer and is in the log lines of every node the request
//! went through, which are JSON objects with `--log-format json`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

/// `POST /v1/holds` of `seat` through `addr`, with `x-request-id: id` if given:
/// (status, the answer's x-request-id).
async fn hold(addr: &str, event: u64, seat: u32, id: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .post(format!("http://{addr}/v1/holds"))
        .bearer_auth(mint("tracer", false))
        .header(
            "idempotency-key",
            format!("k-{seat}-{}", id.unwrap_or("none").len()),
        )
        .json(&json!({"event_id": event, "seat_ids": [seat]}));
    if let Some(id) = id {
        req = req.header("x-request-id", id);
    }
    let resp = req.send().await.unwrap();
    let echoed = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    (resp.status().as_u16(), echoed)
}

/// Every line of a node's log, each of which must be a JSON object.
fn json_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Whether a log line is in a span whose `request_id` is `id`.
fn names(line: &Value, id: &str) -> bool {
    line["spans"]
        .as_array()
        .is_some_and(|spans| spans.iter().any(|s| s["request_id"] == json!(id)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
/// A write sent to a follower with an id: the answer has it, the follower's
/// lines about it name it, and so do the leader's lines for the forwarded
/// write; a write without an id, or with one unfit to log, gets one made up.
async fn a_request_id_is_answered_and_logged_on_every_node_it_touched() {
    let cluster = TestCluster::start_with_spec(
        3,
        1,
        "",
        |spec| {
            spec.log_json = true;
            spec.log_filter = "info,openraft=warn,tower_http=debug,boxoffice_node=debug".into();
        },
        |_| {},
    )
    .await;
    let (event, shard) = cluster.venue_and_event(10, 60, 10).await;
    let leader = cluster.leader_of(shard).await;
    let follower = (leader + 1) % cluster.nodes.len();
    let addr = &cluster.nodes[follower].addr;

    let (status, echoed) = hold(addr, event, 0, Some("trace-me-42")).await;
    assert!(status == 200 || status == 201, "{status}");
    assert_eq!(echoed, "trace-me-42");
    let made_up = format!("n{}-", cluster.nodes[follower].id);
    for given in [None, Some("not fit to log"), Some(&*"x".repeat(65))] {
        let (_, echoed) = hold(addr, event, 1, given).await;
        let hex = echoed
            .strip_prefix(&made_up)
            .unwrap_or_else(|| panic!("{echoed}"));
        assert!(
            hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
            "{echoed}"
        );
    }

    let log_of = |i: usize| cluster.local.nodes[&cluster.nodes[i].id].log.clone();
    for (i, role) in [(follower, "follower"), (leader, "leader")] {
        let path = log_of(i);
        eventually(Duration::from_secs(10), role, || {
            let path = path.clone();
            async move { json_lines(&path).iter().any(|l| names(l, "trace-me-42")) }
        })
        .await;
    }
    // The third node saw nothing of it.
    let other = (0..3).find(|i| *i != leader && *i != follower).unwrap();
    assert!(!json_lines(&log_of(other))
        .iter()
        .any(|l| names(l, "trace-me-42")));
}
