//! What the tests share: a cluster of real node processes (the node's own
//! launcher, `boxoffice_node::local_cluster`, with fixed secrets so tokens can be
//! minted anywhere), clients, an in-process node for route tests, and small
//! HTTP helpers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use boxoffice_client::{Client, ClientConfig, NewEvent, NewLayout, NewVenue, SeatMap, SeatStatus};
use boxoffice_node::local_cluster::{ClusterSpec, LocalCluster, Secrets};
use serde_json::Value;

/// The crate's directory as cargo gives it to the running test (a build moved
/// from another checkout keeps its compile-time path), else the compile-time one.
pub fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}

pub const BIN: &str = env!("CARGO_BIN_EXE_boxoffice");
pub const SECRET: &str = "test-user-token-secret-0123456789abcdef";
pub const ADMIN_SECRET: &str = "test-admin-token-secret-0123456789abcdef";
pub const CLUSTER_KEY: &str = "test-cluster-key-0123456789abcdef";

/// A bearer token for `user` (an admin token when `admin`).
/// A token: an admin's, or a box-office user's (which may confirm directly).
pub fn mint(user: &str, admin: bool) -> String {
    let scope = (!admin).then_some(boxoffice_node::auth::BOX_OFFICE_SCOPE);
    boxoffice_node::auth::Signer::hs256(if admin { ADMIN_SECRET } else { SECRET })
        .mint_with_scope(user, 3600, scope)
        .expect("mint a token")
}

/// A buyer's token: no scope, so it pays through the provider.
pub fn mint_buyer(user: &str) -> String {
    boxoffice_node::auth::Signer::hs256(SECRET)
        .mint(user, 3600)
        .expect("mint a token")
}

/// The test clusters' secrets.
pub fn secrets() -> Secrets {
    Secrets {
        token_secret: SECRET.into(),
        admin_token_secret: ADMIN_SECRET.into(),
        cluster_key: CLUSTER_KEY.into(),
    }
}

/// Client settings for tests: patient, with short waits between attempts.
pub fn client_config(urls: Vec<String>, token: String) -> ClientConfig {
    let mut c = ClientConfig::new(urls, token);
    c.attempts_max = 30;
    c.request_timeout = Duration::from_secs(12);
    c.retry_wait_max = Duration::from_millis(300);
    c
}

/// A node of a test cluster, by position (0-based; its id is position + 1).
#[derive(Clone, Debug)]
pub struct TestNode {
    pub id: u64,
    /// Public (and admin) API.
    pub addr: String,
    /// Peer listener (Raft RPC, `/internal`).
    pub peer_addr: String,
}

/// A cluster of real node processes on 127.0.0.1, in a temporary directory.
pub struct TestCluster {
    pub local: LocalCluster,
    pub nodes: Vec<TestNode>,
    pub admin: Client,
    /// The certificate its clients trust, when the nodes serve TLS
    /// (`tls.cert_file` of the settings).
    pub ca_pem: Option<Vec<u8>>,
    /// The nodes' data and logs; kept after the test when
    /// `BOXOFFICE_TEST_KEEP_DIR` is set (its path is printed), for reading
    /// the node logs of a failed run.
    _dir: Option<tempfile::TempDir>,
}

impl TestCluster {
    /// Starts `n` nodes with `settings` (TOML, e.g. `"[raft]\nsnapshot_logs_since_last
    /// = 30"`), bootstraps `shards` shards, and waits until every node is ready.
    pub async fn start(n: u64, shards: u16, settings: &str) -> TestCluster {
        Self::start_with(n, shards, settings, |_| {}).await
    }

    /// As [`TestCluster::start`], with `prepare` run on the cluster's files
    /// before any node starts (to give one node settings of its own, say).
    pub async fn start_with(
        n: u64,
        shards: u16,
        settings: &str,
        prepare: impl FnOnce(&LocalCluster),
    ) -> TestCluster {
        Self::start_with_spec(n, shards, settings, |_| {}, prepare).await
    }

