//! Async Rust client for the boxoffice HTTP API.
//!
//! ```no_run
//! # async fn demo() -> Result<(), boxoffice_client::Error> {
//! use boxoffice_client::{Client, ClientConfig, Selection};
//! let client = Client::new(ClientConfig::new(["http://127.0.0.1:7101", "http://127.0.0.1:7102"], "TOKEN"))?;
//! let hold = client.hold(42, Selection::Seats(vec![0, 1])).await?;
//! let booking = client.confirm(&hold.hold_id, "payment-123").await?;
//! println!("booked {} for {} cents", booking.booking_id, booking.total_cents);
//! # Ok(()) }
//! ```
//!
//! - Any node can take any request. Writes go first to the node that last
//!   answered for the shard as its leader (the `x-boxoffice-leader` hint on write
//!   answers, kept with its `x-boxoffice-term`: an older term's hint never
//!   replaces a newer one), which saves the forwarding hop; without a hint, or when the hinted
//!   node fails, they go to the current node. A node that cannot be reached, answers 503
//!   (no leader yet, overloaded) or 429 `rate_limited` is retried on the next
//!   node, after its `Retry-After`, up to [`ClientConfig::attempts_max`] times
//!   (429 `too_many_sessions` is the shard's answer, the same on every node, and
//!   is returned at once).
//! - Every write carries an idempotency key, generated once per call and reused on
//!   every retry, so a retry never applies a write twice. A write whose every
//!   attempt ended without an answer is reported as [`Error::OutcomeUnknown`] with
//!   its key: it may have been applied; retry it with `*_with_key` to find out.

mod batching;
mod queue_stream;
mod seat_stream;
mod types;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use batching::BatchStats;
pub use queue_stream::QueueStream;
pub use seat_stream::{SeatStream, StreamEvent, STREAM_IDLE_TIMEOUT};
pub use types::*;

/// Settings of a [`Client`].
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Base URLs of the nodes, e.g. `http://127.0.0.1:7101` or
    /// `https://node1.example:7101`.
    pub nodes: Vec<String>,
    /// Certificates (PEM) to trust for `https` nodes besides the usual web
    /// roots: the cluster's own CA, or a node's self-signed certificate.
    pub ca_certs_pem: Option<Vec<u8>>,
    /// Bearer token (user or admin).
    pub token: String,
    /// Time allowed for one HTTP attempt.
    pub request_timeout: Duration,
    /// Time allowed to connect to a node.
    pub connect_timeout: Duration,
    /// Most attempts per call, across nodes.
    pub attempts_max: u32,
    /// Longest wait between attempts (caps `Retry-After`).
    pub retry_wait_max: Duration,
    /// Most writes sent to a node in one `POST /v1/batch` (at most the
    /// node's `limits.batch_requests_max`); 1 sends every write alone. Writes
    /// are batched only when they would otherwise wait (see the next field).
    pub batch_writes_max: usize,
    /// Requests in flight to one node before further writes wait and are
    /// batched.
    pub batch_in_flight_max: usize,
}

