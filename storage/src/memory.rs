//! A group's state-machine records held in memory (`storage.state_machine =
//! "memory"`), persisted by the Raft log and snapshot files instead of RocksDB.
//!
//! The records are a persistent ordered map ([`imbl::OrdMap`]): cloning it is
//! O(1) and shares every node, and a clone that is written copies only the
//! nodes on the written keys' paths. So:
//!
//! - apply ([`MemState::apply`]) writes the one current map in place, under
//!   the state's lock, for a whole batch of entries: a read sees all of an
//!   apply's writes or none. A node that no version shares is written where it
//!   is, without a copy;
//! - a read that keeps a version ([`MemState::view`]) clones the map under the
//!   lock and then reads that version for as long as it likes, without the lock
//!   and without seeing later applies; apply then copies only the nodes it
//!   writes that such a version still shares, once each;
//! - a short read ([`MemState::peek`]) reads the current map under the lock
//!   and keeps no version, so it costs apply no copies (the hold path's checks);
//! - a snapshot is built from a clone while apply goes on.
//!
//! An earlier version cloned the map for every apply and published the clone,
//! so every apply copied every node it wrote and dropped the old ones: path
//! copies and their frees were half of apply on a busy shard (benches/README,
//! "Where the write path's time goes").
//!
//! Nothing here is durable. What makes the state survive a restart is what
//! makes any Raft state machine survive: the last snapshot file (written and
//! fsynced by the snapshot builder) and the log entries after it, which
//! openraft keeps (it purges only what a snapshot covers) and applies again
//! on start. See `state_machine` for how a node picks its starting state.

use std::cell::RefCell;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::kv::{DecodedCache, Kv, KvRead};

/// A key or a value: shared, so that copying a map node copies pointers.
pub type Bytes = Arc<[u8]>;

/// One group's records, keys with their group prefix as in the `sm` column
/// family.
pub type Records = imbl::OrdMap<MapKey, Bytes>;

/// Longest key kept inside the map's nodes (most keys: a ticket's is 15
/// bytes, an idempotency session's about 60).
pub const KEY_INLINE_BYTES: usize = 62;

/// A key of [`Records`], ordered as its bytes. Short keys live inside the map's
/// node, so that a lookup's binary search compares bytes next to each other
/// instead of following a pointer per key compared (with keys behind `Arc`s,
/// those comparisons were most of apply's reads and inserts); longer ones are
/// shared.
#[derive(Clone)]
pub enum MapKey {
    /// `len` bytes at the start of `bytes`.
    Inline {
        len: u8,
        bytes: [u8; KEY_INLINE_BYTES],
    },
    /// A key longer than [`KEY_INLINE_BYTES`].
    Shared(Bytes),
}

impl MapKey {
    /// The key's bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            MapKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            MapKey::Shared(b) => b,
        }
    }
}

impl From<&[u8]> for MapKey {
    fn from(key: &[u8]) -> Self {
        match u8::try_from(key.len()) {
            Ok(len) if key.len() <= KEY_INLINE_BYTES => {
                let mut bytes = [0u8; KEY_INLINE_BYTES];
                bytes[..key.len()].copy_from_slice(key);
                MapKey::Inline { len, bytes }
            }
            _ => MapKey::Shared(key.into()),
        }
    }
}

impl From<Vec<u8>> for MapKey {
    fn from(key: Vec<u8>) -> Self {
        MapKey::from(key.as_slice())
    }
}

impl From<Box<[u8]>> for MapKey {
    fn from(key: Box<[u8]>) -> Self {
        MapKey::from(&key[..])
    }
}

impl std::borrow::Borrow<[u8]> for MapKey {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl std::ops::Deref for MapKey {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for MapKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for MapKey {}

impl PartialOrd for MapKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for MapKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

impl std::fmt::Debug for MapKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_slice().fmt(f)
    }
}

/// One group's records in memory. Apply is the only writer (and snapshot
/// installs, which replace everything); openraft runs them one at a time.
pub struct MemState {
    inner: Mutex<Inner>,
}

struct Inner {
    records: Records,
    /// Decodings of large records apply reads on every request (an event's
    /// inventory); each equals the decoding of the current record at its key.
    decoded: DecodedCache,
}

