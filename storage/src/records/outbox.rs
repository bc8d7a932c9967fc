//! The outgoing-webhook outbox (feature level 2): the site's endpoints, the
//! events the shard has to tell it about, and each event's delivery to each
//! endpoint.

use boxoffice_raft::command::OutboxKind;
use serde::{Deserialize, Serialize};

/// An endpoint of the site (`table::WEBHOOK_ENDPOINT`, by name).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEndpoint {
    /// Where deliveries are POSTed.
    pub url: String,
    /// The signing secret.
    pub secret: String,
    /// The kinds it receives (empty: all).
    pub kinds: Vec<OutboxKind>,
    /// False: nothing new is queued for it.
    pub enabled: bool,
    /// When it was last set.
    pub updated_at_ms: u64,
}

impl WebhookEndpoint {
    /// True when it takes events of `kind`.
    pub fn wants(&self, kind: OutboxKind) -> bool {
        self.enabled && (self.kinds.is_empty() || self.kinds.contains(&kind))
    }
}

/// An event for the site (`table::OUTBOX`, by outbox seq).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEvent {
    /// What happened.
    pub kind: OutboxKind,
    /// State-machine time it happened at.
    pub created_at_ms: u64,
    /// The ticketed event.
    pub event_id: u64,
    /// The hold.
    pub hold_seq: u64,
    /// The booking, if there is one.
    pub booking_seq: Option<u64>,
    /// The buyer.
    pub user: String,
    /// The payment, if there is one.
    pub payment_id: Option<String>,
    /// Amount (the booking's, the refund's).
    pub amount_cents: u64,
    /// Seats (empty for general admission).
    pub seat_ids: Vec<u32>,
    /// Tickets.
    pub quantity: u32,
}

/// Where one event's delivery to one endpoint stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryState {
    /// To be tried at `next_at_ms`.
    Pending {
        /// When.
        next_at_ms: u64,
    },
    /// Answered 2xx.
    Delivered {
        /// When.
        at_ms: u64,
    },
    /// Not answered 2xx within the retry window.
    GaveUp {
        /// When.
        at_ms: u64,
    },
}

/// One event's delivery to one endpoint (`table::DELIVERY`, by endpoint and seq).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Attempts so far.
    pub attempts: u32,
    /// The last attempt's HTTP status (0: none yet, or no answer).
    pub last_status: u16,
    /// Where it stands.
    pub state: DeliveryState,
    /// When it was queued (or replayed): the retry window starts here.
    pub queued_at_ms: u64,
}

/// The last outbox seq used (`table::OUTBOX_SEQ`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OutboxSeq(pub u64);

boxoffice_raft::versioned_v1! {
    WebhookEndpoint => "webhook endpoint record",
    OutboxEvent => "outbox event record",
    Delivery => "delivery record",
    OutboxSeq => "outbox seq record",
}
