//! `boxoffice`: the server binary.
//!
//! - `boxoffice node`: run one node (flags and/or a TOML config file).
//! - `boxoffice dev`: run a local N-node cluster as separate processes, with demo data.
//! - `boxoffice token`: mint a signed bearer token.

mod api;
mod app;
mod auth;
mod config;
mod dev;
mod dev_demo;
mod error;
mod event_cache;
mod live;
mod node;
mod proposer;
mod search;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::config::NodeConfig;

#[derive(Parser)]
#[command(
    name = "boxoffice",
    version,
    about = "Replicated ticket inventory, holds and bookings"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one node.
    Node(NodeArgs),
    /// Run a local cluster of separate node processes with demo data (Ctrl-C stops it).
    Dev(dev::DevArgs),
    /// Mint a signed bearer token.
    Token(TokenArgs),
}

#[derive(Args)]
struct NodeArgs {
    /// TOML config file; flags given here override its values.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Node id (≥ 1), stable for the life of the data dir.
    #[arg(long)]
    id: Option<u64>,
    /// Address to listen on, e.g. 127.0.0.1:7101.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Address peers and clients reach this node at (default: --listen).
    #[arg(long)]
    advertise: Option<String>,
    /// Data directory (RocksDB, snapshots).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// HS256 secret for bearer tokens.
    #[arg(long, env = "BOXOFFICE_TOKEN_SECRET", hide_env_values = true)]
    token_secret: Option<String>,
    /// Shared secret for node-to-node requests.
    #[arg(long, env = "BOXOFFICE_CLUSTER_KEY", hide_env_values = true)]
    cluster_key: Option<String>,
    /// Raft: build a snapshot after this many entries (overrides the config file).
    #[arg(long)]
    snapshot_logs_since_last: Option<u64>,
    /// Raft: entries kept after a snapshot (overrides the config file).
    #[arg(long)]
    logs_kept_after_snapshot: Option<u64>,
    /// Local reads answer 503 when the replica lags its clock by more (overrides the config file).
    #[arg(long)]
    replica_staleness_ms_max: Option<u64>,
    /// Source address of outgoing node-to-node connections (overrides the config file).
    #[arg(long)]
    peer_bind_ip: Option<std::net::IpAddr>,
    /// Enables the fault-injection admin API (tests only).
    #[arg(long)]
    fault_injection: bool,
    /// Overrides one `[limits]` setting, e.g. `--limit sse_lag_max=1024` (repeatable).
    #[arg(long = "limit", value_name = "NAME=VALUE")]
    limits: Vec<String>,
}

#[derive(Args)]
struct TokenArgs {
    /// User id (the token's `sub`).
    #[arg(long)]
    user: String,
    /// Make it an admin token.
    #[arg(long)]
    admin: bool,
    /// Signing secret; default: the dev cluster's, read from --dev-dir/cluster.json.
    #[arg(long, env = "BOXOFFICE_TOKEN_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Dev cluster directory to read the secret from.
    #[arg(long, default_value = dev::DEFAULT_DEV_DIR)]
    dev_dir: PathBuf,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 86_400)]
    ttl_s: u64,
}

/// mimalloc instead of the system allocator: a node's request path allocates and
/// frees many small buffers across threads (HTTP bodies, JSON, Raft entries,
/// RocksDB keys), where glibc's malloc spent about a quarter of a busy leader's
/// CPU (`benches/README.md`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Cmd::Node(args) => rt.block_on(run_node(args)),
        Cmd::Dev(args) => rt.block_on(dev::run(args)),
        Cmd::Token(args) => {
            let secret = match args.secret {
                Some(s) => s,
                None => {
                    dev::read_cluster_file(&args.dev_dir)
                        .with_context(|| {
                            format!(
                                "no --secret given and no dev cluster at {}",
                                args.dev_dir.display()
                            )
                        })?
                        .token_secret
                }
            };
            println!(
                "{}",
                auth::TokenKeys::new(&secret).mint(&args.user, args.admin, args.ttl_s)?
            );
            Ok(())
        }
    }
}

