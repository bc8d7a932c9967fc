//! openraft's log storage for one group, in the node's shared RocksDB.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use boxoffice_raft::{codec, Entry, GroupId, LogId, NodeId, TypeConfig};
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, RaftLogId, StorageError, Vote};
use rocksdb::{Direction, IteratorMode, WriteBatch};

use crate::db::{Db, DurableMark, CF_LOG, CF_META};
use crate::keys::{self, meta};
use crate::sto_err;

/// Log store of one Raft group. Clones share the same data.
#[derive(Clone)]
pub struct LogStore {
    group: GroupId,
    db: Db,
    /// Through which index this log is durable here (see [`DurableMark`]),
    /// when the node tracks it (`Db::track_durability`).
    mark: Option<Arc<DurableMark>>,
    /// `storage.purge_wait_ms`.
    purge_wait_ms: u64,
    /// See [`Db::set_log_read_bytes_max`].
    read_bytes_max: u64,
    /// Last committed index saved, for the admin API (`u64::MAX` = none).
    committed: Arc<AtomicU64>,
}

impl LogStore {
    /// The log store of `group` in `db`.
    pub fn new(db: Db, group: GroupId) -> Self {
        let store = LogStore {
            group,
            purge_wait_ms: db.purge_wait_ms,
            read_bytes_max: db.log_read_bytes_max,
            mark: db.durable_mark(group.0),
            db,
            committed: Arc::new(AtomicU64::new(u64::MAX)),
        };
        if let Some(mark) = &store.mark {
            // Whatever the log holds now is made durable, and the mark starts there.
            if let Err(e) = store.db.sync_wal() {
                tracing::error!(%group, error = %e, "WAL sync at log open failed");
            }
            let last = store
                .last_entry_log_id()
                .ok()
                .flatten()
                .map_or(0, |l| l.index);
            mark.reset(last);
        }
        // Saved as `Option<LogId>` (openraft may save "none").
        if let Ok(Some(Some(c))) = store.get_meta::<Option<LogId>>(meta::COMMITTED) {
            store.committed.store(c.index, Ordering::Relaxed);
        }
        store
    }

    /// Highest committed index this node knows of, if any.
    pub fn committed_index(&self) -> Option<u64> {
        match self.committed.load(Ordering::Relaxed) {
            u64::MAX => None,
            i => Some(i),
        }
    }

    fn get_meta<T: codec::Versioned>(&self, kind: u8) -> Result<Option<T>, StorageError<NodeId>> {
        let key = keys::meta(self.group.0, kind);
        let raw = self
            .db
            .raw()
            .get_cf(self.db.cf(CF_META), key)
            .map_err(|e| sto_err(ErrorSubject::Store, ErrorVerb::Read, e))?;
        match raw {
            None => Ok(None),
            // A stored meta record that does not decode is corruption: crash rather
            // than run Raft on a wrong vote.
            Some(bytes) => Ok(Some(
                codec::decode(&bytes).expect("corrupt raft meta record"),
            )),
        }
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId>, StorageError<NodeId>> {
        let upper = keys::log(self.group, u64::MAX);
        let mut it = self.db.raw().iterator_cf(
            self.db.cf(CF_LOG),
            IteratorMode::From(&upper, Direction::Reverse),
        );
        match it.next() {
            None => Ok(None),
            Some(Err(e)) => Err(sto_err(ErrorSubject::Logs, ErrorVerb::Read, e)),
            Some(Ok((k, v))) => {
                if k.len() != 10 || k[..2] != self.group.0.to_be_bytes() {
                    return Ok(None);
                }
                let entry: Entry = codec::decode(&v).expect("corrupt raft log entry");
                Ok(Some(*entry.get_log_id()))
            }
        }
    }
}

impl LogStore {
    /// The entries of `range` in order, stopping after the first whose stored
    /// sizes add up to `bytes_max` (at least one is returned when the range
    /// holds any): sizes are checked before decoding, so a bounded read of a
    /// log of large entries decodes only what it returns.
    fn read_entries<RB: RangeBounds<u64>>(
        &self,
        range: RB,
        bytes_max: u64,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        let start = match range.start_bound() {
            std::ops::Bound::Included(i) => *i,
            std::ops::Bound::Excluded(i) => *i + 1,
            std::ops::Bound::Unbounded => 0,
        };
        let start_key = keys::log(self.group, start);
        let mut out = Vec::new();
        let mut bytes = 0u64;
        for item in self.db.raw().iterator_cf(
            self.db.cf(CF_LOG),
            IteratorMode::From(&start_key, Direction::Forward),
        ) {
            let (k, v) = item.map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            if k.len() != 10 || k[..2] != self.group.0.to_be_bytes() {
                break;
            }
            let index = keys::read_u64(&k, 2);
            if !range.contains(&index) {
                break;
            }
            bytes = bytes.saturating_add(v.len() as u64);
            if bytes > bytes_max && !out.is_empty() {
                break;
            }
            let entry: Entry = codec::decode(&v).expect("corrupt raft log entry");
            assert_eq!(
                entry.get_log_id().index,
                index,
                "log entry stored under the wrong index"
            );
            out.push(entry);
        }
        Ok(out)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        self.read_entries(range, u64::MAX)
    }

