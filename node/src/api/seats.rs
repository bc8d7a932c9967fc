//! Seat maps: `GET /v1/events/{id}/seats`, seat by seat or (`?view=rows`) one
//! status string per row, the whole event or (`?section=S`) one section, from
//! this node's replica of the event's shard.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::Router;
use boxoffice_api::{Consistency, ProblemCode, Seat, SeatMap, SeatRow, SeatRows, SeatStatus};
use boxoffice_raft::GroupId;
use boxoffice_storage::read::{ReadTx, SeatCounts};
use boxoffice_storage::records;
use serde::Deserialize;

use super::{
    barrier_if, begin_with_event, check_fresh, event_group, freshness, json_sized,
    parse_consistency, parse_event_id, stores,
};
use crate::app::{AppState, Params};
use crate::error::{ApiError, ApiResult};

/// Routes of this resource.
pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/events/{event_id}/seats", get(get_seats))
}

/// This module's operations in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(get_seats))]
pub struct Doc;

/// A stored seat status as the API shows it.
pub fn status(s: records::SeatStatus) -> SeatStatus {
    match s {
        records::SeatStatus::Available => SeatStatus::Available,
        records::SeatStatus::Held => SeatStatus::Held,
        records::SeatStatus::Sold => SeatStatus::Sold,
    }
}

fn counts(c: SeatCounts) -> boxoffice_api::SeatCounts {
    boxoffice_api::SeatCounts {
        event_id: c.event_id,
        general_admission: c.general_admission,
        capacity: c.capacity,
        available: c.available,
        held: c.held,
        sold: c.sold,
        price_cents: c.price_cents,
        hold_ttl_ms: c.hold_ttl_ms,
        per_user_cap: c.per_user_cap,
    }
}

/// The seat map of `event_id` in `group` (only `section`'s seats when given; the
/// counts are always the event's), or `None` for an unknown event. Section and
/// row names are shared: one allocation per section and row, not per seat.
pub fn seat_map(
    tx: &ReadTx<'_>,
    group: GroupId,
    event_id: u64,
    section: Option<&str>,
) -> Option<SeatMap> {
    let inv = tx.inventory(event_id)?;
    let mut seats = Vec::new();
    let mut names: Option<(Arc<str>, Arc<str>)> = None;
    tx.walk_seats(event_id, &inv, section, &mut |s, r, seat| {
        // A walk meets a section's rows and a row's seats one after another.
        let (sec, row) = match names.take() {
            Some((sec, row)) if *sec == *s.name && *row == *r.name => (sec, row),
            Some((sec, _)) if *sec == *s.name => (sec, Arc::from(r.name.as_str())),
            _ => (Arc::from(s.name.as_str()), Arc::from(r.name.as_str())),
        };
        seats.push(Seat {
            seat_id: seat.seat_id,
            section: sec.clone(),
            row: row.clone(),
            number: seat.number,
            price_cents: r.price_cents,
            status: status(seat.status),
            held_until_ms: seat.held_until_ms,
        });
        names = Some((sec, row));
    });
    Some(SeatMap {
        counts: counts(tx.counts(&inv)),
        seats,
        freshness: freshness(group, tx.freshness),
    })
}

/// The compact seat map of `event_id` (see [`SeatRows`]), only `section`'s rows
/// when given; the counts are always the event's.
pub fn seat_rows(
    tx: &ReadTx<'_>,
    group: GroupId,
    event_id: u64,
    section: Option<&str>,
) -> Option<SeatRows> {
    let inv = tx.inventory(event_id)?;
    let mut rows: Vec<SeatRow> = Vec::new();
    tx.walk_seats(event_id, &inv, section, &mut |s, r, seat| {
        if seat.number == 1 {
            let sec = match rows.last() {
                Some(last) if *last.section == *s.name => last.section.clone(),
                _ => Arc::from(s.name.as_str()),
            };
            rows.push(SeatRow {
                section: sec,
                row: Arc::from(r.name.as_str()),
                first_seat_id: seat.seat_id,
                price_cents: r.price_cents,
                status: String::with_capacity(r.seats as usize),
            });
        }
        if let Some(row) = rows.last_mut() {
            row.status.push(status(seat.status).code());
        }
    });
    Some(SeatRows {
        counts: counts(tx.counts(&inv)),
        rows,
        freshness: freshness(group, tx.freshness),
    })
}

/// Query of `GET /v1/events/{id}/seats`.
#[derive(Deserialize)]
struct SeatsQuery {
    consistency: Option<String>,
    view: Option<String>,
    section: Option<String>,
}

#[utoipa::path(get, path = "/v1/events/{event_id}/seats", tag = "events",
    params(
        ("event_id" = u64, Path, description = "The event"), ("consistency" = Option<boxoffice_api::Consistency>, Query, description = "`local` (default: this replica, says how fresh) or `linearizable` (after a read index)"),
        ("view" = Option<crate::openapi::SeatView>, Query, description = "`rows`: one status string per row instead of a seat list"),
        ("section" = Option<String>, Query, description = "Only this section"),
    ),
    responses((status = 200, body = crate::openapi::SeatsAnswer), crate::openapi::Problems))]
async fn get_seats(
    State(state): State<AppState>,
    Path(event_id): Path<String>,
    Params(q): Params<SeatsQuery>,
) -> ApiResult<axum::response::Response> {
    let event_id = parse_event_id(&event_id)?;
    let c = parse_consistency(q.consistency.as_deref(), Consistency::Local)?;
    // `?view=rows`: the compact map, one status string per row.
    let rows = match q.view.as_deref() {
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
    let tx = match c {
        Consistency::Local => begin_with_event(&state, g, &st.reader, event_id).await?,
        Consistency::Linearizable => st.reader.begin_applied(),
    };
    check_fresh(&state, g, &tx.freshness, c)?;
    let unknown_event = || {
        ApiError::new(
            ProblemCode::UnknownEvent,
            format!("unknown event {event_id}"),
        )
        .with("event_id", event_id)
    };
    // `?section=S`: only that section's seats (the counts stay the event's), so a
    // front end can draw one section of a large venue without the whole map.
    let section = q.section.as_deref();
    let unknown_section = |section: &str| {
        ApiError::new(
            ProblemCode::UnknownSection,
            format!("event {event_id} has no section {section:?}"),
        )
        .with("event_id", event_id)
    };
    if rows {
        let map = seat_rows(&tx, g, event_id, section).ok_or_else(unknown_event)?;
        if let Some(section) = section.filter(|_| map.rows.is_empty()) {
            return Err(unknown_section(section));
        }
        let size = map.rows.iter().map(|r| r.status.len() + 96).sum::<usize>();
        json_sized(&map, size)
    } else {
        let map = seat_map(&tx, g, event_id, section).ok_or_else(unknown_event)?;
        if let Some(section) = section.filter(|_| map.seats.is_empty()) {
            return Err(unknown_section(section));
        }
        json_sized(&map, map.seats.len() * 112)
    }
}
