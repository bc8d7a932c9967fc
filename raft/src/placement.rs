//! Replica placement: which nodes hold each shard's voters, as a deterministic
//! scoring over the nodes' location labels, replica counts and leader counts.
//!
//! A pure function of a [`ClusterView`] (no clock, no randomness, no iteration
//! over unordered maps), so every node that scores the same view chooses the
//! same: a target for a new replica is the up node that, in order,
//!
//! 1. shares the shortest label prefix (`zone`, then `rack`, then `host`, as
//!    `location_labels` orders them) with the shard's other replicas: the worst
//!    overlap first, then the sum of overlaps (label diversity, as TiKV's
//!    replica checker spreads over `location-labels`);
//! 2. holds the fewest replicas;
//! 3. leads the fewest shards;
//! 4. has the lowest id.
//!
//! A replica to give up is scored the other way round, and replicas on
//! draining or down nodes go first. [`next_move`] and [`next_leader_move`] are
//! one step of the balancer each: a move that brings replica (or leader)
//! counts towards the mean, until the up nodes' counts differ by at most one
//! (where the shards' voters allow it).

use std::collections::{BTreeMap, BTreeSet};

use crate::{GroupId, NodeId};

/// Whether a node takes replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum NodeState {
    /// Takes replicas and leaderships.
    Up,
    /// Gives its replicas away, takes none.
    Draining,
    /// Unreachable for longer than `down_after`: its replicas are recreated elsewhere.
    Down,
}

/// A node as placement sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// Its id.
    pub id: NodeId,
    /// Location labels (`zone`, `rack`, `host`, ...); a missing label matches nothing.
    pub labels: BTreeMap<String, String>,
    /// Its state.
    pub state: NodeState,
}

/// One shard's replicas.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardReplicas {
    /// Its voters.
    pub voters: BTreeSet<NodeId>,
    /// Its leader, when known.
    pub leader: Option<NodeId>,
}

/// What placement decides on.
#[derive(Clone, Debug, Default)]
pub struct ClusterView {
    /// The label names that say where a node is, widest first (`zone`, `rack`, `host`).
    pub location_labels: Vec<String>,
    /// Every node.
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    /// Every shard's replicas.
    pub shards: BTreeMap<GroupId, ShardReplicas>,
}

/// Why no placement could be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// Fewer up nodes than the replication factor.
    #[error("{up} nodes are up; a shard needs {rf}")]
    NotEnoughNodes {
        /// Up nodes.
        up: usize,
        /// Replication factor.
        rf: usize,
    },
}

/// One replica moved: add `to` (as a learner, then promoted), remove `from`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Move {
    /// The shard.
    pub shard: GroupId,
    /// The node giving the replica up.
    pub from: NodeId,
    /// The node taking it.
    pub to: NodeId,
}

/// A leadership moved from one voter of a shard to another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderMove {
    /// The shard.
    pub shard: GroupId,
    /// Its leader now.
    pub from: NodeId,
    /// The voter to lead it.
    pub to: NodeId,
}

impl ClusterView {
    fn up(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.values().filter(|n| n.state == NodeState::Up)
    }

    /// Replicas per node (every node, zero included).
    pub fn replica_counts(&self) -> BTreeMap<NodeId, usize> {
        let mut c: BTreeMap<NodeId, usize> = self.nodes.keys().map(|id| (*id, 0)).collect();
        for s in self.shards.values() {
            for v in &s.voters {
                *c.entry(*v).or_default() += 1;
            }
        }
        c
    }

    /// Leaderships per node (every node, zero included).
    pub fn leader_counts(&self) -> BTreeMap<NodeId, usize> {
        let mut c: BTreeMap<NodeId, usize> = self.nodes.keys().map(|id| (*id, 0)).collect();
        for s in self.shards.values() {
            if let Some(l) = s.leader {
                *c.entry(l).or_default() += 1;
            }
        }
        c
    }

    /// How many leading location labels `a` and `b` share (0: different zones,
    /// or no labels to tell).
    fn shared_prefix(&self, a: NodeId, b: NodeId) -> usize {
        let (Some(a), Some(b)) = (self.nodes.get(&a), self.nodes.get(&b)) else {
            return 0;
        };
        self.location_labels
            .iter()
            .take_while(|l| match (a.labels.get(*l), b.labels.get(*l)) {
                (Some(x), Some(y)) => x == y,
                _ => false,
            })
            .count()
    }

