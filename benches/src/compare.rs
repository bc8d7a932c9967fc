//! `compare`: the on-sale scenarios against boxoffice and its peers, side by side
//! in one run, on this machine. Starts every system itself (boxoffice: 3 nodes,
//! 8 shards, default settings, fsync on; PostgreSQL, Redis and etcd from their
//! Debian packages, installed with apt-get when missing), all on loopback, and
//! stops them at the end. Writes `results.md`, `results.json` and SVG plots into
//! the results folder.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use boxoffice_client::{Client, ClientConfig, Consistency};
use boxoffice_node::local_cluster::{Addressing, ClusterSpec, LocalCluster, NODE_START_TIMEOUT};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::json;
use tokio::sync::Mutex;

use crate::catalogue::{Catalogue, Sizes};
use crate::plot::{line_chart, Chart, Series};
use crate::stats::{median, summarize, Summary};
use crate::store::{self, Store};
use crate::surge::{self, Kill, Pace, RunResult, Shape, BUCKET_MS};

#[derive(Args, Clone, Debug)]
pub struct CompareArgs {
    /// Scenarios: 1 hot on-sale, 2 many events, 3 reads under a sale, 4 failover.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4")]
    pub scenarios: Vec<u8>,
    /// Systems: boxoffice, postgres, postgres-async, postgres-ha, redis,
    /// redis-replicated, redis-pg, etcd.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "boxoffice,postgres,postgres-async,postgres-ha,redis,redis-replicated,redis-pg,etcd"
    )]
    pub systems: Vec<String>,
    /// A few minutes in all: smaller events, fewer buyer counts, short runs.
    #[arg(long)]
    pub quick: bool,
    /// Runs per figure (the median is reported) [default: 3; quick 1].
    #[arg(long)]
    pub runs: Option<usize>,
    /// PostgreSQL pool sizes swept in scenario 1 for each buyer count (each
    /// PostgreSQL-backed system is then measured with its best) [default:
    /// 8,16,32,64,128; quick 32].
    #[arg(long, value_delimiter = ',')]
    pub pg_pools: Option<Vec<usize>>,
    /// Length of one pool-sweep run, seconds.
    #[arg(long, default_value_t = 10)]
    pub sweep_s: u64,
    /// Scenario 1: a system that sells the event out faster than this is measured
    /// again on a larger event (up to 2,000,000 seats), so that every figure is
    /// from a steady-state window of at least this long [default: 10; quick 0,
    /// off].
    #[arg(long)]
    pub min_run_s: Option<u64>,
    /// Seats of the hot event (scenarios 1, 3, 4) [default: 50000; quick 2000].
    #[arg(long)]
    pub seats: Option<u32>,
    /// Concurrent buyers in scenario 1 [default: 64,256,1024; quick 64,256].
    #[arg(long, value_delimiter = ',')]
    pub buyers: Option<Vec<usize>>,
    /// Time limit of one run, seconds [default: 30; quick 4].
    #[arg(long)]
    pub duration_s: Option<u64>,
    /// Events in scenario 2 [default: 1000; quick 200].
    #[arg(long)]
    pub events: Option<usize>,
    /// Seats per event in scenario 2 [default: 200; quick 50].
    #[arg(long)]
    pub event_seats: Option<u32>,
    /// Buyers in scenarios 2, 3 and 4.
    #[arg(long, default_value_t = 256)]
    pub steady_buyers: usize,
    /// Concurrent readers in scenario 3.
    #[arg(long, default_value_t = 64)]
    pub readers: usize,
    /// Scenario 3's writes per second (holds and confirms, open loop), the same
    /// for every system [default: 1000; quick 300].
    #[arg(long)]
    pub write_rate: Option<f64>,
    /// Events of scenario 3's search data set, loaded into each readable system
    /// [default: 10000; quick 1000].
    #[arg(long)]
    pub search_events: Option<usize>,
    /// Seats of the event in scenario 4: enough that the fastest system is still
    /// selling well after the kill.
    #[arg(long, default_value_t = 150_000)]
    pub failover_seats: u32,
    /// Failover runs per system in scenario 4 [default: 5; quick 2].
    #[arg(long)]
    pub failover_runs: Option<usize>,
    /// Stop any run after this many hold attempts.
    #[arg(long, default_value_t = 10_000_000)]
    pub holds_max: u64,
    /// Results folder [default: bench-results/<UTC time>].
    #[arg(long)]
    pub results_dir: Option<PathBuf>,
    /// A TOML file of settings every boxoffice node runs with (e.g. `[raft]`
    /// timeouts) [default: none, the node defaults].
    #[arg(long)]
    pub node_settings: Option<PathBuf>,
    /// The boxoffice binary [default: next to this one].
    #[arg(long)]
    pub bin: Option<PathBuf>,
    /// Most writes the boxoffice client sends to a node in one `POST
    /// /v1/batch` (`ClientConfig::batch_writes_max`; 1 sends every write alone)
    /// [default: the client's].
    #[arg(long)]
    pub bo_batch_writes: Option<usize>,
    /// Requests in flight to a node before the boxoffice client batches writes
    /// (`ClientConfig::batch_in_flight_max`) [default: the client's].
    #[arg(long)]
    pub bo_batch_in_flight: Option<usize>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// First port of the boxoffice nodes (node i listens on 127.0.0.(10+i):port+i).
    #[arg(long, default_value_t = 7900)]
    pub boxoffice_port: u16,
    #[arg(long, default_value_t = 7650)]
    pub pg_port: u16,
    #[arg(long, default_value_t = 7670)]
    pub redis_port: u16,
    /// etcd members' client ports are base+1..=base+3, peer ports base+11..=base+13.
    #[arg(long, default_value_t = 7680)]
    pub etcd_port: u16,
    /// `postgres-ha`'s primary; its standbys listen on the next two ports.
    #[arg(long, default_value_t = 7660)]
    pub pg_ha_port: u16,
}

/// Settings after `--quick` and the defaults are applied.
#[derive(Clone, Debug, serde::Serialize)]
struct Plan {
    scenarios: Vec<u8>,
    runs: usize,
    seats: u32,
    buyers: Vec<usize>,
    duration_s: u64,
    events: usize,
    event_seats: u32,
    steady_buyers: usize,
    readers: usize,
    write_rate: f64,
    search_events: usize,
    failover_runs: usize,
    failover_seats: u32,
    pg_pools: Vec<usize>,
    sweep_s: u64,
    min_run_s: u64,
    quick: bool,
}

impl CompareArgs {
    fn plan(&self) -> anyhow::Result<Plan> {
        let q = self.quick;
        let p = Plan {
            scenarios: self.scenarios.clone(),
            runs: self.runs.unwrap_or(if q { 1 } else { 3 }),
            seats: self.seats.unwrap_or(if q { 2_000 } else { 50_000 }),
            buyers: self.buyers.clone().unwrap_or(if q {
                vec![64, 256]
            } else {
                vec![64, 256, 1024]
            }),
            duration_s: self.duration_s.unwrap_or(if q { 4 } else { 30 }),
            events: self.events.unwrap_or(if q { 200 } else { 1_000 }),
            event_seats: self.event_seats.unwrap_or(if q { 50 } else { 200 }),
            steady_buyers: if q {
                self.steady_buyers.min(64)
            } else {
                self.steady_buyers
            },
            readers: if q {
                self.readers.min(16)
            } else {
                self.readers
            },
            write_rate: self.write_rate.unwrap_or(if q { 300.0 } else { 1_000.0 }),
            search_events: self.search_events.unwrap_or(if q { 1_000 } else { 10_000 }),
            failover_runs: self.failover_runs.unwrap_or(if q { 2 } else { 5 }),
            failover_seats: self.failover_seats,
            pg_pools: self.pg_pools.clone().unwrap_or(if q {
                vec![32]
            } else {
                vec![8, 16, 32, 64, 128]
            }),
            sweep_s: self.sweep_s,
            min_run_s: self.min_run_s.unwrap_or(if q { 0 } else { 10 }),
            quick: q,
        };
        anyhow::ensure!(
            p.scenarios.iter().all(|s| (1..=4).contains(s)),
            "--scenarios takes 1, 2, 3 and 4"
        );
        anyhow::ensure!(
            p.write_rate.is_finite() && (1.0..=100_000.0).contains(&p.write_rate),
            "--write-rate: between 1 and 100000 writes/s"
        );
        anyhow::ensure!(
            (100..=1_000_000).contains(&p.search_events),
            "--search-events: between 100 and 1000000"
        );
        anyhow::ensure!(
            p.runs >= 1 && p.failover_runs >= 1,
            "--runs must be at least 1"
        );
        anyhow::ensure!(
            p.seats >= 4 && p.event_seats >= 4,
            "events need at least 4 seats"
        );
        anyhow::ensure!(
            p.buyers.iter().all(|&b| (1..=4096).contains(&b)) && !p.buyers.is_empty(),
            "--buyers: between 1 and 4096 each"
        );
        anyhow::ensure!(
            !p.pg_pools.is_empty()
                && p.pg_pools
                    .iter()
                    .all(|&n| (1..=store::PG_POOL_MAX).contains(&n)),
            "--pg-pools: between 1 and {} each",
            store::PG_POOL_MAX
        );
        anyhow::ensure!(p.sweep_s >= 1, "--sweep-s must be at least 1");
        for s in &self.systems {
            anyhow::ensure!(
                store::SYSTEMS.contains(&s.as_str()),
                "unknown system {s:?} ({})",
                store::SYSTEMS.join(", ")
            );
        }
        Ok(p)
    }
}

