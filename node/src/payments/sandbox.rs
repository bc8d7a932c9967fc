//! `boxoffice payments-sandbox`: a local payment provider that speaks the
//! parts of Stripe's REST API the store uses, with Stripe's semantics, and
//! delivers signed webhooks the way Stripe does: one event per POST,
//! `Stripe-Signature: t=...,v1=...`, at least once, retried with exponential
//! back-off until the endpoint answers 2xx (or the retry window closes).
//!
//! Endpoints (bearer secret key, form-encoded bodies, JSON answers, Stripe's
//! error shape):
//!
//! - `POST /v1/payment_intents` (`Idempotency-Key` honoured: the same key and
//!   parameters give the first answer; other parameters are refused),
//!   `GET /v1/payment_intents/{id}`, `POST /v1/payment_intents/{id}/cancel`.
//! - `POST /v1/payment_intents/{id}/confirm` with `payment_method`: Stripe's
//!   test cards, `pm_card_visa` succeeds, `pm_card_chargeDeclined` declines
//!   (the intent goes back to `requires_payment_method`). A front end may call
//!   it with the intent's `client_secret` instead of the secret key.
//! - `POST /v1/refunds` (`payment_intent`, `amount`), `GET /v1/refunds/{id}`.
//!
//! Faults on demand, for tests and the fault harness (`POST /sandbox/faults`,
//! also settable at start): duplicate deliveries, random delivery delays (so
//! reordering, and delays past a hold's expiry), an API outage (every API call
//! answers 503) and a webhook outage (nothing is delivered until it ends).
//! `GET /sandbox/state` reports what was created and delivered.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::signature;

/// Most payment intents and refunds the sandbox keeps (each); past it, creates
/// are refused with 429.
pub const SANDBOX_OBJECTS_MAX: usize = 200_000;
/// Most webhook deliveries in flight at once; the rest wait their turn.
pub const SANDBOX_DELIVERIES_IN_FLIGHT_MAX: usize = 64;
/// Longest form body the sandbox reads (bytes).
pub const SANDBOX_BODY_MAX_BYTES: usize = 64 * 1024;

/// How the sandbox runs.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// The secret key callers must present (`sk_test_...`).
    pub secret_key: String,
    /// Where webhooks go (`http://127.0.0.1:PORT/v1/payments/webhook`), one
    /// after another on failure (a cluster's nodes); none: not sent.
    pub webhook_urls: Vec<String>,
    /// The endpoint's signing secret (`whsec_...`).
    pub webhook_secret: String,
    /// First retry delay; doubled after each failure.
    pub retry_base: Duration,
    /// Longest delay between two attempts.
    pub retry_max: Duration,
    /// How long an event is retried before it is given up (Stripe: 3 days).
    pub retry_window: Duration,
    /// Timeout of one delivery attempt.
    pub delivery_timeout: Duration,
    /// Faults at start.
    pub faults: Faults,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            secret_key: "sk_test_boxoffice_sandbox".into(),
            webhook_urls: Vec::new(),
            webhook_secret: "whsec_boxoffice_sandbox".into(),
            retry_base: Duration::from_millis(500),
            retry_max: Duration::from_secs(60),
            retry_window: Duration::from_secs(3 * 24 * 3600),
            delivery_timeout: Duration::from_secs(10),
            faults: Faults::default(),
        }
    }
}

/// Faults the sandbox injects.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Chance (0..=1) that a delivered event is delivered a second time.
    pub duplicate_probability: f64,
    /// Each delivery waits a random time up to this first (ms): deliveries
    /// overtake each other.
    pub delay_ms_max: u64,
    /// Every API call answers 503.
    pub api_outage: bool,
    /// No webhook is delivered while set; deliveries wait, and resume after.
    pub webhook_outage: bool,
}

/// What the sandbox has done, for tests and the harness.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SandboxState {
    /// Payment intents created.
    pub payment_intents: usize,
    /// Of which succeeded.
    pub succeeded: usize,
    /// Refunds created.
    pub refunds: usize,
    /// Events created.
    pub events: usize,
    /// Events whose delivery got a 2xx.
    pub delivered: usize,
    /// Delivery attempts made (including failed and duplicate ones).
    pub attempts: usize,
    /// Deliveries not yet answered 2xx and not given up.
    pub pending: usize,
    /// Events given up after the retry window.
    pub given_up: usize,
    /// Refund count per payment intent id, for checkers: more than one is a bug.
    pub refunds_by_payment: BTreeMap<String, usize>,
    /// Ids of the payment intents that succeeded.
    pub succeeded_ids: Vec<String>,
}

