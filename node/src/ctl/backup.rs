//! `boxoffice ctl backup` and `boxoffice ctl restore`.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use boxoffice_api::ClusterStatus;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{print, Connection, Output};
use crate::backup::{
    group_file, hex, GroupEntry, Manifest, BACKUP_FORMAT, BACKUP_FORMAT_VERSION, MANIFEST_FILE,
};

/// Time allowed for one group's backup to arrive whole (a large catalogue is
/// hundreds of MB).
pub const BACKUP_GROUP_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Takes the backup into `to` (created; must be new or empty). The shards
/// come first and the catalogue last, so an event whose inventory is in the
/// backup is in its catalogue too (events are created in the catalogue first).
pub(super) async fn backup(conn: &Connection, to: &Path) -> anyhow::Result<Manifest> {
    if to.exists() && std::fs::read_dir(to)?.next().is_some() {
        bail!(
            "{} exists and is not empty: back up into a new directory",
            to.display()
        );
    }
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    let started_at_ms = crate::node::now_ms();
    let status: ClusterStatus = serde_json::from_value(conn.get("/admin/v1/cluster").await?)
        .context("the node's cluster status")?;
    let Some(shards) = status.shards else {
        bail!("the cluster is not bootstrapped: nothing to back up");
    };
    let http = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .timeout(BACKUP_GROUP_TIMEOUT)
        .build()?;
    let mut groups = Vec::new();
    for g in (1..=shards).chain([0]) {
        groups.push(fetch_group(conn, &http, to, g).await?);
    }
    let manifest = Manifest {
        format: BACKUP_FORMAT.into(),
        format_version: BACKUP_FORMAT_VERSION,
        release: env!("CARGO_PKG_VERSION").into(),
        endpoint: conn.endpoint.clone(),
        started_at_ms,
        finished_at_ms: crate::node::now_ms(),
        shards,
        groups,
    };
    let tmp = to.join(format!("{MANIFEST_FILE}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(&manifest)?)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, to.join(MANIFEST_FILE))?;
    std::fs::File::open(to)?.sync_all()?;
    Ok(manifest)
}

/// Fetches one group's state into `DIR/g{g}.snap` (through a `.part` file,
/// fsynced, checked, then renamed).
async fn fetch_group(
    conn: &Connection,
    http: &reqwest::Client,
    to: &Path,
    g: u16,
) -> anyhow::Result<GroupEntry> {
    let url = format!("{}/admin/v1/groups/{g}/backup", conn.endpoint);
    let mut resp = conn
        .answer(http.get(&url))
        .await
        .with_context(|| format!("backing up group {g}"))?;
    let file = group_file(g);
    let part = to.join(format!("{file}.part"));
    let mut out = std::fs::File::create(&part)?;
    let mut sha = Sha256::new();
    let mut bytes = 0u64;
    while let Some(chunk) = resp
        .chunk()
        .await
        .with_context(|| format!("receiving group {g}'s backup"))?
    {
        sha.update(&chunk);
        out.write_all(&chunk)?;
        bytes += chunk.len() as u64;
    }
    out.sync_all()?;
    drop(out);
    let (group, meta) = boxoffice_storage::state_machine::verify_file(&part)
        .with_context(|| format!("group {g}'s backup as received"))?;
    let Some(at) = meta.last_log_id.filter(|_| group == g) else {
        bail!(
            "group {g}'s backup holds group {group} at {:?}",
            meta.last_log_id
        );
    };
    std::fs::rename(&part, to.join(&file))?;
    Ok(GroupEntry {
        group: g,
        file,
        bytes,
        sha256: hex(&sha.finalize()),
        last_log_index: at.index,
        last_log_term: at.leader_id.term,
    })
}

/// A backup's manifest as a table.
pub(super) fn manifest_table(m: &Manifest, dir: &Path) -> String {
    let mut out = format!(
        "backup {} of a {}-shard cluster through {} ({} ms)\n\nGROUP  INDEX     TERM  BYTES       SHA-256\n",
        dir.display(),
        m.shards,
        m.endpoint,
        m.finished_at_ms.saturating_sub(m.started_at_ms)
    );
    for g in &m.groups {
        out += &format!(
            "{:<6} {:<9} {:<5} {:<11} {}\n",
            g.group,
            g.last_log_index,
            g.last_log_term,
            g.bytes,
            &g.sha256[..16.min(g.sha256.len())]
        );
    }
    out
}

/// `ctl restore`: checks the backup, then (without `--check`) restores it into
/// the data directory.
pub(super) fn restore(
    output: Output,
    from: &Path,
    check: bool,
    data_dir: Option<&Path>,
    node_id: Option<u64>,
    members: Option<&str>,
) -> anyhow::Result<()> {
    let manifest = if check {
        crate::backup::verify(from)?
    } else {
        let (Some(data_dir), Some(node_id), Some(members)) = (data_dir, node_id, members) else {
            bail!("restore needs --data-dir, --node-id and --members (or --check)");
        };
        let members = crate::backup::parse_members(members)?;
        crate::backup::restore_data_dir(from, data_dir, node_id, &members)?
    };
    let mut v = serde_json::to_value(&manifest)?;
    v["restored"] = Value::Bool(!check);
    print(output, &v, || {
        let head = if check {
            "backup is whole".to_string()
        } else {
            format!(
                "restored into {}; start the node, and the other members likewise restored",
                data_dir
                    .map(|d| d.display().to_string())
                    .unwrap_or_default()
            )
        };
        format!("{head}\n{}", manifest_table(&manifest, from))
    })
}
