//! Stored formats: the bytes the first releases wrote decode, with this build, to
//! the values they held, and this build still writes them the same way while
//! every type is at version 1.
//!
//! `golden/v1.txt` was written by the release before stored types had versions of
//! their own (each line: a name, then the hex of the encoded value). When a type
//! moves to version 2, its v1 lines stay here and keep decoding (through the
//! frozen v1 shape); its v2 bytes are added beside them. Command fingerprints are
//! checked the same way: a remembered answer stores the fingerprint the release
//! that applied the command computed, and a retry after an upgrade must match it.

use std::collections::{BTreeMap, BTreeSet};

use boxoffice_raft::codec::{decode, encode, CodecError, Versioned};
use boxoffice_raft::command::*;
use boxoffice_raft::{Entry, LogId, StoredMembership};
use boxoffice_storage::records::*;
use openraft::{BasicNode, CommittedLeaderId, EntryPayload, Membership, Vote};

fn golden() -> BTreeMap<String, Vec<u8>> {
    [
        include_str!("golden/v1.txt"),
        include_str!("golden/added.txt"),
    ]
    .into_iter()
    .flat_map(str::lines)
    .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    .map(|l| {
        let (name, hex) = l.split_once(' ').expect("name and hex");
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect();
        (name.to_string(), bytes)
    })
    .collect()
}

/// Checks that `name`'s golden bytes decode to `value` and that `value` encodes
/// to them; returns the name so the caller can tell every line was checked.
fn check<T: Versioned + PartialEq + std::fmt::Debug>(
    golden: &BTreeMap<String, Vec<u8>>,
    name: &str,
    value: T,
) -> String {
    let Some(bytes) = golden.get(name) else {
        let hex: String = encode(&value).iter().map(|b| format!("{b:02x}")).collect();
        // Every missing line is printed before the test fails (see the end of
        // the test), so that a new format's lines can be added at once.
        eprintln!("no golden bytes; this build writes: {name} {hex}");
        return format!("missing:{name}");
    };
    let decoded: T = decode(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(decoded, value, "{name} decodes to another value");
    assert_eq!(&encode(&value), bytes, "{name} encodes differently");
    name.to_string()
}

fn lid(term: u64, node: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, node), index)
}

fn membership() -> Membership<u64, BasicNode> {
    let voters: BTreeSet<u64> = [1, 2, 3].into_iter().collect();
    let nodes: BTreeMap<u64, BasicNode> = (1..=4)
        .map(|i| {
            (
                i,
                BasicNode {
                    addr: format!("127.0.0.1:710{i}"),
                },
            )
        })
        .collect();
    Membership::new(vec![voters], nodes)
}

fn seated_spec() -> Layout {
    Layout::Seated {
        sections: vec![
            SectionSpec {
                name: "Floor".into(),
                rows: vec![
                    RowSpec {
                        name: "A".into(),
                        seats: 3,
                        price_cents: 5000,
                    },
                    RowSpec {
                        name: "B".into(),
                        seats: 2,
                        price_cents: 4500,
                    },
                ],
            },
            SectionSpec {
                name: "Balcony".into(),
                rows: vec![RowSpec {
                    name: "K".into(),
                    seats: 4,
                    price_cents: 2500,
                }],
            },
        ],
    }
}

fn ga_spec() -> Layout {
    Layout::GeneralAdmission {
        capacity: 300,
        price_cents: 1999,
    }
}

fn venue_spec(layout: Layout) -> VenueSpec {
    VenueSpec {
        name: "Town Hall".into(),
        city: "New York".into(),
        lat: 40.7128,
        lon: -74.006,
        layout,
    }
}

fn event_spec() -> EventSpec {
    EventSpec {
        name: "Jazz Night".into(),
        description: "Quartet".into(),
        category: "concert".into(),
        venue_id: 1,
        performer_ids: vec![2, 3],
        starts_at_ms: 1_767_225_600_000,
        hold_ttl_ms: 600_000,
        per_user_cap: 4,
    }
}

fn inventory_spec() -> InventorySpec {
    InventorySpec {
        event_id: 7,
        layout: seated_spec(),
        hold_ttl_ms: 600_000,
        per_user_cap: 4,
    }
}

const HOLD: HoldId = HoldId { shard: 3, seq: 17 };
const BOOKING: BookingId = BookingId { shard: 3, seq: 18 };

