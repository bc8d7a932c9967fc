//! `POST /v1/batch`: several writes in one HTTP request.
//!
//! A front end serving many users at once sends their writes to a node
//! together, as a Redis client pipelines the commands of many callers on one
//! connection: each write is still its own request, with its own user token,
//! idempotency key, rate limits, answer and status, exactly as if it had been
//! sent alone; what the batch saves is the HTTP exchange, one per batch instead
//! of one per write. The node runs the writes concurrently (so the ones for one
//! shard share its next log entries) and answers once all are answered; their
//! order in the answer is their order in the request, and nothing else orders
//! them. The client library batches the writes its callers make at the same
//! time (`ClientConfig::batch_writes_max`).
//!
//! Only writes (`POST`, `PUT`, `DELETE`) of the public API (`/v1/...`) may be
//! in a batch, not another batch, the provider's webhook or a stream; at most
//! `limits.batch_requests_max` of them (64 by default), the whole batch within
//! `limits.body_bytes_max`, each body within it too. A batch that breaks any of
//! these is refused whole (400 `invalid_input`, naming the request) before any
//! of its writes is run.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The path of the batch endpoint.
pub const BATCH_PATH: &str = "/v1/batch";

/// Headers a request in a batch may carry (lower case); the batch's own
/// forwarding headers apply to every request in it.
pub const BATCH_REQUEST_HEADERS: [&str; 3] = [
    "authorization",
    crate::IDEMPOTENCY_KEY_HEADER,
    crate::queue::ADMISSION_HEADER,
];

/// The body of `POST /v1/batch`.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// The writes, answered in this order.
    pub requests: Vec<BatchedRequest>,
}

/// One write of a batch: what its own HTTP request would have been.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BatchedRequest {
    /// `POST`, `PUT` or `DELETE`.
    pub method: String,
    /// Path and query, e.g. `/v1/holds` or `/v1/holds/h3-17/confirm`.
    pub path: String,
    /// Its headers, by lower-case name; only [`BATCH_REQUEST_HEADERS`].
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Its JSON body, if it has one.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub body: Option<Box<RawValue>>,
}

/// The answer of `POST /v1/batch` (200 once every write is answered).
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchAnswer {
    /// One answer per request, in the request's order.
    pub responses: Vec<BatchedAnswer>,
}

/// The answer one write of a batch got: what its own HTTP answer would have
/// been.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchedAnswer {
    /// Its HTTP status.
    pub status: u16,
    /// Its `x-boxoffice-*`, `retry-after` and `location` headers, by lower-case
    /// name.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Its body (an answer type, or a problem), `null` if it had none.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub body: Option<Box<RawValue>>,
}