impl MemState {
    /// A state holding `records`.
    pub fn new(records: Records) -> Self {
        MemState {
            inner: Mutex::new(Inner {
                records,
                decoded: DecodedCache::default(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while the lock is held ends the process (`abort_on_panic`);
        // in tests the state left behind is still a map.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The records as last applied: a version that later applies do not change.
    pub fn records(&self) -> Records {
        self.lock().records.clone()
    }

    /// A read-only version of the records as last applied, kept as long as the
    /// view lives.
    pub fn view(&self) -> MemView {
        MemView {
            records: self.records(),
        }
    }

    /// Runs `f` over the records as last applied, under the lock (so keep it
    /// short: apply waits), without keeping a version.
    pub fn peek<R>(&self, f: impl FnOnce(&Records) -> R) -> R {
        f(&self.lock().records)
    }

    /// Runs `f` over the records, writing them in place, under the lock:
    /// readers see all of `f`'s writes at once, or none.
    pub fn apply<R>(&self, f: impl FnOnce(&mut MemTx<'_>) -> R) -> R {
        let mut inner = self.lock();
        let Inner { records, decoded } = &mut *inner;
        let mut tx = MemTx {
            records,
            decoded: RefCell::new(decoded),
        };
        f(&mut tx)
    }

    /// Replaces every record (a snapshot install).
    pub fn replace(&self, records: Records) {
        let mut inner = self.lock();
        inner.decoded.clear();
        inner.records = records;
    }
}

/// Visits `records` in `[start, end)` until `visit` returns false.
fn scan(records: &Records, start: &[u8], end: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) {
    if start >= end {
        return;
    }
    for (k, v) in records.range::<_, [u8]>((Bound::Included(start), Bound::Excluded(end))) {
        if !visit(k, v) {
            return;
        }
    }
}

/// A consistent read-only version of one group's records.
pub struct MemView {
    records: Records,
}

impl KvRead for MemView {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.records.get(key).map(|v| v.to_vec())
    }
    fn scan_range(&self, start: &[u8], end: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) {
        scan(&self.records, start, end, visit)
    }
}

/// Reads of the records a [`MemState::peek`] lends.
pub struct MemRef<'a>(pub &'a Records);

impl KvRead for MemRef<'_> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.get(key).map(|v| v.to_vec())
    }
    fn scan_range(&self, start: &[u8], end: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) {
        scan(self.0, start, end, visit)
    }
}

/// Apply's writable version of the records: reads see its own writes.
pub struct MemTx<'a> {
    records: &'a mut Records,
    decoded: RefCell<&'a mut DecodedCache>,
}

impl KvRead for MemTx<'_> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.records.get(key).map(|v| v.to_vec())
    }
    fn get_decoded(
        &self,
        key: &[u8],
        decode: &dyn Fn(&[u8]) -> crate::kv::Decoded,
    ) -> Option<crate::kv::Decoded> {
        if let Some(d) = self.decoded.borrow().get(key) {
            return Some(d);
        }
        let d = decode(self.records.get(key)?);
        self.decoded.borrow_mut().insert(key.to_vec(), d.clone());
        Some(d)
    }
    fn scan_range(&self, start: &[u8], end: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) {
        scan(self.records, start, end, visit)
    }
}

