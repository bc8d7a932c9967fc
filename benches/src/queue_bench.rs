//! The virtual waiting room under an on-sale's crowd: `boxoffice-bench queue`.
//!
//! One fresh event with a waiting room whose sale starts an hour out: every
//! user (each a user of its own, with a token minted up front) joins, so the
//! joins form the pre-queue. Once every join is acknowledged and checked (one
//! distinct ticket each, the queue's count agrees), the sale is moved to two
//! seconds from then: the pre-queue is shuffled, positions are fixed, and the
//! leader's tick admits at the configured rate (`active_max` is the number of
//! users, so the rate is the only limit). While it drains, pollers read the
//! places of the waiting users (`GET /v1/events/{id}/queue/me`) on every node,
//! alternating in slices with the same pollers reading the event's seat map
//! (`GET /v1/events/{id}/seats`, the follower read of the `reads` bench) on
//! the same nodes; some users stream their place instead (SSE).
//!
//! Figures: acknowledged joins/s and join latency; position and seat-map
//! reads/s and latency; the admission rate measured from the queue's figures
//! against the configured one; the wait a sample of users was told at the
//! start against when they were admitted; how late the streams told users of
//! their admission. Checks, which fail the run (figures never do): every join
//! answered with a distinct ticket, the queue counted exactly the users who
//! joined, no position shown to two users or changed, every answer consistent
//! with itself, and never more admitted than the configured rate allows.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use boxoffice_client::{
    Client, ClientConfig, Consistency, NewEvent, NewLayout, NewVenue, QueueOrderName, QueuePhase,
    QueuePlace, QueueSettings, QueueStats, Selection,
};
use futures::StreamExt;
use hyper::Method;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::cluster::ClusterInfo;
use crate::cpu::{cpu_line, cpu_snap};
use crate::lean_http::Conn;
use crate::stats::{percentile, summarize, Summary};

/// Where joins are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum JoinRoute {
    /// Spread over every node, as users behind a load balancer would be (a
    /// follower forwards the join to the shard's leader).
    Spread,
    /// All to the shard's leader, as the client library does once it knows it.
    Leader,
}

/// `boxoffice-bench queue`.
#[derive(clap::Args, Clone, Debug)]
pub struct QueueArgs {
    /// The dev cluster's directory (reads cluster.json for addresses and tokens).
    #[arg(long, default_value = "data/dev")]
    pub cluster_dir: PathBuf,
    /// Distinct users joining the one event.
    #[arg(long, default_value_t = 200_000)]
    pub users: usize,
    /// Concurrent joiners (joins in flight: a crowd at a sale's opening is
    /// many users at once; below ~256 the joins are bound by their latency).
    #[arg(long, default_value_t = 256)]
    pub clients: usize,
    /// Where joins go.
    #[arg(long, value_enum, default_value_t = JoinRoute::Spread)]
    pub join_route: JoinRoute,
    /// Longest the joins may take in all.
    #[arg(long, default_value_t = 300)]
    pub join_timeout_s: u64,
    /// The queue's admission rate (users a minute).
    #[arg(long, default_value_t = 60_000)]
    pub admit_per_minute: u32,
    /// How long the drain is measured, from the sale's start.
    #[arg(long, default_value_t = 60)]
    pub drain_s: u64,
    /// Concurrent readers during the drain (positions and seat maps in turn).
    #[arg(long, default_value_t = 32)]
    pub pollers: usize,
    /// Length of a read slice; position and seat-map slices alternate.
    #[arg(long, default_value_t = 5)]
    pub slice_s: u64,
    /// Users whose wait, as told at the start, is compared with their admission.
    #[arg(long, default_value_t = 1_000)]
    pub sample_eta: usize,
    /// Users (of the ETA sample) who stream their place (SSE) instead of polling.
    #[arg(long, default_value_t = 60)]
    pub streams: usize,
    /// Seed of the sample and of the users' order.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Most users a run may have (tokens and places are kept in memory; below the
/// API's bound on `active_max`, so every user may be admitted at once).
const USERS_MAX: usize = 5_000_000;
/// Attempts per join (a join is idempotent: a retry answers the place taken).
const JOIN_ATTEMPTS: u32 = 10;
/// How far ahead the sale is moved once the joins are in.
const SALE_LEAD_MS: u64 = 2_000;
/// Slack of the rate checks, in users (integer rounding).
const RATE_SLACK: u64 = 1;
/// The credit a queue may bank (ms of its rate, `QUEUE_CREDIT_MAX_MS` in storage).
const CREDIT_MAX_MS: u64 = 5_000;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn rfc3339(ms: u64) -> String {
    boxoffice_node::api::rfc3339_ms(ms as i64)
}

/// Correctness violations found so far (the run fails if any).
#[derive(Default)]
struct Violations {
    count: AtomicU64,
    first: Mutex<Vec<String>>,
}

impl Violations {
    fn add(&self, what: String) {
        if self.count.fetch_add(1, Ordering::Relaxed) < 10 {
            eprintln!("VIOLATION: {what}");
            self.first
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(what);
        }
    }

