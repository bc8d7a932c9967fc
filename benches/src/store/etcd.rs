//! etcd as its experts would drive it: gRPC through the maintained `etcd-client`
//! crate, writes sent straight to the leader, a key per seat. A hold is one
//! transaction that creates every seat key only if none exists, attached to a
//! lease shared by every hold of the same second (a lease grant is a Raft write
//! of its own: one a second, not one per hold). A confirm is one transaction
//! comparing each seat's value with the hold and rewriting it as sold without a
//! lease. Both are idempotent: on failure each transaction reads the seats back,
//! and seats already the buyer's (from an attempt whose answer was lost in a
//! failover) count as done, so a retry on the new leader is safe, as it is for
//! boxoffice's client.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
};
use tokio::sync::Mutex;

use super::{uuid_like, ConfirmOutcome, EventIds, HoldOutcome, HOLD_TTL_S};

/// Time allowed for one etcd request (a Raft write), as for a boxoffice write.
pub const ETCD_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Keys per etcd range request when reading the final state.
const ETCD_RANGE_PAGE: i64 = 5000;
/// gRPC channels (HTTP/2 connections) per member that buyers share.
pub const ETCD_CHANNELS: usize = 4;
/// How long holds share one lease; the lease lives this much longer than a
/// hold, so no hold gets less than [`HOLD_TTL_S`].
const LEASE_SHARE: Duration = Duration::from_secs(1);
/// Attempts of one hold or confirm across leader changes.
const ETCD_ATTEMPTS: usize = 20;
/// Pause between attempts while a new leader is found.
const ETCD_RETRY_PAUSE: Duration = Duration::from_millis(100);

pub struct Etcd {
    /// Per member, [`ETCD_CHANNELS`] clients.
    members: Vec<Vec<Client>>,
    /// Index of the member believed to lead.
    leader: AtomicUsize,
    /// The lease of this second's holds: (granted at, id).
    lease: Mutex<Option<(Instant, i64)>>,
    pub version: String,
    pub ids: EventIds,
}

impl Etcd {
    pub async fn new(cluster: &crate::procs::EtcdCluster) -> anyhow::Result<Self> {
        let mut members = Vec::new();
        for url in &cluster.client_urls {
            let mut chans = Vec::new();
            for _ in 0..ETCD_CHANNELS {
                let opts = ConnectOptions::new()
                    .with_timeout(ETCD_REQUEST_TIMEOUT)
                    .with_connect_timeout(ETCD_REQUEST_TIMEOUT);
                chans.push(Client::connect([url.as_str()], Some(opts)).await?);
            }
            members.push(chans);
        }
        let etcd = Etcd {
            members,
            leader: AtomicUsize::new(0),
            lease: Mutex::new(None),
            version: cluster.version.clone(),
            ids: EventIds::default(),
        };
        etcd.find_leader().await?;
        Ok(etcd)
    }

    /// Asks the members which of them leads, and sends writes there from now on.
    async fn find_leader(&self) -> anyhow::Result<usize> {
        for (i, m) in self.members.iter().enumerate() {
            let Ok(status) = m[0].clone().status().await else {
                continue;
            };
            let me = status.header().map(|h| h.member_id());
            if me == Some(status.leader()) {
                self.leader.store(i, Ordering::Relaxed);
                return Ok(i);
            }
        }
        anyhow::bail!("no etcd member says it leads")
    }

    fn client(&self, worker: usize) -> Client {
        let m = &self.members[self.leader.load(Ordering::Relaxed) % self.members.len()];
        m[worker % m.len()].clone()
    }

    fn key(event: u64, seat: u32) -> String {
        format!("seat/{event}/{seat:06}")
    }

    /// This second's lease, granted if there is none yet.
    async fn lease(&self, worker: usize) -> anyhow::Result<i64> {
        let mut l = self.lease.lock().await;
        if let Some((at, id)) = *l {
            if at.elapsed() < LEASE_SHARE {
                return Ok(id);
            }
        }
        let ttl = (HOLD_TTL_S + LEASE_SHARE.as_secs().max(1)) as i64;
        // Like every write, across a leader change: a grant whose answer was
        // lost only leaves an unused lease to expire.
        let id = self
            .on_leader(
                worker,
                |mut c| async move { c.lease_grant(ttl, None).await },
            )
            .await?
            .id();
        *l = Some((Instant::now(), id));
        Ok(id)
    }

