//! The virtual waiting room on the node: its settings (`[queue]`), the
//! admission tokens ([`admission`]), each shard leader's ticker, and the user's
//! view of their place (position, wait, when to ask again), worked out from the
//! local replica alone so that waiting users put no load on the leader.

pub mod admission;

use std::sync::Weak;
use std::time::Duration;

use boxoffice_api::{
    Applied, QueueOrderName, QueuePhase, QueuePlace, QueueSettings, QueueStats, QueueStatusName,
};
use boxoffice_raft::command::{Command, QueueOrder, QueueStatus, QUEUE_RATE_WINDOW_MS};
use boxoffice_storage::machine::queue::Standing;
use boxoffice_storage::records::{Queue, QueueJoin};
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::node::{now_ms, Node};

/// `[queue]`: how the waiting room runs on this node.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueNodeSettings {
    /// How often each shard leader ticks every queue of its shard (ms): one
    /// small log entry per queue per tick admits users and ends sessions.
    pub tick_ms: u64,
    /// Shortest "ask again" a waiting user is told (ms).
    pub retry_after_min_ms: u64,
    /// Longest "ask again" a waiting user is told (ms).
    pub retry_after_max_ms: u64,
}

impl Default for QueueNodeSettings {
    fn default() -> Self {
        QueueNodeSettings {
            tick_ms: 1000,
            retry_after_min_ms: 1000,
            retry_after_max_ms: 30_000,
        }
    }
}

impl QueueNodeSettings {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let rule = |settings: &'static str, rule: &str| {
            Err(ConfigError::Rule {
                settings,
                rule: rule.to_string(),
            })
        };
        if !(10..=60_000).contains(&self.tick_ms) {
            return rule("queue.tick_ms", "must be 10..=60000");
        }
        if self.retry_after_min_ms == 0 || self.retry_after_min_ms > self.retry_after_max_ms {
            return rule(
                "queue.retry_after_min_ms",
                "must be at least 1 and at most queue.retry_after_max_ms",
            );
        }
        if self.retry_after_max_ms > 600_000 {
            return rule("queue.retry_after_max_ms", "must be at most 600000");
        }
        Ok(())
    }
}

/// Ticks the queues of every shard this node leads, every `queue.tick_ms`,
/// until the node is dropped. A queue that has ended (`open`), whose sale is
/// more than a tick away, or with nobody to admit and no session open, is left
/// alone (a tick after a gap admits at most the few seconds of credit a queue
/// banks).
pub async fn ticker(node: Weak<Node>) {
    let interval = {
        let Some(n) = node.upgrade() else { return };
        Duration::from_millis(n.config.queue.tick_ms)
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(n) = node.upgrade() else { return };
        for group in crate::payments::worker::led_shards(&n) {
            let Some(st) = n.stores(group) else { continue };
            let now = now_ms();
            let due: Vec<u64> = st
                .reader
                .begin_applied()
                .queues()
                .into_iter()
                .filter(|(_, q)| {
                    // Nothing to admit and no session to end: no entry.
                    let idle = q.active == 0
                        && (q.joined == q.watermark || q.status != QueueStatus::Running);
                    let due = match q.prequeue {
                        Some(_) => !idle,
                        None => now + interval.as_millis() as u64 >= q.spec.sale_starts_at_ms,
                    };
                    q.status != QueueStatus::Open && due
                })
                .map(|(id, _)| id)
                .collect();
            let timeout = interval.max(Duration::from_millis(500));
            let proposals = due.into_iter().map(|event_id| {
                let n = n.clone();
                async move {
                    let r = n
                        .propose_local(group, None, Command::AdmitQueue { event_id }, timeout)
                        .await;
                    if let Err(e) = r {
                        tracing::debug!(%group, event_id, error = %e, "queue tick not applied");
                    }
                }
            });
            futures::future::join_all(proposals).await;
        }
    }
}

