//! The waiting-room workload: users join one event's queue (most before the
//! sale starts, the rest after, at random times), poll their place on random
//! nodes, and once admitted hold with their admission and book (or do nothing
//! and let the session end: a no-show). Now and then a waiting user tries to
//! hold without an admission, and an admitted one tries another user's. The
//! cluster nemeses run meanwhile. After the heal the harness reads every
//! user's final place (from any node that has it) and runs `checker::queue`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::checker::queue::{
    check, AdmissionUsed, FinalPlace, HoldAttempt, Observation, QueueFacts,
};
use crate::checker::Verdict;
use crate::workload::answer;

/// Users of the queue.
pub const USERS: usize = 40;
/// Of which join before the sale starts.
const PREQUEUE_USERS: usize = 24;
/// The sale starts this long after the queue is set up.
const PREQUEUE_FOR: Duration = Duration::from_secs(6);
/// Users admitted a minute.
const ADMIT_PER_MINUTE: u32 = 120;
/// Open sessions at most.
const ACTIVE_MAX: u32 = 5;
/// An admitted session's length (the shortest a queue may have).
const SESSION_TTL_S: u64 = 10;
/// Tickets in the event (general admission): never the limit.
const CAPACITY: u32 = 1000;
/// Timeout of one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest the harness looks for the final places after the heal.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The order the harness gives the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Order {
    /// Shuffled at the start: what a real on-sale uses.
    RandomPrequeue,
    /// Join order: the pre-queue checker must fail it.
    Fifo,
}

/// A run's waiting room: its event and what the users saw.
pub struct QueueRun {
    http: reqwest::Client,
    event: u64,
    sale_starts: Instant,
    facts: Mutex<QueueFacts>,
    /// The last admission token each user was shown (for the thieves).
    tokens: Mutex<BTreeMap<String, String>>,
    t0: Instant,
}

