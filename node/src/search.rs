//! The node's search index (Tantivy), fed only by the catalogue replica.
//!
//! The catalogue keeps a change feed of events ordered by (log index of the last
//! change, event id). Each index commit records the feed position it reached. An
//! indexer task subscribes to the catalogue group's applied changes and, whenever
//! something was applied, indexes every event past that position, reading it (with
//! its venue and performers) from the local replica. So a create, an update, a
//! restart, a crash between apply and commit, and a snapshot install all come down
//! to the same step; re-indexing is an idempotent upsert. A missing or unreadable index, or one of another schema version, is
//! rebuilt from the replica in the background; the node serves everything else
//! meanwhile, and `/readyz` reports `search_ready`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use boxoffice_storage::read::Reader;
use boxoffice_storage::state_machine::StateMachineStore;
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, FuzzyTermQuery, Occur, Query, RangeQuery, TermQuery,
};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, Value as _, FAST, INDEXED, STORED, STRING, TEXT,
};
use tantivy::{doc, Index, IndexReader, IndexWriter, Order, ReloadPolicy, TantivyDocument, Term};

/// Bumped whenever the schema changes: an index of another version is rebuilt.
pub const SCHEMA_VERSION: u32 = 4;
/// Settings of a node's search index (`[search]`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchSettings {
    /// Memory budget of the index writer (bytes).
    pub writer_memory_bytes: usize,
    /// Events read from the replica per batch during a rebuild or catch-up.
    pub rebuild_batch_max: usize,
    /// Longest a created or changed event waits for its commit (ms): how far
    /// search may trail the catalogue.
    pub commit_interval_ms: u64,
    /// How often changed availability figures are written to the index (ms).
    pub availability_refresh_ms: u64,
    /// Most candidates a geo search considers (the radius filter runs on them).
    pub geo_candidates_max: usize,
}

impl Default for SearchSettings {
    fn default() -> Self {
        SearchSettings {
            writer_memory_bytes: 64 << 20,
            rebuild_batch_max: 2000,
            commit_interval_ms: 200,
            availability_refresh_ms: 1_000,
            geo_candidates_max: 20_000,
        }
    }
}

// The API's contract, the same on every node (so that every node answers a query
// alike, and page tokens work anywhere): constants, not settings.

/// Most results per search page.
pub const PAGE_SIZE_MAX: usize = 100;
/// Search page size when none is given.
pub const PAGE_SIZE_DEFAULT: usize = 20;
/// Deepest result offset a page token may reach.
pub const OFFSET_MAX: usize = 10_000;
/// Keyword searches first match words exactly (and the last word as a prefix);
/// only when that finds fewer hits than this do typo-tolerant matches join in.
/// Decided per query, not per page, so paging stays stable.
pub const FUZZY_BELOW_HITS: usize = 20;
/// Largest search radius.
pub const RADIUS_KM_MAX: f64 = 20_000.0;

/// Tickets available for an event, from this node's replica of its shard.
pub type AvailabilityFn = Arc<dyn Fn(u64) -> Option<u32> + Send + Sync>;

fn parse_cursor(payload: &str) -> Option<(u64, u64)> {
    let (a, b) = payload.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Great-circle distance in km.
pub fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0 * a.sqrt().asin()
}

