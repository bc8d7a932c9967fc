//! The admin API (`/admin/v1`, admin token) and health endpoints.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use boxoffice_raft::command::{
    Command, Effect, EventPatch, EventSpec, InventorySpec, Layout, PerformerSpec, RowSpec,
    SectionSpec, Session, VenueSpec, EVENTS_BATCH_MAX, HOLD_TTL_MS_DEFAULT, PER_USER_CAP_DEFAULT,
};
use boxoffice_raft::{GroupId, NodeId, SHARDS_DEFAULT};
use openraft::BasicNode;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{applied_json, idempotency_key, parse_rfc3339_ms, write};
use crate::app::{AppState, JsonBody};
use crate::auth::Admin;
use crate::error::{ApiError, ApiResult};

/// Routes of the admin API and health checks.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/admin/v1/cluster", get(cluster))
        .route("/admin/v1/cluster/init", post(init))
        .route("/admin/v1/fault/clock", post(fault_clock))
        .route("/admin/v1/groups/{group}/members/{id}", post(change_member))
        .route("/admin/v1/groups/{group}/snapshot", post(snapshot))
        .route("/admin/v1/venues", post(create_venue))
        .route("/admin/v1/performers", post(create_performer))
        .route("/admin/v1/events", post(create_event))
        .route("/admin/v1/events/batch", post(create_events))
        .route("/admin/v1/events/{id}", patch(update_event))
}

async fn healthz(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"status": "ok", "node_id": state.node.id()}))
}

/// Ready when bootstrapped and every group has a leader this node knows.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let node = &state.node;
    let Some(shards) = node.shards() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reason": "not bootstrapped"})),
        );
    };
    let without_leader: Vec<u16> = (0..=shards)
        .filter(|g| node.leader_of(GroupId(*g)).is_none())
        .collect();
    if without_leader.is_empty() {
        let search_ready = node.search().map(|s| s.is_ready()).unwrap_or(false);
        (
            StatusCode::OK,
            Json(
                json!({"ready": true, "node_id": node.id(), "shards": shards, "search_ready": search_ready}),
            ),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({"ready": false, "reason": "groups without a leader", "groups": without_leader}),
            ),
        )
    }
}

async fn cluster(State(state): State<AppState>, _: Admin) -> ApiResult<Json<Value>> {
    let node = &state.node;
    let mut members = BTreeMap::new();
    let mut groups = Vec::new();
    for (g, raft) in node.groups.all() {
        let m = raft.metrics().borrow().clone();
        for (id, n) in m.membership_config.membership().nodes() {
            members.insert(*id, n.addr.clone());
        }
        let stores = node.stores(g);
        let committed = stores.as_ref().and_then(|s| s.log.committed_index());
        let applied_time_ms = stores.as_ref().map(|s| s.sm.applied().borrow().time_ms);
        groups.push(json!({
            "group": g.0,
            "name": g.to_string(),
            "leader": m.current_leader,
            "state": format!("{:?}", m.state),
            "term": m.current_term,
            "last_log_index": m.last_log_index,
            "committed_index": committed,
            "applied_index": m.last_applied.map(|l| l.index),
            "applied_time_ms": applied_time_ms,
            "snapshot_index": m.snapshot.map(|l| l.index),
            "purged_index": m.purged.map(|l| l.index),
            "voters": m.membership_config.membership().voter_ids().collect::<Vec<_>>(),
        }));
    }
    let members: Vec<Value> = members
        .into_iter()
        .map(|(id, addr)| json!({"id": id, "addr": addr}))
        .collect();
    Ok(Json(json!({
        "node_id": node.id(),
        "addr": node.config.advertised(),
        "shards": node.shards(),
        "members": members,
        "groups": groups,
        "event_cache_entries": node.event_cache.len(),
        "sse_streams_open": node.config.limits.sse_streams_max - node.streams.available_permits(),
        "clock_offset_ms": crate::node::clock_offset_ms(),
    })))
}