fn session() -> Session {
    Session {
        client_id: "alice".into(),
        idempotency_key: "k-1".into(),
    }
}

fn applied() -> Applied {
    Applied {
        index: 42,
        time_ms: 1_767_000_000_000,
    }
}

fn commands() -> Vec<(&'static str, Command)> {
    vec![
        (
            "create_venue",
            Command::CreateVenue(venue_spec(seated_spec())),
        ),
        (
            "create_venue_ga",
            Command::CreateVenue(venue_spec(ga_spec())),
        ),
        (
            "create_performer",
            Command::CreatePerformer(PerformerSpec {
                name: "Ada Quartet".into(),
                description: "jazz".into(),
            }),
        ),
        ("create_event", Command::CreateEvent(event_spec())),
        (
            "create_inventory",
            Command::CreateInventory(inventory_spec()),
        ),
        (
            "hold_seats",
            Command::Hold(HoldRequest {
                event_id: 7,
                user: "alice".into(),
                selection: Selection::Seats(vec![0, 1]),
            }),
        ),
        (
            "hold_quantity",
            Command::Hold(HoldRequest {
                event_id: 7,
                user: "alice".into(),
                selection: Selection::Quantity(2),
            }),
        ),
        (
            "confirm",
            Command::Confirm {
                hold_id: HOLD,
                user: "alice".into(),
                payment_ref: "pay_123".into(),
            },
        ),
        (
            "release",
            Command::Release {
                hold_id: HOLD,
                user: "alice".into(),
            },
        ),
        ("tick", Command::Tick),
        (
            "create_events",
            Command::CreateEvents(vec![
                event_spec(),
                EventSpec {
                    name: "Late Show".into(),
                    ..event_spec()
                },
            ]),
        ),
        (
            "update_event",
            Command::UpdateEvent {
                event_id: 7,
                patch: EventPatch {
                    name: Some("Jazz Night II".into()),
                    description: None,
                    category: None,
                    starts_at_ms: Some(1_767_300_000_000),
                },
            },
        ),
        (
            "create_inventories",
            Command::CreateInventories(vec![inventory_spec()]),
        ),
        ("enable_features", Command::EnableFeatures { level: 1 }),
        (
            "checkout",
            Command::Checkout(CheckoutRequest {
                hold_id: HOLD,
                user: "alice".into(),
                payment_id: "pi_3MtwBwLkdIwHu7ix28a3tqPa".into(),
                amount_cents: 12_500,
                currency: "usd".into(),
                grace_ms: 600_000,
                hold_max_ms: 1_800_000,
            }),
        ),
        (
            "payment_succeeded",
            Command::PaymentSucceeded(PaymentNotice {
                hold_id: HOLD,
                payment_id: "pi_3MtwBwLkdIwHu7ix28a3tqPa".into(),
                amount_cents: 12_500,
                provider_event: Some("evt_1NG8Du2eZvKYlo2CUI79vXWy".into()),
            }),
        ),
        (
            "payment_failed",
            Command::PaymentFailed(PaymentNotice {
                hold_id: HOLD,
                payment_id: "pi_3MtwBwLkdIwHu7ix28a3tqPa".into(),
                amount_cents: 12_500,
                provider_event: None,
            }),
        ),
        (
            "cancel_booking",
            Command::CancelBooking {
                booking_id: BOOKING,
                user: Some("alice".into()),
                not_after_ms: Some(1_767_900_000_000),
            },
        ),
        (
            "set_webhook_endpoint",
            Command::SetWebhookEndpoint(WebhookEndpointSpec {
                name: "site".into(),
                url: "https://tickets.example/hooks".into(),
                secret: "whsec_1".into(),
                kinds: vec![OutboxKind::OrderConfirmed, OutboxKind::RefundSucceeded],
                enabled: true,
            }),
        ),
        (
            "delivery_report",
            Command::DeliveryReport(DeliveryAttempt {
                endpoint: "site".into(),
                seq: 12,
                status: 503,
                delivered: false,
            }),
        ),
        (
            "replay_delivery",
            Command::ReplayDelivery {
                endpoint: "site".into(),
                seq: 12,
            },
        ),
        (
            "set_event_payments",
            Command::SetEventPayments {
                event_id: 5,
                settings: EventPayments {
                    payment_grace_s: Some(300),
                    payment_hold_max_s: None,
                    cancel_cutoff_s: Some(172_800),
                },
            },
        ),
        (
            "set_queue",
            Command::SetQueue {
                event_id: 5,
                spec: queue_spec(),
                seed: 0x0123_4567_89ab_cdef,
            },
        ),
        (
            "queue_control",
            Command::QueueControl {
                event_id: 5,
                action: QueueAction::Pause,
            },
        ),
        (
            "join_queue",
            Command::JoinQueue {
                event_id: 5,
                user: "alice".into(),
            },
        ),
        ("admit_queue", Command::AdmitQueue { event_id: 5 }),
        (
            "admitted_hold",
            Command::AdmittedHold {
                hold: HoldRequest {
                    event_id: 5,
                    user: "alice".into(),
                    selection: Selection::Quantity(2),
                },
                ticket: 41,
            },
        ),
        (
            "set_placement",
            Command::SetPlacement(PlacementUpdate {
                replication_factor: Some(3),
                nodes: vec![NodeSpec {
                    id: 4,
                    addr: "10.0.0.4:7101".into(),
                    labels: vec![("zone".into(), "a".into())],
                    state: NodeStateSpec::Draining,
                }],
                groups: vec![GroupPlacementSpec {
                    group: 7,
                    voters: vec![1, 2, 4],
                    learners: vec![5],
                    epoch: 40,
                }],
            }),
        ),
        (
            "refund_update",
            Command::RefundUpdate {
                payment_id: "pi_3MtwBwLkdIwHu7ix28a3tqPa".into(),
                report: RefundReport::Succeeded {
                    refund_id: "re_1Nispe2eZvKYlo2Cd31jOCgZ".into(),
                },
                provider_event: Some("evt_1".into()),
            },
        ),
        (
            "batch",
            Command::Batch(vec![
                Request {
                    stamp_ms: 1_767_000_000_000,
                    session: Some(session()),
                    command: Command::Release {
                        hold_id: HOLD,
                        user: "alice".into(),
                    },
                },
                Request {
                    stamp_ms: 1_767_000_000_001,
                    session: None,
                    command: Command::Tick,
                },
            ]),
        ),
    ]
}