/// The admission rate the queue shows over its last minute (users a minute),
/// or `None` before two samples a few seconds apart exist.
pub fn observed_rate_per_minute(q: &Queue) -> Option<f64> {
    let (&(t0, w0), &(t1, w1)) = (q.rate_samples.first()?, q.rate_samples.last()?);
    if t1 <= t0 || t1 - t0 < QUEUE_RATE_WINDOW_MS / 6 {
        return None;
    }
    Some((w1 - w0) as f64 * 60_000.0 / (t1 - t0) as f64)
}

/// The rate a wait is estimated from (users a ms): the observed one once the
/// queue has run a little (it carries the no-shows and the sessions that
/// keep slots), the configured one before; `None` when nobody is being admitted.
fn wait_rate_per_ms(q: &Queue) -> Option<f64> {
    if q.status != QueueStatus::Running {
        return None;
    }
    let configured = f64::from(q.spec.admit_per_minute) / 60_000.0;
    match observed_rate_per_minute(q) {
        Some(r) if r > 0.0 => Some(r / 60_000.0),
        // Nobody admitted over the last minute (every slot taken): slots come
        // back as sessions end, at the latest a session's length from now.
        Some(_) => Some(configured.min(q.spec.active_max as f64 / q.spec.session_ttl_ms as f64)),
        None => Some(configured),
    }
}

fn status_name(s: QueueStatus) -> QueueStatusName {
    match s {
        QueueStatus::Running => QueueStatusName::Running,
        QueueStatus::Paused => QueueStatusName::Paused,
        QueueStatus::Closed => QueueStatusName::Closed,
        QueueStatus::Open => QueueStatusName::Open,
    }
}

/// The admin's settings as the API shows them.
pub fn settings_view(q: &Queue) -> QueueSettings {
    QueueSettings {
        prequeue_opens_at: crate::api::rfc3339_ms(q.spec.prequeue_opens_at_ms as i64),
        sale_starts_at: crate::api::rfc3339_ms(q.spec.sale_starts_at_ms as i64),
        admit_per_minute: q.spec.admit_per_minute,
        active_max: q.spec.active_max,
        session_ttl_s: Some(q.spec.session_ttl_ms / 1000),
        order: Some(match q.spec.order {
            QueueOrder::RandomPrequeue => QueueOrderName::RandomPrequeue,
            QueueOrder::Fifo => QueueOrderName::Fifo,
        }),
    }
}

/// A queue's live figures.
pub fn stats_view(event_id: u64, q: &Queue, applied: Applied) -> QueueStats {
    QueueStats {
        event_id,
        status: status_name(q.status),
        started: q.prequeue.is_some(),
        settings: settings_view(q),
        joined: q.joined,
        prequeue: q.prequeue,
        waiting: q.joined - q.watermark,
        admitted: q.watermark,
        active: q.active,
        finished: q.finished,
        no_shows: q.no_shows,
        admit_rate_per_minute: observed_rate_per_minute(q).unwrap_or(0.0),
        applied,
    }
}

/// Everything a place view needs besides the queue and the place.
pub struct PlaceContext<'a> {
    /// The event.
    pub event_id: u64,
    /// The replica's applied position.
    pub applied: Applied,
    /// The time the standing was judged at.
    pub now_ms: u64,
    /// The node's `[queue]` settings.
    pub settings: &'a QueueNodeSettings,
    /// Mints the admission token of an admitted user.
    pub admissions: &'a admission::AdmissionKeys,
    /// The user.
    pub user: &'a str,
}

