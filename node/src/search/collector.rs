//! One pass over a query's matching documents: the filters that fast fields
//! answer (start time, availability, exact distance), the total, the facet
//! counts and the top of the page, together.
//!
//! Filters run here rather than as range queries: a range query on a fast
//! field scans the whole column of every segment (a million values for a date
//! range), while checking the documents the selective clauses let through
//! reads a few values each. It also replaces a second pass for the total and
//! the fixed-size candidate list geo search used to post-filter.

use std::collections::{BTreeMap, BinaryHeap, HashMap};

use std::sync::Arc;
use tantivy::collector::{Collector, SegmentCollector};

use tantivy::columnar::{Column, ColumnIndex, ColumnValues, StrColumn};
use tantivy::query::Weight;
use tantivy::{
    DocAddress, DocId, DocSet, Score, Searcher, SegmentOrdinal, SegmentReader, TERMINATED,
};

use super::columns::{ColumnCache, Group};
use super::haversine_km;

/// Conditions every counted document meets.
#[derive(Clone, Copy, Debug, Default)]
pub struct Filters {
    /// Start time lower bound (ms, inclusive).
    pub from_ms: Option<i64>,
    /// Start time upper bound (ms, inclusive).
    pub to_ms: Option<i64>,
    /// Only events with tickets available.
    pub available_only: bool,
    /// A point, and the radius (km) around it to keep (distances are
    /// computed whenever a point is given).
    pub near: Option<(f64, f64, Option<f64>)>,
}

/// What ranks a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rank {
    /// Highest score first.
    Score,
    /// Earliest start first.
    Date,
    /// Nearest first.
    Distance,
}

/// One document of the page. Ties rank by event id, so every node, whatever
/// its segments look like, orders a query's results alike (and a page token
/// from one node works on another).
#[derive(Clone, Copy, Debug)]
pub struct Candidate {
    /// Smaller ranks first (minus the score, the start time or the distance).
    key: f64,
    /// Event id (tie-break).
    pub event_id: u64,
    /// Where the document is.
    pub addr: DocAddress,
    /// Its relevance score.
    pub score: f32,
    /// Its distance from the query's point.
    pub distance_km: Option<f64>,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    /// Worse is greater: a max-heap of the kept candidates has the first one
    /// to drop on top.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key
            .total_cmp(&other.key)
            .then(self.event_id.cmp(&other.event_id))
    }
}

/// Facet counts of the documents counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FacetCounts {
    /// By category (as indexed: lower case).
    pub category: HashMap<String, u64>,
    /// By city (as indexed: lower case).
    pub city: HashMap<String, u64>,
    /// By month of the start, as months since year 0 (`year * 12 + month - 1`).
    pub month: BTreeMap<i64, u64>,
}

/// What a query's pass yields.
#[derive(Debug, Default)]
pub struct Collected {
    /// Documents that passed the filters.
    pub total: usize,
    /// The best `keep` of them, best first.
    pub top: Vec<Candidate>,
    /// Facet counts, when asked for.
    pub facets: Option<FacetCounts>,
}

/// See the module documentation.
pub struct PageCollector {
    /// Conditions on fast fields.
    pub filters: Filters,
    /// Page order.
    pub rank: Rank,
    /// How many of the best to keep (offset plus page size).
    pub keep: usize,
    /// Whether to count facets.
    pub facets: bool,
    /// Only the top is wanted, not the total: ranked by score, documents
    /// that cannot enter it are skipped (block-max WAND when the query is a
    /// union of terms), and `total` counts only the documents looked at.
    pub top_only: bool,
    /// Each segment's columns, opened once.
    pub columns: Arc<ColumnCache>,
}

/// Months since year 0 of a time in ms since the Unix epoch (UTC; the civil
/// calendar arithmetic of H. Hinnant's `civil_from_days`).
pub fn month_of(ms: i64) -> i64 {
    let z = ms.div_euclid(86_400_000) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    year * 12 + month - 1
}

/// When a [`month_of`] value begins (ms since the Unix epoch, UTC; H.
/// Hinnant's `days_from_civil`).
pub fn month_start_ms(month: i64) -> i64 {
    let (year, m) = (month.div_euclid(12), month.rem_euclid(12) + 1);
    let y = if m <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 719_468) * 86_400_000
}

/// `YYYY-MM` of a [`month_of`] value.
pub fn month_label(month: i64) -> String {
    format!(
        "{:04}-{:02}",
        month.div_euclid(12),
        month.rem_euclid(12) + 1
    )
}

