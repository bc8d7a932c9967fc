//! The node's RocksDB: column families, open options, and the WAL syncer.
//!
//! Durability model: writes go to RocksDB's write-ahead log without fsync; a
//! dedicated syncer thread then calls `FlushWAL(sync = true)` once for every batch of
//! waiting requests, and only then reports them durable. One fsync covers the log
//! appends of every group that arrived meanwhile (group commit), and because the WAL
//! is shared and ordered, it also covers every earlier write of any kind.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};

use serde::{Deserialize, Serialize};

use crate::StorageError;

/// Column family for Raft log entries.
pub const CF_LOG: &str = "log";
/// Column family for vote, committed, purged pointers and node records.
pub const CF_META: &str = "meta";
/// Column family for state-machine records.
pub const CF_SM: &str = "sm";
/// Every column family of the database.
pub const COLUMN_FAMILIES: [&str; 3] = [CF_LOG, CF_META, CF_SM];

/// Where each group's applied state (the state machine's records) lives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateMachineBackend {
    /// In memory, persisted by the Raft log and snapshot files: apply writes
    /// no RocksDB records (see `memory`). A restart loads the last snapshot
    /// and applies the log after it again; the state must fit in memory.
    #[default]
    Memory,
    /// In RocksDB's `sm` column family: apply writes every record to the
    /// memtable and WAL (not synced), a restart reads it back.
    Rocksdb,
}

/// Storage settings of a node (`[storage]` in its settings file).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSettings {
    /// Where each group's applied state lives (`"memory"` or `"rocksdb"`). A
    /// node may switch between them across restarts: it starts from whichever
    /// of the two holds the later state.
    pub state_machine: StateMachineBackend,
    /// Most durability requests waiting for the WAL syncer; a full queue makes
    /// appenders wait (back-pressure) rather than grow memory.
    pub wal_sync_queue_max: usize,
    /// Most durability requests one fsync completes, so that one sync's latency
    /// stays bounded.
    pub wal_sync_batch_max: usize,
    /// RocksDB block cache size (bytes).
    pub block_cache_bytes: usize,
    /// Share of each memtable given to a bloom filter of whole keys: apply looks
    /// up many absent keys (a new idempotency key's session, an available seat's
    /// ticket), and without the filter each walks the memtable's skip list.
    pub memtable_bloom_ratio: f64,
    /// Size of each column family's RocksDB memtable (`write_buffer_size`):
    /// apply inserts every record it writes into the state machine's, and a
    /// smaller memtable makes each insert's skip-list search shorter, at the
    /// price of more, smaller flushes.
    pub memtable_bytes: usize,
    /// Records each group's apply cache keeps (see `kv::ApplyCache`).
    pub apply_cache_entries_max: usize,
    /// Key and value bytes each group's apply cache keeps.
    pub apply_cache_bytes_max: usize,
    /// Records per write batch while installing a snapshot: bounds install memory.
    pub snapshot_install_batch_records: usize,
    /// Applied changes buffered per group for in-process watchers (live seat
    /// maps, search, the event cache); one that falls further behind is told it
    /// lagged and resynchronises, rather than hold memory.
    pub changes_capacity: usize,
    /// Fault injection only (the node refuses it without `fault_injection =
    /// true`): write the WAL but never fsync it, and report writes durable
    /// anyway. A node running so loses acknowledged writes in a power cut,
    /// though not when only its process is killed; the fault harness uses it
    /// to show that its power nemesis catches exactly that.
    pub skip_wal_fsync: bool,
    /// Longest a group's apply waits for its own copy of the entries to be
    /// durable here (the replica applies nothing its log could lose in a
    /// power cut); past it the group stops with a storage error.
    pub apply_durable_wait_ms: u64,
    /// Longest a log purge waits for the snapshot covering it to be durably in
    /// place (a follower's purge after a snapshot install can come before the
    /// install is done); past it the group stops with a storage error.
    pub purge_wait_ms: u64,
}

impl Default for StorageSettings {
    fn default() -> Self {
        StorageSettings {
            state_machine: StateMachineBackend::default(),
            wal_sync_queue_max: 4096,
            wal_sync_batch_max: 1024,
            block_cache_bytes: 64 << 20,
            memtable_bloom_ratio: 0.1,
            memtable_bytes: 64 << 20,
            apply_cache_entries_max: 65_536,
            apply_cache_bytes_max: 32 << 20,
            snapshot_install_batch_records: 8192,
            changes_capacity: 4096,
            skip_wal_fsync: false,
            apply_durable_wait_ms: 10_000,
            purge_wait_ms: 60_000,
        }
    }
}

