//! Outgoing webhooks to the site: each shard leader POSTs the deliveries that
//! are due (its outbox, `boxoffice_storage::machine::outbox`), signed as the
//! provider signs its own (`Boxoffice-Signature: t=...,v1=...`, HMAC-SHA256 of
//! `"{t}.{body}"` with the endpoint's secret; `boxoffice_client::signature::verify`
//! checks it), and commits what each attempt got. Delivery is at least once;
//! the event's `id` (`evt_<shard>_<seq>`) lets the site drop a repeat.

use std::sync::Arc;
use std::time::Duration;

use boxoffice_raft::command::{Command, DeliveryAttempt, HoldId};
use boxoffice_raft::GroupId;
use boxoffice_storage::records::{OutboxEvent, WebhookEndpoint};
use serde_json::json;

use super::signature;
use super::Payments;
use crate::node::{now_ms, Node};

/// The header carrying an outgoing webhook's signature.
pub const SIGNATURE_HEADER: &str = "Boxoffice-Signature";

/// The id the site sees for outbox entry `seq` of `group`.
pub fn event_id(group: GroupId, seq: u64) -> String {
    format!("evt_{}_{seq}", group.0)
}

/// Parses an id made by [`event_id`].
pub fn parse_event_id(id: &str) -> Option<(u16, u64)> {
    let rest = id.strip_prefix("evt_")?;
    let (shard, seq) = rest.split_once('_')?;
    Some((shard.parse().ok()?, seq.parse().ok()?))
}

/// The JSON body the site receives for an outbox entry.
pub fn body(group: GroupId, seq: u64, e: &OutboxEvent) -> serde_json::Value {
    json!({
        "id": event_id(group, seq),
        "object": "event",
        "type": e.kind.as_str(),
        "created_ms": e.created_at_ms,
        "data": {
            "event_id": e.event_id,
            "hold_id": HoldId { shard: group.0, seq: e.hold_seq }.to_string(),
            "booking_id": e.booking_seq.map(|b| boxoffice_raft::command::BookingId { shard: group.0, seq: b }.to_string()),
            "user": e.user,
            "payment_id": e.payment_id,
            "amount_cents": e.amount_cents,
            "seat_ids": e.seat_ids,
            "quantity": e.quantity,
        },
    })
}

/// Sends what `group` has due and commits each attempt's result.
pub async fn deliver(
    node: &Arc<Node>,
    payments: &Payments,
    http: &reqwest::Client,
    group: GroupId,
) {
    let Some(st) = node.stores(group) else { return };
    let due = st
        .reader
        .begin_applied()
        .deliveries_due(now_ms(), payments.settings.webhook_delivery_batch_max);
    let attempts = due
        .into_iter()
        .map(|(name, seq, event, endpoint)| async move {
            let status = send(http, group, seq, &event, &endpoint).await;
            DeliveryAttempt {
                endpoint: name,
                seq,
                status,
                delivered: (200..300).contains(&status),
            }
        });
    for attempt in futures::future::join_all(attempts).await {
        if let Err(e) = node
            .propose(group, None, Command::DeliveryReport(attempt.clone()))
            .await
        {
            tracing::info!(%group, endpoint = %attempt.endpoint, seq = attempt.seq, error = %e, "delivery result not committed yet");
        }
    }
}

/// One POST; the status, or 0 without an answer.
async fn send(
    http: &reqwest::Client,
    group: GroupId,
    seq: u64,
    event: &OutboxEvent,
    endpoint: &WebhookEndpoint,
) -> u16 {
    let body = body(group, seq, event).to_string();
    let header = signature::sign(&endpoint.secret, now_ms() / 1000, body.as_bytes());
    match http
        .post(&endpoint.url)
        .header(SIGNATURE_HEADER, header)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(e) => {
            tracing::debug!(%group, seq, url = %endpoint.url, error = %e, "webhook delivery failed");
            0
        }
    }
}

/// The HTTP client of outgoing webhooks.
pub fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .unwrap_or_default()
}

/// Sends every due outgoing webhook of the groups this node leads, every
/// `payments.webhook_delivery_interval_ms`, until the node is dropped.
pub async fn run(node: std::sync::Weak<Node>, payments: Arc<Payments>) {
    let interval = Duration::from_millis(payments.settings.webhook_delivery_interval_ms);
    let http = client(Duration::from_millis(
        payments.settings.webhook_delivery_timeout_ms,
    ));
    loop {
        tokio::time::sleep(interval).await;
        let Some(n) = node.upgrade() else { return };
        for group in super::worker::led_shards(&n) {
            deliver(&n, &payments, &http, group).await;
        }
    }
}
