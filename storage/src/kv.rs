//! The key-value seam the state machine runs on.
//!
//! [`Kv`] is all the machine needs: point reads, ordered prefix scans, puts and
//! deletes, with reads seeing the machine's own earlier writes. [`RocksTx`] buffers
//! writes over the RocksDB `sm` column family and turns them into one write batch;
//! [`MemKv`] is a plain ordered map for tests and models.

use std::collections::BTreeMap;
use std::ops::Bound;

use rocksdb::{ReadOptions, WriteBatch};

use crate::db::{Db, CF_SM};
use crate::keys::prefix_end;

/// Ordered read access.
pub trait KvRead {
    /// The value at `key`.
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;
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

/// Buffered writes over the RocksDB state-machine column family.
pub struct RocksTx<'a> {
    db: &'a Db,
    /// Pending writes: `None` is a delete.
    overlay: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'a> RocksTx<'a> {
    /// A transaction with nothing pending.
    pub fn new(db: &'a Db) -> Self {
        RocksTx {
            db,
            overlay: BTreeMap::new(),
        }
    }

    /// Moves the pending writes into `batch`, leaving the transaction empty.
    pub fn drain_into(&mut self, batch: &mut WriteBatch) {
        let cf = self.db.cf(CF_SM);
        for (k, v) in std::mem::take(&mut self.overlay) {
            match v {
                Some(v) => batch.put_cf(cf, k, v),
                None => batch.delete_cf(cf, k),
            }
        }
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
        match self.overlay.get(key) {
            Some(v) => v.clone(),
            None => self.db_get(key),
        }
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

        let mut batch = WriteBatch::default();
        tx.drain_into(&mut batch);
        db.write_sync(batch).unwrap();
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
        let mut it = self.snap.raw_iterator_cf_opt(self.db.cf(CF_SM), bounded(end));
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
