//! The power nemesis: each node's data directory is a [`crate::powerfs`]
//! mount, and a power cut makes a node (a minority, or the whole cluster)
//! forget everything it had not fsynced, at a chosen crash point, before it is
//! killed and restarted on what a disk would have kept.
//!
//! Besides the history's checkers (every acknowledged write must survive),
//! each cut checks the Raft logs themselves: before the cut nodes are killed,
//! every node still answers from memory what it acknowledged (a leader's
//! `matched` index for each replica, itself included, and its term); after the
//! cut, each cut node's data directory is opened offline and must hold at
//! least that much log, with a saved vote of at least that term.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use boxoffice_node::local_cluster::LocalCluster;
use boxoffice_storage::inspect::{recovered_logs, RecoveredLog};
use serde::Serialize;
use tokio::sync::Mutex;

use crate::powerfs::{Mount, Op, Step, Trigger};

/// How long an armed crash point may take to be reached before the cut
/// happens anyway.
pub const TRIGGER_WAIT: Duration = Duration::from_secs(8);
/// How long a cut's election (the `vote` point) may take.
pub const ELECTION_WAIT: Duration = Duration::from_secs(5);

/// Which nodes a power cut takes down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// One node, a minority or the whole cluster, drawn each time.
    Any,
    /// One node.
    One,
    /// As many nodes as a majority can do without.
    Minority,
    /// Every node at once.
    WholeCluster,
}

/// Where in a node's work the power goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CrashPoint {
    /// Whenever the nemesis gets to it.
    Now,
    /// Mid WAL group commit: the WAL's writes are made, its fsync is not.
    WalSync,
    /// During a snapshot build (forced on a busy shard): before the new
    /// snapshot file is fsynced.
    SnapshotBuild,
    /// During log purge: at the first WAL fsync after a snapshot is in place
    /// (a purge's synced write follows each snapshot).
    Purge,
    /// During a snapshot install: the node is killed, snapshots are forced on
    /// every node, and when it restarts the cut comes right after the
    /// received snapshot is renamed into place and its directory fsynced,
    /// before the state machine is replaced.
    SnapshotInstall,
    /// Right after a vote: a busy shard's leader is killed, and the cut hits
    /// the new leader as soon as it is elected.
    Vote,
    /// During a membership change of a busy shard (another node removed and
    /// added back): at the node's first WAL fsync after the change begins.
    Membership,
}

impl CrashPoint {
    /// Points for cuts of one node or a minority.
    pub const PARTIAL: [CrashPoint; 7] = [
        CrashPoint::Now,
        CrashPoint::WalSync,
        CrashPoint::SnapshotBuild,
        CrashPoint::Purge,
        CrashPoint::SnapshotInstall,
        CrashPoint::Vote,
        CrashPoint::Membership,
    ];
    /// Points for a whole-cluster cut.
    pub const WHOLE: [CrashPoint; 2] = [CrashPoint::Now, CrashPoint::WalSync];
}

/// What the nodes acknowledged, as sampled from memory right after the cut.
#[derive(Clone, Copy, Debug, Default, Serialize)]
struct Acked {
    index: u64,
    term: u64,
}

/// One cut, as recorded in `power.jsonl` and the verdict.
#[derive(Clone, Debug, Serialize)]
pub struct CutRecord {
    pub nodes: Vec<u64>,
    pub point: CrashPoint,
    pub fired_by: Option<String>,
    pub bytes_forgotten: u64,
    pub entries_undone: usize,
    pub logs_checked: usize,
    pub violations: Vec<String>,
}

/// The power nemesis's mounts and findings.
pub struct Power {
    disks: BTreeMap<u64, PathBuf>,
    data_dirs: BTreeMap<u64, PathBuf>,
    mounts: BTreeMap<u64, Mount>,
    /// Nodes left down by the current cut, restarted at its end.
    pub down: Vec<u64>,
    /// A membership change the current cut started (group, node).
    pub membership: Option<(u16, u64)>,
    pub cuts: Vec<CutRecord>,
}

