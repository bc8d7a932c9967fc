//! Replica placement on the node: the directory of which nodes hold each
//! group (read from this node's catalogue replica, see
//! `boxoffice_raft::command::PlacementUpdate`), the routes to groups this node
//! does not host, keeping the directory in step with the groups' memberships
//! ([`reconcile`]), relaying reads to a node that hosts the shard ([`relay`]),
//! moving replicas between nodes ([`moves`]) and leaderships between
//! voters ([`leaders`]).
//!
//! A group's Raft membership is the truth; the directory may lag it by a
//! moment. Whoever routes by a stale entry is told so (`not_leader` with a
//! hint, `shard_not_here`) and tries the next replica or the hint.

pub mod balancer;
pub mod initial;
pub mod leaders;
pub mod moves;
pub mod reconcile;
pub mod relay;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use boxoffice_raft::{GroupId, NodeId};
use boxoffice_storage::records::{GroupPlacement, NodeEntry};

use crate::node::Node;

/// The placement directory as this node's catalogue replica has it.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    /// The catalogue index it was read at.
    pub index: u64,
    /// The replication factor, once set.
    pub replication_factor: Option<u8>,
    /// Every node, by id.
    pub nodes: BTreeMap<NodeId, NodeEntry>,
    /// Every group's replicas, by group.
    pub groups: BTreeMap<u16, GroupPlacement>,
}

impl Directory {
    /// The members (voters, then learners) of `group` with their addresses.
    pub fn members(&self, group: GroupId) -> Vec<(NodeId, String)> {
        let Some(p) = self.groups.get(&group.0) else {
            return Vec::new();
        };
        p.voters
            .iter()
            .chain(&p.learners)
            .filter_map(|id| self.nodes.get(id).map(|n| (*id, n.addr.clone())))
            .collect()
    }
}

/// What the node keeps about placement: the directory as last read, the
/// leader last heard of for each group it does not host, and the operations
/// in flight.
#[derive(Default)]
pub struct PlacementState {
    directory: Mutex<Option<Arc<Directory>>>,
    hints: Mutex<BTreeMap<GroupId, (NodeId, String)>>,
    floors: Mutex<BTreeMap<GroupId, u64>>,
    turn: AtomicUsize,
    /// Replica moves and leadership handoffs in progress on this node (see
    /// [`moves`], [`leaders`]).
    pub moves: moves::InFlight,
    /// Groups whose leadership this node is handing over (see [`leaders`]).
    pub handoffs: leaders::Handoffs,
}

impl Node {
    /// The placement directory of this node's catalogue replica (read again
    /// only when the catalogue has applied something since).
    pub fn directory(&self) -> Arc<Directory> {
        let Some(cat) = self.stores(GroupId::CATALOGUE) else {
            return Arc::default();
        };
        let index = cat.sm.applied().borrow().index;
        let mut cached = self
            .placement
            .directory
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(d) = cached.as_ref().filter(|d| d.index == index) {
            return d.clone();
        }
        let p = cat.reader.begin_applied().placement();
        let d = Arc::new(Directory {
            index,
            replication_factor: p.policy.map(|p| p.replication_factor),
            nodes: p.nodes.into_iter().collect(),
            groups: p.groups.into_iter().collect(),
        });
        *cached = Some(d.clone());
        d
    }

    /// Proposes an update of the placement directory to the catalogue; a
    /// refusal (a bad update) is `Unavailable`, naming it.
    pub async fn propose_placement(
        &self,
        update: boxoffice_raft::command::PlacementUpdate,
    ) -> Result<(), crate::node::ProposeError> {
        let o = self
            .propose(
                GroupId::CATALOGUE,
                None,
                boxoffice_raft::command::Command::SetPlacement(update),
            )
            .await?;
        o.result.map(|_| ()).map_err(|r| {
            crate::node::ProposeError::Unavailable(format!(
                "the placement directory refused the update: {r:?}"
            ))
        })
    }

