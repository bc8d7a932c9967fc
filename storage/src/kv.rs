//! The key-value seam the state machine runs on.
//!
//! [`Kv`] is all the machine needs: point reads, ordered prefix scans, puts and
//! deletes, with reads seeing the machine's own earlier writes. [`RocksTx`] buffers
//! writes over the RocksDB `sm` column family and turns them into one write batch;
//! [`MemKv`] is a plain ordered map for tests and models.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use rocksdb::{ReadOptions, WriteBatch};

use crate::db::{Db, CF_SM};
use crate::keys::prefix_end;

/// A record decoded by [`KvRead::get_decoded`].
pub type Decoded = Arc<dyn Any + Send + Sync>;

/// Ordered read access.
pub trait KvRead {
    /// The value at `key`.
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;

    /// The value at `key` as `decode` makes it of the bytes. `decode` must be a
    /// pure function of the bytes and the same for every call with this key: a
    /// store may hand back an earlier decoding of the same record instead of
    /// reading and decoding it again (apply's cache does, for records that are
    /// large and read on every request, such as an event's inventory).
    fn get_decoded(&self, key: &[u8], decode: &dyn Fn(&[u8]) -> Decoded) -> Option<Decoded> {
        self.get(key).map(|b| decode(&b))
    }
    /// Visits keys in `[start, end)`, in order, until `visit` returns false. The
    /// store never looks past `end`, so deleted keys beyond it cost nothing.
    fn scan_range(&self, start: &[u8], end: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool);

    /// Visits keys `>= start` that begin with `prefix`, in order, until `visit` returns false.
    fn scan(&self, prefix: &[u8], start: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) {
        let from = if start > prefix { start } else { prefix };
        self.scan_range(from, &prefix_end(prefix), visit)
    }
}

/// Read options bounding an iterator above by `end` (exclusive), so that RocksDB
/// stops at `end` instead of skipping deletion markers beyond it.
fn bounded(end: &[u8]) -> ReadOptions {
    let mut opts = ReadOptions::default();
    opts.set_iterate_upper_bound(end.to_vec());
    opts
}

/// A RocksDB iterator's status after it stopped. A read error on the state
/// machine is an I/O failure we cannot apply or answer through: crash, and the
/// restart replays the log.
fn checked(status: Result<(), rocksdb::Error>) {
    status.expect("rocksdb scan of state machine failed");
}

/// Ordered read-write access for the state machine; reads see earlier writes.
pub trait Kv: KvRead {
    /// Sets `key`.
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>);
    /// Removes `key`.
    fn delete(&mut self, key: Vec<u8>);
}

/// An in-memory ordered map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemKv {
    /// The contents.
    pub map: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl KvRead for MemKv {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.map.get(key).cloned()
    }
    fn scan_range(&self, start: &[u8], end: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) {
        if start >= end {
            return;
        }
        for (k, v) in self
            .map
            .range::<[u8], _>((Bound::Included(start), Bound::Excluded(end)))
        {
            if !visit(k, v) {
                break;
            }
        }
    }
}

impl Kv for MemKv {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.map.insert(key, value);
    }
    fn delete(&mut self, key: Vec<u8>) {
        self.map.remove(&key);
    }
}

/// One group's state-machine records that apply read, least recently used dropped
/// first.
///
/// Apply reads a few hot records on every request (the group's meta, the event's
/// inventory and counts, the buyer's cap record, the hold it confirms); in a
/// RocksDB memtable grown by a sale each lookup is a skip-list walk, which was
/// half of apply's time. Only records found by a read are cached (most records
/// apply writes, sessions and tickets, are seldom read again, and absent keys are
/// what RocksDB's memtable bloom filter answers cheaply).
///
/// Invariant: a cached record equals what the `sm` column family holds for that
/// key. Apply is the only writer of a group's records besides snapshot installs,
/// which clear the cache; once apply's batch is written, each cached record it
/// wrote is updated (or dropped, if deleted), and if the write fails the cache is
/// cleared.
pub struct ApplyCache {
    map: lru::LruCache<Vec<u8>, Vec<u8>>,
    /// Records read through [`KvRead::get_decoded`], decoded; each equals the
    /// decoding of what the `sm` column family holds for its key (dropped when
    /// the key is written, emptied with the cache).
    decoded: DecodedCache,
    bytes: usize,
    /// Most records kept (`storage.apply_cache_entries_max`).
    entries_max: usize,
    /// Most key and value bytes kept (`storage.apply_cache_bytes_max`); one
    /// record larger than a sixteenth of it is not cached.
    bytes_max: usize,
}

