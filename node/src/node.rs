//! One node's runtime: its database, the Raft groups it hosts, and the write and
//! read-barrier paths that route a command to its group's leader.

use anyhow::Context;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use boxoffice_raft::command::{Command, Effect, Outcome, Request, Session};
use boxoffice_raft::groups::Groups;
use boxoffice_raft::network::{CallError, NetworkFactory, RpcClient, RpcConfig};
use boxoffice_raft::{all_groups, codec, shard_for_event, GroupId, NodeId, Raft, SHARDS_MAX};
use boxoffice_storage::keys::meta;
use boxoffice_storage::read::Reader;
use boxoffice_storage::{Db, LogStore, StateMachineStore};
use openraft::error::{ClientWriteError, RaftError};
use serde::{Deserialize, Serialize};

use crate::config::NodeConfig;

/// The cluster shape a node belongs to, persisted in its database.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    /// Number of inventory shards, fixed at bootstrap.
    pub shards: u16,
}

boxoffice_raft::versioned_v1!(ClusterRecord => "cluster record");

/// The groups a node hosts, persisted in its database (`meta::HOSTED`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostedGroups(pub Vec<u16>);

boxoffice_raft::versioned_v1!(HostedGroups => "hosted groups record");

/// Handles to one hosted group's storage.
#[derive(Clone)]
pub struct GroupStores {
    /// Log store (for committed index).
    pub log: LogStore,
    /// State machine (applied watch, change stream).
    pub sm: StateMachineStore,
    /// Reads of applied state.
    pub reader: Reader,
    /// Set once this replica, since it opened, has applied everything its
    /// leader had committed when asked (a read index). Until then it serves
    /// no local reads: after a crash it restarts from its last durable
    /// commit point, which can be behind what it had shown readers before.
    pub caught_up: Arc<std::sync::atomic::AtomicBool>,
}

/// Why a write could not be carried out. Travels between nodes (internal RPC).
#[derive(Clone, Debug, Serialize, Deserialize, thiserror::Error)]
pub enum ProposeError {
    /// This node is not the group's leader; the leader it knows of, if any.
    #[error("not the leader of group {group}")]
    NotLeader {
        /// The group.
        group: u16,
        /// (id, address) of the known leader.
        leader: Option<(NodeId, String)>,
    },
    /// The write may or may not have been applied: retry with the same idempotency key.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// The group cannot take writes now (no quorum, shutting down).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// This node does not host the group (not bootstrapped yet).
    #[error("group {0} is not hosted on this node")]
    NoSuchGroup(u16),
    /// Refused by the leader before proposing: over the named limit.
    #[error("over the limit {limit}")]
    RateLimited {
        /// The setting's name.
        limit: String,
        /// Time until the request would be accepted.
        retry_after_ms: u64,
    },
}

/// A running node.
pub struct Node {
    /// Validated settings.
    pub config: NodeConfig,
    /// The node's database.
    pub db: Db,
    /// Holds per user per event, for the shards this node leads.
    pub hold_churn: crate::rate_limits::HoldChurn,
    /// Hosted Raft groups.
    pub groups: Arc<Groups>,
    /// Shared node-to-node client.
    pub rpc: RpcClient,
    stores: RwLock<BTreeMap<GroupId, GroupStores>>,
    shards: RwLock<Option<u16>>,
    raft_config: Arc<openraft::Config>,
    /// Serialises group creation.
    create_lock: tokio::sync::Mutex<()>,
    /// A handle to this node for the tasks it starts.
    myself: std::sync::OnceLock<std::sync::Weak<Node>>,
    /// The search index, once the catalogue group runs here.
    search: std::sync::OnceLock<Arc<crate::search::SearchIndex>>,
    /// Seat-change feeds of the inventory shards.
    feeds: RwLock<BTreeMap<GroupId, Arc<crate::live::Feed>>>,
    /// Permits for live seat-map streams (`limits.sse_streams_max`).
    pub streams: Arc<tokio::sync::Semaphore>,
    /// Backup exports in progress (`limits.backup_exports_max`).
    pub backups: Arc<tokio::sync::Semaphore>,
    /// Rendered event views, kept in step with the catalogue's change stream.
    pub event_cache: crate::event_cache::EventCache,
    /// Each group's proposal batcher, started on the first write this node leads.
    proposers: std::sync::Mutex<BTreeMap<GroupId, crate::proposer::Proposer>>,
    /// Peers' clocks as last read, which bound this node's stamps as a leader.
    pub clocks: crate::clock::PeerClocks,
    /// The payment provider, when `[payments]` configures one.
    pub payments: Option<Arc<crate::payments::Payments>>,
    /// What `GET /metrics` reports.
    pub metrics: crate::metrics::Metrics,
    /// The placement directory as last read, routes, moves in flight.
    pub placement: crate::placement::PlacementState,
}

