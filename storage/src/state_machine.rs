//! openraft's state machine for one group: apply into memory or RocksDB
//! (`storage.state_machine`), and snapshots as files that openraft streams to
//! followers in chunks.
//!
//! ## Snapshot file format
//!
//! ```text
//! "BOXSNAP1"
//! u32 LE header length, codec(SnapshotHeader)
//! repeated: u32 LE key length, key (without the group prefix), u32 LE value length, value
//! u32 LE 0xFFFF_FFFF, u64 LE xxh3 of every byte before it
//! ```
//!
//! ## Crash safety of install
//!
//! 1. the received data is copied to `installing.tmp`, fsync'd, checked, renamed to
//!    `current.snap` (fsync of the directory);
//! 2. the `INSTALLING` marker is written (synced);
//! 3. the group's state-machine range is replaced by the file's records;
//! 4. the WAL is synced and the marker cleared.
//!
//! A node that restarts with the marker set redoes step 3 and 4 from `current.snap`.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use boxoffice_raft::command::{Applied, Effect, Outcome};
use boxoffice_raft::{
    codec, Entry, GroupId, LogId, NodeId, SnapshotMeta, StoredMembership, TypeConfig,
};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{ErrorSubject, ErrorVerb, StorageError};
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use crate::db::{Db, StateMachineBackend, CF_META, CF_SM};
use crate::keys::{self, meta, Key};
use crate::kv::{ApplyCache, Kv, KvRead, RocksTx, SnapshotView};
use crate::machine;
use crate::memory::{MemState, Records};
use crate::read::Reader;
use crate::sto_err;

const MAGIC: &[u8; 8] = b"BOXSNAP1";
const END_MARK: u32 = u32::MAX;

/// The header of a snapshot file: which group, and openraft's snapshot meta.
#[derive(Serialize, Deserialize)]
struct SnapshotHeader {
    group: u16,
    meta: SnapshotMeta,
}

boxoffice_raft::versioned_v1!(SnapshotHeader => "snapshot header");

/// One applied entry's outcome, for in-process watchers (seat maps, search).
#[derive(Clone, Debug)]
pub struct AppliedChange {
    /// The group.
    pub group: GroupId,
    /// Log index.
    pub index: u64,
    /// Position within the entry: 0, or for the requests of a `Command::Batch`
    /// entry 0, 1, 2, ... in the order they were applied (one change each).
    pub pos: u32,
    /// The outcome (for blank/membership entries: `Effect::Nothing`).
    pub outcome: Outcome,
    /// True when this is not an entry but a snapshot install: the whole state was
    /// replaced up to `index`, and watchers must resynchronise from the state.
    pub snapshot_installed: bool,
}

/// The state machine of one group. Clones share everything.
#[derive(Clone)]
pub struct StateMachineStore {
    group: GroupId,
    db: Db,
    dir: PathBuf,
    state: State,
    applied: Arc<watch::Sender<Applied>>,
    /// The group's feature level as last applied.
    feature_level: Arc<std::sync::atomic::AtomicU32>,
    changes: broadcast::Sender<AppliedChange>,
    snapshot_seq: Arc<AtomicU64>,
    /// Records per write batch while installing a snapshot.
    install_batch_records: usize,
    /// `storage.apply_durable_wait_ms`.
    apply_durable_wait_ms: u64,
}

/// Where the group's records are (`storage.state_machine`).
#[derive(Clone)]
enum State {
    /// In the `sm` column family, read by apply through its cache (cleared by
    /// snapshot installs).
    Rocks(Arc<std::sync::Mutex<ApplyCache>>),
    /// In memory; the `sm` column family holds nothing newer than the last
    /// snapshot file (what a run with `"rocksdb"` left, until a snapshot drops it).
    Memory(Arc<MemState>),
}

