//! The virtual waiting room in the state machine (feature level 3): joins,
//! the pre-queue's shuffle, admission at the queue's rate within `active_max`,
//! sessions ended by time or by a booking, pause/resume/close/open, and the
//! admission a hold needs while the queue is on; as scenarios and as
//! properties over random histories (the rate and `active_max` never exceeded,
//! positions a permutation, a refused command changes nothing).

use std::collections::BTreeSet;

use boxoffice_raft::command::*;
use boxoffice_raft::GroupId;
use boxoffice_storage::machine::queue::{position, shuffled, Standing};
use boxoffice_storage::records::Queue;
use boxoffice_storage::testing::TestMachine;
use proptest::prelude::*;

const GROUP: GroupId = GroupId(1);
const EVENT: u64 = 10;
const T0: u64 = 1_000_000_000;
const OPENS: u64 = T0 + 1000;
const START: u64 = T0 + 60_000;
const TTL: u64 = 120_000;

/// The shared test state machine, with this file's helpers.
struct Machine(TestMachine);

impl std::ops::Deref for Machine {
    type Target = TestMachine;
    fn deref(&self) -> &TestMachine {
        &self.0
    }
}

impl std::ops::DerefMut for Machine {
    fn deref_mut(&mut self) -> &mut TestMachine {
        &mut self.0
    }
}

fn spec(order: QueueOrder, per_minute: u32, active_max: u32) -> QueueSpec {
    QueueSpec {
        prequeue_opens_at_ms: OPENS,
        sale_starts_at_ms: START,
        admit_per_minute: per_minute,
        active_max,
        session_ttl_ms: TTL,
        order,
    }
}

impl Machine {
    fn new(level: u32) -> Machine {
        let mut m = Machine(TestMachine::open(GROUP));
        for c in [
            Command::EnableFeatures { level },
            Command::CreateInventory(InventorySpec {
                event_id: EVENT,
                layout: Layout::GeneralAdmission {
                    capacity: 10_000,
                    price_cents: 50,
                },
                hold_ttl_ms: 600_000,
                per_user_cap: 4,
            }),
        ] {
            m.apply(T0, c).expect("setup");
        }
        m
    }

    fn apply(&mut self, stamp: u64, command: Command) -> Result<Effect, Rejection> {
        self.apply_as(stamp, None, command)
    }

    fn configure(&mut self, spec: QueueSpec) {
        self.apply(
            T0,
            Command::SetQueue {
                event_id: EVENT,
                spec,
                seed: 0xfeed_beef,
            },
        )
        .expect("configured");
    }

    fn join(&mut self, t: u64, user: &str) -> Result<(u64, bool), Rejection> {
        match self.apply(
            t,
            Command::JoinQueue {
                event_id: EVENT,
                user: user.into(),
            },
        )? {
            Effect::Queue(QueueEffect::Joined { ticket, new, .. }) => Ok((ticket, new)),
            other => panic!("join made {other:?}"),
        }
    }

    fn tick(&mut self, t: u64) -> (u64, u64) {
        match self.apply(t, Command::AdmitQueue { event_id: EVENT }) {
            Ok(Effect::Queue(QueueEffect::Ticked {
                admitted, expired, ..
            })) => (admitted, expired),
            other => panic!("tick made {other:?}"),
        }
    }

    fn control(&mut self, t: u64, action: QueueAction) -> Result<Effect, Rejection> {
        self.apply(
            t,
            Command::QueueControl {
                event_id: EVENT,
                action,
            },
        )
    }

    fn hold(&mut self, t: u64, user: &str, ticket: Option<u64>) -> Result<GrantedHold, Rejection> {
        let hold = HoldRequest {
            event_id: EVENT,
            user: user.into(),
            selection: Selection::Quantity(1),
        };
        let command = match ticket {
            Some(ticket) => Command::AdmittedHold { hold, ticket },
            None => Command::Hold(hold),
        };
        match self.apply(t, command)? {
            Effect::Held(h) => Ok(h),
            other => panic!("hold made {other:?}"),
        }
    }

