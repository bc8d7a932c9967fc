//! The catalogue's admin API: `POST /admin/v1/venues`, `POST
//! /admin/v1/performers`, `POST /admin/v1/events` (the event in the catalogue,
//! then its inventory on its shard), `POST /admin/v1/events/batch`, `PATCH
//! /admin/v1/events/{id}`.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{patch, post};
use axum::{Json, Router};
use boxoffice_api::{
    EventCreated, EventPlaced, EventUpdate, EventUpdated, EventsCreated, NewEvent, NewEvents,
    NewPerformer, NewVenue, PerformerCreated, ProblemCode, VenueCreated,
};
use boxoffice_raft::command::{
    check_description, check_name, check_starts_at, Command, Effect, EventPatch, EventSpec,
    InventorySpec, Layout, PerformerSpec, RowSpec, SectionSpec, Session, VenueSpec,
    EVENTS_BATCH_MAX, HOLD_TTL_MS_DEFAULT, PER_USER_CAP_DEFAULT,
};
use boxoffice_raft::GroupId;

use super::{applied, idempotency_key, not_bootstrapped, parse_rfc3339_ms, unexpected, write};
use crate::app::{AppState, JsonBody};
use crate::auth::Admin;
use crate::error::{ApiError, ApiResult};

/// Routes of the catalogue admin API.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/venues", post(create_venue))
        .route("/admin/v1/performers", post(create_performer))
        .route("/admin/v1/events", post(create_event))
        .route("/admin/v1/events/batch", post(create_events))
        .route("/admin/v1/events/{id}", patch(update_event))
}

/// This module's operations in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    create_venue,
    create_performer,
    create_event,
    create_events,
    update_event
))]
pub struct Doc;

/// The session of an admin write: the admin's own key, or a fresh one (which
/// still makes the node's own retries exactly-once).
fn admin_session(admin: &Admin, headers: &HeaderMap) -> ApiResult<Session> {
    let key = idempotency_key(headers)?
        .unwrap_or_else(|| format!("auto:{:032x}", rand::random::<u128>()));
    Ok(Session {
        client_id: format!("admin:{}", admin.0.sub),
        idempotency_key: key,
    })
}

/// The layout a venue body describes (exactly one of its two forms).
fn layout(body: &NewVenue) -> ApiResult<Layout> {
    let layout = match (&body.sections, &body.general_admission) {
        (Some(sections), None) => Layout::Seated {
            sections: sections
                .iter()
                .map(|s| SectionSpec {
                    name: s.name.clone(),
                    rows: s
                        .rows
                        .iter()
                        .map(|r| RowSpec {
                            name: r.name.clone(),
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
            return Err(ApiError::new(
                ProblemCode::InvalidInput,
                "give exactly one of sections or general_admission",
            ))
        }
    };
    layout
        .validate()
        .map_err(|e| ApiError::new(ProblemCode::InvalidInput, e))?;
    Ok(layout)
}

#[utoipa::path(post, path = "/admin/v1/venues", tag = "catalogue",
    params(("Idempotency-Key" = Option<String>, Header, description = "The write's idempotency key (1 to 128 visible ASCII bytes)")),
    request_body = boxoffice_api::NewVenue,
    responses((status = 201, body = boxoffice_api::VenueCreated), crate::openapi::Problems), security(("admin" = [])))]
async fn create_venue(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    JsonBody(body): JsonBody<NewVenue>,
) -> ApiResult<impl IntoResponse> {
    let spec = VenueSpec {
        layout: layout(&body)?,
        name: body.name,
        city: body.city,
        lat: body.lat,
        lon: body.lon,
    };
    spec.validate().map_err(invalid_input)?;
    let g = GroupId::CATALOGUE;
    let session = admin_session(&admin, &headers)?;
    let (effect, outcome) = write(&state, g, session, Command::CreateVenue(spec)).await?;
    match effect {
        Effect::VenueCreated { venue_id } => Ok((
            StatusCode::CREATED,
            Json(VenueCreated {
                venue_id,
                applied: applied(g, outcome.applied),
                replayed: outcome.replayed,
            }),
        )),
        other => Err(unexpected("create venue", &other)),
    }
}

#[utoipa::path(post, path = "/admin/v1/performers", tag = "catalogue",
    params(("Idempotency-Key" = Option<String>, Header, description = "The write's idempotency key (1 to 128 visible ASCII bytes)")),
    request_body = boxoffice_api::NewPerformer,
    responses((status = 201, body = boxoffice_api::PerformerCreated), crate::openapi::Problems), security(("admin" = [])))]
async fn create_performer(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    JsonBody(body): JsonBody<NewPerformer>,
) -> ApiResult<impl IntoResponse> {
    let g = GroupId::CATALOGUE;
    let spec = PerformerSpec {
        name: body.name,
        description: body.description,
    };
    spec.validate().map_err(invalid_input)?;
    let session = admin_session(&admin, &headers)?;
    let (effect, outcome) = write(&state, g, session, Command::CreatePerformer(spec)).await?;
    match effect {
        Effect::PerformerCreated { performer_id } => Ok((
            StatusCode::CREATED,
            Json(PerformerCreated {
                performer_id,
                applied: applied(g, outcome.applied),
                replayed: outcome.replayed,
            }),
        )),
        other => Err(unexpected("create performer", &other)),
    }
}

