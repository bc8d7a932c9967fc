//! The checkers against hand-written histories: each class of violation is
//! reported, and valid histories (including operations of unknown outcome) pass.

use jepsen::checker::{check_all, linearizable, sales, Verdict};
use jepsen::history::{Answer, Applied, Call, Op, Outcome, SeatStatus};

const EVENT: u64 = 7;

fn op(process: u64, call: Call, invoke: u64, complete: u64, outcome: Outcome) -> Op {
    Op {
        process,
        call,
        invoke_us: invoke,
        complete_us: Some(complete),
        outcome,
        error: None,
        answer: Answer::default(),
        applied: None,
    }
}

fn hold_ok(p: u64, seats: &[u32], span: (u64, u64), hold: &str, t: u64, until: u64) -> Op {
    let mut o = op(
        p,
        Call::Hold {
            user: format!("u{p}"),
            event: EVENT,
            seats: seats.to_vec(),
        },
        span.0,
        span.1,
        Outcome::Ok,
    );
    o.answer.hold_id = Some(hold.into());
    o.answer.expires_at_ms = Some(until);
    o.applied = Some(Applied {
        index: t,
        time_ms: t,
    });
    o
}

fn hold_refused(p: u64, seat: u32, span: (u64, u64)) -> Op {
    let mut o = op(
        p,
        Call::Hold {
            user: format!("u{p}"),
            event: EVENT,
            seats: vec![seat],
        },
        span.0,
        span.1,
        Outcome::Fail,
    );
    o.error = Some("seat_unavailable".into());
    o
}

fn confirm(
    p: u64,
    hold: &str,
    span: (u64, u64),
    outcome: Outcome,
    booking: &str,
    seats: &[u32],
    t: u64,
) -> Op {
    let mut o = op(
        p,
        Call::Confirm {
            user: format!("u{p}"),
            hold_id: hold.into(),
        },
        span.0,
        span.1,
        outcome,
    );
    if outcome == Outcome::Ok {
        o.answer.booking_id = Some(booking.into());
        o.answer.seats = seats.to_vec();
        o.applied = Some(Applied {
            index: t,
            time_ms: t,
        });
    } else if outcome == Outcome::Info {
        o.complete_us = None;
    }
    o
}

fn read(
    p: u64,
    span: (u64, u64),
    t: u64,
    linearizable: bool,
    statuses: &[(u32, SeatStatus)],
    bookings: &[(u32, &str)],
) -> Op {
    let mut o = op(
        p,
        Call::Read {
            event: EVENT,
            linearizable,
        },
        span.0,
        span.1,
        Outcome::Ok,
    );
    o.answer.statuses = statuses.to_vec();
    o.answer.bookings = bookings.iter().map(|(s, b)| (*s, b.to_string())).collect();
    o.applied = Some(Applied {
        index: t,
        time_ms: t,
    });
    o
}

fn failed<'a>(verdicts: &'a [Verdict]) -> Vec<&'a str> {
    verdicts
        .iter()
        .filter(|v| !v.valid())
        .map(|v| v.checker)
        .collect()
}

use SeatStatus::*;

#[test]
fn a_valid_history_with_unknown_outcomes_passes() {
    let mut info_hold = op(
        3,
        Call::Hold {
            user: "u3".into(),
            event: EVENT,
            seats: vec![2],
        },
        60,
        0,
        Outcome::Info,
    );
    info_hold.complete_us = None;
    let h = vec![
        hold_ok(1, &[1], (0, 10), "h1", 1000, 10_000),
        hold_refused(2, 1, (5, 15)),
        confirm(1, "h1", (20, 30), Outcome::Ok, "b1", &[1], 2000),
        read(
            4,
            (40, 50),
            3000,
            true,
            &[(1, Sold), (2, Available)],
            &[(1, "b1")],
        ),
        info_hold,
        // The hold of unknown outcome did take effect.
        read(
            4,
            (70, 80),
            4000,
            true,
            &[(1, Sold), (2, Held)],
            &[(1, "b1")],
        ),
        // A stale follower read is not held to linearizability.
        read(5, (90, 95), 1500, false, &[(1, Available)], &[]),
    ];
    let v = check_all(&h, &Default::default());
    assert!(failed(&v).is_empty(), "{v:#?}");
}

