//! Real `boxoffice node` processes on this machine: started, stopped, killed,
//! paused and resumed one by one, bootstrapped, and asked about their groups.
//!
//! The one launcher: `boxoffice dev`, the node's integration tests, the fault
//! harness (`jepsen`) and the benchmarks all start their clusters with it. Each
//! node gets its own data directory, settings file (`node-{id}.toml`: its
//! identity and secrets, merged into the caller's settings) and log
//! (`node-{id}.log`) under the cluster's directory. Only processes started here
//! are ever signalled, by pid, and they do not outlive the [`LocalCluster`]
//! unless it is [detached](LocalCluster::detach).

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use boxoffice_api::{ClusterInit, ClusterInitialized, ClusterStatus, Member};
use serde::Serialize;

use crate::auth::Signer;

/// Time allowed for a started node to answer `/healthz`: it opens RocksDB and
/// loads its in-memory state machines first (about 40 s for three nodes of a
/// million-event catalogue sharing two cores).
pub const NODE_START_TIMEOUT: Duration = Duration::from_secs(180);
/// Time allowed for every group to elect a leader after bootstrap or restart.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Time a node gets to stop after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of one admin request made by the launcher.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for the bootstrap request (every group initialised).
pub const INIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Lifetime of the tokens the launcher mints: a day, the default
/// `auth.token_lifetime_s_max` (`boxoffice dev` mints new ones at every start).
pub const TOKEN_TTL_S: u64 = 24 * 3600;
/// Most nodes of a local cluster (addresses and ports are derived from ids).
pub const NODES_MAX: u64 = 9;

/// Where the nodes listen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addressing {
    /// Node i on 127.0.0.1:(base_port + i), its peer listener on
    /// 127.0.0.1:(base_port + PEER_PORT_OFFSET + i).
    Loopback {
        /// Port of node 0 (which does not exist).
        base_port: u16,
    },
    /// Node i on 127.0.0.(10 + i):(base_port + i) (peer listener: + PEER_PORT_OFFSET),
    /// sending to its peers from that address (`peer_bind_ip`), so that
    /// firewall rules can tell nodes apart.
    PerNodeIp {
        /// Port of node 0.
        base_port: u16,
    },
    /// Each listener on a port of 127.0.0.1 the OS finds free.
    FreePorts,
}

/// How far above a node's public port its peer listener is, with fixed ports.
pub const PEER_PORT_OFFSET: u16 = 100;

/// Where one node listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeAddrs {
    /// Public (and admin) API.
    pub public: SocketAddr,
    /// Raft RPC and `/internal`.
    pub peer: SocketAddr,
}

/// The addresses of node `id` under `addressing`.
pub fn node_addrs(addressing: Addressing, id: u64) -> anyhow::Result<NodeAddrs> {
    let fixed = |ip: Ipv4Addr, base_port: u16| -> anyhow::Result<NodeAddrs> {
        let port = |offset: u16| {
            base_port
                .checked_add(offset)
                .and_then(|p| p.checked_add(id as u16))
                .with_context(|| format!("base port {base_port} is too high for node {id}"))
        };
        Ok(NodeAddrs {
            public: SocketAddr::new(ip.into(), port(0)?),
            peer: SocketAddr::new(ip.into(), port(PEER_PORT_OFFSET)?),
        })
    };
    match addressing {
        Addressing::Loopback { base_port } => fixed(Ipv4Addr::LOCALHOST, base_port),
        Addressing::PerNodeIp { base_port } => fixed(node_ip(id), base_port),
        Addressing::FreePorts => Ok(NodeAddrs {
            public: free_port()?,
            peer: free_port()?,
        }),
    }
}

/// Lowest port [`Addressing::FreePorts`] hands out: its ports lie between this
/// and the kernel's ephemeral range, above every fixed port the dev cluster,
/// benchmarks and harness use.
pub const FREE_PORTS_LOW: u16 = 20_000;

