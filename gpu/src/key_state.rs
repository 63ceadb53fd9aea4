//! Window state of one entity key.

use crate::extrema::{float_key, key_float, Extreme, Tracker};
use crate::moments::{MomentLevel, Moments};
use crate::plan::{Frame, FrameGroup, InputKind, Slot, WindowPlan};
use crate::AggKind;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

mod parts;
mod prefetch_ahead;
mod read_state;

pub use parts::{PartWrites, PartsError, StoredParts, WholeParts};
pub(crate) use prefetch_ahead::prefetch_ahead;
pub use read_state::{segments_needed, ReadState};

/// State of one frame group for one key.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct GroupState {
    /// Sequence number of the first event inside the window.
    start: u64,
    moments: Vec<Moments>,
    mins: Vec<Tracker>,
    maxs: Vec<Tracker>,
}

impl Clone for GroupState {
    fn clone(&self) -> Self {
        GroupState {
            start: self.start,
            moments: self.moments.clone(),
            mins: self.mins.clone(),
            maxs: self.maxs.clone(),
        }
    }

    /// Copies `source` into this group's memory: [`MovedGroups`] copies the groups of every
    /// entity a read moves into the same buffers.
    fn clone_from(&mut self, source: &Self) {
        self.start = source.start;
        self.moments.clone_from(&source.moments);
        self.mins.clone_from(&source.mins);
        self.maxs.clone_from(&source.maxs);
    }
}

impl GroupState {
    /// Makes this group `source`'s window with every event gone (starting at `end`, the
    /// sequence number after the key's last event), in this group's memory: what reads of it
    /// give are those of the window after each event left it (a count of 0, no value).
    fn empty_like(&mut self, source: &Self, end: u64) {
        self.start = end;
        self.moments.clear();
        self.moments
            .resize(source.moments.len(), Moments::default());
        for (mine, theirs) in [
            (&mut self.mins, &source.mins),
            (&mut self.maxs, &source.maxs),
        ] {
            mine.clone_from(theirs);
            mine.iter_mut().for_each(Tracker::clear);
        }
    }
}

/// A key's frame groups moved to a read time: the groups whose windows lose events are moved
/// on copies, the others read in place (one stored state may be read by many requests at
/// once). The copies reuse their memory from key to key: a read of 100 entities allocated
/// each group's vectors afresh for every entity.
#[derive(Default)]
pub(crate) struct MovedGroups {
    copies: Vec<GroupState>,
    moved: Vec<bool>,
}

impl MovedGroups {
    /// Moves `state`'s groups to windows ending at `t`, as [`KeyWindowState::advance`] would
    /// leave them, without changing `state`, whose events are at `rows`; [`Unread`] when a
    /// window would lose an event that was not read from the store.
    pub(crate) fn load(
        &mut self,
        state: &KeyWindowState,
        rows: &impl EventRows,
        plan: &WindowPlan,
        t: i64,
    ) -> Result<(), Unread> {
        self.moved.clear();
        if self.copies.len() < state.groups.len() {
            let more = &state.groups[self.copies.len()..];
            self.copies.extend(more.iter().cloned());
        }
        for (i, (group, g)) in state.groups.iter().zip(&plan.groups).enumerate() {
            // A window every event left is read as empty without removing them one by one (a
            // read of a key idle for longer than the window needs none of its events).
            if group.start < rows.end() && state.empties(g, t) {
                self.copies[i].empty_like(group, rows.end());
                self.moved.push(true);
                continue;
            }
            let moved = state.leaving(rows, g, group, t)?.is_some();
            self.moved.push(moved);
            if moved {
                self.copies[i].clone_from(group);
                state.advance_group(rows, plan, g, &mut self.copies[i], t)?;
            }
        }
        Ok(())
    }

    /// Frame group `g` of the state last [`MovedGroups::load`]ed (`state`), moved.
    #[inline]
    pub(crate) fn group<'a>(&'a self, state: &'a KeyWindowState, g: usize) -> &'a GroupState {
        match self.moved[g] {
            true => &self.copies[g],
            false => &state.groups[g],
        }
    }
}

