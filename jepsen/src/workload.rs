//! Workloads: real HTTP clients through the public API, each user with its own
//! token, recording every operation they invoke.
//!
//! - *seats*: users race for a few seats of the current events with holds,
//!   confirms and releases; holds live `hold_ttl_s`, and many are left to expire.
//! - *registers*: linearizable and follower reads of the same seats' statuses.
//! - *general admission*: quantity holds against a small capacity with a per-user cap.
//!
//! Every other write of a user goes inside a `POST /v1/batch` (as the client
//! library sends writes made at the same time), so that the batch endpoint's
//! answers are checked under every fault as plain writes are.
//!
//! Events rotate every `rotate` so that contention stays high for the whole run
//! (a sold-out event goes quiet) while each seat's history stays small enough to
//! check.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use boxoffice_api::{
    BatchAnswer, BatchRequest, BatchedRequest, Booking, BookingList, ConfirmHold, EventsCreated,
    Hold, NewEvent, NewEvents, NewHold, NewSection, NewVenue, Problem, SeatMap, Selection,
    VenueCreated, BATCH_PATH, BATCH_REQUEST_HEADERS, IDEMPOTENCY_KEY_HEADER,
};
use boxoffice_node::local_cluster::LocalCluster;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::history::{Answer, Applied, Call, Freshness, GaState, Op, Outcome, SeatStatus};

/// Client timeout of one operation; past it the outcome is unknown (`info`).
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);

/// `error` of an operation whose request timed out on the client (`info`).
pub const ERROR_TIMEOUT: &str = "timeout";
/// `error` of an operation that got no answer: connection refused or reset (`info`).
pub const ERROR_CONNECTION: &str = "connection";
/// `error` of an operation whose answer's body could not be read (`info`).
pub const ERROR_BODY: &str = "body";

/// Which workloads run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    Seats,
    Registers,
    Ga,
    /// Checkout and payment through the payments sandbox (`crate::payments`).
    Payments,
    /// A virtual waiting room: join, wait, get admitted, hold (`crate::queue`).
    Queue,
}

/// The events of a run and when each is in play.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Seated events in order of use, with their shards.
    pub seat_events: Vec<(u64, u16)>,
    /// General-admission events in order of use.
    pub ga_events: Vec<(u64, u16)>,
    /// Seat ids of every seated event (same venue).
    pub seats: Vec<u32>,
    pub ga_capacity: u32,
    pub per_user_cap: u32,
    /// Events in play at once, per kind.
    pub active: usize,
    pub rotate: Duration,
    /// An event kept for the liveness probe after the final heal.
    pub probe_event: u64,
}

impl Plan {
    fn slot(&self, elapsed: Duration, len: usize) -> usize {
        let slots = len / self.active.max(1);
        let i = (elapsed.as_millis() / self.rotate.as_millis().max(1)) as usize;
        i.min(slots.saturating_sub(1)) * self.active
    }

    /// A seated event in play at `elapsed` (`pick` < `active` chooses which).
    pub fn seat_event(&self, elapsed: Duration, pick: usize) -> (u64, u16) {
        self.seat_events[self.slot(elapsed, self.seat_events.len()) + pick % self.active]
    }

    pub fn ga_event(&self, elapsed: Duration, pick: usize) -> (u64, u16) {
        self.ga_events[self.slot(elapsed, self.ga_events.len()) + pick % self.active]
    }

