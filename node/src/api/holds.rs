//! Holds: `POST /v1/holds` (hold seats or a quantity), `POST
//! /v1/holds/{id}/confirm` (the hold becomes a booking), `DELETE /v1/holds/{id}`
//! (release), `GET /v1/holds/{id}` (the owner's view). Writes go through the
//! event's shard leader with the caller's idempotency key.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use boxoffice_api::{ConfirmHold, Consistency, Hold, HoldState, HoldStatus, NewHold, ProblemCode};
use boxoffice_raft::command::{
    Command, Effect, GrantedHold, HoldId, HoldRequest, Outcome, Rejection, Selection, Session,
    HOLD_SEATS_MAX,
};
use boxoffice_raft::GroupId;
use boxoffice_storage::read::HoldPhase;
use boxoffice_storage::records;
use serde::Deserialize;

use super::bookings::confirmed_view;
use super::{
    applied, barrier_if, event_group, freshness, idempotency_key, leader_header, parse_consistency,
    require_key, rfc3339_ms, shard_group, stores, unexpected, write,
};
use crate::app::{AppState, JsonBody, Params};
use crate::auth::User;
use crate::error::{ApiError, ApiResult};

/// Routes of this resource.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/holds", post(create_hold))
        .route("/v1/holds/{hold_id}", get(get_hold).delete(release_hold))
        .route("/v1/holds/{hold_id}/confirm", post(confirm_hold))
}

/// This module's operations in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(create_hold, confirm_hold, release_hold, get_hold))]
pub struct Doc;

/// A hold id from a path, with the shard it names.
fn parse_hold(state: &AppState, raw: &str) -> ApiResult<(HoldId, GroupId)> {
    let id: HoldId = raw
        .parse()
        .map_err(|e: String| ApiError::bad_param("hold_id", e))?;
    let g = shard_group(state, id.shard).map_err(|e| {
        if e.code == ProblemCode::UnknownShard {
            ApiError::new(ProblemCode::UnknownHold, format!("unknown hold {raw}"))
        } else {
            e
        }
    })?;
    Ok((id, g))
}

fn granted_view(group: GroupId, h: &GrantedHold, outcome: &Outcome) -> Hold {
    Hold {
        hold_id: h.hold_id.to_string(),
        event_id: h.event_id,
        seat_ids: h.seat_ids.clone(),
        quantity: h.quantity,
        total_cents: h.total_cents,
        expires_at: rfc3339_ms(h.expires_at_ms as i64),
        expires_at_ms: h.expires_at_ms,
        applied: applied(group, outcome.applied),
        replayed: outcome.replayed,
    }
}

/// What a hold body asks for, checked.
fn selection(body: &NewHold) -> ApiResult<Selection> {
    match (&body.seat_ids, body.quantity) {
        (Some(seats), None) => {
            if seats.is_empty() {
                return Err(ApiError::bad_param(
                    "seat_ids",
                    "seat_ids must not be empty",
                ));
            }
            if seats.len() > HOLD_SEATS_MAX as usize {
                return Err(ApiError::bad_param(
                    "seat_ids",
                    format!("at most {HOLD_SEATS_MAX} seats per hold"),
                ));
            }
            Ok(Selection::Seats(seats.clone()))
        }
        (None, Some(q)) => match u32::try_from(q) {
            Ok(q) if (1..=HOLD_SEATS_MAX).contains(&q) => Ok(Selection::Quantity(q)),
            _ => Err(ApiError::bad_param(
                "quantity",
                format!("quantity must be between 1 and {HOLD_SEATS_MAX}"),
            )),
        },
        _ => Err(ApiError::new(
            ProblemCode::InvalidInput,
            "give exactly one of seat_ids or quantity",
        )),
    }
}

#[utoipa::path(post, path = "/v1/holds", tag = "holds",
    params(("Idempotency-Key" = String, Header, description = "The write's idempotency key (1 to 128 visible ASCII bytes): a retry with the same key gets the first answer"), ("x-boxoffice-admission" = Option<String>, Header, description = "The waiting room's admission token, for an event with a queue")),
    request_body = boxoffice_api::NewHold,
    responses((status = 201, body = boxoffice_api::Hold), crate::openapi::Problems), security(("user" = [])))]
async fn create_hold(
    State(state): State<AppState>,
    User(user): User,
    headers: HeaderMap,
    JsonBody(body): JsonBody<NewHold>,
) -> ApiResult<impl IntoResponse> {
    let key = require_key(&headers)?;
    let selection = selection(&body)?;
    let group = event_group(&state, body.event_id)?;
    known_event(&state, group, body.event_id).await?;
    let session = Session {
        client_id: user.sub.clone(),
        idempotency_key: key,
    };
    let hold = HoldRequest {
        event_id: body.event_id,
        user: user.sub,
        selection,
    };
    let command = match admission(&state, group, &headers, &hold)? {
        Some(ticket) => Command::AdmittedHold { hold, ticket },
        None => Command::Hold(hold),
    };
    let (effect, outcome) = write(&state, group, session, command).await?;
    match &effect {
        Effect::Held(h) => Ok((
            StatusCode::CREATED,
            leader_header(&state, group),
            Json(granted_view(group, h, &outcome)),
        )),
        other => Err(unexpected("hold", other)),
    }
}