    /// Runs `call` on a client of the member believed to lead until it is
    /// answered, at most [`ETCD_ATTEMPTS`] times, asking the members which of
    /// them leads before each retry.
    async fn on_leader<T, F, Fut>(&self, worker: usize, call: F) -> anyhow::Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut last = None;
        for attempt in 0..ETCD_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(ETCD_RETRY_PAUSE).await;
                let _ = self.find_leader().await;
            }
            match call(self.client(worker)).await {
                Ok(r) => return Ok(r),
                Err(e) => last = Some(e),
            }
        }
        Err(last.context("no attempt")?.into())
    }

    /// Runs `txn` (built afresh per attempt) on the leader (see [`Self::on_leader`]);
    /// the answer: did its comparisons hold, and the values its failure branch read.
    async fn txn(
        &self,
        worker: usize,
        build: impl Fn() -> Txn,
    ) -> anyhow::Result<(bool, Vec<Option<Vec<u8>>>)> {
        let r = self
            .on_leader(worker, |mut c| {
                let t = build();
                async move { c.txn(t).await }
            })
            .await?;
        let read = r
            .op_responses()
            .into_iter()
            .map(|op| match op {
                TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
                _ => None,
            })
            .collect();
        Ok((r.succeeded(), read))
    }

    pub(super) async fn hold(&self, worker: usize, event: u64, seats: &[u32]) -> HoldOutcome {
        let hold_id = format!("h{event}-{}", uuid_like());
        let r: anyhow::Result<bool> = async {
            let lease = self.lease(worker).await?;
            let keys: Vec<String> = seats.iter().map(|&s| Self::key(event, s)).collect();
            let (ok, read) = self
                .txn(worker, || {
                    Txn::new()
                        .when(
                            keys.iter()
                                .map(|k| Compare::create_revision(k.as_str(), CompareOp::Equal, 0))
                                .collect::<Vec<_>>(),
                        )
                        .and_then(
                            keys.iter()
                                .map(|k| {
                                    TxnOp::put(
                                        k.as_str(),
                                        hold_id.as_str(),
                                        Some(PutOptions::new().with_lease(lease)),
                                    )
                                })
                                .collect::<Vec<_>>(),
                        )
                        .or_else(
                            keys.iter()
                                .map(|k| TxnOp::get(k.as_str(), None))
                                .collect::<Vec<_>>(),
                        )
                })
                .await?;
            // Refused, unless every seat already holds this hold (an earlier
            // attempt applied).
            Ok(ok
                || read
                    .iter()
                    .all(|v| v.as_deref() == Some(hold_id.as_bytes())))
        }
        .await;
        match r {
            Ok(true) => HoldOutcome::Granted(hold_id),
            Ok(false) => HoldOutcome::Conflict,
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
        let booking = format!("b{}", &hold[1..]);
        let sold = format!("sold:{booking}");
        let keys: Vec<String> = seats.iter().map(|&s| Self::key(event, s)).collect();
        let booking_key = format!("booking/{event}/{booking}");
        let seat_list = format!("{seats:?}");
        let r = self
            .txn(worker, || {
                let mut puts: Vec<TxnOp> = keys
                    .iter()
                    .map(|k| TxnOp::put(k.as_str(), sold.as_str(), None))
                    .collect();
                puts.push(TxnOp::put(booking_key.as_str(), seat_list.as_str(), None));
                Txn::new()
                    .when(
                        keys.iter()
                            .map(|k| Compare::value(k.as_str(), CompareOp::Equal, hold))
                            .collect::<Vec<_>>(),
                    )
                    .and_then(puts)
                    .or_else(
                        keys.iter()
                            .map(|k| TxnOp::get(k.as_str(), None))
                            .collect::<Vec<_>>(),
                    )
            })
            .await;
        match r {
            Ok((true, _)) => ConfirmOutcome::Confirmed,
            Ok((false, read)) if read.iter().all(|v| v.as_deref() == Some(sold.as_bytes())) => {
                ConfirmOutcome::Confirmed
            }
            Ok(_) => ConfirmOutcome::Refused("hold expired or not ours".into()),
            Err(e) => ConfirmOutcome::Unknown(format!("{e:#}")),
        }
    }

    pub(super) async fn sold_seats(&self, event: u64) -> anyhow::Result<Vec<u32>> {
        // range_end = the prefix with its last byte incremented ('/' + 1 = '0').
        let end = format!("seat/{event}0");
        let mut from = format!("seat/{event}/").into_bytes();
        let mut sold = Vec::new();
        loop {
            let r = self
                .client(0)
                .get(
                    from.clone(),
                    Some(
                        GetOptions::new()
                            .with_range(end.as_str())
                            .with_limit(ETCD_RANGE_PAGE),
                    ),
                )
                .await?;
            let kvs = r.kvs();
            for kv in kvs {
                if kv.value().starts_with(b"sold:") {
                    let k = String::from_utf8_lossy(kv.key());
                    let seat = k
                        .rsplit('/')
                        .next()
                        .and_then(|s| s.parse().ok())
                        .with_context(|| format!("bad seat key {k}"))?;
                    sold.push(seat);
                }
                from = kv.key().to_vec();
                from.push(0);
            }
            if !r.more() || kvs.is_empty() {
                return Ok(sold);
            }
        }
    }
}
