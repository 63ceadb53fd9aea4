//! The embedded online store: one redb file. A write transaction per epoch makes the epoch's
//! writes visible together; readers see MVCC snapshots, so they never wait for a commit and
//! never see half of one. redb locks its file: one process opens it at a time.

use super::{is_new, unix_ms, EntityState, OnlineStamp, OnlineStore, OnlineWrite};
use crate::StoreError;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::path::{Path, PathBuf};

/// Stamps: table name -> JSON [`OnlineStamp`].
const STAMPS: TableDefinition<&str, &[u8]> = TableDefinition::new("stamps");

/// A table of entity heads: encoded key -> head.
type States<'a> = TableDefinition<'a, &'static [u8], &'static [u8]>;

/// A table of entity segments: (encoded key, segment id) -> segment.
type Segments<'a> = TableDefinition<'a, (&'static [u8], u64), &'static [u8]>;

/// A view version's heads and segments, opened for reading.
type ReadTables = (
    redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    redb::ReadOnlyTable<(&'static [u8], u64), &'static [u8]>,
);

/// The redb table holding a view version's heads.
fn states(table: &str) -> String {
    format!("state/{table}")
}

/// The redb table holding a view version's segments.
fn segments(table: &str) -> String {
    format!("segments/{table}")
}

/// The segments of `key` in `table`, by id.
fn segments_of(
    table: &impl ReadableTable<(&'static [u8], u64), &'static [u8]>,
    key: &[u8],
) -> Result<Vec<(u64, Vec<u8>)>, redb::StorageError> {
    let mut out = Vec::new();
    for entry in table.range((key, 0)..=(key, u64::MAX))? {
        let (k, v) = entry?;
        out.push((k.value().1, v.value().to_vec()));
    }
    Ok(out)
}

/// A view version's heads and segments, opened for writing.
struct WriteTables<'t> {
    heads: redb::Table<'t, &'static [u8], &'static [u8]>,
    segments: redb::Table<'t, (&'static [u8], u64), &'static [u8]>,
}

impl<'t> WriteTables<'t> {
    /// Opens (creating) the tables of `table`.
    fn open(tx: &'t redb::WriteTransaction, table: &str) -> Result<Self, redb::Error> {
        Ok(WriteTables {
            heads: tx.open_table(States::new(&states(table)))?,
            segments: tx.open_table(Segments::new(&segments(table)))?,
        })
    }

    /// Deletes the tables of `table` with everything in them.
    fn delete(tx: &redb::WriteTransaction, table: &str) -> Result<(), redb::Error> {
        tx.delete_table(States::new(&states(table)))?;
        tx.delete_table(Segments::new(&segments(table)))?;
        Ok(())
    }

    /// Removes `key`'s head and every segment.
    fn forget(&mut self, key: &[u8]) -> Result<(), redb::Error> {
        self.heads.remove(key)?;
        self.forget_segments(key)
    }

    fn forget_segments(&mut self, key: &[u8]) -> Result<(), redb::Error> {
        self.segments
            .retain_in((key, 0)..=(key, u64::MAX), |_, _| false)?;
        Ok(())
    }

    /// Writes `key`'s head and `segments`, after deleting its segments `deletes` (`None`:
    /// every segment it had).
    fn put(
        &mut self,
        key: &[u8],
        head: &[u8],
        deletes: Option<&[u64]>,
        segments: &[(u64, Vec<u8>)],
    ) -> Result<(), redb::Error> {
        self.heads.insert(key, head)?;
        match deletes {
            Some(ids) => {
                for &id in ids {
                    self.segments.remove((key, id))?;
                }
            }
            None => self.forget_segments(key)?,
        }
        for (id, bytes) in segments {
            self.segments.insert((key, *id), bytes.as_slice())?;
        }
        Ok(())
    }
}

/// An online store in one local file.
pub struct EmbeddedOnline {
    db: Database,
    path: PathBuf,
}

impl EmbeddedOnline {
    /// Opens the store at `path`, creating it (and its directory) if needed.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Online {
                store: path.display().to_string(),
                message: "it is open in another process (a running `quiver run`?); the embedded store serves from the process that writes it (`quiver run --serve`), or use Redis to serve from elsewhere".into(),
            },
            e => StoreError::Online {
                store: path.display().to_string(),
                message: e.to_string(),
            },
        })?;
        Ok(EmbeddedOnline {
            db,
            path: path.to_path_buf(),
        })
    }

    fn fail(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Online {
            store: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    fn stamp_of(&self, bytes: &[u8]) -> Result<OnlineStamp, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| self.fail(format!("unreadable stamp: {e}")))
    }

    /// The stamp of `table` and its heads and segments (`None` when no state was ever
    /// written) in a read transaction; `None` when the table does not exist.
    #[allow(clippy::type_complexity)]
    fn read_table(
        &self,
        tx: &redb::ReadTransaction,
        table: &str,
    ) -> Result<Option<(OnlineStamp, Option<ReadTables>)>, StoreError> {
        let Some(stamp) = self.read_stamp(tx, table)? else {
            return Ok(None);
        };
        let (heads, parts) = (states(table), segments(table));
        let opened = tx
            .open_table(States::new(&heads))
            .and_then(|h| Ok((h, tx.open_table(Segments::new(&parts))?)));
        match opened {
            Ok(t) => Ok(Some((stamp, Some(t)))),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(Some((stamp, None))),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// The state of `key` in the opened tables (its segments when `needs_segments` says so).
    fn entity(
        &self,
        (heads, parts): &ReadTables,
        key: &[u8],
        needs_segments: &dyn Fn(&[u8]) -> bool,
    ) -> Result<Option<EntityState>, StoreError> {
        let Some(head) = heads.get(key).map_err(|e| self.fail(e))? else {
            return Ok(None);
        };
        let head = head.value().to_vec();
        let segments = match needs_segments(&head) {
            true => segments_of(parts, key).map_err(|e| self.fail(e))?,
            false => Vec::new(),
        };
        Ok(Some(EntityState { head, segments }))
    }

    /// The stamp of `table` in a read transaction, if the table exists.
    fn read_stamp(
        &self,
        tx: &redb::ReadTransaction,
        table: &str,
    ) -> Result<Option<OnlineStamp>, StoreError> {
        let stamps = match tx.open_table(STAMPS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.fail(e)),
        };
        match stamps.get(table).map_err(|e| self.fail(e))? {
            Some(v) => Ok(Some(self.stamp_of(v.value())?)),
            None => Ok(None),
        }
    }
}

