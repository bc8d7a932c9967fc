//! Abuse under the default rate limits: one abusive user floods holds on an
//! event from its own address while honest buyers (distinct users, another
//! address) hold and release at a human pace. Quiet and abused phases alternate
//! in one run, with fresh honest users in each, and the figures are what the
//! abuser got through per second and the honest holds' latency in each mode.
//!
//! Run it against a cluster with its limits on (`boxoffice dev` without
//! `--no-rate-limits`). Honest buyers send from 127.0.0.2 and the abuser from
//! 127.0.0.3 (both loopback: the nodes listen on 127.0.0.1), so that each
//! address's own budget applies, as it would for buyers and a bot on the
//! internet.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boxoffice_client::{Client, ClientConfig, NewEvent, NewLayout, NewVenue};
use boxoffice_node::auth::Signer;

use crate::stats::percentile;

/// Lifetime of the tokens this bench mints.
const TOKEN_TTL_S: u64 = 3600;
/// Time allowed for one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

pub struct AbuseArgs {
    pub cluster_dir: PathBuf,
    /// Quiet/abused phase pairs.
    pub rounds: u32,
    /// Seconds per phase.
    pub phase_s: u64,
    /// Honest buyers per phase.
    pub honest: usize,
    /// Holds each honest buyer makes per phase (one a second; the default
    /// `rate_limits.user_event_holds` allows 12 per 10 minutes).
    pub holds_per_buyer: u32,
    /// Requests the abuser keeps in flight.
    pub abuser_in_flight: usize,
}

#[derive(Default)]
struct Abuser {
    sent: AtomicU64,
    accepted: AtomicU64,
    limited: AtomicU64,
    other: AtomicU64,
}

fn http_from(ip: &str) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>()?)
        .timeout(REQUEST_TIMEOUT)
        .no_proxy()
        .build()?)
}

/// One hold of one ticket: (status, hold id if made).
async fn hold(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    event: u64,
    key: &str,
) -> (u16, Option<String>) {
    let r = http
        .post(format!("{url}/v1/holds"))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&serde_json::json!({"event_id": event, "quantity": 1}))
        .send()
        .await;
    match r {
        Ok(r) => {
            let status = r.status().as_u16();
            let id = r
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|v| v["hold_id"].as_str().map(str::to_string));
            (status, id)
        }
        Err(_) => (0, None),
    }
}

