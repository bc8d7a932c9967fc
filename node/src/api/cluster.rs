//! Health, and the cluster's admin API: `GET /healthz`, `GET /readyz`, `GET
//! /admin/v1/cluster` (this node's view), `POST /admin/v1/cluster/init`
//! (bootstrap), `POST /admin/v1/groups/{g}/snapshot`, `POST
//! /admin/v1/groups/{g}/members/{id}` (membership), `POST /admin/v1/fault/clock`
//! (fault injection).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use boxoffice_api::{
    ClockOffset, ClockOffsetSet, ClusterInit, ClusterInitialized, ClusterStatus, GroupMembership,
    GroupPlacementView, GroupStatus, Health, LeaderTransfer, LeaderTransferred, MemberAction,
    MemberChange, MemberStatus, NewNode, NodeStateView, OperationView, PlacedNode, PlacementView,
    ProblemCode, Readiness, ReplicaMove, ReplicaMoved, SnapshotTriggered,
};
use boxoffice_raft::command::{
    Command, GroupPlacementSpec, NodeSpec, NodeStateSpec, PlacementUpdate, FEATURE_LEVEL_PAYMENTS,
    REPLICATION_FACTOR_DEFAULT, REPLICATION_FACTOR_MAX,
};
use boxoffice_raft::{GroupId, NodeId, SHARDS_DEFAULT};
use openraft::BasicNode;

use super::not_bootstrapped;
use crate::app::{AppState, JsonBody};
use crate::auth::Admin;
use crate::error::{ApiError, ApiResult};
use crate::node::MembershipChange;

/// Routes of the health checks and the API's OpenAPI document, served on the
/// public and the admin listener.
pub fn health_routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(crate::openapi::serve))
}

/// Routes of the cluster admin API.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/cluster", get(cluster))
        .route("/admin/v1/cluster/init", post(init))
        .route("/admin/v1/fault/clock", post(fault_clock))
        .route("/admin/v1/fault/panic", post(fault_panic))
        .route("/admin/v1/groups/{group}/members/{id}", post(change_member))
        .route("/admin/v1/groups/{group}/snapshot", post(snapshot))
        .route("/admin/v1/groups/{group}/move", post(move_replica))
        .route("/admin/v1/groups/{group}/leader", post(move_leader))
        .route("/admin/v1/nodes", post(add_node))
        .route("/admin/v1/nodes/{id}/drain", post(drain_node))
        .route("/admin/v1/nodes/{id}/up", post(node_up))
}

/// This module's operations in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    healthz,
    readyz,
    cluster,
    fault_clock,
    fault_panic,
    init,
    snapshot,
    change_member,
    move_replica,
    move_leader,
    add_node,
    drain_node,
    node_up
))]
pub struct Doc;

#[utoipa::path(get, path = "/healthz", tag = "cluster",
    responses((status = 200, description = "The process serves requests", body = boxoffice_api::Health)))]
async fn healthz(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        node_id: state.node.id(),
    })
}

/// Ready when bootstrapped and every group has a leader this node knows.
#[utoipa::path(get, path = "/readyz", tag = "cluster",
    responses(
        (status = 200, description = "Every group has a leader and this node is caught up", body = boxoffice_api::Readiness),
        (status = 503, description = "Not ready: why, and which groups", body = boxoffice_api::Readiness),
    ))]
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let node = &state.node;
    let not_ready = |reason: &str, groups: Option<Vec<u16>>| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Readiness {
                ready: false,
                node_id: None,
                shards: None,
                search_ready: None,
                reason: Some(reason.into()),
                groups,
            }),
        )
    };
    let Some(shards) = node.shards() else {
        return not_ready("not bootstrapped", None);
    };
    // The groups with a replica here (every group, on a node of a cluster
    // that keeps every replica everywhere).
    let hosted: Vec<u16> = node.hosted().into_iter().map(|g| g.0).collect();
    let without_leader: Vec<u16> = hosted
        .iter()
        .copied()
        .filter(|g| node.leader_of(GroupId(*g)).is_none())
        .collect();
    if !without_leader.is_empty() {
        return not_ready("groups without a leader", Some(without_leader));
    }
    // Readiness means local reads work: every replica here knows its time and is
    // within `limits.replica_staleness_ms_max` of this node's clock.
    let now = crate::node::now_ms();
    let max = node.config.limits.replica_staleness_ms_max;
    let behind: Vec<u16> = hosted
        .iter()
        .copied()
        .filter(|g| {
            node.stores(GroupId(*g)).is_none_or(|s| {
                let t = s.sm.applied().borrow().time_ms;
                t == 0 || now.saturating_sub(t) > max
            })
        })
        .collect();
    if !behind.is_empty() {
        return not_ready(
            "replicas that cannot serve local reads yet (no applied time, or too far behind)",
            Some(behind),
        );
    }
    (
        StatusCode::OK,
        Json(Readiness {
            ready: true,
            node_id: Some(node.id()),
            shards: Some(shards),
            search_ready: Some(node.search().map(|s| s.is_ready()).unwrap_or(false)),
            reason: None,
            groups: None,
        }),
    )
}

