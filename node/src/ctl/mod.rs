//! `boxoffice ctl`: the operator's command line over the admin API.
//!
//! Where it connects, and with which token, comes from (first found): the
//! flags `--endpoint` and `--token`; the environment (`BOXOFFICE_ENDPOINT`,
//! `BOXOFFICE_ADMIN_TOKEN`, or `BOXOFFICE_ADMIN_TOKEN_SECRET` to mint a
//! short-lived admin token); a config file (`--config`, TOML with `endpoint`
//! and `token`); and last a dev cluster's `cluster.json` (`--dev-dir`). Every
//! command prints a table, or JSON with `--output json`. A node that cannot be
//! reached, or a token it refuses, is an error that says what to check.

mod backup;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use boxoffice_api::{ClusterStatus, GroupMembership, MemberAction, MemberChange, Problem};
use clap::{Args, Subcommand, ValueEnum};
use serde::Deserialize;
use serde_json::Value;

/// Time allowed for one admin request (a membership change waits for the
/// group's leader: `limits.membership_timeout_ms` is 10 s by default).
pub const CTL_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Lifetime of a token `ctl` mints from `BOXOFFICE_ADMIN_TOKEN_SECRET`.
pub const CTL_TOKEN_TTL_S: u64 = 300;

/// `boxoffice ctl`.
#[derive(Args, Debug)]
pub struct CtlArgs {
    /// A node's public (or admin) API, e.g. `http://10.0.0.1:7100`.
    #[arg(long, env = "BOXOFFICE_ENDPOINT")]
    pub endpoint: Option<String>,
    /// An admin token.
    #[arg(long, env = "BOXOFFICE_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A TOML file with `endpoint` and `token` (used for what the flags and
    /// the environment leave unset).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// A dev cluster's directory, used last (its cluster.json).
    #[arg(long, default_value = crate::dev::DEFAULT_DEV_DIR)]
    pub dev_dir: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCmd,
}

/// How a command prints its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// The API's JSON, for scripts.
    Json,
}

