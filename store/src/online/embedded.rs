//! The embedded online store: one redb file. A write transaction per epoch makes the epoch's
//! writes visible together; readers see MVCC snapshots, so they never wait for a commit and
//! never see half of one. redb locks its file: one process opens it at a time.

use super::overlay::{key_changes, keys_after, KeyChanges, Layers, Overlay};
use super::{is_new, unix_ms, EntityState, OnlineStamp, OnlineStore, OnlineWrite, WantedSegments};
use crate::StoreError;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::time::Duration;

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

    fn forget_segments(&mut self, key: &[u8]) -> Result<(), redb::Error> {
        self.segments
            .retain_in((key, 0)..=(key, u64::MAX), |_, _| false)?;
        Ok(())
    }

    /// Applies a layer's `changes` of `key` ([`KeyChanges`]).
    fn change(&mut self, key: &[u8], changes: &KeyChanges) -> Result<(), redb::Error> {
        if changes.cleared {
            self.forget_segments(key)?;
        }
        match &changes.head {
            Some(head) => self.heads.insert(key, head.as_slice())?,
            None => self.heads.remove(key)?,
        };
        for (id, bytes) in &changes.segments {
            match bytes {
                Some(bytes) => self.segments.insert((key, *id), bytes.as_slice())?,
                None => self.segments.remove((key, *id))?,
            };
        }
        Ok(())
    }
}

/// How often the epochs held in memory ([`OnlineStore::apply_recoverable`]) are written to
/// the file, in one durable transaction.
const WRITE_EVERY: Duration = Duration::from_secs(1);

/// An online store in one local file. Epochs whose writer can rebuild them after a crash are
/// held in memory (`online::overlay`) and written to the file about once a second
/// by a thread of the store's own; reads compose the file and the layers in memory.
pub struct EmbeddedOnline {
    inner: Arc<Inner>,
    /// Wakes the writer thread (dropping it stops the thread, which writes what is left).
    writer: Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
}

/// The store shared with its writer thread.
struct Inner {
    db: Database,
    path: PathBuf,
    layers: RwLock<Layers>,
    /// Held while an epoch is applied to the newest layer (one apply at a time).
    applying: Mutex<()>,
    /// Held while a layer is written to the file (one write at a time: the writer thread's,
    /// or a sync's).
    writing: Mutex<()>,
    /// Why writing to the file failed, if it did: every later apply and sync fails with it (the
    /// run stops, and the next one rebuilds the epochs from its checkpoint).
    failed: Mutex<Option<String>>,
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
        if !path.exists() {
            create_file(path)?;
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
        let inner = Arc::new(Inner {
            db,
            path: path.to_path_buf(),
            layers: RwLock::new(Layers::default()),
            applying: Mutex::new(()),
            writing: Mutex::new(()),
            failed: Mutex::new(None),
        });
        let (wake, woken) = mpsc::channel::<()>();
        let shared = inner.clone();
        let thread = std::thread::Builder::new()
            .name("online-writer".into())
            .spawn(move || loop {
                let stop = matches!(
                    woken.recv_timeout(WRITE_EVERY),
                    Err(mpsc::RecvTimeoutError::Disconnected)
                );
                // A failure is kept for the next apply or sync to report.
                let _ = shared.write_layers();
                if stop {
                    break;
                }
            })
            .map_err(|source| StoreError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(EmbeddedOnline {
            inner,
            writer: Some((wake, thread)),
        })
    }
}

/// Creates an empty store file at `path`, initialised under a name of its own and then linked
/// into place: redb's creation is not atomic, and a process killed during it left a file
/// that no later run could open ("not a redb database"). Where another process created the
/// file first, its file stays.
fn create_file(path: &Path) -> Result<(), StoreError> {
    let io = |at: &Path| {
        let at = at.to_path_buf();
        move |source| StoreError::Io { path: at, source }
    };
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".creating-{}", std::process::id()));
    let creating = path.with_file_name(name);
    let _ = std::fs::remove_file(&creating); // what a killed process with this id left
    let created = Database::create(&creating).map_err(|e| StoreError::Online {
        store: creating.display().to_string(),
        message: e.to_string(),
    });
    drop(created?);
    std::fs::File::open(&creating)
        .and_then(|file| file.sync_all())
        .map_err(io(&creating))?;
    let linked = match std::fs::hard_link(&creating, path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        linked => linked,
    };
    let removed = std::fs::remove_file(&creating);
    linked.and(removed).map_err(io(path))?;
    crate::sync_dir(path.parent().unwrap_or(Path::new(".")))
}