impl ApplyCache {
    /// An empty cache of at most `entries_max` records and `bytes_max` bytes.
    pub fn new(entries_max: usize, bytes_max: usize) -> Self {
        ApplyCache {
            map: lru::LruCache::unbounded(),
            decoded: DecodedCache::default(),
            bytes: 0,
            entries_max,
            bytes_max,
        }
    }

    fn get(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        self.map.get(key).cloned()
    }

    /// Caches a record a read found.
    fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) {
        let size = key.len() + value.len();
        if size > self.bytes_max / 16 {
            return;
        }
        self.bytes += size;
        if let Some((k, old)) = self.map.push(key, value) {
            self.bytes -= k.len() + old.len();
        }
        while self.map.len() > self.entries_max || self.bytes > self.bytes_max {
            match self.map.pop_lru() {
                Some((k, v)) => self.bytes -= k.len() + v.len(),
                None => break,
            }
        }
    }

    /// A record decoded earlier, if kept.
    fn get_decoded(&self, key: &[u8]) -> Option<Decoded> {
        self.decoded.get(key)
    }

    fn insert_decoded(&mut self, key: Vec<u8>, value: Decoded) {
        self.decoded.insert(key, value);
    }

    /// A written record: kept current if cached (`None`: deleted).
    fn written(&mut self, key: &[u8], value: Option<&Vec<u8>>) {
        self.decoded.remove(key);
        let Some(cached) = self.map.peek_mut(key) else {
            return;
        };
        match value {
            Some(v) if key.len() + v.len() <= self.bytes_max / 16 => {
                self.bytes = self.bytes + v.len() - cached.len();
                cached.clone_from(v);
            }
            _ => {
                if let Some(old) = self.map.pop(key) {
                    self.bytes -= key.len() + old.len();
                }
            }
        }
    }

    /// Forgets everything (the group's records were replaced).
    pub fn clear(&mut self) {
        self.map.clear();
        self.decoded.clear();
        self.bytes = 0;
    }

    /// Records cached now.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Decoded records a [`DecodedCache`] keeps at most (emptied when full): a few
/// per event on sale.
const DECODED_MAX: usize = 1024;

/// Records apply read through [`KvRead::get_decoded`], decoded, by key; the
/// owner drops a key's decoding whenever the key is written. At most
/// [`DECODED_MAX`] are kept.
#[derive(Default)]
pub struct DecodedCache {
    map: HashMap<Vec<u8>, Decoded>,
}

impl DecodedCache {
    /// The decoding kept for `key`.
    pub fn get(&self, key: &[u8]) -> Option<Decoded> {
        self.map.get(key).cloned()
    }

    /// Keeps `value` as the decoding of `key`'s record.
    pub fn insert(&mut self, key: Vec<u8>, value: Decoded) {
        if self.map.len() >= DECODED_MAX {
            self.map.clear();
        }
        self.map.insert(key, value);
    }

    /// Drops `key`'s decoding (the key was written).
    pub fn remove(&mut self, key: &[u8]) {
        self.map.remove(key);
    }

    /// Drops every decoding.
    pub fn clear(&mut self) {
        self.map.clear();
    }
}

/// Buffered writes over the RocksDB state-machine column family.
pub struct RocksTx<'a> {
    db: &'a Db,
    /// Pending writes: `None` is a delete.
    overlay: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Apply's cache of committed records, consulted before RocksDB.
    cache: Option<std::cell::RefCell<&'a mut ApplyCache>>,
}

impl<'a> RocksTx<'a> {
    /// A transaction with nothing pending.
    pub fn new(db: &'a Db) -> Self {
        RocksTx {
            db,
            overlay: BTreeMap::new(),
            cache: None,
        }
    }

    /// A transaction that reads committed records through `cache` (see
    /// [`ApplyCache`] for who may use one); [`RocksTx::write`] keeps it current.
    pub fn with_cache(db: &'a Db, cache: &'a mut ApplyCache) -> Self {
        RocksTx {
            db,
            overlay: BTreeMap::new(),
            cache: Some(std::cell::RefCell::new(cache)),
        }
    }

