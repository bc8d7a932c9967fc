//! Payments through a provider (Stripe, or the local sandbox that speaks its
//! API): the provider seam ([`provider`], [`stripe`]), webhook signatures
//! ([`signature`]), the sandbox ([`sandbox`]) and the work each shard leader
//! does with the provider ([`worker`]: the reconciler of payments in flight,
//! and refunds). The HTTP side is `api::payments`; the lifecycle itself is the
//! shard's state machine (`boxoffice_storage::machine::payments`).

pub mod outgoing;
pub mod provider;
pub mod sandbox;
pub mod stripe;
pub mod worker;

#[cfg(test)]
mod tests;

/// Webhook signatures (shared with the client library, whose users verify
/// the store's webhooks the same way).
pub use boxoffice_api::signature;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
pub use provider::PaymentProvider;

/// Environment variables the provider's secrets may come from (below `--set`,
/// above the file). The webhook secrets are comma-separated.
pub const PAYMENT_SECRET_ENV: [(&str, &str); 2] = [
    ("secret_key", "BOXOFFICE_PAYMENTS_SECRET_KEY"),
    ("webhook_secrets", "BOXOFFICE_PAYMENTS_WEBHOOK_SECRETS"),
];

/// Payments settings (`[payments]`). Payments are off (checkout answers 503
/// `payments_not_configured`) until `provider_url` is set.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentSettings {
    /// Base URL of the provider's API: `https://api.stripe.com`, or the
    /// sandbox's (`boxoffice dev` sets it). Empty: payments off.
    pub provider_url: String,
    /// The provider's secret API key (`sk_live_...`, `sk_test_...`).
    pub secret_key: String,
    /// Signing secrets of the webhook endpoint (`whsec_...`); a delivery may be
    /// signed by any of them, so a secret is rotated by listing both for a while.
    pub webhook_secrets: Vec<String>,
    /// Currency of every payment (ISO 4217, lowercase).
    pub currency: String,
    /// How much longer a hold lives once its payment is in flight (s).
    pub payment_grace_s: u64,
    /// A payment in flight never keeps a hold past this long after it was made (s).
    pub payment_hold_max_s: u64,
    /// A buyer may cancel a booking until this long before the event starts (s);
    /// an admin may cancel any time.
    pub cancel_cutoff_s: u64,
    /// How far a webhook's signature timestamp may be from now (s).
    pub webhook_tolerance_s: u64,
    /// Largest webhook body read (bytes).
    pub webhook_body_bytes_max: usize,
    /// Timeout of one provider call (ms).
    pub provider_timeout_ms: u64,
    /// How often each shard leader checks payments in flight past their hold's
    /// expiry, and refunds owed (ms).
    pub reconcile_interval_ms: u64,
    /// Most payments checked, and most refunds issued, per group per round.
    pub reconcile_batch_max: usize,
    /// Longest wait before a failed refund is tried again (ms); the wait doubles
    /// from `reconcile_interval_ms` with each failure up to this.
    pub refund_retry_ms_max: u64,
    /// How often each shard leader sends the outgoing webhooks that are due (ms).
    pub webhook_delivery_interval_ms: u64,
    /// Most outgoing webhooks one shard sends per round (at once).
    pub webhook_delivery_batch_max: usize,
    /// Timeout of one outgoing webhook delivery (ms).
    pub webhook_delivery_timeout_ms: u64,
}

impl Default for PaymentSettings {
    fn default() -> Self {
        PaymentSettings {
            provider_url: String::new(),
            secret_key: String::new(),
            webhook_secrets: Vec::new(),
            currency: "usd".into(),
            payment_grace_s: 600,
            payment_hold_max_s: 1800,
            cancel_cutoff_s: 24 * 3600,
            webhook_tolerance_s: signature::SIGNATURE_TOLERANCE_S,
            webhook_body_bytes_max: 256 * 1024,
            provider_timeout_ms: 10_000,
            reconcile_interval_ms: 5_000,
            reconcile_batch_max: 64,
            refund_retry_ms_max: 3_600_000,
            webhook_delivery_interval_ms: 500,
            webhook_delivery_batch_max: 64,
            webhook_delivery_timeout_ms: 5_000,
        }
    }
}

impl PaymentSettings {
    /// True when a provider is configured.
    pub fn enabled(&self) -> bool {
        !self.provider_url.is_empty()
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let rule = |settings: &'static str, rule: &str| {
            Err(ConfigError::Rule {
                settings,
                rule: rule.to_string(),
            })
        };
        use boxoffice_raft::command::{
            check_currency, PAYMENT_GRACE_MS_MAX, PAYMENT_HOLD_MAX_MS_MAX,
        };
        if let Err(e) = check_currency(&self.currency) {
            return rule("payments.currency", &e);
        }
        if self.payment_grace_s == 0
            || self.payment_grace_s.saturating_mul(1000) > PAYMENT_GRACE_MS_MAX
        {
            return rule("payments.payment_grace_s", "must be 1..=86400");
        }
        if self.payment_hold_max_s.saturating_mul(1000) > PAYMENT_HOLD_MAX_MS_MAX {
            return rule("payments.payment_hold_max_s", "must be at most 172800");
        }
        for (name, v) in [
            ("payments.webhook_tolerance_s", self.webhook_tolerance_s),
            (
                "payments.webhook_body_bytes_max",
                self.webhook_body_bytes_max as u64,
            ),
            ("payments.provider_timeout_ms", self.provider_timeout_ms),
            ("payments.reconcile_interval_ms", self.reconcile_interval_ms),
            (
                "payments.reconcile_batch_max",
                self.reconcile_batch_max as u64,
            ),
            ("payments.refund_retry_ms_max", self.refund_retry_ms_max),
            (
                "payments.webhook_delivery_interval_ms",
                self.webhook_delivery_interval_ms,
            ),
            (
                "payments.webhook_delivery_batch_max",
                self.webhook_delivery_batch_max as u64,
            ),
            (
                "payments.webhook_delivery_timeout_ms",
                self.webhook_delivery_timeout_ms,
            ),
        ] {
            if v == 0 {
                return Err(ConfigError::NotPositive(name));
            }
        }
        if !self.enabled() {
            return Ok(());
        }
        if !(self.provider_url.starts_with("https://") || self.provider_url.starts_with("http://"))
        {
            return rule("payments.provider_url", "must be an http(s) URL");
        }
        if self.secret_key.is_empty() {
            return rule(
                "payments.secret_key",
                "must be set when payments.provider_url is (or BOXOFFICE_PAYMENTS_SECRET_KEY)",
            );
        }
        if self.webhook_secrets.is_empty() || self.webhook_secrets.iter().any(|s| s.is_empty()) {
            return rule(
                "payments.webhook_secrets",
                "must list at least one non-empty signing secret when payments.provider_url is set",
            );
        }
        Ok(())
    }
}

/// The node's payments: the provider client and its settings.
pub struct Payments {
    /// The provider.
    pub provider: Arc<dyn PaymentProvider>,
    /// The settings.
    pub settings: PaymentSettings,
}

impl Payments {
    /// The payments the settings describe; `None` when they are off.
    pub fn from_settings(settings: &PaymentSettings) -> anyhow::Result<Option<Arc<Payments>>> {
        if !settings.enabled() {
            return Ok(None);
        }
        let client = stripe::StripeClient::new(
            &settings.provider_url,
            &settings.secret_key,
            Duration::from_millis(settings.provider_timeout_ms),
        )?;
        Ok(Some(Arc::new(Payments {
            provider: Arc::new(client),
            settings: settings.clone(),
        })))
    }
}
