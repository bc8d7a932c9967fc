//! Search: `GET /v1/search`, served by this node's own index (see
//! [`crate::search`]): keywords (typo-tolerant, prefix on the last word), date
//! range, city, category, performer, venue, a point and radius, availability;
//! sorted by relevance, date or distance; paged; facet counts on request.
//! `GET /v1/search/suggest`: type-ahead suggestions of performers, venues and
//! events.

use std::collections::HashMap;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use boxoffice_api::{
    FacetValue, ProblemCode, SearchFacets, SearchFreshness, SearchHit, SearchPage, SuggestPage,
    SEARCH_PARAMS, SUGGEST_PARAMS,
};
use boxoffice_raft::GroupId;

use super::{not_bootstrapped, rfc3339_ms};
use crate::app::{AppState, Params};
use crate::error::{ApiError, ApiResult};

/// Routes of this resource.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/search", get(search))
        .route("/v1/search/suggest", get(suggest))
}

/// This module's operations in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(search, suggest))]
pub struct Doc;

/// Refuses a parameter not in `known`, naming it and the known ones.
fn known_params(q: &HashMap<String, String>, known: &[&str]) -> ApiResult<()> {
    match q.keys().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => Err(ApiError::bad_param(
            unknown,
            format!("unknown parameter {unknown:?}; known: {}", known.join(", ")),
        )),
        None => Ok(()),
    }
}

/// This node's search index, once it has caught up after start-up.
fn ready_index(state: &AppState) -> ApiResult<std::sync::Arc<crate::search::SearchIndex>> {
    let index = state.node.search().ok_or_else(not_bootstrapped)?;
    if !index.is_ready() {
        return Err(ApiError::new(
            ProblemCode::SearchNotReady,
            "the search index is being built; retry shortly",
        ));
    }
    Ok(index)
}

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
#[utoipa::path(get, path = "/v1/search", tag = "search",
    params(
        ("q" = Option<String>, Query, description = "Keywords (the last word also matches as a prefix; typo-tolerant when the words as typed find fewer than 20 events: one edit first, two for words of 5+ letters only if one still finds too few)"),
        ("from" = Option<String>, Query, format = DateTime, description = "Start time lower bound, RFC 3339"),
        ("to" = Option<String>, Query, format = DateTime, description = "Start time upper bound, RFC 3339"),
        ("city" = Option<String>, Query, description = "City (exact, case-insensitive)"),
        ("category" = Option<String>, Query, description = "Category (exact, case-insensitive)"),
        ("performer_id" = Option<u64>, Query, description = "Performer id"),
        ("venue_id" = Option<u64>, Query, description = "Venue id"),
        ("lat" = Option<f64>, Query, minimum = -90, maximum = 90, description = "Near this latitude (with lon)"),
        ("lon" = Option<f64>, Query, minimum = -180, maximum = 180, description = "Near this longitude (with lat)"),
        ("radius_km" = Option<f64>, Query, minimum = 0, description = "Within this distance of lat/lon (default 50)"),
        ("available_only" = Option<bool>, Query, description = "Only events with tickets available"),
        ("sort" = Option<String>, Query, description = "`relevance` (default), `date` or `distance`"),
        ("page_size" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Results per page (default 20)"),
        ("page_token" = Option<String>, Query, description = "`next_page_token` of the previous page"),
        ("facets" = Option<String>, Query, description = "Comma-separated facets to count over every match: `category`, `city`, `month`"),
    ),
    responses((status = 200, body = boxoffice_api::SearchPage), crate::openapi::Problems))]
async fn search(
    State(state): State<AppState>,
    Params(q): Params<HashMap<String, String>>,
) -> ApiResult<Json<SearchPage>> {
    use crate::search::{FacetSet, SearchRequest, PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX};
    known_params(&q, SEARCH_PARAMS)?;
    let facets = match q.get("facets") {
        None => FacetSet::default(),
        Some(list) => FacetSet::parse(list).map_err(|unknown| {
            ApiError::bad_param(
                "facets",
                format!(
                    "unknown facet {unknown:?}; known: {}",
                    FacetSet::NAMES.join(", ")
                ),
            )
        })?,
    };
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
        facets,
    };
    let index = ready_index(&state)?;
    let index_refresh_ms = index.settings.availability_refresh_ms;
    let page = index
        .run(move |i| i.search(&req))
        .await
        .map_err(ApiError::internal)?;
    let results = page
        .results
        .into_iter()
        .map(|h| SearchHit {
            event_id: h.event_id,
            starts_at: rfc3339_ms(h.starts_at_ms),
            starts_at_ms: h.starts_at_ms,
            name: h.name,
            venue: h.venue,
            city: h.city,
            category: h.category,
            score: h.score,
            available: h.available,
            min_price_cents: h.min_price_cents,
            distance_km: h.distance_km,
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
    Ok(Json(SearchPage {
        results,
        total: page.total,
        next_page_token: page.next_offset.map(|o| format!("p{o:x}")),
        facets: page.facets.map(|f| {
            let values = |v: Option<Vec<(String, u64)>>| {
                v.map(|v| {
                    v.into_iter()
                        .map(|(value, count)| FacetValue { value, count })
                        .collect()
                })
            };
            SearchFacets {
                category: values(f.category),
                city: values(f.city),
                month: values(f.month),
            }
        }),
        freshness: SearchFreshness {
            indexed_through_index: indexed,
            catalogue_applied_index: applied,
            availability_refresh_ms: index_refresh_ms,
        },
    }))
}

/// `GET /v1/search/suggest`: suggestions for a partly typed query, as a search
/// box shows them while the user types: performers and venues by name, and
/// upcoming events whose name, performers or venue match; the last word
/// matches as a prefix, and small typos are forgiven. Up to 16 typed
/// characters, events whose name, performer or venue goes on from the typed
/// words in their order come first (an event's own name beginning with them
/// ranks highest).
#[utoipa::path(get, path = "/v1/search/suggest", tag = "search",
    params(
        ("q" = String, Query, description = "What the user has typed so far"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 20, description = "Most suggestions (default 8)"),
    ),
    responses((status = 200, body = boxoffice_api::SuggestPage), crate::openapi::Problems))]
async fn suggest(
    State(state): State<AppState>,
    Params(q): Params<HashMap<String, String>>,
) -> ApiResult<Json<SuggestPage>> {
    use crate::search::suggest::{SUGGEST_LIMIT_DEFAULT, SUGGEST_LIMIT_MAX};
    known_params(&q, SUGGEST_PARAMS)?;
    let text = q
        .get("q")
        .ok_or_else(|| ApiError::bad_param("q", "q is required: what the user has typed"))?
        .clone();
    if text.len() > boxoffice_raft::command::NAME_LEN_MAX {
        return Err(ApiError::bad_param("q", "q is too long"));
    }
    let limit = match q.get("limit") {
        None => SUGGEST_LIMIT_DEFAULT,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=SUGGEST_LIMIT_MAX).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_param(
                    "limit",
                    format!("limit must be between 1 and {SUGGEST_LIMIT_MAX}"),
                ))
            }
        },
    };
    let index = ready_index(&state)?;
    let now = crate::node::now_ms() as i64;
    let found = index
        .run(move |i| i.suggest(&text, limit, now))
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(SuggestPage {
        suggestions: found
            .into_iter()
            .map(|s| boxoffice_api::Suggestion {
                kind: s.kind.as_str().to_string(),
                id: s.id,
                text: s.text,
                starts_at: s.starts_at_ms.map(rfc3339_ms),
                city: s.city,
            })
            .collect(),
    }))
}
