//! `boxoffice ctl` against a real cluster: status as JSON and as a table,
//! membership changes, snapshots, and the errors an operator gets for a wrong
//! token or an endpoint where no node listens.

use serde_json::Value;

use crate::support::*;

/// Runs `boxoffice ctl ARGS` with `token`: (exit success, stdout, stderr).
fn ctl(endpoint: &str, token: &str, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["--endpoint", endpoint, "--token", token];
    all.extend_from_slice(args);
    run_ctl(&all)
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

    // A venue and an event naming it, from a file; then the event's live
    // seat map shows a hold made after `tail` started.
    let venue = boxoffice_client::NewVenue::new(
        "Ctl Hall",
        "Ctlville",
        1.0,
        2.0,
        boxoffice_client::NewLayout::Seated(vec![("Stalls".into(), vec![("A".into(), 5, 1000)])]),
    );
    let mut event = serde_json::to_value(new_event("Ctl Night", 0, 60, 4)).unwrap();
    event.as_object_mut().unwrap().remove("venue_id");
    event["venue_name"] = "Ctl Hall".into();
    let file = tempfile::NamedTempFile::with_suffix(".json").unwrap();
    std::fs::write(
        file.path(),
        serde_json::to_vec(&serde_json::json!({"venues": [venue], "events": [event]})).unwrap(),
    )
    .unwrap();
    let path = file.path().to_str().unwrap();
    let (ok, out, err) = ctl(&endpoint, &admin, &["--output", "json", "create", path]);
    assert!(ok, "{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    let venue_id = created["venues"][0]["venue_id"].as_u64().unwrap();
    let event_id = created["events"][0]["event_id"].as_u64().unwrap();
    let view = cluster
        .admin
        .event(event_id, boxoffice_client::Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(view.venue.map(|v| v.venue_id), Some(venue_id));
    let bad = tempfile::NamedTempFile::with_suffix(".json").unwrap();
    std::fs::write(
        bad.path(),
        br#"{"events": [{"venue_name": "Nowhere"}], "typo": []}"#,
    )
    .unwrap();
    let (ok, _, err) = ctl(&endpoint, &admin, &["create", bad.path().to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("unknown key \"typo\""), "{err}");

    let tail = std::process::Command::new(BIN)
        .args(["ctl", "--endpoint", &endpoint, "--token", &admin, "tail"])
        .arg(event_id.to_string())
        .args(["--events", "2", "--seconds", "20"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    cluster
        .user("tailed")
        .hold(event_id, boxoffice_client::Selection::Seats(vec![3]))
        .await
        .unwrap();
    let out = tokio::task::spawn_blocking(move || tail.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success());
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["event"], "snapshot");
    assert_eq!(lines[1]["event"], "change");
    assert!(
        lines[1]["data"].to_string().contains("held"),
        "{}",
        lines[1]
    );

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
