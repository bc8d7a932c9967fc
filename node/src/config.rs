//! Node settings: every limit, queue, batch and timeout is a named, documented
//! field with a validated default, here and in `deploy/node.example.toml` (a test
//! requires the example to name every one). Resolved in two stages: raw (the TOML
//! file, then `--set NAME=VALUE`, the secrets possibly from the environment) →
//! validated [`NodeConfig`] ([`resolve`]).
//!
//! What is deliberately not a setting: values every replica must agree on,
//! because apply depends on them (the command limits in
//! `boxoffice_raft::command`, `SESSION_TTL_MS`), and the API's own contract
//! (search page sizes and radius, in `crate::search`).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Settings of one node.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id; stable for the life of its data dir. Must be ≥ 1.
    pub id: u64,
    /// Address of the public API (`/v1`, health checks), and of the admin API
    /// (`/admin/v1`) unless `admin_listen` is set.
    pub listen: SocketAddr,
    /// Address clients use to reach `listen` (default: `listen`); shown in the
    /// cluster status.
    #[serde(default)]
    pub advertise: Option<String>,
    /// Address of the cluster's own listener: Raft RPC (`/raft/v1`) and
    /// node-to-node requests (`/internal/v1`), never served on `listen`. Bind it
    /// to a private address.
    #[serde(default = "peer_listen_default")]
    pub peer_listen: SocketAddr,
    /// Address peers use to reach `peer_listen` (default: `peer_listen`): the
    /// address a bootstrap or `add_learner` gives for this node.
    #[serde(default)]
    pub peer_advertise: Option<String>,
    /// When set, the admin API is served on this address only (with the health
    /// checks), not on `listen`.
    #[serde(default)]
    pub admin_listen: Option<SocketAddr>,
    /// Cluster addresses `add_learner` accepts besides those already members of
    /// a group on this node (`host:port`, exact). Anything else is refused unless
    /// the request sets `allow_unlisted_addr`: a typo would otherwise hand a
    /// stranger a replica of the data.
    #[serde(default)]
    pub peer_addresses_allowed: Vec<String>,
    /// TLS on the listeners (`[tls]`); off when unset.
    #[serde(default)]
    pub tls: TlsSettings,
    /// Where RocksDB and snapshots live.
    pub data_dir: PathBuf,
    /// HS256 secret of user tokens (at least 32 bytes); leave empty when
    /// `auth.user_keys_file` gives public keys instead.
    #[serde(default)]
    pub token_secret: String,
    /// HS256 secret of admin tokens (at least 32 bytes, unlike the others); leave
    /// empty when `auth.admin_keys_file` gives public keys instead.
    #[serde(default)]
    pub admin_token_secret: String,
    /// Secret every node presents on node-to-node requests (at least 32 bytes).
    pub cluster_key: String,
    /// How bearer tokens are verified.
    #[serde(default)]
    pub auth: AuthSettings,
    /// What one user and one client address may do per second.
    #[serde(default)]
    pub rate_limits: crate::rate_limits::RateLimitSettings,
    /// Request limits.
    #[serde(default)]
    pub limits: Limits,
    /// Raft timing and sizes.
    #[serde(default)]
    pub raft: RaftSettings,
    /// The node's RocksDB and state-machine caches and queues.
    #[serde(default)]
    pub storage: boxoffice_storage::StorageSettings,
    /// The node's search index.
    #[serde(default)]
    pub search: crate::search::SearchSettings,
    /// Source address of this node's outgoing node-to-node connections (default:
    /// chosen by the OS). Setting it to the listen address lets firewall rules tell
    /// peers apart when several nodes share one host.
    #[serde(default)]
    pub peer_bind_ip: Option<std::net::IpAddr>,
    /// Enables `/admin/v1/fault/*` (clock offset) for fault-injection testing, and
    /// allows `storage.skip_wal_fsync`. Never on in production: it lets an admin
    /// shift the clock the leader stamps with.
    #[serde(default)]
    pub fault_injection: bool,
    /// Payments through a provider (`[payments]`); off unless `provider_url` is set.
    #[serde(default)]
    pub payments: crate::payments::PaymentSettings,
    /// The virtual waiting room on this node (`[queue]`).
    #[serde(default)]
    pub queue: crate::queue::QueueNodeSettings,
    /// How replicas move on this node (`[placement]`).
    #[serde(default)]
    pub placement: crate::placement::PlacementSettings,
}

fn peer_listen_default() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7201))
}

/// TLS (rustls) on the listeners, from PEM files. The public and admin
/// listeners and the peer listener have their own certificates: peers verify
/// each other's against `peer_ca_file`, so a node serving its peer listener
/// over TLS also calls its peers over TLS.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// Certificate chain of the public and admin listeners (PEM).
    pub cert_file: Option<PathBuf>,
    /// Private key of `cert_file` (PEM).
    pub key_file: Option<PathBuf>,
    /// Certificate chain of the peer listener (PEM).
    pub peer_cert_file: Option<PathBuf>,
    /// Private key of `peer_cert_file` (PEM).
    pub peer_key_file: Option<PathBuf>,
    /// Certificates peers' certificates must chain to (PEM).
    pub peer_ca_file: Option<PathBuf>,
    /// Time a client gets to finish the TLS handshake.
    pub handshake_timeout_ms: u64,
    /// Handshakes in progress at once per listener; more connections wait.
    pub handshakes_max: usize,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            cert_file: None,
            key_file: None,
            peer_cert_file: None,
            peer_key_file: None,
            peer_ca_file: None,
            handshake_timeout_ms: 10_000,
            handshakes_max: 256,
        }
    }
}

