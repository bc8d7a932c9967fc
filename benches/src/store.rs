//! The systems compared, behind one interface of the on-sale workload: create
//! events of N seats, hold a set of seats (all or nothing, with a lifetime),
//! confirm a hold into a booking, and read back which seats are sold.
//!
//! - boxoffice: the client library against a 3-node cluster (fsync on).
//! - PostgreSQL: the classic design; a `tickets` row per seat, hold = one
//!   conditional `UPDATE` in a transaction, confirm = a transaction over tickets
//!   and bookings. `synchronous_commit` on (durable) or off.
//! - Redis: the TTL-lock design; hold = `SET seat hold NX PX ttl` per seat (rolled
//!   back if any seat is taken), confirm = a Lua script that checks every seat is
//!   still ours and marks it sold. `appendfsync always`.
//! - etcd: hold = a lease, then a transaction that creates every seat key only if
//!   none exists, attached to the lease; confirm = a transaction comparing each
//!   seat's value with the hold and rewriting it as sold without a lease.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use boxoffice_client::{
    Client, ClientConfig, Consistency, NewEvent, NewLayout, NewVenue, ProblemCode, SeatStatus,
    Selection,
};
use serde_json::{json, Value};
use tokio::sync::Mutex;

/// Lifetime of a hold, the same on every system.
pub const HOLD_TTL_S: u64 = 120;
/// Most PostgreSQL connections the buyers share (one transaction at a time each).
pub const PG_POOL_MAX: usize = 128;
/// Redis connections the buyers share (each multiplexes many requests).
pub const REDIS_CONNECTIONS: usize = 8;
/// Time allowed for one etcd request (a Raft write), as for a boxoffice write.
pub const ETCD_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Keys per etcd range request when reading the final state.
const ETCD_RANGE_PAGE: u64 = 5000;
/// Seats per row when boxoffice venues are laid out (sections of 100 rows).
const ROW_SEATS: u32 = 50;
/// Seats per section (100 rows): section `S{k}` holds seats `k*5000 ..`.
pub const SECTION_SEATS: u32 = ROW_SEATS * 100;
/// Distinct boxoffice users the buyers act as (buyer w is user `w % BUYER_USERS`).
pub const BUYER_USERS: usize = 4096;
/// PostgreSQL connections of scenario 3's readers (besides the buyers' pool).
pub const PG_READ_CONNECTIONS: usize = 32;

/// The answer to a hold.
pub enum HoldOutcome {
    Granted(String),
    /// A seat was taken: a definite refusal.
    Conflict,
    /// An error or no answer: the hold may or may not exist.
    Failed(String),
}

/// The answer to a confirm.
pub enum ConfirmOutcome {
    /// Booked: these seats are the buyer's.
    Confirmed,
    /// Definitely not booked (e.g. the hold expired).
    Refused(String),
    /// No answer: may or may not have been booked.
    Unknown(String),
}

/// A system under test with the handles its buyers use.
#[derive(Clone)]
pub enum Store {
    Boxoffice(Arc<Boxoffice>),
    Postgres(Arc<Postgres>),
    Redis(Arc<Redis>),
    Etcd(Arc<Etcd>),
}

impl Store {
    /// Short name used in tables and plots.
    pub fn name(&self) -> String {
        match self {
            Store::Boxoffice(_) => "boxoffice".into(),
            Store::Postgres(p) if p.sync_commit => "postgres".into(),
            Store::Postgres(_) => "postgres-async".into(),
            Store::Redis(_) => "redis".into(),
            Store::Etcd(_) => "etcd".into(),
        }
    }

    /// What an acknowledged write has survived, stated next to every figure.
    pub fn durability(&self) -> String {
        match self {
            Store::Boxoffice(_) => "3 replicas, majority fsync before ack".into(),
            Store::Postgres(p) if p.sync_commit => {
                format!("PostgreSQL {}, 1 node, synchronous_commit=on (WAL fsync before ack)", p.version)
            }
            Store::Postgres(p) => format!(
                "PostgreSQL {}, 1 node, synchronous_commit=off (ack before WAL fsync; last ~600 ms may be lost)",
                p.version
            ),
            Store::Redis(r) => format!(
                "Redis {}, 1 node, appendonly yes, appendfsync always",
                r.version
            ),
            Store::Etcd(e) => format!("etcd {}, 3 members, fsync on", e.version),
        }
    }

