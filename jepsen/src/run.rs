//! `jepsen run`: start a cluster, run workloads under a seeded fault schedule,
//! heal, check liveness, read the final state, check the history, and report.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use boxoffice_api::ProblemCode;
use boxoffice_node::local_cluster::{Addressing, ClusterSpec, LocalCluster, NODE_START_TIMEOUT};
use clap::Args;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::sync::{mpsc, Mutex};

use crate::checker::{check_all, CheckConfig};
use crate::history::{Call, Op, Outcome, FINAL_HEAL, NEMESIS_PROCESS};
use crate::nemesis::{self, Nemesis, Schedule};
use crate::net::{Firewall, NetMode};
use crate::workload::{self, micros, Plan, UserClient, Workload};

/// Operations buffered between clients and the history writer.
const HISTORY_QUEUE: usize = 4096;
/// Process ids of the harness's own operations.
const PROBE_PROCESS: u64 = u64::MAX - 1;
const FINAL_PROCESS: u64 = u64::MAX - 2;
/// Time allowed for each final-state request after the heal (retried on every node).
const FINAL_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Node settings the harness runs with: short timeouts so that faults surface as
/// `info` within a client timeout, and frequent snapshots so that restarts and
/// lagging followers go through snapshot install and log purging. The launcher
/// adds each node's identity, addresses and secrets.
pub const HARNESS_SETTINGS: &str = r#"
fault_injection = true

[limits]
write_timeout_ms = 3000
linearizable_read_timeout_ms = 2000
request_timeout_ms = 4000
peer_connect_timeout_ms = 500
membership_timeout_ms = 3000

[raft]
snapshot_logs_since_last = 300
logs_kept_after_snapshot = 50

# The membership nemesis takes nodes out of groups and back by hand; the
# balancer would fill the gap it leaves with moves of its own meanwhile. A
# drain's moves come quickly, so that a drain fault moves replicas while it lasts.
[placement]
balance = false
balance_interval_ms = 300
"#;

/// Options of `jepsen run`.
#[derive(Args, Clone, Debug)]
pub struct RunArgs {
    /// Seconds of workload under faults (the heal, recovery check and final reads follow).
    #[arg(long, default_value_t = 60)]
    pub time_limit: u64,
    /// Faults to schedule: `all`, `none`, or a comma list of
    /// kill,pause,partition,clock,membership,move,drain,leader,power.
    #[arg(long, default_value = "all")]
    pub nemesis: String,
    /// Workloads: `all` or a comma list of seats,registers,ga,payments,queue.
    #[arg(long, default_value = "all")]
    pub workload: String,
    /// The waiting room's pre-queue order: `random-prequeue`, or `fifo` to
    /// show that the pre-queue checker fails a queue that keeps join order.
    #[arg(long, value_enum, default_value_t = crate::queue::Order::RandomPrequeue)]
    pub queue_order: crate::queue::Order,
    /// Seed of the fault schedule and the clients' choices (default: random, printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 5)]
    pub nodes: u64,
    /// Inventory shards.
    #[arg(long, default_value_t = 4)]
    pub shards: u16,
    /// Voters per shard (default: every node). Below the node count, the
    /// move and drain nemeses can run, and the membership nemesis cannot.
    #[arg(long)]
    pub replication_factor: Option<u8>,
    /// Concurrent clients per workload (general admission gets half).
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Distinct users (each with its own token).
    #[arg(long, default_value_t = 12)]
    pub users: usize,
    /// Seats per event: small, for contention.
    #[arg(long, default_value_t = 6)]
    pub seats: u32,
    /// General-admission capacity per event.
    #[arg(long, default_value_t = 10)]
    pub ga_capacity: u32,
    /// Per-user cap of every event.
    #[arg(long, default_value_t = 4)]
    pub per_user_cap: u32,
    /// Hold lifetime in seconds (short, so that holds expire during the run).
    #[arg(long, default_value_t = 2)]
    pub hold_ttl_s: u64,
    /// Seconds each event is in play before clients move to the next.
    #[arg(long, default_value_t = 4)]
    pub rotate_s: u64,
    /// Upper bound of a client's random pause between operations (ms).
    #[arg(long, default_value_t = 40)]
    pub think_ms: u64,
    /// Healthy seconds between faults (min,max).
    #[arg(long, default_value = "2,6")]
    pub nemesis_interval_s: String,
    /// Seconds a fault lasts (min,max).
    #[arg(long, default_value = "3,10")]
    pub fault_duration_s: String,
    /// Clock offsets drawn from this range of seconds, either sign (min,max).
    #[arg(long, default_value = "3,20")]
    pub clock_skew_s: String,
    /// Seconds after the final heal within which holds and confirms must work.
    #[arg(long, default_value_t = 30)]
    pub recovery_timeout_s: u64,
    /// Network: a namespace with iptables partitions, or plain loopback.
    #[arg(long, value_enum, default_value_t = NetMode::Auto)]
    pub net: NetMode,
    /// Run directory (default: data/jepsen/<time>-seed-<seed>).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// The `boxoffice` binary (default: next to this one).
    #[arg(long)]
    pub bin: Option<PathBuf>,
    /// Node i listens on 127.0.0.(10+i):(base-port + i).
    #[arg(long, default_value_t = 7300)]
    pub base_port: u16,
    /// Which power cuts the power nemesis draws: `one` node, a `minority`,
    /// the `whole-cluster`, or `any` of them.
    #[arg(long, value_enum, default_value_t = crate::power::Scope::Any)]
    pub power_scope: crate::power::Scope,
    /// Fault injection: nodes never fsync their WAL (`storage.skip_wal_fsync`)
    /// and acknowledge writes anyway. The power nemesis must catch this; kill
    /// -9 alone cannot (the page cache outlives a killed process).
    #[arg(long)]
    pub skip_wal_fsync: bool,
    /// Set when re-executed inside the run's namespace (internal).
    #[arg(long, hide = true)]
    pub inside_netns: Option<String>,
}

