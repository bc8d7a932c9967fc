//! Bookings: `GET /v1/bookings[?event_id=]` (the caller's, from every shard or
//! the event's) and `GET /v1/bookings/{id}`; linearizable by default.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use boxoffice_api::{Booking, BookingList, BookingStatus, Consistency, ProblemCode};
use boxoffice_raft::command::{BookingId, ConfirmedBooking};
use boxoffice_raft::GroupId;
use boxoffice_storage::records;
use serde::Deserialize;

use super::{
    barrier_if, event_group, freshness, not_bootstrapped, parse_consistency, parse_event_id,
    rfc3339_ms, shard_group, stores,
};
use crate::app::{AppState, Params};
use crate::auth::User;
use crate::error::{ApiError, ApiResult};

/// Routes of this resource.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/bookings", get(list_bookings))
        .route("/v1/bookings/{booking_id}", get(get_booking))
}

/// This module's operations in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(get_booking, list_bookings))]
pub struct Doc;

/// A refund as the API shows it.
pub fn refund_view(payment_id: &str, r: &records::Refund) -> boxoffice_api::RefundView {
    use boxoffice_raft::command::RefundState;
    let (refund_id, last_error) = match &r.state {
        RefundState::Required { last_error, .. } => (None, last_error.clone()),
        RefundState::Pending { refund_id } | RefundState::Refunded { refund_id } => {
            (Some(refund_id.clone()), None)
        }
    };
    boxoffice_api::RefundView {
        payment_id: payment_id.to_string(),
        status: r.state.as_str().to_string(),
        reason: r.reason.as_str().to_string(),
        amount_cents: r.amount_cents,
        refund_id,
        last_error,
    }
}

/// A stored booking as the API shows it at `tx`: with its cancellation and
/// refund, if it was cancelled.
pub fn booking_view_at(tx: &boxoffice_storage::read::ReadTx<'_>, b: &records::Booking) -> Booking {
    let mut view = booking_view(b);
    if let Some(c) = tx.booking_cancellation(b.booking_id.seq) {
        view.status = BookingStatus::Cancelled;
        view.cancelled_at_ms = Some(c.cancelled_at_ms);
        view.refund = c
            .refund_payment_id
            .as_deref()
            .and_then(|p| Some(refund_view(p, &tx.refund(p)?)));
    }
    view
}

/// A stored booking as the API shows it (no write or read details).
pub fn booking_view(b: &records::Booking) -> Booking {
    Booking {
        booking_id: b.booking_id.to_string(),
        status: BookingStatus::Confirmed,
        hold_id: b.hold_id.to_string(),
        event_id: b.event_id,
        seat_ids: b.seat_ids.clone(),
        quantity: b.quantity,
        total_cents: b.total_cents,
        payment_ref: b.payment_ref.clone(),
        confirmed_at: rfc3339_ms(b.confirmed_at_ms as i64),
        confirmed_at_ms: b.confirmed_at_ms,
        applied: None,
        replayed: None,
        freshness: None,
        cancelled_at_ms: None,
        refund: None,
    }
}

/// A confirm's effect as the API shows the booking it made.
pub fn confirmed_view(b: &ConfirmedBooking) -> Booking {
    Booking {
        booking_id: b.booking_id.to_string(),
        status: BookingStatus::Confirmed,
        hold_id: b.hold_id.to_string(),
        event_id: b.event_id,
        seat_ids: b.seat_ids.clone(),
        quantity: b.quantity,
        total_cents: b.total_cents,
        payment_ref: b.payment_ref.clone(),
        confirmed_at: rfc3339_ms(b.confirmed_at_ms as i64),
        confirmed_at_ms: b.confirmed_at_ms,
        applied: None,
        replayed: None,
        freshness: None,
        cancelled_at_ms: None,
        refund: None,
    }
}

/// Query of the booking reads.
#[derive(Deserialize)]
struct BookingQuery {
    consistency: Option<String>,
    event_id: Option<String>,
    shard: Option<String>,
}

#[utoipa::path(get, path = "/v1/bookings/{booking_id}", tag = "bookings",
    params(("booking_id" = String, Path, pattern = "^b[0-9]{1,5}-[0-9]{1,20}$", description = "A booking id, `b<shard>-<n>`"), ("consistency" = Option<boxoffice_api::Consistency>, Query, description = "`local` (default: this replica, says how fresh) or `linearizable` (after a read index)")),
    responses((status = 200, body = boxoffice_api::Booking), crate::openapi::Problems), security(("user" = [])))]
