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
use crate::rate_limits::{HasRateLimits, RateLimits, Slots};

/// Shared state of every handler: one reference-counted [`Shared`], since axum
/// clones the state for every extractor of every request.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What every handler shares (see [`AppState`]).
pub struct Shared {
    /// The node.
    pub node: Arc<Node>,
    /// Token verification.
    pub keys: TokenKeys,
    /// Rate limits per user and client address (`[rate_limits]`).
    pub limits: Arc<RateLimits>,
    /// Live streams open per user (`limits.sse_streams_per_user_max`).
    pub streams_per_user: Arc<Slots<String>>,
    /// Live streams open per client address (`limits.sse_streams_per_address_max`).
    pub streams_per_address: Arc<Slots<std::net::IpAddr>>,
    /// Mints and verifies queue admissions (keys derived from the cluster key).
    pub admissions: Arc<crate::queue::admission::AdmissionKeys>,
}

impl AppState {
    /// The state of `node`'s router, verifying tokens with `keys`.
    pub fn new(node: Arc<Node>, keys: TokenKeys) -> Self {
        let limits = Arc::new(RateLimits::new(&node.config.rate_limits));
        let l = &node.config.limits;
        let streams_per_user = Arc::new(Slots::new(
            "limits.sse_streams_per_user_max",
            l.sse_streams_per_user_max,
        ));
        let streams_per_address = Arc::new(Slots::new(
            "limits.sse_streams_per_address_max",
            l.sse_streams_per_address_max,
        ));
        let admissions = Arc::new(crate::queue::admission::AdmissionKeys::from_cluster_key(
            &node.config.cluster_key,
        ));
        AppState(Arc::new(Shared {
            admissions,
            node,
            keys,
            limits,
            streams_per_user,
            streams_per_address,
        }))
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

/// The router of the public listener (`listen`): the public API and the health
/// checks, and the admin API unless `admin_listen` gives it a listener of its
/// own. Never the cluster's own routes: those are [`peer_router`]'s alone.
pub fn router(state: AppState) -> Router {
    let mut routes = crate::api::public_routes();
    if state.node.config.admin_listen.is_none() {
        routes = routes.merge(crate::api::admin_routes());
    }
    let public = bounded(routes, &state);
    // A batch's writes each go through the public router as requests of
    // their own (limits, tokens, answers); the batch itself is counted too.
    let batch = axum::Router::new()
        .route(
            boxoffice_api::BATCH_PATH,
            axum::routing::post(crate::api::batch::run),
        )
        .with_state(state.clone())
        .layer(axum::middleware::from_fn_with_state(
            state.node.clone(),
            crate::metrics::track,
        ))
        .layer(axum::Extension(crate::api::batch::BatchTarget(
            outer_layers(public.clone(), &state),
        )));
    outer_layers(batch.fallback_service(public), &state)
}

/// What every answer of the public listener goes through.
fn outer_layers(router: Router, state: &AppState) -> Router {
    router
        // Reads of a shard this node does not host go to one that does.
        .layer(axum::middleware::from_fn_with_state(
            state.node.clone(),
            crate::placement::relay::relay_reads,
        ))
        .layer(axum::middleware::map_response_with_state(
            state.node.id(),
            name_the_node,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        // Around the trace span, so every line logged for the request names it.
        .layer(axum::middleware::from_fn_with_state(
            state.node.id(),
            crate::request_id::at_the_edge,
        ))
        // Outermost: a client over its address's limit costs nothing more (not
        // even a trace span): a bot's flood is answered at the least cost.
        .layer(axum::middleware::from_fn_with_state(
            state.limits.clone(),
            crate::rate_limits::by_address,
        ))
}

/// The router of the admin listener (`admin_listen`): the admin API and the
/// health checks, and the public reads the console (`/console`, served with
/// the admin API) makes, so that its page asks nothing of another origin: the
/// events (`GET /v1/events` and `/v1/events/{id}`, its picker and titles) and
/// the live seat-map stream. They are read-only and open to anyone on the
/// public listener already.
pub fn admin_router(state: AppState) -> Router {
    let routes = crate::api::admin_routes()
        .merge(crate::api::cluster::health_routes())
        .merge(crate::api::events::routes())
        .merge(crate::api::streams::routes());
    bounded(routes, &state)
        .layer(axum::middleware::from_fn_with_state(
            state.node.clone(),
            crate::placement::relay::relay_reads,
        ))
        .layer(axum::middleware::map_response_with_state(
            state.node.id(),
            name_the_node,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .layer(axum::middleware::from_fn_with_state(
            state.node.id(),
            crate::request_id::at_the_edge,
        ))
}

/// The router of the peer listener (`peer_listen`): Raft RPC and `/internal`,
/// behind the cluster key (checked from the headers, before any body is read),
/// with their own body, concurrency and time limits.
pub fn peer_router(state: AppState) -> Router {
    let limits = &state.node.config.limits;
    let key: Arc<str> = state.node.config.cluster_key.clone().into();
    // A read relayed by a peer runs through the public and admin routes (the
    // user's or admin's token is checked there as anywhere).
    let relay_target = crate::api::internal::RelayTarget(bounded(
        crate::api::public_routes().merge(crate::api::admin_routes()),
        &state,
    ));
    let internal = crate::api::internal::routes()
        .with_state(state.clone())
        .layer(axum::Extension(relay_target))
        .route_layer(axum::middleware::from_fn_with_state(
            key.clone(),
            boxoffice_raft::server::require_cluster_key,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.node.id(),
            crate::request_id::from_a_peer,
        ));
    Router::new()
        .merge(boxoffice_raft::server::router(
            boxoffice_raft::server::RaftRpcState {
                groups: state.node.groups.clone(),
                cluster_key: key,
            },
        ))
        .merge(internal)
        .fallback(no_such_endpoint)
        .layer(axum::middleware::map_response_with_state(
            PeerHeaders {
                public_addr: axum::http::HeaderValue::from_str(&state.node.config.advertised())
                    .ok(),
                feature_level: axum::http::HeaderValue::from(
                    state.node.config.raft.feature_level_max,
                ),
            },
            say_who_answers,
        ))
        .layer(DefaultBodyLimit::max(limits.raft_body_bytes_max))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(handle_layer_error))
                .load_shed()
                // Global: a router's layers wrap each route on its own, and a
                // plain concurrency limit would then count per route.
                .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                    limits.peer_in_flight_max,
                ))
                .timeout(Duration::from_millis(limits.peer_request_timeout_ms)),
        )
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

/// `routes` with the public and admin listeners' body, in-flight and time limits.
fn bounded(routes: Router<AppState>, state: &AppState) -> Router {
    let limits = &state.node.config.limits;
    routes
        .with_state(state.clone())
        .fallback(no_such_endpoint)
        .layer(DefaultBodyLimit::max(limits.body_bytes_max))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(handle_layer_error))
                .load_shed()
                // One count for every route of the listener (see `peer_router`).
                .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                    limits.in_flight_max,
                ))
                .timeout(Duration::from_millis(limits.request_timeout_ms)),
        )
        // Each route's own layer, so it sees the matched route (its label).
        .layer(axum::middleware::from_fn_with_state(
            state.node.clone(),
            crate::metrics::track,
        ))
}

