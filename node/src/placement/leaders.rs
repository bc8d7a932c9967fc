//! Handing a group's leadership to another voter, on openraft 0.9, which has
//! no leader transfer: a follower refuses to vote while its leader's lease
//! (`raft.election_timeout_ms_max`, renewed by every append and heartbeat it
//! receives) lasts. So the leader
//!
//! 1. holds this group's writes and read-index requests on this node (they
//!    wait, then go to the new leader: see [`Handoffs::wait`]),
//! 2. waits until the chosen voter has every log entry it has,
//! 3. stops its heartbeats and lets the lease run out on the followers,
//! 4. asks the chosen voter to campaign (`/internal/v1/elect/{group}`), which
//!    wins at once: its log is the longest and the others' election timers
//!    (lease plus an election timeout) have not fired yet,
//! 5. waits to hear of the new leader, and lets the held requests go.
//!
//! Writes to the group pause for about one lease (600 ms by default) plus an
//! election round trip; the figure is measured in `node/tests/it/placement.rs`.
//! The heartbeats come back on however the handoff ends, and if the chosen
//! voter does not win, this node stays leader and says so.
//!
//! Used by the balancer (leaderships off draining nodes first, then evened
//! out), before a node stops (SIGTERM, `placement.handoff_on_stop_ms`), and by
//! `POST /admin/v1/groups/{g}/leader`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use boxoffice_raft::{GroupId, NodeId};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::moves::MoveRequest;
use crate::node::{Node, ProposeError};

/// Entries a voter may be behind the leader's log when a handoff to it starts
/// holding writes (it gets the rest while they are held).
const HANDOFF_LAG_MAX: u64 = 256;

/// The groups whose leadership this node is handing over: their writes and
/// read-index requests wait.
pub struct Handoffs(watch::Sender<BTreeSet<GroupId>>);

impl Default for Handoffs {
    fn default() -> Self {
        Handoffs(watch::Sender::new(BTreeSet::new()))
    }
}

impl Handoffs {
    /// Waits (up to `timeout`) while `group`'s leadership is being handed
    /// over from this node; after that the caller finds the new leader.
    pub async fn wait(&self, group: GroupId, timeout: Duration) -> Result<(), ProposeError> {
        if !self.0.borrow().contains(&group) {
            return Ok(());
        }
        let mut rx = self.0.subscribe();
        let released = tokio::time::timeout(timeout, rx.wait_for(|s| !s.contains(&group)))
            .await
            .is_ok();
        if released {
            Ok(())
        } else {
            Err(ProposeError::Unavailable(format!(
                "{group}'s leadership is being handed over"
            )))
        }
    }

    fn hold(&self, group: GroupId) -> Held<'_> {
        self.0.send_modify(|s| {
            s.insert(group);
        });
        Held {
            handoffs: self,
            group,
        }
    }
}

/// A group's requests held for one handoff; released when dropped.
struct Held<'a> {
    handoffs: &'a Handoffs,
    group: GroupId,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.handoffs.0.send_modify(|s| {
            s.remove(&self.group);
        });
    }
}

/// Turns a group's heartbeats back on when dropped.
struct Heartbeats(boxoffice_raft::Raft);

impl Drop for Heartbeats {
    fn drop(&mut self) {
        self.0.runtime_config().heartbeat(true);
    }
}

/// A leadership handoff asked of a group's leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRequest {
    /// The voter to lead next.
    pub to: NodeId,
}