    /// Shards clients are busy on at `elapsed`.
    pub fn busy_shards(&self, elapsed: Duration) -> Vec<u16> {
        let mut v: Vec<u16> = (0..self.active)
            .flat_map(|p| [self.seat_event(elapsed, p).1, self.ga_event(elapsed, p).1])
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Events used up to `elapsed`.
    pub fn used(&self, elapsed: Duration) -> (Vec<u64>, Vec<u64>) {
        let s =
            (self.slot(elapsed, self.seat_events.len()) + self.active).min(self.seat_events.len());
        let g = (self.slot(elapsed, self.ga_events.len()) + self.active).min(self.ga_events.len());
        (
            self.seat_events[..s].iter().map(|e| e.0).collect(),
            self.ga_events[..g].iter().map(|e| e.0).collect(),
        )
    }
}

/// Settings of [`setup`].
pub struct SetupParams {
    pub time_limit: Duration,
    pub rotate: Duration,
    pub active: usize,
    pub seats: u32,
    pub ga_capacity: u32,
    pub per_user_cap: u32,
    pub hold_ttl_s: u64,
}

/// Creates the venues and every event the run will use.
pub async fn setup(cluster: &LocalCluster, p: &SetupParams) -> anyhow::Result<Plan> {
    let t = Duration::from_secs(60);
    let venue: VenueCreated = serde_json::from_value(
        cluster
            .admin_post(
                "/admin/v1/venues",
                &NewVenue::seated(
                    "Jepsen Hall",
                    "Loopback",
                    0.0,
                    0.0,
                    vec![NewSection::new("A", [("1", p.seats, 1000)])],
                ),
                t,
            )
            .await?,
    )
    .context("venue created")?;
    let ga_venue: VenueCreated = serde_json::from_value(
        cluster
            .admin_post(
                "/admin/v1/venues",
                &NewVenue::general_admission(
                    "Jepsen Field",
                    "Loopback",
                    0.0,
                    0.0,
                    p.ga_capacity,
                    500,
                ),
                t,
            )
            .await?,
    )
    .context("venue created")?;
    let slots = (p.time_limit.as_millis() / p.rotate.as_millis().max(1)) as usize + 2;
    let n = slots * p.active;
    let mk = |venue: u64, i: usize, kind: &str| NewEvent {
        name: format!("{kind} {i}"),
        description: String::new(),
        category: "test".into(),
        venue_id: venue,
        performer_ids: Vec::new(),
        starts_at: "2030-01-01T20:00:00Z".into(),
        hold_ttl_s: Some(p.hold_ttl_s),
        per_user_cap: Some(p.per_user_cap),
    };
    let mut seat_events = Vec::new();
    let mut ga_events = Vec::new();
    for (venue, kind, out, count) in [
        (venue.venue_id, "seats", &mut seat_events, n + 1),
        (ga_venue.venue_id, "ga", &mut ga_events, n),
    ] {
        let all: Vec<NewEvent> = (0..count).map(|i| mk(venue, i, kind)).collect();
        for chunk in all.chunks(500) {
            let body = NewEvents {
                events: chunk.to_vec(),
            };
            let r: EventsCreated = serde_json::from_value(
                cluster
                    .admin_post("/admin/v1/events/batch", &body, t)
                    .await?,
            )
            .context("events created")?;
            out.extend(r.events.iter().map(|e| (e.event_id, e.shard)));
        }
    }
    let probe_event = seat_events.pop().context("no events created")?.0;
    // Seat ids, from the seat map.
    let node = cluster.nodes.values().next().context("no nodes")?;
    let map: SeatMap = reqwest::Client::new()
        .get(format!(
            "{}/v1/events/{}/seats?consistency=linearizable",
            node.url(),
            seat_events[0].0
        ))
        .timeout(t)
        .send()
        .await?
        .json()
        .await?;
    let seats: Vec<u32> = map.seats.iter().map(|s| s.seat_id).collect();
    if seats.len() != p.seats as usize {
        bail!(
            "expected {} seats, the seat map shows {}",
            p.seats,
            seats.len()
        );
    }
    Ok(Plan {
        seat_events,
        ga_events,
        seats,
        ga_capacity: p.ga_capacity,
        per_user_cap: p.per_user_cap,
        active: p.active,
        rotate: p.rotate,
        probe_event,
    })
}

/// An answer: status and headers, and its body to read.
struct Answered {
    status: reqwest::StatusCode,
    headers: reqwest::header::HeaderMap,
    body: std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<bytes::Bytes, reqwest::Error>> + Send>,
    >,
}

impl Answered {
    fn of(resp: reqwest::Response) -> Answered {
        Answered {
            status: resp.status(),
            headers: resp.headers().clone(),
            body: Box::pin(resp.bytes()),
        }
    }
}

/// An HTTP client for one user.
#[derive(Clone)]
pub struct UserClient {
    pub user: String,
    token: String,
    http: reqwest::Client,
    /// Node base URLs, by node id order.
    pub nodes: Vec<(u64, String)>,
    /// Idempotency keys are unique per (user, counter).
    key_prefix: String,
    counter: u64,
}

/// Harness clock in µs since the run started.
pub fn micros(t0: Instant) -> u64 {
    t0.elapsed().as_micros() as u64
}

fn status_of(s: boxoffice_api::SeatStatus) -> SeatStatus {
    match s {
        boxoffice_api::SeatStatus::Available => SeatStatus::Available,
        boxoffice_api::SeatStatus::Held => SeatStatus::Held,
        boxoffice_api::SeatStatus::Sold => SeatStatus::Sold,
    }
}

/// A 2xx body as `T` (`None` if it is not one: the operation still happened).
fn typed<T: DeserializeOwned>(body: Value) -> Option<T> {
    serde_json::from_value(body).ok()
}

fn applied_of(v: &Value) -> Option<Applied> {
    Some(Applied {
        index: v["index"].as_u64()?,
        time_ms: v["time_ms"].as_u64()?,
    })
}

impl UserClient {
    pub fn new(
        user: String,
        token: String,
        nodes: Vec<(u64, String)>,
        run_id: u64,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(OP_TIMEOUT)
            .connect_timeout(Duration::from_secs(1))
            .no_proxy()
            .build()?;
        Ok(UserClient {
            key_prefix: format!("{run_id:x}-{user}"),
            user,
            token,
            http,
            nodes,
            counter: 0,
        })
    }