/// Where a state's retained events are among its rows (its `times` and `values`): every
/// event for a [`KeyWindowState`], those read from the store for a [`ReadState`].
pub(crate) trait EventRows {
    /// The sequence number after the key's last event.
    fn end(&self) -> u64;
    /// The row of event `seq` (retained, before [`EventRows::end`]); when it was not read, a
    /// time no later than its own.
    fn row(&self, seq: u64) -> Result<usize, i64>;
    /// The row of event `seq` when it and every later event were read.
    fn rows_from(&self, seq: u64) -> Option<usize>;
}

impl EventRows for KeyWindowState {
    #[inline]
    fn end(&self) -> u64 {
        self.next_seq()
    }
    #[inline]
    fn row(&self, seq: u64) -> Result<usize, i64> {
        Ok((seq - self.base) as usize)
    }
    #[inline]
    fn rows_from(&self, seq: u64) -> Option<usize> {
        Some((seq - self.base) as usize)
    }
}

/// A window had to lose an event that was not read from the store (see [`ReadState`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unread;

/// The retained values of one input column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Retained {
    /// Values of a float input.
    Float(VecDeque<Option<f64>>),
    /// Values of an integer input (they fit `i64`; half the memory of `i128`).
    Integer(VecDeque<Option<i64>>),
    /// Values of a decimal input, unscaled.
    Decimal(VecDeque<Option<i128>>),
    /// Nullness of an input only counts read (1 byte per event instead of 16).
    Validity(VecDeque<bool>),
}

/// One input value of an event: a float, or an exact value with the `f64` float aggregates
/// (variance, integer averages) read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InputValue {
    /// A float input's value.
    Float(f64),
    /// An exact input's value.
    Exact {
        /// The exact value (integers; decimals unscaled).
        value: i128,
        /// The value as `f64`, converted as Arrow casts it.
        float: f64,
    },
}

impl InputValue {
    /// A float input's value.
    #[inline]
    pub fn float(x: f64) -> Self {
        InputValue::Float(x)
    }

    /// An exact input's value, with its `f64` as `kind` converts it.
    #[inline]
    pub fn exact(x: i128, kind: InputKind) -> Self {
        InputValue::Exact {
            value: x,
            float: kind.to_f64(x),
        }
    }

    /// The value as `f64`.
    #[inline]
    pub fn as_f64(self) -> f64 {
        match self {
            InputValue::Float(x) | InputValue::Exact { float: x, .. } => x,
        }
    }

    /// The exact value, for exact inputs.
    #[inline]
    pub fn as_exact(self) -> Option<i128> {
        match self {
            InputValue::Float(_) => None,
            InputValue::Exact { value, .. } => Some(value),
        }
    }

    /// The key min/max trackers order this value by.
    #[inline]
    pub(crate) fn key(self) -> i128 {
        match self {
            InputValue::Float(x) => float_key(x),
            InputValue::Exact { value, .. } => value,
        }
    }
}

impl Retained {
    fn new(kind: InputKind, count_only: bool) -> Self {
        if count_only {
            return Retained::Validity(VecDeque::new());
        }
        match kind {
            InputKind::Float => Retained::Float(VecDeque::new()),
            InputKind::Integer => Retained::Integer(VecDeque::new()),
            InputKind::Decimal { .. } => Retained::Decimal(VecDeque::new()),
        }
    }

    #[inline]
    fn push(&mut self, value: Option<InputValue>) {
        match self {
            Retained::Float(v) => v.push_back(value.map(InputValue::as_f64)),
            // Integer inputs are given as `i64` values widened: narrowing is lossless.
            Retained::Integer(v) => {
                v.push_back(value.and_then(InputValue::as_exact).map(|x| x as i64))
            }
            Retained::Decimal(v) => v.push_back(value.and_then(InputValue::as_exact)),
            Retained::Validity(v) => v.push_back(value.is_some()),
        }
    }

