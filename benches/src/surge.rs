//! The on-sale workload, the same for every system: buyers pick 1–4 random seats
//! among those not yet known to be taken, hold them, and confirm the hold. Runs
//! until the seats are gone, the time limit passes or the hold budget is spent.
//! Optionally kills a process mid-run (failover) and measures the gap in writes.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use rand::{Rng, SeedableRng};
use tokio::sync::Semaphore;

use crate::stats::{summarize, Summary};
use crate::store::{ConfirmOutcome, HoldOutcome, Store};

/// Width of a bucket of the throughput time series.
pub const BUCKET_MS: u64 = 100;
/// Errors printed per run (the rest are only counted).
const ERRORS_PRINTED: u64 = 3;

/// When buyers may start a write (a hold or a confirm).
#[derive(Clone, Default)]
pub enum Pace {
    /// Whenever the previous answer came back: as fast as the system answers.
    #[default]
    Free,
    /// One write per permit, the permits given at a fixed rate ([`rate_gate`]:
    /// scenario 3's open-loop writes). A buyer takes two
    /// before a hold, for the hold and its confirm, so a confirm never waits
    /// behind other buyers' holds.
    Gate(Arc<Semaphore>),
}

impl Pace {
    /// Waits for the turn of `writes` writes; false if `until` passed first.
    async fn admit(&self, until: Instant, writes: u32) -> bool {
        match self {
            Pace::Free => true,
            Pace::Gate(g) => {
                match tokio::time::timeout_at(until.into(), g.acquire_many(writes)).await {
                    Ok(Ok(permit)) => {
                        permit.forget();
                        true
                    }
                    _ => false,
                }
            }
        }
    }
}

/// How often [`rate_gate`] hands out permits.
const RATE_TICK: Duration = Duration::from_millis(5);

/// A gate that lets `per_s` writes start per second, evenly, until `limit` has
/// passed (the task then ends by itself).
pub fn rate_gate(per_s: f64, limit: Duration) -> (Pace, tokio::task::JoinHandle<()>) {
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    let task = tokio::spawn(async move {
        let start = Instant::now();
        let mut given = 0u64;
        let mut tick = tokio::time::interval(RATE_TICK);
        while start.elapsed() < limit {
            tick.tick().await;
            let due = (start.elapsed().as_secs_f64() * per_s) as u64;
            if due > given {
                g.add_permits((due - given) as usize);
                given = due;
            }
        }
    });
    (Pace::Gate(gate), task)
}

/// What one run does.
#[derive(Clone)]
pub struct Shape {
    /// The system's ids of the events on sale.
    pub events: Vec<u64>,
    /// Seats per event.
    pub seats: u32,
    pub buyers: usize,
    pub duration: Duration,
    /// Stop after this many hold attempts in total.
    pub holds_max: u64,
    pub seed: u64,
    /// When writes may start.
    pub pace: Pace,
}

/// A fault injected mid-run: after `at`, `kill` runs once and names what it killed.
pub struct Kill {
    pub at: Duration,
    pub kill: Pin<Box<dyn Future<Output = anyhow::Result<String>> + Send>>,
}

/// The write-unavailability of a failover run.
#[derive(Clone, Debug)]
pub struct Failover {
    pub killed: String,
    pub at_s: f64,
    /// From the kill to the first write acknowledged that was invoked after it.
    pub window_ms: f64,
}

/// What one run measured.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub elapsed_s: f64,
    pub hold_attempts: u64,
    pub holds_granted: u64,
    pub conflicts: u64,
    pub hold_errors: u64,
    pub confirms: u64,
    pub confirm_refused: u64,
    pub confirm_unknown: u64,
    pub seats_sold: u64,
    pub seats_total: u64,
    /// When the last seat was confirmed, if every seat was.
    pub sold_out_s: Option<f64>,
    pub hold_lat: Summary,
    pub confirm_lat: Summary,
    /// Confirmed bookings per [`BUCKET_MS`] bucket.
    pub confirms_series: Vec<u64>,
    pub failover: Option<Failover>,
    /// CPU seconds the whole machine spent over the run (every server and the
    /// load generator; from `/proc/stat`).
    pub cpu_s: f64,
    /// CPU seconds of the load generator alone over the run.
    pub gen_cpu_s: f64,
    /// The sales check: `Ok(summary)` or the violation.
    pub check: Result<String, String>,
}