fn queue_spec() -> QueueSpec {
    QueueSpec {
        prequeue_opens_at_ms: 1_767_000_000_000,
        sale_starts_at_ms: 1_767_003_600_000,
        admit_per_minute: 600,
        active_max: 2000,
        session_ttl_ms: 600_000,
        order: QueueOrder::RandomPrequeue,
    }
}

fn granted() -> GrantedHold {
    GrantedHold {
        hold_id: HOLD,
        event_id: 7,
        seat_ids: vec![0, 1],
        quantity: 2,
        expires_at_ms: 1_767_000_600_000,
        total_cents: 10000,
    }
}

fn confirmed() -> ConfirmedBooking {
    ConfirmedBooking {
        booking_id: BOOKING,
        hold_id: HOLD,
        event_id: 7,
        user: "alice".into(),
        seat_ids: vec![0, 1],
        quantity: 2,
        total_cents: 10000,
        payment_ref: "pay_123".into(),
        confirmed_at_ms: 1_767_000_100_000,
    }
}

fn results() -> Vec<(&'static str, Result<Effect, Rejection>)> {
    vec![
        ("nothing", Ok(Effect::Nothing)),
        ("venue_created", Ok(Effect::VenueCreated { venue_id: 1 })),
        (
            "performer_created",
            Ok(Effect::PerformerCreated { performer_id: 2 }),
        ),
        (
            "event_created",
            Ok(Effect::EventCreated {
                event_id: 7,
                inventory: inventory_spec(),
            }),
        ),
        (
            "inventory_created",
            Ok(Effect::InventoryCreated { event_id: 7 }),
        ),
        ("held", Ok(Effect::Held(granted()))),
        ("confirmed", Ok(Effect::Confirmed(confirmed()))),
        (
            "released",
            Ok(Effect::Released {
                hold_id: HOLD,
                event_id: 7,
                seat_ids: vec![0, 1],
                quantity: 2,
            }),
        ),
        (
            "events_created",
            Ok(Effect::EventsCreated {
                events: vec![CreatedEvent {
                    event_id: 7,
                    inventory: inventory_spec(),
                }],
            }),
        ),
        ("event_updated", Ok(Effect::EventUpdated { event_id: 7 })),
        (
            "inventories_created",
            Ok(Effect::InventoriesCreated {
                event_ids: vec![7, 8],
            }),
        ),
        (
            "batch",
            Ok(Effect::Batch(vec![Outcome {
                applied: applied(),
                replayed: false,
                result: Ok(Effect::Nothing),
            }])),
        ),
        (
            "seat_unavailable",
            Err(Rejection::SeatUnavailable { seat_ids: vec![1] }),
        ),
        (
            "insufficient_availability",
            Err(Rejection::InsufficientAvailability {
                requested: 5,
                available: 2,
            }),
        ),
        (
            "cap_exceeded",
            Err(Rejection::CapExceeded {
                cap: 4,
                current: 3,
                requested: 2,
            }),
        ),
        (
            "unknown_event",
            Err(Rejection::UnknownEvent { event_id: 9 }),
        ),
        (
            "unknown_venue",
            Err(Rejection::UnknownVenue { venue_id: 9 }),
        ),
        (
            "unknown_performer",
            Err(Rejection::UnknownPerformer { performer_id: 9 }),
        ),
        (
            "unknown_hold",
            Err(Rejection::UnknownHold { hold_id: HOLD }),
        ),
        (
            "hold_expired",
            Err(Rejection::HoldExpired {
                expired_at_ms: 1_767_000_600_000,
            }),
        ),
        ("not_hold_owner", Err(Rejection::NotHoldOwner)),
        ("hold_released", Err(Rejection::HoldReleased)),
        (
            "hold_already_confirmed",
            Err(Rejection::HoldAlreadyConfirmed {
                booking_id: BOOKING,
            }),
        ),
        (
            "invalid_input",
            Err(Rejection::InvalidInput {
                reason: "bad".into(),
            }),
        ),
        (
            "idempotency_key_reused",
            Err(Rejection::IdempotencyKeyReused),
        ),
        (
            "too_many_sessions",
            Err(Rejection::TooManySessions { max: 4096 }),
        ),
        (
            "payment.booked",
            Ok(Effect::Payment(PaymentEffect::Booked {
                booking: confirmed(),
                late: true,
            })),
        ),
        (
            "webhooks.attempt_recorded",
            Ok(Effect::Webhooks(WebhookEffect::AttemptRecorded {
                delivered: false,
                next_attempt_ms: Some(1_767_000_001_000),
            })),
        ),
        (
            "feature_not_enabled",
            Err(Rejection::FeatureNotEnabled {
                needed: 2,
                level: 1,
            }),
        ),
        (
            "payment_in_flight",
            Err(Rejection::PaymentInFlight {
                payment_id: "pi_1".into(),
            }),
        ),
        (
            "unknown_booking",
            Err(Rejection::UnknownBooking {
                booking_id: BOOKING,
            }),
        ),
        ("not_booking_owner", Err(Rejection::NotBookingOwner)),
        ("booking_cancelled", Err(Rejection::BookingCancelled)),
        (
            "cancellation_closed",
            Err(Rejection::CancellationClosed {
                closed_at_ms: 1_767_900_000_000,
            }),
        ),
        (
            "queue_configured",
            Ok(Effect::Queue(QueueEffect::Configured { event_id: 5 })),
        ),
        (
            "queue_controlled",
            Ok(Effect::Queue(QueueEffect::Controlled {
                event_id: 5,
                status: QueueStatus::Paused,
            })),
        ),
        (
            "queue_joined",
            Ok(Effect::Queue(QueueEffect::Joined {
                event_id: 5,
                ticket: 41,
                joined_at_ms: 1_767_000_000_000,
                new: true,
            })),
        ),
        (
            "queue_ticked",
            Ok(Effect::Queue(QueueEffect::Ticked {
                event_id: 5,
                watermark: 120,
                admitted: 10,
                expired: 3,
            })),
        ),
        ("no_queue", Err(Rejection::NoQueue { event_id: 5 })),
        (
            "placement_set",
            Ok(Effect::PlacementSet {
                stale_groups: vec![3],
            }),
        ),
        (
            "queue_not_open",
            Err(Rejection::QueueNotOpen {
                opens_at_ms: 1_767_000_000_000,
            }),
        ),
        ("queue_closed", Err(Rejection::QueueClosed)),
        ("queue_full", Err(Rejection::QueueFull { max: 100_000_000 })),
        (
            "queue_admission_required",
            Err(Rejection::QueueAdmissionRequired {
                reason: "no admission was given".into(),
            }),
        ),
    ]
}

