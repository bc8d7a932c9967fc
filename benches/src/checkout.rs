//! The checkout path against a running dev cluster and its payments sandbox
//! (`boxoffice dev`): C concurrent buyers each hold a seat and pay for it,
//! either through the full checkout path (checkout → pay in the sandbox →
//! the sandbox's signed webhook → booked; the buyer polls its hold until it is
//! confirmed) or through the box-office direct confirm, in alternating rounds
//! of the same length, so both are measured side by side under the same
//! conditions. Prints bookings/s per round and their medians, the
//! checkout → confirmed latency percentiles, and checks that every payment
//! the sandbox took ended in a booking.
//!
//! Durability is the cluster's own (every write is committed by a majority of
//! the shard's 3 replicas, each fsyncing its log); the sandbox keeps its state
//! in memory, as a provider's test mode would be to its caller.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use boxoffice_client::{Client, ClientConfig, HoldState, NewEvent, Selection};

use crate::stats::percentile;

/// How often a paying buyer looks whether its hold is booked yet.
const POLL_EVERY: Duration = Duration::from_millis(10);
/// Longest a buyer waits for its booking before it counts the payment as lost.
const BOOKED_WITHIN: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path {
    Checkout,
    Direct,
}

pub async fn checkout(
    dir: PathBuf,
    clients: usize,
    rounds: usize,
    round_s: u64,
) -> anyhow::Result<()> {
    let info = crate::cluster::ClusterInfo::load(&dir)?;
    let file = boxoffice_node::dev::read_cluster_file(&dir)?;
    let sandbox = file
        .payments
        .context("the cluster file names no payments sandbox; start it with `boxoffice dev`")?;
    let urls = info.urls();
    let mut cfg = ClientConfig::new(urls.clone(), &info.admin_token);
    cfg.attempts_max = 20;
    let admin = Client::new(cfg.clone())?;
    let seats = 200_000u32.min((clients * rounds) as u32 * 2_000);
    let rows = seats.div_ceil(50);
    let venue = crate::onsale::arena(&admin, "Checkout Bench Hall", rows).await?;
    let event = admin
        .create_event(&NewEvent {
            name: "Checkout Bench".into(),
            description: "benchmark".into(),
            category: "concert".into(),
            venue_id: venue,
            performer_ids: vec![],
            starts_at: "2030-06-01T20:00:00Z".into(),
            hold_ttl_s: Some(600),
            per_user_cap: Some(seats),
        })
        .await?
        .event_id;
    println!(
        "event {event}: {seats} seats, {clients} buyers, {rounds} rounds of {round_s} s per path, sandbox {}",
        sandbox.url
    );
    let http = reqwest::Client::builder().no_proxy().build()?;
    let next_seat = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::<u64>::new()));
    let lost = Arc::new(AtomicU64::new(0));
    let mut per_round: Vec<(Path, f64)> = Vec::new();
    for round in 0..rounds * 2 {
        let path = if round % 2 == 0 {
            Path::Checkout
        } else {
            Path::Direct
        };
        let until = Instant::now() + Duration::from_secs(round_s);
        let booked = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..clients {
            let name = format!("checkout-{event}-{round}-{i}");
            let token = match path {
                // A buyer's token pays; a box-office token confirms directly.
                Path::Checkout => {
                    boxoffice_node::auth::Signer::hs256(&info.token_secret).mint(&name, 3600)?
                }
                Path::Direct => info.mint_user(&name)?,
            };
            let mut c = cfg.clone();
            c.token = token;
            let user = Client::new(c)?;
            let (http, sandbox_url, next_seat, latencies, lost, booked) = (
                http.clone(),
                sandbox.url.clone(),
                next_seat.clone(),
                latencies.clone(),
                lost.clone(),
                booked.clone(),
            );
            tasks.push(tokio::spawn(async move {
                while Instant::now() < until {
                    let seat = next_seat.fetch_add(1, Ordering::Relaxed) as u32;
                    if seat >= seats {
                        return;
                    }
                    let Ok(h) = user.hold(event, Selection::Seats(vec![seat])).await else {
                        continue;
                    };
                    match path {
                        Path::Direct => {
                            if user.confirm(&h.hold_id, "bench-box-office").await.is_ok() {
                                booked.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Path::Checkout => {
                            let t = Instant::now();
                            let Ok(c) = user.checkout(&h.hold_id).await else {
                                continue;
                            };
                            let paid = http
                                .post(format!(
                                    "{sandbox_url}/v1/payment_intents/{}/confirm",
                                    c.payment_id
                                ))
                                .form(&[
                                    ("payment_method", "pm_card_visa"),
                                    ("client_secret", &c.client_secret),
                                ])
                                .send()
                                .await
                                .is_ok_and(|r| r.status().is_success());
                            if !paid {
                                continue;
                            }
                            let deadline = Instant::now() + BOOKED_WITHIN;
                            loop {
                                match user.hold_status(&h.hold_id).await {
                                    Ok(st) if st.status == HoldState::Confirmed => {
                                        latencies
                                            .lock()
                                            .unwrap()
                                            .push(t.elapsed().as_micros() as u64);
                                        booked.fetch_add(1, Ordering::Relaxed);
                                        break;
                                    }
                                    _ if Instant::now() > deadline => {
                                        lost.fetch_add(1, Ordering::Relaxed);
                                        break;
                                    }
                                    _ => tokio::time::sleep(POLL_EVERY).await,
                                }
                            }
                        }
                    }
                }
            }));
        }
        for t in tasks {
            t.await?;
        }
        let rate = booked.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
        println!("round {round:2} {path:?}: {rate:8.1} bookings/s");
        per_round.push((path, rate));
    }
    let median = |p: Path| {
        let mut v: Vec<f64> = per_round
            .iter()
            .filter(|(q, _)| *q == p)
            .map(|(_, r)| *r)
            .collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (full, direct) = (median(Path::Checkout), median(Path::Direct));
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_unstable();
    println!("\nbookings/s, median of {rounds} rounds each, {clients} buyers:");
    println!("  checkout path (checkout, pay, webhook): {full:8.1}");
    println!("  direct confirm (box office):            {direct:8.1}");
    println!(
        "  ratio checkout/direct:                  {:8.2}",
        full / direct.max(f64::MIN_POSITIVE)
    );
    if !lat.is_empty() {
        println!(
            "checkout → confirmed latency (ms, {} bookings): p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
            lat.len(),
            percentile(&lat, 0.50) as f64 / 1000.0,
            percentile(&lat, 0.90) as f64 / 1000.0,
            percentile(&lat, 0.99) as f64 / 1000.0,
            *lat.last().unwrap() as f64 / 1000.0,
        );
    }
    let lost = lost.load(Ordering::Relaxed);
    println!(
        "payments taken and not booked within {} s: {lost}",
        BOOKED_WITHIN.as_secs()
    );
    anyhow::ensure!(lost == 0, "{lost} paid holds were not booked in time");
    Ok(())
}