impl Kv for MemTx<'_> {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        // The cache holds decodings of the current records: a decoding of the
        // old value must go now.
        self.decoded.get_mut().remove(&key);
        self.records.insert(key.into(), value.into());
    }
    fn delete(&mut self, key: Vec<u8>) {
        self.decoded.get_mut().remove(&key);
        self.records.remove(key.as_slice());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::MemKv;
    use proptest::prelude::*;

    fn collect(kv: &dyn KvRead, start: &[u8], end: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        kv.scan_range(start, end, &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            true
        });
        out
    }

    proptest! {
        /// Whatever apply writes, a view taken before it still shows the old
        /// version, one taken after shows exactly what a plain map would, and
        /// the two agree with the model on every point read and range scan.
        #[test]
        fn versions_agree_with_a_plain_map(
            first in proptest::collection::vec((0u8..6, 0u8..6, proptest::option::of(0u8..9)), 0..40),
            second in proptest::collection::vec((0u8..6, 0u8..6, proptest::option::of(0u8..9)), 0..40),
            (a, b) in (0u8..7, 0u8..7),
        ) {
            let state = MemState::new(Records::new());
            let mut model = MemKv::default();
            let write = |kv: &mut dyn Kv, ops: &[(u8, u8, Option<u8>)]| {
                for &(k1, k2, v) in ops {
                    match v {
                        Some(v) => kv.put(vec![k1, k2], vec![v]),
                        None => kv.delete(vec![k1, k2]),
                    }
                }
            };
            state.apply(|tx| write(tx, &first));
            write(&mut model, &first);
            let before = state.view();
            let model_before = model.clone();
            state.apply(|tx| {
                write(tx, &second);
                // Apply reads its own writes.
                for &(k1, k2, _) in &second {
                    assert_eq!(tx.get(&[k1, k2]), {
                        let mut m = model.clone();
                        write(&mut m, &second);
                        m.get(&[k1, k2])
                    });
                }
            });
            write(&mut model, &second);
            let after = state.view();
            let (lo, hi) = ([a], [b]);
            prop_assert_eq!(collect(&before, &lo, &hi), collect(&model_before, &lo, &hi));
            prop_assert_eq!(collect(&after, &lo, &hi), collect(&model, &lo, &hi));
            // A peek reads the current records without keeping a version.
            let peeked = state.peek(|r| collect(&MemRef(r), &lo, &hi));
            prop_assert_eq!(peeked, collect(&model, &lo, &hi));
            for k1 in 0..6u8 {
                for k2 in 0..6u8 {
                    prop_assert_eq!(before.get(&[k1, k2]), model_before.get(&[k1, k2]));
                    prop_assert_eq!(after.get(&[k1, k2]), model.get(&[k1, k2]));
                }
            }
        }
    }

    proptest! {
        /// Keys order as their bytes, inline or not (both sides of
        /// `KEY_INLINE_BYTES`), and are found by their bytes.
        #[test]
        fn keys_order_as_their_bytes(
            keys in proptest::collection::vec(
                proptest::collection::vec(0u8..4, 0..(KEY_INLINE_BYTES + 6)), 1..30),
        ) {
            let mut sorted = keys.clone();
            sorted.sort();
            sorted.dedup();
            let mut map = Records::new();
            for k in &keys {
                map.insert(MapKey::from(k.clone()), Arc::from(&k[..]));
            }
            let in_map: Vec<Vec<u8>> = map.keys().map(|k| k.to_vec()).collect();
            prop_assert_eq!(&in_map, &sorted);
            for k in &keys {
                prop_assert_eq!(map.get(k.as_slice()).map(|v| v.to_vec()), Some(k.clone()));
                prop_assert_eq!(
                    MapKey::from(k.clone()).cmp(&MapKey::from(sorted[0].clone())),
                    k.cmp(&sorted[0])
                );
            }
        }
    }

    #[test]
    fn decodings_follow_writes() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let state = MemState::new(Records::new());
        let decodes = AtomicUsize::new(0);
        let decode = |b: &[u8]| -> crate::kv::Decoded {
            decodes.fetch_add(1, Ordering::Relaxed);
            Arc::new(b[0])
        };
        let read = |tx: &MemTx<'_>| {
            tx.get_decoded(&[1], &decode)
                .map(|d| *d.downcast_ref::<u8>().expect("a u8"))
        };
        state.apply(|tx| {
            assert_eq!(read(tx), None);
            tx.put(vec![1], vec![7]);
            assert_eq!(read(tx), Some(7));
        });
        // Kept across applies.
        state.apply(|tx| assert_eq!(read(tx), Some(7)));
        assert_eq!(decodes.load(Ordering::Relaxed), 1);
        // A write drops it; a delete too.
        state.apply(|tx| {
            tx.put(vec![1], vec![8]);
            assert_eq!(read(tx), Some(8));
            tx.delete(vec![1]);
            assert_eq!(read(tx), None);
        });
        // A replacement empties it.
        let mut records = Records::new();
        records.insert(MapKey::from(&[1u8][..]), Arc::from(&[9u8][..]));
        state.apply(|tx| tx.put(vec![1], vec![3]));
        state.apply(|tx| assert_eq!(read(tx), Some(3)));
        state.replace(records);
        state.apply(|tx| assert_eq!(read(tx), Some(9)));
    }
}