/// A port of 127.0.0.1 that is free now and that nothing else should take
/// before a node binds it. Ports the OS hands out for port 0 come from its
/// ephemeral range, which every outgoing connection draws from too: one of
/// them could take such a port between its choice and the node's start. So
/// ports are taken from below that range instead, each checked free by binding
/// it, and a process-wide cursor (starting at a place drawn from the pid)
/// keeps concurrent clusters of one process apart.
fn free_port() -> anyhow::Result<SocketAddr> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static CURSOR: AtomicU32 = AtomicU32::new(u32::MAX);
    let high = ephemeral_low().saturating_sub(1);
    if high <= FREE_PORTS_LOW + 1_000 {
        // No room below the ephemeral range: let the OS choose.
        return Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?);
    }
    let span = u32::from(high - FREE_PORTS_LOW);
    let _ = CURSOR.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7_919) % span,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let at = CURSOR.fetch_add(1, Ordering::Relaxed) % span;
        // `at < span`, and span fits a u16 above FREE_PORTS_LOW.
        let port = FREE_PORTS_LOW + at as u16;
        if let Ok(l) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            return Ok(l.local_addr()?);
        }
    }
    bail!("no free port of 127.0.0.1 between {FREE_PORTS_LOW} and {high}")
}

/// First port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// Loopback address of node `id` under [`Addressing::PerNodeIp`].
pub fn node_ip(id: u64) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 10 + id as u8)
}

/// What to start.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// The `boxoffice` binary.
    pub bin: PathBuf,
    /// The cluster's directory (data dirs, settings files, logs).
    pub dir: PathBuf,
    /// Node ids 1..=nodes.
    pub nodes: u64,
    /// Inventory shards at bootstrap.
    pub shards: u16,
    /// Voters per shard at bootstrap (`None`: the cluster's default).
    pub replication_factor: Option<u8>,
    /// Where the nodes listen.
    pub addressing: Addressing,
    /// TOML settings every node runs with (`""`: the defaults); each node's
    /// identity, addresses and secrets are added to it.
    pub settings: String,
    /// The token secret and cluster key (`None`: fresh random ones).
    pub secrets: Option<Secrets>,
    /// Addresses of nodes that existed before (a restarted dev cluster keeps them).
    pub addrs: BTreeMap<u64, NodeAddrs>,
    /// Turns every rate limit off unless `settings` has a `[rate_limits]` table:
    /// the fault harness, the benchmarks and the tests drive thousands of
    /// requests a second from one address and a few users, which the default
    /// limits exist to stop.
    pub unlimited: bool,
    /// The nodes' `RUST_LOG`.
    pub log_filter: String,
    /// Logs as JSON lines (`--log-format json`) instead of text.
    pub log_json: bool,
}

/// The nodes' `RUST_LOG` unless a spec says otherwise.
pub const LOG_FILTER_DEFAULT: &str = "info,openraft=warn";

impl ClusterSpec {
    /// `nodes` nodes of `bin` under `dir` with default settings and fresh secrets.
    pub fn new(bin: impl Into<PathBuf>, dir: &Path, nodes: u64, shards: u16) -> Self {
        ClusterSpec {
            bin: bin.into(),
            dir: dir.to_path_buf(),
            nodes,
            shards,
            replication_factor: None,
            addressing: Addressing::FreePorts,
            settings: String::new(),
            secrets: None,
            addrs: BTreeMap::new(),
            unlimited: false,
            log_filter: LOG_FILTER_DEFAULT.into(),
            log_json: false,
        }
    }
}

/// A cluster's shared secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Secrets {
    /// HS256 secret of user tokens.
    pub token_secret: String,
    /// HS256 secret of admin tokens.
    pub admin_token_secret: String,
    /// Key of node-to-node requests.
    pub cluster_key: String,
}

impl Secrets {
    /// Fresh random secrets.
    pub fn random() -> Self {
        let r = || {
            format!(
                "{:032x}{:032x}",
                rand::random::<u128>(),
                rand::random::<u128>()
            )
        };
        Secrets {
            token_secret: r(),
            admin_token_secret: r(),
            cluster_key: r(),
        }
    }
}