impl StateMachineStore {
    /// Opens `group`'s state machine; snapshots live under `snapshot_root/g{group}`.
    /// Starts from the later of the two persisted states, the `sm` column
    /// family and the last snapshot file (a node may have run with the other
    /// `storage.state_machine` before), finishing an interrupted snapshot
    /// install first.
    pub fn open(
        db: Db,
        group: GroupId,
        snapshot_root: &Path,
        settings: &crate::StorageSettings,
    ) -> Result<Self, crate::StorageError> {
        let dir = group_dir(snapshot_root, group);
        crate::files::create_dir_durable(&dir)?;
        let (changes, _) = broadcast::channel(settings.changes_capacity.max(1));
        let state = match settings.state_machine {
            StateMachineBackend::Rocksdb => {
                State::Rocks(Arc::new(std::sync::Mutex::new(ApplyCache::new(
                    settings.apply_cache_entries_max,
                    settings.apply_cache_bytes_max,
                ))))
            }
            StateMachineBackend::Memory => State::Memory(Arc::new(MemState::new(Records::new()))),
        };
        let sm = StateMachineStore {
            group,
            db,
            dir,
            state,
            applied: Arc::new(watch::Sender::new(Applied::default())),
            feature_level: Default::default(),
            changes,
            snapshot_seq: Arc::new(AtomicU64::new(0)),
            install_batch_records: settings.snapshot_install_batch_records.max(1),
            apply_durable_wait_ms: settings.apply_durable_wait_ms.max(1),
        };
        let installing = sm
            .db
            .raw()
            .get_cf(sm.db.cf(CF_META), keys::meta(group.0, meta::INSTALLING))?
            .is_some();
        // The `sm` column family's state, unless an install into it was cut short.
        let rocks_applied = if installing {
            tracing::warn!(%group, "finishing an interrupted snapshot install");
            None
        } else {
            Some(machine::read_meta(&RocksTx::new(&sm.db), group).last_applied)
        };
        let path = sm.current_path();
        let snapshot_applied = if path.exists() {
            Some(read_header(&path)?.meta.last_log_id)
        } else {
            None
        };
        match (&sm.state, rocks_applied) {
            (State::Rocks(_), Some(rocks)) => {
                if snapshot_applied.is_some_and(|snap| snap > rocks) {
                    tracing::info!(%group, "the state machine is behind its last snapshot (kept in memory before): loading the snapshot");
                    sm.load_snapshot_file(&path)?;
                }
            }
            // Without a snapshot file, whatever the column family holds (nothing,
            // or the records of a run with "rocksdb" that never took a snapshot).
            (State::Memory(mem), Some(rocks))
                if snapshot_applied.is_none() || rocks > snapshot_applied.flatten() =>
            {
                tracing::info!(%group, "the state machine's records in RocksDB are later than its last snapshot (kept there before): loading them");
                mem.replace(rocks_records(&sm.db, group));
            }
            _ if snapshot_applied.is_some() => {
                sm.load_snapshot_file(&path)?;
            }
            _ => {}
        }
        let m = sm.with_view(|kv| machine::read_meta(kv, group));
        // What it opened with is durable (a snapshot file in place, or state
        // the WAL replayed and `Db::open` fsynced): the log may go up to it.
        sm.snapshot_durable(m.last_applied.map(|l| l.index));
        sm.applied.send_replace(Applied {
            index: m.last_applied.map(|l| l.index).unwrap_or(0),
            time_ms: m.time_ms,
        });
        sm.with_view(|kv| sm.note_feature_level(kv))?;
        Ok(sm)
    }

    /// Tells the log store a snapshot through `index` is durably in place.
    fn snapshot_durable(&self, index: Option<u64>) {
        if let (Some(i), Some(mark)) = (index, self.db.durable_mark(self.group.0)) {
            mark.snapshot_durable(i);
        }
    }

    /// The group.
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// Reads of the group's applied state.
    pub fn reader(&self) -> Reader {
        match &self.state {
            State::Rocks(_) => Reader::new(self.db.clone(), self.group),
            State::Memory(mem) => Reader::in_memory(mem.clone(), self.group),
        }
    }

