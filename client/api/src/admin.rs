//! The admin API (`/admin/v1`, admin token) and the health endpoints.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::common::Applied;

// ---------------------------------------------------------------- health

/// `GET /healthz`: the process answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// Always `ok`.
    pub status: String,
    /// The answering node.
    pub node_id: u64,
}

/// `GET /readyz`: 200 when bootstrapped and every group has a leader this node
/// knows, 503 otherwise (with `reason`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Readiness {
    /// Ready to serve.
    pub ready: bool,
    /// The answering node (when ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<u64>,
    /// Inventory shards (when ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<u16>,
    /// Whether the search index has been built (when ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_ready: Option<bool>,
    /// Why not (when not ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Groups without a known leader (when that is why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<u16>>,
}

// --------------------------------------------------------------- cluster

/// A cluster member: id and the address peers reach it at (its `peer_listen`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Node id (≥ 1).
    pub id: u64,
    /// `host:port` of its peer listener.
    pub addr: String,
    /// Location labels (`zone`, `rack`, `host`): replicas of a shard go to
    /// nodes whose labels differ first.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A member as `GET /admin/v1/cluster` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemberStatus {
    /// Node id (≥ 1).
    pub id: u64,
    /// `host:port` of its peer listener.
    pub addr: String,
    /// The highest feature level it allows, as it last said (the answering
    /// node: its setting; `None` for a peer not heard from yet, or of a release
    /// that does not say).
    #[serde(default)]
    pub feature_level_max: Option<u32>,
}

/// `POST /admin/v1/cluster/init`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ClusterInit {
    /// Every first member, the receiving node among them.
    pub members: Vec<Member>,
    /// Inventory shards (default 8), fixed for the cluster's life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<u16>,
    /// Voters each shard keeps (default 3, at most the members): each shard
    /// is placed on that many members, the catalogue has voters on as many
    /// and learners on every other member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_factor: Option<u8>,
}

/// The answer of a cluster bootstrap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterInitialized {
    /// Inventory shards.
    pub shards: u16,
    /// Member ids.
    pub members: Vec<u64>,
    /// Groups initialised by this call (none when repeated).
    pub initialized_groups: Vec<u16>,
    /// The node each newly initialised group started on (its first leader).
    pub first_leaders: BTreeMap<u16, u64>,
    /// Each group's voters.
    #[serde(default)]
    pub voters: BTreeMap<u16, Vec<u64>>,
}

/// One group as `GET /admin/v1/cluster` shows it (this node's view).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupStatus {
    /// Group id (0 = catalogue).
    pub group: u16,
    /// `catalogue` or `shard-N`.
    pub name: String,
    /// The leader this node knows of.
    pub leader: Option<u64>,
    /// This node's Raft state (`Leader`, `Follower`, `Learner`, `Candidate`).
    pub state: String,
    /// Current term.
    pub term: u64,
    /// Last log index.
    pub last_log_index: Option<u64>,
    /// Highest committed index this node has saved.
    pub committed_index: Option<u64>,
    /// Last applied index.
    pub applied_index: Option<u64>,
    /// State-machine time of the last applied entry.
    pub applied_time_ms: Option<u64>,
    /// Index of the last snapshot.
    pub snapshot_index: Option<u64>,
    /// Last purged log index.
    pub purged_index: Option<u64>,
    /// Voters.
    pub voters: Vec<u64>,
    /// The group's feature level as this replica has applied it. A leader
    /// raises it to the lowest `feature_level_max` of the group's members.
    #[serde(default)]
    pub feature_level: u32,
    /// What the shard's payments came to, as this replica has applied them
    /// (shards at feature level 2; absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payments: Option<PaymentCountsView>,
    /// On the leader: the last log index each replica (the leader too) has
    /// acknowledged as durable in this term, by node id (a JSON object's keys
    /// are strings: `{"1": 239}`). Empty elsewhere.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, u64>))]
    pub matched: BTreeMap<u64, u64>,
}

/// A shard's payment counts (counted by apply, the same on every replica).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PaymentCountsView {
    /// Checkouts that put a payment in flight.
    pub checkouts: u64,
    /// Holds booked by a payment while live.
    pub booked: u64,
    /// Holds booked by a payment that came after they expired.
    pub booked_late: u64,
    /// Payments that came after their seats were taken (refunded).
    pub late_refunds: u64,
    /// Payments of the wrong amount (refunded).
    pub mismatch_refunds: u64,
    /// Payments that failed or were cancelled.
    pub failed: u64,
    /// Bookings cancelled.
    pub cancelled: u64,
    /// Refunds paid back.
    pub refunded: u64,
    /// Refund attempts that failed.
    pub refund_failures: u64,
}

