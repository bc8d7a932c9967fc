//! The placement directory (feature level 4, catalogue only): the cluster's
//! nodes, its replication factor and each group's replicas.

use boxoffice_raft::command::NodeStateSpec;
use serde::{Deserialize, Serialize};

/// A node (`table::PLACEMENT_NODE`, by node id).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    /// Its cluster address.
    pub addr: String,
    /// Its location labels, by name.
    pub labels: Vec<(String, String)>,
    /// Its state.
    pub state: NodeStateSpec,
    /// When it was last set (state-machine time).
    pub updated_at_ms: u64,
}

/// One group's replicas (`table::PLACEMENT_GROUP`, by group).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupPlacement {
    /// Voters.
    pub voters: Vec<u64>,
    /// Learners.
    pub learners: Vec<u64>,
    /// The log index of the group's membership this describes.
    pub epoch: u64,
}

/// The cluster's placement settings (`table::PLACEMENT_POLICY`, one record).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementPolicy {
    /// Voters each inventory shard keeps.
    pub replication_factor: u8,
}

boxoffice_raft::versioned_v1! {
    NodeEntry => "placement node record",
    GroupPlacement => "group placement record",
    PlacementPolicy => "placement policy record",
}