    /// Creates `n` events of `seats` seats each; returns their ids.
    pub async fn create_events(&self, n: usize, seats: u32) -> anyhow::Result<Vec<u64>> {
        match self {
            Store::Boxoffice(b) => b.create_events(n, seats).await,
            Store::Postgres(p) => p.create_events(n, seats).await,
            // Key-value designs: a seat with no key is available.
            Store::Redis(r) => Ok(r.fresh_ids(n)),
            Store::Etcd(e) => Ok(e.fresh_ids(n)),
        }
    }

    pub async fn hold(&self, worker: usize, event: u64, seats: &[u32]) -> HoldOutcome {
        match self {
            Store::Boxoffice(b) => b.hold(worker, event, seats).await,
            Store::Postgres(p) => p.hold(worker, event, seats).await,
            Store::Redis(r) => r.hold(worker, event, seats).await,
            Store::Etcd(e) => e.hold(worker, event, seats).await,
        }
    }

    pub async fn confirm(
        &self,
        worker: usize,
        event: u64,
        hold: &str,
        seats: &[u32],
    ) -> ConfirmOutcome {
        match self {
            Store::Boxoffice(b) => b.confirm(worker, hold).await,
            Store::Postgres(p) => p.confirm(worker, event, hold, seats).await,
            Store::Redis(r) => r.confirm(worker, event, hold, seats).await,
            Store::Etcd(e) => e.confirm(worker, event, hold, seats).await,
        }
    }

    /// The seats the system says are sold, read after the run (linearizable).
    pub async fn sold_seats(&self, event: u64, seats: u32) -> anyhow::Result<Vec<u32>> {
        match self {
            Store::Boxoffice(b) => b.sold_seats(event).await,
            Store::Postgres(p) => p.sold_seats(event).await,
            Store::Redis(r) => r.sold_seats(event, seats).await,
            Store::Etcd(e) => e.sold_seats(event).await,
        }
    }
}

// ---------------------------------------------------------------- boxoffice

pub struct Boxoffice {
    pub admin: Client,
    /// One client per buyer user (sharing connections and leader hints), as a
    /// ticket site's buyers are different people: each has its own per-user cap
    /// record, not one shared by every buyer.
    buyers: Vec<Client>,
    pub user_token: String,
    venues: Mutex<std::collections::HashMap<u32, u64>>,
}