    /// Writes the pending writes as one batch (not synced: the log is what is
    /// durable), leaving the transaction empty; then, and only then, the cache
    /// learns them.
    pub fn write(&mut self) -> Result<(), rocksdb::Error> {
        let cf = self.db.cf(CF_SM);
        let mut batch = WriteBatch::default();
        for (k, v) in &self.overlay {
            match v {
                Some(v) => batch.put_cf(cf, k, v),
                None => batch.delete_cf(cf, k),
            }
        }
        let pending = std::mem::take(&mut self.overlay);
        let written = self.db.write_nosync(batch);
        if let Some(cache) = &self.cache {
            let mut cache = cache.borrow_mut();
            match &written {
                Ok(()) => pending
                    .iter()
                    .for_each(|(k, v)| cache.written(k, v.as_ref())),
                // What RocksDB holds now is unknown.
                Err(_) => cache.clear(),
            }
        }
        written
    }

    fn db_get(&self, key: &[u8]) -> Option<Vec<u8>> {
        // A RocksDB read error on the state machine is an I/O failure we cannot
        // apply through without risking divergence: crash, restart replays the log.
        self.db
            .raw()
            .get_cf(self.db.cf(CF_SM), key)
            .expect("rocksdb read of state machine failed")
    }
}

impl KvRead for RocksTx<'_> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        if let Some(v) = self.overlay.get(key) {
            return v.clone();
        }
        let Some(cache) = &self.cache else {
            return self.db_get(key);
        };
        if let Some(v) = cache.borrow_mut().get(key) {
            return Some(v);
        }
        let v = self.db_get(key);
        if let Some(v) = &v {
            cache.borrow_mut().insert(key.to_vec(), v.clone());
        }
        v
    }

    fn get_decoded(&self, key: &[u8], decode: &dyn Fn(&[u8]) -> Decoded) -> Option<Decoded> {
        // A pending write is decoded as it is; only committed records are kept.
        if let Some(v) = self.overlay.get(key) {
            return v.as_deref().map(decode);
        }
        let Some(cache) = &self.cache else {
            return self.db_get(key).map(|b| decode(&b));
        };
        if let Some(d) = cache.borrow().get_decoded(key) {
            return Some(d);
        }
        let d = decode(&self.db_get(key)?);
        cache.borrow_mut().insert_decoded(key.to_vec(), d.clone());
        Some(d)
    }

    fn scan_range(&self, start: &[u8], end: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) {
        if start >= end {
            return;
        }
        let mut db_iter = self
            .db
            .raw()
            .raw_iterator_cf_opt(self.db.cf(CF_SM), bounded(end));
        db_iter.seek(start);
        let mut ov_iter = self
            .overlay
            .range::<[u8], _>((Bound::Included(start), Bound::Excluded(end)))
            .peekable();
        loop {
            // Merge the two ordered streams; the overlay wins on equal keys.
            let db_key = match db_iter.key() {
                Some(k) if k < end => Some(k),
                Some(_) => None,
                None => {
                    checked(db_iter.status());
                    None
                }
            };
            let take_overlay = match (db_key, ov_iter.peek()) {
                (None, None) => return,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some(dk), Some((ok, _))) => ok.as_slice() <= dk,
            };
            if take_overlay {
                let (k, v) = ov_iter.next().expect("peeked");
                if db_key == Some(k.as_slice()) {
                    db_iter.next();
                }
                if let Some(v) = v {
                    if !visit(k, v) {
                        return;
                    }
                }
            } else {
                let (Some(k), Some(v)) = (db_iter.key(), db_iter.value()) else {
                    unreachable!("a valid iterator has a key and a value");
                };
                if !visit(k, v) {
                    return;
                }
                db_iter.next();
            }
        }
    }
}