fn pair(s: &str, name: &str) -> anyhow::Result<(u64, u64)> {
    let (a, b) = s
        .split_once(',')
        .with_context(|| format!("--{name} takes MIN,MAX"))?;
    let (a, b): (u64, u64) = (a.trim().parse()?, b.trim().parse()?);
    if a > b {
        bail!("--{name}: {a} > {b}");
    }
    Ok((a, b))
}

fn parse_list<T: clap::ValueEnum + Copy>(s: &str, all: &[T], name: &str) -> anyhow::Result<Vec<T>> {
    match s {
        "all" => Ok(all.to_vec()),
        "none" | "" => Ok(Vec::new()),
        _ => s
            .split(',')
            .map(|x| {
                T::from_str(x.trim(), true).map_err(|e| anyhow::anyhow!("--{name} {x:?}: {e}"))
            })
            .collect(),
    }
}

/// Everything clients share.
struct Shared {
    t0: Instant,
    deadline: Instant,
    plan: Plan,
    tx: mpsc::Sender<Op>,
    think_ms: u64,
    ops: AtomicU64,
    info: AtomicU64,
}

impl Shared {
    async fn record(&self, op: Op) {
        self.ops.fetch_add(1, Ordering::Relaxed);
        if op.outcome == Outcome::Info {
            self.info.fetch_add(1, Ordering::Relaxed);
        }
        // The writer runs until every sender is gone, so this fails only if it
        // crashed, which the run reports separately.
        let _ = self.tx.send(op).await;
    }

