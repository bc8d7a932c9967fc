//! Scenario 3's readers: while buyers hold and confirm at a fixed rate, readers
//! ask for the event view, one section's seat map and a search, in turn, as fast
//! as answers come. Every system answers the same questions with the same
//! payloads from a search data set of its own, loaded from the same generated
//! catalogue ([`load_search_data`]):
//!
//! - boxoffice: the hot shard's followers (local reads); the compact seat map
//!   (`view=rows`: a status string per row); `/v1/search`.
//! - PostgreSQL: the variant's database as the classic design serves its pages,
//!   on the server the buyers write to, or for `postgres-ha` on a hot standby.
//!   The seat map is built server-side in the same shape (`string_agg` of a
//!   status character per row); the search is full-text search (tsvector + GIN,
//!   `pg_trgm` for typos, `earthdistance` for geo) over the catalogue's table.
//! - `redis-pg`: the event row and the search from its PostgreSQL database, the
//!   seat map from the Redis locks (`MGET` of the section's seat keys: no key is
//!   available, `sold:` is sold, a hold id is held), as that design reads it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use boxoffice_client::{Client, Consistency, SearchQuery};
use redis::aio::MultiplexedConnection;

use crate::catalogue::Catalogue;
use crate::compare::reader_client;
use crate::search_bench::{pg_err, pg_load, pg_query, Query};
use crate::store::{PgPool, Store, ROW_SEATS, SECTION_SEATS};

/// Errors printed per reader run (the rest are counted).
const READ_ERRORS_PRINTED: u64 = 3;
/// The PostgreSQL schema the search data set is loaded into (beside the on-sale
/// tables in `public`).
const CATALOGUE_SCHEMA: &str = "catalogue";

/// One section's rows, each with its seats' status characters in seat order
/// (`a` available or hold expired, `h` held, `s` sold): the payload of
/// boxoffice's `view=rows`.
const PG_SECTION_ROWS: &str = "
SELECT 'S' || ((seat_id / 50) / 100) AS section, 'R' || (seat_id / 50) AS row,
       min(seat_id) AS first_seat_id,
       string_agg(CASE WHEN status = 'sold' THEN 's'
                       WHEN status = 'held' AND expires_at > now() THEN 'h'
                       ELSE 'a' END, '' ORDER BY seat_id) AS status
  FROM public.tickets
 WHERE event_id = $1 AND seat_id >= $2 AND seat_id < $3
 GROUP BY seat_id / 50 ORDER BY seat_id / 50";

/// The event page's row (the same fields as boxoffice's event view).
const PG_EVENT_VIEW: &str = "SELECT event_id, name, description, category, venue, city, starts_at
   FROM public.events WHERE event_id = $1";

#[derive(Clone)]
pub enum Readers {
    Boxoffice {
        client: Client,
        event: u64,
        sections: u32,
        searches: Arc<Vec<SearchQuery>>,
    },
    Sql {
        conns: Arc<Vec<tokio::sync::Mutex<SqlConn>>>,
        event: u64,
        seats: u32,
        searches: Arc<Vec<Query>>,
        /// Where the seat map comes from.
        map: SeatSource,
    },
}

#[derive(Clone)]
pub enum SeatSource {
    /// The tickets table, rows built server-side.
    Tickets,
    /// `redis-pg`'s seat locks.
    RedisLocks(Vec<MultiplexedConnection>),
}

