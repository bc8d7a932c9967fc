//! `jepsen`: fault injection and checking against real boxoffice nodes.
//!
//! - `jepsen run …`: start a cluster, run workloads under faults, check, report.
//! - `jepsen check --history FILE`: run the checkers over a recorded history.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use jepsen::checker::{check_all, CheckConfig};
use jepsen::net::{netns_available, Namespace, NetMode};
use jepsen::run::RunArgs;

#[derive(Parser)]
#[command(
    name = "jepsen",
    about = "Fault injection and linearizability checking for boxoffice"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs a test: cluster, workloads, faults, checks. Exits 1 on any violation.
    Run(RunArgs),
    /// Checks a recorded history.
    Check {
        /// History file, one operation per line.
        #[arg(long)]
        history: PathBuf,
        /// Per-user cap of the run's events.
        #[arg(long, default_value_t = CheckConfig::default().per_user_cap)]
        per_user_cap: u32,
        /// The nodes' replica_staleness_ms_max.
        #[arg(long, default_value_t = CheckConfig::default().staleness_ms_max)]
        staleness_ms: u64,
        /// Recovery bound after the final heal (ms).
        #[arg(long, default_value_t = CheckConfig::default().recovery_ms_max)]
        recovery_ms: u64,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Check {
            history,
            per_user_cap,
            staleness_ms,
            recovery_ms,
        } => {
            let ops = jepsen::history::parse(&std::fs::read_to_string(&history)?)?;
            let config = CheckConfig {
                per_user_cap,
                staleness_ms_max: staleness_ms,
                recovery_ms_max: recovery_ms,
            };
            let verdicts = check_all(&ops, &config);
            let mut bad = false;
            println!("{} operations", ops.len());
            for v in &verdicts {
                let status = if v.valid() { "ok" } else { "FAILED" };
                println!("{status:6} {}", v.checker);
                for p in v.notes.iter().chain(&v.violations).chain(&v.undecided) {
                    println!("       {p}");
                }
                bad |= !v.valid();
            }
            if bad {
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Run(args) => {
            let use_netns = match (args.inside_netns.is_some(), args.net) {
                (true, _) | (false, NetMode::Loopback) => false,
                (false, NetMode::Netns) => {
                    netns_available().map_err(|e| anyhow::anyhow!("--net netns: {e}"))?;
                    true
                }
                (false, NetMode::Auto) => match netns_available() {
                    Ok(()) => true,
                    Err(e) => {
                        println!("network namespaces unavailable ({e}); running on loopback without partitions");
                        false
                    }
                },
            };
            let ns = match (use_netns, args.net) {
                (false, _) => None,
                (true, NetMode::Netns) => Some(Namespace::create()?),
                (true, _) => match Namespace::create() {
                    Ok(ns) => Some(ns),
                    Err(e) => {
                        println!("cannot create a network namespace ({e}); running on loopback without partitions");
                        None
                    }
                },
            };
            if let Some(ns) = ns {
                // Re-run this command inside a namespace of its own; the namespace (and
                // anything left in it) goes away when this returns.
                let mut argv: Vec<String> = std::env::args().skip(1).collect();
                argv.extend(["--inside-netns".to_string(), ns.name.clone()]);
                let exe = std::env::current_exe()?;
                let mut child = std::process::Command::new("ip")
                    .args(["netns", "exec", &ns.name])
                    .arg(exe)
                    .args(&argv)
                    .spawn()?;
                // Ctrl-C reaches the child too; wait for it to clean up its nodes.
                unsafe {
                    libc::signal(libc::SIGINT, libc::SIG_IGN);
                }
                let status = child.wait()?;
                drop(ns);
                std::process::exit(status.code().unwrap_or(1));
            }
            let mut args = args;
            if args.inside_netns.is_none() && args.net != NetMode::Netns && args.nemesis == "all" {
                // No partitions without namespaces: run the rest.
                args.nemesis = "kill,pause,clock".into();
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let valid = rt.block_on(jepsen::run::run(args))?;
            rt.shutdown_timeout(std::time::Duration::from_secs(5));
            std::process::exit(if valid { 0 } else { 1 });
        }
    }
}