    fn confirm(&mut self, t: u64, user: &str, hold: HoldId) {
        let r = self.apply(
            t,
            Command::Confirm {
                hold_id: hold,
                user: user.into(),
                payment_ref: "pay".into(),
            },
        );
        assert!(matches!(r, Ok(Effect::Confirmed(_))), "{r:?}");
    }

    fn queue(&self) -> Queue {
        self.reader.begin_applied().queue(EVENT).expect("queue")
    }

    fn standing(&self, t: u64, user: &str) -> Standing {
        let tx = self.reader.begin(t);
        let q = tx.queue(EVENT).expect("queue");
        tx.queue_place(EVENT, &q, user).expect("joined").1
    }

    fn position(&self, t: u64, user: &str) -> Option<u64> {
        match self.standing(t, user) {
            Standing::Waiting { position } => position,
            Standing::Admitted { position, .. }
            | Standing::Expired { position, .. }
            | Standing::Finished { position, .. } => Some(position),
        }
    }

    fn dump(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.reader
            .begin_applied()
            .dump()
            .into_iter()
            // Bookkeeping written by every entry (applied id, time).
            .filter(|(k, _)| k.get(2) != Some(&0x00))
            .collect()
    }
}

fn admission_required(r: Result<GrantedHold, Rejection>) -> String {
    match r {
        Err(Rejection::QueueAdmissionRequired { reason }) => reason,
        other => panic!("expected queue_admission_required, got {other:?}"),
    }
}

#[test]
fn the_shuffle_is_a_pinned_permutation() {
    // Pinned: every replica and every later build must derive these positions.
    let order: Vec<u64> = (0..10).map(|t| shuffled(42, 10, t)).collect();
    assert_eq!(order, vec![2, 3, 9, 7, 1, 6, 8, 5, 4, 0]);
    for n in [1u64, 2, 3, 7, 64, 65, 1000, 4097] {
        let seen: BTreeSet<u64> = (0..n).map(|t| shuffled(7, n, t)).collect();
        assert_eq!(seen, (0..n).collect(), "not a permutation of 0..{n}");
    }
    // Another seed, another order.
    let other: Vec<u64> = (0..10).map(|t| shuffled(43, 10, t)).collect();
    assert_ne!(order, other);
}

#[test]
fn below_level_3_the_queue_is_refused_and_holds_need_nothing() {
    let mut m = Machine::new(2);
    let r = m.apply(
        T0,
        Command::SetQueue {
            event_id: EVENT,
            spec: spec(QueueOrder::Fifo, 60, 10),
            seed: 1,
        },
    );
    assert_eq!(
        r,
        Err(Rejection::FeatureNotEnabled {
            needed: 3,
            level: 2
        })
    );
    m.hold(T0, "alice", None).expect("no queue: a plain hold");
}

