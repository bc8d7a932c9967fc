//! Moving one replica of a group from one node to another, online, run by the
//! group's leader: the target starts an empty replica, joins as a learner and
//! catches up (a snapshot and the log), then one joint membership change
//! makes it a voter and removes the source, and the source deletes its
//! replica. The group never has fewer voters than before. A learner that does
//! not catch up within `placement.catch_up_timeout_ms` is removed again
//! (rolled back). Repeating a move that is done does nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use boxoffice_raft::{GroupId, NodeId};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};
use serde::{Deserialize, Serialize};

use crate::node::{Node, ProposeError};

/// A move asked of a group's leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveRequest {
    /// The node giving its replica away.
    pub from: NodeId,
    /// The node taking it.
    pub to: NodeId,
    /// The target's cluster address.
    pub to_addr: String,
}

/// What a finished move did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveDone {
    /// The group's voters after it.
    pub voters: Vec<NodeId>,
    /// False when there was nothing to do (the move was done already).
    pub moved: bool,
    /// Milliseconds the target took to catch up as a learner.
    pub catch_up_ms: u64,
}

/// Where an operation in flight (a replica move or a leadership handoff)
/// stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MoveStatus {
    /// `move_replica` or `move_leader`.
    pub kind: &'static str,
    /// The request (for a leadership handoff, `to_addr` is the new leader's).
    pub request: MoveRequest,
    /// Its current step.
    pub phase: &'static str,
    /// When it started.
    pub started: Instant,
}

/// The operations this node runs as leader (replica moves and leadership
/// handoffs), by group: one at a time per group.
#[derive(Default)]
pub struct InFlight(Mutex<BTreeMap<GroupId, MoveStatus>>);

impl InFlight {
    /// The moves in flight now.
    pub fn list(&self) -> Vec<(GroupId, MoveStatus)> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(g, s)| (*g, s.clone())).collect()
    }

    pub(crate) fn set_phase(&self, group: GroupId, phase: &'static str) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = map.get_mut(&group) {
            s.phase = phase;
        }
    }
}

impl InFlight {
    /// Takes `group`'s slot for one operation; refused while the group has
    /// one in flight already, or while `max` operations are.
    pub(crate) fn take<'a>(
        &'a self,
        group: GroupId,
        kind: &'static str,
        m: &MoveRequest,
        phase: &'static str,
        max: usize,
    ) -> Result<Slot<'a>, ProposeError> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = map.get(&group) {
            return Err(ProposeError::Unavailable(format!(
                "{group} has an operation in flight already ({}, node {} to {})",
                s.kind, s.request.from, s.request.to
            )));
        }
        if map.len() >= max {
            return Err(ProposeError::RateLimited {
                limit: "placement.moves_in_flight_max".into(),
                retry_after_ms: 1000,
            });
        }
        map.insert(
            group,
            MoveStatus {
                kind,
                request: m.clone(),
                phase,
                started: Instant::now(),
            },
        );
        Ok(Slot {
            in_flight: self,
            group,
        })
    }
}

/// Takes a group's slot in [`InFlight`] for the life of one operation.
pub(crate) struct Slot<'a> {
    in_flight: &'a InFlight,
    group: GroupId,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut map = self.in_flight.0.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&self.group);
    }
}

fn write_error(
    group: GroupId,
    e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
) -> ProposeError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ProposeError::NotLeader {
            group: group.0,
            leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            ProposeError::Unavailable(e.to_string())
        }
        RaftError::Fatal(e) => ProposeError::Unknown(e.to_string()),
    }
}

impl Node {
    /// `not_leader` (with the leader this node knows of) unless this node leads
    /// `group`.
    pub(crate) fn ensure_leader(&self, group: GroupId) -> Result<(), ProposeError> {
        match self.leader_of(group) {
            Some((l, _)) if l == self.id() => Ok(()),
            leader => Err(ProposeError::NotLeader {
                group: group.0,
                leader: leader.filter(|(id, _)| *id != self.id()),
            }),
        }
    }

