//! What each shard leader does with the provider, every
//! `payments.reconcile_interval_ms`, in bounded batches:
//!
//! - **Reconcile.** A hold whose payment is still in flight when the hold
//!   expires is checked with the provider: a payment that succeeded is
//!   applied (booked, or refunded if its seats are gone); any other is
//!   cancelled with the provider first, so it can never succeed afterwards,
//!   and then the hold is closed. A crash between the provider call and the
//!   commit is safe: the cancel carries an idempotency key, and the next
//!   round (on this leader or the next) finds the hold still due.
//! - **Refunds.** Every refund owed is issued with an idempotency key derived
//!   from the payment and the number of failed attempts, so a retry after a
//!   lost answer cannot refund twice; its result is committed. Failures are
//!   retried with a doubling wait.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use boxoffice_raft::command::{Command, HoldId, PaymentNotice, RefundReport, RefundState};
use boxoffice_raft::GroupId;

use super::provider::{NewRefund, PaymentStatus, ProviderError, ProviderRefund, RefundStatus};
use super::Payments;
use crate::node::{now_ms, Node};

/// Runs the reconciler and refund worker of every group this node leads,
/// until the node is dropped.
pub async fn run(node: Weak<Node>, payments: Arc<Payments>) {
    let interval = Duration::from_millis(payments.settings.reconcile_interval_ms);
    loop {
        tokio::time::sleep(interval).await;
        let Some(n) = node.upgrade() else { return };
        for group in led_shards(&n) {
            reconcile(&n, &payments, group).await;
            refunds(&n, &payments, group).await;
        }
    }
}

/// The inventory shards this node leads (as it knows).
pub fn led_shards(node: &Node) -> Vec<GroupId> {
    node.groups
        .all()
        .into_iter()
        .map(|(g, _)| g)
        .filter(|g| !g.is_catalogue() && node.leader_of(*g).map(|(id, _)| id) == Some(node.id()))
        .collect()
}

/// Checks the holds of `group` whose payment is in flight past their expiry.
pub async fn reconcile(node: &Arc<Node>, payments: &Payments, group: GroupId) {
    let Some(st) = node.stores(group) else { return };
    let due = st
        .reader
        .begin_applied()
        .payments_due(now_ms(), payments.settings.reconcile_batch_max);
    for (hold, payment) in due {
        let hold_id = HoldId {
            shard: group.0,
            seq: hold.seq,
        };
        let pi = &payment.payment_id;
        let command = match payments.provider.retrieve_payment(pi).await {
            Ok(p) if p.status == PaymentStatus::Succeeded => {
                Command::PaymentSucceeded(PaymentNotice {
                    hold_id,
                    payment_id: pi.clone(),
                    amount_cents: p.amount_received,
                    provider_event: None,
                })
            }
            Ok(p) if p.status.is_canceled() => failed(hold_id, pi, p.amount),
            Ok(p) => {
                // Not paid: cancel it so that it can never succeed, then close.
                match payments
                    .provider
                    .cancel_payment(pi, &format!("cancel-{pi}"))
                    .await
                {
                    Ok(c) if c.status.is_canceled() => failed(hold_id, pi, p.amount),
                    Ok(c) => {
                        tracing::warn!(%group, payment = %pi, status = ?c.status, "payment not cancelled; checked again next round");
                        continue;
                    }
                    Err(e) => {
                        // It may have succeeded meanwhile (the provider refuses
                        // to cancel a paid intent): the next round retrieves it.
                        tracing::info!(%group, payment = %pi, error = %e, "payment not cancelled yet");
                        continue;
                    }
                }
            }
            Err(e) => {
                tracing::info!(%group, payment = %pi, error = %e, "payment not checked yet");
                continue;
            }
        };
        if let Err(e) = node.propose(group, None, command).await {
            tracing::info!(%group, payment = %pi, error = %e, "reconciled payment not committed yet");
        }
    }
}

fn failed(hold_id: HoldId, payment_id: &str, amount: u64) -> Command {
    Command::PaymentFailed(PaymentNotice {
        hold_id,
        payment_id: payment_id.to_string(),
        amount_cents: amount,
        provider_event: None,
    })
}

/// The report a provider refund makes.
pub fn refund_report(r: &ProviderRefund) -> Option<RefundReport> {
    match r.status {
        RefundStatus::Succeeded => Some(RefundReport::Succeeded {
            refund_id: r.id.clone(),
        }),
        RefundStatus::Pending | RefundStatus::RequiresAction => Some(RefundReport::Pending {
            refund_id: r.id.clone(),
        }),
        RefundStatus::Failed | RefundStatus::Canceled => Some(RefundReport::Failed {
            reason: r
                .failure_reason
                .clone()
                .unwrap_or_else(|| format!("{:?}", r.status).to_lowercase())
                .chars()
                .take(boxoffice_raft::command::REFUND_REASON_LEN_MAX)
                .collect(),
        }),
        RefundStatus::Unknown => None,
    }
}

/// Issues (or follows up) the refunds `group` owes.
pub async fn refunds(node: &Arc<Node>, payments: &Payments, group: GroupId) {
    let Some(st) = node.stores(group) else { return };
    let now = now_ms();
    let open = st
        .reader
        .begin_applied()
        .open_refunds(None, payments.settings.reconcile_batch_max);
    for (payment_id, refund) in open {
        let result = match &refund.state {
            RefundState::Refunded { .. } => continue,
            RefundState::Required { failures, .. } => {
                let wait = payments
                    .settings
                    .reconcile_interval_ms
                    .saturating_mul(1u64 << (*failures).min(20))
                    .min(payments.settings.refund_retry_ms_max);
                if *failures > 0 && refund.updated_at_ms.saturating_add(wait) > now {
                    continue;
                }
                let metadata = BTreeMap::from([
                    (
                        "hold_id".to_string(),
                        HoldId {
                            shard: group.0,
                            seq: refund.hold_seq,
                        }
                        .to_string(),
                    ),
                    ("event_id".to_string(), refund.event_id.to_string()),
                    ("reason".to_string(), refund.reason.as_str().to_string()),
                ]);
                payments
                    .provider
                    .create_refund(NewRefund {
                        payment_id: payment_id.clone(),
                        amount_cents: refund.amount_cents,
                        idempotency_key: format!("refund-{payment_id}-{failures}"),
                        metadata,
                    })
                    .await
            }
            RefundState::Pending { refund_id } => {
                payments.provider.retrieve_refund(refund_id).await
            }
        };
        let report = match result {
            Ok(r) => match refund_report(&r) {
                Some(report) => report,
                None => continue,
            },
            Err(ProviderError::Refused { message, .. }) => RefundReport::Failed {
                reason: message
                    .chars()
                    .take(boxoffice_raft::command::REFUND_REASON_LEN_MAX)
                    .collect(),
            },
            Err(e @ ProviderError::Unavailable(_)) => {
                tracing::info!(%group, payment = %payment_id, error = %e, "refund not issued yet");
                continue;
            }
        };
        let command = Command::RefundUpdate {
            payment_id: payment_id.clone(),
            report,
            provider_event: None,
        };
        if let Err(e) = node.propose(group, None, command).await {
            tracing::info!(%group, payment = %payment_id, error = %e, "refund result not committed yet");
        }
    }
}
