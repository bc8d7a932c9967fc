//! The catalogue group's commands: venues, performers, events, and the change
//! feed the search indexer follows.

use boxoffice_raft::command::*;
use boxoffice_raft::GroupId;

use super::{get, invalid, next_id, put};
use crate::keys::{table, Key};
use crate::kv::{Kv, KvRead};
use crate::records::*;

pub(super) fn create_venue(
    kv: &mut dyn Kv,
    group: GroupId,
    meta: &mut SmMeta,
    spec: &VenueSpec,
) -> Result<Effect, Rejection> {
    spec.validate().map_err(invalid)?;
    let venue_id = next_id(meta);
    put(
        kv,
        Key::sm(group, table::VENUE).u64(venue_id).build(),
        &Venue::new(venue_id, spec),
    );
    Ok(Effect::VenueCreated { venue_id })
}

pub(super) fn create_performer(
    kv: &mut dyn Kv,
    group: GroupId,
    meta: &mut SmMeta,
    spec: &PerformerSpec,
) -> Result<Effect, Rejection> {
    spec.validate().map_err(invalid)?;
    let performer_id = next_id(meta);
    put(
        kv,
        Key::sm(group, table::PERFORMER).u64(performer_id).build(),
        &Performer::new(performer_id, spec),
    );
    Ok(Effect::PerformerCreated { performer_id })
}

/// Checks an event against the catalogue; returns its venue's layout.
fn check_event(kv: &dyn KvRead, group: GroupId, spec: &EventSpec) -> Result<Layout, Rejection> {
    spec.validate().map_err(invalid)?;
    let venue: Venue = get(kv, &Key::sm(group, table::VENUE).u64(spec.venue_id).build()).ok_or(
        Rejection::UnknownVenue {
            venue_id: spec.venue_id,
        },
    )?;
    for &performer_id in &spec.performer_ids {
        if kv
            .get(&Key::sm(group, table::PERFORMER).u64(performer_id).build())
            .is_none()
        {
            return Err(Rejection::UnknownPerformer { performer_id });
        }
    }
    Ok(Layout::from(&venue.layout))
}

/// Moves the event's entry in the change feed to the applying entry's index.
fn note_event_change(kv: &mut dyn Kv, group: GroupId, meta: &SmMeta, event_id: u64) {
    let index = meta
        .last_applied
        .map(|l| l.index)
        .expect("a command applies at a log index");
    let at_key = Key::sm(group, table::EVENT_CHANGED_AT)
        .u64(event_id)
        .build();
    if let Some(ChangedAt(prev)) = get(kv, &at_key) {
        kv.delete(
            Key::sm(group, table::EVENT_CHANGE)
                .u64(prev)
                .u64(event_id)
                .build(),
        );
    }
    put(kv, at_key, &ChangedAt(index));
    kv.put(
        Key::sm(group, table::EVENT_CHANGE)
            .u64(index)
            .u64(event_id)
            .build(),
        Vec::new(),
    );
}

fn write_event(
    kv: &mut dyn Kv,
    group: GroupId,
    meta: &mut SmMeta,
    time: u64,
    spec: &EventSpec,
    layout: Layout,
) -> CreatedEvent {
    let event_id = next_id(meta);
    put(
        kv,
        Key::sm(group, table::EVENT).u64(event_id).build(),
        &Event::new(event_id, spec, time),
    );
    note_event_change(kv, group, meta, event_id);
    let inventory = InventorySpec {
        event_id,
        layout,
        hold_ttl_ms: spec.hold_ttl_ms,
        per_user_cap: spec.per_user_cap,
    };
    CreatedEvent {
        event_id,
        inventory,
    }
}

pub(super) fn create_event(
    kv: &mut dyn Kv,
    group: GroupId,
    meta: &mut SmMeta,
    time: u64,
    spec: &EventSpec,
) -> Result<Effect, Rejection> {
    let layout = check_event(kv, group, spec)?;
    let CreatedEvent {
        event_id,
        inventory,
    } = write_event(kv, group, meta, time, spec, layout);
    Ok(Effect::EventCreated {
        event_id,
        inventory,
    })
}

pub(super) fn update_event(
    kv: &mut dyn Kv,
    group: GroupId,
    meta: &SmMeta,
    event_id: u64,
    patch: &EventPatch,
) -> Result<Effect, Rejection> {
    if patch.is_empty() {
        return Err(invalid("the update changes nothing"));
    }
    let key = Key::sm(group, table::EVENT).u64(event_id).build();
    let mut event: Event = get(kv, &key).ok_or(Rejection::UnknownEvent { event_id })?;
    let spec = &mut event;
    if let Some(v) = &patch.name {
        spec.name = v.clone();
    }
    if let Some(v) = &patch.description {
        spec.description = v.clone();
    }
    if let Some(v) = &patch.category {
        spec.category = v.clone();
    }
    if let Some(v) = patch.starts_at_ms {
        spec.starts_at_ms = v;
    }
    check_event_text(&spec.name, &spec.category, &spec.description).map_err(invalid)?;
    check_starts_at(spec.starts_at_ms).map_err(invalid)?;
    put(kv, key, &event);
    note_event_change(kv, group, meta, event_id);
    Ok(Effect::EventUpdated { event_id })
}

pub(super) fn create_events(
    kv: &mut dyn Kv,
    group: GroupId,
    meta: &mut SmMeta,
    time: u64,
    specs: &[EventSpec],
) -> Result<Effect, Rejection> {
    if specs.is_empty() || specs.len() > EVENTS_BATCH_MAX {
        return Err(invalid(format!(
            "a batch holds 1..={EVENTS_BATCH_MAX} events"
        )));
    }
    let mut layouts = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        layouts.push(check_event(kv, group, spec).map_err(|r| match r {
            Rejection::InvalidInput { reason } => invalid(format!("events[{i}]: {reason}")),
            other => other,
        })?);
    }
    let events = specs
        .iter()
        .zip(layouts)
        .map(|(spec, layout)| write_event(kv, group, meta, time, spec, layout))
        .collect();
    Ok(Effect::EventsCreated { events })
}

/// Sets an event's own payment settings (feature level 2).
pub(super) fn set_event_payments(
    kv: &mut dyn Kv,
    group: GroupId,
    event_id: u64,
    settings: &EventPayments,
) -> Result<Effect, Rejection> {
    settings.check().map_err(invalid)?;
    if kv
        .get(&Key::sm(group, table::EVENT).u64(event_id).build())
        .is_none()
    {
        return Err(Rejection::UnknownEvent { event_id });
    }
    put(
        kv,
        Key::sm(group, table::EVENT_PAYMENTS).u64(event_id).build(),
        &EventPaymentSettings::from(settings),
    );
    Ok(Effect::EventUpdated { event_id })
}