/// Default of [`Db::set_log_read_bytes_max`] (the node sets it from
/// `raft.append_entries_bytes_max`).
pub const DEFAULT_LOG_READ_BYTES_MAX: u64 = 512 * 1024;

/// Called once the WAL is durable up to (at least) the point the request was made.
pub type SyncCallback = Box<dyn FnOnce(Result<(), rocksdb::Error>) + Send>;

/// Handle to the node's database. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    inner: Arc<DB>,
    syncer: mpsc::SyncSender<SyncCallback>,
    path: PathBuf,
    /// False only under `skip_wal_fsync` (fault injection).
    fsync: bool,
    /// Each group's durable log index, for groups whose log store runs here.
    marks: Arc<Mutex<HashMap<u16, Arc<DurableMark>>>>,
    /// `storage.purge_wait_ms`.
    pub(crate) purge_wait_ms: u64,
    /// Most encoded bytes of entries one replication read returns (see
    /// [`Db::set_log_read_bytes_max`]).
    pub(crate) log_read_bytes_max: u64,
    metrics: crate::metrics::StorageMetrics,
}

impl Db {
    /// Opens (creating if needed) the database under `dir/db`.
    pub fn open(dir: &Path, config: &StorageSettings) -> Result<Db, StorageError> {
        let path = dir.join("db");
        crate::files::create_dir_durable(&path)?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Never lose track of WAL files on crash; RocksDB's default recovery mode
        // (point-in-time) keeps a consistent prefix of the WAL.
        opts.set_wal_recovery_mode(rocksdb::DBRecoveryMode::PointInTime);
        let cache = rocksdb::Cache::new_lru_cache(config.block_cache_bytes);
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_bloom_filter(10.0, false);
        let mut cf_opts = Options::default();
        cf_opts.set_block_based_table_factory(&table);
        cf_opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // A bloom filter over the memtable's whole keys: apply looks up many keys
        // that are absent (a new idempotency key's session, an available seat's
        // ticket), and without it each such lookup walks the memtable's skip list.
        cf_opts.set_memtable_prefix_bloom_ratio(config.memtable_bloom_ratio);
        cf_opts.set_memtable_whole_key_filtering(true);
        cf_opts.set_write_buffer_size(config.memtable_bytes);
        let cfs =
            [CF_LOG, CF_META, CF_SM].map(|name| ColumnFamilyDescriptor::new(name, cf_opts.clone()));
        let db = Arc::new(DB::open_cf_descriptors(&opts, &path, cfs)?);
        // What the WAL replayed may be only in the page cache (a process killed
        // before its sync): make it durable before anything counts on it.
        db.flush_wal(!config.skip_wal_fsync)?;

        let (tx, rx) = mpsc::sync_channel::<SyncCallback>(config.wal_sync_queue_max);
        let weak = Arc::downgrade(&db);
        let metrics = crate::metrics::StorageMetrics::new();
        let fsync = !config.skip_wal_fsync;
        if !fsync {
            tracing::warn!("storage.skip_wal_fsync: the WAL is never fsynced (fault injection)");
        }
        thread::Builder::new().name("wal-sync".into()).spawn({
            let batch_max = config.wal_sync_batch_max.max(1);
            let metrics = metrics.clone();
            move || wal_sync_loop(weak, rx, batch_max, fsync, metrics)
        })?;
        Ok(Db {
            inner: db,
            syncer: tx,
            path,
            fsync,
            marks: Arc::new(Mutex::new(HashMap::new())),
            purge_wait_ms: config.purge_wait_ms.max(1),
            log_read_bytes_max: DEFAULT_LOG_READ_BYTES_MAX,
            metrics,
        })
    }

    /// Bounds the encoded bytes of entries one replication read returns (at
    /// least one entry is returned, however large). openraft sends what it
    /// reads in one append-entries RPC, bounded by entry count only, and gives
    /// the follower one heartbeat interval to answer: a follower far behind on
    /// a log of large entries (catalogue batches) would otherwise be sent more
    /// than it can take in that time, again and again. Set before the log
    /// stores are made; they copy it.
    pub fn set_log_read_bytes_max(&mut self, bytes: u64) {
        self.log_read_bytes_max = bytes.max(1);
    }

    /// What this database's users measure (see [`crate::metrics`]).
    pub fn metrics(&self) -> &crate::metrics::StorageMetrics {
        &self.metrics
    }