impl Kv for RocksTx<'_> {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.overlay.insert(key, Some(value));
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.overlay.insert(key, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(kv: &dyn KvRead, prefix: &[u8], start: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = vec![];
        kv.scan(prefix, start, &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            true
        });
        out
    }

    #[test]
    fn rocks_overlay_scan_matches_memkv() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), &Default::default()).unwrap();
        let mut base = WriteBatch::default();
        let mut mem = MemKv::default();
        for i in [1u8, 3, 5, 7] {
            base.put_cf(db.cf(CF_SM), vec![9, i], vec![i]);
            mem.put(vec![9, i], vec![i]);
        }
        base.put_cf(db.cf(CF_SM), vec![10, 0], vec![0]);
        mem.put(vec![10, 0], vec![0]);
        db.write_sync(base).unwrap();

        let mut tx = RocksTx::new(&db);
        for kv in [&mut tx as &mut dyn Kv, &mut mem as &mut dyn Kv] {
            kv.put(vec![9, 2], vec![20]);
            kv.put(vec![9, 5], vec![50]);
            kv.delete(vec![9, 3]);
            kv.put(vec![9, 9], vec![90]);
        }
        assert_eq!(collect(&tx, &[9], &[9]), collect(&mem, &[9], &[9]));
        assert_eq!(collect(&tx, &[9], &[9, 4]), collect(&mem, &[9], &[9, 4]));
        assert_eq!(tx.get(&[9, 3]), None);
        assert_eq!(tx.get(&[9, 5]), Some(vec![50]));
        assert_eq!(
            collect(&tx, &[9], &[9])
                .iter()
                .map(|(k, _)| k[1])
                .collect::<Vec<_>>(),
            vec![1, 2, 5, 7, 9]
        );

        tx.write().unwrap();
        let fresh = RocksTx::new(&db);
        assert_eq!(collect(&fresh, &[9], &[9]), collect(&mem, &[9], &[9]));

        // Bounded ranges: end is exclusive, empty and inverted ranges visit nothing,
        // and every implementation agrees (the overlay included).
        let mut tx = RocksTx::new(&db);
        tx.put(vec![9, 6], vec![60]);
        tx.delete(vec![9, 7]);
        mem.put(vec![9, 6], vec![60]);
        mem.delete(vec![9, 7]);
        let range = |kv: &dyn KvRead, a: &[u8], b: &[u8]| {
            let mut out = vec![];
            kv.scan_range(a, b, &mut |k, _| {
                out.push(k[1]);
                true
            });
            out
        };
        let snap = SnapshotView::new(&db);
        for (a, b, want) in [
            (&[9u8, 2][..], &[9u8, 9][..], vec![2u8, 5, 6]),
            (&[9, 0], &[9, 2], vec![1]),
            (&[9, 5], &[9, 5], vec![]),
            (&[9, 9], &[9, 1], vec![]),
        ] {
            assert_eq!(range(&tx, a, b), want, "{a:?}..{b:?}");
            assert_eq!(range(&mem, a, b), want, "{a:?}..{b:?}");
        }
        // The snapshot sees only what was written: 7 is still there, 6 is not.
        assert_eq!(range(&snap, &[9, 2], &[10, 1]), vec![2, 5, 7, 9, 0]);
    }

    #[test]
    fn apply_cache_agrees_with_the_database_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), &Default::default()).unwrap();
        const ENTRIES_MAX: usize = 1000;
        let mut cache = ApplyCache::new(ENTRIES_MAX, 1 << 20);
        let mut tx = RocksTx::with_cache(&db, &mut cache);
        tx.put(vec![7, 1], vec![10]);
        tx.put(vec![7, 2], vec![20]);
        tx.write().unwrap();
        // Reads through the cache: present, absent, then changed and deleted.
        let mut tx = RocksTx::with_cache(&db, &mut cache);
        assert_eq!(tx.get(&[7, 1]), Some(vec![10]));
        assert_eq!(tx.get(&[7, 2]), Some(vec![20]));
        assert_eq!(tx.get(&[7, 3]), None);
        tx.put(vec![7, 3], vec![30]);
        tx.put(vec![7, 2], vec![21, 22]);
        tx.delete(vec![7, 1]);
        tx.write().unwrap();
        let plain = RocksTx::new(&db);
        let cached = RocksTx::with_cache(&db, &mut cache);
        for k in [[7u8, 1], [7, 2], [7, 3], [7, 4]] {
            assert_eq!(cached.get(&k), plain.get(&k), "key {k:?}");
        }
        assert_eq!(cached.get(&[7, 2]), Some(vec![21, 22]));
        drop(cached);
        // Past its entry bound the least recently used records go first.
        let mut tx = RocksTx::with_cache(&db, &mut cache);
        let many = ENTRIES_MAX as u32 + 10;
        for i in 0..many {
            tx.put(i.to_be_bytes().to_vec(), vec![1]);
        }
        tx.write().unwrap();
        let tx = RocksTx::with_cache(&db, &mut cache);
        for i in 0..many {
            assert_eq!(tx.get(&i.to_be_bytes()), Some(vec![1]));
        }
        drop(tx);
        assert_eq!(cache.len(), ENTRIES_MAX);
        let plain = RocksTx::new(&db);
        let cached = RocksTx::with_cache(&db, &mut cache);
        assert_eq!(
            cached.get(&0u32.to_be_bytes()),
            plain.get(&0u32.to_be_bytes())
        );
        assert_eq!(cached.get(&[7, 3]), Some(vec![30]));
    }

    #[test]
    fn decoded_records_are_kept_until_written() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), &Default::default()).unwrap();
        let mut cache = ApplyCache::new(100, 1 << 20);
        let decodes = AtomicUsize::new(0);
        // Decodes a record as the sum of its bytes, counting the calls.
        let sum = |b: &[u8]| -> Decoded {
            decodes.fetch_add(1, Ordering::Relaxed);
            Arc::new(b.iter().map(|&x| u32::from(x)).sum::<u32>())
        };
        let read = |kv: &dyn KvRead, k: &[u8]| {
            kv.get_decoded(k, &sum)
                .map(|d| *d.downcast_ref::<u32>().unwrap())
        };
        let mut tx = RocksTx::with_cache(&db, &mut cache);
        tx.put(vec![5, 1], vec![1, 2]);
        // A pending write is decoded as it is, and not kept.
        assert_eq!(read(&tx, &[5, 1]), Some(3));
        tx.write().unwrap();
        let tx = RocksTx::with_cache(&db, &mut cache);
        assert_eq!(read(&tx, &[5, 1]), Some(3));
        assert_eq!(read(&tx, &[5, 1]), Some(3));
        assert_eq!(read(&tx, &[5, 9]), None);
        assert_eq!(
            decodes.load(Ordering::Relaxed),
            2,
            "the second read is kept"
        );
        drop(tx);
        // A write of the key drops its decoding; the next read sees the new record.
        let mut tx = RocksTx::with_cache(&db, &mut cache);
        tx.put(vec![5, 1], vec![7]);
        assert_eq!(read(&tx, &[5, 1]), Some(7));
        tx.write().unwrap();
        let mut tx = RocksTx::with_cache(&db, &mut cache);
        assert_eq!(read(&tx, &[5, 1]), Some(7));
        tx.delete(vec![5, 1]);
        tx.write().unwrap();
        let tx = RocksTx::with_cache(&db, &mut cache);
        assert_eq!(read(&tx, &[5, 1]), None);
        drop(tx);
        // Without the cache every read decodes.
        let before = decodes.load(Ordering::Relaxed);
        let mut tx = RocksTx::new(&db);
        tx.put(vec![5, 2], vec![4]);
        tx.write().unwrap();
        assert_eq!(read(&tx, &[5, 2]), Some(4));
        assert_eq!(read(&tx, &[5, 2]), Some(4));
        assert_eq!(decodes.load(Ordering::Relaxed), before + 2);
        // Cleared with the cache.
        let tx = RocksTx::with_cache(&db, &mut cache);
        assert_eq!(read(&tx, &[5, 2]), Some(4));
        drop(tx);
        cache.clear();
        let tx = RocksTx::with_cache(&db, &mut cache);
        assert_eq!(read(&tx, &[5, 2]), Some(4));
        assert_eq!(decodes.load(Ordering::Relaxed), before + 4);
    }
}

/// A consistent read-only view of the state machine at one RocksDB snapshot.
pub struct SnapshotView<'a> {
    db: &'a Db,
    snap: rocksdb::Snapshot<'a>,
}

impl<'a> SnapshotView<'a> {
    /// A view of everything written so far.
    pub fn new(db: &'a Db) -> Self {
        SnapshotView {
            db,
            snap: db.raw().snapshot(),
        }
    }
}

impl KvRead for SnapshotView<'_> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.snap
            .get_cf(self.db.cf(CF_SM), key)
            .expect("rocksdb read of state machine failed")
    }
    fn scan_range(&self, start: &[u8], end: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) {
        if start >= end {
            return;
        }
        // A raw iterator lends each key and value instead of copying them out.
        let mut it = self
            .snap
            .raw_iterator_cf_opt(self.db.cf(CF_SM), bounded(end));
        it.seek(start);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if k >= end || !visit(k, v) {
                return;
            }
            it.next();
        }
        checked(it.status());
    }
}