    #[inline]
    fn get(&self, row: usize, kind: InputKind) -> Option<InputValue> {
        match self {
            Retained::Float(v) => v[row].map(InputValue::float),
            Retained::Integer(v) => v[row].map(|x| InputValue::exact(x as i128, kind)),
            Retained::Decimal(v) => v[row].map(|x| InputValue::exact(x, kind)),
            Retained::Validity(v) => v[row].then_some(COUNTED),
        }
    }

    /// An empty column of the same kind.
    fn empty_like(&self) -> Self {
        match self {
            Retained::Float(_) => Retained::Float(VecDeque::new()),
            Retained::Integer(_) => Retained::Integer(VecDeque::new()),
            Retained::Decimal(_) => Retained::Decimal(VecDeque::new()),
            Retained::Validity(_) => Retained::Validity(VecDeque::new()),
        }
    }

    /// Appends `other`'s values from row `skip` on; `false` (nothing appended) when the kinds
    /// differ. Into an empty column `other` moves (nothing is copied).
    fn append_from(&mut self, mut other: Retained, skip: usize) -> bool {
        if std::mem::discriminant(self) != std::mem::discriminant(&other) {
            return false;
        }
        if self.len() == 0 {
            other.drain_front(skip);
            *self = other;
            return true;
        }
        match (self, other) {
            (Retained::Float(a), Retained::Float(b)) => a.extend(b.into_iter().skip(skip)),
            (Retained::Integer(a), Retained::Integer(b)) => a.extend(b.into_iter().skip(skip)),
            (Retained::Decimal(a), Retained::Decimal(b)) => a.extend(b.into_iter().skip(skip)),
            (Retained::Validity(a), Retained::Validity(b)) => a.extend(b.into_iter().skip(skip)),
            _ => return false,
        }
        true
    }

    fn len(&self) -> usize {
        match self {
            Retained::Float(v) => v.len(),
            Retained::Integer(v) => v.len(),
            Retained::Decimal(v) => v.len(),
            Retained::Validity(v) => v.len(),
        }
    }

    /// Asks the CPU to load the values ([`crate::prefetch`]).
    #[inline]
    fn prefetch(&self) {
        match self {
            Retained::Float(v) => crate::prefetch::deque(v),
            Retained::Integer(v) => crate::prefetch::deque(v),
            Retained::Decimal(v) => crate::prefetch::deque(v),
            Retained::Validity(v) => crate::prefetch::deque(v),
        }
    }

    fn drain_front(&mut self, n: usize) {
        match self {
            Retained::Float(v) => drop(v.drain(..n)),
            Retained::Integer(v) => drop(v.drain(..n)),
            Retained::Decimal(v) => drop(v.drain(..n)),
            Retained::Validity(v) => drop(v.drain(..n)),
        }
    }
}

/// What a count-only input contributes for a non-null value, entering and leaving alike.
pub(crate) const COUNTED: InputValue = InputValue::Float(1.0);

/// The running quantities of one frame group, however they are kept: what outputs read.
pub(crate) trait GroupAggregates {
    /// Moments number `i` of the group.
    fn moments(&self, i: usize) -> &Moments;
    /// Order key of minimum number `i`, if the window has a value.
    fn min(&self, i: usize) -> Option<i128>;
    /// Order key of maximum number `i`, if the window has a value.
    fn max(&self, i: usize) -> Option<i128>;
}

impl GroupState {
    /// Its moments, minimum and maximum trackers.
    fn quantities(&mut self) -> (&mut [Moments], &mut [Tracker], &mut [Tracker]) {
        (&mut self.moments, &mut self.mins, &mut self.maxs)
    }
}

impl GroupAggregates for GroupState {
    fn moments(&self, i: usize) -> &Moments {
        &self.moments[i]
    }
    fn min(&self, i: usize) -> Option<i128> {
        self.mins[i].value()
    }
    fn max(&self, i: usize) -> Option<i128> {
        self.maxs[i].value()
    }
}

