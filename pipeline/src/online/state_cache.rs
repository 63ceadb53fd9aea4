//! Decoded entity states kept in memory between reads of the server (`serve.state_cache`).
//!
//! A read of 100 entities spends half its CPU finding their states in the store and decoding
//! them; both give the same answer until the table's next epoch. The cache holds states as
//! decoded, per table, together with the stamp (run and epoch) they were read at; the reader
//! uses them only when the store's stamp is the same (it reads the stamp with the states the
//! cache lacks), so a read never mixes epochs, and states of a newer epoch replace the
//! table's. A state read with only some of its segments (`quiver_gpu::ReadState`) serves
//! reads up to the time it was read for; a later read takes it from the store again. Reads
//! read the cached state without changing it (`quiver_gpu::read_at`). Memory is
//! bounded: past the capacity (the states' encoded bytes, counted twice for the decoded form),
//! entries of the table being filled are dropped in the map's arbitrary order, and a table's
//! entries all go when it moves to a new epoch.

use quiver_gpu::ReadState;
use quiver_store::online::OnlineStamp;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The default capacity of `serve.state_cache`.
pub const DEFAULT_STATE_CACHE_BYTES: usize = 256 << 20;

/// Bytes an entry takes besides its state's (the key, the map's slot, the `Arc`).
const ENTRY_OVERHEAD: usize = 96;

/// What a read needs of its entities' states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatesFor {
    /// What windows ending at this time (µs) need: the head, and the segments they lose
    /// events from.
    ReadsFrom(i64),
    /// Every event.
    Whole,
}

/// One entity's state as read from the store: `None` when the store has none (an unknown
/// or expired key reads as empty windows, and is cached so too).
pub type CachedState = Option<Arc<ReadState>>;

/// Decoded states of the online store's tables, each at one stamp.
pub struct StateCache {
    capacity: usize,
    tables: Mutex<Tables>,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Default)]
struct Tables {
    by_name: HashMap<String, TableStates>,
    /// Bytes held over all tables.
    bytes: usize,
}

/// The run and epoch of a table's stamp that its cached states were read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadAt {
    run: String,
    epoch: u64,
}

impl ReadAt {
    fn of(stamp: &OnlineStamp) -> Self {
        ReadAt {
            run: stamp.run.clone(),
            epoch: stamp.epoch,
        }
    }

    /// Whether `stamp` is this one.
    fn is(&self, stamp: &OnlineStamp) -> bool {
        self.run == stamp.run && self.epoch == stamp.epoch
    }

    /// Whether this is a later epoch of `stamp`'s run.
    fn is_after(&self, stamp: &OnlineStamp) -> bool {
        self.run == stamp.run && self.epoch > stamp.epoch
    }
}

/// The cached states of one table, all read at `at`.
struct TableStates {
    at: ReadAt,
    states: HashMap<Vec<u8>, (CachedState, usize)>,
}

/// What [`StateCache::lookup`] found for a read's keys.
pub struct Lookup {
    /// The stamp the table's cached states were read at (`None`: none cached).
    pub stamp: Option<ReadAt>,
    /// Per key: its state when cached (`Some(None)`: cached as absent).
    pub found: Vec<Option<CachedState>>,
    /// Indices of the keys not cached.
    pub missing: Vec<usize>,
}

impl Lookup {
    /// Whether the states found were read at `stamp`.
    pub fn is_at(&self, stamp: &OnlineStamp) -> bool {
        (self.stamp.as_ref()).is_some_and(|at| at.is(stamp))
    }
}

