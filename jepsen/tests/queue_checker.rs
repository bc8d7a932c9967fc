//! The waiting-room checkers catch what they exist for: each is fed a good
//! history (no violation) and the same history with the bug it looks for.

use jepsen::checker::queue::*;

/// 30 users: 20 joined before the start (shuffled positions), 10 after
/// (positions 21..=30 in join order); the first 8 positions admitted, 2 a
/// minute apart... well within 60 a minute, one session of 10 s each.
fn good() -> QueueFacts {
    let mut f = QueueFacts {
        admit_per_minute: 60,
        active_max: 5,
        shuffled: true,
        prequeue: Some(20),
        ..QueueFacts::default()
    };
    // A fixed shuffle of 0..20 (uncorrelated with join order).
    let shuffle = [
        13, 2, 17, 8, 0, 11, 19, 5, 15, 3, 9, 18, 1, 12, 6, 16, 4, 10, 14, 7,
    ];
    for t in 0..30u64 {
        let user = format!("u{t}");
        let position = if t < 20 {
            shuffle[t as usize] + 1
        } else {
            t + 1
        };
        let admitted_at = (position <= 8).then(|| 1_000_000 + position * 2_000);
        f.acked_joins.insert(user.clone(), t);
        f.final_places.insert(
            user.clone(),
            FinalPlace {
                ticket: t,
                position: Some(position),
                phase: if admitted_at.is_some() {
                    "expired".into()
                } else {
                    "waiting".into()
                },
                admitted_at_ms: admitted_at,
                session_ends_at_ms: admitted_at.map(|a| a + 9_000),
            },
        );
        f.observations.push(Observation {
            user: user.clone(),
            start_us: 10,
            end_us: 20,
            applied_index: 20,
            phase: "waiting".into(),
            position: Some(position),
            admitted_at_ms: None,
        });
        if let Some(a) = admitted_at {
            f.observations.push(Observation {
                user: user.clone(),
                start_us: 1_000 + position * 100,
                end_us: 1_010 + position * 100,
                applied_index: 1_010 + position * 100,
                phase: "admitted".into(),
                position: Some(position),
                admitted_at_ms: Some(a),
            });
            f.holds.push(HoldAttempt {
                user: user.clone(),
                admission: AdmissionUsed::Own,
                ok: true,
                applied_time_ms: Some(a + 500),
            });
        }
    }
    f.holds.push(HoldAttempt {
        user: "u25".into(),
        admission: AdmissionUsed::None,
        ok: false,
        applied_time_ms: None,
    });
    f
}

fn user_at(f: &QueueFacts, position: u64) -> String {
    f.final_places
        .iter()
        .find(|(_, p)| p.position == Some(position))
        .map(|(u, _)| u.clone())
        .unwrap()
}

#[test]
fn a_good_history_passes_every_checker() {
    for v in check(&good()) {
        assert!(v.valid(), "{}: {:?}", v.checker, v.violations);
    }
}

#[test]
fn a_lost_join_and_a_changed_ticket_are_caught() {
    let mut f = good();
    f.final_places.remove("u3");
    f.final_places.get_mut("u4").unwrap().ticket = 99;
    let v = joins_survive(&f);
    assert_eq!(v.violations.len(), 2, "{:?}", v.violations);
    let mut f = good();
    f.final_places.get_mut("u5").unwrap().ticket = 6;
    assert!(!joins_survive(&f).valid(), "a shared ticket");
}

#[test]
fn a_double_admission_is_caught() {
    let mut f = good();
    let u = user_at(&f, 3);
    f.observations.push(Observation {
        user: u,
        start_us: 5_000,
        end_us: 5_010,
        applied_index: 5_010,
        phase: "admitted".into(),
        position: Some(3),
        admitted_at_ms: Some(1_999_999),
    });
    assert!(!admitted_once(&f).valid());
    let mut f = good();
    let u = user_at(&f, 4);
    f.final_places.get_mut(&u).unwrap().position = Some(5);
    assert!(!admitted_once(&f).valid(), "two users at one position");
}

