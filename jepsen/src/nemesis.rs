//! Nemeses: faults scheduled from the run's seed, alone or two at once, each
//! recorded with its start and end (in the history and in `nemesis.jsonl`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use boxoffice_api::MemberAction;
use boxoffice_node::local_cluster::LocalCluster;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::sync::Mutex;

use crate::net::Firewall;
use crate::power::{CrashPoint, Power, Scope};

/// Time allowed for one group's membership change through the admin API.
pub const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(8);
/// Time allowed for one replica move (the new replica catches up first).
pub const MOVE_TIMEOUT: Duration = Duration::from_secs(30);

/// Kinds of fault, as named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// kill -9 a random node, or the leader of a busy shard; restart it at the end.
    Kill,
    /// SIGSTOP a random node, or the leader of a busy shard; SIGCONT at the end.
    Pause,
    /// Partition the network: one node isolated, majority/minority, the leader
    /// isolated, or a bridge; healed at the end (needs network namespaces).
    Partition,
    /// Shift one node's clock by seconds (beyond the hold lifetime); back at the end.
    Clock,
    /// Remove a node (or a busy shard's leader) from every group; at the end add it
    /// back as a learner and promote it. Only where every node holds every group.
    Membership,
    /// Move a busy shard's replica (its leader's, or a follower's) to a node
    /// that holds none, online. Only where shards are on fewer nodes than all.
    Move,
    /// Drain a node (the balancer moves its replicas away, one at a time);
    /// at the end mark it up again. Only where shards are on fewer nodes than all.
    Drain,
    /// Hand a busy shard's leadership to another of its voters (the leader
    /// holds the shard's writes, lets the followers' lease run out, and the
    /// chosen voter campaigns).
    Leader,
    /// Cut the power of one node, a minority or the whole cluster (each
    /// node's file system forgets what it had not fsynced), at a crash point;
    /// restart at the end. Needs FUSE (root and /dev/fuse).
    Power,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Kill,
        Kind::Pause,
        Kind::Partition,
        Kind::Clock,
        Kind::Membership,
        Kind::Move,
        Kind::Drain,
        Kind::Leader,
        Kind::Power,
    ];

    /// True for the kinds that need each shard on fewer nodes than all.
    pub fn needs_spare_nodes(self) -> bool {
        matches!(self, Kind::Move | Kind::Drain)
    }

    /// True for the kinds that need every group on every node.
    pub fn needs_every_group_everywhere(self) -> bool {
        matches!(self, Kind::Membership)
    }
}

/// One fault with its targets.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "fault", rename_all = "kebab-case")]
pub enum Fault {
    Membership {
        node: u64,
        leader_of: Option<u16>,
    },
    Kill {
        node: u64,
        leader_of: Option<u16>,
    },
    Pause {
        node: u64,
        leader_of: Option<u16>,
    },
    Partition {
        shape: &'static str,
        sides: Vec<Vec<u64>>,
    },
    Clock {
        node: u64,
        offset_ms: i64,
    },
    Move {
        group: u16,
        from: u64,
        to: u64,
        leader: bool,
    },
    Drain {
        node: u64,
    },
    Leader {
        group: u16,
        from: Option<u64>,
        to: u64,
    },
    Power {
        scope: &'static str,
        nodes: Vec<u64>,
        point: CrashPoint,
        group: u16,
    },
}

