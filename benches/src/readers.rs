//! Scenario 3's readers: while buyers hold and confirm, readers ask for the
//! event view, one section's seat map and a search, in turn.
//!
//! boxoffice readers talk only to the hot shard's followers, with local reads,
//! and take the compact seat map (`view=rows`). PostgreSQL readers query the
//! variant's database as the classic design serves its pages (the event's row,
//! the section's ticket rows, full-text search over the events table): on the
//! server the buyers write to, or for `postgres-ha` on a hot standby.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use boxoffice_client::{Client, Consistency};

use tokio::sync::Semaphore;

use crate::compare::{bench_search, reader_client, BENCH_SEARCH_WORDS};
use crate::store::{Store, SECTION_SEATS};

/// Errors printed per reader run (the rest are counted).
const READ_ERRORS_PRINTED: u64 = 3;

#[derive(Clone)]
pub enum Readers {
    Boxoffice {
        client: Client,
        event: u64,
        sections: u32,
    },
    Postgres {
        conns: Arc<Vec<tokio::sync::Mutex<tokio_postgres::Client>>>,
        event: u64,
        seats: u32,
    },
}

/// What the readers measured: (kind, latency µs) per read, errors, seconds.
pub type ReadSamples = (Vec<(&'static str, u64)>, u64, f64);

impl Readers {
    pub async fn new(
        st: &Store,
        sys: &crate::compare::Systems,
        event: u64,
        seats: u32,
    ) -> anyhow::Result<Self> {
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
                })
            }
            Store::Postgres(p) => {
                let (port, db) = p.read_target();
                let mut conns = Vec::new();
                for _ in 0..crate::store::PG_READ_CONNECTIONS {
                    conns.push(tokio::sync::Mutex::new(crate::pg::connect(port, db).await?));
                }
                Ok(Readers::Postgres {
                    conns: Arc::new(conns),
                    event,
                    seats,
                })
            }
            _ => anyhow::bail!("{} serves no reads in this scenario", st.name()),
        }
    }

    async fn read(&self, w: usize, i: u64) -> anyhow::Result<&'static str> {
        match self {
            Readers::Boxoffice {
                client,
                event,
                sections,
            } => match i % 3 {
                0 => {
                    client.event(*event, Consistency::Local).await?;
                    Ok("event view")
                }
                1 => {
                    // The compact map (a status string per row): what a front end
                    // draws a section from.
                    let s = (i / 3) % u64::from(*sections);
                    client
                        .seat_rows(*event, Some(&format!("S{s}")), Consistency::Local)
                        .await?;
                    Ok("section map")
                }
                _ => {
                    client.search(&bench_search()).await?;
                    Ok("search")
                }
            },
            Readers::Postgres {
                conns,
                event,
                seats,
            } => {
                let c = conns[w % conns.len()].lock().await;
                match i % 3 {
                    0 => {
                        c.query_one(
                            "SELECT event_id, name, description, category, venue, city, starts_at
                             FROM events WHERE event_id = $1",
                            &[&(*event as i64)],
                        )
                        .await?;
                        Ok("event view")
                    }
                    1 => {
                        let sections = seats.div_ceil(SECTION_SEATS);
                        let lo = ((i / 3) % u64::from(sections)) as i32 * SECTION_SEATS as i32;
                        c.query(
                            "SELECT seat_id, status, expires_at FROM tickets
                             WHERE event_id = $1 AND seat_id >= $2 AND seat_id < $3 ORDER BY seat_id",
                            &[&(*event as i64), &lo, &(lo + SECTION_SEATS as i32)],
                        )
                        .await?;
                        Ok("section map")
                    }
                    _ => {
                        // A page of 20 with the total, like /v1/search.
                        c.query(
                            "SELECT event_id, name, count(*) OVER () AS total
                             FROM events, plainto_tsquery('simple', $1) q
                             WHERE search @@ q ORDER BY ts_rank(search, q) DESC, event_id LIMIT 20",
                            &[&BENCH_SEARCH_WORDS],
                        )
                        .await?;
                        Ok("search")
                    }
                }
            }
        }
    }

    /// Starts `n` readers that run until `stop` is set or `limit` passes. With
    /// `gate = (g, k)`, every `k`-th read answered adds a permit to `g` (the
    /// buyers' writes wait for them).
    pub fn spawn(
        &self,
        n: usize,
        limit: Duration,
        stop: Arc<AtomicBool>,
        gate: Option<(Arc<Semaphore>, u64)>,
    ) -> tokio::task::JoinHandle<ReadSamples> {
        let me = self.clone();
        tokio::spawn(async move {
            let samples = Arc::new(Mutex::new(Vec::new()));
            let errors = Arc::new(AtomicU64::new(0));
            let answered = Arc::new(AtomicU64::new(0));
            let start = Instant::now();
            let mut tasks = Vec::new();
            for w in 0..n {
                let (me, samples, errors, stop, answered, gate) = (
                    me.clone(),
                    samples.clone(),
                    errors.clone(),
                    stop.clone(),
                    answered.clone(),
                    gate.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    let mut mine = Vec::new();
                    let mut i = w as u64;
                    while !stop.load(Ordering::Relaxed) && start.elapsed() < limit {
                        let t = Instant::now();
                        match me.read(w, i).await {
                            Ok(kind) => {
                                mine.push((kind, t.elapsed().as_micros() as u64));
                                let done = answered.fetch_add(1, Ordering::Relaxed) + 1;
                                if let Some((g, k)) = &gate {
                                    if done % k == 0 {
                                        g.add_permits(1);
                                    }
                                }
                            }
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
