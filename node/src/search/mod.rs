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
use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, ConstScoreQuery, FuzzyTermQuery, Occur, Query, RangeQuery,
    TermQuery,
};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value as _, FAST, INDEXED,
    STORED, STRING,
};
use tantivy::tokenizer::{PreTokenizedString, Token};
use tantivy::{doc, Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

pub mod collector;
pub mod columns;
pub mod suggest;
pub mod vocabulary;

use collector::{Collected, FacetCounts, Filters, PageCollector, Rank, Within};

/// Bumped whenever the schema changes: an index of another version is rebuilt.
pub const SCHEMA_VERSION: u32 = 8;
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
    /// How often the suggestion index of performers and venues is rebuilt
    /// when the catalogue changed (ms): how far their suggestions may trail.
    pub suggest_refresh_ms: u64,
    /// Searches run at once on this node (others wait their turn, first
    /// come first served; the wait is bounded by `limits.in_flight_max`);
    /// 0 means one per CPU core.
    pub searches_in_flight_max: usize,
    /// No longer used: geo searches check every candidate, without a cap.
    /// Accepted so that older config files still load (a warning is logged).
    #[serde(skip_serializing)]
    pub geo_candidates_max: Option<usize>,
}

impl Default for SearchSettings {
    fn default() -> Self {
        SearchSettings {
            writer_memory_bytes: 64 << 20,
            rebuild_batch_max: 2000,
            commit_interval_ms: 200,
            availability_refresh_ms: 1_000,
            suggest_refresh_ms: 500,
            searches_in_flight_max: 0,
            geo_candidates_max: None,
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
/// only when that finds fewer hits than this do typo-tolerant matches join in,
/// words one edit away first, and two edits away (for words of 5 characters
/// or more) only when that still finds fewer. Decided per query, not per
/// page, so paging stays stable.
pub const FUZZY_BELOW_HITS: usize = 20;
/// Largest search radius.
pub const RADIUS_KM_MAX: f64 = 20_000.0;
/// Longest word prefix indexed for type-ahead: a last word up to this long is
/// one term lookup; a longer one walks the term dictionary.
pub const PREFIX_CHARS_MAX: usize = 12;
/// Longest typed phrase (two words or more, joined by one space) indexed
/// whole for suggestions: such a phrase is one term's postings, not an
/// intersection of every word's; a longer one intersects its words.
pub const PHRASE_PREFIX_CHARS_MAX: usize = 16;
/// Geo searches look up the 1°×1° cells their radius' bounding box covers; a
/// box covering more cells than this is checked on every candidate instead.
pub const GEO_CELLS_MAX: usize = 256;
/// Most values a facet lists (the most frequent; months: the earliest).
pub const FACET_VALUES_MAX: usize = 50;

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
    /// Stored for display; matched through `all_text` and `prefixes`.
    name: Field,
    /// Stored for display; matched through `all_text`.
    performers: Field,
    /// Stored for display; matched through `all_text`.
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
    /// Name (written [`NAME_WEIGHT`] times), performers, venue and
    /// description together: a word is one term's postings, ranked by BM25
    /// with a match in the name counting more, and typo tolerance walks one
    /// field's words.
    all_text: Field,
    /// Every prefix (up to [`PREFIX_CHARS_MAX`] characters) of every word of
    /// the name, performers and venue, weighted ([`ranked_prefixes`]): the
    /// last, maybe unfinished, word is one term's postings, ranked by BM25.
    prefixes: Field,
    /// Every beginning, from two words up to [`PHRASE_PREFIX_CHARS_MAX`]
    /// characters, of the name, performers and venue from each of their
    /// words, weighted ([`phrase_prefixes`]): a typed phrase is one term for
    /// suggestions.
    phrase_prefixes: Field,
    /// The venue's 1°×1° cell ([`geo_cell`]).
    geo_cell: Field,
}

/// How a field of word prefixes is indexed: split and lower-cased as text,
/// without frequencies or positions (a prefix matches or not).
pub fn prefix_options() -> TextOptions {
    words_options(IndexRecordOption::Basic)
}

/// Split and lower-cased as text, indexed with `record` (no field needs
/// positions: there are no phrase queries).
fn words_options(record: IndexRecordOption) -> TextOptions {
    TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer("default")
            .set_index_option(record),
    )
}

/// A typo's score against the word's exact one, per edit.
pub const TYPO_WEIGHT: f32 = 0.5;

/// How many times an event's name counts in the fields that rank: a word
/// of the name weighs as much as this many mentions elsewhere.
pub const NAME_WEIGHT: usize = 3;

/// How many times a prefix that is a whole word counts, against once for a
/// word it only begins: a typed word ranks above longer words it begins.
pub const WHOLE_WORD_WEIGHT: usize = 4;

/// A stored text field's first value ("" when absent).
fn stored_text(d: &TantivyDocument, field: Field) -> String {
    d.get_first(field)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string()
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let f = Fields {
        event_id: b.add_u64_field("event_id", INDEXED | STORED | FAST),
        name: b.add_text_field("name", STORED),
        performers: b.add_text_field("performers", STORED),
        venue: b.add_text_field("venue", STORED),
        city: b.add_text_field("city", STRING | STORED | FAST),
        category: b.add_text_field("category", STRING | STORED | FAST),
        starts_at_ms: b.add_i64_field("starts_at_ms", INDEXED | STORED | FAST),
        venue_id: b.add_u64_field("venue_id", INDEXED | FAST),
        performer_id: b.add_u64_field("performer_id", INDEXED),
        available: b.add_u64_field("available", STORED | FAST),
        min_price_cents: b.add_u64_field("min_price_cents", STORED),
        lat: b.add_f64_field("lat", STORED | FAST),
        lon: b.add_f64_field("lon", STORED | FAST),
        all_text: b.add_text_field("all_text", words_options(IndexRecordOption::WithFreqs)),
        prefixes: b.add_text_field("prefixes", words_options(IndexRecordOption::WithFreqs)),
        phrase_prefixes: b.add_text_field(
            "phrase_prefixes",
            words_options(IndexRecordOption::WithFreqs),
        ),
        geo_cell: b.add_u64_field("geo_cell", INDEXED),
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
    /// Facets to count over every match.
    pub facets: FacetSet,
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
    /// Facet counts, when asked for.
    pub facets: Option<Facets>,
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
    /// Performer and venue names, for suggestions.
    names: Arc<suggest::NameIndex>,
    /// The combined text field's words, for typo tolerance.
    vocabulary: vocabulary::Vocabulary,
    /// Each segment's fast-field columns, opened once.
    columns: Arc<columns::ColumnCache>,
    /// `[search]` settings.
    pub settings: SearchSettings,
    /// Turns to run a search (`searches_in_flight_max`).
    turns: tokio::sync::Semaphore,
}

/// The doc store is not compressed: a page's hits are read from it, each from
/// a different block, and decompressing a 16 KiB block per hit was a third of
/// a keyword search's time at a million events (the store is ~2x larger).
fn doc_store_settings() -> tantivy::IndexSettings {
    tantivy::IndexSettings {
        docstore_compression: tantivy::store::Compressor::None,
        docstore_blocksize: 4096,
        ..Default::default()
    }
}

fn create_index(dir: &Path, schema: Schema) -> tantivy::Result<Index> {
    Index::builder()
        .schema(schema)
        .settings(doc_store_settings())
        .create_in_dir(dir)
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
        if settings.geo_candidates_max.is_some() {
            tracing::warn!("search.geo_candidates_max is no longer used (geo searches have no candidate cap); remove it");
        }
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
                    create_index(&dir, schema.clone())?
                };
                anyhow::ensure!(idx.schema() == schema, "index schema differs");
                anyhow::ensure!(
                    idx.settings().docstore_compression
                        == doc_store_settings().docstore_compression,
                    "index doc store settings differ"
                );
                Ok(idx)
            });
        let index = match opened {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(error = %e, dir = %dir.display(), "search index unreadable; rebuilding");
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir)?;
                create_index(&dir, schema)?
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
        let vocabulary = vocabulary::Vocabulary::new(fields.all_text);
        if let Err(e) = vocabulary.refresh(&reader.searcher()) {
            // Typo tolerance finds only words of later commits until then.
            tracing::warn!(error = %e, "search vocabulary not read at start-up");
        }
        Ok(Arc::new(SearchIndex {
            reader,
            writer: Mutex::new(writer),
            fields,
            vocabulary,
            columns: Arc::default(),
            cursor: Mutex::new(cursor),
            synced_through: std::sync::atomic::AtomicU64::new(cursor.0),
            ready: AtomicBool::new(false),
            availability,
            names: Arc::default(),
            turns: tokio::sync::Semaphore::new(match settings.searches_in_flight_max {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n => n,
            }),
            settings,
        }))
    }

    /// Runs `f` (a search or suggestion) on a blocking thread once it is
    /// its turn: at most `searches_in_flight_max` at once, the rest waiting
    /// first come first served. CPU-bound queries beyond the cores only
    /// share them, and lengthen every one in flight.
    pub async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&SearchIndex) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        // The semaphore is never closed.
        let _turn = self.turns.acquire().await?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this)).await?
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
            if let Some(v) = &venue {
                d.add_u64(f.geo_cell, geo_cell(v.lat, v.lon));
            }
            let venue_name = venue.as_ref().map(|v| v.name.as_str()).unwrap_or_default();
            let others: Vec<&str> = std::iter::once(venue_name)
                .chain(performers.iter().map(String::as_str))
                .collect();
            d.add_text(f.prefixes, ranked_prefixes(&e.name, others.iter().copied()));
            d.add_pre_tokenized_text(
                f.phrase_prefixes,
                phrase_prefixes(&e.name, others.iter().copied()),
            );
            d.add_text(
                f.all_text,
                format!(
                    "{} {} {} {}",
                    [e.name.as_str(); NAME_WEIGHT].join(" "),
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
        if let Err(e) = self.columns.prepare(&self.reader.searcher()) {
            // The first query to read the new segments opens them instead.
            tracing::warn!(error = %e, "search columns not prepared");
        }
        if let Err(e) = self.vocabulary.refresh(&self.reader.searcher()) {
            // Typo tolerance misses the new words until the next commit.
            tracing::warn!(error = %e, "search vocabulary not refreshed");
        }
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

    /// The text clauses of `words`: each word must match, exactly in some
    /// field (ranked by field); the last also as a prefix (type-ahead); with
    /// `typos` above 0, also within an edit distance in the combined field
    /// (the word's own [`fuzzy_distance`], at most `typos`).
    fn text_clauses(&self, words: &[String], typos: u8) -> Vec<(Occur, Box<dyn Query>)> {
        words
            .iter()
            .enumerate()
            .map(|(i, w)| (Occur::Must, self.word_query(w, i + 1 == words.len(), typos)))
            .collect()
    }

    /// One word of a query (see [`Self::text_clauses`]): one term's
    /// postings, ranked by BM25 over a field whose frequencies carry the
    /// ranking (a match in the name above one elsewhere, a whole word above
    /// a prefix: [`ranked_prefixes`]), so a word is read once and scored
    /// once, and a query of one word can skip blocks that cannot reach the
    /// top. With `typos` above 0, known words within the word's edit
    /// distance, at most `typos` (and for the last word from four
    /// characters, words that begin within one edit) match too, ranked
    /// lower the further they are.
    fn word_query(&self, w: &str, last: bool, typos: u8) -> Box<dyn Query> {
        let f = self.fields;
        let words = |field, w: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(
                Term::from_field_text(field, w),
                IndexRecordOption::WithFreqs,
            ))
        };
        let exact: Box<dyn Query> = if !last {
            words(f.all_text, w)
        } else if w.chars().count() <= PREFIX_CHARS_MAX {
            // Type-ahead: the last word may be unfinished.
            words(f.prefixes, w)
        } else {
            // Longer than the indexed prefixes: any word it begins, the
            // word itself ranking.
            Box::new(BooleanQuery::new(vec![
                (
                    Occur::Must,
                    Box::new(FuzzyTermQuery::new_prefix(
                        Term::from_field_text(f.all_text, w),
                        0,
                        false,
                    )),
                ),
                (Occur::Should, words(f.all_text, w)),
            ]))
        };
        if typos == 0 {
            return exact;
        }
        let prefix_distance = u8::from(last && w.chars().count() >= 4);
        let mut near = self
            .vocabulary
            .expand(w, fuzzy_distance(w).min(typos), prefix_distance);
        if last {
            // Words the last word begins match as prefixes already.
            near.retain(|(t, _)| !t.starts_with(w));
        }
        if near.is_empty() {
            return exact;
        }
        let mut any: Vec<(Occur, Box<dyn Query>)> = near
            .into_iter()
            .map(|(t, d)| -> (Occur, Box<dyn Query>) {
                let boost = TYPO_WEIGHT / f32::from(d);
                (
                    Occur::Should,
                    Box::new(BoostQuery::new(words(f.all_text, &t), boost)),
                )
            })
            .collect();
        any.push((Occur::Should, exact));
        Box::new(BooleanQuery::new(any))
    }

    /// Keeps the performer and venue suggestions current (see
    /// [`suggest::NameIndex::run`]).
    pub async fn run_suggestions(self: Arc<Self>, catalogue: StateMachineStore, reader: Reader) {
        let refresh = Duration::from_millis(self.settings.suggest_refresh_ms);
        self.names.clone().run(catalogue, reader, refresh).await
    }

    /// Up to `limit` suggestions for the partly typed `q`: performers and
    /// venues whose names match, and upcoming events (from `now_ms`) whose
    /// name, performers or venue match; at most half events when both kinds
    /// have enough.
    pub fn suggest(
        &self,
        q: &str,
        limit: usize,
        now_ms: i64,
    ) -> anyhow::Result<Vec<suggest::Suggestion>> {
        let words = words_of(q);
        if words.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let named = self.names.suggest(&words, limit)?;
        let f = self.fields;
        let searcher = self.reader.searcher();
        let collector = PageCollector {
            filters: Filters {
                from_ms: Some(now_ms),
                ..Default::default()
            },
            rank: Rank::Score,
            keep: limit,
            facets: false,
            top_only: true,
            columns: self.columns.clone(),
        };
        // Events: a typed phrase first, as one term; else by exact words and
        // the last word's prefix only: typo automata over the whole
        // catalogue's words cost more than the suggestion budget, and the
        // names index forgives typos already. No total is needed: the
        // collector skips blocks that cannot enter the top (one term, or
        // a union of terms; not an intersection of words, which is why a
        // phrase is looked up whole).
        let mut events = match typed_phrase(&words) {
            Some(phrase) => searcher.search(
                &TermQuery::new(
                    Term::from_field_text(f.phrase_prefixes, &phrase),
                    IndexRecordOption::WithFreqs,
                ),
                &collector,
            )?,
            None => Collected::default(),
        };
        if events.top.is_empty() {
            events = searcher.search(&*all_of(self.text_clauses(&words, 0)), &collector)?;
        }
        if events.top.is_empty() && named.is_empty() {
            // Nothing by prefix or small typos: allow search's typo distance.
            events = searcher.search(&*all_of(self.text_clauses(&words, TYPOS_MAX)), &collector)?;
        }
        let events: Vec<suggest::Suggestion> = events
            .top
            .iter()
            .map(|c| {
                let d: TantivyDocument = searcher.doc(c.addr)?;
                let text = |field| stored_text(&d, field);
                Ok(suggest::Suggestion {
                    kind: suggest::SuggestionKind::Event,
                    id: c.event_id,
                    text: text(f.name),
                    starts_at_ms: d.get_first(f.starts_at_ms).and_then(|v| v.as_i64()),
                    city: Some(text(f.city)),
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let event_share = events
            .len()
            .min(limit / 2)
            .max(limit.saturating_sub(named.len()));
        let mut out: Vec<suggest::Suggestion> = named
            .into_iter()
            .take(limit.saturating_sub(event_share.min(events.len())))
            .collect();
        let room = limit - out.len();
        out.extend(events.into_iter().take(room));
        Ok(out)
    }

    /// Runs a search.
    pub fn search(&self, req: &SearchRequest) -> anyhow::Result<SearchPage> {
        let f = self.fields;
        let words = words_of(req.q.as_deref().unwrap_or(""));
        // Clauses that select documents through the inverted index. Filters on
        // start time, availability and exact distance run in the collector.
        let mut select: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let exact = |term: Term| -> (Occur, Box<dyn Query>) {
            (
                Occur::Must,
                Box::new(ConstScoreQuery::new(
                    Box::new(TermQuery::new(term, IndexRecordOption::Basic)),
                    0.0,
                )),
            )
        };
        if let Some(c) = &req.city {
            select.push(exact(Term::from_field_text(f.city, &c.to_lowercase())));
        }
        if let Some(c) = &req.category {
            select.push(exact(Term::from_field_text(f.category, &c.to_lowercase())));
        }
        if let Some(p) = req.performer_id {
            select.push(exact(Term::from_field_u64(f.performer_id, p)));
        }
        if let Some(v) = req.venue_id {
            select.push(exact(Term::from_field_u64(f.venue_id, v)));
        }
        if let Some((lat, lon, Some(radius))) = req.near {
            if let Some(cells) = geo_cells_covering(lat, lon, radius) {
                let any: Vec<(Occur, Box<dyn Query>)> = cells
                    .into_iter()
                    .map(|c| {
                        let q: Box<dyn Query> = Box::new(TermQuery::new(
                            Term::from_field_u64(f.geo_cell, c),
                            IndexRecordOption::Basic,
                        ));
                        (Occur::Should, q)
                    })
                    .collect();
                select.push((
                    Occur::Must,
                    Box::new(ConstScoreQuery::new(Box::new(BooleanQuery::new(any)), 0.0)),
                ));
            }
        }
        if select.is_empty() && words.is_empty() && (req.from_ms.is_some() || req.to_ms.is_some()) {
            // Nothing narrower selects: the date range does, from the column.
            let bound = |v: Option<i64>| {
                v.map(|v| std::ops::Bound::Included(Term::from_field_i64(f.starts_at_ms, v)))
                    .unwrap_or(std::ops::Bound::Unbounded)
            };
            select.push((
                Occur::Must,
                Box::new(RangeQuery::new(bound(req.from_ms), bound(req.to_ms))),
            ));
        }
        let by_date = req.sort == Sort::Date || (req.sort == Sort::Relevance && words.is_empty());
        let rank = match req.sort {
            Sort::Distance => Rank::Distance,
            _ if by_date => Rank::Date,
            _ => Rank::Score,
        };
        let collector = PageCollector {
            filters: Filters {
                from_ms: req.from_ms,
                to_ms: req.to_ms,
                available_only: req.available_only,
                near: req.near,
            },
            rank,
            keep: req.offset + req.page_size,
            facets: req.facets.any(),
            top_only: false,
            columns: self.columns.clone(),
        };
        let searcher = self.reader.searcher();
        let run = |text: Vec<(Occur, Box<dyn Query>)>| -> anyhow::Result<Collected> {
            let all: Vec<(Occur, Box<dyn Query>)> = text
                .into_iter()
                .chain(select.iter().map(|(o, q)| (*o, q.box_clone())))
                .collect();
            let query: Box<dyn Query> = if all.is_empty() {
                Box::new(AllQuery)
            } else {
                Box::new(BooleanQuery::new(all))
            };
            Ok(searcher.search(&*query, &collector)?)
        };
        // Browsing by date (in a category, around a point, or over
        // everything): from each segment's (category, start) or (venue,
        // start) order. The selection clauses above go unused then.
        let category = req.category.as_ref().map(|c| c.to_lowercase());
        let within = match (&category, req.near) {
            (Some(c), None) => Some(Within::Category(c)),
            (None, Some((_, _, Some(_)))) => Some(Within::Radius),
            (None, None) => Some(Within::Everything),
            _ => None,
        };
        let ordered = match within {
            Some(within)
                if words.is_empty()
                    && matches!(rank, Rank::Date | Rank::Distance)
                    && req.city.is_none()
                    && req.performer_id.is_none()
                    && req.venue_id.is_none() =>
            {
                collector.collect_by_date(&searcher, within)?
            }
            _ => None,
        };
        // Exact matching first; typo tolerance only when that finds too
        // little, one edit before two (a word of two edits away is another
        // word more often than a typo, and expanding into every such word
        // costs most of a typo query's time).
        let collected = if let Some(c) = ordered {
            c
        } else if words.is_empty() {
            run(Vec::new())?
        } else {
            let mut found = run(self.text_clauses(&words, 0))?;
            let most = words.iter().map(|w| fuzzy_distance(w)).max().unwrap_or(0);
            for typos in 1..=most {
                if found.total >= FUZZY_BELOW_HITS {
                    break;
                }
                found = run(self.text_clauses(&words, typos))?;
            }
            found
        };
        let results = collected
            .top
            .iter()
            .skip(req.offset)
            .map(|c| {
                let d: TantivyDocument = searcher.doc(c.addr)?;
                let text = |field| stored_text(&d, field);
                let num = |field| d.get_first(field).and_then(|v| v.as_u64()).unwrap_or(0);
                Ok(Hit {
                    event_id: c.event_id,
                    name: text(f.name),
                    starts_at_ms: d
                        .get_first(f.starts_at_ms)
                        .and_then(|v| v.as_i64())
                        .unwrap_or(0),
                    venue: text(f.venue),
                    city: text(f.city),
                    category: text(f.category),
                    score: if rank == Rank::Score { c.score } else { 0.0 },
                    available: num(f.available),
                    min_price_cents: num(f.min_price_cents),
                    distance_km: c.distance_km,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let total = collected.total;
        let next = req.offset + results.len();
        let next_offset = (next < total && next < OFFSET_MAX).then_some(next);
        Ok(SearchPage {
            results,
            total,
            next_offset,
            facets: collected.facets.map(|c| Facets::of(c, req.facets)),
        })
    }
}

/// All of `clauses`: a lone clause as itself, so a single word keeps its
/// term's (or its terms' union's) ability to skip blocks when only a top is
/// wanted, which a boolean query of one required clause loses.
fn all_of(mut clauses: Vec<(Occur, Box<dyn Query>)>) -> Box<dyn Query> {
    if clauses.len() == 1 && clauses[0].0 == Occur::Must {
        return clauses.remove(0).1;
    }
    Box::new(BooleanQuery::new(clauses))
}

/// The words of a query as the index's tokenizer splits them (on anything
/// not alphanumeric), lower case; at most 16.
pub fn words_of(q: &str) -> Vec<String> {
    q.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .take(16)
        .collect()
}

/// The most edits any word is forgiven ([`fuzzy_distance`] of a long word).
const TYPOS_MAX: u8 = 2;

/// Edits a typo-tolerant match of `word` allows: none below 3 characters,
/// one below 5, two from 5.
pub fn fuzzy_distance(word: &str) -> u8 {
    match word.chars().count() {
        n if n >= 5 => 2,
        n if n >= 3 => 1,
        _ => 0,
    }
}

/// Every prefix, up to [`PREFIX_CHARS_MAX`] characters, of every word of
/// `texts`, once each, space-separated (what the `prefixes` field indexes).
pub fn word_prefixes<'a>(texts: impl IntoIterator<Item = &'a str>) -> String {
    let mut seen = std::collections::BTreeSet::new();
    for t in texts {
        for w in words_of_all(t) {
            for (i, c) in w.char_indices().take(PREFIX_CHARS_MAX) {
                seen.insert(w[..i + c.len_utf8()].to_string());
            }
        }
    }
    seen.into_iter().collect::<Vec<_>>().join(" ")
}

/// The `prefixes` text of an event: every prefix, up to
/// [`PREFIX_CHARS_MAX`] characters, of every word of its `name` and of
/// `others`, repeated so that its frequency ranks: [`NAME_WEIGHT`] times for
/// a word of the name, and [`WHOLE_WORD_WEIGHT`] times as often when the
/// prefix is the whole word. A typed word in the name ranks first, then the
/// word elsewhere, then words it begins in the name, then elsewhere.
pub fn ranked_prefixes<'a>(name: &str, others: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    let mut add = |text: &str, weight: usize| {
        for w in words_of_all(text) {
            let chars = w.chars().count();
            for (n, (i, c)) in w.char_indices().take(PREFIX_CHARS_MAX).enumerate() {
                let whole = n + 1 == chars;
                let times = weight * if whole { WHOLE_WORD_WEIGHT } else { 1 };
                for _ in 0..times {
                    if !out.is_empty() {
                        out.push(' ');
                    }
                    out.push_str(&w[..i + c.len_utf8()]);
                }
            }
        }
    };
    add(name, NAME_WEIGHT);
    for t in others {
        add(t, 1);
    }
    out
}

/// The `phrase_prefixes` tokens of an event: from each word of its `name`
/// and of `others` (lower case, joined by one space), every beginning that
/// reaches into the next word, up to [`PHRASE_PREFIX_CHARS_MAX`]
/// characters; a phrase the name begins with [`PHRASE_START_WEIGHT`]
/// times, so that its frequency ranks it above one elsewhere (then BM25's
/// length norm ranks shorter texts first).
pub fn phrase_prefixes<'a>(
    name: &str,
    others: impl IntoIterator<Item = &'a str>,
) -> PreTokenizedString {
    let mut tokens = Vec::new();
    let mut add = |text: &str, first_times: usize| {
        let joined = words_of_all(text).collect::<Vec<_>>().join(" ");
        let mut start = 0;
        while start < joined.len() {
            let rest = &joined[start..];
            // The first word ends at the first space (or with the text).
            let Some(space) = rest.find(' ') else { break };
            let n = if start == 0 { first_times } else { 1 };
            for (count, (i, c)) in rest.char_indices().enumerate() {
                if count >= PHRASE_PREFIX_CHARS_MAX {
                    break;
                }
                if i <= space || c == ' ' {
                    // One word, or ending at a space: not typed as a phrase.
                    continue;
                }
                let text = rest[..i + c.len_utf8()].to_string();
                for _ in 0..n {
                    tokens.push(Token {
                        position: tokens.len(),
                        text: text.clone(),
                        ..Token::default()
                    });
                }
            }
            start += space + 1;
        }
    };
    add(name, PHRASE_START_WEIGHT);
    for t in others {
        add(t, 1);
    }
    PreTokenizedString {
        text: String::new(),
        tokens,
    }
}

/// How many times a phrase the event's name begins with counts in
/// `phrase_prefixes`, against once for a phrase elsewhere in the name or in
/// a performer's or the venue's.
pub const PHRASE_START_WEIGHT: usize = 2;

/// The `phrase_prefixes` term a suggestion for `words` looks up: two words
/// or more, joined by one space, when no longer than
/// [`PHRASE_PREFIX_CHARS_MAX`] characters.
fn typed_phrase(words: &[String]) -> Option<String> {
    let phrase = words.join(" ");
    (words.len() >= 2 && phrase.chars().count() <= PHRASE_PREFIX_CHARS_MAX).then_some(phrase)
}

/// As [`words_of`], without the limit on their number.
fn words_of_all(q: &str) -> impl Iterator<Item = String> + '_ {
    q.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// The 1°×1° cell of a point: latitude band (0 = 90°S) times 360 plus
/// longitude band (0 = 180°W).
pub fn geo_cell(lat: f64, lon: f64) -> u64 {
    let band = |v: f64, lo: f64, n: i64| ((v - lo).floor() as i64).clamp(0, n - 1) as u64;
    band(lat, -90.0, 180) * 360 + band(lon, -180.0, 360)
}

/// The cells holding every point within `radius_km` of (lat, lon), or `None`
/// when that takes more than [`GEO_CELLS_MAX`] of them.
pub fn geo_cells_covering(lat: f64, lon: f64, radius_km: f64) -> Option<Vec<u64>> {
    // A degree of latitude is 111.19 km; 111 keeps the box a little larger.
    let dlat = radius_km / 111.0;
    let (lo_lat, hi_lat) = ((lat - dlat).max(-90.0), (lat + dlat).min(90.0));
    let lat_bands = (lo_lat + 90.0).floor() as i64..=((hi_lat + 90.0).floor() as i64).min(179);
    // Longitude: the box's widest point is at its latitude farthest from the
    // equator; at a pole every longitude is in.
    let widest = lat.abs() + dlat;
    let lon_bands: Vec<i64> = if widest >= 89.0 {
        (0..360).collect()
    } else {
        let dlon = radius_km / (111.0 * widest.to_radians().cos());
        if dlon >= 180.0 {
            (0..360).collect()
        } else {
            let lo = (lon - dlon + 180.0).floor() as i64;
            let hi = (lon + dlon + 180.0).floor() as i64;
            (lo..=hi).map(|b| b.rem_euclid(360)).collect()
        }
    };
    let n = lat_bands.clone().count() * lon_bands.len();
    if n > GEO_CELLS_MAX {
        return None;
    }
    let mut cells: Vec<u64> = lat_bands
        .flat_map(|a| lon_bands.iter().map(move |&b| (a * 360 + b) as u64))
        .collect();
    cells.sort_unstable();
    cells.dedup();
    Some(cells)
}

/// Which facets a search counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FacetSet {
    /// By category.
    pub category: bool,
    /// By city.
    pub city: bool,
    /// By month of the start.
    pub month: bool,
}

impl FacetSet {
    /// Every facet name a search may ask for.
    pub const NAMES: [&'static str; 3] = ["category", "city", "month"];

    /// Parses a comma-separated list of facet names; the unknown name, if any.
    pub fn parse(list: &str) -> Result<FacetSet, String> {
        let mut set = FacetSet::default();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "category" => set.category = true,
                "city" => set.city = true,
                "month" => set.month = true,
                other => return Err(other.to_string()),
            }
        }
        Ok(set)
    }

    /// True when any facet is asked for.
    pub fn any(&self) -> bool {
        self.category || self.city || self.month
    }
}

/// Facet counts of a search's matches: values with their counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Facets {
    /// By category, most frequent first (ties by value).
    pub category: Option<Vec<(String, u64)>>,
    /// By city, most frequent first (ties by value).
    pub city: Option<Vec<(String, u64)>>,
    /// By month of the start (`YYYY-MM`, UTC), earliest first.
    pub month: Option<Vec<(String, u64)>>,
}