    /// The RocksDB handle.
    pub fn raw(&self) -> &DB {
        &self.inner
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A column family handle. The three CFs are created at open, so absence is a bug.
    pub fn cf(&self, name: &str) -> &ColumnFamily {
        self.inner
            .cf_handle(name)
            .expect("column family created at open")
    }

    /// Writes a batch without waiting for fsync (durable at the next WAL sync).
    pub fn write_nosync(&self, batch: WriteBatch) -> Result<(), rocksdb::Error> {
        let mut wo = WriteOptions::default();
        wo.set_sync(false);
        self.inner.write_opt(batch, &wo)
    }

    /// Writes a batch and fsyncs the WAL before returning.
    pub fn write_sync(&self, batch: WriteBatch) -> Result<(), rocksdb::Error> {
        let mut wo = WriteOptions::default();
        wo.set_sync(self.fsync);
        self.inner.write_opt(batch, &wo)
    }

    /// Asks the syncer to call `callback` once everything written so far is durable.
    pub fn when_durable(&self, callback: SyncCallback) {
        if let Err(mpsc::SendError(cb)) = self.syncer.send(callback) {
            // The syncer thread only stops when the DB is dropped; sync inline.
            cb(self.inner.flush_wal(self.fsync));
        }
    }

    /// Deletes every key of `group` in every column family (its log, its Raft
    /// metadata, its state machine), synced: for a replica this node no longer
    /// hosts. The group must not be running here.
    pub fn delete_group(&self, group: boxoffice_raft::GroupId) -> Result<(), rocksdb::Error> {
        assert!(
            group.0 != crate::keys::NODE_GROUP,
            "the node's own records are not a group's"
        );
        let from = group.0.to_be_bytes();
        // group.0 < NODE_GROUP = u16::MAX, so the next id does not overflow.
        let to = (group.0 + 1).to_be_bytes();
        let mut batch = WriteBatch::default();
        for name in [CF_LOG, CF_META, CF_SM] {
            batch.delete_range_cf(self.cf(name), from, to);
        }
        self.write_sync(batch)
    }

    /// Reads a node-level record (see [`crate::keys::meta`]).
    pub fn node_record(&self, kind: u8) -> Result<Option<Vec<u8>>, rocksdb::Error> {
        self.inner.get_cf(
            self.cf(CF_META),
            crate::keys::meta(crate::keys::NODE_GROUP, kind),
        )
    }

    /// Writes a node-level record, synced.
    pub fn put_node_record(&self, kind: u8, value: Vec<u8>) -> Result<(), rocksdb::Error> {
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(CF_META),
            crate::keys::meta(crate::keys::NODE_GROUP, kind),
            value,
        );
        self.write_sync(batch)
    }

    /// Ties `group`'s log store and state machine together on this node
    /// (call before opening either): apply then waits for the replica's own
    /// log to be durable through the entries, and purge for a durable
    /// snapshot covering what it removes. Stores opened without it (openraft's
    /// storage suite tests each on its own) keep openraft's plain contract.
    pub fn track_durability(&self, group: u16) -> Arc<DurableMark> {
        self.marks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(group)
            .or_insert_with(|| Arc::new(DurableMark::new(0)))
            .clone()
    }

    /// The durable log index of `group`, if its log store runs here.
    pub fn durable_mark(&self, group: u16) -> Option<Arc<DurableMark>> {
        self.marks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&group)
            .cloned()
    }

    /// Makes everything written so far durable, now.
    pub fn sync_wal(&self) -> Result<(), rocksdb::Error> {
        self.inner.flush_wal(self.fsync)
    }
}

/// The index through which a group's log is durable on this node: raised
/// when an append's WAL sync completes, lowered when the log is truncated.
/// Apply waits for it, so that no replica shows state its own log could lose
/// in a power cut (a follower may learn an entry is committed before its own
/// copy is fsynced).
pub struct DurableMark {
    /// Bumped by every truncation: syncs of appends made before it do not
    /// raise the mark (the entries they covered may be gone).
    epoch: AtomicU64,
    index: tokio::sync::watch::Sender<u64>,
    /// The applied index the group's state can be rebuilt from after a crash
    /// without the log: its snapshot file once renamed into place with its
    /// directory fsynced (or the state it opened with). The log is purged
    /// only up to it.
    snapshot: tokio::sync::watch::Sender<u64>,
}

impl DurableMark {
    fn new(index: u64) -> Self {
        DurableMark {
            epoch: AtomicU64::new(0),
            index: tokio::sync::watch::Sender::new(index),
            snapshot: tokio::sync::watch::Sender::new(0),
        }
    }

    /// The index through which the log is durable.
    pub fn durable(&self) -> u64 {
        *self.index.borrow()
    }

