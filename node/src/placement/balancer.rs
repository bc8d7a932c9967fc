//! The cluster's replica balancer, run by the catalogue's leader (one at a
//! time in the cluster): every `placement.balance_interval_ms` it
//!
//! 1. marks a node `down` that it has not heard from (its clock prober reads
//!    every member's clock) for `placement.down_after_ms`, and `up` again
//!    when it answers;
//! 2. makes one step, the first of:
//!    - its own catalogue leadership handed to an up voter, when its node is
//!      draining (so it hands over the balancer too);
//!    - a catalogue voter on a draining or down node handed to one of its
//!      learners;
//!    - a leadership handed from a draining node to another voter (see
//!      [`super::leaders`]), so that a drain's replica moves never remove a
//!      leader;
//!    - one replica move, `boxoffice_raft::placement::ClusterView::next_move`:
//!      first off a draining or down node (a drain, a re-replication), then,
//!      with `placement.balance = true`, from the node holding most replicas
//!      to the one holding fewest while they differ by more than one;
//!    - with `placement.balance_leaders = true`, one leadership handed from
//!      the node leading most shards towards the one leading fewest
//!      (`ClusterView::next_leader_move`), while they differ by more than one.
//!
//! Where the leaders are it asks every node (`/internal/v1/leading`). One
//! step at a time, each waited for: steps are rate-limited by the interval
//! and `placement.moves_in_flight_max` on the groups' leaders.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Weak;
use std::time::{Duration, Instant};

use boxoffice_raft::command::{NodeSpec, NodeStateSpec, PlacementUpdate};
use boxoffice_raft::placement::{ClusterView, Move, NodeInfo, NodeState, ShardReplicas};
use boxoffice_raft::{GroupId, NodeId};

use super::initial::LOCATION_LABELS;
use super::moves::MoveRequest;
use super::Directory;
use crate::node::{Node, ProposeError};

/// The view placement scores, from the directory.
pub fn view_of(dir: &Directory) -> ClusterView {
    ClusterView {
        location_labels: LOCATION_LABELS.iter().map(|l| l.to_string()).collect(),
        nodes: dir
            .nodes
            .iter()
            .map(|(id, n)| {
                (
                    *id,
                    NodeInfo {
                        id: *id,
                        labels: n.labels.iter().cloned().collect(),
                        state: match n.state {
                            NodeStateSpec::Up => NodeState::Up,
                            NodeStateSpec::Draining => NodeState::Draining,
                            NodeStateSpec::Down => NodeState::Down,
                        },
                    },
                )
            })
            .collect(),
        shards: dir
            .groups
            .iter()
            .filter(|(g, _)| **g != 0)
            .map(|(g, p)| {
                (
                    GroupId(*g),
                    ShardReplicas {
                        voters: p.voters.iter().copied().collect(),
                        leader: None,
                    },
                )
            })
            .collect(),
    }
}

/// The balancer task of a node (it acts only while the node leads the catalogue).
pub async fn run(node: Weak<Node>) {
    // Not before the cluster has had time to hear from every node.
    let started = Instant::now();
    loop {
        let Some(n) = node.upgrade() else { return };
        let interval = Duration::from_millis(n.config.placement.balance_interval_ms);
        let leads_catalogue = n.leader_of(GroupId::CATALOGUE).map(|(id, _)| id) == Some(n.id());
        if leads_catalogue && n.directory_writable() {
            n.mark_down_and_up(started).await;
            n.next_step().await;
        }
        drop(n);
        tokio::time::sleep(interval).await;
    }
}

impl Node {
    /// Writes `state` for node `id` into the directory.
    pub async fn set_node_state(
        &self,
        id: NodeId,
        state: NodeStateSpec,
    ) -> Result<(), ProposeError> {
        let dir = self.directory();
        let Some(entry) = dir.nodes.get(&id) else {
            return Err(ProposeError::Unavailable(format!(
                "node {id} is not in the placement directory"
            )));
        };
        if entry.state == state {
            return Ok(());
        }
        let update = PlacementUpdate {
            replication_factor: None,
            nodes: vec![NodeSpec {
                id,
                addr: entry.addr.clone(),
                labels: entry.labels.clone(),
                state,
            }],
            groups: Vec::new(),
        };
        self.propose_placement(update).await
    }

