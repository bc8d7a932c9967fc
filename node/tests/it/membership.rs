//! Membership through the admin API: remove a voter, add it back as a learner,
//! promote it; bad requests are refused.

use boxoffice_client::Selection;
use serde_json::{json, Value};

use crate::support::*;

/// The admin API's membership changes (what the jepsen membership nemesis uses):
/// remove a voter, add it back as a learner, promote it; bad input changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_remove_add_learner_promote() {
    let cluster = TestCluster::start(3, 1, "").await;
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
    for (bad, code) in [
        // Not an action the API knows: the body is not what it takes.
        (json!({"action": "explode"}), "malformed_json"),
        (json!({"action": "add_learner"}), "invalid_parameter"),
        (
            json!({"action": "promote", "addr": "x"}),
            "invalid_parameter",
        ),
    ] {
        let (s, v) = change(1, 3, bad).await;
        assert_eq!(s, 400, "{v}");
        assert_eq!(v["code"], code, "{v}");
    }
    assert_eq!(change(9, 3, json!({"action": "remove"})).await.0, 404);
    // A learner's address must be one the cluster knows (a member's, or in
    // peer_addresses_allowed): a typo, another member's address or a public
    // address is refused, and the membership stays as it was. (Before the
    // peer listener, any address was taken.)
    for (addr, why) in [
        ("127.0.0.1:1".to_string(), "neither"),
        (cluster.nodes[1].peer_addr.clone(), "node 2's"),
        (cluster.nodes[2].addr.clone(), "neither"),
    ] {
        let (s, v) = change(1, 3, json!({"action": "add_learner", "addr": addr})).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (400, Some("invalid_parameter")),
            "{v}"
        );
        assert!(v["detail"].as_str().unwrap().contains(why), "{v}");
    }
    let status = cluster.admin.cluster().await.unwrap();
    let g1 = status.groups.iter().find(|g| g.group == 1).unwrap();
    assert_eq!(g1.voters, vec![1, 2], "{status:?}");
    let addr3 = cluster.nodes[2].peer_addr.clone();
    let (s, v) = change(1, 3, json!({"action": "add_learner", "addr": addr3})).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = change(1, 3, json!({"action": "promote"})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["voters"], json!([1, 2, 3]), "{v}");
    // The returning voter catches up: its linearizable read sees the hold.
    let v = linearizable_seat_map(&cluster.nodes[2].addr, event).await;
    assert_eq!(v["seats"][0]["status"], "held", "{v}");
}
