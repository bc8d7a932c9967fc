//! The fast-field columns a search reads, opened once per segment.
//!
//! Opening a column parses its header and, for the block-wise codecs Tantivy
//! picks for start times and coordinates, every block's parameters: at a
//! million events that was a fifth of a suggestion's CPU when done per query
//! and per segment. A segment never changes once written (deletes live
//! apart, in its alive bitset), so its columns are opened the first time a
//! query reads it and kept until a reload shows it merged away.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tantivy::columnar::{Column, StrColumn};
use tantivy::index::SegmentId;
use tantivy::{Searcher, SegmentReader};

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
        })
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