#[utoipa::path(get, path = "/admin/v1/cluster", tag = "cluster",
    responses((status = 200, body = boxoffice_api::ClusterStatus), crate::openapi::Problems), security(("admin" = [])))]
async fn cluster(State(state): State<AppState>, _: Admin) -> ApiResult<Json<ClusterStatus>> {
    let node = &state.node;
    let mut members = BTreeMap::new();
    let mut groups = Vec::new();
    for (g, raft) in node.groups.all() {
        let m = raft.metrics().borrow().clone();
        for (id, n) in m.membership_config.membership().nodes() {
            members.insert(*id, n.addr.clone());
        }
        let stores = node.stores(g);
        groups.push(GroupStatus {
            group: g.0,
            name: g.to_string(),
            leader: m.current_leader,
            state: format!("{:?}", m.state),
            term: m.current_term,
            last_log_index: m.last_log_index,
            committed_index: stores.as_ref().and_then(|s| s.log.committed_index()),
            applied_index: m.last_applied.map(|l| l.index),
            applied_time_ms: stores.as_ref().map(|s| s.sm.applied().borrow().time_ms),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            voters: m.membership_config.membership().voter_ids().collect(),
            matched: m
                .replication
                .as_ref()
                .map(|r| {
                    r.iter()
                        .filter_map(|(id, l)| l.map(|l| (*id, l.index)))
                        .collect()
                })
                .unwrap_or_default(),
            feature_level: stores.as_ref().map_or(0, |s| s.sm.feature_level()),
            payments: stores
                .as_ref()
                .filter(|s| !g.is_catalogue() && s.sm.feature_level() >= FEATURE_LEVEL_PAYMENTS)
                .map(|s| {
                    let c = s.reader.begin_applied().payment_counts();
                    boxoffice_api::PaymentCountsView {
                        checkouts: c.checkouts,
                        booked: c.booked,
                        booked_late: c.booked_late,
                        late_refunds: c.late_refunds,
                        mismatch_refunds: c.mismatch_refunds,
                        failed: c.failed,
                        cancelled: c.cancelled,
                        refunded: c.refunded,
                        refund_failures: c.refund_failures,
                    }
                }),
        });
    }
    Ok(Json(ClusterStatus {
        node_id: node.id(),
        addr: node.config.advertised(),
        peer_addr: node.config.peer_advertised(),
        shards: node.shards(),
        members: members
            .into_iter()
            .map(|(id, addr)| {
                let feature_level_max = if id == node.id() {
                    Some(node.config.raft.feature_level_max)
                } else {
                    node.rpc.peer(&addr).and_then(|p| p.feature_level)
                };
                MemberStatus {
                    id,
                    addr,
                    feature_level_max,
                }
            })
            .collect(),
        groups,
        event_cache_entries: node.event_cache.len(),
        sse_streams_open: node.config.limits.sse_streams_max - node.streams.available_permits(),
        sse_snapshots_serialized: node
            .groups
            .all()
            .into_iter()
            .filter_map(|(g, _)| node.feed(g))
            .map(|f| f.snapshots_serialized())
            .sum(),
        clock_offset_ms: crate::node::clock_offset_ms(),
        placement: node
            .stores(GroupId::CATALOGUE)
            .map(|_| placement_view(node)),
        operations: node
            .placement
            .moves
            .list()
            .into_iter()
            .map(|(g, s)| OperationView {
                kind: s.kind.into(),
                group: g.0,
                from: s.request.from,
                to: s.request.to,
                phase: s.phase.into(),
                running_ms: u64::try_from(s.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            })
            .collect(),
    }))
}

/// The placement directory as this node's catalogue replica has it.
fn placement_view(node: &crate::node::Node) -> PlacementView {
    let dir = node.directory();
    let count = |id: NodeId, learners: bool| {
        dir.groups
            .values()
            .filter(|p| {
                if learners {
                    p.learners.contains(&id)
                } else {
                    p.voters.contains(&id)
                }
            })
            .count()
    };
    PlacementView {
        replication_factor: dir.replication_factor,
        nodes: dir
            .nodes
            .iter()
            .map(|(id, n)| PlacedNode {
                id: *id,
                addr: n.addr.clone(),
                labels: n.labels.iter().cloned().collect(),
                state: match n.state {
                    NodeStateSpec::Up => "up",
                    NodeStateSpec::Draining => "draining",
                    NodeStateSpec::Down => "down",
                }
                .into(),
                voters: count(*id, false),
                learners: count(*id, true),
            })
            .collect(),
        groups: dir
            .groups
            .iter()
            .map(|(g, p)| GroupPlacementView {
                group: *g,
                voters: p.voters.clone(),
                learners: p.learners.clone(),
                epoch: p.epoch,
            })
            .collect(),
    }
}

/// Moves one replica of a group from a voter to another node, online: the
/// new replica catches up as a learner, then one joint change promotes it and
/// removes the old one, which is deleted. Run by the group's leader; a move
/// done already answers `moved: false`. Rolled back if the new replica does
/// not catch up within `placement.catch_up_timeout_ms`.
#[utoipa::path(post, path = "/admin/v1/groups/{group}/move", tag = "cluster",
    params(("group" = u16, Path, description = "The group (0 = catalogue)")),
    request_body = boxoffice_api::ReplicaMove,
    responses((status = 200, body = boxoffice_api::ReplicaMoved), crate::openapi::Problems), security(("admin" = [])))]
