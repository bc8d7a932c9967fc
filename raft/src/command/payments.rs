//! Payments as they travel through the log (feature level 2): a checkout puts a
//! hold's payment in flight, the provider's word (its signed webhook, or what
//! the reconciler retrieved) settles it, a booking may be cancelled, and refunds
//! are tracked until the provider has paid them back.
//!
//! The provider is never called from apply: the node calls it first (with an
//! idempotency key derived from the hold or payment, so a retry after a crash
//! gets the same object back), then proposes what it learned. Apply decides
//! from the state machine's state alone, so deliveries that arrive twice, late
//! or out of order change nothing they should not.

use serde::{Deserialize, Serialize};

use super::{BookingId, ConfirmedBooking, HoldId};

/// Longest provider object id accepted (payment, refund, event ids; bytes).
pub const PROVIDER_ID_LEN_MAX: usize = 255;
/// Currency codes are ISO 4217, three lowercase letters, as the provider writes them.
pub const CURRENCY_LEN: usize = 3;
/// Longest grace a payment in flight may add to a hold (1 day).
pub const PAYMENT_GRACE_MS_MAX: u64 = 24 * 3600 * 1000;
/// Longest a hold may live with a payment in flight, counted from when it was made.
pub const PAYMENT_HOLD_MAX_MS_MAX: u64 = 2 * 24 * 3600 * 1000;
/// How long a provider event id is remembered, so that a redelivery is
/// recognised (4 days of state-machine time: the provider retries for 3).
pub const PROVIDER_EVENT_TTL_MS: u64 = 4 * 24 * 3600 * 1000;
/// Longest refund failure reason kept (bytes; longer ones are cut by the node).
pub const REFUND_REASON_LEN_MAX: usize = 500;

/// `Command::Checkout`: the hold's payment was created with the provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutRequest {
    /// The hold.
    pub hold_id: HoldId,
    /// The authenticated user; must own the hold.
    pub user: String,
    /// The provider's payment id (Stripe: the PaymentIntent's `pi_...`).
    pub payment_id: String,
    /// What the payment is for; must be the hold's total.
    pub amount_cents: u64,
    /// Its currency (ISO 4217, lowercase).
    pub currency: String,
    /// How much longer the hold lives from the checkout.
    pub grace_ms: u64,
    /// The hold never lives past this long after it was made.
    pub hold_max_ms: u64,
}

/// What the provider said of a payment (`Command::PaymentSucceeded` /
/// `Command::PaymentFailed`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentNotice {
    /// The hold the payment was made for (from the payment's metadata).
    pub hold_id: HoldId,
    /// The provider's payment id.
    pub payment_id: String,
    /// The amount the provider received (succeeded) or asked for (failed).
    pub amount_cents: u64,
    /// The provider event that said so, when it came by webhook: remembered for
    /// [`PROVIDER_EVENT_TTL_MS`] so that its redelivery changes nothing.
    pub provider_event: Option<String>,
}

/// A refund's state as the provider reports it (`Command::RefundUpdate`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefundReport {
    /// The provider accepted the refund and is paying it out.
    Pending {
        /// The provider's refund id.
        refund_id: String,
    },
    /// The money is back with the buyer.
    Succeeded {
        /// The provider's refund id.
        refund_id: String,
    },
    /// The provider refused or failed it; it will be tried again.
    Failed {
        /// What the provider said.
        reason: String,
    },
}

/// Why a refund is owed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefundReason {
    /// The payment succeeded after its hold had expired and its seats were
    /// taken (or the hold was already booked by another payment).
    LatePayment,
    /// The payment's amount is not the hold's total.
    AmountMismatch,
    /// The booking was cancelled by its owner.
    CancelledByUser,
    /// The booking was cancelled by an admin.
    CancelledByAdmin,
}

impl RefundReason {
    /// Its API name.
    pub fn as_str(self) -> &'static str {
        match self {
            RefundReason::LatePayment => "late_payment",
            RefundReason::AmountMismatch => "amount_mismatch",
            RefundReason::CancelledByUser => "cancelled_by_user",
            RefundReason::CancelledByAdmin => "cancelled_by_admin",
        }
    }
}

