//! The site's outgoing webhooks (admin): `PUT /admin/v1/webhooks/{name}`
//! registers or changes an endpoint on every shard, `GET /admin/v1/webhooks`
//! lists them, `GET /admin/v1/webhooks/{name}/deliveries` shows each event's
//! delivery (`?shard=&after=&limit=`), and
//! `POST /admin/v1/webhooks/{name}/deliveries/{event_id}/replay` queues one again.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use boxoffice_api::{
    DeliveryList, DeliveryView, ProblemCode, SetWebhookEndpoint, WebhookEndpointList,
    WebhookEndpointView,
};
use boxoffice_raft::command::{
    check_endpoint_name, Command, OutboxKind, Session, WebhookEndpointSpec,
};
use boxoffice_raft::GroupId;
use boxoffice_storage::records::DeliveryState;
use serde::Deserialize;

use super::{idempotency_key, not_bootstrapped, shard_group, stores, write};
use crate::app::{AppState, JsonBody, Params};
use crate::auth::Admin;
use crate::error::{ApiError, ApiResult};
use crate::payments::outgoing::{event_id, parse_event_id};

/// Routes of this resource.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/webhooks", get(list))
        .route("/admin/v1/webhooks/{name}", put(set))
        .route("/admin/v1/webhooks/{name}/deliveries", get(deliveries))
        .route(
            "/admin/v1/webhooks/{name}/deliveries/{event_id}/replay",
            post(replay),
        )
}

/// This module's operations in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(set, list, deliveries, replay))]
pub struct Doc;

fn name_of(raw: &str) -> ApiResult<String> {
    check_endpoint_name(raw).map_err(|e| ApiError::bad_param("name", e))?;
    Ok(raw.to_string())
}

#[utoipa::path(put, path = "/admin/v1/webhooks/{name}", tag = "webhooks",
    params(("name" = String, Path, description = "The endpoint's name"), ("Idempotency-Key" = Option<String>, Header, description = "The write's idempotency key (1 to 128 visible ASCII bytes)")),
    request_body = boxoffice_api::SetWebhookEndpoint,
    responses((status = 200, body = boxoffice_api::WebhookEndpointView), crate::openapi::Problems), security(("admin" = [])))]
async fn set(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(name): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<SetWebhookEndpoint>,
) -> ApiResult<Json<WebhookEndpointView>> {
    let name = name_of(&name)?;
    let kinds = body
        .events
        .iter()
        .map(|e| {
            OutboxKind::parse(e)
                .ok_or_else(|| ApiError::bad_param("events", format!("no event type {e:?}")))
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let secret = body.secret.clone().unwrap_or_else(|| {
        format!(
            "whsec_{:032x}{:032x}",
            rand::random::<u128>(),
            rand::random::<u128>()
        )
    });
    let spec = WebhookEndpointSpec {
        name: name.clone(),
        url: body.url.clone(),
        secret: secret.clone(),
        kinds,
        enabled: body.enabled,
    };
    boxoffice_raft::command::check_endpoint(&spec)
        .map_err(|e| ApiError::new(ProblemCode::InvalidInput, e))?;
    let shards = state.node.shards().ok_or_else(not_bootstrapped)?;
    let key = idempotency_key(&headers)?
        .unwrap_or_else(|| format!("webhook:{name}:{:x}", rand::random::<u64>()));
    // Every shard keeps the endpoint: each has an outbox of its own.
    for s in 1..=shards {
        let session = Session {
            client_id: admin.sub.clone(),
            idempotency_key: key.clone(),
        };
        write(
            &state,
            GroupId(s),
            session,
            Command::SetWebhookEndpoint(spec.clone()),
        )
        .await?;
    }
    Ok(Json(WebhookEndpointView {
        name,
        url: body.url,
        events: body.events,
        enabled: body.enabled,
        secret: Some(secret),
    }))
}

#[utoipa::path(get, path = "/admin/v1/webhooks", tag = "webhooks",
    responses((status = 200, body = boxoffice_api::WebhookEndpointList), crate::openapi::Problems), security(("admin" = [])))]
