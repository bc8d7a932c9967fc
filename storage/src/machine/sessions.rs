//! Exactly-once answers: each client request's first outcome, remembered per
//! (client id, idempotency key) for [`SESSION_TTL_MS`] of state-machine time.
//!
//! From feature level 1 a refusal is remembered for [`SESSION_REJECTED_TTL_MS`]
//! only (long enough for every retry the node and its clients make, too short to
//! pile up), and each user has at most [`USER_SESSIONS_MAX`] live sessions of
//! user requests per group; past it a request is refused and leaves nothing.
//! Their expiry index (`table::SESSION_DEADLINE`) says which sessions count; the
//! level-0 index (`table::SESSION_EXPIRY`) drains as its sessions end.

use boxoffice_raft::command::*;
use boxoffice_raft::GroupId;

use super::{execute, get, put};
use crate::keys::{self, table, Key};
use crate::kv::Kv;
use crate::records::*;

/// How long an exactly-once answer is remembered (state-machine time). A retry
/// after this is treated as a new request. Part of the replicated semantics: every
/// replica must use the same value, so it is a constant, not a node setting.
pub const SESSION_TTL_MS: u64 = 24 * 3600 * 1000;

/// From feature level 1, how long a refusal is remembered instead (10 minutes):
/// a retry within it gets the same refusal; after it, the request runs again
/// (the refusal changed nothing, so that is as if the first never came).
pub const SESSION_REJECTED_TTL_MS: u64 = 10 * 60 * 1000;

/// From feature level 1, the most live sessions of user requests (holds,
/// confirms, releases) one user may have in one group: far more than a person
/// makes in a day, and what bounds the answers one token can make a shard keep.
pub const USER_SESSIONS_MAX: u32 = 4096;

/// Most expired session records forgotten per applied request. Pruning runs once
/// per entry, with this budget for each request in it (each request leaves at most
/// one session), so it keeps pace with new sessions and its work stays bounded.
pub const SESSION_PRUNE_PER_REQUEST: usize = 16;

fn session_key(group: GroupId, s: &Session) -> Vec<u8> {
    Key::sm(group, table::SESSION)
        .str(&s.client_id)
        .str(&s.idempotency_key)
        .build()
}

fn session_expiry_key(group: GroupId, expires: u64, s: &Session) -> Vec<u8> {
    Key::sm(group, table::SESSION_EXPIRY)
        .u64(expires)
        .str(&s.client_id)
        .str(&s.idempotency_key)
        .build()
}

fn session_deadline_key(group: GroupId, expires: u64, counted: bool, s: &Session) -> Vec<u8> {
    Key::sm(group, table::SESSION_DEADLINE)
        .u64(expires)
        .u8(u8::from(counted))
        .str(&s.client_id)
        .str(&s.idempotency_key)
        .build()
}

fn user_sessions_key(group: GroupId, client_id: &str) -> Vec<u8> {
    Key::sm(group, table::USER_SESSIONS).str(client_id).build()
}

/// Adds `delta` (+1 or -1) to the live counted sessions at `key`.
fn count_session(kv: &mut dyn Kv, key: Vec<u8>, delta: i32) {
    let live = get::<UserSessions>(kv, &key).map_or(0, |u| u.live);
    let live = live
        .checked_add_signed(delta)
        .unwrap_or_else(|| panic!("user session count {live} {delta:+} at {key:?}"));
    if live == 0 {
        kv.delete(key);
    } else {
        put(kv, key, &UserSessions { live });
    }
}

