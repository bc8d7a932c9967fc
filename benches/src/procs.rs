//! Peer servers the comparison starts itself: Redis (one server) and etcd (three
//! members), each bound to loopback only, in a fresh directory, killed and
//! removed when its handle is dropped. PostgreSQL lives in `pg.rs`.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long a started peer may take to answer its readiness check.
pub const PEER_START_TIMEOUT: Duration = Duration::from_secs(60);

/// Installs a Debian package with apt-get if `exe` is missing (root only).
pub fn ensure_installed(exe: &str, packages: &[&str]) -> anyhow::Result<PathBuf> {
    let find = || {
        ["/usr/bin", "/usr/local/bin", "/usr/sbin"]
            .iter()
            .map(|d| Path::new(d).join(exe))
            .find(|p| p.exists())
    };
    if let Some(p) = find() {
        return Ok(p);
    }
    eprintln!(
        "{exe} not found; installing {} with apt-get",
        packages.join(" ")
    );
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {} >/dev/null",
            packages.join(" ")
        ))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    match (ok, find()) {
        (true, Some(p)) => Ok(p),
        _ => bail!(
            "{exe} is not installed and `apt-get install {}` failed (run as root, with the Debian archive reachable)",
            packages.join(" ")
        ),
    }
}

/// One server process with its log file; killed (SIGKILL) when dropped.
pub struct Proc {
    pub name: String,
    exe: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    pub fn new(name: &str, exe: &Path, args: Vec<String>, log: PathBuf) -> Self {
        Proc {
            name: name.into(),
            exe: exe.into(),
            args,
            log,
            child: None,
        }
    }