/// `GET /admin/v1/cluster`: the answering node's view of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterStatus {
    /// The answering node.
    pub node_id: u64,
    /// Its advertised public address.
    pub addr: String,
    /// Its advertised cluster address (what its peers and the membership use).
    #[serde(default)]
    pub peer_addr: String,
    /// Inventory shards, once bootstrapped.
    pub shards: Option<u16>,
    /// Every member any group knows of.
    pub members: Vec<MemberStatus>,
    /// Every group hosted here.
    pub groups: Vec<GroupStatus>,
    /// Event views cached.
    pub event_cache_entries: usize,
    /// Live seat-map streams open.
    pub sse_streams_open: usize,
    /// Stream snapshots serialized since the node started (streams starting
    /// from the same state share one).
    #[serde(default)]
    pub sse_snapshots_serialized: u64,
    /// Fault injection's clock offset (0 unless set).
    pub clock_offset_ms: i64,
    /// The placement directory as this node's catalogue replica has it.
    #[serde(default)]
    pub placement: Option<PlacementView>,
    /// Replica moves this node runs now (as their groups' leader).
    #[serde(default)]
    pub operations: Vec<OperationView>,
}

/// The placement directory: which nodes hold each group's replicas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlacementView {
    /// Voters each shard keeps.
    pub replication_factor: Option<u8>,
    /// Every node.
    pub nodes: Vec<PlacedNode>,
    /// Every group's replicas.
    pub groups: Vec<GroupPlacementView>,
}

/// A node in the directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlacedNode {
    /// Node id.
    pub id: u64,
    /// Its cluster address.
    pub addr: String,
    /// Its location labels.
    pub labels: BTreeMap<String, String>,
    /// `up`, `draining` or `down`.
    pub state: String,
    /// Voters it holds.
    pub voters: usize,
    /// Learners it holds.
    pub learners: usize,
}

/// One group's replicas in the directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupPlacementView {
    /// The group (0: the catalogue).
    pub group: u16,
    /// Its voters.
    pub voters: Vec<u64>,
    /// Its learners.
    pub learners: Vec<u64>,
    /// The log index of the membership this describes.
    pub epoch: u64,
}

/// An operation in flight on the answering node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OperationView {
    /// `move_replica` or `move_leader`.
    pub kind: String,
    /// The group.
    pub group: u16,
    /// The node giving a replica (or the leadership) away.
    pub from: u64,
    /// The node taking it.
    pub to: u64,
    /// Its current step.
    pub phase: String,
    /// Milliseconds since it started.
    pub running_ms: u64,
}

/// `POST /admin/v1/nodes`: a new node joins (started with an empty data
/// directory); it takes replicas from the balancer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewNode {
    /// Its id (≥ 1, not in use).
    pub id: u64,
    /// `host:port` of its peer listener.
    pub addr: String,
    /// Location labels (`zone`, `rack`, `host`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A node's state after `POST /admin/v1/nodes...`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeStateView {
    /// The node.
    pub id: u64,
    /// `up`, `draining` or `down`.
    pub state: String,
    /// Voters it still holds, by the directory.
    pub voters: usize,
}

/// `POST /admin/v1/groups/{g}/move`: move one replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReplicaMove {
    /// The node giving its replica away (a voter of the group).
    pub from: u64,
    /// The node taking it (in the placement directory, not a voter yet).
    pub to: u64,
}

/// The answer of a replica move.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReplicaMoved {
    /// The group.
    pub group: u16,
    /// Its voters now.
    pub voters: Vec<u64>,
    /// False when the move had been done already.
    pub moved: bool,
    /// Milliseconds the new replica took to catch up.
    pub catch_up_ms: u64,
}

/// `POST /admin/v1/groups/{g}/leader`: hand the group's leadership to a voter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LeaderTransfer {
    /// The voter to lead the group.
    pub to: u64,
}

/// The answer of a leadership handoff.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaderTransferred {
    /// The group.
    pub group: u16,
    /// Its leader now.
    pub leader: u64,
    /// False when `to` led the group already.
    pub moved: bool,
    /// Milliseconds the old leader held the group's writes (they went to the
    /// new leader after).
    pub writes_held_ms: u64,
}

/// `POST /admin/v1/groups/{g}/snapshot` (202).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SnapshotTriggered {
    /// The group.
    pub group: u16,
    /// Always `triggered`: the snapshot is built in the background.
    pub snapshot: String,
}

/// What to do to a node's membership of one group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum MemberAction {
    /// Drop it from the voters (and from replication).
    Remove,
    /// Add it as a learner at `addr` (it catches up in the background).
    AddLearner,
    /// Make a learner a voter.
    Promote,
}