    /// The log was (re)opened, durable through `index`.
    pub(crate) fn reset(&self, index: u64) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.index.send_replace(index);
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// An append made in `epoch`, ending at `index`, is durable (and so is
    /// everything written before it: one WAL).
    pub(crate) fn advance(&self, epoch: u64, index: u64) {
        if self.epoch.load(Ordering::SeqCst) == epoch {
            self.index.send_if_modified(|i| {
                let raise = index > *i;
                if raise {
                    *i = index;
                }
                raise
            });
        }
    }

    /// Entries from `from` on were removed.
    pub(crate) fn truncated(&self, from: u64) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.index.send_if_modified(|i| {
            let lower = *i >= from;
            if lower {
                *i = from.saturating_sub(1);
            }
            lower
        });
    }

    /// A snapshot through `index` is durably in place (never lowers it).
    pub fn snapshot_durable(&self, index: u64) {
        self.snapshot.send_if_modified(|i| {
            let raise = index > *i;
            if raise {
                *i = index;
            }
            raise
        });
    }

    /// Waits until a durable snapshot covers `index`, for at most `timeout`.
    pub async fn wait_for_snapshot(&self, index: u64, timeout: Duration) -> Option<u64> {
        let mut rx = self.snapshot.subscribe();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|i| *i >= index))
            .await
            .is_ok_and(|r| r.is_ok());
        (!reached).then(|| *self.snapshot.borrow())
    }

    /// Waits until the log is durable through `index`, for at most `timeout`.
    pub async fn wait_for(&self, index: u64, timeout: Duration) -> bool {
        let mut rx = self.index.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|i| *i >= index))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

fn wal_sync_loop(
    db: std::sync::Weak<DB>,
    rx: mpsc::Receiver<SyncCallback>,
    batch_max: usize,
    fsync: bool,
    metrics: crate::metrics::StorageMetrics,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < batch_max {
            match rx.try_recv() {
                Ok(cb) => batch.push(cb),
                Err(_) => break,
            }
        }
        let Some(db) = db.upgrade() else { return };
        let started = std::time::Instant::now();
        let result = db.flush_wal(fsync);
        metrics
            .wal_fsync_seconds
            .observe(started.elapsed().as_secs_f64());
        metrics.wal_fsync_batch.observe(batch.len() as f64);
        drop(db);
        if let Err(e) = &result {
            tracing::error!(error = %e, "WAL sync failed");
        }
        for cb in batch {
            cb(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_durable_mark_follows_syncs_and_truncations() {
        let m = DurableMark::new(10);
        let before = m.epoch();
        m.advance(before, 15);
        assert_eq!(m.durable(), 15);
        // A sync never lowers it.
        m.advance(before, 12);
        assert_eq!(m.durable(), 15);
        // A truncation lowers it, and a sync of an append made before the
        // truncation no longer counts.
        m.truncated(13);
        assert_eq!(m.durable(), 12);
        m.advance(before, 20);
        assert_eq!(m.durable(), 12);
        m.advance(m.epoch(), 14);
        assert_eq!(m.durable(), 14);
        // Waiting: at once when reached, a timeout when not, and a wake-up
        // when a sync arrives meanwhile.
        assert!(m.wait_for(14, Duration::from_millis(1)).await);
        assert!(!m.wait_for(15, Duration::from_millis(20)).await);
        let m = Arc::new(m);
        let waiter = tokio::spawn({
            let m = m.clone();
            async move { m.wait_for(16, Duration::from_secs(5)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        m.advance(m.epoch(), 16);
        assert!(waiter.await.unwrap());
    }

    #[tokio::test]
    async fn a_purge_waits_for_a_durable_snapshot_covering_it() {
        let m = Arc::new(DurableMark::new(100));
        m.snapshot_durable(40);
        assert_eq!(
            m.wait_for_snapshot(40, Duration::from_millis(1)).await,
            None
        );
        // Not covered: the purge is refused after the wait, saying what is there.
        assert_eq!(
            m.wait_for_snapshot(90, Duration::from_millis(20)).await,
            Some(40)
        );
        let purge = tokio::spawn({
            let m = m.clone();
            async move { m.wait_for_snapshot(90, Duration::from_secs(5)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The install's file is in place: the purge goes ahead.
        m.snapshot_durable(95);
        assert_eq!(purge.await.unwrap(), None);
        // Never lowered.
        m.snapshot_durable(50);
        assert_eq!(
            m.wait_for_snapshot(95, Duration::from_millis(1)).await,
            None
        );
    }
}