fn rfc3339(ms: u64) -> String {
    boxoffice_node::api::rfc3339_ms(ms as i64)
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl QueueRun {
    /// Creates the event and its queue through `nodes` with `admin_token`.
    pub async fn setup(
        nodes: &[String],
        admin_token: &str,
        t0: Instant,
        order: Order,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .no_proxy()
            .build()?;
        let call = |method: reqwest::Method, path: String, body: Value| {
            let http = http.clone();
            async move {
                crate::workload::admin_call(&http, nodes, admin_token, method, &path, body).await
            }
        };
        let venue = call(
            reqwest::Method::POST,
            "/admin/v1/venues".into(),
            serde_json::to_value(boxoffice_api::NewVenue::new(
                "Jepsen Queue Arena",
                "Nowhere",
                0.0,
                0.0,
                boxoffice_api::NewLayout::GeneralAdmission {
                    capacity: CAPACITY,
                    price_cents: 5000,
                },
            ))?,
        )
        .await?;
        let event = call(
            reqwest::Method::POST,
            "/admin/v1/events".into(),
            serde_json::to_value(boxoffice_api::NewEvent {
                name: "Jepsen Queue Night".into(),
                description: String::new(),
                category: "concert".into(),
                venue_id: venue["venue_id"].as_u64().context("venue id")?,
                performer_ids: vec![],
                starts_at: "2031-01-01T20:00:00Z".into(),
                hold_ttl_s: Some(30),
                per_user_cap: Some(4),
            })?,
        )
        .await?;
        let event = event["event_id"].as_u64().context("event id")?;
        let now = wall_ms();
        let settings = boxoffice_api::QueueSettings {
            prequeue_opens_at: rfc3339(now.saturating_sub(1000)),
            sale_starts_at: rfc3339(now + PREQUEUE_FOR.as_millis() as u64),
            admit_per_minute: ADMIT_PER_MINUTE,
            active_max: ACTIVE_MAX,
            session_ttl_s: Some(SESSION_TTL_S),
            order: Some(match order {
                Order::RandomPrequeue => boxoffice_api::QueueOrderName::RandomPrequeue,
                Order::Fifo => boxoffice_api::QueueOrderName::Fifo,
            }),
        };
        call(
            reqwest::Method::PUT,
            format!("/admin/v1/events/{event}/queue"),
            serde_json::to_value(settings)?,
        )
        .await?;
        Ok(QueueRun {
            http,
            event,
            sale_starts: Instant::now() + PREQUEUE_FOR,
            facts: Mutex::new(QueueFacts {
                admit_per_minute: ADMIT_PER_MINUTE,
                active_max: ACTIVE_MAX,
                // What the checker expects of a waiting room: shuffled.
                shuffled: true,
                ..QueueFacts::default()
            }),
            tokens: Mutex::new(BTreeMap::new()),
            t0,
        })
    }

    fn us(&self) -> u64 {
        self.t0.elapsed().as_micros() as u64
    }

    /// Whether a hold succeeded, at what state-machine time, and its id.
    async fn hold(
        &self,
        node: &str,
        token: &str,
        key: &str,
        admission: Option<&str>,
    ) -> (bool, Option<u64>, Option<String>) {
        let mut r = self
            .http
            .post(format!("{node}/v1/holds"))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(&json!({"event_id": self.event, "quantity": 1}));
        if let Some(a) = admission {
            r = r.header(boxoffice_api::ADMISSION_HEADER, a);
        }
        match answer(r.send().await).await {
            Some(v) => (
                true,
                v["applied"]["time_ms"].as_u64(),
                v["hold_id"].as_str().map(String::from),
            ),
            None => (false, None, None),
        }
    }

    /// One user's life until `deadline`.
    pub async fn user(
        self: Arc<Self>,
        index: usize,
        token: String,
        nodes: Vec<String>,
        deadline: Instant,
        seed: u64,
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let name = format!("queue-user-{index}");
        // Pre-queue users join at once; the others at a random time after the start.
        if index >= PREQUEUE_USERS {
            let after = Duration::from_millis(rng.gen_range(500..20_000));
            tokio::time::sleep_until((self.sale_starts + after).into()).await;
        }
        let node = |rng: &mut StdRng| nodes[rng.gen_range(0..nodes.len())].clone();
        // Join, until answered (a join is idempotent: retrying is safe).
        loop {
            if Instant::now() >= deadline {
                return;
            }
            let r = self
                .http
                .post(format!("{}/v1/events/{}/queue", node(&mut rng), self.event))
                .bearer_auth(&token)
                .send()
                .await;
            if let Some(v) = answer(r).await {
                if let Some(t) = v["ticket"].as_u64() {
                    self.facts
                        .lock()
                        .unwrap()
                        .acked_joins
                        .insert(name.clone(), t);
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let no_show = rng.gen_bool(0.3);
        let mut held = false;
        let mut n = 0u64;
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(200..600))).await;
            n += 1;
            let start_us = self.us();
            let r = self
                .http
                .get(format!(
                    "{}/v1/events/{}/queue/me",
                    node(&mut rng),
                    self.event
                ))
                .bearer_auth(&token)
                .send()
                .await;
            let Some(v) = answer(r).await else { continue };
            let end_us = self.us();
            let phase = v["phase"].as_str().unwrap_or_default().to_string();
            self.facts.lock().unwrap().observations.push(Observation {
                user: name.clone(),
                start_us,
                end_us,
                applied_index: v["applied"]["index"].as_u64().unwrap_or(0),
                phase: phase.clone(),
                position: v["position"].as_u64(),
                admitted_at_ms: v["admitted_at_ms"].as_u64(),
            });
            match phase.as_str() {
                "waiting" | "prequeue" if rng.gen_bool(0.1) => {
                    let (ok, t, _) = self
                        .hold(&node(&mut rng), &token, &format!("{name}-bare-{n}"), None)
                        .await;
                    self.facts.lock().unwrap().holds.push(HoldAttempt {
                        user: name.clone(),
                        admission: AdmissionUsed::None,
                        ok,
                        applied_time_ms: t,
                    });
                }
                "admitted" if !held => {
                    let Some(mine) = v["admission_token"].as_str().map(String::from) else {
                        continue;
                    };
                    let stolen = {
                        let mut tokens = self.tokens.lock().unwrap();
                        tokens.insert(name.clone(), mine.clone());
                        tokens
                            .iter()
                            .find(|(u, _)| **u != name)
                            .map(|(_, t)| t.clone())
                    };
                    if let Some(other) = stolen.filter(|_| rng.gen_bool(0.3)) {
                        let (ok, t, _) = self
                            .hold(
                                &node(&mut rng),
                                &token,
                                &format!("{name}-stolen-{n}"),
                                Some(&other),
                            )
                            .await;
                        self.facts.lock().unwrap().holds.push(HoldAttempt {
                            user: name.clone(),
                            admission: AdmissionUsed::Other,
                            ok,
                            applied_time_ms: t,
                        });
                    }
                    if no_show {
                        continue;
                    }
                    let target = node(&mut rng);
                    let key = format!("{name}-hold");
                    let (ok, t, hold_id) = self.hold(&target, &token, &key, Some(&mine)).await;
                    self.facts.lock().unwrap().holds.push(HoldAttempt {
                        user: name.clone(),
                        admission: AdmissionUsed::Own,
                        ok,
                        applied_time_ms: t,
                    });
                    let Some(hold_id) = hold_id.filter(|_| ok) else {
                        continue;
                    };
                    held = true;
                    // Book it (a box-office user confirms directly); retried
                    // under one key, so it books once.
                    for attempt in 0..10 {
                        let r = self
                            .http
                            .post(format!(
                                "{}/v1/holds/{hold_id}/confirm",
                                nodes[attempt % nodes.len()]
                            ))
                            .bearer_auth(&token)
                            .header("Idempotency-Key", format!("{name}-confirm"))
                            .json(&json!({"payment_ref": format!("{name}-pay")}))
                            .send()
                            .await;
                        if r.is_ok_and(|r| r.status().is_success() || r.status().is_client_error())
                        {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                }
                "done" | "expired" | "open" => return,
                _ => {}
            }
        }
    }

    /// After the heal: every user's final place (from whichever node has it)
    /// and the queue's pre-queue size, then the checkers.
    pub async fn check(
        &self,
        nodes: &[String],
        tokens: &[String],
        admin_token: &str,
    ) -> anyhow::Result<Vec<Verdict>> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let mut facts = self.facts.lock().unwrap().clone();
        let stats = loop {
            let mut found = None;
            for n in nodes {
                let r = self
                    .http
                    .get(format!("{n}/admin/v1/events/{}/queue", self.event))
                    .bearer_auth(admin_token)
                    .send()
                    .await;
                if let Some(v) = answer(r).await {
                    found = Some(v);
                    break;
                }
            }
            match found {
                Some(v) => break v,
                None if Instant::now() > deadline => {
                    anyhow::bail!("no node answers the queue's stats")
                }
                None => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        };
        facts.prequeue = stats["prequeue"].as_u64();
        for (i, token) in tokens.iter().enumerate() {
            let name = format!("queue-user-{i}");
            loop {
                let mut place = None;
                for n in nodes {
                    let r = self
                        .http
                        .get(format!("{n}/v1/events/{}/queue/me", self.event))
                        .bearer_auth(token)
                        .send()
                        .await;
                    if let Some(v) = answer(r).await {
                        place = Some(v);
                        break;
                    }
                }
                if let Some(v) = place {
                    facts.final_places.insert(
                        name.clone(),
                        FinalPlace {
                            ticket: v["ticket"].as_u64().unwrap_or(u64::MAX),
                            position: v["position"].as_u64(),
                            phase: v["phase"].as_str().unwrap_or_default().to_string(),
                            admitted_at_ms: v["admitted_at_ms"].as_u64(),
                            session_ends_at_ms: v["session_ends_at_ms"].as_u64(),
                        },
                    );
                    break;
                }
                // Not found anywhere: a lost join only if it was acknowledged
                // (and the checker says so); keep looking until the deadline.
                if !facts.acked_joins.contains_key(&name) || Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        let mut verdicts = check(&facts);
        if let Some(v) = verdicts.first_mut() {
            v.notes.push(format!(
                "queue: {} joined, {} pre-queue, {} admitted, {} finished, {} no-shows",
                stats["joined"],
                stats["prequeue"],
                stats["admitted"],
                stats["finished"],
                stats["no_shows"]
            ));
        }
        Ok(verdicts)
    }
}