/// Offset added to the wall clock, set only through the fault-injection API
/// (`fault_injection = true`) to test behaviour under clock skew.
static CLOCK_OFFSET_MS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// Shifts this node's clock by `offset_ms` (fault injection only).
pub fn set_clock_offset_ms(offset_ms: i64) {
    CLOCK_OFFSET_MS.store(offset_ms, std::sync::atomic::Ordering::Relaxed);
}

/// The current clock offset (0 unless fault injection set one).
pub fn clock_offset_ms() -> i64 {
    CLOCK_OFFSET_MS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Wall-clock time in ms since the Unix epoch, plus any injected offset. The
/// leader stamps commands with it; reads judge hold expiry with it.
pub fn now_ms() -> u64 {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    wall.saturating_add_signed(clock_offset_ms())
}

impl Node {
    /// Opens the node's data and starts the groups it already belongs to.
    pub async fn open(config: NodeConfig) -> anyhow::Result<Arc<Node>> {
        let mut db = Db::open(&config.data_dir, &config.storage)?;
        db.set_log_read_bytes_max(config.raft.append_entries_bytes_max);
        let tls_ca_pem = match &config.tls.peer_ca_file {
            None => None,
            Some(path) => Some(
                std::fs::read(path)
                    .with_context(|| format!("tls.peer_ca_file {}", path.display()))?,
            ),
        };
        let rpc = RpcClient::new(RpcConfig {
            cluster_key: config.cluster_key.clone(),
            connect_timeout_ms: config.limits.peer_connect_timeout_ms,
            request_timeout_ms_max: config.limits.request_timeout_ms,
            bind_ip: config.peer_bind_ip,
            tls_ca_pem,
        })
        .map_err(|e| anyhow::anyhow!("node-to-node client: {e}"))?;
        let raft_config = Arc::new(config.openraft().map_err(anyhow::Error::msg)?);
        let streams = Arc::new(tokio::sync::Semaphore::new(config.limits.sse_streams_max));
        let backups = Arc::new(tokio::sync::Semaphore::new(
            config.limits.backup_exports_max,
        ));
        let event_cache =
            crate::event_cache::EventCache::new(config.limits.event_cache_entries_max);
        let hold_churn = crate::rate_limits::HoldChurn::new(&config.rate_limits);
        let payments = crate::payments::Payments::from_settings(&config.payments)?;
        let metrics = crate::metrics::Metrics::new(db.metrics())?;
        let node = Arc::new(Node {
            metrics,
            payments: payments.clone(),
            hold_churn,
            config,
            db,
            groups: Arc::new(Groups::new()),
            rpc,
            stores: RwLock::new(BTreeMap::new()),
            shards: RwLock::new(None),
            raft_config,
            create_lock: tokio::sync::Mutex::new(()),
            myself: std::sync::OnceLock::new(),
            proposers: std::sync::Mutex::new(BTreeMap::new()),
            search: std::sync::OnceLock::new(),
            feeds: RwLock::new(BTreeMap::new()),
            streams,
            backups,
            event_cache,
            clocks: crate::clock::PeerClocks::default(),
            placement: Default::default(),
        });
        let _ = node.myself.set(Arc::downgrade(&node));
        if let Some(rec) = node.cluster_record()? {
            let hosted = node
                .hosted_record()?
                .unwrap_or_else(|| all_groups(rec.shards));
            node.start_groups(rec.shards, &hosted).await?;
        }
        tokio::spawn(ticker(Arc::downgrade(&node)));
        tokio::spawn(clock_prober(Arc::downgrade(&node)));
        tokio::spawn(crate::queue::ticker(Arc::downgrade(&node)));
        tokio::spawn(crate::placement::reconcile::run(Arc::downgrade(&node)));
        tokio::spawn(crate::placement::balancer::run(Arc::downgrade(&node)));
        if let Some(p) = payments {
            tokio::spawn(crate::payments::worker::run(
                Arc::downgrade(&node),
                p.clone(),
            ));
            tokio::spawn(crate::payments::outgoing::run(Arc::downgrade(&node), p));
        }
        Ok(node)
    }

    /// A handle to this node, for tasks it starts (`None` while it shuts down).
    pub fn myself(&self) -> Option<Arc<Node>> {
        self.myself.get().and_then(std::sync::Weak::upgrade)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.config.id
    }

    /// Number of inventory shards, once bootstrapped.
    pub fn shards(&self) -> Option<u16> {
        *self.shards.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The group owning `event_id`'s inventory.
    pub fn shard_of(&self, event_id: u64) -> Option<GroupId> {
        self.shards().map(|n| shard_for_event(event_id, n))
    }

    /// Storage handles of a hosted group.
    pub fn stores(&self, group: GroupId) -> Option<GroupStores> {
        self.stores
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&group)
            .cloned()
    }

    fn cluster_record(&self) -> anyhow::Result<Option<ClusterRecord>> {
        let raw = self.db.node_record(meta::CLUSTER)?;
        Ok(match raw {
            Some(b) => Some(codec::decode(&b)?),
            None => None,
        })
    }

    /// The groups this node hosts, as last recorded (`None`: a data directory
    /// from before placement, which hosts every group).
    fn hosted_record(&self) -> anyhow::Result<Option<Vec<GroupId>>> {
        let raw = self.db.node_record(meta::HOSTED)?;
        Ok(match raw {
            Some(b) => {
                let HostedGroups(groups) = codec::decode(&b)?;
                Some(groups.into_iter().map(GroupId).collect())
            }
            None => None,
        })
    }

    /// The groups running on this node.
    pub fn hosted(&self) -> Vec<GroupId> {
        self.stores
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect()
    }

    /// True when `group` runs on this node.
    pub fn hosts(&self, group: GroupId) -> bool {
        self.groups.get(group).is_some()
    }

    fn save_hosted(&self) -> anyhow::Result<()> {
        let groups = HostedGroups(self.hosted().into_iter().map(|g| g.0).collect());
        self.db
            .put_node_record(meta::HOSTED, codec::encode(&groups))?;
        Ok(())
    }

    /// Joins a cluster of `shards` inventory shards: persists the shape and starts
    /// every group (idempotent; a different shard count is refused).
    pub async fn prepare(&self, shards: u16) -> Result<(), String> {
        self.host(shards, &all_groups(shards)).await
    }

    /// Joins a cluster of `shards` inventory shards if this node has not yet,
    /// and starts `groups` here (empty replicas until their leader adds this
    /// node and sends them the log or a snapshot), recording them as hosted.
    /// Idempotent; a different shard count is refused.
    pub async fn host(&self, shards: u16, groups: &[GroupId]) -> Result<(), String> {
        if shards == 0 || shards > SHARDS_MAX {
            return Err(format!("shards must be between 1 and {SHARDS_MAX}"));
        }
        let _guard = self.create_lock.lock().await;
        match self.cluster_record().map_err(|e| e.to_string())? {
            Some(rec) if rec.shards == shards => {}
            Some(rec) => {
                return Err(format!(
                    "node already belongs to a cluster with {} shards",
                    rec.shards
                ))
            }
            None => {
                self.db
                    .put_node_record(meta::CLUSTER, codec::encode(&ClusterRecord { shards }))
                    .map_err(|e| e.to_string())?;
            }
        }
        if let Some(g) = groups.iter().find(|g| g.0 > shards) {
            return Err(format!("no group {} in a cluster of {shards} shards", g.0));
        }
        self.start_groups(shards, groups)
            .await
            .map_err(|e| e.to_string())?;
        self.save_hosted().map_err(|e| e.to_string())
    }

    /// Stops `group` here and deletes its replica (log, state, snapshots): for
    /// a replica its group no longer has. Idempotent. The group must not count
    /// on this replica any more (removed from its membership first).
    pub async fn unhost(&self, group: GroupId) -> Result<(), String> {
        if group.is_catalogue() {
            return Err("the catalogue stays on every node".into());
        }
        let _guard = self.create_lock.lock().await;
        let Some(raft) = self.groups.get(group) else {
            return Ok(());
        };
        self.proposers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&group);
        self.feeds
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&group);
        self.groups.remove(group);
        self.stores
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&group);
        self.save_hosted().map_err(|e| e.to_string())?;
        if let Err(e) = raft.shutdown().await {
            tracing::warn!(%group, error = %e, "stopping a replica given away");
        }
        drop(raft);
        self.db.delete_group(group).map_err(|e| e.to_string())?;
        let dir = self
            .config
            .data_dir
            .join("snapshots")
            .join(format!("g{}", group.0));
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(%group, error = %e, dir = %dir.display(), "snapshots of a replica given away not deleted");
            }
        }
        tracing::info!(%group, "replica given away: stopped and deleted");
        Ok(())
    }

    async fn start_groups(&self, shards: u16, groups: &[GroupId]) -> anyhow::Result<()> {
        let snapshot_root = self.config.data_dir.join("snapshots");
        for &group in groups {
            if self.groups.get(group).is_some() {
                continue;
            }
            // Apply waits for this replica's own durable copy, purge for a
            // durable snapshot (see `DurableMark`).
            self.db.track_durability(group.0);
            let log = LogStore::new(self.db.clone(), group);
            let sm = StateMachineStore::open(
                self.db.clone(),
                group,
                &snapshot_root,
                &self.config.storage,
            )?;
            let reader = sm.reader();
            let raft = Raft::new(
                self.config.id,
                self.raft_config.clone(),
                NetworkFactory::new(group, self.rpc.clone()),
                log.clone(),
                sm.clone(),
            )
            .await?;
            if !group.is_catalogue() {
                self.feeds
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(
                        group,
                        crate::live::Feed::start(sm.clone(), &self.config.limits),
                    );
            }
            self.stores
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    group,
                    GroupStores {
                        log,
                        sm,
                        reader,
                        caught_up: Default::default(),
                    },
                );
            self.groups.insert(group, raft);
            self.catch_up_after_open(group);
        }
        *self.shards.write().unwrap_or_else(|e| e.into_inner()) = Some(shards);
        if self.search.get().is_none() {
            if let Some(cat) = self.stores(GroupId::CATALOGUE) {
                // From the replica of the event's shard on this node, whichever
                // it hosts at the time (none: unknown).
                let me = self.myself.get().cloned().unwrap_or_default();
                let availability: crate::search::AvailabilityFn = Arc::new(move |event_id| {
                    let node = me.upgrade()?;
                    let st = node.stores(shard_for_event(event_id, shards))?;
                    let available = st.reader.begin_applied().available(event_id);
                    available
                });
                let index = crate::search::SearchIndex::open(
                    &self.config.data_dir,
                    availability,
                    self.config.search.clone(),
                )?;
                if self.search.set(index.clone()).is_ok() {
                    let feeds: Vec<_> = self
                        .feeds
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .values()
                        .cloned()
                        .collect();
                    tokio::spawn(
                        index
                            .clone()
                            .run_availability_refresher(cat.reader.clone(), feeds),
                    );
                    tokio::spawn(
                        index
                            .clone()
                            .run_suggestions(cat.sm.clone(), cat.reader.clone()),
                    );
                    tokio::spawn(index.run_indexer(cat.sm.clone(), cat.reader));
                }
                if let Some(me) = self.myself.get().and_then(std::sync::Weak::upgrade) {
                    tokio::spawn(invalidate_event_cache(me, cat.sm.changes()));
                }
            }
        }
        Ok(())
    }

    /// The seat-change feed of an inventory shard.
    pub fn feed(&self, group: GroupId) -> Option<Arc<crate::live::Feed>> {
        self.feeds
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&group)
            .cloned()
    }

    /// The search index, once the catalogue group runs here.
    pub fn search(&self) -> Option<Arc<crate::search::SearchIndex>> {
        self.search.get().cloned()
    }

    fn raft(&self, group: GroupId) -> Result<Raft, ProposeError> {
        self.groups
            .get(group)
            .ok_or(ProposeError::NoSuchGroup(group.0))
    }

    /// The leader of `group` as this node knows it: (id, address).
    pub fn leader_of(&self, group: GroupId) -> Option<(NodeId, String)> {
        let raft = self.groups.get(group)?;
        // Borrowed, not cloned: this runs on every write (twice).
        let m = raft.metrics();
        let m = m.borrow();
        let leader = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&leader)?
            .addr
            .clone();
        Some((leader, addr))
    }

    /// Proposes a command on this node, which must be the group's leader: stamps it
    /// with this node's clock and waits until it is applied. Requests waiting for
    /// the same group share log entries (see [`crate::proposer`]).
    pub async fn propose_local(
        &self,
        group: GroupId,
        session: Option<Session>,
        command: Command,
        timeout: Duration,
    ) -> Result<Outcome, ProposeError> {
        let proposer = self.proposer(group)?;
        // Held while this node hands the leadership over; then the write
        // finds the new leader (a `not_leader` answer).
        let waited = Instant::now();
        self.placement.handoffs.wait(group, timeout).await?;
        let timeout = timeout.saturating_sub(waited.elapsed());
        if let Command::Hold(h) | Command::AdmittedHold { hold: h, .. } = &command {
            self.hold_churn.check(h.event_id, &h.user).map_err(|wait| {
                ProposeError::RateLimited {
                    limit: "rate_limits.user_event_holds".into(),
                    retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                }
            })?;
        }
        let req = Request {
            stamp_ms: self.stamp(group).await?,
            session,
            command,
        };
        proposer.propose(req, timeout).await
    }

    /// The stamp for a command this node proposes as `group`'s leader: its clock,
    /// but never more than `raft.clock_skew_max_ms` ahead of a majority of the
    /// group's voters (see [`crate::clock`]). Reads missing clocks once if it must.
    async fn stamp(&self, group: GroupId) -> Result<u64, ProposeError> {
        let raft = self.raft(group)?;
        let voters: Vec<NodeId> = raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        let r = &self.config.raft;
        let age_max = Duration::from_millis(r.clock_reading_age_ms_max);
        let stamp = || {
            self.clocks
                .stamp(self.id(), now_ms(), &voters, age_max, r.clock_skew_max_ms)
        };
        if let Some(s) = stamp() {
            warn_if_clamped(group, s);
            return Ok(s);
        }
        let missing = self.clocks.missing(self.id(), &voters, age_max);
        let peers = self.peer_addresses(|id| missing.contains(&id));
        self.read_clocks(peers).await;
        stamp().ok_or_else(|| {
            ProposeError::Unavailable(format!(
                "group {} has no fresh clock reading of a majority of its voters",
                group.0
            ))
        })
    }

    /// The cluster address of every member of any hosted group, this node
    /// included.
    pub fn member_addresses(&self) -> BTreeMap<NodeId, String> {
        let mut addrs = BTreeMap::new();
        for (_, raft) in self.groups.all() {
            let m = raft.metrics().borrow().membership_config.clone();
            for (id, node) in m.membership().nodes() {
                addrs.insert(*id, node.addr.clone());
            }
        }
        addrs
    }

    /// The feature level `group` may reach: the lowest any of its members allows
    /// (this node: `raft.feature_level_max`; a peer: what its last answer said,
    /// 0 for a release that does not say). `None` until every peer has answered.
    pub fn feature_level_allowed(&self, group: GroupId) -> Option<u32> {
        let raft = self.groups.get(group)?;
        let m = raft.metrics().borrow().membership_config.clone();
        let mut level = self.config.raft.feature_level_max;
        for (id, node) in m.membership().nodes() {
            if *id != self.id() {
                let said = self.rpc.peer(&node.addr)?.feature_level.unwrap_or(0);
                level = level.min(said);
            }
        }
        Some(level)
    }

    /// Members of any hosted group other than this node, chosen by `wanted`, with
    /// their addresses.
    fn peer_addresses(&self, wanted: impl Fn(NodeId) -> bool) -> BTreeMap<NodeId, String> {
        let mut peers = self.member_addresses();
        peers.retain(|id, _| *id != self.id() && wanted(*id));
        peers
    }

    /// Reads the clocks of `peers` at once (each bounded by the probe interval)
    /// and records what they answered.
    async fn read_clocks(&self, peers: BTreeMap<NodeId, String>) {
        let timeout = Duration::from_millis(self.config.raft.clock_probe_interval_ms);
        let reads = peers.into_iter().map(|(id, addr)| async move {
            let sent = Instant::now();
            let answer: Result<u64, _> = self
                .rpc
                .call(&addr, "/internal/v1/clock", &(), timeout)
                .await;
            match answer {
                Ok(peer_ms) => self.clocks.record(id, sent, peer_ms, Instant::now()),
                Err(e) => tracing::debug!(peer = id, error = %e, "clock not read"),
            }
        });
        futures::future::join_all(reads).await;
    }

    /// Requests queued in each group's proposer on this node.
    pub fn proposer_queues(&self) -> Vec<(GroupId, usize)> {
        let map = self.proposers.lock().unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(g, p)| (*g, p.queued())).collect()
    }

    /// The proposer of `group`, started on first use.
    fn proposer(&self, group: GroupId) -> Result<crate::proposer::Proposer, ProposeError> {
        let mut map = self.proposers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = map.get(&group) {
            return Ok(p.clone());
        }
        let raft = self.raft(group)?;
        let r = &self.config.raft;
        let p = crate::proposer::Proposer::start(
            group,
            raft,
            crate::proposer::Settings {
                batch_max: r.propose_batch_max,
                batch_bytes_max: r.propose_batch_bytes_max,
                pipeline_max: r.propose_pipeline_max,
                queue_max: r.propose_queue_max,
            },
            self.metrics
                .proposer_batch
                .with_label_values(&[&group.0.to_string()]),
        );
        map.insert(group, p.clone());
        Ok(p)
    }

    /// One attempt at `group`'s leader: `local` when this node leads it, else the
    /// request made by `forward` sent to the leader's `/internal/v1/{endpoint}/{group}`.
    /// A forward that never reached the leader is `Unavailable`; one that reached it
    /// but got no answer becomes `unanswered`.
    pub(crate) async fn on_leader<Req, T, Fut>(
        &self,
        group: GroupId,
        remaining: Duration,
        endpoint: &str,
        forward: impl FnOnce() -> Req,
        unanswered: fn(String) -> ProposeError,
        local: impl FnOnce(Duration) -> Fut,
    ) -> Result<T, ProposeError>
    where
        Req: Serialize,
        T: serde::de::DeserializeOwned,
        Fut: std::future::Future<Output = Result<T, ProposeError>>,
    {
        match self.route(group) {
            Some((leader, _)) if leader == self.id() => local(remaining).await,
            Some((_, addr)) => {
                let path = format!("/internal/v1/{endpoint}/{}", group.0);
                let answer = match self
                    .rpc
                    .call::<_, Result<T, ProposeError>>(&addr, &path, &forward(), remaining)
                    .await
                {
                    Ok(r) => r,
                    Err(CallError::Unreachable(e)) => Err(ProposeError::Unavailable(e)),
                    Err(e) => Err(unanswered(e.to_string())),
                };
                // A group this node does not host: the answer says where to go next.
                match answer {
                    Err(ProposeError::NotLeader { group: g, leader }) => {
                        self.note_route(group, leader.clone());
                        Err(ProposeError::NotLeader { group: g, leader })
                    }
                    // A replica that gave the group away (the directory lags a
                    // move): try another.
                    Err(ProposeError::NoSuchGroup(g)) => {
                        self.note_route(group, None);
                        Err(ProposeError::Unavailable(format!(
                            "group {g} has moved off the node asked; trying another replica"
                        )))
                    }
                    Err(e @ ProposeError::Unavailable(_)) => {
                        self.note_route(group, None);
                        Err(e)
                    }
                    other => other,
                }
            }
            None => Err(ProposeError::Unavailable(format!(
                "no leader known for {group}"
            ))),
        }
    }

    /// Proposes a command on whichever node leads the group, forwarding and retrying
    /// across leader changes until `limits.write_timeout_ms`. Retrying is safe because
    /// client commands carry an idempotency key.
    pub async fn propose(
        &self,
        group: GroupId,
        session: Option<Session>,
        command: Command,
    ) -> Result<Outcome, ProposeError> {
        let timeout = Duration::from_millis(self.config.limits.write_timeout_ms);
        let deadline = Instant::now() + timeout;
        // Without a session, only commands whose effect is decided by the state
        // they find (applying one twice changes nothing more) are retried.
        let retryable = session.is_some()
            || matches!(
                command,
                Command::CreateInventory(_)
                    | Command::JoinQueue { .. }
                    | Command::AdmitQueue { .. }
                    | Command::PaymentSucceeded(_)
                    | Command::PaymentFailed(_)
                    | Command::RefundUpdate { .. }
            );
        let mut backoff = Duration::from_millis(20);
        let mut last_err = ProposeError::Unavailable(format!("no leader for {group}"));
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(match last_err {
                    e @ ProposeError::Unknown(_) => e,
                    e => ProposeError::Unavailable(format!(
                        "gave up after {} ms: {e}",
                        timeout.as_millis()
                    )),
                });
            }
            let result = self
                .on_leader(
                    group,
                    remaining,
                    "propose",
                    || ForwardedProposal {
                        session: session.clone(),
                        command: command.clone(),
                    },
                    ProposeError::Unknown,
                    |rem| self.propose_local(group, session.clone(), command.clone(), rem),
                )
                .await;
            match result {
                Ok(outcome) => return Ok(outcome),
                Err(e @ ProposeError::NoSuchGroup(_)) => return Err(e),
                Err(e @ ProposeError::Unknown(_)) if !retryable => return Err(e),
                // A refusal, unless an earlier attempt may have been applied.
                Err(e @ ProposeError::RateLimited { .. }) => {
                    return Err(match last_err {
                        u @ ProposeError::Unknown(_) => u,
                        _ => e,
                    })
                }
                Err(e) => {
                    tracing::debug!(%group, error = %e, "write not done yet; retrying");
                    // An unknown outcome stays unknown unless a later attempt answers.
                    if !matches!(last_err, ProposeError::Unknown(_))
                        || matches!(e, ProposeError::Unknown(_))
                    {
                        last_err = e;
                    }
                    tokio::time::sleep(
                        backoff.min(deadline.saturating_duration_since(Instant::now())),
                    )
                    .await;
                    backoff = (backoff * 2).min(Duration::from_millis(250));
                }
            }
        }
    }

    /// Waits until this replica has applied everything the group's leader had
    /// committed when asked: a read after this is linearizable.
    /// Opens `group`'s local reads once a read index from its leader has
    /// been applied here (retried until it is, or the replica is gone).
    fn catch_up_after_open(&self, group: GroupId) {
        let Some(me) = self.myself.get().cloned() else {
            return;
        };
        tokio::spawn(async move {
            loop {
                let Some(node) = me.upgrade() else { return };
                let Some(stores) = node.stores(group) else {
                    return;
                };
                if node.read_barrier(group).await.is_ok() {
                    stores
                        .caught_up
                        .store(true, std::sync::atomic::Ordering::Release);
                    return;
                }
                drop(node);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }

    /// Whether `group`'s replica here has caught up with its leader since it
    /// opened (see [`GroupStores::caught_up`]).
    pub fn caught_up(&self, group: GroupId) -> bool {
        self.stores(group)
            .is_some_and(|s| s.caught_up.load(std::sync::atomic::Ordering::Acquire))
    }

    pub async fn read_barrier(&self, group: GroupId) -> Result<(), ProposeError> {
        let timeout = Duration::from_millis(self.config.limits.linearizable_read_timeout_ms);
        let deadline = Instant::now() + timeout;
        let raft = self.raft(group)?;
        let mut backoff = Duration::from_millis(20);
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ProposeError::Unavailable(format!(
                    "no read index for {group} within {} ms",
                    timeout.as_millis()
                )));
            }
            let index = match self.leader_of(group) {
                Some((leader, _)) if leader == self.id() => self.read_index_local(group).await,
                Some((_, addr)) => self
                    .rpc
                    .call::<_, Result<u64, ProposeError>>(
                        &addr,
                        &format!("/internal/v1/read_index/{}", group.0),
                        &(),
                        remaining,
                    )
                    .await
                    .unwrap_or_else(|e| Err(ProposeError::Unavailable(e.to_string()))),
                None => Err(ProposeError::Unavailable(format!(
                    "no leader known for {group}"
                ))),
            };
            match index {
                Ok(index) => {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    return raft
                        .wait(Some(remaining))
                        .applied_index_at_least(Some(index), "read barrier")
                        .await
                        .map(|_| ())
                        .map_err(|e| ProposeError::Unavailable(e.to_string()));
                }
                Err(e) => {
                    tracing::debug!(%group, error = %e, "read index not available yet; retrying");
                    tokio::time::sleep(backoff.min(remaining)).await;
                    backoff = (backoff * 2).min(Duration::from_millis(250));
                }
            }
        }
    }

    /// On the leader: the index a linearizable read must wait for (leadership
    /// confirmed by a quorum heartbeat).
    pub async fn read_index_local(&self, group: GroupId) -> Result<u64, ProposeError> {
        let raft = self.raft(group)?;
        // A read index confirms the leadership with the followers, which
        // would renew the lease a handoff waits out.
        let timeout = Duration::from_millis(self.config.limits.linearizable_read_timeout_ms);
        self.placement.handoffs.wait(group, timeout).await?;
        match raft.get_read_log_id().await {
            Ok((read, _applied)) => Ok(read.map(|l| l.index).unwrap_or(0)),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(ProposeError::NotLeader {
                    group: group.0,
                    leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
                })
            }
            Err(e) => Err(ProposeError::Unavailable(e.to_string())),
        }
    }
}

