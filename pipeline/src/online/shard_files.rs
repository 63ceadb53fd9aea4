//! The embedded online files of a sharded job read as one store. Each shard process writes its
//! own redb file (one process opens a redb file at a time); readers (`quiver get`, `quiver
//! serve`, `quiver verify-online`, once the shards' runs have stopped) open them all and find
//! a table in the file of the shard its name says.

use super::shard_tables::split_table;
use quiver_store::online::{
    EmbeddedOnline, EntityState, OnlineStamp, OnlineStore, OnlineWrite, WantedSegments,
};
use quiver_store::StoreError;
use std::path::PathBuf;

/// The shard files of one job (`files[i]`: shard `i`'s, `None` where that shard has not
/// written one yet).
pub struct ShardFiles {
    count: u32,
    files: Vec<Option<EmbeddedOnline>>,
    shown: String,
}

impl ShardFiles {
    /// Opens the existing files among `paths` (shard `i`'s at `paths[i]`).
    pub fn open(paths: &[PathBuf]) -> Result<Self, StoreError> {
        let files = (paths.iter())
            .map(|p| p.exists().then(|| EmbeddedOnline::open(p)).transpose())
            .collect::<Result<Vec<_>, _>>()?;
        let shown = match paths.first() {
            Some(first) => format!(
                "{} files like {}",
                paths.len(),
                first
                    .display()
                    .to_string()
                    .replace("shard-0-of-", "shard-*-of-")
            ),
            None => "no shard files".to_string(),
        };
        Ok(ShardFiles {
            count: paths.len() as u32,
            files,
            shown,
        })
    }

    /// The file holding `table`, if its shard has one.
    fn file_of(&self, table: &str) -> Option<&EmbeddedOnline> {
        match split_table(table) {
            (_, Some(shard)) if shard.count() == self.count => {
                self.files[shard.index() as usize].as_ref()
            }
            _ => None,
        }
    }

    /// The file holding `table`, for a change.
    fn file_to_change(&self, table: &str) -> Result<&EmbeddedOnline, StoreError> {
        self.file_of(table).ok_or_else(|| StoreError::Online {
            store: self.shown.clone(),
            message: format!(
                "table `{table}` belongs to no shard file here: each shard's run writes its own file"
            ),
        })
    }
}

impl OnlineStore for ShardFiles {
    fn apply(&self, writes: &[OnlineWrite]) -> Result<usize, StoreError> {
        let mut applied = 0;
        for write in writes {
            applied += self
                .file_to_change(&write.table)?
                .apply(std::slice::from_ref(write))?;
        }
        Ok(applied)
    }

    fn tables(&self) -> Result<Vec<(String, OnlineStamp)>, StoreError> {
        let mut all = Vec::new();
        for file in self.files.iter().flatten() {
            all.extend(file.tables()?);
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(all)
    }

    fn get_selected(
        &self,
        table: &str,
        keys: &[&[u8]],
        wanted: &dyn Fn(&[u8]) -> WantedSegments,
    ) -> Result<Option<(OnlineStamp, Vec<Option<EntityState>>)>, StoreError> {
        match self.file_of(table) {
            Some(file) => file.get_selected(table, keys, wanted),
            None => Ok(None),
        }
    }

    fn scan(
        &self,
        table: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Option<(OnlineStamp, Vec<(Vec<u8>, EntityState)>)>, StoreError> {
        match self.file_of(table) {
            Some(file) => file.scan(table, after, limit),
            None => Ok(None),
        }
    }

    fn put_raw(&self, table: &str, key: &[u8], state: &EntityState) -> Result<(), StoreError> {
        self.file_to_change(table)?.put_raw(table, key, state)
    }

    fn drop_table(&self, table: &str) -> Result<bool, StoreError> {
        match self.file_of(table) {
            Some(file) => file.drop_table(table),
            None => Ok(false),
        }
    }

    fn describe(&self) -> String {
        self.shown.clone()
    }
    fn is_local(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::shard_tables::{shard_file, shard_table};
    use super::*;
    use quiver_sql::KeyShard;
    use quiver_store::online::EntityWrite;

    fn write(table: &str, key: &str) -> OnlineWrite {
        OnlineWrite {
            table: table.into(),
            replace: true,
            stamp: OnlineStamp {
                run: "r".into(),
                epoch: 1,
                watermark: Some(5),
                committed_unix_ms: 0,
                fingerprint: 1,
                keys: 0,
            },
            deletes: Vec::new(),
            puts: vec![EntityWrite {
                key: key.as_bytes().to_vec(),
                head: key.as_bytes().to_vec(),
                ..EntityWrite::default()
            }],
            keys_after: None,
        }
    }

    #[test]
    fn each_table_is_read_from_its_shards_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("online.redb");
        let shards: Vec<KeyShard> = (0..3).map(|i| KeyShard::new(i, 3).unwrap()).collect();
        // Shards 0 and 2 wrote their files (as their runs do); shard 1 has not run yet.
        for shard in [shards[0], shards[2]] {
            let file = EmbeddedOnline::open(&shard_file(&path, shard)).unwrap();
            let table = shard_table("v@1", shard);
            file.apply(&[write(&table, &shard.to_string())]).unwrap();
        }
        let paths: Vec<PathBuf> = shards.iter().map(|&s| shard_file(&path, s)).collect();
        let store = ShardFiles::open(&paths).unwrap();
        let tables: Vec<String> = store.tables().unwrap().into_iter().map(|t| t.0).collect();
        assert_eq!(tables, vec!["v@1/shard-0-of-3", "v@1/shard-2-of-3"]);
        let (_, values) = store
            .get("v@1/shard-2-of-3", &[b"2/3".as_slice(), b"0/3"])
            .unwrap()
            .unwrap();
        assert_eq!(values[0].as_ref().unwrap().head, b"2/3");
        assert!(
            values[1].is_none(),
            "shard 0's key is not in shard 2's file"
        );
        assert!(store.get("v@1/shard-1-of-3", &[b"x"]).unwrap().is_none());
        assert!(store.get("v@1", &[b"x"]).unwrap().is_none());
        let refused = store.apply(&[write("v@1/shard-1-of-3", "k")]).unwrap_err();
        assert!(refused
            .to_string()
            .contains("each shard's run writes its own file"));
        assert!(
            store.describe().contains("shard-*-of-3"),
            "{}",
            store.describe()
        );
    }
}
