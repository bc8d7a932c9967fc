//! The HTTP surface of a node: router, shared state, and the layers that bound it
//! (body size, in-flight requests, timeouts, load shedding).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{BoxError, Router};
use serde::de::DeserializeOwned;
use tower::ServiceBuilder;

use boxoffice_api::ProblemCode;

use crate::auth::{HasTokenKeys, TokenKeys};
use crate::error::ApiError;
use crate::node::Node;
use crate::rate_limits::{HasRateLimits, RateLimits};

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// The node.
    pub node: Arc<Node>,
    /// Token verification.
    pub keys: TokenKeys,
    /// Rate limits per user and client address (`[rate_limits]`).
    pub limits: Arc<RateLimits>,
}

impl AppState {
    /// The state of `node`'s router, verifying tokens with `keys`.
    pub fn new(node: Arc<Node>, keys: TokenKeys) -> Self {
        let limits = Arc::new(RateLimits::new(&node.config.rate_limits));
        AppState { node, keys, limits }
    }
}

impl HasTokenKeys for AppState {
    fn token_keys(&self) -> &TokenKeys {
        &self.keys
    }
}

impl HasRateLimits for AppState {
    fn rate_limits(&self) -> &RateLimits {
        &self.limits
    }
}

/// The complete router of a node.
pub fn router(state: AppState) -> Router {
    let limits = state.node.config.limits.clone();
    let api = Router::new()
        .merge(crate::api::routes())
        .with_state(state.clone())
        .layer(DefaultBodyLimit::max(limits.body_bytes_max))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(handle_layer_error))
                .load_shed()
                .concurrency_limit(limits.in_flight_max)
                .timeout(Duration::from_millis(limits.request_timeout_ms)),
        )
        // Outermost: a client over its address's limit costs nothing more.
        .layer(axum::middleware::from_fn_with_state(
            state.limits.clone(),
            crate::rate_limits::by_address,
        ));
    let cluster = Router::new()
        .merge(boxoffice_raft::server::router(
            boxoffice_raft::server::RaftRpcState {
                groups: state.node.groups.clone(),
                cluster_key: state.node.config.cluster_key.clone().into(),
            },
        ))
        .merge(crate::api::internal::routes().with_state(state.clone()))
        .layer(DefaultBodyLimit::max(limits.raft_body_bytes_max));
    Router::new()
        .merge(api)
        .merge(cluster)
        .fallback(|| async { ApiError::new(ProblemCode::NotFound, "no such endpoint") })
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

async fn handle_layer_error(err: BoxError) -> axum::response::Response {
    if err.is::<tower::load_shed::error::Overloaded>() {
        return ApiError::new(
            ProblemCode::Overloaded,
            "too many requests in flight; retry shortly",
        )
        .into_response();
    }
    if err.is::<tower::timeout::error::Elapsed>() {
        return ApiError::new(
            ProblemCode::Timeout,
            "request took longer than limits.request_timeout_ms",
        )
        .into_response();
    }
    ApiError::internal(err).into_response()
}

/// A JSON request body: malformed JSON is a 400 `malformed_json` naming the problem,
/// an oversized body a 413 `body_too_large`, both as problem+json.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    ProblemCode::BodyTooLarge,
                    "request body is larger than limits.body_bytes_max",
                )
            } else {
                ApiError::new(ProblemCode::UnreadableBody, e.body_text())
            }
        })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::new(ProblemCode::MalformedJson, format!("request body: {e}")))
    }
}

/// Query-string parameters: a malformed query is a 400 `invalid_parameter` as
/// problem+json (axum's own `Query` answers plain text).
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| Params(q.0))
            .map_err(|e| ApiError::bad_param("query", e.body_text()))
    }
}