struct Intent {
    object: Value,
    client_secret: String,
}

#[derive(Default)]
struct Store {
    intents: HashMap<String, Intent>,
    refunds: HashMap<String, Value>,
    /// Idempotency key (per path) → (parameters, status, answer).
    idempotency: HashMap<(String, String), (Vec<(String, String)>, u16, Value)>,
    state: SandboxState,
}

/// A running sandbox.
pub struct Sandbox {
    config: SandboxConfig,
    store: Mutex<Store>,
    faults: Mutex<Faults>,
    http: reqwest::Client,
    deliveries: tokio::sync::Semaphore,
}

type Shared = Arc<Sandbox>;

fn random_id(prefix: &str) -> String {
    let n: u128 = rand::thread_rng().gen();
    format!("{prefix}_{:024x}", n & ((1u128 << 96) - 1))
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An error in Stripe's shape.
fn stripe_error(status: StatusCode, kind: &str, code: Option<&str>, message: &str) -> Response {
    (status, Json(error_value(kind, code, message))).into_response()
}

/// The start of every authenticated API call: the key (and the outage
/// fault), then the form body.
fn begin(
    sb: &Sandbox,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<(String, String)>, Response> {
    sb.authorise(headers)?;
    form_of(body)
}

fn form_of(body: &[u8]) -> Result<Vec<(String, String)>, Response> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body).map_err(|e| {
        stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            &format!("unreadable form body: {e}"),
        )
    })
}

fn param<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn metadata_of(form: &[(String, String)]) -> BTreeMap<String, String> {
    form.iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("metadata[")
                .and_then(|k| k.strip_suffix(']'))
                .map(|k| (k.to_string(), v.clone()))
        })
        .collect()
}

impl Sandbox {
    /// A sandbox with `config`.
    pub fn new(config: SandboxConfig) -> Shared {
        Arc::new(Sandbox {
            faults: Mutex::new(config.faults.clone()),
            http: reqwest::Client::builder()
                .timeout(config.delivery_timeout)
                .build()
                .expect("an HTTP client with a timeout builds"),
            config,
            store: Mutex::new(Store::default()),
            deliveries: tokio::sync::Semaphore::new(SANDBOX_DELIVERIES_IN_FLIGHT_MAX),
        })
    }

    /// The sandbox's routes.
    pub fn router(self: &Shared) -> Router {
        Router::new()
            .route("/v1/payment_intents", post(create_intent))
            .route("/v1/payment_intents/{id}", get(get_intent))
            .route("/v1/payment_intents/{id}/confirm", post(confirm_intent))
            .route("/v1/payment_intents/{id}/cancel", post(cancel_intent))
            .route("/v1/refunds", post(create_refund))
            .route("/v1/refunds/{id}", get(get_refund))
            .route("/sandbox/faults", get(get_faults).post(set_faults))
            .route("/sandbox/state", get(get_state))
            .layer(axum::extract::DefaultBodyLimit::max(SANDBOX_BODY_MAX_BYTES))
            .with_state(self.clone())
    }

    /// What it has done so far.
    pub fn state(&self) -> SandboxState {
        self.lock().state.clone()
    }

    /// Sets the faults.
    pub fn set_faults(&self, faults: Faults) {
        *self.faults.lock().unwrap_or_else(|e| e.into_inner()) = faults;
    }

    fn faults(&self) -> Faults {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        // The store stays consistent across a panicking handler: every change
        // is made under one lock with no await.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks the caller's key (and the API outage fault).
    fn authorise(&self, headers: &HeaderMap) -> Result<(), Response> {
        if self.faults().api_outage {
            return Err(stripe_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                None,
                "the sandbox is in an outage (fault injected)",
            ));
        }
        let key = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if key != Some(self.config.secret_key.as_str()) {
            return Err(stripe_error(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                None,
                "Invalid API Key provided",
            ));
        }
        Ok(())
    }