fn seated() -> VenueLayout {
    VenueLayout::from(&seated_spec())
}

#[test]
fn every_record_written_by_the_first_releases_decodes_to_its_value() {
    let g = golden();
    let mut checked = BTreeSet::new();
    let mut c = |name: String| {
        checked.insert(name);
    };
    c(check(&g, "sm_meta.default", SmMeta::default()));
    c(check(
        &g,
        "sm_meta",
        SmMeta {
            last_applied: Some(lid(3, 1, 42)),
            membership: StoredMembership::new(Some(lid(1, 1, 1)), membership()),
            time_ms: 1_767_000_000_000,
            last_id: 99,
        },
    ));
    c(check(
        &g,
        "venue",
        Venue::new(1, &venue_spec(seated_spec())),
    ));
    c(check(&g, "venue.ga", Venue::new(2, &venue_spec(ga_spec()))));
    c(check(
        &g,
        "performer",
        Performer {
            performer_id: 2,
            name: "Ada Quartet".into(),
            description: "jazz".into(),
        },
    ));
    c(check(
        &g,
        "event",
        Event::new(7, &event_spec(), 1_767_000_000_000),
    ));
    c(check(
        &g,
        "inventory_counts",
        InventoryCounts {
            sold: 3,
            held_unsettled: 2,
        },
    ));
    c(check(
        &g,
        "inventory",
        Inventory::new(7, seated(), 600_000, 4),
    ));
    c(check(
        &g,
        "inventory.ga",
        Inventory::new(8, VenueLayout::from(&ga_spec()), 600_000, 2),
    ));
    c(check(
        &g,
        "ticket.held",
        Ticket::Held {
            hold_seq: 17,
            expires_at_ms: 1_767_000_600_000,
        },
    ));
    c(check(&g, "ticket.sold", Ticket::Sold { booking_seq: 18 }));
    for (name, state) in [
        ("active", HoldState::Active),
        ("confirmed", HoldState::Confirmed { booking_seq: 18 }),
        ("released", HoldState::Released),
    ] {
        c(check(
            &g,
            &format!("hold.{name}"),
            Hold {
                seq: 17,
                event_id: 7,
                user: "alice".into(),
                seat_ids: vec![0, 1],
                quantity: 2,
                expires_at_ms: 1_767_000_600_000,
                total_cents: 10000,
                state,
            },
        ));
    }
    let b = confirmed();
    c(check(
        &g,
        "booking",
        Booking {
            booking_id: b.booking_id,
            hold_id: b.hold_id,
            event_id: b.event_id,
            user: b.user,
            seat_ids: b.seat_ids,
            quantity: b.quantity,
            total_cents: b.total_cents,
            payment_ref: b.payment_ref,
            confirmed_at_ms: b.confirmed_at_ms,
        },
    ));
    c(check(
        &g,
        "user_event",
        UserEvent {
            booked: 2,
            holds: vec![(17, 2, 1_767_000_600_000), (19, 1, 1_767_000_700_000)],
        },
    ));
    for (name, result) in results() {
        c(check(
            &g,
            &format!("session.{name}"),
            SessionRecord {
                fingerprint: 0x0123_4567_89ab_cdef,
                outcome: Outcome {
                    applied: applied(),
                    replayed: false,
                    result,
                },
                expires_at_ms: 1_767_086_400_000,
            },
        ));
    }
    // The change-feed index and the settled mark were plain u64s, an expiry
    // entry's quantity a plain u32: their record types encode the same.
    c(check(&g, "u64", ChangedAt(1_767_000_000_001)));
    assert_eq!(
        decode::<SettledMark>(&g["u64"]).unwrap(),
        SettledMark(1_767_000_000_001)
    );
    c(check(&g, "u32", ExpiringQuantity(2)));
    c(check(
        &g,
        "entry.blank",
        Entry {
            log_id: lid(2, 1, 5),
            payload: EntryPayload::Blank,
        },
    ));
    c(check(
        &g,
        "entry.membership",
        Entry {
            log_id: lid(1, 1, 1),
            payload: EntryPayload::Membership(membership()),
        },
    ));
    for (name, command) in commands() {
        c(check(
            &g,
            &format!("entry.{name}"),
            Entry {
                log_id: lid(3, 2, 40),
                payload: EntryPayload::Normal(Request {
                    stamp_ms: 1_767_000_000_000,
                    session: Some(session()),
                    command: command.clone(),
                }),
            },
        ));
        let key = format!("fingerprint.{name}");
        let Some(golden_fp) = g.get(&key) else {
            let hex: String = fingerprint(&command)
                .to_be_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            eprintln!("no golden bytes; this build writes: {key} {hex}");
            c(format!("missing:{key}"));
            continue;
        };
        assert_eq!(
            &fingerprint(&command).to_be_bytes().to_vec(),
            golden_fp,
            "{key}: a remembered answer would no longer match its retry"
        );
        c(key);
    }
    c(check(
        &g,
        "entry.no_session",
        Entry {
            log_id: lid(3, 2, 41),
            payload: EntryPayload::Normal(Request {
                stamp_ms: 1_767_000_000_000,
                session: None,
                command: Command::Tick,
            }),
        },
    ));
    c(check(
        &g,
        "features",
        Features {
            level: 1,
            legacy_session_expiry: true,
        },
    ));
    c(check(&g, "user_sessions", UserSessions { live: 3 }));
    c(check(
        &g,
        "hold.payment_pending",
        Hold {
            seq: 7,
            event_id: 5,
            user: "alice".into(),
            seat_ids: vec![1, 2],
            quantity: 2,
            expires_at_ms: 1_767_000_600_000,
            total_cents: 12_500,
            state: HoldState::PaymentPending,
        },
    ));
    c(check(
        &g,
        "hold_payment",
        HoldPayment {
            payment_id: "pi_3MtwBwLkdIwHu7ix28a3tqPa".into(),
            amount_cents: 12_500,
            currency: "usd".into(),
            hold_made_at_ms: 1_767_000_000_000,
            checkout_at_ms: 1_767_000_010_000,
            checkouts: 1,
            phase: PaymentPhase::InFlight,
        },
    ));
    c(check(
        &g,
        "refund",
        Refund {
            hold_seq: 7,
            booking_seq: Some(8),
            event_id: 5,
            user: "alice".into(),
            amount_cents: 12_500,
            reason: RefundReason::CancelledByUser,
            state: RefundState::Required {
                failures: 1,
                last_error: Some("network".into()),
            },
            created_at_ms: 1_767_000_000_000,
            updated_at_ms: 1_767_000_010_000,
        },
    ));
    c(check(
        &g,
        "booking_cancellation",
        BookingCancellation {
            cancelled_at_ms: 1_767_000_000_000,
            reason: RefundReason::CancelledByAdmin,
            refund_payment_id: Some("pi_1".into()),
        },
    ));
    c(check(&g, "provider_event", SeenUntil(1_767_345_600_000)));
    c(check(
        &g,
        "webhook_endpoint",
        WebhookEndpoint {
            url: "https://tickets.example/hooks".into(),
            secret: "whsec_1".into(),
            kinds: vec![OutboxKind::OrderConfirmed],
            enabled: true,
            updated_at_ms: 1_767_000_000_000,
        },
    ));
    c(check(
        &g,
        "outbox_event",
        OutboxEvent {
            kind: OutboxKind::OrderCancelled,
            created_at_ms: 1_767_000_000_000,
            event_id: 5,
            hold_seq: 7,
            booking_seq: Some(8),
            user: "alice".into(),
            payment_id: Some("pi_1".into()),
            amount_cents: 12_500,
            seat_ids: vec![1, 2],
            quantity: 2,
        },
    ));
    c(check(
        &g,
        "delivery",
        Delivery {
            attempts: 2,
            last_status: 503,
            state: DeliveryState::Pending {
                next_at_ms: 1_767_000_002_000,
            },
            queued_at_ms: 1_767_000_000_000,
        },
    ));
    c(check(&g, "outbox_seq", OutboxSeq(12)));
    c(check(
        &g,
        "payment_counts",
        PaymentCounts {
            checkouts: 9,
            booked: 5,
            booked_late: 1,
            late_refunds: 1,
            mismatch_refunds: 0,
            failed: 2,
            cancelled: 1,
            refunded: 2,
            refund_failures: 1,
        },
    ));
    c(check(
        &g,
        "event_payments",
        EventPaymentSettings {
            payment_grace_s: Some(300),
            payment_hold_max_s: None,
            cancel_cutoff_s: Some(172_800),
        },
    ));
    c(check(
        &g,
        "queue",
        Queue {
            spec: queue_spec(),
            seed: 0x0123_4567_89ab_cdef,
            status: QueueStatus::Running,
            joined: 5000,
            prequeue: Some(4000),
            watermark: 120,
            active: 100,
            credit: 30_000,
            last_tick_ms: 1_767_003_700_000,
            expired_through: 10,
            finished: 8,
            no_shows: 2,
            rate_samples: vec![(1_767_003_640_000, 20), (1_767_003_700_000, 120)],
        },
    ));
    c(check(
        &g,
        "queue_join",
        QueueJoin {
            ticket: 41,
            joined_at_ms: 1_767_000_000_000,
            finished_at_ms: Some(1_767_003_900_000),
        },
    ));
    c(check(
        &g,
        "admission_batch",
        AdmissionBatch {
            first: 111,
            admitted_at_ms: 1_767_003_700_000,
            finished: 4,
        },
    ));
    c(check(
        &g,
        "placement_node",
        NodeEntry {
            addr: "10.0.0.4:7101".into(),
            labels: vec![("zone".into(), "a".into())],
            state: NodeStateSpec::Up,
            updated_at_ms: 1_767_000_000_000,
        },
    ));
    c(check(
        &g,
        "group_placement",
        GroupPlacement {
            voters: vec![1, 2, 4],
            learners: vec![5],
            epoch: 40,
        },
    ));
    c(check(
        &g,
        "placement_policy",
        PlacementPolicy {
            replication_factor: 3,
        },
    ));
    c(check(&g, "vote", Vote::new(3, 2)));
    c(check(&g, "vote.committed", Vote::new_committed(3, 2)));
    c(check(&g, "log_id", lid(3, 2, 40)));
    c(check(&g, "committed.some", Some(lid(3, 2, 40))));
    c(check(&g, "committed.none", Option::<LogId>::None));
    drop(c);
    let missing: Vec<_> = checked
        .iter()
        .filter(|n| n.starts_with("missing:"))
        .collect();
    assert!(
        missing.is_empty(),
        "no golden bytes for {missing:?} (printed above)"
    );
    let all: BTreeSet<String> = g.keys().cloned().collect();
    let unchecked: Vec<_> = all.difference(&checked).collect();
    assert!(
        unchecked.is_empty(),
        "golden lines not checked: {unchecked:?}"
    );
}

