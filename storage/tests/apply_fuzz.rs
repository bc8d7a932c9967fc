//! Apply never panics on anything a command can carry, and a refusal changes
//! nothing.
//!
//! Arbitrary commands, with arbitrary field values (not only valid ones: huge
//! prices and capacities, NaN coordinates, stamps up to `u64::MAX`, unknown ids,
//! nested batches, commands sent to the wrong group), applied one after another
//! on top of the states their predecessors built. Apply must answer every one
//! (a panic fails the case), and a request it refuses must leave every record as
//! it was, but for the bookkeeping it is allowed to write: the group's meta, the
//! remembered answer, and the lazy settling of holds that had expired already.
//!
//! The first of these cases that failed, before prices and stamps were bounded
//! (a general-admission venue at 10^18 cents, then a hold of 20 tickets; an
//! entry stamped `u64::MAX`), are kept as regression tests below.

use std::collections::BTreeMap;

use boxoffice_raft::command::*;
use boxoffice_raft::GroupId;
use boxoffice_storage::keys::{read_u64, table};
use boxoffice_storage::kv::MemKv;
use boxoffice_storage::machine::{apply_entry, read_meta, SESSION_REJECTED_TTL_MS, SESSION_TTL_MS};
use boxoffice_storage::testing::normal;
use proptest::prelude::*;

const T0: u64 = 1_700_000_000_000;

// Values are mostly plausible, so that sequences build states with events,
// holds and bookings to act on, and now and then anything at all.

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        16 => "[a-z]{1,8}",
        1 => Just(String::new()),
        1 => Just(" ".into()),
        1 => "[a-z]{190,230}",
    ]
}

fn small_or_any_u32(small: u32) -> impl Strategy<Value = u32> {
    prop_oneof![12 => 1..small, 1 => Just(0), 1 => any::<u32>()]
}

fn small_or_any_u64(small: u64) -> impl Strategy<Value = u64> {
    prop_oneof![12 => 1..small, 1 => Just(0), 1 => any::<u64>()]
}

/// A price: mostly a plausible one, sometimes anything, sometimes the bound.
fn price() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => 0..5_000u64,
        2 => any::<u64>(),
        1 => Just(PRICE_CENTS_MAX),
        1 => Just(PRICE_CENTS_MAX + 1),
    ]
}

fn layout() -> impl Strategy<Value = Layout> {
    let row =
        (text(), small_or_any_u32(12), price()).prop_map(|(name, seats, price_cents)| RowSpec {
            name,
            seats,
            price_cents,
        });
    let rows = prop_oneof![8 => proptest::collection::vec(row, 1..3), 1 => Just(vec![])];
    let section = (text(), rows).prop_map(|(name, rows)| SectionSpec { name, rows });
    let sections = prop_oneof![
        8 => proptest::collection::vec(section, 1..3),
        1 => Just(vec![]),
    ];
    prop_oneof![
        sections.prop_map(|sections| Layout::Seated { sections }),
        (small_or_any_u32(40), price()).prop_map(|(capacity, price_cents)| {
            Layout::GeneralAdmission {
                capacity,
                price_cents,
            }
        }),
    ]
}

fn coordinate() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => -90.0..90.0f64,
        1 => any::<f64>(),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
    ]
}

fn ttl() -> impl Strategy<Value = u64> {
    prop_oneof![8 => 1_000..5_000u64, 1 => any::<u64>(), 1 => Just(0u64)]
}

/// A per-user cap: mostly a usable one.
fn cap() -> impl Strategy<Value = u32> {
    prop_oneof![8 => 1..30u32, 1 => any::<u32>(), 1 => Just(0u32)]
}

fn event_spec() -> impl Strategy<Value = EventSpec> {
    (
        (text(), text(), text()),
        0..4u64,
        proptest::collection::vec(0..4u64, 0..3),
        prop_oneof![3 => 0..4_000_000_000_000i64, 1 => any::<i64>()],
        ttl(),
        small_or_any_u32(6),
    )
        .prop_map(
            |(
                (name, description, category),
                venue_id,
                performer_ids,
                starts_at_ms,
                hold_ttl_ms,
                per_user_cap,
            )| {
                EventSpec {
                    name,
                    description,
                    category,
                    venue_id,
                    performer_ids,
                    starts_at_ms,
                    hold_ttl_ms,
                    per_user_cap,
                }
            },
        )
}