impl Power {
    /// Mounts a power-cut file system over each node's (empty) data
    /// directory, backed by `<run dir>/node-<id>.disk`.
    pub fn mount(cluster: &LocalCluster) -> anyhow::Result<Power> {
        let mut p = Power {
            disks: BTreeMap::new(),
            data_dirs: BTreeMap::new(),
            mounts: BTreeMap::new(),
            down: Vec::new(),
            membership: None,
            cuts: Vec::new(),
        };
        for (&id, n) in &cluster.nodes {
            let disk = cluster.dir.join(format!("node-{id}.disk"));
            let m = Mount::new(&disk, &n.data_dir).map_err(|e| {
                anyhow::anyhow!("mounting powerfs at {}: {e}", n.data_dir.display())
            })?;
            p.disks.insert(id, disk);
            p.data_dirs.insert(id, n.data_dir.clone());
            p.mounts.insert(id, m);
        }
        Ok(p)
    }

    /// Unmounts everything (the nodes must be stopped).
    pub fn unmount_all(&mut self) {
        for (id, m) in std::mem::take(&mut self.mounts) {
            if let Err(e) = m.unmount() {
                eprintln!("unmounting node {id}'s powerfs: {e}");
            }
        }
    }

    fn arm(&self, node: u64, steps: &[(Op, &str)], after: bool) {
        if let Some(m) = self.mounts.get(&node) {
            m.arm(Trigger {
                steps: steps
                    .iter()
                    .map(|(op, p)| Step {
                        op: *op,
                        path_contains: p.to_string(),
                    })
                    .collect(),
                after,
            });
        }
    }