async fn move_replica(
    State(state): State<AppState>,
    _: Admin,
    Path(group): Path<String>,
    JsonBody(body): JsonBody<ReplicaMove>,
) -> ApiResult<Json<ReplicaMoved>> {
    let group = existing_group(&state, &group)?;
    if body.from == body.to {
        return Err(ApiError::bad_param("to", "to must differ from from"));
    }
    let dir = state.node.directory();
    let Some(to) = dir.nodes.get(&body.to) else {
        return Err(ApiError::bad_param(
            "to",
            format!("node {} is not in the placement directory", body.to),
        ));
    };
    if to.state != NodeStateSpec::Up {
        return Err(ApiError::bad_param(
            "to",
            format!("node {} is not up (it takes no replicas)", body.to),
        ));
    }
    // Checked against the directory first; the group's leader checks again
    // against the membership itself.
    if let Some(p) = dir.groups.get(&group) {
        if p.voters.contains(&body.to) && !p.voters.contains(&body.from) {
            // Done already: the leader answers `moved: false`.
        } else if !p.voters.contains(&body.from) {
            return Err(ApiError::bad_param(
                "from",
                format!("node {} holds no voter of group {group}", body.from),
            ));
        } else if p.voters.contains(&body.to) {
            return Err(ApiError::bad_param(
                "to",
                format!("node {} holds a voter of group {group} already", body.to),
            ));
        }
    }
    let m = crate::placement::moves::MoveRequest {
        from: body.from,
        to: body.to,
        to_addr: to.addr.clone(),
    };
    let done = state.node.move_replica(GroupId(group), m).await?;
    Ok(Json(ReplicaMoved {
        group,
        voters: done.voters,
        moved: done.moved,
        catch_up_ms: done.catch_up_ms,
    }))
}

