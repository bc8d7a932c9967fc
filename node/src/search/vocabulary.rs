//! Every word of the combined text field, across segments, for typo
//! tolerance: a misspelt word is expanded into the known words within its
//! edit distance once per query, by walking one small automaton over one
//! dictionary, instead of walking it over every segment's term dictionary
//! and reading every matching term's postings into a bitset per segment
//! (that was two thirds of a typo query's CPU time at a million events).
//!
//! The set only grows: a segment's words are added the first time a reader
//! shows the segment; words of deleted events stay and simply find nothing.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use levenshtein_automata::{Distance, LevenshteinAutomatonBuilder, DFA, SINK_STATE};
use tantivy::index::SegmentId;
use tantivy::schema::Field;
use tantivy::Searcher;
use tantivy_fst::{Automaton, IntoStreamer, Map, Streamer};

/// Most known words one misspelt word expands into, closest first
/// (Elasticsearch's `max_expansions` default).
pub const FUZZY_EXPANSIONS_MAX: usize = 50;

pub struct Vocabulary {
    field: Field,
    /// Segments whose words are in `words`.
    seen: Mutex<HashSet<SegmentId>>,
    words: RwLock<Arc<Map<Vec<u8>>>>,
}

/// A word's typo automaton over the dictionary's bytes.
struct Dfa(DFA);

impl Automaton for Dfa {
    type State = u32;

    fn start(&self) -> u32 {
        self.0.initial_state()
    }

    fn is_match(&self, state: &u32) -> bool {
        matches!(self.0.distance(*state), Distance::Exact(_))
    }

    fn can_match(&self, state: &u32) -> bool {
        *state != SINK_STATE
    }

    fn accept(&self, state: &u32, byte: u8) -> u32 {
        self.0.transition(*state, byte)
    }
}

/// Automaton builders by distance (1 and 2), transpositions costing one
/// edit. Building one precomputes tables; once per process.
fn builder(distance: u8) -> &'static LevenshteinAutomatonBuilder {
    static BUILDERS: OnceLock<[LevenshteinAutomatonBuilder; 2]> = OnceLock::new();
    let all = BUILDERS.get_or_init(|| {
        [
            LevenshteinAutomatonBuilder::new(1, true),
            LevenshteinAutomatonBuilder::new(2, true),
        ]
    });
    &all[usize::from(distance.clamp(1, 2)) - 1]
}

impl Vocabulary {
    pub fn new(field: Field) -> Vocabulary {
        Vocabulary {
            field,
            seen: Mutex::default(),
            // An empty map always builds.
            words: RwLock::new(Arc::new(
                Map::from_iter(std::iter::empty::<(&[u8], u64)>()).expect("empty map"),
            )),
        }
    }

