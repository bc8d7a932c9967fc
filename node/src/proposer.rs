//! Proposal batching: the requests waiting for one group's leader go into the log
//! together, as one [`Command::Batch`] entry.
//!
//! openraft 0.9's core task appends a client write and waits for that append's
//! fsync before it takes the next one, so a leader that proposed each request as
//! an entry of its own would pay one fsync per request, in series (~4,000
//! entries/s per shard on the benchmark machine, whatever the concurrency). Here
//! each group has a proposer task: it takes the requests queued for the group,
//! up to `raft.propose_batch_max` of them and `raft.propose_batch_bytes_max`
//! bytes, and proposes them as one entry; while `raft.propose_pipeline_max`
//! entries are in flight, new requests wait and join the next one. A lone request
//! is proposed as it is, so an idle group adds no latency.
//!
//! In a batch, requests are ordered by [`Command::batch_rank`] (confirms and
//! releases before holds) and the state machine applies them one after another,
//! each with its own stamp, exactly-once session and outcome; the outcome of the
//! entry lists them, and each caller gets its own.

use std::sync::Arc;
use std::time::Duration;

use boxoffice_raft::codec;
use boxoffice_raft::command::{Command, Effect, Outcome, Request};
use boxoffice_raft::{GroupId, Raft};
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;
use tracing::Instrument;

use crate::node::ProposeError;

/// How a group's proposer gathers requests (from `[raft]` and `[limits]`).
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Most requests in one entry (`raft.propose_batch_max`; 1 turns batching off).
    pub batch_max: usize,
    /// Most encoded request bytes in one entry (`raft.propose_batch_bytes_max`); a
    /// larger request goes alone.
    pub batch_bytes_max: usize,
    /// Entries of this group proposed and not yet applied (`raft.propose_pipeline_max`).
    pub pipeline_max: usize,
    /// Requests queued for the group before callers wait for room (`raft.propose_queue_max`).
    pub queue_max: usize,
}

/// Requests per proposed entry, for the metrics (one group's series).
pub type BatchSizes = prometheus::Histogram;

/// A request waiting for its group's next entry.
struct Pending {
    req: Request,
    /// The client request it serves (for the logs of its entry).
    request_id: Option<Arc<str>>,
    size: usize,
    deadline: Instant,
    tx: oneshot::Sender<Result<Outcome, ProposeError>>,
}

/// The handle to one group's proposer task. Cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Pending>,
    queue_max: usize,
}

impl Proposer {
    /// Starts the proposer of `group`. The task ends when every handle is dropped.
    pub fn start(group: GroupId, raft: Raft, settings: Settings, sizes: BatchSizes) -> Proposer {
        let queue_max = settings.queue_max.max(1);
        let (tx, rx) = mpsc::channel(queue_max);
        tokio::spawn(run(group, raft, rx, settings, sizes));
        Proposer { tx, queue_max }
    }

    /// Requests queued and not yet taken into an entry.
    pub fn queued(&self) -> usize {
        self.queue_max.saturating_sub(self.tx.capacity())
    }

    /// Proposes `req` and waits until it is applied or `timeout` passes.
    pub async fn propose(&self, req: Request, timeout: Duration) -> Result<Outcome, ProposeError> {
        let deadline = Instant::now() + timeout;
        let (tx, rx) = oneshot::channel();
        let pending = Pending {
            request_id: boxoffice_raft::request_id::current(),
            size: codec::encoded_message_len(&req),
            req,
            deadline,
            tx,
        };
        // Queued at once when there is room (no timer to set up); else it waits
        // for room until the deadline.
        let pending = match self.tx.try_send(pending) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Full(p)) => Some(p),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(ProposeError::Unavailable("the group is stopping".into()))
            }
        };
        if let Some(pending) = pending {
            match tokio::time::timeout_at(deadline, self.tx.send(pending)).await {
                // Never queued, so never proposed.
                Err(_) => {
                    return Err(ProposeError::Unavailable(format!(
                        "the group's proposal queue stayed full for {} ms",
                        timeout.as_millis()
                    )))
                }
                Ok(Err(_)) => {
                    return Err(ProposeError::Unavailable("the group is stopping".into()))
                }
                Ok(Ok(())) => {}
            }
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Err(_) => Err(ProposeError::Unknown(format!(
                "not applied within {} ms",
                timeout.as_millis()
            ))),
            // The proposing task ended without an answer (the runtime is stopping).
            Ok(Err(_)) => Err(ProposeError::Unknown("the proposal was dropped".into())),
            Ok(Ok(r)) => r,
        }
    }
}

