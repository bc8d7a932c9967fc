//! The payments workload: buyers (plain user tokens, no direct confirm) hold a
//! seat, check out and pay in the payments sandbox, which the harness runs in
//! its own process as the cluster's provider. Some pay at once, some are
//! declined first, some abandon the checkout, some pay only after their hold
//! has expired; some cancel their booking afterwards. Beside the cluster
//! nemeses, the sandbox's faults are switched on and off on a seeded schedule:
//! duplicate deliveries, delays (past a hold's expiry, so deliveries arrive out
//! of order and late), webhook outages and API outages. After the heal the
//! faults stop, the harness waits (bounded) for the webhooks and the shard
//! leaders' reconcilers and refund workers to finish, reads the provider's
//! books and the store's final state, and runs `checker::payments`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use boxoffice_node::payments::sandbox::{Faults, Sandbox, SandboxConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::checker::payments::{
    outgoing_webhooks, payments, FinalBooking, FinalRefund, PaymentFacts, Received,
};
use crate::checker::Verdict;
use crate::workload::answer;

/// Seats in the payments event.
pub const SEATS: u32 = 40;
/// Hold lifetime of the payments event (s).
const HOLD_TTL_S: u64 = 2;
/// Node settings the workload adds: a short grace and maximum so that late and
/// abandoned payments happen within a run, and a reconciler that runs often.
const PAYMENT_GRACE_S: u64 = 3;
const PAYMENT_HOLD_MAX_S: u64 = 5;
const RECONCILE_INTERVAL_MS: u64 = 500;
/// Longest the harness waits, after the heal, for payments and refunds to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeout of one request of a buyer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The sandbox's secrets for the run.
const SECRET_KEY: &str = "sk_test_jepsen";
const WEBHOOK_SECRET: &str = "whsec_jepsen";

/// A run's payments: the sandbox and what the buyers did.
pub struct Payments {
    pub sandbox: Arc<Sandbox>,
    listener: Option<tokio::net::TcpListener>,
    url: String,
    http: reqwest::Client,
    /// (hold id, buyer) of every hold a buyer checked out.
    holds: Mutex<Vec<(String, usize)>>,
    /// (booking id, buyer) of every booking a buyer saw.
    bookings: Mutex<BTreeSet<(String, usize)>>,
    event: Mutex<Option<u64>>,
    /// What the site's receiver got.
    received: Arc<Mutex<Received>>,
}

