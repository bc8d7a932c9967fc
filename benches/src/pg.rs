//! A throwaway PostgreSQL server for peer comparisons: initialised in a fresh
//! directory, bound to loopback only, stopped (and its directory removed) when the
//! handle is dropped, whatever happened in between.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long the server may take to accept connections after `pg_ctl start`.
pub const PG_START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Postgres {
    bin: PathBuf,
    dir: PathBuf,
    pub port: u16,
    as_postgres: bool,
    pub version: String,
}

fn find_bin() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("pg_ctl").exists())
        .collect();
    found.sort();
    found.pop()
}

impl Postgres {
    /// Installs PostgreSQL with apt-get if it is missing (root only), then starts
    /// a fresh server on `127.0.0.1:port` with the given extra settings.
    pub fn start(port: u16, settings: &[(&str, &str)]) -> anyhow::Result<Postgres> {
        let bin = match find_bin() {
            Some(b) => b,
            None => {
                eprintln!("PostgreSQL not found; installing it with apt-get");
                let ok = Command::new("sh")
                    .args(["-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-contrib >/dev/null"])
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                match (ok, find_bin()) {
                    (true, Some(b)) => b,
                    _ => bail!("PostgreSQL is not installed and apt-get could not install it"),
                }
            }
        };
        let version = bin
            .parent()
            .and_then(Path::file_name)
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!("boxoffice-bench-pg-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        // PostgreSQL refuses to run as root: run it as the `postgres` user then.
        let as_postgres = is_root();
        let pg = Postgres {
            bin,
            dir,
            port,
            as_postgres,
            version,
        };
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&pg.dir)
                .status()?
                .success();
            anyhow::ensure!(ok, "chown of the PostgreSQL directory failed");
        }
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data().to_string_lossy(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        )?;
        let mut opts = format!(
            "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={}",
            pg.dir.display()
        );
        for (k, v) in settings {
            opts.push_str(&format!(" -c {k}={v}"));
        }
        pg.run(
            "pg_ctl",
            &[
                "-D",
                &pg.data().to_string_lossy(),
                "-l",
                &pg.dir.join("server.log").to_string_lossy(),
                "-o",
                &opts,
                "-w",
                "-t",
                &PG_START_TIMEOUT.as_secs().to_string(),
                "start",
            ],
        )?;
        Ok(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn run(&self, tool: &str, args: &[&str]) -> anyhow::Result<()> {
        let exe = self.bin.join(tool);
        let out = if self.as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .output()
        } else {
            Command::new(&exe).args(args).output()
        }
        .with_context(|| format!("running {}", exe.display()))?;
        if !out.status.success() {
            bail!(
                "{tool} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// A connection (its driver task runs on the current runtime).
    pub async fn connect(&self) -> anyhow::Result<tokio_postgres::Client> {
        let deadline = Instant::now() + PG_START_TIMEOUT;
        loop {
            match tokio_postgres::connect(
                &format!(
                    "host=127.0.0.1 port={} user=postgres dbname=postgres",
                    self.port
                ),
                tokio_postgres::NoTls,
            )
            .await
            {
                Ok((client, conn)) => {
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    return Ok(client);
                }
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

fn is_root() -> bool {
    // `id -u` avoids an FFI dependency for one number.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().to_string_lossy(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