impl TlsSettings {
    /// Whether the public and admin listeners speak TLS.
    pub fn public(&self) -> bool {
        self.cert_file.is_some()
    }

    /// Whether the peer listener (and calls to peers) speak TLS.
    pub fn peer(&self) -> bool {
        self.peer_cert_file.is_some()
    }
}

/// Bearer-token verification (see `crate::auth`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Public keys of user tokens: a JWKS document or a PEM key (EdDSA or
    /// RS256), so nodes hold no signing key. Instead of `token_secret`.
    pub user_keys_file: Option<PathBuf>,
    /// Public keys of admin tokens, likewise. Instead of `admin_token_secret`.
    pub admin_keys_file: Option<PathBuf>,
    /// Required `iss` of every token, when set (empty: not checked).
    pub issuer: Option<String>,
    /// Required `aud` of every token, when set (empty: not checked).
    pub audience: Option<String>,
    /// Longest a token may be valid, from its `iat` (or `nbf`, or now) to its `exp`.
    pub token_lifetime_s_max: u64,
    /// Clock difference allowed when judging `exp`, `nbf` and `iat`.
    pub leeway_s: u64,
    /// Tokens a node remembers as verified (by their exact text, until their
    /// `exp`), so that a user's next request skips the signature check; the
    /// memory is emptied when full. 0 verifies every request afresh.
    pub verified_tokens_max: usize,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            user_keys_file: None,
            admin_keys_file: None,
            issuer: None,
            audience: None,
            token_lifetime_s_max: 86_400,
            leeway_s: 5,
            verified_tokens_max: 65_536,
        }
    }
}

/// Shortest secret accepted (bytes): 256 bits, HS256's own key size.
pub const SECRET_LEN_MIN: usize = 32;

/// Why a secret is refused, if it is: too short, a placeholder, or one byte
/// repeated.
fn secret_problem(secret: &str) -> Option<String> {
    if secret.len() < SECRET_LEN_MIN {
        return Some(format!("must be at least {SECRET_LEN_MIN} bytes"));
    }
    let lower = secret.to_ascii_lowercase();
    if ["change-me", "changeme", "placeholder", "example"]
        .iter()
        .any(|p| lower.contains(p))
    {
        return Some("is a placeholder: set a random secret (e.g. `openssl rand -hex 32`)".into());
    }
    if secret.bytes().all(|b| b == secret.as_bytes()[0]) {
        return Some("is one character repeated".into());
    }
    None
}