/// One node process.
pub struct LocalNode {
    /// Node id.
    pub id: u64,
    /// Where its public (and admin) API listens.
    pub addr: SocketAddr,
    /// Where its peer listener (Raft RPC, `/internal`) listens.
    pub peer_addr: SocketAddr,
    /// `http` or `https` (the settings have `tls.cert_file`).
    pub scheme: &'static str,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its settings file.
    pub config: PathBuf,
    /// Its log (stdout and stderr, appended).
    pub log: PathBuf,
    child: Option<Child>,
    paused: bool,
}

impl LocalNode {
    /// Base URL of its public API.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// True while its process runs (paused or not).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// True while stopped by SIGSTOP.
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Its process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn signal(&self, sig: libc::c_int) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) takes any pid and signal and touches no memory of
            // ours. The pid is of a child this launcher spawned and has not reaped
            // yet, so it cannot have been reused by another process.
            unsafe {
                libc::kill(c.id() as libc::pid_t, sig);
            }
        }
    }
}

/// A cluster of local node processes.
pub struct LocalCluster {
    bin: PathBuf,
    /// The cluster's directory.
    pub dir: PathBuf,
    /// The nodes, by id.
    pub nodes: BTreeMap<u64, LocalNode>,
    /// Inventory shards at bootstrap.
    pub shards: u16,
    /// Voters per shard at bootstrap (`None`: the cluster's default).
    pub replication_factor: Option<u8>,
    /// The shared secrets.
    pub secrets: Secrets,
    /// An admin token (`local-admin`).
    pub admin_token: String,
    http: reqwest::Client,
    detached: bool,
    log_filter: String,
    log_json: bool,
}

