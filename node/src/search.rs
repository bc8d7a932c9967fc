//! The node's search index (Tantivy), fed only by the catalogue replica.
//!
//! An indexer task subscribes to the catalogue group's applied changes and indexes
//! every created event, reading it (with its venue and performers) from the local
//! replica. Each commit records the highest event id indexed; at start-up the
//! indexer first subscribes, then indexes every event above that mark from the
//! replica, so nothing created meanwhile is missed (re-indexing is an idempotent
//! upsert). A missing or unreadable index, or one of another schema version, is
//! rebuilt from the replica in the background; the node serves everything else
//! meanwhile, and `/readyz` reports `search_ready`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use boxoffice_raft::command::Effect;
use boxoffice_storage::read::Reader;
use boxoffice_storage::state_machine::StateMachineStore;
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{AllQuery, BooleanQuery, BoostQuery, FuzzyTermQuery, Occur, Query, RangeQuery, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, Schema, Value as _, FAST, INDEXED, STORED, STRING, TEXT};
use tantivy::{doc, Index, IndexReader, IndexWriter, Order, ReloadPolicy, TantivyDocument, Term};

/// Bumped whenever the schema changes: an index of another version is rebuilt.
pub const SCHEMA_VERSION: u32 = 1;
/// Memory budget of the index writer.
pub const WRITER_MEMORY_BYTES: usize = 64 << 20;
/// Events read from the replica per batch during a rebuild or catch-up.
pub const REBUILD_BATCH: usize = 2000;
/// Longest a created event waits before its commit (bounds staleness of search).
pub const COMMIT_INTERVAL_MS: u64 = 200;
/// Most results per search page.
pub const PAGE_SIZE_MAX: usize = 100;
/// Search page size when none is given.
pub const PAGE_SIZE_DEFAULT: usize = 20;
/// Deepest result offset a page token may reach.
pub const OFFSET_MAX: usize = 10_000;

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
    /// Order by start time instead of relevance.
    pub sort_by_date: bool,
    /// Results per page.
    pub page_size: usize,
    /// Results to skip.
    pub offset: usize,
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
    /// Highest event id committed to the index.
    indexed_max: AtomicU64,
    /// True once the index has caught up with the replica after start-up.
    ready: AtomicBool,
}

fn index_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("search").join(format!("v{SCHEMA_VERSION}"))
}

