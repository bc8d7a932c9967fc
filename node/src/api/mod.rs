//! HTTP handlers, a file per resource; their request and answer types are the
//! `boxoffice-api` crate's.
//!
//! Public (`/v1`, user token): [`events`], [`seats`], [`holds`], [`bookings`],
//! [`payments`] (checkout, the provider's webhook, cancellation), [`search`],
//! [`streams`], and [`batch`] (several writes in one request). Admin (`/admin/v1`, admin token) and health:
//! [`cluster`] (bootstrap, status, membership, snapshots, faults), [`backup`]
//! (a group's state for `boxoffice ctl backup`) and
//! [`catalogue`] (venues, performers, events), [`webhooks`] (the site's
//! outgoing webhooks). Node to node (cluster key):
//! [`internal`].
//!
//! Views are served from this node's replica and say how fresh they are; writes go
//! to the owning group's leader (forwarded if needed). The helpers here are what
//! several resources share: idempotency keys, consistency, freshness, and the
//! write path's mapping of outcomes to answers.

pub mod backup;
pub mod batch;
pub mod bookings;
pub mod catalogue;
pub mod cluster;
pub mod events;
pub mod holds;
pub mod internal;
pub mod payments;
pub mod queue;
pub mod search;
pub mod seats;
pub mod streams;
pub mod webhooks;

use axum::http::HeaderMap;
use axum::Router;
use boxoffice_api::{Consistency, ProblemCode, IDEMPOTENCY_KEY_HEADER, IDEMPOTENCY_KEY_LEN_MAX};
use boxoffice_raft::command::{Applied, Command, Effect, Outcome, Session};
use boxoffice_raft::GroupId;
use boxoffice_storage::read::Freshness;
use serde_json::json;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::node::{now_ms, GroupStores, ProposeError};

/// Routes of the public API (`/v1`) and the health checks.
pub fn public_routes() -> Router<AppState> {
    Router::new()
        .merge(events::routes())
        .merge(seats::routes())
        .merge(holds::routes())
        .merge(bookings::routes())
        .merge(payments::routes())
        .merge(search::routes())
        .merge(streams::routes())
        .merge(queue::routes())
        .merge(cluster::health_routes())
}

/// Routes of the admin API (`/admin/v1`).
pub fn admin_routes() -> Router<AppState> {
    Router::new()
        .merge(cluster::routes())
        .merge(backup::routes())
        .merge(catalogue::routes())
        .merge(payments::admin_routes())
        .merge(webhooks::routes())
        .merge(queue::admin_routes())
        .merge(crate::console::routes())
        // Without a token, for Prometheus; `admin_listen` keeps it off the
        // public listener.
        .route("/metrics", axum::routing::get(crate::metrics::serve))
}

/// The idempotency key of a request, if it sent one; a malformed one is a 400.
pub fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(v) = headers.get(IDEMPOTENCY_KEY_HEADER) else {
        return Ok(None);
    };
    let v = v.to_str().map_err(|_| {
        ApiError::new(
            ProblemCode::InvalidIdempotencyKey,
            "Idempotency-Key must be visible ASCII",
        )
    })?;
    if v.is_empty() || v.len() > IDEMPOTENCY_KEY_LEN_MAX {
        return Err(ApiError::new(
            ProblemCode::InvalidIdempotencyKey,
            format!("Idempotency-Key must be 1..={IDEMPOTENCY_KEY_LEN_MAX} bytes"),
        ));
    }
    Ok(Some(v.to_string()))
}

/// The idempotency key a write must carry.
pub fn require_key(headers: &HeaderMap) -> ApiResult<String> {
    idempotency_key(headers)?.ok_or_else(|| {
        ApiError::new(
            ProblemCode::MissingIdempotencyKey,
            "writes need an Idempotency-Key header (any unique string, reused on retry)",
        )
    })
}

/// Parses `?consistency=`, naming the parameter on error.
pub fn parse_consistency(raw: Option<&str>, default: Consistency) -> ApiResult<Consistency> {
    match raw {
        None => Ok(default),
        Some(s) => s
            .parse()
            .map_err(|e: String| ApiError::bad_param("consistency", e)),
    }
}

/// Parses a group number (0 = catalogue) from a path.
pub fn parse_group(raw: &str) -> ApiResult<u16> {
    raw.parse().map_err(|_| {
        ApiError::bad_param(
            "group",
            format!("group must be an integer from 0 (the catalogue) up, not {raw:?}"),
        )
    })
}

/// Parses a node id from a path.
pub fn parse_node_id(raw: &str) -> ApiResult<u64> {
    raw.parse().map_err(|_| {
        ApiError::bad_param(
            "id",
            format!("node id must be a positive integer, not {raw:?}"),
        )
    })
}

