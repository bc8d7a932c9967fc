//! Remembered answers for exactly-once retries.

use boxoffice_raft::command::Outcome;
use serde::{Deserialize, Serialize};

/// A remembered answer (`table::SESSION`).
///
/// The answer is the log's own [`Outcome`], which follows the evolution rule of
/// the log format (new variants only at the end; see `boxoffice_raft::codec`): a
/// retry is answered exactly as the first request was, by whichever version
/// remembered it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The command's fingerprint (`command::fingerprint`), to tell a retry from a
    /// key reused for a different request.
    pub fingerprint: u64,
    /// The first answer.
    pub outcome: Outcome,
    /// When the record may be forgotten.
    pub expires_at_ms: u64,
}

boxoffice_raft::versioned_v1!(SessionRecord => "session record");

/// How many counted sessions a client has live (`table::USER_SESSIONS`, from
/// feature level 1): one per entry of `table::SESSION_DEADLINE` marked counted.
/// Absent means none.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSessions {
    /// Live counted sessions.
    pub live: u32,
}

boxoffice_raft::versioned_v1!(UserSessions => "user sessions record");
