//! Rate limits per user and per client address, by kind of request.
//!
//! A request's kind ([`RequestClass`]) comes from its method and path. Every
//! public request is first counted against its client address (before its body
//! is read or its token verified); requests made with a user token are then
//! counted against the user as well (in the `User` extractor, after the token is
//! verified, so a forged subject cannot spend someone else's allowance). Over a
//! limit: 429 `rate_limited` with `Retry-After`. Each limit is a GCRA bucket
//! (`governor`): `per_s` requests a second, bursts of `burst`; `per_s = 0` turns
//! it off. The client address is the socket's, or, when the socket's address is
//! one of `rate_limits.trusted_proxies`, the last address in the
//! `rate_limits.client_address_header` the proxy set.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use serde::{Deserialize, Serialize};

use boxoffice_api::ProblemCode;

use crate::error::ApiError;

/// One limit: `per_s` requests a second on average, `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Requests a second (0: no limit).
    pub per_s: u32,
    /// Requests accepted at once after a quiet spell (at least 1 when on).
    pub burst: u32,
}

impl Rate {
    const fn new(per_s: u32, burst: u32) -> Self {
        Rate { per_s, burst }
    }
}

/// A limit over a longer window: at most `max` in any `window_s` seconds (a
/// GCRA bucket of `max`, refilled one every `window_s / max` seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Most in a window (0: no limit).
    pub max: u32,
    /// The window's length.
    pub window_s: u32,
}

/// `[rate_limits]`: what one user and one client address may do.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Holds, confirms and releases by one user.
    pub user_writes: Rate,
    /// Linearizable reads by one user (their holds and bookings, and any read
    /// with `consistency=linearizable`): each costs the leader a round.
    pub user_linearizable_reads: Rate,
    /// Writes from one client address.
    pub address_writes: Rate,
    /// Linearizable reads from one client address.
    pub address_linearizable_reads: Rate,
    /// Local reads (event views, seat maps) from one client address.
    pub address_reads: Rate,
    /// Searches from one client address.
    pub address_searches: Rate,
    /// Live streams (seat maps, queue positions) opened from one client address.
    pub address_streams: Rate,
    /// Joins of waiting rooms from one client address (each is one place for
    /// one account; a bot farm behind one address gets few).
    pub address_queue_joins: Rate,
    /// Holds one user may ask for on one event, counted by the shard's leader
    /// (whichever node took the request): a user who holds and releases, or
    /// lets holds expire, over and over would otherwise keep seats from
    /// everyone. Retries count too. A new leader starts counting afresh.
    pub user_event_holds: Window,
    /// A request over its client address's limit is answered (429) after this
    /// long rather than at once, so that a flood from one address with a fixed
    /// number of requests in flight slows to that many a delay, and costs the
    /// node little; 0 answers at once.
    pub over_limit_delay_ms: u64,
    /// Over-limit requests of one address delayed at once; beyond it they are
    /// answered at once (each delayed one holds a connection and a timer).
    pub over_limit_delayed_per_address_max: usize,
    /// Header carrying the client's address, set by a trusted proxy (e.g.
    /// `x-forwarded-for`); unset: the socket's address is the client's.
    pub client_address_header: Option<String>,
    /// Addresses of proxies whose `client_address_header` is believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// Users and addresses tracked per limit before idle ones are dropped (an
    /// idle key's bucket is full again, so dropping it changes nothing).
    pub tracked_keys_max: usize,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings {
            user_writes: Rate::new(10, 20),
            user_linearizable_reads: Rate::new(50, 100),
            address_writes: Rate::new(200, 400),
            address_linearizable_reads: Rate::new(500, 1000),
            address_reads: Rate::new(2000, 4000),
            address_searches: Rate::new(100, 200),
            address_streams: Rate::new(10, 40),
            address_queue_joins: Rate::new(5, 20),
            user_event_holds: Window {
                max: 12,
                window_s: 600,
            },
            over_limit_delay_ms: 1000,
            over_limit_delayed_per_address_max: 64,
            client_address_header: None,
            trusted_proxies: Vec::new(),
            tracked_keys_max: 100_000,
        }
    }
}