#[test]
fn joins_are_one_place_per_user_and_the_prequeue_is_shuffled_at_the_start() {
    let mut m = Machine::new(3);
    assert_eq!(
        m.join(T0, "early"),
        Err(Rejection::NoQueue { event_id: EVENT })
    );
    m.configure(spec(QueueOrder::RandomPrequeue, 60, 100));
    let before = m.dump();
    assert_eq!(
        m.join(T0 + 10, "early"),
        Err(Rejection::QueueNotOpen { opens_at_ms: OPENS })
    );
    assert_eq!(m.dump(), before, "a refused join changed the state");
    let users: Vec<String> = (0..200).map(|i| format!("u{i:03}")).collect();
    for (i, u) in users.iter().enumerate() {
        assert_eq!(m.join(OPENS + i as u64, u), Ok((i as u64, true)));
    }
    // Joining again never improves a place, and writes nothing.
    let before = m.dump();
    assert_eq!(m.join(OPENS + 5000, &users[150]), Ok((150, false)));
    assert_eq!(m.dump(), before);
    // Before the start a shuffled pre-queue has no positions.
    assert_eq!(m.position(OPENS + 5000, &users[0]), None);
    assert_eq!(m.queue().prequeue, None);
    // The first entry at the start closes the pre-queue; later joins go to the back.
    let (t0, _) = m.join(START, "late-1").unwrap();
    let (t1, _) = m.join(START + 1, "late-2").unwrap();
    assert_eq!((t0, t1), (200, 201));
    assert_eq!(m.queue().prequeue, Some(200));
    let positions: Vec<u64> = users
        .iter()
        .map(|u| m.position(START, u).expect("fixed at the start"))
        .collect();
    let set: BTreeSet<u64> = positions.iter().copied().collect();
    assert_eq!(
        set,
        (1..=200).collect(),
        "the pre-queue is positions 1..=200"
    );
    assert_ne!(positions, (1..=200).collect::<Vec<_>>(), "not shuffled");
    assert_eq!(m.position(START, "late-1"), Some(201));
    assert_eq!(m.position(START, "late-2"), Some(202));
    // Join order says nothing about position: Spearman's rank correlation is
    // near 0 (FIFO would give 1; 4 standard errors of a random order at n = 200).
    let n = positions.len() as f64;
    let d2: f64 = positions
        .iter()
        .enumerate()
        .map(|(i, &p)| (i as f64 + 1.0 - p as f64).powi(2))
        .sum();
    let rho = 1.0 - 6.0 * d2 / (n * (n * n - 1.0));
    assert!(rho.abs() < 4.0 / (n - 1.0).sqrt(), "rho {rho}");
    // The start and the order are fixed once the sale has started.
    let moved = spec(QueueOrder::Fifo, 60, 100);
    assert!(matches!(
        m.apply(
            START + 2,
            Command::SetQueue {
                event_id: EVENT,
                spec: moved,
                seed: 5
            }
        ),
        Err(Rejection::InvalidInput { .. })
    ));
    // The rate may change at any time.
    m.apply(
        START + 2,
        Command::SetQueue {
            event_id: EVENT,
            spec: spec(QueueOrder::RandomPrequeue, 120, 100),
            seed: 5,
        },
    )
    .expect("a new rate");
    assert_eq!(m.queue().spec.admit_per_minute, 120);
    assert_eq!(m.queue().seed, 0xfeed_beef, "the first seed is kept");
}

#[test]
fn admission_follows_the_rate_and_active_max_and_ended_sessions_free_slots() {
    let mut m = Machine::new(3);
    // 6 a minute (one per 10 s), at most 3 open sessions.
    m.configure(spec(QueueOrder::Fifo, 6, 3));
    for i in 0..10 {
        m.join(OPENS + i, &format!("u{i}")).unwrap();
    }
    // Ticks before the start admit no one.
    assert_eq!(m.tick(START - 1), (0, 0));
    assert_eq!(m.queue().watermark, 0);
    // From the start: one per 10 s of ticks, whatever the ticks' spacing.
    let mut t = START;
    let mut admitted_at = Vec::new();
    for _ in 0..70 {
        t += 1000;
        let (a, _) = m.tick(t);
        for _ in 0..a {
            admitted_at.push(t);
        }
    }
    // 3 admitted (at 10, 20, 30 s), then active_max holds everyone else back.
    assert_eq!(
        admitted_at,
        vec![START + 10_000, START + 20_000, START + 30_000]
    );
    assert_eq!(m.queue().active, 3);
    assert!(matches!(
        m.standing(t, "u3"),
        Standing::Waiting { position: Some(4) }
    ));
    // u0 books: their session ends and the slot goes to the next person.
    let h = m.hold(t, "u0", Some(0)).expect("admitted hold");
    m.confirm(t, "u0", h.hold_id);
    assert!(matches!(m.standing(t, "u0"), Standing::Finished { .. }));
    assert_eq!(m.queue().active, 2);
    assert_eq!(m.queue().finished, 1);
    // The freed slot is given within one admission's time (10 s), not at once
    // in a burst of credit banked while every slot was taken.
    let mut given = 0;
    for _ in 0..10 {
        t += 1000;
        given += m.tick(t).0;
    }
    assert_eq!(given, 1);
    // A finished session lets no more holds through.
    let reason = admission_required(m.hold(t, "u0", Some(0)));
    assert!(reason.contains("ended with a booking"), "{reason}");
    // u1 and u2 were admitted at 20 and 30 s: their sessions end TTL later by
    // time and count as no-shows; their slots go to u4 and u5.
    let end_u1 = START + 20_000 + TTL;
    while t + 1000 < end_u1 {
        t += 1000;
        m.tick(t);
    }
    assert!(matches!(
        m.standing(end_u1 - 1, "u1"),
        Standing::Admitted { .. }
    ));
    let (_, e) = m.tick(end_u1);
    assert_eq!(e, 1, "u1's session ended by time");
    assert!(matches!(m.standing(end_u1, "u1"), Standing::Expired { .. }));
    let reason = admission_required(m.hold(end_u1, "u1", Some(1)));
    assert!(reason.contains("ended"), "{reason}");
    let q = m.queue();
    assert_eq!(q.no_shows, 1);
    assert!(q.active <= 3);
    assert_eq!(q.finished + q.no_shows + q.active, q.watermark);
}

