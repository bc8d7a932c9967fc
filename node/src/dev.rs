//! `boxoffice dev`: a local cluster of real node processes on loopback, bootstrapped
//! and loaded with a demo catalogue. `DIR/cluster.json` tells scripts where
//! everything is (ids, pids, addresses, data dirs, tokens, and the dev token secret).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::local_cluster::{Addressing, ClusterSpec, LocalCluster, Secrets, NODE_START_TIMEOUT};

/// Default data directory of the dev cluster.
pub const DEFAULT_DEV_DIR: &str = "data/dev";

/// Flags of `boxoffice dev`.
#[derive(Args, Clone)]
pub struct DevArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Cluster directory (node data dirs, logs, cluster.json). Reused on restart.
    #[arg(long, default_value = DEFAULT_DEV_DIR)]
    pub data_dir: PathBuf,
    /// Node i listens on 127.0.0.1:(base-port + i), its peer listener on
    /// 127.0.0.1:(base-port + 100 + i).
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
    /// Turn the rate limits off: for benchmarks, which drive a site's worth of
    /// load from one address and a few users (the limits exist to stop that).
    #[arg(long)]
    pub no_rate_limits: bool,
    /// On first start, restore this backup (`boxoffice ctl backup`) into the new
    /// cluster instead of bootstrapping an empty one (no demo catalogue).
    #[arg(long)]
    pub restore_from: Option<PathBuf>,
}

/// One node of a dev cluster, as written to `cluster.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeEntry {
    /// Node id.
    pub id: u64,
    /// OS process id of the running node.
    pub pid: u32,
    /// Public (and admin) API address (host:port).
    pub http: String,
    /// Cluster address (host:port): Raft RPC and `/internal`.
    #[serde(default)]
    pub peer: String,
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
    /// The HS256 secret of user tokens (dev clusters only) so scripts can mint them.
    pub token_secret: String,
    /// The HS256 secret of admin tokens (dev clusters only). Absent in a cluster
    /// file of an earlier release: a new one is made.
    #[serde(default)]
    pub admin_token_secret: String,
    /// The node-to-node key.
    pub cluster_key: String,
    /// Cluster bootstrapped.
    pub initialized: bool,
    /// Demo catalogue loaded.
    pub demo_loaded: bool,
    /// A box-office token ("demo-box-office", scope `box_office`): it may
    /// confirm holds directly with its own payment reference.
    #[serde(default)]
    pub box_office_token: String,
    /// The payments sandbox the nodes use as their provider.
    #[serde(default)]
    pub payments: Option<SandboxEntry>,
}

/// The dev cluster's payments sandbox, as written to `cluster.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SandboxEntry {
    /// Its base URL (`payments.provider_url` of every node).
    pub url: String,
    /// Its secret API key (`payments.secret_key`).
    pub secret_key: String,
    /// The webhook signing secret (`payments.webhook_secrets`).
    pub webhook_secret: String,
    /// Its process id.
    pub pid: u32,
}

/// Where the sandbox listens: `base_port + SANDBOX_PORT_OFFSET` on loopback.
pub const SANDBOX_PORT_OFFSET: u16 = 99;

