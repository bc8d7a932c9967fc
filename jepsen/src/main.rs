//! `jepsen check --history FILE`: runs every checker over a recorded history
//! (JSON lines) and exits non-zero on any violation or undecided check.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "jepsen")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Checks a recorded history.
    Check {
        /// History file, one operation per line.
        #[arg(long)]
        history: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Check { history } => {
            let ops = jepsen::history::parse(&std::fs::read_to_string(&history)?)?;
            let verdicts = jepsen::checker::check_all(&ops);
            let mut bad = false;
            println!("{} operations", ops.len());
            for v in &verdicts {
                let status = if v.valid() { "ok" } else { "FAILED" };
                println!("{status:6} {}", v.checker);
                for p in v.violations.iter().chain(&v.undecided) {
                    println!("       {p}");
                }
                bad |= !v.valid();
            }
            if bad {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