    /// Marks nodes not heard from for `placement.down_after_ms` down, and
    /// down nodes heard from again up.
    async fn mark_down_and_up(&self, started: Instant) {
        let after = Duration::from_millis(self.config.placement.down_after_ms);
        if started.elapsed() < after {
            return;
        }
        let dir = self.directory();
        for (id, entry) in &dir.nodes {
            if *id == self.id() {
                continue;
            }
            let silent = self
                .clocks
                .last_heard(*id)
                .is_none_or(|at| at.elapsed() > after);
            let to = match (entry.state, silent) {
                (NodeStateSpec::Up, true) => NodeStateSpec::Down,
                (NodeStateSpec::Down, false) => NodeStateSpec::Up,
                _ => continue,
            };
            match self.set_node_state(*id, to).await {
                Ok(()) => {
                    tracing::warn!(node = id, state = ?to, "node state changed by the balancer")
                }
                Err(e) => tracing::debug!(node = id, error = %e, "node state not changed"),
            }
        }
    }

    /// Takes the balancer's next step (see the module's documentation).
    async fn next_step(&self) {
        let dir = self.directory();
        let me_up = dir
            .nodes
            .get(&self.id())
            .is_none_or(|n| n.state == NodeStateSpec::Up);
        if !me_up {
            let up_voter = dir.groups.get(&0).and_then(|cat| {
                cat.voters.iter().copied().find(|v| {
                    *v != self.id()
                        && dir
                            .nodes
                            .get(v)
                            .is_some_and(|n| n.state == NodeStateSpec::Up)
                })
            });
            if let Some(to) = up_voter {
                self.leader_step(GroupId::CATALOGUE, to).await;
                return;
            }
        }
        if let Some(m) = self.next_catalogue_handover() {
            self.balance_step(m).await;
            return;
        }
        let mut view = view_of(&dir);
        self.fill_leaders(&mut view).await;
        let leader_move = view.next_leader_move();
        let from_up = |id: NodeId| {
            view.nodes
                .get(&id)
                .is_some_and(|n| n.state == NodeState::Up)
        };
        if let Some(lm) = leader_move.filter(|lm| !from_up(lm.from)) {
            self.leader_step(lm.shard, lm.to).await;
        } else if let Some(m) = self.next_replica_move() {
            self.balance_step(m).await;
        } else if let Some(lm) = leader_move.filter(|_| self.config.placement.balance_leaders) {
            self.leader_step(lm.shard, lm.to).await;
        }
    }

    /// Sets each shard's leader in `view`, as the nodes (up or draining) say.
    async fn fill_leaders(&self, view: &mut ClusterView) {
        let dir = self.directory();
        let timeout = Duration::from_millis(self.config.raft.heartbeat_interval_ms * 10);
        let asks = dir
            .nodes
            .iter()
            .filter(|(_, n)| n.state != NodeStateSpec::Down)
            .map(|(id, n)| async move {
                if *id == self.id() {
                    return (*id, self.leading().into_iter().map(|g| g.0).collect());
                }
                let led: Vec<u16> = self
                    .rpc
                    .call(&n.addr, "/internal/v1/leading", &(), timeout)
                    .await
                    .unwrap_or_default();
                (*id, led)
            });
        for (id, led) in futures::future::join_all(asks).await {
            for g in led {
                if let Some(s) = view.shards.get_mut(&GroupId(g)) {
                    s.leader = Some(id);
                }
            }
        }
    }