    /// The overlap of `node` with `others`: (worst shared prefix, sum), lower is
    /// more diverse.
    fn overlap(&self, node: NodeId, others: &BTreeSet<NodeId>) -> (usize, usize) {
        others
            .iter()
            .filter(|o| **o != node)
            .map(|o| self.shared_prefix(node, *o))
            .fold((0, 0), |(worst, sum), p| (worst.max(p), sum + p))
    }

    /// The best up node to take a replica of a shard whose other replicas are
    /// `others`, not one of `exclude`.
    pub fn best_target(
        &self,
        others: &BTreeSet<NodeId>,
        exclude: &BTreeSet<NodeId>,
    ) -> Option<NodeId> {
        let replicas = self.replica_counts();
        let leaders = self.leader_counts();
        self.up()
            .map(|n| n.id)
            .filter(|id| !others.contains(id) && !exclude.contains(id))
            .min_by_key(|id| (self.overlap(*id, others), replicas[id], leaders[id], *id))
    }

    /// The replica of `shard` to give up first: one on a down, then a draining
    /// node; else the one adding least diversity, then on the busiest node.
    pub fn worst_replica(&self, shard: GroupId) -> Option<NodeId> {
        let s = self.shards.get(&shard)?;
        let replicas = self.replica_counts();
        let leaders = self.leader_counts();
        let state = |id: &NodeId| self.nodes.get(id).map_or(NodeState::Down, |n| n.state);
        s.voters.iter().copied().max_by_key(|id| {
            (
                state(id),
                self.overlap(*id, &s.voters),
                replicas.get(id).copied().unwrap_or(0),
                leaders.get(id).copied().unwrap_or(0),
                std::cmp::Reverse(*id),
            )
        })
    }

    /// Voters for a new shard: `rf` up nodes chosen one by one, each the best
    /// target given those chosen before (and counted as holding it).
    pub fn place_new(&self, rf: usize) -> Result<BTreeSet<NodeId>, PlacementError> {
        let up = self.up().count();
        if up < rf {
            return Err(PlacementError::NotEnoughNodes { up, rf });
        }
        let mut chosen = BTreeSet::new();
        let mut view = self.clone();
        let key = GroupId(u16::MAX);
        while chosen.len() < rf {
            let t = view
                .best_target(&chosen, &BTreeSet::new())
                .ok_or(PlacementError::NotEnoughNodes { up, rf })?;
            chosen.insert(t);
            view.shards.entry(key).or_default().voters.insert(t);
        }
        Ok(chosen)
    }

    /// One step of the replica balancer: first a replica off a draining or
    /// down node, then from the node with the most replicas to one with the
    /// fewest while they differ by more than one, never making a shard less
    /// diverse. `None` when there is nothing to do (or nowhere to go).
    pub fn next_move(&self) -> Option<Move> {
        for (shard, s) in &self.shards {
            for from in &s.voters {
                let state = self.nodes.get(from).map_or(NodeState::Down, |n| n.state);
                if state != NodeState::Up {
                    let others: BTreeSet<NodeId> =
                        s.voters.iter().copied().filter(|v| v != from).collect();
                    if let Some(to) = self.best_target(&others, &s.voters) {
                        return Some(Move {
                            shard: *shard,
                            from: *from,
                            to,
                        });
                    }
                }
            }
        }
        let counts = self.replica_counts();
        let up: Vec<NodeId> = self.up().map(|n| n.id).collect();
        let (&most, &least) = (
            up.iter()
                .max_by_key(|id| (counts[id], std::cmp::Reverse(**id)))?,
            up.iter().min_by_key(|id| (counts[id], **id))?,
        );
        if counts[&most] <= counts[&least] + 1 {
            return None;
        }
        // A shard on the busiest node and not on the idlest, whose replica there
        // would be at least as diverse as where it is.
        self.shards.iter().find_map(|(shard, s)| {
            if !s.voters.contains(&most) || s.voters.contains(&least) {
                return None;
            }
            let others: BTreeSet<NodeId> =
                s.voters.iter().copied().filter(|v| *v != most).collect();
            (self.overlap(least, &others) <= self.overlap(most, &others)).then_some(Move {
                shard: *shard,
                from: most,
                to: least,
            })
        })
    }