#[derive(Clone, Copy)]
struct Fields {
    event_id: Field,
    name: Field,
    description: Field,
    performers: Field,
    venue: Field,
    city: Field,
    category: Field,
    starts_at_ms: Field,
    venue_id: Field,
    performer_id: Field,
    available: Field,
    min_price_cents: Field,
    lat: Field,
    lon: Field,
    /// Name, performers, venue and description together: typo-tolerant and prefix
    /// matching run on this one field (one automaton per word, not one per field).
    all_text: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let f = Fields {
        event_id: b.add_u64_field("event_id", INDEXED | STORED | FAST),
        name: b.add_text_field("name", TEXT | STORED),
        description: b.add_text_field("description", TEXT),
        performers: b.add_text_field("performers", TEXT | STORED),
        venue: b.add_text_field("venue", TEXT | STORED),
        city: b.add_text_field("city", STRING | STORED),
        category: b.add_text_field("category", STRING | STORED),
        starts_at_ms: b.add_i64_field("starts_at_ms", INDEXED | STORED | FAST),
        venue_id: b.add_u64_field("venue_id", INDEXED),
        performer_id: b.add_u64_field("performer_id", INDEXED),
        available: b.add_u64_field("available", INDEXED | STORED | FAST),
        min_price_cents: b.add_u64_field("min_price_cents", STORED),
        lat: b.add_f64_field("lat", INDEXED | STORED | FAST),
        lon: b.add_f64_field("lon", INDEXED | STORED | FAST),
        all_text: b.add_text_field("all_text", TEXT),
    };
    (b.build(), f)
}

/// What a search asks for. Text filters are compared case-insensitively.
#[derive(Clone, Debug, Default)]
pub struct SearchRequest {
    /// Keywords (typo-tolerant; the last word also matches as a prefix).
    pub q: Option<String>,
    /// Start time lower bound (ms, inclusive).
    pub from_ms: Option<i64>,
    /// Start time upper bound (ms, inclusive).
    pub to_ms: Option<i64>,
    /// City, exact.
    pub city: Option<String>,
    /// Category, exact.
    pub category: Option<String>,
    /// Performer.
    pub performer_id: Option<u64>,
    /// Venue.
    pub venue_id: Option<u64>,
    /// Only events with tickets available.
    pub available_only: bool,
    /// Centre and radius (km) of a geo filter.
    pub near: Option<(f64, f64, Option<f64>)>,
    /// Order.
    pub sort: Sort,
    /// Results per page.
    pub page_size: usize,
    /// Results to skip.
    pub offset: usize,
}

/// Result order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sort {
    /// BM25 relevance (start time when there are no keywords).
    #[default]
    Relevance,
    /// Start time, earliest first.
    Date,
    /// Distance from the given point, nearest first.
    Distance,
}

/// One search hit.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Hit {
    /// Event id.
    pub event_id: u64,
    /// Event name.
    pub name: String,
    /// Start (ms).
    pub starts_at_ms: i64,
    /// Venue name.
    pub venue: String,
    /// City.
    pub city: String,
    /// Category.
    pub category: String,
    /// Relevance score (0 when sorted by date).
    pub score: f32,
    /// Tickets available when last refreshed.
    pub available: u64,
    /// Cheapest ticket.
    pub min_price_cents: u64,
    /// Distance from the search point, when one was given.
    pub distance_km: Option<f64>,
}

/// A page of results.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SearchPage {
    /// Hits.
    pub results: Vec<Hit>,
    /// All matching events.
    pub total: usize,
    /// Offset of the next page, if any.
    pub next_offset: Option<usize>,
}

/// The node's search index.
pub struct SearchIndex {
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    fields: Fields,
    /// Catalogue change-feed position (log index, event id) committed to the index.
    cursor: Mutex<(u64, u64)>,
    /// Catalogue log index the index was last found complete at (every event
    /// change up to it is searchable).
    synced_through: std::sync::atomic::AtomicU64,
    /// True once the index has caught up with the replica after start-up.
    ready: AtomicBool,
    availability: AvailabilityFn,
    /// `[search]` settings.
    pub settings: SearchSettings,
}

fn index_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("search").join(format!("v{SCHEMA_VERSION}"))
}

