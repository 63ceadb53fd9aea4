//! Epochs the embedded store holds in memory before they reach its file.
//!
//! Writing every epoch into the redb file costs a transaction of B-tree inserts and a sync
//! per epoch, which at checkpoint intervals of tens of milliseconds was a third of the run's
//! CPU and stalled the next commit. An epoch whose checkpoint holds the state to rebuild it
//! goes into an [`Overlay`] instead: per table, the stamp and per changed key its new head
//! and segment changes, later epochs folded into earlier ones (a key changed in every epoch
//! is one entry). The store writes the overlay into the file in one durable transaction about
//! once a second ([`super::EmbeddedOnline`]), so the file only ever holds whole epochs.
//!
//! A read composes the layers: the file's state of a key, then the overlay being written to
//! the file, then the one taking new epochs, each layer's changes over what is below it.

use super::{EntityState, OnlineStamp, OnlineWrite};
use std::collections::{BTreeMap, HashMap};

/// Keys to what a layer holds of them (keys come from the events, as in the views' key index:
/// hashed the same fast way).
pub(super) type KeyMap<V> = HashMap<Vec<u8>, V, foldhash::fast::RandomState>;

/// One key's changes over the layers below.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct KeyChanges {
    /// The key's head now; `None`: the key is gone.
    pub head: Option<Vec<u8>>,
    /// Every segment below is gone (the key was forgotten at some point).
    pub cleared: bool,
    /// Segments written (`Some`) or deleted (`None`) since, by id.
    pub segments: BTreeMap<u64, Option<Vec<u8>>>,
}

impl KeyChanges {
    /// The key's state: these changes over `below`, the state of the layers under this one
    /// (`None`: no state there).
    pub fn over(&self, below: Option<EntityState>) -> Option<EntityState> {
        let head = self.head.clone()?;
        let mut segments: BTreeMap<u64, Vec<u8>> = match (self.cleared, below) {
            (false, Some(below)) => below.segments.into_iter().collect(),
            _ => BTreeMap::new(),
        };
        for (id, bytes) in &self.segments {
            match bytes {
                Some(bytes) => segments.insert(*id, bytes.clone()),
                None => segments.remove(id),
            };
        }
        Some(EntityState {
            head,
            segments: segments.into_iter().collect(),
        })
    }

    /// Whether the layers below matter for the key's state (they do not once it was forgotten
    /// here, or when it is gone).
    pub fn needs_below(&self) -> bool {
        self.head.is_some() && !self.cleared
    }
}

/// One table's epochs in a layer.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct TableChanges {
    /// The stamp of the newest epoch (with the table's key count then).
    pub stamp: OnlineStamp,
    /// Everything below is gone: an epoch replaced the table's contents.
    pub replaced: bool,
    /// Changed keys.
    pub keys: KeyMap<KeyChanges>,
}

/// Epochs applied to memory, per table.
#[derive(Debug, Default)]
pub(super) struct Overlay {
    pub tables: HashMap<String, TableChanges>,
}

impl Overlay {
    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// Folds `write` (already checked to be new) into the layer; `stamp` is what the table
    /// is stamped with (its key count included).
    pub fn fold(&mut self, write: &OnlineWrite, stamp: OnlineStamp) {
        let table = match self.tables.get_mut(&write.table) {
            Some(table) if !write.replace => table,
            _ => {
                self.tables.insert(
                    write.table.clone(),
                    TableChanges {
                        stamp: stamp.clone(),
                        replaced: write.replace,
                        keys: KeyMap::default(),
                    },
                );
                self.tables.get_mut(&write.table).expect("just inserted")
            }
        };
        table.stamp = stamp;
        for key in &write.deletes {
            table.keys.insert(
                key.clone(),
                KeyChanges {
                    head: None,
                    cleared: true,
                    segments: BTreeMap::new(),
                },
            );
        }
        for put in &write.puts {
            // A key forgotten in this layer and written again stays `cleared`: nothing of
            // before survives.
            let key = table.keys.entry(put.key.clone()).or_default();
            key.head = Some(put.head.clone());
            for id in &put.deletes {
                match key.cleared {
                    // Nothing below to delete: forget the id here too.
                    true => key.segments.remove(id),
                    false => key.segments.insert(*id, None),
                };
            }
            for (id, bytes) in &put.segments {
                key.segments.insert(*id, Some(bytes.clone()));
            }
        }
    }
}

