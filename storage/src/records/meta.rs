//! A group's state-machine bookkeeping.

use boxoffice_raft::{LogId, StoredMembership};
use serde::{Deserialize, Serialize};

/// Per-group state-machine bookkeeping (`table::META`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SmMeta {
    /// Last applied log id.
    pub last_applied: Option<LogId>,
    /// Last applied membership.
    pub membership: StoredMembership,
    /// State-machine time: max of all applied stamps, ms since the Unix epoch.
    pub time_ms: u64,
    /// Last id handed out in this group (venues, performers, events, holds, bookings).
    pub last_id: u64,
}

boxoffice_raft::versioned_v1!(SmMeta => "state-machine meta record");