async fn no_such_endpoint() -> ApiError {
    ApiError::new(ProblemCode::NotFound, "no such endpoint")
}

/// What every peer answer says of this node.
#[derive(Clone)]
struct PeerHeaders {
    public_addr: Option<axum::http::HeaderValue>,
    feature_level: axum::http::HeaderValue,
}

/// Names this node's public address and the feature level it allows on every
/// peer answer (see `boxoffice_raft::network::PeerFacts`).
async fn say_who_answers(
    axum::extract::State(h): axum::extract::State<PeerHeaders>,
    mut resp: axum::response::Response,
) -> axum::response::Response {
    let headers = resp.headers_mut();
    if let Some(v) = h.public_addr {
        headers.insert(boxoffice_raft::network::PUBLIC_ADDR_HEADER, v);
    }
    headers.insert(
        boxoffice_raft::network::FEATURE_LEVEL_HEADER,
        h.feature_level,
    );
    resp
}

/// Names the answering node on every answer (`x-boxoffice-node`).
async fn name_the_node(
    axum::extract::State(id): axum::extract::State<u64>,
    mut resp: axum::response::Response,
) -> axum::response::Response {
    resp.headers_mut().insert(
        boxoffice_api::NODE_HEADER,
        axum::http::HeaderValue::from(id),
    );
    resp
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