#[test]
fn a_double_sale_is_reported() {
    let h = vec![
        hold_ok(1, &[1], (0, 10), "h1", 1000, 10_000),
        hold_ok(2, &[1], (0, 10), "h2", 1001, 10_001),
        confirm(1, "h1", (20, 30), Outcome::Ok, "b1", &[1], 2000),
        confirm(2, "h2", (20, 30), Outcome::Ok, "b2", &[1], 2001),
        read(4, (40, 50), 3000, true, &[(1, Sold)], &[(1, "b2")]),
    ];
    let v = check_all(&h, &Default::default());
    let f = failed(&v);
    assert!(f.contains(&"no double sale"), "{v:#?}");
    assert!(f.contains(&"per-seat linearizability"), "{v:#?}");
    assert!(sales::no_double_sale(&h).violations[0].contains("seat 1 sold to 2 bookings"));
}

#[test]
fn a_lost_acknowledged_booking_is_reported() {
    let h = vec![
        hold_ok(1, &[1], (0, 10), "h1", 1000, 10_000),
        confirm(1, "h1", (20, 30), Outcome::Ok, "b1", &[1], 2000),
        read(4, (40, 50), 3000, true, &[(1, Available)], &[]),
    ];
    let v = sales::acked_confirms_survive(&h);
    assert!(!v.valid());
    assert!(v.violations[0].contains("b1"), "{v:?}");
    assert!(!linearizable::per_seat(&h, linearizable::SEARCH_STEPS_MAX).valid());
}

#[test]
fn a_stale_linearizable_read_is_reported_and_a_stale_follower_read_is_not() {
    let stale = |linearizable| {
        vec![
            hold_ok(1, &[1], (0, 10), "h1", 1000, 10_000),
            // Invoked after the hold was acknowledged, still live at 1500: must see it.
            read(2, (20, 30), 1500, linearizable, &[(1, Available)], &[]),
        ]
    };
    assert!(!linearizable::per_seat(&stale(true), 1000).valid());
    assert!(linearizable::per_seat(&stale(false), 1000).valid());
    // Concurrent with the hold, the same read is fine (it may come first).
    let concurrent = vec![
        hold_ok(1, &[1], (0, 30), "h1", 1000, 10_000),
        read(2, (5, 20), 900, true, &[(1, Available)], &[]),
    ];
    assert!(linearizable::per_seat(&concurrent, 1000).valid());
}

#[test]
fn bookings_nobody_asked_for_are_reported_unless_a_confirm_is_unknown() {
    let base = vec![
        hold_ok(1, &[1], (0, 10), "h1", 1000, 10_000),
        read(4, (40, 50), 3000, true, &[(1, Sold)], &[(1, "b1")]),
    ];
    assert!(
        !sales::acked_confirms_survive(&base).valid(),
        "phantom booking"
    );
    let mut explained = base.clone();
    explained.insert(1, confirm(1, "h1", (20, 0), Outcome::Info, "", &[], 0));
    assert!(sales::acked_confirms_survive(&explained).valid());
    assert!(
        linearizable::per_seat(&explained, 1000).valid(),
        "the unknown confirm took effect"
    );
}

#[test]
fn holds_expire_exactly_at_their_expiry() {
    let at = |t| {
        vec![
            hold_ok(1, &[1], (0, 10), "h1", 1000, 2000),
            hold_ok(2, &[1], (20, 30), "h2", t, t + 1000),
        ]
    };
    assert!(
        linearizable::per_seat(&at(2000), 1000).valid(),
        "free at the expiry instant"
    );
    assert!(
        !linearizable::per_seat(&at(1999), 1000).valid(),
        "still held a millisecond before"
    );
    // Confirming after expiry cannot have succeeded.
    let late = vec![
        hold_ok(1, &[1], (0, 10), "h1", 1000, 2000),
        confirm(1, "h1", (20, 30), Outcome::Ok, "b1", &[1], 2500),
    ];
    assert!(!linearizable::per_seat(&late, 1000).valid());
}