/// The running systems.
pub struct Systems {
    stores: Vec<Store>,
    /// What could not be started, and why.
    missing: Vec<(String, String)>,
    bo: Option<Arc<Mutex<LocalCluster>>>,
    bo_urls: Vec<String>,
    pg: Option<crate::pg::Postgres>,
    /// `postgres-ha`: the primary, then its standbys.
    pg_ha: Vec<crate::pg::Postgres>,
    /// Redis servers by group (`redis`, `redis-replicated`: primary first,
    /// `redis-lock`: redis-pg's).
    redis: Vec<(&'static str, crate::procs::RedisServer)>,
    etcd: Option<Arc<Mutex<crate::procs::EtcdCluster>>>,
    /// Server groups stopped (SIGSTOP) while another system is measured, with
    /// the processes stopped.
    paused: std::sync::Mutex<BTreeMap<&'static str, Vec<u32>>>,
}

/// Scenario 3's runs: the read:write mix, and its writes alone at the same rate.
const MIXED: &str = "mixed";
const ALONE: &str = "writes alone";
/// Scenario 1's pool-sweep runs (not in the medians).
const SWEEP: &str = "pool sweep";

/// Time allowed for a restarted node or member to rejoin before the next run,
/// and for a resumed system to serve again.
const REJOIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Before a run, the machine counts as quiet once its busy share over
/// [`QUIET_WINDOW`] is at most this...
const QUIET_BUSY_MAX: f64 = 0.15;
const QUIET_WINDOW: Duration = Duration::from_millis(500);
/// ... or after this long, whichever comes first.
const QUIET_WAIT_MAX: Duration = Duration::from_secs(20);
/// Pause after resuming a stopped system, before asking whether it serves: its
/// timers all fire at once, and a leader it reports may be about to change.
const RESUME_SETTLE: Duration = Duration::from_secs(1);
/// Seats of the event of a pool-sweep run (full mode): enough that no pool size
/// sells it out within the sweep run.
const SWEEP_SEATS: u32 = 200_000;
/// The PostgreSQL pool of runs with no sweep result for their buyer count.
const DEFAULT_PG_POOL: usize = 32;

/// Settings every PostgreSQL server runs with: memory for the working set, no
/// checkpoint mid-run (`max_wal_size`, `checkpoint_timeout`), compressed full-page
/// writes, fsync on.
const PG_SETTINGS: &[(&str, &str)] = &[
    ("shared_buffers", "1GB"),
    ("max_connections", "600"),
    ("jit", "off"),
    ("fsync", "on"),
    ("max_wal_size", "16GB"),
    ("checkpoint_timeout", "30min"),
    ("wal_compression", "on"),
];

async fn start_systems(args: &CompareArgs, dir: &std::path::Path) -> anyhow::Result<Systems> {
    let want = |s: &str| args.systems.iter().any(|x| x == s);
    let mut sys = Systems {
        stores: vec![],
        missing: vec![],
        bo: None,
        bo_urls: vec![],
        pg: None,
        pg_ha: vec![],
        redis: vec![],
        etcd: None,
        paused: Default::default(),
    };
    let buyers_max = args
        .buyers
        .clone()
        .unwrap_or_default()
        .into_iter()
        .chain([args.steady_buyers, 1024])
        .max()
        .unwrap_or(1024);
    if want("boxoffice") {
        let bin = match &args.bin {
            Some(b) => b.clone(),
            None => std::env::current_exe()?
                .parent()
                .context("no parent of the bench binary")?
                .join("boxoffice"),
        };
        anyhow::ensure!(
            bin.exists(),
            "{} not found: build it (cargo build --release --workspace --bins) or pass --bin",
            bin.display()
        );
        let cdir = dir.join("boxoffice");
        std::fs::create_dir_all(&cdir)?;
        // Default node settings (fsync on, production timeouts) unless told otherwise.
        let settings = match &args.node_settings {
            Some(f) => {
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
            }
            None => String::new(),
        };
        let mut c = LocalCluster::create(ClusterSpec {
            bin,
            dir: cdir,
            nodes: 3,
            shards: 8,
            replication_factor: None,
            addressing: Addressing::PerNodeIp {
                base_port: args.boxoffice_port,
            },
            settings,
            secrets: None,
            addrs: Default::default(),
            // One load generator on one address: the limits a site would set
            // per client address are not what is measured here.
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
        let urls: Vec<String> = c.nodes.values().map(|n| n.url()).collect();
        let users = (0..store::BUYER_USERS)
            .map(|i| c.box_office_token(&format!("bench-buyer-{i}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let bo = store::Boxoffice::new(
            urls.clone(),
            &c.admin_token,
            &users,
            store::BatchSettings {
                writes_max: args.bo_batch_writes,
                in_flight_max: args.bo_batch_in_flight,
            },
        )?;
        sys.stores.push(Store::Boxoffice(Arc::new(bo)));
        sys.bo_urls = urls;
        sys.bo = Some(Arc::new(Mutex::new(c)));
    }
    if want("postgres") || want("postgres-async") || want("redis-pg") {
        match crate::pg::Postgres::start(args.pg_port, PG_SETTINGS) {
            Ok(pg) => {
                for (name, variant) in [
                    ("postgres", store::PgVariant::Sync),
                    ("postgres-async", store::PgVariant::Async),
                ] {
                    if want(name) {
                        let s =
                            store::Postgres::new(&pg, variant, DEFAULT_PG_POOL, pg.port).await?;
                        sys.stores.push(Store::Postgres(Arc::new(s)));
                    }
                }
                sys.pg = Some(pg);
            }
            Err(e) => sys.missing.push(("postgres".into(), format!("{e:#}"))),
        }
    }
    if want("postgres-ha") {
        match start_pg_ha(args.pg_ha_port).await {
            Ok(servers) => {
                let s = store::Postgres::new(
                    &servers[0],
                    store::PgVariant::Ha,
                    DEFAULT_PG_POOL,
                    servers[1].port,
                )
                .await?;
                sys.stores.push(Store::Postgres(Arc::new(s)));
                sys.pg_ha = servers;
            }
            Err(e) => sys.missing.push(("postgres-ha".into(), format!("{e:#}"))),
        }
    }
    use crate::procs::{RedisOpts, RedisServer};
    let durable = RedisOpts {
        aof_always: true,
        replica_of: None,
    };
    if want("redis") {
        match RedisServer::start(args.redis_port, durable).await {
            Ok(r) => {
                let st = store::Redis::new(&r, false, buyers_max).await?;
                sys.stores.push(Store::Redis(Arc::new(st)));
                sys.redis.push(("redis", r));
            }
            Err(e) => sys.missing.push(("redis".into(), format!("{e:#}"))),
        }
    }
    if want("redis-replicated") {
        let port = args.redis_port + 1;
        let started: anyhow::Result<Vec<RedisServer>> = async {
            let mut servers = vec![RedisServer::start(port, durable).await?];
            for i in 1..=2 {
                let opts = RedisOpts {
                    aof_always: true,
                    replica_of: Some(port),
                };
                servers.push(RedisServer::start(port + i, opts).await?);
            }
            servers[0].wait_replicas(2).await?;
            Ok(servers)
        }
        .await;
        match started {
            Ok(servers) => {
                let st = store::Redis::new(&servers[0], true, buyers_max).await?;
                sys.stores.push(Store::Redis(Arc::new(st)));
                sys.redis
                    .extend(servers.into_iter().map(|s| ("redis-replicated", s)));
            }
            Err(e) => sys
                .missing
                .push(("redis-replicated".into(), format!("{e:#}"))),
        }
    }
    if want("redis-pg") {
        let lock = RedisOpts {
            aof_always: false,
            replica_of: None,
        };
        match (&sys.pg, RedisServer::start(args.redis_port + 5, lock).await) {
            (Some(pg), Ok(r)) => {
                let st = store::RedisPg::new(&r, pg, DEFAULT_PG_POOL).await?;
                sys.stores.push(Store::RedisPg(Arc::new(st)));
                sys.redis.push(("redis-lock", r));
            }
            (None, _) => sys
                .missing
                .push(("redis-pg".into(), "PostgreSQL did not start".into())),
            (_, Err(e)) => sys.missing.push(("redis-pg".into(), format!("{e:#}"))),
        }
    }
    if want("etcd") {
        match crate::procs::EtcdCluster::start(args.etcd_port).await {
            Ok(e) => {
                let st = store::Etcd::new(&e).await?;
                sys.stores.push(Store::Etcd(Arc::new(st)));
                sys.etcd = Some(Arc::new(Mutex::new(e)));
            }
            Err(e) => sys.missing.push(("etcd".into(), format!("{e:#}"))),
        }
    }
    for (name, why) in &sys.missing {
        eprintln!("MISSING {name}: {why}");
    }
    // Measured runs resume what they use; until then every server is stopped.
    for g in sys.groups() {
        sys.stop_group(g).await;
    }
    Ok(sys)
}

/// `postgres-ha`'s servers: a primary on `port` and two hot standbys on the next
/// two ports, streaming from it; commits wait for either standby's flush.
async fn start_pg_ha(port: u16) -> anyhow::Result<Vec<crate::pg::Postgres>> {
    let primary = crate::pg::Postgres::start(port, PG_SETTINGS)?;
    let mut servers = vec![];
    for i in 1..=2u16 {
        servers.push(crate::pg::Postgres::standby(
            &primary,
            port + i,
            &format!("standby{i}"),
            PG_SETTINGS,
        )?);
    }
    let c = primary.connect().await?;
    // One statement per call: ALTER SYSTEM refuses to run in a transaction.
    c.batch_execute("ALTER SYSTEM SET synchronous_standby_names = 'ANY 1 (standby1, standby2)'")
        .await?;
    c.batch_execute("SELECT pg_reload_conf()").await?;
    servers.insert(0, primary);
    wait_pg_standbys(&servers[0]).await?;
    Ok(servers)
}

/// Waits until both standbys stream from `primary` as quorum candidates.
async fn wait_pg_standbys(primary: &crate::pg::Postgres) -> anyhow::Result<()> {
    let c = primary.connect().await?;
    let deadline = Instant::now() + REJOIN_TIMEOUT;
    loop {
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_stat_replication
                 WHERE state = 'streaming' AND sync_state = 'quorum'",
                &[],
            )
            .await?
            .get(0);
        if n >= 2 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "postgres-ha: {n} of 2 standbys streaming within {REJOIN_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One measured run, labelled.
#[derive(Clone, Debug)]
struct Row {
    scenario: u8,
    system: String,
    durability: String,
    buyers: usize,
    /// Scenario 3: with readers or not.
    variant: &'static str,
    run: usize,
    /// Seats per event.
    seats: u32,
    /// PostgreSQL pool size, for the systems that have one.
    pool: Option<usize>,
    r: RunResult,
    reads: Option<ReadStats>,
}

#[derive(Clone, Debug, serde::Serialize)]
struct ReadStats {
    reads: u64,
    errors: u64,
    per_s: f64,
    all: Summary,
    by_kind: BTreeMap<&'static str, Summary>,
}

pub async fn compare(args: CompareArgs) -> anyhow::Result<()> {
    let plan = args.plan()?;
    let dir = args.results_dir.clone().unwrap_or_else(|| {
        let t = time::OffsetDateTime::now_utc();
        PathBuf::from(format!(
            "bench-results/{:04}{:02}{:02}-{:02}{:02}{:02}",
            t.year(),
            t.month() as u8,
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ))
    });
    std::fs::create_dir_all(&dir)?;
    let work = std::env::temp_dir().join(format!("boxoffice-bench-compare-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    println!("compare: {plan:?}\nresults: {}", dir.display());
    let sys = start_systems(&args, &work).await?;
    anyhow::ensure!(!sys.stores.is_empty(), "no system could be started");
    let names: Vec<String> = sys.stores.iter().map(Store::name).collect();
    println!("systems: {}", names.join(", "));

    let n = sys.stores.len();
    let mut total = 0u64;
    for s in &plan.scenarios {
        total += match s {
            1 => {
                let pooled = sys.stores.iter().filter(|s| s.pg_pool().is_some()).count();
                let sweep = if plan.pg_pools.len() > 1 {
                    plan.pg_pools.len()
                } else {
                    0
                };
                (plan.buyers.len() * (plan.runs * n + pooled * sweep)) as u64
            }
            2 => (plan.runs * n) as u64,
            3 => (plan.runs * 2 * sys.stores.iter().filter(|s| readable(s)).count()) as u64,
            _ => {
                (plan.failover_runs * sys.stores.iter().filter(|s| failover_capable(s)).count())
                    as u64
            }
        };
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} runs  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut rows: Vec<Row> = Vec::new();
    let mut best_pool: BTreeMap<(String, usize), usize> = BTreeMap::new();
    let duration = Duration::from_secs(plan.duration_s);
    let started = Instant::now();
    let mut order_rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let mut ordered = |stores: &[Store]| -> Vec<Store> {
        let mut v = stores.to_vec();
        v.shuffle(&mut order_rng);
        v
    };
    let mut seats_for: BTreeMap<(String, usize), u32> = BTreeMap::new();
    let outcome: anyhow::Result<()> = async {
        if plan.scenarios.contains(&1) {
            for &c in &plan.buyers {
                // The pool sweep: each PostgreSQL-backed system at each pool size,
                // a short run each; the best is what its measured runs use.
                let pooled: Vec<Store> = sys.stores.iter().filter(|s| s.pg_pool().is_some()).cloned().collect();
                if plan.pg_pools.len() > 1 {
                    for st in ordered(&pooled) {
                        let pool = st.pg_pool().context("a pooled system")?;
                        let mut best = (0.0, DEFAULT_PG_POOL);
                        for &n in &plan.pg_pools {
                            bar.set_message(format!("1: {} {} buyers, pool {n}", st.name(), c));
                            pool.set_size(n);
                            let seats = if plan.quick { plan.seats } else { plan.seats.max(SWEEP_SEATS) };
                            sys.focus(&st).await?;
                            let events = st.create_events(1, seats).await?;
                            let shape = Shape {
                                events,
                                seats,
                                buyers: c,
                                duration: Duration::from_secs(plan.sweep_s),
                                holds_max: args.holds_max,
                                seed: args.seed,
                                pace: Pace::Free,
                            };
                            let r = surge::run(&st, &shape, None).await?;
                            if r.holds_per_s() > best.0 {
                                best = (r.holds_per_s(), n);
                            }
                            rows.push(row(1, &st, c, SWEEP, 0, seats, r, None));
                            bar.inc(1);
                        }
                        pool.set_size(best.1);
                        best_pool.insert((st.name(), c), best.1);
                    }
                }
                for run in 0..plan.runs {
                    for st in ordered(&sys.stores) {
                        if let Some(pool) = st.pg_pool() {
                            pool.set_size(best_pool.get(&(st.name(), c)).copied().unwrap_or(plan.pg_pools[0]));
                        }
                        // A run that sells out before `min_run_s` is done again on a
                        // larger event (the rule is the same for every system).
                        let key = (st.name(), c);
                        loop {
                            let seats = *seats_for.get(&key).unwrap_or(&plan.seats);
                            bar.set_message(format!("1: {} {} buyers, run {}, {seats} seats", st.name(), c, run + 1));
                            sys.focus(&st).await?;
                            let events = st.create_events(1, seats).await?;
                            let shape = Shape {
                                events,
                                seats,
                                buyers: c,
                                duration,
                                holds_max: args.holds_max,
                                seed: args.seed + run as u64,
                                pace: Pace::Free,
                            };
                            let r = surge::run(&st, &shape, None).await?;
                            match r.sold_out_s {
                                Some(t) if t < plan.min_run_s as f64 && seats < st.max_event_seats() && r.check.is_ok() => {
                                    let grow = (plan.min_run_s as f64 * 1.5 / t.max(0.05)).ceil() as u32;
                                    let bigger = seats.saturating_mul(grow.max(2)).min(st.max_event_seats());
                                    eprintln!("  {} sold {seats} seats out in {t:.1} s: again with {bigger}", st.name());
                                    seats_for.insert(key.clone(), bigger);
                                }
                                _ => {
                                    rows.push(row(1, &st, c, "", run, seats, r, None));
                                    break;
                                }
                            }
                        }
                        bar.inc(1);
                    }
                }
            }
        }
        let steady_pool = |st: &Store| {
            if let Some(pool) = st.pg_pool() {
                pool.set_size(
                    best_pool
                        .get(&(st.name(), plan.steady_buyers))
                        .copied()
                        .unwrap_or(plan.pg_pools[0]),
                );
            }
        };
        if plan.scenarios.contains(&2) {
            for run in 0..plan.runs {
                for st in ordered(&sys.stores) {
                    bar.set_message(format!(
                        "2: {} {} events, run {}",
                        st.name(),
                        plan.events,
                        run + 1
                    ));
                    steady_pool(&st);
                    sys.focus(&st).await?;
                    let events = st.create_events(plan.events, plan.event_seats).await?;
                    let shape = Shape {
                        events,
                        seats: plan.event_seats,
                        buyers: plan.steady_buyers,
                        duration,
                        holds_max: args.holds_max,
                        seed: args.seed + run as u64,
                        pace: Pace::Free,
                    };
                    let r = surge::run(&st, &shape, None).await?;
                    rows.push(row(2, &st, plan.steady_buyers, "", run, plan.event_seats, r, None));
                    bar.inc(1);
                }
            }
        }
        if plan.scenarios.contains(&3) {
            let readable_stores: Vec<Store> = sys.stores.iter().filter(|s| readable(s)).cloned().collect();
            // Each system's own search data set, from the same catalogue.
            let cat = Catalogue::new(
                args.seed,
                Sizes {
                    venues: SEARCH_VENUES,
                    performers: SEARCH_PERFORMERS,
                    events: plan.search_events,
                },
            );
            let searches = crate::search_bench::queries(&cat, SEARCH_QUERIES, args.seed);
            for st in &readable_stores {
                bar.set_message(format!("3: {} loading {} events to search", st.name(), plan.search_events));
                sys.focus(st).await?;
                crate::readers::load_search_data(st, &cat)
                    .await
                    .with_context(|| format!("loading {}'s search data set", st.name()))?;
            }
            for run in 0..plan.runs {
                for st in ordered(&readable_stores) {
                    // The mix: readers (closed loop, as fast as answers come) and
                    // buyers writing at the same fixed rate on every system.
                    bar.set_message(format!(
                        "3: {} reads under {:.0} writes/s, run {}",
                        st.name(),
                        plan.write_rate,
                        run + 1
                    ));
                    steady_pool(&st);
                    sys.focus(&st).await?;
                    let events = st.create_events(1, plan.seats).await?;
                    let readers =
                        crate::readers::Readers::new(&st, &sys, events[0], plan.seats, &searches).await?;
                    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
                    let handle = readers.spawn(plan.readers, duration + Duration::from_secs(5), stop.clone());
                    let (pace, feeder) = surge::rate_gate(plan.write_rate, duration);
                    let shape = Shape {
                        events,
                        seats: plan.seats,
                        buyers: plan.steady_buyers,
                        duration,
                        holds_max: args.holds_max,
                        seed: args.seed + run as u64,
                        pace,
                    };
                    let mixed = surge::run(&st, &shape, None).await;
                    feeder.abort();
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    let (samples, errors, secs) = handle.await?;
                    rows.push(row(
                        3,
                        &st,
                        plan.steady_buyers,
                        MIXED,
                        run,
                        plan.seats,
                        mixed?,
                        Some(read_stats(samples, errors, secs)),
                    ));
                    bar.inc(1);
                    // The same writes at the same rate, without the readers: what
                    // the reads cost the writes.
                    bar.set_message(format!(
                        "3: {} {:.0} writes/s alone, run {}",
                        st.name(),
                        plan.write_rate,
                        run + 1
                    ));
                    quiet().await;
                    let events = st.create_events(1, plan.seats).await?;
                    let (pace, feeder) = surge::rate_gate(plan.write_rate, duration);
                    let shape = Shape {
                        events,
                        pace,
                        ..shape
                    };
                    let alone = surge::run(&st, &shape, None).await;
                    feeder.abort();
                    rows.push(row(3, &st, plan.steady_buyers, ALONE, run, plan.seats, alone?, None));
                    bar.inc(1);
                }
            }
        }
        if plan.scenarios.contains(&4) {
            let fo_duration = duration.max(Duration::from_secs(6));
            let capable: Vec<Store> = sys.stores.iter().filter(|s| failover_capable(s)).cloned().collect();
            for run in 0..plan.failover_runs {
                for st in ordered(&capable) {
                    bar.set_message(format!("4: {} failover, run {}", st.name(), run + 1));
                    sys.focus(&st).await?;
                    let events = st.create_events(1, plan.failover_seats).await?;
                    let kill = kill_for(&st, &sys, events[0]).await?;
                    let shape = Shape {
                        events,
                        seats: plan.failover_seats,
                        buyers: plan.steady_buyers,
                        duration: fo_duration,
                        holds_max: args.holds_max,
                        seed: args.seed + run as u64,
                        pace: Pace::Free,
                    };
                    let r = surge::run(
                        &st,
                        &shape,
                        Some(Kill {
                            at: kill_at(fo_duration),
                            kill,
                        }),
                    )
                    .await?;
                    rejoin(&st, &sys).await?;
                    rows.push(row(4, &st, plan.steady_buyers, "", run, plan.failover_seats, r, None));
                    bar.inc(1);
                }
            }
        }
        Ok(())
    }
    .await;
    bar.finish_and_clear();
    let report = Report {
        plan: &plan,
        rows: &rows,
        systems: &sys,
        names: &names,
        wall_s: started.elapsed().as_secs_f64(),
    };
    let md = report.markdown();
    std::fs::write(dir.join("results.md"), &md)?;
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&report.json())?,
    )?;
    report.plots(&dir)?;
    println!("{md}");
    println!("results written to {}", dir.display());
    drop(sys);
    let _ = std::fs::remove_dir_all(&work);
    outcome?;
    let violations: Vec<&Row> = rows.iter().filter(|r| r.r.check.is_err()).collect();
    anyhow::ensure!(
        violations.is_empty(),
        "{} runs failed the sales check (see results.md)",
        violations.len()
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn row(
    scenario: u8,
    st: &Store,
    buyers: usize,
    variant: &'static str,
    run: usize,
    seats: u32,
    r: RunResult,
    reads: Option<ReadStats>,
) -> Row {
    if let Err(e) = &r.check {
        eprintln!("VIOLATION in scenario {scenario}, {}: {e}", st.name());
    }
    Row {
        scenario,
        system: st.name(),
        durability: st.durability(),
        buyers,
        variant,
        run,
        seats,
        pool: st.pg_pool().map(|p| p.size()),
        r,
        reads,
    }
}

/// Systems with reads in scenario 3 (the others are lock stores, not catalogues).
fn readable(s: &Store) -> bool {
    matches!(
        s,
        Store::Boxoffice(_) | Store::Postgres(_) | Store::RedisPg(_)
    )
}

/// Venues, performers and queries of scenario 3's search data set (its events
/// are `--search-events`).
const SEARCH_VENUES: usize = 500;
const SEARCH_PERFORMERS: usize = 5_000;
const SEARCH_QUERIES: usize = 1_000;

/// Systems with more than one replica, so that a kill is a failover.
fn failover_capable(s: &Store) -> bool {
    matches!(s, Store::Boxoffice(_) | Store::Etcd(_))
}

/// When scenario 4 kills: a third into the run, but no later than
/// [`KILL_AT_MAX`], so that a fast system has not sold out by then.
fn kill_at(run: Duration) -> Duration {
    (run / 3).min(KILL_AT_MAX)
}

/// Latest moment of scenario 4's kill.
const KILL_AT_MAX: Duration = Duration::from_secs(5);

/// The kill of scenario 4: the leader of the hot event's shard (boxoffice) or the
/// etcd leader, found when the kill happens.
async fn kill_for(
    st: &Store,
    sys: &Systems,
    event: u64,
) -> anyhow::Result<
    std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<String>> + Send>>,
> {
    match st {
        Store::Boxoffice(b) => {
            let shard = b
                .admin
                .event(event, Consistency::Local)
                .await?
                .event
                .shard
                .context("event without a shard")?;
            let cluster = sys.bo.clone().context("no boxoffice cluster")?;
            Ok(Box::pin(async move {
                let mut c = cluster.lock().await;
                let leader = *c
                    .leaders()
                    .await
                    .get(&shard)
                    .with_context(|| format!("no leader of shard {shard}"))?;
                c.kill(leader);
                Ok(format!("node {leader} (leader of shard {shard})"))
            }))
        }
        Store::Etcd(_) => {
            let etcd = sys.etcd.clone().context("no etcd cluster")?;
            Ok(Box::pin(async move {
                let mut e = etcd.lock().await;
                let leader = e.leader().await.context("no etcd leader")?;
                e.members[leader].kill();
                Ok(format!("etcd member e{} (leader)", leader + 1))
            }))
        }
        _ => anyhow::bail!("{} has no failover", st.name()),
    }
}

/// Waits (at most [`REJOIN_TIMEOUT`]) until every boxoffice group has a leader.
async fn wait_leaders(c: &LocalCluster) -> anyhow::Result<()> {
    let deadline = Instant::now() + REJOIN_TIMEOUT;
    while c.leaders().await.len() < usize::from(c.shards) + 1 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "boxoffice groups without a leader after {REJOIN_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Restarts what scenario 4 killed and waits until it serves again.
async fn rejoin(st: &Store, sys: &Systems) -> anyhow::Result<()> {
    match st {
        Store::Boxoffice(_) => {
            let cluster = sys.bo.clone().context("no boxoffice cluster")?;
            let mut c = cluster.lock().await;
            let ids: Vec<u64> = c.nodes.keys().copied().collect();
            for id in ids {
                if !c.nodes[&id].running() {
                    c.start(id)?;
                    c.wait_healthy(id, REJOIN_TIMEOUT).await?;
                }
            }
            wait_leaders(&c).await?;
        }
        Store::Etcd(_) => {
            let etcd = sys.etcd.clone().context("no etcd cluster")?;
            let mut e = etcd.lock().await;
            for i in 0..e.members.len() {
                e.members[i].start()?;
            }
            for i in 0..e.members.len() {
                e.wait_healthy(i).await?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn read_stats(samples: Vec<(&'static str, u64)>, errors: u64, secs: f64) -> ReadStats {
    let mut by: BTreeMap<&'static str, Vec<u64>> = BTreeMap::new();
    for (k, us) in &samples {
        by.entry(k).or_default().push(*us);
    }
    ReadStats {
        reads: samples.len() as u64,
        errors,
        per_s: samples.len() as f64 / secs.max(1e-9),
        all: summarize(samples.iter().map(|s| s.1).collect()),
        by_kind: by.into_iter().map(|(k, v)| (k, summarize(v))).collect(),
    }
}

impl Systems {
    /// Follower URLs of the shard that owns `event` (boxoffice), for scenario 3.
    pub async fn followers_of(&self, shard: u16) -> Vec<String> {
        let Some(c) = &self.bo else { return vec![] };
        let c = c.lock().await;
        let leader = c.leaders().await.get(&shard).copied();
        c.nodes
            .values()
            .filter(|n| Some(n.id) != leader)
            .map(|n| n.url())
            .collect()
    }

    /// The server groups started here.
    fn groups(&self) -> Vec<&'static str> {
        let mut g: Vec<&'static str> = self
            .stores
            .iter()
            .flat_map(|s| s.servers())
            .copied()
            .collect();
        g.sort_unstable();
        g.dedup();
        g
    }

    /// The processes of a server group now.
    async fn pids(&self, group: &str) -> Vec<u32> {
        let trees = |servers: &mut dyn Iterator<Item = &crate::pg::Postgres>| -> Vec<u32> {
            servers
                .filter_map(|p| p.pid())
                .flat_map(crate::cpu::process_tree)
                .collect()
        };
        match group {
            "boxoffice" => match &self.bo {
                Some(c) => c
                    .lock()
                    .await
                    .nodes
                    .values()
                    .filter_map(|n| n.pid())
                    .collect(),
                None => vec![],
            },
            "postgres" => trees(&mut self.pg.iter()),
            "postgres-ha" => trees(&mut self.pg_ha.iter()),
            "etcd" => match &self.etcd {
                Some(e) => e
                    .lock()
                    .await
                    .members
                    .iter()
                    .filter_map(|m| m.pid())
                    .collect(),
                None => vec![],
            },
            g => self
                .redis
                .iter()
                .filter(|(name, _)| *name == g)
                .filter_map(|(_, r)| r.pid())
                .collect(),
        }
    }

    /// Stops (SIGSTOP) server group `g`'s processes and remembers them.
    async fn stop_group(&self, g: &'static str) {
        let pids = self.pids(g).await;
        crate::cpu::signal(&pids, "STOP");
        self.paused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(g, pids);
    }

    /// Before a run of `st`: every other system's servers stopped (SIGSTOP), its
    /// own resumed (SIGCONT) and serving, and the machine quiet.
    async fn focus(&self, st: &Store) -> anyhow::Result<()> {
        let mine = st.servers();
        let mut resumed = false;
        for g in self.groups() {
            let stopped = self
                .paused
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(g);
            if mine.contains(&g) && stopped {
                let pids = self
                    .paused
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(g)
                    .unwrap_or_default();
                crate::cpu::signal(&pids, "CONT");
                resumed = true;
            } else if !mine.contains(&g) && !stopped {
                self.stop_group(g).await;
            }
        }
        if resumed {
            tokio::time::sleep(RESUME_SETTLE).await;
            self.settle(st).await?;
        }
        quiet().await;
        Ok(())
    }

    /// Waits until a resumed system serves again: every boxoffice group has a
    /// leader, every etcd member is healthy, every replica or standby streams.
    async fn settle(&self, st: &Store) -> anyhow::Result<()> {
        match st {
            Store::Boxoffice(_) => {
                let Some(c) = &self.bo else { return Ok(()) };
                wait_leaders(&*c.lock().await).await?;
            }
            Store::Etcd(_) => {
                if let Some(e) = &self.etcd {
                    let e = e.lock().await;
                    for i in 0..e.members.len() {
                        e.wait_healthy(i).await?;
                    }
                }
            }
            Store::Postgres(p) if p.variant == store::PgVariant::Ha => {
                if let Some(primary) = self.pg_ha.first() {
                    wait_pg_standbys(primary).await?;
                }
            }
            Store::Redis(r) if r.replicated => {
                if let Some((_, primary)) =
                    self.redis.iter().find(|(g, _)| *g == "redis-replicated")
                {
                    primary.wait_replicas(2).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl Drop for Systems {
    /// Stopped servers are resumed, so that each shuts down as it should.
    fn drop(&mut self) {
        let paused = std::mem::take(&mut *self.paused.lock().unwrap_or_else(|e| e.into_inner()));
        for pids in paused.values() {
            crate::cpu::signal(pids, "CONT");
        }
    }
}

/// Waits (at most [`QUIET_WAIT_MAX`]) for the machine to go quiet: what the last
/// run left behind (compactions, checkpoints, connections closing) is not
/// measured in the next.
async fn quiet() {
    let deadline = Instant::now() + QUIET_WAIT_MAX;
    while crate::cpu::busy_share(QUIET_WINDOW).await > QUIET_BUSY_MAX && Instant::now() < deadline {
    }
}

/// Medians over runs of one (scenario, system, buyers, variant).
struct Agg {
    runs: usize,
    holds_s: f64,
    confirms_s: f64,
    attempts_s: f64,
    hold: Summary,
    confirm: Summary,
    sold_out_s: Option<f64>,
    sold_pct: f64,
    checks_ok: usize,
    reads: Option<(f64, Summary, BTreeMap<&'static str, f64>)>,
    window: Option<(f64, f64, f64)>,
    /// Machine CPU ms per confirmed booking, and the load generator's part of it.
    cpu_ms: f64,
    gen_cpu_ms: f64,
    seats: u32,
    pool: Option<usize>,
}

fn aggregate(rows: &[&Row]) -> Agg {
    let m = |f: &dyn Fn(&Row) -> f64| median(rows.iter().map(|r| f(r)).collect());
    let ms = |f: &dyn Fn(&Row) -> Summary| Summary {
        count: rows.iter().map(|r| f(r).count).sum(),
        p50_ms: median(rows.iter().map(|r| f(r).p50_ms).collect()),
        p99_ms: median(rows.iter().map(|r| f(r).p99_ms).collect()),
        p999_ms: median(rows.iter().map(|r| f(r).p999_ms).collect()),
    };
    let sold_out: Vec<f64> = rows.iter().filter_map(|r| r.r.sold_out_s).collect();
    let reads = {
        let rr: Vec<&ReadStats> = rows.iter().filter_map(|r| r.reads.as_ref()).collect();
        (!rr.is_empty()).then(|| {
            let mut kinds: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
            for r in &rr {
                for (k, s) in &r.by_kind {
                    kinds.entry(k).or_default().push(s.p99_ms);
                }
            }
            (
                median(rr.iter().map(|r| r.per_s).collect()),
                Summary {
                    count: rr.iter().map(|r| r.all.count).sum(),
                    p50_ms: median(rr.iter().map(|r| r.all.p50_ms).collect()),
                    p99_ms: median(rr.iter().map(|r| r.all.p99_ms).collect()),
                    p999_ms: median(rr.iter().map(|r| r.all.p999_ms).collect()),
                },
                kinds.into_iter().map(|(k, v)| (k, median(v))).collect(),
            )
        })
    };
    let windows: Vec<u64> = rows
        .iter()
        .filter_map(|r| r.r.failover.as_ref().map(|f| f.window_ms as u64))
        .collect();
    let window = (!windows.is_empty()).then(|| {
        let mut w = windows.clone();
        w.sort_unstable();
        (
            crate::stats::percentile(&w, 0.5) as f64,
            crate::stats::percentile(&w, 0.99) as f64,
            *w.last().unwrap_or(&0) as f64,
        )
    });
    Agg {
        runs: rows.len(),
        holds_s: m(&|r| r.r.holds_per_s()),
        confirms_s: m(&|r| r.r.confirms_per_s()),
        attempts_s: m(&|r| r.r.attempts_per_s()),
        hold: ms(&|r| r.r.hold_lat),
        confirm: ms(&|r| r.r.confirm_lat),
        sold_out_s: (sold_out.len() == rows.len()).then(|| median(sold_out)),
        sold_pct: m(&|r| 100.0 * r.r.seats_sold as f64 / r.r.seats_total.max(1) as f64),
        checks_ok: rows.iter().filter(|r| r.r.check.is_ok()).count(),
        reads,
        window,
        cpu_ms: m(&|r| 1000.0 * r.r.cpu_per_booking()),
        gen_cpu_ms: m(&|r| 1000.0 * r.r.gen_cpu_s / r.r.confirms.max(1) as f64),
        seats: rows.iter().map(|r| r.seats).max().unwrap_or(0),
        pool: rows.iter().find_map(|r| r.pool),
    }
}

struct Report<'a> {
    plan: &'a Plan,
    rows: &'a [Row],
    systems: &'a Systems,
    names: &'a [String],
    wall_s: f64,
}

impl Report<'_> {
    fn select(
        &self,
        scenario: u8,
        system: &str,
        buyers: Option<usize>,
        variant: &str,
    ) -> Vec<&Row> {
        self.rows
            .iter()
            .filter(|r| {
                r.scenario == scenario
                    && r.system == system
                    && buyers.is_none_or(|b| r.buyers == b)
                    && r.variant == variant
            })
            .collect()
    }

    fn markdown(&self) -> String {
        use std::fmt::Write;
        let p = self.plan;
        let mut s = String::new();
        let t = time::OffsetDateTime::now_utc();
        let _ = writeln!(
            s,
            "# boxoffice vs peers — {:04}-{:02}-{:02}\n\nMachine: {}. Wall time {:.0} s. Every figure is the median of {} runs (scenario 4: {} runs) measured side by side in this run; latencies in ms.{}\n",
            t.year(),
            t.month() as u8,
            t.day(),
            machine(),
            self.wall_s,
            p.runs,
            p.failover_runs,
            if p.quick { " **Quick mode** (small events, short runs): for smoke-testing, not for quoting." } else { "" }
        );
        let _ = writeln!(s, "| system | durability |\n|---|---|");
        for st in &self.systems.stores {
            let _ = writeln!(s, "| {} | {} |", st.name(), st.durability());
        }
        for (name, why) in &self.systems.missing {
            let _ = writeln!(s, "| {name} | **missing**: {why} |");
        }
        s.push('\n');
        let ratio_rows = self.ratios();
        if !ratio_rows.is_empty() {
            let _ = writeln!(s, "## Headline: boxoffice (3 replicas, fsync on) ÷ peer\n\n| scenario | figure | {} |\n|---|---|{}", self.peers().join(" | "), "---|".repeat(self.peers().len()));
            for r in ratio_rows {
                s.push_str(&r);
                s.push('\n');
            }
            s.push_str(
                "\n(> 1 means boxoffice is better: more per second, or a shorter time.)\n\n",
            );
        }
        if p.scenarios.contains(&1) {
            let _ = writeln!(s, "## Scenario 1 — hot on-sale: one event\n\nOne event of {} seats, or more for a system that sells it out in less than {} s (a steady-state window; the `seats` column says). CPU = the whole machine's busy CPU time (every server and the load generator, from /proc/stat) per confirmed booking, its hold included; in brackets the load generator's part. Systems run in a random order per round; the others are stopped (SIGSTOP) meanwhile, and each run waits for the machine to go quiet first.\n\n| system | buyers | seats | pool | holds/s | confirms/s | hold attempts/s | hold p50 / p99 / p999 | confirm p50 / p99 / p999 | CPU ms/booking (load gen) | sold out in | failed holds / unknown confirms | checks |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|", p.seats, p.min_run_s);
            for &c in &p.buyers {
                for n in self.names {
                    let rows = self.select(1, n, Some(c), "");
                    if rows.is_empty() {
                        continue;
                    }
                    let a = aggregate(&rows);
                    let _ = writeln!(
                        s,
                        "| {n} | {c} | {} | {} | {:.0} | {:.0} | {:.0} | {} | {} | {:.2} ({:.2}) | {} | {} / {} | {}/{} ok |",
                        a.seats,
                        a.pool.map(|p| p.to_string()).unwrap_or("—".into()),
                        a.holds_s,
                        a.confirms_s,
                        a.attempts_s,
                        lat(a.hold),
                        lat(a.confirm),
                        a.cpu_ms,
                        a.gen_cpu_ms,
                        a.sold_out_s
                            .map(|t| format!("{t:.1} s"))
                            .unwrap_or(format!("— ({:.0}% sold)", a.sold_pct)),
                        rows.iter().map(|r| r.r.hold_errors).sum::<u64>(),
                        rows.iter().map(|r| r.r.confirm_unknown).sum::<u64>(),
                        a.checks_ok,
                        a.runs
                    );
                }
            }
            s.push('\n');
            let sweep: Vec<&Row> = self.rows.iter().filter(|r| r.variant == SWEEP).collect();
            if !sweep.is_empty() {
                let _ = writeln!(s, "### PostgreSQL pool sweep\n\nHolds/s of one {} s run per pool size; the best (bold) is what the runs above use.\n\n| system | buyers | {} |\n|---|---|{}", p.sweep_s, p.pg_pools.iter().map(|n| format!("pool {n}")).collect::<Vec<_>>().join(" | "), "---|".repeat(p.pg_pools.len()));
                for &c in &p.buyers {
                    for n in self.names {
                        let mine: Vec<&&Row> = sweep
                            .iter()
                            .filter(|r| &r.system == n && r.buyers == c)
                            .collect();
                        if mine.is_empty() {
                            continue;
                        }
                        let best = mine.iter().map(|r| r.r.holds_per_s()).fold(0.0, f64::max);
                        let cells: Vec<String> = p
                            .pg_pools
                            .iter()
                            .map(|&k| match mine.iter().find(|r| r.pool == Some(k)) {
                                Some(r) if r.r.holds_per_s() == best => format!("**{:.0}**", best),
                                Some(r) => format!("{:.0}", r.r.holds_per_s()),
                                None => "—".into(),
                            })
                            .collect();
                        let _ = writeln!(s, "| {n} | {c} | {} |", cells.join(" | "));
                    }
                }
                s.push('\n');
            }
        }
        if p.scenarios.contains(&2) {
            let _ = writeln!(s, "## Scenario 2 — many events: {} events of {} seats, {} buyers\n\n| system | holds/s | confirms/s | vs scenario 1 (same buyers) | hold p50 / p99 / p999 | confirm p50 / p99 / p999 | CPU ms/booking (load gen) | checks |\n|---|---|---|---|---|---|---|---|", p.events, p.event_seats, p.steady_buyers);
            for n in self.names {
                let rows = self.select(2, n, None, "");
                if rows.is_empty() {
                    continue;
                }
                let a = aggregate(&rows);
                let s1 = self.select(1, n, Some(p.steady_buyers), "");
                let vs = if s1.is_empty() {
                    "—".to_string()
                } else {
                    format!("{:.2}×", a.holds_s / aggregate(&s1).holds_s.max(1e-9))
                };
                let _ = writeln!(
                    s,
                    "| {n} | {:.0} | {:.0} | {vs} | {} | {} | {:.2} ({:.2}) | {}/{} ok |",
                    a.holds_s,
                    a.confirms_s,
                    lat(a.hold),
                    lat(a.confirm),
                    a.cpu_ms,
                    a.gen_cpu_ms,
                    a.checks_ok,
                    a.runs
                );
            }
            s.push('\n');
        }
        if p.scenarios.contains(&3) {
            let _ = writeln!(s, "## Scenario 3 — reads under a sale: {} readers, and {} buyers writing {:.0} holds and confirms a second (open loop, the same rate on every system) on one event of {} seats\n\nReaders ask, in turn, for the event view, one section's seat map (a status string per row, built by the server: boxoffice `view=rows`, PostgreSQL `string_agg` per row, redis-pg from its seat locks) and a search (a mixed set of {SEARCH_QUERIES} queries: keywords, typos, dates, geo, category, available only), as fast as answers come. Each system searches its own copy of the same generated catalogue of {} events. boxoffice readers use the hot shard's followers (local reads); PostgreSQL readers use the server the buyers write to (postgres-ha: a hot standby); redis-pg reads its PostgreSQL database and its Redis locks. Then the same writes run alone at the same rate: the write latency with and without the reads is what the reads cost the writes.\n\n| system | reads/s | reads per write | read p50 / p99 / p999 | p99 by kind | writes/s | hold p50 / p99 with reads | hold p50 / p99 alone | confirm p50 / p99 with reads | confirm p50 / p99 alone | write p99 with ÷ without reads | checks |\n|---|---|---|---|---|---|---|---|---|---|---|---|", p.readers, p.steady_buyers, p.write_rate, p.seats, p.search_events);
            for n in self.names {
                let with = self.select(3, n, None, MIXED);
                let alone = self.select(3, n, None, ALONE);
                if alone.is_empty() || with.is_empty() {
                    continue;
                }
                let (a, w) = (aggregate(&alone), aggregate(&with));
                let Some((rps, rl, kinds)) = w.reads.clone() else {
                    continue;
                };
                let writes_s = median(with.iter().map(|r| r.r.writes_per_s()).collect());
                let two = |x: Summary| format!("{:.1} / {:.1}", x.p50_ms, x.p99_ms);
                let worst = |x: &Agg| x.hold.p99_ms.max(x.confirm.p99_ms);
                let _ = writeln!(
                    s,
                    "| {n} | {rps:.0} | {:.0} | {} | {} | {writes_s:.1} | {} | {} | {} | {} | {:.2}× | {}/{} ok |",
                    rps / writes_s.max(1e-9),
                    lat(rl),
                    kinds
                        .iter()
                        .map(|(k, v)| format!("{k} {v:.1}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    two(w.hold),
                    two(a.hold),
                    two(w.confirm),
                    two(a.confirm),
                    worst(&w) / worst(&a).max(1e-9),
                    w.checks_ok + a.checks_ok,
                    w.runs + a.runs
                );
            }
            s.push('\n');
        }
        if p.scenarios.contains(&4) {
            let _ = writeln!(s, "## Scenario 4 — failover: kill -9 of the hot shard's leader a third into the run, at most {} s in ({} buyers, one event of {} seats)\n\nWindow = from the kill to the first write invoked after it that is answered.\n\n| system | runs | window p50 / p99 / max ms | confirms/s over the run | unknown confirms | checks (no acknowledged booking lost) |\n|---|---|---|---|---|---|", KILL_AT_MAX.as_secs(), p.steady_buyers, p.failover_seats);
            for n in self.names {
                let rows = self.select(4, n, None, "");
                if rows.is_empty() {
                    continue;
                }
                let a = aggregate(&rows);
                let killed = rows.iter().filter(|r| r.r.failover.is_some()).count();
                let window = match a.window {
                    Some((w50, w99, wmax)) if killed == rows.len() => {
                        format!("{w50:.0} / {w99:.0} / {wmax:.0}")
                    }
                    Some((w50, w99, wmax)) => format!(
                        "{w50:.0} / {w99:.0} / {wmax:.0} ({} runs ended before the kill)",
                        rows.len() - killed
                    ),
                    None => "— (every run ended before the kill)".into(),
                };
                let _ = writeln!(
                    s,
                    "| {n} | {} | {window} | {:.0} | {} | {}/{} ok |",
                    a.runs,
                    a.confirms_s,
                    rows.iter().map(|r| r.r.confirm_unknown).sum::<u64>(),
                    a.checks_ok,
                    a.runs
                );
            }
            for n in self.names {
                let why = match n.as_str() {
                    "boxoffice" | "etcd" => continue,
                    "postgres-ha" | "redis-replicated" => "replicas but no automatic failover (it takes an external manager: Patroni, Sentinel); writes stop until the primary is back",
                    _ => "single node: no failover; writes stop until it is restarted",
                };
                let _ = writeln!(s, "| {n} | — | {why} | | | |");
            }
            s.push('\n');
        }
        let bad: Vec<&Row> = self.rows.iter().filter(|r| r.r.check.is_err()).collect();
        let _ = writeln!(s, "## Sales checks\n\nAfter every run the seats each system reports sold were read back and compared with what buyers were told: no seat acknowledged twice, none lost, none sold without a buyer being told (unknown confirms excepted). {} of {} runs passed.", self.rows.len() - bad.len(), self.rows.len());
        for r in bad {
            let _ = writeln!(
                s,
                "- **VIOLATION** scenario {} {} run {}: {}",
                r.scenario,
                r.system,
                r.run + 1,
                r.r.check.as_ref().err().map(String::as_str).unwrap_or("")
            );
        }
        s
    }

    fn peers(&self) -> Vec<String> {
        self.names
            .iter()
            .filter(|n| *n != "boxoffice")
            .cloned()
            .collect()
    }

    fn ratios(&self) -> Vec<String> {
        let p = self.plan;
        if !self.names.iter().any(|n| n == "boxoffice") || self.peers().is_empty() {
            return vec![];
        }
        let mut out = Vec::new();
        let mut line = |label: String, f: &dyn Fn(&str) -> Option<f64>, higher_better: bool| {
            let Some(bo) = f("boxoffice") else { return };
            let cells: Vec<String> = self
                .peers()
                .iter()
                .map(|peer| match f(peer) {
                    Some(v) if v > 0.0 && bo > 0.0 => {
                        format!("{:.2}×", if higher_better { bo / v } else { v / bo })
                    }
                    _ => "—".into(),
                })
                .collect();
            out.push(format!("| {label} | {} |", cells.join(" | ")));
        };
        if p.scenarios.contains(&1) {
            for &c in &p.buyers {
                line(
                    format!("1 hot on-sale | holds/s, {c} buyers"),
                    &|n| {
                        let r = self.select(1, n, Some(c), "");
                        (!r.is_empty()).then(|| aggregate(&r).holds_s)
                    },
                    true,
                );
            }
            for &c in &p.buyers {
                line(
                    format!("1 hot on-sale | CPU per booking, {c} buyers"),
                    &|n| {
                        let r = self.select(1, n, Some(c), "");
                        (!r.is_empty()).then(|| aggregate(&r).cpu_ms)
                    },
                    false,
                );
            }
            let c = p.buyers[p.buyers.len() / 2];
            line(
                format!("1 hot on-sale | hold p99 latency, {c} buyers"),
                &|n| {
                    let r = self.select(1, n, Some(c), "");
                    (!r.is_empty()).then(|| aggregate(&r).hold.p99_ms)
                },
                false,
            );
        }
        if p.scenarios.contains(&2) {
            line(
                "2 many events | holds/s".into(),
                &|n| {
                    let r = self.select(2, n, None, "");
                    (!r.is_empty()).then(|| aggregate(&r).holds_s)
                },
                true,
            );
        }
        if p.scenarios.contains(&3) {
            line(
                "3 reads under a sale | reads/s".into(),
                &|n| {
                    let r = self.select(3, n, None, MIXED);
                    aggregate_opt(&r).and_then(|a| a.reads.map(|x| x.0))
                },
                true,
            );
            line(
                "3 reads under a sale | read p99 latency".into(),
                &|n| {
                    let r = self.select(3, n, None, MIXED);
                    aggregate_opt(&r).and_then(|a| a.reads.map(|x| x.1.p99_ms))
                },
                false,
            );
        }
        if p.scenarios.contains(&4) {
            line(
                "4 failover | p99 write-unavailability window".into(),
                &|n| {
                    let r = self.select(4, n, None, "");
                    aggregate_opt(&r).and_then(|a| a.window.map(|w| w.1))
                },
                false,
            );
        }
        out
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "plan": self.plan,
            "machine": machine(),
            "systems": self.systems.stores.iter().map(|s| json!({"name": s.name(), "durability": s.durability()})).collect::<Vec<_>>(),
            "missing": self.systems.missing,
            "runs": self.rows.iter().map(|r| json!({
                "scenario": r.scenario,
                "system": r.system,
                "durability": r.durability,
                "buyers": r.buyers,
                "variant": r.variant,
                "run": r.run,
                "seats": r.seats,
                "pg_pool": r.pool,
                "cpu_s": r.r.cpu_s,
                "load_generator_cpu_s": r.r.gen_cpu_s,
                "elapsed_s": r.r.elapsed_s,
                "hold_attempts": r.r.hold_attempts,
                "holds_granted": r.r.holds_granted,
                "conflicts": r.r.conflicts,
                "hold_errors": r.r.hold_errors,
                "confirms": r.r.confirms,
                "confirm_refused": r.r.confirm_refused,
                "confirm_unknown": r.r.confirm_unknown,
                "seats_sold": r.r.seats_sold,
                "seats_total": r.r.seats_total,
                "sold_out_s": r.r.sold_out_s,
                "hold_ms": [r.r.hold_lat.p50_ms, r.r.hold_lat.p99_ms, r.r.hold_lat.p999_ms],
                "confirm_ms": [r.r.confirm_lat.p50_ms, r.r.confirm_lat.p99_ms, r.r.confirm_lat.p999_ms],
                "failover": r.r.failover.as_ref().map(|f| json!({"killed": f.killed, "at_s": f.at_s, "window_ms": f.window_ms})),
                "reads": r.reads,
                "check": match &r.r.check { Ok(m) => json!({"ok": m}), Err(e) => json!({"violation": e}) },
                "confirms_per_bucket": r.r.confirms_series,
                "bucket_ms": BUCKET_MS,
            })).collect::<Vec<_>>(),
        })
    }

    fn plots(&self, dir: &std::path::Path) -> anyhow::Result<()> {
        let p = self.plan;
        // Throughput over time of the first run of each system.
        let over_time = |scenario: u8, buyers: Option<usize>, variant: &str| -> Vec<Series> {
            self.names
                .iter()
                .filter_map(|n| {
                    let rows = self.select(scenario, n, buyers, variant);
                    let r = rows.first()?;
                    Some(Series {
                        label: n.clone(),
                        points: rate_series(&r.r.confirms_series),
                    })
                })
                .collect()
        };
        if p.scenarios.contains(&1) {
            for &c in &p.buyers {
                line_chart(
                    &dir.join(format!("s1-throughput-{c}-buyers.svg")),
                    &Chart {
                        title: &format!(
                            "Scenario 1: confirmed bookings/s over time, {c} buyers (run 1)"
                        ),
                        x_label: "seconds",
                        y_label: "confirms/s",
                        log_y: false,
                        marks: &[],
                    },
                    &over_time(1, Some(c), ""),
                )?;
            }
            for (what, pick) in [
                ("p50", (|s: &Summary| s.p50_ms) as fn(&Summary) -> f64),
                ("p99", |s: &Summary| s.p99_ms),
                ("p999", |s: &Summary| s.p999_ms),
            ] {
                let series: Vec<Series> = self
                    .names
                    .iter()
                    .filter_map(|n| {
                        let pts: Vec<(f64, f64)> = p
                            .buyers
                            .iter()
                            .filter_map(|&c| {
                                let r = self.select(1, n, Some(c), "");
                                (!r.is_empty()).then(|| (c as f64, pick(&aggregate(&r).hold)))
                            })
                            .collect();
                        (!pts.is_empty()).then(|| Series {
                            label: n.clone(),
                            points: pts,
                        })
                    })
                    .collect();
                line_chart(
                    &dir.join(format!("s1-hold-latency-{what}.svg")),
                    &Chart {
                        title: &format!(
                            "Scenario 1: hold latency {what} (ms, log) by concurrent buyers"
                        ),
                        x_label: "buyers",
                        y_label: &format!("hold {what} ms"),
                        log_y: true,
                        marks: &[],
                    },
                    &series,
                )?;
            }
        }
        if p.scenarios.contains(&2) {
            line_chart(
                &dir.join("s2-throughput.svg"),
                &Chart {
                    title: &format!(
                        "Scenario 2: confirmed bookings/s over time, {} events (run 1)",
                        p.events
                    ),
                    x_label: "seconds",
                    y_label: "confirms/s",
                    log_y: false,
                    marks: &[],
                },
                &over_time(2, None, ""),
            )?;
        }
        if p.scenarios.contains(&4) {
            for n in self.names {
                let rows = self.select(4, n, None, "");
                let Some(r) = rows.first() else { continue };
                let marks: Vec<f64> = r.r.failover.iter().map(|f| f.at_s).collect();
                line_chart(
                    &dir.join(format!("s4-failover-{n}.svg")),
                    &Chart {
                        title: &format!(
                            "Scenario 4: {n} confirms/s around a leader kill (run 1; line = kill)"
                        ),
                        x_label: "seconds",
                        y_label: "confirms/s",
                        log_y: false,
                        marks: &marks,
                    },
                    &[Series {
                        label: n.clone(),
                        points: rate_series(&r.r.confirms_series),
                    }],
                )?;
            }
        }
        Ok(())
    }
}

fn aggregate_opt(rows: &[&Row]) -> Option<Agg> {
    (!rows.is_empty()).then(|| aggregate(rows))
}

/// Per-bucket counts as (seconds, per second), smoothed over 5 buckets.
fn rate_series(counts: &[u64]) -> Vec<(f64, f64)> {
    let per_s = 1000.0 / BUCKET_MS as f64;
    (0..counts.len())
        .map(|i| {
            let lo = i.saturating_sub(2);
            let hi = (i + 3).min(counts.len());
            let avg = counts[lo..hi].iter().sum::<u64>() as f64 / (hi - lo) as f64;
            ((i as f64 + 0.5) * BUCKET_MS as f64 / 1000.0, avg * per_s)
        })
        .collect()
}

fn lat(s: Summary) -> String {
    format!("{:.1} / {:.1} / {:.1}", s.p50_ms, s.p99_ms, s.p999_ms)
}

/// Cores, memory and kernel, from /proc.
fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {mem_gib:.0} GiB, Linux; every server and the load generator on the same machine, loopback")
}

/// For scenario 3's readers: a client of the given nodes.
pub fn reader_client(urls: Vec<String>, token: &str) -> anyhow::Result<Client> {
    let mut cfg = ClientConfig::new(urls, token);
    cfg.attempts_max = 2;
    Ok(Client::new(cfg)?)
}
