//! Writes made at the same time go to a node together, in one `POST /v1/batch`.
//!
//! A front end with many users makes many writes at once; sent one HTTP
//! exchange each, most of the work on both sides is the exchange, not the
//! write. Here each node has a sender task: while fewer than
//! [`ClientConfig::batch_in_flight_max`] requests to the node are in flight, a
//! write goes at once (alone, as a plain request, if nothing else is waiting);
//! otherwise it waits and joins the next batch, up to
//! [`ClientConfig::batch_writes_max`] writes. No write ever waits on a timer,
//! so a quiet client adds no latency. Each write keeps its own token,
//! idempotency key, answer and retries: a batch that fails as a whole hands
//! every write in it back to the caller's retry loop, as a failed request
//! would. A node that does not know batches (404, or any refusal of the batch
//! itself but 429/503) gets this client's writes one by one from then on.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use boxoffice_api::{BatchAnswer, BatchRequest, BatchedRequest, ProblemCode, BATCH_PATH};
use bytes::Bytes;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::{problem_from, Attempt, Error, Hint};

/// One write, as its HTTP request.
pub(crate) struct Write {
    pub method: Method,
    /// Path and query.
    pub path: String,
    /// Lower-case names (authorization, idempotency key, admission).
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
}

/// A write waiting for its node's next request.
struct Job {
    write: Write,
    tx: oneshot::Sender<Attempt>,
}

/// The per-node senders of one client (shared by [`crate::Client::with_token`]'s
/// clients).
pub(crate) struct Batcher {
    writes_max: usize,
    in_flight_max: usize,
    senders: Mutex<HashMap<String, mpsc::UnboundedSender<Job>>>,
    /// Nodes that refused a batch: written to one write at a time.
    unbatched: Arc<Mutex<HashSet<String>>>,
    counts: Arc<Counts>,
}

/// What a client's writes went as, so far (see [`crate::Client::batch_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// `POST /v1/batch` requests answered with 200.
    pub batches: u64,
    /// Writes in those.
    pub batched_writes: u64,
    /// Writes sent as requests of their own.
    pub single_writes: u64,
    /// Nodes that refused a batch and get writes one by one since.
    pub unbatched_nodes: u64,
}

#[derive(Default)]
struct Counts {
    batches: AtomicU64,
    batched_writes: AtomicU64,
    single_writes: AtomicU64,
}

impl Batcher {
    pub fn new(writes_max: usize, in_flight_max: usize) -> Self {
        Batcher {
            writes_max,
            in_flight_max: in_flight_max.max(1),
            senders: Mutex::new(HashMap::new()),
            unbatched: Default::default(),
            counts: Default::default(),
        }
    }

    /// What writes went as so far.
    pub fn stats(&self) -> BatchStats {
        let c = &self.counts;
        BatchStats {
            batches: c.batches.load(Ordering::Relaxed),
            batched_writes: c.batched_writes.load(Ordering::Relaxed),
            single_writes: c.single_writes.load(Ordering::Relaxed),
            unbatched_nodes: self
                .unbatched
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .len() as u64,
        }
    }

    /// Sends `write` to `node` as a request of its own.
    pub async fn send_alone(&self, http: &reqwest::Client, node: &str, write: &Write) -> Attempt {
        self.counts.single_writes.fetch_add(1, Ordering::Relaxed);
        send_one(http, node, write).await
    }

    /// Whether writes are batched at all (`batch_writes_max` > 1).
    pub fn enabled(&self) -> bool {
        self.writes_max > 1
    }