/// Starts `boxoffice payments-sandbox` as a child process delivering webhooks
/// to every node, logging to `DIR/sandbox.log`.
fn start_sandbox(
    dir: &Path,
    entry: &SandboxEntry,
    node_urls: &[String],
) -> anyhow::Result<std::process::Child> {
    let log = std::fs::File::create(dir.join("sandbox.log"))?;
    let listen = entry.url.trim_start_matches("http://");
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("payments-sandbox")
        .arg("--listen")
        .arg(listen)
        .env("BOXOFFICE_SANDBOX_SECRET_KEY", &entry.secret_key)
        .env("BOXOFFICE_SANDBOX_WEBHOOK_SECRET", &entry.webhook_secret)
        .stdout(log.try_clone()?)
        .stderr(log)
        .stdin(std::process::Stdio::null());
    for u in node_urls {
        cmd.arg("--webhook-url")
            .arg(format!("http://{u}/v1/payments/webhook"));
    }
    cmd.spawn().context("starting the payments sandbox")
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

/// Runs the dev cluster until Ctrl-C.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)?;
    let dir = std::fs::canonicalize(&args.data_dir)?;
    let existing = read_cluster_file(&dir).ok();
    let mut spec = ClusterSpec::new(std::env::current_exe()?, &dir, args.nodes, args.shards);
    spec.addressing = Addressing::Loopback {
        base_port: args.base_port,
    };
    spec.unlimited = args.no_rate_limits;
    let (mut initialized, mut demo_loaded) = (false, false);
    if let Some(f) = &existing {
        // A restart keeps the cluster as it was: its nodes, addresses and secrets.
        if f.nodes.len() as u64 != args.nodes {
            eprintln!(
                "note: {} already holds a {}-node cluster; restarting it as it is",
                dir.display(),
                f.nodes.len()
            );
        }
        spec.nodes = f.nodes.len() as u64;
        spec.shards = f.shards;
        spec.secrets = Some(Secrets {
            token_secret: f.token_secret.clone(),
            admin_token_secret: if f.admin_token_secret.is_empty() {
                Secrets::random().admin_token_secret
            } else {
                f.admin_token_secret.clone()
            },
            cluster_key: f.cluster_key.clone(),
        });
        for n in &f.nodes {
            let parse = |what: &str, a: &str| -> anyhow::Result<std::net::SocketAddr> {
                a.parse().with_context(|| {
                    format!(
                        "node {} {what} address {a:?} in {}: a cluster from before nodes had a peer listener; delete the directory to start afresh",
                        n.id,
                        dir.join("cluster.json").display()
                    )
                })
            };
            spec.addrs.insert(
                n.id,
                crate::local_cluster::NodeAddrs {
                    public: parse("public", &n.http)?,
                    peer: parse("peer", &n.peer)?,
                },
            );
        }
        initialized = f.initialized;
        demo_loaded = f.demo_loaded;
    }
    let sandbox = match existing.as_ref().and_then(|f| f.payments.clone()) {
        Some(s) => s,
        None => {
            let r = || format!("{:032x}", rand::random::<u128>());
            SandboxEntry {
                url: format!(
                    "http://127.0.0.1:{}",
                    args.base_port.saturating_add(SANDBOX_PORT_OFFSET)
                ),
                secret_key: format!("sk_test_{}", r()),
                webhook_secret: format!("whsec_{}", r()),
                pid: 0,
            }
        }
    };
    let mut payments = toml::Table::new();
    payments.insert("provider_url".into(), sandbox.url.clone().into());
    payments.insert("secret_key".into(), sandbox.secret_key.clone().into());
    payments.insert(
        "webhook_secrets".into(),
        toml::Value::Array(vec![sandbox.webhook_secret.clone().into()]),
    );
    let mut settings = toml::Table::new();
    settings.insert("payments".into(), toml::Value::Table(payments));
    spec.settings = toml::to_string(&settings)?;
    let restore = match (&args.restore_from, &existing) {
        (Some(from), None) => {
            let m = crate::backup::verify(from)?;
            spec.shards = m.shards;
            Some(from.clone())
        }
        (Some(_), Some(_)) => anyhow::bail!(
            "{} already holds a cluster: restore into a new directory",
            dir.display()
        ),
        (None, _) => None,
    };
    let mut cluster = LocalCluster::create(spec)?;
    if let Some(from) = &restore {
        let members: std::collections::BTreeMap<u64, String> = cluster
            .nodes
            .values()
            .map(|n| (n.id, n.peer_addr.to_string()))
            .collect();
        for n in cluster.nodes.values() {
            crate::backup::restore_data_dir(from, &n.data_dir, n.id, &members)
                .with_context(|| format!("restoring node {}", n.id))?;
        }
        println!("restored {} into {} nodes", from.display(), members.len());
        (initialized, demo_loaded) = (true, true);
    }
    let node_urls: Vec<String> = cluster.nodes.values().map(|n| n.addr.to_string()).collect();
    let mut sandbox_child = start_sandbox(&dir, &sandbox, &node_urls)?;
    let sandbox = SandboxEntry {
        pid: sandbox_child.id(),
        ..sandbox
    };
    let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
    for &id in &ids {
        cluster.start(id)?;
    }
    let mut file = ClusterFile {
        nodes: cluster
            .nodes
            .values()
            .map(|n| NodeEntry {
                id: n.id,
                pid: n.pid().unwrap_or(0),
                http: n.addr.to_string(),
                peer: n.peer_addr.to_string(),
                data_dir: n.data_dir.clone(),
            })
            .collect(),
        shards: cluster.shards,
        user_token: cluster.token("demo-user", false)?,
        admin_token: cluster.token("demo-admin", true)?,
        token_secret: cluster.secrets.token_secret.clone(),
        admin_token_secret: cluster.secrets.admin_token_secret.clone(),
        cluster_key: cluster.secrets.cluster_key.clone(),
        initialized,
        demo_loaded,
        box_office_token: cluster.box_office_token("demo-box-office")?,
        payments: Some(sandbox.clone()),
    };
    write_cluster_file(&dir, &file)?;
    let result = async {
        for &id in &ids {
            cluster.wait_healthy(id, NODE_START_TIMEOUT).await?;
        }
        if !file.initialized {
            cluster.init().await.context("bootstrap failed")?;
            file.initialized = true;
            write_cluster_file(&dir, &file)?;
        }
        // A restarted replica is ready once it has caught up with its leader,
        // which after a restart of a large catalogue takes as long as starting.
        cluster.wait_ready(NODE_START_TIMEOUT).await?;
        if !file.demo_loaded && !args.no_demo {
            let http = reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()?;
            let addrs: Vec<String> = file.nodes.iter().map(|n| n.http.clone()).collect();
            let summary = crate::dev_demo::load(&http, &addrs, &file.admin_token).await?;
            println!("demo catalogue loaded: {summary}");
            file.demo_loaded = true;
            write_cluster_file(&dir, &file)?;
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = result {
        cluster.stop_all().await;
        let _ = sandbox_child.kill();
        return Err(e);
    }

    println!(
        "\nboxoffice dev cluster: {} nodes, {} inventory shards",
        file.nodes.len(),
        file.shards
    );
    for n in &file.nodes {
        println!(
            "  node {}  http://{}  peer {}  pid {}  data {}  log {}",
            n.id,
            n.http,
            n.peer,
            n.pid,
            n.data_dir.display(),
            dir.join(format!("node-{}.log", n.id)).display()
        );
    }
    println!("\ncluster file: {}", dir.join("cluster.json").display());
    println!(
        "payments sandbox: {}  (pid {}, log {})",
        sandbox.url,
        sandbox.pid,
        dir.join("sandbox.log").display()
    );
    println!("user token  (demo-user):  {}", file.user_token);
    println!("admin token (demo-admin): {}", file.admin_token);
    println!(
        "box-office token (demo-box-office): {}",
        file.box_office_token
    );
    let base = &file.nodes[0].http;
    let sample_event = first_event_id(base).await.unwrap_or(1);
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
            file.nodes
                .iter()
                .map(|n| n.pid.to_string())
                .chain([sandbox.pid.to_string()])
                .collect::<Vec<_>>()
                .join(" ")
        );
        cluster.detach();
        return Ok(());
    }
    println!(
        "\nCtrl-C stops the cluster; running `boxoffice dev` again restarts it with its data."
    );
    loop {
        tokio::select! {
            _ = crate::shutdown_signal() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                if ids.iter().all(|&id| cluster.exited(id).is_some() || !cluster.nodes[&id].running()) {
                    eprintln!("all nodes exited");
                    break;
                }
            }
        }
    }
    cluster.stop_all().await;
    let _ = sandbox_child.kill();
    let _ = sandbox_child.wait();
    Ok(())
}

async fn first_event_id(base: &str) -> Option<u64> {
    let page: boxoffice_api::EventPage = reqwest::Client::new()
        .get(format!("http://{base}/v1/events?limit=1"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    page.events.first().map(|e| e.event.event_id)
}
