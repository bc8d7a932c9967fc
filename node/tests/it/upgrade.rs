//! An upgrade: this build's node started on a data directory written by the
//! release before stored types had versions of their own
//! (`storage/tests/fixtures/v1`: one node, two shards, snapshots taken and the
//! log purged, then more writes) serves every booking, hold, seat and event as
//! that node did, rebuilds its search index, and takes new bookings.

use std::time::Duration;

use boxoffice_client::{Consistency, Selection};
use boxoffice_node::local_cluster::{ClusterSpec, LocalCluster};
use serde_json::Value;

use crate::support::*;

/// The storage crate's fixture: a data directory of the first release and its answers.
fn fixture() -> String {
    format!(
        "{}/../storage/tests/fixtures/v1",
        crate::support::manifest_dir().display()
    )
}

fn answer(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("{}/answers/{name}.json", fixture())).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// `GET {path}` as `user` from `base`.
async fn get(base: &str, path: &str, user: &str) -> Value {
    let r = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(mint(user, false))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_the_previous_release_keeps_every_booking() {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(format!("{}/node-1.tar.gz", fixture()))
        .arg("-C")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let mut spec = ClusterSpec::new(BIN, dir.path(), 1, 2);
    spec.secrets = Some(secrets());
    let mut cluster = LocalCluster::create(spec).unwrap();
    cluster.start_all().await.unwrap();
    // Bootstrapped already: its groups come back from its own disk.
    cluster.wait_ready(Duration::from_secs(60)).await.unwrap();
    let base = cluster.urls()[0].clone();

    for user in ["alice", "bob", "carol"] {
        let got = get(&base, "/v1/bookings", user).await;
        assert_eq!(
            got,
            answer(&format!("bookings-{user}")),
            "{user}'s bookings"
        );
    }
    for e in [5, 6, 7, 8] {
        let mut got = get(&base, &format!("/v1/events/{e}"), "alice").await;
        let mut want = answer(&format!("event-{e}"));
        got.as_object_mut().unwrap().remove("freshness");
        want.as_object_mut().unwrap().remove("freshness");
        assert_eq!(got, want, "event {e}");
        // Seats sold then are sold now; seats held then have expired since (their
        // holds lasted ten minutes) unless confirmed.
        let got = get(
            &base,
            &format!("/v1/events/{e}/seats?consistency=linearizable"),
            "alice",
        )
        .await;
        let want = answer(&format!("seats-{e}"));
        assert_eq!(got["sold"], want["sold"], "event {e}");
        assert_eq!(got["capacity"], want["capacity"], "event {e}");
        let sold = |v: &Value| -> Vec<u64> {
            v["seats"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["status"] == "sold")
                .map(|s| s["seat_id"].as_u64().unwrap())
                .collect()
        };
        assert_eq!(sold(&got), sold(&want), "event {e}");
    }
    let fixture_files = std::fs::read_dir(format!("{}/answers", fixture())).unwrap();
    let mut statuses = 0;
    for f in fixture_files {
        let name = f.unwrap().file_name().into_string().unwrap();
        let Some(hold) = name.strip_prefix("status-hold-") else {
            continue;
        };
        let user = hold.split('-').next().unwrap();
        let want = answer(name.trim_end_matches(".json"));
        let id = want["hold_id"].as_str().unwrap();
        let got = get(&base, &format!("/v1/holds/{id}"), user).await;
        for field in [
            "event_id",
            "user",
            "seat_ids",
            "quantity",
            "expires_at_ms",
            "total_cents",
            "booking_id",
        ] {
            assert_eq!(got[field], want[field], "hold {id} {field}");
        }
        let expected = match want["status"].as_str().unwrap() {
            "active" => "expired",
            other => other,
        };
        assert_eq!(got["status"], expected, "hold {id}");
        statuses += 1;
    }
    assert_eq!(statuses, 8);

    // Its search index (left out of the fixture) is rebuilt from the catalogue.
    eventually(
        Duration::from_secs(30),
        "the rebuilt index finds the renamed event",
        || async {
            let (s, v) = search(&cluster.nodes[&1].addr.to_string(), "q=sold%20out%20soon").await;
            s == 200 && v["results"][0]["event_id"] == 5
        },
    )
    .await;

    // And it takes new bookings, next to the old ones.
    let alice = cluster_client(&base, "alice");
    let h = alice.hold(5, Selection::Seats(vec![12])).await.unwrap();
    let b = alice
        .confirm(&h.hold_id, "pay_after_upgrade")
        .await
        .unwrap();
    let list = alice.bookings().await.unwrap();
    assert_eq!(list.bookings.len(), 4);
    assert_eq!(list.bookings[3].booking_id, b.booking_id);
    let map = alice.seats(5, Consistency::Linearizable).await.unwrap();
    assert_eq!(
        map.counts.sold,
        answer("seats-5")["sold"].as_u64().unwrap() as u32 + 1
    );
    cluster.stop_all().await;
}

fn cluster_client(base: &str, user: &str) -> boxoffice_client::Client {
    boxoffice_client::Client::new(client_config(vec![base.to_string()], mint(user, false))).unwrap()
}
