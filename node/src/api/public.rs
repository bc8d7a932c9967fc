//! The public API (`/v1`): event views, seat maps, holds, confirms, bookings.
//!
//! Views are served from this node's replica and say how fresh they are; writes go
//! to the owning group's leader (forwarded if needed).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use boxoffice_raft::command::{
    BookingId, BookingView, Command, Effect, HoldId, HoldRequest, Selection, Session,
    HOLD_SEATS_MAX,
};
use boxoffice_raft::GroupId;
use boxoffice_storage::read::Freshness;
use boxoffice_storage::records::Event;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{applied_json, idempotency_key, parse_consistency, rfc3339_ms, write, Consistency};
use crate::app::{AppState, JsonBody};
use crate::auth::User;
use crate::error::{ApiError, ApiResult};
use crate::node::now_ms;

/// Routes of the public API.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/events", get(list_events))
        .route("/v1/events/{event_id}", get(get_event))
        .route("/v1/search", get(search))
        .route("/v1/events/{event_id}/seats", get(get_seats))
        .route("/v1/events/{event_id}/seats/stream", get(seat_stream))
        .route("/v1/holds", post(create_hold))
        .route("/v1/holds/{hold_id}", get(get_hold).delete(release_hold))
        .route("/v1/holds/{hold_id}/confirm", post(confirm_hold))
        .route("/v1/bookings", get(list_bookings))
        .route("/v1/bookings/{booking_id}", get(get_booking))
}

fn parse_event_id(raw: &str) -> ApiResult<u64> {
    raw.parse().map_err(|_| {
        ApiError::bad_param(
            "event_id",
            format!("event id must be a positive integer, not {raw:?}"),
        )
    })
}

fn shard_group(state: &AppState, shard: u16) -> ApiResult<GroupId> {
    match state.node.shards() {
        None => Err(ApiError::unavailable(
            "not_ready",
            "the cluster is not bootstrapped yet",
        )),
        Some(n) if shard >= 1 && shard <= n => Ok(GroupId(shard)),
        Some(_) => Err(ApiError::not_found(
            "unknown_shard",
            format!("no shard {shard} in this cluster"),
        )),
    }
}

fn event_group(state: &AppState, event_id: u64) -> ApiResult<GroupId> {
    state
        .node
        .shard_of(event_id)
        .ok_or_else(|| ApiError::unavailable("not_ready", "the cluster is not bootstrapped yet"))
}

fn stores(state: &AppState, group: GroupId) -> ApiResult<crate::node::GroupStores> {
    state.node.stores(group).ok_or_else(|| {
        ApiError::unavailable("not_ready", format!("{group} is not running on this node"))
    })
}

async fn barrier_if(state: &AppState, group: GroupId, c: Consistency) -> ApiResult<()> {
    if c == Consistency::Linearizable {
        state.node.read_barrier(group).await?;
    }
    Ok(())
}

/// Refuses a local read from a replica whose applied time lags its clock by more
/// than `limits.replica_staleness_ms_max` (linearizable reads are exempt: they
/// waited for the leader's read index).
fn check_fresh(state: &AppState, group: GroupId, f: &Freshness, c: Consistency) -> ApiResult<()> {
    let lag_ms = now_ms().saturating_sub(f.applied_time_ms);
    let max = state.node.config.limits.replica_staleness_ms_max;
    if c == Consistency::Local && lag_ms > max {
        return Err(ApiError::unavailable("replica_stale", format!("this replica of {group} is {lag_ms} ms behind (limit {max} ms); retry, ask another node, or use consistency=linearizable"))
            .with("lag_ms", lag_ms)
            .with("shard", group.0));
    }
    Ok(())
}

/// How fresh a read is, as answers show it.
#[derive(Serialize)]
struct FreshnessView {
    shard: u16,
    applied_index: u64,
    applied_time_ms: u64,
    as_of_ms: u64,
    /// This node's clock when it answered.
    clock_ms: u64,
    /// `clock_ms` minus the applied state-machine time.
    lag_ms: u64,
}

fn freshness_view(group: GroupId, f: Freshness) -> FreshnessView {
    let clock = now_ms();
    FreshnessView {
        shard: group.0,
        applied_index: f.applied_index,
        applied_time_ms: f.applied_time_ms,
        as_of_ms: f.as_of_ms,
        clock_ms: clock,
        lag_ms: clock.saturating_sub(f.applied_time_ms),
    }
}

