//! Which online tables a run keeps: a view's table of the version being written and its
//! newest earlier ones, up to `online.keep_versions` tables per view; older versions' tables
//! are dropped when a run starts, so the online store does not grow with every definition
//! change. Reads of a dropped version (`view@version`) then say that nothing was written
//! for it.

use super::shard_tables::split_table;
use crate::error::JobError;
use quiver_store::online::OnlineStore;
use std::collections::BTreeMap;

/// A table dropped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The table.
    pub table: String,
    /// Why: an old version, or the current version written in another shard layout.
    pub reason: String,
}

/// Drops, per view of `current` (view name and the table this run writes: `view@version`,
/// or a shard's `view@version/shard-I-of-N`), the tables of that view's other versions beyond
/// the `keep` newest versions (the current one counts; versions are ordered by their tables'
/// last commit), and the current version's tables of another shard layout (a run of this
/// layout supersedes them); returns the dropped tables.
pub fn drop_old_versions(
    store: &dyn OnlineStore,
    current: &[(String, String)],
    keep: usize,
) -> Result<Vec<Dropped>, JobError> {
    let tables = store.tables()?;
    let mut dropped = Vec::new();
    let mut drop = |table: &str, reason: String| -> Result<(), JobError> {
        if store.drop_table(table)? {
            dropped.push(Dropped {
                table: table.to_string(),
                reason,
            });
        }
        Ok(())
    };
    for (view, table) in current {
        let (version_table, shard) = split_table(table);
        let layout = shard.map(|s| s.count());
        let prefix = format!("{view}@");
        // Other versions: their tables and their newest commit.
        let mut others: BTreeMap<&str, (u64, Vec<&str>)> = BTreeMap::new();
        for (name, stamp) in tables.iter().filter(|(name, _)| name.starts_with(&prefix)) {
            let (base, shard) = split_table(name);
            if base != version_table {
                let entry = others.entry(base).or_default();
                entry.0 = entry.0.max(stamp.committed_unix_ms);
                entry.1.push(name);
            } else if shard.map(|s| s.count()) != layout {
                drop(
                    name,
                    "the version this run writes, in another shard layout".into(),
                )?;
            }
        }
        let mut others: Vec<(&str, (u64, Vec<&str>))> = others.into_iter().collect();
        // Newest first; ties by name, so the choice does not depend on listing order.
        others.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then_with(|| a.0.cmp(b.0)));
        for (_, (_, names)) in others.into_iter().skip(keep.saturating_sub(1)) {
            for name in names {
                let reason =
                    format!("each view keeps its {keep} newest versions: online.keep_versions");
                drop(name, reason)?;
            }
        }
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_store::online::{EmbeddedOnline, OnlineStamp, OnlineWrite};

    fn write(store: &EmbeddedOnline, table: &str) {
        let stamp = OnlineStamp {
            run: "r".into(),
            epoch: 1,
            watermark: None,
            committed_unix_ms: 0,
            fingerprint: 1,
            keys: 0,
        };
        let write = OnlineWrite {
            table: table.into(),
            replace: true,
            stamp,
            deletes: Vec::new(),
            puts: Vec::new(),
            keys_after: Some(0),
        };
        store.apply(&[write]).unwrap();
        // Commit times are milliseconds: the next table is newer.
        std::thread::sleep(std::time::Duration::from_millis(3));
    }

    #[test]
    fn keeps_the_newest_versions_of_each_view_and_nothing_else_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedOnline::open(&dir.path().join("online.redb")).unwrap();
        for table in [
            "cards@v1",
            "cards@v2",
            "cards@v3",
            "merchants@m1",
            "cardsx@v0",
        ] {
            write(&store, table);
        }
        write(&store, "cards@v4");
        let current = [
            ("cards".to_string(), "cards@v4".to_string()),
            ("merchants".to_string(), "merchants@m2".to_string()),
        ];
        let names = |dropped: Vec<Dropped>| -> Vec<String> {
            dropped.into_iter().map(|d| d.table).collect()
        };
        let dropped = drop_old_versions(&store, &current, 2).unwrap();
        assert_eq!(names(dropped), vec!["cards@v2", "cards@v1"]);
        let left: Vec<String> = store.tables().unwrap().into_iter().map(|t| t.0).collect();
        assert_eq!(
            left,
            vec!["cards@v3", "cards@v4", "cardsx@v0", "merchants@m1"]
        );
        // Keeping one: only the current version stays (merchants' m1 is not m2).
        let dropped = drop_old_versions(&store, &current, 1).unwrap();
        assert_eq!(names(dropped), vec!["cards@v3", "merchants@m1"]);
        // Nothing more to drop.
        assert!(drop_old_versions(&store, &current, 1).unwrap().is_empty());
    }

    #[test]
    fn a_versions_shard_tables_go_together_and_other_layouts_of_the_current_one_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedOnline::open(&dir.path().join("online.redb")).unwrap();
        for table in [
            "cards@v1/shard-0-of-2",
            "cards@v1/shard-1-of-2",
            "cards@v2",
            "cards@v3/shard-0-of-2",
            "cards@v3/shard-1-of-2",
            "cards@v4",
            "cards@v4/shard-1-of-3",
            "cards@v4/shard-0-of-2",
        ] {
            write(&store, table);
        }
        // Shard 1 of 2 of v4 starts, keeping two versions: v3 (both shards) stays, v1 and v2
        // go, and v4's unsharded and 3-shard tables go.
        let current = [("cards".to_string(), "cards@v4/shard-1-of-2".to_string())];
        let mut dropped: Vec<String> = drop_old_versions(&store, &current, 2)
            .unwrap()
            .into_iter()
            .map(|d| d.table)
            .collect();
        dropped.sort();
        assert_eq!(
            dropped,
            vec![
                "cards@v1/shard-0-of-2",
                "cards@v1/shard-1-of-2",
                "cards@v2",
                "cards@v4",
                "cards@v4/shard-1-of-3"
            ]
        );
        let left: Vec<String> = store.tables().unwrap().into_iter().map(|t| t.0).collect();
        assert_eq!(
            left,
            vec![
                "cards@v3/shard-0-of-2",
                "cards@v3/shard-1-of-2",
                "cards@v4/shard-0-of-2"
            ]
        );
    }
}
