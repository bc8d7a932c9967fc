//! The payment provider seam: what the store asks of a provider, in the
//! provider's own terms (Stripe's PaymentIntents and Refunds). [`super::stripe`]
//! speaks Stripe's REST API; `boxoffice payments-sandbox` serves that API
//! locally, so the same client runs against both.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

/// A payment to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPayment {
    /// Amount in the currency's smallest unit.
    pub amount_cents: u64,
    /// ISO 4217, lowercase.
    pub currency: String,
    /// Sent as `Idempotency-Key`: the same key gets the same payment back.
    pub idempotency_key: String,
    /// Routing facts the provider returns with every event about it.
    pub metadata: BTreeMap<String, String>,
    /// Shown on the buyer's statement and the provider's dashboard.
    pub description: String,
}

/// A payment's status, as the provider names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Waiting for the buyer's card (again, after a decline).
    RequiresPaymentMethod,
    /// A card is attached; not yet confirmed.
    RequiresConfirmation,
    /// The buyer must authenticate (3-D Secure).
    RequiresAction,
    /// Being processed.
    Processing,
    /// Authorised, not captured.
    RequiresCapture,
    /// Cancelled: it can never succeed.
    Canceled,
    /// Paid.
    Succeeded,
    /// A status this build does not know.
    #[serde(other)]
    Unknown,
}

impl PaymentStatus {
    /// True when the payment can never succeed from here.
    pub fn is_canceled(&self) -> bool {
        *self == PaymentStatus::Canceled
    }
}

/// A payment as the provider reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// `pi_...`.
    pub id: String,
    /// Where it stands.
    pub status: PaymentStatus,
    /// Amount asked.
    pub amount: u64,
    /// Amount received (0 until it succeeded).
    #[serde(default)]
    pub amount_received: u64,
    /// Currency.
    pub currency: String,
    /// What the buyer's front end needs to pay (Stripe.js `confirmCardPayment`).
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Metadata given at creation.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// A refund's status, as the provider names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    /// Accepted, being paid out.
    Pending,
    /// Needs the buyer to act (some payment methods).
    RequiresAction,
    /// Paid back.
    Succeeded,
    /// Failed.
    Failed,
    /// Cancelled.
    Canceled,
    /// A status this build does not know.
    #[serde(other)]
    Unknown,
}

/// A refund as the provider reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderRefund {
    /// `re_...`.
    pub id: String,
    /// The payment refunded.
    pub payment_intent: Option<String>,
    /// Where it stands.
    pub status: RefundStatus,
    /// Amount.
    pub amount: u64,
    /// Why it failed, when it did.
    #[serde(default)]
    pub failure_reason: Option<String>,
    /// Metadata given at creation.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// A refund to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRefund {
    /// The payment to refund.
    pub payment_id: String,
    /// How much.
    pub amount_cents: u64,
    /// Sent as `Idempotency-Key`.
    pub idempotency_key: String,
    /// Routing facts returned with the refund's events.
    pub metadata: BTreeMap<String, String>,
}

/// Why a provider call did not give an answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// No answer, or the provider failed (network, timeout, 5xx, 429): the call
    /// may be retried with the same idempotency key.
    #[error("payment provider unavailable: {0}")]
    Unavailable(String),
    /// The provider refused the request (4xx): retrying it as it is will not help.
    #[error("payment provider refused the request ({status} {kind}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The provider's error type (`invalid_request_error`, `card_error`, ...).
        kind: String,
        /// The provider's error code, if any (`payment_intent_unexpected_state`, ...).
        code: Option<String>,
        /// The provider's message.
        message: String,
    },
}

/// What the store asks of a payment provider. Every create carries an
/// idempotency key, so a retry after a crash or a lost answer gets the object
/// the first call made.
pub trait PaymentProvider: Send + Sync {
    /// Creates a payment (Stripe: `POST /v1/payment_intents`).
    fn create_payment(&self, p: NewPayment) -> BoxFuture<'_, Result<Payment, ProviderError>>;
    /// Reads a payment (`GET /v1/payment_intents/{id}`).
    fn retrieve_payment<'a>(&'a self, id: &'a str)
        -> BoxFuture<'a, Result<Payment, ProviderError>>;
    /// Cancels a payment that has not succeeded (`POST /v1/payment_intents/{id}/cancel`).
    fn cancel_payment<'a>(
        &'a self,
        id: &'a str,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<Payment, ProviderError>>;
    /// Refunds a payment (`POST /v1/refunds`).
    fn create_refund(&self, r: NewRefund) -> BoxFuture<'_, Result<ProviderRefund, ProviderError>>;
    /// Reads a refund (`GET /v1/refunds/{id}`).
    fn retrieve_refund<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<ProviderRefund, ProviderError>>;
}
