//! What the storage layer measures, per database (one per node): WAL fsyncs,
//! log appends until durable, and apply, per group. The node registers these
//! in its registry (`GET /metrics`); storage only records into them.

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// Buckets (seconds) of the storage latencies: 50 µs to 2.5 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5,
];

/// The storage layer's metrics.
#[derive(Clone)]
pub struct StorageMetrics {
    /// One `flush_wal(true)` of the WAL syncer (every group's appends since the
    /// last one), in seconds.
    pub wal_fsync_seconds: Histogram,
    /// Log entries written to the WAL syncer per fsync.
    pub wal_fsync_batch: Histogram,
    /// A log append, from the write until its fsync completed, by group.
    pub log_append_seconds: HistogramVec,
    /// One apply call (one or more entries) on the state machine, by group.
    pub apply_seconds: HistogramVec,
    /// Log entries applied, by group.
    pub applied_entries: IntCounterVec,
}

impl Default for StorageMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl StorageMetrics {
    /// New, unregistered metrics.
    pub fn new() -> Self {
        let hist = |name: &str, help: &str| {
            HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec())
        };
        // The names and buckets are constants, valid by construction: these
        // cannot fail (prometheus checks names and bucket order only).
        StorageMetrics {
            wal_fsync_seconds: Histogram::with_opts(hist(
                "boxoffice_wal_fsync_seconds",
                "Time of one WAL fsync, covering every group's appends since the last one",
            ))
            .expect("valid metric"),
            wal_fsync_batch: Histogram::with_opts(
                HistogramOpts::new(
                    "boxoffice_wal_fsync_waiters",
                    "Appends (and other durability waiters) one WAL fsync made durable",
                )
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
            )
            .expect("valid metric"),
            log_append_seconds: HistogramVec::new(
                hist(
                    "boxoffice_raft_log_append_seconds",
                    "Time from a log append's write until its fsync completed",
                ),
                &["group"],
            )
            .expect("valid metric"),
            apply_seconds: HistogramVec::new(
                hist(
                    "boxoffice_raft_apply_seconds",
                    "Time of one state-machine apply call (one or more entries)",
                ),
                &["group"],
            )
            .expect("valid metric"),
            applied_entries: IntCounterVec::new(
                Opts::new(
                    "boxoffice_raft_applied_entries_total",
                    "Log entries applied to the state machine",
                ),
                &["group"],
            )
            .expect("valid metric"),
        }
    }

    /// Registers every metric in `registry`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.wal_fsync_seconds.clone()))?;
        registry.register(Box::new(self.wal_fsync_batch.clone()))?;
        registry.register(Box::new(self.log_append_seconds.clone()))?;
        registry.register(Box::new(self.apply_seconds.clone()))?;
        registry.register(Box::new(self.applied_entries.clone()))?;
        Ok(())
    }
}
