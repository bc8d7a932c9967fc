//! `boxoffice`: the server binary.
//!
//! - `boxoffice node`: run one node (a TOML settings file and/or `--set`).
//! - `boxoffice dev`: run a local N-node cluster as separate processes, with demo data.
//! - `boxoffice token`: mint a signed bearer token.
//! - `boxoffice ctl`: operate a running cluster (status, members, snapshots).
//! - `boxoffice payments-sandbox`: a local payment provider speaking Stripe's API.

use std::path::PathBuf;

use anyhow::Context;
use boxoffice_node::{auth, config, dev};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "boxoffice",
    version,
    about = "Replicated ticket inventory, holds and bookings"
)]
struct Cli {
    /// Log lines as text, or as one JSON object per line (with the fields of
    /// every span they are in: request id, node, group).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "BOXOFFICE_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Cmd,
}

/// How log lines are written (to stderr).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one node.
    Node(NodeArgs),
    /// Run a local cluster of separate node processes with demo data (Ctrl-C stops it).
    Dev(dev::DevArgs),
    /// Mint a signed bearer token.
    Token(TokenArgs),
    /// Operate a running cluster through its admin API (status, members, snapshots, tokens).
    Ctl(boxoffice_node::ctl::CtlArgs),
    /// Run a local payment provider that speaks Stripe's API and delivers signed webhooks.
    PaymentsSandbox(SandboxArgs),
    /// Print the API's OpenAPI 3.1 document (what `GET /openapi.json` serves).
    Openapi,
}

#[derive(Args)]
struct SandboxArgs {
    /// Address to listen on (keep it on loopback: the sandbox's fault controls
    /// take no key).
    #[arg(long, default_value = "127.0.0.1:7199")]
    listen: std::net::SocketAddr,
    /// The secret key callers present (`Authorization: Bearer ...`).
    #[arg(long, env = "BOXOFFICE_SANDBOX_SECRET_KEY")]
    secret_key: String,
    /// Where webhooks are delivered (repeatable: each retry goes to the next).
    #[arg(long = "webhook-url")]
    webhook_urls: Vec<String>,
    /// The webhook signing secret (`whsec_...`).
    #[arg(long, env = "BOXOFFICE_SANDBOX_WEBHOOK_SECRET")]
    webhook_secret: String,
    /// First retry delay of a failed delivery (ms), doubled after each failure.
    #[arg(long, default_value_t = 500)]
    retry_base_ms: u64,
    /// Longest delay between two delivery attempts (ms).
    #[arg(long, default_value_t = 60_000)]
    retry_max_ms: u64,
    /// How long an event is retried before it is given up (s; the provider's is 3 days).
    #[arg(long, default_value_t = 3 * 24 * 3600)]
    retry_window_s: u64,
}

#[derive(Args)]
struct NodeArgs {
    /// TOML settings file (`deploy/node.example.toml` lists every setting).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Sets one setting, overriding the file: `NAME=VALUE` with NAME as in the
    /// file (`id=2`, `listen=127.0.0.1:7102`, `limits.sse_lag_max=1024`,
    /// `raft.snapshot_logs_since_last=100`). Repeatable. The secrets may instead
    /// come from BOXOFFICE_TOKEN_SECRET, BOXOFFICE_ADMIN_TOKEN_SECRET and
    /// BOXOFFICE_CLUSTER_KEY, which keeps them out of the process list.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
}

#[derive(Args)]
struct TokenArgs {
    /// User id (the token's `sub`).
    #[arg(long)]
    user: String,
    /// Make it an admin token (signed with the admin secret).
    #[arg(long)]
    admin: bool,
    /// Signing secret; default: BOXOFFICE_ADMIN_TOKEN_SECRET (with --admin) or
    /// BOXOFFICE_TOKEN_SECRET, else the dev cluster's, from --dev-dir/cluster.json.
    #[arg(long)]
    secret: Option<String>,
    /// Dev cluster directory to read the secret from.
    #[arg(long, default_value = dev::DEFAULT_DEV_DIR)]
    dev_dir: PathBuf,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 86_400)]
    ttl_s: u64,
    /// Scopes, space-separated: `box_office` lets the token confirm holds
    /// directly with its own payment reference (sales paid elsewhere).
    #[arg(long)]
    scope: Option<String>,
}

/// mimalloc instead of the system allocator: a node's request path allocates and
/// frees many small buffers across threads (HTTP bodies, JSON, Raft entries,
/// RocksDB keys), where glibc's malloc spent about a quarter of a busy leader's
/// CPU (`benches/README.md`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().with_span_list(true).init(),
    }
    boxoffice_node::abort_on_panic();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Cmd::Node(args) => {
            let config = config::resolve(args.config.as_deref(), &args.set, |name| {
                std::env::var(name).ok()
            })?;
            rt.block_on(boxoffice_node::run_node(config))
        }
        Cmd::Dev(args) => rt.block_on(dev::run(args)),
        Cmd::Openapi => {
            println!("{}", boxoffice_node::openapi::rendered());
            Ok(())
        }
        Cmd::Ctl(args) => {
            // An operator's mistake gets its message and hint, not a backtrace.
            if let Err(e) = rt.block_on(boxoffice_node::ctl::run(args)) {
                eprintln!("error: {e:#}");
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Token(args) => {
            let var = if args.admin {
                "BOXOFFICE_ADMIN_TOKEN_SECRET"
            } else {
                "BOXOFFICE_TOKEN_SECRET"
            };
            let secret = match args.secret.or_else(|| std::env::var(var).ok()) {
                Some(s) => s,
                None => {
                    let file = dev::read_cluster_file(&args.dev_dir).with_context(|| {
                        format!(
                            "no --secret given, no {var}, and no dev cluster at {}",
                            args.dev_dir.display()
                        )
                    })?;
                    if args.admin {
                        file.admin_token_secret
                    } else {
                        file.token_secret
                    }
                }
            };
            println!(
                "{}",
                auth::Signer::hs256(&secret).mint_with_scope(
                    &args.user,
                    args.ttl_s,
                    args.scope.as_deref()
                )?
            );
            Ok(())
        }
        Cmd::PaymentsSandbox(args) => rt.block_on(async move {
            use boxoffice_node::payments::sandbox::{serve, Sandbox, SandboxConfig};
            let config = SandboxConfig {
                secret_key: args.secret_key,
                webhook_urls: args.webhook_urls,
                webhook_secret: args.webhook_secret,
                retry_base: std::time::Duration::from_millis(args.retry_base_ms.max(1)),
                retry_max: std::time::Duration::from_millis(args.retry_max_ms.max(1)),
                retry_window: std::time::Duration::from_secs(args.retry_window_s),
                ..SandboxConfig::default()
            };
            let listener = tokio::net::TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("binding {}", args.listen))?;
            eprintln!("payments sandbox on http://{}", listener.local_addr()?);
            tokio::select! {
                r = serve(Sandbox::new(config), listener) => Ok(r?),
                _ = boxoffice_node::shutdown_signal() => Ok(()),
            }
        }),
    }
}
