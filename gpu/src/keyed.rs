//! Window state of every key of a feature view: the CPU backend of the window kernels.

use crate::error::KernelError;
use crate::key_state::{
    prefetch_ahead, InputValue, KeyWindowState, PartWrites, PartsError, StoredParts, WholeParts,
};
use crate::output::FeatureOutput;
use crate::plan::InputKind;
use crate::plan::WindowPlan;
use index_key::IndexKey;
use std::collections::HashMap;

mod index_key;

/// Key index: foldhash is several times faster than SipHash on short keys and still seeded per
/// process.
type KeyIndex = HashMap<IndexKey, u32, foldhash::fast::RandomState>;

/// One input column of a batch, as `f64` values with optional validity (`false` = null), and
/// for exact inputs ([`crate::InputKind`]) the exact values.
#[derive(Debug, Clone, Copy)]
pub struct InputColumn<'a> {
    /// Values; entries of null rows are ignored. Unused for exact inputs.
    pub values: &'a [f64],
    /// Validity per row; `None` means every row is valid.
    pub validity: Option<&'a [bool]>,
    /// Exact values (integers; decimals unscaled), required for exact inputs.
    pub exact: Option<&'a [i128]>,
}

impl<'a> InputColumn<'a> {
    /// A float column.
    pub fn floats(values: &'a [f64], validity: Option<&'a [bool]>) -> Self {
        InputColumn {
            values,
            validity,
            exact: None,
        }
    }

    /// Columns from per-input owned buffers (as the SQL layer prepares them).
    pub fn all(
        values: &'a [Vec<f64>],
        validity: &'a [Option<Vec<bool>>],
        exact: &'a [Option<Vec<i128>>],
    ) -> Vec<InputColumn<'a>> {
        values
            .iter()
            .zip(validity)
            .zip(exact)
            .map(|((values, validity), exact)| InputColumn {
                values,
                validity: validity.as_deref(),
                exact: exact.as_deref(),
            })
            .collect()
    }

    /// Whether row `row` is non-null.
    #[inline]
    pub(crate) fn is_valid(&self, row: usize) -> bool {
        self.validity.is_none_or(|v| v[row])
    }

    /// Row `row` as input of kind `kind`.
    #[inline]
    pub(crate) fn get(&self, row: usize, kind: InputKind) -> Option<InputValue> {
        if !self.is_valid(row) {
            return None;
        }
        Some(match (kind, self.exact) {
            (InputKind::Float, _) | (_, None) => InputValue::float(self.values[row]),
            (kind, Some(exact)) => InputValue::exact(exact[row], kind),
        })
    }

    /// Checks the column has `rows` entries, and exact values if `kind` needs them.
    pub(crate) fn check(&self, rows: usize, kind: InputKind) -> bool {
        (self.values.len() == rows || kind.is_exact())
            && self.validity.is_none_or(|v| v.len() == rows)
            && match (kind.is_exact(), self.exact) {
                (true, Some(e)) => e.len() == rows,
                (true, None) => false,
                (false, _) => true,
            }
    }
}

/// A copy of the state of some or all keys, in memory (stores keep a key's state as parts:
/// [`KeyWindowState::write_parts`]).
#[derive(Debug, Clone, PartialEq)]
pub struct WindowSnapshot {
    /// Encoded entity key and its state.
    pub keys: Vec<(Vec<u8>, KeyWindowState)>,
}

/// The state of some keys, borrowed from [`KeyedWindows`].
#[derive(Debug, Clone)]
pub struct WindowSnapshotRef<'a> {
    /// Encoded entity key and its state.
    pub keys: Vec<(&'a [u8], &'a KeyWindowState)>,
}

impl WindowSnapshotRef<'_> {
    /// An owned copy (for restoring in memory without encoding).
    pub fn to_owned(&self) -> WindowSnapshot {
        WindowSnapshot {
            keys: self
                .keys
                .iter()
                .map(|(k, s)| (k.to_vec(), (*s).clone()))
                .collect(),
        }
    }
}

