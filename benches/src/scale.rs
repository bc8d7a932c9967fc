//! Scale-out figures: the same booking load (a fixed rate of holds and
//! confirms, spread over one event per shard) on a cluster of N nodes with
//! each shard on 3 of them, for each N asked (default 3 and 6). Per node: CPU
//! seconds and bytes written (to disk, and by any write call: disk and
//! sockets), and the bookings on shards it leads and on shards it follows.
//! From all runs, a least-squares fit of each node's CPU as
//! `idle + leader × bookings led + follower × bookings followed`: the CPU one
//! booking costs its shard's leader and each follower. With those, the
//! projection for a bigger cluster is arithmetic (printed with its formula).
//!
//! This machine has 2 cores: every node of every N shares them, so the
//! figures are CPU time (what each node spends), not throughput.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use boxoffice_client::{Client, ClientConfig, NewEvent, ProblemCode, Selection};
use boxoffice_node::local_cluster::{Addressing, ClusterSpec, LocalCluster};
use rand::{Rng, SeedableRng};

use crate::cpu::proc_cpu_s;

/// How long a node may take to start.
const NODE_START_TIMEOUT: Duration = Duration::from_secs(60);
/// Most events created while looking for one on every shard.
const EVENTS_MAX: usize = 400;

/// `boxoffice-bench scale`.
#[derive(clap::Args, Debug)]
pub struct ScaleArgs {
    /// Cluster sizes to run, comma separated.
    #[arg(long, default_value = "3,6")]
    pub nodes: String,
    /// Inventory shards (each on 3 nodes).
    #[arg(long, default_value_t = 24)]
    pub shards: u16,
    /// Bookings a second asked of every cluster (a hold, then its confirm).
    #[arg(long, default_value_t = 150)]
    pub rate: u64,
    /// Seconds of load per cluster.
    #[arg(long, default_value_t = 20)]
    pub duration_s: u64,
    /// Concurrent buyers.
    #[arg(long, default_value_t = 32)]
    pub buyers: usize,
    /// Nodes listen on 127.0.0.(10+i):(base_port+i).
    #[arg(long, default_value_t = 7800)]
    pub base_port: u16,
    /// The `boxoffice` binary (default: beside this one).
    #[arg(long)]
    pub bin: Option<PathBuf>,
}

/// What one node did during one run.
#[derive(Clone, Debug)]
struct NodeFigures {
    id: u64,
    /// Seconds the phase lasted.
    secs: f64,
    cpu_s: f64,
    disk_bytes: u64,
    written_bytes: u64,
    led: u64,
    followed: u64,
}

/// `/proc/{pid}/io`'s `write_bytes` (to storage) and `wchar` (every write call).
fn io_bytes(pid: u32) -> (u64, u64) {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/io")) else {
        return (0, 0);
    };
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("write_bytes:"), field("wchar:"))
}

pub async fn run(args: ScaleArgs) -> anyhow::Result<()> {
    let sizes: Vec<u64> = args
        .nodes
        .split(',')
        .map(|s| s.trim().parse().context("--nodes: a comma list of numbers"))
        .collect::<anyhow::Result<_>>()?;
    let bin = match &args.bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no parent of the bench binary")?
            .join("boxoffice"),
    };
    anyhow::ensure!(
        bin.exists(),
        "{} not found: build the workspace or pass --bin",
        bin.display()
    );
    println!(
        "scale: {} bookings/s asked for {} s by {} buyers, {} shards on 3 nodes each; durability: every node fsyncs its log before acknowledging",
        args.rate, args.duration_s, args.buyers, args.shards
    );
    let mut all = Vec::new();
    for &n in &sizes {
        let figures = one(&args, &bin, n).await?;
        all.push((n, figures));
    }
    report(&all);
    Ok(())
}

