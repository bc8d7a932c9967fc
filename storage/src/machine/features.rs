//! The group's feature level: replicated behaviour that changed after the first
//! releases, switched by the log ([`Command::EnableFeatures`]) so that every
//! replica switches at the same index (levels: `command::FEATURE_LEVEL_MAX`).

use boxoffice_raft::command::*;
use boxoffice_raft::GroupId;

use super::{get, invalid, put};
use crate::keys::{table, Key};
use crate::kv::{Kv, KvRead};
use crate::records::Features;

fn features_key(group: GroupId) -> Vec<u8> {
    Key::sm(group, table::FEATURES).build()
}

/// The group's feature level record (level 0 when none is stored).
pub fn read_features(kv: &dyn KvRead, group: GroupId) -> Features {
    get(kv, &features_key(group)).unwrap_or_default()
}

pub(super) fn write_features(kv: &mut dyn Kv, group: GroupId, features: &Features) {
    put(kv, features_key(group), features);
}

/// Raises the level to `level`. A level this build does not know is a log it
/// cannot apply, as a command it cannot decode would be: it stops here (the
/// replicas that know the level apply it; this one must be upgraded), rather
/// than answer differently from them.
pub(super) fn enable(features: &mut Features, level: u32) -> Result<Effect, Rejection> {
    assert!(
        level <= FEATURE_LEVEL_MAX,
        "the log enables feature level {level}, and this build applies levels up to \
         {FEATURE_LEVEL_MAX}: upgrade this node to a release that knows it"
    );
    if level < features.level {
        return Err(invalid(format!(
            "feature levels never go down: the group is at {}, not going to {level}",
            features.level
        )));
    }
    if features.level == 0 && level > 0 {
        // Sessions written at level 0 are in the old expiry index until they end.
        features.legacy_session_expiry = true;
    }
    features.level = level;
    Ok(Effect::Nothing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::MemKv;
    use crate::machine::apply_entry;
    use crate::testing::{normal as entry, request};

    const GROUP: GroupId = GroupId(0);

    fn enable(kv: &mut MemKv, index: u64, level: u32) -> Outcome {
        let req = request(1_000, None, Command::EnableFeatures { level });
        apply_entry(kv, GROUP, &entry(index, req))
    }

    #[test]
    fn levels_only_go_up_and_level_0_stores_nothing() {
        let mut kv = MemKv::default();
        assert_eq!(enable(&mut kv, 1, 0).result, Ok(Effect::Nothing));
        assert!(
            kv.get(&features_key(GROUP)).is_none(),
            "level 0 writes no record the first releases could not read"
        );
        assert_eq!(enable(&mut kv, 2, 1).result, Ok(Effect::Nothing));
        assert_eq!(read_features(&kv, GROUP).level, 1);
        assert_eq!(enable(&mut kv, 3, 1).result, Ok(Effect::Nothing));
        let before = kv.get(&features_key(GROUP));
        assert!(matches!(
            enable(&mut kv, 4, 0).result,
            Err(Rejection::InvalidInput { .. })
        ));
        assert_eq!(kv.get(&features_key(GROUP)), before);
        assert_eq!(read_features(&kv, GROUP).level, 1);
    }

    #[test]
    #[should_panic(expected = "upgrade this node")]
    fn a_level_this_build_does_not_know_stops_apply() {
        let mut kv = MemKv::default();
        enable(&mut kv, 1, FEATURE_LEVEL_MAX + 1);
    }
}
