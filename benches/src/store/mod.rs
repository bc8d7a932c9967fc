//! The systems compared, behind one interface of the on-sale workload: create
//! events of N seats, hold a set of seats (all or nothing, with a lifetime),
//! confirm a hold into a booking, and read back which seats are sold. Each peer
//! is set up and driven the way its own experts would run it (see each module).
//!
//! - `boxoffice`: the client library against a 3-node cluster (fsync on).
//! - `postgres`, `postgres-async`, `postgres-ha`: a row per seat; hold and
//!   confirm are one call each of a server-side function (one round trip, one
//!   transaction), on prepared statements.
//! - `redis`, `redis-replicated`: the TTL-lock design; hold and confirm are one
//!   Lua script each.
//! - `redis-pg`: the classic design of the site's design write-ups: holds are
//!   Redis TTL locks, the booking is a PostgreSQL transaction whose unique
//!   constraint on (event, seat) is the final judge.
//! - `etcd`: holds and confirms are transactions over seat keys, holds under a
//!   shared lease.

mod boxoffice;
mod etcd;
mod postgres;
mod redis;
mod redis_pg;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use boxoffice::{BatchSettings, Boxoffice};
pub use etcd::Etcd;
pub use postgres::{PgPool, PgVariant, Postgres, PG_POOL_MAX};
pub use redis::{seat_key, Redis};
pub use redis_pg::RedisPg;

/// Lifetime of a hold, the same on every system.
pub const HOLD_TTL_S: u64 = 120;
/// Seats per row when boxoffice venues are laid out (sections of 100 rows).
pub const ROW_SEATS: u32 = 50;
/// Seats per section (100 rows): section `S{k}` holds seats `k*5000 ..`.
pub const SECTION_SEATS: u32 = ROW_SEATS * 100;
/// Largest event scenario 1 grows to for a system without a venue size limit.
pub const MAX_SCALED_SEATS: u32 = 2_000_000;
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
    RedisPg(Arc<RedisPg>),
    Etcd(Arc<Etcd>),
}

/// Every system the comparison knows, by name.
pub const SYSTEMS: [&str; 8] = [
    "boxoffice",
    "postgres",
    "postgres-async",
    "postgres-ha",
    "redis",
    "redis-replicated",
    "redis-pg",
    "etcd",
];

impl Store {
    /// Short name used in tables and plots.
    pub fn name(&self) -> String {
        match self {
            Store::Boxoffice(_) => "boxoffice".into(),
            Store::Postgres(p) => p.variant.name().into(),
            Store::Redis(r) if r.replicated => "redis-replicated".into(),
            Store::Redis(_) => "redis".into(),
            Store::RedisPg(_) => "redis-pg".into(),
            Store::Etcd(_) => "etcd".into(),
        }
    }

    /// What an acknowledged write has survived, stated next to every figure.
    pub fn durability(&self) -> String {
        match self {
            Store::Boxoffice(_) => "3 replicas, majority fsync before ack".into(),
            Store::Postgres(p) => p.durability(),
            Store::Redis(r) => r.durability(),
            Store::RedisPg(r) => r.durability(),
            Store::Etcd(e) => format!("etcd {}, 3 members, fsync on", e.version),
        }
    }

    /// The server processes this system runs on (`Systems` groups), so that the
    /// others can be stopped while it is measured.
    pub fn servers(&self) -> &'static [&'static str] {
        match self {
            Store::Boxoffice(_) => &["boxoffice"],
            Store::Postgres(p) if p.variant == PgVariant::Ha => &["postgres-ha"],
            Store::Postgres(_) => &["postgres"],
            Store::Redis(r) if r.replicated => &["redis-replicated"],
            Store::Redis(_) => &["redis"],
            Store::RedisPg(_) => &["postgres", "redis-lock"],
            Store::Etcd(_) => &["etcd"],
        }
    }

    /// The PostgreSQL connection pool buyers share, for the systems that have one.
    pub fn pg_pool(&self) -> Option<&PgPool> {
        match self {
            Store::Postgres(p) => Some(&p.pool),
            Store::RedisPg(r) => Some(&r.pool),
            _ => None,
        }
    }

    /// The largest event scenario 1 grows to for a steady-state window: a
    /// boxoffice venue's most seats, or [`MAX_SCALED_SEATS`].
    pub fn max_event_seats(&self) -> u32 {
        match self {
            Store::Boxoffice(_) => boxoffice_raft::command::VENUE_SEATS_MAX,
            _ => MAX_SCALED_SEATS,
        }
    }

    /// Creates `n` events of `seats` seats each; returns their ids.
    pub async fn create_events(&self, n: usize, seats: u32) -> anyhow::Result<Vec<u64>> {
        match self {
            Store::Boxoffice(b) => b.create_events(n, seats).await,
            Store::Postgres(p) => p.create_events(n, seats).await,
            // Key-value designs: a seat with no key is available.
            Store::Redis(r) => Ok(r.ids.fresh(n)),
            Store::RedisPg(r) => r.create_events(n, seats).await,
            Store::Etcd(e) => Ok(e.ids.fresh(n)),
        }
    }

    pub async fn hold(&self, worker: usize, event: u64, seats: &[u32]) -> HoldOutcome {
        match self {
            Store::Boxoffice(b) => b.hold(worker, event, seats).await,
            Store::Postgres(p) => p.hold(worker, event, seats).await,
            Store::Redis(r) => r.hold(worker, event, seats).await,
            Store::RedisPg(r) => r.hold(worker, event, seats).await,
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
            Store::RedisPg(r) => r.confirm(worker, event, hold, seats).await,
            Store::Etcd(e) => e.confirm(worker, event, hold, seats).await,
        }
    }

    /// The seats the system says are sold, read after the run (linearizable).
    pub async fn sold_seats(&self, event: u64, seats: u32) -> anyhow::Result<Vec<u32>> {
        match self {
            Store::Boxoffice(b) => b.sold_seats(event).await,
            Store::Postgres(p) => p.sold_seats(event).await,
            Store::Redis(r) => r.sold_seats(event, seats).await,
            Store::RedisPg(r) => r.sold_seats(event).await,
            Store::Etcd(e) => e.sold_seats(event).await,
        }
    }
}

/// A unique-enough id for holds made by the load generator (process-wide
/// counter plus a random prefix drawn once).
pub fn uuid_like() -> String {
    static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{:08x}-{}",
        PREFIX.get_or_init(rand::random::<u32>),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A counter of fresh event ids for the key-value designs (a seat with no key
/// is available, so an event needs no setup).
#[derive(Default)]
pub struct EventIds(AtomicU64);

impl EventIds {
    pub fn fresh(&self, n: usize) -> Vec<u64> {
        let first = self.0.fetch_add(n as u64, Ordering::Relaxed) + 1;
        (first..first + n as u64).collect()
    }
}