/// Exact value of output `spec` from its group's quantities (see
/// [`KeyWindowState::read_exact`]).
#[inline]
pub(crate) fn read_exact(
    plan: &WindowPlan,
    spec: usize,
    group: &impl GroupAggregates,
) -> Option<i128> {
    let (_, slot) = plan.outputs[spec];
    let s = plan.specs()[spec];
    match slot {
        Slot::Min(i) => group.min(i),
        Slot::Max(i) => group.max(i),
        Slot::Moments(i) => match (s.kind, plan.input_kind(s.input)) {
            (AggKind::Avg, InputKind::Decimal { avg_multiplier, .. }) => {
                group.moments(i).exact_avg(avg_multiplier)
            }
            // Integer sums wrap into i64, as DataFusion's Int64 sums do (and the CUDA
            // kernels' i64 prefix sums): every backend returns the same value.
            (_, InputKind::Integer) => group.moments(i).exact_sum().map(|v| v as i64 as i128),
            _ => group.moments(i).exact_sum(),
        },
    }
}

/// Value of output `spec` as `f64` from its group's quantities (see [`KeyWindowState::read`]).
#[inline]
pub(crate) fn read(plan: &WindowPlan, spec: usize, group: &impl GroupAggregates) -> Option<f64> {
    let (_, slot) = plan.outputs[spec];
    let kind = plan.specs()[spec].kind;
    let input = plan.specs()[spec].input;
    let extreme = |key: Option<i128>| match plan.input_kind(input) {
        InputKind::Float => key.map(key_float),
        exact => key.map(|k| exact.to_f64(k)),
    };
    match slot {
        Slot::Min(i) => extreme(group.min(i)),
        Slot::Max(i) => extreme(group.max(i)),
        Slot::Moments(i) => {
            let m = group.moments(i);
            match kind {
                AggKind::Count => Some(m.count() as f64),
                AggKind::Sum => m.sum(),
                AggKind::Avg => m.mean(),
                AggKind::VarSamp => m.var_samp(),
                AggKind::StddevSamp => m.var_samp().map(f64::sqrt),
                AggKind::VarPop => m.var_pop(),
                AggKind::StddevPop => m.var_pop().map(f64::sqrt),
                AggKind::Min | AggKind::Max => None,
            }
        }
    }
}

/// The running quantities of frame group `g` over an empty window: its moments, minimum and
/// maximum trackers.
pub(crate) fn empty_quantities(
    plan: &WindowPlan,
    g: &FrameGroup,
) -> (Vec<Moments>, Vec<Tracker>, Vec<Tracker>) {
    let sliding = matches!(g.frame, Frame::Range { .. });
    let wide = |&input: &usize| matches!(plan.input_kind(input), InputKind::Decimal { .. });
    let trackers = |inputs: &[usize], extreme| {
        (inputs.iter())
            .map(|i| Tracker::new(extreme, sliding, wide(i)))
            .collect()
    };
    (
        vec![Moments::default(); g.moment_inputs.len()],
        trackers(&g.min_inputs, Extreme::Min),
        trackers(&g.max_inputs, Extreme::Max),
    )
}

/// Inputs whose values [`with_event_values`] gathers on the stack (more go to the heap).
const LOCAL_INPUTS: usize = 8;

/// Input `input`'s `value` as the window state keeps it: a count-only input contributes
/// [`COUNTED`] entering and leaving (only its nullness matters), whatever its value.
#[inline]
pub(crate) fn kept(
    plan: &WindowPlan,
    input: usize,
    value: Option<InputValue>,
) -> Option<InputValue> {
    match value {
        Some(_) if plan.is_count_only(input) => Some(COUNTED),
        v => v,
    }
}

/// Reads each input of an event once, `value(i)` for input `i`, as the window state keeps it
/// ([`kept`]), and hands them to `apply`.
#[inline]
pub(crate) fn with_event_values<R>(
    plan: &WindowPlan,
    value: impl Fn(usize) -> Option<InputValue>,
    apply: impl FnOnce(&[Option<InputValue>]) -> R,
) -> R {
    with_read_values(plan, |_| true, value, apply)
}

