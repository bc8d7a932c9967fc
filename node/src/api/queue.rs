//! The virtual waiting room.
//!
//! Users: `POST /v1/events/{id}/queue` (join; idempotent, one place per
//! user), `GET /v1/events/{id}/queue/me` (where they stand, with the admission
//! token once admitted) and `GET /v1/events/{id}/queue/me/stream` (the same as
//! Server-Sent Events, whenever it changes). Reads are served by any replica
//! from its own state. Admins: `PUT /admin/v1/events/{id}/queue` (settings),
//! `GET /admin/v1/events/{id}/queue` (live figures) and `POST
//! /admin/v1/events/{id}/queue/{pause|resume|close|open}`.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use boxoffice_api::{
    Consistency, ProblemCode, QueueOrderName, QueuePlace, QueueSettings, QueueStats,
    StreamEventKind,
};
use boxoffice_raft::command::{
    Command, Effect, QueueAction, QueueEffect, QueueOrder, QueueSpec, Session,
    QUEUE_SESSION_TTL_MS_DEFAULT,
};
use boxoffice_raft::GroupId;
use boxoffice_storage::records::Queue;

use super::{
    applied, check_fresh, event_group, idempotency_key, parse_event_id, parse_rfc3339_ms, stores,
    unexpected, write,
};
use crate::app::{AppState, JsonBody};
use crate::auth::{Admin, User};
use crate::error::{ApiError, ApiResult};
use crate::node::{now_ms, GroupStores};
use crate::queue::{place_view, stats_view, PlaceContext};

/// Public routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/events/{event_id}/queue", post(join))
        .route("/v1/events/{event_id}/queue/me", get(me))
        .route("/v1/events/{event_id}/queue/me/stream", get(me_stream))
}

/// Admin routes.
pub fn admin_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/admin/v1/events/{event_id}/queue",
            get(stats).put(set_queue),
        )
        .route("/admin/v1/events/{event_id}/queue/{action}", post(control))
}

/// This module's operations in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(set_queue, stats, control, join, me, me_stream))]
pub struct Doc;

fn no_queue(event_id: u64) -> ApiError {
    ApiError::new(
        ProblemCode::NoQueue,
        format!("event {event_id} has no queue"),
    )
    .with("event_id", event_id)
}

/// The spec an admin's settings ask for.
fn spec_of(body: &QueueSettings) -> ApiResult<QueueSpec> {
    let time = |name: &'static str, raw: &str| -> ApiResult<u64> {
        parse_rfc3339_ms(raw)
            .and_then(|ms| u64::try_from(ms).ok())
            .ok_or_else(|| {
                ApiError::bad_param(name, format!("{name} must be an RFC 3339 time after 1970"))
            })
    };
    let spec = QueueSpec {
        prequeue_opens_at_ms: time("prequeue_opens_at", &body.prequeue_opens_at)?,
        sale_starts_at_ms: time("sale_starts_at", &body.sale_starts_at)?,
        admit_per_minute: body.admit_per_minute,
        active_max: body.active_max,
        session_ttl_ms: match body.session_ttl_s {
            Some(s) => s.saturating_mul(1000),
            None => QUEUE_SESSION_TTL_MS_DEFAULT,
        },
        order: match body.order.unwrap_or(QueueOrderName::RandomPrequeue) {
            QueueOrderName::RandomPrequeue => QueueOrder::RandomPrequeue,
            QueueOrderName::Fifo => QueueOrder::Fifo,
        },
    };
    spec.validate()
        .map_err(|e| ApiError::new(ProblemCode::InvalidInput, e))?;
    Ok(spec)
}

#[utoipa::path(put, path = "/admin/v1/events/{event_id}/queue", tag = "queue",
    params(("event_id" = u64, Path, description = "The event"), ("Idempotency-Key" = Option<String>, Header, description = "The write's idempotency key (1 to 128 visible ASCII bytes)")),
    request_body = boxoffice_api::QueueSettings,
    responses((status = 200, body = boxoffice_api::QueueStats), crate::openapi::Problems), security(("admin" = [])))]