fn resolve_node_config(args: NodeArgs) -> anyhow::Result<NodeConfig> {
    let mut raw: toml::Table = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => toml::Table::new(),
    };
    let mut set = |k: &str, v: toml::Value| {
        raw.insert(k.to_string(), v);
    };
    if let Some(v) = args.id {
        set("id", toml::Value::Integer(v as i64));
    }
    if let Some(v) = args.listen {
        set("listen", toml::Value::String(v.to_string()));
    }
    if let Some(v) = args.advertise {
        set("advertise", toml::Value::String(v));
    }
    if let Some(v) = args.data_dir {
        set("data_dir", toml::Value::String(v.display().to_string()));
    }
    if let Some(v) = args.token_secret {
        set("token_secret", toml::Value::String(v));
    }
    if let Some(v) = args.cluster_key {
        set("cluster_key", toml::Value::String(v));
    }
    if let Some(v) = args.peer_bind_ip {
        set("peer_bind_ip", toml::Value::String(v.to_string()));
    }
    if args.fault_injection {
        set("fault_injection", toml::Value::Boolean(true));
    }
    for kv in &args.limits {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--limit takes NAME=VALUE, not {kv:?}"))?;
        let v: i64 = v
            .parse()
            .map_err(|_| anyhow::anyhow!("--limit {k}: {v:?} is not a whole number"))?;
        let limits = raw
            .entry("limits")
            .or_insert_with(|| toml::Value::Table(Default::default()));
        if let toml::Value::Table(t) = limits {
            t.insert(k.to_string(), toml::Value::Integer(v));
        }
    }
    if let Some(v) = args.replica_staleness_ms_max {
        let limits = raw
            .entry("limits")
            .or_insert_with(|| toml::Value::Table(Default::default()));
        if let toml::Value::Table(t) = limits {
            t.insert(
                "replica_staleness_ms_max".into(),
                toml::Value::Integer(v as i64),
            );
        }
    }
    let raft = raw
        .entry("raft")
        .or_insert_with(|| toml::Value::Table(Default::default()));
    if let toml::Value::Table(t) = raft {
        if let Some(v) = args.snapshot_logs_since_last {
            t.insert(
                "snapshot_logs_since_last".into(),
                toml::Value::Integer(v as i64),
            );
        }
        if let Some(v) = args.logs_kept_after_snapshot {
            t.insert(
                "logs_kept_after_snapshot".into(),
                toml::Value::Integer(v as i64),
            );
        }
    }
    let config: NodeConfig = toml::Value::Table(raw)
        .try_into()
        .context("node settings incomplete or invalid (need id, listen, data_dir, token_secret, cluster_key)")?;
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid setting: {e}"))?;
    Ok(config)
}

async fn run_node(args: NodeArgs) -> anyhow::Result<()> {
    let config = resolve_node_config(args)?;
    let listen = config.listen;
    let send_buffer = config.limits.socket_send_buffer_bytes;
    let keys = auth::TokenKeys::new(&config.token_secret);
    let node = node::Node::open(config).await?;
    let router = app::router(app::AppState {
        node: node.clone(),
        keys,
    });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tracing::info!(node_id = node.id(), %listen, "node listening");
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(move |tcp| {
        // Answers (Raft RPC replies over HTTP/2 above all) are small writes that
        // must not wait for the peer's delayed ACK under Nagle's algorithm: that
        // stall is ~40 ms on Linux, and it would sit in every replication round.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "setting TCP_NODELAY failed");
        }
        if send_buffer > 0 {
            if let Err(e) = socket2::SockRef::from(&*tcp).set_send_buffer_size(send_buffer) {
                tracing::warn!(error = %e, "setting the socket send buffer failed");
            }
        }
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    for (g, raft) in node.groups.all() {
        if let Err(e) = raft.shutdown().await {
            tracing::warn!(%g, error = %e, "raft shutdown");
        }
    }
    node.db.sync_wal()?;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}
