//! Backups on disk: the manifest, checking a backup, and restoring one into a
//! new node's data directory (`boxoffice ctl restore`, `boxoffice dev
//! --restore-from`). Taking one is `boxoffice ctl backup` (`ctl/backup.rs`)
//! over `GET /admin/v1/groups/{g}/backup`.
//!
//! A backup directory holds `g{group}.snap` per group (a snapshot file of the
//! group's applied state, with its own xxh3 checksum) and `manifest.json`,
//! written last: the format and its version, the cluster's shard count, and per
//! group the file's size, SHA-256 and the log index and term it is at. A
//! directory without a manifest is a backup that did not finish.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context};
use boxoffice_raft::{all_groups, codec, GroupId, NodeId};
use boxoffice_storage::keys::meta;
use openraft::BasicNode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::node::ClusterRecord;

/// The manifest's file name in a backup directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// `format` of a manifest.
pub const BACKUP_FORMAT: &str = "boxoffice-backup";
/// The manifest format this release writes, and the newest it reads.
pub const BACKUP_FORMAT_VERSION: u32 = 1;

/// `manifest.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`BACKUP_FORMAT`].
    pub format: String,
    /// [`BACKUP_FORMAT_VERSION`] when written by this release.
    pub format_version: u32,
    /// The release that took it.
    pub release: String,
    /// The node it was taken through.
    pub endpoint: String,
    /// When it started (ms since the Unix epoch): every write acknowledged
    /// before this is in it.
    pub started_at_ms: u64,
    /// When its last group was written.
    pub finished_at_ms: u64,
    /// The cluster's inventory shards.
    pub shards: u16,
    /// One per group: the shards first (in the order taken), the catalogue last.
    pub groups: Vec<GroupEntry>,
}

/// One group of a backup.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupEntry {
    /// The group (0: the catalogue).
    pub group: u16,
    /// Its file, in the backup directory.
    pub file: String,
    /// The file's size.
    pub bytes: u64,
    /// The file's SHA-256, hex.
    pub sha256: String,
    /// The log index of the group's state.
    pub last_log_index: u64,
    /// The term of that entry.
    pub last_log_term: u64,
}