/// `boxoffice ctl` commands.
#[derive(Subcommand, Debug)]
pub enum CtlCmd {
    /// The cluster as the endpoint's node sees it: members and every group's
    /// leader, term, log positions and lag.
    Status,
    /// Change a group's members.
    Members {
        /// The change.
        #[command(subcommand)]
        change: MembersCmd,
    },
    /// Add a node, drain one, or mark one up again.
    Nodes {
        /// What to do.
        #[command(subcommand)]
        change: NodesCmd,
    },
    /// Move a group's replica from one node to another, online (the new
    /// replica catches up as a learner, then one joint change swaps them).
    Move {
        /// The group (0: the catalogue; 1..: shards).
        group: u16,
        /// The node giving its replica away.
        #[arg(long)]
        from: u64,
        /// The node taking it.
        #[arg(long)]
        to: u64,
    },
    /// Hand a group's leadership to one of its voters (the leader holds the
    /// group's writes for about a leader lease meanwhile).
    Leader {
        /// The group (0: the catalogue; 1..: shards).
        group: u16,
        /// The voter to lead it.
        #[arg(long)]
        to: u64,
    },
    /// Make a group's replica on the endpoint's node take a snapshot now.
    Snapshot {
        /// The group (0: the catalogue; 1..: shards).
        group: u16,
    },
    /// Create the venues, performers and events of a JSON or TOML file:
    /// `venues`, `performers` and `events`, each a list of the admin API's
    /// bodies (`POST /admin/v1/venues`, ...). An event may name its venue by
    /// `venue_name` (a venue of the same file) instead of `venue_id`.
    Create {
        /// The file (`.toml`, else JSON).
        file: PathBuf,
    },
    /// Print an event's live seat map as it changes (the SSE stream's events,
    /// one JSON line each), until `--events` have come or `--seconds` passed.
    Tail {
        /// The event.
        event: u64,
        /// Stop after this many stream events.
        #[arg(long, default_value_t = 100)]
        events: u64,
        /// Stop after this many seconds.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Take an online backup of every group into a new (or empty) directory:
    /// each group's state from the endpoint's node after a read barrier (so
    /// every write acknowledged before the command started is in it), the
    /// shards first and the catalogue last, each file checksummed, and
    /// `manifest.json` written when all are.
    Backup {
        /// The directory to create.
        #[arg(long)]
        to: PathBuf,
    },
    /// Restore a backup into a new node's data directory. Offline: run it on
    /// every member of the new cluster before any of them first starts; they
    /// then start bootstrapped, with the backup's state (no `cluster/init`).
    /// With `--check`, only check the backup.
    Restore {
        /// The backup directory.
        #[arg(long)]
        from: PathBuf,
        /// Only check the backup (every file's size and checksums).
        #[arg(long)]
        check: bool,
        /// The new node's `data_dir` (must hold no database yet).
        #[arg(long, required_unless_present = "check")]
        data_dir: Option<PathBuf>,
        /// The new node's `id`.
        #[arg(long, required_unless_present = "check")]
        node_id: Option<u64>,
        /// Every member of the new cluster, `ID=HOST:PORT` (their
        /// `peer_listen` address), comma separated.
        #[arg(long, required_unless_present = "check")]
        members: Option<String>,
    },
    /// Mint a token with a secret from the environment
    /// (`BOXOFFICE_TOKEN_SECRET`, or `BOXOFFICE_ADMIN_TOKEN_SECRET` with `--admin`).
    Token {
        /// The token's user (`sub`).
        #[arg(long)]
        user: String,
        /// An admin token.
        #[arg(long)]
        admin: bool,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl_s: u64,
    },
}

/// `boxoffice ctl members`.
#[derive(Subcommand, Debug)]
pub enum MembersCmd {
    /// Add node `id` to `group` as a learner at `addr` (its `peer_listen`).
    Add {
        /// The group.
        group: u16,
        /// The node's id.
        id: u64,
        /// Its cluster address.
        #[arg(long)]
        addr: String,
        /// Accept an address that is neither a member's nor in
        /// `peer_addresses_allowed` (a new machine).
        #[arg(long)]
        allow_unlisted_addr: bool,
    },
    /// Make learner `id` of `group` a voter.
    Promote {
        /// The group.
        group: u16,
        /// The node's id.
        id: u64,
    },
    /// Remove node `id` from `group`.
    Remove {
        /// The group.
        group: u16,
        /// The node's id.
        id: u64,
    },
}

/// `boxoffice ctl nodes`.
#[derive(Subcommand, Debug)]
pub enum NodesCmd {
    /// Add node `id` (running, with an empty data directory) at `addr` (its
    /// `peer_listen`); the balancer then moves replicas to it.
    Add {
        /// The node's id.
        id: u64,
        /// Its cluster address.
        #[arg(long)]
        addr: String,
        /// Location labels, `NAME=VALUE` (zone, rack, host), repeatable.
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// Drain node `id`: its replicas move to other nodes; `ctl status` shows
    /// the voters it has left.
    Drain {
        /// The node's id.
        id: u64,
    },
    /// Mark node `id` up again (ends a drain).
    Up {
        /// The node's id.
        id: u64,
    },
}

/// `--config`'s file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CtlFile {
    endpoint: Option<String>,
    token: Option<String>,
}

/// Runs `boxoffice ctl`; what it prints goes to stdout.
pub async fn run(args: CtlArgs) -> anyhow::Result<()> {
    if let CtlCmd::Token { user, admin, ttl_s } = &args.command {
        let var = if *admin {
            "BOXOFFICE_ADMIN_TOKEN_SECRET"
        } else {
            "BOXOFFICE_TOKEN_SECRET"
        };
        let secret = std::env::var(var).with_context(|| format!("set {var} to mint a token"))?;
        let token = crate::auth::Signer::hs256(&secret).mint(user, *ttl_s)?;
        match args.output {
            Output::Table => println!("{token}"),
            Output::Json => println!("{}", serde_json::json!({ "token": token })),
        }
        return Ok(());
    }
    if let CtlCmd::Restore {
        from,
        check,
        data_dir,
        node_id,
        members,
    } = &args.command
    {
        return backup::restore(
            args.output,
            from,
            *check,
            data_dir.as_deref(),
            *node_id,
            members.as_deref(),
        );
    }
    let conn = Connection::resolve(&args)?;
    match &args.command {
        CtlCmd::Status => {
            let v = conn.get("/admin/v1/cluster").await?;
            let status: ClusterStatus =
                serde_json::from_value(v.clone()).context("the node's cluster status")?;
            print(args.output, &v, || status_table(&status))
        }
        CtlCmd::Members { change } => {
            let (group, id, body) = match change {
                MembersCmd::Add {
                    group,
                    id,
                    addr,
                    allow_unlisted_addr,
                } => (
                    group,
                    id,
                    MemberChange {
                        action: MemberAction::AddLearner,
                        addr: Some(addr.clone()),
                        allow_unlisted_addr: *allow_unlisted_addr,
                    },
                ),
                MembersCmd::Promote { group, id } => (
                    group,
                    id,
                    MemberChange {
                        action: MemberAction::Promote,
                        addr: None,
                        allow_unlisted_addr: false,
                    },
                ),
                MembersCmd::Remove { group, id } => (
                    group,
                    id,
                    MemberChange {
                        action: MemberAction::Remove,
                        addr: None,
                        allow_unlisted_addr: false,
                    },
                ),
            };
            let v = conn
                .post(
                    &format!("/admin/v1/groups/{group}/members/{id}"),
                    &serde_json::to_value(&body)?,
                )
                .await?;
            let m: GroupMembership =
                serde_json::from_value(v.clone()).context("the group's membership")?;
            print(args.output, &v, || {
                format!(
                    "group {}: voters {:?}, learners {:?}\n",
                    group, m.voters, m.learners
                )
            })
        }
        CtlCmd::Nodes { change } => {
            let (path, body) = match change {
                NodesCmd::Add { id, addr, labels } => {
                    let mut map = serde_json::Map::new();
                    for l in labels {
                        let Some((k, v)) = l.split_once('=') else {
                            bail!("--label {l:?}: expected NAME=VALUE");
                        };
                        map.insert(k.to_string(), Value::String(v.to_string()));
                    }
                    (
                        "/admin/v1/nodes".to_string(),
                        serde_json::json!({ "id": id, "addr": addr, "labels": map }),
                    )
                }
                NodesCmd::Drain { id } => (format!("/admin/v1/nodes/{id}/drain"), Value::Null),
                NodesCmd::Up { id } => (format!("/admin/v1/nodes/{id}/up"), Value::Null),
            };
            let v = conn.post(&path, &body).await?;
            print(args.output, &v, || {
                format!(
                    "node {}: {}, {} voters\n",
                    v["id"],
                    v["state"].as_str().unwrap_or("?"),
                    v["voters"]
                )
            })
        }
        CtlCmd::Move { group, from, to } => {
            let v = conn
                .post(
                    &format!("/admin/v1/groups/{group}/move"),
                    &serde_json::json!({ "from": from, "to": to }),
                )
                .await?;
            print(args.output, &v, || {
                if v["moved"] == Value::Bool(true) {
                    format!(
                        "group {group}: moved from node {from} to node {to} (caught up in {} ms); voters {}\n",
                        v["catch_up_ms"], v["voters"]
                    )
                } else {
                    format!("group {group}: nothing to do; voters {}\n", v["voters"])
                }
            })
        }
        CtlCmd::Leader { group, to } => {
            let v = conn
                .post(
                    &format!("/admin/v1/groups/{group}/leader"),
                    &serde_json::json!({ "to": to }),
                )
                .await?;
            print(args.output, &v, || {
                if v["moved"] == Value::Bool(true) {
                    format!(
                        "group {group}: node {} leads it now (writes held {} ms)\n",
                        v["leader"], v["writes_held_ms"]
                    )
                } else {
                    format!("group {group}: node {to} leads it already\n")
                }
            })
        }
        CtlCmd::Snapshot { group } => {
            let v = conn
                .post(&format!("/admin/v1/groups/{group}/snapshot"), &Value::Null)
                .await?;
            print(args.output, &v, || format!("group {group}: {v}\n"))
        }
        CtlCmd::Create { file } => {
            let v = create(&conn, file).await?;
            print(args.output, &v, || {
                let count = |k: &str| v[k].as_array().map_or(0, Vec::len);
                format!(
                    "created {} venues, {} performers, {} events\n",
                    count("venues"),
                    count("performers"),
                    count("events")
                )
            })
        }
        CtlCmd::Tail {
            event,
            events,
            seconds,
        } => tail(&conn, *event, *events, Duration::from_secs(*seconds)).await,
        CtlCmd::Backup { to } => {
            let m = backup::backup(&conn, to).await?;
            let v = serde_json::to_value(&m)?;
            print(args.output, &v, || backup::manifest_table(&m, to))
        }
        CtlCmd::Token { .. } | CtlCmd::Restore { .. } => unreachable!("answered above"),
    }
}

/// `ctl create`: venues first (so events can name them), then performers,
/// then events; answers what each creation answered.
async fn create(conn: &Connection, file: &std::path::Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let doc: Value = if file.extension().is_some_and(|e| e == "toml") {
        let t: toml::Value =
            toml::from_str(&text).with_context(|| format!("{} is not TOML", file.display()))?;
        serde_json::to_value(t)?
    } else {
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?
    };
    let Some(obj) = doc.as_object() else {
        bail!(
            "{}: expected a table of venues, performers and events",
            file.display()
        );
    };
    if let Some(k) = obj
        .keys()
        .find(|k| !["venues", "performers", "events"].contains(&k.as_str()))
    {
        bail!(
            "{}: unknown key {k:?} (known: venues, performers, events)",
            file.display()
        );
    }
    let list = |k: &str| -> anyhow::Result<Vec<Value>> {
        match obj.get(k) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => Ok(a.clone()),
            Some(_) => bail!("{}: {k} must be a list", file.display()),
        }
    };
    let mut venue_ids = std::collections::BTreeMap::new();
    let mut out = serde_json::Map::new();
    let mut created = Vec::new();
    for v in list("venues")? {
        let name = v["name"].as_str().map(str::to_owned);
        let answer = conn.post("/admin/v1/venues", &v).await?;
        if let (Some(name), Some(id)) = (name, answer["venue_id"].as_u64()) {
            venue_ids.insert(name, id);
        }
        created.push(answer);
    }
    out.insert("venues".into(), Value::Array(created));
    let mut created = Vec::new();
    for p in list("performers")? {
        created.push(conn.post("/admin/v1/performers", &p).await?);
    }
    out.insert("performers".into(), Value::Array(created));
    let mut created = Vec::new();
    for mut e in list("events")? {
        if let Some(map) = e.as_object_mut() {
            if let Some(name) = map.remove("venue_name") {
                let name = name.as_str().unwrap_or_default().to_string();
                let id = venue_ids
                    .get(&name)
                    .with_context(|| format!("event names venue {name:?}, not in the file"))?;
                map.insert("venue_id".into(), Value::from(*id));
            }
        }
        created.push(conn.post("/admin/v1/events", &e).await?);
    }
    out.insert("events".into(), Value::Array(created));
    Ok(Value::Object(out))
}