#[test]
fn histories_round_trip_through_json_lines() {
    let h = vec![
        hold_ok(1, &[1, 2], (0, 10), "h1", 1000, 2000),
        hold_refused(2, 1, (5, 15)),
    ];
    let text: String = h
        .iter()
        .map(|o| serde_json::to_string(o).unwrap() + "\n")
        .collect();
    assert_eq!(jepsen::history::parse(&text).unwrap(), h);
    assert!(jepsen::history::parse("{\"nope\": 1}\n")
        .unwrap_err()
        .to_string()
        .contains("line 1"));
}

use jepsen::checker::{caps, follower, holds, liveness};
use jepsen::history::{Freshness, GaState, FINAL_HEAL, NEMESIS_PROCESS};

fn follower_read(
    p: u64,
    span: (u64, u64),
    node: u64,
    index: u64,
    clock: u64,
    statuses: &[(u32, SeatStatus)],
) -> Op {
    let mut o = read(p, span, index, false, statuses, &[]);
    o.answer.freshness = Some(Freshness {
        node,
        shard: 1,
        applied_index: index,
        applied_time_ms: index,
        as_of_ms: index,
        clock_ms: clock,
    });
    o
}

#[test]
fn overlapping_holds_and_wrong_expiry_are_reported_by_the_log_replay() {
    // A second hold granted while the first is live.
    let overlap = vec![
        hold_ok(1, &[1], (0, 10), "h1", 1000, 10_000),
        hold_ok(2, &[1], (20, 30), "h2", 1500, 11_500),
    ];
    assert!(!holds::holds_mean_what_they_say(&overlap).valid());
    // Unless a release of unknown outcome may have freed the seat.
    let mut excused = overlap.clone();
    let mut rel = op(
        1,
        Call::Release {
            user: "u1".into(),
            hold_id: "h1".into(),
        },
        12,
        0,
        Outcome::Info,
    );
    rel.complete_us = None;
    excused.insert(1, rel);
    assert!(holds::holds_mean_what_they_say(&excused).valid());
    // Treated as expired before its expiry: a confirm refused as hold_expired.
    let mut early = confirm(1, "h1", (20, 30), Outcome::Fail, "", &[], 0);
    early.error = Some("hold_expired".into());
    early.applied = Some(Applied {
        index: 1500,
        time_ms: 1500,
    });
    let h = vec![hold_ok(1, &[1], (0, 10), "h1", 1000, 2000), early];
    assert!(!holds::holds_mean_what_they_say(&h).valid());
    // Treated as live after its expiry: a hold refused once it had expired.
    let mut late = hold_refused(2, 1, (40, 50));
    late.applied = Some(Applied {
        index: 2500,
        time_ms: 2500,
    });
    let h = vec![hold_ok(1, &[1], (0, 10), "h1", 1000, 2000), late.clone()];
    assert!(!holds::holds_mean_what_they_say(&h).valid());
    // Refused while live is right.
    late.applied = Some(Applied {
        index: 1900,
        time_ms: 1900,
    });
    let h = vec![hold_ok(1, &[1], (0, 10), "h1", 1000, 2000), late];
    assert!(holds::holds_mean_what_they_say(&h).valid());
}