fn inventory_spec() -> impl Strategy<Value = InventorySpec> {
    (0..4u64, layout(), ttl(), cap()).prop_map(|(event_id, layout, hold_ttl_ms, per_user_cap)| {
        InventorySpec {
            event_id,
            layout,
            hold_ttl_ms,
            per_user_cap,
        }
    })
}

fn user() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop_oneof![Just("alice".to_string()), Just("bob".to_string())],
        1 => text(),
    ]
}

fn hold_id() -> impl Strategy<Value = HoldId> {
    (
        prop_oneof![8 => Just(1u16), 1 => any::<u16>()],
        small_or_any_u64(12),
    )
        .prop_map(|(shard, seq)| HoldId { shard, seq })
}

fn selection() -> impl Strategy<Value = Selection> {
    prop_oneof![
        3 => proptest::collection::vec(prop_oneof![8 => 0..12u32, 1 => any::<u32>()], 0..5).prop_map(Selection::Seats),
        1 => proptest::collection::vec(0..200u32, 95..110).prop_map(Selection::Seats),
        3 => small_or_any_u32(6).prop_map(Selection::Quantity),
    ]
}

fn provider_id() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (0..4u8).prop_map(|i| format!("pi_{i}")),
        1 => text(),
    ]
}

fn notice() -> impl Strategy<Value = PaymentNotice> {
    (
        hold_id(),
        provider_id(),
        prop_oneof![3 => Just(100u64), 3 => Just(300u64), 1 => any::<u64>()],
        proptest::option::of(
            prop_oneof![4 => (0..6u8).prop_map(|i| format!("evt_{i}")), 1 => text()],
        ),
    )
        .prop_map(
            |(hold_id, payment_id, amount_cents, provider_event)| PaymentNotice {
                hold_id,
                payment_id,
                amount_cents,
                provider_event,
            },
        )
}

fn payment_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        4 => (hold_id(), user(), provider_id(), prop_oneof![2 => Just(100u64), 2 => Just(300u64), 1 => any::<u64>()],
              prop_oneof![4 => Just("usd".to_string()), 1 => text()],
              small_or_any_u64(600_000), small_or_any_u64(1_800_000))
            .prop_map(|(hold_id, user, payment_id, amount_cents, currency, grace_ms, hold_max_ms)| {
                Command::Checkout(CheckoutRequest { hold_id, user, payment_id, amount_cents, currency, grace_ms, hold_max_ms })
            }),
        4 => notice().prop_map(Command::PaymentSucceeded),
        2 => notice().prop_map(Command::PaymentFailed),
        2 => ((prop_oneof![8 => Just(1u16), 1 => any::<u16>()], small_or_any_u64(12)), proptest::option::of(user()), proptest::option::of(small_or_any_u64(T0 + 10_000)))
            .prop_map(|((shard, seq), user, not_after_ms)| Command::CancelBooking {
                booking_id: BookingId { shard, seq },
                user,
                not_after_ms,
            }),
        2 => (provider_id(), prop_oneof![
                provider_id().prop_map(|refund_id| RefundReport::Pending { refund_id }),
                provider_id().prop_map(|refund_id| RefundReport::Succeeded { refund_id }),
                text().prop_map(|reason| RefundReport::Failed { reason }),
            ], proptest::option::of((0..6u8).prop_map(|i| format!("evt_{i}"))))
            .prop_map(|(payment_id, report, provider_event)| Command::RefundUpdate { payment_id, report, provider_event }),
        1 => (prop_oneof![3 => Just("site".to_string()), 1 => text()], prop_oneof![3 => Just("http://127.0.0.1:9/h".to_string()), 1 => text()],
              prop_oneof![3 => Just("whsec_x".to_string()), 1 => text()], proptest::collection::vec(proptest::sample::select(OutboxKind::ALL.to_vec()), 0..4), any::<bool>())
            .prop_map(|(name, url, secret, kinds, enabled)| Command::SetWebhookEndpoint(WebhookEndpointSpec { name, url, secret, kinds, enabled })),
        2 => (prop_oneof![3 => Just("site".to_string()), 1 => text()], small_or_any_u64(6), any::<u16>(), any::<bool>())
            .prop_map(|(endpoint, seq, status, delivered)| Command::DeliveryReport(DeliveryAttempt { endpoint, seq, status, delivered })),
        1 => (prop_oneof![3 => Just("site".to_string()), 1 => text()], small_or_any_u64(6))
            .prop_map(|(endpoint, seq)| Command::ReplayDelivery { endpoint, seq }),
        1 => (0..4u64, proptest::option::of(small_or_any_u64(600)), proptest::option::of(small_or_any_u64(1800)), proptest::option::of(small_or_any_u64(86_400)))
            .prop_map(|(event_id, payment_grace_s, payment_hold_max_s, cancel_cutoff_s)| Command::SetEventPayments {
                event_id,
                settings: EventPayments { payment_grace_s, payment_hold_max_s, cancel_cutoff_s },
            }),
    ]
}