/// The position of a command's variant: the match has no wildcard, so a new
/// variant does not compile until it is numbered here, and then
/// `every_variant_has_golden_bytes` fails until `commands()` has a sample of it
/// (with its golden line).
fn command_variant(c: &Command) -> usize {
    match c {
        Command::CreateVenue(_) => 0,
        Command::CreatePerformer(_) => 1,
        Command::CreateEvent(_) => 2,
        Command::CreateInventory(_) => 3,
        Command::Hold(_) => 4,
        Command::Confirm { .. } => 5,
        Command::Release { .. } => 6,
        Command::Tick => 7,
        Command::CreateEvents(_) => 8,
        Command::UpdateEvent { .. } => 9,
        Command::CreateInventories(_) => 10,
        Command::Batch(_) => 11,
        Command::EnableFeatures { .. } => 12,
        Command::Checkout(_) => 13,
        Command::PaymentSucceeded(_) => 14,
        Command::PaymentFailed(_) => 15,
        Command::CancelBooking { .. } => 16,
        Command::RefundUpdate { .. } => 17,
        Command::SetWebhookEndpoint(_) => 18,
        Command::DeliveryReport(_) => 19,
        Command::ReplayDelivery { .. } => 20,
        Command::SetEventPayments { .. } => 21,
        Command::SetQueue { .. } => 22,
        Command::QueueControl { .. } => 23,
        Command::JoinQueue { .. } => 24,
        Command::AdmitQueue { .. } => 25,
        Command::AdmittedHold { .. } => 26,
        Command::SetPlacement(_) => 27,
    }
}

