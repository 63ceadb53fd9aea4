//! An entity's state kept as versions, for a store whose epoch cannot be one transaction over
//! many entities (Redis Cluster: entities sit in different slots, and a transaction stays in
//! one). Each table has a committed sequence number C in its stamp; an epoch writes version
//! W = C + 1 of each entity it changes, *beside* the version readers use, and commits by
//! setting the stamp to W (one field of one hash). A reader takes the stamp first, then each
//! entity's fields, and resolves every entity as of C: versions above C (being written, or left
//! by an attempt that crashed) are invisible, so a read sees whole epochs.
//!
//! An entity is one hash of fields, each a version of one series:
//!
//! - `h:<seq>`: its head; `g:<seq>`: everything before `seq` is gone (a deleted or replaced
//!   entity: only fields at or after it count);
//! - `s:<id>:<seq>`: segment `id`; `x:<id>:<seq>`: segment `id` deleted;
//! - `f`: the floor, the oldest C the fields can still answer for.
//!
//! A write prunes what no reader at C - 1 or later needs (per series, everything older than
//! its newest version at or below C - 1, and series emptied by a deletion or a gone mark) and
//! raises the floor past what it pruned: readers of the last two committed epochs always find
//! their versions, and a reader whose C is below the floor (it read the stamp two epochs ago)
//! reads again ([`Resolved::Stale`]).

use super::{EntityState, EntityWrite};
use std::collections::BTreeMap;

/// One field of an entity's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Floor,
    Head(u64),
    Gone(u64),
    Segment { id: u64, seq: u64 },
    SegmentDeleted { id: u64, seq: u64 },
}

/// The series a versioned field belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Series {
    Head,
    Gone,
    Segment(u64),
}

impl Field {
    fn parse(name: &[u8]) -> Option<Field> {
        let name = std::str::from_utf8(name).ok()?;
        let mut parts = name.split(':');
        let kind = parts.next()?;
        let numbers: Vec<u64> = parts.map(|p| p.parse().ok()).collect::<Option<_>>()?;
        match (kind, numbers.as_slice()) {
            ("f", []) => Some(Field::Floor),
            ("h", &[seq]) => Some(Field::Head(seq)),
            ("g", &[seq]) => Some(Field::Gone(seq)),
            ("s", &[id, seq]) => Some(Field::Segment { id, seq }),
            ("x", &[id, seq]) => Some(Field::SegmentDeleted { id, seq }),
            _ => None,
        }
    }

    fn name(&self) -> String {
        match self {
            Field::Floor => "f".into(),
            Field::Head(seq) => format!("h:{seq}"),
            Field::Gone(seq) => format!("g:{seq}"),
            Field::Segment { id, seq } => format!("s:{id}:{seq}"),
            Field::SegmentDeleted { id, seq } => format!("x:{id}:{seq}"),
        }
    }

    /// Its series and version (`None` for the floor).
    fn version(&self) -> Option<(Series, u64)> {
        match *self {
            Field::Floor => None,
            Field::Head(seq) => Some((Series::Head, seq)),
            Field::Gone(seq) => Some((Series::Gone, seq)),
            Field::Segment { id, seq } | Field::SegmentDeleted { id, seq } => {
                Some((Series::Segment(id), seq))
            }
        }
    }
}

/// The name of the floor field (read with a write's [`plan`]).
pub const FLOOR: &str = "f";

/// An entity as of a committed sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// No state at that number.
    Absent,
    /// Its state.
    Present(EntityState),
    /// The versions for that number were pruned: read the stamp again.
    Stale,
}

/// The floor among `fields`.
fn floor_of<'a>(fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> u64 {
    (fields.into_iter())
        .find(|(name, _)| *name == FLOOR.as_bytes())
        .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(0)
}