/// Parses an event id from a path.
pub fn parse_event_id(raw: &str) -> ApiResult<u64> {
    raw.parse().map_err(|_| {
        ApiError::bad_param(
            "event_id",
            format!("event id must be a positive integer, not {raw:?}"),
        )
    })
}

impl From<ProposeError> for ApiError {
    fn from(e: ProposeError) -> Self {
        match e {
            ProposeError::NotLeader { group, leader } => ApiError::new(
                ProblemCode::NotLeader,
                format!("no reachable leader for group {group}"),
            )
            // The leader's id only: its address is a cluster address, private.
            .with(
                "leader",
                leader
                    .map(|(id, _)| json!({ "id": id }))
                    .unwrap_or(serde_json::Value::Null),
            ),
            ProposeError::Unknown(d) => ApiError::new(
                ProblemCode::OutcomeUnknown,
                format!("the write may or may not have been applied; retry with the same Idempotency-Key ({d})"),
            ),
            ProposeError::Unavailable(d) => ApiError::new(ProblemCode::Unavailable, d),
            ProposeError::RateLimited {
                limit,
                retry_after_ms,
            } => {
                let mut e = ApiError::new(
                    ProblemCode::RateLimited,
                    format!("over the limit {limit}; retry in {retry_after_ms} ms"),
                )
                .with("limit", limit);
                e.retry_after_s = Some(
                    u32::try_from(retry_after_ms.div_ceil(1000))
                        .unwrap_or(u32::MAX)
                        .max(1),
                );
                e
            }
            ProposeError::NoSuchGroup(g) => ApiError::new(
                ProblemCode::NotReady,
                format!("group {g} is not running on this node; is the cluster bootstrapped?"),
            ),
        }
    }
}

/// Where and when a write was applied, as answers show it.
pub fn applied(group: GroupId, a: Applied) -> boxoffice_api::Applied {
    boxoffice_api::Applied {
        shard: group.0,
        index: a.index,
        time_ms: a.time_ms,
    }
}

/// How fresh a read of `group` is, judged by this node's clock now.
pub fn freshness(group: GroupId, f: Freshness) -> boxoffice_api::Freshness {
    let clock = now_ms();
    boxoffice_api::Freshness {
        shard: group.0,
        applied_index: f.applied_index,
        applied_time_ms: f.applied_time_ms,
        as_of_ms: f.as_of_ms,
        clock_ms: clock,
        lag_ms: clock.saturating_sub(f.applied_time_ms),
    }
}

/// Proposes a command with an exactly-once session and unwraps the effect; a
/// refusal becomes its problem, carrying where it was applied.
pub async fn write(
    state: &AppState,
    group: GroupId,
    session: Session,
    command: Command,
) -> ApiResult<(Effect, Outcome)> {
    let outcome = state.node.propose(group, Some(session), command).await?;
    match &outcome.result {
        Ok(effect) => Ok((effect.clone(), outcome.clone())),
        Err(r) => Err(ApiError::from(r.clone())
            .with(
                "applied",
                serde_json::to_value(applied(group, outcome.applied)).unwrap_or_default(),
            )
            .with("replayed", outcome.replayed)),
    }
}

/// A write's effect was not the one its command makes: a bug (the command was
/// applied, so the caller's write may have taken effect).
pub fn unexpected(what: &str, effect: &Effect) -> ApiError {
    ApiError::internal(format!("{what} produced {effect:?}"))
}

/// The inventory shard numbered `shard`, if the cluster has it.
pub fn shard_group(state: &AppState, shard: u16) -> ApiResult<GroupId> {
    match state.node.shards() {
        None => Err(not_bootstrapped()),
        Some(n) if shard >= 1 && shard <= n => Ok(GroupId(shard)),
        Some(_) => Err(ApiError::new(
            ProblemCode::UnknownShard,
            format!("no shard {shard} in this cluster"),
        )),
    }
}

/// The inventory shard selling `event_id`.
pub fn event_group(state: &AppState, event_id: u64) -> ApiResult<GroupId> {
    state.node.shard_of(event_id).ok_or_else(not_bootstrapped)
}

/// The answer before bootstrap.
pub fn not_bootstrapped() -> ApiError {
    ApiError::new(ProblemCode::NotReady, "the cluster is not bootstrapped yet")
}

/// This node's storage handles of `group`; for a shard this node does not
/// host, `shard_not_here` naming it (a GET is then relayed to a node that
/// hosts it, see `crate::placement::relay`).
pub fn stores(state: &AppState, group: GroupId) -> ApiResult<GroupStores> {
    if let Some(st) = state.node.stores(group) {
        // A replica new here and still behind what this node's relayed reads
        // have already shown is not read: the request goes to another
        // replica, so reads through this node never go back in time.
        if st.sm.applied().borrow().index >= state.node.relay_floor(group) {
            return Ok(st);
        }
    }
    Err(not_here(state, group))
}