/// `POST /admin/v1/groups/{g}/members/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MemberChange {
    /// What to do.
    pub action: MemberAction,
    /// The node's cluster address (its `peer_listen`), for `add_learner` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// Accepts an `add_learner` address that is neither a current member's nor
    /// in the node's `peer_addresses_allowed` (a new machine). Without it such an
    /// address is refused: a typo would hand a stranger a replica of the data.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_unlisted_addr: bool,
}

/// The group's membership after a change, as the answering node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupMembership {
    /// The group.
    pub group: u16,
    /// Voters.
    pub voters: Vec<u64>,
    /// Learners.
    pub learners: Vec<u64>,
    /// True when this node's own view shows the change (it is committed either way).
    pub seen_here: bool,
}

/// `POST /admin/v1/fault/clock` (nodes with `fault_injection = true` only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ClockOffset {
    /// Offset added to the node's wall clock, ms (within ± one day).
    pub offset_ms: i64,
}

/// The answer of a clock-offset change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClockOffsetSet {
    /// The offset now.
    pub clock_offset_ms: i64,
    /// The offset before.
    pub previous_ms: i64,
}

// ------------------------------------------------------------- catalogue

/// One row of a new seated venue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewRow {
    /// Row name, e.g. `A`.
    pub name: String,
    /// Seats, numbered 1..=seats.
    pub seats: u32,
    /// Price of each.
    pub price_cents: u64,
}

/// One section of a new seated venue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewSection {
    /// Section name.
    pub name: String,
    /// Rows in display order.
    pub rows: Vec<NewRow>,
}

impl NewSection {
    /// A section of `(row name, seats, price_cents)` rows.
    pub fn new<'a>(name: &str, rows: impl IntoIterator<Item = (&'a str, u32, u64)>) -> Self {
        NewSection {
            name: name.to_string(),
            rows: rows
                .into_iter()
                .map(|(n, seats, price_cents)| NewRow {
                    name: n.to_string(),
                    seats,
                    price_cents,
                })
                .collect(),
        }
    }
}

/// A general-admission venue's capacity and price.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewGeneralAdmission {
    /// Tickets.
    pub capacity: u32,
    /// Price of one.
    pub price_cents: u64,
}

/// `POST /admin/v1/venues`: exactly one of `sections` and `general_admission`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewVenue {
    /// Display name.
    pub name: String,
    /// City.
    pub city: String,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// Numbered seats: sections of rows; seat ids run 0.. through them in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sections: Option<Vec<NewSection>>,
    /// Or a quantity of interchangeable tickets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub general_admission: Option<NewGeneralAdmission>,
}

/// A venue's layout in the short form callers build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NewLayout {
    /// Sections of `(row name, seats, price_cents)` rows.
    Seated(Vec<(String, Vec<(String, u32, u64)>)>),
    /// General admission.
    GeneralAdmission {
        /// Tickets.
        capacity: u32,
        /// Price of one.
        price_cents: u64,
    },
}

impl NewVenue {
    /// A venue named `name` in `city` at (`lat`, `lon`) with `layout`.
    pub fn new(
        name: impl Into<String>,
        city: impl Into<String>,
        lat: f64,
        lon: f64,
        layout: NewLayout,
    ) -> Self {
        let (sections, general_admission) = match layout {
            NewLayout::Seated(sections) => (
                Some(
                    sections
                        .into_iter()
                        .map(|(name, rows)| NewSection {
                            name,
                            rows: rows
                                .into_iter()
                                .map(|(name, seats, price_cents)| NewRow {
                                    name,
                                    seats,
                                    price_cents,
                                })
                                .collect(),
                        })
                        .collect(),
                ),
                None,
            ),
            NewLayout::GeneralAdmission {
                capacity,
                price_cents,
            } => (
                None,
                Some(NewGeneralAdmission {
                    capacity,
                    price_cents,
                }),
            ),
        };
        NewVenue {
            name: name.into(),
            city: city.into(),
            lat,
            lon,
            sections,
            general_admission,
        }
    }

    /// A seated venue.
    pub fn seated(name: &str, city: &str, lat: f64, lon: f64, sections: Vec<NewSection>) -> Self {
        NewVenue {
            name: name.to_string(),
            city: city.to_string(),
            lat,
            lon,
            sections: Some(sections),
            general_admission: None,
        }
    }

    /// A general-admission venue.
    pub fn general_admission(
        name: &str,
        city: &str,
        lat: f64,
        lon: f64,
        capacity: u32,
        price_cents: u64,
    ) -> Self {
        NewVenue {
            name: name.to_string(),
            city: city.to_string(),
            lat,
            lon,
            sections: None,
            general_admission: Some(NewGeneralAdmission {
                capacity,
                price_cents,
            }),
        }
    }
}

/// The answer of a venue creation (201).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VenueCreated {
    /// Its id.
    pub venue_id: u64,
    /// Where and when it was applied.
    pub applied: Applied,
    /// True for a remembered answer.
    pub replayed: bool,
}

