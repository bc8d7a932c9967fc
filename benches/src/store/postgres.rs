//! PostgreSQL as its experts would run the on-sale: a row per seat in a table
//! with free space on every page (`fillfactor`) so that a seat's update stays on
//! its page (a HOT update, no index write); hold and confirm each one call of a
//! server-side function, so one round trip and one transaction, on statements
//! prepared once per connection; a conflicting hold fails at once (`SKIP
//! LOCKED`) instead of queueing behind the other buyer's commit; each variant in
//! a database of its own. The pool size is a setting the comparison sweeps.
//!
//! - `postgres`: one server, `synchronous_commit = on` (WAL fsync before ack).
//! - `postgres-async`: the same server, `synchronous_commit = off`.
//! - `postgres-ha`: a primary with two streaming standbys and
//!   `synchronous_standby_names = 'ANY 1 (...)'`: an acknowledged booking is on
//!   the disks of two of the three servers, as in boxoffice.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Mutex;
use tokio_postgres::error::SqlState;
use tokio_postgres::Statement;

use super::{uuid_like, ConfirmOutcome, HoldOutcome, HOLD_TTL_S};

/// Most PostgreSQL connections the buyers share (one transaction at a time each).
pub const PG_POOL_MAX: usize = 128;
/// SQLSTATE the hold function raises when a seat is not free.
const SEAT_TAKEN: &str = "BX001";
/// SQLSTATE the confirm function raises when the hold is gone.
const HOLD_GONE: &str = "BX002";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgVariant {
    Sync,
    Async,
    Ha,
}

impl PgVariant {
    pub fn name(self) -> &'static str {
        match self {
            PgVariant::Sync => "postgres",
            PgVariant::Async => "postgres-async",
            PgVariant::Ha => "postgres-ha",
        }
    }

    /// The database the variant's tables live in.
    pub fn database(self) -> &'static str {
        match self {
            PgVariant::Sync => "bench_sync",
            PgVariant::Async => "bench_async",
            PgVariant::Ha => "bench_ha",
        }
    }
}

