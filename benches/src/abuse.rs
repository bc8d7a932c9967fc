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
//! internet. The abuser is a child process at the lowest CPU priority
//! (`nice -n 19`): on a small machine its own request generation would
//! otherwise take the CPU the nodes need, which a bot elsewhere does not.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// What the abuser's requests got, as its process reports them (one JSON line).
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct FloodCounts {
    sent: u64,
    accepted: u64,
    limited: u64,
    other: u64,
    seconds: f64,
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
                capacity: 200_000,
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
            per_user_cap: Some(200_000),
        })
        .await?
        .event_id;
    let signer = Signer::hs256(&info.token_secret);
    let honest_http = http_from("127.0.0.2")?;
    let abuser_token = signer.mint("abuser", TOKEN_TTL_S)?;
    println!(
        "abuse: event {event}; {} honest buyers per phase, {} holds each, 1/s; abuser keeps {} holds in flight; {} x ({} s quiet + {} s abused)",
        args.honest, args.holds_per_buyer, args.abuser_in_flight, args.rounds, args.phase_s, args.phase_s
    );
    println!("durability: 3 replicas, majority fsync before ack; limits: the defaults");
    let mut quiet_lat = Vec::new();
    let mut abused_lat = Vec::new();
    let mut honest_refused = std::collections::BTreeMap::<u16, u64>::new();
    let mut abuser = FloodCounts::default();
    // Round 0 is a quiet warm-up (connections, caches), not counted.
    for round in 0..=args.rounds {
        for abused in [false, true] {
            if round == 0 && abused {
                continue;
            }
            let flood = if abused {
                Some(
                    tokio::process::Command::new("nice")
                        .args(["-n", "19"])
                        .arg(std::env::current_exe()?)
                        .arg("abuse-flood")
                        .args(["--event", &event.to_string()])
                        .args(["--in-flight", &args.abuser_in_flight.to_string()])
                        .args(["--duration-s", &args.phase_s.to_string()])
                        .args(["--token", &abuser_token])
                        .args(urls.iter().map(|u| format!("--url={u}")))
                        .stdout(std::process::Stdio::piped())
                        .kill_on_drop(true)
                        .spawn()?,
                )
            } else {
                None
            };
            let mut buyers = Vec::new();
            for i in 0..args.honest {
                let user = format!("honest-{event}-{round}-{}-{i}", u8::from(abused));
                let token = signer.mint(&user, TOKEN_TTL_S)?;
                let (http, urls) = (honest_http.clone(), urls.clone());
                let holds = args.holds_per_buyer;
                let pace = Duration::from_millis(args.phase_s * 1000 / u64::from(holds.max(1)));
                buyers.push(tokio::spawn(async move {
                    // Spread the buyers' starts over one pace interval.
                    tokio::time::sleep(pace * (i % 64) as u32 / 64).await;
                    let (mut lat, mut refused) = (Vec::new(), Vec::new());
                    for h in 0..holds {
                        let next = Instant::now() + pace;
                        let url = &urls[(i + h as usize) % urls.len()];
                        let t = Instant::now();
                        let (status, id) =
                            hold(&http, url, &token, event, &format!("{user}-{h}")).await;
                        if status == 201 {
                            lat.push(t.elapsed().as_micros() as u64);
                        } else {
                            refused.push(status);
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
                for status in refused {
                    *honest_refused.entry(status).or_default() += 1;
                }
                match (round, abused) {
                    (0, _) => {}
                    (_, true) => abused_lat.extend(lat),
                    (_, false) => quiet_lat.extend(lat),
                }
            }
            if let Some(child) = flood {
                let out = child.wait_with_output().await?;
                anyhow::ensure!(out.status.success(), "the abuser process failed");
                let c: FloodCounts = serde_json::from_slice(&out.stdout)?;
                abuser.sent += c.sent;
                abuser.accepted += c.accepted;
                abuser.limited += c.limited;
                abuser.other += c.other;
                abuser.seconds += c.seconds;
            }
        }
    }
    quiet_lat.sort_unstable();
    abused_lat.sort_unstable();
    let ms = |v: &[u64], p: f64| percentile(v, p) as f64 / 1000.0;
    println!(
        "honest holds, quiet:  n={} p50 {:.2} ms p99 {:.2} ms",
        quiet_lat.len(),
        ms(&quiet_lat, 0.5),
        ms(&quiet_lat, 0.99)
    );
    println!(
        "honest holds, abused: n={} p50 {:.2} ms p99 {:.2} ms",
        abused_lat.len(),
        ms(&abused_lat, 0.5),
        ms(&abused_lat, 0.99)
    );
    println!(
        "honest p99 abused/quiet: {:.2}x; honest holds refused, by status (0: no answer): {honest_refused:?}",
        ms(&abused_lat, 0.99) / ms(&quiet_lat, 0.99).max(0.001)
    );
    let per_s = |n: u64| n as f64 / abuser.seconds.max(0.001);
    println!(
        "abuser (nice 19): sent {:.0}/s, accepted {:.2}/s, 429 {:.0}/s, other {:.0}/s ({} holds accepted in {:.0} s)",
        per_s(abuser.sent),
        per_s(abuser.accepted),
        per_s(abuser.limited),
        per_s(abuser.other),
        abuser.accepted,
        abuser.seconds
    );
    Ok(())
}

/// The abuser: `in_flight` holds at a time on `event` by one user from
/// 127.0.0.3, over every node, for `duration`; prints its counts.
pub async fn flood(
    urls: Vec<String>,
    token: String,
    event: u64,
    in_flight: usize,
    duration: Duration,
) -> anyhow::Result<()> {
    let http = http_from("127.0.0.3")?;
    let counts: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
    let started = Instant::now();
    let until = started + duration;
    let tag = std::process::id();
    let mut bots = Vec::new();
    for b in 0..in_flight {
        let (http, token, urls, counts) =
            (http.clone(), token.clone(), urls.clone(), counts.clone());
        bots.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < until {
                let url = &urls[(b + n as usize) % urls.len()];
                let key = format!("abuse-{tag}-{b}-{n}");
                n += 1;
                let i = match hold(&http, url, &token, event, &key).await.0 {
                    201 => 1,
                    429 => 2,
                    _ => 3,
                };
                counts[0].fetch_add(1, Ordering::Relaxed);
                counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for b in bots {
        b.await?;
    }
    let c = |i: usize| counts[i].load(Ordering::Relaxed);
    let report = FloodCounts {
        sent: c(0),
        accepted: c(1),
        limited: c(2),
        other: c(3),
        seconds: started.elapsed().as_secs_f64(),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
