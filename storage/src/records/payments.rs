//! Payment records (from feature level 2): a hold's payment with the provider,
//! refunds owed, cancelled bookings and the provider events already applied.

use boxoffice_raft::command::{RefundReason, RefundState};
use serde::{Deserialize, Serialize};

/// Where a hold's latest payment stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentPhase {
    /// Created with the provider; the buyer may be paying.
    InFlight,
    /// The provider said it failed or was cancelled.
    Failed,
    /// It succeeded and the hold is booked with it.
    Paid,
}

/// A hold's payment with the provider (`table::PAYMENT`, by hold seq).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldPayment {
    /// The provider's payment id.
    pub payment_id: String,
    /// What was asked.
    pub amount_cents: u64,
    /// In what currency.
    pub currency: String,
    /// When the hold was made (its expiry before any checkout, less its event's
    /// hold lifetime): a payment never keeps it past `hold_max` from here.
    pub hold_made_at_ms: u64,
    /// State-machine time of the latest checkout.
    pub checkout_at_ms: u64,
    /// Checkouts of this hold so far (each a new payment with the provider).
    pub checkouts: u32,
    /// Where it stands.
    pub phase: PaymentPhase,
}

/// A refund owed for a payment (`table::REFUND`, by payment id).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    /// The hold paid for.
    pub hold_seq: u64,
    /// The booking cancelled, if the refund is for a cancellation.
    pub booking_seq: Option<u64>,
    /// The event.
    pub event_id: u64,
    /// The buyer.
    pub user: String,
    /// What to refund.
    pub amount_cents: u64,
    /// Why it is owed.
    pub reason: RefundReason,
    /// Where it stands.
    pub state: RefundState,
    /// When it became owed.
    pub created_at_ms: u64,
    /// When its state last moved.
    pub updated_at_ms: u64,
}

/// A cancelled booking (`table::BOOKING_CANCEL`, by booking seq).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookingCancellation {
    /// State-machine time of the cancellation.
    pub cancelled_at_ms: u64,
    /// By whom: its owner or an admin.
    pub reason: RefundReason,
    /// The payment refunded, if it was paid through the provider.
    pub refund_payment_id: Option<String>,
}

/// What a shard's payments came to, counted by apply (`table::PAYMENT_COUNTS`,
/// one record; absent: all zero): the same on every replica, so any replica
/// can report them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentCounts {
    /// Checkouts that put a payment in flight.
    pub checkouts: u64,
    /// Holds booked by a payment, while live.
    pub booked: u64,
    /// Holds booked by a payment that came after they expired (seats still free).
    pub booked_late: u64,
    /// Payments that came after their seats were taken: refunded.
    pub late_refunds: u64,
    /// Payments of the wrong amount: refunded.
    pub mismatch_refunds: u64,
    /// Payments that failed or were cancelled.
    pub failed: u64,
    /// Bookings cancelled.
    pub cancelled: u64,
    /// Refunds paid back.
    pub refunded: u64,
    /// Refund attempts that failed.
    pub refund_failures: u64,
}

/// Until when a provider event id is remembered (`table::PROVIDER_EVENT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SeenUntil(pub u64);

/// An event's own payment settings (`table::EVENT_PAYMENTS`, catalogue); `None`
/// leaves one at the cluster's default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventPaymentSettings {
    /// How much longer a hold lives once its payment is in flight (s).
    pub payment_grace_s: Option<u64>,
    /// A payment in flight never keeps a hold past this long after it was made (s).
    pub payment_hold_max_s: Option<u64>,
    /// Buyers may cancel until this long before the event starts (s).
    pub cancel_cutoff_s: Option<u64>,
}

impl From<&boxoffice_raft::command::EventPayments> for EventPaymentSettings {
    fn from(p: &boxoffice_raft::command::EventPayments) -> Self {
        EventPaymentSettings {
            payment_grace_s: p.payment_grace_s,
            payment_hold_max_s: p.payment_hold_max_s,
            cancel_cutoff_s: p.cancel_cutoff_s,
        }
    }
}

boxoffice_raft::versioned_v1! {
    PaymentCounts => "payment counts record",
    EventPaymentSettings => "event payment settings record",
    HoldPayment => "hold payment record",
    Refund => "refund record",
    BookingCancellation => "booking cancellation record",
    SeenUntil => "provider event record",
}
