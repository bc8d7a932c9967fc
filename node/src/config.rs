//! Node settings: every limit and timeout is a named, documented field with a
//! validated default. Resolved in two stages: raw (TOML file and flags) → validated
//! [`NodeConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Settings of one node.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id; stable for the life of its data dir. Must be ≥ 1.
    pub id: u64,
    /// Address the HTTP server (public, admin, node-to-node) listens on.
    pub listen: SocketAddr,
    /// Address peers and clients use to reach this node (default: `listen`).
    #[serde(default)]
    pub advertise: Option<String>,
    /// Where RocksDB and snapshots live.
    pub data_dir: PathBuf,
    /// Secret for verifying HS256 bearer tokens (user and admin).
    pub token_secret: String,
    /// Secret every node presents on node-to-node requests.
    pub cluster_key: String,
    /// Request limits.
    #[serde(default)]
    pub limits: Limits,
    /// Raft timing and sizes.
    #[serde(default)]
    pub raft: RaftSettings,
    /// Source address of this node's outgoing node-to-node connections (default:
    /// chosen by the OS). Setting it to the listen address lets firewall rules tell
    /// peers apart when several nodes share one host.
    #[serde(default)]
    pub peer_bind_ip: Option<std::net::IpAddr>,
    /// Enables `/admin/v1/fault/*` (clock offset) for fault-injection testing. Never
    /// on in production: it lets an admin shift the clock the leader stamps with.
    #[serde(default)]
    pub fault_injection: bool,
}

/// Limits on requests. Each bounds memory or waiting under load.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request body accepted by the public and admin API (bytes); larger → 413.
    pub body_bytes_max: usize,
    /// Largest node-to-node request body (bytes): append entries and snapshot chunks.
    pub raft_body_bytes_max: usize,
    /// Requests handled at once by the public and admin API; beyond it → 503 + Retry-After.
    pub in_flight_max: usize,
    /// Time allowed for one public or admin request end to end.
    pub request_timeout_ms: u64,
    /// Time allowed for a write to be committed and applied, including forwarding to
    /// the leader and retries across a leader change; past it the outcome is unknown (503).
    pub write_timeout_ms: u64,
    /// Time a linearizable read may wait for the leader's read index and local apply.
    pub linearizable_read_timeout_ms: u64,
    /// Most results per page in list endpoints.
    pub page_size_max: usize,
    /// Time allowed to connect to a peer.
    pub peer_connect_timeout_ms: u64,
    /// A replica whose applied state-machine time is further behind its clock than
    /// this answers local reads with 503 `replica_stale` instead of stale data.
    /// Must exceed `raft.tick_interval_ms` (plus the clock skew between nodes).
    pub replica_staleness_ms_max: u64,
    /// Time allowed for one group's membership change (a new learner catching up
    /// included), with retries across leader changes.
    pub membership_timeout_ms: u64,
    /// Live seat-map (SSE) streams served at once; beyond it → 503 + Retry-After.
    pub sse_streams_max: usize,
    /// Event views cached in memory per node (emptied when full).
    pub event_cache_entries_max: usize,
    /// Seat changes a live-stream consumer may fall behind its shard's feed before
    /// it is dropped with a `reset` (the feed's per-subscriber buffer).
    pub sse_lag_max: usize,
    /// Longest a live stream waits for a stalled consumer to take an event before
    /// dropping it (ms).
    pub sse_send_timeout_ms: u64,
    /// Kernel send buffer of each accepted connection (bytes); 0 leaves it to the
    /// OS's autotuning (up to `net.ipv4.tcp_wmem`, often 4 MiB). A consumer that
    /// stops reading pins up to this much kernel memory until it is dropped.
    pub socket_send_buffer_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes_max: 256 * 1024,
            raft_body_bytes_max: 64 << 20,
            in_flight_max: 4096,
            request_timeout_ms: 15_000,
            write_timeout_ms: 10_000,
            linearizable_read_timeout_ms: 5_000,
            page_size_max: 500,
            peer_connect_timeout_ms: 1_000,
            replica_staleness_ms_max: 5_000,
            sse_streams_max: 10_000,
            membership_timeout_ms: 10_000,
            event_cache_entries_max: 100_000,
            sse_lag_max: 4_096,
            sse_send_timeout_ms: 10_000,
            socket_send_buffer_bytes: 0,
        }
    }
}