    /// Gives this copy its own idempotency-key space (one per client task).
    pub fn scoped(mut self, scope: &str) -> Self {
        self.key_prefix = format!("{}-{scope}", self.key_prefix);
        self
    }

    fn key(&mut self) -> String {
        self.counter += 1;
        format!("{}-{}", self.key_prefix, self.counter)
    }

    /// Sends a request and records it as an operation.
    async fn exec(
        &self,
        op: &mut Op,
        req: reqwest::RequestBuilder,
        t0: Instant,
    ) -> Option<(Value, reqwest::header::HeaderMap)> {
        let r = match req.bearer_auth(&self.token).build() {
            Ok(built) if self.counter % 2 == 0 && built.method() != reqwest::Method::GET => {
                self.send_batched(built).await
            }
            Ok(built) => self.http.execute(built).await.map(Answered::of),
            Err(e) => Err(e),
        };
        let resp = match r {
            Ok(r) => r,
            Err(e) => {
                op.complete_us = Some(micros(t0));
                op.outcome = Outcome::Info;
                op.error = Some(if e.is_timeout() {
                    ERROR_TIMEOUT.into()
                } else {
                    ERROR_CONNECTION.into()
                });
                return None;
            }
        };
        let status = resp.status;
        let headers = resp.headers;
        let body: Value = match resp.body.await {
            Ok(b) if b.is_empty() => Value::Null,
            Ok(b) => serde_json::from_slice(&b).unwrap_or(Value::Null),
            Err(_) => {
                op.complete_us = Some(micros(t0));
                op.outcome = Outcome::Info;
                op.error = Some(ERROR_BODY.into());
                return None;
            }
        };
        op.complete_us = Some(micros(t0));
        if status.is_success() {
            op.outcome = Outcome::Ok;
            op.applied = applied_of(&body["applied"]);
            return Some((body, headers));
        }
        // Definitely not applied: a 4xx, or a problem whose code says nothing was
        // (`ProblemCode::may_have_applied`). Anything else may have been: a 5xx
        // whose code leaves the outcome open, or an answer that is no problem body.
        let problem: Option<Problem> = serde_json::from_value(body.clone()).ok();
        op.outcome = if status.is_client_error()
            || problem.as_ref().is_some_and(|p| !p.may_have_applied())
        {
            Outcome::Fail
        } else {
            Outcome::Info
        };
        let code = body["code"].as_str().unwrap_or("").to_string();
        op.applied = applied_of(&body["applied"]);
        op.error = Some(if code.is_empty() {
            status.as_u16().to_string()
        } else {
            code
        });
        None
    }

    /// Sends `req` (a write) as the one write of a `POST /v1/batch` to the
    /// same node, and answers with that write's own answer; a batch refused
    /// whole (its status not 200) ran nothing, and its answer is the write's.
    async fn send_batched(&self, req: reqwest::Request) -> Result<Answered, reqwest::Error> {
        let url = req.url();
        let base = format!("{}://{}", url.scheme(), url.authority());
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let headers: std::collections::BTreeMap<String, String> = req
            .headers()
            .iter()
            .filter(|(n, _)| BATCH_REQUEST_HEADERS.contains(&n.as_str()))
            .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let body = req
            .body()
            .and_then(|b| b.as_bytes())
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|t| serde_json::value::RawValue::from_string(t.to_string()).ok());
        let batch = BatchRequest {
            requests: vec![BatchedRequest {
                method: req.method().as_str().to_string(),
                path,
                headers,
                body,
            }],
        };
        let resp = self
            .http
            .post(format!("{base}{BATCH_PATH}"))
            .json(&batch)
            .send()
            .await?;
        if resp.status() != reqwest::StatusCode::OK {
            return Ok(Answered::of(resp));
        }
        let status = resp.status();
        let headers = resp.headers().clone();
        let answered = resp.bytes().await.map(|bytes| {
            match serde_json::from_slice::<BatchAnswer>(&bytes) {
                Ok(mut a) if a.responses.len() == 1 => {
                    let one = a.responses.remove(0);
                    let mut h = reqwest::header::HeaderMap::new();
                    for (n, v) in &one.headers {
                        if let (Ok(n), Ok(v)) = (
                            reqwest::header::HeaderName::from_bytes(n.as_bytes()),
                            reqwest::header::HeaderValue::from_str(v),
                        ) {
                            h.insert(n, v);
                        }
                    }
                    (
                        reqwest::StatusCode::from_u16(one.status)
                            .unwrap_or(reqwest::StatusCode::INTERNAL_SERVER_ERROR),
                        h,
                        one.body
                            .map(|b| bytes::Bytes::from(b.get().to_string()))
                            .unwrap_or_default(),
                    )
                }
                // The write ran, but what it got cannot be told: an answer that
                // is no problem body, with a 5xx status, reads as unknown.
                _ => (
                    reqwest::StatusCode::BAD_GATEWAY,
                    headers.clone(),
                    bytes::Bytes::from_static(b"unreadable batch answer"),
                ),
            }
        });
        Ok(match answered {
            Ok((status, headers, body)) => Answered {
                status,
                headers,
                body: Box::pin(std::future::ready(Ok(body))),
            },
            Err(e) => Answered {
                status,
                headers,
                body: Box::pin(std::future::ready(Err(e))),
            },
        })
    }

