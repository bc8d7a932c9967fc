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
    GroupStatus, Health, MemberAction, MemberChange, MemberStatus, ProblemCode, Readiness,
    SnapshotTriggered,
};
use boxoffice_raft::command::FEATURE_LEVEL_PAYMENTS;
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
    change_member
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
    let without_leader: Vec<u16> = (0..=shards)
        .filter(|g| node.leader_of(GroupId(*g)).is_none())
        .collect();
    if !without_leader.is_empty() {
        return not_ready("groups without a leader", Some(without_leader));
    }
    // Readiness means local reads work: every replica here knows its time and is
    // within `limits.replica_staleness_ms_max` of this node's clock.
    let now = crate::node::now_ms();
    let max = node.config.limits.replica_staleness_ms_max;
    let behind: Vec<u16> = (0..=shards)
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
    }))
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

/// Bootstraps a new cluster: every member prepares all groups, then each group is
/// initialised with every member as a voter. Idempotent for the same members.
#[utoipa::path(post, path = "/admin/v1/cluster/init", tag = "cluster",
    request_body = boxoffice_api::ClusterInit,
    responses((status = 200, body = boxoffice_api::ClusterInitialized), crate::openapi::Problems), security(("admin" = [])))]
async fn init(
    State(state): State<AppState>,
    _: Admin,
    JsonBody(body): JsonBody<ClusterInit>,
) -> ApiResult<Json<ClusterInitialized>> {
    let shards = body.shards.unwrap_or(SHARDS_DEFAULT);
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
    let mismatch = |e: String| ApiError::new(ProblemCode::ClusterMismatch, e);
    for m in &body.members {
        if m.id == state.node.id() {
            state.node.prepare(shards).await.map_err(mismatch)?;
        } else {
            let r: Result<(), String> = state
                .node
                .rpc
                .call(
                    &m.addr,
                    "/internal/v1/prepare",
                    &shards,
                    Duration::from_secs(10),
                )
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
    // Each group is initialised on the member that is to lead it first: the
    // catalogue on this node, shard s on the ((s - 1) mod n)-th member by id, so the
    // shards' leaders (and their share of the work) start spread over the nodes.
    let ids: Vec<NodeId> = members.keys().copied().collect();
    let mut initialized_groups = Vec::new();
    let mut first_leaders = BTreeMap::new();
    for (g, _) in state.node.groups.all() {
        let at = if g == GroupId::CATALOGUE {
            state.node.id()
        } else {
            ids[(usize::from(g.0) - 1) % ids.len()]
        };
        let done: Result<bool, String> = if at == state.node.id() {
            state.node.initialize_local(g, members.clone()).await
        } else {
            let addr = &members[&at].addr;
            state
                .node
                .rpc
                .call(
                    addr,
                    &format!("/internal/v1/initialize/{}", g.0),
                    &members,
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
    Ok(Json(ClusterInitialized {
        shards,
        members: ids,
        initialized_groups,
        first_leaders,
    }))
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
    let (group, id): (u16, NodeId) = (super::parse_group(&group)?, super::parse_node_id(&id)?);
    let shards = state.node.shards().ok_or_else(not_bootstrapped)?;
    if group > shards {
        return Err(ApiError::new(
            ProblemCode::UnknownGroup,
            format!("no group {group} (0 = catalogue, 1..={shards} = shards)"),
        ));
    }
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
