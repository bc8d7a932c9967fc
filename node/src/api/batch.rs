//! `POST /v1/batch`: several writes in one HTTP request (see
//! [`boxoffice_api::batch`] for the contract).
//!
//! Each write in a batch becomes the HTTP request it stands for and goes
//! through the public router itself: the same per-address and per-user limits,
//! token check, in-flight bound, timeout, handler and answer as if it had come
//! alone. The batch is checked whole before any of its writes runs; then they
//! run concurrently, so that the writes for one shard join its next log entry.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use boxoffice_api::{BatchRequest, BatchedRequest, ProblemCode, BATCH_PATH, BATCH_REQUEST_HEADERS};
use tower::ServiceExt;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};

/// The router a batch's writes go through: the public router without the
/// batch route (so a batch cannot hold a batch).
#[derive(Clone)]
pub struct BatchTarget(pub Router);

/// Paths under `/v1/` that may not be in a batch, and why: the provider's
/// webhook is signed over its own raw body, streams do not end.
const NOT_BATCHED: [&str; 2] = ["/v1/payments/webhook", "/stream"];

/// Largest answer body of one write kept for the batch's answer: a write's
/// answer is a hold, a booking or a problem, a few hundred bytes.
const ANSWER_BYTES_MAX: usize = 64 * 1024;

/// `POST /v1/batch`.
/// This module's operations in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(run))]
pub struct Doc;

#[utoipa::path(post, path = "/v1/batch", tag = "holds",
    request_body = boxoffice_api::BatchRequest,
    responses((status = 200, description = "Every write's own answer, in order", body = boxoffice_api::BatchAnswer), crate::openapi::Problems))]
pub async fn run(
    State(state): State<AppState>,
    Extension(BatchTarget(router)): Extension<BatchTarget>,
    req: Request,
) -> ApiResult<Response> {
    let limits = &state.node.config.limits;
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, limits.body_bytes_max)
        .await
        .map_err(|_| {
            ApiError::new(
                ProblemCode::BodyTooLarge,
                "batch body is larger than limits.body_bytes_max",
            )
        })?;
    let batch: BatchRequest = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(ProblemCode::MalformedJson, format!("request body: {e}")))?;
    if batch.requests.is_empty() {
        return Err(ApiError::bad_param(
            "requests",
            "a batch holds at least one write",
        ));
    }
    if batch.requests.len() > limits.batch_requests_max {
        return Err(ApiError::bad_param(
            "requests",
            format!(
                "a batch holds at most {} writes (limits.batch_requests_max)",
                limits.batch_requests_max
            ),
        ));
    }
    // The batch's own client address reaches every write in it, so that the
    // per-address limits count each write.
    let connect = parts
        .extensions
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .cloned();
    let forwarded: Option<(HeaderName, HeaderValue)> = state
        .node
        .config
        .rate_limits
        .client_address_header
        .as_deref()
        .and_then(|h| {
            let name = HeaderName::try_from(h).ok()?;
            let value = parts.headers.get(&name)?.clone();
            Some((name, value))
        });
    let mut requests = Vec::with_capacity(batch.requests.len());
    for (i, item) in batch.requests.into_iter().enumerate() {
        let mut req = request_of(i, item, limits.body_bytes_max)?;
        if let Some(c) = &connect {
            req.extensions_mut().insert(c.clone());
        }
        if let Some((name, value)) = &forwarded {
            req.headers_mut().insert(name.clone(), value.clone());
        }
        requests.push(req);
    }
    let answers = futures::future::join_all(
        requests
            .into_iter()
            .map(|req| answer_of(router.clone().oneshot(req))),
    )
    .await;
    Ok(batch_answer(&answers))
}

