//! Requests a node cannot answer without a replica of the shard, relayed to a
//! node that has one.
//!
//! A handler that needs a local replica of its shard and finds none answers
//! `shard_not_here` with the shard attached ([`NotHostedHere`]), before it
//! writes anything. [`relay_reads`] (around the public and admin routes) then
//! sends the same request (a read, or a write whose answer is read from a
//! replica: a queue's settings, a join) to the shard's replicas in turn,
//! through the peer listener
//! (`POST /internal/v1/relay`, behind the cluster key), where [`serve`] runs it
//! through that node's own routes, and streams the answer back as it comes:
//! a read, or a live seat-map stream. A relayed request is never relayed again
//! (a replica that gave its shard away answers `shard_not_here`, and the next
//! replica is tried). The client's address was checked against its limit
//! here; the user's token is checked again there.
//!
//! Most writes never get here: `Node::propose` forwards the command itself to
//! the leader, and their answers come from the outcome. A write's body is
//! kept (up to `limits.body_bytes_max`) so that it can be relayed.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use boxoffice_raft::GroupId;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::node::Node;

/// Largest answer of one shard's part of a cross-shard read (a user's
/// bookings) taken from a peer: a page of `limits.page_size_max` items is far
/// smaller.
pub const RELAYED_PART_BYTES_MAX: usize = 16 << 20;

/// Response extension: the answer is `shard_not_here` for this group.
#[derive(Clone, Copy, Debug)]
pub struct NotHostedHere(pub GroupId);

/// Request extension: this request was relayed by a peer; answer it here.
#[derive(Clone, Copy, Debug)]
pub struct Relayed;

/// Header on a relayed answer that is `shard_not_here` (the edge tries the
/// next replica).
const NOT_HERE_HEADER: &str = "x-boxoffice-shard-not-here";
/// Header on a relayed answer: the replica's applied index of the group once
/// the answer was made (at or past what the answer read).
const APPLIED_HEADER: &str = "x-boxoffice-relay-applied";

/// A request relayed to a peer: what its routes need to answer it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RelayedRequest {
    /// The method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// The body (empty for a GET).
    pub body: Vec<u8>,
    /// The shard it is for.
    pub group: u16,
    /// The replica answers only once it has applied this index of the group
    /// (what earlier reads relayed by the same node saw), so reads through a
    /// node never go back in time whichever replica serves them.
    pub min_applied: u64,
    /// Headers (name, value), hop-by-hop ones left out.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl RelayedRequest {
    /// A GET of `uri` with the end-to-end headers of `headers`.
    pub fn get(uri: String, headers: &HeaderMap) -> Self {
        RelayedRequest {
            method: "GET".into(),
            body: Vec::new(),
            group: 0,
            min_applied: 0,
            uri,
            headers: headers
                .iter()
                .filter(|(n, _)| !hop_by_hop(n))
                .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
                .collect(),
        }
    }
}

/// Headers that belong to one connection, not to the request or answer.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

/// Middleware: a request answered `shard_not_here` is relayed to the shard's
/// replicas in turn; the first answer that is not `shard_not_here` is the
/// client's.
pub async fn relay_reads(State(node): State<Arc<Node>>, req: Request, next: Next) -> Response {
    if req.extensions().get::<Relayed>().is_some() {
        return next.run(req).await;
    }
    let method = req.method().clone();
    let uri = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    let headers = req.headers().clone();
    // A body is kept to be sent again (within the body limit the routes
    // enforce anyway: a larger one is refused as they would refuse it).
    let (req, body) = if method == Method::GET || method == Method::HEAD {
        (req, Vec::new())
    } else {
        let (parts, body) = req.into_parts();
        let limit = node.config.limits.body_bytes_max;
        match axum::body::to_bytes(body, limit).await {
            Ok(b) => (
                Request::from_parts(parts, Body::from(b.clone())),
                b.to_vec(),
            ),
            Err(_) => {
                return crate::error::ApiError::new(
                    boxoffice_api::ProblemCode::BodyTooLarge,
                    format!("the body is larger than limits.body_bytes_max ({limit} bytes), or could not be read"),
                )
                .into_response()
            }
        }
    };
    let answer = next.run(req).await;
    let Some(NotHostedHere(group)) = answer.extensions().get::<NotHostedHere>().copied() else {
        return answer;
    };
    let mut relayed = RelayedRequest::get(uri, &headers);
    relayed.method = method.as_str().to_string();
    relayed.body = body;
    match relay(&node, group, &relayed).await {
        Some(r) => r,
        None => answer,
    }
}

