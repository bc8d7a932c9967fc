//! Catalogue commands: bulk event creation is all-or-nothing, updates change only
//! what they name and are checked like creates, inventories in bulk are idempotent.

use boxoffice_raft::command::*;
use boxoffice_raft::{Entry, GroupId};
use boxoffice_storage::read::Reader;
use boxoffice_storage::testing::{normal, request};
use boxoffice_storage::{Db, StateMachineStore};
use openraft::storage::RaftStateMachine;

const T0: u64 = 1_000_000;

fn entry(index: u64, command: Command) -> Entry {
    normal(index, request(T0 + index, None, command))
}

fn venue() -> Command {
    Command::CreateVenue(VenueSpec {
        name: "Hall".into(),
        city: "Lyon".into(),
        lat: 45.7,
        lon: 4.8,
        layout: Layout::GeneralAdmission {
            capacity: 100,
            price_cents: 500,
        },
    })
}

fn event(name: &str, venue_id: u64) -> EventSpec {
    EventSpec {
        name: name.into(),
        description: "d".into(),
        category: "concert".into(),
        venue_id,
        performer_ids: vec![],
        starts_at_ms: 1_800_000_000_000,
        hold_ttl_ms: 60_000,
        per_user_cap: 4,
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    sm: StateMachineStore,
    reader: Reader,
    index: u64,
}

impl Fixture {
    fn new(group: GroupId) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), &Default::default()).unwrap();
        let sm = StateMachineStore::open(db, group, &dir.path().join("snap"), &Default::default())
            .unwrap();
        Self {
            _dir: dir,
            reader: sm.reader(),
            sm,
            index: 0,
        }
    }

    async fn apply(&mut self, command: Command) -> Result<Effect, Rejection> {
        self.index += 1;
        let out = self.sm.apply([entry(self.index, command)]).await.unwrap();
        out.into_iter().next().unwrap().result
    }
}

#[tokio::test]
async fn a_batch_with_one_bad_event_creates_none() {
    let mut f = Fixture::new(GroupId::CATALOGUE);
    let Ok(Effect::VenueCreated { venue_id }) = f.apply(venue()).await else {
        panic!("venue")
    };
    let before = f.reader.begin(0).dump();
    let bad = f
        .apply(Command::CreateEvents(vec![
            event("A", venue_id),
            event("B", venue_id + 99),
        ]))
        .await;
    assert_eq!(
        bad,
        Err(Rejection::UnknownVenue {
            venue_id: venue_id + 99
        })
    );
    let bad = f
        .apply(Command::CreateEvents(vec![
            event("A", venue_id),
            event("", venue_id),
        ]))
        .await;
    assert!(
        matches!(bad, Err(Rejection::InvalidInput { ref reason }) if reason.starts_with("events[1]")),
        "{bad:?}"
    );
    assert!(matches!(
        f.apply(Command::CreateEvents(vec![])).await,
        Err(Rejection::InvalidInput { .. })
    ));
    let too_many = vec![event("A", venue_id); EVENTS_BATCH_MAX + 1];
    assert!(matches!(
        f.apply(Command::CreateEvents(too_many)).await,
        Err(Rejection::InvalidInput { .. })
    ));
    // Only bookkeeping (applied id, time) moved: no event exists.
    {
        let after = f.reader.begin(0);
        assert!(after.events(0, 10).is_empty());
        assert!(after.dump().len() <= before.len() + 1);
    }

    let Ok(Effect::EventsCreated { events }) = f
        .apply(Command::CreateEvents(vec![
            event("A", venue_id),
            event("B", venue_id),
        ]))
        .await
    else {
        panic!("batch")
    };
    let ids: Vec<u64> = events.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids[0] < ids[1]);
    let tx = f.reader.begin(0);
    assert_eq!(tx.event(ids[0]).unwrap().name, "A");
    assert_eq!(tx.event(ids[1]).unwrap().name, "B");
    assert_eq!(events[1].inventory.layout.capacity(), 100);
}

#[tokio::test]
async fn an_update_changes_only_what_it_names() {
    let mut f = Fixture::new(GroupId::CATALOGUE);
    let Ok(Effect::VenueCreated { venue_id }) = f.apply(venue()).await else {
        panic!("venue")
    };
    let Ok(Effect::EventCreated { event_id, .. }) = f
        .apply(Command::CreateEvent(event("Old name", venue_id)))
        .await
    else {
        panic!("event")
    };
    let patch = EventPatch {
        name: Some("New name".into()),
        starts_at_ms: Some(1_900_000_000_000),
        ..Default::default()
    };
    assert_eq!(
        f.apply(Command::UpdateEvent { event_id, patch }).await,
        Ok(Effect::EventUpdated { event_id })
    );
    let e = f.reader.begin(0).event(event_id).unwrap();
    assert_eq!(
        (e.name.as_str(), e.starts_at_ms, e.category.as_str()),
        ("New name", 1_900_000_000_000, "concert")
    );

    let empty = f
        .apply(Command::UpdateEvent {
            event_id,
            patch: EventPatch::default(),
        })
        .await;
    assert!(matches!(empty, Err(Rejection::InvalidInput { .. })));
    let blank = EventPatch {
        category: Some(String::new()),
        ..Default::default()
    };
    assert!(matches!(
        f.apply(Command::UpdateEvent {
            event_id,
            patch: blank
        })
        .await,
        Err(Rejection::InvalidInput { .. })
    ));
    let missing = EventPatch {
        name: Some("x".into()),
        ..Default::default()
    };
    assert_eq!(
        f.apply(Command::UpdateEvent {
            event_id: 999,
            patch: missing
        })
        .await,
        Err(Rejection::UnknownEvent { event_id: 999 })
    );
    // Rejected updates left the event as it was.
    assert_eq!(
        f.reader.begin(0).event(event_id).unwrap().category,
        "concert"
    );
}

#[tokio::test]
async fn bulk_inventories_are_idempotent_and_shard_only() {
    let mut f = Fixture::new(GroupId(1));
    let inv = |event_id| InventorySpec {
        event_id,
        layout: Layout::GeneralAdmission {
            capacity: 10,
            price_cents: 1,
        },
        hold_ttl_ms: 60_000,
        per_user_cap: 2,
    };
    assert_eq!(
        f.apply(Command::CreateInventories(vec![inv(1), inv(2)]))
            .await,
        Ok(Effect::InventoriesCreated {
            event_ids: vec![1, 2]
        })
    );
    let hold = Command::Hold(HoldRequest {
        event_id: 2,
        user: "u".into(),
        selection: Selection::Quantity(2),
    });
    assert!(matches!(f.apply(hold).await, Ok(Effect::Held(_))));
    // Re-creating does not reset what was sold or held.
    assert_eq!(
        f.apply(Command::CreateInventories(vec![inv(2), inv(3)]))
            .await,
        Ok(Effect::InventoriesCreated {
            event_ids: vec![2, 3]
        })
    );
    assert_eq!(f.reader.begin(T0 + 10).available(2), Some(8));
    assert!(matches!(
        f.apply(Command::CreateEvents(vec![event("A", 1)])).await,
        Err(Rejection::InvalidInput { .. })
    ));
}