/// Largest clock offset the fault-injection API accepts (one day).
const CLOCK_OFFSET_MS_MAX: i64 = 86_400_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockBody {
    offset_ms: i64,
}

/// Fault injection: shifts this node's clock (what it stamps commands with as
/// leader and judges hold expiry with on reads). Only with `fault_injection = true`.
async fn fault_clock(
    State(state): State<AppState>,
    _: Admin,
    JsonBody(body): JsonBody<ClockBody>,
) -> ApiResult<Json<Value>> {
    if !state.node.config.fault_injection {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "fault_injection_disabled",
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
    Ok(Json(
        json!({"clock_offset_ms": body.offset_ms, "previous_ms": before}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InitBody {
    members: Vec<MemberBody>,
    #[serde(default)]
    shards: Option<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberBody {
    id: NodeId,
    addr: String,
}

/// Bootstraps a new cluster: every member prepares all groups, then each group is
/// initialised with every member as a voter. Idempotent for the same members.
async fn init(
    State(state): State<AppState>,
    _: Admin,
    JsonBody(body): JsonBody<InitBody>,
) -> ApiResult<Json<Value>> {
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
    for m in &body.members {
        if m.id == state.node.id() {
            state
                .node
                .prepare(shards)
                .await
                .map_err(|e| ApiError::new(StatusCode::CONFLICT, "cluster_mismatch", e))?;
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
                    ApiError::unavailable(
                        "peer_unreachable",
                        format!("node {} at {}: {e}", m.id, m.addr),
                    )
                })?;
            r.map_err(|e| {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "cluster_mismatch",
                    format!("node {}: {e}", m.id),
                )
            })?;
        }
    }
    // Each group is initialised on the member that is to lead it first: the
    // catalogue on this node, shard s on the ((s - 1) mod n)-th member by id, so the
    // shards' leaders (and their share of the work) start spread over the nodes.
    let ids: Vec<NodeId> = members.keys().copied().collect();
    let mut initialized = Vec::new();
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
                    ApiError::unavailable("peer_unreachable", format!("node {at} at {addr}: {e}"))
                })?
        };
        // `false`: already initialised (a repeated init), which is fine.
        if done.map_err(ApiError::internal)? {
            initialized.push(g.0);
            first_leaders.insert(g.0, at);
        }
    }
    Ok(Json(
        json!({"shards": shards, "members": ids, "initialized_groups": initialized, "first_leaders": first_leaders}),
    ))
}

async fn snapshot(
    State(state): State<AppState>,
    _: Admin,
    Path(group): Path<u16>,
) -> ApiResult<impl IntoResponse> {
    let raft = state.node.groups.get(GroupId(group)).ok_or_else(|| {
        ApiError::not_found("unknown_group", format!("no group {group} on this node"))
    })?;
    raft.trigger()
        .snapshot()
        .await
        .map_err(ApiError::internal)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"group": group, "snapshot": "triggered"})),
    ))
}

fn admin_session(admin: &Admin, headers: &HeaderMap) -> ApiResult<Session> {
    // Without a key, a fresh one still makes the node's own retries exactly-once.
    let key = idempotency_key(headers)?.unwrap_or_else(|| format!("auto:{}", uuid_like()));
    Ok(Session {
        client_id: format!("admin:{}", admin.0.sub),
        idempotency_key: key,
    })
}

