//! HTTP handlers: [`public`] (`/v1`), [`admin`] (`/admin/v1`, health), and
//! [`internal`] (node-to-node, cluster key).

pub mod admin;
pub mod internal;
pub mod public;

use axum::http::HeaderMap;
use boxoffice_raft::command::{
    Applied, Command, Effect, Outcome, Session, IDEMPOTENCY_KEY_LEN_MAX,
};
use boxoffice_raft::GroupId;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::node::ProposeError;

/// Header carrying the client's idempotency key.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// The idempotency key of a request, if it sent one; a malformed one is a 400.
pub fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(v) = headers.get(IDEMPOTENCY_KEY_HEADER) else {
        return Ok(None);
    };
    let v = v.to_str().map_err(|_| {
        ApiError::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key must be visible ASCII",
        )
    })?;
    if v.is_empty() || v.len() > IDEMPOTENCY_KEY_LEN_MAX {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            format!("Idempotency-Key must be 1..={IDEMPOTENCY_KEY_LEN_MAX} bytes"),
        ));
    }
    Ok(Some(v.to_string()))
}

/// Read consistency asked for by `?consistency=`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// From this replica's applied state (default for views).
    #[default]
    Local,
    /// After a read index from the leader.
    Linearizable,
}

/// Parses `consistency`, naming the parameter on error.
pub fn parse_consistency(raw: Option<&str>, default: Consistency) -> ApiResult<Consistency> {
    match raw {
        None => Ok(default),
        Some("local") => Ok(Consistency::Local),
        Some("linearizable") => Ok(Consistency::Linearizable),
        Some(other) => Err(ApiError::bad_param(
            "consistency",
            format!("consistency must be local or linearizable, not {other:?}"),
        )),
    }
}

impl From<ProposeError> for ApiError {
    fn from(e: ProposeError) -> Self {
        match e {
            ProposeError::NotLeader { group, leader } => ApiError::unavailable("not_leader", format!("no reachable leader for group {group}"))
                .with("leader", leader.map(|(id, addr)| json!({"id": id, "addr": addr})).unwrap_or(serde_json::Value::Null)),
            ProposeError::Unknown(d) => ApiError::unavailable(
                "outcome_unknown",
                format!("the write may or may not have been applied; retry with the same Idempotency-Key ({d})"),
            ),
            ProposeError::Unavailable(d) => ApiError::unavailable("unavailable", d),
            ProposeError::NoSuchGroup(g) => ApiError::unavailable("not_ready", format!("group {g} is not running on this node; is the cluster bootstrapped?")),
        }
    }
}

/// Where and when a write was applied, as shown in write responses.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct AppliedJson {
    /// Group id (0 = catalogue, 1.. = inventory shard).
    pub shard: u16,
    /// Log index.
    pub index: u64,
    /// State-machine time in ms.
    pub time_ms: u64,
}

/// Builds [`AppliedJson`].
pub fn applied_json(group: GroupId, a: Applied) -> AppliedJson {
    AppliedJson {
        shard: group.0,
        index: a.index,
        time_ms: a.time_ms,
    }
}

/// Proposes a command with an exactly-once session and unwraps the effect.
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
                serde_json::to_value(applied_json(group, outcome.applied)).unwrap_or_default(),
            )
            .with("replayed", outcome.replayed)),
    }
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
