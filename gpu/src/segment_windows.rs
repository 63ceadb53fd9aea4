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
use crate::key_state::{
    add_event, after_removals, empty_quantities, kept, remove_event, with_event_values,
    GroupAggregates, InputValue,
};
use crate::moments::Moments;
use crate::plan::{Frame, WindowPlan};

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

impl RowWindow {
    /// Its moments, minimum and maximum trackers.
    fn quantities(&mut self) -> (&mut [Moments], &mut [Tracker], &mut [Tracker]) {
        (&mut self.moments, &mut self.mins, &mut self.maxs)
    }
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

/// The windows of every frame group of a plan over one segment at a time. Sequence numbers of
/// the extrema trackers are row indices, increasing within a segment as event sequence
/// numbers do.
#[derive(Debug)]
pub(crate) struct SegmentWindows {
    groups: Vec<RowWindow>,
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
        SegmentWindows { groups }
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
        for (window, g) in self.groups.iter_mut().zip(&plan.groups) {
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
                remove_event(g, &mut window.moments, |input| {
                    kept_value(plan, rows, row, input)
                });
            }
            window.start = start;
            after_removals(
                g,
                window.quantities(),
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
        with_event_values(plan, value, |values| {
            for (window, g) in self.groups.iter_mut().zip(&plan.groups) {
                add_event(g, window.quantities(), row as u64, values);
            }
        });
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
