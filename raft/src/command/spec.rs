//! What commands carry: venues, layouts, events, inventories, hold requests.

use serde::{Deserialize, Serialize};

use super::{
    DESCRIPTION_LEN_MAX, EVENT_PERFORMERS_MAX, HOLD_TTL_MS_MAX, HOLD_TTL_MS_MIN, NAME_LEN_MAX,
    PER_USER_CAP_MAX, PRICE_CENTS_MAX, SECTION_ROWS_MAX, STARTS_AT_MS_MAX, STARTS_AT_MS_MIN,
    VENUE_SEATS_MAX, VENUE_SECTIONS_MAX,
};

/// A venue and its seat map.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VenueSpec {
    /// Display name.
    pub name: String,
    /// City, for search and display.
    pub city: String,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// Seats or general admission.
    pub layout: Layout,
}

/// How a venue sells: numbered seats or a standing capacity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Layout {
    /// Numbered seats; seat ids are assigned 0.. in section, row, number order.
    Seated {
        /// Sections in display order.
        sections: Vec<SectionSpec>,
    },
    /// A quantity of interchangeable tickets.
    GeneralAdmission {
        /// Tickets available.
        capacity: u32,
        /// Price of one ticket.
        price_cents: u64,
    },
}

impl Layout {
    /// Number of tickets this layout sells.
    pub fn capacity(&self) -> u64 {
        match self {
            Layout::Seated { sections } => sections
                .iter()
                .flat_map(|s| &s.rows)
                .map(|r| u64::from(r.seats))
                .sum(),
            Layout::GeneralAdmission { capacity, .. } => u64::from(*capacity),
        }
    }

    /// Checks names, counts and sizes; returns why the layout is unacceptable.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Layout::Seated { sections } => {
                if sections.is_empty() {
                    return Err("a seated venue needs at least one section".into());
                }
                if sections.len() > VENUE_SECTIONS_MAX {
                    return Err(format!("at most {VENUE_SECTIONS_MAX} sections"));
                }
                for s in sections {
                    check_name("section name", &s.name)?;
                    if s.rows.is_empty() {
                        return Err(format!("section {:?} has no rows", s.name));
                    }
                    if s.rows.len() > SECTION_ROWS_MAX {
                        return Err(format!(
                            "section {:?}: at most {SECTION_ROWS_MAX} rows",
                            s.name
                        ));
                    }
                    for r in &s.rows {
                        check_name("row name", &r.name)?;
                        check_price(r.price_cents)?;
                        if r.seats == 0 {
                            return Err(format!(
                                "row {:?} in section {:?} has no seats",
                                r.name, s.name
                            ));
                        }
                    }
                }
                let total = self.capacity();
                if total > u64::from(VENUE_SEATS_MAX) {
                    return Err(format!(
                        "{total} seats is more than the limit of {VENUE_SEATS_MAX}"
                    ));
                }
                Ok(())
            }
            Layout::GeneralAdmission {
                capacity,
                price_cents,
            } => {
                if *capacity == 0 || *capacity > VENUE_SEATS_MAX {
                    return Err(format!("capacity must be between 1 and {VENUE_SEATS_MAX}"));
                }
                check_price(*price_cents)
            }
        }
    }
}

/// Checks a ticket price is within [`PRICE_CENTS_MAX`].
pub fn check_price(price_cents: u64) -> Result<(), String> {
    if price_cents > PRICE_CENTS_MAX {
        return Err(format!(
            "price_cents {price_cents} is more than the limit of {PRICE_CENTS_MAX}"
        ));
    }
    Ok(())
}

/// Checks a free text is not too long.
pub fn check_description(value: &str) -> Result<(), String> {
    if value.len() > DESCRIPTION_LEN_MAX {
        return Err(format!(
            "description is longer than {DESCRIPTION_LEN_MAX} bytes"
        ));
    }
    Ok(())
}

/// Checks an event's hold lifetime and per-user cap.
pub fn check_event_limits(hold_ttl_ms: u64, per_user_cap: u32) -> Result<(), String> {
    if !(HOLD_TTL_MS_MIN..=HOLD_TTL_MS_MAX).contains(&hold_ttl_ms) {
        return Err(format!(
            "hold ttl must be between {HOLD_TTL_MS_MIN} and {HOLD_TTL_MS_MAX} ms"
        ));
    }
    if !(1..=PER_USER_CAP_MAX).contains(&per_user_cap) {
        return Err(format!(
            "per_user_cap must be between 1 and {PER_USER_CAP_MAX}"
        ));
    }
    Ok(())
}