impl Boxoffice {
    /// `user_tokens`: the buyers' tokens (buyer worker w uses `w % len`).
    pub fn new(
        urls: Vec<String>,
        admin_token: &str,
        user_tokens: &[String],
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!user_tokens.is_empty(), "no buyer tokens");
        let mut cfg = ClientConfig::new(urls, admin_token);
        cfg.attempts_max = 20;
        let admin = Client::new(cfg.clone())?;
        cfg.token = user_tokens[0].clone();
        cfg.attempts_max = ClientConfig::new(Vec::<String>::new(), "").attempts_max;
        let first = Client::new(cfg)?;
        let buyers = user_tokens
            .iter()
            .map(|t| first.with_token(t.clone()))
            .collect();
        Ok(Boxoffice {
            admin,
            buyers,
            user_token: user_tokens[0].clone(),
            venues: Mutex::new(Default::default()),
        })
    }

    fn buyer(&self, worker: usize) -> &Client {
        &self.buyers[worker % self.buyers.len()]
    }

    async fn venue(&self, seats: u32) -> anyhow::Result<u64> {
        let mut venues = self.venues.lock().await;
        if let Some(v) = venues.get(&seats) {
            return Ok(*v);
        }
        let rows = seats.div_ceil(ROW_SEATS);
        let layout = NewLayout::Seated(
            (0..rows.div_ceil(100))
                .map(|sec| {
                    (
                        format!("S{sec}"),
                        (sec * 100..(sec * 100 + 100).min(rows))
                            .map(|r| {
                                let n = ROW_SEATS.min(seats - r * ROW_SEATS);
                                (format!("R{r}"), n, 5000)
                            })
                            .collect(),
                    )
                })
                .collect(),
        );
        let id = self
            .admin
            .create_venue(&NewVenue::new(
                format!("Bench Arena {seats}"),
                "Benchtown",
                0.0,
                0.0,
                layout,
            ))
            .await?
            .venue_id;
        venues.insert(seats, id);
        Ok(id)
    }

    async fn create_events(&self, n: usize, seats: u32) -> anyhow::Result<Vec<u64>> {
        let venue_id = self.venue(seats).await?;
        let mut ids = Vec::with_capacity(n);
        // The admin API takes events in batches of up to 400.
        let all: Vec<NewEvent> = (0..n)
            .map(|i| NewEvent {
                name: format!("Bench On-Sale {i}"),
                description: "benchmark".into(),
                category: "concert".into(),
                venue_id,
                performer_ids: vec![],
                starts_at: "2030-06-01T20:00:00Z".into(),
                hold_ttl_s: Some(HOLD_TTL_S),
                // A buyer may buy many times in a run: a cap above the event's
                // size (plus the largest hold) never refuses, as the peers have no
                // caps; it is still checked and counted on every hold.
                per_user_cap: Some(seats + 4),
            })
            .collect();
        for chunk in all.chunks(400) {
            ids.extend(
                self.admin
                    .create_events(chunk)
                    .await?
                    .events
                    .iter()
                    .map(|e| e.event_id),
            );
        }
        Ok(ids)
    }

    async fn hold(&self, worker: usize, event: u64, seats: &[u32]) -> HoldOutcome {
        match self
            .buyer(worker)
            .hold(event, Selection::Seats(seats.to_vec()))
            .await
        {
            Ok(h) => HoldOutcome::Granted(h.hold_id),
            Err(e) if e.code() == Some(ProblemCode::SeatUnavailable) => HoldOutcome::Conflict,
            Err(e) => HoldOutcome::Failed(e.to_string()),
        }
    }

    async fn confirm(&self, worker: usize, hold: &str) -> ConfirmOutcome {
        match self.buyer(worker).confirm(hold, "bench").await {
            Ok(_) => ConfirmOutcome::Confirmed,
            // Refused for certain, or maybe applied: the code says which.
            Err(e) if !e.may_have_applied() => ConfirmOutcome::Refused(e.to_string()),
            Err(e) => ConfirmOutcome::Unknown(e.to_string()),
        }
    }

    async fn sold_seats(&self, event: u64) -> anyhow::Result<Vec<u32>> {
        let map = self.admin.seats(event, Consistency::Linearizable).await?;
        Ok(map
            .seats
            .iter()
            .filter(|s| s.status == SeatStatus::Sold)
            .map(|s| s.seat_id)
            .collect())
    }
}

// ---------------------------------------------------------------- PostgreSQL

pub struct Postgres {
    conns: Vec<Mutex<tokio_postgres::Client>>,
    sync_commit: bool,
    version: String,
}