    /// Runs `f` on a consistent view of the applied state.
    fn with_view<R>(&self, f: impl FnOnce(&dyn KvRead) -> R) -> R {
        match &self.state {
            State::Rocks(_) => f(&SnapshotView::new(&self.db)),
            State::Memory(mem) => f(&mem.view()),
        }
    }

    /// Last applied index and state-machine time, updated after every apply.
    pub fn applied(&self) -> watch::Receiver<Applied> {
        self.applied.subscribe()
    }

    /// The group's feature level as last applied (see `command::FEATURE_LEVEL_MAX`).
    pub fn feature_level(&self) -> u32 {
        self.feature_level.load(Ordering::Relaxed)
    }

    /// Notes the group's feature level; refuses one this build does not know
    /// (data written by a newer release, or a snapshot from one).
    fn note_feature_level(&self, kv: &dyn KvRead) -> Result<(), crate::StorageError> {
        let level = machine::read_features(kv, self.group).level;
        if level > boxoffice_raft::command::FEATURE_LEVEL_MAX {
            return Err(crate::StorageError::FeatureLevel {
                group: self.group.0,
                level,
            });
        }
        self.feature_level.store(level, Ordering::Relaxed);
        Ok(())
    }

    /// Every applied entry's outcome, in order.
    pub fn changes(&self) -> broadcast::Receiver<AppliedChange> {
        self.changes.subscribe()
    }

    fn current_path(&self) -> PathBuf {
        current_snapshot_path(&self.dir)
    }

    /// Replaces the group's state with the records of a verified snapshot file.
    fn load_snapshot_file(&self, path: &Path) -> Result<SnapshotMeta, crate::StorageError> {
        let header = verify_snapshot_file(path)?;
        if header.group != self.group.0 {
            return Err(crate::StorageError::BadSnapshot(format!(
                "snapshot of group {} offered to group {}",
                header.group, self.group.0
            )));
        }
        let prefix = Key::group(self.group).build();
        let mut r = BufReader::new(File::open(path)?);
        skip_header(&mut r)?;
        match &self.state {
            State::Rocks(cache) => {
                let mut marker = WriteBatch::default();
                marker.put_cf(
                    self.db.cf(CF_META),
                    keys::meta(self.group.0, meta::INSTALLING),
                    [1u8],
                );
                self.db.write_sync(marker)?;

                // Every record of the group is replaced: the cache would lie about them.
                cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
                let mut batch = WriteBatch::default();
                batch.delete_range_cf(self.db.cf(CF_SM), prefix.clone(), keys::prefix_end(&prefix));
                let mut n = 0usize;
                while let Some((k, v)) = read_record(&mut r)? {
                    let mut key = prefix.clone();
                    key.extend_from_slice(&k);
                    batch.put_cf(self.db.cf(CF_SM), key, v);
                    n += 1;
                    if n % self.install_batch_records == 0 {
                        self.db.write_nosync(std::mem::take(&mut batch))?;
                    }
                }
                self.db.write_nosync(batch)?;
                let mut clear = WriteBatch::default();
                clear.delete_cf(
                    self.db.cf(CF_META),
                    keys::meta(self.group.0, meta::INSTALLING),
                );
                self.db.write_sync(clear)?;
            }
            State::Memory(mem) => {
                let mut records = Records::new();
                while let Some((k, v)) = read_record(&mut r)? {
                    let mut key = prefix.clone();
                    key.extend_from_slice(&k);
                    records.insert(key.into(), v.into());
                }
                mem.replace(records);
            }
        }

        let m = self.with_view(|kv| machine::read_meta(kv, self.group));
        assert_eq!(
            m.last_applied, header.meta.last_log_id,
            "installed state does not match its snapshot meta"
        );
        let applied = Applied {
            index: m.last_applied.map(|l| l.index).unwrap_or(0),
            time_ms: m.time_ms,
        };
        self.with_view(|kv| self.note_feature_level(kv))?;
        self.applied.send_replace(applied);
        let outcome = Outcome {
            applied,
            replayed: false,
            result: Ok(boxoffice_raft::command::Effect::Nothing),
        };
        // Nobody listening is fine.
        let _ = self.changes.send(AppliedChange {
            group: self.group,
            index: applied.index,
            pos: 0,
            outcome,
            snapshot_installed: true,
        });
        Ok(header.meta)
    }

