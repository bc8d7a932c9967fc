//! Where a new cluster's groups go: each shard's voters on
//! `replication_factor` members by `boxoffice_raft::placement`'s scoring, its
//! first leader the voter leading fewest so far; the catalogue's voters on as
//! many members (it also has a learner on every other member, added after).

use std::collections::{BTreeMap, BTreeSet};

use boxoffice_api::Member;
use boxoffice_raft::command::{NodeSpec, NodeStateSpec, PlacementUpdate};
use boxoffice_raft::placement::{ClusterView, NodeInfo, NodeState, ShardReplicas};
use boxoffice_raft::{GroupId, NodeId};

/// The label names that say where a node is, widest first.
pub const LOCATION_LABELS: [&str; 3] = ["zone", "rack", "host"];

/// One group of a new cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacedGroup {
    /// Its voters.
    pub voters: BTreeSet<NodeId>,
    /// The voter it is initialised on (and so led by first).
    pub first_leader: NodeId,
}

/// Every group of a new cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    /// By group, the catalogue first.
    pub groups: BTreeMap<GroupId, PlacedGroup>,
}

impl Placed {
    /// The groups `node` starts: the catalogue (every node has a replica) and
    /// the shards it is a voter of.
    pub fn hosted_by(&self, node: NodeId) -> Vec<GroupId> {
        self.groups
            .iter()
            .filter(|(g, p)| g.is_catalogue() || p.voters.contains(&node))
            .map(|(g, _)| *g)
            .collect()
    }
}

/// The members as the directory keeps them, `up`.
pub fn node_specs(members: &[Member]) -> Vec<NodeSpec> {
    members
        .iter()
        .map(|m| NodeSpec {
            id: m.id,
            addr: m.addr.clone(),
            labels: m.labels.clone().into_iter().collect(),
            state: NodeStateSpec::Up,
        })
        .collect()
}

/// The view placement scores members by.
pub fn view_of(members: &[Member]) -> ClusterView {
    ClusterView {
        location_labels: LOCATION_LABELS.iter().map(|l| l.to_string()).collect(),
        nodes: members
            .iter()
            .map(|m| {
                (
                    m.id,
                    NodeInfo {
                        id: m.id,
                        labels: m.labels.clone(),
                        state: NodeState::Up,
                    },
                )
            })
            .collect(),
        shards: BTreeMap::new(),
    }
}