impl ClientConfig {
    /// Defaults: 15 s per attempt, 1 s to connect, 8 attempts, waits of at most 1 s,
    /// writes batched 32 at most once 4 requests to a node are in flight.
    pub fn new<S: Into<String>>(
        nodes: impl IntoIterator<Item = S>,
        token: impl Into<String>,
    ) -> Self {
        ClientConfig {
            nodes: nodes.into_iter().map(Into::into).collect(),
            ca_certs_pem: None,
            token: token.into(),
            request_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(1),
            attempts_max: 8,
            retry_wait_max: Duration::from_secs(1),
            batch_writes_max: 32,
            batch_in_flight_max: 4,
        }
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cluster answered with a problem (e.g. `seat_unavailable`): a definite outcome.
    #[error("{} {}: {}", .0.status, .0.code, .0.detail)]
    Api(Box<Problem>),
    /// A write got no answer on any attempt: it may or may not have been applied.
    /// Retrying with the same idempotency key is safe and tells which.
    #[error(
        "outcome unknown after {attempts} attempts (idempotency key {idempotency_key}): {last}"
    )]
    OutcomeUnknown {
        /// The key to retry with.
        idempotency_key: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// No node could be reached or all were unavailable; nothing was applied by a
    /// read, and a write that never reached a node was not applied.
    #[error("cluster unavailable after {attempts} attempts: {last}")]
    Unavailable {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// The client was misconfigured or given bad arguments.
    #[error("invalid use: {0}")]
    Invalid(String),
    /// A successful answer could not be decoded.
    #[error("undecodable answer: {0}")]
    Decode(String),
}

impl Error {
    /// The problem code of [`Error::Api`], if this version knows it.
    pub fn code(&self) -> Option<ProblemCode> {
        match self {
            Error::Api(p) => p.problem_code(),
            _ => None,
        }
    }

    /// True when the failed call, if it was a write, may still have been applied:
    /// retry it with the same idempotency key to learn which. False means it was
    /// not (refused, or never reached a node).
    pub fn may_have_applied(&self) -> bool {
        match self {
            Error::Api(p) => p.may_have_applied(),
            Error::OutcomeUnknown { .. } => true,
            // A successful answer that could not be read: the write took effect.
            Error::Decode(_) => true,
            Error::Unavailable { .. } | Error::Invalid(_) => false,
        }
    }
}

struct Inner {
    http: reqwest::Client,
    config: ClientConfig,
    next: AtomicUsize,
    /// Shared by the clients [`Client::with_token`] makes: leaders are the
    /// cluster's, whoever the caller is.
    routes: Arc<std::sync::Mutex<Routes>>,
    /// Writes made at the same time, batched per node (shared like `routes`).
    batcher: Arc<batching::Batcher>,
}

/// Events whose shard a client remembers for routing (forgotten all at once past this).
pub const ROUTED_EVENTS_MAX: usize = 100_000;

/// What a client learned from write answers: each shard's leader (an index into
/// the configured nodes) with the term it was named in, and each event's shard.
#[derive(Default)]
struct Routes {
    leader_of_shard: std::collections::HashMap<u16, (usize, u64)>,
    shard_of_event: std::collections::HashMap<u64, u16>,
}

/// Where a write is headed, for routing it to the shard's leader.
#[derive(Clone, Copy)]
enum Route {
    Shard(u16),
    Event(u64),
}

/// The shard named by a hold id (`h3-17` → 3).
fn hold_shard(hold_id: &str) -> Option<u16> {
    hold_id.strip_prefix('h')?.split('-').next()?.parse().ok()
}

/// The shard a booking id names (`b<shard>-<seq>`), to send its writes there.
fn booking_shard(booking_id: &str) -> Option<u16> {
    booking_id
        .strip_prefix('b')?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// A client of a boxoffice cluster. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// A write answer's routing hint: the shard's leader (its public
/// `host:port`) and that leader's term, when the answer names them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Hint {
    leader: Option<String>,
    term: Option<u64>,
}

impl Hint {
    /// The hint in an answer's headers (`name` → value).
    pub(crate) fn from_headers<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Hint {
        Hint {
            leader: get(LEADER_HEADER).map(str::to_string),
            term: get(TERM_HEADER).and_then(|t| t.parse().ok()),
        }
    }
}

enum Attempt {
    /// An answer, with the routing hint it carried.
    Done(Result<(StatusCode, Bytes), Error>, Hint),
    /// Retry; `maybe_applied` says the request may have reached a node.
    Retry {
        last: String,
        maybe_applied: bool,
        wait: Option<Duration>,
    },
}

/// The path of an event's seat map with its query.
fn seats_path(
    event_id: u64,
    section: Option<&str>,
    view: &str,
    consistency: Consistency,
) -> Result<String, Error> {
    let mut url = reqwest::Url::parse("http://x/")
        .and_then(|u| u.join(&format!("v1/events/{event_id}/seats")))
        .map_err(|e| Error::Invalid(e.to_string()))?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("consistency", consistency.as_str());
        q.append_pair("view", view);
        if let Some(s) = section {
            q.append_pair("section", s);
        }
    }
    Ok(format!(
        "{}?{}",
        url.path(),
        url.query().unwrap_or_default()
    ))
}

/// An answer's body as `T` (an empty body reads as JSON `null`).
fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    let body = if body.is_empty() { &b"null"[..] } else { body };
    serde_json::from_slice(body).map_err(|e| Error::Decode(e.to_string()))
}

