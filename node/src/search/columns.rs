//! The fast-field columns a search reads, opened once per segment.
//!
//! Opening a column parses its header and, for the block-wise codecs Tantivy
//! picks for start times and coordinates, every block's parameters: at a
//! million events that was a fifth of a suggestion's CPU when done per query
//! and per segment. A segment never changes once written (deletes live
//! apart, in its alive bitset), so its columns are opened the first time a
//! query reads it and kept until a reload shows it merged away.
//!
//! With them, built once per segment as well, two composite indexes: the
//! segment's documents ordered by (category, start time) and by (venue,
//! start time). A page of events by date, in a category or not, or around a
//! place, from a date or between two (a ticket site's browse pages), is then
//! a binary search per category or per venue in reach and a walk of the
//! documents in the range, not a pass over every event of the category or
//! of the map cells reading each one's start.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};

use tantivy::columnar::{Column, ColumnIndex, StrColumn};
use tantivy::index::SegmentId;
use tantivy::{DocId, Searcher, SegmentReader};

/// One segment's columns (each clone shares the segment's data).
pub struct SegmentColumns {
    pub event_id: Column<u64>,
    pub starts_at: Column<i64>,
    pub available: Column<u64>,
    pub venue_id: Column<u64>,
    pub lat: Column<f64>,
    pub lon: Column<f64>,
    pub category: StrColumn,
    pub city: StrColumn,
    /// Built once, by the first query that needs them or after a reload
    /// (see [`DateOrder`]).
    by_category: OnceLock<Option<DateOrder>>,
    by_venue: OnceLock<Option<DateOrder>>,
}

/// One group of a [`DateOrder`]: the documents with one key.
pub struct Group {
    /// The category column's ordinal, or the venue id.
    pub key: u64,
    /// Where the group's documents lie in the order.
    range: Range<usize>,
    /// Where its first document is (a venue's events are where it is).
    pub lat: f64,
    pub lon: f64,
}

/// A segment's documents ordered by (key, start time, document), the key
/// being the category or the venue: see the module documentation. About
/// 12 bytes per document, plus a few per group.
pub struct DateOrder {
    /// By key.
    pub groups: Vec<Group>,
    starts: Vec<i64>,
    docs: Vec<DocId>,
}

impl DateOrder {
    /// Orders the segment's documents by `keys`; `None` when a document
    /// lacks a key, a start or a place (every event has them; a segment
    /// written otherwise is searched the general way).
    fn build(keys: &Column<u64>, columns: &SegmentColumns) -> Option<DateOrder> {
        let full = |index: &ColumnIndex| matches!(index, ColumnIndex::Full);
        if !(full(&keys.index)
            && full(&columns.starts_at.index)
            && full(&columns.lat.index)
            && full(&columns.lon.index))
        {
            return None;
        }
        let n = columns.starts_at.values.num_vals();
        let all: Vec<DocId> = (0..n).collect();
        let mut starts = vec![0i64; all.len()];
        columns.starts_at.values.get_vals(&all, &mut starts);
        let mut key_of = vec![0u64; all.len()];
        keys.values.get_vals(&all, &mut key_of);
        let mut keyed: Vec<(u64, i64, DocId)> = all
            .iter()
            .map(|&d| (key_of[d as usize], starts[d as usize], d))
            .collect();
        keyed.sort_unstable();
        let mut groups = Vec::new();
        let mut at = 0;
        while at < keyed.len() {
            let key = keyed[at].0;
            let end = at + keyed[at..].partition_point(|k| k.0 == key);
            let first = keyed[at].2;
            groups.push(Group {
                key,
                range: at..end,
                lat: columns.lat.values.get_val(first),
                lon: columns.lon.values.get_val(first),
            });
            at = end;
        }
        Some(DateOrder {
            groups,
            starts: keyed.iter().map(|k| k.1).collect(),
            docs: keyed.iter().map(|k| k.2).collect(),
        })
    }