    /// Sends `write` to `node`, in a batch if others are waiting.
    pub async fn send(&self, http: &reqwest::Client, node: &str, write: Write) -> Attempt {
        if self
            .unbatched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(node)
        {
            return self.send_alone(http, node, &write).await;
        }
        let (tx, rx) = oneshot::channel();
        let queued = {
            let mut senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
            let sender = senders.entry(node.to_string()).or_insert_with(|| {
                let (stx, srx) = mpsc::unbounded_channel();
                tokio::spawn(run(
                    http.clone(),
                    node.to_string(),
                    srx,
                    self.writes_max,
                    self.in_flight_max,
                    self.unbatched.clone(),
                    self.counts.clone(),
                ));
                stx
            });
            sender.send(Job { write, tx })
        };
        match queued {
            Ok(()) => rx.await.unwrap_or_else(|_| Attempt::Retry {
                // The sender task ended with the write in hand (the runtime is
                // stopping): it may have been sent.
                last: format!("{node}: the batch sender stopped"),
                maybe_applied: true,
                wait: None,
            }),
            // The task is gone (its runtime ended): never sent.
            Err(mpsc::error::SendError(job)) => {
                self.senders
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(node);
                self.send_alone(http, node, &job.write).await
            }
        }
    }
}

/// A node's sender task: takes what is waiting, up to `writes_max`, whenever
/// fewer than `in_flight_max` of its requests are in flight. Ends when the
/// client is dropped.
async fn run(
    http: reqwest::Client,
    node: String,
    mut rx: mpsc::UnboundedReceiver<Job>,
    writes_max: usize,
    in_flight_max: usize,
    unbatched: Arc<Mutex<HashSet<String>>>,
    counts: Arc<Counts>,
) {
    let permits = Arc::new(Semaphore::new(in_flight_max));
    loop {
        // Never closed, so this does not fail.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut jobs = vec![first];
        while jobs.len() < writes_max {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let (http, node, unbatched, counts) = (
            http.clone(),
            node.clone(),
            unbatched.clone(),
            counts.clone(),
        );
        tokio::spawn(async move {
            send_jobs(&http, &node, jobs, &unbatched, &counts).await;
            drop(permit);
        });
    }
}

/// Sends `jobs` to `node`: alone as it is, several as a batch.
async fn send_jobs(
    http: &reqwest::Client,
    node: &str,
    mut jobs: Vec<Job>,
    unbatched: &Mutex<HashSet<String>>,
    counts: &Counts,
) {
    // A caller that stopped waiting (its future was dropped) is left out.
    jobs.retain(|j| !j.tx.is_closed());
    if jobs.len() <= 1 {
        if let Some(job) = jobs.pop() {
            counts.single_writes.fetch_add(1, Ordering::Relaxed);
            let _ = job.tx.send(send_one(http, node, &job.write).await);
        }
        return;
    }
    let requests: Result<Vec<BatchedRequest>, String> = jobs
        .iter()
        .map(|j| {
            Ok(BatchedRequest {
                method: j.write.method.as_str().to_string(),
                path: j.write.path.clone(),
                headers: j.write.headers.iter().cloned().collect(),
                body: j
                    .write
                    .body
                    .as_ref()
                    .map(serde_json::value::to_raw_value)
                    .transpose()
                    .map_err(|e| e.to_string())?,
            })
        })
        .collect();
    let requests = match requests {
        Ok(r) => r,
        Err(_) => {
            // A body that does not serialize alone fails alone.
            return send_each(http, node, jobs, counts).await;
        }
    };
    let resp = match http
        .post(format!("{node}{BATCH_PATH}"))
        .json(&BatchRequest { requests })
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => {
            let maybe_applied = !e.is_connect();
            for job in jobs {
                let _ = job.tx.send(Attempt::Retry {
                    last: format!("{node}: {e}"),
                    maybe_applied,
                    wait: None,
                });
            }
            return;
        }
    };
    let status = resp.status();
    let retry_after = retry_after_of(resp.headers());
    let bytes = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => {
            for job in jobs {
                let _ = job.tx.send(Attempt::Retry {
                    last: format!("{node}: reading a batch's answer: {e}"),
                    maybe_applied: true,
                    wait: None,
                });
            }
            return;
        }
    };
    if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
        // The batch itself was refused (overloaded, rate limited): none ran.
        let problem = problem_from(status, &bytes);
        for job in jobs {
            let _ = job.tx.send(Attempt::Retry {
                last: format!("{node}: {} {}", problem.code, problem.detail),
                maybe_applied: false,
                wait: retry_after,
            });
        }
        return;
    }
    if !status.is_success() {
        // Refused whole before any write ran: a node without batches, or one
        // whose limits this batch broke. One by one is always understood.
        unbatched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node.to_string());
        return send_each(http, node, jobs, counts).await;
    }
    let answer = match serde_json::from_slice::<BatchAnswer>(&bytes) {
        Ok(a) if a.responses.len() == jobs.len() => a,
        other => {
            // Answered, so the writes ran, but what they got cannot be told.
            let why = match other {
                Ok(a) => format!("{} answers for {} writes", a.responses.len(), jobs.len()),
                Err(e) => e.to_string(),
            };
            for job in jobs {
                let _ = job.tx.send(Attempt::Retry {
                    last: format!("{node}: unreadable batch answer: {why}"),
                    maybe_applied: true,
                    wait: None,
                });
            }
            return;
        }
    };
    counts.batches.fetch_add(1, Ordering::Relaxed);
    counts
        .batched_writes
        .fetch_add(jobs.len() as u64, Ordering::Relaxed);
    for (job, a) in jobs.into_iter().zip(answer.responses) {
        let status = StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = a
            .headers
            .get("retry-after")
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
        let hint = Hint::from_headers(|name| a.headers.get(name).map(String::as_str));
        let body = a
            .body
            .map(|raw| Bytes::from(String::from(Box::<str>::from(raw))))
            .unwrap_or_default();
        let _ = job.tx.send(outcome(node, status, retry_after, hint, body));
    }
}