/// The classic schema: one row per seat, bookings in their own table.
const PG_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tickets (
    event_id   bigint  NOT NULL,
    seat_id    integer NOT NULL,
    status     text    NOT NULL DEFAULT 'available',
    hold_id    text,
    expires_at timestamptz,
    booking_id text,
    PRIMARY KEY (event_id, seat_id)
);
CREATE TABLE IF NOT EXISTS bookings (
    booking_id text PRIMARY KEY,
    event_id   bigint  NOT NULL,
    hold_id    text    NOT NULL UNIQUE,
    seat_ids   integer[] NOT NULL,
    booked_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS events (
    event_id    bigint PRIMARY KEY,
    name        text NOT NULL,
    description text NOT NULL,
    category    text NOT NULL,
    venue       text NOT NULL,
    city        text NOT NULL,
    starts_at   timestamptz NOT NULL,
    search      tsvector GENERATED ALWAYS AS
                (to_tsvector('simple', name || ' ' || venue || ' ' || description)) STORED
);
CREATE INDEX IF NOT EXISTS events_search ON events USING gin (search);";

impl Postgres {
    /// `pool` connections to `server`, with `synchronous_commit` on or off.
    pub async fn new(
        server: &crate::pg::Postgres,
        pool: usize,
        sync_commit: bool,
    ) -> anyhow::Result<Self> {
        let mut conns = Vec::new();
        for i in 0..pool.clamp(1, PG_POOL_MAX) {
            let c = server.connect().await?;
            if i == 0 {
                c.batch_execute(PG_SCHEMA).await?;
            }
            c.batch_execute(&format!(
                "SET synchronous_commit = {}",
                if sync_commit { "on" } else { "off" }
            ))
            .await?;
            conns.push(Mutex::new(c));
        }
        Ok(Postgres {
            conns,
            sync_commit,
            version: server.version.clone(),
        })
    }

    async fn create_events(&self, n: usize, seats: u32) -> anyhow::Result<Vec<u64>> {
        let c = self.conns[0].lock().await;
        // Both PostgreSQL variants share the table: number after what is there.
        let max: i64 = c
            .query_one("SELECT coalesce(max(event_id), 0) FROM tickets", &[])
            .await?
            .get(0);
        let first = max as u64 + 1;
        let ids: Vec<u64> = (first..first + n as u64).collect();
        let (lo, hi) = (first as i64, (first + n as u64 - 1) as i64);
        c.execute(
            "INSERT INTO tickets (event_id, seat_id)
             SELECT e, s FROM generate_series($1::bigint, $2::bigint) e, generate_series(0, $3::int - 1) s",
            &[&lo, &hi, &(seats as i32)],
        )
        .await?;
        // The same names as boxoffice's events, for scenario 3's event views and search.
        c.execute(
            "INSERT INTO events (event_id, name, description, category, venue, city, starts_at)
             SELECT e, 'Bench On-Sale ' || (e - $1), 'benchmark', 'concert', 'Bench Arena', 'Benchtown',
                    '2030-06-01T20:00:00Z'
             FROM generate_series($1::bigint, $2::bigint) e",
            &[&lo, &hi],
        )
        .await?;
        c.batch_execute("ANALYZE tickets; ANALYZE events").await?;
        Ok(ids)
    }

    async fn hold(&self, worker: usize, event: u64, seats: &[u32]) -> HoldOutcome {
        let hold_id = format!("h{event}-{}", uuid_like());
        match self.hold_tx(worker, event, seats, &hold_id).await {
            Ok(true) => HoldOutcome::Granted(hold_id),
            Ok(false) => HoldOutcome::Conflict,
            Err(e) => HoldOutcome::Failed(format!("{e:#}")),
        }
    }

    async fn hold_tx(
        &self,
        worker: usize,
        event: u64,
        seats: &[u32],
        hold_id: &str,
    ) -> anyhow::Result<bool> {
        let seat_ids: Vec<i32> = seats.iter().map(|&s| s as i32).collect();
        let mut c = self.conns[worker % self.conns.len()].lock().await;
        let tx = c.transaction().await?;
        // The classic conditional UPDATE. Through the primary key, the seats are
        // visited (and locked) in seat order, so overlapping holds queue rather than
        // deadlock; a held seat whose hold has expired is available again.
        let n = tx
            .execute(
                "UPDATE tickets SET status = 'held', hold_id = $3,
                        expires_at = now() + make_interval(secs => $4)
                 WHERE event_id = $1 AND seat_id = ANY($2)
                   AND (status = 'available' OR (status = 'held' AND expires_at < now()))",
                &[&(event as i64), &seat_ids, &hold_id, &(HOLD_TTL_S as f64)],
            )
            .await?;
        if n as usize == seats.len() {
            tx.commit().await?;
            Ok(true)
        } else {
            tx.rollback().await?;
            Ok(false)
        }
    }

    async fn confirm(
        &self,
        worker: usize,
        event: u64,
        hold: &str,
        seats: &[u32],
    ) -> ConfirmOutcome {
        let booking = format!("b{}", &hold[1..]);
        let r: anyhow::Result<bool> = async {
            let mut c = self.conns[worker % self.conns.len()].lock().await;
            let tx = c.transaction().await?;
            // By primary key, in seat order (as holds lock), then the hold's check.
            let seat_ids: Vec<i32> = seats.iter().map(|&s| s as i32).collect();
            let n = tx
                .execute(
                    "UPDATE tickets SET status = 'sold', booking_id = $3
                     WHERE event_id = $1 AND seat_id = ANY($4) AND hold_id = $2
                       AND status = 'held' AND expires_at > now()",
                    &[&(event as i64), &hold, &booking, &seat_ids],
                )
                .await?;
            if n as usize != seats.len() {
                tx.rollback().await?;
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO bookings (booking_id, event_id, hold_id, seat_ids) VALUES ($1, $2, $3, $4)",
                &[&booking, &(event as i64), &hold, &seat_ids],
            )
            .await?;
            tx.commit().await?;
            Ok(true)
        }
        .await;
        match r {
            Ok(true) => ConfirmOutcome::Confirmed,
            Ok(false) => ConfirmOutcome::Refused("hold expired or not found".into()),
            Err(e) => ConfirmOutcome::Unknown(format!("{e:#}")),
        }
    }

    async fn sold_seats(&self, event: u64) -> anyhow::Result<Vec<u32>> {
        let c = self.conns[0].lock().await;
        let rows = c
            .query(
                "SELECT seat_id FROM tickets WHERE event_id = $1 AND status = 'sold' ORDER BY seat_id",
                &[&(event as i64)],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get::<_, i32>(0) as u32).collect())
    }
}