    fn build(&self) -> Result<Snapshot<TypeConfig>, crate::StorageError> {
        let snapshot = self.with_view(|kv| self.write_snapshot(kv))?;
        if let State::Memory(_) = &self.state {
            // What a run with "rocksdb" left in the column family is older than
            // this snapshot now: drop it (a range deletion; nothing when empty).
            let prefix = Key::group(self.group).build();
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(self.db.cf(CF_SM), prefix.clone(), keys::prefix_end(&prefix));
            self.db.write_nosync(batch)?;
        }
        Ok(snapshot)
    }

    /// Writes the state `kv` shows as the current snapshot file (fsynced, then
    /// renamed into place and the directory fsynced).
    fn write_snapshot(&self, kv: &dyn KvRead) -> Result<Snapshot<TypeConfig>, crate::StorageError> {
        let m = machine::read_meta(kv, self.group);
        let seq = self.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match m.last_applied {
            Some(l) => format!("{}-{}-{}-{}", self.group.0, l.leader_id.term, l.index, seq),
            None => format!("{}-none-{}", self.group.0, seq),
        };
        let meta = SnapshotMeta {
            last_log_id: m.last_applied,
            last_membership: m.membership.clone(),
            snapshot_id,
        };
        let tmp = self.dir.join(format!("build-{seq}.tmp"));
        write_view(kv, self.group, &meta, &tmp)?;
        fs::rename(&tmp, self.current_path())?;
        crate::files::sync_dir(&self.dir)?;
        self.snapshot_durable(meta.last_log_id.map(|l| l.index));
        let f = File::open(self.current_path())?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(f)),
        })
    }

    /// Writes the applied state as it is now to `path`, in the snapshot file
    /// format (fsynced), without touching the group's own snapshot: an online
    /// backup of this replica. Every entry it covers is committed.
    pub fn export(&self, path: &Path) -> Result<SnapshotMeta, crate::StorageError> {
        self.with_view(|kv| {
            let m = machine::read_meta(kv, self.group);
            let meta = SnapshotMeta {
                last_log_id: m.last_applied,
                last_membership: m.membership.clone(),
                snapshot_id: match m.last_applied {
                    Some(l) => format!("{}-{}-{}-export", self.group.0, l.leader_id.term, l.index),
                    None => format!("{}-none-export", self.group.0),
                },
            };
            write_view(kv, self.group, &meta, path)?;
            Ok(meta)
        })
    }

    /// Applies `entries` through `kv`: each entry's outcome by index, and the
    /// last applied position with the state-machine time (`None` for no entries).
    fn apply_in(
        &self,
        kv: &mut dyn Kv,
        entries: impl IntoIterator<Item = Entry>,
    ) -> Result<(Vec<(u64, Outcome)>, Option<Applied>), crate::StorageError> {
        let mut outcomes = Vec::new();
        let mut last = None;
        for entry in entries {
            let outcome = machine::apply_entry(kv, self.group, &entry);
            last = Some(entry.log_id.index);
            outcomes.push((entry.log_id.index, outcome));
        }
        let Some(index) = last else {
            return Ok((outcomes, None));
        };
        let m = machine::read_meta(kv, self.group);
        // Apply itself stops on a level it does not know.
        self.note_feature_level(kv)?;
        Ok((
            outcomes,
            Some(Applied {
                index,
                time_ms: m.time_ms,
            }),
        ))
    }
}

