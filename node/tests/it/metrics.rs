//! `GET /metrics` on real nodes: what writes, Raft groups and storage report,
//! in the Prometheus text format, and that it follows what happened.

use std::collections::BTreeMap;
use std::time::Duration;

use boxoffice_client::{ProblemCode, Selection};

use crate::support::*;

/// The samples of a scrape: (name with its labels as written) -> value.
async fn scrape(addr: &str) -> BTreeMap<String, f64> {
    let resp = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = resp.text().await.unwrap();
    let mut samples = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "{line} twice"
        );
    }
    samples
}

fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no {series} in {:#?}", samples.keys().collect::<Vec<_>>()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
/// A hold, a conflicting hold and a confirm are counted by outcome on the
/// node that answered them; every node reports every group at the same
/// applied index once caught up, the leader each follower's lag, and storage
/// its fsyncs, appends and applies.
async fn metrics_follow_writes_groups_and_storage() {
    let cluster = TestCluster::start(3, 1, "").await;
    let (event, shard) = cluster.venue_and_event(10, 60, 4).await;
    let leader = cluster.leader_of(shard).await;
    let addr = cluster.nodes[leader].addr.clone();
    let before = scrape(&addr).await;
    let ok_holds = "boxoffice_write_outcomes_total{outcome=\"ok\",route=\"/v1/holds\"}";
    let refused_holds =
        "boxoffice_write_outcomes_total{outcome=\"seat_unavailable\",route=\"/v1/holds\"}";
    let was = |s: &str| before.get(s).copied().unwrap_or(0.0);

    // Clients pinned to the leader, so it is the node that answers.
    let url = vec![format!("http://{addr}")];
    let alice = cluster.client(url.clone(), mint("alice", false));
    let bob = cluster.client(url, mint("bob", false));
    let h = alice
        .hold(event, Selection::Seats(vec![0, 1]))
        .await
        .unwrap();
    let conflict = bob
        .hold(event, Selection::Seats(vec![1]))
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), Some(ProblemCode::SeatUnavailable));
    alice.confirm(&h.hold_id, "pay-1").await.unwrap();

    let after = scrape(&addr).await;
    assert_eq!(value(&after, ok_holds) - was(ok_holds), 1.0);
    assert_eq!(value(&after, refused_holds) - was(refused_holds), 1.0);
    let g = format!("group=\"{shard}\"");
    assert_eq!(
        value(&after, &format!("boxoffice_raft_is_leader{{{g}}}")),
        1.0
    );
    assert_eq!(
        value(&after, &format!("boxoffice_raft_leader_id{{{g}}}")),
        cluster.nodes[leader].id as f64
    );
    assert!(value(&after, &format!("boxoffice_raft_term{{{g}}}")) >= 1.0);
    assert_eq!(value(&after, &format!("boxoffice_raft_voters{{{g}}}")), 3.0);
    for n in cluster
        .nodes
        .iter()
        .filter(|n| n.id != cluster.nodes[leader].id)
    {
        let lag = format!(
            "boxoffice_raft_follower_lag_entries{{follower=\"{}\",{g}}}",
            n.id
        );
        assert!(value(&after, &lag) >= 0.0);
    }
    // The three writes went through the leader's proposer, log and state machine.
    let count = |s: &BTreeMap<String, f64>, name: &str| {
        s.get(&format!("{name}_count{{{g}}}"))
            .copied()
            .unwrap_or(0.0)
    };
    assert!(
        count(&after, "boxoffice_proposer_batch_requests")
            >= count(&before, "boxoffice_proposer_batch_requests") + 1.0
    );
    assert!(
        count(&after, "boxoffice_raft_log_append_seconds")
            > count(&before, "boxoffice_raft_log_append_seconds")
    );
    assert!(
        count(&after, "boxoffice_raft_apply_seconds")
            > count(&before, "boxoffice_raft_apply_seconds")
    );
    assert!(
        value(&after, "boxoffice_wal_fsync_seconds_count")
            > value(&before, "boxoffice_wal_fsync_seconds_count")
    );
    assert!(value(&after, "boxoffice_rocksdb{property=\"memtable_bytes\"}") > 0.0);
    assert_eq!(
        value(&after, "boxoffice_rocksdb{property=\"write_stopped\"}"),
        0.0
    );

    // Every replica applies the same entries: once caught up, each reports the
    // leader's applied index for the shard.
    let applied = format!("boxoffice_raft_applied_index{{{g}}}");
    let target = value(&scrape(&addr).await, &applied);
    for n in &cluster.nodes {
        let addr = n.addr.clone();
        let applied = applied.clone();
        eventually(Duration::from_secs(10), "replicas catch up", || {
            let addr = addr.clone();
            let applied = applied.clone();
            async move { value(&scrape(&addr).await, &applied) >= target }
        })
        .await;
    }
}