/// The entity whose hash holds `fields` (name, value) as of committed sequence number `at`.
pub fn resolve(fields: &[(Vec<u8>, Vec<u8>)], at: u64) -> Resolved {
    if floor_of(fields.iter().map(|(n, v)| (&n[..], &v[..]))) > at {
        return Resolved::Stale;
    }
    let parsed: Vec<(Field, &[u8])> = (fields.iter())
        .filter_map(|(name, value)| Some((Field::parse(name)?, &value[..])))
        .filter(|(f, _)| f.version().is_some_and(|(_, seq)| seq <= at))
        .collect();
    let gone = (parsed.iter())
        .filter_map(|(f, _)| match f {
            Field::Gone(seq) => Some(*seq),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    // Per series, its newest version at or after the gone mark.
    let mut newest: BTreeMap<Series, (u64, Field, &[u8])> = BTreeMap::new();
    for (field, value) in parsed {
        let (series, seq) = field.version().expect("versioned fields only");
        if seq < gone || series == Series::Gone {
            continue;
        }
        if newest.get(&series).is_none_or(|(s, _, _)| seq > *s) {
            newest.insert(series, (seq, field, value));
        }
    }
    let Some((_, _, head)) = newest.get(&Series::Head) else {
        return Resolved::Absent;
    };
    let segments = (newest.iter())
        .filter_map(|(_, (_, field, value))| match field {
            Field::Segment { id, .. } => Some((*id, value.to_vec())),
            _ => None,
        })
        .collect();
    Resolved::Present(EntityState {
        head: head.to_vec(),
        segments,
    })
}

/// What one epoch does to an entity.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    /// Its state is gone (a deleted key, or one a replacing epoch did not write).
    Gone,
    /// Its writes; with `replace` everything it had goes first.
    Put {
        /// The writes.
        write: &'a EntityWrite,
        /// Whether its earlier state goes first.
        replace: bool,
    },
}

/// The changes to make to an entity's hash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Fields to delete (before `set`).
    pub remove: Vec<String>,
    /// Fields to set.
    pub set: Vec<(String, Vec<u8>)>,
}

/// How to write version `seq` of an entity (the committed one is `seq - 1`) whose hash has the
/// fields named `names` (and floor `floor`): prune what readers at `seq - 2` or later do not
/// need, drop versions above `seq - 1` (an attempt that crashed before its commit), and add
/// `change`'s fields.
pub fn plan(names: &[Vec<u8>], floor: u64, seq: u64, change: Change<'_>) -> Plan {
    let committed = seq - 1;
    // Readers of this number or later keep their versions.
    let horizon = committed.saturating_sub(1);
    let mut remove = Vec::new();
    let mut old: BTreeMap<Series, Vec<(u64, Field)>> = BTreeMap::new();
    for field in names.iter().filter_map(|n| Field::parse(n)) {
        let Some((s, version)) = field.version() else {
            continue;
        };
        if version > committed {
            remove.push(field);
        } else if version <= horizon {
            old.entry(s).or_default().push((version, field));
        }
    }
    let gone = (old.get(&Series::Gone))
        .and_then(|v| v.iter().map(|(seq, _)| *seq).max())
        .unwrap_or(0);
    let mut new_floor = floor;
    for (s, mut versions) in old {
        versions.sort_by_key(|(seq, _)| *seq);
        let (base, base_field) = *versions.last().expect("a series has versions");
        let older = &versions[..versions.len() - 1];
        if s != Series::Gone && base < gone {
            // Hidden by the gone mark for every reader from it on.
            remove.extend(versions.iter().map(|(_, f)| *f));
            new_floor = new_floor.max(gone);
        } else if matches!(base_field, Field::SegmentDeleted { .. }) {
            // A deleted segment: nothing left to read from it on.
            remove.extend(versions.iter().map(|(_, f)| *f));
            new_floor = new_floor.max(base);
        } else if !older.is_empty() {
            remove.extend(older.iter().map(|(_, f)| *f));
            new_floor = new_floor.max(base);
        }
    }
    let mut set: Vec<(Field, Vec<u8>)> = Vec::new();
    match change {
        Change::Gone => set.push((Field::Gone(seq), Vec::new())),
        Change::Put { write, replace } => {
            if replace {
                set.push((Field::Gone(seq), Vec::new()));
            }
            set.push((Field::Head(seq), write.head.clone()));
            if !replace {
                for &id in &write.deletes {
                    if !write.segments.iter().any(|(s, _)| *s == id) {
                        set.push((Field::SegmentDeleted { id, seq }, Vec::new()));
                    }
                }
            }
            for (id, bytes) in &write.segments {
                set.push((Field::Segment { id: *id, seq }, bytes.clone()));
            }
        }
    }
    if new_floor > floor {
        set.push((Field::Floor, new_floor.to_string().into_bytes()));
    }
    Plan {
        remove: remove.iter().map(Field::name).collect(),
        set: set.into_iter().map(|(f, v)| (f.name(), v)).collect(),
    }
}