/// Limits on requests. Each bounds memory or waiting under load.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request body accepted by the public and admin API (bytes); larger → 413.
    /// A batch (`POST /v1/batch`) is one body.
    pub body_bytes_max: usize,
    /// Most writes in one `POST /v1/batch`; more → 400. Each is a request in
    /// flight of its own (`in_flight_max`) while it runs.
    pub batch_requests_max: usize,
    /// Largest node-to-node request body (bytes): append entries and snapshot chunks.
    pub raft_body_bytes_max: usize,
    /// Node-to-node requests handled at once on the peer listener; beyond it → 503
    /// (the peer retries).
    pub peer_in_flight_max: usize,
    /// Time allowed for one node-to-node request on the peer listener; must cover
    /// a forwarded write and a membership change.
    pub peer_request_timeout_ms: u64,
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
    /// Live streams one user (a request with a user token) may hold open on a
    /// node at once; beyond it → 429.
    pub sse_streams_per_user_max: usize,
    /// Live streams one client address may hold open on a node at once (an
    /// address may be many users behind one NAT); beyond it → 429.
    pub sse_streams_per_address_max: usize,
    /// Event views cached in memory per node (emptied when full).
    pub event_cache_entries_max: usize,
    /// Seat changes a live-stream consumer may fall behind its shard's feed before
    /// it is dropped with a `reset` (the feed's per-subscriber buffer).
    pub sse_lag_max: usize,
    /// Longest a live stream waits for a stalled consumer to take an event before
    /// dropping it (ms).
    pub sse_send_timeout_ms: u64,
    /// A connection whose writes have waited this long for the client to take
    /// bytes is closed (a consumer that stopped reading, a slow-read attack),
    /// freeing what was queued for it even when nothing more is sent.
    pub socket_write_timeout_ms: u64,
    /// Kernel send buffer of each accepted connection (bytes); 0 leaves it to the
    /// OS's autotuning (up to `net.ipv4.tcp_wmem`, often 4 MiB). A consumer that
    /// stops reading pins up to this much kernel memory until it is dropped.
    pub socket_send_buffer_bytes: usize,
    /// Seat changes each shard's feed keeps for streams that resume with
    /// `Last-Event-ID`; an older position gets a fresh snapshot instead.
    pub sse_replay_max: usize,
    /// Events queued between a live stream's task and its HTTP body.
    pub sse_stream_queue_max: usize,
    /// Backup exports (`GET /admin/v1/groups/{g}/backup`) a node writes at once;
    /// beyond it → 503 + Retry-After. Each holds a copy of a group's state on
    /// disk while it streams.
    pub backup_exports_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes_max: 256 * 1024,
            batch_requests_max: 64,
            raft_body_bytes_max: 64 << 20,
            peer_in_flight_max: 1024,
            peer_request_timeout_ms: 30_000,
            in_flight_max: 4096,
            request_timeout_ms: 15_000,
            write_timeout_ms: 10_000,
            linearizable_read_timeout_ms: 5_000,
            page_size_max: 500,
            peer_connect_timeout_ms: 1_000,
            replica_staleness_ms_max: 5_000,
            sse_streams_max: 10_000,
            backup_exports_max: 1,
            sse_streams_per_user_max: 8,
            sse_streams_per_address_max: 64,
            membership_timeout_ms: 10_000,
            event_cache_entries_max: 100_000,
            sse_lag_max: 4_096,
            sse_send_timeout_ms: 10_000,
            socket_write_timeout_ms: 10_000,
            socket_send_buffer_bytes: 0,
            sse_replay_max: 16_384,
            sse_stream_queue_max: 64,
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
    /// Most encoded entry bytes in one append-entries RPC (one entry is always
    /// sent, however large). An RPC must be answered within a heartbeat
    /// interval, so this keeps a follower far behind on a log of large entries
    /// (catalogue batches) catching up instead of timing out on every try.
    pub append_entries_bytes_max: u64,
    /// A leader appends a time tick to a group idle for this long, bounding how
    /// stale a replica can look while healthy.
    pub tick_interval_ms: u64,
    /// How far ahead of a majority of its group's clocks a leader may stamp a
    /// command. State-machine time never runs further ahead of real time than
    /// this, whatever one node's clock says, so no hold or idempotency session
    /// ends earlier than it should by more than this.
    pub clock_skew_max_ms: u64,
    /// How often a node reads its peers' clocks (the offsets the bound above uses).
    pub clock_probe_interval_ms: u64,
    /// A peer's clock reading older than this is not used; a leader without fresh
    /// readings of a majority reads them again before it proposes, and refuses
    /// the write (503 `unavailable`) if it still cannot.
    pub clock_reading_age_ms_max: u64,
    /// Most client requests a leader puts in one log entry (1 turns batching off;
    /// at most `BATCH_REQUESTS_MAX`, 1000).
    pub propose_batch_max: usize,
    /// Most encoded request bytes in one batched entry; a larger request goes alone.
    pub propose_batch_bytes_max: usize,
    /// Entries of one group a leader keeps proposed and not yet applied; requests
    /// arriving meanwhile wait and share the next entry.
    pub propose_pipeline_max: usize,
    /// Requests waiting for one group's proposer; beyond it writers wait for room
    /// (until their write timeout, then 503 `unavailable`: never proposed).
    pub propose_queue_max: usize,
    /// The highest feature level this node lets its groups reach (at most the
    /// build's, `FEATURE_LEVEL_MAX`, the default). A leader raises its group's
    /// level once every member says it allows it, so a node set lower holds back
    /// every group it belongs to: set it to the current level before upgrading,
    /// to keep the older release able to rejoin until the upgrade is done.
    pub feature_level_max: u32,
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
            append_entries_bytes_max: 512 * 1024,
            tick_interval_ms: 1_000,
            clock_skew_max_ms: 2_000,
            clock_probe_interval_ms: 1_000,
            clock_reading_age_ms_max: 5_000,
            propose_batch_max: 256,
            propose_batch_bytes_max: 128 * 1024,
            propose_pipeline_max: 4,
            propose_queue_max: 4096,
            feature_level_max: boxoffice_raft::command::FEATURE_LEVEL_MAX,
        }
    }
}

/// Why settings were refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The settings file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The settings file is not TOML.
    #[error("parsing {path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// Why.
        source: toml::de::Error,
    },
    /// A `--set` was not `NAME=VALUE`.
    #[error("--set takes NAME=VALUE, not {0:?}")]
    BadOverride(String),
    /// A `--set` names a table (`limits`), or goes through a value.
    #[error("--set {0}: not a setting (NAME is a setting, e.g. limits.sse_lag_max)")]
    NotASetting(String),
    /// A setting is missing, unknown, or of the wrong type.
    #[error("settings: {0} (every setting is listed in deploy/node.example.toml)")]
    Invalid(String),
    /// A setting that must be positive is 0.
    #[error("{0} must be positive")]
    NotPositive(&'static str),
    /// A setting breaks a rule (alone or with others).
    #[error("{settings} {rule}")]
    Rule {
        /// The setting the rule is about.
        settings: &'static str,
        /// The rule.
        rule: String,
    },
}

/// Environment variables the three secrets may come from (below `--set`, above
/// the file), so that they need not appear in the process list.
pub const SECRET_ENV: [(&str, &str); 3] = [
    ("token_secret", "BOXOFFICE_TOKEN_SECRET"),
    ("admin_token_secret", "BOXOFFICE_ADMIN_TOKEN_SECRET"),
    ("cluster_key", "BOXOFFICE_CLUSTER_KEY"),
];