    async fn think(&self, rng: &mut StdRng) {
        let ms = rng.gen_range(0..=self.think_ms);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// One client's loop for `kind` until the deadline. A client whose operation
/// ended in `info` continues as a new process (the old one may still be in flight).
async fn client(
    sh: Arc<Shared>,
    kind: Workload,
    mut c: UserClient,
    index: usize,
    stride: u64,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut process = index as u64;
    let n = c.nodes.len();
    let mut node_i = index % n;
    let mut mine: Vec<String> = Vec::new();
    while Instant::now() < sh.deadline {
        let elapsed = sh.t0.elapsed();
        let (node_id, url) = c.nodes[node_i].clone();
        let op = match kind {
            // Payment buyers run their own loop (`crate::payments`).
            Workload::Payments | Workload::Queue => return,
            Workload::Registers => {
                // Mostly seated events; a quarter general admission (capacity checks).
                let (event, _) = if rng.gen_bool(0.25) {
                    sh.plan.ga_event(elapsed, rng.gen())
                } else {
                    sh.plan.seat_event(elapsed, rng.gen())
                };
                let lin = rng.gen_bool(0.5);
                c.read(process, node_id, &url, event, lin, sh.t0).await
            }
            Workload::Seats | Workload::Ga => {
                let r = rng.gen_range(0..100);
                if r < 50 || mine.is_empty() {
                    let op = if kind == Workload::Seats {
                        let (event, _) = sh.plan.seat_event(elapsed, rng.gen());
                        let k = if rng.gen_bool(0.8) { 1 } else { 2 };
                        let seats: Vec<u32> = sh
                            .plan
                            .seats
                            .choose_multiple(&mut rng, k)
                            .copied()
                            .collect();
                        c.hold(process, &url, event, seats, sh.t0).await
                    } else {
                        let (event, _) = sh.plan.ga_event(elapsed, rng.gen());
                        let q = rng.gen_range(1..=sh.plan.per_user_cap.min(3));
                        c.hold_quantity(process, &url, event, q, sh.t0).await
                    };
                    if let Some(h) = &op.answer.hold_id {
                        mine.push(h.clone());
                        if mine.len() > 4 {
                            mine.remove(0);
                        }
                    }
                    op
                } else {
                    let h = mine.swap_remove(rng.gen_range(0..mine.len()));
                    if r < 80 {
                        c.confirm(process, &url, &h, sh.t0).await
                    } else {
                        c.release(process, &url, &h, sh.t0).await
                    }
                }
            }
        };
        let info = op.outcome == Outcome::Info;
        let unreachable = op.error.as_deref().is_some_and(|e| {
            e == workload::ERROR_CONNECTION
                || e == workload::ERROR_TIMEOUT
                || e == ProblemCode::NotReady.as_str()
        });
        sh.record(op).await;
        if info {
            process += stride;
        }
        if unreachable && kind != Workload::Registers {
            node_i = (node_i + 1) % n;
        }
        sh.think(&mut rng).await;
    }
}

fn nemesis_op(fault: String, start: u64, end: u64, ok: bool, error: Option<String>) -> Op {
    Op {
        process: NEMESIS_PROCESS,
        call: Call::Nemesis { fault },
        invoke_us: start,
        complete_us: Some(end),
        outcome: if ok { Outcome::Ok } else { Outcome::Fail },
        error,
        answer: Default::default(),
        applied: None,
    }
}

/// The fault loop: healthy pause, one or two faults, their end; until the deadline.
async fn nemesis_loop(
    sh: Arc<Shared>,
    nem: Arc<Mutex<Nemesis>>,
    log: Arc<std::sync::Mutex<std::fs::File>>,
    counts: Arc<std::sync::Mutex<BTreeMap<String, u64>>>,
) {
    let write_log = |e: &nemesis::Event| {
        if let Ok(mut f) = log.lock() {
            let _ = writeln!(f, "{}", serde_json::to_string(e).unwrap_or_default());
        }
    };
    if nem.lock().await.schedule.kinds.is_empty() {
        return;
    }
    loop {
        let pause = nem.lock().await.next_interval();
        if Instant::now() + pause >= sh.deadline {
            return;
        }
        tokio::time::sleep(pause).await;
        let mut n = nem.lock().await;
        let kinds = n.next_kinds();
        let hold_for = n.next_duration();
        let busy = sh.plan.busy_shards(sh.t0.elapsed());
        let mut active = Vec::new();
        for k in kinds {
            let f = n.choose(k, &busy).await;
            let t = micros(sh.t0);
            let r = n.start(&f).await;
            write_log(&nemesis::Event {
                t_us: t,
                phase: "start",
                fault: f.clone(),
                ok: r.is_ok(),
                error: r.as_ref().err().map(|e| format!("{e:#}")),
            });
            if let Ok(mut c) = counts.lock() {
                *c.entry(format!("{k:?}").to_lowercase()).or_default() += 1;
            }
            active.push((f, t, r.err().map(|e| format!("{e:#}"))));
        }
        drop(n);
        let end_at = (Instant::now() + hold_for).min(sh.deadline);
        tokio::time::sleep_until(end_at.into()).await;
        let mut n = nem.lock().await;
        for (f, start, err) in active.into_iter().rev() {
            let r = n.end(&f).await;
            let t = micros(sh.t0);
            write_log(&nemesis::Event {
                t_us: t,
                phase: "end",
                fault: f.clone(),
                ok: r.is_ok(),
                error: r.as_ref().err().map(|e| format!("{e:#}")),
            });
            let error = err.or(r.err().map(|e| format!("{e:#}")));
            sh.record(nemesis_op(f.describe(), start, t, error.is_none(), error))
                .await;
        }
    }
}

/// Runs the whole test; returns whether every checker passed.
pub async fn run(args: RunArgs) -> anyhow::Result<bool> {
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut kinds = parse_list(&args.nemesis, &nemesis::Kind::ALL, "nemesis")?;
    let rf = args
        .replication_factor
        .unwrap_or_else(|| u8::try_from(args.nodes).unwrap_or(u8::MAX));
    let spare_nodes = u64::from(rf) < args.nodes;
    // `all` means the kinds this cluster's shape allows; one named that it
    // does not is an error.
    let allowed = |k: &nemesis::Kind| {
        if spare_nodes {
            !k.needs_every_group_everywhere()
        } else {
            !k.needs_spare_nodes()
        }
    };
    if args.nemesis == "all" {
        kinds.retain(allowed);
    } else if let Some(k) = kinds.iter().find(|k| !allowed(k)) {
        bail!(
            "the {k:?} nemesis needs {}; this run has a replication factor of {rf} on {} nodes",
            if spare_nodes {
                "every group on every node"
            } else {
                "fewer voters per shard than nodes (--replication-factor)"
            },
            args.nodes
        );
    }
    let workloads = parse_list(
        &args.workload,
        &[
            Workload::Seats,
            Workload::Registers,
            Workload::Ga,
            Workload::Payments,
            Workload::Queue,
        ],
        "workload",
    )?;
    if workloads.is_empty() {
        bail!("--workload: nothing to run");
    }
    let netns = args.inside_netns.is_some();
    if kinds.contains(&nemesis::Kind::Partition) && !netns {
        bail!("the partition nemesis needs network namespaces (run as root with `ip` and `iptables`, --net netns), or leave it out: --nemesis kill,pause,clock");
    }
    let interval = pair(&args.nemesis_interval_s, "nemesis-interval-s")?;
    let duration = pair(&args.fault_duration_s, "fault-duration-s")?;
    let skew = pair(&args.clock_skew_s, "clock-skew-s")?;
    let bin = match &args.bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no parent dir of this binary")?
            .join("boxoffice"),
    };
    if !bin.exists() {
        bail!(
            "{} not found: build it (cargo build --release -p boxoffice-node) or pass --bin",
            bin.display()
        );
    }
    let run_dir = match &args.run_dir {
        Some(d) => d.clone(),
        None => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs();
            PathBuf::from(format!("data/jepsen/{now}-seed-{seed}"))
        }
    };
    std::fs::create_dir_all(&run_dir)?;
    let run_dir = std::fs::canonicalize(&run_dir)?;
    let network = if netns {
        "network namespace, partitions by iptables DROP between node addresses"
    } else {
        "host loopback, no partitions"
    };
    println!("seed {seed}; run directory {}", run_dir.display());
    println!("network: {network}; nemeses: {kinds:?}; workloads: {workloads:?}");