pub(super) fn apply_request(
    kv: &mut dyn Kv,
    group: GroupId,
    meta: &mut SmMeta,
    features: &mut Features,
    index: u64,
    req: &Request,
) -> Outcome {
    let time = meta.time_ms;
    let applied = Applied {
        index,
        time_ms: time,
    };
    let refused = |rejection| Outcome {
        applied,
        replayed: false,
        result: Err(rejection),
    };
    if req.stamp_ms > STAMP_MS_MAX {
        // Refused before anything, a session included: nothing of it is kept.
        return refused(Rejection::InvalidInput {
            reason: format!("stamp {} ms is past the latest time accepted", req.stamp_ms),
        });
    }
    let Some(session) = &req.session else {
        return Outcome {
            applied,
            replayed: false,
            result: execute(kv, group, meta, features, time, &req.command),
        };
    };
    if session.client_id.is_empty()
        || session.client_id.len() > CLIENT_ID_LEN_MAX
        || session.idempotency_key.is_empty()
        || session.idempotency_key.len() > IDEMPOTENCY_KEY_LEN_MAX
    {
        let reason = "client id and idempotency key must be 1..=128 bytes".to_string();
        return refused(Rejection::InvalidInput { reason });
    }
    let key = session_key(group, session);
    let fp = fingerprint(&req.command);
    if let Some(rec) = get::<SessionRecord>(kv, &key) {
        if rec.expires_at_ms > time {
            if rec.fingerprint == fp {
                return Outcome {
                    replayed: true,
                    ..rec.outcome
                };
            }
            return refused(Rejection::IdempotencyKeyReused);
        }
        // Expired but not yet pruned: forget it now and treat this as new.
        forget(kv, group, rec.expires_at_ms, session);
    }
    // The level this request is applied at (a batch may raise it before it).
    let bounded = features.level >= 1;
    let counted = bounded && req.command.user().is_some();
    let user_key = user_sessions_key(group, &session.client_id);
    if counted && get::<UserSessions>(kv, &user_key).is_some_and(|u| u.live >= USER_SESSIONS_MAX) {
        return refused(Rejection::TooManySessions {
            max: USER_SESSIONS_MAX,
        });
    }
    let outcome = Outcome {
        applied,
        replayed: false,
        result: execute(kv, group, meta, features, time, &req.command),
    };
    let ttl = match (&outcome.result, bounded) {
        (Err(_), true) => SESSION_REJECTED_TTL_MS,
        _ => SESSION_TTL_MS,
    };
    let expires_at_ms = time + ttl;
    put(
        kv,
        key,
        &SessionRecord {
            fingerprint: fp,
            outcome: outcome.clone(),
            expires_at_ms,
        },
    );
    if bounded {
        kv.put(
            session_deadline_key(group, expires_at_ms, counted, session),
            Vec::new(),
        );
        if counted {
            count_session(kv, user_key, 1);
        }
    } else {
        kv.put(
            session_expiry_key(group, expires_at_ms, session),
            Vec::new(),
        );
    }
    outcome
}

/// Removes the index entry of a session that expired at `expires` (whichever
/// index holds it) and its count; the caller overwrites or deletes the session.
fn forget(kv: &mut dyn Kv, group: GroupId, expires: u64, session: &Session) {
    kv.delete(session_expiry_key(group, expires, session));
    for counted in [false, true] {
        let k = session_deadline_key(group, expires, counted, session);
        if kv.get(&k).is_some() {
            kv.delete(k);
            if counted {
                count_session(kv, user_sessions_key(group, &session.client_id), -1);
            }
        }
    }
}

/// Forgets up to `budget` sessions that expired by `time`, oldest first. Invisible
/// to requests (an expired session counts as absent whether or not it is pruned
/// yet); it only keeps the tables from growing.
pub(super) fn prune_sessions(
    kv: &mut dyn Kv,
    group: GroupId,
    features: &mut Features,
    time: u64,
    mut budget: usize,
) {
    if features.level >= 1 {
        // group, table, expiry (8), counted (1), then the session key's tail:
        // client, key.
        let prefix = Key::sm(group, table::SESSION_DEADLINE).build();
        for k in expired(kv, &prefix, time, budget).0 {
            budget -= 1;
            let tail = &k[prefix.len() + 9..];
            let mut session_key = Key::sm(group, table::SESSION).build();
            session_key.extend_from_slice(tail);
            kv.delete(session_key);
            if k[prefix.len() + 8] == 1 {
                // The client part of the tail: a u16 length, then the bytes.
                let len = usize::from(u16::from_be_bytes([tail[0], tail[1]]));
                let mut user_key = Key::sm(group, table::USER_SESSIONS).build();
                user_key.extend_from_slice(&tail[..2 + len]);
                count_session(kv, user_key, -1);
            }
            kv.delete(k);
        }
    }
    if features.level == 0 || features.legacy_session_expiry {
        let prefix = Key::sm(group, table::SESSION_EXPIRY).build();
        let (due, empty) = expired(kv, &prefix, time, budget);
        if features.level >= 1 && empty {
            // Nothing joins this index after level 0: empty stays empty.
            features.legacy_session_expiry = false;
        }
        for k in due {
            // Rebuild the session key from the expiry key's tail (client, key).
            let mut session_key = Key::sm(group, table::SESSION).build();
            session_key.extend_from_slice(&k[prefix.len() + 8..]);
            kv.delete(session_key);
            kv.delete(k);
        }
    }
}

