//! `boxoffice dev`: a local cluster of real node processes on loopback, bootstrapped
//! and loaded with a demo catalogue. `DIR/cluster.json` tells scripts where
//! everything is (ids, pids, addresses, data dirs, tokens, and the dev token secret).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::auth::TokenKeys;

/// Default data directory of the dev cluster.
pub const DEFAULT_DEV_DIR: &str = "data/dev";
/// Time allowed for every node to answer `/healthz` after start.
const NODE_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for every group to elect a leader.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Time a node gets to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Lifetime of the tokens printed by `dev`.
const DEV_TOKEN_TTL_S: u64 = 30 * 24 * 3600;

/// Flags of `boxoffice dev`.
#[derive(Args, Clone)]
pub struct DevArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Cluster directory (node data dirs, logs, cluster.json). Reused on restart.
    #[arg(long, default_value = DEFAULT_DEV_DIR)]
    pub data_dir: PathBuf,
    /// Node i listens on 127.0.0.1:(base-port + i).
    #[arg(long, default_value_t = 7100)]
    pub base_port: u16,
    /// Inventory shards (first start only).
    #[arg(long, default_value_t = boxoffice_raft::SHARDS_DEFAULT)]
    pub shards: u16,
    /// Skip loading the demo catalogue on first start.
    #[arg(long)]
    pub no_demo: bool,
    /// Start the cluster, print its details, and exit leaving the nodes running
    /// (stop them with the pids in cluster.json).
    #[arg(long)]
    pub detach: bool,
}

/// One node of a dev cluster, as written to `cluster.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeEntry {
    /// Node id.
    pub id: u64,
    /// OS process id of the running node.
    pub pid: u32,
    /// HTTP address (host:port).
    pub http: String,
    /// Data directory.
    pub data_dir: PathBuf,
}

/// `cluster.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterFile {
    /// Nodes.
    pub nodes: Vec<NodeEntry>,
    /// Inventory shards.
    pub shards: u16,
    /// A user token ("demo-user").
    pub user_token: String,
    /// An admin token ("demo-admin").
    pub admin_token: String,
    /// The HS256 secret (dev clusters only) so scripts can mint tokens.
    pub token_secret: String,
    /// The node-to-node key.
    pub cluster_key: String,
    /// Cluster bootstrapped.
    pub initialized: bool,
    /// Demo catalogue loaded.
    pub demo_loaded: bool,
}