    // The payments sandbox's address, which the nodes' settings name.
    let (mut payments, payment_settings) = if workloads.contains(&Workload::Payments) {
        let (p, s) = crate::payments::Payments::bind().await?;
        (Some(p), s)
    } else {
        (None, String::new())
    };
    // Cluster.
    // Node i on 127.0.0.(10+i), sending from that address, so that firewall rules
    // can tell nodes apart; data dir, settings and log of each under the run dir.
    let mut cluster = LocalCluster::create(ClusterSpec {
        bin,
        dir: run_dir.clone(),
        nodes: args.nodes,
        shards: args.shards,
        replication_factor: Some(rf),
        addressing: Addressing::PerNodeIp {
            base_port: args.base_port,
        },
        settings: format!(
            "{HARNESS_SETTINGS}{}{payment_settings}",
            if args.skip_wal_fsync {
                "\n[storage]\nskip_wal_fsync = true\n"
            } else {
                ""
            }
        ),
        secrets: None,
        addrs: Default::default(),
        // The harness tests consistency, not abuse: no rate limits.
        unlimited: true,
        log_filter: boxoffice_node::local_cluster::LOG_FILTER_DEFAULT.into(),
        log_json: false,
    })?;
    // Power cuts need each node's data directory on a power-cut file
    // system, mounted before the node first starts.
    let mut power = None;
    if kinds.contains(&nemesis::Kind::Power) {
        match crate::powerfs::unavailable() {
            Some(why) => {
                println!("power nemesis skipped: {why}");
                kinds.retain(|k| *k != nemesis::Kind::Power);
            }
            None => power = Some(crate::power::Power::mount(&cluster)?),
        }
    }
    let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
    for &id in &ids {
        cluster.start(id)?;
    }
    for &id in &ids {
        cluster.wait_healthy(id, NODE_START_TIMEOUT).await?;
    }
    cluster.init().await?;
    let plan = workload::setup(
        &cluster,
        &workload::SetupParams {
            time_limit: Duration::from_secs(args.time_limit),
            rotate: Duration::from_secs(args.rotate_s.max(1)),
            active: 2,
            seats: args.seats,
            ga_capacity: args.ga_capacity,
            per_user_cap: args.per_user_cap,
            hold_ttl_s: args.hold_ttl_s,
        },
    )
    .await?;
    println!(
        "cluster of {} nodes up; {} seated and {} general-admission events prepared",
        args.nodes,
        plan.seat_events.len(),
        plan.ga_events.len()
    );
    let node_urls: Vec<(u64, String)> = cluster.nodes.values().map(|n| (n.id, n.url())).collect();
    let urls: Vec<String> = node_urls.iter().map(|(_, u)| u.clone()).collect();
    let payments_admin = cluster.token("jepsen-admin", true)?;
    if let Some(p) = payments.as_mut() {
        p.start(&urls, &payments_admin).await?;
        println!("payments sandbox up; buyers pay through it");
    }
    let payments = payments.map(Arc::new);
    let t0 = Instant::now();
    let queue = if workloads.contains(&Workload::Queue) {
        let q = crate::queue::QueueRun::setup(&urls, &payments_admin, t0, args.queue_order).await?;
        println!("waiting room up: {} users join it", crate::queue::USERS);
        Some(Arc::new(q))
    } else {
        None
    };
    let mut buyer_tokens = Vec::new();
    let mut users = Vec::new();
    for u in 0..args.users.max(1) {
        let name = format!("user-{u}");
        let token = cluster.box_office_token(&name)?;
        users.push(UserClient::new(name, token, node_urls.clone(), seed)?);
    }
    let cluster = Arc::new(Mutex::new(cluster));