/// The group's records in the `sm` column family, as a map.
/// Where a group's snapshot directory keeps its current snapshot.
pub(crate) fn current_snapshot_path(group_dir: &Path) -> PathBuf {
    group_dir.join("current.snap")
}

/// A group's snapshot directory under the node's snapshot root.
pub(crate) fn group_dir(snapshot_root: &Path, group: GroupId) -> PathBuf {
    snapshot_root.join(format!("g{}", group.0))
}

/// Writes a snapshot file: magic and header, then records, then the end mark
/// and checksum. `finish` fsyncs it.
pub(crate) struct SnapshotWriter {
    w: HashingWriter<BufWriter<File>>,
}

impl SnapshotWriter {
    /// Creates `path` and writes the header of `group`'s snapshot `meta`.
    pub(crate) fn create(
        path: &Path,
        group: GroupId,
        meta: &SnapshotMeta,
    ) -> Result<Self, crate::StorageError> {
        let mut w = HashingWriter::new(BufWriter::new(File::create(path)?));
        w.write_all(MAGIC)?;
        let header = codec::encode(&SnapshotHeader {
            group: group.0,
            meta: meta.clone(),
        });
        w.write_all(&(header.len() as u32).to_le_bytes())?;
        w.write_all(&header)?;
        Ok(SnapshotWriter { w })
    }

    /// One record: its key without the group prefix, and its value.
    pub(crate) fn record(&mut self, k: &[u8], v: &[u8]) -> std::io::Result<()> {
        self.w.write_all(&(k.len() as u32).to_le_bytes())?;
        self.w.write_all(k)?;
        self.w.write_all(&(v.len() as u32).to_le_bytes())?;
        self.w.write_all(v)
    }

    /// Ends the file and fsyncs it.
    pub(crate) fn finish(mut self) -> Result<(), crate::StorageError> {
        self.w.write_all(&END_MARK.to_le_bytes())?;
        let sum = self.w.hasher.digest();
        let mut inner = self.w.inner;
        inner.write_all(&sum.to_le_bytes())?;
        let f = inner.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        Ok(())
    }
}

/// Writes every record of `group` that `kv` shows to a snapshot file at `path`.
fn write_view(
    kv: &dyn KvRead,
    group: GroupId,
    meta: &SnapshotMeta,
    path: &Path,
) -> Result<(), crate::StorageError> {
    let prefix = Key::group(group).build();
    let mut w = SnapshotWriter::create(path, group, meta)?;
    let mut failed = None;
    kv.scan(
        &prefix,
        &prefix,
        &mut |k, v| match w.record(&k[prefix.len()..], v) {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        },
    );
    if let Some(e) = failed {
        return Err(e.into());
    }
    w.finish()
}

/// Reads a snapshot file's records in order, after checking it whole
/// (structure and checksum): its header's group and meta, and each record's key
/// (without the group prefix) and value.
pub(crate) fn read_snapshot_file(
    path: &Path,
    mut each: impl FnMut(Vec<u8>, Vec<u8>) -> Result<(), crate::StorageError>,
) -> Result<(u16, SnapshotMeta), crate::StorageError> {
    verify_snapshot_file(path)?;
    let mut r = BufReader::new(File::open(path)?);
    let header = skip_header(&mut r)?;
    while let Some((k, v)) = read_record(&mut r)? {
        each(k, v)?;
    }
    Ok((header.group, header.meta))
}

/// Checks a snapshot file (structure and checksum) and answers its group and meta.
pub fn verify_file(path: &Path) -> Result<(u16, SnapshotMeta), crate::StorageError> {
    let h = verify_snapshot_file(path)?;
    Ok((h.group, h.meta))
}

fn rocks_records(db: &Db, group: GroupId) -> Records {
    let prefix = Key::group(group).build();
    let mut records = Records::new();
    SnapshotView::new(db).scan(&prefix, &prefix, &mut |k, v| {
        records.insert(k.into(), v.into());
        true
    });
    records
}

