//! Request ids at the node's edges (see [`boxoffice_raft::request_id`]): a
//! public or admin request keeps the `x-request-id` its client sent (when it
//! is plain and short) or gets one made up here (`n{node}-{16 hex digits}`);
//! the answer carries it back; the request runs in a span naming it, its node
//! and its method and path, with it as the task's current id, so that the
//! writes it forwards and the reads it asks of a leader carry it on, and the
//! leader's `/internal` handlers run in a span naming it too. The spans are at
//! debug level (`RUST_LOG=info,boxoffice_node=debug` shows them): an enabled
//! span per request cost a busy leader a noticeable share of its throughput.
//! The id is always in the answer and on the node-to-node calls.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use boxoffice_raft::request_id::{self, REQUEST_ID_HEADER};
use tracing::Instrument;

/// A request id of this node's own making.
fn make(node: u64) -> Arc<str> {
    format!("n{node}-{:016x}", rand::random::<u64>()).into()
}

/// The id `req` came with, if it is fit to use.
fn given(req: &Request) -> Option<Arc<str>> {
    req.headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(request_id::accept)
}

/// Public and admin listeners: keeps or makes the id, answers with it, and
/// serves the request in its span and scope.
pub async fn at_the_edge(State(node): State<u64>, req: Request, next: Next) -> Response {
    // A batch's writes pass this layer again inside the batch's own scope:
    // they keep its id, span and scope rather than make new ones.
    if let (None, Some(id)) = (given(&req), request_id::current()) {
        let header = HeaderValue::from_str(&id).ok();
        let mut resp = next.run(req).await;
        if let Some(v) = header {
            resp.headers_mut().insert(REQUEST_ID_HEADER, v);
        }
        return resp;
    }
    let id = given(&req).unwrap_or_else(|| make(node));
    let span = tracing::debug_span!(
        "request",
        request_id = %id,
        node,
        method = %req.method(),
        path = %req.uri().path(),
    );
    let header = HeaderValue::from_str(&id).ok();
    let mut resp = request_id::scope(id, next.run(req).instrument(span)).await;
    if let Some(v) = header {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    resp
}

/// The peer listener's `/internal` routes: a call made for a client request
/// runs in a span naming that request's id (calls of the node's own, such as
/// clock probes, carry none).
pub async fn from_a_peer(State(node): State<u64>, req: Request, next: Next) -> Response {
    match given(&req) {
        Some(id) => {
            let span = tracing::debug_span!(
                "peer_request",
                request_id = %id,
                node,
                path = %req.uri().path(),
            );
            let served = async {
                tracing::debug!("serving a peer's call for a client request");
                next.run(req).await
            };
            request_id::scope(id, served.instrument(span)).await
        }
        None => next.run(req).await,
    }
}