/// As [`command_variant`], for effects.
fn effect_variant(e: &Effect) -> usize {
    match e {
        Effect::Nothing => 0,
        Effect::VenueCreated { .. } => 1,
        Effect::PerformerCreated { .. } => 2,
        Effect::EventCreated { .. } => 3,
        Effect::InventoryCreated { .. } => 4,
        Effect::Held(_) => 5,
        Effect::Confirmed(_) => 6,
        Effect::Released { .. } => 7,
        Effect::EventsCreated { .. } => 8,
        Effect::EventUpdated { .. } => 9,
        Effect::InventoriesCreated { .. } => 10,
        Effect::Batch(_) => 11,
        Effect::Payment(_) => 12,
        Effect::Webhooks(_) => 13,
        Effect::Queue(_) => 14,
        Effect::PlacementSet { .. } => 15,
    }
}

/// As [`command_variant`], for rejections.
fn rejection_variant(r: &Rejection) -> usize {
    match r {
        Rejection::SeatUnavailable { .. } => 0,
        Rejection::InsufficientAvailability { .. } => 1,
        Rejection::CapExceeded { .. } => 2,
        Rejection::UnknownEvent { .. } => 3,
        Rejection::UnknownVenue { .. } => 4,
        Rejection::UnknownPerformer { .. } => 5,
        Rejection::UnknownHold { .. } => 6,
        Rejection::HoldExpired { .. } => 7,
        Rejection::NotHoldOwner => 8,
        Rejection::HoldReleased => 9,
        Rejection::HoldAlreadyConfirmed { .. } => 10,
        Rejection::InvalidInput { .. } => 11,
        Rejection::IdempotencyKeyReused => 12,
        Rejection::TooManySessions { .. } => 13,
        Rejection::FeatureNotEnabled { .. } => 14,
        Rejection::PaymentInFlight { .. } => 15,
        Rejection::UnknownBooking { .. } => 16,
        Rejection::NotBookingOwner => 17,
        Rejection::BookingCancelled => 18,
        Rejection::CancellationClosed { .. } => 19,
        Rejection::NoQueue { .. } => 20,
        Rejection::QueueNotOpen { .. } => 21,
        Rejection::QueueClosed => 22,
        Rejection::QueueFull { .. } => 23,
        Rejection::QueueAdmissionRequired { .. } => 24,
    }
}

