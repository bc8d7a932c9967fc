//! One keep-alive HTTP/1.1 connection owned by one load task, without a pool.
//!
//! The load generator shares the machine's two cores with the nodes it drives,
//! so what it spends per request is taken from them. reqwest's pooled client
//! (pool lookup, checkout and return, redirect and timeout layers, a boxed body)
//! costs a few tens of microseconds of CPU per request; a task that keeps its
//! own connection and sends on it directly with hyper does the same exchange for
//! less. The nodes see the same requests either way: keep-alive HTTP/1.1, one
//! request at a time per connection.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How long connecting, or one exchange, may take before it counts as failed
/// (the same bound the bench's reqwest clients have).
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(20);

/// A connection to one node, opened on first use and again after a failure.
pub struct Conn {
    /// `host:port`.
    authority: String,
    sender: Option<SendRequest<Empty<Bytes>>>,
}

impl Conn {
    /// A connection to `url` (`http://host:port`), not opened yet.
    pub fn new(url: &str) -> Conn {
        let authority = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        Conn {
            authority,
            sender: None,
        }
    }

    async fn sender(&mut self) -> Result<&mut SendRequest<Empty<Bytes>>, String> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream =
                tokio::time::timeout(EXCHANGE_TIMEOUT, TcpStream::connect(&self.authority))
                    .await
                    .map_err(|_| format!("connecting to {}: timed out", self.authority))?
                    .map_err(|e| format!("connecting to {}: {e}", self.authority))?;
            let _ = stream.set_nodelay(true);
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| format!("HTTP handshake with {}: {e}", self.authority))?;
            // The connection task ends when the sender is dropped or the peer closes.
            tokio::spawn(conn);
            self.sender = Some(sender);
        }
        // Set just above when it was missing or closed.
        self.sender
            .as_mut()
            .ok_or_else(|| format!("no connection to {}", self.authority))
    }

    /// Sends a bodiless `method` request for `path` with `bearer` as its token
    /// and reads the whole answer. On any failure the connection is dropped, so
    /// the next call opens a new one.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        bearer: &str,
    ) -> Result<(StatusCode, Bytes), String> {
        let authority = self.authority.clone();
        let result = tokio::time::timeout(EXCHANGE_TIMEOUT, async {
            let sender = self.sender().await?;
            sender
                .ready()
                .await
                .map_err(|e| format!("{authority}: {e}"))?;
            let req = Request::builder()
                .method(method)
                .uri(path)
                .header(hyper::header::HOST, &authority)
                .header(hyper::header::AUTHORIZATION, format!("Bearer {bearer}"))
                .body(Empty::new())
                .map_err(|e| format!("building the request: {e}"))?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| format!("{authority}: {e}"))?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("{authority}: reading the answer: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, body))
        })
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "{authority}: no answer within {EXCHANGE_TIMEOUT:?}"
            ))
        });
        if result.is_err() {
            self.sender = None;
        }
        result
    }
}