/// What a user is shown of their place.
pub fn place_view(
    cx: &PlaceContext<'_>,
    q: &Queue,
    join: &QueueJoin,
    standing: &Standing,
    new: bool,
) -> QueuePlace {
    let mut view = QueuePlace {
        event_id: cx.event_id,
        ticket: join.ticket,
        joined_at: crate::api::rfc3339_ms(join.joined_at_ms as i64),
        new,
        phase: QueuePhase::Waiting,
        queue_status: status_name(q.status),
        position: None,
        position_range: None,
        ahead: None,
        admitted_so_far: q.watermark,
        wait_s: None,
        retry_after_ms: None,
        admitted_at_ms: None,
        session_ends_at_ms: None,
        admission_token: None,
        applied: cx.applied,
    };
    let rate = wait_rate_per_ms(q);
    let retry = |wait_ms: f64| {
        let s = cx.settings;
        Some(((wait_ms / 4.0) as u64).clamp(s.retry_after_min_ms, s.retry_after_max_ms))
    };
    match standing {
        _ if q.status == QueueStatus::Open => view.phase = QueuePhase::Open,
        Standing::Waiting { position } => {
            let until_start = q.spec.sale_starts_at_ms.saturating_sub(cx.now_ms) as f64;
            let started = q.prequeue.is_some();
            view.phase = if started {
                QueuePhase::Waiting
            } else {
                QueuePhase::Prequeue
            };
            let (low, high) = match position {
                Some(p) => {
                    view.position = Some(*p);
                    view.ahead = Some(p - q.watermark - 1);
                    (*p, *p)
                }
                // Anywhere in the pre-queue as it is now (it grows until the start).
                None => {
                    view.position_range = Some([1, q.joined.max(1)]);
                    (1, q.joined.max(1))
                }
            };
            let wait_ms = |pos: u64| rate.map(|r| until_start + (pos - q.watermark) as f64 / r);
            if let (Some(lo), Some(hi)) = (wait_ms(low), wait_ms(high)) {
                view.wait_s = Some([(lo / 1000.0).ceil() as u64, (hi / 1000.0).ceil() as u64]);
                view.retry_after_ms = retry(lo);
            } else {
                view.retry_after_ms = Some(cx.settings.retry_after_max_ms);
            }
            if matches!(q.status, QueueStatus::Closed) {
                view.retry_after_ms = None;
            }
        }
        Standing::Admitted {
            position,
            admitted_at_ms,
            session_ends_at_ms,
        } => {
            view.phase = QueuePhase::Admitted;
            view.position = Some(*position);
            view.ahead = Some(0);
            view.admitted_at_ms = Some(*admitted_at_ms);
            view.session_ends_at_ms = Some(*session_ends_at_ms);
            view.admission_token = cx
                .admissions
                .mint(cx.event_id, cx.user, join.ticket, *session_ends_at_ms)
                .ok();
        }
        Standing::Expired {
            position,
            admitted_at_ms,
            ended_at_ms,
        } => {
            view.phase = QueuePhase::Expired;
            view.position = Some(*position);
            view.admitted_at_ms = Some(*admitted_at_ms);
            view.session_ends_at_ms = Some(*ended_at_ms);
        }
        Standing::Finished {
            position,
            admitted_at_ms,
            finished_at_ms,
        } => {
            view.phase = QueuePhase::Done;
            view.position = Some(*position);
            view.admitted_at_ms = Some(*admitted_at_ms);
            view.session_ends_at_ms = Some(*finished_at_ms);
        }
    }
    view
}

/// True when `outcome` (or a request of its batch) changed `event_id`'s queue
/// in a way its waiting users see (a tick, an admin's change).
pub fn touches_queue(outcome: &boxoffice_raft::command::Outcome, event_id: u64) -> bool {
    use boxoffice_raft::command::{Effect, QueueEffect};
    match &outcome.result {
        Ok(Effect::Queue(
            QueueEffect::Ticked { event_id: e, .. }
            | QueueEffect::Controlled { event_id: e, .. }
            | QueueEffect::Configured { event_id: e },
        )) => *e == event_id,
        Ok(Effect::Batch(outcomes)) => outcomes.iter().any(|o| touches_queue(o, event_id)),
        _ => false,
    }
}