    /// As [`TestCluster::start_with`], with `spec` changing the launcher's
    /// spec first (the nodes' log filter and format, say).
    pub async fn start_with_spec(
        n: u64,
        shards: u16,
        settings: &str,
        spec_fn: impl FnOnce(&mut ClusterSpec),
        prepare: impl FnOnce(&LocalCluster),
    ) -> TestCluster {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = ClusterSpec::new(BIN, dir.path(), n, shards);
        spec.settings = settings.to_string();
        spec.unlimited = true;
        spec.secrets = Some(secrets());
        spec_fn(&mut spec);
        let mut local = LocalCluster::create(spec).expect("cluster spec");
        prepare(&local);
        local.start_all().await.expect("nodes start");
        let init = local.init().await.expect("bootstrap");
        // Each shard was initialised, and so first led, by a different member in
        // turn: shard s by the ((s - 1) mod n)-th by id, when every member
        // holds every shard (no more members than the replication factor).
        let every_member_holds_all = init.voters.values().all(|v| v.len() as u64 == n);
        for s in (1..=shards).filter(|_| every_member_holds_all) {
            assert_eq!(
                init.first_leaders.get(&s).copied(),
                Some((u64::from(s) - 1) % n + 1),
                "{init:?}"
            );
        }
        assert!(init.first_leaders.contains_key(&0), "{init:?}");
        Self::finish(local, settings, dir).await
    }

    /// `n` nodes of which only the first `members` start and are bootstrapped
    /// (with `replication_factor` voters a shard); the others wait to be
    /// started (`spawn`) and added.
    pub async fn start_members(
        n: u64,
        members: u64,
        shards: u16,
        replication_factor: u8,
        settings: &str,
    ) -> TestCluster {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = ClusterSpec::new(BIN, dir.path(), n, shards);
        spec.settings = settings.to_string();
        spec.unlimited = true;
        spec.secrets = Some(secrets());
        spec.replication_factor = Some(replication_factor);
        let mut local = LocalCluster::create(spec).expect("cluster spec");
        for id in 1..=members {
            local.start(id).expect("node starts");
        }
        for id in 1..=members {
            local
                .wait_healthy(id, Duration::from_secs(60))
                .await
                .expect("healthy");
        }
        let ids: Vec<u64> = (1..=members).collect();
        local.init_members(&ids).await.expect("bootstrap");
        Self::finish(local, settings, dir).await
    }