    /// Where to send a request for `group`'s leader: the leader itself when
    /// this node hosts the group (as Raft knows it); else the leader last
    /// heard of, or the directory's replicas in turn.
    pub fn route(&self, group: GroupId) -> Option<(NodeId, String)> {
        if self.hosts(group) {
            return self.leader_of(group);
        }
        if let Some(h) = self
            .placement
            .hints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&group)
        {
            return Some(h.clone());
        }
        let members = self.directory().members(group);
        if members.is_empty() {
            return None;
        }
        let turn = self.placement.turn.fetch_add(1, Ordering::Relaxed);
        Some(members[turn % members.len()].clone())
    }

    /// Notes what a replica of a group this node does not host said of its
    /// leader: `Some` the leader to go to next, `None` forget the hint (the
    /// next request tries the directory's replicas in turn).
    pub fn note_route(&self, group: GroupId, leader: Option<(NodeId, String)>) {
        if self.hosts(group) {
            return;
        }
        let mut hints = self
            .placement
            .hints
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match leader {
            Some(l) => {
                hints.insert(group, l);
            }
            None => {
                hints.remove(&group);
            }
        }
    }

    /// The nodes to relay a request for `group` to, in the order to try
    /// them: its replicas other than this node, starting at one fixed for
    /// this node (so different nodes spread their reads over the replicas,
    /// and one node's reads go to one replica while it answers).
    pub fn relay_targets(&self, group: GroupId) -> Vec<(NodeId, String)> {
        let dir = self.directory();
        let mut members: Vec<_> = dir
            .members(group)
            .into_iter()
            .filter(|(id, _)| *id != self.id())
            .collect();
        if members.is_empty() {
            return members;
        }
        let start = usize::try_from(self.id()).unwrap_or(0) % members.len();
        members.rotate_left(start);
        members
    }

    /// The applied index of `group` that reads relayed from this node have
    /// seen (at least): a later relayed read is served from a replica at or
    /// past it, so reads through one node never go back in time.
    pub fn relay_floor(&self, group: GroupId) -> u64 {
        let floors = self
            .placement
            .floors
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        floors.get(&group).copied().unwrap_or(0)
    }

    /// Raises `group`'s relay floor to `index`.
    pub fn raise_relay_floor(&self, group: GroupId, index: u64) {
        let mut floors = self
            .placement
            .floors
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let f = floors.entry(group).or_default();
        *f = (*f).max(index);
    }
}

/// `[placement]`: how replicas move on this node.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlacementSettings {
    /// How long a replica being added may take to catch up with its group's
    /// leader (ms) before the move is rolled back (the learner removed).
    pub catch_up_timeout_ms: u64,
    /// Replica moves this node runs at once as their groups' leader; one more
    /// is refused (`unavailable`, try again).
    pub moves_in_flight_max: usize,
    /// How often each group's leader compares the directory's entry for its
    /// group with the group's membership, and corrects it (ms).
    pub reconcile_interval_ms: u64,
    /// How often the balancer (on the catalogue's leader) makes its next move
    /// at most (ms).
    pub balance_interval_ms: u64,
    /// Balance replica counts between up nodes (moves off draining and down
    /// nodes are made either way).
    pub balance: bool,
    /// Balance leaderships between up nodes, one handoff a balancer step
    /// (each holds one group's writes for about a leader lease); leaderships
    /// leave draining nodes either way.
    pub balance_leaders: bool,
    /// On SIGTERM, the longest this node spends handing its leaderships to
    /// other voters before it stops (ms; 0: it stops at once and the others
    /// elect a leader after the lease).
    pub handoff_on_stop_ms: u64,
    /// A node not heard from for this long (ms) is marked down, and its
    /// replicas are recreated on other nodes.
    pub down_after_ms: u64,
}

impl Default for PlacementSettings {
    fn default() -> Self {
        PlacementSettings {
            catch_up_timeout_ms: 60_000,
            moves_in_flight_max: 2,
            reconcile_interval_ms: 1000,
            balance_interval_ms: 2000,
            balance: true,
            balance_leaders: true,
            handoff_on_stop_ms: 5000,
            down_after_ms: 300_000,
        }
    }
}

impl PlacementSettings {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), crate::config::ConfigError> {
        let rule = |settings: &'static str, rule: &str| {
            Err(crate::config::ConfigError::Rule {
                settings,
                rule: rule.to_string(),
            })
        };
        if !(100..=3_600_000).contains(&self.catch_up_timeout_ms) {
            return rule("placement.catch_up_timeout_ms", "must be 100..=3600000");
        }
        if !(1..=64).contains(&self.moves_in_flight_max) {
            return rule("placement.moves_in_flight_max", "must be 1..=64");
        }
        if !(50..=60_000).contains(&self.reconcile_interval_ms) {
            return rule("placement.reconcile_interval_ms", "must be 50..=60000");
        }
        if !(100..=600_000).contains(&self.balance_interval_ms) {
            return rule("placement.balance_interval_ms", "must be 100..=600000");
        }
        if self.handoff_on_stop_ms > 600_000 {
            return rule("placement.handoff_on_stop_ms", "must be 0..=600000");
        }
        if !(1000..=86_400_000).contains(&self.down_after_ms) {
            return rule("placement.down_after_ms", "must be 1000..=86400000");
        }
        Ok(())
    }
}