/// The queue ticket of the hold's admission (`Boxoffice-Admission`), verified
/// here so that forged and stale admissions never reach the log. Without one,
/// a hold on an event whose queue is on (as this replica has it) is refused
/// here too; the shard's state machine decides in the end either way.
fn admission(
    state: &AppState,
    group: GroupId,
    headers: &HeaderMap,
    hold: &HoldRequest,
) -> ApiResult<Option<u64>> {
    let refuse = |reason: String| {
        ApiError::new(
            ProblemCode::QueueAdmissionRequired,
            format!("a hold on this event needs an admission from its queue: {reason}"),
        )
        .with("reason", reason)
        .with("event_id", hold.event_id)
    };
    let Some(raw) = headers.get(boxoffice_api::ADMISSION_HEADER) else {
        let queued = state.node.stores(group).is_some_and(|st| {
            st.reader.peek(|tx| {
                tx.queue(hold.event_id)
                    .is_some_and(|q| q.status != boxoffice_raft::command::QueueStatus::Open)
            })
        });
        if queued {
            return Err(refuse(format!(
                "join the queue (POST /v1/events/{}/queue) and send the admission_token you get once admitted in the {} header",
                hold.event_id,
                boxoffice_api::ADMISSION_HEADER
            )));
        }
        return Ok(None);
    };
    let token = raw
        .to_str()
        .map_err(|_| refuse("the admission header is not text".into()))?;
    state
        .admissions
        .verify(
            token.trim(),
            hold.event_id,
            &hold.user,
            crate::node::now_ms(),
        )
        .map(Some)
        .map_err(|e| refuse(e.to_string()))
}

#[utoipa::path(post, path = "/v1/holds/{hold_id}/confirm", tag = "holds",
    params(("hold_id" = String, Path, pattern = "^h[0-9]{1,5}-[0-9]{1,20}$", description = "A hold id, `h<shard>-<n>`"), ("Idempotency-Key" = String, Header, description = "The write's idempotency key (1 to 128 visible ASCII bytes): a retry with the same key gets the first answer")),
    request_body = boxoffice_api::ConfirmHold,
    responses((status = 201, body = boxoffice_api::Booking), crate::openapi::Problems), security(("user" = [])))]
async fn confirm_hold(
    State(state): State<AppState>,
    User(user): User,
    Path(hold_id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<ConfirmHold>,
) -> ApiResult<impl IntoResponse> {
    let key = require_key(&headers)?;
    if !user.has_scope(crate::auth::BOX_OFFICE_SCOPE) {
        return Err(ApiError::new(
            ProblemCode::DirectConfirmForbidden,
            "the direct confirm is for box-office credentials (scope box_office); buyers check out (POST /v1/holds/{id}/checkout) and pay through the provider",
        ));
    }
    let (hold_id, group) = parse_hold(&state, &hold_id)?;
    if body.payment_ref.trim().is_empty() {
        return Err(ApiError::bad_param(
            "payment_ref",
            "payment_ref must not be empty",
        ));
    }
    let session = Session {
        client_id: user.sub.clone(),
        idempotency_key: key,
    };
    let command = Command::Confirm {
        hold_id,
        user: user.sub,
        payment_ref: body.payment_ref,
    };
    let (effect, outcome) = write(&state, group, session, command)
        .await
        .map_err(|e| hide_others_hold(e, hold_id))?;
    match &effect {
        Effect::Confirmed(b) => {
            let mut view = confirmed_view(b);
            view.applied = Some(applied(group, outcome.applied));
            view.replayed = Some(outcome.replayed);
            Ok((
                StatusCode::CREATED,
                leader_header(&state, group),
                Json(view),
            ))
        }
        other => Err(unexpected("confirm", other)),
    }
}

#[utoipa::path(delete, path = "/v1/holds/{hold_id}", tag = "holds",
    params(("hold_id" = String, Path, pattern = "^h[0-9]{1,5}-[0-9]{1,20}$", description = "A hold id, `h<shard>-<n>`"), ("Idempotency-Key" = Option<String>, Header, description = "The write's idempotency key (1 to 128 visible ASCII bytes)")),
    responses((status = 204, description = "Released (or already gone)"), crate::openapi::Problems), security(("user" = [])))]
