//! The placement directory (feature level 4, catalogue only): see
//! `boxoffice_raft::command::PlacementUpdate`. An update is checked whole
//! first; then every node and the policy are written, and each group's entry
//! only if its epoch is above the stored one (stale ones are named in the
//! effect).

use boxoffice_raft::command::*;
use boxoffice_raft::GroupId;

use super::{get, invalid, put};
use crate::keys::{table, Key};
use crate::kv::{Kv, KvRead};
use crate::records::*;

pub(crate) fn node_key(group: GroupId, id: u64) -> Vec<u8> {
    Key::sm(group, table::PLACEMENT_NODE).u64(id).build()
}

pub(crate) fn group_key(group: GroupId, placed: u16) -> Vec<u8> {
    Key::sm(group, table::PLACEMENT_GROUP)
        .u64(u64::from(placed))
        .build()
}

pub(crate) fn policy_key(group: GroupId) -> Vec<u8> {
    Key::sm(group, table::PLACEMENT_POLICY).build()
}

pub(super) fn set(
    kv: &mut dyn Kv,
    group: GroupId,
    time: u64,
    update: &PlacementUpdate,
) -> Result<Effect, Rejection> {
    if !group.is_catalogue() {
        return Err(invalid("the placement directory is the catalogue's"));
    }
    update.check().map_err(invalid)?;
    let new_nodes = update
        .nodes
        .iter()
        .filter(|n| kv.get(&node_key(group, n.id)).is_none())
        .count();
    if new_nodes > 0 && nodes(kv, group).len() + new_nodes > PLACEMENT_NODES_MAX {
        return Err(invalid(format!(
            "the directory keeps at most {PLACEMENT_NODES_MAX} nodes"
        )));
    }
    if let Some(rf) = update.replication_factor {
        put(
            kv,
            policy_key(group),
            &PlacementPolicy {
                replication_factor: rf,
            },
        );
    }
    for n in &update.nodes {
        put(
            kv,
            node_key(group, n.id),
            &NodeEntry {
                addr: n.addr.clone(),
                labels: n.labels.clone(),
                state: n.state,
                updated_at_ms: time,
            },
        );
    }
    let mut stale_groups = Vec::new();
    for g in &update.groups {
        let key = group_key(group, g.group);
        let stored: Option<GroupPlacement> = get(kv, &key);
        if stored.is_some_and(|s| s.epoch >= g.epoch) {
            stale_groups.push(g.group);
            continue;
        }
        put(
            kv,
            key,
            &GroupPlacement {
                voters: g.voters.clone(),
                learners: g.learners.clone(),
                epoch: g.epoch,
            },
        );
    }
    Ok(Effect::PlacementSet { stale_groups })
}

/// Every node in the directory, by id.
pub(crate) fn nodes(kv: &dyn KvRead, group: GroupId) -> Vec<(u64, NodeEntry)> {
    let prefix = Key::sm(group, table::PLACEMENT_NODE).build();
    let mut out = Vec::new();
    kv.scan(&prefix, &prefix, &mut |k, v| {
        let id = u64::from_be_bytes(k[prefix.len()..prefix.len() + 8].try_into().expect(
            "a placement node key is the table prefix and a u64 (keys are built by node_key)",
        ));
        let e: NodeEntry = boxoffice_raft::codec::decode(v).expect("corrupt placement node record");
        out.push((id, e));
        true
    });
    out
}

/// Every group's entry, by group.
pub(crate) fn groups(kv: &dyn KvRead, group: GroupId) -> Vec<(u16, GroupPlacement)> {
    let prefix = Key::sm(group, table::PLACEMENT_GROUP).build();
    let mut out = Vec::new();
    kv.scan(&prefix, &prefix, &mut |k, v| {
        let id = u64::from_be_bytes(k[prefix.len()..prefix.len() + 8].try_into().expect(
            "a placement group key is the table prefix and a u64 (keys are built by group_key)",
        ));
        let id = u16::try_from(id).expect("corrupt placement group key");
        let e: GroupPlacement =
            boxoffice_raft::codec::decode(v).expect("corrupt group placement record");
        out.push((id, e));
        true
    });
    out
}

/// The policy, if one was set.
pub(crate) fn policy(kv: &dyn KvRead, group: GroupId) -> Option<PlacementPolicy> {
    get(kv, &policy_key(group))
}
