//! `boxoffice ctl` against a real cluster: status as JSON and as a table,
//! membership changes, snapshots, and the errors an operator gets for a wrong
//! token or an endpoint where no node listens.

use std::process::Command;

use serde_json::Value;

use crate::support::*;

/// Runs `boxoffice ctl ARGS` with `token`: (exit success, stdout, stderr).
fn ctl(endpoint: &str, token: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(["ctl", "--endpoint", endpoint, "--token", token])
        .args(args)
        .env_remove("BOXOFFICE_ADMIN_TOKEN_SECRET")
        .env_remove("BOXOFFICE_ENDPOINT")
        .env_remove("BOXOFFICE_ADMIN_TOKEN")
        .output()
        .expect("run boxoffice ctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
/// What `ctl` shows is what the admin API says; a member removed and added
/// back through `ctl` is, and the table shows it; mistakes name their cause.
async fn ctl_shows_status_changes_members_and_explains_errors() {
    let cluster = TestCluster::start(3, 1, "").await;
    let endpoint = format!("http://{}", cluster.nodes[0].addr);
    let admin = mint("ops", true);

    let (ok, out, err) = ctl(&endpoint, &admin, &["--output", "json", "status"]);
    assert!(ok, "{err}");
    let status: Value = serde_json::from_str(&out).unwrap();
    let api = cluster.admin.cluster().await.unwrap();
    assert_eq!(status["node_id"], 1);
    assert_eq!(status["groups"].as_array().unwrap().len(), api.groups.len());
    assert_eq!(status["members"].as_array().unwrap().len(), 3);

    let (ok, table, err) = ctl(&endpoint, &admin, &["status"]);
    assert!(ok, "{err}");
    assert!(
        table.contains("catalogue") && table.contains("shard-1"),
        "{table}"
    );
    assert!(table.contains("[1, 2, 3]"), "{table}");

    // Node 3 out of shard 1, then back as a learner and a voter.
    let peer3 = cluster.nodes[2].peer_addr.clone();
    let (ok, out, err) = ctl(&endpoint, &admin, &["members", "remove", "1", "3"]);
    assert!(ok, "{err}");
    assert!(out.contains("voters [1, 2]"), "{out}");
    let (ok, out, err) = ctl(
        &endpoint,
        &admin,
        &["members", "add", "1", "3", "--addr", &peer3],
    );
    assert!(ok, "{err}");
    assert!(out.contains("learners [3]"), "{out}");
    let (ok, out, err) = ctl(&endpoint, &admin, &["members", "promote", "1", "3"]);
    assert!(ok, "{err}");
    assert!(out.contains("voters [1, 2, 3]"), "{out}");
    let (ok, _, err) = ctl(&endpoint, &admin, &["snapshot", "1"]);
    assert!(ok, "{err}");

    // A user token, a bad token, and no node at the endpoint.
    let (ok, _, err) = ctl(&endpoint, &mint("alice", false), &["status"]);
    assert!(!ok);
    assert!(err.contains("hint:"), "{err}");
    let (ok, _, err) = ctl(&endpoint, "not-a-token", &["status"]);
    assert!(!ok);
    assert!(err.contains("401") && err.contains("admin secret"), "{err}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (ok, _, err) = ctl(&format!("http://{closed}"), &admin, &["status"]);
    assert!(!ok);
    assert!(
        err.contains("cannot reach") && err.contains("hint:"),
        "{err}"
    );
    assert!(!err.contains("Stack backtrace"), "{err}");
}
