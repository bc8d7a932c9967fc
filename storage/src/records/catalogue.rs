//! Catalogue records: venues, performers, events.

use boxoffice_raft::command::{EventSpec, Layout, PerformerSpec, RowSpec, SectionSpec, VenueSpec};
use serde::{Deserialize, Serialize};

/// A venue (`table::VENUE`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Venue {
    /// Its id.
    pub venue_id: u64,
    /// Display name.
    pub name: String,
    /// City, for search and display.
    pub city: String,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// Seats or general admission.
    pub layout: VenueLayout,
}

/// How a venue sells, as stored (in venues and in each event's inventory).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum VenueLayout {
    /// Numbered seats; seat ids run 0.. through sections, rows and numbers in order.
    Seated {
        /// Sections in display order.
        sections: Vec<Section>,
    },
    /// A quantity of interchangeable tickets.
    GeneralAdmission {
        /// Tickets.
        capacity: u32,
        /// Price of one.
        price_cents: u64,
    },
}

/// One section of a seated venue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Section {
    /// Section name.
    pub name: String,
    /// Rows in display order.
    pub rows: Vec<Row>,
}

/// One row of a section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Row name.
    pub name: String,
    /// Seats, numbered 1..=seats.
    pub seats: u32,
    /// Price of each.
    pub price_cents: u64,
}

impl VenueLayout {
    /// Tickets this layout sells.
    pub fn capacity(&self) -> u64 {
        match self {
            VenueLayout::Seated { sections } => sections
                .iter()
                .flat_map(|s| &s.rows)
                .map(|r| u64::from(r.seats))
                .sum(),
            VenueLayout::GeneralAdmission { capacity, .. } => u64::from(*capacity),
        }
    }

    /// True for general admission.
    pub fn is_general_admission(&self) -> bool {
        matches!(self, VenueLayout::GeneralAdmission { .. })
    }
}

impl From<&Layout> for VenueLayout {
    fn from(l: &Layout) -> Self {
        match l {
            Layout::Seated { sections } => VenueLayout::Seated {
                sections: sections
                    .iter()
                    .map(|s| Section {
                        name: s.name.clone(),
                        rows: s
                            .rows
                            .iter()
                            .map(|r| Row {
                                name: r.name.clone(),
                                seats: r.seats,
                                price_cents: r.price_cents,
                            })
                            .collect(),
                    })
                    .collect(),
            },
            Layout::GeneralAdmission {
                capacity,
                price_cents,
            } => VenueLayout::GeneralAdmission {
                capacity: *capacity,
                price_cents: *price_cents,
            },
        }
    }
}

impl From<&VenueLayout> for Layout {
    fn from(l: &VenueLayout) -> Self {
        match l {
            VenueLayout::Seated { sections } => Layout::Seated {
                sections: sections
                    .iter()
                    .map(|s| SectionSpec {
                        name: s.name.clone(),
                        rows: s
                            .rows
                            .iter()
                            .map(|r| RowSpec {
                                name: r.name.clone(),
                                seats: r.seats,
                                price_cents: r.price_cents,
                            })
                            .collect(),
                    })
                    .collect(),
            },
            VenueLayout::GeneralAdmission {
                capacity,
                price_cents,
            } => Layout::GeneralAdmission {
                capacity: *capacity,
                price_cents: *price_cents,
            },
        }
    }
}

impl Venue {
    /// The record of a venue created from `spec`.
    pub fn new(venue_id: u64, spec: &VenueSpec) -> Self {
        Venue {
            venue_id,
            name: spec.name.clone(),
            city: spec.city.clone(),
            lat: spec.lat,
            lon: spec.lon,
            layout: VenueLayout::from(&spec.layout),
        }
    }
}

/// A performer (`table::PERFORMER`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Performer {
    /// Its id.
    pub performer_id: u64,
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: String,
}

impl Performer {
    /// The record of a performer created from `spec`.
    pub fn new(performer_id: u64, spec: &PerformerSpec) -> Self {
        Performer {
            performer_id,
            name: spec.name.clone(),
            description: spec.description.clone(),
        }
    }
}

/// An event (`table::EVENT`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Its id.
    pub event_id: u64,
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Category, e.g. "concert".
    pub category: String,
    /// Where it happens.
    pub venue_id: u64,
    /// Who performs.
    pub performer_ids: Vec<u64>,
    /// Start time, ms since the Unix epoch.
    pub starts_at_ms: i64,
    /// How long a hold lasts.
    pub hold_ttl_ms: u64,
    /// Most tickets one user may hold or have booked.
    pub per_user_cap: u32,
    /// State-machine time of creation.
    pub created_at_ms: u64,
}

impl Event {
    /// The record of an event created from `spec` at `created_at_ms`.
    pub fn new(event_id: u64, spec: &EventSpec, created_at_ms: u64) -> Self {
        Event {
            event_id,
            name: spec.name.clone(),
            description: spec.description.clone(),
            category: spec.category.clone(),
            venue_id: spec.venue_id,
            performer_ids: spec.performer_ids.clone(),
            starts_at_ms: spec.starts_at_ms,
            hold_ttl_ms: spec.hold_ttl_ms,
            per_user_cap: spec.per_user_cap,
            created_at_ms,
        }
    }
}

/// The log index of an event's last change (`table::EVENT_CHANGED_AT`), to move
/// its entry in the change feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChangedAt(pub u64);

boxoffice_raft::versioned_v1! {
    Venue => "venue record",
    Performer => "performer record",
    Event => "event record",
    ChangedAt => "event change index",
}
