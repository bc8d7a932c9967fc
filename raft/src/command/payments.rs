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