fn queue_spec() -> impl Strategy<Value = QueueSpec> {
    (
        (small_or_any_u64(T0 + 5_000), small_or_any_u64(T0 + 20_000)),
        (small_or_any_u32(120), small_or_any_u32(3)),
        small_or_any_u64(QUEUE_SESSION_TTL_MS_MIN + 5_000),
        prop_oneof![Just(QueueOrder::Fifo), Just(QueueOrder::RandomPrequeue)],
    )
        .prop_map(|((opens, starts), (rate, active), ttl, order)| QueueSpec {
            prequeue_opens_at_ms: opens.min(starts),
            sale_starts_at_ms: starts,
            admit_per_minute: rate,
            active_max: active,
            session_ttl_ms: ttl,
            order,
        })
}

fn queue_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        2 => (0..4u64, queue_spec(), any::<u64>()).prop_map(|(event_id, spec, seed)| Command::SetQueue { event_id, spec, seed }),
        1 => (0..4u64, prop_oneof![Just(QueueAction::Pause), Just(QueueAction::Resume), Just(QueueAction::Close), Just(QueueAction::Open)])
            .prop_map(|(event_id, action)| Command::QueueControl { event_id, action }),
        4 => (0..4u64, user()).prop_map(|(event_id, user)| Command::JoinQueue { event_id, user }),
        4 => (0..4u64).prop_map(|event_id| Command::AdmitQueue { event_id }),
        4 => (0..4u64, user(), selection(), small_or_any_u64(4)).prop_map(|(event_id, user, selection, ticket)| {
            Command::AdmittedHold { hold: HoldRequest { event_id, user, selection }, ticket }
        }),
    ]
}

/// The placement directory's update, with values past every bound as well:
/// a replication factor of 0 or over the maximum, too many or blank labels,
/// groups past `SHARDS_MAX`, repeated or empty voter lists, any epoch.
fn placement_command() -> impl Strategy<Value = Command> {
    let labels = proptest::collection::vec(
        (
            prop_oneof![3 => Just("zone".to_string()), 1 => text()],
            text(),
        ),
        0..(NODE_LABELS_MAX + 2),
    );
    let node = (
        prop_oneof![4 => 1..8u64, 1 => any::<u64>()],
        prop_oneof![3 => Just("127.0.0.1:7201".to_string()), 1 => text()],
        labels,
        prop_oneof![
            Just(NodeStateSpec::Up),
            Just(NodeStateSpec::Draining),
            Just(NodeStateSpec::Down)
        ],
    )
        .prop_map(|(id, addr, labels, state)| NodeSpec {
            id,
            addr,
            labels,
            state,
        });
    let group = (
        prop_oneof![4 => 0..8u16, 1 => any::<u16>()],
        proptest::collection::vec(prop_oneof![4 => 1..8u64, 1 => any::<u64>()], 0..5),
        proptest::collection::vec(1..8u64, 0..3),
        prop_oneof![4 => 0..100u64, 1 => any::<u64>(), 1 => Just(u64::MAX)],
    )
        .prop_map(|(group, voters, learners, epoch)| GroupPlacementSpec {
            group,
            voters,
            learners,
            epoch,
        });
    (
        proptest::option::of(prop_oneof![4 => 1..=REPLICATION_FACTOR_MAX, 1 => any::<u8>()]),
        proptest::collection::vec(node, 0..4),
        proptest::collection::vec(group, 0..4),
    )
        .prop_map(|(replication_factor, nodes, groups)| {
            Command::SetPlacement(PlacementUpdate {
                replication_factor,
                nodes,
                groups,
            })
        })
}