/// The command form of an event body; `field` prefixes parameter names (a
/// batch's `events[3].`).
fn event_spec(body: NewEvent, field: &str) -> ApiResult<EventSpec> {
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
    let spec = EventSpec {
        name: body.name,
        description: body.description,
        category: body.category,
        venue_id: body.venue_id,
        performer_ids: body.performer_ids,
        starts_at_ms,
        hold_ttl_ms,
        per_user_cap: body.per_user_cap.unwrap_or(PER_USER_CAP_DEFAULT),
    };
    // Checked here as apply would check it, so that a bad event is never proposed.
    spec.validate()
        .map_err(|e| invalid_input(format!("{field}{e}")))?;
    Ok(spec)
}

/// A refusal of a body that describes something impossible.
fn invalid_input(reason: impl Into<String>) -> ApiError {
    ApiError::new(ProblemCode::InvalidInput, reason)
}

#[utoipa::path(post, path = "/admin/v1/events", tag = "catalogue",
    params(("Idempotency-Key" = Option<String>, Header, description = "The write's idempotency key (1 to 128 visible ASCII bytes)")),
    request_body = boxoffice_api::NewEvent,
    responses((status = 201, body = boxoffice_api::EventCreated), crate::openapi::Problems), security(("admin" = [])))]
async fn create_event(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    JsonBody(body): JsonBody<NewEvent>,
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
        return Err(unexpected("create event", &effect));
    };
    // Second step on the owning shard; idempotent per event, and the same key makes
    // a retried request re-run it safely.
    let shard = state.node.shard_of(event_id).ok_or_else(not_bootstrapped)?;
    let (_, inv_outcome) =
        write(&state, shard, session, Command::CreateInventory(inventory)).await?;
    Ok((
        StatusCode::CREATED,
        Json(EventCreated {
            event_id,
            shard: shard.0,
            applied: applied(GroupId::CATALOGUE, outcome.applied),
            inventory_applied: applied(shard, inv_outcome.applied),
            replayed: outcome.replayed,
        }),
    ))
}

/// `POST /admin/v1/events/batch`: up to `EVENTS_BATCH_MAX` events in one catalogue
/// entry (all or none), then their inventories, one entry per shard. For bulk
/// loading; a retry with the same idempotency key is exactly-once throughout.
#[utoipa::path(post, path = "/admin/v1/events/batch", tag = "catalogue",
    params(("Idempotency-Key" = Option<String>, Header, description = "The write's idempotency key (1 to 128 visible ASCII bytes)")),
    request_body = boxoffice_api::NewEvents,
    responses((status = 201, body = boxoffice_api::EventsCreated), crate::openapi::Problems), security(("admin" = [])))]
async fn create_events(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    JsonBody(body): JsonBody<NewEvents>,
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
        return Err(unexpected("create events", &effect));
    };
    let mut by_shard: BTreeMap<GroupId, Vec<InventorySpec>> = BTreeMap::new();
    let mut placed = Vec::with_capacity(events.len());
    for e in events {
        let shard = state
            .node
            .shard_of(e.event_id)
            .ok_or_else(not_bootstrapped)?;
        placed.push(EventPlaced {
            event_id: e.event_id,
            shard: shard.0,
        });
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
        Json(EventsCreated {
            events: placed,
            applied: applied(GroupId::CATALOGUE, outcome.applied),
            replayed: outcome.replayed,
        }),
    ))
}

/// `PATCH /admin/v1/events/{id}`: changes an event's name, description, category
/// or start time. Search and cached views follow through the change stream.
#[utoipa::path(patch, path = "/admin/v1/events/{id}", tag = "catalogue",
    params(("id" = u64, Path, description = "The event"), ("Idempotency-Key" = Option<String>, Header, description = "The write's idempotency key (1 to 128 visible ASCII bytes)")),
    request_body = boxoffice_api::EventUpdate,
    responses((status = 200, body = boxoffice_api::EventUpdated), crate::openapi::Problems), security(("admin" = [])))]
async fn update_event(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<EventUpdate>,
) -> ApiResult<Json<EventUpdated>> {
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
    let checks = [
        patch.name.as_deref().map(|v| check_name("event name", v)),
        patch.category.as_deref().map(|v| check_name("category", v)),
        patch.description.as_deref().map(check_description),
        patch.starts_at_ms.map(check_starts_at),
    ];
    for check in checks.into_iter().flatten() {
        check.map_err(invalid_input)?;
    }
    if patch.is_empty() {
        return Err(ApiError::bad_param(
            "body",
            "name one field to change: name, description, category, starts_at",
        ));
    }
    let g = GroupId::CATALOGUE;
    let session = admin_session(&admin, &headers)?;
    let (effect, outcome) =
        write(&state, g, session, Command::UpdateEvent { event_id, patch }).await?;
    match effect {
        Effect::EventUpdated { event_id } => Ok(Json(EventUpdated {
            event_id,
            applied: applied(g, outcome.applied),
            replayed: outcome.replayed,
        })),
        other => Err(unexpected("update event", &other)),
    }
}