/// Hands a group's leadership to another of its voters (see
/// `crate::placement::leaders`): the leader holds the group's writes for
/// about a leader lease, then the chosen voter campaigns and wins. A voter
/// that leads already answers `moved: false`.
#[utoipa::path(post, path = "/admin/v1/groups/{group}/leader", tag = "cluster",
    params(("group" = u16, Path, description = "The group (0 = catalogue)")),
    request_body = boxoffice_api::LeaderTransfer,
    responses((status = 200, body = boxoffice_api::LeaderTransferred), crate::openapi::Problems), security(("admin" = [])))]
async fn move_leader(
    State(state): State<AppState>,
    _: Admin,
    Path(group): Path<String>,
    JsonBody(body): JsonBody<LeaderTransfer>,
) -> ApiResult<Json<LeaderTransferred>> {
    let group = existing_group(&state, &group)?;
    // Checked against the directory first; the leader checks again against
    // the membership itself.
    if let Some(p) = state.node.directory().groups.get(&group) {
        if !p.voters.contains(&body.to) {
            return Err(ApiError::bad_param(
                "to",
                format!("node {} holds no voter of group {group}", body.to),
            ));
        }
    }
    let done = state.node.transfer_leader(GroupId(group), body.to).await?;
    Ok(Json(LeaderTransferred {
        group,
        leader: done.leader,
        moved: done.moved,
        writes_held_ms: done.writes_held_ms,
    }))
}

/// The group a path names: 0 (the catalogue) or a shard of this cluster.
fn existing_group(state: &AppState, group: &str) -> ApiResult<u16> {
    let group = super::parse_group(group)?;
    let shards = state.node.shards().ok_or_else(not_bootstrapped)?;
    if group > shards {
        return Err(ApiError::new(
            ProblemCode::UnknownGroup,
            format!("no group {group} (0 = catalogue, 1..={shards} = shards)"),
        ));
    }
    Ok(group)
}

/// Largest clock offset the fault-injection API accepts (one day): a bound of
/// the test API, not a node setting.
const CLOCK_OFFSET_MS_MAX: i64 = 86_400_000;

/// Fault injection: shifts this node's clock (what it stamps commands with as
/// leader and judges hold expiry with on reads). Only with `fault_injection = true`.
#[utoipa::path(post, path = "/admin/v1/fault/clock", tag = "cluster",
    request_body = boxoffice_api::ClockOffset,
    responses((status = 200, description = "Only on nodes started with `fault_injection = true`", body = boxoffice_api::ClockOffsetSet), crate::openapi::Problems), security(("admin" = [])))]
async fn fault_clock(
    State(state): State<AppState>,
    _: Admin,
    JsonBody(body): JsonBody<ClockOffset>,
) -> ApiResult<Json<ClockOffsetSet>> {
    if !state.node.config.fault_injection {
        return Err(ApiError::new(
            ProblemCode::FaultInjectionDisabled,
            "this node was not started with fault_injection = true",
        ));
    }
    if body.offset_ms.abs() > CLOCK_OFFSET_MS_MAX {
        return Err(ApiError::bad_param(
            "offset_ms",
            format!("offset_ms must be within ±{CLOCK_OFFSET_MS_MAX}"),
        ));
    }
    let before = crate::node::clock_offset_ms();
    crate::node::set_clock_offset_ms(body.offset_ms);
    tracing::warn!(
        before,
        offset_ms = body.offset_ms,
        "fault injection: clock offset set"
    );
    Ok(Json(ClockOffsetSet {
        clock_offset_ms: body.offset_ms,
        previous_ms: before,
    }))
}

/// Fault injection: a panic on one of the node's tasks (as a broken invariant
/// in apply would panic openraft's task), shortly after answering. The process
/// must end (see `abort_on_panic`) rather than stay up without the task. Only
/// with `fault_injection = true`.
#[utoipa::path(post, path = "/admin/v1/fault/panic", tag = "cluster",
    responses((status = 202, description = "A node task will panic (only with `fault_injection = true`)"), crate::openapi::Problems), security(("admin" = [])))]