pub async fn abuse(args: AbuseArgs) -> anyhow::Result<()> {
    let info = crate::cluster::ClusterInfo::load(&args.cluster_dir)?;
    let urls = info.urls();
    let mut cfg = ClientConfig::new(urls.clone(), &info.admin_token);
    cfg.attempts_max = 20;
    let admin = Client::new(cfg)?;
    let venue = admin
        .create_venue(&NewVenue::new(
            "Abuse Arena",
            "Benchtown",
            0.0,
            0.0,
            NewLayout::GeneralAdmission {
                capacity: 1_000_000,
                price_cents: 5000,
            },
        ))
        .await?
        .venue_id;
    let event = admin
        .create_event(&NewEvent {
            name: "Abuse On-Sale".into(),
            description: "benchmark".into(),
            category: "concert".into(),
            venue_id: venue,
            performer_ids: vec![],
            starts_at: "2030-06-01T20:00:00Z".into(),
            hold_ttl_s: Some(600),
            per_user_cap: Some(1_000_000),
        })
        .await?
        .event_id;
    let signer = Signer::hs256(&info.token_secret);
    let honest_http = http_from("127.0.0.2")?;
    let abuser_http = http_from("127.0.0.3")?;
    let abuser_token = signer.mint("abuser", TOKEN_TTL_S)?;
    println!(
        "abuse: event {event}; {} honest buyers per phase, {} holds each, 1/s; abuser keeps {} holds in flight; {} x ({} s quiet + {} s abused)",
        args.honest, args.holds_per_buyer, args.abuser_in_flight, args.rounds, args.phase_s, args.phase_s
    );
    println!(
        "durability: the cluster's own (3 replicas, WAL fsync per entry); limits: the defaults"
    );
    let mut quiet_lat = Vec::new();
    let mut abused_lat = Vec::new();
    let mut honest_refused = 0u64;
    let abuser = Arc::new(Abuser::default());
    let mut abused_s = 0.0;
    for round in 0..args.rounds {
        for abused in [false, true] {
            let stop = Arc::new(AtomicBool::new(false));
            let mut bots = Vec::new();
            if abused {
                for b in 0..args.abuser_in_flight {
                    let (http, token, urls, stop, abuser) = (
                        abuser_http.clone(),
                        abuser_token.clone(),
                        urls.clone(),
                        stop.clone(),
                        abuser.clone(),
                    );
                    bots.push(tokio::spawn(async move {
                        let mut n = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            let url = &urls[(b + n as usize) % urls.len()];
                            let key = format!("abuse-{round}-{b}-{n}");
                            n += 1;
                            abuser.sent.fetch_add(1, Ordering::Relaxed);
                            match hold(&http, url, &token, event, &key).await.0 {
                                201 => abuser.accepted.fetch_add(1, Ordering::Relaxed),
                                429 => abuser.limited.fetch_add(1, Ordering::Relaxed),
                                _ => abuser.other.fetch_add(1, Ordering::Relaxed),
                            };
                        }
                    }));
                }
            }
            let started = Instant::now();
            let mut buyers = Vec::new();
            for i in 0..args.honest {
                let user = format!("honest-{round}-{}-{i}", u8::from(abused));
                let token = signer.mint(&user, TOKEN_TTL_S)?;
                let (http, urls) = (honest_http.clone(), urls.clone());
                let holds = args.holds_per_buyer;
                let pace = Duration::from_millis(args.phase_s * 1000 / u64::from(holds.max(1)));
                buyers.push(tokio::spawn(async move {
                    // Spread the buyers' starts over one pace interval.
                    tokio::time::sleep(pace * (i % 64) as u32 / 64).await;
                    let (mut lat, mut refused) = (Vec::new(), 0u64);
                    for h in 0..holds {
                        let next = Instant::now() + pace;
                        let url = &urls[(i + h as usize) % urls.len()];
                        let t = Instant::now();
                        let (status, id) =
                            hold(&http, url, &token, event, &format!("{user}-{h}")).await;
                        if status == 201 {
                            lat.push(t.elapsed().as_micros() as u64);
                        } else {
                            refused += 1;
                        }
                        if let Some(id) = id {
                            let _ = http
                                .delete(format!("{url}/v1/holds/{id}"))
                                .bearer_auth(&token)
                                .header("idempotency-key", format!("{user}-{h}-release"))
                                .send()
                                .await;
                        }
                        tokio::time::sleep_until(next.into()).await;
                    }
                    (lat, refused)
                }));
            }
            for b in buyers {
                let (lat, refused) = b.await?;
                honest_refused += refused;
                if abused {
                    abused_lat.extend(lat);
                } else {
                    quiet_lat.extend(lat);
                }
            }
            stop.store(true, Ordering::Relaxed);
            for b in bots {
                b.await?;
            }
            if abused {
                abused_s += started.elapsed().as_secs_f64();
            }
        }
    }
    quiet_lat.sort_unstable();
    abused_lat.sort_unstable();
    let ms = |v: &[u64], p: f64| percentile(v, p) as f64 / 1000.0;
    println!(
        "honest holds, quiet:  n={} p50 {:.2} ms p99 {:.2} ms",
        quiet_lat.len(),
        ms(&quiet_lat, 50.0),
        ms(&quiet_lat, 99.0)
    );
    println!(
        "honest holds, abused: n={} p50 {:.2} ms p99 {:.2} ms",
        abused_lat.len(),
        ms(&abused_lat, 50.0),
        ms(&abused_lat, 99.0)
    );
    println!(
        "honest p99 abused/quiet: {:.2}x; honest holds refused: {honest_refused}",
        ms(&abused_lat, 99.0) / ms(&quiet_lat, 99.0).max(0.001)
    );
    let per_s = |n: &AtomicU64| n.load(Ordering::Relaxed) as f64 / abused_s.max(0.001);
    println!(
        "abuser: sent {:.0}/s, accepted {:.2}/s, 429 {:.0}/s, other {:.0}/s ({} holds accepted in {abused_s:.0} s)",
        per_s(&abuser.sent),
        per_s(&abuser.accepted),
        per_s(&abuser.limited),
        per_s(&abuser.other),
        abuser.accepted.load(Ordering::Relaxed)
    );
    Ok(())
}
