//! The outgoing-webhook outbox (feature level 2). Apply writes an event for
//! the site with the transition that causes it (a booking, a cancellation, a
//! refund paid back, a hold closed unpaid) and queues its delivery to every
//! endpoint that wants it, in the same entry: a leader change loses nothing.
//! The shard leader's delivery worker POSTs what is due and reports each
//! attempt (`Command::DeliveryReport`); a failed attempt is retried after a
//! doubling wait until `DELIVERY_RETRY_WINDOW_MS` has passed since it was
//! queued, and then given up (an admin may replay it). Delivery is at least
//! once: an attempt whose report was lost is made again.

use boxoffice_raft::command::*;
use boxoffice_raft::GroupId;

use super::{get, invalid, put};
use crate::keys::{table, Key};
use crate::kv::{Kv, KvRead};
use crate::records::*;

/// Wait before the first retry of a failed delivery; it doubles with each.
pub const DELIVERY_RETRY_BASE_MS: u64 = 1_000;
/// Longest wait between two attempts.
pub const DELIVERY_RETRY_MAX_MS: u64 = 3_600_000;

pub(crate) fn endpoint_key(group: GroupId, name: &str) -> Vec<u8> {
    Key::sm(group, table::WEBHOOK_ENDPOINT).str(name).build()
}

pub(crate) fn outbox_key(group: GroupId, seq: u64) -> Vec<u8> {
    Key::sm(group, table::OUTBOX).u64(seq).build()
}

pub(crate) fn delivery_key(group: GroupId, name: &str, seq: u64) -> Vec<u8> {
    Key::sm(group, table::DELIVERY).str(name).u64(seq).build()
}

fn due_key(group: GroupId, at: u64, name: &str, seq: u64) -> Vec<u8> {
    Key::sm(group, table::DELIVERY_DUE)
        .u64(at)
        .str(name)
        .u64(seq)
        .build()
}

/// Every endpoint of the group, by name.
pub(crate) fn endpoints(kv: &dyn KvRead, group: GroupId) -> Vec<(String, WebhookEndpoint)> {
    let prefix = Key::sm(group, table::WEBHOOK_ENDPOINT).build();
    let mut out = Vec::new();
    kv.scan(&prefix, &prefix, &mut |k, v| {
        let len = u16::from_be_bytes([k[prefix.len()], k[prefix.len() + 1]]) as usize;
        let name =
            String::from_utf8_lossy(&k[prefix.len() + 2..prefix.len() + 2 + len]).into_owned();
        let e: WebhookEndpoint = boxoffice_raft::codec::decode(v).expect("corrupt endpoint record");
        out.push((name, e));
        true
    });
    out
}

/// Writes `event` to the outbox and queues it for every endpoint that wants it.
pub(super) fn emit(kv: &mut dyn Kv, group: GroupId, event: OutboxEvent) {
    let seq_key = Key::sm(group, table::OUTBOX_SEQ).build();
    let OutboxSeq(last) = get(kv, &seq_key).unwrap_or_default();
    let seq = last + 1;
    put(kv, seq_key, &OutboxSeq(seq));
    let time = event.created_at_ms;
    for (name, e) in endpoints(kv, group) {
        if e.wants(event.kind) {
            queue(kv, group, &name, seq, time, 0);
        }
    }
    put(kv, outbox_key(group, seq), &event);
}

fn queue(kv: &mut dyn Kv, group: GroupId, name: &str, seq: u64, time: u64, attempts: u32) {
    put(
        kv,
        delivery_key(group, name, seq),
        &Delivery {
            attempts,
            last_status: 0,
            state: DeliveryState::Pending { next_at_ms: time },
            queued_at_ms: time,
        },
    );
    kv.put(due_key(group, time, name, seq), Vec::new());
}

pub(super) fn set_endpoint(
    kv: &mut dyn Kv,
    group: GroupId,
    time: u64,
    spec: &WebhookEndpointSpec,
) -> Result<Effect, Rejection> {
    check_endpoint(spec).map_err(invalid)?;
    let mut kinds = spec.kinds.clone();
    kinds.sort_unstable();
    kinds.dedup();
    if kinds.len() != spec.kinds.len() {
        return Err(invalid("kinds lists a kind twice"));
    }
    let key = endpoint_key(group, &spec.name);
    if kv.get(&key).is_none() && endpoints(kv, group).len() >= ENDPOINTS_MAX {
        return Err(invalid(format!(
            "a shard keeps at most {ENDPOINTS_MAX} webhook endpoints"
        )));
    }
    put(
        kv,
        key,
        &WebhookEndpoint {
            url: spec.url.clone(),
            secret: spec.secret.clone(),
            kinds,
            enabled: spec.enabled,
            updated_at_ms: time,
        },
    );
    Ok(Effect::Webhooks(WebhookEffect::EndpointSet {
        name: spec.name.clone(),
    }))
}

pub(super) fn report(
    kv: &mut dyn Kv,
    group: GroupId,
    time: u64,
    a: &DeliveryAttempt,
) -> Result<Effect, Rejection> {
    check_endpoint_name(&a.endpoint).map_err(invalid)?;
    let key = delivery_key(group, &a.endpoint, a.seq);
    let Some(mut d): Option<Delivery> = get(kv, &key) else {
        return Err(invalid(format!(
            "no delivery of outbox entry {} to endpoint {}",
            a.seq, a.endpoint
        )));
    };
    let DeliveryState::Pending { next_at_ms } = d.state else {
        return Ok(Effect::Webhooks(WebhookEffect::Unchanged {
            why: "the delivery is not pending".into(),
        }));
    };
    kv.delete(due_key(group, next_at_ms, &a.endpoint, a.seq));
    d.attempts = d.attempts.saturating_add(1);
    d.last_status = a.status;
    let next = if a.delivered {
        d.state = DeliveryState::Delivered { at_ms: time };
        None
    } else if time >= d.queued_at_ms.saturating_add(DELIVERY_RETRY_WINDOW_MS) {
        d.state = DeliveryState::GaveUp { at_ms: time };
        None
    } else {
        let wait = DELIVERY_RETRY_BASE_MS
            .saturating_mul(1u64 << (d.attempts - 1).min(30))
            .min(DELIVERY_RETRY_MAX_MS);
        // Time is at most STAMP_MS_MAX, far below u64::MAX less an hour.
        let at = time + wait;
        d.state = DeliveryState::Pending { next_at_ms: at };
        kv.put(due_key(group, at, &a.endpoint, a.seq), Vec::new());
        Some(at)
    };
    put(kv, key, &d);
    Ok(Effect::Webhooks(WebhookEffect::AttemptRecorded {
        delivered: a.delivered,
        next_attempt_ms: next,
    }))
}

pub(super) fn replay(
    kv: &mut dyn Kv,
    group: GroupId,
    time: u64,
    endpoint: &str,
    seq: u64,
) -> Result<Effect, Rejection> {
    check_endpoint_name(endpoint).map_err(invalid)?;
    let key = delivery_key(group, endpoint, seq);
    let Some(d): Option<Delivery> = get(kv, &key) else {
        return Err(invalid(format!(
            "no delivery of outbox entry {seq} to endpoint {endpoint}"
        )));
    };
    if let DeliveryState::Pending { next_at_ms } = d.state {
        kv.delete(due_key(group, next_at_ms, endpoint, seq));
    }
    queue(kv, group, endpoint, seq, time, d.attempts);
    Ok(Effect::Webhooks(WebhookEffect::Replayed))
}
