//! `redis-pg`: the classic design of the site's design write-ups, what a team
//! would build instead of boxoffice. The hold is a Redis TTL lock on every seat
//! at once (one Lua script, `SET ... PX ttl`, all or nothing). The confirm checks
//! the lock is still the buyer's, then books in one PostgreSQL transaction (one
//! statement) whose unique constraint on (event, seat) is the final judge, as a
//! lock may expire mid-confirm; Redis is updated after (the seats marked sold).
//!
//! Redis holds only locks, in memory (`appendonly no`, as such a team runs a
//! lock cache: a lost lock is a lost hold, never a double sale); PostgreSQL
//! (`synchronous_commit = on`) holds the bookings, in a database of its own on
//! the comparison's PostgreSQL server.

use redis::aio::MultiplexedConnection;

use super::postgres::{PgPool, PG_POOL_MAX};
use super::redis::{evalsha, load_script, seat_key, HOLD_LUA, REDIS_CONNECTIONS};
use super::{uuid_like, ConfirmOutcome, HoldOutcome, HOLD_TTL_S};

/// The database of the bookings.
pub const REDIS_PG_DATABASE: &str = "bench_redis_pg";

/// Bookings and their seats; the primary key of `booked_seats` is what refuses a
/// second booking of a seat.
const SCHEMA: &str = "
CREATE TABLE bookings (
    booking_id text PRIMARY KEY,
    event_id   bigint  NOT NULL,
    hold_id    text    NOT NULL UNIQUE,
    seat_ids   integer[] NOT NULL,
    booked_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE booked_seats (
    event_id   bigint  NOT NULL,
    seat_id    integer NOT NULL,
    booking_id text    NOT NULL,
    PRIMARY KEY (event_id, seat_id)
);
CREATE TABLE events (
    event_id    bigint PRIMARY KEY,
    seats       integer NOT NULL,
    name        text NOT NULL,
    description text NOT NULL DEFAULT 'benchmark',
    category    text NOT NULL DEFAULT 'concert',
    venue       text NOT NULL DEFAULT 'Bench Arena',
    city        text NOT NULL DEFAULT 'Benchtown',
    starts_at   timestamptz NOT NULL DEFAULT '2030-06-01T20:00:00Z'
);";

/// The booking, one statement: the booking row and a row per seat.
const BOOK: &str = "WITH b AS (
    INSERT INTO bookings (booking_id, event_id, hold_id, seat_ids) VALUES ($1, $2, $3, $4::int[])
)
INSERT INTO booked_seats (event_id, seat_id, booking_id) SELECT $2, s, $1 FROM unnest($4::int[]) s";

/// Whether every seat key still holds this hold id (1) or not (0).
const CHECK_LUA: &str = r"
for i, k in ipairs(KEYS) do
  if redis.call('GET', k) ~= ARGV[1] then return 0 end
end
return 1";

/// After the booking: the seats marked sold (no expiry), whoever holds them now.
const SOLD_LUA: &str = r"
for i, k in ipairs(KEYS) do
  redis.call('SET', k, ARGV[1])
end
return 1";

pub struct RedisPg {
    redis: Vec<MultiplexedConnection>,
    hold_sha: String,
    check_sha: String,
    sold_sha: String,
    pub pool: PgPool,
    pg_port: u16,
    redis_version: String,
    pg_version: String,
}

impl RedisPg {
    pub async fn new(
        redis: &crate::procs::RedisServer,
        pg: &crate::pg::Postgres,
        pool: usize,
    ) -> anyhow::Result<Self> {
        let mut conns = Vec::new();
        for _ in 0..REDIS_CONNECTIONS {
            conns.push(redis.connect().await?);
        }
        let hold_sha = load_script(&mut conns[0], HOLD_LUA).await?;
        let check_sha = load_script(&mut conns[0], CHECK_LUA).await?;
        let sold_sha = load_script(&mut conns[0], SOLD_LUA).await?;
        pg.create_database(REDIS_PG_DATABASE).await?;
        let pool = PgPool::open(
            pg.port,
            REDIS_PG_DATABASE,
            SCHEMA,
            "",
            &[BOOK],
            pool.min(PG_POOL_MAX),
        )
        .await?;
        Ok(RedisPg {
            redis: conns,
            hold_sha,
            check_sha,
            sold_sha,
            pool,
            pg_port: pg.port,
            redis_version: redis.version.clone(),
            pg_version: pg.version.clone(),
        })
    }