    /// Runs a replica move on this node, which must lead `group`.
    pub async fn move_replica_local(
        &self,
        group: GroupId,
        m: MoveRequest,
    ) -> Result<MoveDone, ProposeError> {
        let raft = self
            .groups
            .get(group)
            .ok_or(ProposeError::NoSuchGroup(group.0))?;
        self.ensure_leader(group)?;
        let membership = raft.metrics().borrow().membership_config.clone();
        let voters: BTreeSet<NodeId> = membership.membership().voter_ids().collect();
        if voters.contains(&m.to) && !voters.contains(&m.from) {
            return Ok(MoveDone {
                voters: voters.into_iter().collect(),
                moved: false,
                catch_up_ms: 0,
            });
        }
        if !voters.contains(&m.from) {
            return Err(ProposeError::Unavailable(format!(
                "node {} holds no voter of {group}",
                m.from
            )));
        }
        if voters.contains(&m.to) {
            return Err(ProposeError::Unavailable(format!(
                "node {} holds a voter of {group} already",
                m.to
            )));
        }
        if membership.membership().get_joint_config().len() > 1 {
            return Err(ProposeError::Unavailable(format!(
                "{group} is in a membership change"
            )));
        }
        if m.from == self.id() {
            // The leader's own replica: hand the leadership to another voter
            // first (writes pause for a handoff), and let the new leader make
            // the move, rather than remove itself (writes would pause for an
            // election timeout after the change).
            let next = membership
                .membership()
                .voter_ids()
                .filter(|v| *v != self.id())
                .max_by_key(|v| {
                    let m = raft.metrics().borrow().replication.clone();
                    (
                        m.and_then(|r| r.get(v).cloned().flatten()).map(|l| l.index),
                        std::cmp::Reverse(*v),
                    )
                });
            if let Some(next) = next {
                match self.transfer_leader_local(group, next).await {
                    Ok(done) => {
                        return Err(ProposeError::NotLeader {
                            group: group.0,
                            leader: membership
                                .membership()
                                .get_node(&done.leader)
                                .map(|n| (done.leader, n.addr.clone())),
                        })
                    }
                    Err(e) => {
                        tracing::warn!(%group, error = %e, "leadership not handed over before moving the leader's replica; it removes itself")
                    }
                }
            }
        }
        let _slot = self.placement.moves.take(
            group,
            "move_replica",
            &m,
            "starting the new replica",
            self.config.placement.moves_in_flight_max,
        )?;
        tracing::info!(%group, from = m.from, to = m.to, "moving a replica");
        let shards = self
            .shards()
            .ok_or_else(|| ProposeError::Unavailable("not bootstrapped".into()))?;
        let host = crate::api::internal::HostRequest {
            shards,
            groups: vec![group.0],
        };
        let hosted: Result<(), String> = self
            .rpc
            .call(
                &m.to_addr,
                "/internal/v1/host",
                &host,
                Duration::from_secs(10),
            )
            .await
            .map_err(|e| ProposeError::Unavailable(format!("node {}: {e}", m.to)))?;
        hosted.map_err(|e| ProposeError::Unavailable(format!("node {}: {e}", m.to)))?;

        self.placement
            .moves
            .set_phase(group, "catching up as a learner");
        let started = Instant::now();
        let timeout = Duration::from_millis(self.config.placement.catch_up_timeout_ms);
        let node = BasicNode {
            addr: m.to_addr.clone(),
        };
        let caught_up = tokio::time::timeout(timeout, raft.add_learner(m.to, node, true)).await;
        let catch_up_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match caught_up {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                self.roll_back(group, &m).await;
                return Err(write_error(group, e));
            }
            Err(_) => {
                self.roll_back(group, &m).await;
                return Err(ProposeError::Unavailable(format!(
                    "node {} did not catch up within placement.catch_up_timeout_ms; the move was rolled back",
                    m.to
                )));
            }
        }

        self.placement
            .moves
            .set_phase(group, "joint change: promote and remove");
        let mut new_voters = voters.clone();
        new_voters.remove(&m.from);
        new_voters.insert(m.to);
        raft.change_membership(new_voters.clone(), false)
            .await
            .map_err(|e| write_error(group, e))?;

