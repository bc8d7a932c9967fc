//! The hot on-sale: one fresh event with many seats, C concurrent buyers each
//! holding random available seats (1–4 per hold) and confirming them, for a
//! bounded time. Prints holds/s, confirms/s and latency percentiles, then checks
//! that no seat was sold twice.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boxoffice_client::{
    Client, ClientConfig, Consistency, NewEvent, NewLayout, NewVenue, ProblemCode, SeatStatus,
    Selection,
};
use rand::{Rng, SeedableRng};

use crate::stats::percentile;

pub async fn onsale(
    dir: PathBuf,
    seats: u32,
    clients: usize,
    duration_s: u64,
    holds_max: u64,
    seed: u64,
) -> anyhow::Result<()> {
    let info = crate::cluster::ClusterInfo::load(&dir)?;
    let urls = info.urls();
    let mut cfg = ClientConfig::new(urls.clone(), &info.admin_token);
    cfg.attempts_max = 20;
    let admin = Client::new(cfg.clone())?;
    let rows = seats.div_ceil(50);
    let venue = arena(&admin, &format!("Bench Arena {seed}"), rows).await?;
    let event = admin
        .create_event(&NewEvent {
            name: "Bench On-Sale".into(),
            description: "benchmark".into(),
            category: "concert".into(),
            venue_id: venue,
            performer_ids: vec![],
            starts_at: "2030-06-01T20:00:00Z".into(),
            hold_ttl_s: Some(600),
            per_user_cap: Some(rows * 50),
        })
        .await?
        .event_id;
    let total = rows * 50;
    println!(
        "event {event}: {total} seats, {clients} buyers, {duration_s} s max, nodes {}",
        urls.join(" ")
    );
    cfg.token = info.user_token.clone();
    let user = Client::new(cfg)?;
    let hold_lat = Arc::new(Mutex::new(Vec::new()));
    let confirm_lat = Arc::new(Mutex::new(Vec::new()));
    let sold = Arc::new(Mutex::new(Vec::<u32>::new()));
    let conflicts = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let holds_done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let until = start + Duration::from_secs(duration_s);
    let mut tasks = Vec::new();
    for i in 0..clients {
        // Each buyer a user of its own, new for every run.
        let user = user.with_token(info.mint_user(&format!("onsale-{event}-{i}"))?);
        let (user, hold_lat, confirm_lat, sold, conflicts, holds_done) = (
            user.clone(),
            hold_lat.clone(),
            confirm_lat.clone(),
            sold.clone(),
            conflicts.clone(),
            holds_done.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed * 1000 + i as u64);
            while Instant::now() < until
                && holds_done.load(std::sync::atomic::Ordering::Relaxed) < holds_max
            {
                let n = rng.gen_range(1..=4u32);
                let first = rng.gen_range(0..total - n);
                let t = Instant::now();
                let r = user
                    .hold(event, Selection::Seats((first..first + n).collect()))
                    .await;
                hold_lat
                    .lock()
                    .unwrap()
                    .push(t.elapsed().as_micros() as u64);
                holds_done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let h = match r {
                    Ok(h) => h,
                    Err(e) if e.code() == Some(ProblemCode::SeatUnavailable) => {
                        conflicts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        continue;
                    }
                    Err(e) => {
                        eprintln!("hold failed: {e}");
                        continue;
                    }
                };
                let t = Instant::now();
                match user.confirm(&h.hold_id, "bench").await {
                    Ok(b) => {
                        confirm_lat
                            .lock()
                            .unwrap()
                            .push(t.elapsed().as_micros() as u64);
                        sold.lock().unwrap().extend(b.seat_ids);
                    }
                    Err(e) => eprintln!("confirm failed: {e}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut hl = hold_lat.lock().unwrap().clone();
    let mut cl = confirm_lat.lock().unwrap().clone();
    hl.sort_unstable();
    cl.sort_unstable();
    let sold = sold.lock().unwrap().clone();
    println!("| metric | value |\n|---|---|");
    println!("| elapsed | {elapsed:.1} s |");
    println!("| hold attempts/s | {:.0} |", hl.len() as f64 / elapsed);
    println!(
        "| holds granted/s | {:.0} |",
        (hl.len() as u64 - conflicts.load(std::sync::atomic::Ordering::Relaxed)) as f64 / elapsed
    );
    println!(
        "| confirmed bookings/s | {:.0} |",
        cl.len() as f64 / elapsed
    );
    println!("| seats sold | {} of {total} |", sold.len());
    println!(
        "| hold latency p50 / p99 / p999 | {:.1} / {:.1} / {:.1} ms |",
        percentile(&hl, 0.5) as f64 / 1e3,
        percentile(&hl, 0.99) as f64 / 1e3,
        percentile(&hl, 0.999) as f64 / 1e3
    );
    println!(
        "| confirm latency p50 / p99 / p999 | {:.1} / {:.1} / {:.1} ms |",
        percentile(&cl, 0.5) as f64 / 1e3,
        percentile(&cl, 0.99) as f64 / 1e3,
        percentile(&cl, 0.999) as f64 / 1e3
    );
    let map = admin.seats(event, Consistency::Linearizable).await?;
    let final_sold: Vec<u32> = map
        .seats
        .iter()
        .filter(|s| s.status == SeatStatus::Sold)
        .map(|s| s.seat_id)
        .collect();
    crate::surge::check_sales(&sold, &[], &final_sold)?;
    println!(
        "check: {} seats sold, all distinct, seat map agrees (sold = {})",
        sold.len(),
        map.counts.sold
    );
    Ok(())
}

/// A venue of `rows` rows of 50 seats (5,000 cents each), in sections of up to
/// 100 rows; its id.
pub async fn arena(admin: &Client, name: &str, rows: u32) -> anyhow::Result<u64> {
    Ok(admin
        .create_venue(&NewVenue::new(
            name,
            "Benchtown",
            0.0,
            0.0,
            NewLayout::Seated(
                (0..rows.div_ceil(100))
                    .map(|sec| {
                        (
                            format!("S{sec}"),
                            (sec * 100..(sec * 100 + 100).min(rows))
                                .map(|r| (format!("R{r}"), 50, 5000))
                                .collect(),
                        )
                    })
                    .collect(),
            ),
        ))
        .await?
        .venue_id)
}