    pub fn durability(&self) -> String {
        format!(
            "holds: Redis {} locks in memory (appendonly no); bookings: PostgreSQL {}, 1 node, synchronous_commit=on",
            self.redis_version, self.pg_version
        )
    }

    /// The database of scenario 3's readers: `(port, database)`.
    pub fn read_target(&self) -> (u16, &'static str) {
        (self.pg_port, REDIS_PG_DATABASE)
    }

    /// The Redis connections (multiplexed), for scenario 3's seat-map readers.
    pub fn redis_connections(&self) -> Vec<MultiplexedConnection> {
        self.redis.clone()
    }

    fn redis(&self, worker: usize) -> MultiplexedConnection {
        self.redis[worker % self.redis.len()].clone()
    }

    pub(super) async fn create_events(&self, n: usize, seats: u32) -> anyhow::Result<Vec<u64>> {
        let c = self.pool.get(0).lock().await;
        let rows = c
            .client
            .query(
                "INSERT INTO events (event_id, seats, name)
                 SELECT coalesce((SELECT max(event_id) FROM events), 0) + i, $2, 'Bench On-Sale ' || i
                 FROM generate_series(1, $1::int) i RETURNING event_id",
                &[&(n as i32), &(seats as i32)],
            )
            .await?;
        let mut ids: Vec<u64> = rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect();
        ids.sort_unstable();
        Ok(ids)
    }

    pub(super) async fn hold(&self, worker: usize, event: u64, seats: &[u32]) -> HoldOutcome {
        let hold_id = format!("h{event}-{}", uuid_like());
        let keys: Vec<String> = seats.iter().map(|&s| seat_key(event, s)).collect();
        let r: redis::RedisResult<i64> = evalsha(
            &self.hold_sha,
            &keys,
            &[hold_id.clone(), (HOLD_TTL_S * 1000).to_string()],
        )
        .query_async(&mut self.redis(worker))
        .await;
        match r {
            Ok(1) => HoldOutcome::Granted(hold_id),
            Ok(_) => HoldOutcome::Conflict,
            Err(e) => HoldOutcome::Failed(e.to_string()),
        }
    }

    pub(super) async fn confirm(
        &self,
        worker: usize,
        event: u64,
        hold: &str,
        seats: &[u32],
    ) -> ConfirmOutcome {
        let keys: Vec<String> = seats.iter().map(|&s| seat_key(event, s)).collect();
        let mut redis = self.redis(worker);
        // 1. The lock must still be ours.
        let r: redis::RedisResult<i64> = evalsha(&self.check_sha, &keys, &[hold.to_string()])
            .query_async(&mut redis)
            .await;
        match r {
            Ok(1) => {}
            Ok(_) => return ConfirmOutcome::Refused("hold expired or not ours".into()),
            Err(e) => return ConfirmOutcome::Refused(format!("lock check: {e}")),
        }
        // 2. The booking; the unique constraint judges a lock that expired since.
        let booking = format!("b{}", &hold[1..]);
        let seat_ids: Vec<i32> = seats.iter().map(|&s| s as i32).collect();
        let r = {
            let c = self.pool.get(worker).lock().await;
            c.client
                .execute(&c.stmts[0], &[&booking, &(event as i64), &hold, &seat_ids])
                .await
        };
        match r {
            Ok(_) => {}
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                return ConfirmOutcome::Refused("seat already booked".into())
            }
            Err(e) => return ConfirmOutcome::Unknown(format!("{e:#}")),
        }
        // 3. Redis follows; the booking stands whatever happens here (a seat left
        // locked frees itself when the lock expires, and the constraint holds).
        let r: redis::RedisResult<i64> =
            evalsha(&self.sold_sha, &keys, &[format!("sold:{booking}")])
                .query_async(&mut redis)
                .await;
        if let Err(e) = r {
            eprintln!("  redis-pg: marking {booking} sold in Redis failed: {e}");
        }
        ConfirmOutcome::Confirmed
    }

    /// The seats booked in PostgreSQL (the system of record).
    pub(super) async fn sold_seats(&self, event: u64) -> anyhow::Result<Vec<u32>> {
        self.pool
            .seats(
                "SELECT seat_id FROM booked_seats WHERE event_id = $1 ORDER BY seat_id",
                event,
            )
            .await
    }
}
