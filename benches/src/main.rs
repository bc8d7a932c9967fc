//! `boxoffice-bench`: load generators and peer comparisons against a running
//! boxoffice cluster (`boxoffice dev` writes the `cluster.json` they read).

mod abuse;
mod catalogue;
mod checkout;
mod cluster;
mod compare;
mod cpu;
mod lean_http;
mod load;
mod onsale;
mod pg;
mod plot;
mod procs;
mod queue_bench;
mod readers;
mod reads;
mod scale;
mod search_bench;
mod stats;
mod store;
mod surge;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use boxoffice_client::{Client, ClientConfig};
use clap::{Args, Parser, Subcommand};

/// mimalloc, as in the node: the load generator shares the machine with the
/// systems it drives, so every microsecond it spends allocating is taken from
/// them (the same for every peer it drives).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use crate::catalogue::{Catalogue, Sizes};
use crate::cluster::ClusterInfo;

/// How many of the slowest suggestions the search bench names.
const SLOWEST_SHOWN: usize = 8;

#[derive(Parser)]
#[command(name = "boxoffice-bench")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone, Copy)]
struct CatalogueArgs {
    /// Seed of the generated catalogue.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Venues.
    #[arg(long, default_value_t = 3_000)]
    venues: usize,
    /// Performers.
    #[arg(long, default_value_t = 5_000)]
    performers: usize,
    /// Events.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
}