/// Resolves a node's settings: the TOML file (if any), the secrets from the
/// environment (`env` looks a variable up), then each `--set NAME=VALUE` in order;
/// then validates them. A VALUE is read as TOML (`1024`, `true`, `"x"`) and, when
/// that fails, as a plain string (`127.0.0.1:7101`, `/var/lib/boxoffice`).
pub fn resolve(
    file: Option<&std::path::Path>,
    sets: &[String],
    env: impl Fn(&str) -> Option<String>,
) -> Result<NodeConfig, ConfigError> {
    let mut raw: toml::Table = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            toml::from_str(&text).map_err(|source| ConfigError::Parse {
                path: path.display().to_string(),
                source,
            })?
        }
        None => toml::Table::new(),
    };
    for (setting, var) in SECRET_ENV {
        if let Some(v) = env(var) {
            raw.insert(setting.to_string(), toml::Value::String(v));
        }
    }
    for (setting, var) in crate::payments::PAYMENT_SECRET_ENV {
        if let Some(v) = env(var) {
            let value = if setting == "webhook_secrets" {
                toml::Value::Array(
                    v.split(',')
                        .map(|s| toml::Value::String(s.trim().to_string()))
                        .collect(),
                )
            } else {
                toml::Value::String(v)
            };
            raw.entry("payments")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| ConfigError::Invalid("payments must be a table".into()))?
                .insert(setting.to_string(), value);
        }
    }
    for kv in sets {
        let (name, value) = kv
            .split_once('=')
            .ok_or_else(|| ConfigError::BadOverride(kv.clone()))?;
        set(&mut raw, name.trim(), value.trim())?;
    }
    let config: NodeConfig = toml::Value::Table(raw)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_string()))?;
    config.validate()?;
    Ok(config)
}

/// Settings whose values are strings whatever they look like (a secret of digits,
/// an address): `--set` never reads them as a number or a boolean.
const STRING_SETTINGS: &[&str] = &[
    "listen",
    "advertise",
    "peer_listen",
    "peer_advertise",
    "admin_listen",
    "tls.cert_file",
    "tls.key_file",
    "tls.peer_cert_file",
    "tls.peer_key_file",
    "tls.peer_ca_file",
    "data_dir",
    "token_secret",
    "admin_token_secret",
    "cluster_key",
    "peer_bind_ip",
    "auth.user_keys_file",
    "auth.admin_keys_file",
    "auth.issuer",
    "auth.audience",
    "rate_limits.client_address_header",
    "payments.provider_url",
    "payments.secret_key",
    "payments.currency",
];

/// Sets `name` (dotted: `limits.sse_lag_max`) in `raw` to `value`.
fn set(raw: &mut toml::Table, name: &str, value: &str) -> Result<(), ConfigError> {
    let value = match toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
    {
        Some(v @ toml::Value::String(_)) => v,
        Some(_) | None if STRING_SETTINGS.contains(&name) => toml::Value::String(value.to_string()),
        Some(v) => v,
        None => toml::Value::String(value.to_string()),
    };
    let parts: Vec<&str> = name.split('.').collect();
    let (last, path) = parts
        .split_last()
        .filter(|(last, _)| !last.is_empty())
        .ok_or_else(|| ConfigError::NotASetting(name.to_string()))?;
    let mut table = raw;
    for part in path {
        let next = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        table = match next {
            toml::Value::Table(t) => t,
            _ => return Err(ConfigError::NotASetting(name.to_string())),
        };
    }
    if matches!(table.get(*last), Some(toml::Value::Table(_))) {
        return Err(ConfigError::NotASetting(name.to_string()));
    }
    table.insert(last.to_string(), value);
    Ok(())
}

impl NodeConfig {
    /// The address advertised to clients.
    pub fn advertised(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }

    /// The address advertised to peers.
    pub fn peer_advertised(&self) -> String {
        self.peer_advertise
            .clone()
            .unwrap_or_else(|| self.peer_listen.to_string())
    }