async fn fault_panic(State(state): State<AppState>, _: Admin) -> ApiResult<impl IntoResponse> {
    if !state.node.config.fault_injection {
        return Err(ApiError::new(
            ProblemCode::FaultInjectionDisabled,
            "this node was not started with fault_injection = true",
        ));
    }
    tracing::warn!("fault injection: a task will panic");
    tokio::spawn(async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        panic!("fault injection: a panic on a node task");
    });
    Ok(StatusCode::ACCEPTED)
}

/// Bootstraps a new cluster: places each shard's voters on
/// `replication_factor` members (label diversity, then replica count, then
/// leader count: `boxoffice_raft::placement`), the catalogue's voters on as
/// many and learners on every other member; every member starts the groups it
/// holds, each group is initialised on the member that is to lead it first,
/// and the placement directory is written. Idempotent for the same members.
#[utoipa::path(post, path = "/admin/v1/cluster/init", tag = "cluster",
    request_body = boxoffice_api::ClusterInit,
    responses((status = 200, body = boxoffice_api::ClusterInitialized), crate::openapi::Problems), security(("admin" = [])))]
async fn init(
    State(state): State<AppState>,
    _: Admin,
    JsonBody(body): JsonBody<ClusterInit>,
) -> ApiResult<Json<ClusterInitialized>> {
    let shards = body.shards.unwrap_or(SHARDS_DEFAULT);
    if shards == 0 || shards > boxoffice_raft::SHARDS_MAX {
        return Err(ApiError::bad_param(
            "shards",
            format!("shards must be 1..={}", boxoffice_raft::SHARDS_MAX),
        ));
    }
    let rf = body
        .replication_factor
        .unwrap_or(REPLICATION_FACTOR_DEFAULT);
    if rf == 0 || rf > REPLICATION_FACTOR_MAX {
        return Err(ApiError::bad_param(
            "replication_factor",
            format!("replication_factor must be 1..={REPLICATION_FACTOR_MAX}"),
        ));
    }
    if body.members.is_empty() {
        return Err(ApiError::bad_param("members", "members must not be empty"));
    }
    if !body.members.iter().any(|m| m.id == state.node.id()) {
        return Err(ApiError::bad_param(
            "members",
            "members must include the node receiving the request",
        ));
    }
    let members: BTreeMap<NodeId, BasicNode> = body
        .members
        .iter()
        .map(|m| {
            (
                m.id,
                BasicNode {
                    addr: m.addr.clone(),
                },
            )
        })
        .collect();
    if members.len() != body.members.len() {
        return Err(ApiError::bad_param("members", "member ids must be unique"));
    }
    let placed = crate::placement::initial::place(&body.members, shards, rf, state.node.id());
    let placed = placed.map_err(|e| ApiError::bad_param("members", e))?;
    let mismatch = |e: String| ApiError::new(ProblemCode::ClusterMismatch, e);
    for m in &body.members {
        let groups = placed.hosted_by(m.id);
        if m.id == state.node.id() {
            state.node.host(shards, &groups).await.map_err(mismatch)?;
        } else {
            let host = crate::api::internal::HostRequest {
                shards,
                groups: groups.iter().map(|g| g.0).collect(),
            };
            let r: Result<(), String> = state
                .node
                .rpc
                .call(&m.addr, "/internal/v1/host", &host, Duration::from_secs(10))
                .await
                .map_err(|e| {
                    ApiError::new(
                        ProblemCode::PeerUnreachable,
                        format!("node {} at {}: {e}", m.id, m.addr),
                    )
                })?;
            r.map_err(|e| mismatch(format!("node {}: {e}", m.id)))?;
        }
    }
    let mut initialized_groups = Vec::new();
    let mut first_leaders = BTreeMap::new();
    for (&g, group) in &placed.groups {
        let at = group.first_leader;
        let voters: BTreeMap<NodeId, BasicNode> = group
            .voters
            .iter()
            .map(|id| (*id, members[id].clone()))
            .collect();
        let done: Result<bool, String> = if at == state.node.id() {
            state.node.initialize_local(g, voters).await
        } else {
            let addr = &members[&at].addr;
            state
                .node
                .rpc
                .call(
                    addr,
                    &format!("/internal/v1/initialize/{}", g.0),
                    &voters,
                    Duration::from_secs(10),
                )
                .await
                .map_err(|e| {
                    ApiError::new(
                        ProblemCode::PeerUnreachable,
                        format!("node {at} at {addr}: {e}"),
                    )
                })?
        };
        // `false`: already initialised (a repeated init), which is fine.
        if done.map_err(ApiError::internal)? {
            initialized_groups.push(g.0);
            first_leaders.insert(g.0, at);
        }
    }
    // The catalogue's learners: every member without a voter of it.
    for (id, node) in &members {
        if !placed.groups[&GroupId::CATALOGUE].voters.contains(id) {
            state
                .node
                .change_membership(
                    GroupId::CATALOGUE,
                    MembershipChange::AddLearner(*id, node.addr.clone()),
                )
                .await?;
        }
    }
    write_directory(&state, &body.members, rf, &placed).await?;
    Ok(Json(ClusterInitialized {
        shards,
        members: members.keys().copied().collect(),
        initialized_groups,
        first_leaders,
        voters: placed
            .groups
            .iter()
            .map(|(g, p)| (g.0, p.voters.iter().copied().collect()))
            .collect(),
    }))
}