    /// The group of `key`, if the segment has one.
    pub fn group(&self, key: u64) -> Option<&Group> {
        self.groups
            .binary_search_by_key(&key, |g| g.key)
            .ok()
            .map(|i| &self.groups[i])
    }

    /// The documents of `group` whose start lies within `from..=to`, in
    /// start order: their starts, and the documents.
    pub fn between(&self, group: &Group, from: Option<i64>, to: Option<i64>) -> (&[i64], &[DocId]) {
        let starts = &self.starts[group.range.clone()];
        let lo = from.map_or(0, |f| starts.partition_point(|&s| s < f));
        let hi = to
            .map_or(starts.len(), |t| starts.partition_point(|&s| s <= t))
            .max(lo);
        let docs = &self.docs[group.range.start + lo..group.range.start + hi];
        (&starts[lo..hi], docs)
    }
}

fn str_column(segment: &SegmentReader, name: &str) -> tantivy::Result<StrColumn> {
    segment.fast_fields().str(name)?.ok_or_else(|| {
        tantivy::TantivyError::SchemaError(format!("{name} is not a fast text field"))
    })
}

impl SegmentColumns {
    fn open(segment: &SegmentReader) -> tantivy::Result<SegmentColumns> {
        let ff = segment.fast_fields();
        Ok(SegmentColumns {
            event_id: ff.u64("event_id")?,
            starts_at: ff.i64("starts_at_ms")?,
            available: ff.u64("available")?,
            venue_id: ff.u64("venue_id")?,
            lat: ff.f64("lat")?,
            lon: ff.f64("lon")?,
            category: str_column(segment, "category")?,
            city: str_column(segment, "city")?,
            by_category: OnceLock::new(),
            by_venue: OnceLock::new(),
        })
    }

    /// The (category, start) order of the segment's documents.
    pub fn by_category(&self) -> Option<&DateOrder> {
        self.by_category
            .get_or_init(|| DateOrder::build(self.category.ords(), self))
            .as_ref()
    }

    /// The (venue, start) order of the segment's documents.
    pub fn by_venue(&self) -> Option<&DateOrder> {
        self.by_venue
            .get_or_init(|| DateOrder::build(&self.venue_id, self))
            .as_ref()
    }
}

/// Columns by segment (see the module documentation).
#[derive(Default)]
pub struct ColumnCache {
    by_segment: Mutex<HashMap<SegmentId, Arc<SegmentColumns>>>,
}

impl ColumnCache {
    /// The columns of `segment`, opened now if no query read it before.
    pub fn of(&self, segment: &SegmentReader) -> tantivy::Result<Arc<SegmentColumns>> {
        let id = segment.segment_id();
        if let Some(c) = self.lock().get(&id) {
            return Ok(c.clone());
        }
        // Opened outside the lock; two queries meeting a new segment at once
        // both open it, and one copy is kept.
        let opened = Arc::new(SegmentColumns::open(segment)?);
        Ok(self.lock().entry(id).or_insert(opened).clone())
    }

    /// Forgets the segments `searcher` no longer has (merged away).
    pub fn retain(&self, searcher: &Searcher) {
        let live: std::collections::HashSet<SegmentId> = searcher
            .segment_readers()
            .iter()
            .map(|s| s.segment_id())
            .collect();
        self.lock().retain(|id, _| live.contains(id));
    }

    /// [`Self::retain`], then opens the columns and builds the date order of
    /// the segments no query has read yet, so that the first query after a
    /// merge does not pay for them (called by the indexer after a reload).
    pub fn prepare(&self, searcher: &Searcher) -> tantivy::Result<()> {
        self.retain(searcher);
        for segment in searcher.segment_readers() {
            let columns = self.of(segment)?;
            columns.by_category();
            columns.by_venue();
        }
        Ok(())
    }

    /// How many segments' columns are held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SegmentId, Arc<SegmentColumns>>> {
        // The map is only ever inserted into or pruned whole: a panic while
        // it is held cannot leave it half-updated.
        self.by_segment.lock().unwrap_or_else(|e| e.into_inner())
    }
}