/// The fields of an entity written whole as version `seq` (a repair: no other version stays).
pub fn whole(state: &EntityState, seq: u64) -> Vec<(String, Vec<u8>)> {
    std::iter::once((Field::Head(seq).name(), state.head.clone()))
        .chain(
            (state.segments.iter())
                .map(|(id, bytes)| (Field::Segment { id: *id, seq }.name(), bytes.clone())),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entity's hash, applying plans as a store would.
    #[derive(Default)]
    struct Hash(BTreeMap<String, Vec<u8>>);

    impl Hash {
        fn write(&mut self, seq: u64, change: Change<'_>) {
            let names: Vec<Vec<u8>> = self.0.keys().map(|k| k.as_bytes().to_vec()).collect();
            let floor = floor_of(self.0.iter().map(|(n, v)| (n.as_bytes(), &v[..])));
            let plan = plan(&names, floor, seq, change);
            for name in plan.remove {
                self.0.remove(&name);
            }
            self.0.extend(plan.set);
        }

        fn at(&self, seq: u64) -> Resolved {
            let fields: Vec<(Vec<u8>, Vec<u8>)> = (self.0.iter())
                .map(|(n, v)| (n.as_bytes().to_vec(), v.clone()))
                .collect();
            resolve(&fields, seq)
        }
    }

    fn put(head: &str, deletes: &[u64], segments: &[(u64, &str)]) -> EntityWrite {
        EntityWrite {
            key: b"k".to_vec(),
            head: head.as_bytes().to_vec(),
            deletes: deletes.to_vec(),
            segments: (segments.iter())
                .map(|(id, s)| (*id, s.as_bytes().to_vec()))
                .collect(),
        }
    }

    fn state(head: &str, segments: &[(u64, &str)]) -> Resolved {
        Resolved::Present(EntityState {
            head: head.as_bytes().to_vec(),
            segments: (segments.iter())
                .map(|(id, s)| (*id, s.as_bytes().to_vec()))
                .collect(),
        })
    }

    fn put_at(h: &mut Hash, seq: u64, write: &EntityWrite, replace: bool) {
        h.write(seq, Change::Put { write, replace });
    }

    #[test]
    fn every_committed_number_reads_its_own_version_until_pruned() {
        let mut h = Hash::default();
        put_at(&mut h, 1, &put("h1", &[], &[(1, "a"), (2, "b")]), false);
        assert_eq!(h.at(0), Resolved::Absent, "not committed yet at 0");
        assert_eq!(h.at(1), state("h1", &[(1, "a"), (2, "b")]));
        // Epoch 2 deletes segment 1, rewrites 2, adds 3: readers at 1 still read epoch 1.
        put_at(&mut h, 2, &put("h2", &[1, 2], &[(2, "B"), (3, "c")]), false);
        assert_eq!(h.at(1), state("h1", &[(1, "a"), (2, "b")]));
        assert_eq!(h.at(2), state("h2", &[(2, "B"), (3, "c")]));
        // Readers of the last two committed epochs keep their versions: epoch 3 prunes
        // nothing readers at 1 need, epoch 4 prunes it and tells them to read again.
        put_at(&mut h, 3, &put("h3", &[], &[]), false);
        assert_eq!(h.at(1), state("h1", &[(1, "a"), (2, "b")]));
        put_at(&mut h, 4, &put("h4", &[], &[]), false);
        assert_eq!(h.at(1), Resolved::Stale);
        assert_eq!(h.at(2), state("h2", &[(2, "B"), (3, "c")]));
        assert_eq!(h.at(3), state("h3", &[(2, "B"), (3, "c")]));
        assert_eq!(h.at(4), state("h4", &[(2, "B"), (3, "c")]));
        assert!(!h.0.contains_key("s:1:1") && !h.0.contains_key("x:1:2"));
        assert!(!h.0.contains_key("h:1") && !h.0.contains_key("s:2:1"));
    }

    #[test]
    fn gone_and_replaced_entities_hide_what_came_before() {
        let mut h = Hash::default();
        put_at(&mut h, 1, &put("h1", &[], &[(1, "a")]), false);
        h.write(2, Change::Gone);
        assert_eq!(h.at(1), state("h1", &[(1, "a")]));
        assert_eq!(h.at(2), Resolved::Absent);
        // Back with new state: nothing of before the gone mark shows.
        put_at(&mut h, 3, &put("h3", &[], &[(2, "b")]), false);
        assert_eq!(h.at(2), Resolved::Absent);
        assert_eq!(h.at(3), state("h3", &[(2, "b")]));
        // A replacing write keeps only what it writes.
        put_at(&mut h, 4, &put("h4", &[], &[(7, "z")]), true);
        assert_eq!(h.at(3), state("h3", &[(2, "b")]));
        assert_eq!(h.at(4), state("h4", &[(7, "z")]));
        assert!(!h.0.contains_key("h:1"), "pruned below the gone mark");
        assert_eq!(h.at(1), Resolved::Stale);
    }

    #[test]
    fn versions_of_an_attempt_that_crashed_are_invisible_and_then_replaced() {
        let mut h = Hash::default();
        let w1 = put("h1", &[], &[(1, "a")]);
        h.write(
            1,
            Change::Put {
                write: &w1,
                replace: false,
            },
        );
        // An attempt at 2 wrote a segment and crashed before its commit: readers at 1 do not
        // see it, and the redo of 2 (which writes other things) removes it.
        let crashed = put("crashed", &[], &[(9, "junk")]);
        h.write(
            2,
            Change::Put {
                write: &crashed,
                replace: false,
            },
        );
        assert_eq!(h.at(1), state("h1", &[(1, "a")]));
        let redo = put("h2", &[], &[]);
        h.write(
            2,
            Change::Put {
                write: &redo,
                replace: false,
            },
        );
        assert_eq!(h.at(2), state("h2", &[(1, "a")]));
        assert!(!h.0.contains_key("s:9:2"));
    }

    #[test]
    fn field_names_round_trip_and_unknown_fields_are_ignored() {
        for field in [
            Field::Floor,
            Field::Head(3),
            Field::Gone(4),
            Field::Segment { id: 5, seq: 6 },
            Field::SegmentDeleted { id: 7, seq: 8 },
        ] {
            assert_eq!(Field::parse(field.name().as_bytes()), Some(field));
        }
        assert_eq!(Field::parse(b"h:x"), None);
        assert_eq!(Field::parse(b"q:1"), None);
        let fields = vec![
            (b"h:1".to_vec(), b"head".to_vec()),
            (b"other".to_vec(), b"?".to_vec()),
        ];
        assert_eq!(resolve(&fields, 1), state("head", &[]));
        assert_eq!(
            whole(
                &EntityState {
                    head: b"h".to_vec(),
                    segments: vec![(2, b"s".to_vec())]
                },
                5
            ),
            vec![
                ("h:5".to_string(), b"h".to_vec()),
                ("s:2:5".to_string(), b"s".to_vec())
            ]
        );
    }
}
