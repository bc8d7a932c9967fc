//! Bounded state-machine time: a leader never stamps a command further ahead of
//! a majority of its group's clocks than `raft.clock_skew_max_ms`.
//!
//! State-machine time is the largest stamp applied (see `storage::machine`), and
//! holds and idempotency sessions expire by it. Without a bound, one leader whose
//! clock runs a day ahead would move it a day forward for good, and every hold
//! would expire at once. So each node reads its peers' clocks every
//! `raft.clock_probe_interval_ms` (`/internal/v1/clock`, the answer placed at
//! the midpoint of the round trip), and a leader stamps with
//! `min(own clock, majority clock + clock_skew_max_ms)`, where the majority
//! clock is the latest time that a majority of the group's voters have reached.
//! A leader whose clock is behind stamps with its own clock: state-machine time
//! then stands still (it never goes back) until real time catches up.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use boxoffice_raft::NodeId;

/// One reading of a peer's clock. It is kept as the peer's time at an instant
/// of this node's monotonic clock, not as an offset from this node's wall clock,
/// so that a jump of this node's wall clock does not move its estimates of the
/// others' (a leader whose clock jumps an hour ahead must not read its peers as
/// an hour ahead too).
#[derive(Clone, Copy, Debug)]
struct Reading {
    /// The peer's clock (ms since the epoch) at `at`.
    peer_ms: u64,
    /// The midpoint of the round trip that read it.
    at: Instant,
}

/// The latest clock reading of each peer.
#[derive(Default)]
pub struct PeerClocks {
    readings: Mutex<BTreeMap<NodeId, Reading>>,
}

impl PeerClocks {
    /// Records that `peer` answered `peer_ms` to a request sent at `sent` and
    /// answered at `received`.
    pub fn record(&self, peer: NodeId, sent: Instant, peer_ms: u64, received: Instant) {
        let at = sent + received.saturating_duration_since(sent) / 2;
        let mut map = self.readings.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(peer, Reading { peer_ms, at });
    }

    /// The peer's clock now, estimated from a reading taken within `age_max`.
    fn estimate(&self, peer: NodeId, age_max: Duration) -> Option<u64> {
        let map = self.readings.lock().unwrap_or_else(|e| e.into_inner());
        let r = map.get(&peer)?;
        let age = r.at.elapsed();
        (age <= age_max).then(|| {
            r.peer_ms
                .saturating_add(u64::try_from(age.as_millis()).unwrap_or(u64::MAX))
        })
    }

    /// When `peer`'s clock was last read (the node last heard from it).
    pub fn last_heard(&self, peer: NodeId) -> Option<Instant> {
        let map = self.readings.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&peer).map(|r| r.at)
    }

    /// Peers among `voters` (besides `me`) without a fresh reading.
    pub fn missing(&self, me: NodeId, voters: &[NodeId], age_max: Duration) -> Vec<NodeId> {
        voters
            .iter()
            .copied()
            .filter(|v| *v != me && self.estimate(*v, age_max).is_none())
            .collect()
    }

    /// The stamp a leader `me` with clock `now_ms` may give a command of a group
    /// with these voters, or `None` while fewer than a majority of the voters'
    /// clocks are known.
    pub fn stamp(
        &self,
        me: NodeId,
        now_ms: u64,
        voters: &[NodeId],
        age_max: Duration,
        skew_max_ms: u64,
    ) -> Option<u64> {
        let clocks: Vec<u64> = voters
            .iter()
            .filter_map(|v| {
                if *v == me {
                    Some(now_ms)
                } else {
                    self.estimate(*v, age_max)
                }
            })
            .collect();
        bounded_stamp(now_ms, voters.len(), clocks, skew_max_ms)
    }
}

/// `min(now_ms, m-th latest clock + skew_max_ms)` where m is a majority of
/// `voters` voters: at least a majority of the group has reached that clock.
/// `None` if fewer than m clocks are known.
fn bounded_stamp(
    now_ms: u64,
    voters: usize,
    mut clocks: Vec<u64>,
    skew_max_ms: u64,
) -> Option<u64> {
    let majority = voters / 2 + 1;
    if clocks.len() < majority {
        return None;
    }
    clocks.sort_unstable_by(|a, b| b.cmp(a));
    let majority_clock = clocks[majority - 1];
    Some(now_ms.min(majority_clock.saturating_add(skew_max_ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3_600_000;

    #[test]
    fn a_leader_ahead_is_held_to_the_majority_plus_the_bound() {
        // Leader an hour ahead, two followers on time.
        assert_eq!(
            bounded_stamp(10 * H + H, 3, vec![11 * H, 10 * H, 10 * H], 2_000),
            Some(10 * H + 2_000)
        );
        // One follower ahead does not pull the leader forward.
        assert_eq!(
            bounded_stamp(10 * H, 3, vec![10 * H, 11 * H, 10 * H], 2_000),
            Some(10 * H)
        );
        // A leader behind keeps its own clock (time then stands still).
        assert_eq!(
            bounded_stamp(9 * H, 3, vec![9 * H, 10 * H, 10 * H], 2_000),
            Some(9 * H)
        );
        // Within the bound, the leader's clock is used as it is.
        assert_eq!(
            bounded_stamp(
                10 * H + 1_500,
                3,
                vec![10 * H + 1_500, 10 * H, 10 * H],
                2_000
            ),
            Some(10 * H + 1_500)
        );
        // Five voters, two of them an hour ahead with the leader: the third latest decides.
        assert_eq!(
            bounded_stamp(
                11 * H,
                5,
                vec![11 * H, 11 * H, 11 * H - 5, 10 * H, 10 * H],
                0
            ),
            Some(11 * H - 5)
        );
        assert_eq!(
            bounded_stamp(11 * H, 5, vec![11 * H, 11 * H, 10 * H, 10 * H, 10 * H], 0),
            Some(10 * H)
        );
    }

    #[test]
    fn without_a_majority_of_clocks_there_is_no_stamp() {
        assert_eq!(bounded_stamp(H, 3, vec![H], 2_000), None);
        assert_eq!(bounded_stamp(H, 1, vec![H], 2_000), Some(H));
        assert_eq!(bounded_stamp(H, 5, vec![H, H], 2_000), None);
    }

    #[test]
    fn readings_give_clocks_and_go_stale() {
        let c = PeerClocks::default();
        // Peer answered 11h to a request sent 100 ms ago, answered now.
        let received = Instant::now();
        // The test process has run for more than 100 ms of monotonic time? Not
        // always: then the request counts as sent now.
        let sent = received
            .checked_sub(Duration::from_millis(100))
            .unwrap_or(received);
        c.record(2, sent, 11 * H, received);
        let e = c.estimate(2, Duration::from_secs(5)).unwrap();
        assert!((11 * H..11 * H + 1_000).contains(&e), "{e}");
        assert_eq!(c.missing(1, &[1, 2, 3], Duration::from_secs(5)), vec![3]);
        // Our own clock, whatever it says, does not move the estimate.
        let s = c
            .stamp(1, 12 * H, &[1, 2, 3], Duration::from_secs(5), 0)
            .unwrap();
        assert!((11 * H..11 * H + 1_000).contains(&s), "{s}");
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(c.estimate(2, Duration::from_millis(70)), None);
        assert_eq!(
            c.stamp(1, 10 * H, &[1, 2, 3], Duration::from_millis(70), 0),
            None
        );
    }
}