/// The HTTP request write `i` of a batch stands for, checked.
fn request_of(i: usize, item: BatchedRequest, body_bytes_max: usize) -> ApiResult<Request> {
    let refuse = |detail: String| {
        ApiError::new(
            ProblemCode::InvalidInput,
            format!("requests[{i}]: {detail}"),
        )
        .with("request", i)
    };
    let method = match item.method.as_str() {
        "POST" => Method::POST,
        "PUT" => Method::PUT,
        "DELETE" => Method::DELETE,
        other => {
            return Err(refuse(format!(
                "method {other:?}: a batch holds writes only (POST, PUT, DELETE)"
            )))
        }
    };
    let path_only = item.path.split('?').next().unwrap_or_default();
    if !path_only.starts_with("/v1/")
        || path_only == BATCH_PATH
        || NOT_BATCHED.iter().any(|p| path_only.contains(p))
    {
        return Err(refuse(format!(
            "path {:?}: a batch holds writes of the public API (/v1/...), not batches, streams or the provider's webhook",
            item.path
        )));
    }
    let uri: Uri = item
        .path
        .parse()
        .map_err(|e| refuse(format!("path {:?}: {e}", item.path)))?;
    let mut builder = Request::builder().method(method).uri(uri);
    for (name, value) in &item.headers {
        let lower = name.to_ascii_lowercase();
        if !BATCH_REQUEST_HEADERS.contains(&lower.as_str()) {
            return Err(refuse(format!(
                "header {name:?}: a write in a batch may carry only {}",
                BATCH_REQUEST_HEADERS.join(", ")
            )));
        }
        let value = HeaderValue::from_str(value)
            .map_err(|_| refuse(format!("header {name:?}: not a valid header value")))?;
        builder = builder.header(lower, value);
    }
    let body = match item.body {
        Some(raw) => {
            let text = raw.get();
            if text.len() > body_bytes_max {
                return Err(refuse(
                    "body is larger than limits.body_bytes_max".to_string(),
                ));
            }
            builder = builder.header("content-type", "application/json");
            Body::from(String::from(Box::<str>::from(raw)))
        }
        None => Body::empty(),
    };
    builder
        .body(body)
        .map_err(|e| refuse(format!("not a valid request: {e}")))
}

/// One write's answer, ready to be written into the batch's answer.
struct Answered {
    status: u16,
    headers: BTreeMap<String, String>,
    /// JSON (the answer's own bytes when it says it is JSON), or empty.
    body: axum::body::Bytes,
}

/// What one write's answer becomes in the batch's answer.
async fn answer_of(
    answer: impl std::future::Future<Output = Result<Response, std::convert::Infallible>>,
) -> Answered {
    let resp = match answer.await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let (parts, body) = resp.into_parts();
    let mut headers = BTreeMap::new();
    for (name, value) in &parts.headers {
        let n = name.as_str();
        let kept = (n.starts_with("x-boxoffice-") && n != boxoffice_api::NODE_HEADER)
            || n == "retry-after"
            || n == "location";
        if let (true, Ok(v)) = (kept, value.to_str()) {
            headers.insert(n.to_string(), v.to_string());
        }
    }
    // Every answer of the API is JSON (answer types and problems); anything
    // else is carried as a JSON string of its text.
    let json = parts
        .headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.starts_with("application/json") || v.starts_with("application/problem+json")
        });
    match axum::body::to_bytes(body, ANSWER_BYTES_MAX).await {
        Ok(b) => Answered {
            status: parts.status.as_u16(),
            headers,
            body: if json || b.is_empty() {
                b
            } else {
                serde_json::to_vec(&String::from_utf8_lossy(&b))
                    .unwrap_or_default()
                    .into()
            },
        },
        Err(e) => {
            // The write ran (or may have): its outcome is not known to the caller.
            tracing::error!(error = %e, "a write's answer in a batch could not be read");
            let problem = boxoffice_api::Problem::new(
                ProblemCode::Internal,
                "internal error; see the node's log",
            );
            Answered {
                status: ProblemCode::Internal.status(),
                headers: BTreeMap::new(),
                body: serde_json::to_vec(&problem).unwrap_or_default().into(),
            }
        }
    }
}

/// The batch's answer ([`boxoffice_api::BatchAnswer`]), written straight from
/// the answers' own bytes rather than parsed and written again.
fn batch_answer(answers: &[Answered]) -> Response {
    let mut out = Vec::with_capacity(answers.iter().map(|a| a.body.len() + 96).sum::<usize>() + 16);
    out.extend_from_slice(b"{\"responses\":[");
    for (i, a) in answers.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(format!("{{\"status\":{},\"headers\":", a.status).as_bytes());
        // A map of strings always serializes.
        serde_json::to_writer(&mut out, &a.headers).unwrap_or_default();
        out.extend_from_slice(b",\"body\":");
        if a.body.is_empty() {
            out.extend_from_slice(b"null");
        } else {
            out.extend_from_slice(&a.body);
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        out,
    )
        .into_response()
}