    pub fn start(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.exe)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} ({})", self.name, self.exe.display()))?;
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// kill -9 and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fresh directory under the system temp dir, emptied first.
fn fresh_dir(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// How a Redis server keeps its data and whom it follows.
#[derive(Clone, Copy, Debug)]
pub struct RedisOpts {
    /// An append-only file fsynced before every reply (`appendfsync always`);
    /// otherwise memory only (`appendonly no`). RDB snapshots are off either way.
    pub aof_always: bool,
    /// A replica of the server on this port.
    pub replica_of: Option<u16>,
}

/// A Redis 7 server on loopback.
pub struct RedisServer {
    pub proc: Proc,
    pub port: u16,
    pub version: String,
    dir: PathBuf,
}

impl RedisServer {
    pub async fn start(port: u16, opts: RedisOpts) -> anyhow::Result<Self> {
        let exe = ensure_installed("redis-server", &["redis-server"])?;
        let version = Command::new(&exe)
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("v=").map(str::to_string))
            })
            .unwrap_or_default();
        let dir = fresh_dir(&format!("boxoffice-bench-redis-{port}"))?;
        let mut args: Vec<String> = [
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--dir",
            &dir.to_string_lossy(),
            "--appendonly",
            if opts.aof_always { "yes" } else { "no" },
            "--appendfsync",
            "always",
            "--save",
            "",
            "--maxclients",
            "10000",
            "--protected-mode",
            "yes",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(primary) = opts.replica_of {
            args.extend([
                "--replicaof".into(),
                "127.0.0.1".into(),
                primary.to_string(),
            ]);
        }
        let mut proc = Proc::new("redis", &exe, args, dir.join("redis.log"));
        proc.start()?;
        let server = RedisServer {
            proc,
            port,
            version,
            dir,
        };
        let deadline = Instant::now() + PEER_START_TIMEOUT;
        loop {
            if let Ok(mut c) = server.connect().await {
                let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut c).await;
                if pong.is_ok() {
                    return Ok(server);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "redis did not answer PING within {PEER_START_TIMEOUT:?} (see {})",
                    server.dir.join("redis.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The pid of the server process.
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// Waits until `n` replicas are connected and in sync (`INFO replication`).
    pub async fn wait_replicas(&self, n: usize) -> anyhow::Result<()> {
        let mut c = self.connect().await?;
        let deadline = Instant::now() + PEER_START_TIMEOUT;
        loop {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut c)
                .await?;
            let online = info
                .lines()
                .filter(|l| l.starts_with("slave") && l.contains("state=online"))
                .count();
            if online >= n {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("redis on port {}: {online} of {n} replicas online within {PEER_START_TIMEOUT:?}", self.port);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn connect(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))?;
        Ok(client.get_multiplexed_async_connection().await?)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.proc.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// etcd with three members on loopback (client ports `base+1..=base+3`, peer
/// ports `base+11..=base+13`), fsync on (the default).
pub struct EtcdCluster {
    pub members: Vec<Proc>,
    pub client_urls: Vec<String>,
    pub version: String,
    dir: PathBuf,
}

impl EtcdCluster {
    pub async fn start(base_port: u16) -> anyhow::Result<Self> {
        let exe = ensure_installed("etcd", &["etcd-server"])?;
        let version = Command::new(&exe)
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .find_map(|l| l.strip_prefix("etcd Version: ").map(str::to_string))
            })
            .unwrap_or_default();
        let dir = fresh_dir(&format!("boxoffice-bench-etcd-{base_port}"))?;
        let peer = |i: u16| format!("http://127.0.0.1:{}", base_port + 10 + i);
        let client = |i: u16| format!("http://127.0.0.1:{}", base_port + i);
        let initial: Vec<String> = (1..=3).map(|i| format!("e{i}={}", peer(i))).collect();
        let mut members = Vec::new();
        for i in 1..=3u16 {
            let args = vec![
                "--name".to_string(),
                format!("e{i}"),
                "--data-dir".into(),
                dir.join(format!("e{i}")).to_string_lossy().into(),
                "--listen-client-urls".into(),
                client(i),
                "--advertise-client-urls".into(),
                client(i),
                "--listen-peer-urls".into(),
                peer(i),
                "--initial-advertise-peer-urls".into(),
                peer(i),
                "--initial-cluster".into(),
                initial.join(","),
                "--initial-cluster-state".into(),
                "new".into(),
                "--initial-cluster-token".into(),
                format!("boxoffice-bench-{base_port}"),
                "--logger".into(),
                "zap".into(),
                "--log-level".into(),
                "warn".into(),
                // boxoffice's Raft timing (50 ms heartbeats, elections after
                // 300-600 ms), history compacted as etcd's operators run it, and
                // room for every run's keys.
                "--heartbeat-interval".into(),
                "50".into(),
                "--election-timeout".into(),
                "300".into(),
                "--auto-compaction-mode".into(),
                "periodic".into(),
                "--auto-compaction-retention".into(),
                "5m".into(),
                "--quota-backend-bytes".into(),
                (8u64 << 30).to_string(),
            ];
            let mut p = Proc::new(
                &format!("etcd e{i}"),
                &exe,
                args,
                dir.join(format!("e{i}.log")),
            );
            p.start()?;
            members.push(p);
        }
        let cluster = EtcdCluster {
            members,
            client_urls: (1..=3).map(client).collect(),
            version,
            dir,
        };
        for i in 0..3 {
            cluster.wait_healthy(i).await?;
        }
        Ok(cluster)
    }

    /// Waits for member `i` (0-based) to report itself healthy (it has a leader).
    pub async fn wait_healthy(&self, i: usize) -> anyhow::Result<()> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()?;
        let deadline = Instant::now() + PEER_START_TIMEOUT;
        loop {
            if let Ok(r) = http
                .get(format!("{}/health", self.client_urls[i]))
                .send()
                .await
            {
                if let Ok(v) = r.json::<serde_json::Value>().await {
                    if v["health"] == "true" {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "etcd member e{} not healthy within {PEER_START_TIMEOUT:?} (see {})",
                    i + 1,
                    self.dir.join(format!("e{}.log", i + 1)).display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Index (0-based) of the member that is leader, as the members report it.
    pub async fn leader(&self) -> Option<usize> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .ok()?;
        for url in &self.client_urls {
            let Ok(r) = http
                .post(format!("{url}/v3/maintenance/status"))
                .json(&serde_json::json!({}))
                .send()
                .await
            else {
                continue;
            };
            let Ok(v) = r.json::<serde_json::Value>().await else {
                continue;
            };
            let (Some(leader), Some(me)) =
                (v["leader"].as_str(), v["header"]["member_id"].as_str())
            else {
                continue;
            };
            if leader == me {
                return self.client_urls.iter().position(|u| u == url);
            }
        }
        None
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            m.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
