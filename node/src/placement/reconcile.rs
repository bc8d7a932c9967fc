//! Keeps the placement directory in step with the groups: each group's leader
//! compares the directory's entry for its group with the group's membership
//! every `placement.reconcile_interval_ms` and, when they differ, proposes the
//! membership (with its log index as the epoch) to the catalogue. So a move,
//! a membership change made by hand, or a restore all end up in the
//! directory, and an entry never goes back to an older membership.

use std::sync::Weak;
use std::time::Duration;

use boxoffice_raft::command::{
    Command, GroupPlacementSpec, NodeSpec, NodeStateSpec, PlacementUpdate, FEATURE_LEVEL_PLACEMENT,
};
use boxoffice_raft::{GroupId, NodeId};

use crate::node::Node;

/// The reconciling task of a node.
pub async fn run(node: Weak<Node>) {
    loop {
        let Some(n) = node.upgrade() else { return };
        let interval = Duration::from_millis(n.config.placement.reconcile_interval_ms);
        if n.directory_writable() {
            for group in n.hosted() {
                if n.leader_of(group).map(|(id, _)| id) == Some(n.id()) {
                    if group.is_catalogue() {
                        n.publish_nodes().await;
                    }
                    n.publish_placement(group).await;
                }
            }
        }
        drop(n);
        tokio::time::sleep(interval).await;
    }
}

impl Node {
    /// True once this node's catalogue replica is at the feature level the
    /// directory needs.
    pub fn directory_writable(&self) -> bool {
        self.stores(GroupId::CATALOGUE)
            .is_some_and(|c| c.sm.feature_level() >= FEATURE_LEVEL_PLACEMENT)
    }

    /// `group`'s membership as this node (its leader) has it: voters,
    /// learners, the log index of the membership.
    pub fn membership_of(&self, group: GroupId) -> Option<(Vec<NodeId>, Vec<NodeId>, u64)> {
        let raft = self.groups.get(group)?;
        let m = raft.metrics().borrow().membership_config.clone();
        let voters = m.membership().voter_ids().collect();
        let learners = m.membership().learner_ids().collect();
        Some((voters, learners, m.log_id().map_or(0, |l| l.index)))
    }

    /// Writes `group`'s membership into the directory if the directory's
    /// entry differs (run by the group's leader; a stale write is skipped by
    /// apply, see `PlacementUpdate`).
    pub async fn publish_placement(&self, group: GroupId) {
        if !self.directory_writable() {
            return;
        }
        let Some((voters, learners, epoch)) = self.membership_of(group) else {
            return;
        };
        // A membership in a joint change is published once it settles.
        if self.groups.get(group).is_some_and(|r| {
            r.metrics()
                .borrow()
                .membership_config
                .membership()
                .get_joint_config()
                .len()
                > 1
        }) {
            return;
        }
        let dir = self.directory();
        // Also when only the epoch differs (a membership changed and changed
        // back): answers name the epoch (`x-boxoffice-epoch`).
        if dir.groups.get(&group.0).is_some_and(|p| p.epoch >= epoch) {
            return;
        }
        let update = PlacementUpdate {
            replication_factor: None,
            nodes: Vec::new(),
            groups: vec![GroupPlacementSpec {
                group: group.0,
                voters,
                learners,
                epoch,
            }],
        };
        match self
            .propose(GroupId::CATALOGUE, None, Command::SetPlacement(update))
            .await
        {
            Ok(o) => {
                tracing::debug!(%group, epoch, outcome = ?o.result, "placement directory updated")
            }
            Err(e) => tracing::debug!(%group, error = %e, "placement directory not updated yet"),
        }
    }

    /// On the catalogue's leader: every member of the catalogue (every node of
    /// the cluster) has a directory entry with its current address (a new
    /// entry is `up`, without labels; an existing one keeps its labels and
    /// state). So a restored cluster, whose directory starts without nodes,
    /// gets its nodes back.
    pub async fn publish_nodes(&self) {
        let Some(raft) = self.groups.get(GroupId::CATALOGUE) else {
            return;
        };
        let members: Vec<(NodeId, String)> = raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect();
        let dir = self.directory();
        // Not before the bootstrap has written the directory (with the
        // members' labels, which this would otherwise race and lose).
        if dir.replication_factor.is_none() {
            return;
        }
        let nodes: Vec<NodeSpec> = members
            .into_iter()
            .filter_map(|(id, addr)| match dir.nodes.get(&id) {
                Some(e) if e.addr == addr => None,
                Some(e) => Some(NodeSpec {
                    id,
                    addr,
                    labels: e.labels.clone(),
                    state: e.state,
                }),
                None => Some(NodeSpec {
                    id,
                    addr,
                    labels: Vec::new(),
                    state: NodeStateSpec::Up,
                }),
            })
            .collect();
        if nodes.is_empty() {
            return;
        }
        let update = PlacementUpdate {
            replication_factor: None,
            nodes,
            groups: Vec::new(),
        };
        if let Err(e) = self
            .propose(GroupId::CATALOGUE, None, Command::SetPlacement(update))
            .await
        {
            tracing::debug!(error = %e, "directory's nodes not updated yet");
        }
    }

    /// Deletes this node's replica of a group whose leader removed it (asked
    /// by that leader); refused while this node still leads the group.
    pub async fn unhost_removed(&self, group: GroupId) -> Result<(), String> {
        if self.leader_of(group).map(|(id, _)| id) == Some(self.id()) {
            return Err(format!("this node leads {group}"));
        }
        self.unhost(group).await
    }
}