impl SearchIndex {
    /// Opens the index under `data_dir`, or creates it empty if it is missing or
    /// unreadable (the indexer then rebuilds it).
    pub fn open(
        data_dir: &Path,
        availability: AvailabilityFn,
        settings: SearchSettings,
    ) -> anyhow::Result<Arc<SearchIndex>> {
        let dir = index_dir(data_dir);
        // Older schema versions are dropped.
        if let Ok(entries) = std::fs::read_dir(data_dir.join("search")) {
            for e in entries.flatten() {
                if e.path() != dir {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let (schema, fields) = schema();
        let opened = std::fs::create_dir_all(&dir)
            .map_err(anyhow::Error::from)
            .and_then(|_| {
                let idx = if dir.join("meta.json").exists() {
                    Index::open_in_dir(&dir)?
                } else {
                    Index::create_in_dir(&dir, schema.clone())?
                };
                anyhow::ensure!(idx.schema() == schema, "index schema differs");
                Ok(idx)
            });
        let index = match opened {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(error = %e, dir = %dir.display(), "search index unreadable; rebuilding");
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir)?;
                Index::create_in_dir(&dir, schema)?
            }
        };
        let cursor = index
            .load_metas()
            .ok()
            .and_then(|m| m.payload)
            .and_then(|p| parse_cursor(&p))
            .unwrap_or((0, 0));
        let writer = index.writer(settings.writer_memory_bytes)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Arc::new(SearchIndex {
            reader,
            writer: Mutex::new(writer),
            fields,
            cursor: Mutex::new(cursor),
            synced_through: std::sync::atomic::AtomicU64::new(cursor.0),
            ready: AtomicBool::new(false),
            availability,
            settings,
        }))
    }

    /// True once caught up with the replica after start-up.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Catalogue log index through which every change is in the index.
    pub fn indexed_through(&self) -> u64 {
        self.synced_through.load(Ordering::Relaxed)
    }

    /// Catalogue entries applied on this replica and not yet searchable: 0
    /// when no event changed past the index's position (an entry without a
    /// catalogue change, such as a leader's first, does not wake the indexer).
    pub fn lag(&self, reader: &Reader) -> u64 {
        let tx = reader.begin_applied();
        let behind = tx
            .freshness
            .applied_index
            .saturating_sub(self.indexed_through());
        if behind == 0 || tx.events_changed_after(self.cursor(), 1).is_empty() {
            0
        } else {
            behind
        }
    }