#[test]
fn follower_reads_are_held_to_their_prefix_monotonicity_and_staleness_bound() {
    let hold = hold_ok(1, &[1], (0, 10), "h1", 1000, 10_000);
    // Index 900 predates the hold: available is right; index 1500 must show it.
    let good = vec![
        hold.clone(),
        follower_read(2, (20, 30), 3, 900, 900, &[(1, Available)]),
        follower_read(2, (40, 50), 3, 1500, 1500, &[(1, Held)]),
    ];
    assert!(follower::follower_reads(&good, 5000).valid());
    let wrong_prefix = vec![
        hold.clone(),
        follower_read(2, (20, 30), 3, 1500, 1500, &[(1, Available)]),
    ];
    assert!(!follower::follower_reads(&wrong_prefix, 5000).valid());
    let backwards = vec![
        hold.clone(),
        follower_read(2, (20, 30), 3, 1500, 1500, &[(1, Held)]),
        follower_read(2, (40, 50), 3, 900, 900, &[(1, Available)]),
    ];
    assert!(!follower::follower_reads(&backwards, 5000).valid());
    // The same regression on another node is a different session.
    let two_nodes = vec![
        hold.clone(),
        follower_read(2, (20, 30), 3, 1500, 1500, &[(1, Held)]),
        follower_read(2, (40, 50), 4, 900, 900, &[(1, Available)]),
    ];
    assert!(follower::follower_reads(&two_nodes, 5000).valid());
    let too_stale = vec![
        hold,
        follower_read(2, (20, 30), 3, 1500, 9000, &[(1, Held)]),
    ];
    assert!(!follower::follower_reads(&too_stale, 5000).valid());
    assert!(follower::follower_reads(&too_stale, 8000).valid());
}

fn ga_hold(p: u64, user: &str, q: u32, hold: &str, t: u64, until: u64) -> Op {
    let mut o = op(
        p,
        Call::HoldQuantity {
            user: user.into(),
            event: EVENT,
            quantity: q,
        },
        t,
        t + 5,
        Outcome::Ok,
    );
    o.answer.hold_id = Some(hold.into());
    o.answer.expires_at_ms = Some(until);
    o.answer.quantity = Some(q);
    o.applied = Some(Applied {
        index: t,
        time_ms: t,
    });
    o
}

#[test]
fn per_user_caps_and_capacity_are_enforced() {
    // 3 live + 2 more > cap 4.
    let over = vec![
        ga_hold(1, "ann", 3, "h1", 1000, 5000),
        ga_hold(1, "ann", 2, "h2", 2000, 6000),
    ];
    assert!(!caps::per_user_caps(&over, 4).valid());
    // After the first expired (or was released) it fits.
    let expired = vec![
        ga_hold(1, "ann", 3, "h1", 1000, 1500),
        ga_hold(1, "ann", 2, "h2", 2000, 6000),
    ];
    assert!(caps::per_user_caps(&expired, 4).valid());
    let mut rel = op(
        1,
        Call::Release {
            user: "ann".into(),
            hold_id: "h1".into(),
        },
        1200,
        1300,
        Outcome::Ok,
    );
    rel.applied = Some(Applied {
        index: 1200,
        time_ms: 1200,
    });
    let released = vec![over[0].clone(), rel, over[1].clone()];
    assert!(caps::per_user_caps(&released, 4).valid());
    // Another user's holds do not count.
    let other = vec![
        ga_hold(1, "ann", 3, "h1", 1000, 5000),
        ga_hold(2, "bob", 2, "h2", 2000, 6000),
    ];
    assert!(caps::per_user_caps(&other, 4).valid());
    // Final state: bookings must add up to what is sold, within capacity and cap.
    let final_read = |sold, bookings: Vec<(&str, &str, u32)>| {
        let mut o = read(9, (100, 110), 9000, true, &[], &[]);
        o.answer.final_state = true;
        o.answer.ga = Some(GaState {
            capacity: 10,
            sold,
            held: 0,
            bookings: bookings
                .into_iter()
                .map(|(b, u, q)| (b.into(), u.into(), q))
                .collect(),
        });
        o
    };
    assert!(caps::per_user_caps(
        &[final_read(5, vec![("b1", "ann", 3), ("b2", "bob", 2)])],
        4
    )
    .valid());
    assert!(!caps::per_user_caps(
        &[final_read(6, vec![("b1", "ann", 3), ("b2", "bob", 2)])],
        4
    )
    .valid());
    assert!(!caps::per_user_caps(
        &[final_read(5, vec![("b1", "ann", 3), ("b2", "ann", 2)])],
        4
    )
    .valid());
    assert!(!caps::per_user_caps(
        &[final_read(
            11,
            vec![("b1", "ann", 4), ("b2", "bob", 4), ("b3", "cy", 3)]
        )],
        4
    )
    .valid());
}