/// `ctl tail`: the event's seat stream, one JSON line per stream event
/// (`{"event": kind, "id": .., "data": ..}`), bounded in count and time.
async fn tail(conn: &Connection, event: u64, max: u64, time: Duration) -> anyhow::Result<()> {
    let url = format!("{}/v1/events/{event}/seats/stream", conn.endpoint);
    let mut resp = match reqwest::Client::builder()
        .no_proxy()
        .build()?
        .get(&url)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => bail!(
            "cannot reach {}: {e}\nhint: is the node running?",
            conn.endpoint
        ),
    };
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        bail!("{} answered {status}: {body}", conn.endpoint);
    }
    let deadline = tokio::time::Instant::now() + time;
    let mut buf = String::new();
    let mut seen = 0u64;
    let (mut kind, mut id, mut data) = (String::new(), String::new(), String::new());
    while seen < max {
        let chunk = match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Err(_) => break,
            Ok(c) => match c.context("reading the stream")? {
                Some(c) => c,
                None => break,
            },
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(at) = buf.find('\n') {
            let line: String = buf.drain(..=at).collect();
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if !data.is_empty() {
                    let data_json: Value =
                        serde_json::from_str(&data).unwrap_or(Value::String(data.clone()));
                    println!(
                        "{}",
                        serde_json::json!({"event": kind, "id": id, "data": data_json})
                    );
                    seen += 1;
                }
                kind.clear();
                id.clear();
                data.clear();
            } else if let Some(v) = line.strip_prefix("event:") {
                kind = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
    }
    Ok(())
}

