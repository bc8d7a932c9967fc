//! Members many answers share.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where and when a write was applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Applied {
    /// Group (0 = catalogue, 1.. = inventory shard).
    pub shard: u16,
    /// Log index of the entry.
    pub index: u64,
    /// State-machine time at which it was applied, ms since the Unix epoch.
    pub time_ms: u64,
}

/// How fresh a read is: which replica state it saw, and how far that state
/// trails the answering node's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Freshness {
    /// Group read.
    pub shard: u16,
    /// Last log index applied by the answering replica.
    pub applied_index: u64,
    /// State-machine time of that entry (ms since the Unix epoch).
    pub applied_time_ms: u64,
    /// Time the answer was judged at (hold expiry): the applied time.
    pub as_of_ms: u64,
    /// The answering node's clock when it answered (0 from a node too old to
    /// report it).
    #[serde(default)]
    pub clock_ms: u64,
    /// `clock_ms` minus `applied_time_ms`: how stale the replica is, bounded on a
    /// healthy cluster by the leader's idle ticks (0 when not reported).
    #[serde(default)]
    pub lag_ms: u64,
}

/// Read consistency, `?consistency=`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// From the answering node's replica (fast; says how fresh it is).
    #[default]
    Local,
    /// After a read index from the leader: sees every write acknowledged before.
    Linearizable,
}

impl Consistency {
    /// Query-string value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Consistency::Local => "local",
            Consistency::Linearizable => "linearizable",
        }
    }
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Consistency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "local" => Ok(Consistency::Local),
            "linearizable" => Ok(Consistency::Linearizable),
            other => Err(format!(
                "consistency must be local or linearizable, not {other:?}"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consistency_parses_what_it_prints() {
        for c in [Consistency::Local, Consistency::Linearizable] {
            assert_eq!(c.as_str().parse::<Consistency>(), Ok(c));
            assert_eq!(
                serde_json::to_string(&c).unwrap(),
                format!("\"{}\"", c.as_str())
            );
        }
        assert!("eventual".parse::<Consistency>().is_err());
    }
}