    /// A cluster of `n` new nodes each restored (`boxoffice ctl restore`) from
    /// the backup in `from` before it first starts: bootstrapped by the
    /// restore, not by `cluster/init`.
    pub async fn start_restored(n: u64, from: &std::path::Path) -> TestCluster {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = ClusterSpec::new(BIN, dir.path(), n, 1);
        spec.unlimited = true;
        spec.secrets = Some(secrets());
        let mut local = LocalCluster::create(spec).expect("cluster spec");
        let members: Vec<String> = local
            .nodes
            .values()
            .map(|n| format!("{}={}", n.id, n.peer_addr))
            .collect();
        for node in local.nodes.values() {
            let out = std::process::Command::new(BIN)
                .args(["ctl", "restore", "--from"])
                .arg(from)
                .arg("--data-dir")
                .arg(&node.data_dir)
                .args([
                    "--node-id",
                    &node.id.to_string(),
                    "--members",
                    &members.join(","),
                ])
                .output()
                .expect("run boxoffice ctl restore");
            assert!(
                out.status.success(),
                "restore of node {}: {}",
                node.id,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        local.start_all().await.expect("nodes start");
        Self::finish(local, "", dir).await
    }

    /// Waits for a started cluster to be ready and makes its clients.
    async fn finish(local: LocalCluster, settings: &str, dir: tempfile::TempDir) -> TestCluster {
        local
            .wait_ready(Duration::from_secs(60))
            .await
            .expect("ready");
        let nodes: Vec<TestNode> = local
            .nodes
            .values()
            .map(|n| TestNode {
                id: n.id,
                addr: n.addr.to_string(),
                peer_addr: n.peer_addr.to_string(),
            })
            .collect();
        let settings: toml::Table = toml::from_str(settings).expect("settings");
        let ca_pem = settings
            .get("tls")
            .and_then(|t| t.get("cert_file"))
            .and_then(|f| f.as_str())
            .map(|f| std::fs::read(f).expect("tls.cert_file"));
        let mut admin = client_config(local.urls(), mint("admin", true));
        admin.ca_certs_pem = ca_pem.clone();
        TestCluster {
            local,
            nodes,
            admin: Client::new(admin).unwrap(),
            ca_pem,
            _dir: if std::env::var_os("BOXOFFICE_TEST_KEEP_DIR").is_some() {
                eprintln!("cluster files kept in {}", dir.keep().display());
                None
            } else {
                Some(dir)
            },
        }
    }

    /// Base URLs of every node.
    pub fn urls(&self) -> Vec<String> {
        self.local.urls()
    }

    /// A client of user `name` over every node.
    pub fn user(&self, name: &str) -> Client {
        self.client(self.urls(), mint(name, false))
    }

    /// A client of user `name` (an admin when `admin`) talking to node `i` only.
    pub fn client_at(&self, i: usize, name: &str, admin: bool) -> Client {
        self.client(vec![self.urls()[i].clone()], mint(name, admin))
    }

    /// A client of `urls` with `token`, trusting the cluster's certificate.
    pub fn client(&self, urls: Vec<String>, token: String) -> Client {
        let mut config = client_config(urls, token);
        config.ca_certs_pem = self.ca_pem.clone();
        Client::new(config).unwrap()
    }

    /// Starts node `i` again (it keeps its data).
    pub fn spawn(&mut self, i: usize) {
        self.local.start(self.nodes[i].id).expect("start node");
    }

    /// kill -9 of node `i`.
    pub fn kill(&mut self, i: usize) {
        self.local.kill(self.nodes[i].id);
    }

    /// Waits until node `i` answers `/healthz`.
    pub async fn wait_healthy(&self, i: usize) {
        // As long as `wait_ready`: a restarted node replays its log (and may
        // install a snapshot) while the other tests' clusters share the cores.
        self.local
            .wait_healthy(self.nodes[i].id, Duration::from_secs(60))
            .await
            .expect("healthy");
    }

    /// Waits until every running node is ready.
    pub async fn wait_ready(&self) {
        self.local
            .wait_ready(Duration::from_secs(60))
            .await
            .expect("ready");
    }

    /// Position of the running node leading `group`.
    pub async fn leader_of(&self, group: u16) -> usize {
        let id = self
            .local
            .leader_of(group, Duration::from_secs(30))
            .await
            .expect("a leader");
        self.nodes.iter().position(|n| n.id == id).unwrap()
    }

    /// A venue of one row of `seats` seats (1000 cents each) and an event there
    /// with holds of `ttl_s` and a per-user cap of `cap`; returns (event, shard).
    pub async fn venue_and_event(&self, seats: u32, ttl_s: u64, cap: u32) -> (u64, u16) {
        let venue = self
            .admin
            .create_venue(&NewVenue::new(
                "Test Hall",
                "Testville",
                1.0,
                2.0,
                NewLayout::Seated(vec![("Stalls".into(), vec![("A".into(), seats, 1000)])]),
            ))
            .await
            .expect("venue")
            .venue_id;
        let event = self
            .admin
            .create_event(&new_event("Test Night", venue, ttl_s, cap))
            .await
            .expect("event");
        (event.event_id, event.shard)
    }
}

/// An event at `venue` with holds of `ttl_s` and a per-user cap of `cap`.
pub fn new_event(name: &str, venue: u64, ttl_s: u64, cap: u32) -> NewEvent {
    NewEvent {
        name: name.into(),
        description: String::new(),
        category: "concert".into(),
        venue_id: venue,
        performer_ids: vec![],
        starts_at: "2030-01-01T20:00:00Z".into(),
        hold_ttl_s: Some(ttl_s),
        per_user_cap: Some(cap),
    }
}

/// Every seat's status.
pub fn statuses(map: &SeatMap) -> BTreeMap<u32, SeatStatus> {
    map.seats.iter().map(|s| (s.seat_id, s.status)).collect()
}

/// `GET /v1/search?{query}` on `addr`: status and body.
pub async fn search(addr: &str, query: &str) -> (u16, Value) {
    let r = reqwest::get(format!("http://{addr}/v1/search?{query}"))
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// A linearizable seat map of `event` read through `addr`, as JSON.
pub async fn linearizable_seat_map(addr: &str, event: u64) -> Value {
    let r = reqwest::get(format!(
        "http://{addr}/v1/events/{event}/seats?consistency=linearizable"
    ))
    .await
    .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    r.json().await.unwrap()
}

/// Waits up to `timeout` for `check` to hold, polling every 100 ms; panics with
/// `what` otherwise.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A performer to create.
pub fn performer(name: &str, description: &str) -> boxoffice_client::NewPerformer {
    boxoffice_client::NewPerformer {
        name: name.into(),
        description: description.into(),
    }
}

/// Runs `boxoffice ctl ARGS` with no endpoint or token from the environment:
/// (exit success, stdout, stderr).
pub fn run_ctl(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(BIN)
        .arg("ctl")
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