/// Prints `json` or the table `table` makes.
fn print(output: Output, json: &Value, table: impl FnOnce() -> String) -> anyhow::Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(json)?),
        Output::Table => print!("{}", table()),
    }
    Ok(())
}

/// `ctl status` as text: the node, its members, then a row per group.
pub fn status_table(s: &ClusterStatus) -> String {
    let opt = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    let mut out = format!(
        "node {} ({}), shards {}\n\nMEMBER  ADDRESS\n",
        s.node_id,
        s.addr,
        s.shards
            .map_or_else(|| "- (not bootstrapped)".into(), |n| n.to_string())
    );
    for m in &s.members {
        out += &format!("{:<7} {}\n", m.id, m.addr);
    }
    out += "\nGROUP      LEADER  STATE      TERM  LAST LOG  COMMITTED  APPLIED  LAG  VOTERS\n";
    for g in &s.groups {
        let lag = match (g.last_log_index, g.applied_index) {
            (Some(l), Some(a)) => l.saturating_sub(a).to_string(),
            (Some(l), None) => l.to_string(),
            _ => "-".into(),
        };
        out += &format!(
            "{:<10} {:<7} {:<10} {:<5} {:<9} {:<10} {:<8} {:<4} {:?}\n",
            g.name,
            opt(g.leader),
            g.state,
            g.term,
            opt(g.last_log_index),
            opt(g.committed_index),
            opt(g.applied_index),
            lag,
            g.voters
        );
    }
    if let Some(p) = &s.placement {
        out += &format!(
            "\nplacement: replication factor {}\nNODE    STATE      VOTERS  LEARNERS  ADDRESS  LABELS\n",
            p.replication_factor
                .map_or_else(|| "-".to_string(), |r| r.to_string())
        );
        for n in &p.nodes {
            let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out += &format!(
                "{:<7} {:<10} {:<7} {:<9} {}  {}\n",
                n.id,
                n.state,
                n.voters,
                n.learners,
                n.addr,
                labels.join(",")
            );
        }
    }
    if !s.operations.is_empty() {
        out += "\nOPERATION     GROUP  FROM  TO    RUNNING  PHASE\n";
        for o in &s.operations {
            out += &format!(
                "{:<13} {:<6} {:<5} {:<5} {:<8} {}\n",
                o.kind,
                o.group,
                o.from,
                o.to,
                format!("{} ms", o.running_ms),
                o.phase
            );
        }
    }
    out
}