/// Places a new cluster of `shards` shards with `rf` voters each (at most the
/// members); the catalogue is led first by `receiving` when it is a voter.
pub fn place(members: &[Member], shards: u16, rf: u8, receiving: NodeId) -> Result<Placed, String> {
    // The members' labels as the directory will keep them.
    PlacementUpdate {
        replication_factor: Some(rf),
        nodes: node_specs(members),
        groups: Vec::new(),
    }
    .check()?;
    let rf = usize::from(rf).min(members.len());
    let mut view = view_of(members);
    let mut groups = BTreeMap::new();
    let catalogue = view.place_new(rf).map_err(|e| e.to_string())?;
    let first = if catalogue.contains(&receiving) {
        receiving
    } else {
        *catalogue.iter().next().ok_or("no member")?
    };
    groups.insert(
        GroupId::CATALOGUE,
        PlacedGroup {
            voters: catalogue,
            first_leader: first,
        },
    );
    for s in 1..=shards {
        let voters = view.place_new(rf).map_err(|e| e.to_string())?;
        let leads = view.leader_counts();
        let leader = *voters
            .iter()
            .min_by_key(|v| (leads.get(v).copied().unwrap_or(0), **v))
            .ok_or("no voter")?;
        view.shards.insert(
            GroupId(s),
            ShardReplicas {
                voters: voters.clone(),
                leader: Some(leader),
            },
        );
        groups.insert(
            GroupId(s),
            PlacedGroup {
                voters,
                first_leader: leader,
            },
        );
    }
    // Greedy choices can leave leaderships one off the mean where the voter
    // sets allow better: the leader balancer's steps even them out (each
    // step brings the counts closer, so this ends; bounded all the same).
    for _ in 0..usize::from(shards) * 4 {
        let Some(m) = view.next_leader_move() else {
            break;
        };
        if let Some(s) = view.shards.get_mut(&m.shard) {
            s.leader = Some(m.to);
        }
        if let Some(g) = groups.get_mut(&m.shard) {
            g.first_leader = m.to;
        }
    }
    Ok(Placed { groups })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: u64) -> Vec<Member> {
        (1..=n)
            .map(|id| Member {
                id,
                addr: format!("127.0.0.1:{}", 7000 + id),
                labels: BTreeMap::new(),
            })
            .collect()
    }

    #[test]
    fn three_nodes_rf3_every_node_holds_every_shard_and_leads_a_third() {
        let p = place(&members(3), 24, 3, 1).unwrap();
        assert_eq!(p.groups.len(), 25);
        let mut leads = BTreeMap::<NodeId, usize>::new();
        for (g, pg) in &p.groups {
            assert_eq!(pg.voters, BTreeSet::from([1, 2, 3]), "{g}");
            if !g.is_catalogue() {
                *leads.entry(pg.first_leader).or_default() += 1;
            }
        }
        assert_eq!(leads, BTreeMap::from([(1, 8), (2, 8), (3, 8)]));
        assert_eq!(p.groups[&GroupId::CATALOGUE].first_leader, 1);
    }

    #[test]
    fn six_nodes_rf3_24_shards_spread_evenly() {
        let p = place(&members(6), 24, 3, 4).unwrap();
        let mut replicas = BTreeMap::<NodeId, usize>::new();
        let mut leads = BTreeMap::<NodeId, usize>::new();
        for (g, pg) in p.groups.iter().filter(|(g, _)| !g.is_catalogue()) {
            assert_eq!(pg.voters.len(), 3, "{g}");
            assert!(pg.voters.contains(&pg.first_leader));
            for v in &pg.voters {
                *replicas.entry(*v).or_default() += 1;
            }
            *leads.entry(pg.first_leader).or_default() += 1;
        }
        assert!(replicas.values().all(|c| *c == 12), "{replicas:?}");
        assert!(leads.values().all(|c| *c == 4), "{leads:?}");
        // Every node starts the catalogue; a shard only where it is a voter.
        for id in 1..=6 {
            let hosted = p.hosted_by(id);
            assert_eq!(hosted[0], GroupId::CATALOGUE);
            assert_eq!(hosted.len(), 13);
        }
        // The receiving node leads the catalogue only if it is a voter of it.
        let cat = &p.groups[&GroupId::CATALOGUE];
        assert_eq!(cat.voters.len(), 3);
        assert!(cat.voters.contains(&cat.first_leader));
    }

    #[test]
    fn zones_get_one_replica_each() {
        let mut m = members(6);
        for (i, member) in m.iter_mut().enumerate() {
            member
                .labels
                .insert("zone".into(), ["a", "b", "c"][i % 3].into());
        }
        let p = place(&m, 12, 3, 1).unwrap();
        for (g, pg) in &p.groups {
            let zones: BTreeSet<_> = pg
                .voters
                .iter()
                .map(|v| m[usize::try_from(*v).unwrap() - 1].labels["zone"].clone())
                .collect();
            assert_eq!(zones.len(), 3, "{g} has voters in {zones:?}");
        }
    }

    #[test]
    fn fewer_members_than_the_factor_take_every_replica() {
        let p = place(&members(1), 4, 3, 1).unwrap();
        assert!(p.groups.values().all(|g| g.voters == BTreeSet::from([1])));
    }

    #[test]
    fn bad_labels_are_refused() {
        let mut m = members(3);
        m[0].labels.insert("zone".into(), String::new());
        assert!(place(&m, 4, 3, 1).unwrap_err().contains("label"));
    }
}