impl RunResult {
    pub fn holds_per_s(&self) -> f64 {
        self.holds_granted as f64 / self.elapsed_s
    }
    pub fn confirms_per_s(&self) -> f64 {
        self.confirms as f64 / self.elapsed_s
    }
    pub fn attempts_per_s(&self) -> f64 {
        self.hold_attempts as f64 / self.elapsed_s
    }
    /// Machine CPU seconds per confirmed booking (its hold included).
    pub fn cpu_per_booking(&self) -> f64 {
        self.cpu_s / self.confirms.max(1) as f64
    }
    /// Write requests (holds and confirms, whatever their answer) per second.
    pub fn writes_per_s(&self) -> f64 {
        (self.hold_attempts + self.confirms + self.confirm_refused + self.confirm_unknown) as f64
            / self.elapsed_s
    }
}

/// Seats not yet known to be taken, per event, with O(1) pick and removal.
struct Pool {
    events: Vec<EventSeats>,
    /// Indices of events with seats left.
    live: Vec<usize>,
}

struct EventSeats {
    left: Vec<u32>,
    /// Position of each seat in `left`, or `u32::MAX` once taken.
    pos: Vec<u32>,
}

impl Pool {
    fn new(events: usize, seats: u32) -> Self {
        Pool {
            events: (0..events)
                .map(|_| EventSeats {
                    left: (0..seats).collect(),
                    pos: (0..seats).collect(),
                })
                .collect(),
            live: (0..events).collect(),
        }
    }

    /// A random event with seats left and up to `n` distinct random seats of it.
    fn pick(&self, rng: &mut impl Rng, n: usize) -> Option<(usize, Vec<u32>)> {
        if self.live.is_empty() {
            return None;
        }
        let ev = self.live[rng.gen_range(0..self.live.len())];
        let left = &self.events[ev].left;
        let n = n.min(left.len());
        let mut seats = BTreeSet::new();
        while seats.len() < n {
            seats.insert(left[rng.gen_range(0..left.len())]);
        }
        Some((ev, seats.into_iter().collect()))
    }

    fn take(&mut self, ev: usize, seats: &[u32]) {
        let e = &mut self.events[ev];
        for &s in seats {
            let p = e.pos[s as usize];
            if p == u32::MAX {
                continue;
            }
            let last = *e
                .left
                .last()
                .expect("a seat in the pool means it is not empty");
            e.left.swap_remove(p as usize);
            if last != s {
                e.pos[last as usize] = p;
            }
            e.pos[s as usize] = u32::MAX;
        }
        if e.left.is_empty() {
            self.live.retain(|&x| x != ev);
        }
    }
}

#[derive(Default)]
struct Log {
    hold_lat: Vec<u64>,
    confirm_lat: Vec<u64>,
    /// Completion times (ms since start) of confirmed bookings.
    confirmed_at: Vec<u64>,
    /// (invoked, completed) ms of every write with a definite answer.
    writes: Vec<(u64, u64)>,
    /// (event index, seat) of acknowledged sales.
    acked: Vec<(usize, u32)>,
    /// (event index, seat) of confirms with no answer.
    unknown: Vec<(usize, u32)>,
    errors: Vec<String>,
}