impl OnlineStore for EmbeddedOnline {
    fn apply(&self, writes: &[OnlineWrite]) -> Result<usize, StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.fail(e))?;
        let mut applied = 0;
        {
            let mut stamps = tx.open_table(STAMPS).map_err(|e| self.fail(e))?;
            for write in writes {
                let current = match stamps.get(write.table.as_str()).map_err(|e| self.fail(e))? {
                    Some(v) => Some(self.stamp_of(v.value())?),
                    None => None,
                };
                if !is_new(current.as_ref(), &write.stamp) {
                    continue;
                }
                if write.replace {
                    WriteTables::delete(&tx, &write.table).map_err(|e| self.fail(e))?;
                }
                let mut tables = WriteTables::open(&tx, &write.table).map_err(|e| self.fail(e))?;
                for key in &write.deletes {
                    tables.forget(key).map_err(|e| self.fail(e))?;
                }
                for put in &write.puts {
                    (tables.put(&put.key, &put.head, Some(&put.deletes), &put.segments))
                        .map_err(|e| self.fail(e))?;
                }
                let stamp = OnlineStamp {
                    keys: tables.heads.len().map_err(|e| self.fail(e))?,
                    committed_unix_ms: unix_ms(),
                    ..write.stamp.clone()
                };
                let bytes = serde_json::to_vec(&stamp).map_err(|e| self.fail(e))?;
                stamps
                    .insert(write.table.as_str(), bytes.as_slice())
                    .map_err(|e| self.fail(e))?;
                applied += 1;
            }
        }
        tx.commit().map_err(|e| self.fail(e))?;
        Ok(applied)
    }

    fn tables(&self) -> Result<Vec<(String, OnlineStamp)>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.fail(e))?;
        let stamps = match tx.open_table(STAMPS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.fail(e)),
        };
        let mut out = Vec::new();
        for entry in stamps.iter().map_err(|e| self.fail(e))? {
            let (name, stamp) = entry.map_err(|e| self.fail(e))?;
            out.push((name.value().to_string(), self.stamp_of(stamp.value())?));
        }
        Ok(out)
    }

    fn get_selected(
        &self,
        table: &str,
        keys: &[&[u8]],
        needs_segments: &dyn Fn(&[u8]) -> bool,
    ) -> Result<Option<(OnlineStamp, Vec<Option<EntityState>>)>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.fail(e))?;
        let Some((stamp, tables)) = self.read_table(&tx, table)? else {
            return Ok(None);
        };
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            values.push(match &tables {
                Some(tables) => self.entity(tables, key, needs_segments)?,
                None => None,
            });
        }
        Ok(Some((stamp, values)))
    }

    fn scan(
        &self,
        table: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Option<(OnlineStamp, Vec<(Vec<u8>, EntityState)>)>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.fail(e))?;
        let Some((stamp, tables)) = self.read_table(&tx, table)? else {
            return Ok(None);
        };
        let Some((states, parts)) = tables else {
            return Ok(Some((stamp, Vec::new())));
        };
        let range = match after {
            Some(after) => states
                .range::<&[u8]>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => states.range::<&[u8]>(..),
        }
        .map_err(|e| self.fail(e))?;
        let mut out = Vec::new();
        for entry in range.take(limit) {
            let (k, v) = entry.map_err(|e| self.fail(e))?;
            let key = k.value().to_vec();
            let segments = segments_of(&parts, &key).map_err(|e| self.fail(e))?;
            let head = v.value().to_vec();
            out.push((key, EntityState { head, segments }));
        }
        Ok(Some((stamp, out)))
    }

    fn put_raw(&self, table: &str, key: &[u8], state: &EntityState) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.fail(e))?;
        WriteTables::open(&tx, table)
            .and_then(|mut tables| tables.put(key, &state.head, None, &state.segments))
            .map_err(|e| self.fail(e))?;
        tx.commit().map_err(|e| self.fail(e))
    }

    fn drop_table(&self, table: &str) -> Result<bool, StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.fail(e))?;
        let existed = {
            let mut stamps = tx.open_table(STAMPS).map_err(|e| self.fail(e))?;
            let existed = stamps.remove(table).map_err(|e| self.fail(e))?.is_some();
            WriteTables::delete(&tx, table).map_err(|e| self.fail(e))?;
            existed
        };
        tx.commit().map_err(|e| self.fail(e))?;
        Ok(existed)
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
    fn is_local(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{read, write};
    use super::*;

    #[test]
    fn epochs_apply_once_replace_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("online.redb");
        let store = EmbeddedOnline::open(&path).unwrap();
        assert!(store.get("v@1", &[b"a"]).unwrap().is_none());
        let first = write("r1", 1, true, &[("a", "1"), ("b", "1")], &[]);
        assert_eq!(store.apply(std::slice::from_ref(&first)).unwrap(), 1);
        assert_eq!(store.apply(&[first]).unwrap(), 0, "an epoch applies once");
        store
            .apply(&[write("r1", 2, false, &[("a", "2")], &["b"])])
            .unwrap();
        assert_eq!(
            read(&store, &["a", "b", "c"]),
            (2, vec![Some("2".into()), None, None])
        );
        // An older epoch of the same run is never applied over a newer one.
        store
            .apply(&[write("r1", 1, false, &[("a", "old")], &[])])
            .unwrap();
        assert_eq!(read(&store, &["a"]).1, vec![Some("2".into())]);
        drop(store);
        let store = EmbeddedOnline::open(&path).unwrap();
        assert_eq!(read(&store, &["a"]), (2, vec![Some("2".into())]));
        // A new run replaces what the table held.
        store
            .apply(&[write("r2", 1, true, &[("c", "x")], &[])])
            .unwrap();
        assert_eq!(read(&store, &["a", "c"]), (1, vec![None, Some("x".into())]));
        let tables = store.tables().unwrap();
        assert_eq!(tables.len(), 1);
        assert_eq!((tables[0].1.run.as_str(), tables[0].1.keys), ("r2", 1));
        let (_, page) = store.scan("v@1", None, 10).unwrap().unwrap();
        let x = EntityState {
            head: b"x".to_vec(),
            segments: vec![(7, b"x".to_vec())],
        };
        assert_eq!(page, vec![(b"c".to_vec(), x)]);
        assert!(store.drop_table("v@1").unwrap());
        assert!(store.get("v@1", &[b"c"]).unwrap().is_none());
    }

    #[test]
    fn a_second_process_is_told_who_holds_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("online.redb");
        let _held = EmbeddedOnline::open(&path).unwrap();
        // redb refuses a second open of the same file in one process as it does across them.
        let e = EmbeddedOnline::open(&path).err().unwrap().to_string();
        assert!(e.contains("another process"), "{e}");
    }

    #[test]
    fn readers_see_whole_epochs_while_commits_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(EmbeddedOnline::open(&dir.path().join("o.redb")).unwrap());
        let keys: Vec<String> = (0..50).map(|k| format!("k{k}")).collect();
        let writer = {
            let (store, keys) = (store.clone(), keys.clone());
            std::thread::spawn(move || {
                for epoch in 1..=200u64 {
                    let value = epoch.to_string();
                    let puts: Vec<(&str, &str)> =
                        keys.iter().map(|k| (k.as_str(), value.as_str())).collect();
                    store
                        .apply(&[write("r", epoch, epoch == 1, &puts, &[])])
                        .unwrap();
                }
            })
        };
        let names: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut seen = 0;
        while !writer.is_finished() || seen == 0 {
            let Some((stamp, values)) = store
                .get(
                    "v@1",
                    &names.iter().map(|k| k.as_bytes()).collect::<Vec<_>>(),
                )
                .unwrap()
            else {
                continue;
            };
            let expected = Some(stamp.epoch.to_string().into_bytes());
            assert!(
                values
                    .iter()
                    .all(|v| v.as_ref().map(|v| v.head.clone()) == expected),
                "a partial epoch was visible"
            );
            seen += 1;
        }
        writer.join().unwrap();
    }
}