/// The answer for a group this node does not run.
pub fn not_here(state: &AppState, group: GroupId) -> ApiError {
    if state.node.shards().is_none() {
        return not_bootstrapped();
    }
    let mut e = ApiError::new(
        ProblemCode::ShardNotHere,
        format!("{group} has no replica on this node, and no node hosting it answered"),
    );
    e.extra.insert("shard".into(), group.0.into());
    e
}

/// A read of `reader`'s applied state that holds `event_id`'s inventory if the
/// shard has it: a replica lacking it may only be behind (the event was just
/// created), so it waits once for the leader's read index and begins again.
/// The caller answers `unknown_event` only if the inventory is still missing.
pub async fn begin_with_event<'a>(
    state: &AppState,
    group: GroupId,
    reader: &'a boxoffice_storage::read::Reader,
    event_id: u64,
) -> ApiResult<boxoffice_storage::read::ReadTx<'a>> {
    let tx = reader.begin_applied();
    if tx.has_inventory(event_id) {
        return Ok(tx);
    }
    drop(tx);
    state.node.read_barrier(group).await?;
    Ok(reader.begin_applied())
}

/// Waits for the leader's read index first when the read must be linearizable.
pub async fn barrier_if(state: &AppState, group: GroupId, c: Consistency) -> ApiResult<()> {
    if c == Consistency::Linearizable {
        state.node.read_barrier(group).await?;
    }
    Ok(())
}

/// Refuses a local read from a replica whose applied time lags its clock by more
/// than `limits.replica_staleness_ms_max` (linearizable reads are exempt: they
/// waited for the leader's read index).
pub fn check_fresh(
    state: &AppState,
    group: GroupId,
    f: &Freshness,
    c: Consistency,
) -> ApiResult<()> {
    let lag_ms = now_ms().saturating_sub(f.applied_time_ms);
    let max = state.node.config.limits.replica_staleness_ms_max;
    if c == Consistency::Local && !state.node.caught_up(group) {
        return Err(ApiError::new(
            ProblemCode::ReplicaStale,
            format!("this replica of {group} has not yet caught up with its leader since it started; retry, ask another node, or use consistency=linearizable"),
        )
        .with("lag_ms", lag_ms)
        .with("shard", group.0));
    }
    if c == Consistency::Local && lag_ms > max {
        return Err(ApiError::new(ProblemCode::ReplicaStale, format!("this replica of {group} is {lag_ms} ms behind (limit {max} ms); retry, ask another node, or use consistency=linearizable"))
            .with("lag_ms", lag_ms)
            .with("shard", group.0));
    }
    Ok(())
}

/// The routing headers of a write's answer: `x-boxoffice-leader: host:port`,
/// the public address of the group's leader as this node knows it after the
/// write, and `x-boxoffice-term`, that leader's term, so that a client can
/// send the group's next writes there directly instead of through a
/// forwarding node (a hint only: any node still takes any write); and
/// `x-boxoffice-shard` with `x-boxoffice-epoch`, the shard's placement epoch
/// in this node's directory. Never a cluster address: a peer's public address
/// is what it names on its answers to this node (see
/// `boxoffice_raft::network::PUBLIC_ADDR_HEADER`); none known, no leader header.
pub fn leader_header(state: &AppState, group: GroupId) -> HeaderMap {
    let mut h = HeaderMap::new();
    let public = state.node.leader_of(group).and_then(|(id, peer_addr)| {
        if id == state.node.id() {
            Some(state.node.config.advertised())
        } else {
            state.node.rpc.public_addr(&peer_addr)
        }
    });
    if let Some(v) = public.and_then(|a| a.parse().ok()) {
        h.insert(boxoffice_api::LEADER_HEADER, v);
        if let Some(raft) = state.node.groups.get(group) {
            let term = raft.metrics().borrow().current_term;
            h.insert(boxoffice_api::TERM_HEADER, term.into());
        }
    }
    h.insert(boxoffice_api::SHARD_HEADER, group.0.into());
    if let Some(p) = state.node.directory().groups.get(&group.0) {
        h.insert(boxoffice_api::EPOCH_HEADER, p.epoch.into());
    }
    h
}

/// A JSON response serialized straight into a buffer of about `size_hint` bytes
/// (large seat maps would otherwise grow their buffer a dozen times).
pub fn json_sized<T: serde::Serialize>(
    body: &T,
    size_hint: usize,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let mut buf = Vec::with_capacity(size_hint + 512);
    serde_json::to_writer(&mut buf, body).map_err(ApiError::internal)?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        buf,
    )
        .into_response())
}

/// RFC 3339 rendering of ms since the Unix epoch.
pub fn rfc3339_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Parses an RFC 3339 time into ms since the Unix epoch.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}