impl Fault {
    pub fn describe(&self) -> String {
        let lead = |l: &Option<u16>| {
            l.map(|g| format!(" (leader of group {g})"))
                .unwrap_or_default()
        };
        match self {
            Fault::Kill { node, leader_of } => format!("kill -9 node {node}{}", lead(leader_of)),
            Fault::Pause { node, leader_of } => format!("pause node {node}{}", lead(leader_of)),
            Fault::Partition { shape, sides } => format!("partition {shape} {sides:?}"),
            Fault::Clock { node, offset_ms } => format!("clock of node {node} {offset_ms:+} ms"),
            Fault::Membership { node, leader_of } => {
                format!("remove node {node}{} from every group", lead(leader_of))
            }
            Fault::Move {
                group,
                from,
                to,
                leader,
            } => format!(
                "move group {group}'s replica from node {from}{} to node {to}",
                if *leader { " (its leader)" } else { "" }
            ),
            Fault::Drain { node } => format!("drain node {node}"),
            Fault::Power {
                scope,
                nodes,
                point,
                group,
            } => format!("power cut ({scope}) of node(s) {nodes:?} at {point:?} (group {group})"),
            Fault::Leader { group, from, to } => match from {
                Some(f) => format!("hand group {group}'s leadership from node {f} to node {to}"),
                None => format!("hand group {group}'s leadership to node {to}"),
            },
        }
    }
}

/// Schedule settings.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub kinds: Vec<Kind>,
    /// Healthy time between faults.
    pub interval: (Duration, Duration),
    /// How long a fault lasts.
    pub duration: (Duration, Duration),
    /// Chance that two kinds are applied together.
    pub mixed_probability: f64,
    /// Clock offsets drawn from this many ms, either sign.
    pub clock_skew_ms: (i64, i64),
}

/// Start or end of a fault, as logged.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    pub t_us: u64,
    pub phase: &'static str,
    #[serde(flatten)]
    pub fault: Fault,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Shared nemesis state: the cluster, its firewall and its power switches.
pub struct Nemesis {
    pub cluster: Arc<Mutex<LocalCluster>>,
    pub firewall: Option<Firewall>,
    /// The nodes' power-cut file systems (when the power nemesis runs).
    pub power: Option<Power>,
    /// Which cuts the power nemesis draws.
    pub power_scope: Scope,
    rng: StdRng,
    pub schedule: Schedule,
    /// Shards are on fewer nodes than all (the replication factor is below
    /// the node count).
    pub spare_nodes: bool,
}

impl Nemesis {
    pub fn new(
        cluster: Arc<Mutex<LocalCluster>>,
        firewall: Option<Firewall>,
        seed: u64,
        schedule: Schedule,
        spare_nodes: bool,
    ) -> Self {
        Nemesis {
            spare_nodes,
            cluster,
            firewall,
            power: None,
            power_scope: Scope::Any,
            // Its own stream, so the schedule does not depend on what clients do.
            rng: StdRng::seed_from_u64(seed ^ 0x6e65_6d65_7369_7321),
            schedule,
        }
    }

    /// Draws the next pause before a fault.
    pub fn next_interval(&mut self) -> Duration {
        let (a, b) = self.schedule.interval;
        self.rng.gen_range(a..=b)
    }

    /// Draws how long the next fault lasts.
    pub fn next_duration(&mut self) -> Duration {
        let (a, b) = self.schedule.duration;
        self.rng.gen_range(a..=b)
    }

    /// Draws the kinds of the next fault (one, or two when mixed).
    pub fn next_kinds(&mut self) -> Vec<Kind> {
        let mut kinds = self.schedule.kinds.clone();
        kinds.shuffle(&mut self.rng);
        let n = if kinds.len() > 1 && self.rng.gen_bool(self.schedule.mixed_probability) {
            2
        } else {
            1
        };
        kinds.truncate(n);
        kinds
    }

