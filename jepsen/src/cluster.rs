//! Cluster control: real `boxoffice node` processes started, killed, paused and
//! restarted by the harness, each with its own data dir and log, on its own
//! loopback address (127.0.0.(10+id)) so that firewall rules can tell nodes apart.
//! Only processes this harness started are ever signalled, by pid.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

/// Time allowed for a started node to answer `/healthz`.
pub const NODE_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for every group to elect a leader after bootstrap.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeout of one admin request made by the harness.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Node settings the harness runs with: short timeouts so that faults surface as
/// `info` within a client timeout, and frequent snapshots so that restarts and
/// lagging followers go through snapshot install and log purging.
pub const HARNESS_SETTINGS: &str = r#"
fault_injection = true

[limits]
write_timeout_ms = 3000
linearizable_read_timeout_ms = 2000
request_timeout_ms = 4000
peer_connect_timeout_ms = 500
membership_timeout_ms = 3000

[raft]
snapshot_logs_since_last = 300
logs_kept_after_snapshot = 50
"#;

/// One node process.
pub struct NodeProc {
    pub id: u64,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
}

impl NodeProc {
    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// True while its process runs (paused or not).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    pub fn paused(&self) -> bool {
        self.paused
    }

    fn signal(&self, sig: libc::c_int) {
        if let Some(c) = &self.child {
            // The pid is of a child this harness spawned and has not yet reaped, so it
            // cannot have been reused by another process.
            unsafe {
                libc::kill(c.id() as libc::pid_t, sig);
            }
        }
    }
}

/// The cluster under test.
pub struct Cluster {
    bin: PathBuf,
    pub dir: PathBuf,
    pub nodes: BTreeMap<u64, NodeProc>,
    pub shards: u16,
    pub token_secret: String,
    pub admin_token: String,
    http: reqwest::Client,
}

/// Loopback address of node `id`.
pub fn node_ip(id: u64) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 10 + id as u8)
}

