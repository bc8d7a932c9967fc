//! Read throughput and freshness.
//!
//! Throughput: event views and seat maps spread over every node, answered from
//! each node's replica (follower reads), then the same reads forced linearizable
//! (read index through the group leader), then a trivial axum handler returning a
//! body of the same size on this machine: how close the reads come to the HTTP
//! stack's own limit.
//!
//! Freshness: a sale is acknowledged by the shard leader; the time until each
//! follower's seat map shows it (polled) and until its SSE stream delivers it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use boxoffice_client::{
    Client, ClientConfig, NewEvent, NewLayout, NewPerformer, NewVenue, Selection,
};

use crate::cluster::ClusterInfo;
use crate::stats::{run_workers, summarize, Summary};

/// Longest a follower may take to show a sale before the sample counts as lost.
pub const FRESHNESS_TIMEOUT: Duration = Duration::from_secs(5);

struct ModeResult {
    name: String,
    rps: f64,
    lat: Summary,
    errors: u64,
}

async fn drive(name: &str, urls: Arc<Vec<String>>, workers: usize, limit: Duration) -> ModeResult {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(workers)
        .build()
        .expect("static client config");
    let samples = run_workers(workers, usize::MAX, limit, move |_, i| {
        let (http, url) = (http.clone(), urls[i % urls.len()].clone());
        async move {
            let r = http.get(&url).send().await?;
            anyhow::ensure!(r.status().is_success(), "{url}: {}", r.status());
            r.bytes().await?;
            Ok(())
        }
    })
    .await;
    let lat = summarize(samples.latencies.into_iter().map(|(_, l)| l).collect());
    ModeResult {
        name: name.into(),
        rps: lat.count as f64 / samples.secs,
        lat,
        errors: samples.errors,
    }
}

pub async fn run(
    info: &ClusterInfo,
    workers: usize,
    limit: Duration,
    samples: usize,
    trivial_port: u16,
) -> anyhow::Result<()> {
    let mut cfg = ClientConfig::new(info.urls(), &info.admin_token);
    cfg.attempts_max = 20;
    let admin = Client::new(cfg.clone())?;
    let venue = admin
        .create_venue(&NewVenue::new(
            "Reads Bench Hall",
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
    let perf = admin
        .create_performer(&NewPerformer {
            name: "Reads Bench Quartet".into(),
            description: String::new(),
        })
        .await?
        .performer_id;
    let seated = admin
        .create_event(&NewEvent {
            name: "Reads Bench Night".into(),
            description: "a seated event for read benchmarks".into(),
            category: "concert".into(),
            venue_id: venue,
            performer_ids: vec![perf],
            starts_at: "2030-01-01T20:00:00Z".into(),
            hold_ttl_s: Some(600),
            per_user_cap: Some(1000),
        })
        .await?
        .event_id;
    // A user of its own for this run's writes (a user's live writes per shard
    // are bounded; the dev cluster's own user may have used them up).
    cfg.token = info.mint_user(&format!("reads-bench-{seated}"))?;
    let user = Client::new(cfg.clone())?;
    // Some seats sold and held, so the seat map is not trivial.
    for s in 0..20u32 {
        let h = user
            .hold(seated, Selection::Seats(vec![s * 7, s * 7 + 1]))
            .await?;
        if s % 2 == 0 {
            user.confirm(&h.hold_id, "bench").await?;
        }
    }
    let urls_for = |suffix: &str| -> Arc<Vec<String>> {
        Arc::new(
            info.addrs
                .iter()
                .flat_map(|a| {
                    [
                        format!("http://{a}/v1/events/{seated}{suffix}"),
                        format!("http://{a}/v1/events/{seated}/seats{suffix}"),
                    ]
                })
                .collect(),
        )
    };
    let local = urls_for("");
    let linear = urls_for("?consistency=linearizable");
    // The trivial handler returns a body as large as the average of the real ones.
    let http = reqwest::Client::new();
    let mut size = 0;
    for u in local.iter().take(2) {
        size += http.get(u).send().await?.bytes().await?.len();
    }
    let body = Arc::new(format!("{{\"pad\":\"{}\"}}", "x".repeat(size / 2)));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", trivial_port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{trivial_port}"))?;
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let body = body.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    (*body).clone(),
                )
            }
        }),
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let trivial = Arc::new(vec![format!("http://127.0.0.1:{trivial_port}/")]);

    println!(
        "reads: event {seated} (1000 seats), {workers} workers, {} s per mode, nodes {}",
        limit.as_secs(),
        info.addrs.join(" ")
    );
    let mut results = Vec::new();
    for (name, urls) in [
        ("follower reads (any node, local replica)", local.clone()),
        ("linearizable (read index via the leader)", linear),
        ("trivial axum handler, same body size", trivial),
    ] {
        // Warm the connections and caches, unmeasured.
        drive(name, urls.clone(), workers, Duration::from_millis(500)).await;
        results.push(drive(name, urls, workers, limit).await);
    }
    server.abort();
    println!("\n### Event view + seat map reads\n\n| mode | reads/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|");
    for r in &results {
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {} |",
            r.name, r.rps, r.lat.p50_ms, r.lat.p99_ms, r.errors
        );
    }
    println!(
        "\nfollower reads are {:.1}x linearizable and {:.0}% of the trivial handler's throughput",
        results[0].rps / results[1].rps.max(0.001),
        100.0 * results[0].rps / results[2].rps.max(0.001)
    );
    freshness(info, &admin, &cfg, samples).await
}