async fn release_hold(
    State(state): State<AppState>,
    User(user): User,
    Path(hold_id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<impl IntoResponse> {
    let (hold_id, group) = parse_hold(&state, &hold_id)?;
    // Releasing is idempotent by nature; without a key, the hold id is the key.
    let key = idempotency_key(&headers)?.unwrap_or_else(|| format!("release:{hold_id}"));
    let session = Session {
        client_id: user.sub.clone(),
        idempotency_key: key,
    };
    let (_, outcome) = write(
        &state,
        group,
        session,
        Command::Release {
            hold_id,
            user: user.sub,
        },
    )
    .await
    .map_err(|e| hide_others_hold(e, hold_id))?;
    let mut resp = (StatusCode::NO_CONTENT, leader_header(&state, group)).into_response();
    for (name, value) in [
        (
            "x-boxoffice-applied-index",
            outcome.applied.index.to_string(),
        ),
        (
            "x-boxoffice-applied-time-ms",
            outcome.applied.time_ms.to_string(),
        ),
    ] {
        if let Ok(v) = value.parse() {
            resp.headers_mut().insert(name, v);
        }
    }
    Ok(resp)
}

/// Query of `GET /v1/holds/{id}`.
#[derive(Deserialize)]
struct HoldQuery {
    consistency: Option<String>,
}

#[utoipa::path(get, path = "/v1/holds/{hold_id}", tag = "holds",
    params(("hold_id" = String, Path, pattern = "^h[0-9]{1,5}-[0-9]{1,20}$", description = "A hold id, `h<shard>-<n>`"), ("consistency" = Option<boxoffice_api::Consistency>, Query, description = "`local` (default: this replica, says how fresh) or `linearizable` (after a read index)")),
    responses((status = 200, body = boxoffice_api::HoldStatus), crate::openapi::Problems), security(("user" = [])))]
async fn get_hold(
    State(state): State<AppState>,
    User(user): User,
    Path(hold_id): Path<String>,
    Params(q): Params<HoldQuery>,
) -> ApiResult<Json<HoldStatus>> {
    let (hold_id, group) = parse_hold(&state, &hold_id)?;
    let c = parse_consistency(q.consistency.as_deref(), Consistency::Linearizable)?;
    let st = stores(&state, group)?;
    barrier_if(&state, group, c).await?;
    let tx = st.reader.begin_applied();
    let (h, phase) = tx.hold(hold_id).ok_or_else(|| unknown_hold(hold_id))?;
    if h.user != user.sub {
        return Err(unknown_hold(hold_id));
    }
    let (status, booking_id) = match phase {
        HoldPhase::Active => (HoldState::Active, None),
        HoldPhase::Expired => (HoldState::Expired, None),
        HoldPhase::Confirmed(b) => (HoldState::Confirmed, Some(b.to_string())),
        HoldPhase::Released => (HoldState::Released, None),
        HoldPhase::PaymentPending => (HoldState::PaymentPending, None),
    };
    let payment = tx.hold_payment(hold_id.seq);
    let refund = payment.as_ref().and_then(|p| {
        Some(super::bookings::refund_view(
            &p.payment_id,
            &tx.refund(&p.payment_id)?,
        ))
    });
    Ok(Json(HoldStatus {
        hold_id: hold_id.to_string(),
        event_id: h.event_id,
        user: h.user,
        seat_ids: h.seat_ids,
        quantity: h.quantity,
        expires_at: rfc3339_ms(h.expires_at_ms as i64),
        expires_at_ms: h.expires_at_ms,
        total_cents: h.total_cents,
        status,
        booking_id,
        payment: payment.map(|p| boxoffice_api::PaymentView {
            payment_id: p.payment_id,
            status: match p.phase {
                records::PaymentPhase::InFlight => "in_flight",
                records::PaymentPhase::Failed => "failed",
                records::PaymentPhase::Paid => "paid",
            }
            .to_string(),
            amount_cents: p.amount_cents,
            currency: p.currency,
        }),
        refund,
        freshness: freshness(group, tx.freshness),
    }))
}

/// Refuses a hold on an event its shard does not have before anything is
/// proposed, so that a bot naming random events costs a read, not a log entry
/// and an idempotency session. An event this replica lacks may only be too new
/// for it: the answer waits for the leader's read index before it says so.
async fn known_event(state: &AppState, group: GroupId, event_id: u64) -> ApiResult<()> {
    let Some(st) = state.node.stores(group) else {
        // Not hosted here: the leader's state machine decides.
        return Ok(());
    };
    // A short read that keeps no version of the state (see `Reader::peek`): it
    // runs on every hold.
    let known = || st.reader.peek(|tx| tx.has_inventory(event_id));
    if known() {
        return Ok(());
    }
    // This replica may only be behind (the event was just created).
    state.node.read_barrier(group).await?;
    if known() {
        return Ok(());
    }
    Err(Rejection::UnknownEvent { event_id }.into())
}

/// The answer for a hold that does not exist, given too for another user's hold:
/// hold ids are sequential, so any other answer would tell a scanner that the id
/// exists (and whether it was confirmed, released or expired).
fn unknown_hold(hold_id: HoldId) -> ApiError {
    Rejection::UnknownHold { hold_id }.into()
}

/// The state machine refuses another user's hold as `NotHoldOwner` (an outcome
/// stored in idempotency sessions, so it stays as it is); callers are told what
/// they would be told of a hold that does not exist, with the same members
/// (where the refusal was applied, whether it was a replay).
fn hide_others_hold(e: ApiError, hold_id: HoldId) -> ApiError {
    if e.code != ProblemCode::NotHoldOwner {
        return e;
    }
    let mut unknown = unknown_hold(hold_id);
    for (k, v) in e.extra {
        unknown.extra.entry(k).or_insert(v);
    }
    unknown
}