/// What a payment command did (`Effect::Payment`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PaymentEffect {
    /// The hold's payment is in flight; the hold lives until `expires_at_ms`.
    CheckoutStarted {
        /// The hold.
        hold_id: HoldId,
        /// Its event.
        event_id: u64,
        /// Its seats (empty for general admission).
        seat_ids: Vec<u32>,
        /// Its tickets.
        quantity: u32,
        /// The provider's payment id.
        payment_id: String,
        /// The hold's new expiry.
        expires_at_ms: u64,
    },
    /// The payment succeeded and the hold became a booking. `late` when the
    /// hold had expired and its seats were still free: taken and booked at once.
    Booked {
        /// The booking.
        booking: ConfirmedBooking,
        /// True when the hold had expired first.
        late: bool,
    },
    /// The payment succeeded but no booking could honour it: a refund is owed
    /// and will be issued through the provider.
    RefundRequired {
        /// The payment.
        payment_id: String,
        /// Its hold.
        hold_id: HoldId,
        /// The hold's event.
        event_id: u64,
        /// What will be refunded.
        amount_cents: u64,
        /// Why.
        reason: RefundReason,
    },
    /// The payment failed or was cancelled while its hold was live: the hold is
    /// active again, until its expiry.
    HoldReopened {
        /// The hold.
        hold_id: HoldId,
        /// Until when.
        expires_at_ms: u64,
    },
    /// The payment failed or was cancelled after its hold expired: the hold is
    /// closed (its seats were free already).
    HoldClosed {
        /// The hold.
        hold_id: HoldId,
    },
    /// A booking was cancelled: its seats are available again.
    BookingCancelled {
        /// The booking.
        booking_id: BookingId,
        /// Its event.
        event_id: u64,
        /// Seats given back (empty for general admission).
        seat_ids: Vec<u32>,
        /// Tickets given back.
        quantity: u32,
        /// The payment to refund, if it was paid through the provider.
        refund_payment_id: Option<String>,
    },
    /// A refund's state moved.
    RefundUpdated {
        /// The payment refunded.
        payment_id: String,
        /// Where the refund stands now.
        state: RefundState,
    },
    /// Nothing changed: the notice was seen before, or the state it names is
    /// already past (a terminal state ignores late events). Why, for logs.
    Unchanged {
        /// Why nothing changed.
        why: String,
    },
}

/// Where a refund stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefundState {
    /// Owed; not yet accepted by the provider (or failed, to be tried again).
    Required {
        /// Attempts that failed so far.
        failures: u32,
        /// The last failure's reason.
        last_error: Option<String>,
    },
    /// Accepted by the provider, not yet paid out.
    Pending {
        /// The provider's refund id.
        refund_id: String,
    },
    /// Paid back.
    Refunded {
        /// The provider's refund id.
        refund_id: String,
    },
}

impl RefundState {
    /// True once the money is back.
    pub fn is_final(&self) -> bool {
        matches!(self, RefundState::Refunded { .. })
    }

    /// Its API name.
    pub fn as_str(&self) -> &'static str {
        match self {
            RefundState::Required { failures: 0, .. } => "required",
            RefundState::Required { .. } => "failed",
            RefundState::Pending { .. } => "pending",
            RefundState::Refunded { .. } => "refunded",
        }
    }
}

/// Checks the shape of a provider id (payment, refund, event): bounded, printable ASCII.
pub fn check_provider_id(what: &str, id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > PROVIDER_ID_LEN_MAX {
        return Err(format!("{what} must be 1..={PROVIDER_ID_LEN_MAX} bytes"));
    }
    if !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("{what} must be printable ASCII without spaces"));
    }
    Ok(())
}

/// Checks a currency code: three lowercase ASCII letters.
pub fn check_currency(currency: &str) -> Result<(), String> {
    if currency.len() != CURRENCY_LEN || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err(format!(
            "currency must be an ISO 4217 code in lowercase, not {currency:?}"
        ));
    }
    Ok(())
}

/// Longest webhook endpoint name (bytes).
pub const ENDPOINT_NAME_LEN_MAX: usize = 64;
/// Longest webhook endpoint URL (bytes).
pub const ENDPOINT_URL_LEN_MAX: usize = 2000;
/// Longest webhook signing secret (bytes).
pub const ENDPOINT_SECRET_LEN_MAX: usize = 200;
/// Most webhook endpoints a shard keeps.
pub const ENDPOINTS_MAX: usize = 16;
/// How long an outgoing webhook is retried before it is given up (3 days of
/// state-machine time, as payment providers retry theirs).
pub const DELIVERY_RETRY_WINDOW_MS: u64 = 3 * 24 * 3600 * 1000;

/// The kinds of outgoing webhooks, as the site receives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum OutboxKind {
    /// A hold was booked (`order.confirmed`).
    OrderConfirmed,
    /// A booking was cancelled (`order.cancelled`).
    OrderCancelled,
    /// A cancelled booking's refund was paid back (`refund.succeeded`).
    RefundSucceeded,
    /// A hold whose payment was in flight expired unpaid and was closed (`hold.expired`).
    HoldExpired,
    /// A payment that came after its hold's seats were taken was paid back
    /// (`payment.late_refunded`).
    PaymentLateRefunded,
}

impl OutboxKind {
    /// Every kind.
    pub const ALL: [OutboxKind; 5] = [
        OutboxKind::OrderConfirmed,
        OutboxKind::OrderCancelled,
        OutboxKind::RefundSucceeded,
        OutboxKind::HoldExpired,
        OutboxKind::PaymentLateRefunded,
    ];