fn simple_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        8 => payment_command(),
        6 => queue_command(),
        2 => placement_command(),
        2 => ((text(), text()), coordinate(), coordinate(), layout()).prop_map(|((name, city), lat, lon, layout)| {
            Command::CreateVenue(VenueSpec { name, city, lat, lon, layout })
        }),
        1 => (text(), text()).prop_map(|(name, description)| Command::CreatePerformer(PerformerSpec { name, description })),
        2 => event_spec().prop_map(Command::CreateEvent),
        1 => proptest::collection::vec(event_spec(), 0..3).prop_map(Command::CreateEvents),
        2 => inventory_spec().prop_map(Command::CreateInventory),
        1 => proptest::collection::vec(inventory_spec(), 0..3).prop_map(Command::CreateInventories),
        10 => (0..4u64, user(), selection()).prop_map(|(event_id, user, selection)| {
            Command::Hold(HoldRequest { event_id, user, selection })
        }),
        8 => (hold_id(), user(), text()).prop_map(|(hold_id, user, payment_ref)| {
            Command::Confirm { hold_id, user, payment_ref }
        }),
        4 => (hold_id(), user()).prop_map(|(hold_id, user)| Command::Release { hold_id, user }),
        1 => Just(Command::Tick),
        // Levels this build knows (a higher one stops apply by design: see
        // `machine::features`).
        1 => (0..=FEATURE_LEVEL_MAX).prop_map(|level| Command::EnableFeatures { level }),
        1 => (0..4u64, (proptest::option::of(text()), proptest::option::of(text()), proptest::option::of(text())), proptest::option::of(any::<i64>()))
            .prop_map(|(event_id, (name, description, category), starts_at_ms)| Command::UpdateEvent {
                event_id,
                patch: EventPatch { name, description, category, starts_at_ms },
            }),
    ]
}

/// A request's stamp: mostly a little after the last, sometimes anything.
fn stamp_step() -> impl Strategy<Value = Stamp> {
    prop_oneof![
        40 => (0..3_000u64).prop_map(Stamp::After),
        // Around a refusal's and an answer's lifetime, so sessions end and are
        // pruned (and counted down) within a case.
        2 => (SESSION_REJECTED_TTL_MS - 2_000..SESSION_REJECTED_TTL_MS + 2_000).prop_map(Stamp::After),
        1 => (SESSION_TTL_MS - 2_000..SESSION_TTL_MS + 2_000).prop_map(Stamp::After),
        1 => any::<u64>().prop_map(Stamp::Exactly),
        1 => Just(Stamp::Exactly(u64::MAX)),
    ]
}

#[derive(Clone, Debug)]
enum Stamp {
    After(u64),
    Exactly(u64),
}

fn session() -> impl Strategy<Value = Option<(String, String)>> {
    prop_oneof![
        2 => Just(None),
        // Mostly fresh keys, now and then one used before (a retry, or a reuse).
        3 => (user(), "k[0-9]{4}").prop_map(Some),
        1 => (user(), prop_oneof![4 => "k[0-9]", 1 => text()]).prop_map(Some),
    ]
}

#[derive(Clone, Debug)]
struct Step {
    /// 0: the catalogue, else shard 1.
    group: u16,
    stamp: Stamp,
    session: Option<(String, String)>,
    command: Command,
    /// Extra requests to send with it in one batch entry (none: alone).
    batch: Vec<(Stamp, Option<(String, String)>, Command)>,
    /// For a confirm or release: act on the n-th hold granted so far (modulo
    /// their number) instead of the generated id, as its owner when `.1`.
    target: Option<(usize, bool)>,
}

fn step() -> impl Strategy<Value = Step> {
    (
        // The command's own group, or (now and then) the other one.
        prop_oneof![9 => Just(None), 1 => Just(Some(0u16)), 1 => Just(Some(1u16))],
        stamp_step(),
        session(),
        prop_oneof![
            9 => simple_command(),
            // A batch inside a request: refused as nested.
            1 => proptest::collection::vec(simple_command(), 0..2).prop_map(|cs| {
                Command::Batch(cs.into_iter().map(|command| Request { stamp_ms: T0, session: None, command }).collect())
            }),
        ],
        prop_oneof![
            4 => Just(vec![]),
            1 => proptest::collection::vec((stamp_step(), session(), simple_command()), 1..4),
        ],
        proptest::option::weighted(0.75, (any::<usize>(), proptest::bool::weighted(0.85))),
    )
        .prop_map(|(group, stamp, session, command, batch, target)| Step {
            group: group.unwrap_or(if command.is_catalogue() { 0 } else { 1 }),
            stamp,
            session,
            command,
            batch,
            target,
        })
}

