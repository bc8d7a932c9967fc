//! Throwaway PostgreSQL servers for peer comparisons: a primary initialised in a
//! fresh directory, or a streaming standby cloned from one with `pg_basebackup`;
//! bound to loopback only, stopped (and the directory removed) when the handle is
//! dropped, whatever happened in between.

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
        let pg = Postgres::fresh(port)?;
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
        pg.pg_ctl_start(settings)?;
        Ok(pg)
    }

    /// A hot standby of `primary` on `127.0.0.1:port`, streaming from it under
    /// `application_name = name` (what `synchronous_standby_names` lists).
    pub fn standby(
        primary: &Postgres,
        port: u16,
        name: &str,
        settings: &[(&str, &str)],
    ) -> anyhow::Result<Postgres> {
        let pg = Postgres::fresh(port)?;
        pg.run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &primary.port.to_string(),
                "-U",
                "postgres",
                "-D",
                &pg.data().to_string_lossy(),
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
                "-R",
            ],
        )?;
        // Later lines of postgresql.auto.conf win over what -R wrote.
        let conf = pg.data().join("postgresql.auto.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap_or_default();
        text.push_str(&format!(
            "primary_conninfo = 'host=127.0.0.1 port={} user=postgres application_name={name}'\nhot_standby = on\n",
            primary.port
        ));
        std::fs::write(&conf, text)?;
        pg.pg_ctl_start(settings)?;
        Ok(pg)
    }

    /// An empty directory for a server on `port`, owned by the user it runs as.
    fn fresh(port: u16) -> anyhow::Result<Postgres> {
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
        Ok(pg)
    }

    fn pg_ctl_start(&self, settings: &[(&str, &str)]) -> anyhow::Result<()> {
        let mut opts = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={}",
            self.port,
            self.dir.display()
        );
        for (k, v) in settings {
            opts.push_str(&format!(" -c {k}={v}"));
        }
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().to_string_lossy(),
                "-l",
                &self.dir.join("server.log").to_string_lossy(),
                "-o",
                &opts,
                "-w",
                "-t",
                &PG_START_TIMEOUT.as_secs().to_string(),
                "start",
            ],
        )
    }

    /// The postmaster's pid (the first line of `postmaster.pid`).
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data().join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// Creates database `name` (dropping any of that name first).
    pub async fn create_database(&self, name: &str) -> anyhow::Result<()> {
        let c = self.connect().await?;
        // One statement per call: several would run as one transaction, which
        // DROP DATABASE refuses.
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
            .await?;
        c.batch_execute(&format!("CREATE DATABASE {name}")).await?;
        Ok(())
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

    /// A connection to database `postgres` (its driver task runs on the current runtime).
    pub async fn connect(&self) -> anyhow::Result<tokio_postgres::Client> {
        connect(self.port, "postgres").await
    }
}

/// A connection to database `db` of the server on `127.0.0.1:port`, retried until
/// [`PG_START_TIMEOUT`] (its driver task runs on the current runtime).
pub async fn connect(port: u16, db: &str) -> anyhow::Result<tokio_postgres::Client> {
    let deadline = Instant::now() + PG_START_TIMEOUT;
    loop {
        match tokio_postgres::connect(
            &format!("host=127.0.0.1 port={port} user=postgres dbname={db}"),
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
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
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