/// What a handoff did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderMoved {
    /// The group's leader now.
    pub leader: NodeId,
    /// False when `to` led the group already.
    pub moved: bool,
    /// Milliseconds this node held the group's writes.
    pub writes_held_ms: u64,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Node {
    /// Hands `group`'s leadership from this node (its leader) to voter `to`.
    pub async fn transfer_leader_local(
        &self,
        group: GroupId,
        to: NodeId,
    ) -> Result<LeaderMoved, ProposeError> {
        self.hand_over(group, to, self.config.placement.moves_in_flight_max)
            .await
    }

    /// [`Node::transfer_leader_local`] with at most `in_flight_max` operations
    /// on this node at once.
    async fn hand_over(
        &self,
        group: GroupId,
        to: NodeId,
        in_flight_max: usize,
    ) -> Result<LeaderMoved, ProposeError> {
        let raft = self
            .groups
            .get(group)
            .ok_or(ProposeError::NoSuchGroup(group.0))?;
        match self.leader_of(group) {
            Some((l, _)) if l == to => {
                return Ok(LeaderMoved {
                    leader: to,
                    moved: false,
                    writes_held_ms: 0,
                })
            }
            _ => self.ensure_leader(group)?,
        }
        let membership = raft.metrics().borrow().membership_config.clone();
        let Some(to_addr) = membership
            .membership()
            .voter_ids()
            .find(|v| *v == to)
            .and_then(|v| membership.membership().get_node(&v))
            .map(|n| n.addr.clone())
        else {
            return Err(ProposeError::Unavailable(format!(
                "node {to} holds no voter of {group}"
            )));
        };
        if membership.membership().get_joint_config().len() > 1 {
            return Err(ProposeError::Unavailable(format!(
                "{group} is in a membership change"
            )));
        }
        // A voter not heard from lately would not take over: keep leading.
        let fresh = Duration::from_millis(self.config.raft.clock_reading_age_ms_max);
        if !self
            .clocks
            .last_heard(to)
            .is_some_and(|at| at.elapsed() <= fresh)
        {
            return Err(ProposeError::Unavailable(format!(
                "node {to} has not been heard from within raft.clock_reading_age_ms_max"
            )));
        }
        let request = MoveRequest {
            from: self.id(),
            to,
            to_addr: to_addr.clone(),
        };
        let _slot = self.placement.moves.take(
            group,
            "move_leader",
            &request,
            "holding writes; new leader catching up",
            in_flight_max,
        )?;
        let lease = Duration::from_millis(self.config.raft.election_timeout_ms_max);
        let heartbeat = Duration::from_millis(self.config.raft.heartbeat_interval_ms);
        // How far `to` is behind this leader's log, in entries.
        let behind = |raft: &boxoffice_raft::Raft| {
            let m = raft.metrics().borrow().clone();
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(&to).cloned().flatten())
                .map(|l| l.index);
            match (matched, m.last_log_index) {
                (Some(have), Some(last)) => last.saturating_sub(have),
                (None, Some(_)) => u64::MAX,
                (_, None) => 0,
            }
        };
        // Close to the end of the log before writes are held (a voter that is
        // still catching up, say just restarted, is refused at no cost).
        let wait_until = |max_behind: u64, what: &'static str| {
            let raft = raft.clone();
            async move {
                let deadline = Instant::now() + lease;
                while behind(&raft) > max_behind {
                    if Instant::now() >= deadline {
                        return Err(ProposeError::Unavailable(format!(
                            "node {to} did not catch up with {group}'s log ({what}) within {} ms; this node stays leader",
                            lease.as_millis()
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Ok(())
            }
        };
        wait_until(HANDOFF_LAG_MAX, "before writes were held").await?;
        let held_at = Instant::now();
        let _held = self.placement.handoffs.hold(group);
        // Everything appended so far (writes proposed before the hold) reaches `to`.
        wait_until(0, "with writes held").await?;
        let _heartbeats = Heartbeats(raft.clone());
        raft.runtime_config().heartbeat(false);
        self.placement
            .moves
            .set_phase(group, "letting the followers' lease run out");
        // The followers last heard from this leader no later than now.
        tokio::time::sleep(lease + 2 * heartbeat).await;
        if behind(&raft) > 0 {
            return Err(ProposeError::Unavailable(format!(
                "node {to} fell behind {group}'s log; this node stays leader"
            )));
        }

        self.placement
            .moves
            .set_phase(group, "the new leader campaigning");
        let asked: Result<Result<(), String>, _> = self
            .rpc
            .call(
                &to_addr,
                &format!("/internal/v1/elect/{}", group.0),
                &(),
                lease,
            )
            .await;
        match asked {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(ProposeError::Unavailable(format!(
                    "node {to} did not campaign: {e}; this node stays leader"
                )))
            }
            Err(e) => {
                return Err(ProposeError::Unavailable(format!(
                    "node {to} not reached: {e}; this node stays leader"
                )))
            }
        }
        let deadline = Instant::now() + 2 * lease;
        loop {
            match raft.metrics().borrow().current_leader {
                Some(l) if l == self.id() => {}
                Some(l) => {
                    let writes_held_ms = ms(held_at.elapsed());
                    tracing::info!(%group, to, leader = l, writes_held_ms, "leadership handed over");
                    return Ok(LeaderMoved {
                        leader: l,
                        moved: true,
                        writes_held_ms,
                    });
                }
                None => {}
            }
            if Instant::now() >= deadline {
                return Err(ProposeError::Unavailable(format!(
                    "node {to} did not win {group}'s election within {} ms; this node stays leader",
                    (2 * lease).as_millis()
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// On a voter asked to take `group`'s leadership: campaigns now.
    pub async fn campaign(&self, group: GroupId) -> Result<(), String> {
        let raft = self
            .groups
            .get(group)
            .ok_or_else(|| format!("{group} is not hosted here"))?;
        let is_voter = raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == self.id());
        if !is_voter {
            return Err(format!("this node holds no voter of {group}"));
        }
        raft.trigger().elect().await.map_err(|e| e.to_string())
    }

    /// Hands `group`'s leadership to `to` through whichever node leads it.
    pub async fn transfer_leader(
        &self,
        group: GroupId,
        to: NodeId,
    ) -> Result<LeaderMoved, ProposeError> {
        let timeout = Duration::from_millis(self.config.limits.membership_timeout_ms);
        self.on_leader_until(
            group,
            timeout,
            "transfer_leader",
            &LeaderRequest { to },
            |r| self.transfer_leader_local(group, r.to),
        )
        .await
    }

    /// The groups this node leads now.
    pub fn leading(&self) -> Vec<GroupId> {
        self.hosted()
            .into_iter()
            .filter(|g| self.leader_of(*g).map(|(id, _)| id) == Some(self.id()))
            .collect()
    }

    /// Before this node stops: hands every leadership it has to another voter
    /// (all groups at once), for at most `placement.handoff_on_stop_ms`.
    /// Groups whose other voters are not heard from stay as they are.
    pub async fn hand_off_leaderships(self: &Arc<Self>) {
        let budget = Duration::from_millis(self.config.placement.handoff_on_stop_ms);
        if budget.is_zero() {
            return;
        }
        let fresh = Duration::from_millis(self.config.raft.clock_reading_age_ms_max);
        let mut handoffs = Vec::new();
        for group in self.leading() {
            let Some((voters, _, _)) = self.membership_of(group) else {
                continue;
            };
            // The most caught-up voter heard from lately.
            let Some(raft) = self.groups.get(group) else {
                continue;
            };
            let matched = raft.metrics().borrow().replication.clone();
            let to = voters
                .into_iter()
                .filter(|v| *v != self.id())
                .filter(|v| {
                    self.clocks
                        .last_heard(*v)
                        .is_some_and(|at| at.elapsed() <= fresh)
                })
                .max_by_key(|v| {
                    (
                        matched
                            .as_ref()
                            .and_then(|r| r.get(v).cloned().flatten())
                            .map(|l| l.index),
                        std::cmp::Reverse(*v),
                    )
                });
            if let Some(to) = to {
                let me = self.clone();
                handoffs
                    .push(async move { (group, to, me.hand_over(group, to, usize::MAX).await) });
            }
        }
        if handoffs.is_empty() {
            return;
        }
        tracing::info!(
            groups = handoffs.len(),
            "stopping: handing leaderships to other voters"
        );
        match tokio::time::timeout(budget, futures::future::join_all(handoffs)).await {
            Ok(done) => {
                for (group, to, r) in done {
                    if let Err(e) = r {
                        tracing::warn!(%group, to, error = %e, "leadership not handed over before stopping");
                    }
                }
            }
            Err(_) => tracing::warn!(
                "leaderships not all handed over within placement.handoff_on_stop_ms"
            ),
        }
    }
}