impl Facets {
    fn of(c: FacetCounts, asked: FacetSet) -> Facets {
        let by_count = |m: std::collections::HashMap<String, u64>| {
            let mut v: Vec<(String, u64)> = m.into_iter().collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            v.truncate(FACET_VALUES_MAX);
            v
        };
        Facets {
            category: asked.category.then(|| by_count(c.category)),
            city: asked.city.then(|| by_count(c.city)),
            month: asked.month.then(|| {
                c.month
                    .into_iter()
                    .take(FACET_VALUES_MAX)
                    .map(|(m, n)| (collector::month_label(m), n))
                    .collect()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranked_prefixes_rank_whole_words_then_the_name() {
        // One event per way "swift" can match the last, maybe unfinished,
        // word; BM25 over the weighted prefixes must order them as documented.
        let mut b = Schema::builder();
        let id = b.add_u64_field("id", STORED);
        let prefixes = b.add_text_field("prefixes", words_options(IndexRecordOption::WithFreqs));
        let index = Index::create_in_ram(b.build());
        let mut w = index.writer(15_000_000).unwrap();
        let events: [(u64, &str, &str); 4] = [
            (1, "Harbour Nights Live", "Swiftly Club"), // begins a word elsewhere
            (2, "Swiftly Nights Live", "Harbour Club"), // begins a word of the name
            (3, "Harbour Nights Live", "Swift Club"),   // the word, elsewhere
            (4, "Swift Nights Live", "Harbour Club"),   // the word, in the name
        ];
        for (n, name, venue) in events {
            w.add_document(doc!(id => n, prefixes => ranked_prefixes(name, [venue])))
                .unwrap();
        }
        w.commit().unwrap();
        let (top, order) = top_ids(&index, prefixes, "swift", id);
        assert_eq!(order, vec![4, 3, 2, 1], "{top:?}");
        assert!(top.windows(2).all(|p| p[0].0 > p[1].0), "no ties: {top:?}");
    }

    /// The best 4 documents for one term of `field` by BM25 over its
    /// frequencies: (score, address) and their `id`s, best first.
    fn top_ids(
        index: &Index,
        field: Field,
        term: &str,
        id: Field,
    ) -> (Vec<(tantivy::Score, tantivy::DocAddress)>, Vec<u64>) {
        let searcher = index.reader().unwrap().searcher();
        let q = TermQuery::new(
            Term::from_field_text(field, term),
            IndexRecordOption::WithFreqs,
        );
        let top = searcher
            .search(&q, &tantivy::collector::TopDocs::with_limit(4))
            .unwrap();
        let ids = top
            .iter()
            .map(|(_, a)| {
                let d: TantivyDocument = searcher.doc(*a).unwrap();
                d.get_first(id).and_then(|v| v.as_u64()).unwrap()
            })
            .collect();
        (top, ids)
    }

    #[test]
    fn phrase_prefixes_are_typed_phrases_from_every_word_weighted_by_place() {
        let p = phrase_prefixes("The Midnight Öwls Live", ["London Hall"]);
        let count = |t: &str| p.tokens.iter().filter(|k| k.text == t).count();
        // From the name's first word, elsewhere in the name, in the others.
        assert_eq!(count("the m"), PHRASE_START_WEIGHT);
        assert_eq!(count("the midnight öw"), PHRASE_START_WEIGHT);
        assert_eq!(count("midnight ö"), 1);
        assert_eq!(count("öwls live"), 1);
        assert_eq!(count("london h"), 1);
        assert_eq!(count("london hall"), 1);
        // One word, a trailing space, or longer than the limit: never typed
        // as a phrase that is looked up.
        for absent in ["the", "the ", "midnight", "live", "london", "london "] {
            assert_eq!(count(absent), 0, "{absent}");
        }
        assert!(p
            .tokens
            .iter()
            .all(|t| t.text.chars().count() <= PHRASE_PREFIX_CHARS_MAX));
        assert_eq!(count("the midnight öwl"), PHRASE_START_WEIGHT);
        assert_eq!(count("the midnight öwls"), 0, "17 characters");
        assert_eq!(
            typed_phrase(&words_of("The  Midnight-öw")).as_deref(),
            Some("the midnight öw"),
            "typed the way it is indexed"
        );
        assert_eq!(typed_phrase(&words_of("midnight")), None, "one word");
        assert_eq!(typed_phrase(&words_of("the midnight owls")), None);
    }

    #[test]
    fn phrase_prefixes_rank_the_name_start_first() {
        let mut b = Schema::builder();
        let id = b.add_u64_field("id", STORED);
        let phrases = b.add_text_field("phrases", words_options(IndexRecordOption::WithFreqs));
        let index = Index::create_in_ram(b.build());
        let mut w = index.writer(15_000_000).unwrap();
        let events: [(u64, &str, &str); 4] = [
            (1, "Harbour Nights", "Golden Owls Club"), // at the venue
            (2, "Harbour Golden Owls", "Club"),        // later in the name
            (3, "Golden Owls Live", "Club"),           // begins the name
            (4, "Golden Mirrors", "Club"),             // does not match
        ];
        for (n, name, venue) in events {
            let mut d = doc!(id => n);
            d.add_pre_tokenized_text(phrases, phrase_prefixes(name, [venue]));
            w.add_document(d).unwrap();
        }
        w.commit().unwrap();
        let (top, mut order) = top_ids(&index, phrases, "golden ow", id);
        assert_eq!(order[0], 3, "{top:?}");
        assert!(top[0].0 > top[1].0, "{top:?}");
        order.sort_unstable();
        assert_eq!(order, vec![1, 2, 3], "the fourth does not match: {top:?}");
    }

    #[test]
    fn prefixes_cover_every_word_start_up_to_the_limit() {
        let p = word_prefixes(["The Rolling", "Stönes"]);
        let set: Vec<&str> = p.split(' ').collect();
        for want in ["t", "th", "the", "r", "rolling", "s", "stö", "stönes"] {
            assert!(set.contains(&want), "{want} missing from {p}");
        }
        assert!(!set.contains(&"rollingx"));
        let long = word_prefixes(["abcdefghijklmnopq"]);
        assert!(long
            .split(' ')
            .all(|w| w.chars().count() <= PREFIX_CHARS_MAX));
        assert!(long.split(' ').any(|w| w == "abcdefghijkl"));
    }

    #[test]
    fn geo_cells_cover_every_point_within_the_radius() {
        // Points at the radius in every direction, from centres near the
        // antimeridian, the equator and far north.
        for &(lat, lon, r) in &[
            (40.7, -74.0, 50.0),
            (0.2, 179.9, 120.0),
            (-33.9, -179.8, 80.0),
            (64.1, -21.9, 300.0),
            (51.5, -0.1, 5.0),
        ] {
            let cells = geo_cells_covering(lat, lon, r).expect("a small radius");
            for step in 0..72 {
                let bearing = (step as f64 * 5.0).to_radians();
                for frac in [0.5, 0.99] {
                    // Destination point at distance frac * r along the bearing.
                    let d = frac * r / 6371.0;
                    let (p1, l1) = (lat.to_radians(), lon.to_radians());
                    let p2 = (p1.sin() * d.cos() + p1.cos() * d.sin() * bearing.cos()).asin();
                    let l2 = l1
                        + (bearing.sin() * d.sin() * p1.cos()).atan2(d.cos() - p1.sin() * p2.sin());
                    let (plat, mut plon) = (p2.to_degrees(), l2.to_degrees());
                    if plon > 180.0 {
                        plon -= 360.0;
                    } else if plon < -180.0 {
                        plon += 360.0;
                    }
                    assert!(haversine_km(lat, lon, plat, plon) <= r);
                    assert!(
                        cells.contains(&geo_cell(plat, plon)),
                        "({plat}, {plon}) within {r} km of ({lat}, {lon}) not covered"
                    );
                }
            }
        }
        // The whole earth is too many cells: the collector checks instead.
        assert_eq!(geo_cells_covering(0.0, 0.0, RADIUS_KM_MAX), None);
    }

    #[test]
    fn facet_names_parse_and_unknown_ones_are_named() {
        assert_eq!(
            FacetSet::parse("category, month"),
            Ok(FacetSet {
                category: true,
                city: false,
                month: true
            })
        );
        assert_eq!(FacetSet::parse("city,venue"), Err("venue".to_string()));
        assert!(!FacetSet::parse("").unwrap().any());
    }
}