async fn set_queue(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(event_id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<QueueSettings>,
) -> ApiResult<Json<QueueStats>> {
    let event_id = parse_event_id(&event_id)?;
    let spec = spec_of(&body)?;
    let group = event_group(&state, event_id)?;
    let command = Command::SetQueue {
        event_id,
        spec,
        seed: rand::random(),
    };
    admin_write(&state, group, event_id, admin.sub, &headers, command).await
}

/// Proposes an admin's queue command (with the request's idempotency key, or
/// a fresh one) and answers the queue's figures after it.
async fn admin_write(
    state: &AppState,
    group: GroupId,
    event_id: u64,
    admin: String,
    headers: &HeaderMap,
    command: Command,
) -> ApiResult<Json<QueueStats>> {
    let key = idempotency_key(headers)?
        .unwrap_or_else(|| format!("queue:{event_id}:{:x}", rand::random::<u64>()));
    let session = Session {
        client_id: admin,
        idempotency_key: key,
    };
    let name = command.name();
    // The answer is read from this node's replica: one that has none is
    // refused before anything is written (and the request relayed whole).
    let st = stores(state, group)?;
    let (effect, outcome) = write(state, group, session, command).await?;
    if !matches!(
        effect,
        Effect::Queue(QueueEffect::Configured { .. } | QueueEffect::Controlled { .. })
    ) {
        return Err(unexpected(name, &effect));
    }
    wait_applied(&st, outcome.applied.index).await;
    let q = st.reader.begin_applied().queue(event_id);
    let q = q.ok_or_else(|| no_queue(event_id))?;
    Ok(Json(stats_view(
        event_id,
        &q,
        applied(group, outcome.applied),
    )))
}

#[utoipa::path(get, path = "/admin/v1/events/{event_id}/queue", tag = "queue",
    params(("event_id" = u64, Path, description = "The event")),
    responses((status = 200, body = boxoffice_api::QueueStats), crate::openapi::Problems), security(("admin" = [])))]
async fn stats(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(event_id): Path<String>,
) -> ApiResult<Json<QueueStats>> {
    let event_id = parse_event_id(&event_id)?;
    let group = event_group(&state, event_id)?;
    let st = stores(&state, group)?;
    let tx = st.reader.begin_applied();
    let q = tx.queue(event_id).ok_or_else(|| no_queue(event_id))?;
    let at = boxoffice_raft::command::Applied {
        index: tx.freshness.applied_index,
        time_ms: tx.freshness.applied_time_ms,
    };
    Ok(Json(stats_view(event_id, &q, applied(group, at))))
}

#[utoipa::path(post, path = "/admin/v1/events/{event_id}/queue/{action}", tag = "queue",
    params(("event_id" = u64, Path, description = "The event"), ("action" = String, Path, description = "`pause`, `resume` or `close`"), ("Idempotency-Key" = Option<String>, Header, description = "The write's idempotency key (1 to 128 visible ASCII bytes)")),
    responses((status = 200, body = boxoffice_api::QueueStats), crate::openapi::Problems), security(("admin" = [])))]
async fn control(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path((event_id, action)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Json<QueueStats>> {
    let event_id = parse_event_id(&event_id)?;
    let action = match action.as_str() {
        "pause" => QueueAction::Pause,
        "resume" => QueueAction::Resume,
        "close" => QueueAction::Close,
        "open" => QueueAction::Open,
        other => {
            return Err(ApiError::bad_param(
                "action",
                format!("no action {other:?}: pause, resume, close or open"),
            ))
        }
    };
    let group = event_group(&state, event_id)?;
    let command = Command::QueueControl { event_id, action };
    admin_write(&state, group, event_id, admin.sub, &headers, command).await
}

/// Waits (a little) until this replica has applied `index`.
async fn wait_applied(st: &GroupStores, index: u64) {
    let mut rx = st.sm.applied();
    let _ = tokio::time::timeout(Duration::from_secs(2), rx.wait_for(|a| a.index >= index)).await;
}

/// `user`'s place in `event_id`'s queue as this replica has it.
fn place(
    state: &AppState,
    group: GroupId,
    st: &GroupStores,
    event_id: u64,
    user: &str,
    new: bool,
) -> ApiResult<QueuePlace> {
    let tx = st.reader.begin(now_ms());
    let q: Queue = tx.queue(event_id).ok_or_else(|| no_queue(event_id))?;
    let Some((join, standing)) = tx.queue_place(event_id, &q, user) else {
        return Err(ApiError::new(
            ProblemCode::NoQueue,
            format!("you are not in event {event_id}'s queue: join it first"),
        )
        .with("event_id", event_id)
        .with("joined", false));
    };
    let cx = PlaceContext {
        event_id,
        applied: applied(
            group,
            boxoffice_raft::command::Applied {
                index: tx.freshness.applied_index,
                time_ms: tx.freshness.applied_time_ms,
            },
        ),
        now_ms: tx.freshness.as_of_ms,
        settings: &state.node.config.queue,
        admissions: &state.admissions,
        user,
    };
    Ok(place_view(&cx, &q, &join, &standing, new))
}

#[utoipa::path(post, path = "/v1/events/{event_id}/queue", tag = "queue",
    params(("event_id" = u64, Path, description = "The event")),
    responses((status = 201, description = "Joined", body = boxoffice_api::QueuePlace), (status = 200, description = "Already in the queue", body = boxoffice_api::QueuePlace), crate::openapi::Problems), security(("user" = [])))]