    async fn leader_step(&self, group: GroupId, to: NodeId) {
        tracing::info!(%group, to, "balancer: handing a leadership over");
        match self.transfer_leader(group, to).await {
            Ok(done) => {
                tracing::info!(%group, leader = done.leader, writes_held_ms = done.writes_held_ms, "balancer: leadership handed over")
            }
            Err(e) => {
                tracing::warn!(%group, to, error = %e, "balancer: leadership not handed over")
            }
        }
    }

    /// A catalogue voter on a draining or down node, to hand to an up learner.
    fn next_catalogue_handover(&self) -> Option<Move> {
        let dir = self.directory();
        let cat = dir.groups.get(&0)?;
        let up = |id: &NodeId| {
            dir.nodes
                .get(id)
                .is_some_and(|n| n.state == NodeStateSpec::Up)
        };
        let from = *cat.voters.iter().find(|v| !up(v))?;
        let to = *cat.learners.iter().find(|l| up(l))?;
        Some(Move {
            shard: GroupId::CATALOGUE,
            from,
            to,
        })
    }

    /// The balancer's next move of a shard replica, if any.
    fn next_replica_move(&self) -> Option<Move> {
        let dir = self.directory();
        let view = view_of(&dir);
        let m = view.next_move()?;
        let from_up = view
            .nodes
            .get(&m.from)
            .is_some_and(|n| n.state == NodeState::Up);
        // A move between up nodes is balancing, only when it is on.
        if from_up && !self.config.placement.balance {
            return None;
        }
        Some(m)
    }

    async fn balance_step(&self, m: Move) {
        let dir = self.directory();
        let Some(to) = dir.nodes.get(&m.to) else {
            return;
        };
        let req = MoveRequest {
            from: m.from,
            to: m.to,
            to_addr: to.addr.clone(),
        };
        tracing::info!(group = %m.shard, from = m.from, to = m.to, "balancer: moving a replica");
        match self.move_replica(m.shard, req).await {
            Ok(done) => tracing::info!(group = %m.shard, voters = ?done.voters, "balancer: moved"),
            Err(e) => tracing::warn!(group = %m.shard, error = %e, "balancer: move not made"),
        }
        // The directory shows a move once the group's leader publishes it:
        // wait for it, so the next step does not plan on the old placement.
        let deadline =
            Instant::now() + Duration::from_millis(self.config.limits.membership_timeout_ms);
        while Instant::now() < deadline {
            let voters: BTreeSet<NodeId> = self
                .directory()
                .groups
                .get(&m.shard.0)
                .map(|p| p.voters.iter().copied().collect())
                .unwrap_or_default();
            if voters.contains(&m.to) && !voters.contains(&m.from) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Adds a new node to the cluster: it starts the catalogue (as a learner,
    /// so search and event views are local there too) and enters the
    /// directory as `up`, where the balancer gives it replicas. The node must
    /// be running with an empty data directory. Idempotent.
    pub async fn add_node(
        &self,
        id: NodeId,
        addr: String,
        labels: BTreeMap<String, String>,
    ) -> Result<(), ProposeError> {
        let shards = self
            .shards()
            .ok_or_else(|| ProposeError::Unavailable("not bootstrapped".into()))?;
        let host = crate::api::internal::HostRequest {
            shards,
            groups: vec![0],
        };
        let hosted: Result<(), String> = self
            .rpc
            .call(&addr, "/internal/v1/host", &host, Duration::from_secs(10))
            .await
            .map_err(|e| ProposeError::Unavailable(format!("node {id} at {addr}: {e}")))?;
        hosted.map_err(|e| ProposeError::Unavailable(format!("node {id}: {e}")))?;
        self.change_membership(
            GroupId::CATALOGUE,
            crate::node::MembershipChange::AddLearner(id, addr.clone()),
        )
        .await?;
        let update = PlacementUpdate {
            replication_factor: None,
            nodes: vec![NodeSpec {
                id,
                addr,
                labels: labels.into_iter().collect(),
                state: NodeStateSpec::Up,
            }],
            groups: Vec::new(),
        };
        self.propose_placement(update).await
    }
}