/// The two layers over the file: epochs applied since the last write to the file began, and
/// those being written.
#[derive(Debug, Default)]
pub(super) struct Layers {
    /// Epochs applied since the last write to the file began.
    pub newest: Overlay,
    /// Epochs being written to the file (shared with the writer).
    pub writing: Option<std::sync::Arc<Overlay>>,
}

impl Layers {
    /// `table`'s changes in the layers, newest first, down to the first that replaced it
    /// (nothing below that one counts).
    pub fn stack(&self, table: &str) -> Vec<&TableChanges> {
        let mut stack = Vec::new();
        for layer in [Some(&self.newest), self.writing.as_deref()]
            .into_iter()
            .flatten()
        {
            if let Some(changes) = layer.tables.get(table) {
                stack.push(changes);
                if changes.replaced {
                    break;
                }
            }
        }
        stack
    }

    /// Every table's stamp in the layers (the newest layer's where both have one).
    pub fn stamps(&self) -> impl Iterator<Item = (&String, &OnlineStamp)> {
        let writing = self.writing.as_deref().into_iter();
        (writing.flat_map(|l| l.tables.iter()))
            .filter(|(name, _)| !self.newest.tables.contains_key(*name))
            .chain(self.newest.tables.iter())
            .map(|(name, t)| (name, &t.stamp))
    }
}

/// What the layers of `stack` ([`Layers::stack`]) say about `key`: its changes, newest
/// first, down to the first that does not need what is below, and whether the file's state
/// of the key counts.
pub(super) fn key_changes<'a>(
    stack: &[&'a TableChanges],
    key: &[u8],
) -> (Vec<&'a KeyChanges>, bool) {
    let mut changes = Vec::new();
    for table in stack {
        if let Some(k) = table.keys.get(key) {
            changes.push(k);
            if !k.needs_below() {
                return (changes, false);
            }
        }
        if table.replaced {
            return (changes, false);
        }
    }
    (changes, true)
}