async fn freshness(
    info: &ClusterInfo,
    admin: &Client,
    cfg: &ClientConfig,
    samples: usize,
) -> anyhow::Result<()> {
    let venue = admin
        .create_venue(&NewVenue::new(
            "Freshness Bench Club",
            "Benchtown",
            0.0,
            0.0,
            NewLayout::GeneralAdmission {
                capacity: 100_000,
                price_cents: 1000,
            },
        ))
        .await?
        .venue_id;
    let event = admin
        .create_event(&NewEvent {
            name: "Freshness Bench".into(),
            description: String::new(),
            category: "concert".into(),
            venue_id: venue,
            performer_ids: vec![],
            starts_at: "2030-01-02T20:00:00Z".into(),
            hold_ttl_s: Some(600),
            per_user_cap: Some(100_000),
        })
        .await?
        .event_id;
    let shard = admin
        .event(event, boxoffice_client::Consistency::Linearizable)
        .await?
        .event
        .shard
        .context("event shard")?;
    // The shard's leader takes the writes; every other node is a follower.
    let cluster = admin.cluster().await?;
    let leader_id = cluster
        .groups
        .iter()
        .find(|g| g.group == shard)
        .and_then(|g| g.leader)
        .context("shard leader")?;
    let leader_addr = info
        .ids
        .iter()
        .zip(&info.addrs)
        .find(|(id, _)| **id == leader_id)
        .map(|(_, a)| a.clone())
        .context("leader address")?;
    let followers: Vec<String> = info
        .ids
        .iter()
        .zip(&info.addrs)
        .filter(|(id, _)| **id != leader_id)
        .map(|(_, a)| a.clone())
        .collect();
    anyhow::ensure!(!followers.is_empty(), "no follower to measure");
    let mut lcfg = cfg.clone();
    lcfg.nodes = vec![format!("http://{leader_addr}")];
    let writer = Client::new(lcfg)?;

    // SSE on every follower: arrival time of each `sold` change, by hold id.
    let arrivals: Arc<Mutex<HashMap<(usize, String), Instant>>> = Arc::default();
    let http = reqwest::Client::new();
    let mut streams = Vec::new();
    for (fi, f) in followers.iter().enumerate() {
        let resp = http
            .get(format!("http://{f}/v1/events/{event}/seats/stream"))
            .send()
            .await?;
        anyhow::ensure!(
            resp.status().is_success(),
            "stream on {f}: {}",
            resp.status()
        );
        let arrivals = arrivals.clone();
        streams.push(tokio::spawn(async move {
            let mut resp = resp;
            let mut buf = String::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let frame: String = buf.drain(..end + 2).collect();
                    let now = Instant::now();
                    if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data:")) {
                        if let Ok(v) = serde_json::from_str::<serde_json::Value>(data.trim()) {
                            if v["kind"] == "sold" {
                                if let Some(h) = v["hold_id"].as_str() {
                                    arrivals
                                        .lock()
                                        .unwrap_or_else(|e| e.into_inner())
                                        .insert((fi, h.to_string()), now);
                                }
                            }
                        }
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut poll_lat = Vec::new();
    let mut sse_lat = Vec::new();
    let mut sse_before_ack = 0;
    let mut lost = 0;
    for i in 0..samples {
        let h = writer.hold(event, Selection::Quantity(1)).await?;
        writer.confirm(&h.hold_id, "bench").await?;
        let acked = Instant::now();
        let sold = (i + 1) as u64;
        for f in &followers {
            loop {
                let v: serde_json::Value = http
                    .get(format!("http://{f}/v1/events/{event}/seats"))
                    .send()
                    .await?
                    .json()
                    .await?;
                if v["sold"].as_u64().unwrap_or(0) >= sold {
                    poll_lat.push(acked.elapsed().as_micros() as u64);
                    break;
                }
                if acked.elapsed() > FRESHNESS_TIMEOUT {
                    lost += 1;
                    break;
                }
            }
        }
        // Give the streams the same bound.
        let deadline = acked + FRESHNESS_TIMEOUT;
        for fi in 0..followers.len() {
            loop {
                let at = arrivals
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&(fi, h.hold_id.clone()))
                    .copied();
                match at {
                    Some(t) if t <= acked => {
                        sse_before_ack += 1;
                        sse_lat.push(0);
                        break;
                    }
                    Some(t) => {
                        sse_lat.push((t - acked).as_micros() as u64);
                        break;
                    }
                    None if Instant::now() > deadline => {
                        lost += 1;
                        break;
                    }
                    None => tokio::time::sleep(Duration::from_micros(200)).await,
                }
            }
        }
    }
    for s in streams {
        s.abort();
    }
    let (p, s) = (summarize(poll_lat), summarize(sse_lat));
    println!("\n### Freshness: sale acknowledged by the shard leader → visible on a follower ({samples} sales × {} followers)\n", followers.len());
    println!("| path | p50 ms | p99 ms | samples |\n|---|---|---|---|");
    println!(
        "| follower seat map (polled) | {:.2} | {:.2} | {} |",
        p.p50_ms, p.p99_ms, p.count
    );
    println!(
        "| follower SSE stream | {:.2} | {:.2} | {} ({sse_before_ack} arrived before the ack) |",
        s.p50_ms, s.p99_ms, s.count
    );
    anyhow::ensure!(
        lost == 0,
        "{lost} sales never showed up on a follower within {FRESHNESS_TIMEOUT:?}"
    );
    Ok(())
}