/// Writer that hashes what passes through it.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: xxhash_rust::xxh3::Xxh3,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: xxhash_rust::xxh3::Xxh3::new(),
        }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn read_u32(r: &mut impl Read) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

/// Reads past magic and header, returning the header.
fn skip_header(r: &mut impl Read) -> Result<SnapshotHeader, crate::StorageError> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(crate::StorageError::BadSnapshot(
            "not a boxoffice snapshot (bad magic)".into(),
        ));
    }
    let len = read_u32(r)? as usize;
    if len > 1 << 20 {
        return Err(crate::StorageError::BadSnapshot(
            "snapshot header too large".into(),
        ));
    }
    let mut header = vec![0u8; len];
    r.read_exact(&mut header)?;
    Ok(codec::decode(&header)?)
}

fn read_record(r: &mut impl Read) -> Result<Option<(Vec<u8>, Vec<u8>)>, crate::StorageError> {
    let klen = read_u32(r)?;
    if klen == END_MARK {
        return Ok(None);
    }
    let mut k = vec![0u8; klen as usize];
    r.read_exact(&mut k)?;
    let vlen = read_u32(r)? as usize;
    let mut v = vec![0u8; vlen];
    r.read_exact(&mut v)?;
    Ok(Some((k, v)))
}

/// Checks a snapshot file's structure and checksum; returns its header.
/// A snapshot file's header, without checking the rest of the file.
fn read_header(path: &Path) -> Result<SnapshotHeader, crate::StorageError> {
    skip_header(&mut BufReader::new(File::open(path)?))
}

fn verify_snapshot_file(path: &Path) -> Result<SnapshotHeader, crate::StorageError> {
    let len = fs::metadata(path)?.len();
    if len < 8 + 4 + 4 + 8 {
        return Err(crate::StorageError::BadSnapshot(
            "snapshot file too short".into(),
        ));
    }
    let mut f = File::open(path)?;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut remaining = len - 8;
    let mut buf = vec![0u8; 1 << 16];
    while remaining > 0 {
        let n = remaining.min(buf.len() as u64) as usize;
        f.read_exact(&mut buf[..n])?;
        hasher.update(&buf[..n]);
        remaining -= n as u64;
    }
    let mut sum = [0u8; 8];
    f.read_exact(&mut sum)?;
    if u64::from_le_bytes(sum) != hasher.digest() {
        return Err(crate::StorageError::BadSnapshot("checksum mismatch".into()));
    }
    f.seek(SeekFrom::Start(0))?;
    skip_header(&mut BufReader::new(f))
}

fn sm_err(e: crate::StorageError) -> StorageError<NodeId> {
    sto_err(ErrorSubject::StateMachine, ErrorVerb::Write, e)
}

fn snap_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    sto_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e)
}