    // History writer.
    let (tx, mut rx) = mpsc::channel::<Op>(HISTORY_QUEUE);
    let history_path = run_dir.join("history.jsonl");
    let mut hist_file = std::io::BufWriter::new(std::fs::File::create(&history_path)?);
    let writer = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Some(op) = rx.recv().await {
            if let Ok(line) = serde_json::to_string(&op) {
                let _ = writeln!(hist_file, "{line}");
            }
            all.push(op);
        }
        let _ = hist_file.flush();
        all
    });

    let sh = Arc::new(Shared {
        t0,
        deadline: t0 + Duration::from_secs(args.time_limit),
        plan,
        tx,
        think_ms: args.think_ms,
        ops: AtomicU64::new(0),
        info: AtomicU64::new(0),
    });

    // Clients.
    let mut tasks = Vec::new();
    let mut index = 0usize;
    let mut specs = Vec::new();
    for &w in workloads
        .iter()
        .filter(|w| !matches!(w, Workload::Payments | Workload::Queue))
    {
        let count = if w == Workload::Ga {
            (args.concurrency / 2).max(1)
        } else {
            args.concurrency
        };
        for _ in 0..count {
            specs.push(w);
        }
    }
    let stride = specs.len() as u64;
    for w in specs {
        let c = users[index % users.len()]
            .clone()
            .scoped(&format!("c{index}"));
        tasks.push(tokio::spawn(client(
            sh.clone(),
            w,
            c,
            index,
            stride,
            seed.wrapping_add(index as u64 + 1),
        )));
        index += 1;
    }

    // Payment buyers (plain user tokens: they pay, they cannot confirm) and
    // the sandbox's faults.
    let mut sandbox_faults = None;
    if let Some(p) = &payments {
        let buyers = (args.concurrency / 2).max(2);
        for b in 0..buyers {
            let name = format!("buyer-{b}");
            let token = cluster.lock().await.token(&name, false)?;
            buyer_tokens.push(token.clone());
            tasks.push(tokio::spawn(p.clone().buyer(
                b,
                token,
                urls.clone(),
                sh.deadline,
                seed.wrapping_add(10_000 + b as u64),
            )));
        }
        sandbox_faults = Some(tokio::spawn(p.clone().faults(sh.deadline, seed)));
    }

    // Waiting-room users (box-office tokens: once admitted they book directly).
    let mut queue_tokens = Vec::new();
    if let Some(q) = &queue {
        for u in 0..crate::queue::USERS {
            let token = cluster
                .lock()
                .await
                .box_office_token(&format!("queue-user-{u}"))?;
            queue_tokens.push(token.clone());
            tasks.push(tokio::spawn(q.clone().user(
                u,
                token,
                urls.clone(),
                sh.deadline,
                seed.wrapping_add(20_000 + u as u64),
            )));
        }
    }

    // Nemesis.
    let firewall = netns.then(Firewall::new);
    let schedule = Schedule {
        kinds: kinds.clone(),
        interval: (
            Duration::from_secs(interval.0),
            Duration::from_secs(interval.1),
        ),
        duration: (
            Duration::from_secs(duration.0),
            Duration::from_secs(duration.1),
        ),
        mixed_probability: 0.3,
        clock_skew_ms: (skew.0 as i64 * 1000, skew.1 as i64 * 1000),
    };
    let nem = Arc::new(Mutex::new(Nemesis::new(
        cluster.clone(),
        firewall,
        seed,
        schedule,
        spare_nodes,
    )));
    {
        let mut n = nem.lock().await;
        n.power = power;
        n.power_scope = args.power_scope;
    }
    let nem_log = Arc::new(std::sync::Mutex::new(std::fs::File::create(
        run_dir.join("nemesis.jsonl"),
    )?));
    let fault_counts = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
    let nem_task = tokio::spawn(nemesis_loop(
        sh.clone(),
        nem.clone(),
        nem_log,
        fault_counts.clone(),
    ));

    // Progress.
    let progress = {
        let sh = sh.clone();
        let total = args.time_limit;
        tokio::spawn(async move {
            let tty = std::io::stderr().is_terminal();
            let bar = indicatif::ProgressBar::new(total);
            if tty {
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{elapsed_precise} [{bar:30}] {pos}/{len}s {msg}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
            } else {
                bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            }
            let mut last_print = 0;
            while Instant::now() < sh.deadline {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let s = sh.t0.elapsed().as_secs().min(total);
                let msg = format!(
                    "{} ops, {} info",
                    sh.ops.load(Ordering::Relaxed),
                    sh.info.load(Ordering::Relaxed)
                );
                bar.set_position(s);
                bar.set_message(msg.clone());
                if !tty && s >= last_print + 10 {
                    last_print = s;
                    println!("  {s:>5}/{total}s  {msg}");
                }
            }
            bar.finish_and_clear();
        })
    };

    for t in tasks {
        let _ = t.await;
    }
    let _ = nem_task.await;
    let _ = progress.await;

    // Final heal, then liveness and the final state.
    let heal_start = micros(t0);
    let healed = nem.lock().await.heal_all(NODE_START_TIMEOUT).await;
    let heal_end = micros(t0);
    sh.record(nemesis_op(
        FINAL_HEAL.into(),
        heal_start,
        heal_end,
        healed.is_ok(),
        healed.as_ref().err().map(|e| format!("{e:#}")),
    ))
    .await;
    println!(
        "healed: {}",
        match &healed {
            Ok(()) =>
                "every node up and a voter of every group, network whole, clocks reset".to_string(),
            Err(e) => format!("FAILED: {e}"),
        }
    );
    let recovery = probe(
        &sh,
        &mut users[0],
        Duration::from_secs(args.recovery_timeout_s),
    )
    .await;
    match recovery {
        Some(ms) => println!("holds and confirms served again {ms} ms after the heal"),
        None => println!(
            "holds and confirms NOT served within {} s of the heal",
            args.recovery_timeout_s
        ),
    }
    // A cluster that cannot serve its final state is a finding, not a reason
    // to skip the checkers.
    let final_read = final_state(&sh, &users).await;
    if let Err(e) = &final_read {
        println!("final state NOT read: {e:#}");
    }
    let sandbox_fault_counts = match sandbox_faults {
        Some(t) => t.await.unwrap_or_default(),
        None => BTreeMap::new(),
    };
    let payments_verdict = match &payments {
        Some(p) => match p.check(&urls, &buyer_tokens, &payments_admin).await {
            Ok(v) => v,
            Err(e) => vec![crate::checker::Verdict {
                checker: "payments",
                violations: vec![format!("{e:#}")],
                undecided: Vec::new(),
                notes: Vec::new(),
            }],
        },
        None => Vec::new(),
    };
    let queue_verdicts = match &queue {
        Some(q) => match q.check(&urls, &queue_tokens, &payments_admin).await {
            Ok(v) => v,
            Err(e) => vec![crate::checker::Verdict {
                checker: "queue",
                violations: vec![format!("{e:#}")],
                undecided: Vec::new(),
                notes: Vec::new(),
            }],
        },
        None => Vec::new(),
    };

    // Check.
    let Shared { tx, .. } = match Arc::try_unwrap(sh) {
        Ok(s) => s,
        Err(_) => bail!("clients still running after the deadline"),
    };
    drop(tx);
    let ops = writer.await?;
    cluster.lock().await.kill_all();
    let power_verdict = nem.lock().await.power.as_mut().map(|p| {
        p.unmount_all();
        p.verdict()
    });
    let config = CheckConfig {
        per_user_cap: args.per_user_cap,
        staleness_ms_max: 5000,
        recovery_ms_max: args.recovery_timeout_s * 1000,
    };
    let mut verdicts = check_all(&ops, &config);
    verdicts.extend(payments_verdict);
    verdicts.extend(queue_verdicts);
    verdicts.extend(power_verdict);
    if let Err(e) = final_read {
        verdicts.push(crate::checker::Verdict {
            checker: "final-state",
            violations: vec![format!("the final state could not be read: {e:#}")],
            undecided: Vec::new(),
            notes: Vec::new(),
        });
    }
    let valid = verdicts.iter().all(|v| v.valid());
    let mut by_outcome: BTreeMap<String, BTreeMap<&str, u64>> = BTreeMap::new();
    for o in ops.iter().filter(|o| o.process != NEMESIS_PROCESS) {
        let name = match &o.call {
            Call::Hold { .. } => "hold",
            Call::HoldQuantity { .. } => "hold-quantity",
            Call::Confirm { .. } => "confirm",
            Call::Release { .. } => "release",
            Call::Read {
                linearizable: true, ..
            } => "read-linearizable",
            Call::Read { .. } => "read-follower",
            Call::Nemesis { .. } => "nemesis",
        };
        let outcome = match o.outcome {
            Outcome::Ok => "ok",
            Outcome::Fail => "fail",
            Outcome::Info => "info",
        };
        *by_outcome
            .entry(name.to_string())
            .or_default()
            .entry(outcome)
            .or_default() += 1;
    }
    let mut faults = fault_counts.lock().map(|c| c.clone()).unwrap_or_default();
    faults.extend(sandbox_fault_counts);
    let faults_failed: Vec<String> = ops
        .iter()
        .filter(|o| o.process == NEMESIS_PROCESS && o.outcome == Outcome::Fail)
        .map(|o| match &o.call {
            Call::Nemesis { fault } => format!("{fault}: {}", o.error.clone().unwrap_or_default()),
            _ => String::new(),
        })
        .collect();
    let verdict = json!({
        "seed": seed,
        "valid": valid,
        "network": network,
        "nodes": args.nodes,
        "shards": args.shards,
        "time_limit_s": args.time_limit,
        "operations": ops.len(),
        "by_call": by_outcome,
        "faults": faults,
        "faults_total": faults.values().sum::<u64>(),
        "faults_not_applied": faults_failed,
        "recovery_ms": recovery,
        "checkers": verdicts.iter().map(|v| json!({
            "checker": v.checker, "valid": v.valid(), "violations": v.violations,
            "undecided": v.undecided, "notes": v.notes,
        })).collect::<Vec<_>>(),
    });
    std::fs::write(
        run_dir.join("verdict.json"),
        serde_json::to_vec_pretty(&verdict)?,
    )?;
    println!("\n{} operations", ops.len());
    for (call, o) in &by_outcome {
        println!("  {call:18} {o:?}");
    }
    println!("faults: {faults:?}");
    if !faults_failed.is_empty() {
        println!(
            "faults that could not be applied or ended cleanly: {}",
            faults_failed.len()
        );
        for f in faults_failed.iter().take(5) {
            println!("       {f}");
        }
    }
    for v in &verdicts {
        println!(
            "{:6} {}",
            if v.valid() { "ok" } else { "FAILED" },
            v.checker
        );
        for n in &v.notes {
            println!("       {n}");
        }
        for p in v.violations.iter().chain(&v.undecided).take(20) {
            println!("       {p}");
        }
        if v.violations.len() + v.undecided.len() > 20 {
            println!(
                "       ... {} more in verdict.json",
                v.violations.len() + v.undecided.len() - 20
            );
        }
    }
    println!("run directory: {}", run_dir.display());
    if valid {
        println!("VALID (seed {seed})");
    } else {
        println!("INVALID: reproduce the schedule with --seed {seed}");
    }
    Ok(valid)
}

