//! Type-ahead suggestions (`GET /v1/search/suggest?q=`): performers and
//! venues from a small in-memory index of their names, events from the
//! node's search index. Prefix matching on the last word, and typo-tolerant
//! matching on every word, as search does.
//!
//! The performer and venue index is rebuilt from the catalogue replica
//! whenever one is created (they are never changed), at most once per
//! `search.suggest_refresh_ms`, off the request path; a suggestion request
//! reads whichever build is current.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use boxoffice_raft::command::Effect;
use boxoffice_storage::read::Reader;
use boxoffice_storage::state_machine::StateMachineStore;
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, BoostQuery, FuzzyTermQuery, Occur, Query, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, Schema, Value as _, INDEXED, STORED, TEXT};
use tantivy::{doc, Index, Searcher, TantivyDocument, Term};

use super::{fuzzy_distance, word_prefixes, PREFIX_CHARS_MAX};

/// Most suggestions one request may ask for.
pub const SUGGEST_LIMIT_MAX: usize = 20;
/// Suggestions when the request does not say.
pub const SUGGEST_LIMIT_DEFAULT: usize = 8;
/// Memory budget of the writer that builds the performer and venue index
/// (Tantivy's smallest).
const SUGGEST_WRITER_BYTES: usize = 15_000_000;
/// Records read from the replica per batch while building.
const SUGGEST_READ_BATCH: usize = 1000;

/// What a suggestion names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SuggestionKind {
    /// A performer.
    Performer,
    /// A venue.
    Venue,
    /// An event.
    Event,
}

impl SuggestionKind {
    /// Its name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            SuggestionKind::Performer => "performer",
            SuggestionKind::Venue => "venue",
            SuggestionKind::Event => "event",
        }
    }
}

/// One suggestion.
#[derive(Clone, Debug, PartialEq)]
pub struct Suggestion {
    /// What it names.
    pub kind: SuggestionKind,
    /// Its id.
    pub id: u64,
    /// Its name.
    pub text: String,
    /// For an event, its start (ms).
    pub starts_at_ms: Option<i64>,
    /// For a venue, its city; for an event, its venue's city.
    pub city: Option<String>,
}

#[derive(Clone, Copy)]
struct NameFields {
    kind: Field,
    id: Field,
    name: Field,
    city: Field,
    words: Field,
    prefixes: Field,
}

fn name_schema() -> (Schema, NameFields) {
    let mut b = Schema::builder();
    let f = NameFields {
        kind: b.add_u64_field("kind", STORED),
        id: b.add_u64_field("id", INDEXED | STORED),
        name: b.add_text_field("name", STORED),
        city: b.add_text_field("city", STORED),
        words: b.add_text_field("words", TEXT),
        prefixes: b.add_text_field("prefixes", super::prefix_options()),
    };
    (b.build(), f)
}

struct Built {
    searcher: Searcher,
    fields: NameFields,
}

/// The performer and venue names index, rebuilt as they are created.
#[derive(Default)]
pub struct NameIndex {
    current: RwLock<Option<Arc<Built>>>,
    /// A performer or venue was created since the last build.
    dirty: AtomicBool,
}

/// The clauses matching `words` against a names field set: each word
/// exactly and the last also as a prefix; with `typos`, also each word
/// within its typo distance, and the last as a prefix with one typo from
/// four characters on.
pub fn name_clauses(
    words: &[String],
    exact: Field,
    prefixes: Field,
    typos: bool,
) -> Vec<(Occur, Box<dyn Query>)> {
    let mut out: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    for (i, w) in words.iter().enumerate() {
        let last = i + 1 == words.len();
        let term = Term::from_field_text(exact, w);
        let mut any: Vec<(Occur, Box<dyn Query>)> = vec![(
            Occur::Should,
            Box::new(BoostQuery::new(
                Box::new(TermQuery::new(term.clone(), IndexRecordOption::WithFreqs)),
                4.0,
            )),
        )];
        let d = fuzzy_distance(w);
        if typos && d > 0 {
            any.push((
                Occur::Should,
                Box::new(FuzzyTermQuery::new(term.clone(), d, true)),
            ));
        }
        if last {
            let prefix: Box<dyn Query> = if w.chars().count() <= PREFIX_CHARS_MAX {
                Box::new(TermQuery::new(
                    Term::from_field_text(prefixes, w),
                    IndexRecordOption::Basic,
                ))
            } else {
                Box::new(FuzzyTermQuery::new_prefix(term.clone(), 0, false))
            };
            any.push((Occur::Should, Box::new(BoostQuery::new(prefix, 2.0))));
            if typos && w.chars().count() >= 4 {
                any.push((
                    Occur::Should,
                    Box::new(FuzzyTermQuery::new_prefix(term, 1, true)),
                ));
            }
        }
        out.push((Occur::Must, Box::new(BooleanQuery::new(any))));
    }
    out
}

