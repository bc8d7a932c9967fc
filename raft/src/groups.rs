//! The Raft groups one node hosts, by id.

use std::collections::BTreeMap;
use std::sync::RwLock;

use crate::types::{GroupId, Raft};

/// Registry of the Raft groups running on this node.
///
/// Groups are added when the node learns the cluster's shape (at start-up from its
/// own data, or when asked to prepare for bootstrap), and when it is asked to
/// host a replica (a move); removed when it gives a replica away.
#[derive(Default)]
pub struct Groups {
    map: RwLock<BTreeMap<GroupId, Raft>>,
}

impl Groups {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The group's Raft handle, if this node hosts it.
    pub fn get(&self, group: GroupId) -> Option<Raft> {
        // A poisoned lock means a thread panicked while inserting; the map itself is
        // still consistent (insert is a single operation), so keep serving.
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.get(&group).cloned()
    }

    /// Adds a group. Returns false (and leaves the existing one) if it is already there.
    pub fn insert(&self, group: GroupId, raft: Raft) -> bool {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if map.contains_key(&group) {
            return false;
        }
        map.insert(group, raft);
        true
    }

    /// Removes a group; its Raft handle, if it was there.
    pub fn remove(&self, group: GroupId) -> Option<Raft> {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        map.remove(&group)
    }

    /// All hosted groups, in id order.
    pub fn all(&self) -> Vec<(GroupId, Raft)> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(g, r)| (*g, r.clone())).collect()
    }

    /// Number of hosted groups.
    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when no group is hosted yet (the node awaits bootstrap).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