/// [`with_event_values`] reading only the inputs `wanted` says, the others given as null (the
/// batch kernel's windows read some inputs from prefix totals instead).
#[inline]
pub(crate) fn with_read_values<R>(
    plan: &WindowPlan,
    wanted: impl Fn(usize) -> bool,
    value: impl Fn(usize) -> Option<InputValue>,
    apply: impl FnOnce(&[Option<InputValue>]) -> R,
) -> R {
    let read = |i: usize| wanted(i).then(|| kept(plan, i, value(i))).flatten();
    let inputs = plan.inputs();
    if inputs <= LOCAL_INPUTS {
        let mut local = [None; LOCAL_INPUTS];
        for (i, slot) in local[..inputs].iter_mut().enumerate() {
            *slot = read(i);
        }
        apply(&local[..inputs])
    } else {
        let all: Vec<Option<InputValue>> = (0..inputs).map(read).collect();
        apply(&all)
    }
}

/// Adds the event with sequence number `seq` and input `values` to the quantities of frame
/// group `g`.
#[inline]
pub(crate) fn add_event(
    g: &FrameGroup,
    (moments, mins, maxs): (&mut [Moments], &mut [Tracker], &mut [Tracker]),
    seq: u64,
    values: &[Option<InputValue>],
) {
    for ((m, &input), &level) in moments
        .iter_mut()
        .zip(&g.moment_inputs)
        .zip(&g.moment_levels)
    {
        if let Some(x) = values[input] {
            m.add(x.as_f64(), level);
            if let Some(e) = x.as_exact() {
                m.add_exact(e);
            }
        }
    }
    for (e, &input) in mins.iter_mut().zip(&g.min_inputs) {
        if let Some(x) = values[input] {
            e.add(seq, x.key());
        }
    }
    for (e, &input) in maxs.iter_mut().zip(&g.max_inputs) {
        if let Some(x) = values[input] {
            e.add(seq, x.key());
        }
    }
}

/// Removes an event leaving the window, whose input `i` is `value(i)` as the state keeps it,
/// from the moments of frame group `g`.
#[inline]
pub(crate) fn remove_event(
    g: &FrameGroup,
    moments: &mut [Moments],
    value: impl Fn(usize) -> Option<InputValue>,
) {
    for ((m, &input), &level) in moments
        .iter_mut()
        .zip(&g.moment_inputs)
        .zip(&g.moment_levels)
    {
        if let Some(x) = value(input) {
            m.remove(x.as_f64(), level);
            if let Some(e) = x.as_exact() {
                m.remove_exact(e);
            }
        }
    }
}

/// Whether every event of a key whose last event is at `last` has left a range window of
/// width `width_micros` ending at `t` (so it reads as empty); a key without events has none.
#[inline]
pub(crate) fn all_left(last: Option<i64>, width_micros: i64, t: i64) -> bool {
    last.is_none_or(|last| last < t.saturating_sub(width_micros))
}

/// Whether [`after_removals`] rebuilds some of frame group `g`'s `moments` from the rows of
/// the window.
fn needs_rebuild(g: &FrameGroup, moments: &[Moments]) -> bool {
    (moments.iter().zip(&g.moment_levels))
        .any(|(m, &level)| level == MomentLevel::Spread && m.drifted())
}

/// After events left the window of frame group `g`, which now starts at sequence number
/// `start`: drops the trackers' candidates before it, and rebuilds moments whose shift drifted
/// far from what remains from the window's `rows`, input `i` of row `r` being `value(i, r)`
/// (rare; see `Moments::drifted`).
#[inline]
pub(crate) fn after_removals(
    g: &FrameGroup,
    (moments, mins, maxs): (&mut [Moments], &mut [Tracker], &mut [Tracker]),
    start: u64,
    rows: std::ops::Range<usize>,
    value: impl Fn(usize, usize) -> Option<InputValue>,
) {
    for e in mins.iter_mut().chain(maxs.iter_mut()) {
        e.evict_before(start);
    }
    for ((m, &input), &level) in moments
        .iter_mut()
        .zip(&g.moment_inputs)
        .zip(&g.moment_levels)
    {
        // What `needs_rebuild` tells.
        if level == MomentLevel::Spread && m.drifted() {
            let values = (rows.clone()).filter_map(|row| value(input, row).map(InputValue::as_f64));
            m.rebuild(values, level);
        }
    }
}