        self.placement
            .moves
            .set_phase(group, "deleting the old replica");
        if m.from == self.id() {
            // This leader removed itself: it leads no more once the change is
            // committed; its replica goes once a new leader is elected (the
            // directory and routes learn of the change meanwhile).
            if let Some(me) = self.myself() {
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(
                        me.config.raft.election_timeout_ms_max * 2,
                    ))
                    .await;
                    if let Err(e) = me.unhost(group).await {
                        tracing::warn!(%group, error = %e, "replica given away not deleted");
                    }
                });
            }
        } else if let Some(addr) = self.directory().nodes.get(&m.from).map(|n| n.addr.clone()) {
            let r: Result<Result<(), String>, _> = self
                .rpc
                .call(
                    &addr,
                    &format!("/internal/v1/unhost/{}", group.0),
                    &(),
                    Duration::from_secs(10),
                )
                .await;
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(%group, node = m.from, error = %e, "old replica not deleted")
                }
                Err(e) => {
                    tracing::warn!(%group, node = m.from, error = %e, "old replica not deleted (unreachable)")
                }
            }
        }
        self.publish_placement(group).await;
        tracing::info!(%group, from = m.from, to = m.to, catch_up_ms, "replica moved");
        Ok(MoveDone {
            voters: new_voters.into_iter().collect(),
            moved: true,
            catch_up_ms,
        })
    }

    /// Removes a learner that did not catch up, and its replica.
    async fn roll_back(&self, group: GroupId, m: &MoveRequest) {
        tracing::warn!(%group, to = m.to, "replica move rolled back");
        if let Some(raft) = self.groups.get(group) {
            let gone = ChangeMembers::RemoveNodes(BTreeSet::from([m.to]));
            if let Err(e) = raft.change_membership(gone, false).await {
                tracing::warn!(%group, error = %e, "learner of a rolled-back move not removed");
                return;
            }
        }
        let r: Result<Result<(), String>, _> = self
            .rpc
            .call(
                &m.to_addr,
                &format!("/internal/v1/unhost/{}", group.0),
                &(),
                Duration::from_secs(10),
            )
            .await;
        if let Err(e) = r {
            tracing::warn!(%group, node = m.to, error = %e, "replica of a rolled-back move not deleted");
        }
    }

    /// Moves one replica of `group` through whichever node leads it, retrying
    /// across leader changes for up to `placement.catch_up_timeout_ms` plus
    /// `limits.membership_timeout_ms`.
    pub async fn move_replica(
        &self,
        group: GroupId,
        m: MoveRequest,
    ) -> Result<MoveDone, ProposeError> {
        let timeout = Duration::from_millis(
            self.config.placement.catch_up_timeout_ms + self.config.limits.membership_timeout_ms,
        );
        self.on_leader_until(group, timeout, "move", &m, |m| {
            self.move_replica_local(group, m)
        })
        .await
    }

    /// Runs an operation on `group`'s leader (`local` here when this node
    /// leads it, else `req` posted to the leader's `/internal/v1/{endpoint}/{g}`),
    /// following `not_leader` answers across leader changes for up to `timeout`.
    pub(crate) async fn on_leader_until<Req, T, Fut>(
        &self,
        group: GroupId,
        timeout: Duration,
        endpoint: &str,
        req: &Req,
        local: impl Fn(Req) -> Fut,
    ) -> Result<T, ProposeError>
    where
        Req: Clone + Serialize,
        T: serde::de::DeserializeOwned,
        Fut: std::future::Future<Output = Result<T, ProposeError>>,
    {
        let deadline = Instant::now() + timeout;
        let mut last = ProposeError::Unavailable(format!("no leader for {group}"));
        while Instant::now() < deadline {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let result = self
                .on_leader(
                    group,
                    remaining,
                    endpoint,
                    || req.clone(),
                    ProposeError::Unavailable,
                    |_| local(req.clone()),
                )
                .await;
            match result {
                Err(e @ ProposeError::NotLeader { .. }) => {
                    last = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
        Err(last)
    }
}
