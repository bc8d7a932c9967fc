//! Reads of a shard this node does not host, relayed to a node that does.
//!
//! A read handler that finds no local replica of its shard answers
//! `shard_not_here` with the shard attached ([`NotHostedHere`]). For a GET,
//! [`relay_reads`] (around the public and admin routes) then sends the same
//! request to the shard's replicas in turn, through the peer listener
//! (`POST /internal/v1/relay`, behind the cluster key), where [`serve`] runs it
//! through that node's own routes, and streams the answer back as it comes:
//! a read, or a live seat-map stream. A relayed request is never relayed again
//! (a replica that gave its shard away answers `shard_not_here`, and the next
//! replica is tried). The client's address was checked against its limit
//! here; the user's token is checked again there.
//!
//! Writes are not relayed: `Node::propose` forwards the command itself.

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

/// A request relayed to a peer: what its routes need to answer it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RelayedRequest {
    /// Path and query.
    pub uri: String,
    /// Headers (name, value), hop-by-hop ones left out.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl RelayedRequest {
    /// A GET of `uri` with the end-to-end headers of `headers`.
    pub fn get(uri: String, headers: &HeaderMap) -> Self {
        RelayedRequest {
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

/// Middleware: a GET answered `shard_not_here` is relayed to the shard's
/// replicas in turn; the first answer that is not `shard_not_here` is the
/// client's.
pub async fn relay_reads(State(node): State<Arc<Node>>, req: Request, next: Next) -> Response {
    if req.method() != Method::GET || req.extensions().get::<Relayed>().is_some() {
        return next.run(req).await;
    }
    let uri = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    let headers = req.headers().clone();
    let answer = next.run(req).await;
    let Some(NotHostedHere(group)) = answer.extensions().get::<NotHostedHere>().copied() else {
        return answer;
    };
    let relayed = RelayedRequest::get(uri, &headers);
    match relay(&node, group, &relayed).await {
        Some(r) => r,
        None => answer,
    }
}

/// Sends `req` to `group`'s replicas in turn; the first answer from one that
/// hosts it, or `None` when none did.
pub async fn relay(node: &Node, group: GroupId, req: &RelayedRequest) -> Option<Response> {
    let timeout = Duration::from_millis(node.config.limits.request_timeout_ms);
    for (id, addr) in node.relay_targets(group) {
        match node
            .rpc
            .call_streaming(&addr, "/internal/v1/relay", req, timeout)
            .await
        {
            Ok(r) if r.headers().contains_key(NOT_HERE_HEADER) => {
                tracing::debug!(%group, peer = id, "relayed read: not hosted there either");
            }
            Ok(r) => return Some(into_answer(r)),
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
pub async fn serve(router: axum::Router, req: RelayedRequest) -> Response {
    let mut builder = axum::http::Request::builder()
        .method(Method::GET)
        .uri(&req.uri);
    for (n, v) in &req.headers {
        builder = builder.header(n.as_str(), v.as_slice());
    }
    let Ok(mut request) = builder.body(Body::empty()) else {
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
    }
    answer
}
