//! The user's place in a waiting room, live: `GET
//! /v1/events/{id}/queue/me/stream` (Server-Sent Events) with reconnection.
//!
//! Every event is the whole [`QueuePlace`], so a stream that reconnects (to
//! the next node, when one dies) starts again from the place as that node's
//! replica has it: nothing is lost by missing events in between.

use crate::{Client, Error, QueuePlace, StreamEventKind, STREAM_IDLE_TIMEOUT};

/// A live stream of the caller's place in an event's queue.
pub struct QueueStream {
    client: Client,
    event_id: u64,
    resp: Option<reqwest::Response>,
    buf: String,
    /// Reconnections made so far.
    pub reconnects: u64,
}

impl Client {
    /// Opens the live stream of the caller's place in `event_id`'s queue.
    pub async fn queue_stream(&self, event_id: u64) -> Result<QueueStream, Error> {
        let mut s = QueueStream {
            client: self.clone(),
            event_id,
            resp: None,
            buf: String::new(),
            reconnects: 0,
        };
        s.connect().await?;
        Ok(s)
    }
}

impl QueueStream {
    async fn connect(&mut self) -> Result<(), Error> {
        let path = format!("/v1/events/{}/queue/me/stream", self.event_id);
        self.resp = Some(crate::seat_stream::open_sse(&self.client, &path, None).await?);
        self.buf.clear();
        Ok(())
    }

    /// The place as it is now (first) or as it next changes.
    pub async fn next(&mut self) -> Result<QueuePlace, Error> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (kind, data) = crate::seat_stream::sse_fields(&block);
                match StreamEventKind::parse(kind) {
                    Some(StreamEventKind::Place) if !data.is_empty() => {
                        return serde_json::from_str(&data)
                            .map_err(|e| Error::Decode(format!("place event: {e}")));
                    }
                    Some(StreamEventKind::Reset) => self.resp = None,
                    _ => {}
                }
                continue;
            }
            let Some(resp) = self.resp.as_mut() else {
                self.resp = None;
                self.reconnects += 1;
                let (i, _) = self.client.current_node();
                self.client.move_past(i);
                self.connect().await?;
                continue;
            };
            match tokio::time::timeout(STREAM_IDLE_TIMEOUT, resp.chunk()).await {
                Ok(Ok(Some(bytes))) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                _ => self.resp = None,
            }
        }
    }
}