async fn run(
    group: GroupId,
    raft: Raft,
    mut rx: mpsc::Receiver<Pending>,
    s: Settings,
    sizes: BatchSizes,
) {
    let permits = Arc::new(Semaphore::new(s.pipeline_max.max(1)));
    // A request that did not fit in the previous batch's byte budget.
    let mut carry: Option<Pending> = None;
    loop {
        // The semaphore is never closed, so this only fails if it were.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut bytes = first.size;
        let mut batch = vec![first];
        while batch.len() < s.batch_max {
            match rx.try_recv() {
                Ok(p) if bytes + p.size > s.batch_bytes_max => {
                    carry = Some(p);
                    break;
                }
                Ok(p) => {
                    bytes += p.size;
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        sizes.observe(batch.len() as f64);
        let raft = raft.clone();
        // The entry's span names the requests in it, so a request's id leads
        // to its entry's log lines; at debug level, and built only when
        // enabled (a span per entry has a cost on a busy leader).
        let span = if tracing::enabled!(tracing::Level::DEBUG) {
            let ids: Vec<&str> = batch
                .iter()
                .filter_map(|p| p.request_id.as_deref())
                .collect();
            tracing::debug_span!(
                "propose",
                group = group.0,
                requests = batch.len(),
                request_ids = %ids.join(","),
            )
        } else {
            tracing::Span::none()
        };
        tokio::spawn(
            async move {
                propose_batch(group, &raft, batch).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
}

/// Proposes the requests of one entry and answers each caller.
async fn propose_batch(group: GroupId, raft: &Raft, mut batch: Vec<Pending>) {
    // A caller that stopped waiting was told the outcome is unknown; leaving its
    // request out keeps that true and sheds the load.
    batch.retain(|p| !p.tx.is_closed());
    let Some(deadline) = batch.iter().map(|p| p.deadline).max() else {
        return;
    };
    if batch.len() == 1 && !matches!(batch[0].req.command, Command::Batch(_)) {
        let Some(p) = batch.pop() else { return };
        let _ = p.tx.send(write(group, raft, p.req, deadline).await);
        return;
    }
    // A request that is itself a batch is wrapped too, so the state machine refuses
    // it as nested instead of applying it.
    batch.sort_by_key(|p| p.req.command.batch_rank());
    let (requests, waiters): (Vec<Request>, Vec<_>) =
        batch.into_iter().map(|p| (p.req, p.tx)).unzip();
    let stamp_ms = requests.iter().map(|r| r.stamp_ms).max().unwrap_or(0);
    let n = requests.len();
    let entry = Request {
        stamp_ms,
        session: None,
        command: Command::Batch(requests),
    };
    match write(group, raft, entry, deadline).await {
        Ok(Outcome {
            result: Ok(Effect::Batch(outcomes)),
            ..
        }) if outcomes.len() == n => {
            for (tx, o) in waiters.into_iter().zip(outcomes) {
                let _ = tx.send(Ok(o));
            }
        }
        Ok(other) => {
            // The state machine answers a batch entry with one outcome per request;
            // anything else is a bug. The entry was applied, so the outcome of each
            // request is unknown to its caller.
            tracing::error!(%group, outcome = ?other, "batch entry answered without its outcomes");
            let e =
                ProposeError::Unknown("the batch was applied without per-request outcomes".into());
            for tx in waiters {
                let _ = tx.send(Err(e.clone()));
            }
        }
        Err(e) => {
            for tx in waiters {
                let _ = tx.send(Err(e.clone()));
            }
        }
    }
}

/// One client write on this node, which must lead `group`.
async fn write(
    group: GroupId,
    raft: &Raft,
    req: Request,
    deadline: Instant,
) -> Result<Outcome, ProposeError> {
    match tokio::time::timeout_at(deadline, raft.client_write(req)).await {
        Err(_) => Err(ProposeError::Unknown(
            "not applied before its deadline".into(),
        )),
        Ok(Ok(resp)) => Ok(resp.data),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
            Err(ProposeError::NotLeader {
                group: group.0,
                leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
            })
        }
        Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
            Err(ProposeError::Unavailable(e.to_string()))
        }
        // The entry may have been appended before the node stopped.
        Ok(Err(RaftError::Fatal(e))) => Err(ProposeError::Unknown(e.to_string())),
    }
}