/// Checks an event's start time.
pub fn check_starts_at(starts_at_ms: i64) -> Result<(), String> {
    if !(STARTS_AT_MS_MIN..=STARTS_AT_MS_MAX).contains(&starts_at_ms) {
        return Err(format!(
            "starts_at must be between the Unix epoch and 2200-01-01 ({STARTS_AT_MS_MIN}..={STARTS_AT_MS_MAX} ms)"
        ));
    }
    Ok(())
}

/// Checks an event's descriptive fields.
pub fn check_event_text(name: &str, category: &str, description: &str) -> Result<(), String> {
    check_name("event name", name)?;
    check_name("category", category)?;
    check_description(description)
}

impl VenueSpec {
    /// Checks every field; returns why the venue is unacceptable.
    pub fn validate(&self) -> Result<(), String> {
        check_name("venue name", &self.name)?;
        check_name("city", &self.city)?;
        if !(self.lat.is_finite() && (-90.0..=90.0).contains(&self.lat)) {
            return Err("lat must be between -90 and 90".into());
        }
        if !(self.lon.is_finite() && (-180.0..=180.0).contains(&self.lon)) {
            return Err("lon must be between -180 and 180".into());
        }
        self.layout.validate()
    }
}

impl PerformerSpec {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), String> {
        check_name("performer name", &self.name)?;
        check_description(&self.description)
    }
}

impl EventSpec {
    /// Checks every field that needs no catalogue lookup (the venue and the
    /// performers must also exist, which apply checks).
    pub fn validate(&self) -> Result<(), String> {
        check_event_text(&self.name, &self.category, &self.description)?;
        check_event_limits(self.hold_ttl_ms, self.per_user_cap)?;
        check_starts_at(self.starts_at_ms)?;
        if self.performer_ids.len() > EVENT_PERFORMERS_MAX {
            return Err(format!("at most {EVENT_PERFORMERS_MAX} performers"));
        }
        Ok(())
    }
}

impl InventorySpec {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), String> {
        self.layout.validate()?;
        check_event_limits(self.hold_ttl_ms, self.per_user_cap)
    }
}

/// Checks a name is non-empty and not too long.
pub fn check_name(what: &str, value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if value.len() > NAME_LEN_MAX {
        return Err(format!("{what} is longer than {NAME_LEN_MAX} bytes"));
    }
    Ok(())
}

/// One section of a seated venue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SectionSpec {
    /// Section name, e.g. "Floor" or "Balcony".
    pub name: String,
    /// Rows in display order.
    pub rows: Vec<RowSpec>,
}

/// One row of a section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RowSpec {
    /// Row name, e.g. "A".
    pub name: String,
    /// Seats in the row, numbered 1..=seats.
    pub seats: u32,
    /// Price of each seat in the row.
    pub price_cents: u64,
}

/// A performer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PerformerSpec {
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: String,
}

/// An event, as created by an admin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventSpec {
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Category, e.g. "concert", "sports", "theatre".
    pub category: String,
    /// Where it happens; must exist.
    pub venue_id: u64,
    /// Who performs; each must exist.
    pub performer_ids: Vec<u64>,
    /// Start time, ms since the Unix epoch.
    pub starts_at_ms: i64,
    /// How long a hold lasts.
    pub hold_ttl_ms: u64,
    /// Most tickets one user may hold or have booked for this event.
    pub per_user_cap: u32,
}

/// What the inventory shard needs to sell an event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InventorySpec {
    /// The event.
    pub event_id: u64,
    /// The venue's map at the time the event was created.
    pub layout: Layout,
    /// How long a hold lasts.
    pub hold_ttl_ms: u64,
    /// Most tickets one user may hold or have booked for this event.
    pub per_user_cap: u32,
}

/// A hold request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HoldRequest {
    /// The event.
    pub event_id: u64,
    /// The authenticated user.
    pub user: String,
    /// Which seats, or how many.
    pub selection: Selection,
}

/// What a hold asks for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Selection {
    /// These seat ids, all or nothing.
    Seats(Vec<u32>),
    /// This many tickets: general admission, or the best available seats.
    Quantity(u32),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_validation() {
        let ok = Layout::Seated {
            sections: vec![SectionSpec {
                name: "Floor".into(),
                rows: vec![RowSpec {
                    name: "A".into(),
                    seats: 10,
                    price_cents: 100,
                }],
            }],
        };
        assert!(ok.validate().is_ok());
        assert_eq!(ok.capacity(), 10);
        assert!(Layout::Seated { sections: vec![] }.validate().is_err());
        assert!(Layout::GeneralAdmission {
            capacity: 0,
            price_cents: 1
        }
        .validate()
        .is_err());
        let too_big = Layout::Seated {
            sections: vec![SectionSpec {
                name: "X".into(),
                rows: vec![RowSpec {
                    name: "A".into(),
                    seats: VENUE_SEATS_MAX + 1,
                    price_cents: 1,
                }],
            }],
        };
        assert!(too_big.validate().is_err());
    }
}
