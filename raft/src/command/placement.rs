//! The placement directory (feature level 4): which nodes hold each group's
//! replicas, kept in the catalogue so that every node (the catalogue has a
//! replica everywhere) can route a request for a shard it does not host.
//!
//! A group's own Raft membership is the truth; the directory is what nodes
//! route by. Each group's entry carries an epoch, the log index of the
//! membership it describes: an update with an epoch no higher than the stored
//! one is stale and skipped, so updates racing after moves end in the newest.

use serde::{Deserialize, Serialize};

/// The feature level the placement directory needs.
pub const FEATURE_LEVEL_PLACEMENT: u32 = 4;
/// Highest replication factor a cluster may set.
pub const REPLICATION_FACTOR_MAX: u8 = 7;
/// Replication factor of a cluster that does not set one.
pub const REPLICATION_FACTOR_DEFAULT: u8 = 3;
/// Most nodes the directory keeps.
pub const PLACEMENT_NODES_MAX: usize = 1024;
/// Most location labels on one node.
pub const NODE_LABELS_MAX: usize = 8;
/// Longest label name or value (bytes).
pub const NODE_LABEL_LEN_MAX: usize = 64;
/// Longest node cluster address (bytes).
pub const NODE_ADDR_LEN_MAX: usize = 256;
/// Most members (voters and learners) of one group in the directory.
pub const GROUP_MEMBERS_MAX: usize = PLACEMENT_NODES_MAX;

/// Whether a node takes replicas (the directory's word; see
/// `crate::placement::NodeState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NodeStateSpec {
    /// Takes replicas and leaderships.
    Up,
    /// Gives its replicas away and takes none.
    Draining,
    /// Down for longer than `down_after`: its replicas are recreated elsewhere.
    Down,
}

/// A node of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// Its id.
    pub id: u64,
    /// Its cluster (peer) address.
    pub addr: String,
    /// Location labels (`zone`, `rack`, `host`, ...), by name, names unique.
    pub labels: Vec<(String, String)>,
    /// Its state.
    pub state: NodeStateSpec,
}

/// One group's replicas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupPlacementSpec {
    /// The group (0: the catalogue).
    pub group: u16,
    /// Its voters (at least one, unique).
    pub voters: Vec<u64>,
    /// Its learners (unique, none a voter).
    pub learners: Vec<u64>,
    /// The log index of the membership this describes.
    pub epoch: u64,
}

/// An update of the directory: each part optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementUpdate {
    /// The cluster's replication factor.
    pub replication_factor: Option<u8>,
    /// Nodes added or changed.
    pub nodes: Vec<NodeSpec>,
    /// Groups' replicas (each only if newer than the stored entry).
    pub groups: Vec<GroupPlacementSpec>,
}

impl PlacementUpdate {
    /// Everything wrong with the update, or `Ok`.
    pub fn check(&self) -> Result<(), String> {
        if let Some(rf) = self.replication_factor {
            if rf == 0 || rf > REPLICATION_FACTOR_MAX {
                return Err(format!(
                    "replication_factor must be 1..={REPLICATION_FACTOR_MAX}"
                ));
            }
        }
        if self.nodes.len() > PLACEMENT_NODES_MAX {
            return Err(format!("at most {PLACEMENT_NODES_MAX} nodes"));
        }
        let mut ids = std::collections::BTreeSet::new();
        for n in &self.nodes {
            if !ids.insert(n.id) {
                return Err(format!("node {} listed twice", n.id));
            }
            if n.addr.is_empty() || n.addr.len() > NODE_ADDR_LEN_MAX {
                return Err(format!(
                    "node {}: addr must be 1..={NODE_ADDR_LEN_MAX} bytes",
                    n.id
                ));
            }
            if n.labels.len() > NODE_LABELS_MAX {
                return Err(format!("node {}: at most {NODE_LABELS_MAX} labels", n.id));
            }
            let mut names = std::collections::BTreeSet::new();
            for (k, v) in &n.labels {
                let ok = |s: &str| !s.is_empty() && s.len() <= NODE_LABEL_LEN_MAX;
                if !ok(k) || !ok(v) {
                    return Err(format!(
                        "node {}: label names and values are 1..={NODE_LABEL_LEN_MAX} bytes",
                        n.id
                    ));
                }
                if !names.insert(k) {
                    return Err(format!("node {}: label {k:?} twice", n.id));
                }
            }
        }
        if self.groups.len() > usize::from(crate::SHARDS_MAX) + 1 {
            return Err("more groups than a cluster has".into());
        }
        let mut groups = std::collections::BTreeSet::new();
        for g in &self.groups {
            if g.group > crate::SHARDS_MAX {
                return Err(format!("no group {}", g.group));
            }
            if !groups.insert(g.group) {
                return Err(format!("group {} listed twice", g.group));
            }
            if g.voters.is_empty() {
                return Err(format!("group {} has no voter", g.group));
            }
            if g.voters.len() + g.learners.len() > GROUP_MEMBERS_MAX {
                return Err(format!("group {}: too many members", g.group));
            }
            let mut members = std::collections::BTreeSet::new();
            for id in g.voters.iter().chain(&g.learners) {
                if !members.insert(*id) {
                    return Err(format!("group {}: node {id} listed twice", g.group));
                }
            }
        }
        Ok(())
    }
}