/// The schema: one row per seat (pages kept 30% free for in-place updates),
/// bookings in their own table, events (the page scenario 3 reads),
/// and the two functions buyers call.
pub const PG_SCHEMA: &str = "
CREATE TABLE tickets (
    event_id   bigint  NOT NULL,
    seat_id    integer NOT NULL,
    status     text    NOT NULL DEFAULT 'available',
    hold_id    text,
    expires_at timestamptz,
    booking_id text,
    PRIMARY KEY (event_id, seat_id)
) WITH (fillfactor = 70);
CREATE TABLE bookings (
    booking_id text PRIMARY KEY,
    event_id   bigint  NOT NULL,
    hold_id    text    NOT NULL UNIQUE,
    seat_ids   integer[] NOT NULL,
    booked_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE events (
    event_id    bigint PRIMARY KEY,
    name        text NOT NULL,
    description text NOT NULL,
    category    text NOT NULL,
    venue       text NOT NULL,
    city        text NOT NULL,
    starts_at   timestamptz NOT NULL
);

-- A hold: every seat free (or its hold expired), or nothing. A plain read first
-- refuses a taken seat without a lock or a WAL record; then the free seats are
-- locked without waiting, so a seat another buyer is taking fails this hold at
-- once; then they are written. An error aborts (no commit to flush).
CREATE FUNCTION bo_hold(p_event bigint, p_seats integer[], p_hold text, p_ttl double precision)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    SELECT count(*) INTO n FROM tickets
     WHERE event_id = p_event AND seat_id = ANY (p_seats)
       AND (status = 'available' OR (status = 'held' AND expires_at < now()));
    IF n <> cardinality(p_seats) THEN
        RAISE EXCEPTION 'seat unavailable' USING ERRCODE = 'BX001';
    END IF;
    SELECT count(*) INTO n FROM (
        SELECT 1 FROM tickets
         WHERE event_id = p_event AND seat_id = ANY (p_seats)
           AND (status = 'available' OR (status = 'held' AND expires_at < now()))
           FOR UPDATE SKIP LOCKED) free;
    IF n <> cardinality(p_seats) THEN
        RAISE EXCEPTION 'seat unavailable' USING ERRCODE = 'BX001';
    END IF;
    UPDATE tickets SET status = 'held', hold_id = p_hold,
           expires_at = now() + make_interval(secs => p_ttl)
     WHERE event_id = p_event AND seat_id = ANY (p_seats);
END $$;

-- A confirm: every seat still under this unexpired hold, then sold and booked.
CREATE FUNCTION bo_confirm(p_event bigint, p_seats integer[], p_hold text, p_booking text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    UPDATE tickets SET status = 'sold', booking_id = p_booking
     WHERE event_id = p_event AND seat_id = ANY (p_seats) AND hold_id = p_hold
       AND status = 'held' AND expires_at > now();
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n <> cardinality(p_seats) THEN
        RAISE EXCEPTION 'hold expired or not found' USING ERRCODE = 'BX002';
    END IF;
    INSERT INTO bookings (booking_id, event_id, hold_id, seat_ids)
    VALUES (p_booking, p_event, p_hold, p_seats);
END $$;";

/// One pooled connection with the statements prepared on it.
pub struct PgConn {
    pub client: tokio_postgres::Client,
    /// In the order they were asked for in [`PgPool::open`].
    pub stmts: Vec<Statement>,
}

/// [`PG_POOL_MAX`] connections to one database, of which buyers share the first
/// `size` (buyer `w` takes connection `w % size`, one transaction at a time).
pub struct PgPool {
    conns: Vec<Mutex<PgConn>>,
    size: AtomicUsize,
}

impl PgPool {
    /// Connects to database `db` on `127.0.0.1:port`; runs `setup` once on the
    /// first connection and `per_conn` on each, then prepares `statements` on each.
    pub async fn open(
        port: u16,
        db: &str,
        setup: &str,
        per_conn: &str,
        statements: &[&str],
        size: usize,
    ) -> anyhow::Result<Self> {
        let mut conns = Vec::new();
        for i in 0..PG_POOL_MAX {
            let client = crate::pg::connect(port, db).await?;
            if i == 0 && !setup.is_empty() {
                client.batch_execute(setup).await?;
            }
            if !per_conn.is_empty() {
                client.batch_execute(per_conn).await?;
            }
            let mut stmts = Vec::new();
            for q in statements {
                stmts.push(client.prepare(q).await?);
            }
            conns.push(Mutex::new(PgConn { client, stmts }));
        }
        let pool = PgPool {
            conns,
            size: AtomicUsize::new(1),
        };
        pool.set_size(size);
        Ok(pool)
    }

    /// Buyers share the first `n` connections (1..=[`PG_POOL_MAX`]) from now on.
    pub fn set_size(&self, n: usize) {
        self.size.store(n.clamp(1, PG_POOL_MAX), Ordering::Relaxed);
    }

    pub fn size(&self) -> usize {
        self.size.load(Ordering::Relaxed)
    }

    /// The seat ids `query` (with the event id as `$1`) answers.
    pub async fn seats(&self, query: &str, event: u64) -> anyhow::Result<Vec<u32>> {
        let c = self.get(0).lock().await;
        let rows = c.client.query(query, &[&(event as i64)]).await?;
        Ok(rows.iter().map(|r| r.get::<_, i32>(0) as u32).collect())
    }

    /// Buyer `worker`'s connection.
    pub fn get(&self, worker: usize) -> &Mutex<PgConn> {
        &self.conns[worker % self.size()]
    }
}

/// Index of the hold statement in each connection's `stmts`.
const HOLD: usize = 0;
/// Index of the confirm statement.
const CONFIRM: usize = 1;

pub struct Postgres {
    pub variant: PgVariant,
    pub pool: PgPool,
    version: String,
    /// Port of the server scenario 3's readers query: the primary, or for
    /// `postgres-ha` a standby.
    pub read_port: u16,
}

impl Postgres {
    /// A pool to the variant's database on `server` (created fresh here), of
    /// which the first `pool` connections are used.
    pub async fn new(
        server: &crate::pg::Postgres,
        variant: PgVariant,
        pool: usize,
        read_port: u16,
    ) -> anyhow::Result<Self> {
        let db = variant.database();
        server.create_database(db).await?;
        let per_conn = if variant == PgVariant::Async {
            "SET synchronous_commit = off"
        } else {
            ""
        };
        let pool = PgPool::open(
            server.port,
            db,
            PG_SCHEMA,
            per_conn,
            &[
                "SELECT bo_hold($1::bigint, $2::int[], $3::text, $4::float8)",
                "SELECT bo_confirm($1::bigint, $2::int[], $3::text, $4::text)",
            ],
            pool,
        )
        .await?;
        Ok(Postgres {
            variant,
            pool,
            version: server.version.clone(),
            read_port,
        })
    }

    pub fn durability(&self) -> String {
        let v = &self.version;
        match self.variant {
            PgVariant::Sync => format!("PostgreSQL {v}, 1 node, synchronous_commit=on (WAL fsync before ack)"),
            PgVariant::Async => format!(
                "PostgreSQL {v}, 1 node, synchronous_commit=off (ack before WAL fsync; last ~600 ms may be lost)"
            ),
            PgVariant::Ha => format!(
                "PostgreSQL {v}, primary + 2 streaming standbys, synchronous_standby_names='ANY 1', synchronous_commit=on (WAL fsync on the primary and one standby before ack; no automatic failover)"
            ),
        }
    }

    /// The database of scenario 3's readers: `(port, database)`.
    pub fn read_target(&self) -> (u16, &'static str) {
        (self.read_port, self.variant.database())
    }

    pub(super) async fn create_events(&self, n: usize, seats: u32) -> anyhow::Result<Vec<u64>> {
        let c = self.pool.get(0).lock().await;
        let c = &c.client;
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

    pub(super) async fn hold(&self, worker: usize, event: u64, seats: &[u32]) -> HoldOutcome {
        let hold_id = format!("h{event}-{}", uuid_like());
        let seat_ids: Vec<i32> = seats.iter().map(|&s| s as i32).collect();
        let c = self.pool.get(worker).lock().await;
        let r = c
            .client
            .execute(
                &c.stmts[HOLD],
                &[&(event as i64), &seat_ids, &hold_id, &(HOLD_TTL_S as f64)],
            )
            .await;
        match r {
            Ok(_) => HoldOutcome::Granted(hold_id),
            Err(e) if is_state(&e, SEAT_TAKEN) => HoldOutcome::Conflict,
            Err(e) => HoldOutcome::Failed(format!("{e:#}")),
        }
    }

    pub(super) async fn confirm(
        &self,
        worker: usize,
        event: u64,
        hold: &str,
        seats: &[u32],
    ) -> ConfirmOutcome {
        let booking = format!("b{}", &hold[1..]);
        let seat_ids: Vec<i32> = seats.iter().map(|&s| s as i32).collect();
        let c = self.pool.get(worker).lock().await;
        let r = c
            .client
            .execute(
                &c.stmts[CONFIRM],
                &[&(event as i64), &seat_ids, &hold, &booking],
            )
            .await;
        match r {
            Ok(_) => ConfirmOutcome::Confirmed,
            Err(e) if is_state(&e, HOLD_GONE) => {
                ConfirmOutcome::Refused("hold expired or not found".into())
            }
            Err(e) => ConfirmOutcome::Unknown(format!("{e:#}")),
        }
    }

    pub(super) async fn sold_seats(&self, event: u64) -> anyhow::Result<Vec<u32>> {
        self.pool
            .seats(
                "SELECT seat_id FROM tickets WHERE event_id = $1 AND status = 'sold' ORDER BY seat_id",
                event,
            )
            .await
    }
}

/// Whether `e` is an error the server raised with SQLSTATE `code`.
pub fn is_state(e: &tokio_postgres::Error, code: &str) -> bool {
    e.code() == Some(&SqlState::from_code(code))
}