/// The site's webhook endpoint, run by the harness: it verifies each delivery's
/// signature, answers 500 to one in five (so deliveries are retried), and
/// records the rest.
async fn site_receiver(
    secret: String,
    received: Arc<Mutex<Received>>,
    seed: u64,
) -> anyhow::Result<String> {
    use axum::http::{HeaderMap, StatusCode};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/site-hooks", listener.local_addr()?);
    let rng = Arc::new(Mutex::new(StdRng::seed_from_u64(seed ^ 0x5173)));
    let app = axum::Router::new().route(
        "/site-hooks",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let (secret, received, rng) = (secret.clone(), received.clone(), rng.clone());
            async move {
                if rng.lock().unwrap().gen_bool(0.2) {
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                let header = headers
                    .get("boxoffice-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let mut r = received.lock().unwrap();
                // A delivery may have been signed before a clock fault moved
                // the sender's clock: the tolerance is wide, the key is what counts.
                if boxoffice_api::signature::verify(header, &body, &[secret], now, 3600).is_err() {
                    r.bad_signatures += 1;
                    return StatusCode::BAD_REQUEST;
                }
                let Ok(v) = serde_json::from_slice::<Value>(&body) else {
                    return StatusCode::BAD_REQUEST;
                };
                let kind = v["type"].as_str().unwrap_or_default().to_string();
                let data = &v["data"];
                match kind.as_str() {
                    "order.confirmed" | "order.cancelled" => {
                        r.orders
                            .insert((kind, data["booking_id"].as_str().unwrap_or_default().into()));
                    }
                    "refund.succeeded" | "payment.late_refunded" => {
                        r.refunds
                            .insert((kind, data["payment_id"].as_str().unwrap_or_default().into()));
                    }
                    _ => {}
                }
                StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

impl Payments {
    /// Binds the sandbox's address; returns it with the node settings that point
    /// the cluster at it.
    pub async fn bind() -> anyhow::Result<(Payments, String)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let settings = format!(
            "\n[payments]\nprovider_url = \"{url}\"\nsecret_key = \"{SECRET_KEY}\"\n\
             webhook_secrets = [\"{WEBHOOK_SECRET}\"]\npayment_grace_s = {PAYMENT_GRACE_S}\n\
             payment_hold_max_s = {PAYMENT_HOLD_MAX_S}\nreconcile_interval_ms = {RECONCILE_INTERVAL_MS}\n\
             provider_timeout_ms = 2000\n"
        );
        Ok((
            Payments {
                sandbox: Sandbox::new(SandboxConfig::default()),
                listener: Some(listener),
                url,
                http: reqwest::Client::builder()
                    .timeout(REQUEST_TIMEOUT)
                    .no_proxy()
                    .build()?,
                holds: Mutex::new(Vec::new()),
                bookings: Mutex::new(BTreeSet::new()),
                event: Mutex::new(None),
                received: Arc::new(Mutex::new(Received::default())),
            },
            settings,
        ))
    }

    /// Starts the sandbox, delivering to every node (`http://host:port` URLs),
    /// and creates the workload's event with `admin_token` through `node`.
    pub async fn start(&mut self, nodes: &[String], admin_token: &str) -> anyhow::Result<()> {
        let sandbox = Sandbox::new(SandboxConfig {
            secret_key: SECRET_KEY.into(),
            webhook_urls: nodes
                .iter()
                .map(|u| format!("{u}/v1/payments/webhook"))
                .collect(),
            webhook_secret: WEBHOOK_SECRET.into(),
            retry_base: Duration::from_millis(200),
            retry_max: Duration::from_secs(2),
            delivery_timeout: Duration::from_secs(3),
            ..SandboxConfig::default()
        });
        self.sandbox = sandbox.clone();
        let listener = self
            .listener
            .take()
            .context("the sandbox was started already")?;
        tokio::spawn(
            async move { boxoffice_node::payments::sandbox::serve(sandbox, listener).await },
        );
        let admin = |path: &'static str, body: Value| {
            crate::workload::admin_call(
                &self.http,
                nodes,
                admin_token,
                reqwest::Method::POST,
                path,
                body,
            )
        };
        let venue = admin(
            "/admin/v1/venues",
            serde_json::to_value(boxoffice_api::NewVenue::new(
                "Jepsen Payments Hall",
                "Nowhere",
                0.0,
                0.0,
                boxoffice_api::NewLayout::Seated(vec![(
                    "Main".into(),
                    vec![("A".into(), SEATS, 2500)],
                )]),
            ))?,
        )
        .await?;
        let event = admin(
            "/admin/v1/events",
            serde_json::to_value(boxoffice_api::NewEvent {
                name: "Jepsen Payments Night".into(),
                description: String::new(),
                category: "concert".into(),
                venue_id: venue["venue_id"].as_u64().context("venue id")?,
                performer_ids: vec![],
                starts_at: "2031-01-01T20:00:00Z".into(),
                hold_ttl_s: Some(HOLD_TTL_S),
                per_user_cap: Some(SEATS),
            })?,
        )
        .await?;
        *self.event.lock().unwrap() = event["event_id"].as_u64();
        // The site's endpoint for the store's outgoing webhooks.
        let secret = format!("whsec_site_{:016x}", rand::random::<u64>());
        let url = site_receiver(secret.clone(), self.received.clone(), rand::random()).await?;
        let http = self.http.clone();
        let mut set = false;
        for attempt in 0..40 {
            let r = http
                .put(format!(
                    "{}/admin/v1/webhooks/site",
                    nodes[attempt % nodes.len()]
                ))
                .bearer_auth(admin_token)
                .json(&json!({"url": url, "secret": secret}))
                .send()
                .await;
            if r.is_ok_and(|r| r.status().is_success()) {
                set = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        anyhow::ensure!(set, "the site's webhook endpoint could not be set");
        Ok(())
    }

    fn event(&self) -> Option<u64> {
        *self.event.lock().unwrap()
    }

    async fn pay(&self, payment_id: &str, secret: &str, card: &str) -> bool {
        self.http
            .post(format!(
                "{}/v1/payment_intents/{payment_id}/confirm",
                self.url
            ))
            .form(&[("payment_method", card), ("client_secret", secret)])
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    /// One buyer's loop until `deadline`: hold, check out, pay (or not).
    pub async fn buyer(
        self: Arc<Self>,
        index: usize,
        token: String,
        nodes: Vec<String>,
        deadline: Instant,
        seed: u64,
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let Some(event) = self.event() else { return };
        let mut n = 0u64;
        while Instant::now() < deadline {
            n += 1;
            let node = &nodes[rng.gen_range(0..nodes.len())];
            let seat = rng.gen_range(0..SEATS);
            let hold = self
                .http
                .post(format!("{node}/v1/holds"))
                .bearer_auth(&token)
                .header("Idempotency-Key", format!("pay-{index}-{n}"))
                .json(&json!({"event_id": event, "seat_ids": [seat]}))
                .send()
                .await;
            let Some(hold_id) = answer(hold)
                .await
                .and_then(|v| v["hold_id"].as_str().map(String::from))
            else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let checkout = self
                .http
                .post(format!("{node}/v1/holds/{hold_id}/checkout"))
                .bearer_auth(&token)
                .send()
                .await;
            self.holds.lock().unwrap().push((hold_id.clone(), index));
            let Some(c) = answer(checkout).await else {
                continue;
            };
            let (Some(pi), Some(secret)) = (c["payment_id"].as_str(), c["client_secret"].as_str())
            else {
                continue;
            };
            match rng.gen_range(0..10) {
                // Abandoned: the reconciler cancels it once the hold expires.
                0 => {}
                // Declined, then paid.
                1 | 2 => {
                    self.pay(pi, secret, "pm_card_chargeDeclined").await;
                    tokio::time::sleep(Duration::from_millis(rng.gen_range(0..1500))).await;
                    self.pay(pi, secret, "pm_card_visa").await;
                }
                // Paid late: around the hold's expiry.
                3 => {
                    tokio::time::sleep(Duration::from_millis(rng.gen_range(1500..4500))).await;
                    self.pay(pi, secret, "pm_card_visa").await;
                }
                _ => {
                    self.pay(pi, secret, "pm_card_visa").await;
                }
            }
            // Now and then a buyer cancels a booking it has.
            if rng.gen_bool(0.15) {
                if let Some(list) = answer(
                    self.http
                        .get(format!("{node}/v1/bookings?event_id={event}"))
                        .bearer_auth(&token)
                        .send()
                        .await,
                )
                .await
                {
                    let ids: Vec<String> = list["bookings"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|b| b["status"] == "confirmed")
                        .filter_map(|b| b["booking_id"].as_str().map(String::from))
                        .collect();
                    if let Some(b) = ids.first() {
                        let _ = self
                            .http
                            .post(format!("{node}/v1/bookings/{b}/cancel"))
                            .bearer_auth(&token)
                            .send()
                            .await;
                        self.bookings.lock().unwrap().insert((b.clone(), index));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(rng.gen_range(20..200))).await;
        }
    }

    /// Switches the sandbox's faults on and off until `deadline`.
    pub async fn faults(self: Arc<Self>, deadline: Instant, seed: u64) -> BTreeMap<String, u64> {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x7061_7973);
        let mut counts = BTreeMap::new();
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(1000..4000))).await;
            let kind = rng.gen_range(0..4);
            let faults = match kind {
                0 => Faults {
                    duplicate_probability: 0.5,
                    ..Faults::default()
                },
                1 => Faults {
                    delay_ms_max: 6000,
                    duplicate_probability: 0.2,
                    ..Faults::default()
                },
                2 => Faults {
                    webhook_outage: true,
                    ..Faults::default()
                },
                _ => Faults {
                    api_outage: true,
                    ..Faults::default()
                },
            };
            let name = ["duplicates", "delays", "webhook-outage", "api-outage"][kind];
            *counts.entry(format!("sandbox-{name}")).or_default() += 1;
            self.sandbox.set_faults(faults);
            tokio::time::sleep(Duration::from_millis(rng.gen_range(1000..4000))).await;
            self.sandbox.set_faults(Faults::default());
        }
        self.sandbox.set_faults(Faults::default());
        counts
    }

    /// After the heal: waits (bounded) until nothing is in flight, then reads the
    /// provider's books and the store's final state and checks them.
    pub async fn check(
        &self,
        nodes: &[String],
        tokens: &[String],
        admin_token: &str,
    ) -> anyhow::Result<Vec<Verdict>> {
        self.sandbox.set_faults(Faults::default());
        let event = self.event().context("no payments event")?;
        let holds = self.holds.lock().unwrap().clone();
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let mut node = 0usize;
        let mut get = |path: String, token: String| {
            node += 1;
            let url = format!("{}{path}", nodes[node % nodes.len()]);
            let http = self.http.clone();
            async move { answer(http.get(url).bearer_auth(token).send().await).await }
        };
        // Quiet: every delivery answered, no hold waiting for a payment, no refund open.
        let mut statuses: BTreeMap<String, Value> = BTreeMap::new();
        loop {
            let mut busy = self.sandbox.state().pending > 0;
            for (h, buyer) in &holds {
                match get(
                    format!("/v1/holds/{h}?consistency=linearizable"),
                    tokens[*buyer].clone(),
                )
                .await
                {
                    Some(st) => {
                        let waiting = st["status"] == "payment_pending"
                            || st["refund"]
                                .as_object()
                                .is_some_and(|r| r["status"] != "refunded");
                        busy |= waiting;
                        statuses.insert(h.clone(), st);
                    }
                    None => busy = true,
                }
            }
            if !busy {
                break;
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "payments did not settle within {} s of the heal",
                    SETTLE_TIMEOUT.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let state = self.sandbox.state();
        let mut facts = PaymentFacts {
            succeeded: state.succeeded_ids.iter().cloned().collect(),
            provider_refunds: state.refunds_by_payment.clone(),
            ..PaymentFacts::default()
        };
        let buyers: BTreeSet<usize> = holds.iter().map(|(_, b)| *b).collect();
        for b in buyers {
            let list = get(format!("/v1/bookings?event_id={event}"), tokens[b].clone())
                .await
                .context("final bookings")?;
            anyhow::ensure!(list["truncated"] != true, "bookings truncated");
            for bk in list["bookings"].as_array().into_iter().flatten() {
                let payment_ref = bk["payment_ref"].as_str().unwrap_or_default().to_string();
                if let Some(r) = bk["refund"].as_object() {
                    facts.refunds.insert(
                        payment_ref.clone(),
                        FinalRefund {
                            reason: r["reason"].as_str().unwrap_or_default().into(),
                            status: r["status"].as_str().unwrap_or_default().into(),
                        },
                    );
                }
                facts.bookings.push(FinalBooking {
                    booking_id: bk["booking_id"].as_str().unwrap_or_default().into(),
                    event,
                    seats: bk["seat_ids"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|s| s.as_u64().map(|s| s as u32))
                        .collect(),
                    payment_ref,
                    cancelled: bk["status"] == "cancelled",
                });
            }
        }
        for st in statuses.values() {
            if let (Some(r), Some(p)) = (
                st["refund"].as_object(),
                st["payment"]["payment_id"].as_str(),
            ) {
                facts.refunds.entry(p.to_string()).or_insert(FinalRefund {
                    reason: r["reason"].as_str().unwrap_or_default().into(),
                    status: r["status"].as_str().unwrap_or_default().into(),
                });
            }
        }
        let map = get(
            format!("/v1/events/{event}/seats?consistency=linearizable"),
            tokens[0].clone(),
        )
        .await
        .context("final seat map")?;
        for s in map["seats"].as_array().into_iter().flatten() {
            if s["status"] == "sold" {
                if let Some(id) = s["seat_id"].as_u64() {
                    facts.sold.insert((event, id as u32));
                }
            }
        }
        let mut v = payments(&facts);
        v.notes.push(format!(
            "sandbox: {} intents, {} events, {} deliveries answered, {} attempts, {} given up",
            state.payment_intents, state.events, state.delivered, state.attempts, state.given_up
        ));
        // The site's webhooks: wait (bounded) until every delivery is delivered.
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let (mut delivered, mut attempts) = (0usize, 0u64);
        loop {
            let list = get(
                "/admin/v1/webhooks/site/deliveries?limit=1000".to_string(),
                admin_token.to_string(),
            )
            .await;
            let all: Vec<Value> = list
                .as_ref()
                .and_then(|l| l["deliveries"].as_array().cloned())
                .unwrap_or_default();
            if list.is_some() && all.iter().all(|d| d["status"] == "delivered") {
                delivered = all.len();
                attempts = all.iter().filter_map(|d| d["attempts"].as_u64()).sum();
                break;
            }
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let received = self.received.lock().unwrap().clone();
        let mut w = outgoing_webhooks(&facts, &received);
        w.notes.push(format!(
            "{delivered} deliveries delivered in {attempts} attempts"
        ));
        Ok(vec![v, w])
    }
}