    /// The event type the site sees.
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxKind::OrderConfirmed => "order.confirmed",
            OutboxKind::OrderCancelled => "order.cancelled",
            OutboxKind::RefundSucceeded => "refund.succeeded",
            OutboxKind::HoldExpired => "hold.expired",
            OutboxKind::PaymentLateRefunded => "payment.late_refunded",
        }
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<OutboxKind> {
        OutboxKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// `Command::SetWebhookEndpoint`: where the shard sends its outgoing webhooks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEndpointSpec {
    /// The endpoint's name (its id).
    pub name: String,
    /// Where deliveries are POSTed.
    pub url: String,
    /// The signing secret (`whsec_...`).
    pub secret: String,
    /// The kinds it receives (empty: every kind).
    pub kinds: Vec<OutboxKind>,
    /// False turns it off: nothing new is queued for it.
    pub enabled: bool,
}

/// What one delivery attempt of an outgoing webhook got (`Command::DeliveryReport`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryAttempt {
    /// The endpoint.
    pub endpoint: String,
    /// The outbox entry.
    pub seq: u64,
    /// The HTTP status (0: no answer).
    pub status: u16,
    /// True on a 2xx.
    pub delivered: bool,
}

/// Checks an endpoint spec.
pub fn check_endpoint(spec: &WebhookEndpointSpec) -> Result<(), String> {
    check_endpoint_name(&spec.name)?;
    if spec.url.len() > ENDPOINT_URL_LEN_MAX
        || !(spec.url.starts_with("https://") || spec.url.starts_with("http://"))
    {
        return Err(format!(
            "url must be an http(s) URL of at most {ENDPOINT_URL_LEN_MAX} bytes"
        ));
    }
    if spec.secret.is_empty() || spec.secret.len() > ENDPOINT_SECRET_LEN_MAX {
        return Err(format!(
            "secret must be 1..={ENDPOINT_SECRET_LEN_MAX} bytes"
        ));
    }
    if spec.kinds.len() > OutboxKind::ALL.len() {
        return Err("kinds lists a kind twice".into());
    }
    Ok(())
}

/// Checks an endpoint name: 1..=64 bytes of `[a-z0-9_-]`.
pub fn check_endpoint_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > ENDPOINT_NAME_LEN_MAX
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "an endpoint name is 1..={ENDPOINT_NAME_LEN_MAX} bytes of a-z, 0-9, - and _"
        ));
    }
    Ok(())
}

/// What a webhook command did (`Effect::Webhooks`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WebhookEffect {
    /// The endpoint is registered (or changed).
    EndpointSet {
        /// Its name.
        name: String,
    },
    /// A delivery attempt was recorded: delivered, to be retried at
    /// `next_attempt_ms`, or given up after the retry window.
    AttemptRecorded {
        /// True once delivered.
        delivered: bool,
        /// When it is tried next (none: delivered or given up).
        next_attempt_ms: Option<u64>,
    },
    /// The delivery is queued again, now.
    Replayed,
    /// Nothing changed (a report for a delivery no longer pending). Why.
    Unchanged {
        /// Why.
        why: String,
    },
}

/// Longest cancellation cutoff an event may set (a year, in seconds).
pub const CANCEL_CUTOFF_S_MAX: u64 = 365 * 24 * 3600;

/// An event's own payment settings (`Command::SetEventPayments`); `None`
/// leaves a setting at the cluster's default (`[payments]`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventPayments {
    /// How much longer a hold lives once its payment is in flight (s).
    pub payment_grace_s: Option<u64>,
    /// A payment in flight never keeps a hold past this long after it was made (s).
    pub payment_hold_max_s: Option<u64>,
    /// Buyers may cancel until this long before the event starts (s).
    pub cancel_cutoff_s: Option<u64>,
}

impl EventPayments {
    /// Checks the bounds.
    pub fn check(&self) -> Result<(), String> {
        if let Some(g) = self.payment_grace_s {
            if g == 0 || g.saturating_mul(1000) > PAYMENT_GRACE_MS_MAX {
                return Err(format!(
                    "payment_grace_s must be 1..={}",
                    PAYMENT_GRACE_MS_MAX / 1000
                ));
            }
        }
        if let Some(m) = self.payment_hold_max_s {
            if m.saturating_mul(1000) > PAYMENT_HOLD_MAX_MS_MAX {
                return Err(format!(
                    "payment_hold_max_s must be at most {}",
                    PAYMENT_HOLD_MAX_MS_MAX / 1000
                ));
            }
        }
        if self
            .cancel_cutoff_s
            .is_some_and(|c| c > CANCEL_CUTOFF_S_MAX)
        {
            return Err(format!(
                "cancel_cutoff_s must be at most {CANCEL_CUTOFF_S_MAX}"
            ));
        }
        Ok(())
    }
}