    /// Chooses targets for a fault of `kind`; `busy` are the shards clients are
    /// using now (leader faults aim at one of them).
    pub async fn choose(&mut self, kind: Kind, busy: &[u16]) -> Fault {
        let ids: Vec<u64> = self.cluster.lock().await.nodes.keys().copied().collect();
        let at_leader = self.rng.gen_bool(0.5);
        let group = busy.choose(&mut self.rng).copied();
        let leader = match (at_leader, group) {
            (true, Some(g)) => {
                let leaders = self.cluster.lock().await.leaders().await;
                leaders.get(&g).map(|&l| (l, g))
            }
            _ => None,
        };
        // Drawn even when a leader is used, so the stream stays aligned.
        let random_node = *ids.choose(&mut self.rng).unwrap_or(&1);
        let (node, leader_of) = match leader {
            Some((l, g)) => (l, Some(g)),
            None => (random_node, None),
        };
        match kind {
            Kind::Move => {
                // A busy shard (else any), its leader's replica or a
                // follower's, to a node that holds none of it.
                let c = self.cluster.lock().await;
                let g = group.unwrap_or_else(|| self.rng.gen_range(1..=c.shards));
                let mut voters: Vec<u64> = Vec::new();
                for &id in &ids {
                    if let Some(v) = c.cluster_view(id).await {
                        if let Some(p) = v
                            .placement
                            .as_ref()
                            .and_then(|p| p.groups.iter().find(|x| x.group == g).cloned())
                        {
                            voters = p.voters;
                            break;
                        }
                    }
                }
                let leaders = c.leaders().await;
                drop(c);
                let spare: Vec<u64> = ids
                    .iter()
                    .copied()
                    .filter(|id| !voters.contains(id))
                    .collect();
                let leader = leaders.get(&g).copied().filter(|l| voters.contains(l));
                let from = match leader {
                    Some(l) if at_leader => l,
                    _ => voters.choose(&mut self.rng).copied().unwrap_or(random_node),
                };
                let to = spare.choose(&mut self.rng).copied().unwrap_or(random_node);
                Fault::Move {
                    group: g,
                    from,
                    to,
                    leader: leader == Some(from),
                }
            }
            Kind::Leader => {
                // A busy shard (else any), to one of its voters that does not lead it.
                let c = self.cluster.lock().await;
                let g = group.unwrap_or_else(|| self.rng.gen_range(1..=c.shards));
                let mut voters: Vec<u64> = Vec::new();
                for &id in &ids {
                    if let Some(v) = c.cluster_view(id).await {
                        if let Some(x) = v.groups.iter().find(|x| x.group == g) {
                            voters = x.voters.clone();
                            break;
                        }
                    }
                }
                let from = c.leaders().await.get(&g).copied();
                drop(c);
                let others: Vec<u64> = voters
                    .iter()
                    .copied()
                    .filter(|v| Some(*v) != from)
                    .collect();
                let to = others.choose(&mut self.rng).copied().unwrap_or(random_node);
                Fault::Leader { group: g, from, to }
            }
            Kind::Power => {
                // One node (half the time), a minority, or everything.
                let mut shuffled: Vec<u64> = ids.iter().copied().filter(|&i| i != node).collect();
                shuffled.shuffle(&mut self.rng);
                let roll: f64 = match self.power_scope {
                    Scope::Any => self.rng.gen(),
                    Scope::One => 0.0,
                    Scope::Minority => 0.5,
                    Scope::WholeCluster => 1.0,
                };
                let (scope, extra) = if roll < 0.45 {
                    ("one", 0)
                } else if roll < 0.75 {
                    (
                        "minority",
                        (ids.len().saturating_sub(1) / 2).saturating_sub(1),
                    )
                } else {
                    ("whole-cluster", ids.len().saturating_sub(1))
                };
                let mut nodes = vec![node];
                nodes.extend(shuffled.into_iter().take(extra));
                let points: &[CrashPoint] = if scope == "whole-cluster" {
                    &CrashPoint::WHOLE
                } else if self.spare_nodes {
                    // A membership change here is the placement's to make.
                    &CrashPoint::PARTIAL[..CrashPoint::PARTIAL.len() - 1]
                } else {
                    &CrashPoint::PARTIAL
                };
                let point = *points.choose(&mut self.rng).unwrap_or(&CrashPoint::Now);
                let shards = self.cluster.lock().await.shards.max(1);
                let g = group.unwrap_or_else(|| self.rng.gen_range(1..=shards));
                Fault::Power {
                    scope,
                    nodes,
                    point,
                    group: g,
                }
            }
            Kind::Drain => Fault::Drain { node },
            Kind::Kill => Fault::Kill { node, leader_of },
            Kind::Pause => Fault::Pause { node, leader_of },
            Kind::Membership => Fault::Membership { node, leader_of },
            Kind::Clock => {
                let (a, b) = self.schedule.clock_skew_ms;
                let mag = self.rng.gen_range(a..=b);
                let offset_ms = if self.rng.gen_bool(0.5) { mag } else { -mag };
                Fault::Clock { node, offset_ms }
            }
            Kind::Partition => {
                let mut shuffled = ids.clone();
                shuffled.shuffle(&mut self.rng);
                let shape = self.rng.gen_range(0..4);
                let others = |x: u64| ids.iter().copied().filter(|&y| y != x).collect::<Vec<_>>();
                match shape {
                    0 => Fault::Partition {
                        shape: "isolate-one",
                        sides: vec![vec![random_node], others(random_node)],
                    },
                    1 => {
                        let minority = ids.len() / 2;
                        Fault::Partition {
                            shape: "majority-minority",
                            sides: vec![
                                shuffled[..minority].to_vec(),
                                shuffled[minority..].to_vec(),
                            ],
                        }
                    }
                    2 => Fault::Partition {
                        shape: "isolate-leader",
                        sides: vec![vec![node], others(node)],
                    },
                    _ => {
                        // Two halves that share one node, which hears both sides.
                        let mid = ids.len() / 2;
                        Fault::Partition {
                            shape: "bridge",
                            sides: vec![shuffled[..=mid].to_vec(), shuffled[mid..].to_vec()],
                        }
                    }
                }
            }
        }
    }