/// Up to `budget` keys under `prefix` (an expiry index: time first) due by
/// `time`, and whether the index is empty.
fn expired(kv: &dyn Kv, prefix: &[u8], time: u64, budget: usize) -> (Vec<Vec<u8>>, bool) {
    let mut due = Vec::new();
    let mut empty = true;
    kv.scan(prefix, prefix, &mut |k, _| {
        empty = false;
        if keys::read_u64(k, prefix.len()) > time || due.len() >= budget {
            return false;
        }
        due.push(k.to_vec());
        true
    });
    (due, empty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::MemKv;
    use crate::machine::{apply_entry, read_features};
    use crate::testing::{normal as entry, request};

    const GROUP: GroupId = GroupId(1);

    fn ticks(n: usize, stamp_ms: u64, key: &str) -> Request {
        let requests = (0..n)
            .map(|i| {
                request(
                    stamp_ms,
                    Some(("alice", &format!("{key}-{i}"))),
                    Command::Tick,
                )
            })
            .collect();
        request(stamp_ms, None, Command::Batch(requests))
    }

    fn count(kv: &MemKv, table: u8) -> usize {
        let prefix = Key::sm(GROUP, table).build();
        kv.map.keys().filter(|k| k.starts_with(&prefix)).count()
    }

    #[test]
    fn expired_sessions_are_pruned_once_per_entry_within_the_budget() {
        let mut kv = MemKv::default();
        let t0 = 1_000_000;
        // 40 sessions at t0 in one entry, 5 more just before a day has passed.
        apply_entry(&mut kv, GROUP, &entry(1, ticks(40, t0, "a")));
        apply_entry(
            &mut kv,
            GROUP,
            &entry(2, ticks(5, t0 + SESSION_TTL_MS - 1, "b")),
        );
        assert_eq!(count(&kv, table::SESSION), 45);
        assert_eq!(count(&kv, table::SESSION_EXPIRY), 45);
        // A day later, a one-request entry forgets at most its budget of the 40
        // expired ones; the next entries forget the rest, never the 5 live ones.
        let later = t0 + SESSION_TTL_MS;
        let next = |kv: &mut MemKv, index| {
            let req = request(later, None, Command::Tick);
            apply_entry(kv, GROUP, &entry(index, req));
        };
        next(&mut kv, 3);
        assert_eq!(count(&kv, table::SESSION), 45 - SESSION_PRUNE_PER_REQUEST);
        next(&mut kv, 4);
        next(&mut kv, 5);
        assert_eq!(count(&kv, table::SESSION), 5);
        assert_eq!(count(&kv, table::SESSION_EXPIRY), 5);
        // A retry of a pruned session's key is a new request, as it would be
        // unpruned past its lifetime.
        let out = apply_entry(&mut kv, GROUP, &entry(6, ticks(1, later, "a")));
        let Ok(Effect::Batch(outcomes)) = out.result else {
            panic!("{out:?}")
        };
        assert!(!outcomes[0].replayed);
        // A live one is replayed.
        let out = apply_entry(&mut kv, GROUP, &entry(7, ticks(1, later, "b")));
        let Ok(Effect::Batch(outcomes)) = out.result else {
            panic!("{out:?}")
        };
        assert!(outcomes[0].replayed);
    }

    fn enable(kv: &mut MemKv, index: u64, stamp_ms: u64) {
        let req = request(stamp_ms, None, Command::EnableFeatures { level: 1 });
        let out = apply_entry(kv, GROUP, &entry(index, req));
        assert_eq!(out.result, Ok(Effect::Nothing));
    }

    /// A user request that is refused: a release of a hold that does not exist.
    fn refused_release(user: &str) -> Command {
        Command::Release {
            hold_id: HoldId {
                shard: GROUP.0,
                seq: 999,
            },
            user: user.into(),
        }
    }

    /// `user`'s releases with keys `{key}-{i}`, one batch entry.
    fn releases(user: &str, n: usize, stamp_ms: u64, key: &str) -> Request {
        let requests = (0..n)
            .map(|i| {
                request(
                    stamp_ms,
                    Some((user, &format!("{key}-{i}"))),
                    refused_release(user),
                )
            })
            .collect();
        request(stamp_ms, None, Command::Batch(requests))
    }

    fn live_of(kv: &MemKv, user: &str) -> u32 {
        get::<UserSessions>(kv, &user_sessions_key(GROUP, user)).map_or(0, |u| u.live)
    }

    /// Counted entries of the deadline index per client, as the count records
    /// must say.
    fn counted_entries(kv: &MemKv) -> std::collections::BTreeMap<Vec<u8>, u32> {
        let prefix = Key::sm(GROUP, table::SESSION_DEADLINE).build();
        let mut counts = std::collections::BTreeMap::new();
        for k in kv.map.keys().filter(|k| k.starts_with(&prefix)) {
            if k[prefix.len() + 8] == 1 {
                let tail = &k[prefix.len() + 9..];
                let len = usize::from(u16::from_be_bytes([tail[0], tail[1]]));
                *counts.entry(tail[2..2 + len].to_vec()).or_default() += 1;
            }
        }
        counts
    }

    fn assert_counts_agree(kv: &MemKv) {
        for (client, n) in counted_entries(kv) {
            let client = String::from_utf8(client).unwrap();
            assert_eq!(live_of(kv, &client), n, "count of {client}");
        }
        let prefix = Key::sm(GROUP, table::USER_SESSIONS).build();
        let records = kv.map.keys().filter(|k| k.starts_with(&prefix)).count();
        assert_eq!(
            records,
            counted_entries(kv).len(),
            "a count without sessions"
        );
    }

    /// Fails on the first releases' behaviour (level 0, kept below for contrast):
    /// a refusal was remembered for 24 h, so a bot's refused requests with fresh
    /// keys piled up for a day.
    #[test]
    fn from_level_1_a_refusal_is_remembered_for_ten_minutes_not_a_day() {
        for level1 in [false, true] {
            let mut kv = MemKv::default();
            let t0 = 1_000_000;
            if level1 {
                enable(&mut kv, 1, t0);
            }
            let release = |t| request(t, Some(("alice", "r")), refused_release("alice"));
            let first = apply_entry(&mut kv, GROUP, &entry(2, release(t0)));
            assert!(matches!(first.result, Err(Rejection::UnknownHold { .. })));
            let soon = apply_entry(
                &mut kv,
                GROUP,
                &entry(3, release(t0 + SESSION_REJECTED_TTL_MS - 1)),
            );
            assert!(
                soon.replayed,
                "a retry within 10 minutes gets the refusal again"
            );
            let later = apply_entry(
                &mut kv,
                GROUP,
                &entry(4, release(t0 + SESSION_REJECTED_TTL_MS)),
            );
            assert_eq!(later.replayed, !level1, "level 1: {level1}");
            // An accepted request is remembered for the day at either level.
            let tick = |t| request(t, Some(("alice", "t")), Command::Tick);
            apply_entry(&mut kv, GROUP, &entry(5, tick(t0)));
            let next_day = apply_entry(&mut kv, GROUP, &entry(6, tick(t0 + SESSION_TTL_MS - 1)));
            assert!(next_day.replayed);
        }
    }

    #[test]
    fn from_level_1_each_user_has_a_bounded_number_of_live_sessions() {
        let mut kv = MemKv::default();
        let t0 = 1_000_000;
        enable(&mut kv, 1, t0);
        let mut index = 1;
        let mut left = USER_SESSIONS_MAX as usize;
        while left > 0 {
            let n = left.min(BATCH_REQUESTS_MAX);
            index += 1;
            let req = releases("alice", n, t0, &format!("b{index}"));
            apply_entry(&mut kv, GROUP, &entry(index, req));
            left -= n;
        }
        assert_eq!(live_of(&kv, "alice"), USER_SESSIONS_MAX);
        assert_counts_agree(&kv);
        // One more is refused, and leaves nothing behind but the applied index.
        let before = kv.clone();
        let one_more = request(t0, Some(("alice", "one-more")), refused_release("alice"));
        let out = apply_entry(&mut kv, GROUP, &entry(100, one_more.clone()));
        assert_eq!(
            out.result,
            Err(Rejection::TooManySessions {
                max: USER_SESSIONS_MAX
            })
        );
        let meta = Key::sm(GROUP, table::META).build();
        let changed: Vec<_> = kv
            .map
            .iter()
            .filter(|(k, v)| **k != meta && before.map.get(*k) != Some(*v))
            .collect();
        assert!(changed.is_empty(), "{} records changed", changed.len());
        assert_eq!(kv.map.len(), before.map.len());
        // A retry of a live session is still answered; another user, and a
        // request that is not a user's own (not counted), are not held back.
        let retry = request(t0, Some(("alice", "b2-0")), refused_release("alice"));
        assert!(apply_entry(&mut kv, GROUP, &entry(101, retry)).replayed);
        let bob = request(t0, Some(("bob", "b")), refused_release("bob"));
        let out = apply_entry(&mut kv, GROUP, &entry(102, bob));
        assert!(matches!(out.result, Err(Rejection::UnknownHold { .. })));
        let tick = request(t0, Some(("alice", "tick")), Command::Tick);
        assert_eq!(
            apply_entry(&mut kv, GROUP, &entry(103, tick)).result,
            Ok(Effect::Nothing)
        );
        // Once the refusals' 10 minutes are over and pruning has caught up, the
        // user may act again, and the counts still match the index.
        let later = t0 + SESSION_REJECTED_TTL_MS;
        let mut index = 104;
        while live_of(&kv, "alice") > 0 {
            let req = request(later, None, Command::Tick);
            let batch = request(later, None, Command::Batch(vec![req; 200]));
            apply_entry(&mut kv, GROUP, &entry(index, batch));
            index += 1;
            assert!(index < 200, "pruning does not keep up");
        }
        assert_counts_agree(&kv);
        let again = request(later, Some(("alice", "one-more")), refused_release("alice"));
        let out = apply_entry(&mut kv, GROUP, &entry(index, again));
        assert!(matches!(out.result, Err(Rejection::UnknownHold { .. })));
        assert_eq!(live_of(&kv, "alice"), 1);
    }

    #[test]
    fn sessions_of_level_0_end_as_before_and_their_index_drains() {
        let mut kv = MemKv::default();
        let t0 = 1_000_000;
        apply_entry(&mut kv, GROUP, &entry(1, releases("alice", 3, t0, "old")));
        assert_eq!(count(&kv, table::SESSION_EXPIRY), 3);
        assert_eq!(live_of(&kv, "alice"), 0, "level 0 counts nothing");
        enable(&mut kv, 2, t0 + 1);
        assert!(read_features(&kv, GROUP).legacy_session_expiry);
        // Still remembered, for their 24 h (refusals included: their lifetime
        // was set when they were made).
        let retry = request(
            t0 + SESSION_REJECTED_TTL_MS,
            Some(("alice", "old-1")),
            refused_release("alice"),
        );
        assert!(apply_entry(&mut kv, GROUP, &entry(3, retry)).replayed);
        let retry = request(
            t0 + SESSION_TTL_MS,
            Some(("alice", "old-2")),
            refused_release("alice"),
        );
        let out = apply_entry(&mut kv, GROUP, &entry(4, retry));
        assert!(!out.replayed, "a day later it is a new request");
        // That entry's pruning forgot the other old ones; the next finds the old
        // index empty and stops looking at it.
        assert_eq!(count(&kv, table::SESSION_EXPIRY), 0);
        let tick = request(t0 + SESSION_TTL_MS, None, Command::Tick);
        apply_entry(&mut kv, GROUP, &entry(5, tick));
        assert!(!read_features(&kv, GROUP).legacy_session_expiry);
        // old-2 was remade at level 1 (counted), and only it remains.
        assert_eq!(count(&kv, table::SESSION), 1);
        assert_eq!(live_of(&kv, "alice"), 1);
        assert_counts_agree(&kv);
    }

    #[test]
    fn a_session_expired_but_not_pruned_is_forgotten_with_its_count() {
        let mut kv = MemKv::default();
        let t0 = 1_000_000;
        enable(&mut kv, 1, t0);
        let release = |t| request(t, Some(("alice", "r")), refused_release("alice"));
        apply_entry(&mut kv, GROUP, &entry(2, release(t0)));
        assert_eq!(live_of(&kv, "alice"), 1);
        // Reused after its end by a request in the same entry as nothing else:
        // the request sees it first, before the entry's pruning.
        let out = apply_entry(
            &mut kv,
            GROUP,
            &entry(3, release(t0 + SESSION_REJECTED_TTL_MS)),
        );
        assert!(!out.replayed);
        assert_eq!(live_of(&kv, "alice"), 1);
        assert_eq!(count(&kv, table::SESSION_DEADLINE), 1);
        assert_counts_agree(&kv);
    }
}