impl Drop for EmbeddedOnline {
    fn drop(&mut self) {
        if let Some((wake, thread)) = self.writer.take() {
            drop(wake);
            let _ = thread.join();
        }
    }
}

/// A lock's guard even if a thread panicked holding it (the data is whole epochs either way).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    fn fail(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Online {
            store: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    fn read_layers(&self) -> std::sync::RwLockReadGuard<'_, Layers> {
        self.layers.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_layers(&self) -> Result<(), StoreError> {
        let _one = lock(&self.writing);
        self.check()?;
        let layer = {
            let mut layers = self.layers.write().unwrap_or_else(|e| e.into_inner());
            if layers.newest.is_empty() {
                return Ok(());
            }
            let layer = Arc::new(std::mem::take(&mut layers.newest));
            layers.writing = Some(layer.clone());
            layer
        };
        match self.write_to_file(&layer) {
            Ok(()) => {
                let mut layers = self.layers.write().unwrap_or_else(|e| e.into_inner());
                layers.writing = None;
                Ok(())
            }
            Err(e) => {
                // The layer stays readable; nothing is written to the file any more.
                *lock(&self.failed) = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// The error writing to the file ended with, if it did.
    fn check(&self) -> Result<(), StoreError> {
        match lock(&self.failed).as_ref() {
            Some(e) => Err(self.fail(format!("writing epochs to the file failed: {e}"))),
            None => Ok(()),
        }
    }

    /// Writes `layer` into the file in one durable transaction.
    fn write_to_file(&self, layer: &Overlay) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.fail(e))?;
        {
            let mut stamps = tx.open_table(STAMPS).map_err(|e| self.fail(e))?;
            for (name, table) in &layer.tables {
                if table.replaced {
                    WriteTables::delete(&tx, name).map_err(|e| self.fail(e))?;
                }
                let mut tables = WriteTables::open(&tx, name).map_err(|e| self.fail(e))?;
                // In key order: neighbouring inserts touch the same pages.
                let mut keys: Vec<_> = table.keys.iter().collect();
                keys.sort_unstable_by(|a, b| a.0.cmp(b.0));
                for (key, changes) in keys {
                    (tables.change(key, changes)).map_err(|e| self.fail(e))?;
                }
                let stamp = OnlineStamp {
                    keys: tables.heads.len().map_err(|e| self.fail(e))?,
                    ..table.stamp.clone()
                };
                let bytes = serde_json::to_vec(&stamp).map_err(|e| self.fail(e))?;
                (stamps.insert(name.as_str(), bytes.as_slice())).map_err(|e| self.fail(e))?;
            }
        }
        tx.commit().map_err(|e| self.fail(e))
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
        wanted: &dyn Fn(&[u8]) -> WantedSegments,
    ) -> Result<Option<EntityState>, StoreError> {
        let Some(head) = heads.get(key).map_err(|e| self.fail(e))? else {
            return Ok(None);
        };
        let head = head.value().to_vec();
        let segments = match wanted(&head) {
            WantedSegments::All => segments_of(parts, key).map_err(|e| self.fail(e))?,
            WantedSegments::Only(ids) => {
                let mut found = Vec::with_capacity(ids.len());
                for id in ids {
                    if let Some(bytes) = parts.get((key, id)).map_err(|e| self.fail(e))? {
                        found.push((id, bytes.value().to_vec()));
                    }
                }
                found.sort_by_key(|(id, _)| *id);
                found
            }
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

    /// Applies one epoch's writes to the newest layer (visible to reads at once, all
    /// together).
    fn apply_in_memory(&self, writes: &[OnlineWrite]) -> Result<usize, StoreError> {
        let _one = lock(&self.applying);
        self.check()?;
        let mut folded = Vec::new();
        {
            // The layers first, then the file: a write to the file that ends in between
            // leaves its layer in place until after the file shows it.
            let layers = self.read_layers();
            let tx = self.db.begin_read().map_err(|e| self.fail(e))?;
            for write in writes {
                let stack = layers.stack(&write.table);
                let file = self.read_table(&tx, &write.table)?;
                let current = match stack.first() {
                    Some(changes) => Some(changes.stamp.clone()),
                    None => file.as_ref().map(|(stamp, _)| stamp.clone()),
                };
                if !is_new(current.as_ref(), &write.stamp) {
                    continue;
                }
                let heads = file.as_ref().and_then(|(_, t)| t.as_ref().map(|t| &t.0));
                let live = |key: &[u8]| match (key_changes(&stack, key), heads) {
                    ((changes, _), _) if !changes.is_empty() => Ok(changes[0].head.is_some()),
                    ((_, true), Some(heads)) => Ok(heads.get(key)?.is_some()),
                    _ => Ok(false),
                };
                let before = current.as_ref().map_or(0, |s| s.keys);
                let keys = match write.keys_after {
                    Some(keys) => keys,
                    None => keys_after(write, before, live).map_err(|e: redb::StorageError| {
                        self.fail(format!("cannot read the file's keys: {e}"))
                    })?,
                };
                let stamp = OnlineStamp {
                    keys,
                    committed_unix_ms: unix_ms(),
                    ..write.stamp.clone()
                };
                folded.push((write, stamp));
            }
        }
        let mut layers = self.layers.write().unwrap_or_else(|e| e.into_inner());
        for (write, stamp) in &folded {
            layers.newest.fold(write, stamp.clone());
        }
        Ok(folded.len())
    }
}

impl OnlineStore for EmbeddedOnline {
    fn apply(&self, writes: &[OnlineWrite]) -> Result<usize, StoreError> {
        let applied = self.inner.apply_in_memory(writes)?;
        self.sync()?;
        Ok(applied)
    }

    fn apply_recoverable(&self, writes: &[OnlineWrite]) -> Result<usize, StoreError> {
        self.inner.apply_in_memory(writes)
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.inner.write_layers()
    }

    fn tables(&self) -> Result<Vec<(String, OnlineStamp)>, StoreError> {
        let inner = &self.inner;
        let layers = inner.read_layers();
        let tx = inner.db.begin_read().map_err(|e| inner.fail(e))?;
        let mut out = BTreeMap::new();
        match tx.open_table(STAMPS) {
            Ok(stamps) => {
                for entry in stamps.iter().map_err(|e| inner.fail(e))? {
                    let (name, stamp) = entry.map_err(|e| inner.fail(e))?;
                    out.insert(name.value().to_string(), inner.stamp_of(stamp.value())?);
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(inner.fail(e)),
        }
        for (name, stamp) in layers.stamps() {
            out.insert(name.clone(), stamp.clone());
        }
        Ok(out.into_iter().collect())
    }

    fn get_selected(
        &self,
        table: &str,
        keys: &[&[u8]],
        wanted: &dyn Fn(&[u8]) -> WantedSegments,
    ) -> Result<Option<(OnlineStamp, Vec<Option<EntityState>>)>, StoreError> {
        let inner = &self.inner;
        // The layers first, then the file (see `apply_in_memory`).
        let layers = inner.read_layers();
        let tx = inner.db.begin_read().map_err(|e| inner.fail(e))?;
        let file = inner.read_table(&tx, table)?;
        let stack = layers.stack(table);
        let stamp = match (stack.first(), &file) {
            (Some(changes), _) => changes.stamp.clone(),
            (None, Some((stamp, _))) => stamp.clone(),
            (None, None) => return Ok(None),
        };
        let file = match stack.iter().any(|t| t.replaced) {
            true => None,
            false => file.and_then(|(_, tables)| tables),
        };
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            let (changes, below) = key_changes(&stack, key);
            let Some(newest) = changes.first() else {
                values.push(match &file {
                    Some(tables) => inner.entity(tables, key, wanted)?,
                    None => None,
                });
                continue;
            };
            let Some(head) = &newest.head else {
                values.push(None);
                continue;
            };
            // Changed since the file was written: the head, and the segments it wants from
            // the file's with the layers' changes over them.
            let wants = wanted(head);
            if !wants.any() {
                values.push(Some(EntityState {
                    head: head.clone(),
                    segments: Vec::new(),
                }));
                continue;
            }
            let mut state = match (&file, below) {
                (Some(tables), true) => inner.entity(tables, key, &|_| WantedSegments::All)?,
                _ => None,
            };
            for changes in changes.iter().rev() {
                state = changes.over(state);
            }
            debug_assert!(state.as_ref().is_some_and(|s| &s.head == head));
            if let Some(state) = &mut state {
                wants.keep_in(state);
            }
            values.push(state);
        }
        Ok(Some((stamp, values)))
    }

    fn scan(
        &self,
        table: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Option<(OnlineStamp, Vec<(Vec<u8>, EntityState)>)>, StoreError> {
        // Paging goes through the file: what memory holds is written to it first.
        self.sync()?;
        let inner = &self.inner;
        let tx = inner.db.begin_read().map_err(|e| inner.fail(e))?;
        let Some((stamp, tables)) = inner.read_table(&tx, table)? else {
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
        .map_err(|e| inner.fail(e))?;
        let mut out = Vec::new();
        for entry in range.take(limit) {
            let (k, v) = entry.map_err(|e| inner.fail(e))?;
            let key = k.value().to_vec();
            let segments = segments_of(&parts, &key).map_err(|e| inner.fail(e))?;
            let head = v.value().to_vec();
            out.push((key, EntityState { head, segments }));
        }
        Ok(Some((stamp, out)))
    }

    fn put_raw(&self, table: &str, key: &[u8], state: &EntityState) -> Result<(), StoreError> {
        // Over what memory holds, which goes to the file first.
        self.sync()?;
        let inner = &self.inner;
        let tx = inner.db.begin_write().map_err(|e| inner.fail(e))?;
        WriteTables::open(&tx, table)
            .and_then(|mut tables| {
                // The key's whole state: its head, and its segments instead of any it had.
                let whole = KeyChanges {
                    head: Some(state.head.clone()),
                    cleared: true,
                    segments: (state.segments.iter())
                        .map(|(id, bytes)| (*id, Some(bytes.clone())))
                        .collect(),
                };
                tables.change(key, &whole)
            })
            .map_err(|e| inner.fail(e))?;
        tx.commit().map_err(|e| inner.fail(e))
    }

    fn drop_table(&self, table: &str) -> Result<bool, StoreError> {
        self.sync()?;
        let inner = &self.inner;
        let tx = inner.db.begin_write().map_err(|e| inner.fail(e))?;
        let existed = {
            let mut stamps = tx.open_table(STAMPS).map_err(|e| inner.fail(e))?;
            let existed = stamps.remove(table).map_err(|e| inner.fail(e))?.is_some();
            WriteTables::delete(&tx, table).map_err(|e| inner.fail(e))?;
            existed
        };
        tx.commit().map_err(|e| inner.fail(e))?;
        Ok(existed)
    }

    fn describe(&self) -> String {
        self.inner.path.display().to_string()
    }
    fn is_local(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{read, write};
    use super::super::EntityWrite;
    use super::*;

    #[test]
    fn a_new_file_appears_whole_and_a_killed_creation_leaves_nothing_in_the_way() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("online.redb");
        // What a process killed while creating the file leaves: zeros where the header goes.
        let mut name = path.file_name().unwrap().to_os_string();
        name.push(format!(".creating-{}", std::process::id()));
        std::fs::write(path.with_file_name(name), vec![0u8; 4096]).unwrap();
        let store = EmbeddedOnline::open(&path).unwrap();
        store
            .apply(&[write("r1", 1, true, &[("a", "1")], &[])])
            .unwrap();
        drop(store);
        let files: Vec<_> = (std::fs::read_dir(dir.path()).unwrap())
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(files, vec!["online.redb"], "only the store is left");
        let store = EmbeddedOnline::open(&path).unwrap();
        assert_eq!(read(&store, &["a"]), (1, vec![Some("1".into())]));
        // A file at the path that is not a store is reported, never replaced.
        std::fs::write(dir.path().join("other.redb"), vec![0u8; 4096]).unwrap();
        let err = EmbeddedOnline::open(&dir.path().join("other.redb"))
            .err()
            .unwrap();
        assert!(err.to_string().contains("other.redb"), "{err}");
        assert_eq!(
            std::fs::read(dir.path().join("other.redb")).unwrap(),
            vec![0u8; 4096]
        );
    }

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
                    // Most epochs stay in memory a while; every seventh goes to the file
                    // with everything before it.
                    let epoch_writes = [write("r", epoch, epoch == 1, &puts, &[])];
                    match epoch % 7 {
                        0 => store.apply(&epoch_writes),
                        _ => store.apply_recoverable(&epoch_writes),
                    }
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

    /// Random epochs of puts (new heads, segment deletes and writes) and deletes, applied to
    /// one store durably and to another in memory with writes to the file now and then:
    /// every read, key count and reopened file agree.
    #[test]
    fn epochs_in_memory_read_as_epochs_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let durable = EmbeddedOnline::open(&dir.path().join("durable.redb")).unwrap();
        let path = dir.path().join("layered.redb");
        let mut layered = EmbeddedOnline::open(&path).unwrap();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let keys: Vec<Vec<u8>> = (0..40).map(|k| format!("k{k:02}").into_bytes()).collect();
        let names: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
        for epoch in 1..=120u64 {
            let mut w = write("r", epoch, epoch == 1 || epoch == 60, &[], &[]);
            for _ in 0..next(12) {
                let key = keys[next(40) as usize].clone();
                match next(5) {
                    0 => w.deletes.push(key),
                    _ => w.puts.push(EntityWrite {
                        key,
                        head: format!("h{epoch}").into_bytes(),
                        deletes: (0..next(3)).map(|_| next(6)).collect(),
                        segments: (0..next(3))
                            .map(|_| (next(6), format!("s{epoch}").into_bytes()))
                            .collect(),
                    }),
                }
            }
            let writes = [w];
            durable.apply(&writes).unwrap();
            layered.apply_recoverable(&writes).unwrap();
            if next(9) == 0 {
                layered.sync().unwrap();
            }
            if next(25) == 0 {
                drop(layered);
                layered = EmbeddedOnline::open(&path).unwrap();
            }
            let (a, b) = (
                durable.get("v@1", &names).unwrap(),
                layered.get("v@1", &names).unwrap(),
            );
            let ((sa, va), (sb, vb)) = (a.unwrap(), b.unwrap());
            assert_eq!(va, vb, "epoch {epoch}");
            assert_eq!((sa.epoch, sa.keys), (sb.epoch, sb.keys), "epoch {epoch}");
            let tables = layered.tables().unwrap();
            assert_eq!((tables[0].1.epoch, tables[0].1.keys), (sa.epoch, sa.keys));
        }
        layered.sync().unwrap();
        let (_, page) = layered.scan("v@1", None, 100).unwrap().unwrap();
        let (_, expected) = durable.scan("v@1", None, 100).unwrap().unwrap();
        assert_eq!(page, expected);
    }

    #[test]
    fn epochs_in_memory_are_written_when_the_store_closes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.redb");
        let store = EmbeddedOnline::open(&path).unwrap();
        store
            .apply_recoverable(&[write("r", 1, true, &[("a", "1")], &[])])
            .unwrap();
        store
            .apply_recoverable(&[write("r", 2, false, &[("a", "2")], &[])])
            .unwrap();
        drop(store);
        let store = EmbeddedOnline::open(&path).unwrap();
        assert_eq!(read(&store, &["a"]), (2, vec![Some("2".into())]));
    }
}