    /// Applies a fault.
    pub async fn start(&mut self, f: &Fault) -> anyhow::Result<()> {
        match f {
            Fault::Move {
                group, from, to, ..
            } => {
                let body = serde_json::json!({ "from": from, "to": to });
                self.cluster
                    .lock()
                    .await
                    .admin_post(
                        &format!("/admin/v1/groups/{group}/move"),
                        &body,
                        MOVE_TIMEOUT,
                    )
                    .await
                    .map(|_| ())
            }
            Fault::Leader { group, to, .. } => {
                let body = serde_json::json!({ "to": to });
                self.cluster
                    .lock()
                    .await
                    .admin_post(
                        &format!("/admin/v1/groups/{group}/leader"),
                        &body,
                        MEMBERSHIP_TIMEOUT,
                    )
                    .await
                    .map(|_| ())
            }
            Fault::Drain { node } => self
                .cluster
                .lock()
                .await
                .admin_post(
                    &format!("/admin/v1/nodes/{node}/drain"),
                    &serde_json::Value::Null,
                    MEMBERSHIP_TIMEOUT,
                )
                .await
                .map(|_| ()),
            Fault::Membership { node, .. } => {
                self.cluster
                    .lock()
                    .await
                    .membership(*node, MemberAction::Remove, MEMBERSHIP_TIMEOUT)
                    .await
            }
            Fault::Kill { node, .. } => {
                self.cluster.lock().await.kill(*node);
                Ok(())
            }
            Fault::Power {
                nodes,
                point,
                group,
                ..
            } => {
                let power = self
                    .power
                    .as_mut()
                    .ok_or_else(|| anyhow::anyhow!("the power nemesis needs FUSE"))?;
                let summary = power
                    .cut(&self.cluster, nodes.clone(), *point, *group)
                    .await?;
                println!("  {summary}");
                Ok(())
            }
            Fault::Pause { node, .. } => {
                self.cluster.lock().await.pause(*node);
                Ok(())
            }
            Fault::Clock { node, offset_ms } => {
                self.cluster
                    .lock()
                    .await
                    .set_clock_offset(*node, *offset_ms)
                    .await
            }
            Fault::Partition { shape, sides } => {
                let fw = self
                    .firewall
                    .as_mut()
                    .ok_or_else(|| anyhow::anyhow!("partitions need network namespaces"))?;
                if *shape == "bridge" {
                    // Cut only the nodes that are not the bridge.
                    let bridge: Vec<u64> = sides[0]
                        .iter()
                        .filter(|x| sides[1].contains(x))
                        .copied()
                        .collect();
                    let a: Vec<u64> = sides[0]
                        .iter()
                        .filter(|x| !bridge.contains(x))
                        .copied()
                        .collect();
                    let b: Vec<u64> = sides[1]
                        .iter()
                        .filter(|x| !bridge.contains(x))
                        .copied()
                        .collect();
                    fw.partition(&a, &b)
                } else {
                    fw.partition(&sides[0], &sides[1])
                }
            }
        }
    }