    /// What replication sends in one append-entries RPC: a prefix of `start..end`
    /// within the byte budget (see [`Db::set_log_read_bytes_max`]).
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        self.read_entries(start..end, self.read_bytes_max)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged: Option<LogId> = self.get_meta(meta::PURGED)?;
        let last = self.last_entry_log_id()?.or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.db.cf(CF_META),
            keys::meta(self.group.0, meta::VOTE),
            codec::encode(vote),
        );
        // A vote must be on disk before it is acted on.
        self.db
            .write_sync(batch)
            .map_err(|e| sto_err(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.get_meta(meta::VOTE)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId>,
    ) -> Result<(), StorageError<NodeId>> {
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.db.cf(CF_META),
            keys::meta(self.group.0, meta::COMMITTED),
            codec::encode(&committed),
        );
        self.db
            .write_nosync(batch)
            .map_err(|e| sto_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
        self.committed.store(
            committed.map(|c| c.index).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError<NodeId>> {
        Ok(self.get_meta::<Option<LogId>>(meta::COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut batch = WriteBatch::default();
        let cf = self.db.cf(CF_LOG);
        let mut last = 0;
        for entry in entries {
            last = entry.get_log_id().index;
            batch.put_cf(cf, keys::log(self.group, last), codec::encode(&entry));
        }
        let mark = self.mark.clone();
        let epoch = mark.as_ref().map_or(0, |m| m.epoch());
        // Written now (readable at once), durable when the syncer's fsync completes.
        self.db
            .write_nosync(batch)
            .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        let started = std::time::Instant::now();
        let timer = self
            .db
            .metrics()
            .log_append_seconds
            .with_label_values(&[&self.group.0.to_string()]);
        self.db.when_durable(Box::new(move |res| {
            timer.observe(started.elapsed().as_secs_f64());
            if let (Ok(()), Some(mark)) = (&res, &mark) {
                mark.advance(epoch, last);
            }
            callback.log_io_completed(res.map_err(|e| std::io::Error::other(e.to_string())));
        }));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            self.db.cf(CF_LOG),
            keys::log(self.group, log_id.index),
            keys::prefix_end(&self.group.0.to_be_bytes()),
        );
        // Durable with the next append's fsync, which precedes any use of new entries.
        if let Some(mark) = &self.mark {
            mark.truncated(log_id.index);
        }
        self.db
            .write_nosync(batch)
            .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        // The entries go only once a durable snapshot covers them. openraft
        // 0.9 purges a follower's log as soon as it decides to install a
        // snapshot, while the state machine may still be writing it: a crash
        // then would leave neither the entries nor the snapshot (found by
        // the power nemesis: a node that could not start again).
        let wait = std::time::Duration::from_millis(self.purge_wait_ms);
        let short = match &self.mark {
            Some(mark) => mark.wait_for_snapshot(log_id.index, wait).await,
            None => None,
        };
        if let Some(have) = short {
            return Err(sto_err(
                ErrorSubject::Logs,
                ErrorVerb::Delete,
                std::io::Error::other(format!(
                    "purge through {} waited {wait:?} for a durable snapshot covering it (have {have})",
                    log_id.index
                )),
            ));
        }
        // The state machine writes the snapshot covers must be durable before
        // the entries that rebuild them disappear. The synced write below
        // fsyncs the WAL, which covers them.
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.db.cf(CF_META),
            keys::meta(self.group.0, meta::PURGED),
            codec::encode(&log_id),
        );
        batch.delete_range_cf(
            self.db.cf(CF_LOG),
            keys::log(self.group, 0),
            keys::log(self.group, log_id.index + 1),
        );
        self.db
            .write_sync(batch)
            .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}