impl StateCache {
    /// A cache holding about `capacity` bytes of states; 0 keeps nothing.
    pub fn new(capacity: usize) -> Self {
        StateCache {
            capacity,
            tables: Mutex::new(Tables::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Whether it keeps anything.
    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// Entities found in the cache and not, since it was made.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached states of `keys` of `table` that hold what `wanted` says (whole, or what
    /// reads at a time need: [`ReadState::serves`]), with the stamp they were read at (the
    /// reader checks it against the store's).
    pub fn lookup(&self, table: &str, keys: &[&[u8]], wanted: StatesFor) -> Lookup {
        let holds = |state: &ReadState| match wanted {
            StatesFor::Whole => state.is_whole(),
            StatesFor::ReadsFrom(t) => state.serves(t),
        };
        let mut found: Vec<Option<CachedState>> = Vec::with_capacity(keys.len());
        let stamp = {
            let tables = self.tables();
            let cached = tables.by_name.get(table);
            for key in keys {
                found.push(
                    (cached.and_then(|t| t.states.get(*key)))
                        .filter(|(s, _)| s.as_deref().is_none_or(holds))
                        .map(|(s, _)| s.clone()),
                );
            }
            cached.map(|t| t.at.clone())
        };
        let missing: Vec<usize> = (found.iter().enumerate())
            .filter(|(_, f)| f.is_none())
            .map(|(i, _)| i)
            .collect();
        self.hits
            .fetch_add((keys.len() - missing.len()) as u64, Ordering::Relaxed);
        self.misses
            .fetch_add(missing.len() as u64, Ordering::Relaxed);
        Lookup {
            stamp,
            found,
            missing,
        }
    }

    /// Keeps the `states` of `keys` of `table`, read at `stamp`, each with the size of its
    /// encoded form. A table cached at an older stamp (an earlier epoch of the same run, or
    /// another run) is dropped first; states read at an earlier epoch than the table's are not
    /// kept (a slower read's).
    pub fn insert(
        &self,
        table: &str,
        stamp: &OnlineStamp,
        keys: &[&[u8]],
        states: &[CachedState],
        encoded_bytes: &[usize],
    ) {
        if !self.enabled() {
            return;
        }
        let entries: Vec<(Vec<u8>, CachedState, usize)> = (keys.iter().zip(states))
            .zip(encoded_bytes)
            .map(|((key, state), &bytes)| {
                let size = 2 * bytes + key.len() + ENTRY_OVERHEAD;
                (key.to_vec(), state.clone(), size)
            })
            .collect();
        let mut tables = self.tables();
        if (tables.by_name.get(table)).is_some_and(|t| t.at.is_after(stamp)) {
            return;
        }
        tables.drop_if_stale(table, stamp);
        let Tables { by_name, bytes } = &mut *tables;
        let cached = by_name
            .entry(table.to_string())
            .or_insert_with(|| TableStates {
                at: ReadAt::of(stamp),
                states: HashMap::new(),
            });
        for (key, state, size) in entries {
            if size > self.capacity {
                continue;
            }
            // Room first: drop this table's entries (in the map's arbitrary order) until the
            // new one fits with an eighth of the capacity to spare (no eviction per insert).
            if *bytes + size > self.capacity {
                let target = (*bytes + size - self.capacity) + self.capacity / 8;
                let mut freed = 0;
                let victims: Vec<Vec<u8>> = (cached.states.iter())
                    .take_while(|(_, (_, b))| {
                        let more = freed < target;
                        freed += b;
                        more
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                for victim in victims {
                    if let Some((_, b)) = cached.states.remove(&victim) {
                        *bytes -= b;
                    }
                }
            }
            if *bytes + size > self.capacity {
                continue; // other tables hold the rest; they go when their stamps change
            }
            if let Some((_, replaced)) = cached.states.insert(key, (state, size)) {
                *bytes -= replaced;
            }
            *bytes += size;
        }
    }
}

impl Tables {
    /// Drops `table`'s states unless they were read at `stamp`.
    fn drop_if_stale(&mut self, table: &str, stamp: &OnlineStamp) {
        let stale = (self.by_name.get(table)).is_some_and(|t| !t.at.is(stamp));
        if stale {
            if let Some(dropped) = self.by_name.remove(table) {
                self.bytes -= dropped.states.values().map(|(_, b)| b).sum::<usize>();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_gpu::{
        AggKind, Frame, InputValue, KeyWindowState, StoredParts, WindowPlan, WindowSpec,
    };

    fn stamp(epoch: u64) -> OnlineStamp {
        OnlineStamp {
            run: "r".into(),
            epoch,
            watermark: None,
            committed_unix_ms: 0,
            fingerprint: 0,
            keys: 0,
        }
    }

    fn state() -> ReadState {
        let spec = WindowSpec {
            kind: AggKind::Count,
            input: 0,
            frame: Frame::Unbounded,
        };
        KeyWindowState::new(&WindowPlan::new(vec![spec], 1).unwrap()).into()
    }

    /// A key with 3,000 events a second apart in a 1,000-second window, read with only the
    /// segments windows ending at its last event lose events from.
    fn partial_state() -> ReadState {
        let spec = WindowSpec {
            kind: AggKind::Sum,
            input: 0,
            frame: Frame::Range {
                width_micros: 1_000_000_000,
            },
        };
        let plan = WindowPlan::new(vec![spec], 1).unwrap();
        let mut state = KeyWindowState::new(&plan);
        let mut stored = StoredParts::default();
        let mut segments = HashMap::new();
        let mut head = Vec::new();
        for i in 0..3000 {
            state.advance(&plan, i * 1_000_000);
            state.push(&plan, i * 1_000_000, |_| Some(InputValue::float(1.0)));
            let written = state.write_parts(&mut stored).unwrap();
            written
                .deletes
                .iter()
                .for_each(|id| drop(segments.remove(id)));
            segments.extend(written.segments);
            head = written.head;
        }
        let last = 2999 * 1_000_000;
        let ids = quiver_gpu::segments_needed(&plan, &head, last, last).unwrap();
        let parts: Vec<(u64, &[u8])> = ids.iter().map(|id| (*id, &segments[id][..])).collect();
        let read = ReadState::from_parts(&plan, &head, &parts).unwrap();
        assert!(!read.is_whole() && read.serves(last));
        read
    }

    #[test]
    fn a_state_read_with_some_segments_serves_the_reads_it_holds_the_events_of() {
        let cache = StateCache::new(1 << 20);
        let keys: [&[u8]; 3] = [b"partial", b"whole", b"none"];
        let states = [
            Some(Arc::new(partial_state())),
            Some(Arc::new(state())),
            None,
        ];
        cache.insert("t", &stamp(1), &keys, &states, &[10, 10, 0]);
        let missing = |wanted| cache.lookup("t", &keys, wanted).missing;
        let (last, width) = (2999 * 1_000_000, 1_000_000_000);
        // At its last event, and once every event left its window (empty), it serves reads;
        // in between its window loses events that were not read; whole it is not.
        assert!(missing(StatesFor::ReadsFrom(last)).is_empty());
        assert!(missing(StatesFor::ReadsFrom(last + width + 1)).is_empty());
        assert_eq!(missing(StatesFor::ReadsFrom(last + width - 1)), vec![0]);
        assert_eq!(missing(StatesFor::Whole), vec![0]);
    }

    #[test]
    fn states_are_found_with_their_stamp_and_newer_epochs_replace_them() {
        let cache = StateCache::new(1 << 20);
        let keys: [&[u8]; 2] = [b"a", b"b"];
        assert!(cache
            .lookup("t", &keys, StatesFor::ReadsFrom(0))
            .stamp
            .is_none());
        cache.insert(
            "t",
            &stamp(1),
            &keys,
            &[Some(Arc::new(state())), None],
            &[10, 0],
        );
        let hit = cache.lookup("t", &[b"b", b"a", b"c"], StatesFor::ReadsFrom(0));
        assert!(hit.is_at(&stamp(1)) && !hit.is_at(&stamp(2)));
        assert_eq!(hit.missing, vec![2]);
        assert!(matches!(hit.found[0], Some(None)));
        assert!(matches!(hit.found[1], Some(Some(_))));
        // A newer epoch's states replace the table's, old ones gone for good.
        cache.insert("t", &stamp(2), &keys[..1], &[None], &[0]);
        let after = cache.lookup("t", &keys, StatesFor::ReadsFrom(0));
        assert!(after.is_at(&stamp(2)));
        assert_eq!(after.missing, vec![1]);
        // A slower read of an older epoch puts nothing back.
        cache.insert("t", &stamp(1), &keys[1..], &[None], &[0]);
        assert_eq!(
            cache.lookup("t", &keys, StatesFor::ReadsFrom(0)).missing,
            vec![1]
        );
        // Another run replaces it too.
        let other = OnlineStamp {
            run: "s".into(),
            ..stamp(1)
        };
        cache.insert("t", &other, &keys[1..], &[None], &[0]);
        let replaced = cache.lookup("t", &keys, StatesFor::ReadsFrom(0));
        assert!(replaced.is_at(&other));
        assert_eq!(replaced.missing, vec![0]);
        assert_eq!(cache.counts(), (5, 6));
    }

    #[test]
    fn memory_stays_under_the_capacity() {
        let per_entry = 2 * 100 + 8 + ENTRY_OVERHEAD;
        let cache = StateCache::new(10 * per_entry);
        let keys: Vec<Vec<u8>> = (0..50u64).map(|k| k.to_be_bytes().to_vec()).collect();
        for key in &keys {
            cache.insert("t", &stamp(1), &[key], &[Some(Arc::new(state()))], &[100]);
            assert!(cache.tables().bytes <= 10 * per_entry);
        }
        let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
        let found = cache.lookup("t", &refs, StatesFor::ReadsFrom(0));
        assert!(
            (40..50).contains(&found.missing.len()),
            "{}",
            found.missing.len()
        );
        let disabled = StateCache::new(0);
        disabled.insert("t", &stamp(1), &refs[..1], &[None], &[0]);
        assert_eq!(
            disabled
                .lookup("t", &refs[..1], StatesFor::ReadsFrom(0))
                .missing,
            vec![0]
        );
    }
}
