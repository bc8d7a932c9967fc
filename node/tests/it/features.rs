//! Feature levels: replicated behaviour that changes (what apply does) switches
//! on every replica of a group at one log index, once every member allows it.

use std::time::Duration;

use boxoffice_node::local_cluster::LocalCluster;
use boxoffice_raft::command::FEATURE_LEVEL_MAX;

use crate::support::*;

/// Sets (or, with `None`, removes) `raft.feature_level_max` in node `id`'s
/// settings file.
fn pin(local: &LocalCluster, id: u64, level: Option<u32>) {
    let path = &local.nodes[&id].config;
    let mut table: toml::Table = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let raft = table
        .entry("raft")
        .or_insert_with(|| toml::Value::Table(Default::default()))
        .as_table_mut()
        .unwrap();
    match level {
        Some(l) => raft.insert("feature_level_max".into(), toml::Value::Integer(l.into())),
        None => raft.remove("feature_level_max"),
    };
    std::fs::write(path, toml::to_string(&table).unwrap()).unwrap();
}

/// Every group's feature level on every node, and whether every node knows
/// what level each member allows.
async fn levels(cluster: &TestCluster) -> (Vec<u32>, bool) {
    let mut levels = Vec::new();
    let mut all_known = true;
    for i in 0..cluster.nodes.len() {
        let status = cluster.client_at(i, "admin", true).cluster().await.unwrap();
        levels.extend(status.groups.iter().map(|g| g.feature_level));
        all_known &= status.members.iter().all(|m| m.feature_level_max.is_some());
    }
    (levels, all_known)
}

/// Issue 14: bounding sessions changes what apply does, so replicas must
/// switch together, and only once none of them runs a release that would apply
/// the entry differently (or not decode it). Before, there was no such switch:
/// the behaviour a replica applied was its binary's. Now a node pinned at
/// level 0 holds every group at 0; once it allows more, the leaders raise each
/// group to the newest level, and every replica shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_reach_the_level_every_member_allows() {
    let mut cluster = TestCluster::start_with(3, 2, "", |local| pin(local, 3, Some(0))).await;
    eventually(
        Duration::from_secs(20),
        "every node hears every member's level",
        || async { levels(&cluster).await.1 },
    )
    .await;
    let status = cluster.client_at(0, "admin", true).cluster().await.unwrap();
    let pinned = status.members.iter().find(|m| m.id == 3).unwrap();
    assert_eq!(pinned.feature_level_max, Some(0), "{status:?}");
    // Leaders look every half tick interval (0.5 s); give them several turns.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (held, _) = levels(&cluster).await;
    assert_eq!(held.len(), 3 * 3, "three groups on three nodes");
    assert!(held.iter().all(|&l| l == 0), "{held:?}");

    cluster.kill(2);
    pin(&cluster.local, 3, None);
    cluster.spawn(2);
    cluster.wait_healthy(2).await;
    eventually(
        Duration::from_secs(30),
        "every group on every node at the newest level",
        || async {
            let (levels, _) = levels(&cluster).await;
            levels.len() == 9 && levels.iter().all(|&l| l == FEATURE_LEVEL_MAX)
        },
    )
    .await;
    // Writes go on at the new level.
    let (event, _) = cluster.venue_and_event(4, 60, 4).await;
    let hold = cluster
        .user("fan")
        .hold(event, boxoffice_client::Selection::Seats(vec![0]))
        .await
        .expect("hold");
    assert_eq!(hold.seat_ids, vec![0]);
}