impl RateLimitSettings {
    /// Every limit with its setting's name.
    pub fn named(&self) -> [(&'static str, Rate); 8] {
        [
            ("rate_limits.user_writes", self.user_writes),
            (
                "rate_limits.user_linearizable_reads",
                self.user_linearizable_reads,
            ),
            ("rate_limits.address_writes", self.address_writes),
            (
                "rate_limits.address_linearizable_reads",
                self.address_linearizable_reads,
            ),
            ("rate_limits.address_reads", self.address_reads),
            ("rate_limits.address_searches", self.address_searches),
            ("rate_limits.address_streams", self.address_streams),
            ("rate_limits.address_queue_joins", self.address_queue_joins),
        ]
    }
}

/// The kinds of request that have limits of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestClass {
    /// Holds, confirms, releases.
    Write,
    /// A read that waits for the leader's read index.
    LinearizableRead,
    /// A read of this replica.
    Read,
    /// `/v1/search`.
    Search,
    /// Opening a live stream (seat map, queue position).
    Stream,
    /// Joining an event's waiting room.
    QueueJoin,
    /// Admin API, health and readiness: not limited here (the admin API has its
    /// own credential; probes must always answer).
    Unlimited,
}

/// The class of a request.
pub fn classify(method: &Method, path: &str, query: Option<&str>) -> RequestClass {
    let has = |kv: &str| query.is_some_and(|q| q.split('&').any(|p| p == kv));
    if !path.starts_with("/v1/") {
        return RequestClass::Unlimited;
    }
    if path == "/v1/search" {
        return RequestClass::Search;
    }
    // The provider's deliveries come from a few addresses in bursts (an
    // on-sale's payments) and are authenticated by their signature, checked
    // before anything else (an HMAC: cheap); the node's in-flight bound holds.
    if path == "/v1/payments/webhook" {
        return RequestClass::Unlimited;
    }
    if path.ends_with("/seats/stream") || path.ends_with("/queue/me/stream") {
        return RequestClass::Stream;
    }
    if method == Method::POST && path.starts_with("/v1/events/") && path.ends_with("/queue") {
        return RequestClass::QueueJoin;
    }
    if method != Method::GET && method != Method::HEAD {
        return RequestClass::Write;
    }
    // A user's holds and bookings are read linearizably unless asked otherwise.
    let own = path.starts_with("/v1/holds") || path.starts_with("/v1/bookings");
    if has("consistency=linearizable") || (own && !has("consistency=local")) {
        RequestClass::LinearizableRead
    } else {
        RequestClass::Read
    }
}

struct Limit<K: std::hash::Hash + Eq + Clone> {
    name: &'static str,
    limiter: DefaultKeyedRateLimiter<K>,
}

impl<K: std::hash::Hash + Eq + Clone> Limit<K> {
    fn new(name: &'static str, rate: Rate) -> Option<Self> {
        let per_s = NonZeroU32::new(rate.per_s)?;
        let burst = NonZeroU32::new(rate.burst).unwrap_or(per_s);
        Some(Limit {
            name,
            limiter: DefaultKeyedRateLimiter::keyed(Quota::per_second(per_s).allow_burst(burst)),
        })
    }

    fn check(&self, key: &K, keys_max: usize, checks: &AtomicU64) -> Result<(), ApiError> {
        sweep(&self.limiter, keys_max, checks);
        self.limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let retry_after_s = u32::try_from(wait.as_secs()).unwrap_or(u32::MAX).max(1);
            let mut e = ApiError::new(
                ProblemCode::RateLimited,
                format!(
                    "over the limit {}; retry in {} ms",
                    self.name,
                    wait.as_millis()
                ),
            )
            .with("limit", self.name);
            e.retry_after_s = Some(retry_after_s);
            e
        })
    }
}

/// How many checks pass between looks at a limiter's size.
const SWEEP_EVERY: u64 = 4096;