/// Incremental window state for all keys of one feature view.
///
/// Keys are opaque byte strings (the runtime encodes multi-column keys). Batches are applied in
/// event-time order; within a batch, events with equal time are all applied before any of them
/// is read, so tied events see each other as SQL `RANGE` frames require.
#[derive(Debug, Clone)]
pub struct KeyedWindows {
    plan: WindowPlan,
    index: KeyIndex,
    states: Vec<KeyWindowState>,
    keys: Vec<Box<[u8]>>,
    /// Per slot, which parts of the key's state a store holds (see
    /// [`KeyWindowState::write_parts`]).
    stored: Vec<StoredParts>,
    /// What changed since the last [`KeyedWindows::take_changes`], when tracked.
    changes: Option<ChangeLog>,
}

/// Rows of a batch at most that come from a live stream (a few milliseconds of events), whose
/// changed keys' heads are encoded at every change ([`ChangeLog::heads`]): larger batches come
/// from files or a source catching up, where keys change many times an epoch.
const LIVE_BATCH_ROWS: usize = 4096;

/// Keys whose state changed and keys forgotten, since the changes were last taken.
#[derive(Debug, Clone, Default)]
struct ChangeLog {
    /// Per slot, whether an event was applied to the key (or its state restored).
    changed: Vec<bool>,
    /// Per slot, the key's head encoded right after its last events were applied, while its
    /// state was in cache, when a head is all the key would write
    /// ([`KeyWindowState::head_only`]); dropped by anything else that changes the state.
    heads: Vec<Option<Vec<u8>>>,
    /// Keys forgotten by [`KeyedWindows::expire`].
    forgotten: Vec<Box<[u8]>>,
}

/// The keys whose state changed since the previous [`KeyedWindows::take_changes`], with their
/// state now, and the keys forgotten since (what an online store has to write and delete).
#[derive(Debug, Default)]
pub struct StateChanges<'a> {
    /// Changed keys.
    pub changed: Vec<ChangedKey<'a>>,
    /// Forgotten keys. A key forgotten and seen again since is here and in `changed`: its
    /// stored parts go first, then its new state's are written.
    pub forgotten: Vec<Box<[u8]>>,
}

/// A key whose state changed.
#[derive(Debug)]
pub struct ChangedKey<'a> {
    /// The encoded entity key.
    pub key: &'a [u8],
    /// Its state now.
    pub state: &'a KeyWindowState,
    /// What a store holds of it (updated by [`KeyWindowState::write_parts`]).
    pub stored: &'a mut StoredParts,
    /// Its head encoded when it last changed ([`KeyWindowState::head_only`]), if any.
    head: Option<Vec<u8>>,
}

impl ChangedKey<'_> {
    /// The parts this key writes ([`KeyWindowState::write_parts`]; the head encoded when the
    /// key changed when that is still all there is to write).
    pub fn write_parts(&mut self) -> Result<PartWrites, PartsError> {
        self.state.write_parts_with(self.stored, self.head.take())
    }
}

impl KeyedWindows {
    /// Empty state for `plan`.
    pub fn new(plan: WindowPlan) -> Self {
        KeyedWindows {
            plan,
            index: KeyIndex::default(),
            states: Vec::new(),
            keys: Vec::new(),
            stored: Vec::new(),
            changes: None,
        }
    }

    /// Starts tracking which keys change (see [`KeyedWindows::take_changes`]); every key with
    /// state now counts as changed, with every part of its state to write.
    pub fn track_changes(&mut self) {
        self.stored.iter_mut().for_each(StoredParts::rewrite_all);
        self.changes = Some(ChangeLog {
            changed: vec![true; self.states.len()],
            heads: vec![None; self.states.len()],
            forgotten: Vec::new(),
        });
    }

    /// Whether changes are tracked ([`KeyedWindows::track_changes`]).
    pub fn tracks_changes(&self) -> bool {
        self.changes.is_some()
    }