/// Counts how a write changes a table's key count: `live(key)` says whether a key has a head
/// before the write (in the layers and the file). Returns the count after it.
pub(super) fn keys_after<E>(
    write: &OnlineWrite,
    before: u64,
    live: impl Fn(&[u8]) -> Result<bool, E>,
) -> Result<u64, E> {
    let mut count = if write.replace { 0 } else { before };
    // Whether each key met so far has a head after the part of the write seen.
    let mut now: HashMap<&[u8], bool, foldhash::fast::RandomState> = HashMap::default();
    let changes = (write.deletes.iter().map(|k| (&k[..], false)))
        .chain(write.puts.iter().map(|p| (&p.key[..], true)));
    for (key, after) in changes {
        let before = match now.get(key) {
            Some(live) => *live,
            None => !write.replace && live(key)?,
        };
        match (before, after) {
            (false, true) => count += 1,
            (true, false) => count = count.saturating_sub(1),
            _ => {}
        }
        now.insert(key, after);
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::super::testing::write;
    use super::*;

    fn entity(head: &str, segments: &[(u64, &str)]) -> EntityState {
        EntityState {
            head: head.as_bytes().to_vec(),
            segments: (segments.iter())
                .map(|(id, s)| (*id, s.as_bytes().to_vec()))
                .collect(),
        }
    }

    fn stamp(epoch: u64) -> OnlineStamp {
        write("r", epoch, false, &[], &[]).stamp
    }

    #[test]
    fn later_epochs_fold_into_one_entry_per_key() {
        let mut layer = Overlay::default();
        // Each put writes head = value, deletes segment 6 and writes segment 7 = value.
        layer.fold(
            &write("r", 1, false, &[("a", "1"), ("b", "1")], &[]),
            stamp(1),
        );
        layer.fold(&write("r", 2, false, &[("a", "2")], &["b"]), stamp(2));
        let table = &layer.tables["v@1"];
        assert_eq!(table.stamp.epoch, 2);
        assert_eq!(table.keys.len(), 2);
        let below = entity("0", &[(3, "old"), (6, "six")]);
        // `a`: its new head and segment 7 over what was below, segment 6 deleted.
        assert_eq!(
            table.keys[&b"a".to_vec()].over(Some(below.clone())),
            Some(entity("2", &[(3, "old"), (7, "2")]))
        );
        // `b` is gone, whatever was below.
        assert_eq!(table.keys[&b"b".to_vec()].over(Some(below)), None);
        assert!(!table.keys[&b"b".to_vec()].needs_below());
    }

    #[test]
    fn a_key_forgotten_and_written_again_keeps_nothing_from_below() {
        let mut layer = Overlay::default();
        layer.fold(&write("r", 1, false, &[], &["a"]), stamp(1));
        layer.fold(&write("r", 2, false, &[("a", "x")], &[]), stamp(2));
        let a = &layer.tables["v@1"].keys[&b"a".to_vec()];
        assert!(!a.needs_below());
        let below = entity("0", &[(3, "old"), (7, "seven")]);
        assert_eq!(a.over(Some(below)), Some(entity("x", &[(7, "x")])));
    }

    #[test]
    fn a_replacing_epoch_starts_the_table_over() {
        let mut layer = Overlay::default();
        layer.fold(&write("r", 1, false, &[("a", "1")], &[]), stamp(1));
        layer.fold(&write("s", 1, true, &[("c", "1")], &[]), stamp(1));
        let table = &layer.tables["v@1"];
        assert!(table.replaced);
        assert_eq!(table.keys.len(), 1);
    }

    #[test]
    fn key_counts_follow_puts_and_deletes() {
        let live = |k: &[u8]| Ok::<_, ()>(k == b"a" || k == b"b");
        // `c` is new; `b` goes; `a` changes.
        let w = write("r", 2, false, &[("a", "1"), ("c", "1")], &["b"]);
        assert_eq!(keys_after(&w, 2, live), Ok(2));
        // Deleting a key that is not there, or writing one twice, counts once.
        let w = write("r", 2, false, &[("c", "1"), ("c", "2")], &["x"]);
        assert_eq!(keys_after(&w, 2, live), Ok(3));
        // A replacing write counts its own keys only.
        let w = write("r", 2, true, &[("a", "1")], &[]);
        assert_eq!(keys_after(&w, 2, live), Ok(1));
    }

    #[test]
    fn layers_compose_newest_first_down_to_a_replacement() {
        let mut writing = Overlay::default();
        writing.fold(
            &write("r", 1, false, &[("a", "1"), ("b", "1")], &[]),
            stamp(1),
        );
        let mut layers = Layers {
            newest: Overlay::default(),
            writing: Some(std::sync::Arc::new(writing)),
        };
        layers
            .newest
            .fold(&write("r", 2, false, &[("a", "2")], &[]), stamp(2));
        let stack = layers.stack("v@1");
        assert_eq!(stack.len(), 2);
        let (a, file) = key_changes(&stack, b"a");
        assert_eq!((a.len(), file), (2, true));
        let mut state = Some(entity("0", &[(3, "file")]));
        for k in a.iter().rev() {
            state = k.over(state);
        }
        assert_eq!(state, Some(entity("2", &[(3, "file"), (7, "2")])));
        assert_eq!(
            layers.stamps().map(|(_, s)| s.epoch).collect::<Vec<_>>(),
            vec![2]
        );
        // A replacing epoch hides the layer and the file below it.
        layers
            .newest
            .fold(&write("s", 1, true, &[("c", "1")], &[]), stamp(1));
        let stack = layers.stack("v@1");
        assert_eq!(stack.len(), 1);
        assert_eq!(key_changes(&stack, b"a"), (vec![], false));
    }
}
