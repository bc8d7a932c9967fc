//! The request id: given by a client in `x-request-id` or made up at the
//! node's edge, carried by the task that serves the request (a task-local),
//! sent on with every node-to-node call that task makes, and named in the
//! spans, so every log line about a request names it on every node it touched.

use std::future::Future;
use std::sync::Arc;

/// The header that carries a request id, in client requests, their answers,
/// and node-to-node calls.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest request id accepted from a client; a longer or odd one is replaced.
pub const REQUEST_ID_LEN_MAX: usize = 64;

tokio::task_local! {
    static CURRENT: Arc<str>;
}

/// `id` if it is fit to log and pass on: 1 to [`REQUEST_ID_LEN_MAX`] ASCII
/// letters, digits and `-_.:`.
pub fn accept(id: &str) -> Option<Arc<str>> {
    let ok = !id.is_empty()
        && id.len() <= REQUEST_ID_LEN_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    ok.then(|| id.into())
}

/// Runs `f` with `id` as the current request id.
pub async fn scope<F: Future>(id: Arc<str>, f: F) -> F::Output {
    CURRENT.scope(id, f).await
}

/// The request id of the task running now, if it serves one.
pub fn current() -> Option<Arc<str>> {
    CURRENT.try_with(Arc::clone).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_short_ids_are_accepted() {
        assert_eq!(accept("req-1_a.b:c").as_deref(), Some("req-1_a.b:c"));
        assert!(accept("").is_none());
        assert!(accept("has space").is_none());
        assert!(accept("new\nline").is_none());
        assert!(accept(&"x".repeat(REQUEST_ID_LEN_MAX + 1)).is_none());
        assert!(accept(&"x".repeat(REQUEST_ID_LEN_MAX)).is_some());
    }

    #[tokio::test]
    async fn the_id_is_current_inside_its_scope_only() {
        assert!(current().is_none());
        let seen = scope("r-1".into(), async { current() }).await;
        assert_eq!(seen.as_deref(), Some("r-1"));
        assert!(current().is_none());
    }
}