    /// Cuts the power of `nodes` (the first at `point`), kills them, checks
    /// their logs against what they acknowledged, and leaves them down until
    /// [`Power::restore`].
    pub async fn cut(
        &mut self,
        cluster: &Arc<Mutex<LocalCluster>>,
        mut nodes: Vec<u64>,
        point: CrashPoint,
        group: u16,
    ) -> anyhow::Result<String> {
        let Some(&first) = nodes.first() else {
            anyhow::bail!("no node to cut");
        };
        let mut target = first;
        match point {
            CrashPoint::Now => {}
            CrashPoint::WalSync => self.arm(target, &[(Op::Fsync, ".log")], false),
            CrashPoint::SnapshotBuild => {
                self.arm(target, &[(Op::Fsync, "build-")], false);
                snapshot(cluster, target, group).await;
            }
            CrashPoint::Purge => {
                self.arm(
                    target,
                    &[(Op::Rename, "current.snap"), (Op::Fsync, ".log")],
                    false,
                );
                snapshot(cluster, target, group).await;
            }
            CrashPoint::SnapshotInstall => {
                cluster.lock().await.kill(target);
                self.down.push(target);
                let ids: Vec<u64> = cluster.lock().await.nodes.keys().copied().collect();
                // Let the others move on, then snapshot (and purge) everywhere,
                // so that the restarted node needs a snapshot.
                tokio::time::sleep(Duration::from_secs(1)).await;
                let shards = cluster.lock().await.shards;
                for id in ids.into_iter().filter(|&i| i != target) {
                    for g in 0..=shards {
                        snapshot(cluster, id, g).await;
                    }
                }
                self.arm(
                    target,
                    &[
                        (Op::Rename, "installing.tmp"),
                        (Op::FsyncDir, "snapshots/g"),
                    ],
                    true,
                );
                cluster.lock().await.start(target)?;
            }
            CrashPoint::Vote => {
                let c = cluster.lock().await;
                let old = c.leader_of(group, ELECTION_WAIT).await?;
                let old_term = term_of(&c, group).await;
                drop(c);
                cluster.lock().await.kill(old);
                self.down.push(old);
                let deadline = Instant::now() + ELECTION_WAIT;
                loop {
                    let c = cluster.lock().await;
                    let l = c.leaders().await.get(&group).copied();
                    let t = term_of(&c, group).await;
                    drop(c);
                    if let Some(l) = l.filter(|&l| l != old && t > old_term) {
                        target = l;
                        break;
                    }
                    if Instant::now() > deadline {
                        anyhow::bail!("no new leader of group {group} within {ELECTION_WAIT:?}");
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                nodes.retain(|&n| n != old && n != target);
                nodes.insert(0, target);
            }
            CrashPoint::Membership => {
                let c = cluster.lock().await;
                let other = c.nodes.keys().copied().find(|&i| !nodes.contains(&i));
                drop(c);
                if let Some(other) = other {
                    self.arm(target, &[(Op::Fsync, ".log")], false);
                    self.membership = Some((group, other));
                    spawn_membership_change(cluster, group, other).await;
                }
            }
        }
        // Wait for the crash point (if armed), then cut the rest at once.
        let started = Instant::now();
        let mut fired_by = None;
        if point != CrashPoint::Now && point != CrashPoint::Vote {
            while started.elapsed() < TRIGGER_WAIT {
                if let Some(c) = self.mounts.get(&target).and_then(|m| m.cut_happened()) {
                    fired_by = c.fired_by;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        let mut forgotten = 0;
        let mut undone = 0;
        for n in &nodes {
            if let Some(m) = self.mounts.get(n) {
                m.disarm();
                let c = m.cut();
                forgotten += c.report.bytes_forgotten;
                undone += c.report.entries_undone;
                if !c.report.errors.is_empty() {
                    anyhow::bail!(
                        "powerfs could not undo node {n}'s unsynced changes: {:?}",
                        c.report.errors
                    );
                }
            }
        }
        // What every node acknowledged: a cut node can acknowledge nothing
        // more (its file system fails every write), and each still answers
        // from memory until it is killed.
        let acked = sample_acked(cluster).await;
        {
            let mut c = cluster.lock().await;
            for &n in &nodes {
                c.kill(n);
            }
        }
        let mut violations = Vec::new();
        let mut checked = 0;
        for &n in &nodes {
            let Some(m) = self.mounts.remove(&n) else {
                continue;
            };
            self.down.push(n);
            let unmounted = m.unmount();
            let data = self.disks[&n].join("data");
            let logs = match unmounted {
                Ok(()) => tokio::task::spawn_blocking(move || recovered_logs(&data))
                    .await
                    .map_err(anyhow::Error::from)
                    .and_then(|r| r.map_err(anyhow::Error::from)),
                Err(e) => Err(e.into()),
            };
            // Mounted again whatever happened: the node must never restart
            // on the bare mount point.
            let m = Mount::new(&self.disks[&n], &self.data_dirs[&n])?;
            self.mounts.insert(n, m);
            let logs =
                logs.map_err(|e| anyhow::anyhow!("reading node {n}'s logs after the cut: {e:#}"))?;
            for ((g, node), a) in acked.iter().filter(|((_, node), _)| *node == n) {
                checked += 1;
                violations.extend(check_log(*node, *g, a, logs.get(g)));
            }
        }
        let summary = format!(
            "power cut of node(s) {nodes:?} at {point:?}{}: {forgotten} unsynced bytes and {undone} directory changes forgotten; {checked} logs checked, {} short",
            fired_by.as_ref().map(|f| format!(" ({f})")).unwrap_or_default(),
            violations.len()
        );
        self.cuts.push(CutRecord {
            nodes,
            point,
            fired_by,
            bytes_forgotten: forgotten,
            entries_undone: undone,
            logs_checked: checked,
            violations,
        });
        Ok(summary)
    }

    /// Power back: restarts the nodes a cut left down, and puts back a node a
    /// membership change removed.
    pub async fn restore(&mut self, cluster: &Arc<Mutex<LocalCluster>>) -> anyhow::Result<()> {
        let mut c = cluster.lock().await;
        for n in std::mem::take(&mut self.down) {
            c.start(n)?;
        }
        if let Some((g, n)) = self.membership.take() {
            for action in [
                boxoffice_api::MemberAction::AddLearner,
                boxoffice_api::MemberAction::Promote,
            ] {
                let addr = c.node(n)?.peer_addr.to_string();
                let body = boxoffice_api::MemberChange {
                    action,
                    addr: (action == boxoffice_api::MemberAction::AddLearner).then_some(addr),
                    allow_unlisted_addr: false,
                };
                c.admin_post(
                    &format!("/admin/v1/groups/{g}/members/{n}"),
                    &body,
                    crate::nemesis::MEMBERSHIP_TIMEOUT,
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Every violation found, and figures.
    pub fn verdict(&self) -> crate::checker::Verdict {
        let violations = self
            .cuts
            .iter()
            .flat_map(|c| c.violations.iter().cloned())
            .collect();
        let whole = self
            .cuts
            .iter()
            .filter(|c| c.nodes.len() == self.disks.len())
            .count();
        let fired = self.cuts.iter().filter(|c| c.fired_by.is_some()).count();
        let notes = vec![format!(
            "{} power cuts ({whole} of the whole cluster, {fired} at an armed crash point), {} unsynced bytes and {} directory changes forgotten, {} replica logs checked against what they acknowledged",
            self.cuts.len(),
            self.cuts.iter().map(|c| c.bytes_forgotten).sum::<u64>(),
            self.cuts.iter().map(|c| c.entries_undone).sum::<usize>(),
            self.cuts.iter().map(|c| c.logs_checked).sum::<usize>(),
        )];
        crate::checker::Verdict {
            checker: "power-cut-logs",
            violations,
            undecided: Vec::new(),
            notes,
        }
    }
}

/// A replica's log after a cut against what it acknowledged before it.
fn check_log(node: u64, group: u16, acked: &Acked, log: Option<&RecoveredLog>) -> Option<String> {
    let (last, term) = match log {
        Some(l) => (l.last_index.unwrap_or(0), l.vote_term),
        None => (0, 0),
    };
    if last < acked.index {
        return Some(format!(
            "node {node} came back from a power cut with group {group}'s log ending at {last}, but had acknowledged index {} (term {})",
            acked.index, acked.term
        ));
    }
    if term < acked.term {
        return Some(format!(
            "node {node} came back from a power cut with a saved vote of term {term} in group {group}, but had acknowledged entries in term {}",
            acked.term
        ));
    }
    None
}

/// The highest term any running node reports for `group`.
async fn term_of(c: &LocalCluster, group: u16) -> u64 {
    let mut t = 0;
    for &id in c.nodes.keys() {
        if let Some(v) = c.cluster_view(id).await {
            if let Some(g) = v.groups.iter().find(|g| g.group == group) {
                t = t.max(g.term);
            }
        }
    }
    t
}

/// For each (group, node): the highest index a leader saw the node
/// acknowledge, and that leader's term.
async fn sample_acked(cluster: &Arc<Mutex<LocalCluster>>) -> BTreeMap<(u16, u64), Acked> {
    let c = cluster.lock().await;
    let mut acked: BTreeMap<(u16, u64), Acked> = BTreeMap::new();
    for &id in c.nodes.keys() {
        let Some(v) = c.cluster_view(id).await else {
            continue;
        };
        for g in v.groups.iter().filter(|g| g.state == "Leader") {
            for (&n, &index) in &g.matched {
                let a = acked.entry((g.group, n)).or_default();
                a.index = a.index.max(index);
                a.term = a.term.max(g.term);
            }
        }
    }
    acked
}

/// Asks `node` to snapshot `group` now (best effort: a node that does not
/// host the group, or is down, is skipped).
async fn snapshot(cluster: &Arc<Mutex<LocalCluster>>, node: u64, group: u16) {
    let c = cluster.lock().await;
    let Ok(n) = c.node(node) else { return };
    if !n.running() {
        return;
    }
    let url = format!("{}/admin/v1/groups/{group}/snapshot", n.url());
    let token = c.admin_token.clone();
    drop(c);
    let _ = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .header(
            boxoffice_api::IDEMPOTENCY_KEY_HEADER,
            format!("power-snapshot-{}", rand::random::<u64>()),
        )
        .timeout(Duration::from_secs(5))
        .send()
        .await;
}

/// Removes `node` from `group` in the background (through whichever node
/// answers), without holding the cluster, so that a cut can come meanwhile.
async fn spawn_membership_change(cluster: &Arc<Mutex<LocalCluster>>, group: u16, node: u64) {
    let c = cluster.lock().await;
    let urls = c.urls();
    let token = c.admin_token.clone();
    drop(c);
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        let body = boxoffice_api::MemberChange {
            action: boxoffice_api::MemberAction::Remove,
            addr: None,
            allow_unlisted_addr: false,
        };
        for url in urls {
            let r = http
                .post(format!("{url}/admin/v1/groups/{group}/members/{node}"))
                .bearer_auth(&token)
                .header(
                    boxoffice_api::IDEMPOTENCY_KEY_HEADER,
                    format!("power-member-{}", rand::random::<u64>()),
                )
                .json(&body)
                .timeout(crate::nemesis::MEMBERSHIP_TIMEOUT)
                .send()
                .await;
            if r.is_ok_and(|r| r.status().is_success()) {
                return;
            }
        }
    });
}
