//! Online backups: `GET /admin/v1/groups/{g}/backup` answers the group's state
//! as a snapshot file (`application/octet-stream`), taken from this node's
//! replica after a read barrier, so it holds every write acknowledged before
//! the request came in. `boxoffice ctl backup` fetches every group this way and
//! writes the manifest; `boxoffice ctl restore` puts one into a new cluster.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use boxoffice_api::ProblemCode;
use boxoffice_raft::GroupId;

use crate::app::AppState;
use crate::auth::Admin;
use crate::error::{ApiError, ApiResult};

/// The answer's header naming the log index the backup is at.
pub const BACKUP_INDEX_HEADER: &str = "x-boxoffice-backup-index";

/// Routes of this resource.
pub fn routes() -> Router<AppState> {
    Router::new().route("/admin/v1/groups/{group}/backup", get(backup))
}

/// This module's operations in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(backup))]
pub struct Doc;

/// The group's applied state, after a read barrier, as a snapshot file (the
/// format Raft sends between replicas, with its own checksum). Every write the
/// cluster acknowledged before this request is in it.
#[utoipa::path(get, path = "/admin/v1/groups/{group}/backup", tag = "cluster",
    params(("group" = u16, Path, description = "The group (0 = catalogue)")),
    responses(
        (status = 200, description = "The group's state as a snapshot file",
            content_type = "application/octet-stream", body = Vec<u8>,
            headers(("x-boxoffice-backup-index" = u64, description = "The log index the state is at"))),
        crate::openapi::Problems),
    security(("admin" = [])))]
async fn backup(
    State(state): State<AppState>,
    _: Admin,
    Path(group): Path<String>,
) -> ApiResult<Response> {
    let group = super::parse_group(&group)?;
    let g = GroupId(group);
    let stores = match (state.node.stores(g), state.node.shards()) {
        (Some(st), _) => st,
        // A group of the cluster with no replica here: taken from one that
        // has it (the request is relayed, see `crate::placement::relay`).
        (None, Some(shards)) if group <= shards => return Err(super::not_here(&state, g)),
        (None, _) => {
            return Err(ApiError::new(
                ProblemCode::UnknownGroup,
                format!("no group {group} on this node"),
            ))
        }
    };
    let _permit = state.node.backups.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            ProblemCode::Overloaded,
            "another backup export is running on this node (limits.backup_exports_max); retry shortly",
        )
    })?;
    state.node.read_barrier(g).await?;
    let dir = state.node.config.data_dir.join("backup-exports");
    let path = dir.join(format!("g{group}-{:016x}.snap", rand::random::<u64>()));
    let sm = stores.sm.clone();
    let export_path = path.clone();
    let exported = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(export_path.parent().unwrap_or(&export_path))?;
        let meta = sm.export(&export_path)?;
        let file = std::fs::File::open(&export_path)?;
        let len = file.metadata()?.len();
        Ok::<_, boxoffice_storage::StorageError>((meta, file, len))
    })
    .await
    .map_err(ApiError::internal);
    // The open file keeps its bytes after the name is gone; an export that failed
    // leaves nothing behind either.
    let _ = std::fs::remove_file(&path);
    let (meta, file, len) = exported?.map_err(ApiError::internal)?;
    let index = meta.last_log_id.map(|l| l.index).unwrap_or(0);
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(
        tokio::fs::File::from_std(file),
    ));
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(BACKUP_INDEX_HEADER, HeaderValue::from(index));
    Ok(resp)
}