/// A write forwarded to the leader: the leader stamps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ForwardedProposal {
    /// Exactly-once session.
    pub session: Option<Session>,
    /// The command.
    pub command: Command,
}

/// A change to one group's membership, made by its leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Drop a node from the voters (and from replication).
    Remove(NodeId),
    /// Add a node as a learner at this address (it catches up in the background).
    AddLearner(NodeId, String),
    /// Make a learner a voter.
    Promote(NodeId),
}

impl Node {
    /// Initialises `group` on this node with `members` (it then campaigns at once
    /// and, the cluster being new, becomes the group's first leader). Ok when the
    /// group was initialised already, so a repeated bootstrap is harmless.
    pub async fn initialize_local(
        &self,
        group: GroupId,
        members: std::collections::BTreeMap<NodeId, openraft::BasicNode>,
    ) -> Result<bool, String> {
        let raft = self.raft(group).map_err(|e| e.to_string())?;
        match raft.initialize(members).await {
            Ok(()) => Ok(true),
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(false),
            Err(e) => Err(format!("initialising {group}: {e}")),
        }
    }

    /// Applies a membership change on this node, which must lead `group`.
    pub async fn change_membership_local(
        &self,
        group: GroupId,
        change: &MembershipChange,
    ) -> Result<(), ProposeError> {
        let raft = self.raft(group)?;
        let m = raft.metrics().borrow().clone();
        let voters: std::collections::BTreeSet<NodeId> =
            m.membership_config.membership().voter_ids().collect();
        let result = match change {
            MembershipChange::Remove(id) => {
                if !voters.contains(id) {
                    return Ok(());
                }
                if voters.len() <= 1 {
                    return Err(ProposeError::Unavailable(format!(
                        "node {id} is the last voter of {group}"
                    )));
                }
                let rest: std::collections::BTreeSet<NodeId> =
                    voters.iter().copied().filter(|v| v != id).collect();
                raft.change_membership(rest, false).await.map(|_| ())
            }
            MembershipChange::AddLearner(id, addr) => {
                if voters.contains(id) {
                    return Ok(());
                }
                raft.add_learner(*id, openraft::BasicNode { addr: addr.clone() }, false)
                    .await
                    .map(|_| ())
            }
            MembershipChange::Promote(id) => {
                if voters.contains(id) {
                    return Ok(());
                }
                let mut all = voters.clone();
                all.insert(*id);
                raft.change_membership(all, false).await.map(|_| ())
            }
        };
        match result {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ProposeError::NotLeader {
                    group: group.0,
                    leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
                })
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(ProposeError::Unavailable(e.to_string()))
            }
            Err(RaftError::Fatal(e)) => Err(ProposeError::Unknown(e.to_string())),
        }
    }

    /// Applies a membership change through whichever node leads `group`, retrying
    /// across leader changes until `limits.membership_timeout_ms`. Each change is
    /// idempotent (removing a non-voter or promoting a voter does nothing).
    pub async fn change_membership(
        &self,
        group: GroupId,
        change: MembershipChange,
    ) -> Result<(), ProposeError> {
        let timeout = Duration::from_millis(self.config.limits.membership_timeout_ms);
        let deadline = Instant::now() + timeout;
        let mut last = ProposeError::Unavailable(format!("no leader for {group}"));
        let change = &change;
        while Instant::now() < deadline {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let result = self
                .on_leader(
                    group,
                    remaining,
                    "membership",
                    || change.clone(),
                    ProposeError::Unavailable,
                    |rem| async move {
                        tokio::time::timeout(rem, self.change_membership_local(group, change))
                            .await
                            .unwrap_or_else(|_| {
                                Err(ProposeError::Unknown("membership change timed out".into()))
                            })
                    },
                )
                .await;
            match result {
                Ok(()) => return Ok(()),
                Err(e @ ProposeError::NoSuchGroup(_)) => return Err(e),
                Err(e) => {
                    tracing::debug!(%group, error = %e, "membership change not done yet; retrying");
                    last = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        Err(last)
    }
}

/// Logs (at most every ten seconds) that this leader's clock is ahead of its
/// group's majority by more than the bound, so its stamps were held back.
fn warn_if_clamped(group: GroupId, stamp_ms: u64) {
    static LAST_WARNING_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now = now_ms();
    if stamp_ms >= now {
        return;
    }
    let last = LAST_WARNING_MS.load(std::sync::atomic::Ordering::Relaxed);
    if now.saturating_sub(last) >= 10_000 {
        LAST_WARNING_MS.store(now, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(
            %group,
            ahead_ms = now - stamp_ms,
            "this node's clock is ahead of a majority of the group's by more than raft.clock_skew_max_ms; stamps are held back to that bound"
        );
    }
}

/// Reads every peer's clock each `raft.clock_probe_interval_ms`.
async fn clock_prober(node: std::sync::Weak<Node>) {
    loop {
        let Some(n) = node.upgrade() else { return };
        let interval = Duration::from_millis(n.config.raft.clock_probe_interval_ms);
        let peers = n.peer_addresses(|_| true);
        n.read_clocks(peers).await;
        drop(n);
        tokio::time::sleep(interval).await;
    }
}

/// On every group this node leads, appends a time tick when the group has applied
/// nothing for `raft.tick_interval_ms`, so replicas can measure their lag, and
/// raises the group's feature level once every member allows a higher one.
/// A group that has applied no stamped entry yet (a new cluster) gets its first
/// tick at once, within this, rather than after half a tick interval: until then
/// its replicas cannot tell how fresh they are, and cannot serve local reads.
const FIRST_TICK_POLL: Duration = Duration::from_millis(50);

async fn ticker(node: std::sync::Weak<Node>) {
    loop {
        let Some(n) = node.upgrade() else { return };
        let interval = Duration::from_millis(n.config.raft.tick_interval_ms);
        let now = now_ms();
        let groups = n.groups.all();
        // Not bootstrapped yet counts as untimed: its groups will be new.
        let mut untimed = groups.is_empty();
        for (group, _) in groups {
            let Some(stores) = n.stores(group) else {
                continue;
            };
            let time_ms = stores.sm.applied().borrow().time_ms;
            untimed |= time_ms == 0;
            let leads = n.leader_of(group).map(|(id, _)| id) == Some(n.id());
            let level = stores.sm.feature_level();
            match n.feature_level_allowed(group) {
                Some(allowed) if leads && allowed > level => {
                    let n2 = n.clone();
                    tokio::spawn(async move {
                        let enable = Command::EnableFeatures { level: allowed };
                        match n2.propose_local(group, None, enable, interval).await {
                            Ok(_) => {
                                tracing::info!(%group, level = allowed, "feature level raised")
                            }
                            Err(e) => {
                                tracing::debug!(%group, error = %e, "feature level not raised")
                            }
                        }
                    });
                }
                _ => {}
            }
            let idle_ms = now.saturating_sub(time_ms);
            if idle_ms >= n.config.raft.tick_interval_ms && leads {
                let n2 = n.clone();
                // Not awaited in the loop: a group without quorum must not hold up the others.
                tokio::spawn(async move {
                    if let Err(e) = n2.propose_local(group, None, Command::Tick, interval).await {
                        tracing::debug!(%group, error = %e, "tick not applied");
                    }
                });
            }
        }
        drop(n);
        let pause = if untimed {
            FIRST_TICK_POLL.min(interval / 2)
        } else {
            interval / 2
        };
        tokio::time::sleep(pause).await;
    }
}

/// Keeps the event cache in step with the catalogue replica.
async fn invalidate_event_cache(
    node: Arc<Node>,
    mut changes: tokio::sync::broadcast::Receiver<boxoffice_storage::state_machine::AppliedChange>,
) {
    let weak = Arc::downgrade(&node);
    drop(node);
    loop {
        let change = changes.recv().await;
        let Some(node) = weak.upgrade() else { return };
        let cache = &node.event_cache;
        match change {
            Ok(c) if c.snapshot_installed => cache.clear(),
            Ok(c) => match &c.outcome.result {
                Ok(Effect::EventCreated { event_id, .. } | Effect::EventUpdated { event_id }) => {
                    cache.invalidate(*event_id)
                }
                Ok(Effect::EventsCreated { events }) => {
                    events.iter().for_each(|e| cache.invalidate(e.event_id))
                }
                // A new venue or performer is in no cached view yet (views name
                // only existing ones, and neither changes after creation).
                Ok(
                    Effect::Nothing
                    | Effect::VenueCreated { .. }
                    | Effect::PerformerCreated { .. }
                    | Effect::InventoryCreated { .. }
                    | Effect::Held(_)
                    | Effect::Confirmed(_)
                    | Effect::Released { .. }
                    | Effect::InventoriesCreated { .. }
                    | Effect::Payment(_)
                    | Effect::Webhooks(_)
                    | Effect::Queue(_)
                    | Effect::PlacementSet { .. }
                    | Effect::Batch(_),
                )
                | Err(_) => {}
            },
            // Missed changes: forget everything rather than serve a stale view.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => cache.clear(),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}