/// After the heal: a hold and its confirm on the probe event, retried (on each
/// node in turn) until both succeed or `timeout`. Returns the ms it took.
async fn probe(sh: &Shared, c: &mut UserClient, timeout: Duration) -> Option<u64> {
    let start = Instant::now();
    let nodes = c.nodes.clone();
    let mut attempt = 0usize;
    while start.elapsed() < timeout {
        let (_, url) = &nodes[attempt % nodes.len()];
        let seat = sh.plan.seats[attempt % sh.plan.seats.len()];
        attempt += 1;
        let op = c
            .hold(PROBE_PROCESS, url, sh.plan.probe_event, vec![seat], sh.t0)
            .await;
        let hold = op.answer.hold_id.clone();
        sh.record(op).await;
        if let Some(h) = hold {
            let op = c.confirm(PROBE_PROCESS, url, &h, sh.t0).await;
            let ok = op.outcome == Outcome::Ok;
            sh.record(op).await;
            if ok {
                return Some(start.elapsed().as_millis() as u64);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// Reads the final state of every event used: a linearizable seat map, with
/// every user's bookings of the event (linearizable) attached. Each request is
/// retried on every node in turn for up to `FINAL_READ_TIMEOUT`.
async fn final_state(sh: &Shared, users: &[UserClient]) -> anyhow::Result<()> {
    let (seated, ga) = sh.plan.used(sh.deadline - sh.t0);
    let mut reader = users[0].clone();
    for event in seated
        .into_iter()
        .chain(ga.iter().copied())
        .chain([sh.plan.probe_event])
    {
        let deadline = Instant::now() + FINAL_READ_TIMEOUT;
        let mut i = 0;
        let mut op = loop {
            let (node_id, url) = reader.nodes[i % reader.nodes.len()].clone();
            let op = reader
                .read(FINAL_PROCESS, node_id, &url, event, true, sh.t0)
                .await;
            if op.outcome == Outcome::Ok {
                break op;
            }
            if Instant::now() > deadline {
                bail!(
                    "final read of event {event} failed until the deadline: {:?}",
                    op.error
                );
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        op.answer.final_state = true;
        let mut fetches = tokio::task::JoinSet::new();
        for u in users.iter().cloned() {
            fetches.spawn(async move {
                let mut i = 0;
                loop {
                    let (_, url) = u.nodes[i % u.nodes.len()].clone();
                    match u.bookings(&url, event).await {
                        Ok((_, true)) => {
                            bail!("bookings of {} for event {event} truncated", u.user)
                        }
                        Ok((list, false)) => return Ok((u.user.clone(), list)),
                        Err(e) if Instant::now() > deadline => {
                            return Err(e.context(format!(
                                "final bookings of {} for event {event}",
                                u.user
                            )))
                        }
                        Err(_) => {
                            i += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            });
        }
        while let Some(r) = fetches.join_next().await {
            let (user, list) = r??;
            for (b, _, seats, q) in list {
                if let Some(ga) = op.answer.ga.as_mut() {
                    ga.bookings.push((b, user.clone(), q));
                } else {
                    for s in seats {
                        op.answer.bookings.push((s, b.clone()));
                    }
                }
            }
        }
        op.answer.bookings.sort();
        if let Some(ga) = op.answer.ga.as_mut() {
            ga.bookings.sort();
        }
        sh.record(op).await;
    }
    Ok(())
}