/// A fast field's values by document: every document of our schema has one
/// value of each, so this reads it directly, without the column's index.
enum Values<T: 'static> {
    Full(Arc<dyn ColumnValues<T>>),
    Sparse(Column<T>),
}

impl<T: PartialOrd + Copy + std::fmt::Debug + Send + Sync + 'static> Values<T> {
    fn of(column: Column<T>) -> Values<T> {
        match column.index {
            ColumnIndex::Full => Values::Full(column.values),
            _ => Values::Sparse(column),
        }
    }

    #[inline]
    fn get(&self, doc: DocId, default: T) -> T {
        match self {
            Values::Full(v) => v.get_val(doc),
            Values::Sparse(c) => c.first(doc).unwrap_or(default),
        }
    }

    /// The values of `docs` (ascending) into `out`: one call into the
    /// column per block, not one per document.
    fn get_block(&self, docs: &[DocId], out: &mut Vec<T>, default: T) {
        out.clear();
        out.resize(docs.len(), default);
        match self {
            Values::Full(v) => v.get_vals(docs, out),
            Values::Sparse(c) => {
                for (o, &doc) in out.iter_mut().zip(docs) {
                    *o = c.first(doc).unwrap_or(default);
                }
            }
        }
    }
}

pub struct PageSegment {
    segment: SegmentOrdinal,
    filters: Filters,
    rank: Rank,
    keep: usize,
    event_id: Values<u64>,
    /// Read only when a filter, the rank or a facet needs it.
    starts_at: Option<Values<i64>>,
    available: Option<Values<u64>>,
    lat_lon: Option<(Values<f64>, Values<f64>)>,
    /// Distances from the query's point by venue: an event is where its
    /// venue is, and venues never move, so the (cache-missing) coordinate
    /// reads and the trigonometry happen once per venue, not per event.
    venue: Option<Values<u64>>,
    venue_km: rustc_hash::FxHashMap<u64, f64>,
    total: usize,
    heap: BinaryHeap<Candidate>,
    facets: Option<SegmentFacets>,
}

struct SegmentFacets {
    category: StrColumn,
    city: StrColumn,
    category_ords: Values<u64>,
    city_ords: Values<u64>,
    category_counts: Vec<u64>,
    city_counts: Vec<u64>,
    /// Counts by month, from the segment's earliest start's month.
    first_month: i64,
    month_counts: Vec<u64>,
    /// Where each month after the first begins (ms), the one after the last
    /// slot included: a start's slot is a binary search here, not the
    /// calendar arithmetic per document.
    month_starts: Vec<i64>,
}

/// Most months a segment's starts may span for its month counts to be kept
/// in an array (beyond, months past the last slot are not counted).
const SEGMENT_MONTHS_MAX: i64 = 12 * 200;

/// What one segment yields.
pub struct SegmentFruit {
    total: usize,
    top: Vec<Candidate>,
    facets: Option<FacetCounts>,
}

/// Names and counts of the ords counted in a segment's string column (the
/// dictionary read once, in order, not looked up per ord).
fn named_counts(column: &StrColumn, counts: &[u64]) -> tantivy::Result<HashMap<String, u64>> {
    let counted: Vec<(u64, u64)> = counts
        .iter()
        .enumerate()
        .filter(|(_, &n)| n > 0)
        .map(|(ord, &n)| (ord as u64, n))
        .collect();
    let mut out = HashMap::with_capacity(counted.len());
    let mut next = counted.iter();
    column
        .dictionary()
        .sorted_ords_to_term_cb(counted.iter().map(|(ord, _)| *ord), |name| {
            if let Some((_, n)) = next.next() {
                *out.entry(String::from_utf8_lossy(name).into_owned())
                    .or_default() += n;
            }
            Ok(())
        })?;
    Ok(out)
}

impl Collector for PageCollector {
    type Fruit = Collected;
    type Child = PageSegment;