impl Cluster {
    /// Prepares `n` nodes (not started) under `dir`; `settings` is TOML appended to
    /// each node's config (e.g. [`HARNESS_SETTINGS`], or "" for the defaults).
    pub fn new(
        bin: PathBuf,
        dir: &Path,
        n: u64,
        base_port: u16,
        shards: u16,
        settings: &str,
    ) -> anyhow::Result<Self> {
        if !(1..=9).contains(&n) {
            bail!("--nodes must be between 1 and 9");
        }
        let token_secret = format!("jepsen-{:032x}", rand::random::<u128>());
        let cluster_key = format!("jepsen-{:032x}", rand::random::<u128>());
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            let addr = SocketAddr::new(node_ip(id).into(), base_port + id as u16);
            let data_dir = dir.join(format!("node-{id}"));
            let config = dir.join(format!("node-{id}.toml"));
            let text = format!(
                "id = {id}\nlisten = \"{addr}\"\ndata_dir = \"{}\"\ntoken_secret = \"{token_secret}\"\ncluster_key = \"{cluster_key}\"\npeer_bind_ip = \"{}\"\n{settings}",
                data_dir.display(),
                node_ip(id)
            );
            std::fs::write(&config, text)?;
            nodes.insert(
                id,
                NodeProc {
                    id,
                    addr,
                    data_dir,
                    config,
                    log: dir.join(format!("node-{id}.log")),
                    child: None,
                    paused: false,
                },
            );
        }
        let http = reqwest::Client::builder()
            .timeout(ADMIN_TIMEOUT)
            .no_proxy()
            .build()?;
        let mut c = Cluster {
            bin,
            dir: dir.to_path_buf(),
            nodes,
            shards,
            token_secret,
            admin_token: String::new(),
            http,
        };
        c.admin_token = c.token("jepsen-admin", true)?;
        Ok(c)
    }

    /// Mints a bearer token with the node binary.
    pub fn token(&self, user: &str, admin: bool) -> anyhow::Result<String> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["token", "--user", user, "--secret", &self.token_secret]);
        if admin {
            cmd.arg("--admin");
        }
        let out = cmd
            .output()
            .with_context(|| format!("running {}", self.bin.display()))?;
        if !out.status.success() {
            bail!("boxoffice token: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_string())
    }

    /// Starts node `id` (no-op if running). Output goes to `node-{id}.log`.
    pub fn start(&mut self, id: u64) -> anyhow::Result<()> {
        let node = self.nodes.get_mut(&id).context("no such node")?;
        if node.child.is_some() {
            return Ok(());
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        let child = Command::new(&self.bin)
            .args(["node", "--config"])
            .arg(&node.config)
            .env("RUST_LOG", "info,openraft=warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// kill -9 and reap (no-op if not running).
    pub fn kill(&mut self, id: u64) {
        if let Some(node) = self.nodes.get_mut(&id) {
            node.signal(libc::SIGKILL);
            if let Some(mut c) = node.child.take() {
                let _ = c.wait();
            }
            node.paused = false;
        }
    }

    /// SIGSTOP.
    pub fn pause(&mut self, id: u64) {
        if let Some(node) = self.nodes.get_mut(&id) {
            if node.child.is_some() {
                node.signal(libc::SIGSTOP);
                node.paused = true;
            }
        }
    }

    /// SIGCONT.
    pub fn resume(&mut self, id: u64) {
        if let Some(node) = self.nodes.get_mut(&id) {
            if node.paused {
                node.signal(libc::SIGCONT);
                node.paused = false;
            }
        }
    }

    /// Kills every node this harness started.
    pub fn kill_all(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.kill(id);
        }
    }

    /// Waits for `/healthz` on node `id`.
    pub async fn wait_healthy(&self, id: u64, timeout: Duration) -> anyhow::Result<()> {
        let url = format!("{}/healthz", self.nodes[&id].url());
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(r) = self.http.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("node {id} did not answer /healthz within {timeout:?} (see its log)");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Bootstraps the cluster with every node as a voter and waits for leaders.
    pub async fn init(&self) -> anyhow::Result<()> {
        let members: Vec<Value> = self
            .nodes
            .values()
            .map(|n| json!({"id": n.id, "addr": n.addr.to_string()}))
            .collect();
        let first = self.nodes.values().next().context("no nodes")?;
        let r = reqwest::Client::new()
            .post(format!("{}/admin/v1/cluster/init", first.url()))
            .bearer_auth(&self.admin_token)
            .json(&json!({"members": members, "shards": self.shards}))
            .timeout(Duration::from_secs(60))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!(
                "cluster init: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if self.leaders().await.len() == usize::from(self.shards) + 1 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("not every group elected a leader within {READY_TIMEOUT:?}")
    }

    /// `/admin/v1/cluster` of node `id`.
    pub async fn cluster_view(&self, id: u64) -> Option<Value> {
        let n = self.nodes.get(&id)?;
        if !n.running() || n.paused {
            return None;
        }
        let r = self
            .http
            .get(format!("{}/admin/v1/cluster", n.url()))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    /// Leader of each group as the running nodes report it (highest term wins).
    pub async fn leaders(&self) -> BTreeMap<u16, u64> {
        let mut best: BTreeMap<u16, (u64, u64)> = BTreeMap::new();
        for &id in self.nodes.keys() {
            let Some(v) = self.cluster_view(id).await else {
                continue;
            };
            for g in v["groups"].as_array().into_iter().flatten() {
                let (Some(group), Some(leader), Some(term)) = (
                    g["group"].as_u64(),
                    g["leader"].as_u64(),
                    g["term"].as_u64(),
                ) else {
                    continue;
                };
                let e = best.entry(group as u16).or_insert((term, leader));
                if term > e.0 {
                    *e = (term, leader);
                }
            }
        }
        best.into_iter().map(|(g, (_, l))| (g, l)).collect()
    }

    /// Sets node `id`'s clock offset through the fault-injection API.
    pub async fn set_clock_offset(&self, id: u64, offset_ms: i64) -> anyhow::Result<()> {
        let n = &self.nodes[&id];
        let r = self
            .http
            .post(format!("{}/admin/v1/fault/clock", n.url()))
            .bearer_auth(&self.admin_token)
            .json(&json!({"offset_ms": offset_ms}))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("clock offset on node {id}: {}", r.status());
        }
        Ok(())
    }

    /// An admin request against any running node (tries each in turn).
    pub async fn admin_post(
        &self,
        path: &str,
        body: &Value,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let mut last = String::new();
        for n in self.nodes.values().filter(|n| n.running() && !n.paused) {
            let r = self
                .http
                .post(format!("{}{path}", n.url()))
                .bearer_auth(&self.admin_token)
                .header(
                    "Idempotency-Key",
                    format!("jepsen-{path}-{}", body_digest(body)),
                )
                .json(body)
                .timeout(timeout)
                .send()
                .await;
            match r {
                Ok(r) if r.status().is_success() => return Ok(r.json().await?),
                Ok(r) => last = format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => last = e.to_string(),
            }
        }
        bail!("POST {path} failed on every node: {last}")
    }
}

impl Cluster {
    /// Changes node `id`'s membership of every group (catalogue and shards) through
    /// the admin API: `remove`, `add_learner` or `promote`.
    pub async fn membership(&self, id: u64, action: &str) -> anyhow::Result<()> {
        let addr = self.nodes[&id].addr.to_string();
        let body = if action == "add_learner" {
            json!({"action": action, "addr": addr})
        } else {
            json!({"action": action})
        };
        for g in 0..=self.shards {
            self.admin_post(
                &format!("/admin/v1/groups/{g}/members/{id}"),
                &body,
                MEMBERSHIP_TIMEOUT,
            )
            .await
            .with_context(|| format!("{action} node {id} in group {g}"))?;
        }
        Ok(())
    }
}

/// Time allowed for one group's membership change through the admin API.
pub const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(8);

/// A stable digest of a request body, so a retried admin write reuses its key.
fn body_digest(v: &Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.to_string().hash(&mut h);
    h.finish()
}

impl Drop for Cluster {
    /// Whatever happens, the processes this harness started do not outlive it.
    fn drop(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.resume(id);
        }
        self.kill_all();
    }
}