    /// Records an event about `object` and delivers it.
    fn emit(self: &Shared, store: &mut Store, kind: &str, object: Value) {
        let event = json!({
            "id": random_id("evt"),
            "object": "event",
            "type": kind,
            "created": now_s(),
            "livemode": false,
            "data": { "object": object },
        });
        store.state.events += 1;
        if self.config.webhook_urls.is_empty() {
            return;
        }
        store.state.pending += 1;
        let me = self.clone();
        tokio::spawn(async move { me.deliver(event).await });
    }

    async fn deliver(self: Shared, event: Value) {
        let urls = &self.config.webhook_urls;
        let mut turn = rand::thread_rng().gen_range(0..urls.len());
        let body = serde_json::to_vec(&event).expect("a JSON value encodes");
        let started = tokio::time::Instant::now();
        let mut backoff = self.config.retry_base;
        let delay = self.faults().delay_ms_max;
        if delay > 0 {
            let ms = rand::thread_rng().gen_range(0..=delay);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        loop {
            if self.faults().webhook_outage {
                tokio::time::sleep(self.config.retry_base).await;
            } else if self.attempt(&urls[turn % urls.len()], &body).await {
                let duplicate = {
                    let p = self.faults().duplicate_probability;
                    p > 0.0 && rand::thread_rng().gen_bool(p.min(1.0))
                };
                if duplicate {
                    self.attempt(&urls[(turn + 1) % urls.len()], &body).await;
                }
                let mut s = self.lock();
                s.state.delivered += 1;
                s.state.pending -= 1;
                return;
            } else {
                turn += 1;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(self.config.retry_max);
            }
            if started.elapsed() > self.config.retry_window {
                let mut s = self.lock();
                s.state.given_up += 1;
                s.state.pending -= 1;
                return;
            }
        }
    }

    /// One delivery attempt; true on a 2xx.
    async fn attempt(&self, url: &str, body: &[u8]) -> bool {
        // The semaphore is never closed, so acquiring cannot fail.
        let _permit = self.deliveries.acquire().await.expect("semaphore open");
        self.lock().state.attempts += 1;
        let header = signature::sign(&self.config.webhook_secret, now_s(), body);
        let resp = self
            .http
            .post(url)
            .header("Stripe-Signature", header)
            .header("Content-Type", "application/json")
            .header(
                "User-Agent",
                "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            )
            .body(body.to_vec())
            .send()
            .await;
        matches!(resp, Ok(r) if r.status().is_success())
    }

    /// Runs an idempotent create: a key seen before with the same parameters
    /// answers as the first time; with other parameters it is refused.
    fn idempotent(
        &self,
        store: &mut Store,
        path: &str,
        headers: &HeaderMap,
        form: &[(String, String)],
        create: impl FnOnce(&mut Store) -> (u16, Value),
    ) -> Response {
        let key = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if let Some(key) = &key {
            if key.len() > 255 {
                return stripe_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    None,
                    "Idempotency-Key is longer than 255 characters",
                );
            }
            if let Some((params, status, answer)) =
                store.idempotency.get(&(path.to_string(), key.clone()))
            {
                if params.as_slice() != form {
                    return stripe_error(
                        StatusCode::BAD_REQUEST,
                        "idempotency_error",
                        None,
                        "Keys for idempotent requests can only be used with the same parameters they were first used with.",
                    );
                }
                let mut r = (
                    StatusCode::from_u16(*status).unwrap_or(StatusCode::OK),
                    Json(answer.clone()),
                )
                    .into_response();
                r.headers_mut().insert(
                    "idempotent-replayed",
                    "true".parse().expect("static header"),
                );
                return r;
            }
        }
        let (status, answer) = create(store);
        if let Some(key) = key {
            store.idempotency.insert(
                (path.to_string(), key),
                (form.to_vec(), status, answer.clone()),
            );
        }
        (
            StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            Json(answer),
        )
            .into_response()
    }
}

fn error_value(kind: &str, code: Option<&str>, message: &str) -> Value {
    let mut err = json!({"type": kind, "message": message});
    if let Some(c) = code {
        err["code"] = json!(c);
    }
    json!({ "error": err })
}

async fn create_intent(
    State(sb): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let form = match begin(&sb, &headers, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let mut store = sb.lock();
    sb.idempotent(
        &mut store,
        "/v1/payment_intents",
        &headers,
        &form,
        |store| {
            let amount = param(&form, "amount").and_then(|a| a.parse::<u64>().ok());
            let currency = param(&form, "currency").unwrap_or("");
            let Some(amount) = amount.filter(|a| *a >= 1) else {
                return (
                    400,
                    error_value(
                        "invalid_request_error",
                        Some("parameter_missing"),
                        "amount must be a positive integer",
                    ),
                );
            };
            if currency.len() != 3 {
                return (
                    400,
                    error_value(
                        "invalid_request_error",
                        Some("parameter_missing"),
                        "currency must be a 3-letter code",
                    ),
                );
            }
            if store.intents.len() >= SANDBOX_OBJECTS_MAX {
                return (
                    429,
                    error_value(
                        "rate_limit_error",
                        None,
                        "the sandbox holds as many intents as it may",
                    ),
                );
            }
            let id = random_id("pi");
            let client_secret = format!("{id}_secret_{}", random_id("cs"));
            let object = json!({
                "id": id,
                "object": "payment_intent",
                "amount": amount,
                "amount_received": 0,
                "currency": currency,
                "status": "requires_payment_method",
                "client_secret": client_secret,
                "description": param(&form, "description"),
                "metadata": metadata_of(&form),
                "created": now_s(),
                "livemode": false,
            });
            store.intents.insert(
                id.clone(),
                Intent {
                    object: object.clone(),
                    client_secret,
                },
            );
            store.state.payment_intents += 1;
            sb.emit(store, "payment_intent.created", object.clone());
            (200, object)
        },
    )
}

fn no_such(kind: &str, id: &str) -> Response {
    stripe_error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        Some("resource_missing"),
        &format!("No such {kind}: '{id}'"),
    )
}

async fn get_intent(
    State(sb): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = sb.authorise(&headers) {
        return r;
    }
    match sb.lock().intents.get(&id) {
        Some(i) => Json(i.object.clone()).into_response(),
        None => no_such("payment_intent", &id),
    }
}

async fn confirm_intent(
    State(sb): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let form = match form_of(&body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let mut store = sb.lock();
    let by_secret = store
        .intents
        .get(&id)
        .is_some_and(|i| param(&form, "client_secret") == Some(i.client_secret.as_str()));
    if !by_secret {
        drop(store);
        if let Err(r) = sb.authorise(&headers) {
            return r;
        }
        store = sb.lock();
    } else if sb.faults().api_outage {
        return stripe_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            None,
            "the sandbox is in an outage (fault injected)",
        );
    }
    let Some(intent) = store.intents.get_mut(&id) else {
        return no_such("payment_intent", &id);
    };
    let status = intent.object["status"].as_str().unwrap_or("").to_string();
    if !matches!(
        status.as_str(),
        "requires_payment_method" | "requires_confirmation"
    ) {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("payment_intent_unexpected_state"),
            &format!("This PaymentIntent's status is {status}; it cannot be confirmed."),
        );
    }
    let method = param(&form, "payment_method").unwrap_or("");
    let (kind, object) = match method {
        "pm_card_visa" | "pm_card_mastercard" => {
            let amount = intent.object["amount"].clone();
            intent.object["status"] = json!("succeeded");
            intent.object["amount_received"] = amount;
            intent.object["last_payment_error"] = Value::Null;
            ("payment_intent.succeeded", intent.object.clone())
        }
        "pm_card_chargeDeclined" => {
            intent.object["status"] = json!("requires_payment_method");
            intent.object["last_payment_error"] = json!({
                "type": "card_error",
                "code": "card_declined",
                "decline_code": "generic_decline",
                "message": "Your card was declined.",
            });
            ("payment_intent.payment_failed", intent.object.clone())
        }
        other => {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("resource_missing"),
                &format!("No such PaymentMethod: '{other}' (the sandbox knows pm_card_visa, pm_card_mastercard and pm_card_chargeDeclined)"),
            )
        }
    };
    if kind == "payment_intent.succeeded" {
        store.state.succeeded += 1;
        store.state.succeeded_ids.push(id.clone());
    }
    sb.emit(&mut store, kind, object.clone());
    if kind == "payment_intent.payment_failed" {
        // Stripe answers a decline with the card error and the intent in it.
        let mut err = error_value(
            "card_error",
            Some("card_declined"),
            "Your card was declined.",
        );
        err["error"]["payment_intent"] = object;
        return (StatusCode::PAYMENT_REQUIRED, Json(err)).into_response();
    }
    Json(object).into_response()
}

