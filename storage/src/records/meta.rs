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

/// A group's feature level (`table::FEATURES`; see
/// `boxoffice_raft::command::FEATURE_LEVEL_MAX`). Absent means level 0.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Features {
    /// The level enabled.
    pub level: u32,
    /// True while the level-0 session expiry index (`table::SESSION_EXPIRY`)
    /// may still hold entries: set when the group leaves level 0, cleared by
    /// the pruning that finds it empty (no session is added to it after).
    pub legacy_session_expiry: bool,
}

boxoffice_raft::versioned_v1!(Features => "feature level record");