    fn for_segment(
        &self,
        segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<PageSegment> {
        let columns = self.columns.of(reader)?;
        // A bound every document of the segment meets (the columns' bounds
        // cover deleted documents too, so they only widen) is not checked
        // per document: a suggestion's "from now" over a segment of future
        // events reads no start at all.
        let mut filters = self.filters;
        if matches!(columns.starts_at.index, ColumnIndex::Full) {
            if filters
                .from_ms
                .is_some_and(|t| columns.starts_at.min_value() >= t)
            {
                filters.from_ms = None;
            }
            if filters
                .to_ms
                .is_some_and(|t| columns.starts_at.max_value() <= t)
            {
                filters.to_ms = None;
            }
        }
        if filters.available_only
            && matches!(columns.available.index, ColumnIndex::Full)
            && columns.available.min_value() > 0
        {
            filters.available_only = false;
        }
        let facets = if self.facets {
            let category = columns.category.clone();
            let city = columns.city.clone();
            let starts = &columns.starts_at;
            let first_month = month_of(starts.min_value());
            let months =
                (month_of(starts.max_value()) - first_month + 1).clamp(1, SEGMENT_MONTHS_MAX);
            Some(SegmentFacets {
                category_counts: vec![0; category.num_terms()],
                city_counts: vec![0; city.num_terms()],
                category_ords: Values::of(category.ords().clone()),
                city_ords: Values::of(city.ords().clone()),
                category,
                city,
                first_month,
                month_counts: vec![0; months as usize],
                month_starts: (1..=months)
                    .map(|i| month_start_ms(first_month + i))
                    .collect(),
            })
        } else {
            None
        };
        Ok(PageSegment {
            segment,
            filters,
            rank: self.rank,
            keep: self.keep,
            event_id: Values::of(columns.event_id.clone()),
            starts_at: (filters.from_ms.is_some()
                || filters.to_ms.is_some()
                || self.rank == Rank::Date
                || self.facets)
                .then(|| Values::of(columns.starts_at.clone())),
            available: filters
                .available_only
                .then(|| Values::of(columns.available.clone())),
            lat_lon: self.filters.near.map(|_| {
                (
                    Values::of(columns.lat.clone()),
                    Values::of(columns.lon.clone()),
                )
            }),
            venue: self
                .filters
                .near
                .map(|_| Values::of(columns.venue_id.clone())),
            venue_km: Default::default(),
            total: 0,
            heap: BinaryHeap::with_capacity(self.keep.min(1024) + 1),
            facets,
        })
    }

    fn requires_scoring(&self) -> bool {
        self.rank == Rank::Score
    }

    /// Tantivy's default, except that ranked by score a document is scored
    /// only once the filters admit it, and that when only the top is wanted
    /// what cannot enter it is skipped.
    fn collect_segment(
        &self,
        weight: &dyn Weight,
        segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<SegmentFruit> {
        let mut seg = self.for_segment(segment, reader)?;
        let alive = reader.alive_bitset();
        let is_alive = |doc| alive.is_none_or(|a| a.is_alive(doc));
        if self.top_only && self.rank == Rank::Score && !self.facets {
            weight.for_each_pruning(Score::MIN, reader, &mut |doc, score| {
                if is_alive(doc) {
                    seg.collect(doc, score);
                }
                seg.score_threshold()
            })?;
        } else if self.requires_scoring() {
            // The filters first: a document they reject is never scored
            // (a date range lets a few percent of a word's events through).
            let mut scorer = weight.scorer(reader, 1.0)?;
            let mut doc = scorer.doc();
            while doc != TERMINATED {
                if is_alive(doc) {
                    if let Some(admitted) = seg.admit(doc) {
                        let score = scorer.score();
                        seg.count_and_rank(doc, score, admitted);
                    }
                }
                doc = scorer.advance();
            }
        } else {
            // Unscored documents come in blocks: their starts are read a
            // block at a time.
            let mut starts = Vec::new();
            weight.for_each_no_score(reader, &mut |docs| {
                match &seg.starts_at {
                    Some(c) => c.get_block(docs, &mut starts, 0),
                    None => {
                        starts.clear();
                        starts.resize(docs.len(), 0);
                    }
                }
                for (&doc, &starts_at) in docs.iter().zip(&starts) {
                    if is_alive(doc) {
                        if let Some(admitted) = seg.admit_starting(doc, starts_at) {
                            seg.count_and_rank(doc, 0.0, admitted);
                        }
                    }
                }
            })?;
        }
        Ok(seg.harvest())
    }

    fn merge_fruits(&self, fruits: Vec<SegmentFruit>) -> tantivy::Result<Collected> {
        let mut out = Collected {
            facets: self.facets.then(FacetCounts::default),
            ..Default::default()
        };
        for f in fruits {
            out.total += f.total;
            out.top.extend(f.top);
            if let (Some(all), Some(seg)) = (&mut out.facets, f.facets) {
                for (k, n) in seg.category {
                    *all.category.entry(k).or_default() += n;
                }
                for (k, n) in seg.city {
                    *all.city.entry(k).or_default() += n;
                }
                for (k, n) in seg.month {
                    *all.month.entry(k).or_default() += n;
                }
            }
        }
        out.top.sort_unstable();
        out.top.truncate(self.keep);
        Ok(out)
    }
}

/// What a page by date selects besides start times (see
/// [`PageCollector::collect_by_date`]).
#[derive(Clone, Copy, Debug)]
pub enum Within<'a> {
    /// Every event.
    Everything,
    /// The events of a category (as indexed: lower case).
    Category(&'a str),
    /// The events within the filters' radius of their point.
    Radius,
}

impl PageCollector {
    /// The page, total and facets of a query that selects by category, by
    /// radius or not at all, and by start time, from each segment's
    /// [`DateOrder`](super::columns::DateOrder)s: the documents between the
    /// dates are found by binary search per category or per venue in reach,
    /// and only they are looked at (only the first `keep` of each group's,
    /// ranked by date with nothing else to check or count). `None` when a
    /// segment has no such order (the caller searches the general way).
    pub fn collect_by_date(
        &self,
        searcher: &Searcher,
        within: Within<'_>,
    ) -> tantivy::Result<Option<Collected>> {
        let radius = match (within, self.filters.near) {
            (Within::Radius, Some((lat, lon, Some(r)))) => Some((lat, lon, r)),
            (Within::Radius, _) => return Ok(None),
            _ => None,
        };
        let mut fruits = Vec::with_capacity(searcher.segment_readers().len());
        for (ordinal, reader) in searcher.segment_readers().iter().enumerate() {
            let columns = self.columns.of(reader)?;
            let order = match within {
                Within::Radius => columns.by_venue(),
                _ => columns.by_category(),
            };
            let Some(order) = order else {
                return Ok(None);
            };
            let mut seg = self.for_segment(ordinal as SegmentOrdinal, reader)?;
            let groups: Vec<&Group> = match (within, radius) {
                (Within::Category(c), _) => {
                    match columns.category.dictionary().term_ord(c.as_bytes())? {
                        Some(ord) => order.group(ord).into_iter().collect(),
                        None => Vec::new(),
                    }
                }
                (Within::Radius, Some((lat, lon, r))) => order
                    .groups
                    .iter()
                    // A degree of latitude is at least 111 km apart.
                    .filter(|g| (g.lat - lat).abs() * 111.0 <= r)
                    .filter(|g| {
                        let d = haversine_km(lat, lon, g.lat, g.lon);
                        // The venue's events are checked with this distance.
                        seg.venue_km.insert(g.key, d);
                        d <= r
                    })
                    .collect(),
                _ => order.groups.iter().collect(),
            };
            // Each document checked and counted, or (ranked by date with
            // nothing else to check or count) in start order, where past
            // the first `keep` none would enter the top: only counted.
            let check_each =
                seg.available.is_some() || seg.facets.is_some() || self.rank != Rank::Date;
            let alive = reader.alive_bitset();
            for g in groups {
                let (starts, docs) = order.between(g, self.filters.from_ms, self.filters.to_ms);
                let distance_km = radius.and_then(|_| seg.venue_km.get(&g.key).copied());
                match alive {
                    None if !check_each => {
                        let ranked = starts.len().min(self.keep);
                        for (&starts_at, &doc) in starts[..ranked].iter().zip(docs) {
                            seg.count_and_rank_in_range(doc, starts_at, distance_km);
                        }
                        seg.total += starts.len() - ranked;
                    }
                    _ => {
                        let mut ranked = 0;
                        for (&starts_at, &doc) in starts.iter().zip(docs) {
                            if alive.is_some_and(|a| a.is_deleted(doc)) {
                                continue;
                            }
                            if check_each {
                                if let Some(admitted) = seg.admit_starting(doc, starts_at) {
                                    seg.count_and_rank(doc, 0.0, admitted);
                                }
                            } else if ranked < self.keep {
                                ranked += 1;
                                seg.count_and_rank_in_range(doc, starts_at, distance_km);
                            } else {
                                seg.total += 1;
                            }
                        }
                    }
                }
            }
            fruits.push(seg.harvest());
        }
        self.merge_fruits(fruits).map(Some)
    }
}

impl PageSegment {
    /// Scores a document must exceed to be worth looking at, ranking by
    /// score: just below the worst kept once the top is full (an equal
    /// score may still win on the event id).
    fn score_threshold(&self) -> Score {
        match self.heap.peek() {
            Some(worst) if self.heap.len() >= self.keep && worst.score > 0.0 => {
                f32::from_bits(worst.score.to_bits() - 1)
            }
            _ => Score::MIN,
        }
    }

    /// Whether `doc` passes the filters; its start time (when read) and
    /// distance (when a point is given).
    fn admit(&mut self, doc: DocId) -> Option<Admitted> {
        let starts_at = self.starts_at.as_ref().map_or(0, |c| c.get(doc, 0));
        self.admit_starting(doc, starts_at)
    }

    /// [`Self::admit`] with the start already read (0 when not needed).
    fn admit_starting(&mut self, doc: DocId, starts_at: i64) -> Option<Admitted> {
        let f = &self.filters;
        if f.from_ms.is_some_and(|t| starts_at < t) || f.to_ms.is_some_and(|t| starts_at > t) {
            return None;
        }
        if self.available.as_ref().is_some_and(|c| c.get(doc, 0) == 0) {
            return None;
        }
        let distance_km = match (f.near, &self.lat_lon, &self.venue) {
            (Some((lat, lon, radius)), Some((lat_col, lon_col)), Some(venue)) => {
                let d = *self
                    .venue_km
                    .entry(venue.get(doc, u64::MAX))
                    .or_insert_with(|| {
                        haversine_km(lat, lon, lat_col.get(doc, 0.0), lon_col.get(doc, 0.0))
                    });
                if radius.is_some_and(|r| d > r) {
                    return None;
                }
                Some(d)
            }
            _ => None,
        };
        Some(Admitted {
            starts_at,
            distance_km,
        })
    }

    /// [`Self::count_and_rank`] for a document of a date order's range,
    /// which the range and its group admit already.
    fn count_and_rank_in_range(&mut self, doc: DocId, starts_at: i64, distance_km: Option<f64>) {
        let admitted = Admitted {
            starts_at,
            distance_km,
        };
        self.count_and_rank(doc, 0.0, admitted);
    }

    /// Counts an admitted document and keeps it if it ranks in the top.
    fn count_and_rank(&mut self, doc: DocId, score: Score, admitted: Admitted) {
        let Admitted {
            starts_at,
            distance_km,
        } = admitted;
        self.total += 1;
        if let Some(fc) = &mut self.facets {
            // Every event has one category and one city (an empty one
            // counts as the empty value).
            let ord = fc.category_ords.get(doc, u64::MAX);
            if let Some(n) = fc.category_counts.get_mut(ord as usize) {
                *n += 1;
            }
            let ord = fc.city_ords.get(doc, u64::MAX);
            if let Some(n) = fc.city_counts.get_mut(ord as usize) {
                *n += 1;
            }
            // Past the last slot (a segment spanning more months than
            // kept) is not counted.
            let slot = fc.month_starts.partition_point(|&m| m <= starts_at);
            if let Some(n) = fc.month_counts.get_mut(slot) {
                *n += 1;
            }
        }
        if self.keep == 0 {
            return;
        }
        let key = match self.rank {
            Rank::Score => -f64::from(score),
            Rank::Date => starts_at as f64,
            Rank::Distance => distance_km.unwrap_or(0.0),
        };
        // Cheap reject before reading the event id: strictly worse than the
        // worst kept (an equal key may still win on the id).
        if self.heap.len() >= self.keep && self.heap.peek().is_some_and(|w| key > w.key) {
            return;
        }
        let c = Candidate {
            key,
            event_id: self.event_id.get(doc, 0),
            addr: DocAddress::new(self.segment, doc),
            score,
            distance_km,
        };
        if self.heap.len() < self.keep {
            self.heap.push(c);
        } else if self.heap.peek().is_some_and(|w| c < *w) {
            self.heap.pop();
            self.heap.push(c);
        }
    }
}

/// What [`PageSegment::admit`] read of an admitted document.
struct Admitted {
    starts_at: i64,
    distance_km: Option<f64>,
}

impl SegmentCollector for PageSegment {
    type Fruit = SegmentFruit;

    fn collect(&mut self, doc: DocId, score: Score) {
        if let Some(admitted) = self.admit(doc) {
            self.count_and_rank(doc, score, admitted);
        }
    }

    fn harvest(self) -> SegmentFruit {
        let facets = self.facets.map(|fc| {
            // A column that cannot name an ord it handed out is a broken
            // segment; count nothing for it rather than fail the search.
            FacetCounts {
                category: named_counts(&fc.category, &fc.category_counts).unwrap_or_default(),
                city: named_counts(&fc.city, &fc.city_counts).unwrap_or_default(),
                month: fc
                    .month_counts
                    .iter()
                    .enumerate()
                    .filter(|(_, &n)| n > 0)
                    .map(|(i, &n)| (fc.first_month + i as i64, n))
                    .collect(),
            }
        });
        SegmentFruit {
            total: self.total,
            top: self.heap.into_vec(),
            facets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_civil_months() {
        // 2027-01-01T00:00:00Z and the last ms of 2026-12.
        assert_eq!(month_label(month_of(1_798_761_600_000)), "2027-01");
        assert_eq!(month_label(month_of(1_798_761_600_000 - 1)), "2026-12");
        // A leap day, and before the epoch.
        assert_eq!(month_label(month_of(951_782_400_000)), "2000-02"); // 2000-02-29
        assert_eq!(month_label(month_of(-1)), "1969-12");
        assert_eq!(month_label(month_of(0)), "1970-01");
        // Month starts invert month_of, across leap years and the epoch.
        for m in month_of(-400 * 86_400_000 * 365)..month_of(4_102_444_800_000) {
            let start = month_start_ms(m);
            assert_eq!(month_of(start), m, "{}", month_label(m));
            assert_eq!(month_of(start - 1), m - 1, "{}", month_label(m));
        }
        assert_eq!(month_start_ms(month_of(951_782_400_000)), 949_363_200_000); // 2000-02-01
    }

    /// Skipping what cannot enter the top (block-max WAND) finds the same top
    /// as visiting every match, ties by event id included.
    #[test]
    fn top_only_finds_the_same_top_as_a_full_pass() {
        use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
        use tantivy::schema::IndexRecordOption;
        use tantivy::{doc, Index, Term};
        let (schema, event_id, starts, text) = columns_schema();
        let index = Index::create_in_ram(schema);
        let mut w = index.writer(15_000_000).unwrap();
        let words = ["alpha", "beta", "gamma", "delta", "omega"];
        let mut x: u64 = 7;
        for id in 0..5_000u64 {
            // A fixed pseudo-random mix of words and lengths (many equal
            // scores; later documents have smaller ids, so ties must be
            // looked at to rank alike).
            let mut t = String::new();
            if id % 3 == 0 {
                t.push_str("zeta"); // identical documents: equal scores
            } else {
                for _ in 0..(1 + id % 7) {
                    x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    t.push_str(words[(x >> 33) as usize % words.len()]);
                    t.push(' ');
                }
            }
            w.add_document(doc!(event_id => 10_000 - id, starts => (id % 10) as i64, text => t))
                .unwrap();
            if id % 1_000 == 999 {
                w.commit().unwrap(); // several segments
            }
        }
        w.commit().unwrap();
        let searcher = index.reader().unwrap().searcher();
        let term = |w: &str| -> (Occur, Box<dyn Query>) {
            let t = Term::from_field_text(text, w);
            (
                Occur::Should,
                Box::new(TermQuery::new(t, IndexRecordOption::WithFreqs)),
            )
        };
        for (query, keep) in [
            (BooleanQuery::new(vec![term("alpha"), term("omega")]), 8),
            (BooleanQuery::new(vec![term("beta")]), 20),
            (
                BooleanQuery::new(vec![term("gamma"), term("delta"), term("beta")]),
                1,
            ),
            (BooleanQuery::new(vec![term("zeta")]), 3),
        ] {
            let run = |top_only| {
                let c = PageCollector {
                    filters: Filters {
                        from_ms: Some(3),
                        ..Default::default()
                    },
                    rank: Rank::Score,
                    keep,
                    facets: false,
                    top_only,
                    columns: Arc::default(),
                };
                let top = searcher.search(&query, &c).unwrap().top;
                top.iter()
                    .map(|c| (c.event_id, c.score))
                    .collect::<Vec<_>>()
            };
            let full = run(false);
            assert_eq!(full.len(), keep);
            assert_eq!(run(true), full);
        }
    }

    /// The columns a search reads, and a text field.
    fn columns_schema() -> (
        tantivy::schema::Schema,
        tantivy::schema::Field,
        tantivy::schema::Field,
        tantivy::schema::Field,
    ) {
        use tantivy::schema::{Schema, FAST, INDEXED, STRING, TEXT};
        let mut b = Schema::builder();
        let event_id = b.add_u64_field("event_id", INDEXED | FAST);
        let starts = b.add_i64_field("starts_at_ms", FAST);
        let text = b.add_text_field("t", TEXT);
        for name in ["available", "venue_id"] {
            b.add_u64_field(name, FAST);
        }
        for name in ["lat", "lon"] {
            b.add_f64_field(name, FAST);
        }
        for name in ["category", "city"] {
            b.add_text_field(name, STRING | FAST);
        }
        (b.build(), event_id, starts, text)
    }

    #[test]
    fn columns_are_opened_once_per_segment_and_forgotten_when_merged_away() {
        use tantivy::{doc, Index, IndexWriter};
        let (schema, event_id, starts, _) = columns_schema();
        let index = Index::create_in_ram(schema);
        let mut w: IndexWriter = index.writer(15_000_000).unwrap();
        for id in 0..3u64 {
            w.add_document(doc!(event_id => id, starts => id as i64 * 10))
                .unwrap();
            w.commit().unwrap();
        }
        let reader = index.reader().unwrap();
        let cache = ColumnCache::default();
        let searcher = reader.searcher();
        let segments = searcher.segment_readers();
        assert_eq!(segments.len(), 3);
        for s in segments {
            let a = cache.of(s).unwrap();
            let b = cache.of(s).unwrap();
            assert!(Arc::ptr_eq(&a, &b), "opened once");
            assert_eq!(
                a.starts_at.first(0),
                Some(a.event_id.first(0).unwrap() as i64 * 10)
            );
        }
        assert_eq!(cache.len(), 3);
        let ids = index.searchable_segment_ids().unwrap();
        w.merge(&ids).wait().unwrap();
        w.wait_merging_threads().unwrap();
        reader.reload().unwrap();
        cache.retain(&reader.searcher());
        assert_eq!(cache.len(), 0, "the merged segments are gone");
        let merged = reader.searcher();
        cache.of(&merged.segment_readers()[0]).unwrap();
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn bounds_a_whole_segment_meets_admit_what_checking_each_document_would() {
        use tantivy::query::AllQuery;
        use tantivy::{doc, Index, IndexWriter};
        let (schema, event_id, starts, _) = columns_schema();
        let available = schema.get_field("available").unwrap();
        let index = Index::create_in_ram(schema);
        let mut w: IndexWriter = index.writer(15_000_000).unwrap();
        // Segment one: starts 0..10, some sold out; segment two: starts
        // 10..20, all available.
        let mut want = 0;
        for id in 0..20u64 {
            let free = if id < 10 { id % 3 } else { 5 };
            w.add_document(doc!(event_id => id, starts => id as i64, available => free))
                .unwrap();
            if id == 9 {
                w.commit().unwrap();
            }
            if (5..=15).contains(&id) && free > 0 {
                want += 1;
            }
        }
        w.commit().unwrap();
        let searcher = index.reader().unwrap().searcher();
        assert_eq!(searcher.segment_readers().len(), 2);
        for (from, to, available_only, expect) in [
            (Some(5), Some(15), true, want),
            (Some(10), None, true, 10),
            (Some(0), Some(19), false, 20),
            (None, Some(9), true, 6),
        ] {
            let c = PageCollector {
                filters: Filters {
                    from_ms: from,
                    to_ms: to,
                    available_only,
                    near: None,
                },
                rank: Rank::Date,
                keep: 100,
                facets: false,
                top_only: false,
                columns: Arc::default(),
            };
            let got = searcher.search(&AllQuery, &c).unwrap();
            assert_eq!(got.total, expect, "{from:?}..{to:?} {available_only}");
            let mut ids: Vec<u64> = got.top.iter().map(|c| c.event_id).collect();
            ids.sort_unstable();
            assert!(
                ids.iter().all(|&i| from.is_none_or(|f| i as i64 >= f)
                    && to.is_none_or(|t| i as i64 <= t)
                    && (!available_only || i >= 10 || i % 3 > 0)),
                "{ids:?}"
            );
        }
    }

    #[test]
    fn the_date_orders_find_what_a_pass_over_every_document_finds() {
        use tantivy::query::{AllQuery, Query, TermQuery};
        use tantivy::schema::IndexRecordOption;
        use tantivy::{doc, Index, IndexWriter, Term};
        let (schema, event_id, starts, _) = columns_schema();
        let field = |name| schema.get_field(name).unwrap();
        let (available, category, city) = (field("available"), field("category"), field("city"));
        let (venue, lat, lon) = (field("venue_id"), field("lat"), field("lon"));
        let index = Index::create_in_ram(schema);
        let mut w: IndexWriter = index.writer(15_000_000).unwrap();
        // Three segments of pseudo-random events: starts with many ties,
        // some sold out, three categories, two cities, twelve venues 0.1° of
        // latitude (11 km) apart.
        let mut x: u64 = 7;
        for id in 0..600u64 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let v = (x >> 50) % 12;
            w.add_document(doc!(
                event_id => id,
                starts => ((x >> 33) % 100) as i64,
                available => (x >> 20) % 3,
                category => ["jazz", "rock", "opera"][((x >> 40) % 3) as usize],
                city => ["paris", "oslo"][((x >> 45) % 2) as usize],
                venue => v,
                lat => 50.0 + v as f64 * 0.1,
                lon => 2.0,
            ))
            .unwrap();
            if id % 200 == 199 {
                w.commit().unwrap();
            }
        }
        // Deletes in the first segment only: the others take the path that
        // looks at the first `keep` of a range alone.
        for id in (0..200).step_by(7) {
            w.delete_term(Term::from_field_u64(event_id, id));
        }
        w.commit().unwrap();
        let searcher = index.reader().unwrap().searcher();
        assert_eq!(searcher.segment_readers().len(), 3);
        let ids = |c: &Collected| c.top.iter().map(|c| c.event_id).collect::<Vec<_>>();
        let mut compared = 0;
        let selections = [
            Within::Everything,
            Within::Category("jazz"),
            Within::Category("blues"),
            Within::Radius,
        ];
        for within in selections {
            let query: Box<dyn Query> = match within {
                Within::Category(c) => Box::new(TermQuery::new(
                    Term::from_field_text(category, c),
                    IndexRecordOption::Basic,
                )),
                _ => Box::new(AllQuery),
            };
            // Venues 3 to 7 (50.3° to 50.7°) are within 25 km of 50.5°.
            let near = matches!(within, Within::Radius).then_some((50.5, 2.0, Some(25.0)));
            for (from_ms, to_ms) in [
                (None, None),
                (Some(10), Some(40)),
                (Some(50), None),
                (None, Some(0)),
                (Some(60), Some(50)),
            ] {
                for (rank, available_only, facets, keep) in [
                    (Rank::Date, false, false, 0),
                    (Rank::Date, false, false, 5),
                    (Rank::Date, false, false, 1000),
                    (Rank::Date, true, false, 5),
                    (Rank::Date, false, true, 5),
                    (Rank::Date, true, true, 20),
                    (Rank::Distance, false, false, 5),
                ] {
                    if rank == Rank::Distance && near.is_none() {
                        continue;
                    }
                    let c = PageCollector {
                        filters: Filters {
                            from_ms,
                            to_ms,
                            available_only,
                            near,
                        },
                        rank,
                        keep,
                        facets,
                        top_only: false,
                        columns: Arc::default(),
                    };
                    let ordered = c.collect_by_date(&searcher, within).unwrap().unwrap();
                    let each = searcher.search(&*query, &c).unwrap();
                    let case = format!(
                        "{within:?} {from_ms:?}..{to_ms:?} {rank:?} {available_only} {facets} {keep}"
                    );
                    assert_eq!(ordered.total, each.total, "{case}");
                    assert_eq!(ids(&ordered), ids(&each), "{case}");
                    assert_eq!(ordered.facets, each.facets, "{case}");
                    let distances =
                        |c: &Collected| c.top.iter().map(|c| c.distance_km).collect::<Vec<_>>();
                    assert_eq!(distances(&ordered), distances(&each), "{case}");
                    compared += usize::from(each.total > 0 && keep > 0);
                }
            }
        }
        // Most cases find something to compare.
        assert!(compared > 40, "{compared}");
    }

    #[test]
    fn candidates_rank_by_key_then_event_id() {
        let c = |key, event_id| Candidate {
            key,
            event_id,
            addr: DocAddress::new(0, 0),
            score: 0.0,
            distance_km: None,
        };
        let mut v = vec![c(2.0, 1), c(1.0, 9), c(1.0, 3), c(-0.5, 7)];
        v.sort_unstable();
        let ids: Vec<u64> = v.iter().map(|c| c.event_id).collect();
        assert_eq!(ids, vec![7, 3, 9, 1]);
    }
}