/// The file name of `group` in a backup directory.
pub fn group_file(group: u16) -> String {
    format!("g{group}.snap")
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a backup directory whole: the manifest (format, version, one entry
/// per group of its shard count) and every file (size, SHA-256, the snapshot
/// file's own structure and checksum, its group and log position). Answers the
/// manifest; anything wrong is an error naming the file and what is wrong.
pub fn verify(dir: &Path) -> anyhow::Result<Manifest> {
    let path = dir.join(MANIFEST_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{} has no {MANIFEST_FILE}: it is not a backup, or a backup that did not finish",
            dir.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let m: Manifest = serde_json::from_str(&text)
        .with_context(|| format!("{} is damaged or not a backup manifest", path.display()))?;
    if m.format != BACKUP_FORMAT {
        bail!(
            "{}: format {:?} is not {BACKUP_FORMAT:?}",
            path.display(),
            m.format
        );
    }
    if m.format_version > BACKUP_FORMAT_VERSION {
        bail!(
            "{}: format version {} was written by a newer release (this one reads up to {BACKUP_FORMAT_VERSION})",
            path.display(),
            m.format_version
        );
    }
    if m.shards == 0 || m.shards > boxoffice_raft::SHARDS_MAX {
        bail!("{}: {} shards is not a cluster's", path.display(), m.shards);
    }
    let want: BTreeSet<u16> = all_groups(m.shards).iter().map(|g| g.0).collect();
    let have: Vec<u16> = m.groups.iter().map(|g| g.group).collect();
    let have_set: BTreeSet<u16> = have.iter().copied().collect();
    if have_set != want || have.len() != want.len() {
        bail!(
            "{}: groups {have:?} are not those of a {}-shard cluster (0..={}, each once)",
            path.display(),
            m.shards,
            m.shards
        );
    }
    for g in &m.groups {
        verify_group(dir, g)?;
    }
    Ok(m)
}

fn verify_group(dir: &Path, g: &GroupEntry) -> anyhow::Result<()> {
    // The manifest names files only inside the directory, as this release writes them.
    if g.file != group_file(g.group) {
        bail!(
            "{MANIFEST_FILE}: group {} has file {:?}, expected {:?}",
            g.group,
            g.file,
            group_file(g.group)
        );
    }
    let path = dir.join(&g.file);
    let len = match std::fs::metadata(&path) {
        Ok(md) => md.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{} is missing (group {})", path.display(), g.group)
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if len < g.bytes {
        bail!(
            "{} is truncated: {len} bytes, the manifest says {}",
            path.display(),
            g.bytes
        );
    }
    if len != g.bytes {
        bail!(
            "{} has {len} bytes, the manifest says {}",
            path.display(),
            g.bytes
        );
    }
    let sum = sha256_file(&path)?;
    if sum != g.sha256 {
        bail!(
            "{} is corrupted: its SHA-256 is {sum}, the manifest says {}",
            path.display(),
            g.sha256
        );
    }
    let (group, meta) = boxoffice_storage::state_machine::verify_file(&path)
        .with_context(|| format!("{} is not a valid snapshot file", path.display()))?;
    let at = meta.last_log_id;
    if group != g.group
        || at.map(|l| (l.index, l.leader_id.term)) != Some((g.last_log_index, g.last_log_term))
    {
        bail!(
            "{}: holds group {group} at {:?}, the manifest says group {} at index {} term {}",
            path.display(),
            at,
            g.group,
            g.last_log_index,
            g.last_log_term
        );
    }
    Ok(())
}

/// Restores the backup in `from` into `data_dir`, the data directory of node
/// `node_id` of a new cluster whose members (id → cluster address) are
/// `members`, every one a voter of every group. Run it for every member
/// before any starts; the nodes then start as a cluster already bootstrapped
/// (no `cluster/init`). Refuses a damaged backup and a data directory that is
/// not new.
pub fn restore_data_dir(
    from: &Path,
    data_dir: &Path,
    node_id: NodeId,
    members: &BTreeMap<NodeId, String>,
) -> anyhow::Result<Manifest> {
    let manifest = verify(from)?;
    if !members.contains_key(&node_id) {
        bail!(
            "the members ({:?}) do not include node {node_id}",
            members.keys().collect::<Vec<_>>()
        );
    }
    for sub in ["db", "snapshots"] {
        let p = data_dir.join(sub);
        if p.exists() && std::fs::read_dir(&p)?.next().is_some() {
            bail!(
                "{} is not empty: restore only into a new node's data directory",
                p.display()
            );
        }
    }
    let voters: BTreeSet<NodeId> = members.keys().copied().collect();
    let nodes: BTreeMap<NodeId, BasicNode> = members
        .iter()
        .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
        .collect();
    let db = boxoffice_storage::Db::open(data_dir, &boxoffice_storage::StorageSettings::default())
        .with_context(|| format!("opening the database in {}", data_dir.display()))?;
    let snapshots = data_dir.join("snapshots");
    for g in &manifest.groups {
        boxoffice_storage::backup::restore_group(
            &db,
            &snapshots,
            GroupId(g.group),
            &from.join(&g.file),
            boxoffice_storage::backup::Membership::new(vec![voters.clone()], nodes.clone()),
        )
        .with_context(|| format!("restoring group {}", g.group))?;
    }
    db.put_node_record(
        meta::CLUSTER,
        codec::encode(&ClusterRecord {
            shards: manifest.shards,
        }),
    )?;
    Ok(manifest)
}

/// Parses `--members`: `ID=HOST:PORT` pairs (cluster addresses), comma separated.
pub fn parse_members(s: &str) -> anyhow::Result<BTreeMap<NodeId, String>> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .with_context(|| format!("member {part:?}: expected ID=HOST:PORT"))?;
        let id: NodeId = id
            .trim()
            .parse()
            .with_context(|| format!("member {part:?}: the id is not a number"))?;
        let addr = addr.trim();
        if addr.is_empty() {
            bail!("member {part:?}: no address");
        }
        if out.insert(id, addr.to_string()).is_some() {
            bail!("member {id} is given twice");
        }
    }
    if out.is_empty() {
        bail!("no members: expected ID=HOST:PORT,...");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_parse_and_refuse() {
        let m = parse_members("1=127.0.0.1:7101, 2=127.0.0.1:7102").unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[&2], "127.0.0.1:7102");
        for bad in ["", "1", "x=a:1", "1=", "1=a:1,1=b:2"] {
            assert!(parse_members(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_directory_without_manifest_is_not_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        let e = verify(dir.path()).unwrap_err().to_string();
        assert!(e.contains("did not finish"), "{e}");
        std::fs::write(dir.path().join(MANIFEST_FILE), "{").unwrap();
        let e = format!("{:#}", verify(dir.path()).unwrap_err());
        assert!(e.contains("damaged"), "{e}");
    }
}