impl SearchIndex {
    /// Opens the index under `data_dir`, or creates it empty if it is missing or
    /// unreadable (the indexer then rebuilds it).
    pub fn open(data_dir: &Path) -> anyhow::Result<Arc<SearchIndex>> {
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
        let opened = std::fs::create_dir_all(&dir).map_err(anyhow::Error::from).and_then(|_| {
            let idx = if dir.join("meta.json").exists() { Index::open_in_dir(&dir)? } else { Index::create_in_dir(&dir, schema.clone())? };
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
        let indexed_max = index.load_metas().ok().and_then(|m| m.payload).and_then(|p| p.parse().ok()).unwrap_or(0);
        let writer = index.writer(WRITER_MEMORY_BYTES)?;
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        Ok(Arc::new(SearchIndex {
            reader,
            writer: Mutex::new(writer),
            fields,
            indexed_max: AtomicU64::new(indexed_max),
            ready: AtomicBool::new(false),
        }))
    }

    /// True once caught up with the replica after start-up.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Highest event id committed.
    pub fn indexed_max(&self) -> u64 {
        self.indexed_max.load(Ordering::Relaxed)
    }

    /// Adds or replaces events (read from the catalogue replica). Returns the highest id.
    fn upsert(&self, tx: &boxoffice_storage::read::ReadTx<'_>, events: &[boxoffice_storage::records::Event]) -> anyhow::Result<u64> {
        let f = self.fields;
        let w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut max = 0;
        for e in events {
            let venue = tx.venue(e.spec.venue_id);
            let performers: Vec<String> = e.spec.performer_ids.iter().filter_map(|&p| tx.performer(p)).map(|p| p.spec.name).collect();
            w.delete_term(Term::from_field_u64(f.event_id, e.event_id));
            let mut d = doc!(
                f.event_id => e.event_id,
                f.name => e.spec.name.clone(),
                f.description => e.spec.description.clone(),
                f.performers => performers.join(", "),
                f.venue => venue.as_ref().map(|v| v.spec.name.clone()).unwrap_or_default(),
                f.city => venue.as_ref().map(|v| v.spec.city.to_lowercase()).unwrap_or_default(),
                f.category => e.spec.category.to_lowercase(),
                f.starts_at_ms => e.spec.starts_at_ms,
                f.venue_id => e.spec.venue_id,
            );
            for &p in &e.spec.performer_ids {
                d.add_u64(f.performer_id, p);
            }
            w.add_document(d)?;
            max = max.max(e.event_id);
        }
        Ok(max)
    }

    fn commit(&self, max: u64) -> anyhow::Result<()> {
        let new_max = self.indexed_max().max(max);
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut prepared = w.prepare_commit()?;
        prepared.set_payload(&new_max.to_string());
        prepared.commit()?;
        drop(w);
        // Searchable at once, not when a file watcher next polls.
        self.reader.reload()?;
        self.indexed_max.store(new_max, Ordering::Relaxed);
        Ok(())
    }

    /// Indexes every event above the committed mark, in batches.
    fn catch_up(&self, reader: &Reader) -> anyhow::Result<()> {
        loop {
            let tx = reader.begin(0);
            let events = tx.events(self.indexed_max(), REBUILD_BATCH);
            if events.is_empty() {
                return Ok(());
            }
            let max = self.upsert(&tx, &events)?;
            self.commit(max)?;
        }
    }

    /// Runs the indexer until the change stream closes.
    pub async fn run_indexer(self: Arc<Self>, catalogue: StateMachineStore, reader: Reader) {
        let mut changes = catalogue.changes();
        let this = self.clone();
        let r = reader.clone();
        match tokio::task::spawn_blocking(move || this.catch_up(&r)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "search catch-up failed"),
            Err(e) => tracing::error!(error = %e, "search catch-up panicked"),
        }
        self.ready.store(true, Ordering::Relaxed);
        tracing::info!(indexed_max = self.indexed_max(), "search index ready");
        loop {
            let first = match changes.recv().await {
                Ok(c) => c,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(skipped = n, "search indexer lagged; catching up from the replica");
                    let (this, r) = (self.clone(), reader.clone());
                    let _ = tokio::task::spawn_blocking(move || this.catch_up(&r)).await;
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            // Gather what arrives within the commit interval into one commit.
            let mut ids = Vec::new();
            let mut take = |c: &boxoffice_storage::state_machine::AppliedChange| {
                if let Ok(Effect::EventCreated { event_id, .. }) = &c.outcome.result {
                    if !c.outcome.replayed {
                        ids.push(*event_id);
                    }
                }
            };
            take(&first);
            let deadline = tokio::time::Instant::now() + Duration::from_millis(COMMIT_INTERVAL_MS);
            while let Ok(Ok(c)) = tokio::time::timeout_at(deadline, changes.recv()).await {
                take(&c);
            }
            if ids.is_empty() {
                continue;
            }
            let (this, r) = (self.clone(), reader.clone());
            let done = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                let tx = r.begin(0);
                let events: Vec<_> = ids.iter().filter_map(|&id| tx.event(id)).collect();
                let max = this.upsert(&tx, &events)?;
                this.commit(max)
            })
            .await;
            if !matches!(done, Ok(Ok(()))) {
                tracing::error!("search indexing failed; catching up from the replica");
                let (this, r) = (self.clone(), reader.clone());
                let _ = tokio::task::spawn_blocking(move || this.catch_up(&r)).await;
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
        for (i, w) in words.iter().enumerate() {
            let last = i + 1 == words.len();
            let mut any: Vec<(Occur, Box<dyn Query>)> = Vec::new();
            for &field in &text_fields {
                let term = Term::from_field_text(field, w);
                // Exact matches rank well above fuzzy ones.
                any.push((Occur::Should, Box::new(BoostQuery::new(Box::new(TermQuery::new(term.clone(), IndexRecordOption::WithFreqs)), 4.0))));
                let distance = if w.chars().count() >= 5 { 2 } else if w.chars().count() >= 3 { 1 } else { 0 };
                if distance > 0 {
                    any.push((Occur::Should, Box::new(FuzzyTermQuery::new(term.clone(), distance, true))));
                }
                if last {
                    // Type-ahead: the last word may be unfinished.
                    any.push((Occur::Should, Box::new(BoostQuery::new(Box::new(FuzzyTermQuery::new_prefix(term, 0, false)), 2.0))));
                }
            }
            must.push((Occur::Must, Box::new(BooleanQuery::new(any))));
        }
        if let Some(c) = &req.city {
            must.push((Occur::Must, Box::new(TermQuery::new(Term::from_field_text(f.city, &c.to_lowercase()), IndexRecordOption::Basic))));
        }
        if let Some(c) = &req.category {
            must.push((Occur::Must, Box::new(TermQuery::new(Term::from_field_text(f.category, &c.to_lowercase()), IndexRecordOption::Basic))));
        }
        if let Some(p) = req.performer_id {
            must.push((Occur::Must, Box::new(TermQuery::new(Term::from_field_u64(f.performer_id, p), IndexRecordOption::Basic))));
        }
        if let Some(v) = req.venue_id {
            must.push((Occur::Must, Box::new(TermQuery::new(Term::from_field_u64(f.venue_id, v), IndexRecordOption::Basic))));
        }
        if req.from_ms.is_some() || req.to_ms.is_some() {
            let lo = req.from_ms.map(|v| std::ops::Bound::Included(Term::from_field_i64(f.starts_at_ms, v))).unwrap_or(std::ops::Bound::Unbounded);
            let hi = req.to_ms.map(|v| std::ops::Bound::Included(Term::from_field_i64(f.starts_at_ms, v))).unwrap_or(std::ops::Bound::Unbounded);
            must.push((Occur::Must, Box::new(RangeQuery::new(lo, hi))));
        }
        let query: Box<dyn Query> = if must.is_empty() { Box::new(AllQuery) } else { Box::new(BooleanQuery::new(must)) };
        let searcher = self.reader.searcher();
        let limit = req.page_size;
        let (addrs, total): (Vec<(f32, tantivy::DocAddress)>, usize) = if req.sort_by_date || words.is_empty() {
            let collector = TopDocs::with_limit(limit).and_offset(req.offset).order_by_fast_field::<i64>("starts_at_ms", Order::Asc);
            let (top, total) = searcher.search(&query, &(collector, Count))?;
            (top.into_iter().map(|(_, a)| (0.0, a)).collect(), total)
        } else {
            searcher.search(&query, &(TopDocs::with_limit(limit).and_offset(req.offset), Count))?
        };
        let mut results = Vec::with_capacity(addrs.len());
        for (score, addr) in addrs {
            let d: TantivyDocument = searcher.doc(addr)?;
            let text = |field| d.get_first(field).and_then(|v| v.as_str()).unwrap_or_default().to_string();
            results.push(Hit {
                event_id: d.get_first(f.event_id).and_then(|v| v.as_u64()).unwrap_or(0),
                name: text(f.name),
                starts_at_ms: d.get_first(f.starts_at_ms).and_then(|v| v.as_i64()).unwrap_or(0),
                venue: text(f.venue),
                city: text(f.city),
                category: text(f.category),
                score,
            });
        }
        let next = req.offset + results.len();
        let next_offset = (next < total && next < OFFSET_MAX).then_some(next);
        Ok(SearchPage { results, total, next_offset })
    }
}