async fn join(
    State(state): State<AppState>,
    User(user): User,
    Path(event_id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let event_id = parse_event_id(&event_id)?;
    let group = event_group(&state, event_id)?;
    // No session: a join is idempotent by itself (a second one answers the
    // place already held), so it leaves nothing behind but the place.
    // Answered from this node's replica (see `admin_write`).
    let st = stores(&state, group)?;
    let outcome = state
        .node
        .propose(
            group,
            None,
            Command::JoinQueue {
                event_id,
                user: user.sub.clone(),
            },
        )
        .await?;
    let new = match &outcome.result {
        Ok(Effect::Queue(QueueEffect::Joined { new, .. })) => *new,
        Ok(other) => return Err(unexpected("join_queue", other)),
        Err(r) => return Err(ApiError::from(r.clone())),
    };
    wait_applied(&st, outcome.applied.index).await;
    let view = match place(&state, group, &st, event_id, &user.sub, new) {
        Ok(v) => v,
        // This replica is still behind the join: catch up with the leader once.
        Err(_) => {
            state.node.read_barrier(group).await?;
            place(&state, group, &st, event_id, &user.sub, new)?
        }
    };
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, super::leader_header(&state, group), Json(view)))
}

#[utoipa::path(get, path = "/v1/events/{event_id}/queue/me", tag = "queue",
    params(("event_id" = u64, Path, description = "The event")),
    responses((status = 200, body = boxoffice_api::QueuePlace), crate::openapi::Problems), security(("user" = [])))]
async fn me(
    State(state): State<AppState>,
    User(user): User,
    Path(event_id): Path<String>,
) -> ApiResult<Json<QueuePlace>> {
    let event_id = parse_event_id(&event_id)?;
    let group = event_group(&state, event_id)?;
    let st = stores(&state, group)?;
    let view = place(&state, group, &st, event_id, &user.sub, false)?;
    let f = boxoffice_storage::read::Freshness {
        applied_index: view.applied.index,
        applied_time_ms: view.applied.time_ms,
        as_of_ms: now_ms(),
    };
    check_fresh(&state, group, &f, Consistency::Local)?;
    Ok(Json(view))
}

/// How often a quiet position stream looks again (sessions end by time, and a
/// booking ends one without a tick).
const STREAM_RECHECK: Duration = Duration::from_secs(1);

/// `GET /v1/events/{id}/queue/me/stream`: the user's place as Server-Sent
/// Events (`event: place`), sent first and then whenever it changes. Every
/// event is the whole place, so a stream resumed on any node (with or without
/// `Last-Event-ID`) starts from the place as that replica has it.
#[utoipa::path(get, path = "/v1/events/{event_id}/queue/me/stream", tag = "queue",
    params(("event_id" = u64, Path, description = "The event")),
    responses((status = 200, description = "Server-Sent Events: the caller's place (`QueuePlace`) as it changes", content_type = "text/event-stream", body = String), crate::openapi::Problems), security(("user" = [])))]
async fn me_stream(
    State(state): State<AppState>,
    User(user): User,
    Path(event_id): Path<String>,
    extensions: Extensions,
    headers: HeaderMap,
) -> ApiResult<impl IntoResponse> {
    let event_id = parse_event_id(&event_id)?;
    let slots = super::streams::stream_slots(&state, &extensions, &headers, Some(&user.sub))?;
    let group = event_group(&state, event_id)?;
    let st = stores(&state, group)?;
    // Refused now (no queue, not in it) rather than as a stream that ends.
    let first = place(&state, group, &st, event_id, &user.sub, false)?;
    let permit = super::streams::node_stream_permit(&state)?;
    let send_timeout = Duration::from_millis(state.node.config.limits.sse_send_timeout_ms);
    let (out_tx, out_rx) =
        tokio::sync::mpsc::channel(state.node.config.limits.sse_stream_queue_max.max(1));
    let mut changes = st.sm.changes();
    let frame =
        |p: &QueuePlace| crate::live::sse_json(StreamEventKind::Place, Some(p.applied.index), p);
    tokio::spawn(async move {
        let _permits = (permit, slots);
        let same = |a: &QueuePlace, b: &QueuePlace| {
            let strip = |p: &QueuePlace| QueuePlace {
                applied: boxoffice_api::Applied {
                    index: 0,
                    time_ms: 0,
                    shard: 0,
                },
                admission_token: p.admission_token.is_some().then(String::new),
                ..p.clone()
            };
            strip(a) == strip(b)
        };
        let mut last = first;
        if tokio::time::timeout(send_timeout, out_tx.send(frame(&last)))
            .await
            .map_or(true, |r| r.is_err())
        {
            return;
        }
        loop {
            if out_tx.is_closed() {
                return;
            }
            tokio::select! {
                r = changes.recv() => match r {
                    Ok(c) if c.snapshot_installed || crate::queue::touches_queue(&c.outcome, event_id) => {}
                    Ok(_) => continue,
                    // Missed changes: look at the state again, as after a tick.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = tokio::time::sleep(STREAM_RECHECK) => {}
            }
            let Ok(now) = place(&state, group, &st, event_id, &user.sub, false) else {
                return;
            };
            if same(&now, &last) {
                continue;
            }
            last = now;
            if tokio::time::timeout(send_timeout, out_tx.send(frame(&last)))
                .await
                .map_or(true, |r| r.is_err())
            {
                return;
            }
        }
    });
    Ok(crate::live::sse_response(out_rx))
}