/// Reads `DIR/cluster.json`.
pub fn read_cluster_file(dir: &Path) -> anyhow::Result<ClusterFile> {
    let path = dir.join("cluster.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn write_cluster_file(dir: &Path, file: &ClusterFile) -> anyhow::Result<()> {
    let tmp = dir.join("cluster.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(file)?)?;
    std::fs::rename(&tmp, dir.join("cluster.json"))?;
    Ok(())
}

fn random_secret() -> String {
    format!(
        "{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    )
}

/// Runs the dev cluster until Ctrl-C.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    if args.nodes == 0 || args.nodes > 9 {
        bail!("--nodes must be between 1 and 9");
    }
    std::fs::create_dir_all(&args.data_dir)?;
    let dir = std::fs::canonicalize(&args.data_dir)?;
    let existing = read_cluster_file(&dir).ok();
    let (token_secret, cluster_key, shards, initialized, demo_loaded, nodes_n) = match &existing {
        Some(f) => (
            f.token_secret.clone(),
            f.cluster_key.clone(),
            f.shards,
            f.initialized,
            f.demo_loaded,
            f.nodes.len() as u64,
        ),
        None => (
            random_secret(),
            random_secret(),
            args.shards,
            false,
            false,
            args.nodes,
        ),
    };
    if existing.is_some() && nodes_n != args.nodes {
        eprintln!(
            "note: {} already holds a {nodes_n}-node cluster; restarting it as it is",
            dir.display()
        );
    }
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    let mut entries = Vec::new();
    for id in 1..=nodes_n {
        let http = match existing
            .as_ref()
            .and_then(|f| f.nodes.iter().find(|n| n.id == id))
        {
            Some(n) => n.http.clone(),
            None => format!("127.0.0.1:{}", args.base_port + id as u16),
        };
        let data_dir = dir.join(format!("node-{id}"));
        std::fs::create_dir_all(&data_dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join("node.log"))?;
        let child = tokio::process::Command::new(&exe)
            .args([
                "node",
                "--id",
                &id.to_string(),
                "--listen",
                &http,
                "--data-dir",
            ])
            .arg(&data_dir)
            .env("BOXOFFICE_TOKEN_SECRET", &token_secret)
            .env("BOXOFFICE_CLUSTER_KEY", &cluster_key)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(!args.detach)
            .spawn()
            .with_context(|| format!("starting node {id}"))?;
        entries.push(NodeEntry {
            id,
            pid: child.id().unwrap_or(0),
            http,
            data_dir,
        });
        children.push(child);
    }
    let keys = TokenKeys::new(&token_secret);
    let mut file = ClusterFile {
        nodes: entries.clone(),
        shards,
        user_token: keys.mint("demo-user", false, DEV_TOKEN_TTL_S)?,
        admin_token: keys.mint("demo-admin", true, DEV_TOKEN_TTL_S)?,
        token_secret,
        cluster_key,
        initialized,
        demo_loaded,
    };
    write_cluster_file(&dir, &file)?;

    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?;
    let result = async {
        for n in &entries {
            wait_for(
                &http,
                &format!("http://{}/healthz", n.http),
                NODE_START_TIMEOUT,
            )
            .await
            .with_context(|| {
                format!(
                    "node {} did not start; see {}",
                    n.id,
                    n.data_dir.join("node.log").display()
                )
            })?;
        }
        if !file.initialized {
            let members: Vec<Value> = entries
                .iter()
                .map(|n| json!({"id": n.id, "addr": n.http}))
                .collect();
            let resp = http
                .post(format!("http://{}/admin/v1/cluster/init", entries[0].http))
                .bearer_auth(&file.admin_token)
                .json(&json!({"members": members, "shards": shards}))
                .send()
                .await?;
            if !resp.status().is_success() {
                bail!(
                    "bootstrap failed: {}",
                    resp.text().await.unwrap_or_default()
                );
            }
            file.initialized = true;
            write_cluster_file(&dir, &file)?;
        }
        for n in &entries {
            wait_for(&http, &format!("http://{}/readyz", n.http), READY_TIMEOUT)
                .await
                .with_context(|| format!("node {} not ready", n.id))?;
        }
        if !file.demo_loaded && !args.no_demo {
            let summary = crate::dev_demo::load(
                &http,
                &entries.iter().map(|n| n.http.clone()).collect::<Vec<_>>(),
                &file.admin_token,
            )
            .await?;
            println!("demo catalogue loaded: {summary}");
            file.demo_loaded = true;
            write_cluster_file(&dir, &file)?;
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = result {
        stop(children).await;
        return Err(e);
    }

    println!(
        "\nboxoffice dev cluster: {} nodes, {} inventory shards",
        entries.len(),
        shards
    );
    for n in &entries {
        println!(
            "  node {}  http://{}  pid {}  data {}",
            n.id,
            n.http,
            n.pid,
            n.data_dir.display()
        );
    }
    println!("\ncluster file: {}", dir.join("cluster.json").display());
    println!("user token  (demo-user):  {}", file.user_token);
    println!("admin token (demo-admin): {}", file.admin_token);
    let base = &entries[0].http;
    let sample_event = first_event_id(&http, base).await.unwrap_or(1);
    println!("\ntry:");
    println!("  curl -s http://{base}/v1/events | head -c 600");
    println!("  curl -s http://{base}/v1/events/{sample_event}/seats | head -c 600");
    println!(
        "  curl -s -X POST http://{base}/v1/holds -H 'Authorization: Bearer {}' -H 'Idempotency-Key: try-1' -d '{{\"event_id\": {sample_event}, \"seat_ids\": [0, 1]}}'",
        file.user_token
    );
    if args.detach {
        println!(
            "\nnodes left running (detached); stop them with: kill {}",
            entries
                .iter()
                .map(|n| n.pid.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
        for c in children {
            std::mem::forget(c);
        }
        return Ok(());
    }
    println!(
        "\nCtrl-C stops the cluster; running `boxoffice dev` again restarts it with its data."
    );
    tokio::select! {
        _ = crate::shutdown_signal() => {}
        _ = wait_all(&mut children) => { eprintln!("all nodes exited"); }
    }
    stop(children).await;
    Ok(())
}

async fn first_event_id(http: &reqwest::Client, base: &str) -> Option<u64> {
    let v: Value = http
        .get(format!("http://{base}/v1/events?limit=1"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    v["events"][0]["event"]["event_id"].as_u64()
}

async fn wait_all(children: &mut [tokio::process::Child]) {
    for c in children.iter_mut() {
        let _ = c.wait().await;
    }
}

async fn stop(children: Vec<tokio::process::Child>) {
    for c in &children {
        if let Some(pid) = c.id() {
            // SIGTERM lets the node sync and shut its groups down.
            unsafe_kill(pid, 15);
        }
    }
    for mut c in children {
        if tokio::time::timeout(STOP_TIMEOUT, c.wait()).await.is_err() {
            let _ = c.kill().await;
        }
    }
}

fn unsafe_kill(pid: u32, signal: i32) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

async fn wait_for(http: &reqwest::Client, url: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(r) = http.get(url).timeout(Duration::from_secs(2)).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("{url} not ready within {} s", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
