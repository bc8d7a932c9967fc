//! The live seat map: `GET /v1/events/{id}/seats/stream` (Server-Sent Events) with
//! transparent reconnection.
//!
//! [`SeatStream::next`] yields the current seat map first, then every seat change
//! as the answering node applies it, and expiries at their instant. When the
//! connection ends, the node drops a slow consumer (`reset`), or a node dies, the
//! stream reconnects — to the next node if need be — with `Last-Event-ID`, so no
//! change is missed or repeated; if the node can no longer replay from there it
//! starts over with a fresh [`StreamEvent::Snapshot`].

use std::time::Duration;

use crate::{
    Client, Error, Problem, SeatChange, SeatMap, SeatsExpired, StreamError, StreamEventKind,
    StreamSnapshot,
};

/// Longest a stream may stay silent (the node sends keep-alives every 15 s)
/// before it is treated as dead and reconnected.
pub const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(45);

/// What a live seat-map stream delivers.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    /// The whole seat map, at the start and after a reconnect that could not resume.
    Snapshot(SeatMap),
    /// A change, once, in log order.
    Change(SeatChange),
    /// A hold's tickets became available because it expired.
    Expired(SeatsExpired),
}

/// A live seat-map stream; see the module docs.
pub struct SeatStream {
    client: Client,
    event_id: u64,
    last_id: Option<u64>,
    resp: Option<reqwest::Response>,
    buf: String,
    /// Reconnections made so far.
    pub reconnects: u64,
}

impl Client {
    /// Opens the live seat map of an event, resuming after `last_event_id` if given.
    pub async fn seat_stream(
        &self,
        event_id: u64,
        last_event_id: Option<u64>,
    ) -> Result<SeatStream, Error> {
        let mut s = SeatStream {
            client: self.clone(),
            event_id,
            last_id: last_event_id,
            resp: None,
            buf: String::new(),
            reconnects: 0,
        };
        s.connect().await?;
        Ok(s)
    }
}

/// Opens the SSE stream at `path` on the current node, moving on to the next
/// (with the client's back-off) until one answers or the attempts run out; a
/// client error other than 429 is the answer.
pub(crate) async fn open_sse(
    client: &Client,
    path: &str,
    last_id: Option<u64>,
) -> Result<reqwest::Response, Error> {
    let cfg = &client.inner.config;
    let mut last = String::new();
    for attempt in 0..cfg.attempts_max {
        let (i, node) = client.current_node();
        let mut req = client
            .inner
            .http
            .get(format!("{node}{path}"))
            .bearer_auth(&cfg.token)
            // The stream is long-lived: no whole-request timeout.
            .timeout(Duration::from_secs(365 * 24 * 3600));
        if let Some(id) = last_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => return Ok(r),
            Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => {
                return Err(crate::problem_of(r).await);
            }
            Ok(r) => last = format!("{node}: {}", r.status()),
            Err(e) => last = format!("{node}: {e}"),
        }
        client.move_past(i);
        if attempt + 1 < cfg.attempts_max {
            client.back_off(attempt, None).await;
        }
    }
    Err(Error::Unavailable {
        attempts: cfg.attempts_max,
        last,
    })
}

/// The `event:` name (default `message`) and the `data:` of one SSE block.
pub(crate) fn sse_fields(block: &str) -> (&str, String) {
    let (mut kind, mut data) = ("message", String::new());
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            kind = v.trim();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim_start());
        }
    }
    (kind, data)
}

impl SeatStream {
    /// The position to resume from: the SSE id of the last delivered event
    /// (`shard << 48 | (log index x 1024 + position within the entry)`; opaque,
    /// increasing).
    pub fn last_event_id(&self) -> Option<u64> {
        self.last_id
    }

    async fn connect(&mut self) -> Result<(), Error> {
        let path = format!("/v1/events/{}/seats/stream", self.event_id);
        self.resp = Some(open_sse(&self.client, &path, self.last_id).await?);
        self.buf.clear();
        Ok(())
    }

    /// Reconnects after the current connection failed or was reset.
    async fn reconnect(&mut self) -> Result<(), Error> {
        self.resp = None;
        self.reconnects += 1;
        let (i, _) = self.client.current_node();
        self.client.move_past(i);
        self.connect().await
    }