fn freshness_json(group: GroupId, f: Freshness) -> Value {
    json!(freshness_view(group, f))
}

/// JSON of an event with its venue and performers, from a catalogue read.
pub fn event_json(state: &AppState, tx: &boxoffice_storage::read::ReadTx<'_>, e: &Event) -> Value {
    let venue = tx.venue(e.spec.venue_id);
    let performers: Vec<Value> = e
        .spec
        .performer_ids
        .iter()
        .filter_map(|&p| tx.performer(p))
        .map(|p| json!({"performer_id": p.performer_id, "name": p.spec.name, "description": p.spec.description}))
        .collect();
    json!({
        "event": {
            "event_id": e.event_id,
            "name": e.spec.name,
            "description": e.spec.description,
            "category": e.spec.category,
            "starts_at": rfc3339_ms(e.spec.starts_at_ms),
            "starts_at_ms": e.spec.starts_at_ms,
            "hold_ttl_s": e.spec.hold_ttl_ms / 1000,
            "per_user_cap": e.spec.per_user_cap,
            "shard": state.node.shard_of(e.event_id).map(|g| g.0),
        },
        "venue": venue.map(|v| json!({
            "venue_id": v.venue_id,
            "name": v.spec.name,
            "city": v.spec.city,
            "lat": v.spec.lat,
            "lon": v.spec.lon,
            "general_admission": matches!(v.spec.layout, boxoffice_raft::command::Layout::GeneralAdmission { .. }),
            "capacity": v.spec.layout.capacity(),
        })),
        "performers": performers,
    })
}

#[derive(Deserialize)]
struct ListQuery {
    after: Option<String>,
    limit: Option<String>,
    consistency: Option<String>,
}

async fn list_events(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
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
    let next = if events.len() == limit {
        events.last().map(|e| e.event_id)
    } else {
        None
    };
    let items: Vec<Value> = events.iter().map(|e| event_json(&state, &tx, e)).collect();
    Ok(Json(
        json!({"events": items, "next_after": next, "freshness": freshness_json(g, tx.freshness)}),
    ))
}

async fn get_event(
    State(state): State<AppState>,
    Path(event_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let event_id = parse_event_id(&event_id)?;
    let c = parse_consistency(q.get("consistency").map(String::as_str), Consistency::Local)?;
    let g = GroupId::CATALOGUE;
    let st = stores(&state, g)?;
    barrier_if(&state, g, c).await?;
    // Linearizable reads bypass the cache: the barrier orders them after the
    // apply, not after the invalidation that follows it.
    let use_cache = c != Consistency::Linearizable;
    let ticket = state.node.event_cache.ticket();
    let tx = st.reader.begin_applied();
    check_fresh(&state, g, &tx.freshness, c)?;
    let view = match state.node.event_cache.get(event_id).filter(|_| use_cache) {
        Some(v) => v,
        None => {
            let e = tx.event(event_id).ok_or_else(|| {
                ApiError::not_found("unknown_event", format!("unknown event {event_id}"))
                    .with("event_id", event_id)
            })?;
            let v = Arc::new(event_json(&state, &tx, &e));
            state.node.event_cache.insert(ticket, event_id, v.clone());
            v
        }
    };
    let mut body = (*view).clone();
    body["freshness"] = freshness_json(g, tx.freshness);
    Ok(Json(body))
}

/// A read's body with its freshness beside it, serialized in one pass.
#[derive(Serialize)]
struct WithFreshness<'a, T: Serialize> {
    #[serde(flatten)]
    body: &'a T,
    freshness: FreshnessView,
}