#[test]
fn holds_need_an_admission_of_an_open_session_and_a_refusal_changes_nothing() {
    let mut m = Machine::new(3);
    m.configure(spec(QueueOrder::Fifo, 60, 100));
    m.join(OPENS, "alice").unwrap();
    m.join(OPENS, "bob").unwrap();
    let before = m.dump();
    assert!(admission_required(m.hold(OPENS, "alice", None)).contains("no admission"));
    assert!(admission_required(m.hold(OPENS, "alice", Some(0))).contains("not been admitted"));
    assert!(admission_required(m.hold(OPENS, "carol", Some(0))).contains("not in"));
    assert_eq!(m.dump(), before, "a refused hold changed the state");
    m.tick(START);
    m.tick(START + 1000); // alice (1 a second)
    assert!(matches!(
        m.standing(START + 1000, "alice"),
        Standing::Admitted { .. }
    ));
    // Bob with alice's ticket: the admission names another place.
    assert!(admission_required(m.hold(START + 1000, "bob", Some(0))).contains("another place"));
    m.hold(START + 1000, "alice", Some(0)).expect("admitted");
    // A plain hold is refused even for an admitted user: it carries no admission.
    admission_required(m.hold(START + 1000, "alice", None));
    // Paused: nobody more is admitted; resumed: no burst for the pause.
    m.control(START + 1000, QueueAction::Pause).unwrap();
    assert_eq!(m.tick(START + 30_000).0, 0);
    m.control(START + 30_000, QueueAction::Resume).unwrap();
    assert_eq!(m.tick(START + 30_500).0, 0);
    assert_eq!(m.tick(START + 31_000).0, 1);
    // Closed: no joins; holds still need an admission.
    m.control(START + 31_000, QueueAction::Close).unwrap();
    assert_eq!(m.join(START + 31_000, "carol"), Err(Rejection::QueueClosed));
    admission_required(m.hold(START + 31_000, "carol", None));
    // Open: the waiting room ends, and everyone may hold; it cannot run again.
    m.control(START + 31_000, QueueAction::Open).unwrap();
    m.hold(START + 31_000, "carol", None)
        .expect("no admission needed");
    assert!(matches!(
        m.control(START + 31_000, QueueAction::Resume),
        Err(Rejection::InvalidInput { .. })
    ));
}

