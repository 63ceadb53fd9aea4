//! Which online tables a run keeps: a view's table of the version being written and its
//! newest earlier ones, up to `online.keep_versions` tables per view; older versions' tables
//! are dropped when a run starts, so the online store does not grow with every definition
//! change. Reads of a dropped version (`view@version`) then say that nothing was written
//! for it.

use crate::error::JobError;
use quiver_store::online::OnlineStore;

/// Drops, per view of `current` (view name and the table this run writes), the tables of
/// that view's other versions beyond the `keep` newest tables (the current one counts, and
/// tables are ordered by their last commit); returns the dropped tables.
pub fn drop_old_versions(
    store: &dyn OnlineStore,
    current: &[(String, String)],
    keep: usize,
) -> Result<Vec<String>, JobError> {
    let tables = store.tables()?;
    let mut dropped = Vec::new();
    for (view, table) in current {
        let prefix = format!("{view}@");
        let mut others: Vec<(&String, u64)> = (tables.iter())
            .filter(|(name, _)| name.starts_with(&prefix) && name != table)
            .map(|(name, stamp)| (name, stamp.committed_unix_ms))
            .collect();
        // Newest first; ties by name, so the choice does not depend on listing order.
        others.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        for (name, _) in others.into_iter().skip(keep.saturating_sub(1)) {
            if store.drop_table(name)? {
                dropped.push(name.clone());
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
        let dropped = drop_old_versions(&store, &current, 2).unwrap();
        assert_eq!(dropped, vec!["cards@v2", "cards@v1"]);
        let left: Vec<String> = store.tables().unwrap().into_iter().map(|t| t.0).collect();
        assert_eq!(
            left,
            vec!["cards@v3", "cards@v4", "cardsx@v0", "merchants@m1"]
        );
        // Keeping one: only the current version stays (merchants' m1 is not m2).
        let dropped = drop_old_versions(&store, &current, 1).unwrap();
        assert_eq!(dropped, vec!["cards@v3", "merchants@m1"]);
        // Nothing more to drop.
        assert!(drop_old_versions(&store, &current, 1).unwrap().is_empty());
    }
}
