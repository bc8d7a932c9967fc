//! Node-to-node Raft RPC, server side: an axum router under `/raft/v1/{group}/...`,
//! mounted on the node's peer listener. The cluster key is checked before a
//! body is read ([`require_cluster_key`]).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};

use crate::codec;
use crate::groups::Groups;
use crate::network::CLUSTER_KEY_HEADER;
use crate::types::{GroupId, NodeId, TypeConfig};

/// What the RPC handlers need.
#[derive(Clone)]
pub struct RaftRpcState {
    /// The node's groups.
    pub groups: Arc<Groups>,
    /// The key peers must present.
    pub cluster_key: Arc<str>,
}

/// Routes for Raft RPC, behind [`require_cluster_key`]. Mount on the node's
/// peer listener.
pub fn router(state: RaftRpcState) -> Router {
    let key = state.cluster_key.clone();
    Router::new()
        .route("/raft/v1/{group}/append", post(append))
        .route("/raft/v1/{group}/vote", post(vote))
        .route("/raft/v1/{group}/snapshot", post(snapshot))
        .with_state(state)
        .route_layer(axum::middleware::from_fn_with_state(
            key,
            require_cluster_key,
        ))
}

/// Middleware answering 401 to a request without the cluster key, from its
/// headers alone: a stranger's body is never read, whatever its length.
pub async fn require_cluster_key(
    State(key): State<Arc<str>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match check_cluster_key(req.headers(), &key) {
        Ok(()) => next.run(req).await,
        Err(refused) => refused,
    }
}

/// Checks the cluster key header; used by every node-to-node endpoint.
pub fn check_cluster_key(headers: &HeaderMap, expected: &str) -> Result<(), Response> {
    match headers
        .get(CLUSTER_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        Some(k) if constant_time_eq(k.as_bytes(), expected.as_bytes()) => Ok(()),
        _ => Err((StatusCode::UNAUTHORIZED, "missing or wrong cluster key").into_response()),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn prelude<T: serde::de::DeserializeOwned>(
    state: &RaftRpcState,
    group: u16,
    body: &[u8],
) -> Result<(crate::Raft, T), Response> {
    let raft = state.groups.get(GroupId(group)).ok_or_else(|| {
        (
            StatusCode::NOT_FOUND,
            format!("group {group} is not hosted here"),
        )
            .into_response()
    })?;
    let req = codec::decode_message(body)
        .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()).into_response())?;
    Ok((raft, req))
}

fn reply<T: serde::Serialize>(value: &T) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        codec::encode_message(value),
    )
        .into_response()
}

async fn append(
    State(state): State<RaftRpcState>,
    Path(group): Path<u16>,
    body: Bytes,
) -> Response {
    let (raft, req) = match prelude::<AppendEntriesRequest<TypeConfig>>(&state, group, &body) {
        Ok(x) => x,
        Err(r) => return r,
    };
    reply(&raft.append_entries(req).await)
}

async fn vote(State(state): State<RaftRpcState>, Path(group): Path<u16>, body: Bytes) -> Response {
    let (raft, req) = match prelude::<VoteRequest<NodeId>>(&state, group, &body) {
        Ok(x) => x,
        Err(r) => return r,
    };
    reply(&raft.vote(req).await)
}

async fn snapshot(
    State(state): State<RaftRpcState>,
    Path(group): Path<u16>,
    body: Bytes,
) -> Response {
    let (raft, req) = match prelude::<InstallSnapshotRequest<TypeConfig>>(&state, group, &body) {
        Ok(x) => x,
        Err(r) => return r,
    };
    reply(&raft.install_snapshot(req).await)
}
