//! The live seat map: `GET /v1/events/{id}/seats/stream` (Server-Sent Events,
//! see [`crate::live`]).

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{Extensions, HeaderMap};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use boxoffice_api::{Consistency, ProblemCode};

use super::{begin_with_event, check_fresh, event_group, parse_event_id, stores};
use crate::app::AppState;
use crate::auth::MaybeUser;
use crate::error::{ApiError, ApiResult};

/// The places a live stream takes for its client address and its user (when
/// those are limited), held for the life of the stream.
pub(crate) fn stream_slots(
    state: &AppState,
    extensions: &Extensions,
    headers: &HeaderMap,
    user: Option<&str>,
) -> ApiResult<(
    Option<crate::rate_limits::Slot<std::net::IpAddr>>,
    Option<crate::rate_limits::Slot<String>>,
)> {
    let address = match extensions.get::<ConnectInfo<std::net::SocketAddr>>() {
        Some(c) => {
            let addr = state.limits.client_address(c.0.ip(), headers);
            state.streams_per_address.take(addr)?
        }
        None => None,
    };
    let user = match user {
        Some(u) => state.streams_per_user.take(u.to_string())?,
        None => None,
    };
    Ok((address, user))
}

/// One of the node's live-stream places (`limits.sse_streams_max`).
pub(crate) fn node_stream_permit(state: &AppState) -> ApiResult<tokio::sync::OwnedSemaphorePermit> {
    state.node.streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            ProblemCode::Overloaded,
            "too many live streams on this node; retry shortly",
        )
    })
}

/// Routes of this resource.
pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/events/{event_id}/seats/stream", get(seat_stream))
}

/// This module's operations in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(seat_stream))]
pub struct Doc;

/// `GET /v1/events/{id}/seats/stream`: the live seat map as Server-Sent Events.
/// Open to anyone; a request with a user token counts against its user's
/// streams as well as its address's.
#[utoipa::path(get, path = "/v1/events/{event_id}/seats/stream", tag = "events",
    params(
        ("event_id" = u64, Path, description = "The event"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event of an earlier stream"),
    ),
    responses((status = 200, description = "Server-Sent Events: `snapshot`, `seat`, `expired`, `reset`, `error` (see `StreamEventKind`)", content_type = "text/event-stream", body = String), crate::openapi::Problems),
    security((), ("user" = [])))]
async fn seat_stream(
    State(state): State<AppState>,
    Path(event_id): Path<String>,
    MaybeUser(user): MaybeUser,
    extensions: Extensions,
    headers: HeaderMap,
) -> ApiResult<impl IntoResponse> {
    let event_id = parse_event_id(&event_id)?;
    // Taken first and held for the life of the stream.
    let (address_slot, user_slot) = stream_slots(
        &state,
        &extensions,
        &headers,
        user.as_ref().map(|c| c.sub.as_str()),
    )?;
    let g = event_group(&state, event_id)?;
    let st = stores(&state, g)?;
    let feed = state
        .node
        .feed(g)
        .ok_or_else(|| super::not_here(&state, g))?;
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::new(
                        ProblemCode::InvalidLastEventId,
                        "Last-Event-ID must be an id this stream sent",
                    )
                })?,
        ),
    };
    // An id from another shard's stream (or of the format before stream ids
    // named their shard) says nothing about this one: a fresh snapshot.
    let last_event_id = last_event_id.and_then(|id| crate::live::position_of(g, id));
    let tx = begin_with_event(&state, g, &st.reader, event_id).await?;
    check_fresh(&state, g, &tx.freshness, Consistency::Local)?;
    if tx.inventory(event_id).is_none() {
        return Err(ApiError::new(
            ProblemCode::UnknownEvent,
            format!("unknown event {event_id}"),
        )
        .with("event_id", event_id));
    }
    drop(tx);
    let permit = crate::live::StreamPermits {
        node: node_stream_permit(&state)?,
        address: address_slot,
        user: user_slot,
        dropped: state.node.metrics.streams_dropped.clone(),
    };
    let send_timeout =
        std::time::Duration::from_millis(state.node.config.limits.sse_send_timeout_ms);
    Ok(crate::live::stream(
        feed,
        st.reader.clone(),
        g,
        event_id,
        last_event_id,
        permit,
        send_timeout,
        state.node.config.limits.sse_stream_queue_max,
    ))
}