/// Where `ctl` sends requests, with which token.
pub(crate) struct Connection {
    endpoint: String,
    token: String,
    http: reqwest::Client,
}

impl Connection {
    fn resolve(args: &CtlArgs) -> anyhow::Result<Connection> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading --config {}", path.display()))?;
                toml::from_str::<CtlFile>(&text)
                    .with_context(|| format!("--config {}", path.display()))?
            }
            None => CtlFile::default(),
        };
        let dev = std::fs::read_to_string(args.dev_dir.join("cluster.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<crate::dev::ClusterFile>(&t).ok());
        let endpoint = args
            .endpoint
            .clone()
            .or(file.endpoint)
            .or_else(|| {
                dev.as_ref()
                    .and_then(|d| d.nodes.first())
                    .map(|n| n.http.clone())
            })
            .context(
                "no endpoint: give --endpoint URL (or BOXOFFICE_ENDPOINT, or endpoint in --config)",
            )?;
        let endpoint = if endpoint.contains("://") {
            endpoint
        } else {
            format!("http://{endpoint}")
        };
        let minted = match std::env::var("BOXOFFICE_ADMIN_TOKEN_SECRET") {
            Ok(secret) => Some(crate::auth::Signer::hs256(&secret).mint("ctl", CTL_TOKEN_TTL_S)?),
            Err(_) => None,
        };
        let token = args
            .token
            .clone()
            .or(minted)
            .or(file.token)
            .or_else(|| dev.map(|d| d.admin_token))
            .context(
                "no admin token: give --token (or BOXOFFICE_ADMIN_TOKEN, or \
                 BOXOFFICE_ADMIN_TOKEN_SECRET to mint one, or token in --config)",
            )?;
        let http = reqwest::Client::builder()
            .timeout(CTL_REQUEST_TIMEOUT)
            .no_proxy()
            .build()?;
        Ok(Connection {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.endpoint)))
            .await
    }

    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let req = self.http.post(format!("{}{path}", self.endpoint));
        let req = if body.is_null() { req } else { req.json(body) };
        self.send(req).await
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let resp = self.answer(req).await?;
        let bytes = resp.bytes().await.context("reading the answer")?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).context("the answer is not JSON")
    }

    /// Sends `req` with the token; a success's answer, or an error saying what
    /// went wrong with a hint.
    async fn answer(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let resp = match req.bearer_auth(&self.token).send().await {
            Ok(r) => r,
            Err(e) if e.is_connect() || e.is_timeout() => bail!(
                "cannot reach {}: {e}\nhint: is the node running, and is this its public or \
                 admin listener (`listen` or `admin_listen`, not `peer_listen`)?",
                self.endpoint
            ),
            Err(e) => bail!("request to {} failed: {e}", self.endpoint),
        };
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let bytes = resp.bytes().await.context("reading the answer")?;
        let problem = serde_json::from_slice::<Problem>(&bytes).ok();
        let detail = problem.as_ref().map_or_else(
            || String::from_utf8_lossy(&bytes).into_owned(),
            |p| format!("{} ({}): {}", p.code, p.status, p.detail),
        );
        let hint = match status.as_u16() {
            401 => {
                "\nhint: the token is missing, expired or not signed with the cluster's admin \
                    secret (mint one with `boxoffice ctl token --admin`)"
            }
            403 => "\nhint: this is a user token; admin commands need an admin token",
            404 => "\nhint: is the endpoint a boxoffice node of this release?",
            _ => "",
        };
        bail!("{} answered {detail}{hint}", self.endpoint)
    }
}