#[test]
fn admission_out_of_order_is_caught() {
    // Position 10 admitted while 9 is not.
    let mut f = good();
    let u = user_at(&f, 10);
    let p = f.final_places.get_mut(&u).unwrap();
    p.phase = "admitted".into();
    p.admitted_at_ms = Some(1_030_000);
    p.session_ends_at_ms = Some(1_039_000);
    assert!(!admission_order(&f).valid());
    // Position 2 admitted before position 1.
    let mut f = good();
    let u = user_at(&f, 2);
    f.final_places.get_mut(&u).unwrap().admitted_at_ms = Some(1_000_000);
    assert!(!admission_order(&f).valid());
    // A late joiner not at the back.
    let mut f = good();
    f.final_places.get_mut("u25").unwrap().position = Some(2);
    assert!(!admission_order(&f).valid());
    // Seen waiting after someone behind was seen admitted.
    let mut f = good();
    let u = user_at(&f, 9);
    f.observations.push(Observation {
        user: u,
        start_us: 5_000,
        end_us: 5_010,
        applied_index: 5_010,
        phase: "waiting".into(),
        position: Some(9),
        admitted_at_ms: None,
    });
    let mut g = f.clone();
    assert!(admission_order(&f).valid(), "9 is behind everyone admitted");
    let u = user_at(&g, 5);
    g.observations.push(Observation {
        user: u,
        start_us: 5_000,
        end_us: 5_010,
        applied_index: 5_010,
        phase: "waiting".into(),
        position: Some(5),
        admitted_at_ms: None,
    });
    assert!(
        !admission_order(&g).valid(),
        "5 waiting after 6..8 admitted"
    );
}

#[test]
fn too_fast_or_too_many_open_is_caught() {
    let mut f = good();
    f.admit_per_minute = 3;
    f.active_max = 100;
    assert!(!admission_rate(&f).valid(), "8 in 16 s at 3 a minute");
    let mut f = good();
    f.active_max = 4;
    // Sessions of 9 s admitted every 2 s: 5 open at once.
    assert!(!admission_rate(&f).valid());
    let f = good();
    assert!(admission_rate(&f).valid());
}

#[test]
fn holds_without_a_valid_admission_are_caught() {
    for (admission, at) in [
        (AdmissionUsed::None, Some(1_002_500)),
        (AdmissionUsed::Other, Some(1_002_500)),
        // Own admission, after the session ended.
        (AdmissionUsed::Own, Some(1_020_000)),
        // Own admission, before admission.
        (AdmissionUsed::Own, Some(999_000)),
    ] {
        let mut f = good();
        let u = user_at(&f, 1);
        f.holds.push(HoldAttempt {
            user: u,
            admission,
            ok: true,
            applied_time_ms: at,
        });
        assert!(!holds_need_admission(&f).valid(), "{admission:?} at {at:?}");
    }
}

#[test]
fn a_fifo_prequeue_fails_the_shuffle_test() {
    let mut f = good();
    assert!(prequeue_shuffled(&f).valid());
    for (u, p) in f.final_places.iter_mut() {
        let t: u64 = u[1..].parse().unwrap();
        if t < 20 {
            p.position = Some(t + 1);
        }
    }
    let v = prequeue_shuffled(&f);
    assert!(!v.valid(), "{:?}", v.notes);
    assert!((spearman(&[(0, 0), (1, 1), (2, 2)]) - 1.0).abs() < 1e-9);
    assert!((spearman(&[(0, 2), (1, 1), (2, 0)]) + 1.0).abs() < 1e-9);
}

#[test]
fn a_lagging_replica_showing_an_earlier_state_later_is_no_violation() {
    // Position 5 seen waiting after 6..8 were seen admitted in real time, but
    // by a replica that had not applied their admission yet (a lower index).
    let mut f = good();
    let u = user_at(&f, 5);
    f.observations.push(Observation {
        user: u,
        start_us: 5_000,
        end_us: 5_010,
        applied_index: 1_000,
        phase: "waiting".into(),
        position: Some(5),
        admitted_at_ms: None,
    });
    assert!(admission_order(&f).valid());
}