    /// Adds the words of the searcher's segments not seen yet.
    pub fn refresh(&self, searcher: &Searcher) -> anyhow::Result<()> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let mut new_words: BTreeSet<Vec<u8>> = BTreeSet::new();
        let current = self.current();
        let mut ids = HashSet::new();
        for segment in searcher.segment_readers() {
            let id = segment.segment_id();
            ids.insert(id);
            if seen.contains(&id) {
                continue;
            }
            let inverted = segment.inverted_index(self.field)?;
            let mut terms = inverted.terms().stream()?;
            while terms.advance() {
                let w = terms.key();
                if !current.contains_key(w) && !new_words.contains(w) {
                    new_words.insert(w.to_vec());
                }
            }
        }
        // Forget merged-away segments (their words stay).
        *seen = ids;
        if new_words.is_empty() {
            return Ok(());
        }
        let mut all: Vec<Vec<u8>> = Vec::with_capacity(current.len() + new_words.len());
        let mut old = current.stream();
        while let Some((k, _)) = old.next() {
            all.push(k.to_vec());
        }
        all.extend(new_words);
        all.sort_unstable();
        let map = Map::from_iter(all.iter().map(|k| (k.as_slice(), 0u64)))?;
        *self.words.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(map);
        Ok(())
    }

    fn current(&self) -> Arc<Map<Vec<u8>>> {
        self.words.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Number of known words.
    pub fn len(&self) -> usize {
        self.current().len()
    }

    /// Known words other than `word` itself within `distance` edits of it
    /// and, with `prefix_distance` > 0, known words that begin within
    /// `prefix_distance` edits of it (someone still typing); with their
    /// distances, closest first, at most [`FUZZY_EXPANSIONS_MAX`].
    pub fn expand(&self, word: &str, distance: u8, prefix_distance: u8) -> Vec<(String, u8)> {
        let words = self.current();
        let mut found: Vec<(String, u8)> = Vec::new();
        let mut walk = |dfa: Dfa| {
            let mut stream = words.search(&dfa).into_stream();
            while let Some((k, _)) = stream.next() {
                let Ok(k) = std::str::from_utf8(k) else {
                    continue;
                };
                // Distance 0: the word itself, or (as a prefix) a word the
                // prefix clause finds already.
                if let Distance::Exact(d @ 1..) = dfa.0.eval(k) {
                    found.push((k.to_string(), d));
                }
            }
        };
        if distance > 0 {
            walk(Dfa(builder(distance).build_dfa(word)));
        }
        if prefix_distance > 0 {
            walk(Dfa(builder(prefix_distance).build_prefix_dfa(word)));
        }
        // A word both walks found, once, at its smaller distance.
        found.sort_unstable();
        found.dedup_by(|later, first| later.0 == first.0);
        // Closest first, then nearest in length (a typo, not another word).
        let len = word.chars().count() as i64;
        found.sort_by_key(|(w, d)| (*d, (w.chars().count() as i64 - len).abs(), w.clone()));
        found.truncate(FUZZY_EXPANSIONS_MAX);
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tantivy::schema::{Schema, TEXT};
    use tantivy::{doc, Index, IndexWriter};

    /// A RAM index of one text field, holding one document of `text`.
    fn index_of(text: &str) -> (Field, Index, IndexWriter) {
        let mut b = Schema::builder();
        let field = b.add_text_field("text", TEXT);
        let index = Index::create_in_ram(b.build());
        let mut w = index.writer(15_000_000).unwrap();
        w.add_document(doc!(field => text)).unwrap();
        w.commit().unwrap();
        (field, index, w)
    }

    #[test]
    fn typos_expand_into_known_words_closest_first_and_new_segments_add_words() {
        let (text, index, mut w) = index_of("taylor swift tailor sweet swiftly");
        let reader = index.reader().unwrap();
        let vocab = Vocabulary::new(text);
        vocab.refresh(&reader.searcher()).unwrap();
        assert_eq!(vocab.len(), 5);

        // "taylr": taylor by one edit, tailor by two; not itself, not others.
        assert_eq!(
            vocab.expand("taylr", 2, 0),
            vec![("taylor".to_string(), 1), ("tailor".to_string(), 2)]
        );
        assert_eq!(vocab.expand("taylr", 1, 0), vec![("taylor".to_string(), 1)]);
        // Still typing: "swfi" begins swift and swiftly within one edit.
        let begun: Vec<String> = vocab
            .expand("swfi", 0, 1)
            .into_iter()
            .map(|(w, _)| w)
            .collect();
        assert_eq!(begun, vec!["swift".to_string(), "swiftly".to_string()]);
        // The word itself is never its own typo.
        assert!(vocab
            .expand("swift", 2, 1)
            .iter()
            .all(|(w, _)| w != "swift"));

        // A new segment's words join at the next refresh, once.
        w.add_document(doc!(text => "taylar")).unwrap();
        w.commit().unwrap();
        reader.reload().unwrap();
        assert!(vocab
            .expand("taylr", 1, 0)
            .iter()
            .all(|(w, _)| w != "taylar"));
        vocab.refresh(&reader.searcher()).unwrap();
        assert_eq!(vocab.len(), 6);
        assert!(vocab
            .expand("taylr", 1, 0)
            .contains(&("taylar".to_string(), 1)));
        vocab.refresh(&reader.searcher()).unwrap();
        assert_eq!(vocab.len(), 6);
    }

    #[test]
    fn expansions_are_capped() {
        // 26 * 26 words one or two edits from "aaa".
        let words: Vec<String> = ('a'..='z')
            .flat_map(|x| ('a'..='z').map(move |y| format!("a{x}{y}")))
            .collect();
        let (text, index, _) = index_of(&words.join(" "));
        let vocab = Vocabulary::new(text);
        vocab.refresh(&index.reader().unwrap().searcher()).unwrap();
        let found = vocab.expand("aaa", 2, 0);
        assert_eq!(found.len(), FUZZY_EXPANSIONS_MAX);
        // Closest first: the 50 one-edit words ("aa?", "a?a") fill the
        // expansions and no two-edit word gets in.
        assert!(found.iter().all(|(_, d)| *d == 1), "{found:?}");
    }
}