impl LocalCluster {
    /// Prepares the nodes of `spec` (not started): directories and settings files.
    pub fn create(spec: ClusterSpec) -> anyhow::Result<Self> {
        if !(1..=NODES_MAX).contains(&spec.nodes) {
            bail!(
                "a local cluster has 1 to {NODES_MAX} nodes, not {}",
                spec.nodes
            );
        }
        std::fs::create_dir_all(&spec.dir)?;
        let secrets = spec.secrets.clone().unwrap_or_else(Secrets::random);
        let mut base: toml::Table = toml::from_str(&spec.settings).context("cluster settings")?;
        if spec.unlimited && !base.contains_key("rate_limits") {
            base.insert("rate_limits".into(), no_rate_limits());
        }
        // Nodes serving TLS are reached over https, trusting their certificate
        // (self-signed, or whatever `tls.cert_file` chains to by itself).
        let cert_file = base
            .get("tls")
            .and_then(|t| t.get("cert_file"))
            .and_then(|f| f.as_str())
            .map(PathBuf::from);
        let scheme = if cert_file.is_some() { "https" } else { "http" };
        let mut all_addrs = BTreeMap::new();
        for id in 1..=spec.nodes {
            let addrs = match spec.addrs.get(&id) {
                Some(a) => *a,
                None => node_addrs(spec.addressing, id)?,
            };
            all_addrs.insert(id, addrs);
        }
        // Every node's cluster address may be added back as a learner.
        if !base.contains_key("peer_addresses_allowed") {
            base.insert(
                "peer_addresses_allowed".into(),
                toml::Value::Array(
                    all_addrs
                        .values()
                        .map(|a| toml::Value::String(a.peer.to_string()))
                        .collect(),
                ),
            );
        }
        let mut nodes = BTreeMap::new();
        for (&id, &addrs) in &all_addrs {
            let addr = addrs.public;
            let data_dir = spec.dir.join(format!("node-{id}"));
            std::fs::create_dir_all(&data_dir)?;
            let mut table = base.clone();
            let mut put = |k: &str, v: toml::Value| {
                table.insert(k.to_string(), v);
            };
            put("id", toml::Value::Integer(id as i64));
            put("listen", toml::Value::String(addr.to_string()));
            put("peer_listen", toml::Value::String(addrs.peer.to_string()));
            put(
                "data_dir",
                toml::Value::String(data_dir.display().to_string()),
            );
            put(
                "token_secret",
                toml::Value::String(secrets.token_secret.clone()),
            );
            put(
                "admin_token_secret",
                toml::Value::String(secrets.admin_token_secret.clone()),
            );
            put(
                "cluster_key",
                toml::Value::String(secrets.cluster_key.clone()),
            );
            if let Addressing::PerNodeIp { .. } = spec.addressing {
                put("peer_bind_ip", toml::Value::String(node_ip(id).to_string()));
            }
            let config = spec.dir.join(format!("node-{id}.toml"));
            write_private(&config, &toml::to_string(&table)?)?;
            nodes.insert(
                id,
                LocalNode {
                    id,
                    addr,
                    peer_addr: addrs.peer,
                    scheme,
                    data_dir,
                    config,
                    log: spec.dir.join(format!("node-{id}.log")),
                    child: None,
                    paused: false,
                },
            );
        }
        let mut http = reqwest::Client::builder().timeout(ADMIN_TIMEOUT).no_proxy();
        if let Some(f) = &cert_file {
            let pem = std::fs::read(f).with_context(|| format!("tls.cert_file {}", f.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)? {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http.build()?;
        Ok(LocalCluster {
            bin: spec.bin,
            dir: spec.dir,
            nodes,
            shards: spec.shards,
            replication_factor: spec.replication_factor,
            admin_token: Signer::hs256(&secrets.admin_token_secret)
                .mint("local-admin", TOKEN_TTL_S)?,
            secrets,
            http,
            detached: false,
            log_filter: spec.log_filter,
            log_json: spec.log_json,
        })
    }

    /// Mints a user token, or an admin token, with the cluster's secrets.
    pub fn token(&self, user: &str, admin: bool) -> anyhow::Result<String> {
        let secret = if admin {
            &self.secrets.admin_token_secret
        } else {
            &self.secrets.token_secret
        };
        Ok(Signer::hs256(secret).mint(user, TOKEN_TTL_S)?)
    }

    /// Mints a box-office user token (scope `box_office`: it may confirm holds
    /// directly with its own payment reference, for sales paid elsewhere).
    pub fn box_office_token(&self, user: &str) -> anyhow::Result<String> {
        Ok(Signer::hs256(&self.secrets.token_secret).mint_with_scope(
            user,
            TOKEN_TTL_S,
            Some(crate::auth::BOX_OFFICE_SCOPE),
        )?)
    }

    /// Base URLs of every node, in id order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.values().map(LocalNode::url).collect()
    }

    /// The node with id `id`.
    pub fn node(&self, id: u64) -> anyhow::Result<&LocalNode> {
        self.nodes.get(&id).with_context(|| format!("no node {id}"))
    }

    /// Starts node `id` (no-op if running). Output goes to its log.
    pub fn start(&mut self, id: u64) -> anyhow::Result<()> {
        let node = self
            .nodes
            .get_mut(&id)
            .with_context(|| format!("no node {id}"))?;
        if node.child.is_some() {
            return Ok(());
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        let format = if self.log_json { "json" } else { "text" };
        let child = Command::new(&self.bin)
            .args(["node", "--log-format", format, "--config"])
            .arg(&node.config)
            .env("RUST_LOG", &self.log_filter)
            .env("NO_COLOR", "1")
            .env_remove("BOXOFFICE_TOKEN_SECRET")
            .env_remove("BOXOFFICE_CLUSTER_KEY")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// Starts every node and waits until each answers `/healthz`.
    pub async fn start_all(&mut self) -> anyhow::Result<()> {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for &id in &ids {
            self.start(id)?;
        }
        for &id in &ids {
            self.wait_healthy(id, NODE_START_TIMEOUT).await?;
        }
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

    /// SIGTERM (the node hands its leaderships to other voters, syncs and
    /// shuts its groups down), then kill -9 if it has not stopped within
    /// [`STOP_TIMEOUT`].
    pub async fn stop(&mut self, id: u64) {
        self.stop_together(&[id]).await;
    }

    /// Stops every node (SIGTERM to all at once: none waits for another's
    /// handoffs).
    pub async fn stop_all(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        self.stop_together(&ids).await;
    }

    async fn stop_together(&mut self, ids: &[u64]) {
        for id in ids {
            if let Some(node) = self.nodes.get_mut(id) {
                if node.paused {
                    node.signal(libc::SIGCONT);
                    node.paused = false;
                }
                node.signal(libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        for id in ids {
            let Some(node) = self.nodes.get_mut(id) else {
                continue;
            };
            if let Some(c) = node.child.as_mut() {
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = c.try_wait() {
                        node.child = None;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            if node.child.is_some() {
                self.kill(*id);
            }
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

    /// kill -9 of every node started here.
    pub fn kill_all(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.resume(id);
            self.kill(id);
        }
    }

    /// The exit status of node `id` if its process has ended (it is then reaped
    /// and counts as not running).
    pub fn exited(&mut self, id: u64) -> Option<std::process::ExitStatus> {
        let node = self.nodes.get_mut(&id)?;
        let status = node.child.as_mut()?.try_wait().ok()??;
        node.child = None;
        Some(status)
    }

    /// Leaves the nodes running when this value is dropped (`boxoffice dev
    /// --detach`); they are then stopped by pid.
    pub fn detach(mut self) {
        self.detached = true;
    }

    /// Waits until `url` answers 2xx.
    async fn wait_ok(&self, url: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(r) = self.http.get(url).send().await {
                if r.status().is_success() {
                    return true;
                }
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for `/healthz` on node `id`.
    pub async fn wait_healthy(&self, id: u64, timeout: Duration) -> anyhow::Result<()> {
        let node = self.node(id)?;
        if !self
            .wait_ok(&format!("{}/healthz", node.url()), timeout)
            .await
        {
            bail!(
                "node {id} did not answer /healthz within {timeout:?} (see {})",
                node.log.display()
            );
        }
        Ok(())
    }

    /// Waits until every running node answers `/readyz` (bootstrapped, and a
    /// leader known for every group).
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        for n in self.nodes.values().filter(|n| n.running() && !n.paused) {
            let left = deadline.saturating_duration_since(Instant::now());
            if !self.wait_ok(&format!("{}/readyz", n.url()), left).await {
                bail!(
                    "node {} not ready within {timeout:?} (see {})",
                    n.id,
                    n.log.display()
                );
            }
        }
        Ok(())
    }

    /// Bootstraps the cluster with every node as a member, through the first
    /// node, and waits until every group has a leader.
    pub async fn init(&self) -> anyhow::Result<ClusterInitialized> {
        let all: Vec<u64> = self.nodes.keys().copied().collect();
        self.init_members(&all).await
    }

    /// As [`LocalCluster::init`], with only the nodes `ids` as members (the
    /// others are added later, say).
    pub async fn init_members(&self, ids: &[u64]) -> anyhow::Result<ClusterInitialized> {
        let members = self
            .nodes
            .values()
            .filter(|n| ids.contains(&n.id))
            .map(|n| Member {
                id: n.id,
                addr: n.peer_addr.to_string(),
                labels: Default::default(),
            })
            .collect();
        let first = self.nodes.values().next().context("no nodes")?;
        let r = self
            .http
            .post(format!("{}/admin/v1/cluster/init", first.url()))
            .bearer_auth(&self.admin_token)
            .json(&ClusterInit {
                members,
                shards: Some(self.shards),
                replication_factor: self.replication_factor,
            })
            .timeout(INIT_TIMEOUT)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!(
                "cluster init: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
        let init: ClusterInitialized = r.json().await?;
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if self.leaders().await.len() == usize::from(self.shards) + 1 {
                return Ok(init);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("not every group elected a leader within {READY_TIMEOUT:?}")
    }

    /// `/admin/v1/cluster` of node `id`, if it is running and answers.
    pub async fn cluster_view(&self, id: u64) -> Option<ClusterStatus> {
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
            for g in v.groups {
                let Some(leader) = g.leader else { continue };
                let e = best.entry(g.group).or_insert((g.term, leader));
                if g.term > e.0 {
                    *e = (g.term, leader);
                }
            }
        }
        best.into_iter().map(|(g, (_, l))| (g, l)).collect()
    }

    /// The running node leading `group`, waiting up to `timeout` for one.
    pub async fn leader_of(&self, group: u16, timeout: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(&l) = self.leaders().await.get(&group) {
                if self.nodes.get(&l).is_some_and(|n| n.running() && !n.paused) {
                    return Ok(l);
                }
            }
            if Instant::now() > deadline {
                bail!("no running leader of group {group} within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sets node `id`'s clock offset through the fault-injection API.
    pub async fn set_clock_offset(&self, id: u64, offset_ms: i64) -> anyhow::Result<()> {
        let n = self.node(id)?;
        let r = self
            .http
            .post(format!("{}/admin/v1/fault/clock", n.url()))
            .bearer_auth(&self.admin_token)
            .json(&boxoffice_api::ClockOffset { offset_ms })
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("clock offset on node {id}: {}", r.status());
        }
        Ok(())
    }

    /// An admin write against any running node (each in turn), with an
    /// idempotency key derived from the body so that a retry is exactly-once.
    pub async fn admin_post<T: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &T,
        timeout: Duration,
    ) -> anyhow::Result<serde_json::Value> {
        let body = serde_json::to_value(body)?;
        let mut last = String::new();
        for n in self.nodes.values().filter(|n| n.running() && !n.paused) {
            let r = self
                .http
                .post(format!("{}{path}", n.url()))
                .bearer_auth(&self.admin_token)
                .header(
                    boxoffice_api::IDEMPOTENCY_KEY_HEADER,
                    format!("local-{path}-{}", body_digest(&body)),
                )
                .json(&body)
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

    /// Changes node `id`'s membership of every group (catalogue and shards)
    /// through the admin API.
    pub async fn membership(
        &self,
        id: u64,
        action: boxoffice_api::MemberAction,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let addr = self.node(id)?.peer_addr.to_string();
        let body = boxoffice_api::MemberChange {
            action,
            addr: (action == boxoffice_api::MemberAction::AddLearner).then_some(addr),
            allow_unlisted_addr: false,
        };
        for g in 0..=self.shards {
            self.admin_post(
                &format!("/admin/v1/groups/{g}/members/{id}"),
                &body,
                timeout,
            )
            .await
            .with_context(|| format!("{action:?} node {id} in group {g}"))?;
        }
        Ok(())
    }
}

/// A stable digest of a request body, so a retried admin write reuses its key.
fn body_digest(v: &serde_json::Value) -> u64 {
    xxhash_rust::xxh3::xxh3_64(v.to_string().as_bytes())
}

/// Writes a file only its owner can read (it holds secrets).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

impl Drop for LocalCluster {
    /// Whatever happens, the processes started here do not outlive it (unless
    /// detached).
    fn drop(&mut self) {
        if !self.detached {
            self.kill_all();
        }
    }
}

/// A `[rate_limits]` table with every limit off.
fn no_rate_limits() -> toml::Value {
    let off = crate::rate_limits::Rate { per_s: 0, burst: 0 };
    let mut table = toml::Table::new();
    for (name, _) in crate::rate_limits::RateLimitSettings::default().named() {
        let key = name.trim_start_matches("rate_limits.");
        // A Rate is a two-integer table: it always converts.
        if let Ok(v) = toml::Value::try_from(off) {
            table.insert(key.to_string(), v);
        }
    }
    table.insert("over_limit_delay_ms".into(), toml::Value::Integer(0));
    let off = crate::rate_limits::Window {
        max: 0,
        window_s: 0,
    };
    if let Ok(v) = toml::Value::try_from(off) {
        table.insert("user_event_holds".into(), v);
    }
    toml::Value::Table(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_and_below_the_ephemeral_range() {
        let low = ephemeral_low();
        let mut seen = std::collections::BTreeSet::new();
        for id in 1..=NODES_MAX {
            let a = node_addrs(Addressing::FreePorts, id).expect("free ports");
            for addr in [a.public, a.peer] {
                assert!(addr.ip().is_loopback(), "{addr}");
                if low > FREE_PORTS_LOW + 1_000 {
                    assert!((FREE_PORTS_LOW..low).contains(&addr.port()), "{addr}");
                }
                assert!(seen.insert(addr.port()), "{addr} handed out twice");
            }
        }
    }
}
