//! Redis as its experts would run the TTL-lock design: a key per seat; the hold
//! is one Lua script that takes every seat or none (`SET ... PX ttl`), the
//! confirm one that checks every seat is still ours and marks it sold; scripts
//! are loaded once and called by hash.
//!
//! - `redis`: one server, `appendfsync always`, a few multiplexed connections
//!   (Redis answers in order; pipelining is how it is driven).
//! - `redis-replicated`: a primary and two replicas, each `appendfsync always`;
//!   every write is followed, on the same connection and in the same round trip,
//!   by `WAIT 1`, and a connection per buyer keeps one buyer's `WAIT` from
//!   delaying another's requests. What `WAIT 1` promises: one replica has
//!   received and applied the write (it is in its memory). Not that the replica
//!   has fsynced it (Redis 7.0 has no `WAITAOF`), and not that a failover keeps
//!   it: a promoted replica may be the one that did not have it.

use redis::aio::MultiplexedConnection;

use super::{uuid_like, ConfirmOutcome, EventIds, HoldOutcome, HOLD_TTL_S};

/// Multiplexed connections the buyers of `redis` share.
pub const REDIS_CONNECTIONS: usize = 8;
/// Most connections of `redis-replicated` (one per buyer up to this many).
pub const REDIS_WAIT_CONNECTIONS: usize = 1024;
/// How long `WAIT` may wait for a replica's acknowledgement, ms.
pub const REDIS_WAIT_TIMEOUT_MS: u64 = 10_000;

/// Hold: if any seat key exists (held or sold), nothing; else every seat is set
/// to the hold id with the hold's lifetime. Returns 1 if held.
pub const HOLD_LUA: &str = r"
for i, k in ipairs(KEYS) do
  if redis.call('EXISTS', k) == 1 then return 0 end
end
for i, k in ipairs(KEYS) do
  redis.call('SET', k, ARGV[1], 'PX', ARGV[2])
end
return 1";

/// Confirm: every seat key must still hold our hold id; then all are marked sold
/// (no expiry) and the booking is recorded, atomically.
const CONFIRM_LUA: &str = r"
for i, k in ipairs(KEYS) do
  if redis.call('GET', k) ~= ARGV[1] then return 0 end
end
for i, k in ipairs(KEYS) do
  redis.call('SET', k, ARGV[2])
end
redis.call('RPUSH', ARGV[3], ARGV[2])
return 1";

/// The key of a seat.
pub fn seat_key(event: u64, seat: u32) -> String {
    format!("seat:{event}:{seat}")
}

/// `EVALSHA hash keys.len() keys.. args..` of a loaded script.
pub fn evalsha(hash: &str, keys: &[String], args: &[String]) -> redis::Cmd {
    let mut c = redis::cmd("EVALSHA");
    c.arg(hash).arg(keys.len()).arg(keys).arg(args);
    c
}

/// Loads `lua` into the server's script cache; returns its hash.
pub async fn load_script(c: &mut MultiplexedConnection, lua: &str) -> anyhow::Result<String> {
    Ok(redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(lua)
        .query_async(c)
        .await?)
}

pub struct Redis {
    pub replicated: bool,
    conns: Vec<MultiplexedConnection>,
    hold_sha: String,
    confirm_sha: String,
    version: String,
    pub ids: EventIds,
}

impl Redis {
    /// Connections to `server` (the primary); `replicated`: it has replicas and
    /// every write waits for one of them.
    pub async fn new(
        server: &crate::procs::RedisServer,
        replicated: bool,
        buyers: usize,
    ) -> anyhow::Result<Self> {
        let n = if replicated {
            buyers.clamp(1, REDIS_WAIT_CONNECTIONS)
        } else {
            REDIS_CONNECTIONS
        };
        let mut conns = Vec::new();
        for _ in 0..n {
            conns.push(server.connect().await?);
        }
        let hold_sha = load_script(&mut conns[0], HOLD_LUA).await?;
        let confirm_sha = load_script(&mut conns[0], CONFIRM_LUA).await?;
        Ok(Redis {
            replicated,
            conns,
            hold_sha,
            confirm_sha,
            version: server.version.clone(),
            ids: EventIds::default(),
        })
    }