#[test]
fn bad_settings_are_refused() {
    let mut m = Machine::new(3);
    let good = spec(QueueOrder::Fifo, 60, 10);
    let bads = [
        QueueSpec {
            admit_per_minute: 0,
            ..good.clone()
        },
        QueueSpec {
            admit_per_minute: QUEUE_ADMIT_PER_MINUTE_MAX + 1,
            ..good.clone()
        },
        QueueSpec {
            active_max: 0,
            ..good.clone()
        },
        QueueSpec {
            session_ttl_ms: 1,
            ..good.clone()
        },
        QueueSpec {
            session_ttl_ms: u64::MAX,
            ..good.clone()
        },
        QueueSpec {
            prequeue_opens_at_ms: START + 1,
            ..good.clone()
        },
        QueueSpec {
            sale_starts_at_ms: u64::MAX,
            ..good.clone()
        },
    ];
    for bad in bads {
        let r = m.apply(
            T0,
            Command::SetQueue {
                event_id: EVENT,
                spec: bad.clone(),
                seed: 1,
            },
        );
        assert!(
            matches!(r, Err(Rejection::InvalidInput { .. })),
            "{bad:?}: {r:?}"
        );
    }
    let r = m.apply(
        T0,
        Command::SetQueue {
            event_id: 999,
            spec: good,
            seed: 1,
        },
    );
    assert_eq!(r, Err(Rejection::UnknownEvent { event_id: 999 }));
    assert!(m.dump().iter().all(|(k, _)| k.get(2) != Some(&0x50)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Over random joins, ticks, bookings and admin actions: the admitted
    /// count in any minute never exceeds the rate (plus the credit a queue may
    /// bank), open sessions never exceed `active_max`, positions are a
    /// permutation, and admission goes in position order.
    #[test]
    fn admissions_never_exceed_the_rate_or_active_max(
        per_minute in 1u32..600,
        active_max in 1u32..40,
        order in prop_oneof![Just(QueueOrder::Fifo), Just(QueueOrder::RandomPrequeue)],
        steps in prop::collection::vec((0u8..10, 1u64..4000), 1..150),
    ) {
        let mut m = Machine::new(3);
        m.configure(QueueSpec { admit_per_minute: per_minute, active_max, ..spec(order, 1, 1) });
        let mut t = OPENS;
        let mut users = 0u64;
        let mut admissions: Vec<(u64, u64)> = Vec::new(); // (time, count)
        let mut paused = false;
        for (kind, dt) in steps {
            t += dt;
            match kind {
                0..=3 => {
                    m.join(t, &format!("u{users}")).unwrap();
                    users += 1;
                }
                4..=7 => {
                    let (a, _) = m.tick(t);
                    if a > 0 {
                        admissions.push((t, a));
                    }
                }
                8 => {
                    // The first admitted user with an open session books.
                    let open = (0..users).map(|u| format!("u{u}")).find(|u| {
                        matches!(m.standing(t, u), Standing::Admitted { .. })
                    });
                    if let Some(u) = open {
                        let q = m.queue();
                        let tx = m.reader.begin(t);
                        let ticket = tx.queue_place(EVENT, &q, &u).unwrap().0.ticket;
                        drop(tx);
                        let h = m.hold(t, &u, Some(ticket)).expect("an admitted user holds");
                        m.confirm(t, &u, h.hold_id);
                    }
                }
                _ => {
                    let action = if paused { QueueAction::Resume } else { QueueAction::Pause };
                    paused = !paused;
                    m.control(t, action).unwrap();
                }
            }
            let q = m.queue();
            prop_assert!(q.active <= u64::from(active_max), "active {} > {}", q.active, active_max);
            // Any 60 s window: at most the rate's worth plus the banked credit.
            let bound = u64::from(per_minute) + (u64::from(per_minute) * 5 / 60).max(1) + 1;
            for &(start, _) in &admissions {
                let in_window: u64 = admissions
                    .iter()
                    .filter(|(at, _)| *at >= start && *at < start + 60_000)
                    .map(|(_, n)| n)
                    .sum();
                prop_assert!(in_window <= bound, "{in_window} admitted in a minute, rate {per_minute}");
            }
        }
        let q = m.queue();
        if q.prequeue.is_some() {
            let positions: BTreeSet<u64> = (0..users).map(|t| position(&q, t).unwrap()).collect();
            prop_assert_eq!(positions, (1..=users).collect::<BTreeSet<_>>());
            // Admitted = exactly the positions up to the watermark.
            for u in 0..users {
                let s = m.standing(t, &format!("u{u}"));
                let p = m.position(t, &format!("u{u}")).unwrap();
                prop_assert_eq!(p <= q.watermark, !matches!(s, Standing::Waiting { .. }));
            }
        }
    }
}