async fn list(
    State(state): State<AppState>,
    Admin(_): Admin,
) -> ApiResult<Json<WebhookEndpointList>> {
    state.node.shards().ok_or_else(not_bootstrapped)?;
    let g = GroupId(1);
    let st = stores(&state, g)?;
    state.node.read_barrier(g).await?;
    let endpoints = st
        .reader
        .begin_applied()
        .webhook_endpoints()
        .into_iter()
        .map(|(name, e)| WebhookEndpointView {
            name,
            url: e.url,
            events: e.kinds.iter().map(|k| k.as_str().to_string()).collect(),
            enabled: e.enabled,
            secret: None,
        })
        .collect();
    Ok(Json(WebhookEndpointList { endpoints }))
}

/// Query of the deliveries listing.
#[derive(Deserialize)]
struct DeliveryQuery {
    shard: Option<u16>,
    after: Option<u64>,
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/admin/v1/webhooks/{name}/deliveries", tag = "webhooks",
    params(("name" = String, Path, description = "The endpoint's name"),
        ("shard" = Option<u16>, Query, description = "Only this shard's"),
        ("after" = Option<u64>, Query, description = "After this sequence number"),
        ("limit" = Option<u32>, Query, minimum = 1, description = "At most this many"),
    ),
    responses((status = 200, body = boxoffice_api::DeliveryList), crate::openapi::Problems), security(("admin" = [])))]
async fn deliveries(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(name): Path<String>,
    Params(q): Params<DeliveryQuery>,
) -> ApiResult<Json<DeliveryList>> {
    let name = name_of(&name)?;
    let shards = state.node.shards().ok_or_else(not_bootstrapped)?;
    let max = state.node.config.limits.page_size_max;
    if q.limit == Some(0) {
        return Err(ApiError::bad_param("limit", "limit must be at least 1"));
    }
    let limit = q.limit.unwrap_or(max).min(max);
    let groups: Vec<GroupId> = match q.shard {
        Some(s) => vec![shard_group(&state, s)?],
        // Without a shard: the shards with a replica here (every shard, where
        // every node hosts every group); `?shard=` reaches any other.
        None => (1..=shards)
            .map(GroupId)
            .filter(|g| state.node.hosts(*g))
            .collect(),
    };
    let mut out = Vec::new();
    for g in groups {
        let st = stores(&state, g)?;
        state.node.read_barrier(g).await?;
        for (seq, d, e) in st
            .reader
            .begin_applied()
            .deliveries(&name, q.after.unwrap_or(0), limit)
        {
            let (status, at_ms) = match d.state {
                DeliveryState::Pending { next_at_ms } => ("pending", next_at_ms),
                DeliveryState::Delivered { at_ms } => ("delivered", at_ms),
                DeliveryState::GaveUp { at_ms } => ("gave_up", at_ms),
            };
            out.push(DeliveryView {
                event_id: event_id(g, seq),
                kind: e.kind.as_str().to_string(),
                status: status.to_string(),
                attempts: d.attempts,
                last_status: d.last_status,
                queued_at_ms: d.queued_at_ms,
                at_ms,
            });
        }
    }
    out.truncate(max);
    Ok(Json(DeliveryList { deliveries: out }))
}

#[utoipa::path(post, path = "/admin/v1/webhooks/{name}/deliveries/{event_id}/replay", tag = "webhooks",
    params(("name" = String, Path, description = "The endpoint's name"), ("event_id" = String, Path, description = "A delivery's event id, `evt_<shard>_<seq>`")),
    responses((status = 200, description = "Queued again", body = Object), crate::openapi::Problems), security(("admin" = [])))]
async fn replay(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path((name, event)): Path<(String, String)>,
) -> ApiResult<Json<serde_json::Value>> {
    let name = name_of(&name)?;
    let (shard, seq) = parse_event_id(&event)
        .ok_or_else(|| ApiError::bad_param("event_id", "expected evt_<shard>_<seq>"))?;
    let g = shard_group(&state, shard)?;
    let session = Session {
        client_id: admin.sub,
        idempotency_key: format!("replay:{name}:{event}:{:x}", rand::random::<u64>()),
    };
    write(
        &state,
        g,
        session,
        Command::ReplayDelivery {
            endpoint: name,
            seq,
        },
    )
    .await?;
    Ok(Json(
        serde_json::json!({ "event_id": event, "status": "pending" }),
    ))
}