async fn get_seats(
    State(state): State<AppState>,
    Path(event_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<axum::response::Response> {
    let event_id = parse_event_id(&event_id)?;
    let c = parse_consistency(q.get("consistency").map(String::as_str), Consistency::Local)?;
    // `?view=rows`: the compact map, one status string per row.
    let rows = match q.get("view").map(String::as_str) {
        None | Some("seats") => false,
        Some("rows") => true,
        Some(other) => {
            return Err(ApiError::bad_param(
                "view",
                format!("view must be seats or rows, not {other:?}"),
            ))
        }
    };
    let g = event_group(&state, event_id)?;
    let st = stores(&state, g)?;
    barrier_if(&state, g, c).await?;
    let tx = st.reader.begin_applied();
    check_fresh(&state, g, &tx.freshness, c)?;
    let unknown_event = || {
        ApiError::not_found("unknown_event", format!("unknown event {event_id}"))
            .with("event_id", event_id)
    };
    // `?section=S`: only that section's seats (the counts stay the event's), so a
    // front end can draw one section of a large venue without the whole map.
    let section = q.get("section").map(String::as_str);
    let unknown_section = |section: &str| {
        ApiError::not_found(
            "unknown_section",
            format!("event {event_id} has no section {section:?}"),
        )
        .with("event_id", event_id)
    };
    let freshness = freshness_view(g, tx.freshness);
    if rows {
        let map = tx
            .seat_rows_of(event_id, section)
            .ok_or_else(unknown_event)?;
        if let Some(section) = section.filter(|_| map.rows.is_empty()) {
            return Err(unknown_section(section));
        }
        let size = map.rows.iter().map(|r| r.status.len() + 96).sum::<usize>();
        json_sized(
            &WithFreshness {
                body: &map,
                freshness,
            },
            size,
        )
    } else {
        let map = tx
            .seat_map_of(event_id, section)
            .ok_or_else(unknown_event)?;
        if let Some(section) = section.filter(|_| map.seats.is_empty()) {
            return Err(unknown_section(section));
        }
        json_sized(
            &WithFreshness {
                body: &map,
                freshness,
            },
            map.seats.len() * 112,
        )
    }
}

/// A JSON response serialized straight into a buffer of about `size_hint` bytes
/// (large seat maps would otherwise grow their buffer a dozen times).
fn json_sized<T: Serialize>(body: &T, size_hint: usize) -> ApiResult<axum::response::Response> {
    let mut buf = Vec::with_capacity(size_hint + 512);
    serde_json::to_writer(&mut buf, body).map_err(ApiError::internal)?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        buf,
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HoldBody {
    event_id: u64,
    #[serde(default)]
    seat_ids: Option<Vec<u32>>,
    #[serde(default)]
    quantity: Option<i64>,
}

fn require_key(headers: &HeaderMap) -> ApiResult<String> {
    idempotency_key(headers)?.ok_or_else(|| {
        ApiError::bad_request(
            "missing_idempotency_key",
            "writes need an Idempotency-Key header (any unique string, reused on retry)",
        )
    })
}

fn hold_json(
    group: GroupId,
    h: &boxoffice_raft::command::HoldView,
    outcome: &boxoffice_raft::command::Outcome,
) -> Value {
    json!({
        "hold_id": h.hold_id.to_string(),
        "event_id": h.event_id,
        "seat_ids": h.seat_ids,
        "quantity": h.quantity,
        "total_cents": h.total_cents,
        "expires_at": rfc3339_ms(h.expires_at_ms as i64),
        "expires_at_ms": h.expires_at_ms,
        "applied": applied_json(group, outcome.applied),
        "replayed": outcome.replayed,
    })
}

/// JSON of a booking.
pub fn booking_json(b: &BookingView) -> Value {
    json!({
        "booking_id": b.booking_id.to_string(),
        "status": "confirmed",
        "hold_id": b.hold_id.to_string(),
        "event_id": b.event_id,
        "seat_ids": b.seat_ids,
        "quantity": b.quantity,
        "total_cents": b.total_cents,
        "payment_ref": b.payment_ref,
        "confirmed_at": rfc3339_ms(b.confirmed_at_ms as i64),
        "confirmed_at_ms": b.confirmed_at_ms,
    })
}

async fn create_hold(
    State(state): State<AppState>,
    User(user): User,
    headers: HeaderMap,
    JsonBody(body): JsonBody<HoldBody>,
) -> ApiResult<impl IntoResponse> {
    let key = require_key(&headers)?;
    let selection = match (body.seat_ids, body.quantity) {
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
            Selection::Seats(seats)
        }
        (None, Some(q)) => {
            if q < 1 || q > i64::from(HOLD_SEATS_MAX) {
                return Err(ApiError::bad_param(
                    "quantity",
                    format!("quantity must be between 1 and {HOLD_SEATS_MAX}"),
                ));
            }
            Selection::Quantity(q as u32)
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_input",
                "give exactly one of seat_ids or quantity",
            ))
        }
    };
    let group = event_group(&state, body.event_id)?;
    let session = Session {
        client_id: user.sub.clone(),
        idempotency_key: key,
    };
    let command = Command::Hold(HoldRequest {
        event_id: body.event_id,
        user: user.sub,
        selection,
    });
    let (effect, outcome) = write(&state, group, session, command).await?;
    match effect {
        Effect::Held(h) => Ok((
            StatusCode::CREATED,
            leader_header(&state, group),
            Json(hold_json(group, &h, &outcome)),
        )),
        other => Err(ApiError::internal(format!("hold produced {other:?}"))),
    }
}

