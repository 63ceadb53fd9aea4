//! The CPU kernel of the batch contract: the windows of one key's segment of key- and
//! time-sorted rows, moved over the sorted columns in place.
//!
//! It performs the same additions and removals, in the same order, as [`KeyWindowState`]
//! does when the segment's events are pushed one instant at a time (the streaming path), so
//! backfill and streaming give bit-identical values. What it saves is the state's
//! bookkeeping: a window is a range of sorted rows (`start..` the current instant), so no event
//! is copied into retained queues or trimmed from them, and one set of running quantities is
//! reset and reused from segment to segment instead of allocated per key.
//!
//! [`KeyWindowState`]: crate::KeyWindowState

use crate::backend::SortedRows;
use crate::extrema::Tracker;
use crate::key_state::{empty_quantities, GroupAggregates, InputValue, COUNTED};
use crate::moments::{MomentLevel, Moments};
use crate::plan::{Frame, InputKind, WindowPlan};

/// The running quantities of one frame group over its window of sorted rows.
#[derive(Debug)]
pub(crate) struct RowWindow {
    /// Width of a range frame; `None` for an unbounded one.
    width: Option<i64>,
    /// First row (index into the sorted input) inside the window.
    start: usize,
    moments: Vec<Moments>,
    mins: Vec<Tracker>,
    maxs: Vec<Tracker>,
}

impl GroupAggregates for RowWindow {
    #[inline]
    fn moments(&self, i: usize) -> &Moments {
        &self.moments[i]
    }
    #[inline]
    fn min(&self, i: usize) -> Option<i128> {
        self.mins[i].value()
    }
    #[inline]
    fn max(&self, i: usize) -> Option<i128> {
        self.maxs[i].value()
    }
}

/// How the window state reads the inputs: count-only inputs contribute [`COUNTED`] when
/// non-null, whatever their value.
#[derive(Debug)]
struct InputReader {
    count_only: Vec<bool>,
    kinds: Vec<InputKind>,
}

impl InputReader {
    /// Input `input` of sorted row `row`, as the window state keeps it.
    #[inline]
    fn value(&self, rows: &SortedRows<'_>, row: usize, input: usize) -> Option<InputValue> {
        let value = rows.inputs[input].get(row, self.kinds[input])?;
        Some(if self.count_only[input] {
            COUNTED
        } else {
            value
        })
    }
}

/// The windows of every frame group of a plan over one segment at a time. Sequence numbers of
/// the extrema trackers are row indices, increasing within a segment as event sequence
/// numbers do.
#[derive(Debug)]
pub(crate) struct SegmentWindows {
    groups: Vec<RowWindow>,
    inputs: InputReader,
}

impl SegmentWindows {
    /// Empty windows for `plan`.
    pub(crate) fn new(plan: &WindowPlan) -> Self {
        let groups = plan
            .groups
            .iter()
            .map(|g| {
                let (moments, mins, maxs) = empty_quantities(plan, g);
                RowWindow {
                    width: match g.frame {
                        Frame::Range { width_micros } => Some(width_micros),
                        Frame::Unbounded => None,
                    },
                    start: 0,
                    moments,
                    mins,
                    maxs,
                }
            })
            .collect();
        SegmentWindows {
            groups,
            inputs: InputReader {
                count_only: (0..plan.inputs()).map(|i| plan.is_count_only(i)).collect(),
                kinds: (0..plan.inputs()).map(|i| plan.input_kind(i)).collect(),
            },
        }
    }

    /// Empties every window for a segment starting at row `begin`.
    pub(crate) fn reset(&mut self, begin: usize) {
        for group in &mut self.groups {
            group.start = begin;
            group.moments.fill(Moments::default());
            for tracker in group.mins.iter_mut().chain(group.maxs.iter_mut()) {
                tracker.clear();
            }
        }
    }

    /// The group state of frame group `g`.
    #[inline]
    pub(crate) fn group(&self, g: usize) -> &RowWindow {
        &self.groups[g]
    }

    /// Moves every range window to end at `t`, with rows `..end` applied: rows older than
    /// `t - width` leave it (as [`crate::KeyWindowState::advance`] removes them).
    #[inline]
    pub(crate) fn advance(&mut self, plan: &WindowPlan, rows: &SortedRows<'_>, end: usize, t: i64) {
        let reader = &self.inputs;
        for (window, group) in self.groups.iter_mut().zip(&plan.groups) {
            let Some(width) = window.width else {
                continue;
            };
            let lower = t.saturating_sub(width);
            let before = window.start;
            let mut start = before;
            while start < end && rows.times[start] < lower {
                start += 1;
            }
            if start == before {
                continue;
            }
            for row in before..start {
                for ((moments, &input), &level) in (window.moments.iter_mut())
                    .zip(&group.moment_inputs)
                    .zip(&group.moment_levels)
                {
                    if let Some(x) = reader.value(rows, row, input) {
                        moments.remove(x.as_f64(), level);
                        if let Some(e) = x.as_exact() {
                            moments.remove_exact(e);
                        }
                    }
                }
            }
            window.start = start;
            for tracker in window.mins.iter_mut().chain(window.maxs.iter_mut()) {
                tracker.evict_before(start as u64);
            }
            // Removals can leave the shift far from what remains: rebuild those moments from
            // the window's rows (rare; see `Moments::drifted`).
            for ((moments, &input), &level) in (window.moments.iter_mut())
                .zip(&group.moment_inputs)
                .zip(&group.moment_levels)
            {
                if level == MomentLevel::Spread && moments.drifted() {
                    let values = (start..end)
                        .filter_map(|row| reader.value(rows, row, input).map(InputValue::as_f64));
                    moments.rebuild(values, level);
                }
            }
        }
    }

    /// Applies sorted row `row` to every window.
    #[inline]
    pub(crate) fn add(&mut self, plan: &WindowPlan, rows: &SortedRows<'_>, row: usize) {
        let reader = &self.inputs;
        let inputs = reader.kinds.len();
        if inputs <= LOCAL_INPUTS {
            // Each input read once, not once per window that aggregates it.
            let mut local = [None; LOCAL_INPUTS];
            for (input, slot) in local[..inputs].iter_mut().enumerate() {
                *slot = reader.value(rows, row, input);
            }
            add_row(&mut self.groups, plan, row, |input| local[input]);
        } else {
            add_row(&mut self.groups, plan, row, |input| {
                reader.value(rows, row, input)
            });
        }
    }
}

/// Inputs whose values [`SegmentWindows::add`] reads into an array on the stack.
const LOCAL_INPUTS: usize = 8;

/// Applies row `row`, whose input `i` is `value(i)`, to every window of `groups`.
#[inline]
fn add_row(
    groups: &mut [RowWindow],
    plan: &WindowPlan,
    row: usize,
    value: impl Fn(usize) -> Option<InputValue>,
) {
    for (window, group) in groups.iter_mut().zip(&plan.groups) {
        for ((moments, &input), &level) in (window.moments.iter_mut())
            .zip(&group.moment_inputs)
            .zip(&group.moment_levels)
        {
            if let Some(x) = value(input) {
                moments.add(x.as_f64(), level);
                if let Some(e) = x.as_exact() {
                    moments.add_exact(e);
                }
            }
        }
        for (tracker, &input) in window.mins.iter_mut().zip(&group.min_inputs) {
            if let Some(x) = value(input) {
                tracker.add(row as u64, x.key());
            }
        }
        for (tracker, &input) in window.maxs.iter_mut().zip(&group.max_inputs) {
            if let Some(x) = value(input) {
                tracker.add(row as u64, x.key());
            }
        }
    }
}