async fn one(args: &ScaleArgs, bin: &std::path::Path, n: u64) -> anyhow::Result<Vec<NodeFigures>> {
    // A fresh directory of this run's own, removed at the end.
    let dir = std::env::temp_dir().join(format!("boxoffice-scale-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut c = LocalCluster::create(ClusterSpec {
        bin: bin.to_path_buf(),
        dir: dir.clone(),
        nodes: n,
        shards: args.shards,
        replication_factor: Some(3),
        addressing: Addressing::PerNodeIp {
            base_port: args.base_port,
        },
        settings: String::new(),
        secrets: None,
        addrs: Default::default(),
        unlimited: true,
        log_filter: boxoffice_node::local_cluster::LOG_FILTER_DEFAULT.into(),
        log_json: false,
    })?;
    let ids: Vec<u64> = c.nodes.keys().copied().collect();
    for &id in &ids {
        c.start(id)?;
    }
    for &id in &ids {
        c.wait_healthy(id, NODE_START_TIMEOUT).await?;
    }
    c.init().await?;
    c.wait_ready(NODE_START_TIMEOUT).await?;
    let urls: Vec<String> = c.nodes.values().map(|n| n.url()).collect();
    let mut cfg = ClientConfig::new(urls.clone(), &c.admin_token);
    cfg.attempts_max = 20;
    let admin = Client::new(cfg.clone())?;
    let venue = crate::onsale::arena(&admin, "Scale Arena", 100).await?;
    // One event per shard.
    let mut events: BTreeMap<u16, u64> = BTreeMap::new();
    for i in 0..EVENTS_MAX {
        if events.len() == usize::from(args.shards) {
            break;
        }
        let e = admin
            .create_event(&NewEvent {
                name: format!("Scale Night {i}"),
                description: "benchmark".into(),
                category: "concert".into(),
                venue_id: venue,
                performer_ids: vec![],
                starts_at: "2030-06-01T20:00:00Z".into(),
                hold_ttl_s: Some(600),
                per_user_cap: Some(5000),
            })
            .await?;
        events.entry(e.shard).or_insert(e.event_id);
    }
    anyhow::ensure!(
        events.len() == usize::from(args.shards),
        "no event on some shard after {EVENTS_MAX}"
    );
    let view = c.cluster_view(1).await.context("node 1's view")?;
    let placement = view.placement.context("no placement directory")?;
    let voters: BTreeMap<u16, Vec<u64>> = placement
        .groups
        .iter()
        .filter(|g| g.group != 0)
        .map(|g| (g.group, g.voters.clone()))
        .collect();
    // Phase 1: every shard's event; phase 2: only the events of the shards the
    // first node leads (so leaders' and followers' costs can be told apart).
    let all: Vec<(u16, u64)> = events.iter().map(|(s, e)| (*s, *e)).collect();
    let leaders = c.leaders().await;
    let first = *c.nodes.keys().next().context("no node")?;
    let led_by_first: Vec<(u16, u64)> = all
        .iter()
        .copied()
        .filter(|(s, _)| leaders.get(s) == Some(&first))
        .collect();
    let half = args.duration_s as f64 / 2.0;
    let mut out = phase(&c, args, &urls, n, "every shard", &all, &voters, half).await?;
    out.extend(
        phase(
            &c,
            args,
            &urls,
            n,
            &format!("only node {first}'s shards"),
            &led_by_first,
            &voters,
            half,
        )
        .await?,
    );
    let mut cluster = c;
    for id in ids {
        cluster.kill(id);
    }
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(out)
}

/// Solves the 3x3 system `m x = v` (Gaussian elimination); `None` if singular.
fn solve3(mut m: [[f64; 3]; 3], mut v: [f64; 3]) -> Option<[f64; 3]> {
    for col in 0..3 {
        let pivot = (col..3).max_by(|a, b| m[*a][col].abs().total_cmp(&m[*b][col].abs()))?;
        if m[pivot][col].abs() < 1e-12 {
            return None;
        }
        m.swap(col, pivot);
        v.swap(col, pivot);
        for row in 0..3 {
            if row != col {
                let f = m[row][col] / m[col][col];
                for k in 0..3 {
                    m[row][k] -= f * m[col][k];
                }
                v[row] -= f * v[col];
            }
        }
    }
    Some([v[0] / m[0][0], v[1] / m[1][1], v[2] / m[2][2]])
}