    /// The keys whose state changed since the last call (or since tracking started) and the
    /// keys forgotten since, then starts over. Empty when changes are not tracked.
    ///
    /// A key whose windows only moved with the watermark is not changed: its earlier state,
    /// moved to a later time, reads the same values.
    pub fn take_changes(&mut self) -> StateChanges<'_> {
        let Some(log) = self.changes.as_mut() else {
            return StateChanges::default();
        };
        let forgotten = std::mem::take(&mut log.forgotten);
        let changed = (self.keys.iter())
            .zip(&self.states)
            .zip(self.stored.iter_mut())
            .zip(log.changed.iter_mut().zip(log.heads.iter_mut()))
            .filter_map(|(((key, state), stored), (changed, head))| {
                let head = head.take();
                std::mem::take(changed).then_some(ChangedKey {
                    key,
                    state,
                    stored,
                    head,
                })
            })
            .collect();
        StateChanges { changed, forgotten }
    }

    /// The plan.
    pub fn plan(&self) -> &WindowPlan {
        &self.plan
    }

    /// Number of keys with state.
    pub fn key_count(&self) -> usize {
        self.states.len()
    }

    /// Number of segments the keys' store holds (see [`StoredParts`]).
    pub fn stored_segments(&self) -> usize {
        self.stored.iter().map(StoredParts::segment_count).sum()
    }

    /// Number of events retained across keys (memory is proportional to this).
    pub fn retained_events(&self) -> usize {
        self.states
            .iter()
            .map(KeyWindowState::retained_events)
            .sum()
    }

    fn slot(&mut self, key: &[u8]) -> u32 {
        if let Some(&slot) = self.index.get(key) {
            return slot;
        }
        let slot = self.states.len() as u32;
        self.index.insert(key.into(), slot);
        self.keys.push(key.into());
        self.states.push(KeyWindowState::new(&self.plan));
        self.stored.push(StoredParts::default());
        if let Some(log) = &mut self.changes {
            log.changed.push(false);
            log.heads.push(None);
        }
        slot
    }

    /// The state slot of each row's key, creating state for keys not seen before. Slots are
    /// dense (`0..key_count()`) until the next [`KeyedWindows::expire`].
    pub fn slots(&mut self, keys: &[&[u8]]) -> Vec<u32> {
        keys.iter().map(|k| self.slot(k)).collect()
    }

    /// Applies a whole batch (rows of any keys, each key's rows in non-decreasing time, ties
    /// of a key adjacent) and returns every row's features: slots, order and processing in one
    /// call, for callers that need no chunking.
    pub fn apply(
        &mut self,
        keys: &[&[u8]],
        times: &[i64],
        inputs: &[InputColumn<'_>],
    ) -> Result<FeatureOutput, KernelError> {
        let slots = self.slots(keys);
        let order = self.key_time_order(&slots, times);
        let mut out = FeatureOutput::new(self.plan.specs().len(), times.len());
        self.process(&slots, times, inputs, &order, &mut out)?;
        Ok(out)
    }

    /// The order in which [`KeyedWindows::process`] wants rows: grouped by key, by time within
    /// a key (ties in input order). Each key's events are then applied back to back, so its
    /// state stays in cache; keys are independent, so this order gives the same features.
    pub fn key_time_order(&self, slots: &[u32], times: &[i64]) -> Vec<u32> {
        // A counting sort over every key costs O(keys) however small the batch: a live
        // source's batches of a few events over many keys sort their rows instead.
        if slots.len() < self.states.len() / 8 {
            let mut rows: Vec<(u32, i64, u32)> = (slots.iter().zip(times).enumerate())
                .map(|(row, (&slot, &t))| (slot, t, row as u32))
                .collect();
            rows.sort_unstable();
            return rows.into_iter().map(|(_, _, row)| row).collect();
        }
        crate::sort::key_time_order(slots, self.states.len(), times).order
    }

    /// Applies rows in `order` and writes each row's features to `out` at the row's own index.
    ///
    /// `slots` come from [`KeyedWindows::slots`]; `order` lists row indices with each key's
    /// rows in non-decreasing time and rows of one key with equal time adjacent (as
    /// [`KeyedWindows::key_time_order`] produces). Rows of one key with equal time are all
    /// applied before any of them is read, so tied events see each other.
    pub fn process(
        &mut self,
        slots: &[u32],
        times: &[i64],
        inputs: &[InputColumn<'_>],
        order: &[u32],
        out: &mut FeatureOutput,
    ) -> Result<(), KernelError> {
        let rows = times.len();
        if slots.len() != rows || inputs.len() != self.plan.inputs() {
            return Err(KernelError::InputMismatch(format!(
                "{} slots, {rows} times, {} inputs for a plan of {} inputs",
                slots.len(),
                inputs.len(),
                self.plan.inputs()
            )));
        }
        if inputs
            .iter()
            .enumerate()
            .any(|(i, c)| !c.check(rows, self.plan.input_kind(i)))
            || out.rows() != rows
            || out.values.len() != self.plan.specs().len()
            || order.iter().any(|&r| r as usize >= rows)
        {
            return Err(KernelError::InputMismatch(
                "column lengths or row order do not match".into(),
            ));
        }
        let specs = self.plan.specs().len();
        // Gather the rows into processing order first: independent loads in a tight loop
        // overlap their cache misses, where loads inside the dependent loop below would not.
        let slot_of: Vec<u32> = order.iter().map(|&r| slots[r as usize]).collect();
        // Only the rows of this call are checked: callers pass the whole batch's slots with
        // one chunk of the order at a time.
        if slot_of.iter().any(|&s| s as usize >= self.states.len()) {
            return Err(KernelError::InputMismatch(
                "a slot does not belong to these windows".into(),
            ));
        }
        let time_of: Vec<i64> = order.iter().map(|&r| times[r as usize]).collect();
        let width = inputs.len();
        let plan = &self.plan;
        // Floats (and the validity of exact inputs) in 16 bytes per value; exact values apart,
        // only when the plan has exact inputs.
        // Allocated at their size up front: a flattening iterator cannot tell its length, so
        // collecting grew them by doubling.
        let mut input_of: Vec<Option<f64>> = Vec::with_capacity(order.len() * width);
        input_of.extend(order.iter().flat_map(|&r| {
            let r = r as usize;
            inputs.iter().enumerate().map(move |(i, c)| {
                if plan.input_kind(i).is_exact() {
                    c.is_valid(r).then_some(0.0)
                } else {
                    c.get(r, InputKind::Float).map(InputValue::as_f64)
                }
            })
        }));
        let mut exact_of: Vec<i128> = Vec::new();
        if plan.has_exact_inputs() {
            exact_of.reserve_exact(order.len() * width);
            exact_of.extend(
                order.iter().flat_map(|&r| {
                    (inputs.iter()).map(move |c| c.exact.map_or(0, |e| e[r as usize]))
                }),
            );
        }
        let value = |pos: usize, input: usize| {
            let x = input_of[pos * width + input]?;
            Some(match plan.input_kind(input) {
                InputKind::Float => InputValue::float(x),
                kind => InputValue::exact(exact_of[pos * width + input], kind),
            })
        };
        // Where each key's rows begin: the next keys' state is requested while one computes.
        let key_starts: Vec<usize> = (0..slot_of.len())
            .filter(|&i| i == 0 || slot_of[i - 1] != slot_of[i])
            .collect();
        let mut key = 0;
        let mut i = 0;
        // Whether the key of the current run of rows had not changed since the last
        // checkpoint when the run began.
        let mut unchanged = false;
        let live = order.len() <= LIVE_BATCH_ROWS;
        while i < order.len() {
            let (slot, t) = (slot_of[i], time_of[i]);
            if key_starts.get(key) == Some(&i) {
                unchanged = (self.changes.as_ref()).is_some_and(|log| !log.changed[slot as usize]);
                prefetch_ahead(&self.states, |ahead| {
                    (key_starts.get(key + ahead)).map(|&row| slot_of[row] as usize)
                });
                key += 1;
            }
            let mut j = i + 1;
            while j < order.len() && slot_of[j] == slot && time_of[j] == t {
                j += 1;
            }
            let state = &mut self.states[slot as usize];
            if let Some(last) = state.last_time() {
                // An equal time means a tie that was not adjacent: it was read without this row.
                if t <= last {
                    return Err(KernelError::OutOfOrder { time: t, last });
                }
            }
            state.advance(plan, t);
            for pos in i..j {
                state.push(plan, t, |input| value(pos, input));
            }
            for spec in 0..specs {
                out.set_from(plan, state, spec, order[i..j].iter().map(|&r| r as usize));
            }
            if let Some(log) = &mut self.changes {
                log.changed[slot as usize] = true;
                // The key's last rows here: its head now, while its state is in cache, when
                // this is the key's first change since the last checkpoint or the batch is a
                // live stream's. A bulk run's keys change many times an epoch, in large
                // batches: they are encoded at the checkpoint instead of at every change.
                if slot_of.get(j) != Some(&slot) {
                    log.heads[slot as usize] = match unchanged || live {
                        true => state.head_only(&self.stored[slot as usize]),
                        false => None,
                    };
                }
            }
            i = j;
        }
        Ok(())
    }

    /// Releases state no future event can read, given that no event older than `watermark`
    /// will be applied any more: events behind every window are dropped and idle keys forgotten.
    /// Forgotten keys are swap-removed, so a sweep costs one hash operation per forgotten key
    /// (and one per moved key), not a rebuild of the index.
    pub fn expire(&mut self, watermark: i64) {
        let plan = &self.plan;
        if let Some(log) = &mut self.changes {
            // Every state moves to the watermark: the heads encoded before are not its heads.
            log.heads.iter_mut().for_each(|head| *head = None);
        }
        let mut slot = self.states.len();
        while slot > 0 {
            slot -= 1;
            prefetch_ahead(&self.states, |ahead| slot.checked_sub(ahead));
            let state = &mut self.states[slot];
            state.advance(plan, watermark);
            if !state.is_idle(plan) {
                continue;
            }
            self.index.remove(&self.keys[slot][..]);
            self.states.swap_remove(slot);
            self.stored.swap_remove(slot);
            let key = self.keys.swap_remove(slot);
            if let Some(log) = &mut self.changes {
                log.changed.swap_remove(slot);
                log.heads.swap_remove(slot);
                log.forgotten.push(key);
            }
            if let Some(moved) = self.keys.get(slot) {
                if let Some(s) = self.index.get_mut(&moved[..]) {
                    *s = slot as u32;
                }
            }
        }
    }

    /// The state of the keys accepted by `select` (e.g. the keys of one source partition),
    /// borrowed: encoding it copies nothing first.
    pub fn snapshot(&self, select: impl Fn(&[u8]) -> bool) -> WindowSnapshotRef<'_> {
        WindowSnapshotRef {
            keys: self
                .keys
                .iter()
                .zip(&self.states)
                .filter(|(k, _)| select(k))
                .map(|(k, s)| (&k[..], s))
                .collect(),
        }
    }

    /// Every part of the state of the keys accepted by `select` (a whole snapshot, see
    /// [`KeyWindowState::whole_parts`]), reusing what `written` has for a key (its parts just
    /// written).
    pub fn whole_parts<'w>(
        &self,
        select: impl Fn(&[u8]) -> bool,
        written: impl Fn(&[u8]) -> Option<&'w PartWrites>,
    ) -> Result<Vec<(&[u8], WholeParts<'w>)>, PartsError> {
        (self.keys.iter())
            .zip(&self.states)
            .zip(&self.stored)
            .filter(|((key, _), _)| select(key))
            .map(|((key, state), stored)| Ok((&key[..], state.whole_parts(stored, written(key))?)))
            .collect()
    }

    /// Installs the keys of `snapshot`, replacing any state those keys have.
    pub fn restore(&mut self, snapshot: WindowSnapshot) {
        let keys = snapshot.keys.into_iter();
        self.restore_parts(keys.map(|(key, state)| (key, state, StoredParts::default())));
    }

    /// Installs keys read back from their parts ([`KeyWindowState::from_parts`]) with what
    /// the store they came from holds, replacing any state those keys have.
    pub fn restore_parts(
        &mut self,
        keys: impl IntoIterator<Item = (Vec<u8>, KeyWindowState, StoredParts)>,
    ) {
        for (key, state, stored) in keys {
            let slot = self.slot(&key);
            self.states[slot as usize] = state;
            self.stored[slot as usize] = stored;
            if let Some(log) = &mut self.changes {
                log.changed[slot as usize] = true;
                log.heads[slot as usize] = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::xorshift;
    use crate::{AggKind, Frame, WindowSpec};

    const MIN: i64 = 60_000_000;

    fn plan() -> WindowPlan {
        let w = Frame::Range {
            width_micros: 10 * MIN,
        };
        WindowPlan::new(
            vec![
                WindowSpec {
                    kind: AggKind::Count,
                    input: 0,
                    frame: w,
                },
                WindowSpec {
                    kind: AggKind::Sum,
                    input: 1,
                    frame: w,
                },
                WindowSpec {
                    kind: AggKind::Max,
                    input: 1,
                    frame: w,
                },
                WindowSpec {
                    kind: AggKind::Count,
                    input: 0,
                    frame: Frame::Unbounded,
                },
                WindowSpec {
                    kind: AggKind::StddevSamp,
                    input: 1,
                    frame: w,
                },
            ],
            2,
        )
        .unwrap()
    }

    /// Brute force: the contract of DESIGN.md 3.1 written directly.
    fn brute(
        keys: &[&[u8]],
        times: &[i64],
        amounts: &[Option<f64>],
        row: usize,
    ) -> [Option<f64>; 5] {
        let same = |r: usize| keys[r] == keys[row];
        let in_w: Vec<usize> = (0..times.len())
            .filter(|&r| same(r) && times[r] <= times[row] && times[r] >= times[row] - 10 * MIN)
            .collect();
        let vals: Vec<f64> = in_w.iter().filter_map(|&r| amounts[r]).collect();
        let life = (0..times.len())
            .filter(|&r| same(r) && times[r] <= times[row])
            .count();
        let sum = (!vals.is_empty()).then(|| vals.iter().sum::<f64>());
        let max = vals.iter().cloned().reduce(f64::max);
        let sd = (vals.len() > 1).then(|| {
            let m = vals.iter().sum::<f64>() / vals.len() as f64;
            (vals.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (vals.len() - 1) as f64).sqrt()
        });
        [Some(in_w.len() as f64), sum, max, Some(life as f64), sd]
    }

    #[test]
    fn matches_brute_force_with_ties_nulls_and_idle_keys() {
        let mut next = xorshift(7);
        let key_names: [&[u8]; 3] = [b"a", b"b", b"hot"];
        let mut t = 0i64;
        let (mut keys, mut times, mut amounts) = (vec![], vec![], vec![]);
        for _ in 0..600 {
            let r = next();
            if !r.is_multiple_of(5) {
                t += (r % 90) as i64 * 1_000_000; // ties when 0
            }
            if r.is_multiple_of(97) {
                t += 30 * MIN; // everyone goes idle for longer than the window
            }
            keys.push(
                key_names[if r.is_multiple_of(3) {
                    (r / 3 % 2) as usize
                } else {
                    2
                }],
            );
            times.push(t);
            amounts.push((!r.is_multiple_of(11)).then(|| ((r >> 8) % 10_000) as f64 / 100.0));
        }
        let ones = vec![1.0; times.len()];
        let vals: Vec<f64> = amounts.iter().map(|a| a.unwrap_or(0.0)).collect();
        let valid: Vec<bool> = amounts.iter().map(Option::is_some).collect();
        // Feed in three batches, each in time order, with an expire in between.
        let mut w = KeyedWindows::new(plan());
        let mut got = vec![[None; 5]; times.len()];
        for chunk in [0..200usize, 200..201, 201..600] {
            let n = chunk.len();
            let mut out = FeatureOutput::new(5, n);
            let k: Vec<&[u8]> = keys[chunk.clone()].to_vec();
            let slots = w.slots(&k);
            let order = w.key_time_order(&slots, &times[chunk.clone()]);
            w.process(
                &slots,
                &times[chunk.clone()],
                &[
                    InputColumn::floats(&ones[chunk.clone()], None),
                    InputColumn::floats(&vals[chunk.clone()], Some(&valid[chunk.clone()])),
                ],
                &order,
                &mut out,
            )
            .unwrap();
            for (r, features) in got[chunk.clone()].iter_mut().enumerate() {
                for (s, feature) in features.iter_mut().enumerate() {
                    *feature = out.valid[s][r].then_some(out.values[s][r]);
                }
            }
            w.expire(times[chunk.end - 1]);
        }
        for (row, features) in got.iter().enumerate() {
            let want = brute(&keys, &times, &amounts, row);
            for (s, feature) in features.iter().enumerate() {
                match (*feature, want[s]) {
                    (Some(a), Some(b)) => assert!(
                        (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                        "row {row} spec {s}: {a} vs {b}"
                    ),
                    (a, b) => assert_eq!(a, b, "row {row} spec {s}"),
                }
            }
        }
    }

    fn col3() -> InputColumn<'static> {
        InputColumn::floats(&[1.0, 1.0, 1.0], None)
    }

    /// A store of keys' parts written epoch by epoch as the online store and the checkpoint
    /// chain write them: forgotten keys first, then each changed key's dropped segments, then
    /// its head and segments.
    #[derive(Default)]
    struct PartStore {
        heads: std::collections::BTreeMap<Vec<u8>, Vec<u8>>,
        segments: std::collections::BTreeMap<(Vec<u8>, u64), Vec<u8>>,
    }

    impl PartStore {
        fn apply(&mut self, changes: StateChanges<'_>) {
            for key in &changes.forgotten {
                self.heads.remove(&key[..]);
                self.segments.retain(|(k, _), _| k[..] != key[..]);
            }
            for mut changed in changes.changed {
                let w = changed.write_parts().unwrap();
                for id in w.deletes {
                    self.segments.remove(&(changed.key.to_vec(), id));
                }
                for (id, bytes) in w.segments {
                    self.segments.insert((changed.key.to_vec(), id), bytes);
                }
                self.heads.insert(changed.key.to_vec(), w.head);
            }
        }

        fn read(&self) -> Vec<(Vec<u8>, KeyWindowState, StoredParts)> {
            (self.heads.iter())
                .map(|(key, head)| {
                    let parts: Vec<(u64, &[u8])> = (self.segments.iter())
                        .filter(|((k, _), _)| k == key)
                        .map(|((_, id), b)| (*id, &b[..]))
                        .collect();
                    let (state, stored) = KeyWindowState::from_parts(head, &parts).unwrap();
                    (key.clone(), state, stored)
                })
                .collect()
        }
    }

    #[test]
    fn changed_parts_written_each_epoch_rebuild_every_key_and_leave_nothing_behind() {
        let mut next = xorshift(23);
        // Range windows only, so idle keys are forgotten.
        let w10 = Frame::Range {
            width_micros: 10 * MIN,
        };
        let spec = |kind, input| WindowSpec {
            kind,
            input,
            frame: w10,
        };
        let plan = WindowPlan::new(
            vec![
                spec(AggKind::Count, 0),
                spec(AggKind::Sum, 1),
                spec(AggKind::Max, 1),
            ],
            2,
        )
        .unwrap();
        let mut w = KeyedWindows::new(plan.clone());
        w.track_changes();
        let mut store = PartStore::default();
        let names: Vec<Vec<u8>> = (0..30u32).map(|k| k.to_le_bytes().to_vec()).collect();
        let mut t = 0i64;
        let (mut forgotten, mut changed, mut encoded_early) = (0, 0, 0);
        for epoch in 0..300 {
            let rows = (next() % 12) as usize;
            t += 1_000_000; // ties within an epoch only, as the reorder buffer releases them
            if epoch % 50 == 49 {
                t += 20 * MIN; // every key idle past its windows: forgotten, then back
            }
            let (mut keys, mut times, mut vals) = (vec![], vec![], vec![]);
            for _ in 0..rows {
                t += (next() % 4) as i64 * 1_000_000;
                // A hot key, a few warm ones and a cold tail that expires and comes back.
                let r = next() % 100;
                let key = if r < 40 {
                    0
                } else if r < 80 {
                    1 + r % 4
                } else {
                    5 + r % 25
                };
                keys.push(&names[key as usize][..]);
                times.push(t);
                vals.push((next() % 1000) as f64);
            }
            let ones = vec![1.0; rows];
            let cols = [
                InputColumn::floats(&ones, None),
                InputColumn::floats(&vals, None),
            ];
            w.apply(&keys, &times, &cols).unwrap();
            if epoch % 7 == 0 {
                w.expire(t);
            }
            let changes = w.take_changes();
            forgotten += changes.forgotten.len();
            changed += changes.changed.len();
            encoded_early += changes.changed.iter().filter(|c| c.head.is_some()).count();
            store.apply(changes);
            // What the store holds is every key's state, and no segment it no longer needs.
            let mut read = store.read();
            assert_eq!(read.len(), w.key_count(), "epoch {epoch}");
            for (key, state, stored) in &mut read {
                let slot = w.index[&key[..]] as usize;
                // A key whose windows only moved since it was written reads the same moved.
                let mut now = w.states[slot].clone();
                now.advance(&w.plan, t);
                let mut then = state.clone();
                then.advance(&w.plan, t);
                assert_eq!(then, now, "epoch {epoch}");
                let mut known = w.stored[slot].clone();
                known.rewrite_all();
                assert_eq!(*stored, known, "epoch {epoch}: segments left behind");
            }
            if epoch == 150 {
                // A restart: the store's keys restored; the next write rewrites their parts.
                let mut restored = KeyedWindows::new(plan.clone());
                restored.track_changes();
                restored.restore_parts(read);
                restored.take_changes();
                w = restored;
            }
        }
        assert!(forgotten >= 30, "keys went and came back: {forgotten}");
        assert!(w.retained_events() > 100, "{}", w.retained_events());
        // Most changed keys' heads were encoded as their events were applied (not those of
        // epochs with a sweep, a restore, a seal or a dropped segment).
        assert!(
            encoded_early * 2 > changed,
            "{encoded_early} of {changed} heads encoded early"
        );
    }

    #[test]
    fn small_batches_over_many_keys_sort_as_the_counting_sort_does() {
        let mut w = KeyedWindows::new(plan());
        let many: Vec<Vec<u8>> = (0..1000u32).map(|k| k.to_le_bytes().to_vec()).collect();
        w.slots(&many.iter().map(|k| &k[..]).collect::<Vec<_>>());
        let mut next = xorshift(11);
        for rows in [1usize, 2, 7, 60, 124] {
            let slots: Vec<u32> = (0..rows).map(|_| (next() % 40) as u32).collect();
            // Few distinct times: ties keep input order either way.
            let times: Vec<i64> = (0..rows).map(|_| (next() % 5) as i64).collect();
            let counted = crate::sort::key_time_order(&slots, w.key_count(), &times).order;
            assert_eq!(w.key_time_order(&slots, &times), counted, "{rows} rows");
        }
    }

    #[test]
    fn out_of_order_is_an_error_not_a_panic() {
        let mut w = KeyedWindows::new(plan());
        assert_eq!(w.slots(&[b"k", b"other"]), vec![0, 1]);
        let ones = [1.0, 1.0];
        let col = InputColumn::floats(&ones, None);
        let mut out = FeatureOutput::new(5, 2);
        let err = w
            .process(&[0, 0], &[10, 5], &[col, col], &[0, 1], &mut out)
            .unwrap_err();
        assert!(matches!(err, KernelError::OutOfOrder { .. }));
        // A tie split from its group would be read without its peer: refused, not miscounted.
        let mut out = FeatureOutput::new(5, 3);
        let err = w
            .process(
                &[0, 1, 0],
                &[20, 20, 20],
                &[col3(), col3()],
                &[0, 1, 2],
                &mut out,
            )
            .unwrap_err();
        assert!(matches!(
            err,
            KernelError::OutOfOrder { time: 20, last: 20 }
        ));
    }

    #[test]
    fn snapshot_restores_per_key() {
        let mut w = KeyedWindows::new(plan());
        let vals = [1.0, 2.0, 3.0];
        let col = InputColumn::floats(&vals, None);
        let mut out = FeatureOutput::new(5, 3);
        let slots = w.slots(&[b"a", b"b", b"a"]);
        w.process(&slots, &[1, 2, 3], &[col, col], &[0, 1, 2], &mut out)
            .unwrap();
        let snap = w.snapshot(|k| k == b"a").to_owned();
        assert_eq!(snap.keys.len(), 1);
        let mut restored = KeyedWindows::new(plan());
        restored.restore(snap);
        let mut a = FeatureOutput::new(5, 1);
        let mut b = FeatureOutput::new(5, 1);
        let v = [4.0];
        let c = InputColumn::floats(&v, None);
        let slot = w.slots(&[b"a"]);
        w.process(&slot, &[4], &[c, c], &[0], &mut a).unwrap();
        let slot = restored.slots(&[b"a"]);
        restored
            .process(&slot, &[4], &[c, c], &[0], &mut b)
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.values[1][0], 8.0);
    }
}