/// `POST /admin/v1/performers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewPerformer {
    /// Display name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

/// The answer of a performer creation (201).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PerformerCreated {
    /// Its id.
    pub performer_id: u64,
    /// Where and when it was applied.
    pub applied: Applied,
    /// True for a remembered answer.
    pub replayed: bool,
}

/// `POST /admin/v1/events` (and each item of a batch).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewEvent {
    /// Display name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Category, e.g. `concert`.
    pub category: String,
    /// Where; must exist.
    pub venue_id: u64,
    /// Who; each must exist.
    #[serde(default)]
    pub performer_ids: Vec<u64>,
    /// Start, RFC 3339.
    pub starts_at: String,
    /// Hold lifetime in seconds (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_ttl_s: Option<u64>,
    /// Per-user cap (default 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_user_cap: Option<u32>,
}

/// The answer of an event creation (201).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventCreated {
    /// Its id.
    pub event_id: u64,
    /// The inventory shard that sells it.
    pub shard: u16,
    /// Where and when the catalogue applied it.
    pub applied: Applied,
    /// Where and when its shard created its inventory.
    pub inventory_applied: Applied,
    /// True for a remembered answer.
    pub replayed: bool,
}

/// `POST /admin/v1/events/batch`: up to 1000 events, all or none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewEvents {
    /// The events.
    pub events: Vec<NewEvent>,
}

/// An event of a batch: its id and shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventPlaced {
    /// Its id.
    pub event_id: u64,
    /// Its shard.
    pub shard: u16,
}

/// The answer of a batch creation (201).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventsCreated {
    /// The events, in request order.
    pub events: Vec<EventPlaced>,
    /// Where and when the catalogue applied them.
    pub applied: Applied,
    /// True for a remembered answer.
    pub replayed: bool,
}

/// `PATCH /admin/v1/events/{id}`: `None` leaves a field as is; at least one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EventUpdate {
    /// New name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// New description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// New category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// New start, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<String>,
}

/// The answer of an event update.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventUpdated {
    /// The event.
    pub event_id: u64,
    /// Where and when it was applied.
    pub applied: Applied,
    /// True for a remembered answer.
    pub replayed: bool,
}

// ---------------------------------------------------------------- webhooks

/// `PUT /admin/v1/webhooks/{name}`: an endpoint of the site's outgoing webhooks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetWebhookEndpoint {
    /// Where deliveries are POSTed (http or https).
    pub url: String,
    /// Event types it receives (`order.confirmed`, `order.cancelled`,
    /// `refund.succeeded`, `hold.expired`, `payment.late_refunded`); absent or
    /// empty: all.
    #[serde(default)]
    pub events: Vec<String>,
    /// False turns it off (nothing new is queued for it). Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The signing secret; absent: a new one is made (and answered once).
    #[serde(default)]
    pub secret: Option<String>,
}

fn yes() -> bool {
    true
}

/// An endpoint as the admin API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookEndpointView {
    /// Its name.
    pub name: String,
    /// Where deliveries go.
    pub url: String,
    /// Event types it receives (empty: all).
    pub events: Vec<String>,
    /// On or off.
    pub enabled: bool,
    /// The signing secret: only in the answer of the `PUT` that set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// `GET /admin/v1/webhooks`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookEndpointList {
    /// The endpoints, by name.
    pub endpoints: Vec<WebhookEndpointView>,
}

/// One event's delivery to one endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryView {
    /// The event's id (`evt_<shard>_<seq>`), as the site receives it.
    pub event_id: String,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: String,
    /// `pending`, `delivered` or `gave_up`.
    pub status: String,
    /// Attempts so far.
    pub attempts: u32,
    /// The last attempt's HTTP status (0: none, or no answer).
    pub last_status: u16,
    /// When it was queued (or replayed), ms.
    pub queued_at_ms: u64,
    /// When it is tried next (pending), or was delivered or given up, ms.
    pub at_ms: u64,
}

/// `GET /admin/v1/webhooks/{name}/deliveries`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryList {
    /// Deliveries, by shard then seq.
    pub deliveries: Vec<DeliveryView>,
}

/// `PUT` and `GET /admin/v1/events/{id}/payments`: an event's own payment
/// settings; a setting left out (or `null`) is the cluster's (`[payments]`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EventPaymentSettings {
    /// How much longer a hold lives once its payment is in flight (s, 1..=86400).
    #[serde(default)]
    pub payment_grace_s: Option<u64>,
    /// A payment in flight never keeps a hold past this long after it was made
    /// (s, at most 172800).
    #[serde(default)]
    pub payment_hold_max_s: Option<u64>,
    /// Buyers may cancel until this long before the event starts (s, at most a year).
    #[serde(default)]
    pub cancel_cutoff_s: Option<u64>,
}
