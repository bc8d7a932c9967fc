//! Rendered event views (event, venue, performers), cached per node.
//!
//! Event details change rarely and are read often, so a view is rendered once
//! from the catalogue replica and kept. The catalogue's change stream drops the
//! entry of every event a command touches, and everything on a snapshot install
//! or a missed change. A generation number closes the race between a reader that
//! rendered from an older snapshot and an invalidation that ran meanwhile: a view
//! is stored only if no invalidation happened since its reader started.
//! Seat availability is never in here; it is read per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use boxoffice_api::EventDetails;

/// The cache. Bounded by `limits.event_cache_entries_max`: when full it is
/// emptied (cheap, and the hot set refills at once).
pub struct EventCache {
    max: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    generation: u64,
    views: HashMap<u64, Arc<EventDetails>>,
}

/// Taken before a reader opens its snapshot; [`EventCache::insert`] needs it.
#[derive(Clone, Copy, Debug)]
pub struct Ticket(u64);

impl EventCache {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The map holds no invariant a panicking holder could break half-way.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Call before opening the read snapshot the view will be rendered from.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.lock().generation)
    }

    pub fn get(&self, event_id: u64) -> Option<Arc<EventDetails>> {
        self.lock().views.get(&event_id).cloned()
    }

    /// Stores a view rendered after `ticket` was taken, unless something was
    /// invalidated since (the view may predate that change).
    pub fn insert(&self, ticket: Ticket, event_id: u64, view: Arc<EventDetails>) {
        let mut inner = self.lock();
        if inner.generation != ticket.0 {
            return;
        }
        if inner.views.len() >= self.max {
            inner.views.clear();
        }
        inner.views.insert(event_id, view);
    }

    /// The catalogue applied a change to this event.
    pub fn invalidate(&self, event_id: u64) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.views.remove(&event_id);
    }

    /// The catalogue changed in a way not attributable to single events.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.views.clear();
    }

    pub fn len(&self) -> usize {
        self.lock().views.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn details(id: u64, name: &str) -> Arc<EventDetails> {
        Arc::new(EventDetails {
            event: boxoffice_api::EventInfo {
                event_id: id,
                name: name.into(),
                description: String::new(),
                category: "test".into(),
                starts_at: String::new(),
                starts_at_ms: 0,
                hold_ttl_s: 600,
                per_user_cap: 8,
                shard: None,
            },
            venue: None,
            performers: vec![],
        })
    }

    #[test]
    fn a_view_rendered_before_an_invalidation_is_not_stored() {
        let c = EventCache::new(10);
        let t = c.ticket();
        c.invalidate(1);
        c.insert(t, 1, details(1, "old"));
        assert!(c.get(1).is_none());
        let t = c.ticket();
        c.insert(t, 1, details(1, "new"));
        assert_eq!(c.get(1).unwrap().event.name, "new");
        c.invalidate(1);
        assert!(c.get(1).is_none());
    }

    #[test]
    fn bounded_by_its_limit() {
        let c = EventCache::new(3);
        for id in 0..10 {
            let t = c.ticket();
            c.insert(t, id, details(id, "x"));
            assert!(c.len() <= 3);
        }
        assert_eq!(c.get(9).unwrap().event.event_id, 9);
        c.clear();
        assert!(c.is_empty());
    }
}