/// Now and then (every `SWEEP_EVERY` checks), drops idle keys (their buckets
/// are full, so forgetting them changes nothing) once there are more than
/// `keys_max`, to bound memory.
fn sweep<K: std::hash::Hash + Eq + Clone>(
    limiter: &DefaultKeyedRateLimiter<K>,
    keys_max: usize,
    checks: &AtomicU64,
) {
    if checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == 0 && limiter.len() > keys_max {
        limiter.retain_recent();
        limiter.shrink_to_fit();
    }
}

/// Things held open at once per key (live streams per user, per client
/// address), each at most `max`; a [`Slot`] gives its place back when dropped.
pub struct Slots<K: std::hash::Hash + Eq + Clone + Send + 'static> {
    name: &'static str,
    max: usize,
    held: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<K, usize>>>,
}

/// One place taken in [`Slots`].
pub struct Slot<K: std::hash::Hash + Eq + Clone + Send + 'static> {
    key: K,
    held: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<K, usize>>>,
}

impl<K: std::hash::Hash + Eq + Clone + Send + 'static> Slots<K> {
    /// At most `max` per key (0: no limit), named by the setting `name`.
    pub fn new(name: &'static str, max: usize) -> Self {
        Slots {
            name,
            max,
            held: Default::default(),
        }
    }

    /// Takes a place for `key`, or says why not (429 naming the setting).
    pub fn take(&self, key: K) -> Result<Option<Slot<K>>, ApiError> {
        if self.max == 0 {
            return Ok(None);
        }
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let n = held.entry(key.clone()).or_insert(0);
        if *n >= self.max {
            let mut e = ApiError::new(
                ProblemCode::RateLimited,
                format!("{} open at once already ({})", self.max, self.name),
            )
            .with("limit", self.name);
            e.retry_after_s = Some(1);
            return Err(e);
        }
        *n += 1;
        Ok(Some(Slot {
            key,
            held: self.held.clone(),
        }))
    }

    /// Keys holding at least one place.
    pub fn keys(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl<K: std::hash::Hash + Eq + Clone + Send + 'static> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

/// `rate_limits.user_event_holds`, kept by the node for the shards it leads.
pub struct HoldChurn {
    limiter: Option<DefaultKeyedRateLimiter<(u64, String)>>,
    keys_max: usize,
    checks: AtomicU64,
}

impl HoldChurn {
    /// The limit `settings` set (none when `max` is 0).
    pub fn new(settings: &RateLimitSettings) -> Self {
        let w = settings.user_event_holds;
        let limiter = NonZeroU32::new(w.max).and_then(|max| {
            let period = std::time::Duration::from_secs(u64::from(w.window_s)) / w.max;
            Quota::with_period(period).map(|q| DefaultKeyedRateLimiter::keyed(q.allow_burst(max)))
        });
        HoldChurn {
            limiter,
            keys_max: settings.tracked_keys_max,
            checks: AtomicU64::new(0),
        }
    }

    /// Counts a hold by `user` on `event_id`; over the limit, how long until
    /// the next one would be accepted.
    pub fn check(&self, event_id: u64, user: &str) -> Result<(), std::time::Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        sweep(limiter, self.keys_max, &self.checks);
        limiter
            .check_key(&(event_id, user.to_string()))
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// A node's rate limiters.
pub struct RateLimits {
    settings: RateLimitSettings,
    delayed: Slots<IpAddr>,
    user_writes: Option<Limit<String>>,
    user_linearizable_reads: Option<Limit<String>>,
    address_writes: Option<Limit<IpAddr>>,
    address_linearizable_reads: Option<Limit<IpAddr>>,
    address_reads: Option<Limit<IpAddr>>,
    address_searches: Option<Limit<IpAddr>>,
    address_streams: Option<Limit<IpAddr>>,
    address_queue_joins: Option<Limit<IpAddr>>,
    checks: AtomicU64,
}

impl RateLimits {
    /// Limiters for `settings`.
    pub fn new(settings: &RateLimitSettings) -> Self {
        let s = settings;
        RateLimits {
            settings: s.clone(),
            delayed: Slots::new(
                "rate_limits.over_limit_delayed_per_address_max",
                s.over_limit_delayed_per_address_max,
            ),
            user_writes: Limit::new("rate_limits.user_writes", s.user_writes),
            user_linearizable_reads: Limit::new(
                "rate_limits.user_linearizable_reads",
                s.user_linearizable_reads,
            ),
            address_writes: Limit::new("rate_limits.address_writes", s.address_writes),
            address_linearizable_reads: Limit::new(
                "rate_limits.address_linearizable_reads",
                s.address_linearizable_reads,
            ),
            address_reads: Limit::new("rate_limits.address_reads", s.address_reads),
            address_searches: Limit::new("rate_limits.address_searches", s.address_searches),
            address_streams: Limit::new("rate_limits.address_streams", s.address_streams),
            address_queue_joins: Limit::new(
                "rate_limits.address_queue_joins",
                s.address_queue_joins,
            ),
            checks: AtomicU64::new(0),
        }
    }

    /// Counts one request of `class` by `user`.
    pub fn check_user(&self, class: RequestClass, user: &str) -> Result<(), ApiError> {
        let limit = match class {
            RequestClass::Write | RequestClass::QueueJoin => &self.user_writes,
            RequestClass::LinearizableRead => &self.user_linearizable_reads,
            _ => &None,
        };
        match limit {
            Some(l) => l.check(
                &user.to_string(),
                self.settings.tracked_keys_max,
                &self.checks,
            ),
            None => Ok(()),
        }
    }

    /// Counts one request of `class` from `addr`.
    pub fn check_address(&self, class: RequestClass, addr: IpAddr) -> Result<(), ApiError> {
        let limit = match class {
            RequestClass::Write => &self.address_writes,
            RequestClass::LinearizableRead => &self.address_linearizable_reads,
            RequestClass::Read => &self.address_reads,
            RequestClass::Search => &self.address_searches,
            RequestClass::Stream => &self.address_streams,
            RequestClass::QueueJoin => &self.address_queue_joins,
            RequestClass::Unlimited => &None,
        };
        match limit {
            Some(l) => l.check(&addr, self.settings.tracked_keys_max, &self.checks),
            None => Ok(()),
        }
    }

    /// The client's address: the socket's, or the one a trusted proxy names.
    pub fn client_address(&self, socket: IpAddr, headers: &HeaderMap) -> IpAddr {
        let s = &self.settings;
        let Some(header) = s.client_address_header.as_deref() else {
            return socket;
        };
        if !s.trusted_proxies.contains(&socket) {
            return socket;
        }
        headers
            .get_all(header)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse::<IpAddr>().ok())
            .next_back()
            .unwrap_or(socket)
    }
}

/// Something that has the node's rate limits (the app state).
pub trait HasRateLimits {
    /// The limits.
    fn rate_limits(&self) -> &RateLimits;
}

/// Middleware: counts every public request against its client address before
/// anything else is done with it. Requests without a socket address (the
/// router driven in-process) are not counted here.
pub async fn by_address(
    State(limits): State<std::sync::Arc<RateLimits>>,
    req: Request,
    next: Next,
) -> Response {
    let socket = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    if let Some(socket) = socket {
        let class = classify(req.method(), req.uri().path(), req.uri().query());
        let addr = limits.client_address(socket, req.headers());
        if let Err(e) = limits.check_address(class, addr) {
            let delay = limits.settings.over_limit_delay_ms;
            if delay > 0 {
                // Held while it waits; none left: answered at once.
                if let Ok(slot) = limits.delayed.take(addr) {
                    tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                    drop(slot);
                }
            }
            return e.into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_classified_by_method_and_path() {
        let c = |m: Method, p: &str, q: Option<&str>| classify(&m, p, q);
        assert_eq!(c(Method::POST, "/v1/holds", None), RequestClass::Write);
        assert_eq!(
            c(Method::DELETE, "/v1/holds/h1-2", None),
            RequestClass::Write
        );
        assert_eq!(
            c(Method::GET, "/v1/holds/h1-2", None),
            RequestClass::LinearizableRead
        );
        assert_eq!(
            c(
                Method::GET,
                "/v1/bookings",
                Some("event_id=1&consistency=local")
            ),
            RequestClass::Read
        );
        assert_eq!(
            c(Method::GET, "/v1/events/3/seats", None),
            RequestClass::Read
        );
        assert_eq!(
            c(
                Method::GET,
                "/v1/events/3/seats",
                Some("consistency=linearizable")
            ),
            RequestClass::LinearizableRead
        );
        assert_eq!(
            c(Method::GET, "/v1/search", Some("q=x")),
            RequestClass::Search
        );
        assert_eq!(
            c(Method::GET, "/v1/events/3/seats/stream", None),
            RequestClass::Stream
        );
        assert_eq!(
            c(Method::POST, "/admin/v1/venues", None),
            RequestClass::Unlimited
        );
        assert_eq!(c(Method::GET, "/readyz", None), RequestClass::Unlimited);
        assert_eq!(
            c(Method::POST, "/v1/events/7/queue", None),
            RequestClass::QueueJoin
        );
        assert_eq!(
            c(Method::GET, "/v1/events/7/queue/me/stream", None),
            RequestClass::Stream
        );
        assert_eq!(
            c(Method::GET, "/v1/events/7/queue/me", None),
            RequestClass::Read
        );
    }

    #[test]
    fn a_burst_then_429_with_retry_after_and_other_keys_unaffected() {
        let mut s = RateLimitSettings::default();
        s.user_writes = Rate::new(1, 3);
        let l = RateLimits::new(&s);
        for _ in 0..3 {
            l.check_user(RequestClass::Write, "bot").unwrap();
        }
        let e = l.check_user(RequestClass::Write, "bot").unwrap_err();
        assert_eq!(e.code, ProblemCode::RateLimited);
        assert_eq!(e.retry_after_s, Some(1));
        assert_eq!(e.extra["limit"], "rate_limits.user_writes");
        l.check_user(RequestClass::Write, "honest").unwrap();
        // Reads have their own allowance.
        l.check_user(RequestClass::LinearizableRead, "bot").unwrap();
        // Off: no limit at all.
        s.user_writes = Rate::new(0, 0);
        let off = RateLimits::new(&s);
        for _ in 0..1000 {
            off.check_user(RequestClass::Write, "bot").unwrap();
        }
    }

    #[test]
    fn queue_joins_from_one_address_have_their_own_limit() {
        let mut s = RateLimitSettings::default();
        s.address_queue_joins = Rate::new(1, 2);
        let l = RateLimits::new(&s);
        let bots: IpAddr = "10.0.0.7".parse().unwrap();
        for _ in 0..2 {
            l.check_address(RequestClass::QueueJoin, bots).unwrap();
        }
        let e = l.check_address(RequestClass::QueueJoin, bots).unwrap_err();
        assert_eq!(e.extra["limit"], "rate_limits.address_queue_joins");
        // Other writes and other addresses are unaffected.
        l.check_address(RequestClass::Write, bots).unwrap();
        l.check_address(RequestClass::QueueJoin, "10.0.0.8".parse().unwrap())
            .unwrap();
        // A join counts against the user's writes too.
        s.user_writes = Rate::new(1, 1);
        let l = RateLimits::new(&s);
        l.check_user(RequestClass::QueueJoin, "bot").unwrap();
        assert!(l.check_user(RequestClass::Write, "bot").is_err());
    }

    #[test]
    fn the_client_address_comes_from_a_trusted_proxy_only() {
        let mut s = RateLimitSettings::default();
        s.client_address_header = Some("x-forwarded-for".into());
        s.trusted_proxies = vec!["10.0.0.1".parse().unwrap()];
        let l = RateLimits::new(&s);
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "1.2.3.4, 5.6.7.8".parse().unwrap());
        assert_eq!(
            l.client_address("10.0.0.1".parse().unwrap(), &h),
            "5.6.7.8".parse::<IpAddr>().unwrap()
        );
        // Anyone else's header is ignored.
        assert_eq!(
            l.client_address("10.0.0.2".parse().unwrap(), &h),
            "10.0.0.2".parse::<IpAddr>().unwrap()
        );
        // A trusted proxy without the header: its own address.
        assert_eq!(
            l.client_address("10.0.0.1".parse().unwrap(), &HeaderMap::new()),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
    }
}