fn join_err(e: tokio::task::JoinError) -> StorageError<NodeId> {
    sto_err(
        ErrorSubject::StateMachine,
        ErrorVerb::Write,
        std::io::Error::other(e.to_string()),
    )
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.build())
            .await
            .map_err(join_err)?
            .map_err(snap_err)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership), StorageError<NodeId>> {
        let m = self.with_view(|kv| machine::read_meta(kv, self.group));
        Ok((m.last_applied, m.membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        // This replica's own copy must be durable before its state shows the
        // entries (a follower may hear they are committed first).
        if let (Some(last), Some(mark)) = (entries.last(), self.db.durable_mark(self.group.0)) {
            let index = last.log_id.index;
            let wait = std::time::Duration::from_millis(self.apply_durable_wait_ms);
            if !mark.wait_for(index, wait).await {
                return Err(sto_err(
                    ErrorSubject::StateMachine,
                    ErrorVerb::Write,
                    std::io::Error::other(format!(
                        "entry {index} not durable in this replica's log within {wait:?} (durable through {})",
                        mark.durable()
                    )),
                ));
            }
        }
        let started = std::time::Instant::now();
        let applied = match &self.state {
            State::Rocks(cache) => {
                let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
                let mut tx = RocksTx::with_cache(&self.db, &mut cache);
                let applied = self.apply_in(&mut tx, entries);
                // Not synced: the log entries are durable; a crash loses at most a
                // suffix of applied state, which is re-applied from the log on restart.
                tx.write()
                    .map_err(|e| sto_err(ErrorSubject::StateMachine, ErrorVerb::Write, e))?;
                applied
            }
            // Published whole when the entries are applied; a restart re-applies
            // everything after the last snapshot.
            State::Memory(mem) => mem.apply(|tx| self.apply_in(tx, entries)),
        };
        let (outcomes, last) =
            applied.map_err(|e| sto_err(ErrorSubject::StateMachine, ErrorVerb::Read, e))?;
        let metrics = self.db.metrics();
        let group = self.group.0.to_string();
        metrics
            .apply_seconds
            .with_label_values(&[&group])
            .observe(started.elapsed().as_secs_f64());
        metrics
            .applied_entries
            .with_label_values(&[&group])
            .inc_by(outcomes.len() as u64);
        // Only now that readers see the entries' writes.
        if let Some(a) = last {
            self.applied.send_replace(a);
        }
        let mut out = Vec::with_capacity(outcomes.len());
        for (index, outcome) in outcomes {
            // One change per request: a batch's requests each get theirs, numbered
            // by position. No receivers is fine: nobody is watching.
            let parts = if let Ok(Effect::Batch(inner)) = &outcome.result {
                inner.as_slice()
            } else {
                // Any other outcome is one request's (or no request's) change.
                std::slice::from_ref(&outcome)
            };
            for (pos, o) in (0u32..).zip(parts) {
                let _ = self.changes.send(AppliedChange {
                    group: self.group,
                    index,
                    pos,
                    outcome: o.clone(),
                    snapshot_installed: false,
                });
            }
            out.push(outcome);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<tokio::fs::File>, StorageError<NodeId>> {
        // An unnamed temporary file: it disappears by itself if the transfer is abandoned.
        let f = tempfile::tempfile_in(&self.dir).map_err(snap_err)?;
        Ok(Box::new(tokio::fs::File::from_std(f)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError<NodeId>> {
        let mut src = snapshot.into_std().await;
        let this = self.clone();
        let expected = meta.clone();
        tokio::task::spawn_blocking(move || -> Result<(), crate::StorageError> {
            let tmp = this.dir.join("installing.tmp");
            src.seek(SeekFrom::Start(0))?;
            let mut dst = File::create(&tmp)?;
            std::io::copy(&mut src, &mut dst)?;
            dst.sync_all()?;
            let header = verify_snapshot_file(&tmp)?;
            if header.meta.last_log_id != expected.last_log_id {
                return Err(crate::StorageError::BadSnapshot(
                    "snapshot data does not match its meta".into(),
                ));
            }
            fs::rename(&tmp, this.current_path())?;
            crate::files::sync_dir(&this.dir)?;
            // A restart now starts from this file (finishing the install if
            // it was cut short), so the log it covers may go.
            this.snapshot_durable(expected.last_log_id.map(|l| l.index));
            this.load_snapshot_file(&this.current_path())?;
            Ok(())
        })
        .await
        .map_err(join_err)?
        .map_err(sm_err)
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let path = self.current_path();
        if !path.exists() {
            return Ok(None);
        }
        let header = {
            let f = File::open(&path).map_err(snap_err)?;
            skip_header(&mut BufReader::new(f)).map_err(snap_err)?
        };
        let f = File::open(&path).map_err(snap_err)?;
        Ok(Some(Snapshot {
            meta: header.meta,
            snapshot: Box::new(tokio::fs::File::from_std(f)),
        }))
    }
}