async fn get_booking(
    State(state): State<AppState>,
    User(user): User,
    Path(booking_id): Path<String>,
    Params(q): Params<BookingQuery>,
) -> ApiResult<Json<Booking>> {
    let id: BookingId = booking_id
        .parse()
        .map_err(|e: String| ApiError::bad_param("booking_id", e))?;
    let unknown = || ApiError::new(ProblemCode::UnknownBooking, format!("unknown booking {id}"));
    let group = shard_group(&state, id.shard).map_err(|e| {
        if e.code == ProblemCode::UnknownShard {
            unknown()
        } else {
            e
        }
    })?;
    let c = parse_consistency(q.consistency.as_deref(), Consistency::Linearizable)?;
    let st = stores(&state, group)?;
    barrier_if(&state, group, c).await?;
    let tx = st.reader.begin_applied();
    let b = tx.booking(id).ok_or_else(unknown)?;
    // Another user's booking answers as one that does not exist: booking ids
    // are sequential, and a 403 would tell a scanner this one exists.
    if b.user != user.sub {
        return Err(unknown());
    }
    let mut view = booking_view_at(&tx, &b);
    view.freshness = Some(freshness(group, tx.freshness));
    Ok(Json(view))
}

#[utoipa::path(get, path = "/v1/bookings", tag = "bookings",
    params(("consistency" = Option<boxoffice_api::Consistency>, Query, description = "`local` (default: this replica, says how fresh) or `linearizable` (after a read index)"), ("event_id" = Option<u64>, Query, description = "Only this event's"), ("shard" = Option<u16>, Query, description = "Only this shard's")),
    responses((status = 200, body = boxoffice_api::BookingList), crate::openapi::Problems), security(("user" = [])))]
async fn list_bookings(
    State(state): State<AppState>,
    User(user): User,
    headers: axum::http::HeaderMap,
    Params(q): Params<BookingQuery>,
) -> ApiResult<Json<BookingList>> {
    let c = parse_consistency(q.consistency.as_deref(), Consistency::Linearizable)?;
    let shards = state.node.shards().ok_or_else(not_bootstrapped)?;
    let max = state.node.config.limits.page_size_max;
    let event = q.event_id.as_deref().map(parse_event_id).transpose()?;
    let shard = q
        .shard
        .as_deref()
        .map(|s| {
            s.parse::<u16>()
                .map_err(|_| ApiError::bad_param("shard", "shard must be a shard number"))
                .and_then(|n| shard_group(&state, n))
        })
        .transpose()?;
    let groups: Vec<GroupId> = match (event, shard) {
        (Some(e), Some(s)) if event_group(&state, e)? != s => Vec::new(),
        (Some(e), _) => vec![event_group(&state, e)?],
        (None, Some(s)) => vec![s],
        (None, None) => (1..=shards).map(GroupId).collect(),
    };
    let mut all = Vec::new();
    let mut truncated = false;
    for g in groups {
        if !state.node.hosts(g) {
            // One shard's part from a node that hosts it.
            let part = remote_bookings(&state, g, &headers, c, event).await?;
            truncated |= part.truncated;
            for b in part.bookings {
                let id: BookingId = b.booking_id.parse().map_err(|e| {
                    ApiError::internal(format!("a peer's booking id {:?}: {e}", b.booking_id))
                })?;
                all.push((b.confirmed_at_ms, id, b));
            }
            continue;
        }
        let st = stores(&state, g)?;
        barrier_if(&state, g, c).await?;
        let tx = st.reader.begin_applied();
        // One more than a page, so that a cut is always reported as `truncated`.
        let found = tx.user_bookings_where(&user.sub, max + 1, |b| {
            event.is_none_or(|e| b.event_id == e)
        });
        all.extend(
            found
                .iter()
                .map(|b| (b.confirmed_at_ms, b.booking_id, booking_view_at(&tx, b))),
        );
    }
    all.sort_by_key(|(at, id, _)| (*at, *id));
    let truncated = truncated || all.len() > max;
    all.truncate(max);
    Ok(Json(BookingList {
        bookings: all.into_iter().map(|(_, _, v)| v).collect(),
        truncated,
    }))
}

/// The user's bookings on shard `group`, from a node that hosts it (the same
/// request, for that shard only, with the user's own token).
async fn remote_bookings(
    state: &AppState,
    group: GroupId,
    headers: &axum::http::HeaderMap,
    c: Consistency,
    event: Option<u64>,
) -> ApiResult<BookingList> {
    let mut uri = format!(
        "/v1/bookings?shard={}&consistency={}",
        group.0,
        match c {
            Consistency::Linearizable => "linearizable",
            Consistency::Local => "local",
        }
    );
    if let Some(e) = event {
        uri.push_str(&format!("&event_id={e}"));
    }
    let req = crate::placement::relay::RelayedRequest::get(uri, headers);
    let answer = crate::placement::relay::relay(&state.node, group, &req)
        .await
        .ok_or_else(|| super::not_here(state, group))?;
    if !answer.status().is_success() {
        return Err(ApiError::new(
            ProblemCode::ShardNotHere,
            format!("{group}: the node hosting it answered {}", answer.status()),
        ));
    }
    let body = axum::body::to_bytes(
        answer.into_body(),
        crate::placement::relay::RELAYED_PART_BYTES_MAX,
    )
    .await
    .map_err(|e| ApiError::new(ProblemCode::ShardNotHere, format!("{group}: {e}")))?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::internal(format!("a peer's bookings of {group}: {e}")))
}
