//! `GET /metrics`: the node's metrics in the Prometheus text format.
//!
//! Two kinds. Events are counted where they happen: HTTP requests (by route,
//! method and status, with a latency histogram), the outcome of every write (by
//! problem code), proposer batch sizes, live streams dropped, and the storage
//! layer's WAL fsyncs, log appends and applies ([`boxoffice_storage::metrics`]).
//! State is read when the metrics are scraped: every group's Raft position
//! (term, leader, last log, committed, applied, each follower's lag), the
//! proposers' queues, live streams open, the search index's lag, RocksDB's
//! memtables, compaction debt, SST files and write stalls, and the replicated
//! counters of payments and waiting rooms. A scrape costs a few microseconds
//! per group; nothing here is on a request's path but an atomic add.
//!
//! The names are documented in the README ("Metrics"); `deploy/grafana/` has a
//! dashboard built on them, and CI checks a live node's output with `promtool
//! check metrics`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use boxoffice_raft::GroupId;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::node::Node;

/// Buckets (seconds) of request latencies: 0.5 ms to 10 s.
const REQUEST_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// A problem code an answer carries, left in its extensions by
/// [`crate::error::ApiError`] for the metrics layer.
#[derive(Clone, Copy, Debug)]
pub struct AnsweredProblem(pub &'static str);

/// The node's metrics. Created with the node; [`Metrics::render`] encodes them.
pub struct Metrics {
    registry: Registry,
    /// Storage's own (the node's database).
    storage: boxoffice_storage::metrics::StorageMetrics,
    /// Requests answered, by route, method and status.
    pub http_requests: IntCounterVec,
    /// Request latency until the answer's head, by route and method.
    pub http_seconds: HistogramVec,
    /// Writes (POST, PUT, PATCH, DELETE) answered, by route and outcome: `ok`
    /// or the answer's problem code.
    pub write_outcomes: IntCounterVec,
    /// Requests per proposed log entry, by group.
    pub proposer_batch: HistogramVec,
    /// Live streams the node ended, by reason (`slow`, `stalled`, `snapshot`).
    pub streams_dropped: IntCounterVec,
    // Read at scrape time.
    proposer_queue: IntGaugeVec,
    streams_open: IntGauge,
    search_lag: IntGauge,
    group_term: IntGaugeVec,
    group_leader: IntGaugeVec,
    group_is_leader: IntGaugeVec,
    group_last_log: IntGaugeVec,
    group_committed: IntGaugeVec,
    group_applied: IntGaugeVec,
    group_snapshot: IntGaugeVec,
    group_follower_lag: IntGaugeVec,
    group_voters: IntGaugeVec,
    rocksdb: IntGaugeVec,
    payments: IntGaugeVec,
    queues: IntGaugeVec,
}

/// The RocksDB properties exported, by the name of their gauge.
const ROCKSDB_PROPERTIES: [(&str, &str); 5] = [
    ("memtable_bytes", "rocksdb.cur-size-all-mem-tables"),
    (
        "pending_compaction_bytes",
        "rocksdb.estimate-pending-compaction-bytes",
    ),
    ("sst_bytes", "rocksdb.total-sst-files-size"),
    ("write_stopped", "rocksdb.is-write-stopped"),
    ("delayed_write_rate", "rocksdb.actual-delayed-write-rate"),
];

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    // Constant names and labels: valid by construction.
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    // Constant names and labels: valid by construction.
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn histogram(name: &str, help: &str, buckets: &[f64], labels: &[&str]) -> HistogramVec {
    // Constant names, labels and increasing buckets: valid by construction.
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect("valid metric")
}

impl Metrics {
    /// The metrics of a node whose database measures into `storage`.
    pub fn new(storage: &boxoffice_storage::metrics::StorageMetrics) -> anyhow::Result<Metrics> {
        let m = Metrics {
            registry: Registry::new(),
            storage: storage.clone(),
            http_requests: counter(
                "boxoffice_http_requests_total",
                "HTTP requests answered, by route, method and status",
                &["route", "method", "status"],
            ),
            http_seconds: histogram(
                "boxoffice_http_request_duration_seconds",
                "HTTP request latency until the answer's head, by route and method",
                &REQUEST_BUCKETS,
                &["route", "method"],
            ),
            write_outcomes: counter(
                "boxoffice_write_outcomes_total",
                "Writes answered, by route and outcome (ok, or the answer's problem code)",
                &["route", "outcome"],
            ),
            proposer_batch: histogram(
                "boxoffice_proposer_batch_requests",
                "Requests per proposed log entry, by group",
                &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
                &["group"],
            ),
            streams_dropped: counter(
                "boxoffice_streams_dropped_total",
                "Live seat-map streams the node ended, by reason",
                &["reason"],
            ),
            proposer_queue: gauge(
                "boxoffice_proposer_queue_requests",
                "Requests queued for a group's next log entry on this node",
                &["group"],
            ),
            streams_open: IntGauge::new(
                "boxoffice_streams_open",
                "Live seat-map streams open on this node",
            )?,
            search_lag: IntGauge::new(
                "boxoffice_search_index_lag_entries",
                "Catalogue log entries applied on this node and not yet in its search index",
            )?,
            group_term: gauge(
                "boxoffice_raft_term",
                "Current Raft term, by group",
                &["group"],
            ),
            group_leader: gauge(
                "boxoffice_raft_leader_id",
                "Id of the group's leader as this node knows it (0: none)",
                &["group"],
            ),
            group_is_leader: gauge(
                "boxoffice_raft_is_leader",
                "1 if this node leads the group",
                &["group"],
            ),
            group_last_log: gauge(
                "boxoffice_raft_last_log_index",
                "Index of the last entry in this node's log, by group",
                &["group"],
            ),
            group_committed: gauge(
                "boxoffice_raft_committed_index",
                "Last committed index this node has saved, by group",
                &["group"],
            ),
            group_applied: gauge(
                "boxoffice_raft_applied_index",
                "Last index applied to this node's state machine, by group",
                &["group"],
            ),
            group_snapshot: gauge(
                "boxoffice_raft_snapshot_index",
                "Index of this node's last snapshot, by group",
                &["group"],
            ),
            group_follower_lag: gauge(
                "boxoffice_raft_follower_lag_entries",
                "On a group's leader: entries each follower has not matched yet",
                &["group", "follower"],
            ),
            group_voters: gauge(
                "boxoffice_raft_voters",
                "Voters in the group's membership",
                &["group"],
            ),
            rocksdb: gauge(
                "boxoffice_rocksdb",
                "RocksDB properties of the node's database, by property: memtable_bytes, \
                 pending_compaction_bytes, sst_bytes, write_stopped (1 while writes are \
                 stopped), delayed_write_rate (bytes/s while writes are slowed, else 0)",
                &["property"],
            ),
            payments: gauge(
                "boxoffice_payments",
                "Payments of each shard as replicated (they only grow), by group and kind",
                &["group", "kind"],
            ),
            queues: gauge(
                "boxoffice_queue_users",
                "Users of each waiting room as replicated, by event and kind: joined, \
                 admitted, active, finished, no_shows",
                &["event", "kind"],
            ),
        };
        storage.register(&m.registry)?;
        for c in [&m.http_requests, &m.write_outcomes, &m.streams_dropped] {
            m.registry.register(Box::new(c.clone()))?;
        }
        for h in [&m.http_seconds, &m.proposer_batch] {
            m.registry.register(Box::new(h.clone()))?;
        }
        for g in [
            &m.proposer_queue,
            &m.group_term,
            &m.group_leader,
            &m.group_is_leader,
            &m.group_last_log,
            &m.group_committed,
            &m.group_applied,
            &m.group_snapshot,
            &m.group_follower_lag,
            &m.group_voters,
            &m.rocksdb,
            &m.payments,
            &m.queues,
        ] {
            m.registry.register(Box::new(g.clone()))?;
        }
        m.registry.register(Box::new(m.streams_open.clone()))?;
        m.registry.register(Box::new(m.search_lag.clone()))?;
        Ok(m)
    }

    /// The storage layer's metrics.
    pub fn storage(&self) -> &boxoffice_storage::metrics::StorageMetrics {
        &self.storage
    }

    /// Reads the node's state into the gauges and encodes every metric.
    pub fn render(&self, node: &Node) -> Vec<u8> {
        self.observe(node);
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for want of room; an error would mean
        // a metric the registry refused at registration, which `new` checks.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "encoding metrics");
        }
        out
    }

    /// Sets the scrape-time gauges from `node`'s state.
    fn observe(&self, node: &Node) {
        for g in [
            &self.group_term,
            &self.group_leader,
            &self.group_is_leader,
            &self.group_last_log,
            &self.group_committed,
            &self.group_applied,
            &self.group_snapshot,
            &self.group_follower_lag,
            &self.group_voters,
            &self.proposer_queue,
            &self.payments,
            &self.queues,
        ] {
            // Groups and followers come and go: only today's are reported.
            g.reset();
        }
        let me = node.id();
        for (group, raft) in node.groups.all() {
            let label = group.0.to_string();
            let l = [label.as_str()];
            let m = raft.metrics();
            let m = m.borrow();
            self.group_term
                .with_label_values(&l)
                .set(gauge_value(m.current_term));
            self.group_leader
                .with_label_values(&l)
                .set(gauge_value(m.current_leader.unwrap_or(0)));
            self.group_is_leader
                .with_label_values(&l)
                .set(i64::from(m.current_leader == Some(me)));
            let last_log = m.last_log_index.unwrap_or(0);
            self.group_last_log
                .with_label_values(&l)
                .set(gauge_value(last_log));
            self.group_applied
                .with_label_values(&l)
                .set(gauge_value(m.last_applied.map_or(0, |a| a.index)));
            self.group_snapshot
                .with_label_values(&l)
                .set(gauge_value(m.snapshot.map_or(0, |a| a.index)));
            self.group_voters.with_label_values(&l).set(
                m.membership_config
                    .membership()
                    .voter_ids()
                    .count()
                    .try_into()
                    .unwrap_or(i64::MAX),
            );
            if let Some(replication) = &m.replication {
                for (follower, matched) in replication {
                    if *follower == me {
                        continue;
                    }
                    let behind = last_log.saturating_sub(matched.map_or(0, |id| id.index));
                    self.group_follower_lag
                        .with_label_values(&[label.as_str(), &follower.to_string()])
                        .set(gauge_value(behind));
                }
            }
            drop(m);
            if let Some(stores) = node.stores(group) {
                self.group_committed
                    .with_label_values(&l)
                    .set(gauge_value(stores.log.committed_index().unwrap_or(0)));
                self.observe_replicated(group, &label, &stores.reader);
            }
        }
        for (group, queued) in node.proposer_queues() {
            self.proposer_queue
                .with_label_values(&[&group.0.to_string()])
                .set(gauge_value(queued as u64));
        }
        let streams_max = node.config.limits.sse_streams_max;
        self.streams_open.set(gauge_value(
            streams_max.saturating_sub(node.streams.available_permits()) as u64,
        ));
        if let (Some(search), Some(catalogue)) = (node.search(), node.stores(GroupId::CATALOGUE)) {
            self.search_lag
                .set(gauge_value(search.lag(&catalogue.reader)));
        }
        let db = node.db.raw();
        for (name, property) in ROCKSDB_PROPERTIES {
            let mut total = 0u64;
            for cf in boxoffice_storage::db::COLUMN_FAMILIES {
                if let Some(handle) = db.cf_handle(cf) {
                    if let Ok(Some(v)) = db.property_int_value_cf(handle, property) {
                        total = total.saturating_add(v);
                    }
                }
            }
            self.rocksdb
                .with_label_values(&[name])
                .set(gauge_value(total));
        }
    }

    /// Payments and waiting rooms of `group`, as its applied state says.
    fn observe_replicated(
        &self,
        group: GroupId,
        label: &str,
        reader: &boxoffice_storage::read::Reader,
    ) {
        if group.is_catalogue() {
            return;
        }
        let tx = reader.begin_applied();
        let c = tx.payment_counts();
        for (kind, v) in [
            ("checkouts", c.checkouts),
            ("booked", c.booked),
            ("booked_late", c.booked_late),
            ("late_refunds", c.late_refunds),
            ("mismatch_refunds", c.mismatch_refunds),
            ("failed", c.failed),
            ("cancelled", c.cancelled),
            ("refunded", c.refunded),
            ("refund_failures", c.refund_failures),
        ] {
            self.payments
                .with_label_values(&[label, kind])
                .set(gauge_value(v));
        }
        for (event, q) in tx.queues() {
            let event = event.to_string();
            for (kind, v) in [
                ("joined", q.joined),
                ("admitted", q.watermark),
                ("active", q.active),
                ("finished", q.finished),
                ("no_shows", q.no_shows),
            ] {
                self.queues
                    .with_label_values(&[event.as_str(), kind])
                    .set(gauge_value(v));
            }
        }
    }
}