#[test]
fn liveness_after_the_final_heal_is_bounded() {
    let heal = {
        let mut o = op(
            NEMESIS_PROCESS,
            Call::Nemesis {
                fault: FINAL_HEAL.into(),
            },
            1_000_000,
            2_000_000,
            Outcome::Ok,
        );
        o.answer = Answer::default();
        o
    };
    let after = |at_us: u64| {
        vec![
            heal.clone(),
            hold_ok(1, &[1], (at_us, at_us + 1000), "h1", 5000, 9000),
            confirm(
                1,
                "h1",
                (at_us + 2000, at_us + 3000),
                Outcome::Ok,
                "b1",
                &[1],
                6000,
            ),
        ]
    };
    assert!(liveness::recovers_after_heal(&after(2_100_000), 1000).valid());
    assert!(!liveness::recovers_after_heal(&after(5_000_000), 1000).valid());
    assert!(!liveness::recovers_after_heal(&[heal], 1000).valid());
}

#[test]
fn only_final_state_reads_count_as_the_final_state_when_marked() {
    let mut fin = read(9, (100, 110), 9000, true, &[(1, Sold)], &[(1, "b1")]);
    fin.answer.final_state = true;
    let h = vec![
        hold_ok(1, &[1], (0, 10), "h1", 1000, 10_000),
        confirm(1, "h1", (20, 30), Outcome::Ok, "b1", &[1], 2000),
        fin,
        // A later linearizable read without bookings is not the final state.
        read(4, (120, 130), 9500, true, &[(1, Sold)], &[]),
    ];
    assert!(sales::acked_confirms_survive(&h).valid());
    // Without the final-state read, the acknowledged booking cannot be found.
    let mut no_final = h.clone();
    no_final.remove(2);
    no_final[2].answer.final_state = false;
    assert!(!sales::acked_confirms_survive(&no_final).valid());
}

#[test]
fn writes_sharing_a_log_entry_replay_in_the_leaders_batch_order() {
    // One entry (index 1500) holds a release of h1 and a new hold on its seat: the
    // leader applies releases before holds, so the new hold is right, whatever
    // order the history lists them in.
    let mut release = op(
        1,
        Call::Release {
            user: "u1".into(),
            hold_id: "h1".into(),
        },
        40,
        60,
        Outcome::Ok,
    );
    release.applied = Some(Applied {
        index: 1500,
        time_ms: 1500,
    });
    let h = vec![
        hold_ok(1, &[1], (0, 10), "h1", 1000, 10_000),
        hold_ok(2, &[1], (20, 50), "h2", 1500, 11_500),
        release.clone(),
    ];
    assert!(holds::holds_mean_what_they_say(&h).valid());
    // A single-seat hold refused in that entry came after the granted one.
    let mut refused = hold_refused(3, 1, (20, 45));
    refused.applied = Some(Applied {
        index: 1500,
        time_ms: 1500,
    });
    let mut with_refusal = vec![refused.clone()];
    with_refusal.extend(h.iter().cloned());
    assert!(holds::holds_mean_what_they_say(&with_refusal).valid());
    // Without the release, two holds granted on one seat in one entry are reported.
    let double = vec![
        hold_ok(1, &[1], (0, 10), "h1", 1000, 10_000),
        hold_ok(2, &[1], (20, 50), "h2", 1500, 11_500),
        hold_ok(3, &[1], (20, 50), "h3", 1500, 11_500),
    ];
    assert!(!holds::holds_mean_what_they_say(&double).valid());
    // A refusal in an entry that freed the seat and granted it to nobody is wrong.
    let freed = vec![
        hold_ok(1, &[1], (0, 10), "h1", 1000, 10_000),
        release,
        refused,
    ];
    assert!(!holds::holds_mean_what_they_say(&freed).valid());
}