    fn cursor(&self) -> (u64, u64) {
        *self.cursor.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds or replaces events (read from the catalogue replica). Returns the highest id.
    /// Re-indexes `events` (as read by `tx`) into the uncommitted writer.
    fn upsert(
        &self,
        w: &IndexWriter,
        tx: &boxoffice_storage::read::ReadTx<'_>,
        events: &[boxoffice_storage::records::Event],
    ) -> anyhow::Result<()> {
        let f = self.fields;
        for e in events {
            let venue = tx.venue(e.venue_id);
            let performers: Vec<String> = e
                .performer_ids
                .iter()
                .filter_map(|&p| tx.performer(p))
                .map(|p| p.name)
                .collect();
            let (capacity, min_price) = match venue.as_ref().map(|v| &v.layout) {
                Some(boxoffice_storage::records::VenueLayout::Seated { sections }) => (
                    venue.as_ref().map(|v| v.layout.capacity()).unwrap_or(0),
                    sections
                        .iter()
                        .flat_map(|s| &s.rows)
                        .map(|r| r.price_cents)
                        .min()
                        .unwrap_or(0),
                ),
                Some(boxoffice_storage::records::VenueLayout::GeneralAdmission {
                    capacity,
                    price_cents,
                }) => (u64::from(*capacity), *price_cents),
                None => (0, 0),
            };
            let available = (self.availability)(e.event_id)
                .map(u64::from)
                .unwrap_or(capacity);
            w.delete_term(Term::from_field_u64(f.event_id, e.event_id));
            let mut d = doc!(
                f.event_id => e.event_id,
                f.name => e.name.clone(),
                f.description => e.description.clone(),
                f.performers => performers.join(", "),
                f.venue => venue.as_ref().map(|v| v.name.clone()).unwrap_or_default(),
                f.city => venue.as_ref().map(|v| v.city.to_lowercase()).unwrap_or_default(),
                f.category => e.category.to_lowercase(),
                f.starts_at_ms => e.starts_at_ms,
                f.venue_id => e.venue_id,
                f.available => available,
                f.min_price_cents => min_price,
                f.lat => venue.as_ref().map(|v| v.lat).unwrap_or(0.0),
                f.lon => venue.as_ref().map(|v| v.lon).unwrap_or(0.0),
            );
            for &p in &e.performer_ids {
                d.add_u64(f.performer_id, p);
            }
            let venue_name = venue.as_ref().map(|v| v.name.as_str()).unwrap_or_default();
            d.add_text(
                f.all_text,
                format!(
                    "{} {} {} {}",
                    e.name,
                    performers.join(" "),
                    venue_name,
                    e.description
                ),
            );
            w.add_document(d)?;
        }
        Ok(())
    }

    /// Commits the writer, recording `cursor` (or keeping the current one).
    fn commit(
        &self,
        mut w: std::sync::MutexGuard<'_, IndexWriter>,
        cursor: Option<(u64, u64)>,
    ) -> anyhow::Result<()> {
        let cursor = cursor.unwrap_or_else(|| self.cursor());
        let mut prepared = w.prepare_commit()?;
        prepared.set_payload(&format!("{}:{}", cursor.0, cursor.1));
        prepared.commit()?;
        *self.cursor.lock().unwrap_or_else(|e| e.into_inner()) = cursor;
        drop(w);
        // Searchable at once, not when a file watcher next polls.
        self.reader.reload()?;
        Ok(())
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, IndexWriter> {
        // A panic mid-upsert leaves uncommitted documents at worst; the next
        // catch-up rewrites them.
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Indexes every event past the committed feed position, in batches. The
    /// replica is read under the writer lock, so a concurrent availability
    /// refresh cannot write an older version of an event after a newer one.
    fn catch_up(&self, reader: &Reader) -> anyhow::Result<()> {
        loop {
            let w = self.writer();
            let tx = reader.begin(0);
            let changed = tx.events_changed_after(self.cursor(), self.settings.rebuild_batch_max);
            let Some(&(last, _)) = changed.last() else {
                self.synced_through
                    .fetch_max(tx.freshness.applied_index, Ordering::Relaxed);
                return Ok(());
            };
            let events: Vec<_> = changed.into_iter().map(|(_, e)| e).collect();
            self.upsert(&w, &tx, &events)?;
            self.commit(w, Some(last))?;
        }
    }

    /// Drops everything and indexes the replica from the start of its feed.
    fn rebuild(&self, reader: &Reader) -> anyhow::Result<()> {
        let w = self.writer();
        w.delete_all_documents()?;
        self.commit(w, Some((0, 0)))?;
        self.synced_through.store(0, Ordering::Relaxed);
        self.catch_up(reader)
    }

    /// Catches up, or rebuilds when the index claims more than the replica has
    /// (the replica was replaced by an older state, e.g. its data restored).
    fn sync(&self, reader: &Reader, applied_index: u64) -> anyhow::Result<()> {
        if self.cursor().0 > applied_index {
            tracing::warn!(cursor = ?self.cursor(), applied_index, "search index ahead of the replica; rebuilding");
            return self.rebuild(reader);
        }
        self.catch_up(reader)
    }

    /// Runs the indexer until the change stream closes.
    pub async fn run_indexer(self: Arc<Self>, catalogue: StateMachineStore, reader: Reader) {
        let mut changes = catalogue.changes();
        let applied = catalogue.applied();
        let sync = |this: Arc<Self>| {
            let r = reader.clone();
            let at = applied.borrow().index;
            async move {
                match tokio::task::spawn_blocking(move || this.sync(&r, at)).await {
                    Ok(Ok(())) => true,
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "search indexing failed; retrying on the next change");
                        false
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "search indexing panicked; retrying on the next change");
                        false
                    }
                }
            }
        };
        sync(self.clone()).await;
        self.ready.store(true, Ordering::Relaxed);
        tracing::info!(
            indexed_through = self.indexed_through(),
            "search index ready"
        );
        loop {
            match changes.recv().await {
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
            // Gather what arrives within the commit interval into one commit.
            let deadline = tokio::time::Instant::now()
                + Duration::from_millis(self.settings.commit_interval_ms);
            loop {
                match tokio::time::timeout_at(deadline, changes.recv()).await {
                    Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {
                        continue
                    }
                    Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return,
                    Err(_) => break,
                }
            }
            sync(self.clone()).await;
        }
    }

    /// Re-indexes events whose availability may have changed: those named by the
    /// shards' seat-change feeds, and those with a hold expiring, once per
    /// `search.availability_refresh_ms` (one commit per period, not one per sale).
    pub async fn run_availability_refresher(
        self: Arc<Self>,
        catalogue: Reader,
        feeds: Vec<Arc<crate::live::Feed>>,
    ) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(u64, Option<u64>)>(4096);
        for feed in feeds {
            let mut sub = feed.subscribe();
            let tx = tx.clone();
            tokio::spawn(async move {
                loop {
                    match sub.recv().await {
                        Ok(item) => {
                            let crate::live::FeedItem::Change { change, .. } = &*item else {
                                // A snapshot install: the periodic refresh covers it.
                                continue;
                            };
                            if tx
                                .send((change.event_id, change.expires_at_ms))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                }
            });
        }
        drop(tx);
        let mut dirty = std::collections::BTreeSet::new();
        let mut expiring: std::collections::BTreeMap<u64, Vec<u64>> = Default::default();
        let mut tick =
            tokio::time::interval(Duration::from_millis(self.settings.availability_refresh_ms));
        loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some((event, exp)) => {
                        dirty.insert(event);
                        if let Some(at) = exp {
                            expiring.entry(at).or_default().push(event);
                        }
                    }
                    None => return,
                },
                _ = tick.tick() => {
                    let now = crate::node::now_ms();
                    let later = expiring.split_off(&(now + 1));
                    for (_, events) in std::mem::replace(&mut expiring, later) {
                        dirty.extend(events);
                    }
                    if dirty.is_empty() || !self.is_ready() {
                        continue;
                    }
                    let ids: Vec<u64> = std::mem::take(&mut dirty).into_iter().collect();
                    let (this, r) = (self.clone(), catalogue.clone());
                    let done = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                        let w = this.writer();
                        let tx = r.begin(0);
                        let events: Vec<_> = ids.iter().filter_map(|&id| tx.event(id)).collect();
                        this.upsert(&w, &tx, &events)?;
                        this.commit(w, None)
                    }).await;
                    if !matches!(done, Ok(Ok(()))) {
                        tracing::warn!("availability refresh failed; will retry on the next change");
                    }
                }
            }
        }
    }

    /// Runs a search.
    pub fn search(&self, req: &SearchRequest) -> anyhow::Result<SearchPage> {
        let f = self.fields;
        let mut must: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let words: Vec<String> = req
            .q
            .as_deref()
            .unwrap_or("")
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .take(16)
            .collect();
        let text_fields = [f.name, f.performers, f.venue, f.description];
        // Each word must match; exactly in some field (ranked by field), or — in
        // the typo-tolerant variant — within an edit distance in the combined field.
        let text_query = |fuzzy: bool| -> Vec<(Occur, Box<dyn Query>)> {
            let mut out: Vec<(Occur, Box<dyn Query>)> = Vec::new();
            for (i, w) in words.iter().enumerate() {
                let last = i + 1 == words.len();
                let mut any: Vec<(Occur, Box<dyn Query>)> = Vec::new();
                for &field in &text_fields {
                    // Exact matches rank well above fuzzy ones.
                    let term = Term::from_field_text(field, w);
                    any.push((
                        Occur::Should,
                        Box::new(BoostQuery::new(
                            Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs)),
                            4.0,
                        )),
                    ));
                }
                let all = Term::from_field_text(f.all_text, w);
                let distance = if w.chars().count() >= 5 {
                    2
                } else if w.chars().count() >= 3 {
                    1
                } else {
                    0
                };
                if fuzzy && distance > 0 {
                    any.push((
                        Occur::Should,
                        Box::new(FuzzyTermQuery::new(all.clone(), distance, true)),
                    ));
                }
                if last {
                    // Type-ahead: the last word may be unfinished.
                    any.push((
                        Occur::Should,
                        Box::new(BoostQuery::new(
                            Box::new(FuzzyTermQuery::new_prefix(all, 0, false)),
                            2.0,
                        )),
                    ));
                }
                out.push((Occur::Must, Box::new(BooleanQuery::new(any))));
            }
            out
        };
        if let Some(c) = &req.city {
            must.push((
                Occur::Must,
                Box::new(TermQuery::new(
                    Term::from_field_text(f.city, &c.to_lowercase()),
                    IndexRecordOption::Basic,
                )),
            ));
        }
        if let Some(c) = &req.category {
            must.push((
                Occur::Must,
                Box::new(TermQuery::new(
                    Term::from_field_text(f.category, &c.to_lowercase()),
                    IndexRecordOption::Basic,
                )),
            ));
        }
        if let Some(p) = req.performer_id {
            must.push((
                Occur::Must,
                Box::new(TermQuery::new(
                    Term::from_field_u64(f.performer_id, p),
                    IndexRecordOption::Basic,
                )),
            ));
        }
        if let Some(v) = req.venue_id {
            must.push((
                Occur::Must,
                Box::new(TermQuery::new(
                    Term::from_field_u64(f.venue_id, v),
                    IndexRecordOption::Basic,
                )),
            ));
        }
        if req.available_only {
            must.push((
                Occur::Must,
                Box::new(RangeQuery::new(
                    std::ops::Bound::Included(Term::from_field_u64(f.available, 1)),
                    std::ops::Bound::Unbounded,
                )),
            ));
        }
        if req.from_ms.is_some() || req.to_ms.is_some() {
            let lo = req
                .from_ms
                .map(|v| std::ops::Bound::Included(Term::from_field_i64(f.starts_at_ms, v)))
                .unwrap_or(std::ops::Bound::Unbounded);
            let hi = req
                .to_ms
                .map(|v| std::ops::Bound::Included(Term::from_field_i64(f.starts_at_ms, v)))
                .unwrap_or(std::ops::Bound::Unbounded);
            must.push((Occur::Must, Box::new(RangeQuery::new(lo, hi))));
        }
        if let Some((lat, lon, Some(radius))) = req.near {
            // A bounding box on the indexed coordinates narrows the candidates;
            // the exact great-circle test runs on what it lets through.
            let dlat = (radius / 111.0).min(180.0);
            must.push((
                Occur::Must,
                Box::new(RangeQuery::new(
                    std::ops::Bound::Included(Term::from_field_f64(f.lat, lat - dlat)),
                    std::ops::Bound::Included(Term::from_field_f64(f.lat, lat + dlat)),
                )),
            ));
            let cos = (lat.abs() + dlat).min(89.0).to_radians().cos();
            let dlon = radius / (111.0 * cos);
            if lon - dlon >= -180.0 && lon + dlon <= 180.0 {
                must.push((
                    Occur::Must,
                    Box::new(RangeQuery::new(
                        std::ops::Bound::Included(Term::from_field_f64(f.lon, lon - dlon)),
                        std::ops::Bound::Included(Term::from_field_f64(f.lon, lon + dlon)),
                    )),
                ));
            }
        }
        let searcher = self.reader.searcher();
        let build = |text: Vec<(Occur, Box<dyn Query>)>| -> Box<dyn Query> {
            let all: Vec<(Occur, Box<dyn Query>)> = text
                .into_iter()
                .chain(must.iter().map(|(o, q)| (*o, q.box_clone())))
                .collect();
            if all.is_empty() {
                Box::new(AllQuery)
            } else {
                Box::new(BooleanQuery::new(all))
            }
        };
        let limit = req.page_size;
        let by_date = req.sort == Sort::Date || (req.sort == Sort::Relevance && words.is_empty());
        let hit_of = |score: f32,
                      addr: tantivy::DocAddress,
                      distance_km: Option<f64>|
         -> anyhow::Result<Hit> {
            let d: TantivyDocument = searcher.doc(addr)?;
            let text = |field| {
                d.get_first(field)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            let num = |field| d.get_first(field).and_then(|v| v.as_u64()).unwrap_or(0);
            Ok(Hit {
                event_id: num(f.event_id),
                name: text(f.name),
                starts_at_ms: d
                    .get_first(f.starts_at_ms)
                    .and_then(|v| v.as_i64())
                    .unwrap_or(0),
                venue: text(f.venue),
                city: text(f.city),
                category: text(f.category),
                score: if by_date { 0.0 } else { score },
                available: num(f.available),
                min_price_cents: num(f.min_price_cents),
                distance_km,
            })
        };
        let execute = |query: &dyn Query| -> anyhow::Result<(Vec<Hit>, usize)> {
            Ok(if let Some((lat, lon, radius)) = req.near {
                // Candidates in relevance (or date) order, then the exact radius filter
                // and, if asked, distance order.
                let (cands, _): (Vec<(f32, tantivy::DocAddress)>, usize) = if by_date {
                    let c = TopDocs::with_limit(self.settings.geo_candidates_max)
                        .order_by_fast_field::<i64>("starts_at_ms", Order::Asc);
                    let (top, n) = searcher.search(query, &(c, Count))?;
                    (top.into_iter().map(|(_, a)| (0.0, a)).collect(), n)
                } else {
                    searcher.search(
                        query,
                        &(TopDocs::with_limit(self.settings.geo_candidates_max), Count),
                    )?
                };
                let mut located = Vec::new();
                let mut columns = std::collections::HashMap::new();
                for (score, addr) in cands {
                    if !columns.contains_key(&addr.segment_ord) {
                        let ff = searcher.segment_reader(addr.segment_ord).fast_fields();
                        columns.insert(addr.segment_ord, (ff.f64("lat")?, ff.f64("lon")?));
                    }
                    let (lat_col, lon_col) = &columns[&addr.segment_ord];
                    let vlat = lat_col.first(addr.doc_id).unwrap_or(0.0);
                    let vlon = lon_col.first(addr.doc_id).unwrap_or(0.0);
                    let dist = haversine_km(lat, lon, vlat, vlon);
                    if radius.is_none_or(|r| dist <= r) {
                        located.push((score, addr, dist));
                    }
                }
                if req.sort == Sort::Distance {
                    located.sort_by(|a, b| a.2.total_cmp(&b.2));
                }
                let total = located.len();
                let page = located
                    .into_iter()
                    .skip(req.offset)
                    .take(limit)
                    .map(|(s, a, d)| hit_of(s, a, Some(d)))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                (page, total)
            } else if by_date {
                let collector = TopDocs::with_limit(limit)
                    .and_offset(req.offset)
                    .order_by_fast_field::<i64>("starts_at_ms", Order::Asc);
                let (top, total) = searcher.search(query, &(collector, Count))?;
                (
                    top.into_iter()
                        .map(|(_, a)| hit_of(0.0, a, None))
                        .collect::<anyhow::Result<Vec<_>>>()?,
                    total,
                )
            } else {
                let (top, total) = searcher.search(
                    query,
                    &(TopDocs::with_limit(limit).and_offset(req.offset), Count),
                )?;
                (
                    top.into_iter()
                        .map(|(s, a)| hit_of(s, a, None))
                        .collect::<anyhow::Result<Vec<_>>>()?,
                    total,
                )
            })
        };
        // Exact matching first; typo tolerance only when that finds too little.
        let (results, total) = if words.is_empty() {
            execute(&*build(Vec::new()))?
        } else {
            let exact = execute(&*build(text_query(false)))?;
            if exact.1 >= FUZZY_BELOW_HITS {
                exact
            } else {
                execute(&*build(text_query(true)))?
            }
        };
        let next = req.offset + results.len();
        let next_offset = (next < total && next < OFFSET_MAX).then_some(next);
        Ok(SearchPage {
            results,
            total,
            next_offset,
        })
    }
}