/// Incremental window state of one key: the key's events still inside its longest range window,
/// and per frame the running quantities over the events inside that frame.
///
/// Memory is proportional to the events inside the longest range window; unbounded frames keep
/// O(1) state. Events must be applied in non-decreasing event time. Stores keep it as parts
/// ([`KeyWindowState::write_parts`]).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyWindowState {
    /// Sequence number of `times[0]`; sequence numbers count this key's events from 0.
    base: u64,
    /// Times of the retained events.
    times: VecDeque<i64>,
    /// Per input column, the value of each retained event (`None` = SQL null).
    values: Vec<Retained>,
    last_time: Option<i64>,
    groups: Vec<GroupState>,
}

impl KeyWindowState {
    /// Empty state for `plan`.
    pub fn new(plan: &WindowPlan) -> Self {
        let groups = plan
            .groups
            .iter()
            .map(|g| {
                let (moments, mins, maxs) = empty_quantities(plan, g);
                GroupState {
                    start: 0,
                    moments,
                    mins,
                    maxs,
                }
            })
            .collect();
        KeyWindowState {
            base: 0,
            times: VecDeque::new(),
            values: (0..plan.inputs())
                .map(|i| Retained::new(plan.input_kind(i), plan.is_count_only(i)))
                .collect(),
            last_time: None,
            groups,
        }
    }

    /// Latest event time applied to this key.
    pub fn last_time(&self) -> Option<i64> {
        self.last_time
    }

    /// Number of events retained for range windows.
    pub fn retained_events(&self) -> usize {
        self.times.len()
    }

    fn next_seq(&self) -> u64 {
        self.base + self.times.len() as u64
    }

    /// Applies one event at time `t`; `value(i)` yields input `i` of the event.
    ///
    /// The caller guarantees `t` is not older than [`KeyWindowState::last_time`].
    #[inline]
    pub fn push(&mut self, plan: &WindowPlan, t: i64, value: impl Fn(usize) -> Option<InputValue>) {
        with_event_values(plan, value, |values| self.apply(plan, t, values));
    }

    /// [`KeyWindowState::push`] with the event's inputs read.
    #[inline]
    fn apply(&mut self, plan: &WindowPlan, t: i64, values: &[Option<InputValue>]) {
        let seq = self.next_seq();
        self.times.push_back(t);
        for (column, &value) in self.values.iter_mut().zip(values) {
            column.push(value);
        }
        for (group, g) in self.groups.iter_mut().zip(&plan.groups) {
            add_event(g, group.quantities(), seq, values);
        }
        self.last_time = Some(t);
    }

    /// Moves every range window to end at `t`: events older than `t - width` leave it. Then
    /// drops retained events that no window can reach any more.
    #[inline]
    pub fn advance(&mut self, plan: &WindowPlan, t: i64) {
        let mut groups = std::mem::take(&mut self.groups);
        for (group, g) in groups.iter_mut().zip(&plan.groups) {
            let moved = self.advance_group(self, plan, g, group, t);
            debug_assert!(moved.is_ok(), "a state holds all its events");
        }
        self.groups = groups;
        self.trim(plan);
    }

    /// Whether every event of the key leaves frame group `g`'s window when it ends at `t` (a
    /// range window whose start passed the key's last event).
    #[inline]
    fn empties(&self, g: &FrameGroup, t: i64) -> bool {
        let Frame::Range { width_micros } = g.frame else {
            return false;
        };
        all_left(self.last_time, width_micros, t)
    }

