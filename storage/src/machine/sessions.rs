//! Exactly-once answers: each client request's first outcome, remembered per
//! (client id, idempotency key) for [`SESSION_TTL_MS`] of state-machine time.

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

pub(super) fn apply_request(
    kv: &mut dyn Kv,
    group: GroupId,
    meta: &mut SmMeta,
    index: u64,
    req: &Request,
) -> Outcome {
    let time = meta.time_ms;
    let applied = Applied {
        index,
        time_ms: time,
    };
    if req.stamp_ms > STAMP_MS_MAX {
        // Refused before anything, a session included: nothing of it is kept.
        return Outcome {
            applied,
            replayed: false,
            result: Err(Rejection::InvalidInput {
                reason: format!("stamp {} ms is past the latest time accepted", req.stamp_ms),
            }),
        };
    }
    let Some(session) = &req.session else {
        return Outcome {
            applied,
            replayed: false,
            result: execute(kv, group, meta, time, &req.command),
        };
    };
    if session.client_id.is_empty()
        || session.client_id.len() > CLIENT_ID_LEN_MAX
        || session.idempotency_key.is_empty()
        || session.idempotency_key.len() > IDEMPOTENCY_KEY_LEN_MAX
    {
        let reason = "client id and idempotency key must be 1..=128 bytes".to_string();
        return Outcome {
            applied,
            replayed: false,
            result: Err(Rejection::InvalidInput { reason }),
        };
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
            return Outcome {
                applied,
                replayed: false,
                result: Err(Rejection::IdempotencyKeyReused),
            };
        }
        // Expired but not yet pruned: forget it now and treat this as new.
        kv.delete(session_expiry_key(group, rec.expires_at_ms, session));
    }
    let outcome = Outcome {
        applied,
        replayed: false,
        result: execute(kv, group, meta, time, &req.command),
    };
    let expires_at_ms = time + SESSION_TTL_MS;
    put(
        kv,
        key,
        &SessionRecord {
            fingerprint: fp,
            outcome: outcome.clone(),
            expires_at_ms,
        },
    );
    kv.put(
        session_expiry_key(group, expires_at_ms, session),
        Vec::new(),
    );
    outcome
}

/// Forgets up to `budget` sessions that expired by `time`, oldest first. Invisible
/// to requests (an expired session counts as absent whether or not it is pruned
/// yet); it only keeps the table from growing.
pub(super) fn prune_sessions(kv: &mut dyn Kv, group: GroupId, time: u64, budget: usize) {
    let prefix = Key::sm(group, table::SESSION_EXPIRY).build();
    let mut expired = Vec::new();
    kv.scan(&prefix, &prefix, &mut |k, _| {
        let expires = keys::read_u64(k, prefix.len());
        if expires > time || expired.len() >= budget {
            return false;
        }
        expired.push(k.to_vec());
        true
    });
    for k in expired {
        // Rebuild the session key from the expiry key's tail (client, key).
        let mut session_key = Key::sm(group, table::SESSION).build();
        session_key.extend_from_slice(&k[prefix.len() + 8..]);
        kv.delete(session_key);
        kv.delete(k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::MemKv;
    use crate::machine::apply_entry;
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
}