fn report(all: &[(u64, Vec<NodeFigures>)]) {
    // Least squares over every node of every run: cpu = a·led + b·followed + c·seconds.
    let mut m = [[0.0; 3]; 3];
    let mut v = [0.0; 3];
    for (_, figs) in all {
        for f in figs {
            let x = [f.led as f64, f.followed as f64, f.secs];
            for i in 0..3 {
                for j in 0..3 {
                    m[i][j] += x[i] * x[j];
                }
                v[i] += x[i] * f.cpu_s;
            }
        }
    }
    println!("\nper-node CPU, mean of each cluster size (both phases):");
    let means: Vec<(u64, f64)> = all
        .iter()
        .map(|(n, figs)| {
            (
                *n,
                figs.iter().map(|f| f.cpu_s).sum::<f64>() / figs.len() as f64,
            )
        })
        .collect();
    for (n, mean) in &means {
        println!("  N = {n}: {mean:.2} cpu s a node");
    }
    if let (Some((n0, c0)), Some((n1, c1))) = (means.first(), means.last()) {
        if n0 != n1 {
            println!(
                "  N = {n1} / N = {n0}: {:.2} (each node's share of the work at 3/N would be {:.2})",
                c1 / c0,
                *n0 as f64 / *n1 as f64
            );
        }
    }
    match solve3(m, v) {
        Some([a, b, c]) => {
            println!(
                "fit over every node: cpu = {:.3} ms × bookings led + {:.3} ms × bookings followed + {:.3} cpu s/s idle",
                a * 1000.0,
                b * 1000.0,
                c
            );
            let per_booking = a + 2.0 * b;
            println!(
                "one booking costs the cluster {:.3} ms of CPU (leader + 2 followers); projection for 9 nodes of 8 cores at 70% busy: 9 × 8 × 0.7 / ({:.3} ms) = {:.0} bookings/s (idle cost {:.2} cores a node left out)",
                per_booking * 1000.0,
                per_booking * 1000.0,
                9.0 * 8.0 * 0.7 / per_booking.max(1e-9),
                c
            );
        }
        None => println!("fit: not enough variety in the runs to tell leaders from followers"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solve3_finds_the_coefficients() {
        // cpu = 2·led + 0.5·followed + 0.1·secs, sampled at three points.
        let pts = [[10.0, 0.0, 1.0], [0.0, 10.0, 1.0], [5.0, 5.0, 2.0]];
        let mut m = [[0.0; 3]; 3];
        let mut v = [0.0; 3];
        for x in pts {
            let y = 2.0 * x[0] + 0.5 * x[1] + 0.1 * x[2];
            for i in 0..3 {
                for j in 0..3 {
                    m[i][j] += x[i] * x[j];
                }
                v[i] += x[i] * y;
            }
        }
        let [a, b, c] = solve3(m, v).unwrap();
        assert!((a - 2.0).abs() < 1e-9 && (b - 0.5).abs() < 1e-9 && (c - 0.1).abs() < 1e-9);
        assert!(solve3([[0.0; 3]; 3], [0.0; 3]).is_none());
    }
}

/// One measured phase of load on `phase_events`, `secs` long: each node's figures.
#[allow(clippy::too_many_arguments)]
async fn phase(
    c: &LocalCluster,
    args: &ScaleArgs,
    urls: &[String],
    n: u64,
    label: &str,
    phase_events: &[(u16, u64)],
    voters: &BTreeMap<u16, Vec<u64>>,
    secs: f64,
) -> anyhow::Result<Vec<NodeFigures>> {
    let leaders_before = c.leaders().await;
    let pids: BTreeMap<u64, u32> = c
        .nodes
        .values()
        .filter_map(|n| n.pid().map(|p| (n.id, p)))
        .collect();
    let before: BTreeMap<u64, (f64, (u64, u64))> = pids
        .iter()
        .map(|(id, p)| (*id, (proc_cpu_s(&p.to_string()), io_bytes(*p))))
        .collect();

    // The load: `rate` bookings a second in all, each buyer on its own
    // schedule, on the shards' events in turn.
    let users: Vec<String> = (0..args.buyers)
        .map(|i| c.box_office_token(&format!("scale-buyer-{i}")))
        .collect::<anyhow::Result<_>>()?;
    let per_shard: Arc<BTreeMap<u16, AtomicU64>> = Arc::new(
        phase_events
            .iter()
            .map(|(s, _)| (*s, AtomicU64::new(0)))
            .collect(),
    );
    let failed = Arc::new(AtomicU64::new(0));
    let event_list: Arc<Vec<(u16, u64)>> = Arc::new(phase_events.to_vec());
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(secs);
    let interval = Duration::from_secs_f64(args.buyers as f64 / args.rate.max(1) as f64);
    let mut tasks = Vec::new();
    for (b, token) in users.into_iter().enumerate() {
        let mut cfg = ClientConfig::new(urls.to_vec(), &token);
        cfg.attempts_max = 20;
        let client = Client::new(cfg)?;
        let per_shard = per_shard.clone();
        let failed = failed.clone();
        let event_list = event_list.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(b as u64);
            let mut next = start + interval.mul_f64(b as f64 / 32.0);
            let mut i = b;
            while next < until {
                tokio::time::sleep_until(next.into()).await;
                next += interval;
                let (shard, event) = event_list[i % event_list.len()];
                i += 1;
                let seat = rng.gen_range(0..5000);
                let hold = match client.hold(event, Selection::Seats(vec![seat])).await {
                    Ok(h) => h,
                    Err(e) if e.code() == Some(ProblemCode::SeatUnavailable) => continue,
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                };
                match client.confirm(&hold.hold_id, "scale").await {
                    Ok(_) => {
                        per_shard[&shard].fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let after: BTreeMap<u64, (f64, (u64, u64))> = pids
        .iter()
        .map(|(id, p)| (*id, (proc_cpu_s(&p.to_string()), io_bytes(*p))))
        .collect();
    let leaders_after = c.leaders().await;
    let booked: BTreeMap<u16, u64> = per_shard
        .iter()
        .map(|(s, n)| (*s, n.load(Ordering::Relaxed)))
        .collect();
    let total: u64 = booked.values().sum();
    println!(
        "\nN = {n}, {label}: {total} bookings in {elapsed:.1} s ({:.0}/s), {} failed; leaders {}",
        total as f64 / elapsed,
        failed.load(Ordering::Relaxed),
        if leaders_before == leaders_after {
            "stable"
        } else {
            "changed during the run"
        }
    );
    let mut out = Vec::new();
    for (&id, (cpu0, (disk0, w0))) in &before {
        let (cpu1, (disk1, w1)) = after[&id];
        let (mut led, mut followed) = (0, 0);
        for (s, count) in &booked {
            if leaders_after.get(s) == Some(&id) {
                led += count;
            } else if voters.get(s).is_some_and(|v| v.contains(&id)) {
                followed += count;
            }
        }
        out.push(NodeFigures {
            id,
            secs: elapsed,
            cpu_s: cpu1 - cpu0,
            disk_bytes: disk1.saturating_sub(*disk0),
            written_bytes: w1.saturating_sub(*w0),
            led,
            followed,
        });
    }
    println!("node  cpu s   cpu %   led   followed  disk MB  written MB");
    for f in &out {
        println!(
            "{:<5} {:<7.2} {:<7.1} {:<5} {:<9} {:<8.1} {:.1}",
            f.id,
            f.cpu_s,
            100.0 * f.cpu_s / elapsed,
            f.led,
            f.followed,
            f.disk_bytes as f64 / 1e6,
            f.written_bytes as f64 / 1e6
        );
    }
    let mean = |v: &dyn Fn(&NodeFigures) -> f64| out.iter().map(v).sum::<f64>() / out.len() as f64;
    println!(
        "per node (mean): {:.2} cpu s, {:.1} disk MB, {:.1} written MB; per booking, whole cluster: {:.2} ms cpu, {:.1} KB written",
        mean(&|f| f.cpu_s),
        mean(&|f| f.disk_bytes as f64) / 1e6,
        mean(&|f| f.written_bytes as f64) / 1e6,
        1000.0 * out.iter().map(|f| f.cpu_s).sum::<f64>() / total.max(1) as f64,
        out.iter().map(|f| f.written_bytes as f64).sum::<f64>() / 1e3 / total.max(1) as f64,
    );
    Ok(out)
}