/// Writes the nodes, the replication factor and the groups' first voters into
/// the placement directory, once the catalogue is at the feature level that
/// has it (its leader raises it within moments of the bootstrap, once every
/// member allows it). If it is not there within `limits.membership_timeout_ms`
/// (a member pinned below it by `raft.feature_level_max`), a task of this node
/// writes it when it is, and the bootstrap answers meanwhile: until then each
/// node routes only the groups it hosts.
async fn write_directory(
    state: &AppState,
    members: &[boxoffice_api::Member],
    rf: u8,
    placed: &crate::placement::initial::Placed,
) -> ApiResult<()> {
    let node = &state.node;
    let update = PlacementUpdate {
        replication_factor: Some(rf.min(u8::try_from(members.len()).unwrap_or(u8::MAX))),
        nodes: crate::placement::initial::node_specs(members),
        groups: placed
            .groups
            .iter()
            .filter(|(g, _)| !g.is_catalogue())
            .map(|(g, p)| GroupPlacementSpec {
                group: g.0,
                voters: p.voters.iter().copied().collect(),
                learners: Vec::new(),
                epoch: 0,
            })
            .collect(),
    };
    if let Err(e) = update.check() {
        return Err(ApiError::bad_param("members", e));
    }
    let deadline =
        std::time::Instant::now() + Duration::from_millis(node.config.limits.membership_timeout_ms);
    while !node.directory_writable() {
        if std::time::Instant::now() >= deadline {
            tracing::warn!("the catalogue is below the placement feature level (a member does not allow it yet); the placement directory will be written when it is");
            let weak = std::sync::Arc::downgrade(node);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let Some(node) = weak.upgrade() else { return };
                    if node.directory_writable()
                        && node
                            .propose(
                                GroupId::CATALOGUE,
                                None,
                                Command::SetPlacement(update.clone()),
                            )
                            .await
                            .is_ok_and(|o| o.result.is_ok())
                    {
                        tracing::info!("placement directory written");
                        return;
                    }
                }
            });
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let outcome = node
        .propose(GroupId::CATALOGUE, None, Command::SetPlacement(update))
        .await?;
    if let Err(r) = outcome.result {
        return Err(ApiError::bad_param("members", format!("{r:?}")));
    }
    // The catalogue's own entry (with its learners) comes from its leader's
    // reconciler, which has its membership.
    if let Some(me) = node.myself() {
        me.publish_placement(GroupId::CATALOGUE).await;
    }
    Ok(())
}

#[utoipa::path(post, path = "/admin/v1/groups/{group}/snapshot", tag = "cluster",
    params(("group" = u16, Path, description = "The group (0 = catalogue)")),
    responses((status = 202, body = boxoffice_api::SnapshotTriggered), crate::openapi::Problems), security(("admin" = [])))]