    /// The next event. Errors only when no node can be reached after the
    /// configured attempts, or the event does not exist.
    pub async fn next(&mut self) -> Result<StreamEvent, Error> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                if let Some(e) = self.parse(&block)? {
                    return Ok(e);
                }
                continue;
            }
            let Some(resp) = self.resp.as_mut() else {
                self.reconnect().await?;
                continue;
            };
            match tokio::time::timeout(STREAM_IDLE_TIMEOUT, resp.chunk()).await {
                Ok(Ok(Some(bytes))) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                // Ended, failed or silent: resume elsewhere.
                _ => self.reconnect().await?,
            }
        }
    }

    fn parse(&mut self, block: &str) -> Result<Option<StreamEvent>, Error> {
        let (kind, data) = sse_fields(block);
        let id = block
            .lines()
            .find_map(|l| l.strip_prefix("id:"))
            .and_then(|v| v.trim().parse::<u64>().ok());
        if data.is_empty() {
            return Ok(None); // keep-alive comment
        }
        let decode = |e: serde_json::Error| Error::Decode(format!("{kind} event: {e}"));
        let event = match StreamEventKind::parse(kind) {
            Some(StreamEventKind::Snapshot) => {
                let mut v: serde_json::Value = serde_json::from_str(&data).map_err(decode)?;
                // Nodes of earlier releases put the freshness beside the seat map
                // only, without the shard: give the map its own.
                if v["freshness"].get("shard").is_none() {
                    v["freshness"]["shard"] = v["shard"].clone();
                }
                if v["seat_map"].get("freshness").is_none() {
                    v["seat_map"]["freshness"] = v["freshness"].clone();
                }
                let s: StreamSnapshot = serde_json::from_value(v).map_err(decode)?;
                StreamEvent::Snapshot(s.seat_map)
            }
            Some(StreamEventKind::Change) => {
                StreamEvent::Change(serde_json::from_str(&data).map_err(decode)?)
            }
            Some(StreamEventKind::Expired) => {
                StreamEvent::Expired(serde_json::from_str(&data).map_err(decode)?)
            }
            Some(StreamEventKind::Reset) => {
                // The node dropped us (too slow, or its replica was replaced):
                // resume from the last delivered change.
                self.resp = None;
                return Ok(None);
            }
            Some(StreamEventKind::Error) => {
                let e: StreamError = serde_json::from_str(&data).map_err(decode)?;
                let mut p = Problem::new(e.code, format!("stream of event {}", e.event_id));
                p.extra.insert("event_id".into(), e.event_id.into());
                return Err(Error::Api(Box::new(p)));
            }
            // A kind this version does not know (or another stream's): skip it.
            Some(StreamEventKind::Place) | None => return Ok(None),
        };
        if id.is_some() {
            self.last_id = id;
        }
        Ok(Some(event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClientConfig;

    fn stream() -> SeatStream {
        SeatStream {
            client: Client::new(ClientConfig::new(["http://127.0.0.1:9"], "t")).unwrap(),
            event_id: 7,
            last_id: None,
            resp: None,
            buf: String::new(),
            reconnects: 0,
        }
    }

    #[test]
    fn snapshots_of_this_and_earlier_releases_parse() {
        let counts = r#""event_id":7,"general_admission":true,"capacity":10,"available":9,"held":1,"sold":0,"price_cents":100,"hold_ttl_ms":600000,"per_user_cap":4"#;
        let now = format!(
            "event: snapshot\nid: 5119\ndata: {{\"shard\":2,\"freshness\":{{\"shard\":2,\"applied_index\":4,\"applied_time_ms\":9,\"as_of_ms\":9,\"clock_ms\":10,\"lag_ms\":1}},\"seat_map\":{{{counts},\"freshness\":{{\"shard\":2,\"applied_index\":4,\"applied_time_ms\":9,\"as_of_ms\":9,\"clock_ms\":10,\"lag_ms\":1}}}}}}\n\n"
        );
        let before = format!(
            "event: snapshot\nid: 5119\ndata: {{\"shard\":2,\"freshness\":{{\"applied_index\":4,\"applied_time_ms\":9,\"as_of_ms\":9}},\"seat_map\":{{{counts}}}}}\n\n"
        );
        for block in [now, before] {
            let mut s = stream();
            let Some(StreamEvent::Snapshot(map)) = s.parse(&block).unwrap() else {
                panic!("{block}")
            };
            assert_eq!((map.counts.available, map.freshness.shard), (9, 2));
            assert_eq!(map.freshness.applied_index, 4);
            assert_eq!(s.last_event_id(), Some(5119));
        }
        let mut s = stream();
        assert!(s
            .parse("event: change\ndata: {\"nonsense\": 1}\n\n")
            .is_err());
        assert!(s.parse(": keep-alive\n\n").unwrap().is_none());
    }
}