    /// Whether the first event of `group`'s window (of frame group `g`), with these events at
    /// `rows`, leaves it when it ends at `t` (older than a range window's width): its row if
    /// it does, [`Unread`] if it may but was not read.
    #[inline]
    fn leaving(
        &self,
        rows: &impl EventRows,
        g: &FrameGroup,
        group: &GroupState,
        t: i64,
    ) -> Result<Option<usize>, Unread> {
        let Frame::Range { width_micros } = g.frame else {
            return Ok(None);
        };
        if group.start >= rows.end() {
            return Ok(None);
        }
        let limit = t.saturating_sub(width_micros);
        match rows.row(group.start) {
            Ok(row) => Ok((self.times[row] < limit).then_some(row)),
            Err(no_later) if no_later >= limit => Ok(None),
            Err(_) => Err(Unread),
        }
    }

    /// Moves `group`'s window (of frame group `g`) to end at `t`, these events being at
    /// `rows`; [`Unread`] when it would lose an event that was not read, or needs every event
    /// of the window to rebuild its moments and some were not read.
    #[inline]
    fn advance_group(
        &self,
        rows: &impl EventRows,
        plan: &WindowPlan,
        g: &FrameGroup,
        group: &mut GroupState,
        t: i64,
    ) -> Result<(), Unread> {
        let before = group.start;
        while let Some(row) = self.leaving(rows, g, group, t)? {
            remove_event(g, &mut group.moments, |input| {
                self.values[input].get(row, plan.input_kind(input))
            });
            group.start += 1;
        }
        if group.start != before {
            let start = group.start;
            let from = match rows.rows_from(start) {
                Some(from) => from,
                None if needs_rebuild(g, &group.moments) => return Err(Unread),
                // Not read: `after_removals` reads rows only to rebuild.
                None => self.times.len(),
            };
            after_removals(
                g,
                group.quantities(),
                start,
                from..self.times.len(),
                |input, row| self.values[input].get(row, plan.input_kind(input)),
            );
        }
        Ok(())
    }

    /// Drops retained events before the start of every range window.
    fn trim(&mut self, plan: &WindowPlan) {
        let keep_from = self
            .groups
            .iter()
            .zip(&plan.groups)
            .filter(|(_, g)| matches!(g.frame, Frame::Range { .. }))
            .map(|(s, _)| s.start)
            .min()
            .unwrap_or_else(|| self.next_seq());
        let drop = (keep_from.saturating_sub(self.base) as usize).min(self.times.len());
        if drop > 0 {
            self.times.drain(..drop);
            for column in &mut self.values {
                column.drain_front(drop);
            }
            self.base += drop as u64;
        }
    }

    /// The quantities of the frame group output `spec` reads.
    #[inline]
    pub(crate) fn group_of(&self, plan: &WindowPlan, spec: usize) -> &impl GroupAggregates {
        &self.groups[plan.outputs[spec].0]
    }

    /// Exact value of output `spec`, one the plan marks exact ([`WindowPlan::is_exact_output`]:
    /// sums, minima and maxima of exact inputs, averages of decimals), for a window ending at
    /// the last advanced time.
    #[inline]
    pub fn read_exact(&self, plan: &WindowPlan, spec: usize) -> Option<i128> {
        read_exact(plan, spec, &self.groups[plan.outputs[spec].0])
    }

    /// Value of output `spec` (index into the plan's specs) for a window ending at the last
    /// advanced time, as `f64` (see [`KeyWindowState::read_exact`] for exact outputs).
    #[inline]
    pub fn read(&self, plan: &WindowPlan, spec: usize) -> Option<f64> {
        read(plan, spec, &self.groups[plan.outputs[spec].0])
    }

    /// Whether the state holds nothing a future event could read (no retained events, no
    /// lifetime aggregates): such a key can be forgotten.
    pub fn is_idle(&self, plan: &WindowPlan) -> bool {
        self.times.is_empty() && !plan.has_unbounded()
    }
}
