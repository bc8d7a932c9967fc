//! Events: `GET /v1/events` (a page in id order) and `GET /v1/events/{id}` (one
//! event with its venue and performers), from this node's catalogue replica.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use boxoffice_api::{
    Consistency, EventDetails, EventInfo, EventPage, EventView, PerformerInfo, ProblemCode,
    VenueInfo,
};
use boxoffice_raft::GroupId;
use boxoffice_storage::read::ReadTx;
use boxoffice_storage::records::Event;
use serde::Deserialize;

use super::{
    barrier_if, check_fresh, freshness, parse_consistency, parse_event_id, rfc3339_ms, stores,
};
use crate::app::{AppState, Params};
use crate::error::{ApiError, ApiResult};

/// Routes of this resource.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/events", get(list_events))
        .route("/v1/events/{event_id}", get(get_event))
}

/// This module's operations in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list_events, get_event))]
pub struct Doc;

/// An event with its venue and performers, from a catalogue read.
pub fn event_details(state: &AppState, tx: &ReadTx<'_>, e: &Event) -> EventDetails {
    let venue = tx.venue(e.venue_id).map(|v| VenueInfo {
        venue_id: v.venue_id,
        general_admission: v.layout.is_general_admission(),
        capacity: v.layout.capacity(),
        name: v.name,
        city: v.city,
        lat: v.lat,
        lon: v.lon,
    });
    let performers = e
        .performer_ids
        .iter()
        .filter_map(|&p| tx.performer(p))
        .map(|p| PerformerInfo {
            performer_id: p.performer_id,
            name: p.name,
            description: p.description,
        })
        .collect();
    EventDetails {
        event: EventInfo {
            event_id: e.event_id,
            name: e.name.clone(),
            description: e.description.clone(),
            category: e.category.clone(),
            starts_at: rfc3339_ms(e.starts_at_ms),
            starts_at_ms: e.starts_at_ms,
            hold_ttl_s: e.hold_ttl_ms / 1000,
            per_user_cap: e.per_user_cap,
            shard: state.node.shard_of(e.event_id).map(|g| g.0),
        },
        venue,
        performers,
    }
}

/// Query of `GET /v1/events`.
#[derive(Deserialize)]
struct ListQuery {
    after: Option<String>,
    limit: Option<String>,
    consistency: Option<String>,
}

#[utoipa::path(get, path = "/v1/events", tag = "events",
    params(
        ("after" = Option<u64>, Query, description = "Events with a larger id than this"),
        ("limit" = Option<u32>, Query, minimum = 1, description = "At most this many (up to `limits.page_size_max`)"),
        ("consistency" = Option<boxoffice_api::Consistency>, Query, description = "`local` (default: this replica, says how fresh) or `linearizable` (after a read index)"),
    ),
    responses((status = 200, body = boxoffice_api::EventPage), crate::openapi::Problems))]
async fn list_events(
    State(state): State<AppState>,
    Params(q): Params<ListQuery>,
) -> ApiResult<Json<EventPage>> {
    let max = state.node.config.limits.page_size_max;
    let after = match q.after.as_deref() {
        None => 0,
        Some(s) => s
            .parse()
            .map_err(|_| ApiError::bad_param("after", "after must be an event id"))?,
    };
    let limit: usize = match q.limit.as_deref() {
        None => 50.min(max),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if n >= 1 && n <= max => n,
            _ => {
                return Err(ApiError::bad_param(
                    "limit",
                    format!("limit must be between 1 and {max}"),
                ))
            }
        },
    };
    let c = parse_consistency(q.consistency.as_deref(), Consistency::Local)?;
    let g = GroupId::CATALOGUE;
    let st = stores(&state, g)?;
    barrier_if(&state, g, c).await?;
    let tx = st.reader.begin_applied();
    check_fresh(&state, g, &tx.freshness, c)?;
    let events = tx.events(after, limit);
    let next_after = if events.len() == limit {
        events.last().map(|e| e.event_id)
    } else {
        None
    };
    Ok(Json(EventPage {
        events: events
            .iter()
            .map(|e| event_details(&state, &tx, e))
            .collect(),
        next_after,
        freshness: freshness(g, tx.freshness),
    }))
}

/// Query of `GET /v1/events/{id}`.
#[derive(Deserialize)]
struct EventQuery {
    consistency: Option<String>,
}

#[utoipa::path(get, path = "/v1/events/{event_id}", tag = "events",
    params(("event_id" = u64, Path, description = "The event"), ("consistency" = Option<boxoffice_api::Consistency>, Query, description = "`local` (default: this replica, says how fresh) or `linearizable` (after a read index)")),
    responses((status = 200, body = boxoffice_api::EventView), crate::openapi::Problems))]
async fn get_event(
    State(state): State<AppState>,
    Path(event_id): Path<String>,
    Params(q): Params<EventQuery>,
) -> ApiResult<Json<EventView>> {
    let event_id = parse_event_id(&event_id)?;
    let c = parse_consistency(q.consistency.as_deref(), Consistency::Local)?;
    let g = GroupId::CATALOGUE;
    let st = stores(&state, g)?;
    barrier_if(&state, g, c).await?;
    // Linearizable reads bypass the cache: the barrier orders them after the
    // apply, not after the invalidation that follows it.
    let use_cache = c != Consistency::Linearizable;
    let ticket = state.node.event_cache.ticket();
    let tx = st.reader.begin_applied();
    check_fresh(&state, g, &tx.freshness, c)?;
    let details = match state.node.event_cache.get(event_id).filter(|_| use_cache) {
        Some(v) => v,
        None => {
            let e = tx.event(event_id).ok_or_else(|| {
                ApiError::new(
                    ProblemCode::UnknownEvent,
                    format!("unknown event {event_id}"),
                )
                .with("event_id", event_id)
            })?;
            let v = Arc::new(event_details(&state, &tx, &e));
            state.node.event_cache.insert(ticket, event_id, v.clone());
            v
        }
    };
    Ok(Json(EventView::new(
        (*details).clone(),
        freshness(g, tx.freshness),
    )))
}