/// Runs the workload against `store`.
pub async fn run(store: &Store, shape: &Shape, kill: Option<Kill>) -> anyhow::Result<RunResult> {
    let pool = Arc::new(Mutex::new(Pool::new(shape.events.len(), shape.seats)));
    let log = Arc::new(Mutex::new(Log::default()));
    let attempts = Arc::new(AtomicU64::new(0));
    let counters: Arc<[AtomicU64; 6]> = Arc::new(Default::default());
    const GRANTED: usize = 0;
    const CONFLICT: usize = 1;
    const HOLD_ERR: usize = 2;
    const REFUSED: usize = 3;
    const UNKNOWN: usize = 4;
    const CONFIRMED: usize = 5;
    let self_pid = std::process::id().to_string();
    let cpu0 = crate::cpu::cpu_snap(std::slice::from_ref(&self_pid));
    let start = Instant::now();
    let until = start + shape.duration;
    let killed_at = Arc::new(Mutex::new(None::<(f64, String)>));
    let killer = kill.map(|k| {
        let killed_at = killed_at.clone();
        tokio::spawn(async move {
            tokio::time::sleep(k.at).await;
            let t = start.elapsed().as_secs_f64();
            match k.kill.await {
                Ok(what) => *killed_at.lock().unwrap_or_else(|e| e.into_inner()) = Some((t, what)),
                Err(e) => eprintln!("kill failed: {e:#}"),
            }
        })
    });
    let ms = move || start.elapsed().as_millis() as u64;
    let mut tasks = Vec::new();
    for w in 0..shape.buyers {
        let (store, shape, pool, log, attempts, counters) = (
            store.clone(),
            shape.clone(),
            pool.clone(),
            log.clone(),
            attempts.clone(),
            counters.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(shape.seed * 100_003 + w as u64);
            let mut mine = Log::default();
            while Instant::now() < until
                && attempts.fetch_add(1, Ordering::Relaxed) < shape.holds_max
            {
                let n = rng.gen_range(1..=4usize);
                let picked = pool
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .pick(&mut rng, n);
                let Some((ev, seats)) = picked else {
                    attempts.fetch_sub(1, Ordering::Relaxed);
                    break;
                };
                let event = shape.events[ev];
                if !shape.pace.admit(until, 2).await {
                    attempts.fetch_sub(1, Ordering::Relaxed);
                    break;
                }
                let (t0, i0) = (ms(), Instant::now());
                let outcome = store.hold(w, event, &seats).await;
                let t1 = ms();
                mine.hold_lat.push(i0.elapsed().as_micros() as u64);
                let hold = match outcome {
                    HoldOutcome::Granted(h) => {
                        counters[GRANTED].fetch_add(1, Ordering::Relaxed);
                        mine.writes.push((t0, t1));
                        pool.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .take(ev, &seats);
                        h
                    }
                    HoldOutcome::Conflict => {
                        counters[CONFLICT].fetch_add(1, Ordering::Relaxed);
                        mine.writes.push((t0, t1));
                        continue;
                    }
                    HoldOutcome::Failed(e) => {
                        counters[HOLD_ERR].fetch_add(1, Ordering::Relaxed);
                        mine.errors.push(format!("hold: {e}"));
                        continue;
                    }
                };
                let (t0, i0) = (ms(), Instant::now());
                let outcome = store.confirm(w, event, &hold, &seats).await;
                let t1 = ms();
                match outcome {
                    ConfirmOutcome::Confirmed => {
                        counters[CONFIRMED].fetch_add(1, Ordering::Relaxed);
                        mine.confirm_lat.push(i0.elapsed().as_micros() as u64);
                        mine.confirmed_at.push(t1);
                        mine.writes.push((t0, t1));
                        mine.acked.extend(seats.iter().map(|&s| (ev, s)));
                    }
                    ConfirmOutcome::Refused(e) => {
                        counters[REFUSED].fetch_add(1, Ordering::Relaxed);
                        mine.writes.push((t0, t1));
                        mine.errors.push(format!("confirm refused: {e}"));
                    }
                    ConfirmOutcome::Unknown(e) => {
                        counters[UNKNOWN].fetch_add(1, Ordering::Relaxed);
                        mine.unknown.extend(seats.iter().map(|&s| (ev, s)));
                        mine.errors.push(format!("confirm: {e}"));
                    }
                }
            }
            let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
            l.hold_lat.append(&mut mine.hold_lat);
            l.confirm_lat.append(&mut mine.confirm_lat);
            l.confirmed_at.append(&mut mine.confirmed_at);
            l.writes.append(&mut mine.writes);
            l.acked.append(&mut mine.acked);
            l.unknown.append(&mut mine.unknown);
            l.errors.append(&mut mine.errors);
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed_s = start.elapsed().as_secs_f64();
    let cpu1 = crate::cpu::cpu_snap(std::slice::from_ref(&self_pid));
    if let Some(k) = killer {
        k.abort();
        let _ = k.await;
    }
    let log = std::mem::take(&mut *log.lock().unwrap_or_else(|e| e.into_inner()));
    for e in log.errors.iter().take(ERRORS_PRINTED as usize) {
        eprintln!("  {e}");
    }
    if log.errors.len() as u64 > ERRORS_PRINTED {
        eprintln!("  ... {} errors in all", log.errors.len());
    }
    let seats_total = shape.events.len() as u64 * u64::from(shape.seats);
    let sold_out = pool
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .live
        .is_empty()
        && log.acked.len() as u64 == seats_total;
    let failover = killed_at
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .map(|(at_s, killed)| Failover {
            window_ms: unavailability_ms(&log.writes, (at_s * 1000.0) as u64)
                .unwrap_or(elapsed_s * 1000.0 - at_s * 1000.0),
            killed,
            at_s,
        });
    // The final state, read back from the system.
    let mut final_sold = Vec::new();
    for (i, &event) in shape.events.iter().enumerate() {
        for s in store.sold_seats(event, shape.seats).await? {
            final_sold.push((i, s));
        }
    }
    let check = check_sales(&log.acked, &log.unknown, &final_sold)
        .map(|()| {
            format!(
                "{} seats acknowledged sold, all distinct; the system's final state agrees ({} sold, {} with unknown confirms)",
                log.acked.len(),
                final_sold.len(),
                log.unknown.len()
            )
        })
        .map_err(|e| e.to_string());
    let c = |i: usize| counters[i].load(Ordering::Relaxed);
    Ok(RunResult {
        elapsed_s,
        hold_attempts: c(GRANTED) + c(CONFLICT) + c(HOLD_ERR),
        holds_granted: c(GRANTED),
        conflicts: c(CONFLICT),
        hold_errors: c(HOLD_ERR),
        confirms: c(CONFIRMED),
        confirm_refused: c(REFUSED),
        confirm_unknown: c(UNKNOWN),
        seats_sold: log.acked.len() as u64,
        seats_total,
        sold_out_s: sold_out
            .then(|| log.confirmed_at.iter().max().copied().unwrap_or(0) as f64 / 1e3),
        hold_lat: summarize(log.hold_lat),
        confirm_lat: summarize(log.confirm_lat),
        confirms_series: buckets(&log.confirmed_at, BUCKET_MS, (elapsed_s * 1000.0) as u64),
        failover,
        cpu_s: cpu1.busy - cpu0.busy,
        gen_cpu_s: cpu1.procs[0] - cpu0.procs[0],
        check,
    })
}

/// Counts of `times` (ms) per bucket of `width` ms over `[0, total)`.
pub fn buckets(times: &[u64], width: u64, total: u64) -> Vec<u64> {
    let n = total.div_ceil(width).max(1) as usize;
    let mut out = vec![0; n];
    for &t in times {
        let i = ((t / width) as usize).min(n - 1);
        out[i] += 1;
    }
    out
}

/// The write-unavailability after a kill at `kill_ms`: the time from the kill to
/// the first definite answer to a write invoked after it. `None` if no write
/// invoked after the kill was answered.
pub fn unavailability_ms(writes: &[(u64, u64)], kill_ms: u64) -> Option<f64> {
    writes
        .iter()
        .filter(|(invoked, _)| *invoked >= kill_ms)
        .map(|(_, done)| done - kill_ms)
        .min()
        .map(|d| d as f64)
}

/// After a run: no seat was acknowledged to two buyers; every acknowledged sale
/// is in the system's final state (none lost); every seat the system says is sold
/// was acknowledged or had a confirm with no answer (no phantom sale); and the
/// final state lists no seat twice.
pub fn check_sales<T: Ord + Copy + Debug>(
    acked: &[T],
    unknown: &[T],
    final_sold: &[T],
) -> anyhow::Result<()> {
    let twice = |v: &[T]| -> BTreeSet<T> {
        let mut seen = BTreeSet::new();
        v.iter().copied().filter(|s| !seen.insert(*s)).collect()
    };
    let dup = twice(acked);
    if !dup.is_empty() {
        bail!("DOUBLE SALE: seats acknowledged to more than one buyer: {dup:?}");
    }
    let dup = twice(final_sold);
    if !dup.is_empty() {
        bail!("DOUBLE SALE: the final state lists seats twice: {dup:?}");
    }
    let fin: BTreeSet<T> = final_sold.iter().copied().collect();
    let lost: Vec<T> = acked.iter().copied().filter(|s| !fin.contains(s)).collect();
    if !lost.is_empty() {
        bail!(
            "LOST: {} acknowledged sales missing from the final state, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        );
    }
    let known: BTreeSet<T> = acked.iter().chain(unknown).copied().collect();
    let phantom: Vec<T> = fin.iter().copied().filter(|s| !known.contains(s)).collect();
    if !phantom.is_empty() {
        bail!(
            "PHANTOM: {} seats sold that no buyer was told of, e.g. {:?}",
            phantom.len(),
            &phantom[..phantom.len().min(5)]
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sales_check_catches_double_lost_and_phantom_sales() {
        assert!(check_sales(&[1, 2, 3], &[], &[3, 2, 1]).is_ok());
        assert!(check_sales::<u32>(&[], &[], &[]).is_ok());
        let e = check_sales(&[1, 2, 2, 3], &[], &[1, 2, 3])
            .unwrap_err()
            .to_string();
        assert!(e.contains("DOUBLE SALE") && e.contains("{2}"), "{e}");
        let e = check_sales(&[1, 2], &[], &[1, 2, 2])
            .unwrap_err()
            .to_string();
        assert!(e.contains("DOUBLE SALE"), "{e}");
        let e = check_sales(&[1, 2, 3], &[], &[1, 3])
            .unwrap_err()
            .to_string();
        assert!(e.contains("LOST") && e.contains("[2]"), "{e}");
        let e = check_sales(&[1], &[], &[1, 9]).unwrap_err().to_string();
        assert!(e.contains("PHANTOM") && e.contains("[9]"), "{e}");
        // A confirm with no answer may or may not have taken effect.
        assert!(check_sales(&[1], &[9], &[1, 9]).is_ok());
        assert!(check_sales(&[1], &[9], &[1]).is_ok());
        // Per-event seats: the same seat number on two events is two seats.
        assert!(check_sales(&[(0, 1), (1, 1)], &[], &[(1, 1), (0, 1)]).is_ok());
    }

    #[test]
    fn pool_hands_out_each_seat_until_taken_and_then_never() {
        let mut pool = Pool::new(2, 10);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut taken = BTreeSet::new();
        while let Some((ev, seats)) = pool.pick(&mut rng, 4) {
            assert!(!seats.is_empty() && seats.len() <= 4);
            for &s in &seats {
                assert!(s < 10);
                assert!(
                    taken.insert((ev, s)),
                    "seat {ev}/{s} handed out after it was taken"
                );
            }
            pool.take(ev, &seats);
        }
        assert_eq!(taken.len(), 20);
    }

    #[test]
    fn buckets_and_unavailability_window() {
        assert_eq!(buckets(&[0, 99, 100, 250, 999], 100, 300), vec![2, 1, 2]);
        assert_eq!(buckets(&[], 100, 0), vec![0]);
        // Kill at 1000 ms: writes invoked before it do not count; the first
        // answered write invoked after it completes at 2300.
        let writes = [(900, 2100), (1000, 2300), (1500, 2400), (2500, 2510)];
        assert_eq!(unavailability_ms(&writes, 1000), Some(1300.0));
        assert_eq!(unavailability_ms(&writes, 3000), None);
    }
}