    /// Checks every field and the rules between them.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let rule = |settings: &'static str, rule: &str| {
            Err(ConfigError::Rule {
                settings,
                rule: rule.to_string(),
            })
        };
        if self.id == 0 {
            return rule("id", "must be at least 1");
        }
        if self.storage.skip_wal_fsync && !self.fault_injection {
            return rule(
                "storage.skip_wal_fsync",
                "loses acknowledged writes in a power cut; only with fault_injection = true",
            );
        }
        let a = &self.auth;
        let secrets = [
            (
                "token_secret",
                &self.token_secret,
                a.user_keys_file.is_some(),
            ),
            (
                "admin_token_secret",
                &self.admin_token_secret,
                a.admin_keys_file.is_some(),
            ),
            ("cluster_key", &self.cluster_key, false),
        ];
        for (name, secret, keys_file) in secrets {
            match (secret.is_empty(), keys_file) {
                (true, true) => continue,
                (false, true) => {
                    return rule(
                        name,
                        "set either the secret or the public keys file, not both",
                    )
                }
                (true, false) => return rule(name, "must be set"),
                (false, false) => {}
            }
            if let Some(problem) = secret_problem(secret) {
                return rule(name, &problem);
            }
        }
        for (i, (a_name, a_secret, _)) in secrets.iter().enumerate() {
            for (b_name, b_secret, _) in &secrets[i + 1..] {
                if !a_secret.is_empty() && a_secret == b_secret {
                    return Err(ConfigError::Rule {
                        settings: b_name,
                        rule: format!("must differ from {a_name}"),
                    });
                }
            }
        }
        if self.rate_limits.over_limit_delayed_per_address_max == 0 {
            return rule(
                "rate_limits.over_limit_delayed_per_address_max",
                "must be at least 1 (over_limit_delay_ms = 0 turns delays off)",
            );
        }
        if self.rate_limits.tracked_keys_max == 0 {
            return rule("rate_limits.tracked_keys_max", "must be at least 1");
        }
        for (name, rate) in self.rate_limits.named() {
            if rate.per_s > 0 && rate.burst == 0 {
                return Err(ConfigError::Rule {
                    settings: name,
                    rule: "burst must be at least 1 when per_s is (per_s = 0 turns the limit off)"
                        .into(),
                });
            }
        }
        let w = self.rate_limits.user_event_holds;
        if w.max > 0 && w.window_s == 0 {
            return rule(
                "rate_limits.user_event_holds",
                "window_s must be at least 1 when max is (max = 0 turns the limit off)",
            );
        }
        if a.token_lifetime_s_max == 0 {
            return rule("auth.token_lifetime_s_max", "must be at least 1");
        }
        let l = &self.limits;
        let r = &self.raft;
        let st = &self.storage;
        let se = &self.search;
        for (name, v) in [
            ("limits.body_bytes_max", l.body_bytes_max as u64),
            ("limits.batch_requests_max", l.batch_requests_max as u64),
            ("limits.raft_body_bytes_max", l.raft_body_bytes_max as u64),
            ("limits.peer_in_flight_max", l.peer_in_flight_max as u64),
            ("limits.peer_request_timeout_ms", l.peer_request_timeout_ms),
            ("tls.handshake_timeout_ms", self.tls.handshake_timeout_ms),
            ("tls.handshakes_max", self.tls.handshakes_max as u64),
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
            ("limits.backup_exports_max", l.backup_exports_max as u64),
            (
                "limits.sse_streams_per_user_max",
                l.sse_streams_per_user_max as u64,
            ),
            (
                "limits.sse_streams_per_address_max",
                l.sse_streams_per_address_max as u64,
            ),
            ("limits.membership_timeout_ms", l.membership_timeout_ms),
            (
                "limits.event_cache_entries_max",
                l.event_cache_entries_max as u64,
            ),
            ("limits.sse_lag_max", l.sse_lag_max as u64),
            ("limits.sse_send_timeout_ms", l.sse_send_timeout_ms),
            ("limits.socket_write_timeout_ms", l.socket_write_timeout_ms),
            ("limits.sse_replay_max", l.sse_replay_max as u64),
            ("limits.sse_stream_queue_max", l.sse_stream_queue_max as u64),
            ("raft.heartbeat_interval_ms", r.heartbeat_interval_ms),
            ("raft.tick_interval_ms", r.tick_interval_ms),
            ("raft.clock_skew_max_ms", r.clock_skew_max_ms),
            ("raft.clock_probe_interval_ms", r.clock_probe_interval_ms),
            ("raft.clock_reading_age_ms_max", r.clock_reading_age_ms_max),
            ("raft.snapshot_logs_since_last", r.snapshot_logs_since_last),
            ("raft.append_entries_max", r.append_entries_max),
            ("raft.append_entries_bytes_max", r.append_entries_bytes_max),
            ("raft.snapshot_chunk_bytes_max", r.snapshot_chunk_bytes_max),
            (
                "raft.propose_batch_bytes_max",
                r.propose_batch_bytes_max as u64,
            ),
            ("raft.propose_pipeline_max", r.propose_pipeline_max as u64),
            ("raft.propose_queue_max", r.propose_queue_max as u64),
            ("storage.wal_sync_queue_max", st.wal_sync_queue_max as u64),
            ("storage.wal_sync_batch_max", st.wal_sync_batch_max as u64),
            ("storage.block_cache_bytes", st.block_cache_bytes as u64),
            (
                "storage.apply_cache_entries_max",
                st.apply_cache_entries_max as u64,
            ),
            (
                "storage.apply_cache_bytes_max",
                st.apply_cache_bytes_max as u64,
            ),
            (
                "storage.snapshot_install_batch_records",
                st.snapshot_install_batch_records as u64,
            ),
            ("storage.changes_capacity", st.changes_capacity as u64),
            ("search.writer_memory_bytes", se.writer_memory_bytes as u64),
            ("search.rebuild_batch_max", se.rebuild_batch_max as u64),
            ("search.commit_interval_ms", se.commit_interval_ms),
            ("search.availability_refresh_ms", se.availability_refresh_ms),
            ("search.suggest_refresh_ms", se.suggest_refresh_ms),
        ] {
            if v == 0 {
                return Err(ConfigError::NotPositive(name));
            }
        }
        if l.replica_staleness_ms_max <= r.tick_interval_ms * 2 {
            return rule(
                "limits.replica_staleness_ms_max",
                "must exceed twice raft.tick_interval_ms",
            );
        }
        if r.feature_level_max > boxoffice_raft::command::FEATURE_LEVEL_MAX {
            return rule(
                "raft.feature_level_max",
                "is above the feature levels this build knows",
            );
        }
        if r.clock_reading_age_ms_max < r.clock_probe_interval_ms * 2 {
            return rule(
                "raft.clock_reading_age_ms_max",
                "must be at least twice raft.clock_probe_interval_ms",
            );
        }
        if l.peer_request_timeout_ms < l.write_timeout_ms.max(l.membership_timeout_ms) {
            return rule(
                "limits.peer_request_timeout_ms",
                "must be at least limits.write_timeout_ms and limits.membership_timeout_ms",
            );
        }
        if self.peer_listen == self.listen || Some(self.peer_listen) == self.admin_listen {
            return rule(
                "peer_listen",
                "must differ from listen and admin_listen: the cluster's traffic has its own listener",
            );
        }
        if Some(self.listen) == self.admin_listen {
            return rule("admin_listen", "must differ from listen (or be left unset)");
        }
        let t = &self.tls;
        if t.cert_file.is_some() != t.key_file.is_some() {
            return rule("tls.key_file", "tls.cert_file and tls.key_file go together");
        }
        if t.peer_cert_file.is_some() != t.peer_key_file.is_some() {
            return rule(
                "tls.peer_key_file",
                "tls.peer_cert_file and tls.peer_key_file go together",
            );
        }
        if t.peer_cert_file.is_some() != t.peer_ca_file.is_some() {
            return rule(
                "tls.peer_ca_file",
                "needed with tls.peer_cert_file (peers verify each other), and only with it",
            );
        }
        if l.write_timeout_ms > l.request_timeout_ms {
            return rule(
                "limits.write_timeout_ms",
                "must not exceed limits.request_timeout_ms",
            );
        }
        if (l.raft_body_bytes_max as u64) < r.snapshot_chunk_bytes_max + 64 * 1024 {
            return rule(
                "limits.raft_body_bytes_max",
                "must exceed raft.snapshot_chunk_bytes_max by 64 KiB",
            );
        }
        if r.election_timeout_ms_min <= r.heartbeat_interval_ms * 2 {
            return rule(
                "raft.election_timeout_ms_min",
                "must exceed twice raft.heartbeat_interval_ms",
            );
        }
        if r.election_timeout_ms_max <= r.election_timeout_ms_min {
            return rule(
                "raft.election_timeout_ms_max",
                "must exceed raft.election_timeout_ms_min",
            );
        }
        if r.propose_batch_max == 0
            || r.propose_batch_max > boxoffice_raft::command::BATCH_REQUESTS_MAX
        {
            return rule(
                "raft.propose_batch_max",
                &format!(
                    "must be between 1 and {}",
                    boxoffice_raft::command::BATCH_REQUESTS_MAX
                ),
            );
        }
        // A full append-entries RPC of full batches must fit a node-to-node body.
        if (r.append_entries_max as u128) * (r.propose_batch_bytes_max as u128 + 1024)
            > l.raft_body_bytes_max as u128
        {
            return rule(
                "raft.append_entries_max",
                "x (raft.propose_batch_bytes_max + 1 KiB) must not exceed limits.raft_body_bytes_max",
            );
        }
        if !(0.0..=0.25).contains(&st.memtable_bloom_ratio) {
            return rule("storage.memtable_bloom_ratio", "must be between 0 and 0.25");
        }
        if !(1 << 20..=1 << 30).contains(&st.memtable_bytes) {
            return rule(
                "storage.memtable_bytes",
                "must be between 1 MiB (1048576) and 1 GiB (1073741824)",
            );
        }
        self.payments.validate()?;
        self.queue.validate()?;
        self.placement.validate()
    }

    /// The openraft config for every group.
    pub fn openraft(&self) -> Result<openraft::Config, ConfigError> {
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
        c.validate().map_err(|e| ConfigError::Rule {
            settings: "raft",
            rule: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../deploy/node.example.toml");

    fn sample() -> NodeConfig {
        NodeConfig {
            id: 1,
            listen: "127.0.0.1:7101".parse().unwrap(),
            advertise: None,
            peer_listen: "127.0.0.1:7201".parse().unwrap(),
            peer_advertise: None,
            admin_listen: None,
            peer_addresses_allowed: Vec::new(),
            tls: TlsSettings::default(),
            data_dir: "/tmp/x".into(),
            token_secret: "user-0123456789abcdef0123456789abcdef".into(),
            admin_token_secret: "admin-0123456789abcdef0123456789abcdef".into(),
            cluster_key: "cluster-0123456789abcdef0123456789abcdef".into(),
            auth: AuthSettings::default(),
            rate_limits: Default::default(),
            limits: Limits::default(),
            raft: RaftSettings::default(),
            storage: Default::default(),
            search: Default::default(),
            peer_bind_ip: None,
            fault_injection: false,
            payments: Default::default(),
            queue: Default::default(),
            placement: Default::default(),
        }
    }

    /// Every key of `have` that `want` lacks, dotted (tables recursively).
    fn missing(want: &toml::Table, have: &toml::Table, at: &str, out: &mut Vec<String>) {
        for (k, v) in want {
            let name = format!("{at}{k}");
            match (v, have.get(k)) {
                (toml::Value::Table(w), Some(toml::Value::Table(h))) => {
                    missing(w, h, &format!("{name}."), out)
                }
                (_, None) => out.push(name),
                (_, Some(_)) => {}
            }
        }
    }

    /// The example file names every setting (read as a raw table: defaults cannot
    /// fill a gap), states the defaults, and validates.
    #[test]
    fn example_file_names_every_setting_with_its_default() {
        let raw: toml::Table = toml::from_str(EXAMPLE).unwrap();
        let all: toml::Table = toml::from_str(&toml::to_string(&sample()).unwrap()).unwrap();
        let mut gaps = Vec::new();
        missing(&all, &raw, "", &mut gaps);
        assert!(gaps.is_empty(), "deploy/node.example.toml lacks {gaps:?}");
        // The optional settings are there, commented out.
        for optional in [
            "advertise",
            "peer_advertise",
            "admin_listen",
            "peer_bind_ip",
            "cert_file",
            "key_file",
            "peer_cert_file",
            "peer_key_file",
            "peer_ca_file",
        ] {
            assert!(
                EXAMPLE.contains(&format!("# {optional} = ")),
                "the example documents {optional}"
            );
        }
        for optional in [
            "user_keys_file",
            "admin_keys_file",
            "issuer",
            "audience",
            "client_address_header",
        ] {
            assert!(
                EXAMPLE.contains(&format!("# {optional} = ")),
                "the example documents auth.{optional}"
            );
        }
        // Its placeholder secrets are refused as they are.
        let c: NodeConfig = toml::from_str(EXAMPLE).unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("placeholder"), "{e}");
        let c: NodeConfig = toml::from_str(&example_with_secrets()).unwrap();
        c.validate().unwrap();
        assert!(
            !c.fault_injection,
            "the example must not enable fault injection"
        );
        for (name, example, default) in [
            (
                "limits",
                toml::to_string(&c.limits),
                toml::to_string(&Limits::default()),
            ),
            (
                "raft",
                toml::to_string(&c.raft),
                toml::to_string(&RaftSettings::default()),
            ),
            (
                "storage",
                toml::to_string(&c.storage),
                toml::to_string(&boxoffice_storage::StorageSettings::default()),
            ),
            (
                "search",
                toml::to_string(&c.search),
                toml::to_string(&crate::search::SearchSettings::default()),
            ),
            (
                "rate_limits",
                toml::to_string(&c.rate_limits),
                toml::to_string(&crate::rate_limits::RateLimitSettings::default()),
            ),
            (
                "auth",
                toml::to_string(&c.auth),
                toml::to_string(&AuthSettings::default()),
            ),
            (
                "tls",
                toml::to_string(&c.tls),
                toml::to_string(&TlsSettings::default()),
            ),
        ] {
            assert_eq!(
                example.unwrap(),
                default.unwrap(),
                "[{name}] of the example"
            );
        }
    }

    /// The example with its placeholder secrets replaced by usable ones.
    fn example_with_secrets() -> String {
        EXAMPLE
            .lines()
            .map(|l| match l.split_once(" = \"change-me") {
                Some((name, _)) => format!("{name} = \"{name}-0123456789abcdef0123456789abcdef\""),
                None => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Issue 14: the example's `change-me-...` secrets, 16-byte secrets and one
    /// secret used for two purposes were all accepted.
    #[test]
    fn weak_placeholder_or_shared_secrets_are_refused() {
        let named = |c: &NodeConfig| match c.validate() {
            Err(ConfigError::Rule { settings, rule }) => format!("{settings}: {rule}"),
            other => format!("{other:?}"),
        };
        let mut c = sample();
        c.token_secret = "0123456789abcdef".into();
        assert_eq!(named(&c), "token_secret: must be at least 32 bytes");
        let mut c = sample();
        c.cluster_key = "change-me-cluster-key-of-32-bytes-or-more".into();
        assert!(
            named(&c).starts_with("cluster_key: is a placeholder"),
            "{}",
            named(&c)
        );
        let mut c = sample();
        c.admin_token_secret = "x".repeat(40);
        assert_eq!(named(&c), "admin_token_secret: is one character repeated");
        let mut c = sample();
        c.admin_token_secret = c.token_secret.clone();
        assert_eq!(
            named(&c),
            "admin_token_secret: must differ from token_secret"
        );
        let mut c = sample();
        c.cluster_key = c.token_secret.clone();
        assert_eq!(named(&c), "cluster_key: must differ from token_secret");
        let mut c = sample();
        c.admin_token_secret = String::new();
        assert_eq!(named(&c), "admin_token_secret: must be set");
        // Public keys instead of a secret: the secret must then be absent.
        c.auth.admin_keys_file = Some("/etc/boxoffice/admin.pem".into());
        c.validate().unwrap();
        c.admin_token_secret = "admin-0123456789abcdef0123456789abcdef".into();
        assert_eq!(
            named(&c),
            "admin_token_secret: set either the secret or the public keys file, not both"
        );
    }

    #[test]
    fn the_example_check_catches_a_missing_setting() {
        let text: String = EXAMPLE
            .lines()
            .filter(|l| !l.starts_with("sse_lag_max"))
            .collect::<Vec<_>>()
            .join("\n");
        let raw: toml::Table = toml::from_str(&text).unwrap();
        let all: toml::Table = toml::from_str(&toml::to_string(&sample()).unwrap()).unwrap();
        let mut gaps = Vec::new();
        missing(&all, &raw, "", &mut gaps);
        assert_eq!(gaps, vec!["limits.sse_lag_max".to_string()]);
    }

    #[test]
    fn listeners_and_tls_settings_are_checked() {
        let named = |c: NodeConfig| c.validate().unwrap_err().to_string();
        let mut bad = sample();
        bad.peer_listen = bad.listen;
        assert!(named(bad).contains("peer_listen"));
        let mut bad = sample();
        bad.admin_listen = Some(bad.listen);
        assert!(named(bad).contains("admin_listen"));
        let mut bad = sample();
        bad.tls.cert_file = Some("/x.crt".into());
        assert!(named(bad).contains("tls.key_file"));
        let mut bad = sample();
        bad.tls.peer_cert_file = Some("/p.crt".into());
        bad.tls.peer_key_file = Some("/p.key".into());
        assert!(named(bad).contains("tls.peer_ca_file"));
        let mut bad = sample();
        bad.limits.peer_request_timeout_ms = bad.limits.write_timeout_ms - 1;
        assert!(named(bad).contains("peer_request_timeout_ms"));
        let mut bad = sample();
        bad.rate_limits.user_event_holds.window_s = 0;
        assert!(named(bad).contains("user_event_holds"));
        let mut ok = sample();
        ok.admin_listen = Some("127.0.0.1:7301".parse().unwrap());
        ok.tls.peer_cert_file = Some("/p.crt".into());
        ok.tls.peer_key_file = Some("/p.key".into());
        ok.tls.peer_ca_file = Some("/ca.crt".into());
        ok.validate().unwrap();
    }

    #[test]
    fn defaults_validate_and_bad_values_are_named() {
        let c = sample();
        c.validate().unwrap();
        c.openraft().unwrap();
        let mut bad = sample();
        bad.id = 0;
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::Rule { settings: "id", .. })
        ));
        let mut bad = sample();
        bad.raft.election_timeout_ms_min = 90;
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("election_timeout_ms_min"));
        let mut bad = sample();
        bad.limits.write_timeout_ms = bad.limits.request_timeout_ms + 1;
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("write_timeout_ms"));
        let mut bad = sample();
        bad.storage.memtable_bytes = 4096;
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::Rule {
                settings: "storage.memtable_bytes",
                ..
            })
        ));
        let mut bad = sample();
        bad.raft.propose_queue_max = 0;
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::NotPositive("raft.propose_queue_max"))
        ));
        let toml_text = toml::to_string(&c).unwrap();
        let back: NodeConfig = toml::from_str(&toml_text).unwrap();
        assert_eq!(back.id, 1);
        assert!(toml::from_str::<NodeConfig>(&format!("{toml_text}\nbogus = 1")).is_err());
    }

    #[test]
    fn overrides_apply_in_order_over_the_file_and_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        std::fs::write(&file, example_with_secrets()).unwrap();
        let sets: Vec<String> = [
            "id=7",
            "listen=127.0.0.9:7109",
            "data_dir=/tmp/somewhere",
            "limits.sse_lag_max=1024",
            "raft.snapshot_logs_since_last=100",
            "fault_injection=true",
            "limits.sse_lag_max=2048",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let env = |v: &str| {
            (v == "BOXOFFICE_CLUSTER_KEY").then(|| "from-the-environment-0123456789abcdef".into())
        };
        // A secret of digits stays a string.
        let digits = resolve(
            Some(&file),
            &["token_secret=1234567890123456789012345678901234567890".into()],
            |_| None,
        );
        assert_eq!(
            digits.unwrap().token_secret,
            "1234567890123456789012345678901234567890"
        );
        let c = resolve(Some(&file), &sets, env).unwrap();
        assert_eq!(c.id, 7);
        assert_eq!(c.listen.to_string(), "127.0.0.9:7109");
        assert_eq!(c.data_dir, std::path::PathBuf::from("/tmp/somewhere"));
        assert_eq!(c.limits.sse_lag_max, 2048);
        assert_eq!(c.raft.snapshot_logs_since_last, 100);
        assert!(c.fault_injection);
        assert_eq!(c.cluster_key, "from-the-environment-0123456789abcdef");
        // --set wins over the environment.
        let mut more = sets.clone();
        more.push("cluster_key=from-the-command-line-0123456789abcdef".into());
        assert_eq!(
            resolve(Some(&file), &more, env).unwrap().cluster_key,
            "from-the-command-line-0123456789abcdef"
        );
        for (bad, want) in [
            ("limits.=1", "NotASetting"),
            ("limits=3", "NotASetting"),
            ("nonsense", "BadOverride"),
            ("limits.nonsense=1", "Invalid"),
            ("limits.sse_lag_max=0", "NotPositive"),
            ("limits.sse_lag_max=many", "Invalid"),
            ("storage.skip_wal_fsync=true", "Rule"),
        ] {
            let e = resolve(Some(&file), &[bad.to_string()], |_| None).unwrap_err();
            assert!(format!("{e:?}").starts_with(want), "{bad}: {e:?}");
        }
        assert!(matches!(
            resolve(None, &[], |_| None),
            Err(ConfigError::Invalid(_))
        ));
    }
}