/// What the readers measured: (kind, latency µs) per read, errors, seconds.
pub type ReadSamples = (Vec<(&'static str, u64)>, u64, f64);

/// Loads the search data set into `st`'s own store: boxoffice through its admin
/// API, PostgreSQL (and `redis-pg`'s database) with `COPY` into a schema of its
/// own.
pub async fn load_search_data(st: &Store, cat: &Catalogue) -> anyhow::Result<()> {
    match st {
        Store::Boxoffice(b) => crate::load::load(&b.admin, cat).await,
        Store::Postgres(p) => pg_catalogue(&p.pool, cat).await,
        Store::RedisPg(r) => pg_catalogue(&r.pool, cat).await,
        _ => anyhow::bail!("{} serves no reads in this scenario", st.name()),
    }
}

async fn pg_catalogue(pool: &PgPool, cat: &Catalogue) -> anyhow::Result<()> {
    let c = pool.get(0).lock().await;
    c.client
        .batch_execute(&format!(
            "CREATE SCHEMA {CATALOGUE_SCHEMA}; SET search_path TO {CATALOGUE_SCHEMA}"
        ))
        .await
        .map_err(pg_err)?;
    let loaded = pg_load(&c.client, cat).await;
    c.client
        .batch_execute("RESET search_path")
        .await
        .map_err(pg_err)?;
    loaded
}

/// A reader's PostgreSQL connection, with the page statements prepared on it.
pub struct SqlConn {
    client: tokio_postgres::Client,
    event_view: tokio_postgres::Statement,
    /// The section map from `tickets` (absent where the map comes from Redis).
    section_rows: Option<tokio_postgres::Statement>,
}

/// `n` connections to database `db` on `port` that find the catalogue's table
/// first and the on-sale tables by their schema, with the event view (and for
/// [`SeatSource::Tickets`] the section map) prepared on each.
async fn sql_readers(
    port: u16,
    db: &str,
    n: usize,
    map: &SeatSource,
) -> anyhow::Result<Arc<Vec<tokio::sync::Mutex<SqlConn>>>> {
    let mut conns = Vec::new();
    for _ in 0..n {
        let client = crate::pg::connect(port, db).await?;
        client
            .batch_execute(&format!("SET search_path TO {CATALOGUE_SCHEMA}, public"))
            .await
            .map_err(pg_err)?;
        let event_view = client.prepare(PG_EVENT_VIEW).await.map_err(pg_err)?;
        let section_rows = match map {
            SeatSource::Tickets => Some(client.prepare(PG_SECTION_ROWS).await.map_err(pg_err)?),
            SeatSource::RedisLocks(_) => None,
        };
        conns.push(tokio::sync::Mutex::new(SqlConn {
            client,
            event_view,
            section_rows,
        }));
    }
    Ok(Arc::new(conns))
}

impl Readers {
    /// Readers of `st`'s event `event` (of `seats` seats), searching with
    /// `searches` in turn.
    pub async fn new(
        st: &Store,
        sys: &crate::compare::Systems,
        event: u64,
        seats: u32,
        searches: &[Query],
    ) -> anyhow::Result<Self> {
        let n = crate::store::PG_READ_CONNECTIONS;
        match st {
            Store::Boxoffice(b) => {
                let shard = b
                    .admin
                    .event(event, Consistency::Local)
                    .await?
                    .event
                    .shard
                    .context("event without a shard")?;
                let followers = sys.followers_of(shard).await;
                anyhow::ensure!(!followers.is_empty(), "no followers of shard {shard}");
                Ok(Readers::Boxoffice {
                    client: reader_client(followers, &b.user_token)?,
                    event,
                    sections: seats.div_ceil(SECTION_SEATS),
                    searches: Arc::new(searches.iter().map(Query::to_search_query).collect()),
                })
            }
            Store::Postgres(_) | Store::RedisPg(_) => {
                let ((port, db), map) = match st {
                    Store::Postgres(p) => (p.read_target(), SeatSource::Tickets),
                    Store::RedisPg(r) => (
                        r.read_target(),
                        SeatSource::RedisLocks(r.redis_connections()),
                    ),
                    _ => unreachable!("matched above"),
                };
                Ok(Readers::Sql {
                    conns: sql_readers(port, db, n, &map).await?,
                    event,
                    seats,
                    searches: Arc::new(searches.to_vec()),
                    map,
                })
            }
            _ => anyhow::bail!("{} serves no reads in this scenario", st.name()),
        }
    }

    async fn read(&self, w: usize, i: u64) -> anyhow::Result<&'static str> {
        // The i-th read of a reader: kind i % 3, the (i / 3)-th section or search.
        let nth = i / 3;
        match self {
            Readers::Boxoffice {
                client,
                event,
                sections,
                searches,
            } => match i % 3 {
                0 => {
                    client.event(*event, Consistency::Local).await?;
                    Ok("event view")
                }
                1 => {
                    let s = nth % u64::from(*sections);
                    client
                        .seat_rows(*event, Some(&format!("S{s}")), Consistency::Local)
                        .await?;
                    Ok("section map")
                }
                _ => {
                    client
                        .search(&searches[nth as usize % searches.len()])
                        .await?;
                    Ok("search")
                }
            },
            Readers::Sql {
                conns,
                event,
                seats,
                searches,
                map,
            } => {
                let sections = seats.div_ceil(SECTION_SEATS);
                let lo = (nth % u64::from(sections)) as u32 * SECTION_SEATS;
                let hi = (lo + SECTION_SEATS).min(*seats);
                match (i % 3, map) {
                    (0, _) => {
                        let c = conns[w % conns.len()].lock().await;
                        c.client
                            .query_one(&c.event_view, &[&(*event as i64)])
                            .await
                            .map_err(pg_err)?;
                        Ok("event view")
                    }
                    (1, SeatSource::Tickets) => {
                        let c = conns[w % conns.len()].lock().await;
                        let stmt = c
                            .section_rows
                            .as_ref()
                            .context("no section-map statement on this connection")?;
                        c.client
                            .query(stmt, &[&(*event as i64), &(lo as i32), &(hi as i32)])
                            .await
                            .map_err(pg_err)?;
                        Ok("section map")
                    }
                    (1, SeatSource::RedisLocks(redis)) => {
                        let keys: Vec<String> = (lo..hi)
                            .map(|s| crate::store::seat_key(*event, s))
                            .collect();
                        let mut r = redis[w % redis.len()].clone();
                        let values: Vec<Option<String>> =
                            redis::cmd("MGET").arg(&keys).query_async(&mut r).await?;
                        std::hint::black_box(lock_rows(lo, &values));
                        Ok("section map")
                    }
                    _ => {
                        let c = conns[w % conns.len()].lock().await;
                        pg_query(&c.client, &searches[nth as usize % searches.len()]).await?;
                        Ok("search")
                    }
                }
            }
        }
    }

    /// Starts `n` readers that run until `stop` is set or `limit` passes.
    pub fn spawn(
        &self,
        n: usize,
        limit: Duration,
        stop: Arc<AtomicBool>,
    ) -> tokio::task::JoinHandle<ReadSamples> {
        let me = self.clone();
        tokio::spawn(async move {
            let samples = Arc::new(Mutex::new(Vec::new()));
            let errors = Arc::new(AtomicU64::new(0));
            let start = Instant::now();
            let mut tasks = Vec::new();
            for w in 0..n {
                let (me, samples, errors, stop) =
                    (me.clone(), samples.clone(), errors.clone(), stop.clone());
                tasks.push(tokio::spawn(async move {
                    let mut mine = Vec::new();
                    let mut i = w as u64;
                    while !stop.load(Ordering::Relaxed) && start.elapsed() < limit {
                        let t = Instant::now();
                        match me.read(w, i).await {
                            Ok(kind) => mine.push((kind, t.elapsed().as_micros() as u64)),
                            Err(e) => {
                                if errors.fetch_add(1, Ordering::Relaxed) < READ_ERRORS_PRINTED {
                                    eprintln!("  read failed: {e:#}");
                                }
                            }
                        }
                        i += n as u64;
                    }
                    samples
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend(mine);
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
            let secs = start.elapsed().as_secs_f64();
            let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|e| e.into_inner()));
            (samples, errors.load(Ordering::Relaxed), secs)
        })
    }
}

/// `redis-pg`'s section map from its seat locks, seats `first..` in order: the
/// rows of [`ROW_SEATS`] as (first seat id, status characters).
fn lock_rows(first: u32, values: &[Option<String>]) -> Vec<(u32, String)> {
    values
        .chunks(ROW_SEATS as usize)
        .enumerate()
        .map(|(r, seats)| {
            let status = seats
                .iter()
                .map(|v| match v.as_deref() {
                    None => 'a',
                    Some(v) if v.starts_with("sold:") => 's',
                    Some(_) => 'h',
                })
                .collect();
            (first + r as u32 * ROW_SEATS, status)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_rows_read_the_locks_as_the_compact_map() {
        let mut values = vec![None; ROW_SEATS as usize + 2];
        values[1] = Some("h7-abc".to_string());
        values[ROW_SEATS as usize] = Some("sold:b7-abc".to_string());
        let rows = lock_rows(5000, &values);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].0, 5000);
        assert_eq!(&rows[0].1[..3], "aha");
        assert_eq!(rows[0].1.len(), ROW_SEATS as usize);
        assert_eq!(rows[1], (5000 + ROW_SEATS, "sa".to_string()));
    }
}