/// Sends each job on its own, all at once.
async fn send_each(http: &reqwest::Client, node: &str, jobs: Vec<Job>, counts: &Counts) {
    counts
        .single_writes
        .fetch_add(jobs.len() as u64, Ordering::Relaxed);
    let mut sends = tokio::task::JoinSet::new();
    for job in jobs {
        let (http, node) = (http.clone(), node.to_string());
        sends.spawn(async move {
            let a = send_one(&http, &node, &job.write).await;
            let _ = job.tx.send(a);
        });
    }
    while sends.join_next().await.is_some() {}
}

/// `Retry-After` in seconds, if given.
fn retry_after_of(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// One write as a plain request of its own.
pub(crate) async fn send_one(http: &reqwest::Client, node: &str, w: &Write) -> Attempt {
    let mut req = http.request(w.method.clone(), format!("{node}{}", w.path));
    for (name, value) in &w.headers {
        req = req.header(name.as_str(), value.as_str());
    }
    if let Some(b) = &w.body {
        req = req.json(b);
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            // A connect failure never reached the node; anything later might have.
            return Attempt::Retry {
                last: format!("{node}: {e}"),
                maybe_applied: !e.is_connect(),
                wait: None,
            };
        }
    };
    let status = resp.status();
    let retry_after = retry_after_of(resp.headers());
    let hint = Hint::from_headers(|name| resp.headers().get(name).and_then(|v| v.to_str().ok()));
    match resp.bytes().await {
        Ok(bytes) => outcome(node, status, retry_after, hint, bytes),
        Err(e) => Attempt::Retry {
            last: format!("{node}: reading answer: {e}"),
            maybe_applied: true,
            wait: None,
        },
    }
}

/// What an answer means for the call: done (an answer or a problem), or a
/// retry elsewhere.
pub(crate) fn outcome(
    node: &str,
    status: StatusCode,
    retry_after: Option<Duration>,
    hint: Hint,
    bytes: Bytes,
) -> Attempt {
    if status.is_success() {
        return Attempt::Done(Ok((status, bytes)), hint);
    }
    let problem = problem_from(status, &bytes);
    // The shard's own refusal (the user's sessions are used up): every node
    // answers the same until some end, so it is the answer, not a retry.
    let shard_refused = problem.problem_code() == Some(ProblemCode::TooManySessions);
    if !shard_refused
        && (status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS)
    {
        // Try again elsewhere; the code says whether this attempt may have
        // applied (outcome_unknown, timeout) or not (not_leader, overloaded, ...).
        return Attempt::Retry {
            last: format!("{node}: {} {}", problem.code, problem.detail),
            maybe_applied: problem.may_have_applied(),
            wait: retry_after,
        };
    }
    Attempt::Done(Err(Error::Api(Box::new(problem))), hint)
}