impl Client {
    /// A client for `config.nodes`.
    pub fn new(config: ClientConfig) -> Result<Self, Error> {
        if config.nodes.is_empty() {
            return Err(Error::Invalid("at least one node URL is needed".into()));
        }
        if config.attempts_max == 0 {
            return Err(Error::Invalid("attempts_max must be at least 1".into()));
        }
        if config.batch_writes_max == 0 || config.batch_in_flight_max == 0 {
            return Err(Error::Invalid(
                "batch_writes_max and batch_in_flight_max must be at least 1".into(),
            ));
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .no_proxy()
            .tcp_nodelay(true);
        if let Some(pem) = &config.ca_certs_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| Error::Invalid(format!("ca_certs_pem: {e}")))?;
            if certs.is_empty() {
                return Err(Error::Invalid("ca_certs_pem holds no certificate".into()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| Error::Invalid(e.to_string()))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                next: AtomicUsize::new(0),
                routes: Default::default(),
                batcher: Arc::new(batching::Batcher::new(
                    config.batch_writes_max,
                    config.batch_in_flight_max,
                )),
                config,
            }),
        })
    }

    /// The same cluster with another token (shares connections and what was
    /// learned about shard leaders): one per user of a front end.
    pub fn with_token(&self, token: impl Into<String>) -> Client {
        let mut config = self.inner.config.clone();
        config.token = token.into();
        Client {
            inner: Arc::new(Inner {
                http: self.inner.http.clone(),
                config,
                next: AtomicUsize::new(self.inner.next.load(Ordering::Relaxed)),
                routes: self.inner.routes.clone(),
                batcher: self.inner.batcher.clone(),
            }),
        }
    }

    /// What this client's writes (and those of the clients
    /// [`Client::with_token`] made from it) went as so far: in batches or alone.
    pub fn batch_stats(&self) -> BatchStats {
        self.inner.batcher.stats()
    }

    /// A fresh idempotency key.
    pub fn new_idempotency_key() -> String {
        uuid::Uuid::new_v4().to_string()
    }

    async fn attempt(
        &self,
        node: &str,
        method: &Method,
        path: &str,
        body: Option<&Value>,
        key: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Attempt {
        let mut all: Vec<(String, String)> = Vec::with_capacity(headers.len() + 2);
        all.push((
            "authorization".into(),
            format!("Bearer {}", self.inner.config.token),
        ));
        if let Some(k) = key {
            all.push((IDEMPOTENCY_KEY_HEADER.into(), k.to_string()));
        }
        for (name, value) in headers {
            all.push((name.to_ascii_lowercase(), value.to_string()));
        }
        let write = batching::Write {
            method: method.clone(),
            path: path.to_string(),
            headers: all,
            body: body.cloned(),
        };
        // Writes made at the same time share batches (`batch_writes_max`).
        let batcher = &self.inner.batcher;
        match (key.is_some() && method != Method::GET, batcher.enabled()) {
            (true, true) => batcher.send(&self.inner.http, node, write).await,
            (true, false) => batcher.send_alone(&self.inner.http, node, &write).await,
            (false, _) => batching::send_one(&self.inner.http, node, &write).await,
        }
    }

    /// The configured node the shard of `route` was last led by, if known.
    fn route_to(&self, route: Route) -> Option<usize> {
        let r = self.inner.routes.lock().unwrap_or_else(|e| e.into_inner());
        let shard = match route {
            Route::Shard(s) => s,
            Route::Event(e) => *r.shard_of_event.get(&e)?,
        };
        r.leader_of_shard.get(&shard).map(|(i, _)| *i)
    }

    /// Learns from a write's answer: the event's shard, and the shard's leader if
    /// the hint names one of the configured nodes. A hint of an older term
    /// than the one cached is stale (a node that has not heard of the newer
    /// leader yet) and changes nothing.
    fn learn(&self, route: Route, answer: &[u8], hint: &Hint) {
        /// The one field of a write's answer routing needs.
        #[derive(serde::Deserialize)]
        struct Answer {
            applied: Option<AppliedShard>,
        }
        #[derive(serde::Deserialize)]
        struct AppliedShard {
            shard: u16,
        }
        let shard = serde_json::from_slice::<Answer>(answer)
            .ok()
            .and_then(|a| a.applied)
            .map(|a| a.shard)
            .or(match route {
                Route::Shard(s) => Some(s),
                Route::Event(_) => None,
            });
        let Some(shard) = shard else { return };
        let node = hint.leader.as_deref().and_then(|addr| {
            self.inner.config.nodes.iter().position(|n| {
                let n = n.trim_end_matches('/');
                n.strip_prefix("http://")
                    .or_else(|| n.strip_prefix("https://"))
                    .unwrap_or(n)
                    == addr
            })
        });
        let mut r = self.inner.routes.lock().unwrap_or_else(|e| e.into_inner());
        if let Route::Event(e) = route {
            if r.shard_of_event.len() >= ROUTED_EVENTS_MAX {
                r.shard_of_event.clear();
            }
            r.shard_of_event.insert(e, shard);
        }
        let term = hint.term.unwrap_or(0);
        let cached_term = r.leader_of_shard.get(&shard).map(|(_, t)| *t);
        if cached_term.is_some_and(|t| term < t) {
            return;
        }
        match node {
            Some(i) => r.leader_of_shard.insert(shard, (i, term)),
            None => r.leader_of_shard.remove(&shard),
        };
    }

    /// Drops what was learned about the shard of `route` (its leader failed).
    fn forget(&self, route: Route) {
        let mut r = self.inner.routes.lock().unwrap_or_else(|e| e.into_inner());
        let shard = match route {
            Route::Shard(s) => Some(s),
            Route::Event(e) => r.shard_of_event.get(&e).copied(),
        };
        if let Some(s) = shard {
            r.leader_of_shard.remove(&s);
        }
    }

    /// The node this client sends shard `shard`'s writes to first, if it learned
    /// one (the base URL as configured).
    pub fn leader_hint(&self, shard: u16) -> Option<String> {
        self.route_to(Route::Shard(shard))
            .map(|i| self.inner.config.nodes[i].clone())
    }

    /// The node requests go to now, with its position in the rotation.
    fn current_node(&self) -> (usize, &str) {
        let i = self.inner.next.load(Ordering::Relaxed);
        (
            i,
            &self.inner.config.nodes[i % self.inner.config.nodes.len()],
        )
    }

    /// Moves on from node position `i` (unless another call already did).
    fn move_past(&self, i: usize) {
        let _ = self.inner.next.compare_exchange(
            i,
            i.wrapping_add(1),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Waits before attempt `attempt + 1`: the node's `Retry-After` if it gave one,
    /// else exponential from 50 ms, capped by `retry_wait_max`.
    async fn back_off(&self, attempt: u32, retry_after: Option<Duration>) {
        let backoff = Duration::from_millis(50 << attempt.min(4));
        tokio::time::sleep(
            retry_after
                .unwrap_or(backoff)
                .min(self.inner.config.retry_wait_max),
        )
        .await;
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        key: Option<&str>,
    ) -> Result<(StatusCode, Bytes), Error> {
        self.call_routed(method, path, body, key, None).await
    }

    async fn call_routed(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        key: Option<&str>,
        route: Option<Route>,
    ) -> Result<(StatusCode, Bytes), Error> {
        self.call_with(method, path, body, key, route, &[]).await
    }

    async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        key: Option<&str>,
        route: Option<Route>,
        headers: &[(&str, &str)],
    ) -> Result<(StatusCode, Bytes), Error> {
        let cfg = &self.inner.config;
        let mut maybe_applied = false;
        let mut last = String::new();
        for attempt in 0..cfg.attempts_max {
            // The first attempt goes to the shard's leader when known.
            let hinted = if attempt == 0 {
                route.and_then(|r| self.route_to(r))
            } else {
                None
            };
            let (i, node) = match hinted {
                Some(j) => (None, cfg.nodes[j].as_str()),
                None => {
                    let (i, n) = self.current_node();
                    (Some(i), n)
                }
            };
            match self
                .attempt(node, &method, path, body.as_ref(), key, headers)
                .await
            {
                Attempt::Done(r, hint) => {
                    if let (Some(route), Ok((_, v))) = (route, &r) {
                        self.learn(route, v, &hint);
                    }
                    return match (r, key) {
                        // A write answered with a problem that leaves its outcome
                        // open (a 500) is reported as such, with its key.
                        (Err(Error::Api(p)), Some(k)) if p.may_have_applied() => {
                            Err(Error::OutcomeUnknown {
                                idempotency_key: k.to_string(),
                                attempts: attempt + 1,
                                last: format!("{node}: {} {}", p.code, p.detail),
                            })
                        }
                        (r, _) => r,
                    };
                }
                Attempt::Retry {
                    last: l,
                    maybe_applied: m,
                    wait,
                } => {
                    last = l;
                    maybe_applied |= m;
                    match (i, route) {
                        (Some(i), _) => self.move_past(i),
                        (None, Some(route)) => self.forget(route),
                        (None, None) => {}
                    }
                    // A failed hint is retried at once on the current node.
                    if i.is_some() && attempt + 1 < cfg.attempts_max {
                        self.back_off(attempt, wait).await;
                    }
                }
            }
        }
        match key {
            Some(k) if maybe_applied => Err(Error::OutcomeUnknown {
                idempotency_key: k.to_string(),
                attempts: cfg.attempts_max,
                last,
            }),
            _ => Err(Error::Unavailable {
                attempts: cfg.attempts_max,
                last,
            }),
        }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        let (_, body) = self.call(Method::GET, path, None, None).await?;
        decode(&body)
    }

    async fn write<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        key: &str,
        route: Option<Route>,
    ) -> Result<T, Error> {
        let (_, answer) = self
            .call_routed(method, path, body, Some(key), route)
            .await?;
        decode(&answer)
    }

    // ---- public API ----

    /// An event with its venue and performers.
    pub async fn event(&self, event_id: u64, consistency: Consistency) -> Result<EventView, Error> {
        self.get(&format!(
            "/v1/events/{event_id}?consistency={}",
            consistency.as_str()
        ))
        .await
    }

    /// Events with id greater than `after`, at most `limit`.
    pub async fn events(&self, after: u64, limit: u32) -> Result<EventPage, Error> {
        self.get(&format!("/v1/events?after={after}&limit={limit}"))
            .await
    }

    /// Searches events; see [`SearchQuery`].
    pub async fn search(&self, query: &SearchQuery) -> Result<SearchPage, Error> {
        self.get(&format!("/v1/search?{}", query.to_query_string()))
            .await
    }

    /// Type-ahead suggestions for what the user has typed so far: performers,
    /// venues and upcoming events (at most `limit`, server default 8, at most 20).
    pub async fn suggest(&self, q: &str, limit: Option<u32>) -> Result<SuggestPage, Error> {
        let mut path = format!("/v1/search/suggest?q={}", encode_component(q));
        if let Some(n) = limit {
            path.push_str(&format!("&limit={n}"));
        }
        self.get(&path).await
    }

    /// The event's seat map (or general-admission counts).
    pub async fn seats(&self, event_id: u64, consistency: Consistency) -> Result<SeatMap, Error> {
        self.get(&format!(
            "/v1/events/{event_id}/seats?consistency={}",
            consistency.as_str()
        ))
        .await
    }

    /// One section's seats of the event's seat map (the counts are the event's).
    pub async fn section_seats(
        &self,
        event_id: u64,
        section: &str,
        consistency: Consistency,
    ) -> Result<SeatMap, Error> {
        self.get(&seats_path(event_id, Some(section), "seats", consistency)?)
            .await
    }

    /// The event's compact seat map (one status string per row), only `section`'s
    /// rows when given: what a front end needs to draw a large venue, in about a
    /// thirtieth of the bytes of [`Client::seats`] (no hold expiry times).
    pub async fn seat_rows(
        &self,
        event_id: u64,
        section: Option<&str>,
        consistency: Consistency,
    ) -> Result<SeatRows, Error> {
        self.get(&seats_path(event_id, section, "rows", consistency)?)
            .await
    }

    /// Holds seats or a quantity, with a fresh idempotency key.
    pub async fn hold(&self, event_id: u64, selection: Selection) -> Result<Hold, Error> {
        self.hold_with_key(event_id, selection, &Self::new_idempotency_key())
            .await
    }

    /// Holds with a given idempotency key (a retry returns the first answer).
    pub async fn hold_with_key(
        &self,
        event_id: u64,
        selection: Selection,
        key: &str,
    ) -> Result<Hold, Error> {
        self.write(
            Method::POST,
            "/v1/holds",
            Some(to_body(&NewHold::new(event_id, selection))?),
            key,
            Some(Route::Event(event_id)),
        )
        .await
    }

    /// Holds on an event whose waiting room is on, with the `admission_token`
    /// the user's place showed once admitted (see [`Client::queue_place`]).
    pub async fn hold_admitted(
        &self,
        event_id: u64,
        selection: Selection,
        admission_token: &str,
    ) -> Result<Hold, Error> {
        let (_, answer) = self
            .call_with(
                Method::POST,
                "/v1/holds",
                Some(to_body(&NewHold::new(event_id, selection))?),
                Some(&Self::new_idempotency_key()),
                Some(Route::Event(event_id)),
                &[(boxoffice_api::ADMISSION_HEADER, admission_token)],
            )
            .await?;
        decode(&answer)
    }

    /// Joins an event's waiting room (or is told the place already held: a
    /// join never moves anyone), and answers the place.
    pub async fn join_queue(&self, event_id: u64) -> Result<QueuePlace, Error> {
        // Idempotent by itself: retried without a key.
        let (_, answer) = self
            .call_routed(
                Method::POST,
                &format!("/v1/events/{event_id}/queue"),
                None,
                None,
                Some(Route::Event(event_id)),
            )
            .await?;
        decode(&answer)
    }

    /// The caller's place in an event's queue, as the answering replica has it
    /// (with the `admission_token` once admitted).
    pub async fn queue_place(&self, event_id: u64) -> Result<QueuePlace, Error> {
        self.get(&format!("/v1/events/{event_id}/queue/me")).await
    }

    /// Sets an event's waiting room up, or changes it (admin token).
    pub async fn set_queue(
        &self,
        event_id: u64,
        settings: &QueueSettings,
    ) -> Result<QueueStats, Error> {
        self.write(
            Method::PUT,
            &format!("/admin/v1/events/{event_id}/queue"),
            Some(to_body(settings)?),
            &Self::new_idempotency_key(),
            None,
        )
        .await
    }

    /// An event's queue figures (admin token).
    pub async fn queue_stats(&self, event_id: u64) -> Result<QueueStats, Error> {
        self.get(&format!("/admin/v1/events/{event_id}/queue"))
            .await
    }

    /// Pauses, resumes, closes or opens an event's queue (admin token):
    /// `action` is `pause`, `resume`, `close` or `open`.
    pub async fn queue_action(&self, event_id: u64, action: &str) -> Result<QueueStats, Error> {
        check_id(action)?;
        self.write(
            Method::POST,
            &format!("/admin/v1/events/{event_id}/queue/{action}"),
            None,
            &Self::new_idempotency_key(),
            None,
        )
        .await
    }

    /// Confirms a hold into a booking, with a fresh idempotency key.
    pub async fn confirm(&self, hold_id: &str, payment_ref: &str) -> Result<Booking, Error> {
        self.confirm_with_key(hold_id, payment_ref, &Self::new_idempotency_key())
            .await
    }

    /// Confirms with a given idempotency key.
    pub async fn confirm_with_key(
        &self,
        hold_id: &str,
        payment_ref: &str,
        key: &str,
    ) -> Result<Booking, Error> {
        check_id(hold_id)?;
        let body = ConfirmHold {
            payment_ref: payment_ref.to_string(),
        };
        self.write(
            Method::POST,
            &format!("/v1/holds/{hold_id}/confirm"),
            Some(to_body(&body)?),
            key,
            hold_shard(hold_id).map(Route::Shard),
        )
        .await
    }

    /// Releases a hold: its seats are available again at once.
    pub async fn release(&self, hold_id: &str) -> Result<(), Error> {
        check_id(hold_id)?;
        self.call_routed(
            Method::DELETE,
            &format!("/v1/holds/{hold_id}"),
            None,
            Some(&format!("release:{hold_id}")),
            hold_shard(hold_id).map(Route::Shard),
        )
        .await
        .map(|_| ())
    }

    /// Starts paying for a hold: the provider's payment is created (or the one
    /// in flight returned) and the hold waits for it. Pass the answer's
    /// `client_secret` to the provider's client library (or the sandbox's
    /// confirm); the provider's webhook books the hold once the buyer paid.
    pub async fn checkout(&self, hold_id: &str) -> Result<Checkout, Error> {
        check_id(hold_id)?;
        self.write(
            Method::POST,
            &format!("/v1/holds/{hold_id}/checkout"),
            None,
            &format!("checkout:{hold_id}:{}", Self::new_idempotency_key()),
            hold_shard(hold_id).map(Route::Shard),
        )
        .await
    }

    /// Cancels the caller's booking (until the event's cancellation cutoff):
    /// its seats are available again and its payment is refunded.
    pub async fn cancel_booking(&self, booking_id: &str) -> Result<Cancelled, Error> {
        check_id(booking_id)?;
        self.write(
            Method::POST,
            &format!("/v1/bookings/{booking_id}/cancel"),
            None,
            &format!("cancel:{booking_id}"),
            booking_shard(booking_id).map(Route::Shard),
        )
        .await
    }

    /// Cancels any booking (admin token).
    pub async fn admin_cancel_booking(&self, booking_id: &str) -> Result<Cancelled, Error> {
        check_id(booking_id)?;
        self.write(
            Method::POST,
            &format!("/admin/v1/bookings/{booking_id}/cancel"),
            None,
            &format!("admin-cancel:{booking_id}"),
            booking_shard(booking_id).map(Route::Shard),
        )
        .await
    }

    /// A hold's status (the caller's own).
    pub async fn hold_status(&self, hold_id: &str) -> Result<HoldStatus, Error> {
        check_id(hold_id)?;
        self.get(&format!("/v1/holds/{hold_id}")).await
    }

    /// A booking (the caller's own); linearizable.
    pub async fn booking(&self, booking_id: &str) -> Result<Booking, Error> {
        check_id(booking_id)?;
        self.get(&format!("/v1/bookings/{booking_id}")).await
    }

    /// The caller's bookings (at most a page; see [`BookingList::truncated`]);
    /// linearizable.
    pub async fn bookings(&self) -> Result<BookingList, Error> {
        self.get("/v1/bookings").await
    }

    // ---- admin API (admin token) ----

    /// An admin write with a fresh idempotency key.
    async fn admin_write<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T, Error> {
        self.write(
            method,
            path,
            Some(to_body(body)?),
            &Self::new_idempotency_key(),
            None,
        )
        .await
    }

    /// Creates a venue.
    pub async fn create_venue(&self, venue: &NewVenue) -> Result<VenueCreated, Error> {
        self.admin_write(Method::POST, "/admin/v1/venues", venue)
            .await
    }

    /// Creates a performer.
    pub async fn create_performer(
        &self,
        performer: &NewPerformer,
    ) -> Result<PerformerCreated, Error> {
        self.admin_write(Method::POST, "/admin/v1/performers", performer)
            .await
    }

    /// Creates an event; its tickets are created from the venue's map.
    pub async fn create_event(&self, event: &NewEvent) -> Result<EventCreated, Error> {
        self.admin_write(Method::POST, "/admin/v1/events", event)
            .await
    }

    /// Creates up to 1000 events at once (all or none; mind the node's body
    /// limit), in order.
    pub async fn create_events(&self, events: &[NewEvent]) -> Result<EventsCreated, Error> {
        let body = NewEvents {
            events: events.to_vec(),
        };
        self.admin_write(Method::POST, "/admin/v1/events/batch", &body)
            .await
    }

    /// Changes an event's name, description, category or start time.
    pub async fn update_event(
        &self,
        event_id: u64,
        update: &EventUpdate,
    ) -> Result<EventUpdated, Error> {
        self.admin_write(
            Method::PATCH,
            &format!("/admin/v1/events/{event_id}"),
            update,
        )
        .await
    }

    /// Cluster status as the first reachable node sees it.
    pub async fn cluster(&self) -> Result<ClusterStatus, Error> {
        self.get("/admin/v1/cluster").await
    }

    /// Bootstraps a cluster of `members` (id, host:port) with `shards` inventory shards.
    pub async fn init_cluster(
        &self,
        members: &[(u64, String)],
        shards: u16,
    ) -> Result<ClusterInitialized, Error> {
        let body = ClusterInit {
            members: members
                .iter()
                .map(|(id, addr)| Member {
                    id: *id,
                    addr: addr.clone(),
                    labels: Default::default(),
                })
                .collect(),
            shards: Some(shards),
            replication_factor: None,
        };
        let (_, v) = self
            .call(
                Method::POST,
                "/admin/v1/cluster/init",
                Some(to_body(&body)?),
                None,
            )
            .await?;
        decode(&v)
    }

    /// Adds node `id` (running, with an empty data directory) at cluster
    /// address `addr`; the balancer then moves replicas to it.
    pub async fn add_node(
        &self,
        id: u64,
        addr: &str,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Result<NodeStateView, Error> {
        let body = NewNode {
            id,
            addr: addr.to_string(),
            labels,
        };
        let (_, v) = self
            .call(Method::POST, "/admin/v1/nodes", Some(to_body(&body)?), None)
            .await?;
        decode(&v)
    }

    /// Drains node `id` (`draining`), or marks it up again.
    pub async fn set_node_draining(&self, id: u64, draining: bool) -> Result<NodeStateView, Error> {
        let path = if draining {
            format!("/admin/v1/nodes/{id}/drain")
        } else {
            format!("/admin/v1/nodes/{id}/up")
        };
        let (_, v) = self.call(Method::POST, &path, None, None).await?;
        decode(&v)
    }

    /// Moves group `group`'s replica on node `from` to node `to`, online (the
    /// new replica catches up as a learner, then one joint change swaps them).
    /// Done already: `moved` is false.
    pub async fn move_replica(
        &self,
        group: u16,
        from: u64,
        to: u64,
    ) -> Result<ReplicaMoved, Error> {
        let body = ReplicaMove { from, to };
        let (_, v) = self
            .call(
                Method::POST,
                &format!("/admin/v1/groups/{group}/move"),
                Some(to_body(&body)?),
                None,
            )
            .await?;
        decode(&v)
    }

    /// Hands group `group`'s leadership to its voter `to` (the leader holds
    /// the group's writes for about a leader lease meanwhile). `to` leading
    /// already: `moved` is false.
    pub async fn transfer_leader(&self, group: u16, to: u64) -> Result<LeaderTransferred, Error> {
        let body = LeaderTransfer { to };
        let (_, v) = self
            .call(
                Method::POST,
                &format!("/admin/v1/groups/{group}/leader"),
                Some(to_body(&body)?),
                None,
            )
            .await?;
        decode(&v)
    }
}

/// A request body as JSON.
fn to_body<T: serde::Serialize>(body: &T) -> Result<Value, Error> {
    serde_json::to_value(body).map_err(|e| Error::Invalid(e.to_string()))
}

/// The problem a failed answer carries; a body that is not one (from a proxy,
/// say) becomes a problem without a known code, judged by its status.
fn problem_from(status: StatusCode, bytes: &[u8]) -> Problem {
    match serde_json::from_slice::<Problem>(bytes) {
        Ok(p) => p,
        Err(_) => Problem {
            type_uri: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("error").into(),
            status: status.as_u16(),
            code: String::new(),
            detail: String::from_utf8_lossy(bytes).into_owned(),
            extra: Default::default(),
        },
    }
}

/// The problem a failed response carries.
async fn problem_of(resp: reqwest::Response) -> Error {
    let status = resp.status();
    match resp.bytes().await {
        Ok(b) => Error::Api(Box::new(problem_from(status, &b))),
        Err(e) => Error::Unavailable {
            attempts: 1,
            last: e.to_string(),
        },
    }
}

fn check_id(id: &str) -> Result<(), Error> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(Error::Invalid(format!("malformed id {id:?}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_ids_name_their_shard() {
        assert_eq!(hold_shard("h3-17"), Some(3));
        assert_eq!(hold_shard("h12-1"), Some(12));
        assert_eq!(hold_shard("b3-17"), None);
        assert_eq!(hold_shard("h-1"), None);
        assert_eq!(hold_shard("hx-1"), None);
    }

    #[test]
    fn leader_hints_route_writes_and_are_forgotten_on_failure() {
        let c = Client::new(ClientConfig::new(
            ["http://127.0.0.1:7101/", "http://127.0.0.2:7102"],
            "t",
        ))
        .unwrap();
        let hint = |leader: &str, term: u64| Hint {
            leader: Some(leader.to_string()),
            term: Some(term),
        };
        // A hold's answer: the event lives on shard 3, led by the second node.
        c.learn(
            Route::Event(42),
            br#"{"hold_id": "h3-1", "applied": {"shard": 3, "index": 9}}"#,
            &hint("127.0.0.2:7102", 4),
        );
        assert_eq!(c.route_to(Route::Event(42)), Some(1));
        assert_eq!(c.route_to(Route::Shard(3)), Some(1));
        assert_eq!(c.route_to(Route::Event(43)), None);
        // A hint of an older term (a node that has not heard of the new
        // leader) changes nothing.
        c.learn(Route::Shard(3), b"", &hint("127.0.0.1:7101", 3));
        assert_eq!(c.route_to(Route::Shard(3)), Some(1));
        // A leader that is not one of the configured nodes is no hint at all.
        c.learn(Route::Shard(3), b"", &hint("10.0.0.9:7102", 5));
        assert_eq!(c.leader_hint(3), None);
        c.learn(Route::Shard(3), b"", &hint("127.0.0.1:7101", 5));
        assert_eq!(c.leader_hint(3).as_deref(), Some("http://127.0.0.1:7101/"));
        c.forget(Route::Event(42));
        assert_eq!(c.route_to(Route::Event(42)), None);
    }
}