    fn new_op(&self, process: u64, call: Call, t0: Instant) -> Op {
        Op {
            process,
            call,
            invoke_us: micros(t0),
            complete_us: None,
            outcome: Outcome::Info,
            error: None,
            answer: Answer::default(),
            applied: None,
        }
    }

    pub async fn hold(
        &mut self,
        process: u64,
        node: &str,
        event: u64,
        seats: Vec<u32>,
        t0: Instant,
    ) -> Op {
        let key = self.key();
        let mut op = self.new_op(
            process,
            Call::Hold {
                user: self.user.clone(),
                event,
                seats: seats.clone(),
            },
            t0,
        );
        let req = self
            .http
            .post(format!("{node}/v1/holds"))
            .header(IDEMPOTENCY_KEY_HEADER, key)
            .json(&NewHold::new(event, Selection::Seats(seats.clone())));
        if let Some((b, _)) = self.exec(&mut op, req, t0).await {
            if let Some(h) = typed::<Hold>(b) {
                op.answer.hold_id = Some(h.hold_id);
                op.answer.expires_at_ms = Some(h.expires_at_ms);
            }
            op.answer.seats = seats;
        }
        op
    }

    pub async fn hold_quantity(
        &mut self,
        process: u64,
        node: &str,
        event: u64,
        quantity: u32,
        t0: Instant,
    ) -> Op {
        let key = self.key();
        let mut op = self.new_op(
            process,
            Call::HoldQuantity {
                user: self.user.clone(),
                event,
                quantity,
            },
            t0,
        );
        let req = self
            .http
            .post(format!("{node}/v1/holds"))
            .header(IDEMPOTENCY_KEY_HEADER, key)
            .json(&NewHold::new(event, Selection::Quantity(quantity)));
        if let Some((b, _)) = self.exec(&mut op, req, t0).await {
            if let Some(h) = typed::<Hold>(b) {
                op.answer.hold_id = Some(h.hold_id);
                op.answer.expires_at_ms = Some(h.expires_at_ms);
                op.answer.quantity = Some(h.quantity);
            }
        }
        op
    }

    pub async fn confirm(&mut self, process: u64, node: &str, hold_id: &str, t0: Instant) -> Op {
        let key = self.key();
        let mut op = self.new_op(
            process,
            Call::Confirm {
                user: self.user.clone(),
                hold_id: hold_id.to_string(),
            },
            t0,
        );
        let req = self
            .http
            .post(format!("{node}/v1/holds/{hold_id}/confirm"))
            .header(IDEMPOTENCY_KEY_HEADER, key.clone())
            .json(&ConfirmHold { payment_ref: key });
        if let Some((b, _)) = self.exec(&mut op, req, t0).await {
            op.answer.hold_id = Some(hold_id.to_string());
            if let Some(bk) = typed::<Booking>(b) {
                op.answer.booking_id = Some(bk.booking_id);
                op.answer.seats = bk.seat_ids;
                op.answer.quantity = Some(bk.quantity);
            }
        }
        op
    }