/// Variants of each enum, as numbered above.
const COMMANDS: usize = 28;
const EFFECTS: usize = 16;
const REJECTIONS: usize = 25;

#[test]
fn every_variant_has_golden_bytes() {
    let commands: BTreeSet<usize> = commands().iter().map(|(_, c)| command_variant(c)).collect();
    assert_eq!(
        commands,
        (0..COMMANDS).collect(),
        "a command variant without a sample"
    );
    let effects: BTreeSet<usize> = results()
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok().map(effect_variant))
        .collect();
    assert_eq!(
        effects,
        (0..EFFECTS).collect(),
        "an effect variant without a sample"
    );
    let rejections: BTreeSet<usize> = results()
        .iter()
        .filter_map(|(_, r)| r.as_ref().err().map(rejection_variant))
        .collect();
    assert_eq!(
        rejections,
        (0..REJECTIONS).collect(),
        "a rejection variant without a sample"
    );
}

#[test]
fn a_changed_shape_is_refused_not_misread() {
    let g = golden();
    // A booking with a byte more (a field added without a new version) or a byte
    // less is refused, and a version from the future is named as such.
    let mut longer = g["booking"].clone();
    longer.push(0);
    assert!(matches!(
        decode::<Booking>(&longer),
        Err(CodecError::TrailingBytes { extra: 1, .. })
    ));
    let shorter = &g["booking"][..g["booking"].len() - 1];
    assert!(matches!(
        decode::<Booking>(shorter),
        Err(CodecError::Postcard { .. })
    ));
    let mut future = g["booking"].clone();
    future[0] = Booking::VERSION + 1;
    let e = decode::<Booking>(&future).unwrap_err();
    assert!(matches!(e, CodecError::UnsupportedVersion { .. }), "{e}");
    assert!(e.to_string().contains("booking record"), "{e}");
}
