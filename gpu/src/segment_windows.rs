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
//! Only the quantities whose values depend on that order are kept here (float moments, minima
//! and maxima). Moments that are only read exactly (counts, and sums and decimal averages of
//! exact inputs) are differences of prefix totals, evaluated frame by frame by
//! [`CountedWindows`]; a frame group with nothing else is not moved here at all.
//!
//! [`KeyWindowState`]: crate::KeyWindowState
//! [`CountedWindows`]: crate::counted_windows::CountedWindows

use crate::backend::SortedRows;
use crate::counted_windows::exactly_read;
use crate::extrema::Tracker;
use crate::key_state::{
    add_event, after_removals, empty_quantities, kept, remove_event, with_read_values,
    GroupAggregates, InputValue,
};
use crate::moments::Moments;
use crate::plan::{Frame, FrameGroup, Slot, WindowPlan};

/// The running quantities of one frame group over its window of sorted rows.
#[derive(Debug)]
pub(crate) struct RowWindow {
    /// Width of a range frame; `None` for an unbounded one.
    width: Option<i64>,
    /// First row (index into the sorted input) inside the window.
    start: usize,
    /// The group with only its tracked moments (and all its trackers): what rows entering and
    /// leaving update.
    tracked: FrameGroup,
    /// Tracked moments, as `tracked` lists them.
    moments: Vec<Moments>,
    mins: Vec<Tracker>,
    maxs: Vec<Tracker>,
    /// Per moments of the plan's group, their number among the tracked ones; `None` for
    /// moments read exactly, which [`crate::counted_windows::CountedWindows`] evaluates.
    sources: Vec<Option<usize>>,
    /// What stands in for moments not tracked here (never read through this window).
    untracked: Moments,
}

impl RowWindow {
    /// Whether it keeps any quantity row by row (else it is left out).
    fn tracks_any(&self) -> bool {
        !(self.moments.is_empty() && self.mins.is_empty() && self.maxs.is_empty())
    }
}