    pub fn durability(&self) -> String {
        if self.replicated {
            format!(
                "Redis {}, primary + 2 replicas, each appendfsync always; WAIT 1 after each write (on one replica's memory before ack, not its disk; no automatic failover)",
                self.version
            )
        } else {
            format!(
                "Redis {}, 1 node, appendonly yes, appendfsync always",
                self.version
            )
        }
    }

    /// Runs `cmd` on buyer `worker`'s connection, followed in the same round trip
    /// by `WAIT 1` when replicated; the script's answer, or an error if no replica
    /// acknowledged in time.
    async fn write(&self, worker: usize, cmd: redis::Cmd) -> anyhow::Result<i64> {
        let mut c = self.conns[worker % self.conns.len()].clone();
        if !self.replicated {
            return Ok(cmd.query_async(&mut c).await?);
        }
        let mut pipe = redis::pipe();
        pipe.add_command(cmd)
            .cmd("WAIT")
            .arg(1)
            .arg(REDIS_WAIT_TIMEOUT_MS);
        let (answer, replicas): (i64, i64) = pipe.query_async(&mut c).await?;
        anyhow::ensure!(
            replicas >= 1,
            "no replica acknowledged the write within {REDIS_WAIT_TIMEOUT_MS} ms"
        );
        Ok(answer)
    }

    pub(super) async fn hold(&self, worker: usize, event: u64, seats: &[u32]) -> HoldOutcome {
        let hold_id = format!("h{event}-{}", uuid_like());
        let keys: Vec<String> = seats.iter().map(|&s| seat_key(event, s)).collect();
        let cmd = evalsha(
            &self.hold_sha,
            &keys,
            &[hold_id.clone(), (HOLD_TTL_S * 1000).to_string()],
        );
        match self.write(worker, cmd).await {
            Ok(1) => HoldOutcome::Granted(hold_id),
            Ok(_) => HoldOutcome::Conflict,
            Err(e) => HoldOutcome::Failed(format!("{e:#}")),
        }
    }

    pub(super) async fn confirm(
        &self,
        worker: usize,
        event: u64,
        hold: &str,
        seats: &[u32],
    ) -> ConfirmOutcome {
        let keys: Vec<String> = seats.iter().map(|&s| seat_key(event, s)).collect();
        let cmd = evalsha(
            &self.confirm_sha,
            &keys,
            &[
                hold.to_string(),
                format!("sold:b{}", &hold[1..]),
                format!("bookings:{event}"),
            ],
        );
        match self.write(worker, cmd).await {
            Ok(1) => ConfirmOutcome::Confirmed,
            Ok(_) => ConfirmOutcome::Refused("hold expired or not ours".into()),
            Err(e) => ConfirmOutcome::Unknown(format!("{e:#}")),
        }
    }

    pub(super) async fn sold_seats(&self, event: u64, seats: u32) -> anyhow::Result<Vec<u32>> {
        let mut c = self.conns[0].clone();
        let mut sold = Vec::new();
        let all: Vec<u32> = (0..seats).collect();
        for chunk in all.chunks(1000) {
            let keys: Vec<String> = chunk.iter().map(|&s| seat_key(event, s)).collect();
            let vals: Vec<Option<String>> =
                redis::cmd("MGET").arg(keys).query_async(&mut c).await?;
            sold.extend(
                chunk
                    .iter()
                    .zip(vals)
                    .filter(|(_, v)| v.as_deref().is_some_and(|v| v.starts_with("sold:")))
                    .map(|(s, _)| *s),
            );
        }
        Ok(sold)
    }
}