impl CatalogueArgs {
    fn catalogue(self) -> Catalogue {
        Catalogue::new(
            self.seed,
            Sizes {
                venues: self.venues,
                performers: self.performers,
                events: self.events,
            },
        )
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// The on-sale scenarios against boxoffice, PostgreSQL, Redis and etcd, side
    /// by side: starts every system itself on loopback, writes a markdown table,
    /// JSON and SVG plots into the results folder.
    Compare(compare::CompareArgs),
    /// Hot on-sale against a running cluster (e.g. `boxoffice dev`).
    Onsale {
        /// The dev cluster's directory (reads cluster.json for addresses and tokens).
        #[arg(long, default_value = "data/dev")]
        cluster_dir: PathBuf,
        /// Seats in the event (rows of 50).
        #[arg(long, default_value_t = 50_000)]
        seats: u32,
        /// Concurrent buyers.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Run time limit.
        #[arg(long, default_value_t = 20)]
        duration_s: u64,
        /// Stop after this many holds in total.
        #[arg(long, default_value_t = 1_000_000)]
        holds_max: u64,
        /// Seed for seat choice.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// The checkout path (checkout, pay in the sandbox, webhook) beside the
    /// direct confirm, against a running `boxoffice dev` cluster and its sandbox.
    Checkout {
        /// The dev cluster's directory (reads cluster.json).
        #[arg(long, default_value = "data/dev")]
        cluster_dir: PathBuf,
        /// Concurrent buyers.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Rounds per path (they alternate).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Length of a round.
        #[arg(long, default_value_t = 10)]
        round_s: u64,
    },
    /// Loads a generated catalogue (deterministic for its seed) through the admin API.
    LoadCatalogue {
        #[arg(long, default_value = "data/dev")]
        cluster_dir: PathBuf,
        #[command(flatten)]
        catalogue: CatalogueArgs,
    },
    /// Search latency/throughput on every node vs PostgreSQL FTS on the same data.
    /// The cluster must hold the catalogue of the same arguments (`load-catalogue`).
    Search {
        #[arg(long, default_value = "data/dev")]
        cluster_dir: PathBuf,
        #[command(flatten)]
        catalogue: CatalogueArgs,
        /// Distinct queries in the mixed set.
        #[arg(long, default_value_t = 600)]
        queries: usize,
        /// Queries run per system.
        #[arg(long, default_value_t = 6_000)]
        total: usize,
        /// Concurrent searchers.
        #[arg(long, default_value_t = 16)]
        workers: usize,
        /// Time limit per system.
        #[arg(long, default_value_t = 60)]
        duration_s: u64,
        /// Skip the PostgreSQL comparison.
        #[arg(long)]
        no_pg: bool,
        /// Port of the throwaway PostgreSQL server (loopback).
        #[arg(long, default_value_t = 7650)]
        pg_port: u16,
    },
    /// One abusive user against the default rate limits, beside honest buyers:
    /// what it gets through, and the honest holds' latency with and without it
    /// (run against a cluster with its limits on).
    Abuse {
        #[arg(long, default_value = "data/dev")]
        cluster_dir: PathBuf,
        /// Quiet/abused phase pairs.
        #[arg(long, default_value_t = 2)]
        rounds: u32,
        /// Seconds per phase.
        #[arg(long, default_value_t = 10)]
        phase_s: u64,
        /// Honest buyers per phase.
        #[arg(long, default_value_t = 50)]
        honest: usize,
        /// Holds per honest buyer per phase.
        #[arg(long, default_value_t = 10)]
        holds_per_buyer: u32,
        /// Requests the abuser keeps in flight.
        #[arg(long, default_value_t = 32)]
        abuser_in_flight: usize,
    },
    /// The abuser of `abuse`, run by it as a child process.
    #[command(hide = true)]
    AbuseFlood {
        #[arg(long)]
        event: u64,
        #[arg(long)]
        in_flight: usize,
        #[arg(long)]
        duration_s: u64,
        #[arg(long)]
        token: String,
        #[arg(long = "url")]
        urls: Vec<String>,
    },
    /// The virtual waiting room: many users join one event's queue (the
    /// pre-queue), then it drains at a set rate while the waiting users read
    /// their place; joins/s, position reads beside seat-map reads, admission
    /// rate and ETA accuracy (against a running `boxoffice dev` cluster).
    Queue(queue_bench::QueueArgs),
    /// Scale-out: the same booking load on clusters of 3 and 6 nodes (each
    /// shard on 3): per-node CPU and bytes, CPU per booking on a leader and
    /// a follower, and a projection for a bigger cluster (starts its own
    /// clusters on 127.0.0.x).
    Scale(scale::ScaleArgs),
    /// Event view and seat map read throughput: follower reads vs linearizable vs a
    /// trivial axum handler; and freshness of a sale on followers and SSE.
    Reads {
        #[arg(long, default_value = "data/dev")]
        cluster_dir: PathBuf,
        /// Concurrent readers.
        #[arg(long, default_value_t = 32)]
        workers: usize,
        /// Seconds per mode.
        #[arg(long, default_value_t = 10)]
        duration_s: u64,
        /// Sales sampled for freshness.
        #[arg(long, default_value_t = 200)]
        freshness_samples: usize,
        /// Port of the trivial handler (loopback).
        #[arg(long, default_value_t = 7660)]
        trivial_port: u16,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Compare(args) => compare::compare(args).await,
        Cmd::Queue(args) => queue_bench::run(args).await,
        Cmd::Scale(args) => scale::run(args).await,
        Cmd::AbuseFlood {
            event,
            in_flight,
            duration_s,
            token,
            urls,
        } => {
            abuse::flood(
                urls,
                token,
                event,
                in_flight,
                Duration::from_secs(duration_s),
            )
            .await
        }
        Cmd::Abuse {
            cluster_dir,
            rounds,
            phase_s,
            honest,
            holds_per_buyer,
            abuser_in_flight,
        } => {
            abuse::abuse(abuse::AbuseArgs {
                cluster_dir,
                rounds,
                phase_s,
                honest,
                holds_per_buyer,
                abuser_in_flight,
            })
            .await
        }
        Cmd::Onsale {
            cluster_dir,
            seats,
            clients,
            duration_s,
            holds_max,
            seed,
        } => onsale::onsale(cluster_dir, seats, clients, duration_s, holds_max, seed).await,
        Cmd::Checkout {
            cluster_dir,
            clients,
            rounds,
            round_s,
        } => checkout::checkout(cluster_dir, clients, rounds.max(1), round_s).await,
        Cmd::LoadCatalogue {
            cluster_dir,
            catalogue,
        } => {
            let info = ClusterInfo::load(&cluster_dir)?;
            let mut cfg = ClientConfig::new(info.urls(), &info.admin_token);
            cfg.attempts_max = 20;
            let admin = Client::new(cfg)?;
            load::load(&admin, &catalogue.catalogue()).await
        }
        Cmd::Search {
            cluster_dir,
            catalogue,
            queries,
            total,
            workers,
            duration_s,
            no_pg,
            pg_port,
        } => {
            search(
                cluster_dir,
                catalogue,
                queries,
                total,
                workers,
                Duration::from_secs(duration_s),
                no_pg,
                pg_port,
            )
            .await
        }
        Cmd::Reads {
            cluster_dir,
            workers,
            duration_s,
            freshness_samples,
            trivial_port,
        } => {
            reads::run(
                &ClusterInfo::load(&cluster_dir)?,
                workers,
                Duration::from_secs(duration_s),
                freshness_samples,
                trivial_port,
            )
            .await
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn search(
    dir: PathBuf,
    args: CatalogueArgs,
    n: usize,
    total: usize,
    workers: usize,
    limit: Duration,
    no_pg: bool,
    pg_port: u16,
) -> anyhow::Result<()> {
    let info = ClusterInfo::load(&dir)?;
    let cat = args.catalogue();
    let qs = Arc::new(search_bench::queries(&cat, n, args.seed));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(workers)
        .build()?;
    // Warm-up (not measured): one pass of the set on every node.
    for addr in &info.addrs {
        for q in qs.iter().take(60) {
            search_bench::boxoffice_query(&http, addr, q).await?;
        }
    }
    println!("search: {} events, {} distinct queries, {workers} workers, {total} queries per system (≤ {} s)", args.events, n, limit.as_secs());
    let addrs = Arc::new(info.addrs.clone());
    let bo = search_bench::drive(qs.clone(), workers, total, limit, {
        let (http, addrs) = (http.clone(), addrs.clone());
        move |w, q| {
            let (http, addrs) = (http.clone(), addrs.clone());
            async move { search_bench::boxoffice_query(&http, &addrs[w % addrs.len()], &q).await }
        }
    })
    .await;
    // The same queries as a search page sends them: with facet counts.
    let faceted: Vec<search_bench::Query> = qs
        .iter()
        .cloned()
        .map(|mut q| {
            q.facets = true;
            q
        })
        .collect();
    let bof = search_bench::drive(Arc::new(faceted), workers, total, limit, {
        let (http, addrs) = (http.clone(), addrs.clone());
        move |w, q| {
            let (http, addrs) = (http.clone(), addrs.clone());
            async move { search_bench::boxoffice_query(&http, &addrs[w % addrs.len()], &q).await }
        }
    })
    .await;
    // Type-ahead: what a search box sends while someone types.
    let typed = Arc::new(search_bench::suggest_queries(&cat, n, args.seed));
    let typed_len = typed.len();
    let samples = stats::run_workers(workers, total, limit, {
        let (http, addrs, typed) = (http.clone(), addrs.clone(), typed.clone());
        move |w, i| {
            let (http, addrs, q) = (http.clone(), addrs.clone(), typed[i % typed.len()].clone());
            async move {
                let n = search_bench::boxoffice_suggest(&http, &addrs[w % addrs.len()], &q).await?;
                Ok((n, i % typed_len))
            }
        }
    })
    .await;
    let suggest_empty = samples
        .latencies
        .iter()
        .filter(|((n, _), _)| *n == 0)
        .count();
    let sug = stats::summarize(samples.latencies.iter().map(|(_, l)| *l).collect());
    // The slowest typed prefixes: where a suggestion's tail comes from.
    let mut slowest: Vec<&((u64, usize), u64)> = samples.latencies.iter().collect();
    slowest.sort_unstable_by_key(|(_, l)| std::cmp::Reverse(*l));
    let slowest: Vec<String> = slowest
        .iter()
        .take(SLOWEST_SHOWN)
        .map(|((_, i), l)| format!("{:?} {:.1} ms", typed[*i], *l as f64 / 1000.0))
        .collect();
    let print_suggest = || {
        println!(
            "\nsuggest (GET /v1/search/suggest, {} typed prefixes, {workers} workers): p50 {:.2} ms, p99 {:.2} ms, {:.0} q/s ({} q, {} errors, {} with no suggestion)",
            typed.len(),
            sug.p50_ms,
            sug.p99_ms,
            sug.count as f64 / samples.secs,
            sug.count,
            samples.errors,
            suggest_empty
        );
        println!("slowest suggestions: {}", slowest.join(", "));
    };
    if no_pg {
        search_bench::print_table(
            "Search latency (boxoffice, every node serving)",
            &[
                ("boxoffice (3 nodes)", &bo),
                ("boxoffice, with facets", &bof),
            ],
        );
        print_suggest();
        return Ok(());
    }
    let pg = pg::Postgres::start(
        pg_port,
        &[
            ("shared_buffers", "1GB"),
            ("max_connections", "200"),
            ("jit", "off"),
        ],
    )?;
    let conn = pg.connect().await?;
    let t = std::time::Instant::now();
    search_bench::pg_load(&conn, &cat).await?;
    println!(
        "PostgreSQL {}: loaded and indexed {} events in {:.0} s",
        pg.version,
        args.events,
        t.elapsed().as_secs_f64()
    );
    let mut conns = Vec::new();
    for _ in 0..workers {
        conns.push(Arc::new(pg.connect().await?));
    }
    let conns = Arc::new(conns);
    for q in qs.iter().take(60) {
        search_bench::pg_query(&conns[0], q).await?;
    }
    let pgr = search_bench::drive(qs.clone(), workers, total, limit, move |w, q| {
        let conns = conns.clone();
        async move { search_bench::pg_query(&conns[w], &q).await }
    })
    .await;
    search_bench::print_table(
        "Search latency, same queries, same machine, same run",
        &[
            ("boxoffice (3 nodes)", &bo),
            ("boxoffice, with facets", &bof),
            (&format!("PostgreSQL {} FTS", pg.version), &pgr),
        ],
    );
    print_suggest();
    println!(
        "\nratio: boxoffice p99 {:.2} ms vs PostgreSQL {:.2} ms ({:.1}x); throughput {:.0} vs {:.0} q/s ({:.1}x)",
        bo.all.p99_ms,
        pgr.all.p99_ms,
        pgr.all.p99_ms / bo.all.p99_ms.max(0.001),
        bo.qps,
        pgr.qps,
        bo.qps / pgr.qps.max(0.001)
    );
    Ok(())
}