async fn snapshot(
    State(state): State<AppState>,
    _: Admin,
    Path(group): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let group = super::parse_group(&group)?;
    let raft = state.node.groups.get(GroupId(group)).ok_or_else(|| {
        ApiError::new(
            ProblemCode::UnknownGroup,
            format!("no group {group} on this node"),
        )
    })?;
    raft.trigger()
        .snapshot()
        .await
        .map_err(ApiError::internal)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(SnapshotTriggered {
            group,
            snapshot: "triggered".into(),
        }),
    ))
}

/// Changes one group's membership through its leader: remove a voter, add a node
/// back as a learner, or promote a learner to voter. Idempotent.
#[utoipa::path(post, path = "/admin/v1/groups/{group}/members/{id}", tag = "cluster",
    params(("group" = u16, Path, description = "The group (0 = catalogue)"), ("id" = u64, Path, description = "The node")),
    request_body = boxoffice_api::MemberChange,
    responses((status = 200, body = boxoffice_api::GroupMembership), crate::openapi::Problems), security(("admin" = [])))]
async fn change_member(
    State(state): State<AppState>,
    _: Admin,
    Path((group, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<MemberChange>,
) -> ApiResult<Json<GroupMembership>> {
    let (group, id): (u16, NodeId) = (existing_group(&state, &group)?, super::parse_node_id(&id)?);
    let change = match (body.action, body.addr) {
        (MemberAction::Remove, None) => MembershipChange::Remove(id),
        (MemberAction::Promote, None) => MembershipChange::Promote(id),
        (MemberAction::AddLearner, Some(addr)) if !addr.trim().is_empty() => {
            let addr = addr.trim().to_string();
            let members = state.node.member_addresses();
            if let Some((other, _)) = members.iter().find(|(m, a)| **m != id && **a == addr) {
                return Err(ApiError::bad_param(
                    "addr",
                    format!("{addr:?} is node {other}'s cluster address"),
                ));
            }
            let known = members.get(&id) == Some(&addr)
                || state.node.config.peer_addresses_allowed.contains(&addr);
            if !known && !body.allow_unlisted_addr {
                return Err(ApiError::bad_param(
                    "addr",
                    format!("{addr:?} is neither node {id}'s current cluster address nor in peer_addresses_allowed; check it, or set allow_unlisted_addr for a new machine"),
                ));
            }
            MembershipChange::AddLearner(id, addr)
        }
        (MemberAction::AddLearner, _) => {
            return Err(ApiError::bad_param(
                "addr",
                "add_learner needs the node's addr",
            ))
        }
        (MemberAction::Remove | MemberAction::Promote, Some(_)) => {
            return Err(ApiError::bad_param("addr", "addr is only for add_learner"))
        }
    };
    state.node.change_membership(GroupId(group), change).await?;
    let raft = state
        .node
        .groups
        .get(GroupId(group))
        .ok_or_else(|| ApiError::new(ProblemCode::NotReady, "group not running here"))?;
    // Answer once this node's own view shows the change (it is committed at the
    // leader already), so the reply describes the new membership.
    let deadline = std::time::Instant::now()
        + Duration::from_millis(state.node.config.limits.membership_timeout_ms);
    loop {
        let m = raft.metrics().borrow().clone();
        let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
        let learners: Vec<NodeId> = m.membership_config.membership().learner_ids().collect();
        let seen_here = match body.action {
            MemberAction::Remove => !voters.contains(&id),
            MemberAction::AddLearner => voters.contains(&id) || learners.contains(&id),
            MemberAction::Promote => voters.contains(&id),
        };
        if seen_here || std::time::Instant::now() >= deadline {
            return Ok(Json(GroupMembership {
                group,
                voters,
                learners,
                seen_here,
            }));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Adds a node to the cluster: it starts a learner of the catalogue and
/// enters the placement directory as `up`; the balancer then moves replicas
/// to it. The node must be running with an empty data directory. Idempotent.
#[utoipa::path(post, path = "/admin/v1/nodes", tag = "cluster",
    request_body = boxoffice_api::NewNode,
    responses((status = 200, body = boxoffice_api::NodeStateView), crate::openapi::Problems), security(("admin" = [])))]
async fn add_node(
    State(state): State<AppState>,
    _: Admin,
    JsonBody(body): JsonBody<NewNode>,
) -> ApiResult<Json<NodeStateView>> {
    state.node.shards().ok_or_else(not_bootstrapped)?;
    if body.id == 0 {
        return Err(ApiError::bad_param("id", "node ids start at 1"));
    }
    let addr = body.addr.trim().to_string();
    let dir = state.node.directory();
    if let Some((other, _)) = dir
        .nodes
        .iter()
        .find(|(id, n)| **id != body.id && n.addr == addr)
    {
        return Err(ApiError::bad_param(
            "addr",
            format!("{addr:?} is node {other}'s cluster address"),
        ));
    }
    if let Some(n) = dir.nodes.get(&body.id) {
        if n.addr != addr {
            return Err(ApiError::bad_param(
                "id",
                format!("node {} is in the cluster at {}", body.id, n.addr),
            ));
        }
    }
    if !state.node.config.peer_addresses_allowed.contains(&addr)
        && addr.parse::<std::net::SocketAddr>().is_err()
    {
        return Err(ApiError::bad_param(
            "addr",
            "addr must be host:port (an IP address, or a name in peer_addresses_allowed)",
        ));
    }
    // The labels as the directory keeps them (checked before anything starts).
    PlacementUpdate {
        replication_factor: None,
        nodes: vec![NodeSpec {
            id: body.id,
            addr: addr.clone(),
            labels: body.labels.clone().into_iter().collect(),
            state: NodeStateSpec::Up,
        }],
        groups: Vec::new(),
    }
    .check()
    .map_err(|e| ApiError::bad_param("labels", e))?;
    state.node.add_node(body.id, addr, body.labels).await?;
    Ok(Json(NodeStateView {
        id: body.id,
        state: "up".into(),
        voters: 0,
    }))
}

/// Drains a node: it takes no more replicas, and the balancer (on the
/// catalogue's leader) moves its replicas to other nodes, one at a time,
/// catalogue voter included. `GET /admin/v1/cluster` shows the voters it has
/// left; at none, it can be stopped. Idempotent.
#[utoipa::path(post, path = "/admin/v1/nodes/{id}/drain", tag = "cluster",
    params(("id" = u64, Path, description = "The node")),
    responses((status = 200, body = boxoffice_api::NodeStateView), crate::openapi::Problems), security(("admin" = [])))]
async fn drain_node(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<NodeStateView>> {
    set_state(&state, &id, NodeStateSpec::Draining).await
}

/// Marks a node up again (ends a drain, or a node marked down that is back):
/// it takes replicas again.
#[utoipa::path(post, path = "/admin/v1/nodes/{id}/up", tag = "cluster",
    params(("id" = u64, Path, description = "The node")),
    responses((status = 200, body = boxoffice_api::NodeStateView), crate::openapi::Problems), security(("admin" = [])))]
async fn node_up(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<NodeStateView>> {
    set_state(&state, &id, NodeStateSpec::Up).await
}

async fn set_state(
    state: &AppState,
    id: &str,
    to: NodeStateSpec,
) -> ApiResult<Json<NodeStateView>> {
    let id = super::parse_node_id(id)?;
    state.node.shards().ok_or_else(not_bootstrapped)?;
    if !state.node.directory().nodes.contains_key(&id) {
        return Err(ApiError::new(
            ProblemCode::NotFound,
            format!("node {id} is not in the placement directory"),
        ));
    }
    state.node.set_node_state(id, to).await?;
    let voters = state
        .node
        .directory()
        .groups
        .values()
        .filter(|p| p.voters.contains(&id))
        .count();
    Ok(Json(NodeStateView {
        id,
        state: match to {
            NodeStateSpec::Up => "up",
            NodeStateSpec::Draining => "draining",
            NodeStateSpec::Down => "down",
        }
        .into(),
        voters,
    }))
}