/// `x-boxoffice-leader: host:port` of the group's leader as this node knows it
/// after a write, so that a client can send the group's next writes there
/// directly instead of through a forwarding node. A hint only: any node still
/// takes any write.
fn leader_header(state: &AppState, group: GroupId) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Some(v) = state
        .node
        .leader_of(group)
        .and_then(|(_, addr)| addr.parse().ok())
    {
        h.insert("x-boxoffice-leader", v);
    }
    h
}

fn parse_hold(state: &AppState, raw: &str) -> ApiResult<(HoldId, GroupId)> {
    let id: HoldId = raw
        .parse()
        .map_err(|e: String| ApiError::bad_param("hold_id", e))?;
    let g = shard_group(state, id.shard).map_err(|e| {
        if e.status == StatusCode::NOT_FOUND {
            ApiError::not_found("unknown_hold", format!("unknown hold {raw}"))
        } else {
            e
        }
    })?;
    Ok((id, g))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfirmBody {
    payment_ref: String,
}

async fn confirm_hold(
    State(state): State<AppState>,
    User(user): User,
    Path(hold_id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<ConfirmBody>,
) -> ApiResult<impl IntoResponse> {
    let key = require_key(&headers)?;
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
    let (effect, outcome) = write(&state, group, session, command).await?;
    match effect {
        Effect::Confirmed(b) => {
            let mut v = booking_json(&b);
            v["applied"] = serde_json::to_value(applied_json(group, outcome.applied))
                .map_err(ApiError::internal)?;
            v["replayed"] = json!(outcome.replayed);
            Ok((StatusCode::CREATED, leader_header(&state, group), Json(v)))
        }
        other => Err(ApiError::internal(format!("confirm produced {other:?}"))),
    }
}

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
    .await?;
    let mut resp = (StatusCode::NO_CONTENT, leader_header(&state, group)).into_response();
    for (name, value) in [
        ("x-boxoffice-shard", group.0.to_string()),
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

async fn get_hold(
    State(state): State<AppState>,
    User(user): User,
    Path(hold_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let (hold_id, group) = parse_hold(&state, &hold_id)?;
    let c = parse_consistency(
        q.get("consistency").map(String::as_str),
        Consistency::Linearizable,
    )?;
    let st = stores(&state, group)?;
    barrier_if(&state, group, c).await?;
    let tx = st.reader.begin_applied();
    let h = tx
        .hold(hold_id)
        .ok_or_else(|| ApiError::not_found("unknown_hold", format!("unknown hold {hold_id}")))?;
    if h.user != user.sub {
        return Err(ApiError::forbidden("this hold belongs to another user"));
    }
    let mut v = serde_json::to_value(&h).map_err(ApiError::internal)?;
    v["expires_at"] = json!(rfc3339_ms(h.expires_at_ms as i64));
    v["freshness"] = freshness_json(group, tx.freshness);
    Ok(Json(v))
}

async fn get_booking(
    State(state): State<AppState>,
    User(user): User,
    Path(booking_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let id: BookingId = booking_id
        .parse()
        .map_err(|e: String| ApiError::bad_param("booking_id", e))?;
    let group = shard_group(&state, id.shard).map_err(|e| {
        if e.status == StatusCode::NOT_FOUND {
            ApiError::not_found("unknown_booking", format!("unknown booking {id}"))
        } else {
            e
        }
    })?;
    let c = parse_consistency(
        q.get("consistency").map(String::as_str),
        Consistency::Linearizable,
    )?;
    let st = stores(&state, group)?;
    barrier_if(&state, group, c).await?;
    let tx = st.reader.begin_applied();
    let b = tx
        .booking(id)
        .ok_or_else(|| ApiError::not_found("unknown_booking", format!("unknown booking {id}")))?;
    if b.user != user.sub {
        return Err(ApiError::forbidden("this booking belongs to another user"));
    }
    let mut v = booking_json(&b);
    v["freshness"] = freshness_json(group, tx.freshness);
    Ok(Json(v))
}

async fn list_bookings(
    State(state): State<AppState>,
    User(user): User,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let c = parse_consistency(
        q.get("consistency").map(String::as_str),
        Consistency::Linearizable,
    )?;
    let shards = state
        .node
        .shards()
        .ok_or_else(|| ApiError::unavailable("not_ready", "the cluster is not bootstrapped yet"))?;
    let max = state.node.config.limits.page_size_max;
    let event = match q.get("event_id") {
        None => None,
        Some(raw) => Some(parse_event_id(raw)?),
    };
    let groups: Vec<GroupId> = match event {
        Some(e) => vec![event_group(&state, e)?],
        None => (1..=shards).map(GroupId).collect(),
    };
    let mut all = Vec::new();
    for g in groups {
        let st = stores(&state, g)?;
        barrier_if(&state, g, c).await?;
        let tx = st.reader.begin_applied();
        // One more than a page, so that a cut is always reported as `truncated`.
        all.extend(tx.user_bookings_where(&user.sub, max + 1, |b| {
            event.is_none_or(|e| b.event_id == e)
        }));
    }
    all.sort_by_key(|b| (b.confirmed_at_ms, b.booking_id));
    let truncated = all.len() > max;
    all.truncate(max);
    let items: Vec<Value> = all.iter().map(booking_json).collect();
    Ok(Json(json!({"bookings": items, "truncated": truncated})))
}

const SEARCH_PARAMS: &[&str] = &[
    "q",
    "from",
    "to",
    "city",
    "category",
    "performer_id",
    "venue_id",
    "lat",
    "lon",
    "radius_km",
    "available_only",
    "sort",
    "page_size",
    "page_token",
];

fn parse_f64_param(
    q: &HashMap<String, String>,
    name: &str,
    lo: f64,
    hi: f64,
) -> ApiResult<Option<f64>> {
    q.get(name)
        .map(|v| match v.parse::<f64>() {
            Ok(x) if x.is_finite() && (lo..=hi).contains(&x) => Ok(x),
            _ => Err(ApiError::bad_param(
                name,
                format!("{name} must be a number between {lo} and {hi}, not {v:?}"),
            )),
        })
        .transpose()
}

fn parse_id_param(q: &HashMap<String, String>, name: &str) -> ApiResult<Option<u64>> {
    q.get(name)
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| ApiError::bad_param(name, format!("{name} must be an id, not {v:?}")))
        })
        .transpose()
}

fn parse_time_param(q: &HashMap<String, String>, name: &str) -> ApiResult<Option<i64>> {
    q.get(name)
        .map(|v| {
            super::parse_rfc3339_ms(v).ok_or_else(|| {
                ApiError::bad_param(name, format!("{name} must be an RFC 3339 time, not {v:?}"))
            })
        })
        .transpose()
}

/// `GET /v1/search`: keyword (typo-tolerant, prefix on the last word), date range,
/// city, category, performer, venue; sorted by relevance or date; paged.
async fn search(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    use crate::search::{SearchRequest, PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX};
    if let Some(unknown) = q.keys().find(|k| !SEARCH_PARAMS.contains(&k.as_str())) {
        return Err(ApiError::bad_param(
            unknown,
            format!(
                "unknown parameter {unknown:?}; known: {}",
                SEARCH_PARAMS.join(", ")
            ),
        ));
    }
    let lat = parse_f64_param(&q, "lat", -90.0, 90.0)?;
    let lon = parse_f64_param(&q, "lon", -180.0, 180.0)?;
    let radius_km = parse_f64_param(&q, "radius_km", 0.0, crate::search::RADIUS_KM_MAX)?;
    let near = match (lat, lon) {
        (Some(la), Some(lo)) => Some((la, lo, radius_km)),
        (Some(_), None) => return Err(ApiError::bad_param("lon", "lat needs lon")),
        (None, Some(_)) => return Err(ApiError::bad_param("lat", "lon needs lat")),
        (None, None) if radius_km.is_some() => {
            return Err(ApiError::bad_param(
                "radius_km",
                "radius_km needs a point: lat and lon",
            ))
        }
        (None, None) => None,
    };
    let available_only = match q.get("available_only").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_param(
                "available_only",
                format!("available_only must be true or false, not {other:?}"),
            ))
        }
    };
    let text = |name: &str| -> ApiResult<Option<String>> {
        match q.get(name) {
            Some(v) if v.len() > boxoffice_raft::command::NAME_LEN_MAX => {
                Err(ApiError::bad_param(name, format!("{name} is too long")))
            }
            Some(v) if v.trim().is_empty() => Ok(None),
            Some(v) => Ok(Some(v.clone())),
            None => Ok(None),
        }
    };
    let from_ms = parse_time_param(&q, "from")?;
    let to_ms = parse_time_param(&q, "to")?;
    if let (Some(f), Some(t)) = (from_ms, to_ms) {
        if t < f {
            return Err(ApiError::bad_param("to", "to is before from"));
        }
    }
    let sort = match q.get("sort").map(String::as_str) {
        None | Some("relevance") => crate::search::Sort::Relevance,
        Some("date") => crate::search::Sort::Date,
        Some("distance") if near.is_some() => crate::search::Sort::Distance,
        Some("distance") => {
            return Err(ApiError::bad_param(
                "sort",
                "sort=distance needs a point: lat and lon",
            ))
        }
        Some(other) => {
            return Err(ApiError::bad_param(
                "sort",
                format!("sort must be relevance, date or distance, not {other:?}"),
            ))
        }
    };
    let page_size = match q.get("page_size") {
        None => PAGE_SIZE_DEFAULT,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=PAGE_SIZE_MAX).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_param(
                    "page_size",
                    format!("page_size must be between 1 and {PAGE_SIZE_MAX}"),
                ))
            }
        },
    };
    let offset = match q.get("page_token") {
        None => 0,
        Some(t) => t
            .strip_prefix("p")
            .and_then(|n| usize::from_str_radix(n, 16).ok())
            .filter(|&n| n <= crate::search::OFFSET_MAX)
            .ok_or_else(|| {
                ApiError::bad_param("page_token", "page_token is not one this API issued")
            })?,
    };
    let req = SearchRequest {
        q: text("q")?,
        from_ms,
        to_ms,
        city: text("city")?,
        category: text("category")?,
        performer_id: parse_id_param(&q, "performer_id")?,
        venue_id: parse_id_param(&q, "venue_id")?,
        available_only,
        near,
        sort,
        page_size,
        offset,
    };
    let index = state
        .node
        .search()
        .ok_or_else(|| ApiError::unavailable("not_ready", "the cluster is not bootstrapped yet"))?;
    if !index.is_ready() {
        return Err(ApiError::unavailable(
            "search_not_ready",
            "the search index is being built; retry shortly",
        ));
    }
    let page = tokio::task::spawn_blocking(move || index.search(&req))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let results: Vec<Value> = page
        .results
        .iter()
        .map(|h| {
            json!({
                "event_id": h.event_id, "name": h.name, "starts_at": rfc3339_ms(h.starts_at_ms), "starts_at_ms": h.starts_at_ms,
                "venue": h.venue, "city": h.city, "category": h.category, "score": h.score,
                "available": h.available, "min_price_cents": h.min_price_cents, "distance_km": h.distance_km,
            })
        })
        .collect();
    let indexed = state
        .node
        .search()
        .map(|s| s.indexed_through())
        .unwrap_or(0);
    let applied = state
        .node
        .stores(GroupId::CATALOGUE)
        .map(|s| s.sm.applied().borrow().index)
        .unwrap_or(0);
    Ok(Json(json!({
        "results": results,
        "total": page.total,
        "next_page_token": page.next_offset.map(|o| format!("p{o:x}")),
        "freshness": {
            "indexed_through_index": indexed,
            "catalogue_applied_index": applied,
            "availability_refresh_ms": crate::search::AVAILABILITY_REFRESH_MS,
        },
    })))
}

/// `GET /v1/events/{id}/seats/stream`: the live seat map as Server-Sent Events.
async fn seat_stream(
    State(state): State<AppState>,
    Path(event_id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<impl IntoResponse> {
    let event_id = parse_event_id(&event_id)?;
    let g = event_group(&state, event_id)?;
    let st = stores(&state, g)?;
    let feed = state.node.feed(g).ok_or_else(|| {
        ApiError::unavailable("not_ready", format!("{g} is not running on this node"))
    })?;
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_last_event_id",
                        "Last-Event-ID must be an id this stream sent",
                    )
                })?,
        ),
    };
    let tx = st.reader.begin_applied();
    check_fresh(&state, g, &tx.freshness, Consistency::Local)?;
    if tx.inventory(event_id).is_none() {
        return Err(
            ApiError::not_found("unknown_event", format!("unknown event {event_id}"))
                .with("event_id", event_id),
        );
    }
    drop(tx);
    let permit = state
        .node
        .streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            ApiError::unavailable(
                "overloaded",
                "too many live seat-map streams on this node; retry shortly",
            )
        })?;
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
    ))
}