    /// One step of the leader balancer: a leadership from the up node leading
    /// most shards to a voter of that shard leading fewest, while they differ
    /// by more than one; leaderships on draining nodes move first.
    pub fn next_leader_move(&self) -> Option<LeaderMove> {
        let counts = self.leader_counts();
        let state = |id: &NodeId| self.nodes.get(id).map_or(NodeState::Down, |n| n.state);
        let best_voter = |s: &ShardReplicas, leader: NodeId| {
            s.voters
                .iter()
                .copied()
                .filter(|v| *v != leader && state(v) == NodeState::Up)
                .min_by_key(|v| (counts[v], *v))
        };
        for (shard, s) in &self.shards {
            if let Some(l) = s.leader.filter(|l| state(l) != NodeState::Up) {
                if let Some(to) = best_voter(s, l) {
                    return Some(LeaderMove {
                        shard: *shard,
                        from: l,
                        to,
                    });
                }
            }
        }
        let direct = self
            .shards
            .iter()
            .filter_map(|(shard, s)| {
                let l = s.leader?;
                let to = best_voter(s, l)?;
                (counts[&l] > counts[&to] + 1).then_some((
                    counts[&l],
                    LeaderMove {
                        shard: *shard,
                        from: l,
                        to,
                    },
                ))
            })
            // The busiest leader's first shard.
            .max_by_key(|(c, m)| (*c, std::cmp::Reverse(m.shard)))
            .map(|(_, m)| m);
        if direct.is_some() {
            return direct;
        }
        // No busiest leader shares a shard with an idlest node: two hops, the
        // second first. A node `x` one below the busiest `m` (a voter of a shard
        // `m` leads) hands one of its own leaderships to a node two below `m`;
        // then `m` to `x` is a direct move.
        let max = self.up().map(|n| counts[&n.id]).max().unwrap_or(0);
        for s in self.shards.values() {
            let Some(m) = s.leader.filter(|l| counts[l] == max) else {
                continue;
            };
            for x in s
                .voters
                .iter()
                .filter(|x| **x != m && state(x) == NodeState::Up)
            {
                if counts[x] + 1 != max {
                    continue;
                }
                for (shard, t) in &self.shards {
                    if t.leader != Some(*x) {
                        continue;
                    }
                    if let Some(to) = best_voter(t, *x).filter(|y| counts[y] + 2 <= max) {
                        return Some(LeaderMove {
                            shard: *shard,
                            from: *x,
                            to,
                        });
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: NodeId, zone: &str) -> NodeInfo {
        let mut labels = BTreeMap::new();
        if !zone.is_empty() {
            labels.insert("zone".to_string(), zone.to_string());
            labels.insert("host".to_string(), format!("h{id}"));
        }
        NodeInfo {
            id,
            labels,
            state: NodeState::Up,
        }
    }

    fn view(nodes: &[NodeInfo]) -> ClusterView {
        ClusterView {
            location_labels: vec!["zone".into(), "host".into()],
            nodes: nodes.iter().map(|n| (n.id, n.clone())).collect(),
            shards: BTreeMap::new(),
        }
    }

    /// Places `shards` new shards one after another, each leader its first
    /// voter with the fewest leaderships.
    fn fill(v: &mut ClusterView, shards: u16) {
        for s in 1..=shards {
            let voters = v.place_new(3).unwrap();
            let counts = v.leader_counts();
            let leader = voters.iter().copied().min_by_key(|n| (counts[n], *n));
            v.shards
                .insert(GroupId(s), ShardReplicas { voters, leader });
        }
    }

    fn apply(v: &mut ClusterView, m: Move) {
        let s = v.shards.get_mut(&m.shard).unwrap();
        assert!(s.voters.remove(&m.from) && s.voters.insert(m.to), "{m:?}");
        if s.leader == Some(m.from) {
            s.leader = Some(m.to);
        }
    }

    fn spread(c: &BTreeMap<NodeId, usize>, v: &ClusterView) -> (usize, usize) {
        let up: Vec<usize> = v.up().map(|n| c[&n.id]).collect();
        (*up.iter().min().unwrap(), *up.iter().max().unwrap())
    }

    #[test]
    fn six_nodes_24_shards_three_voters_each_and_even_counts() {
        let mut v = view(&(1..=6).map(|i| node(i, "")).collect::<Vec<_>>());
        fill(&mut v, 24);
        assert!(v.shards.values().all(|s| s.voters.len() == 3));
        assert!(
            v.replica_counts().values().all(|c| *c == 12),
            "{:?}",
            v.replica_counts()
        );
        assert_eq!(v.next_move(), None);
        let mut steps = 0;
        while let Some(m) = v.next_leader_move() {
            let s = v.shards.get_mut(&m.shard).unwrap();
            assert!(s.voters.contains(&m.to) && s.leader == Some(m.from));
            s.leader = Some(m.to);
            steps += 1;
            assert!(steps <= 50, "the leader balancer does not settle");
        }
        assert_eq!(
            spread(&v.leader_counts(), &v),
            (4, 4),
            "{:?}",
            v.leader_counts()
        );
    }

    #[test]
    fn voters_go_to_different_zones_first() {
        // Two nodes per zone, three zones: every shard has one voter per zone,
        // though filling by counts alone would put some in one zone twice.
        let nodes: Vec<NodeInfo> = (1..=6)
            .map(|i| node(i, ["a", "b", "c"][((i - 1) / 2) as usize]))
            .collect();
        let mut v = view(&nodes);
        fill(&mut v, 24);
        for (g, s) in &v.shards {
            let zones: BTreeSet<&String> = s
                .voters
                .iter()
                .map(|n| &v.nodes[n].labels["zone"])
                .collect();
            assert_eq!(zones.len(), 3, "{g}: {s:?}");
        }
        assert!(v.replica_counts().values().all(|c| *c == 12));
    }

    #[test]
    fn too_few_up_nodes_is_an_error() {
        let mut v = view(&[node(1, ""), node(2, ""), node(3, "")]);
        v.nodes.get_mut(&3).unwrap().state = NodeState::Down;
        assert_eq!(
            v.place_new(3),
            Err(PlacementError::NotEnoughNodes { up: 2, rf: 3 })
        );
    }

    #[test]
    fn a_draining_node_is_emptied_and_the_rest_stay_even() {
        let mut v = view(&(1..=6).map(|i| node(i, "")).collect::<Vec<_>>());
        fill(&mut v, 24);
        v.nodes.get_mut(&2).unwrap().state = NodeState::Draining;
        let mut steps = 0;
        while let Some(m) = v.next_move() {
            assert_ne!(m.to, 2, "a draining node took a replica");
            apply(&mut v, m);
            steps += 1;
            assert!(steps <= 100, "the balancer does not settle");
        }
        assert_eq!(v.replica_counts()[&2], 0);
        let (lo, hi) = spread(&v.replica_counts(), &v);
        assert!(hi - lo <= 1, "{:?}", v.replica_counts());
        assert!(v.shards.values().all(|s| s.voters.len() == 3));
    }

    #[test]
    fn a_new_node_is_filled_to_within_one_of_the_mean() {
        let mut v = view(&(1..=6).map(|i| node(i, "")).collect::<Vec<_>>());
        fill(&mut v, 24);
        v.nodes.insert(7, node(7, ""));
        let mut steps = 0;
        while let Some(m) = v.next_move() {
            apply(&mut v, m);
            steps += 1;
            assert!(steps <= 100, "the balancer does not settle");
        }
        let c = v.replica_counts();
        let (lo, hi) = spread(&c, &v);
        assert!(hi - lo <= 1 && c[&7] >= 10, "{c:?}");
        while let Some(m) = v.next_leader_move() {
            let s = v.shards.get_mut(&m.shard).unwrap();
            assert!(s.voters.contains(&m.to));
            s.leader = Some(m.to);
            steps += 1;
            assert!(steps <= 200, "the leader balancer does not settle");
        }
        let (lo, hi) = spread(&v.leader_counts(), &v);
        assert!(hi - lo <= 1, "{:?}", v.leader_counts());
    }

    #[test]
    fn a_down_nodes_replicas_are_recreated_elsewhere() {
        let mut v = view(&(1..=4).map(|i| node(i, "")).collect::<Vec<_>>());
        fill(&mut v, 8);
        v.nodes.get_mut(&4).unwrap().state = NodeState::Down;
        assert_eq!(
            v.worst_replica(
                v.shards
                    .keys()
                    .copied()
                    .find(|g| v.shards[g].voters.contains(&4))
                    .unwrap()
            ),
            Some(4)
        );
        while let Some(m) = v.next_move() {
            assert_eq!(m.from, 4);
            apply(&mut v, m);
        }
        assert_eq!(v.replica_counts()[&4], 0);
        assert!(v
            .shards
            .values()
            .all(|s| s.voters.len() == 3 && !s.voters.contains(&4)));
    }

    #[test]
    fn the_same_view_gives_the_same_answers() {
        // Built in two orders: the maps are ordered, so nothing depends on it.
        let a = view(&(1..=5).map(|i| node(i, "")).collect::<Vec<_>>());
        let b = view(&(1..=5).rev().map(|i| node(i, "")).collect::<Vec<_>>());
        assert_eq!(a.place_new(3), b.place_new(3));
        assert_eq!(a.place_new(3).unwrap(), [1, 2, 3].into_iter().collect());
    }
}