fn uuid_like() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VenueBody {
    name: String,
    city: String,
    lat: f64,
    lon: f64,
    #[serde(default)]
    sections: Option<Vec<SectionBody>>,
    #[serde(default)]
    general_admission: Option<GaBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SectionBody {
    name: String,
    rows: Vec<RowBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RowBody {
    name: String,
    seats: u32,
    price_cents: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GaBody {
    capacity: u32,
    price_cents: u64,
}

async fn create_venue(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    JsonBody(body): JsonBody<VenueBody>,
) -> ApiResult<impl IntoResponse> {
    let layout = match (body.sections, body.general_admission) {
        (Some(sections), None) => Layout::Seated {
            sections: sections
                .into_iter()
                .map(|s| SectionSpec {
                    name: s.name,
                    rows: s
                        .rows
                        .into_iter()
                        .map(|r| RowSpec {
                            name: r.name,
                            seats: r.seats,
                            price_cents: r.price_cents,
                        })
                        .collect(),
                })
                .collect(),
        },
        (None, Some(ga)) => Layout::GeneralAdmission {
            capacity: ga.capacity,
            price_cents: ga.price_cents,
        },
        _ => {
            return Err(ApiError::bad_request(
                "invalid_input",
                "give exactly one of sections or general_admission",
            ))
        }
    };
    layout
        .validate()
        .map_err(|e| ApiError::bad_request("invalid_input", e))?;
    let spec = VenueSpec {
        name: body.name,
        city: body.city,
        lat: body.lat,
        lon: body.lon,
        layout,
    };
    let g = GroupId::CATALOGUE;
    let (effect, outcome) = write(
        &state,
        g,
        admin_session(&admin, &headers)?,
        Command::CreateVenue(spec),
    )
    .await?;
    match effect {
        Effect::VenueCreated { venue_id } => Ok((
            StatusCode::CREATED,
            Json(
                json!({"venue_id": venue_id, "applied": applied_json(g, outcome.applied), "replayed": outcome.replayed}),
            ),
        )),
        other => Err(ApiError::internal(format!(
            "create venue produced {other:?}"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PerformerBody {
    name: String,
    #[serde(default)]
    description: String,
}

async fn create_performer(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    JsonBody(body): JsonBody<PerformerBody>,
) -> ApiResult<impl IntoResponse> {
    let g = GroupId::CATALOGUE;
    let spec = PerformerSpec {
        name: body.name,
        description: body.description,
    };
    let (effect, outcome) = write(
        &state,
        g,
        admin_session(&admin, &headers)?,
        Command::CreatePerformer(spec),
    )
    .await?;
    match effect {
        Effect::PerformerCreated { performer_id } => Ok((
            StatusCode::CREATED,
            Json(
                json!({"performer_id": performer_id, "applied": applied_json(g, outcome.applied), "replayed": outcome.replayed}),
            ),
        )),
        other => Err(ApiError::internal(format!(
            "create performer produced {other:?}"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventBody {
    name: String,
    #[serde(default)]
    description: String,
    category: String,
    venue_id: u64,
    #[serde(default)]
    performer_ids: Vec<u64>,
    starts_at: String,
    #[serde(default)]
    hold_ttl_s: Option<u64>,
    #[serde(default)]
    per_user_cap: Option<u32>,
}

fn event_spec(body: EventBody, field: &str) -> ApiResult<EventSpec> {
    let starts_at_ms = parse_rfc3339_ms(&body.starts_at).ok_or_else(|| {
        ApiError::bad_param(
            &format!("{field}starts_at"),
            format!(
                "starts_at must be an RFC 3339 time, not {:?}",
                body.starts_at
            ),
        )
    })?;
    let hold_ttl_ms = match body.hold_ttl_s {
        None => HOLD_TTL_MS_DEFAULT,
        Some(s) => s.checked_mul(1000).ok_or_else(|| {
            ApiError::bad_param(&format!("{field}hold_ttl_s"), "hold_ttl_s is too large")
        })?,
    };
    Ok(EventSpec {
        name: body.name,
        description: body.description,
        category: body.category,
        venue_id: body.venue_id,
        performer_ids: body.performer_ids,
        starts_at_ms,
        hold_ttl_ms,
        per_user_cap: body.per_user_cap.unwrap_or(PER_USER_CAP_DEFAULT),
    })
}

async fn create_event(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    JsonBody(body): JsonBody<EventBody>,
) -> ApiResult<impl IntoResponse> {
    let spec = event_spec(body, "")?;
    let session = admin_session(&admin, &headers)?;
    let (effect, outcome) = write(
        &state,
        GroupId::CATALOGUE,
        session.clone(),
        Command::CreateEvent(spec),
    )
    .await?;
    let Effect::EventCreated {
        event_id,
        inventory,
    } = effect
    else {
        return Err(ApiError::internal(format!(
            "create event produced {effect:?}"
        )));
    };
    // Second step on the owning shard; idempotent per event, and the same key makes
    // a retried request re-run it safely.
    let shard = state
        .node
        .shard_of(event_id)
        .ok_or_else(|| ApiError::unavailable("not_ready", "not bootstrapped"))?;
    let (_, inv_outcome) =
        write(&state, shard, session, Command::CreateInventory(inventory)).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "event_id": event_id,
            "shard": shard.0,
            "applied": applied_json(GroupId::CATALOGUE, outcome.applied),
            "inventory_applied": applied_json(shard, inv_outcome.applied),
            "replayed": outcome.replayed,
        })),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsBody {
    events: Vec<EventBody>,
}

/// `POST /admin/v1/events/batch`: up to `EVENTS_BATCH_MAX` events in one catalogue
/// entry (all or none), then their inventories, one entry per shard. For bulk
/// loading; a retry with the same idempotency key is exactly-once throughout.
async fn create_events(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    JsonBody(body): JsonBody<EventsBody>,
) -> ApiResult<impl IntoResponse> {
    if body.events.is_empty() || body.events.len() > EVENTS_BATCH_MAX {
        return Err(ApiError::bad_param(
            "events",
            format!("a batch holds 1..={EVENTS_BATCH_MAX} events"),
        ));
    }
    let specs = body
        .events
        .into_iter()
        .enumerate()
        .map(|(i, e)| event_spec(e, &format!("events[{i}].")))
        .collect::<ApiResult<Vec<_>>>()?;
    let session = admin_session(&admin, &headers)?;
    let (effect, outcome) = write(
        &state,
        GroupId::CATALOGUE,
        session.clone(),
        Command::CreateEvents(specs),
    )
    .await?;
    let Effect::EventsCreated { events } = effect else {
        return Err(ApiError::internal(format!(
            "create events produced {effect:?}"
        )));
    };
    let mut by_shard: BTreeMap<GroupId, Vec<InventorySpec>> = BTreeMap::new();
    let mut ids = Vec::with_capacity(events.len());
    for e in events {
        let shard = state
            .node
            .shard_of(e.event_id)
            .ok_or_else(|| ApiError::unavailable("not_ready", "not bootstrapped"))?;
        ids.push(json!({"event_id": e.event_id, "shard": shard.0}));
        by_shard.entry(shard).or_default().push(e.inventory);
    }
    // One entry per shard, all shards at once; each is idempotent per event.
    let writes = by_shard.into_iter().map(|(shard, specs)| {
        let (state, session) = (state.clone(), session.clone());
        async move { write(&state, shard, session, Command::CreateInventories(specs)).await }
    });
    for r in futures::future::join_all(writes).await {
        r?;
    }
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"events": ids, "applied": applied_json(GroupId::CATALOGUE, outcome.applied), "replayed": outcome.replayed}),
        ),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventPatchBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    starts_at: Option<String>,
}

/// `PATCH /admin/v1/events/{id}`: changes an event's name, description, category
/// or start time. Search and cached views follow through the change stream.
async fn update_event(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<EventPatchBody>,
) -> ApiResult<impl IntoResponse> {
    let event_id: u64 = id.parse().map_err(|_| {
        ApiError::bad_param("event_id", format!("event id must be a number, not {id:?}"))
    })?;
    let starts_at_ms = match &body.starts_at {
        None => None,
        Some(t) => Some(parse_rfc3339_ms(t).ok_or_else(|| {
            ApiError::bad_param(
                "starts_at",
                format!("starts_at must be an RFC 3339 time, not {t:?}"),
            )
        })?),
    };
    let patch = EventPatch {
        name: body.name,
        description: body.description,
        category: body.category,
        starts_at_ms,
    };
    if patch.is_empty() {
        return Err(ApiError::bad_param(
            "body",
            "name one field to change: name, description, category, starts_at",
        ));
    }
    let g = GroupId::CATALOGUE;
    let (effect, outcome) = write(
        &state,
        g,
        admin_session(&admin, &headers)?,
        Command::UpdateEvent { event_id, patch },
    )
    .await?;
    match effect {
        Effect::EventUpdated { event_id } => Ok(Json(
            json!({"event_id": event_id, "applied": applied_json(g, outcome.applied), "replayed": outcome.replayed}),
        )),
        other => Err(ApiError::internal(format!(
            "update event produced {other:?}"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberChangeBody {
    /// `remove`, `add_learner` or `promote`.
    action: String,
    /// The node's address, for `add_learner`.
    #[serde(default)]
    addr: Option<String>,
}

/// Changes one group's membership through its leader: remove a voter, add a node
/// back as a learner, or promote a learner to voter. Idempotent.
async fn change_member(
    State(state): State<AppState>,
    _: Admin,
    Path((group, id)): Path<(u16, NodeId)>,
    JsonBody(body): JsonBody<MemberChangeBody>,
) -> ApiResult<Json<Value>> {
    let shards = state
        .node
        .shards()
        .ok_or_else(|| ApiError::unavailable("not_ready", "the cluster is not bootstrapped yet"))?;
    if group > shards {
        return Err(ApiError::not_found(
            "unknown_group",
            format!("no group {group} (0 = catalogue, 1..={shards} = shards)"),
        ));
    }
    let change = match (body.action.as_str(), body.addr) {
        ("remove", None) => crate::node::MembershipChange::Remove(id),
        ("promote", None) => crate::node::MembershipChange::Promote(id),
        ("add_learner", Some(addr)) if !addr.trim().is_empty() => {
            crate::node::MembershipChange::AddLearner(id, addr)
        }
        ("add_learner", _) => {
            return Err(ApiError::bad_param(
                "addr",
                "add_learner needs the node's addr",
            ))
        }
        ("remove" | "promote", Some(_)) => {
            return Err(ApiError::bad_param("addr", "addr is only for add_learner"))
        }
        (other, _) => {
            return Err(ApiError::bad_param(
                "action",
                format!("action must be remove, add_learner or promote, not {other:?}"),
            ))
        }
    };
    let action = match &change {
        crate::node::MembershipChange::Remove(_) => Action::Remove,
        crate::node::MembershipChange::AddLearner(..) => Action::AddLearner,
        crate::node::MembershipChange::Promote(_) => Action::Promote,
    };
    state.node.change_membership(GroupId(group), change).await?;
    let raft = state
        .node
        .groups
        .get(GroupId(group))
        .ok_or_else(|| ApiError::unavailable("not_ready", "group not running here"))?;
    // Answer once this node's own view shows the change (it is committed at the
    // leader already), so the reply describes the new membership.
    let deadline = std::time::Instant::now()
        + Duration::from_millis(state.node.config.limits.membership_timeout_ms);
    loop {
        let m = raft.metrics().borrow().clone();
        let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
        let learners: Vec<NodeId> = m.membership_config.membership().learner_ids().collect();
        let seen = match action {
            Action::Remove => !voters.contains(&id),
            Action::AddLearner => voters.contains(&id) || learners.contains(&id),
            Action::Promote => voters.contains(&id),
        };
        if seen || std::time::Instant::now() >= deadline {
            return Ok(Json(
                json!({"group": group, "voters": voters, "learners": learners, "seen_here": seen}),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a membership change does (to know when this node sees it).
enum Action {
    Remove,
    AddLearner,
    Promote,
}