/// Raft settings, applied to every group on the node.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftSettings {
    /// Leader heartbeat period.
    pub heartbeat_interval_ms: u64,
    /// Lower bound of the randomised election timeout.
    pub election_timeout_ms_min: u64,
    /// Upper bound of the randomised election timeout.
    pub election_timeout_ms_max: u64,
    /// Build a snapshot after this many entries since the last one.
    pub snapshot_logs_since_last: u64,
    /// Entries kept in the log after a snapshot (lets slow followers catch up without one).
    pub logs_kept_after_snapshot: u64,
    /// Largest snapshot chunk sent in one RPC (bytes).
    pub snapshot_chunk_bytes_max: u64,
    /// Most entries in one append-entries RPC.
    pub append_entries_max: u64,
    /// A leader appends a time tick to a group idle for this long, bounding how
    /// stale a replica can look while healthy.
    pub tick_interval_ms: u64,
    /// Most client requests a leader puts in one log entry (1 turns batching off;
    /// at most `BATCH_REQUESTS_MAX`, 1000).
    pub propose_batch_max: usize,
    /// Most encoded request bytes in one batched entry; a larger request goes alone.
    pub propose_batch_bytes_max: usize,
    /// Entries of one group a leader keeps proposed and not yet applied; requests
    /// arriving meanwhile wait and share the next entry.
    pub propose_pipeline_max: usize,
}

impl Default for RaftSettings {
    fn default() -> Self {
        RaftSettings {
            // A leader's death is noticed within one election timeout and a new
            // leader is usually in place within about two (`boxoffice-bench compare
            // --scenarios 4` measures the write gap: ~1.2 s with these, ~2.4 s with
            // 100/600/1200).
            heartbeat_interval_ms: 50,
            election_timeout_ms_min: 300,
            election_timeout_ms_max: 600,
            snapshot_logs_since_last: 20_000,
            logs_kept_after_snapshot: 2_000,
            snapshot_chunk_bytes_max: 1 << 20,
            append_entries_max: 256,
            tick_interval_ms: 1_000,
            propose_batch_max: 256,
            propose_batch_bytes_max: 128 * 1024,
            propose_pipeline_max: 4,
        }
    }
}

impl NodeConfig {
    /// The address advertised to peers and clients.
    pub fn advertised(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }

    /// Checks every field and the rules between them.
    pub fn validate(&self) -> Result<(), String> {
        if self.id == 0 {
            return Err("id must be at least 1".into());
        }
        if self.token_secret.len() < 16 {
            return Err("token_secret must be at least 16 bytes".into());
        }
        if self.cluster_key.len() < 16 {
            return Err("cluster_key must be at least 16 bytes".into());
        }
        let l = &self.limits;
        for (name, v) in [
            ("limits.body_bytes_max", l.body_bytes_max as u64),
            ("limits.raft_body_bytes_max", l.raft_body_bytes_max as u64),
            ("limits.in_flight_max", l.in_flight_max as u64),
            ("limits.request_timeout_ms", l.request_timeout_ms),
            ("limits.write_timeout_ms", l.write_timeout_ms),
            (
                "limits.linearizable_read_timeout_ms",
                l.linearizable_read_timeout_ms,
            ),
            ("limits.page_size_max", l.page_size_max as u64),
            ("limits.peer_connect_timeout_ms", l.peer_connect_timeout_ms),
            ("limits.sse_streams_max", l.sse_streams_max as u64),
            ("limits.membership_timeout_ms", l.membership_timeout_ms),
            (
                "limits.event_cache_entries_max",
                l.event_cache_entries_max as u64,
            ),
            ("limits.sse_lag_max", l.sse_lag_max as u64),
            ("limits.sse_send_timeout_ms", l.sse_send_timeout_ms),
        ] {
            if v == 0 {
                return Err(format!("{name} must be positive"));
            }
        }
        if self.raft.tick_interval_ms == 0
            || l.replica_staleness_ms_max <= self.raft.tick_interval_ms * 2
        {
            return Err("limits.replica_staleness_ms_max must exceed twice raft.tick_interval_ms (and raft.tick_interval_ms must be positive)".into());
        }
        if l.write_timeout_ms > l.request_timeout_ms {
            return Err("limits.write_timeout_ms must not exceed limits.request_timeout_ms".into());
        }
        if (l.raft_body_bytes_max as u64) < self.raft.snapshot_chunk_bytes_max + 64 * 1024 {
            return Err(
                "limits.raft_body_bytes_max must exceed raft.snapshot_chunk_bytes_max by 64 KiB"
                    .into(),
            );
        }
        let r = &self.raft;
        if r.heartbeat_interval_ms == 0 || r.election_timeout_ms_min <= r.heartbeat_interval_ms * 2
        {
            return Err(
                "raft.election_timeout_ms_min must exceed twice raft.heartbeat_interval_ms".into(),
            );
        }
        if r.election_timeout_ms_max <= r.election_timeout_ms_min {
            return Err(
                "raft.election_timeout_ms_max must exceed raft.election_timeout_ms_min".into(),
            );
        }
        if r.snapshot_logs_since_last == 0
            || r.append_entries_max == 0
            || r.snapshot_chunk_bytes_max == 0
        {
            return Err("raft.snapshot_logs_since_last, append_entries_max and snapshot_chunk_bytes_max must be positive".into());
        }
        if r.propose_batch_max == 0
            || r.propose_batch_max > boxoffice_raft::command::BATCH_REQUESTS_MAX
        {
            return Err(format!(
                "raft.propose_batch_max must be between 1 and {}",
                boxoffice_raft::command::BATCH_REQUESTS_MAX
            ));
        }
        if r.propose_batch_bytes_max == 0 || r.propose_pipeline_max == 0 {
            return Err(
                "raft.propose_batch_bytes_max and propose_pipeline_max must be positive".into(),
            );
        }
        // A full append-entries RPC of full batches must fit a node-to-node body.
        if (r.append_entries_max as u128) * (r.propose_batch_bytes_max as u128 + 1024)
            > self.limits.raft_body_bytes_max as u128
        {
            return Err("raft.append_entries_max x (raft.propose_batch_bytes_max + 1 KiB) must not exceed limits.raft_body_bytes_max".into());
        }
        Ok(())
    }