    /// Ends a fault.
    pub async fn end(&mut self, f: &Fault) -> anyhow::Result<()> {
        match f {
            // A move or a handoff is done when it answers; nothing to undo.
            Fault::Move { .. } | Fault::Leader { .. } => Ok(()),
            Fault::Drain { node } => self
                .cluster
                .lock()
                .await
                .admin_post(
                    &format!("/admin/v1/nodes/{node}/up"),
                    &serde_json::Value::Null,
                    MEMBERSHIP_TIMEOUT,
                )
                .await
                .map(|_| ()),
            Fault::Kill { node, .. } => self.cluster.lock().await.start(*node),
            Fault::Power { .. } => match self.power.as_mut() {
                Some(p) => p.restore(&self.cluster).await,
                None => Ok(()),
            },
            Fault::Pause { node, .. } => {
                self.cluster.lock().await.resume(*node);
                Ok(())
            }
            Fault::Clock { node, .. } => {
                let c = self.cluster.lock().await;
                if c.nodes[node].running() && !c.nodes[node].paused() {
                    c.set_clock_offset(*node, 0).await
                } else {
                    // A node that restarts comes back with no offset.
                    Ok(())
                }
            }
            Fault::Partition { .. } => match self.firewall.as_mut() {
                Some(fw) => fw.heal(),
                None => Ok(()),
            },
            Fault::Membership { node, .. } => {
                let c = self.cluster.lock().await;
                c.membership(*node, MemberAction::AddLearner, MEMBERSHIP_TIMEOUT)
                    .await?;
                c.membership(*node, MemberAction::Promote, MEMBERSHIP_TIMEOUT)
                    .await
            }
        }
    }

    /// Ends everything: resumes paused nodes, restarts dead ones, heals the
    /// network and resets every clock. Retries clock resets until `timeout`.
    pub async fn heal_all(&mut self, timeout: Duration) -> anyhow::Result<()> {
        if let Some(fw) = self.firewall.as_mut() {
            fw.heal()?;
        }
        let ids: Vec<u64> = self.cluster.lock().await.nodes.keys().copied().collect();
        {
            let mut c = self.cluster.lock().await;
            for &id in &ids {
                c.resume(id);
                c.start(id)?;
            }
        }
        let deadline = Instant::now() + timeout;
        let c = self.cluster.lock().await;
        for &id in &ids {
            c.wait_healthy(id, deadline.saturating_duration_since(Instant::now()))
                .await?;
            c.set_clock_offset(id, 0).await?;
        }
        // Every node up again (ends a drain; where shards are on fewer nodes
        // than all, replicas stay where the moves put them).
        if self.spare_nodes {
            for &id in &ids {
                c.admin_post(
                    &format!("/admin/v1/nodes/{id}/up"),
                    &serde_json::Value::Null,
                    MEMBERSHIP_TIMEOUT,
                )
                .await?;
            }
            return Ok(());
        }
        // Every node a voter of every group again (idempotent).
        for &id in &ids {
            c.membership(id, MemberAction::AddLearner, MEMBERSHIP_TIMEOUT)
                .await?;
            c.membership(id, MemberAction::Promote, MEMBERSHIP_TIMEOUT)
                .await?;
        }
        Ok(())
    }
}
