//! Node-to-node endpoints besides Raft RPC: bootstrap preparation, forwarded
//! writes, and read indexes for linearizable follower reads. Bodies are codec
//! (postcard) encoded; served on the peer listener behind the cluster key
//! (checked before the body is read, see `crate::app::peer_router`).

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use boxoffice_raft::{codec, GroupId};

use crate::app::AppState;
use crate::node::{ForwardedProposal, MembershipChange, ProposeError};

/// Routes under `/internal/v1`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/internal/v1/prepare", post(prepare))
        .route("/internal/v1/propose/{group}", post(propose))
        .route("/internal/v1/read_index/{group}", post(read_index))
        .route("/internal/v1/membership/{group}", post(membership))
        .route("/internal/v1/initialize/{group}", post(initialize))
        .route("/internal/v1/clock", post(clock))
        .route("/internal/v1/host", post(host))
        .route("/internal/v1/unhost/{group}", post(unhost))
        .route("/internal/v1/relay", post(relay))
        .route("/internal/v1/move/{group}", post(move_replica))
        .route(
            "/internal/v1/transfer_leader/{group}",
            post(transfer_leader),
        )
        .route("/internal/v1/elect/{group}", post(elect))
        .route("/internal/v1/leading", post(leading))
}

/// The routes a relayed read runs through (see `crate::placement::relay`).
#[derive(Clone)]
pub struct RelayTarget(pub axum::Router);

/// Groups a node is to host.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct HostRequest {
    /// The cluster's shard count.
    pub shards: u16,
    /// The groups to start here.
    pub groups: Vec<u16>,
}

/// Starts replicas of groups on this node (bootstrap, a replica moving here).
async fn host(State(state): State<AppState>, body: Bytes) -> Response {
    let req: HostRequest = match decode(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let groups: Vec<GroupId> = req.groups.into_iter().map(GroupId).collect();
    reply(&state.node.host(req.shards, &groups).await)
}

/// Stops and deletes this node's replica of a group it was removed from.
async fn unhost(State(state): State<AppState>, Path(group): Path<u16>, body: Bytes) -> Response {
    let () = match decode(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    reply(&state.node.unhost_removed(GroupId(group)).await)
}

/// A read relayed by a peer that does not host the shard.
async fn relay(
    State(state): State<AppState>,
    axum::Extension(RelayTarget(router)): axum::Extension<RelayTarget>,
    body: Bytes,
) -> Response {
    let req: crate::placement::relay::RelayedRequest = match decode(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    crate::placement::relay::serve(&state.node, router, req).await
}

/// A replica move, run by the group's leader.
async fn move_replica(
    State(state): State<AppState>,
    Path(group): Path<u16>,
    body: Bytes,
) -> Response {
    let m: crate::placement::moves::MoveRequest = match decode(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    reply(&state.node.move_replica_local(GroupId(group), m).await)
}

/// A leadership handoff asked of this node as the group's leader.
async fn transfer_leader(
    State(state): State<AppState>,
    Path(group): Path<u16>,
    body: Bytes,
) -> Response {
    let r: crate::placement::leaders::LeaderRequest = match decode(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    reply(&state.node.transfer_leader_local(GroupId(group), r.to).await)
}

/// The group's leader hands its leadership to this node: campaign now.
async fn elect(State(state): State<AppState>, Path(group): Path<u16>, body: Bytes) -> Response {
    let () = match decode(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    reply(&state.node.campaign(GroupId(group)).await)
}

/// The groups this node leads (asked by the balancer).
async fn leading(State(state): State<AppState>, body: Bytes) -> Response {
    let () = match decode(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let groups: Vec<u16> = state.node.leading().into_iter().map(|g| g.0).collect();
    reply(&groups)
}

/// This node's clock, read by peers to bound their stamps (see `crate::clock`).
async fn clock(body: Bytes) -> Response {
    let () = match decode(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    reply(&crate::node::now_ms())
}

fn reply<T: serde::Serialize>(v: &T) -> Response {
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        codec::encode_message(v),
    )
        .into_response()
}

fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    codec::decode_message(body)
        .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()).into_response())
}

async fn prepare(State(state): State<AppState>, body: Bytes) -> Response {
    let shards: u16 = match decode(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    reply(&state.node.prepare(shards).await)
}

async fn propose(State(state): State<AppState>, Path(group): Path<u16>, body: Bytes) -> Response {
    let req: ForwardedProposal = match decode(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let timeout = Duration::from_millis(state.node.config.limits.write_timeout_ms);
    let group = GroupId(group);
    // Only the leader proposes a forwarded write: no second hop, no loops.
    let result: Result<_, ProposeError> = match state.node.leader_of(group) {
        Some((leader, _)) if leader == state.node.id() => {
            state
                .node
                .propose_local(group, req.session, req.command, timeout)
                .await
        }
        leader => Err(ProposeError::NotLeader {
            group: group.0,
            leader: leader.filter(|(id, _)| *id != state.node.id()),
        }),
    };
    reply(&result)
}

async fn read_index(
    State(state): State<AppState>,
    Path(group): Path<u16>,
    body: Bytes,
) -> Response {
    let () = match decode(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    reply(&state.node.read_index_local(GroupId(group)).await)
}

/// A membership change forwarded to this node as the group's leader.
async fn membership(
    State(state): State<AppState>,
    Path(group): Path<u16>,
    body: Bytes,
) -> Response {
    let change: MembershipChange = match decode(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    reply(
        &state
            .node
            .change_membership_local(GroupId(group), &change)
            .await,
    )
}

/// Bootstrap of one group with the cluster's first members, run on the node that
/// is to lead it first (`POST /admin/v1/cluster/init` spreads the shards).
async fn initialize(
    State(state): State<AppState>,
    Path(group): Path<u16>,
    body: Bytes,
) -> Response {
    let members: std::collections::BTreeMap<boxoffice_raft::NodeId, openraft::BasicNode> =
        match decode(&body) {
            Ok(v) => v,
            Err(r) => return r,
        };
    reply(&state.node.initialize_local(GroupId(group), members).await)
}