/// A gauge's value (saturating: Prometheus gauges are signed).
fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// `GET /metrics`.
/// `GET /metrics` in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(serve))]
pub struct Doc;

#[utoipa::path(get, path = "/metrics", tag = "cluster",
    responses((status = 200, description = "Prometheus text format 0.0.4 (see the README's Metrics table)", content_type = "text/plain", body = String)))]
pub async fn serve(State(state): State<crate::app::AppState>) -> Response {
    let node = state.node.clone();
    let body = node.metrics.render(&node);
    (
        [(axum::http::header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        body,
    )
        .into_response()
}

/// Counts and times every request of a router (its `route` label is the
/// matched route's pattern, so ids do not make new series; an unmatched path
/// is `unmatched`).
pub async fn track(State(node): State<Arc<Node>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = req.method().clone();
    let resp = next.run(req).await;
    let m = &node.metrics;
    let status = resp.status();
    m.http_seconds
        .with_label_values(&[route.as_str(), method.as_str()])
        .observe(started.elapsed().as_secs_f64());
    m.http_requests
        .with_label_values(&[route.as_str(), method.as_str(), status.as_str()])
        .inc();
    if matches!(
        method,
        axum::http::Method::POST
            | axum::http::Method::PUT
            | axum::http::Method::PATCH
            | axum::http::Method::DELETE
    ) {
        let outcome = match resp.extensions().get::<AnsweredProblem>() {
            Some(p) => p.0,
            None if status.is_success() => "ok",
            None => "error",
        };
        m.write_outcomes
            .with_label_values(&[route.as_str(), outcome])
            .inc();
    }
    resp
}