fn request(
    time: &mut u64,
    stamp: &Stamp,
    session: &Option<(String, String)>,
    command: Command,
) -> Request {
    let stamp_ms = match stamp {
        Stamp::After(d) => {
            *time = time.saturating_add(*d);
            *time
        }
        Stamp::Exactly(t) => *t,
    };
    Request {
        stamp_ms,
        session: session.as_ref().map(|(c, k)| Session {
            client_id: c.clone(),
            idempotency_key: k.clone(),
        }),
        command,
    }
}

/// The records of `group` in table order, without those a refusal may write.
fn records(kv: &MemKv, group: GroupId) -> BTreeMap<Vec<u8>, Vec<u8>> {
    kv.map
        .iter()
        .filter(|(k, _)| k[..2] == group.0.to_be_bytes())
        .filter(|(k, _)| {
            !matches!(
                k[2],
                table::META
                    | table::FEATURES
                    | table::SESSION
                    | table::SESSION_EXPIRY
                    | table::SESSION_DEADLINE
                    | table::USER_SESSIONS
                    | table::EXPIRY
                    | table::EXPIRY_SETTLED
                    | table::INVENTORY_COUNTS
                    | table::PROVIDER_EVENT
                    | table::PROVIDER_EVENT_DEADLINE
            )
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Checks that a refused request changed nothing but what settling may change:
/// expiry entries only go away when due, counts keep their sales and only lose
/// held tickets that expired.
fn refusal_changed_nothing(
    before: &MemKv,
    after: &MemKv,
    group: GroupId,
    time: u64,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(records(before, group), records(after, group));
    // Remembered provider events are pruned with every entry, like sessions; a
    // refusal never remembers one.
    for t in [table::PROVIDER_EVENT, table::PROVIDER_EVENT_DEADLINE] {
        let prefix = [&group.0.to_be_bytes()[..], &[t]].concat();
        for (k, v) in after.map.range(prefix.clone()..) {
            if !k.starts_with(&prefix) {
                break;
            }
            prop_assert_eq!(
                before.map.get(k),
                Some(v),
                "a refusal remembered a provider event"
            );
        }
    }
    let table_of = |kv: &MemKv, t: u8| -> BTreeMap<Vec<u8>, Vec<u8>> {
        kv.map
            .iter()
            .filter(|(k, _)| k[..2] == group.0.to_be_bytes() && k[2] == t)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let (was, is) = (
        table_of(before, table::EXPIRY),
        table_of(after, table::EXPIRY),
    );
    for k in is.keys() {
        prop_assert!(was.contains_key(k), "a refusal added an expiry entry");
    }
    for k in was.keys().filter(|k| !is.contains_key(*k)) {
        // group (2), table (1), event (8), expiry time (8), hold (8)
        prop_assert!(
            read_u64(k, 11) <= time,
            "a refusal settled a hold before its expiry"
        );
    }
    let counts = |kv: &MemKv| -> BTreeMap<Vec<u8>, (u32, u32)> {
        table_of(kv, table::INVENTORY_COUNTS)
            .into_iter()
            .map(|(k, v)| {
                let c: boxoffice_storage::records::InventoryCounts =
                    boxoffice_raft::codec::decode(&v).unwrap();
                (k, (c.sold, c.held_unsettled))
            })
            .collect()
    };
    let (was, is) = (counts(before), counts(after));
    for (k, (sold, held)) in &is {
        match was.get(k) {
            Some((sold0, held0)) => {
                prop_assert_eq!(sold, sold0, "a refusal changed sales");
                prop_assert!(held <= held0, "a refusal added held tickets");
            }
            // Counts written for the first time by settling: nothing sold.
            None => prop_assert_eq!(*sold, 0),
        }
    }
    Ok(())
}

/// Every remembered answer has exactly one expiry index entry, at its expiry
/// (in the level-0 index or the deadline index), every index entry has its
/// answer, and each user's session count is the number of its counted entries.
fn sessions_are_indexed_and_counted(kv: &MemKv, group: GroupId) -> Result<(), TestCaseError> {
    let in_table = |t: u8| {
        kv.map
            .iter()
            .filter(move |(k, _)| k[..2] == group.0.to_be_bytes() && k[2] == t)
    };
    // Index entries as (session key tail, expiry), and the counted ones per client.
    let mut indexed: BTreeMap<Vec<u8>, Vec<u64>> = BTreeMap::new();
    let mut counted: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
    for (k, _) in in_table(table::SESSION_EXPIRY) {
        indexed
            .entry(k[11..].to_vec())
            .or_default()
            .push(read_u64(k, 3));
    }
    for (k, _) in in_table(table::SESSION_DEADLINE) {
        let tail = k[12..].to_vec();
        if k[11] == 1 {
            let len = usize::from(u16::from_be_bytes([tail[0], tail[1]]));
            *counted.entry(tail[..2 + len].to_vec()).or_default() += 1;
        }
        indexed.entry(tail).or_default().push(read_u64(k, 3));
    }
    let mut answers = 0;
    for (k, v) in in_table(table::SESSION) {
        answers += 1;
        let rec: boxoffice_storage::records::SessionRecord =
            boxoffice_raft::codec::decode(v).unwrap();
        prop_assert_eq!(
            indexed.get(&k[3..]),
            Some(&vec![rec.expires_at_ms]),
            "a session without its one index entry"
        );
    }
    prop_assert_eq!(answers, indexed.len(), "an index entry without its session");
    let counts: BTreeMap<Vec<u8>, u32> = in_table(table::USER_SESSIONS)
        .map(|(k, v)| {
            let u: boxoffice_storage::records::UserSessions =
                boxoffice_raft::codec::decode(v).unwrap();
            (k[3..].to_vec(), u.live)
        })
        .collect();
    prop_assert_eq!(counts, counted, "user session counts");
    Ok(())
}

fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut kv = MemKv::default();
    let mut time = T0;
    let mut index = [0u64; 2];
    let mut granted: Vec<(HoldId, String)> = Vec::new();
    for s in steps {
        let group = GroupId(s.group);
        let i = &mut index[usize::from(s.group.min(1))];
        *i += 1;
        let single = s.batch.is_empty();
        let mut command = s.command;
        if let (Some((n, as_owner)), false) = (s.target, granted.is_empty()) {
            let (id, owner) = &granted[n % granted.len()];
            match &mut command {
                Command::Confirm { hold_id, user, .. }
                | Command::Release { hold_id, user }
                | Command::Checkout(CheckoutRequest { hold_id, user, .. }) => {
                    *hold_id = *id;
                    if as_owner {
                        *user = owner.clone();
                    }
                }
                Command::PaymentSucceeded(n) | Command::PaymentFailed(n) => n.hold_id = *id,
                _ => {}
            }
        }
        let first = request(&mut time, &s.stamp, &s.session, command);
        let req = if single {
            first
        } else {
            let mut requests = vec![first];
            for (stamp, session, command) in s.batch {
                requests.push(request(&mut time, &stamp, &session, command));
            }
            Request {
                stamp_ms: time,
                session: None,
                command: Command::Batch(requests),
            }
        };
        let before = kv.clone();
        let sent = req.clone();
        let out = apply_entry(&mut kv, group, &normal(*i, req));
        let meta = read_meta(&kv, group);
        prop_assert!(
            meta.time_ms <= STAMP_MS_MAX,
            "time past the bound: {}",
            meta.time_ms
        );
        prop_assert!(
            meta.time_ms >= read_meta(&before, group).time_ms,
            "time went back"
        );
        if single && out.result.is_err() && !out.replayed {
            refusal_changed_nothing(&before, &kv, group, meta.time_ms)?;
        }
        sessions_are_indexed_and_counted(&kv, group)?;
        // Remember the holds granted, with their owners, for later confirms.
        let outcomes = match (&out.result, &sent.command) {
            (Ok(Effect::Batch(all)), Command::Batch(reqs)) if !single => all
                .iter()
                .zip(reqs)
                .map(|(o, r)| (o.clone(), r.command.clone()))
                .collect(),
            _ => vec![(out.clone(), sent.command.clone())],
        };
        for (o, c) in outcomes {
            if let (Ok(Effect::Held(h)), Command::Hold(r)) = (&o.result, &c) {
                granted.push((h.hold_id, r.user.clone()));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn apply_answers_every_command_and_refusals_change_nothing(
        steps in proptest::collection::vec(step(), 1..80),
        level in 0..=FEATURE_LEVEL_MAX,
    ) {
        // Each case starts its shard at a level of its own, so the commands of
        // every level (payments from 2) are fed on top of states they can reach.
        let start = Step {
            group: 1,
            stamp: Stamp::After(0),
            session: None,
            command: Command::EnableFeatures { level },
            batch: Vec::new(),
            target: None,
        };
        run(std::iter::once(start).chain(steps).collect())?;
    }
}

fn ga_venue(price_cents: u64) -> Command {
    Command::CreateVenue(VenueSpec {
        name: "Field".into(),
        city: "Town".into(),
        lat: 0.0,
        lon: 0.0,
        layout: Layout::GeneralAdmission {
            capacity: 100,
            price_cents,
        },
    })
}

/// Regression: a general-admission venue priced at 10^18 cents, an event there,
/// then a hold of 20 tickets, panicked apply on every replica (`attempt to
/// multiply with overflow`) and again at every restart. Now the venue is refused,
/// and an inventory carrying such a price is refused too.
#[test]
fn an_impossible_price_is_refused_not_a_panic() {
    let mut kv = MemKv::default();
    let cat = GroupId::CATALOGUE;
    let out = apply_entry(
        &mut kv,
        cat,
        &normal(
            1,
            request(
                &mut T0.clone(),
                &Stamp::Exactly(T0),
                &None,
                ga_venue(1_000_000_000_000_000_000),
            ),
        ),
    );
    assert!(
        matches!(out.result, Err(Rejection::InvalidInput { .. })),
        "{out:?}"
    );
    let inv = Command::CreateInventory(InventorySpec {
        event_id: 7,
        layout: Layout::GeneralAdmission {
            capacity: 100,
            price_cents: 1_000_000_000_000_000_000,
        },
        hold_ttl_ms: 60_000,
        per_user_cap: 40,
    });
    let shard = GroupId(1);
    let out = apply_entry(
        &mut kv,
        shard,
        &normal(1, request(&mut T0.clone(), &Stamp::Exactly(T0), &None, inv)),
    );
    assert!(
        matches!(out.result, Err(Rejection::InvalidInput { .. })),
        "{out:?}"
    );
}

/// Regression: an entry stamped `u64::MAX` moved state-machine time to the end
/// of time, where a hold's expiry (`time + ttl`) overflowed. Now the stamp is
/// refused and time stays where it was.
#[test]
fn a_stamp_past_the_bound_is_refused_and_time_stays() {
    let mut kv = MemKv::default();
    let shard = GroupId(1);
    let inv = Command::CreateInventory(InventorySpec {
        event_id: 7,
        layout: Layout::GeneralAdmission {
            capacity: 100,
            price_cents: 500,
        },
        hold_ttl_ms: 60_000,
        per_user_cap: 40,
    });
    let out = apply_entry(
        &mut kv,
        shard,
        &normal(1, request(&mut T0.clone(), &Stamp::Exactly(T0), &None, inv)),
    );
    assert!(out.result.is_ok(), "{out:?}");
    let hold = Command::Hold(HoldRequest {
        event_id: 7,
        user: "alice".into(),
        selection: Selection::Quantity(20),
    });
    let session = Some(("alice".to_string(), "k".to_string()));
    let out = apply_entry(
        &mut kv,
        shard,
        &normal(
            2,
            request(&mut 0, &Stamp::Exactly(u64::MAX), &session, hold.clone()),
        ),
    );
    assert!(
        matches!(out.result, Err(Rejection::InvalidInput { .. })),
        "{out:?}"
    );
    assert_eq!(read_meta(&kv, shard).time_ms, T0);
    // Nothing of it was remembered: the same key with a sane stamp is a new request.
    let out = apply_entry(
        &mut kv,
        shard,
        &normal(3, request(&mut 0, &Stamp::Exactly(T0 + 5), &session, hold)),
    );
    assert!(!out.replayed && out.result.is_ok(), "{out:?}");
}