impl NameIndex {
    /// Whether a build is due.
    fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Relaxed)
    }

    /// Rebuilds from every performer and venue of the replica.
    pub fn rebuild(&self, reader: &Reader) -> anyhow::Result<()> {
        self.dirty.store(false, Ordering::Relaxed);
        let (schema, f) = name_schema();
        let index = Index::create_in_ram(schema);
        let mut w = index.writer_with_num_threads(1, SUGGEST_WRITER_BYTES)?;
        let tx = reader.begin(0);
        let mut after = 0;
        loop {
            let page = tx.performers(after, SUGGEST_READ_BATCH);
            let Some(last) = page.last().map(|p| p.performer_id) else {
                break;
            };
            for p in page {
                w.add_document(doc!(
                    f.kind => 0u64,
                    f.id => p.performer_id,
                    f.name => p.name.clone(),
                    f.words => p.name.clone(),
                    f.prefixes => word_prefixes([p.name.as_str()]),
                ))?;
            }
            after = last;
        }
        after = 0;
        loop {
            let page = tx.venues(after, SUGGEST_READ_BATCH);
            let Some(last) = page.last().map(|v| v.venue_id) else {
                break;
            };
            for v in page {
                w.add_document(doc!(
                    f.kind => 1u64,
                    f.id => v.venue_id,
                    f.name => v.name.clone(),
                    f.city => v.city.clone(),
                    f.words => v.name.clone(),
                    f.prefixes => word_prefixes([v.name.as_str()]),
                ))?;
            }
            after = last;
        }
        w.commit()?;
        // One segment: a query walks each segment's dictionary once per term.
        let segments = index.searchable_segment_ids()?;
        if segments.len() > 1 {
            w.merge(&segments).wait()?;
        }
        w.wait_merging_threads()?;
        let searcher = index.reader()?.searcher();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(Built {
            searcher,
            fields: f,
        }));
        Ok(())
    }

    /// The best `limit` performers and venues for `words`.
    pub fn suggest(&self, words: &[String], limit: usize) -> anyhow::Result<Vec<Suggestion>> {
        let Some(built) = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            return Ok(Vec::new());
        };
        if words.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let f = built.fields;
        // Typo automata cost more than the rest of a suggestion: they join
        // only when the names as typed are fewer than asked for (an exact
        // match outranks a typo anyway).
        let search = |typos| {
            let query = BooleanQuery::new(name_clauses(words, f.words, f.prefixes, typos));
            built.searcher.search(&query, &TopDocs::with_limit(limit))
        };
        let mut top = search(false)?;
        if top.len() < limit {
            top = search(true)?;
        }
        top.into_iter()
            .map(|(_, addr)| {
                let d: TantivyDocument = built.searcher.doc(addr)?;
                let text = |field| {
                    d.get_first(field)
                        .and_then(|v| v.as_str())
                        .map(str::to_string)
                };
                let num = |field| d.get_first(field).and_then(|v| v.as_u64()).unwrap_or(0);
                Ok(Suggestion {
                    kind: if num(f.kind) == 0 {
                        SuggestionKind::Performer
                    } else {
                        SuggestionKind::Venue
                    },
                    id: num(f.id),
                    text: text(f.name).unwrap_or_default(),
                    starts_at_ms: None,
                    city: text(f.city),
                })
            })
            .collect()
    }

    /// Keeps the index current: builds it, then rebuilds it (at most once
    /// per `refresh`) after a performer or venue is created or a snapshot
    /// replaces the replica. Runs until the change stream closes.
    pub async fn run(
        self: Arc<Self>,
        catalogue: StateMachineStore,
        reader: Reader,
        refresh: Duration,
    ) {
        let mut changes = catalogue.changes();
        self.dirty.store(true, Ordering::Relaxed);
        let mut tick = tokio::time::interval(refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                c = changes.recv() => match c {
                    Ok(c) => {
                        if c.snapshot_installed
                            || matches!(
                                c.outcome.result,
                                Ok(Effect::VenueCreated { .. } | Effect::PerformerCreated { .. })
                            )
                        {
                            self.dirty.store(true, Ordering::Relaxed);
                        }
                    }
                    // Missed changes may have been creations.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        self.dirty.store(true, Ordering::Relaxed);
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = tick.tick() => {
                    if !self.is_dirty() {
                        continue;
                    }
                    let (this, r) = (self.clone(), reader.clone());
                    match tokio::task::spawn_blocking(move || this.rebuild(&r)).await {
                        Ok(Ok(())) => {}
                        _ => {
                            tracing::warn!("suggestion index build failed; retrying");
                            self.dirty.store(true, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
    }
}