/// A unique-enough id for holds made by the load generator (process-wide
/// counter plus a random prefix drawn once).
fn uuid_like() -> String {
    static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{:08x}-{}",
        PREFIX.get_or_init(rand::random::<u32>),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

// ---------------------------------------------------------------- Redis

pub struct Redis {
    conns: Vec<redis::aio::MultiplexedConnection>,
    version: String,
    next_event: AtomicU64,
}

/// Deletes each key still holding our hold id (rolls back a partial hold).
const REDIS_RELEASE: &str = r"
for i, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then redis.call('DEL', k) end
end
return 1";

/// Confirm: every seat key must still hold our hold id; then all are marked sold
/// (no expiry) and the booking is recorded, atomically.
const REDIS_CONFIRM: &str = r"
for i, k in ipairs(KEYS) do
  if redis.call('GET', k) ~= ARGV[1] then return 0 end
end
for i, k in ipairs(KEYS) do
  redis.call('SET', k, ARGV[2])
end
redis.call('RPUSH', ARGV[3], ARGV[2])
return 1";

impl Redis {
    pub async fn new(server: &crate::procs::RedisServer) -> anyhow::Result<Self> {
        let mut conns = Vec::new();
        for _ in 0..REDIS_CONNECTIONS {
            conns.push(server.connect().await?);
        }
        Ok(Redis {
            conns,
            version: server.version.clone(),
            next_event: AtomicU64::new(1),
        })
    }

    fn fresh_ids(&self, n: usize) -> Vec<u64> {
        let first = self.next_event.fetch_add(n as u64, Ordering::Relaxed);
        (first..first + n as u64).collect()
    }

    fn key(event: u64, seat: u32) -> String {
        format!("seat:{event}:{seat}")
    }

    async fn hold(&self, worker: usize, event: u64, seats: &[u32]) -> HoldOutcome {
        let hold_id = format!("h{event}-{}", uuid_like());
        let mut c = self.conns[worker % self.conns.len()].clone();
        let mut pipe = redis::pipe();
        for &s in seats {
            pipe.cmd("SET")
                .arg(Self::key(event, s))
                .arg(&hold_id)
                .arg("NX")
                .arg("PX")
                .arg(HOLD_TTL_S * 1000);
        }
        let r: redis::RedisResult<Vec<Option<String>>> = pipe.query_async(&mut c).await;
        match r {
            Ok(v) if v.iter().all(Option::is_some) => HoldOutcome::Granted(hold_id),
            Ok(_) => {
                // Some seat was taken: give back the ones we got.
                let keys: Vec<String> = seats.iter().map(|&s| Self::key(event, s)).collect();
                let r: redis::RedisResult<i64> = redis::Script::new(REDIS_RELEASE)
                    .key(keys)
                    .arg(&hold_id)
                    .invoke_async(&mut c)
                    .await;
                match r {
                    Ok(_) => HoldOutcome::Conflict,
                    Err(e) => HoldOutcome::Failed(format!("rollback: {e}")),
                }
            }
            Err(e) => HoldOutcome::Failed(e.to_string()),
        }
    }

    async fn confirm(
        &self,
        worker: usize,
        event: u64,
        hold: &str,
        seats: &[u32],
    ) -> ConfirmOutcome {
        let mut c = self.conns[worker % self.conns.len()].clone();
        let keys: Vec<String> = seats.iter().map(|&s| Self::key(event, s)).collect();
        let r: redis::RedisResult<i64> = redis::Script::new(REDIS_CONFIRM)
            .key(keys)
            .arg(hold)
            .arg(format!("sold:b{}", &hold[1..]))
            .arg(format!("bookings:{event}"))
            .invoke_async(&mut c)
            .await;
        match r {
            Ok(1) => ConfirmOutcome::Confirmed,
            Ok(_) => ConfirmOutcome::Refused("hold expired or not ours".into()),
            Err(e) => ConfirmOutcome::Unknown(e.to_string()),
        }
    }

    async fn sold_seats(&self, event: u64, seats: u32) -> anyhow::Result<Vec<u32>> {
        let mut c = self.conns[0].clone();
        let mut sold = Vec::new();
        let all: Vec<u32> = (0..seats).collect();
        for chunk in all.chunks(1000) {
            let keys: Vec<String> = chunk.iter().map(|&s| Self::key(event, s)).collect();
            let vals: Vec<Option<String>> =
                redis::cmd("MGET").arg(keys).query_async(&mut c).await?;
            sold.extend(
                chunk
                    .iter()
                    .zip(vals)
                    .filter(|(_, v)| v.as_deref().is_some_and(|v| v.starts_with("sold:")))
                    .map(|(s, _)| *s),
            );
        }
        Ok(sold)
    }
}

// ---------------------------------------------------------------- etcd

/// etcd through its v3 JSON gateway (the same gRPC service, in JSON over HTTP,
/// as boxoffice's API is JSON over HTTP).
pub struct Etcd {
    http: reqwest::Client,
    urls: Vec<String>,
    version: String,
    next_event: AtomicU64,
}

fn b64(s: &str) -> String {
    B64.encode(s)
}

impl Etcd {
    pub fn new(cluster: &crate::procs::EtcdCluster, buyers: usize) -> anyhow::Result<Self> {
        Ok(Etcd {
            http: reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(buyers)
                .timeout(ETCD_REQUEST_TIMEOUT)
                .build()?,
            urls: cluster.client_urls.clone(),
            version: cluster.version.clone(),
            next_event: AtomicU64::new(1),
        })
    }

    fn fresh_ids(&self, n: usize) -> Vec<u64> {
        let first = self.next_event.fetch_add(n as u64, Ordering::Relaxed);
        (first..first + n as u64).collect()
    }

    fn key(event: u64, seat: u32) -> String {
        format!("seat/{event}/{seat:06}")
    }

    /// POSTs to member `worker % 3`, moving on to the next member only when one
    /// cannot be connected to (the request was never sent), as etcd's own client
    /// does. Any other failure is returned: the request may have been applied, and
    /// a retried compare-and-swap would then misreport it as refused.
    async fn post(&self, worker: usize, path: &str, body: &Value) -> anyhow::Result<Value> {
        let mut last = String::new();
        for k in 0..self.urls.len() {
            let url = &self.urls[(worker + k) % self.urls.len()];
            match self
                .http
                .post(format!("{url}{path}"))
                .json(body)
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => return Ok(r.json().await?),
                Ok(r) => bail!(
                    "{path}: {} {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                ),
                Err(e) if e.is_connect() => last = e.to_string(),
                Err(e) => bail!("{path}: {e}"),
            }
        }
        bail!("{path}: no member reachable: {last}")
    }

    async fn hold(&self, worker: usize, event: u64, seats: &[u32]) -> HoldOutcome {
        let hold_id = format!("h{event}-{}", uuid_like());
        let r: anyhow::Result<bool> = async {
            let lease = self
                .post(worker, "/v3/lease/grant", &json!({"TTL": HOLD_TTL_S}))
                .await?;
            let lease_id = lease["ID"].as_str().context("lease ID")?.to_string();
            let compare: Vec<Value> = seats
                .iter()
                .map(|&s| json!({"key": b64(&Self::key(event, s)), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}))
                .collect();
            let success: Vec<Value> = seats
                .iter()
                .map(|&s| json!({"request_put": {"key": b64(&Self::key(event, s)), "value": b64(&hold_id), "lease": lease_id}}))
                .collect();
            let r = self
                .post(worker, "/v3/kv/txn", &json!({"compare": compare, "success": success}))
                .await?;
            Ok(r["succeeded"].as_bool().unwrap_or(false))
        }
        .await;
        match r {
            Ok(true) => HoldOutcome::Granted(hold_id),
            Ok(false) => HoldOutcome::Conflict,
            Err(e) => HoldOutcome::Failed(format!("{e:#}")),
        }
    }

    async fn confirm(
        &self,
        worker: usize,
        event: u64,
        hold: &str,
        seats: &[u32],
    ) -> ConfirmOutcome {
        let booking = format!("b{}", &hold[1..]);
        let sold = b64(&format!("sold:{booking}"));
        let compare: Vec<Value> = seats
            .iter()
            .map(|&s| json!({"key": b64(&Self::key(event, s)), "target": "VALUE", "result": "EQUAL", "value": b64(hold)}))
            .collect();
        let mut success: Vec<Value> = seats
            .iter()
            .map(|&s| json!({"request_put": {"key": b64(&Self::key(event, s)), "value": sold}}))
            .collect();
        success.push(json!({"request_put": {"key": b64(&format!("booking/{event}/{booking}")), "value": b64(&format!("{seats:?}"))}}));
        match self
            .post(
                worker,
                "/v3/kv/txn",
                &json!({"compare": compare, "success": success}),
            )
            .await
        {
            Ok(r) if r["succeeded"].as_bool() == Some(true) => ConfirmOutcome::Confirmed,
            Ok(_) => ConfirmOutcome::Refused("hold expired or not ours".into()),
            Err(e) => ConfirmOutcome::Unknown(format!("{e:#}")),
        }
    }

    async fn sold_seats(&self, event: u64) -> anyhow::Result<Vec<u32>> {
        // range_end = the prefix with its last byte incremented ('/' + 1 = '0').
        let end = b64(&format!("seat/{event}0"));
        let mut from = format!("seat/{event}/").into_bytes();
        let mut sold = Vec::new();
        loop {
            let r = self
                .post(
                    0,
                    "/v3/kv/range",
                    &json!({"key": B64.encode(&from), "range_end": end, "limit": ETCD_RANGE_PAGE}),
                )
                .await?;
            let kvs = r["kvs"].as_array().cloned().unwrap_or_default();
            for kv in &kvs {
                let key = B64.decode(kv["key"].as_str().unwrap_or_default())?;
                let val = B64.decode(kv["value"].as_str().unwrap_or_default())?;
                if val.starts_with(b"sold:") {
                    let k = String::from_utf8_lossy(&key);
                    let seat = k
                        .rsplit('/')
                        .next()
                        .and_then(|s| s.parse().ok())
                        .with_context(|| format!("bad seat key {k}"))?;
                    sold.push(seat);
                }
                from = key;
                from.push(0);
            }
            if r["more"].as_bool() != Some(true) || kvs.is_empty() {
                return Ok(sold);
            }
        }
    }
}