    fn total(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// A place as read, with the wall time the answer arrived.
struct Read {
    place: QueuePlace,
    at_ms: u64,
}

/// `GET queue/me` of one user on one node.
async fn read_place(
    http: &reqwest::Client,
    url: &str,
    event: u64,
    token: &str,
) -> anyhow::Result<(Read, usize)> {
    let r = http
        .get(format!("{url}/v1/events/{event}/queue/me"))
        .bearer_auth(token)
        .send()
        .await?;
    let status = r.status();
    let body = r.bytes().await?;
    let at_ms = now_ms();
    ensure!(
        status.is_success(),
        "{url} queue/me: {status} {}",
        String::from_utf8_lossy(&body[..body.len().min(200)])
    );
    let place: QueuePlace = serde_json::from_slice(&body).context("decoding a place")?;
    Ok((Read { place, at_ms }, body.len()))
}

/// The places of `users` (indices), read with `concurrency` requests in flight
/// over every node.
async fn read_places(
    http: &reqwest::Client,
    urls: &[String],
    event: u64,
    tokens: &[String],
    users: &[usize],
    concurrency: usize,
) -> Vec<(usize, anyhow::Result<Read>)> {
    futures::stream::iter(users.iter().copied())
        .map(|u| async move {
            let url = &urls[u % urls.len()];
            (
                u,
                read_place(http, url, event, &tokens[u])
                    .await
                    .map(|(r, _)| r),
            )
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await
}

/// What the joins measured.
struct Joins {
    secs: f64,
    lat: Summary,
    tickets: Vec<u64>,
    retries: u64,
    failed: Vec<String>,
    cpu: String,
}

#[allow(clippy::too_many_arguments)]
async fn joins(
    urls: Arc<Vec<String>>,
    event: u64,
    tokens: Arc<Vec<String>>,
    clients: usize,
    limit: Duration,
    violations: Arc<Violations>,
    cpu_names: &[String],
    pids: &[String],
) -> Joins {
    let users = tokens.len();
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + limit;
    let cpu0 = cpu_snap(pids);
    let progress = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let d = done.load(Ordering::Relaxed);
                eprintln!(
                    "  joins: {d} of {users} acknowledged ({:.0}/s over the last 5 s)",
                    (d - last) as f64 / 5.0
                );
                last = d;
            }
        })
    };
    let mut tasks = Vec::new();
    for _ in 0..clients.max(1) {
        let (urls, tokens, next, done, retries, violations) = (
            urls.clone(),
            tokens.clone(),
            next.clone(),
            done.clone(),
            retries.clone(),
            violations.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut got = Vec::new();
            let mut failed = Vec::new();
            // One connection per node, kept by this joiner (see `lean_http`).
            let mut conns: Vec<Conn> = urls.iter().map(|u| Conn::new(u)).collect();
            let path = format!("/v1/events/{event}/queue");
            loop {
                let u = next.fetch_add(1, Ordering::Relaxed);
                if u >= tokens.len() || Instant::now() >= deadline {
                    break;
                }
                let t = Instant::now();
                let mut last = String::new();
                let mut answer = None;
                for attempt in 0..JOIN_ATTEMPTS {
                    if Instant::now() >= deadline {
                        break;
                    }
                    if attempt > 0 {
                        retries.fetch_add(1, Ordering::Relaxed);
                        let wait = Duration::from_millis((20u64 << attempt.min(5)).min(500));
                        tokio::time::sleep(wait).await;
                    }
                    // A retry moves on to the next node.
                    let n = (u + attempt as usize) % urls.len();
                    let url = &urls[n];
                    let (status, body) =
                        match conns[n].send(Method::POST, &path, &tokens[u]).await {
                            Ok(r) => r,
                            Err(e) => {
                                last = e;
                                continue;
                            }
                        };
                    let text = || String::from_utf8_lossy(&body[..body.len().min(300)]).to_string();
                    if status.as_u16() == 429 || status.is_server_error() {
                        last = format!("{url}: {status} {}", text());
                        continue;
                    }
                    if !status.is_success() {
                        // A fresh user refused a place: not a load problem.
                        violations.add(format!("join of user {u} refused: {status} {}", text()));
                        last = format!("{url}: {status} {}", text());
                        break;
                    }
                    match serde_json::from_slice::<QueuePlace>(&body) {
                        Ok(p) => {
                            if attempt == 0 && (!p.new || status.as_u16() != 201) {
                                violations.add(format!(
                                    "user {u}'s first join answered {status}, new = {}: a fresh user already had a place",
                                    p.new
                                ));
                            }
                            if p.phase != QueuePhase::Prequeue || p.position.is_some() {
                                violations.add(format!(
                                    "user {u} joined before the sale and was shown {:?} at position {:?}",
                                    p.phase, p.position
                                ));
                            }
                            answer = Some(p.ticket);
                        }
                        Err(e) => last = format!("{url}: undecodable place: {e}"),
                    }
                    break;
                }
                match answer {
                    Some(ticket) => {
                        lat.push(t.elapsed().as_micros() as u64);
                        got.push((u, ticket));
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    None => failed.push(format!("user {u}: {last}")),
                }
            }
            (lat, got, failed)
        }));
    }
    let mut lat = Vec::with_capacity(users);
    let mut tickets = vec![u64::MAX; users];
    let mut failed = Vec::new();
    for t in tasks {
        match t.await {
            Ok((l, g, f)) => {
                lat.extend(l);
                for (u, ticket) in g {
                    tickets[u] = ticket;
                }
                failed.extend(f);
            }
            Err(e) => failed.push(format!("a joiner panicked: {e}")),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu1 = cpu_snap(pids);
    progress.abort();
    Joins {
        secs,
        lat: summarize(lat),
        tickets,
        retries: retries.load(Ordering::Relaxed),
        failed,
        cpu: cpu_line(cpu_names, &cpu0, &cpu1),
    }
}

/// What a slice of reads measured.
#[derive(Default)]
struct ReadTally {
    lat: Vec<u64>,
    secs: f64,
    errors: u64,
    bytes: u64,
}

/// What the drain's position reads saw, besides their latency.
struct Seen {
    /// Position each user was shown (0: not seen yet).
    positions: Vec<AtomicU32>,
    /// Waiting answers since the slice began.
    waiting: AtomicU64,
    /// Sum over those answers of the polls a second their `retry_after`
    /// asks for (× 1e6).
    polls_per_s_micro: AtomicU64,
    /// Most admitted users an answer showed.
    admitted_so_far: AtomicU64,
}

impl Seen {
    fn new(users: usize) -> Self {
        Seen {
            positions: (0..users).map(|_| AtomicU32::new(0)).collect(),
            waiting: AtomicU64::new(0),
            polls_per_s_micro: AtomicU64::new(0),
            admitted_so_far: AtomicU64::new(0),
        }
    }

    /// The polls a second the waiting users' `retry_after` asks for, as the
    /// answers since the last call tell it (the mean of the answers × the users
    /// still waiting), and the users waiting; restarts the count.
    fn polls_asked(&self, users: u64) -> (f64, u64) {
        let n = self.waiting.swap(0, Ordering::Relaxed);
        let sum = self.polls_per_s_micro.swap(0, Ordering::Relaxed) as f64 / 1e6;
        let waiting = users.saturating_sub(self.admitted_so_far.load(Ordering::Relaxed));
        if n == 0 {
            return (0.0, waiting);
        }
        (sum / n as f64 * waiting as f64, waiting)
    }
}

/// What a place answer is checked against.
#[derive(Clone, Copy)]
struct Bounds {
    users: u64,
    start_ms: u64,
    /// Users a minute.
    rate: u64,
}

/// Checks one place answer against itself and what was seen before.
fn check_place(u: usize, p: &QueuePlace, seen: &Seen, b: Bounds, v: &Violations) {
    let Some(pos) = p.position else {
        v.add(format!(
            "user {u} has no position after the start ({:?})",
            p.phase
        ));
        return;
    };
    if pos == 0 || pos > b.users {
        v.add(format!("user {u} at position {pos} of {}", b.users));
        return;
    }
    seen.admitted_so_far
        .fetch_max(p.admitted_so_far, Ordering::Relaxed);
    let before = seen.positions[u].swap(pos as u32, Ordering::Relaxed);
    if before != 0 && u64::from(before) != pos {
        v.add(format!("user {u}'s position moved from {before} to {pos}"));
    }
    match p.phase {
        QueuePhase::Waiting => {
            seen.waiting.fetch_add(1, Ordering::Relaxed);
            if pos <= p.admitted_so_far || p.ahead != Some(pos - p.admitted_so_far - 1) {
                v.add(format!(
                    "user {u} waiting at {pos} with {} admitted and {:?} ahead",
                    p.admitted_so_far, p.ahead
                ));
            }
            match p.wait_s {
                Some([lo, hi]) if lo == hi => {}
                other => v.add(format!(
                    "user {u} waiting at {pos} told a wait of {other:?}"
                )),
            }
            if let Some(ms) = p.retry_after_ms.filter(|&ms| ms > 0) {
                seen.polls_per_s_micro
                    .fetch_add(1_000_000_000 / ms, Ordering::Relaxed);
            }
        }
        QueuePhase::Admitted => {
            let at = p.admitted_at_ms.unwrap_or(0);
            if pos > p.admitted_so_far || p.admission_token.is_none() || at < b.start_ms {
                v.add(format!(
                    "user {u} admitted at {pos} ({} admitted), at {at} ms (sale at {}), token {}",
                    p.admitted_so_far,
                    b.start_ms,
                    p.admission_token.is_some()
                ));
            }
            let allowed = b.rate * at.saturating_sub(b.start_ms) / 60_000 + RATE_SLACK;
            if pos > allowed {
                v.add(format!(
                    "user {u} at position {pos} admitted {} ms after the start: the rate allows {allowed}",
                    at.saturating_sub(b.start_ms)
                ));
            }
        }
        other => v.add(format!(
            "user {u} at {pos} in phase {other:?} during the drain"
        )),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Positions,
    SeatMaps,
}

/// Everything a read slice shares with the others.
#[derive(Clone)]
struct Readers {
    http: reqwest::Client,
    urls: Arc<Vec<String>>,
    event: u64,
    tokens: Arc<Vec<String>>,
    pollers: usize,
    cursor: Arc<AtomicUsize>,
    seen: Arc<Seen>,
    bounds: Bounds,
    violations: Arc<Violations>,
}

async fn read_slice(mode: Mode, r: &Readers, until: Instant) -> ReadTally {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..r.pollers.max(1) {
        let r = r.clone();
        tasks.push(tokio::spawn(async move {
            let mut t = ReadTally::default();
            let mut k = w;
            let first_err = |e: &anyhow::Error, n: u64| {
                if n < 3 {
                    eprintln!("read failed: {e:#}");
                }
            };
            while Instant::now() < until {
                let url = &r.urls[k % r.urls.len()];
                k += 1;
                let t0 = Instant::now();
                match mode {
                    Mode::Positions => {
                        let u = r.cursor.fetch_add(1, Ordering::Relaxed) % r.tokens.len();
                        match read_place(&r.http, url, r.event, &r.tokens[u]).await {
                            Ok((read, n)) => {
                                t.lat.push(t0.elapsed().as_micros() as u64);
                                t.bytes += n as u64;
                                check_place(u, &read.place, &r.seen, r.bounds, &r.violations);
                            }
                            Err(e) => {
                                first_err(&e, t.errors);
                                t.errors += 1;
                            }
                        }
                    }
                    Mode::SeatMaps => {
                        let got: anyhow::Result<usize> = async {
                            let resp = r
                                .http
                                .get(format!("{url}/v1/events/{}/seats", r.event))
                                .send()
                                .await?;
                            ensure!(resp.status().is_success(), "{url} seats: {}", resp.status());
                            Ok(resp.bytes().await?.len())
                        }
                        .await;
                        match got {
                            Ok(n) => {
                                t.lat.push(t0.elapsed().as_micros() as u64);
                                t.bytes += n as u64;
                            }
                            Err(e) => {
                                first_err(&e, t.errors);
                                t.errors += 1;
                            }
                        }
                    }
                }
            }
            t
        }));
    }
    let mut all = ReadTally::default();
    for t in tasks {
        if let Ok(t) = t.await {
            all.lat.extend(t.lat);
            all.errors += t.errors;
            all.bytes += t.bytes;
        }
    }
    all.secs = start.elapsed().as_secs_f64();
    all
}

/// One reading of the queue's figures.
#[derive(Clone, Copy)]
struct Sample {
    /// The replica's applied time (the last tick's time or later).
    time_ms: u64,
    admitted: u64,
    waiting: u64,
    rate_shown: f64,
}

fn stats_sample(s: &QueueStats) -> Sample {
    Sample {
        time_ms: s.applied.time_ms,
        admitted: s.admitted,
        waiting: s.waiting,
        rate_shown: s.admit_rate_per_minute,
    }
}

/// Checks the queue's figures over the drain: never more admitted than the rate
/// allows since the start, nor over any window (beyond the credit a queue may
/// bank), and never fewer than before.
fn check_samples(samples: &[Sample], start_ms: u64, rate: u64, v: &Violations) {
    let burst = rate * CREDIT_MAX_MS / 60_000 + RATE_SLACK;
    for (i, a) in samples.iter().enumerate() {
        let allowed = rate * a.time_ms.saturating_sub(start_ms) / 60_000 + RATE_SLACK;
        if a.admitted > allowed {
            v.add(format!(
                "{} admitted {} ms after the start: the rate allows {allowed}",
                a.admitted,
                a.time_ms.saturating_sub(start_ms)
            ));
        }
        for b in &samples[i + 1..] {
            if b.admitted < a.admitted {
                v.add(format!(
                    "admitted went back from {} to {}",
                    a.admitted, b.admitted
                ));
                continue;
            }
            let w = rate * b.time_ms.saturating_sub(a.time_ms) / 60_000 + burst;
            if b.admitted - a.admitted > w {
                v.add(format!(
                    "{} admitted in {} ms: the rate and its {CREDIT_MAX_MS} ms of credit allow {w}",
                    b.admitted - a.admitted,
                    b.time_ms.saturating_sub(a.time_ms)
                ));
            }
        }
    }
}

pub async fn run(args: QueueArgs) -> anyhow::Result<()> {
    ensure!(
        (1..=USERS_MAX).contains(&args.users),
        "--users must be 1..={USERS_MAX}"
    );
    ensure!(
        args.admit_per_minute > 0,
        "--admit-per-minute must be positive"
    );
    ensure!(
        args.drain_s >= 2 && args.slice_s >= 1,
        "--drain-s must be at least 2 and --slice-s at least 1"
    );
    let run_start = Instant::now();
    let info = ClusterInfo::load(&args.cluster_dir)?;
    let file = boxoffice_node::dev::read_cluster_file(&args.cluster_dir)?;
    let pids: Vec<String> = file
        .nodes
        .iter()
        .map(|n| n.pid.to_string())
        .chain([std::process::id().to_string()])
        .collect();
    let cpu_names: Vec<String> = file
        .nodes
        .iter()
        .map(|n| format!("node {}", n.id))
        .chain(["load generator".to_string()])
        .collect();
    let urls = info.urls();
    for u in &urls {
        let host = u
            .trim_start_matches("http://")
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or("");
        ensure!(
            host == "localhost" || host.starts_with("127.") || host == "[::1]",
            "{u} is not a loopback address: this bench only drives a local cluster"
        );
    }
    let mut cfg = ClientConfig::new(urls.clone(), &info.admin_token);
    cfg.attempts_max = 20;
    let admin = Client::new(cfg.clone())?;
    let violations = Arc::new(Violations::default());

    // The event: the `reads` bench's hall (1,000 seats), some seats sold and
    // held so the seat map is not trivial, then the waiting room.
    let tag = now_ms() % 1_000_000;
    let venue = admin
        .create_venue(&NewVenue::new(
            &format!("Queue Bench Hall {tag}"),
            "Benchtown",
            0.0,
            0.0,
            NewLayout::Seated(
                (0..4)
                    .map(|s| {
                        (
                            format!("S{s}"),
                            (0..10).map(|r| (format!("R{r}"), 25, 4000)).collect(),
                        )
                    })
                    .collect(),
            ),
        ))
        .await?
        .venue_id;
    let event = admin
        .create_event(&NewEvent {
            name: format!("Queue Bench Night {tag}"),
            description: "a waiting-room benchmark".into(),
            category: "concert".into(),
            venue_id: venue,
            performer_ids: vec![],
            starts_at: "2030-03-01T20:00:00Z".into(),
            hold_ttl_s: Some(600),
            per_user_cap: Some(1000),
        })
        .await?
        .event_id;
    let mut ucfg = cfg.clone();
    ucfg.token = info.mint_user(&format!("queue-bench-seller-{event}"))?;
    let seller = Client::new(ucfg)?;
    for s in 0..20u32 {
        let h = seller
            .hold(event, Selection::Seats(vec![s * 7, s * 7 + 1]))
            .await?;
        if s % 2 == 0 {
            seller.confirm(&h.hold_id, "bench").await?;
        }
    }
    let shard = admin
        .event(event, Consistency::Linearizable)
        .await?
        .event
        .shard
        .context("event shard")?;
    let leader_id = admin
        .cluster()
        .await?
        .groups
        .iter()
        .find(|g| g.group == shard)
        .and_then(|g| g.leader)
        .context("shard leader")?;
    let leader_url = info
        .ids
        .iter()
        .zip(&urls)
        .find(|(id, _)| **id == leader_id)
        .map(|(_, u)| u.clone())
        .context("leader address")?;
    let mut lcfg = cfg.clone();
    lcfg.nodes = vec![leader_url.clone()];
    let leader_admin = Client::new(lcfg)?;

    let rate = u64::from(args.admit_per_minute);
    // Every user may be admitted at once: the rate is the only limit.
    let active_max = args.users as u32;
    let mut settings = QueueSettings {
        prequeue_opens_at: rfc3339(now_ms().saturating_sub(60_000)),
        sale_starts_at: rfc3339(now_ms() + 3_600_000),
        admit_per_minute: args.admit_per_minute,
        active_max,
        session_ttl_s: Some(3600),
        order: Some(QueueOrderName::RandomPrequeue),
    };
    admin.set_queue(event, &settings).await?;

    println!(
        "queue: event {event} (shard {shard}, leader node {leader_id} at {leader_url}), {} users, \
         {} joiners ({:?} route), admission {} a minute, active_max {active_max}, \
         {} pollers, {} s drain in {} s slices, nodes {}",
        args.users,
        args.clients,
        args.join_route,
        args.admit_per_minute,
        args.pollers,
        args.drain_s,
        args.slice_s,
        urls.join(" ")
    );
    println!(
        "order: random_prequeue. Every user joins before the sale (an hour out while they join), \
         so the joins form the pre-queue; once all are in, the sale is moved to {} s from then: \
         the pre-queue is shuffled, positions are fixed, and each ETA is told from a fixed position.",
        SALE_LEAD_MS / 1000
    );
    println!(
        "durability: fsync on; a join is acknowledged after a majority (2 of 3) fsynced its log entry"
    );

    // Tokens, one user each, minted up front.
    let t = Instant::now();
    let signer = boxoffice_node::auth::Signer::hs256(&info.token_secret);
    let tokens: Vec<String> = (0..args.users)
        .map(|i| signer.mint(&format!("q{event}-u{i}"), 4 * 3600))
        .collect::<Result<_, _>>()?;
    let tokens = Arc::new(tokens);
    eprintln!(
        "  minted {} user tokens in {:.1} s",
        args.users,
        t.elapsed().as_secs_f64()
    );

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients.max(args.pollers).max(8))
        .timeout(Duration::from_secs(20))
        .build()?;

    // ---- Phase 1: joins ----
    let join_urls = Arc::new(match args.join_route {
        JoinRoute::Spread => urls.clone(),
        JoinRoute::Leader => vec![leader_url.clone()],
    });
    let j = joins(
        join_urls,
        event,
        tokens.clone(),
        args.clients,
        Duration::from_secs(args.join_timeout_s),
        violations.clone(),
        &cpu_names,
        &pids,
    )
    .await;
    let answered = j.tickets.iter().filter(|&&t| t != u64::MAX).count();
    if !j.failed.is_empty() || answered < args.users {
        for f in j.failed.iter().take(5) {
            eprintln!("join failed: {f}");
        }
        bail!(
            "{answered} of {} joins acknowledged in {:.0} s ({} failed after up to {JOIN_ATTEMPTS} attempts, the rest not tried before the time limit): the drain cannot be measured",
            args.users,
            j.secs,
            j.failed.len(),
        );
    }
    // Every ticket distinct: the users are the event's only joiners, so the
    // tickets are exactly 0..users.
    let mut sorted = j.tickets.clone();
    sorted.sort_unstable();
    let dups = sorted.windows(2).filter(|w| w[0] == w[1]).count();
    if dups > 0 {
        violations.add(format!("{dups} tickets answered to two users"));
    }
    if let Some(&max) = sorted.last() {
        if max >= args.users as u64 {
            violations.add(format!(
                "ticket {max} answered, with {} joiners in all",
                args.users
            ));
        }
    }
    // The queue's own count, once the leader's replica has applied every join
    // (and no node counts more).
    let mut stats = leader_admin.queue_stats(event).await?;
    let wait_until = Instant::now() + Duration::from_secs(10);
    while stats.joined < args.users as u64 && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stats = leader_admin.queue_stats(event).await?;
    }
    if stats.joined != args.users as u64 {
        violations.add(format!(
            "the queue counts {} joined, {} users were acknowledged",
            stats.joined, args.users
        ));
    }
    for u in &urls {
        let mut c = cfg.clone();
        c.nodes = vec![u.clone()];
        let s = Client::new(c)?.queue_stats(event).await?;
        if s.joined > args.users as u64 {
            violations.add(format!("{u} counts {} joined", s.joined));
        }
    }
    eprintln!(
        "  joins done: {:.0}/s; CPU (cores): {}",
        args.users as f64 / j.secs,
        j.cpu
    );

    // ---- The sale starts ----
    let start_ms = now_ms() + SALE_LEAD_MS;
    settings.sale_starts_at = rfc3339(start_ms);
    admin.set_queue(event, &settings).await?;
    let started_by = Instant::now() + Duration::from_millis(SALE_LEAD_MS + 10_000);
    loop {
        let s = leader_admin.queue_stats(event).await?;
        if s.started {
            if s.prequeue != Some(args.users as u64) {
                violations.add(format!(
                    "the pre-queue closed with {:?} users, {} joined",
                    s.prequeue, args.users
                ));
            }
            break;
        }
        ensure!(
            Instant::now() < started_by,
            "the sale has not started 10 s after its time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drain_end = Instant::now() + Duration::from_secs(args.drain_s);
    let drain_end_ms = now_ms() + args.drain_s * 1000;

    // The queue's figures, every second of the drain, from the shard's leader.
    let sampler = {
        let leader_admin = leader_admin.clone();
        tokio::spawn(async move {
            let mut out = Vec::new();
            while Instant::now() < drain_end + Duration::from_millis(500) {
                if let Ok(s) = leader_admin.queue_stats(event).await {
                    out.push(stats_sample(&s));
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            out
        })
    };

    // ETA sample: users (in a seeded random order) whose position the drain
    // should reach well inside its time, with the wait they are told now.
    let mut order: Vec<usize> = (0..args.users).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(args.seed));
    let reach = rate * (args.drain_s * 1000 * 8 / 10) / 60_000;
    // (user, told at ms, wait told ms, position)
    let mut eta: Vec<(usize, u64, u64, u64)> = Vec::new();
    let mut tried = 0;
    let eta_by = Instant::now() + Duration::from_secs(args.drain_s / 10 + 1);
    while eta.len() < args.sample_eta && tried < order.len() && Instant::now() < eta_by {
        let want = (args.sample_eta - eta.len()).max(16);
        let chunk: Vec<usize> = order[tried..(tried + want * 3).min(order.len())].to_vec();
        tried += chunk.len();
        for (u, r) in read_places(&http, &urls, event, &tokens, &chunk, 32).await {
            let Ok(r) = r else { continue };
            if let (QueuePhase::Waiting, Some(pos), Some([lo, hi])) =
                (r.place.phase, r.place.position, r.place.wait_s)
            {
                if pos <= reach && eta.len() < args.sample_eta {
                    eta.push((u, r.at_ms, (lo + hi) * 500, pos));
                }
            }
        }
    }

    // Streams: users of the sample told at least 5 s (so that their stream is
    // open before they are admitted) follow their place live.
    let streamers: Vec<usize> = eta
        .iter()
        .filter(|e| e.2 >= 5_000)
        .map(|e| e.0)
        .take(args.streams)
        .collect();
    let streams_n = streamers.len();
    let mut stream_tasks = Vec::new();
    for (k, &u) in streamers.iter().enumerate() {
        let mut c = ClientConfig::new(
            (0..urls.len())
                .map(|i| urls[(k + i) % urls.len()].clone())
                .collect::<Vec<_>>(),
            tokens[u].clone(),
        );
        c.attempts_max = 4;
        let client = Client::new(c)?;
        stream_tasks.push(tokio::spawn(async move {
            // (ms from the admission until the stream told it, events,
            // reconnects), if the admission came after the stream's first event.
            let r = tokio::time::timeout_at(drain_end.into(), async {
                let mut s = client.queue_stream(event).await.ok()?;
                let mut events = 0u64;
                loop {
                    let p = s.next().await.ok()?;
                    events += 1;
                    if p.phase == QueuePhase::Admitted {
                        if events == 1 {
                            return None;
                        }
                        let at = now_ms();
                        return Some((
                            at.saturating_sub(p.admitted_at_ms.unwrap_or(at)),
                            events,
                            s.reconnects,
                        ));
                    }
                }
            })
            .await;
            r.ok().flatten()
        }));
    }

    // ---- Phase 2: reads while the queue drains ----
    let readers = Readers {
        http: http.clone(),
        urls: Arc::new(urls.clone()),
        event,
        tokens: tokens.clone(),
        pollers: args.pollers,
        cursor: Arc::new(AtomicUsize::new(0)),
        seen: Arc::new(Seen::new(args.users)),
        bounds: Bounds {
            users: args.users as u64,
            start_ms,
            rate,
        },
        violations: violations.clone(),
    };
    let mut pos = ReadTally::default();
    let mut maps = ReadTally::default();
    let mut slices: Vec<(Mode, f64)> = Vec::new();
    // (polls a second asked for, users waiting) per position slice.
    let mut asked: Vec<(f64, u64)> = Vec::new();
    let mut mode = Mode::Positions;
    let cpu0 = cpu_snap(&pids);
    while Instant::now() + Duration::from_millis(500) < drain_end {
        let until = (Instant::now() + Duration::from_secs(args.slice_s)).min(drain_end);
        let t = read_slice(mode, &readers, until).await;
        slices.push((mode, t.lat.len() as f64 / t.secs.max(0.001)));
        if mode == Mode::Positions {
            asked.push(readers.seen.polls_asked(args.users as u64));
        }
        let into = match mode {
            Mode::Positions => &mut pos,
            Mode::SeatMaps => &mut maps,
        };
        into.lat.extend(t.lat);
        into.secs += t.secs;
        into.errors += t.errors;
        into.bytes += t.bytes;
        mode = match mode {
            Mode::Positions => Mode::SeatMaps,
            Mode::SeatMaps => Mode::Positions,
        };
    }
    let read_cpu = cpu_line(&cpu_names, &cpu0, &cpu_snap(&pids));
    tokio::time::sleep_until((drain_end + Duration::from_millis(600)).into()).await;
    let samples = sampler.await.unwrap_or_default();
    let mut stream_results = Vec::new();
    for t in stream_tasks {
        stream_results.push(t.await.ok().flatten());
    }

    // ETA: when each sampled user was admitted, as their place says now.
    let sample_users: Vec<usize> = eta.iter().map(|e| e.0).collect();
    let finals: std::collections::HashMap<usize, Read> =
        read_places(&http, &urls, event, &tokens, &sample_users, 32)
            .await
            .into_iter()
            .filter_map(|(u, r)| r.ok().map(|r| (u, r)))
            .collect();
    let mut abs_err_ms = Vec::new();
    let mut rel_err_bp = Vec::new();
    let mut signed = Vec::new();
    let (mut late, mut unread) = (0, 0);
    for &(u, t0, told, p) in &eta {
        let Some(r) = finals.get(&u) else {
            unread += 1;
            continue;
        };
        if r.place.position != Some(p) {
            violations.add(format!(
                "user {u}'s position moved from {p} to {:?}",
                r.place.position
            ));
        }
        match r.place.admitted_at_ms {
            Some(at) => {
                let actual = at.saturating_sub(t0) as f64;
                let err = told as f64 - actual;
                abs_err_ms.push(err.abs() as u64);
                signed.push(err);
                // Hundredths of a percent of the actual wait.
                rel_err_bp.push((10_000.0 * err.abs() / actual.max(1.0)) as u64);
            }
            None if t0 + told + 2_000 < drain_end_ms => late += 1,
            None => {}
        }
    }
    abs_err_ms.sort_unstable();
    rel_err_bp.sort_unstable();
    let bias = if signed.is_empty() {
        f64::NAN
    } else {
        signed.iter().sum::<f64>() / signed.len() as f64
    };

    // Positions seen: no two users at one.
    let mut shown: Vec<u32> = readers
        .seen
        .positions
        .iter()
        .map(|p| p.load(Ordering::Relaxed))
        .filter(|&p| p != 0)
        .collect();
    let seen_users = shown.len();
    shown.sort_unstable();
    let shared = shown.windows(2).filter(|w| w[0] == w[1]).count();
    if shared > 0 {
        violations.add(format!("{shared} positions shown to two users"));
    }

    // Admission: never more than the rate allows.
    check_samples(&samples, start_ms, rate, &violations);
    // The measured rate: over the samples while users were still waiting.
    let live: Vec<Sample> = samples
        .iter()
        .copied()
        .filter(|s| s.waiting > 0 && s.time_ms >= start_ms)
        .collect();
    let per_min = |a: &Sample, b: &Sample| {
        (b.admitted - a.admitted) as f64 * 60_000.0 / (b.time_ms - a.time_ms).max(1) as f64
    };
    let measured = match (live.first(), live.last()) {
        (Some(a), Some(b)) if b.time_ms > a.time_ms => per_min(a, b),
        _ => f64::NAN,
    };
    let mut windows = Vec::new();
    let mut i = 0;
    while let Some(j) = (i + 1..live.len()).find(|&j| live[j].time_ms >= live[i].time_ms + 10_000) {
        windows.push(per_min(&live[i], &live[j]));
        i = j;
    }
    let (wmin, wmax) = windows
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &w| {
            (lo.min(w), hi.max(w))
        });
    let last = samples.last().copied();

    // ---- Report ----
    let users = args.users;
    let jps = users as f64 / j.secs;
    let ps = summarize(pos.lat.clone());
    let ms = summarize(maps.lat.clone());
    let prps = ps.count as f64 / pos.secs.max(0.001);
    let mrps = ms.count as f64 / maps.secs.max(0.001);
    let asked_at = |i: Option<&(f64, u64)>| {
        i.map(|(r, w)| format!("{r:.0} with {w} waiting"))
            .unwrap_or_else(|| "—".into())
    };
    let mut notice: Vec<u64> = stream_results
        .iter()
        .flatten()
        .map(|&(d, _, _)| d)
        .collect();
    notice.sort_unstable();
    let reconnects: u64 = stream_results.iter().flatten().map(|&(_, _, r)| r).sum();
    let stream_events: u64 = stream_results.iter().flatten().map(|&(_, e, _)| e).sum();
    let rates_of = |m: Mode| {
        slices
            .iter()
            .filter(|s| s.0 == m)
            .map(|s| format!("{:.0}", s.1))
            .collect::<Vec<_>>()
            .join(", ")
    };

    println!(
        "\n### Waiting room: {users} users join one event, then it drains at {} a minute\n",
        args.admit_per_minute
    );
    println!(
        "3 nodes on this machine, fsync on: a join is acknowledged after a majority (2 of 3) \
         fsynced its log entry; reads are answered by any node from its own replica.\n"
    );
    println!("| phase | figure | value |\n|---|---|---|");
    println!(
        "| joins | acknowledged joins/s | {jps:.0} ({users} in {:.1} s, {} joiners, {:?} route, {} retries) |",
        j.secs, args.clients, args.join_route, j.retries
    );
    println!(
        "| joins | join latency p50 / p99 / p999 | {:.1} / {:.1} / {:.1} ms |",
        j.lat.p50_ms, j.lat.p99_ms, j.lat.p999_ms
    );
    println!("| joins | CPU, cores used (of 2) | {} |", j.cpu);
    println!(
        "| drain | position reads/s (`GET queue/me`, any node) | {prps:.0} ({} reads, {} errors, {:.2} KB each; slices {}) |",
        ps.count,
        pos.errors,
        pos.bytes as f64 / ps.count.max(1) as f64 / 1024.0,
        rates_of(Mode::Positions)
    );
    println!(
        "| drain | position read p50 / p99 / p999 | {:.2} / {:.2} / {:.2} ms |",
        ps.p50_ms, ps.p99_ms, ps.p999_ms
    );
    println!(
        "| drain | seat-map reads/s (`GET seats`, any node, 1,000 seats) | {mrps:.0} ({} reads, {} errors, {:.1} KB each; slices {}) |",
        ms.count,
        maps.errors,
        maps.bytes as f64 / ms.count.max(1) as f64 / 1024.0,
        rates_of(Mode::SeatMaps)
    );
    println!(
        "| drain | seat-map read p50 / p99 / p999 | {:.2} / {:.2} / {:.2} ms |",
        ms.p50_ms, ms.p99_ms, ms.p999_ms
    );
    println!(
        "| drain | position reads ÷ seat-map reads | {:.2}x |",
        prps / mrps.max(0.001)
    );
    println!(
        "| drain | position polls a second the waiting users' `retry_after` asks for | first slice {}, last slice {} |",
        asked_at(asked.first()),
        asked_at(asked.last())
    );
    println!("| drain | CPU, cores used (of 2) | {read_cpu} |");
    println!(
        "| admission | measured rate | {measured:.0} a minute vs {} configured ({:.3}x); 10 s windows {wmin:.0}–{wmax:.0}; the queue shows {:.0} |",
        args.admit_per_minute,
        measured / args.admit_per_minute as f64,
        last.map(|s| s.rate_shown).unwrap_or(f64::NAN)
    );
    println!(
        "| admission | admitted in the drain | {} of {users} ({} samples of the queue's figures) |",
        last.map(|s| s.admitted).unwrap_or(0),
        samples.len()
    );
    println!(
        "| ETA | told at the start vs admitted, abs. error p50 / p90 / max | {:.2} / {:.2} / {:.2} s ({} users; mean signed error {:+.2} s, + = told too long) |",
        percentile(&abs_err_ms, 0.5) as f64 / 1e3,
        percentile(&abs_err_ms, 0.9) as f64 / 1e3,
        abs_err_ms.last().copied().unwrap_or(0) as f64 / 1e3,
        abs_err_ms.len(),
        bias / 1e3
    );
    println!(
        "| ETA | the same as % of the actual wait, p50 / p90 | {:.1}% / {:.1}% (waits told up to {:.0} s; {late} not admitted by the end though told so, {unread} unread) |",
        percentile(&rel_err_bp, 0.5) as f64 / 100.0,
        percentile(&rel_err_bp, 0.9) as f64 / 100.0,
        eta.iter().map(|e| e.2).max().unwrap_or(0) as f64 / 1e3
    );
    println!(
        "| streams | admission told by the place stream (SSE), p50 / p99 after it | {:.0} / {:.0} ms ({} of {streams_n} streams saw it; {stream_events} events, {reconnects} reconnects) |",
        percentile(&notice, 0.5) as f64,
        percentile(&notice, 0.99) as f64,
        notice.len()
    );
    println!(
        "\nchecks: {users} tickets, all distinct; the queue counted {} joined, pre-queue {users}; \
         {seen_users} users' positions seen, none shared or moved; every answer consistent; \
         admitted never above {} a minute since the start (nor over any window, beyond {} users of credit): {} violations",
        stats.joined,
        args.admit_per_minute,
        rate * CREDIT_MAX_MS / 60_000,
        violations.total()
    );
    println!(
        "aim: ≥ 20,000 acknowledged joins/s: {}; position reads ≥ seat-map reads: {}",
        if jps >= 20_000.0 { "met" } else { "not met" },
        if prps >= mrps { "met" } else { "not met" }
    );
    println!("wall time {:.0} s", run_start.elapsed().as_secs_f64());
    let v = violations.total();
    if v > 0 {
        let first = violations
            .first
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("; ");
        bail!("{v} correctness violations; first: {first}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(phase: QueuePhase, pos: u64, admitted: u64, at: Option<u64>) -> QueuePlace {
        let waiting = phase == QueuePhase::Waiting;
        QueuePlace {
            event_id: 1,
            ticket: 0,
            joined_at: String::new(),
            new: false,
            phase,
            queue_status: boxoffice_client::QueueStatusName::Running,
            position: Some(pos),
            position_range: None,
            ahead: waiting.then(|| pos - admitted - 1),
            admitted_so_far: admitted,
            wait_s: waiting.then_some([3, 3]),
            retry_after_ms: Some(1000),
            admitted_at_ms: at,
            session_ends_at_ms: None,
            admission_token: at.map(|_| "t".into()),
            applied: boxoffice_client::Applied {
                shard: 1,
                index: 1,
                time_ms: 0,
            },
        }
    }

    #[test]
    fn place_checks_catch_rate_overruns_and_moved_or_odd_positions() {
        let seen = Seen::new(4);
        let v = Violations::default();
        // 600 a minute, 10 a second: a second after the start, 10 may be in.
        let b = Bounds {
            users: 1000,
            start_ms: 1_000,
            rate: 600,
        };
        let admitted = |pos, at| place(QueuePhase::Admitted, pos, pos, Some(at));
        check_place(0, &admitted(10, 2_000), &seen, b, &v);
        check_place(1, &place(QueuePhase::Waiting, 20, 10, None), &seen, b, &v);
        assert_eq!(v.total(), 0);
        // Position 30 admitted a second in: three times the rate.
        check_place(2, &admitted(30, 2_000), &seen, b, &v);
        assert_eq!(v.total(), 1);
        // User 1 moved.
        check_place(1, &place(QueuePhase::Waiting, 21, 10, None), &seen, b, &v);
        assert_eq!(v.total(), 2);
        // Waiting at an admitted position.
        let mut odd = place(QueuePhase::Waiting, 5, 4, None);
        odd.admitted_so_far = 10;
        check_place(3, &odd, &seen, b, &v);
        assert_eq!(v.total(), 3);
    }

    #[test]
    fn sample_checks_catch_too_many_admitted() {
        let s = |t, a| Sample {
            time_ms: t,
            admitted: a,
            waiting: 100,
            rate_shown: 0.0,
        };
        let v = Violations::default();
        // 6,000 a minute: 100 a second from the start at 10,000 ms.
        check_samples(
            &[s(11_000, 100), s(12_000, 200), s(20_000, 1000)],
            10_000,
            6_000,
            &v,
        );
        assert_eq!(v.total(), 0);
        check_samples(&[s(11_000, 100), s(12_000, 400)], 10_000, 6_000, &v);
        assert_eq!(v.total(), 1);
        check_samples(&[s(11_000, 100), s(12_000, 90)], 10_000, 6_000, &v);
        assert_eq!(v.total(), 2);
    }
}