    /// The openraft config for every group.
    pub fn openraft(&self) -> Result<openraft::Config, String> {
        let r = &self.raft;
        let c = openraft::Config {
            cluster_name: "boxoffice".into(),
            heartbeat_interval: r.heartbeat_interval_ms,
            election_timeout_min: r.election_timeout_ms_min,
            election_timeout_max: r.election_timeout_ms_max,
            install_snapshot_timeout: 2_000.max(r.election_timeout_ms_max),
            max_payload_entries: r.append_entries_max,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(r.snapshot_logs_since_last),
            max_in_snapshot_log_to_keep: r.logs_kept_after_snapshot,
            snapshot_max_chunk_size: r.snapshot_chunk_bytes_max,
            ..Default::default()
        };
        c.validate().map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NodeConfig {
        NodeConfig {
            id: 1,
            listen: "127.0.0.1:7101".parse().unwrap(),
            advertise: None,
            data_dir: "/tmp/x".into(),
            token_secret: "0123456789abcdef".into(),
            cluster_key: "0123456789abcdef".into(),
            limits: Limits::default(),
            raft: RaftSettings::default(),
            peer_bind_ip: None,
            fault_injection: false,
        }
    }

    /// The documented example file parses, validates, and states the defaults.
    #[test]
    fn example_file_matches_defaults() {
        let c: NodeConfig = toml::from_str(include_str!("../../deploy/node.example.toml")).unwrap();
        c.validate().unwrap();
        assert!(
            !c.fault_injection,
            "the example must not enable fault injection"
        );
        assert_eq!(
            toml::to_string(&c.limits).unwrap(),
            toml::to_string(&Limits::default()).unwrap()
        );
        assert_eq!(
            toml::to_string(&c.raft).unwrap(),
            toml::to_string(&RaftSettings::default()).unwrap()
        );
    }

    #[test]
    fn defaults_validate_and_bad_values_are_named() {
        let c = sample();
        c.validate().unwrap();
        c.openraft().unwrap();
        let mut bad = sample();
        bad.id = 0;
        assert!(bad.validate().unwrap_err().contains("id"));
        let mut bad = sample();
        bad.raft.election_timeout_ms_min = 90;
        assert!(bad
            .validate()
            .unwrap_err()
            .contains("election_timeout_ms_min"));
        let mut bad = sample();
        bad.limits.write_timeout_ms = bad.limits.request_timeout_ms + 1;
        assert!(bad.validate().unwrap_err().contains("write_timeout_ms"));
        let toml_text = toml::to_string(&c).unwrap();
        let back: NodeConfig = toml::from_str(&toml_text).unwrap();
        assert_eq!(back.id, 1);
        assert!(toml::from_str::<NodeConfig>(&format!("{toml_text}\nbogus = 1")).is_err());
    }
}