    pub async fn release(&mut self, process: u64, node: &str, hold_id: &str, t0: Instant) -> Op {
        let key = self.key();
        let mut op = self.new_op(
            process,
            Call::Release {
                user: self.user.clone(),
                hold_id: hold_id.to_string(),
            },
            t0,
        );
        let req = self
            .http
            .delete(format!("{node}/v1/holds/{hold_id}"))
            .header(IDEMPOTENCY_KEY_HEADER, key);
        if let Some((_, h)) = self.exec(&mut op, req, t0).await {
            let num = |name: &str| {
                h.get(name)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
            };
            if let (Some(index), Some(time_ms)) = (
                num("x-boxoffice-applied-index"),
                num("x-boxoffice-applied-time-ms"),
            ) {
                op.applied = Some(Applied { index, time_ms });
            }
            op.answer.hold_id = Some(hold_id.to_string());
        }
        op
    }

    /// Reads an event's seat map from `node` (`node_id` for the record).
    pub async fn read(
        &mut self,
        process: u64,
        node_id: u64,
        node: &str,
        event: u64,
        linearizable: bool,
        t0: Instant,
    ) -> Op {
        let mut op = self.new_op(
            process,
            Call::Read {
                event,
                linearizable,
            },
            t0,
        );
        let c = if linearizable {
            "linearizable"
        } else {
            "local"
        };
        let req = self
            .http
            .get(format!("{node}/v1/events/{event}/seats?consistency={c}"));
        if let Some((b, _)) = self.exec(&mut op, req, t0).await {
            match typed::<SeatMap>(b) {
                Some(map) => fill_read(&mut op, node_id, &map),
                None => {
                    // A 2xx that is no seat map: nothing to check against.
                    op.outcome = Outcome::Info;
                    op.error = Some(ERROR_BODY.into());
                }
            }
        }
        if op.outcome == Outcome::Info {
            // A read changes nothing: one that got no answer simply did not happen.
            op.outcome = Outcome::Fail;
        }
        op
    }

    /// This user's bookings of `event` (linearizable), as (booking, event, seats,
    /// quantity), and whether the list was cut short.
    pub async fn bookings(
        &self,
        node: &str,
        event: u64,
    ) -> anyhow::Result<(Vec<(String, u64, Vec<u32>, u32)>, bool)> {
        let r = self
            .http
            .get(format!(
                "{node}/v1/bookings?consistency=linearizable&event_id={event}"
            ))
            .bearer_auth(&self.token)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("bookings of {}: {}", self.user, r.status());
        }
        let b: BookingList = r.json().await?;
        let list = b
            .bookings
            .into_iter()
            .map(|x| (x.booking_id, x.event_id, x.seat_ids, x.quantity))
            .collect();
        Ok((list, b.truncated))
    }
}

/// Fills a read's answer from a seat map.
pub fn fill_read(op: &mut Op, node_id: u64, b: &SeatMap) {
    let f = &b.freshness;
    let fresh = Freshness {
        node: node_id,
        shard: f.shard,
        applied_index: f.applied_index,
        applied_time_ms: f.applied_time_ms,
        as_of_ms: f.as_of_ms,
        clock_ms: f.clock_ms,
    };
    op.answer.freshness = Some(fresh);
    // Expiry was judged at `as_of`.
    op.applied = Some(Applied {
        index: fresh.applied_index,
        time_ms: fresh.as_of_ms,
    });
    if b.counts.general_admission {
        op.answer.ga = Some(GaState {
            capacity: b.counts.capacity,
            sold: b.counts.sold,
            held: b.counts.held,
            bookings: Vec::new(),
        });
    } else {
        op.answer.statuses = b
            .seats
            .iter()
            .map(|s| (s.seat_id, status_of(s.status)))
            .collect();
    }
}

/// The JSON of a 2xx answer (`None` for anything else, a failure included).
pub async fn answer(r: Result<reqwest::Response, reqwest::Error>) -> Option<serde_json::Value> {
    let r = r.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

/// An admin request for a workload's setup, to each node in turn until one
/// answers 2xx (at most 40 attempts, 250 ms apart), under one idempotency key.
pub async fn admin_call(
    http: &reqwest::Client,
    nodes: &[String],
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    // One key per request (path and body), so that two workloads' setups
    // never share one, and a retry of either is a retry.
    let key = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (path, body.to_string()).hash(&mut h);
        format!("jepsen-setup-{:016x}", h.finish())
    };
    for attempt in 0..40 {
        let url = &nodes[attempt % nodes.len()];
        let r = http
            .request(method.clone(), format!("{url}{path}"))
            .bearer_auth(token)
            .header("Idempotency-Key", &key)
            .json(&body)
            .send()
            .await;
        if let Some(v) = answer(r).await {
            return Ok(v);
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    anyhow::bail!("admin {path} failed")
}