/// Sends `req` to `group`'s replicas in turn; the first answer from one that
/// hosts it, or `None` when none did.
pub async fn relay(node: &Node, group: GroupId, req: &RelayedRequest) -> Option<Response> {
    let timeout = Duration::from_millis(node.config.limits.request_timeout_ms);
    let mut req = req.clone();
    req.group = group.0;
    req.min_applied = node.relay_floor(group);
    let targets = node.relay_targets(group);
    let last = targets.len().saturating_sub(1);
    for (i, (id, addr)) in targets.into_iter().enumerate() {
        match node
            .rpc
            .call_streaming(&addr, "/internal/v1/relay", &req, timeout)
            .await
        {
            Ok(r) if r.headers().contains_key(NOT_HERE_HEADER) => {
                tracing::debug!(%group, peer = id, "relayed read: not hosted there either");
            }
            // A read that replica could not serve now (no read index: it may
            // be on its way out of the group) is asked of the next one; a
            // write's refusal is the client's, who may retry with its key.
            Ok(r)
                if r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE
                    && req.method == "GET"
                    && i < last =>
            {
                tracing::debug!(%group, peer = id, "relayed read: unavailable there; trying the next replica");
            }
            Ok(r) => {
                if let Some(i) = r
                    .headers()
                    .get(APPLIED_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                {
                    node.raise_relay_floor(group, i);
                }
                return Some(into_answer(r));
            }
            Err(e) => {
                tracing::debug!(%group, peer = id, error = %e, "relayed read: peer did not answer")
            }
        }
    }
    None
}

/// A peer's answer as this node's answer, its body streamed as it comes.
fn into_answer(r: reqwest::Response) -> Response {
    let status = StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut headers = HeaderMap::new();
    for (n, v) in r.headers() {
        let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(n.as_str().as_bytes()),
            HeaderValue::from_bytes(v.as_bytes()),
        ) else {
            continue;
        };
        // What the peer says of itself to peers is not for the client.
        let peer_only = n == boxoffice_raft::network::PUBLIC_ADDR_HEADER
            || n == boxoffice_raft::network::FEATURE_LEVEL_HEADER;
        if !hop_by_hop(&n) && !peer_only {
            headers.append(n, v);
        }
    }
    let body = Body::from_stream(r.bytes_stream().map_err(std::io::Error::other));
    let mut resp = (status, body).into_response();
    *resp.headers_mut() = headers;
    resp
}

/// What a relayed request's answer looks like to the peer that sent it.
pub async fn serve(node: &Node, router: axum::Router, req: RelayedRequest) -> Response {
    let group = GroupId(req.group);
    // A replica behind what the asking node's earlier reads saw waits (as a
    // linearizable read waits for its read index), up to the read timeout;
    // one that does not get there answers as if it had no replica.
    let stores = node.stores(group);
    if let Some(st) = &stores {
        let wait = Duration::from_millis(node.config.limits.linearizable_read_timeout_ms);
        let mut applied = st.sm.applied();
        let caught_up =
            tokio::time::timeout(wait, applied.wait_for(|a| a.index >= req.min_applied)).await;
        if !matches!(caught_up, Ok(Ok(_))) {
            let mut answer = crate::error::ApiError::new(
                boxoffice_api::ProblemCode::ShardNotHere,
                format!("{group}: this replica is behind what the asking node has seen"),
            )
            .into_response();
            answer
                .headers_mut()
                .insert(NOT_HERE_HEADER, HeaderValue::from_static("1"));
            return answer;
        }
    }
    let Ok(method) = Method::from_bytes(req.method.as_bytes()) else {
        return (StatusCode::BAD_REQUEST, "not a method").into_response();
    };
    let mut builder = axum::http::Request::builder().method(method).uri(&req.uri);
    for (n, v) in &req.headers {
        builder = builder.header(n.as_str(), v.as_slice());
    }
    let Ok(mut request) = builder.body(Body::from(req.body)) else {
        return (StatusCode::BAD_REQUEST, "not a request").into_response();
    };
    request.extensions_mut().insert(Relayed);
    let mut answer = match tower::ServiceExt::oneshot(router, request).await {
        Ok(a) => a,
        Err(never) => match never {},
    };
    if answer.extensions().get::<NotHostedHere>().is_some() {
        answer
            .headers_mut()
            .insert(NOT_HERE_HEADER, HeaderValue::from_static("1"));
    } else if let Some(st) = &stores {
        let index = st.sm.applied().borrow().index;
        answer
            .headers_mut()
            .insert(APPLIED_HEADER, HeaderValue::from(index));
    }
    answer
}