impl GroupAggregates for RowWindow {
    #[inline]
    fn moments(&self, i: usize) -> &Moments {
        match self.sources[i] {
            Some(i) => &self.moments[i],
            None => &self.untracked,
        }
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

/// The windows of every frame group of a plan that keeps quantities row by row, over one
/// segment at a time. Sequence numbers of the extrema trackers are row indices, increasing
/// within a segment as event sequence numbers do.
#[derive(Debug)]
pub(crate) struct SegmentWindows {
    /// Per frame group of the plan, its window here, if it tracks anything.
    windows: Vec<Option<RowWindow>>,
    /// Per input, whether tracked moments or trackers read it.
    read: Vec<bool>,
    /// The specs read from tracked quantities, in plan order.
    specs: Vec<usize>,
}

impl SegmentWindows {
    /// Empty windows for `plan`.
    pub(crate) fn new(plan: &WindowPlan) -> Self {
        let mut read = vec![false; plan.inputs()];
        let windows: Vec<Option<RowWindow>> = (plan.groups.iter().enumerate())
            .map(|(g, group)| {
                let mut tracked = FrameGroup {
                    moment_inputs: Vec::new(),
                    moment_levels: Vec::new(),
                    ..group.clone()
                };
                let mut sources = Vec::with_capacity(group.moment_inputs.len());
                for (i, exact) in exactly_read(plan, g).into_iter().enumerate() {
                    sources.push(exact.is_none().then_some(tracked.moment_inputs.len()));
                    if exact.is_none() {
                        tracked.moment_inputs.push(group.moment_inputs[i]);
                        tracked.moment_levels.push(group.moment_levels[i]);
                    }
                }
                let tracked_inputs = (tracked.moment_inputs.iter())
                    .chain(&tracked.min_inputs)
                    .chain(&tracked.max_inputs);
                for &input in tracked_inputs {
                    read[input] = true;
                }
                let (moments, mins, maxs) = empty_quantities(plan, &tracked);
                let window = RowWindow {
                    width: match group.frame {
                        Frame::Range { width_micros } => Some(width_micros),
                        Frame::Unbounded => None,
                    },
                    start: 0,
                    tracked,
                    moments,
                    mins,
                    maxs,
                    sources,
                    untracked: Moments::default(),
                };
                window.tracks_any().then_some(window)
            })
            .collect();
        let specs = (plan.outputs.iter().enumerate())
            .filter(|(_, &(g, slot))| match (&windows[g], slot) {
                (None, _) => false,
                (Some(w), Slot::Moments(i)) => w.sources[i].is_some(),
                (Some(_), Slot::Min(_) | Slot::Max(_)) => true,
            })
            .map(|(spec, _)| spec)
            .collect();
        SegmentWindows {
            windows,
            read,
            specs,
        }
    }

    /// The specs read from the quantities kept here, in plan order (none: nothing to move).
    pub(crate) fn specs(&self) -> &[usize] {
        &self.specs
    }

    /// Empties every window for a segment of sorted rows starting at `begin`.
    pub(crate) fn reset(&mut self, begin: usize) {
        for group in self.windows.iter_mut().flatten() {
            group.start = begin;
            group.moments.fill(Moments::default());
            for tracker in group.mins.iter_mut().chain(group.maxs.iter_mut()) {
                tracker.clear();
            }
        }
    }

    /// The quantities of frame group `g`; `None` for a group with nothing kept row by row
    /// (none of [`SegmentWindows::specs`] reads it).
    #[inline]
    pub(crate) fn group(&self, g: usize) -> Option<&RowWindow> {
        self.windows[g].as_ref()
    }

    /// Moves every range window to end at `t`, with rows `..end` applied: rows older than
    /// `t - width` leave it (as [`crate::KeyWindowState::advance`] removes them).
    #[inline]
    pub(crate) fn advance(&mut self, plan: &WindowPlan, rows: &SortedRows<'_>, end: usize, t: i64) {
        for window in self.windows.iter_mut().flatten() {
            let Some(width) = window.width else {
                continue;
            };
            let lower = t.saturating_sub(width);
            let before = window.start;
            let mut start = before;
            while start < end && rows.times[start] < lower {
                start += 1;
            }
            window.start = start;
            if start == before {
                continue;
            }
            for row in before..start {
                remove_event(&window.tracked, &mut window.moments, |input| {
                    kept_value(plan, rows, row, input)
                });
            }
            let g = &window.tracked;
            after_removals(
                g,
                (&mut window.moments, &mut window.mins, &mut window.maxs),
                start as u64,
                start..end,
                |input, row| kept_value(plan, rows, row, input),
            );
        }
    }

    /// Applies sorted row `row` to every window.
    #[inline]
    pub(crate) fn add(&mut self, plan: &WindowPlan, rows: &SortedRows<'_>, row: usize) {
        let value = |input: usize| rows.inputs[input].get(row, plan.input_kind(input));
        let read = &self.read;
        with_read_values(
            plan,
            |input| read[input],
            value,
            |values| {
                for window in self.windows.iter_mut().flatten() {
                    let g = &window.tracked;
                    add_event(
                        g,
                        (&mut window.moments, &mut window.mins, &mut window.maxs),
                        row as u64,
                        values,
                    );
                }
            },
        );
    }
}

/// Input `input` of sorted row `row` as the window state keeps it ([`kept`]).
#[inline]
fn kept_value(
    plan: &WindowPlan,
    rows: &SortedRows<'_>,
    row: usize,
    input: usize,
) -> Option<InputValue> {
    kept(
        plan,
        input,
        rows.inputs[input].get(row, plan.input_kind(input)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counted_windows::{mixed_test_plan, test_spec as spec, TEN_MINUTES};
    use crate::plan::InputKind;
    use crate::AggKind;

    #[test]
    fn only_quantities_that_depend_on_order_are_kept_row_by_row() {
        let plan = mixed_test_plan();
        let windows = SegmentWindows::new(&plan);
        // The ten-minute group tracks only the integer's average; the unbounded one tracks its
        // moments and the maximum.
        let tracked = |g: usize| windows.group(g).map(|w| w.tracked.moment_inputs.clone());
        assert_eq!(tracked(0), Some(vec![3]));
        assert_eq!(tracked(1), Some(vec![0, 1]));
        assert_eq!(windows.group(1).unwrap().tracked.max_inputs, vec![2]);
        assert_eq!(windows.read, vec![true, true, true, true]);
        assert_eq!(windows.specs(), &[3, 4, 5, 6, 7]);

        // The fraud demo's counts: nothing is kept row by row.
        let counts = vec![
            spec(AggKind::Count, 0, TEN_MINUTES),
            spec(AggKind::Sum, 1, TEN_MINUTES),
            spec(AggKind::Count, 0, Frame::Unbounded),
        ];
        let plan = WindowPlan::new(counts, 2)
            .and_then(|p| p.with_input_kinds(vec![InputKind::Integer; 2]))
            .unwrap();
        let windows = SegmentWindows::new(&plan);
        assert_eq!(windows.read, vec![false, false]);
        assert!(windows.specs().is_empty());
        assert!((0..2).all(|g| windows.group(g).is_none()));
    }
}