async fn cancel_intent(
    State(sb): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let form = match begin(&sb, &headers, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let path = format!("/v1/payment_intents/{id}/cancel");
    let mut store = sb.lock();
    sb.idempotent(&mut store, &path, &headers, &form, |store| {
        let Some(intent) = store.intents.get_mut(&id) else {
            return (
                404,
                error_value(
                    "invalid_request_error",
                    Some("resource_missing"),
                    &format!("No such payment_intent: '{id}'"),
                ),
            );
        };
        let status = intent.object["status"].as_str().unwrap_or("").to_string();
        if status == "succeeded" || status == "canceled" {
            return (
                400,
                error_value(
                    "invalid_request_error",
                    Some("payment_intent_unexpected_state"),
                    &format!(
                        "You cannot cancel this PaymentIntent because it has a status of {status}."
                    ),
                ),
            );
        }
        intent.object["status"] = json!("canceled");
        intent.object["cancellation_reason"] =
            json!(param(&form, "cancellation_reason").unwrap_or("requested_by_customer"));
        let object = intent.object.clone();
        sb.emit(store, "payment_intent.canceled", object.clone());
        (200, object)
    })
}

async fn create_refund(
    State(sb): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let form = match begin(&sb, &headers, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let mut store = sb.lock();
    sb.idempotent(&mut store, "/v1/refunds", &headers, &form, |store| {
        let pi = param(&form, "payment_intent").unwrap_or("").to_string();
        let Some(intent) = store.intents.get(&pi) else {
            return (
                404,
                error_value(
                    "invalid_request_error",
                    Some("resource_missing"),
                    &format!("No such payment_intent: '{pi}'"),
                ),
            );
        };
        if intent.object["status"] != json!("succeeded") {
            return (
                400,
                error_value(
                    "invalid_request_error",
                    Some("charge_not_succeeded"),
                    "This PaymentIntent has no successful charge to refund.",
                ),
            );
        }
        let received = intent.object["amount_received"].as_u64().unwrap_or(0);
        let refunded: u64 = store
            .refunds
            .values()
            .filter(|r| r["payment_intent"] == json!(pi))
            .filter_map(|r| r["amount"].as_u64())
            .sum();
        let amount = param(&form, "amount")
            .and_then(|a| a.parse::<u64>().ok())
            .unwrap_or(received - refunded.min(received));
        if amount == 0 || refunded + amount > received {
            return (
                400,
                error_value(
                    "invalid_request_error",
                    Some("charge_already_refunded"),
                    &format!(
                        "Refund amount ({amount}) is greater than unrefunded amount on charge ({})",
                        received - refunded.min(received)
                    ),
                ),
            );
        }
        if store.refunds.len() >= SANDBOX_OBJECTS_MAX {
            return (
                429,
                error_value(
                    "rate_limit_error",
                    None,
                    "the sandbox holds as many refunds as it may",
                ),
            );
        }
        let id = random_id("re");
        let object = json!({
            "id": id,
            "object": "refund",
            "amount": amount,
            "currency": intent.object["currency"],
            "payment_intent": pi,
            "status": "succeeded",
            "metadata": metadata_of(&form),
            "created": now_s(),
        });
        store.refunds.insert(id, object.clone());
        store.state.refunds += 1;
        *store.state.refunds_by_payment.entry(pi).or_default() += 1;
        sb.emit(store, "refund.created", object.clone());
        (200, object)
    })
}

async fn get_refund(
    State(sb): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = sb.authorise(&headers) {
        return r;
    }
    match sb.lock().refunds.get(&id) {
        Some(r) => Json(r.clone()).into_response(),
        None => no_such("refund", &id),
    }
}

async fn get_faults(State(sb): State<Shared>) -> Json<Faults> {
    Json(sb.faults())
}

async fn set_faults(State(sb): State<Shared>, Json(f): Json<Faults>) -> Response {
    if !(0.0..=1.0).contains(&f.duplicate_probability) {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            "duplicate_probability must be within 0..=1",
        );
    }
    sb.set_faults(f.clone());
    Json(f).into_response()
}

async fn get_state(State(sb): State<Shared>) -> Json<SandboxState> {
    Json(sb.state())
}

/// Serves the sandbox on `listener` until the process ends.
pub async fn serve(sb: Shared, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, sb.router()).await
}
