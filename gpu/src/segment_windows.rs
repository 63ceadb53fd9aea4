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
//! Moments that are only read exactly (counts, and sums and decimal averages of exact inputs)
//! are not kept value by value at all: they are differences of prefix totals over the segment
//! (non-null values, wrapping exact sums), which are the same integers whatever the order of
//! additions and removals. A count over ten minutes then costs two subtractions a row instead
//! of an addition and a removal through the moments (measured on the fraud demo's card view:
//! its three counts were a fifth of the kernels' time).
//!
//! [`KeyWindowState`]: crate::KeyWindowState

use crate::backend::SortedRows;
use crate::extrema::Tracker;
use crate::key_state::{
    add_event, after_removals, empty_quantities, kept, remove_event, with_read_values,
    GroupAggregates, InputValue,
};
use crate::moments::{MomentLevel, Moments};
use crate::plan::{Frame, FrameGroup, Slot, WindowPlan};
use crate::AggKind;

/// Where a window reads moments number `i` of its frame group.
#[derive(Debug, Clone, Copy)]
enum MomentSource {
    /// Kept as rows enter and leave: number `i` of the window's tracked moments.
    Tracked(usize),
    /// From prefix totals: number `counted` of the window's counted moments, whose input's
    /// totals are number `prefix` of the segment's.
    Counted { counted: usize, prefix: usize },
}

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
    /// Per moments of the plan's group, where they are read.
    sources: Vec<MomentSource>,
    /// Counted moments as of the last [`SegmentWindows::settle`].
    counted: Vec<Moments>,
}

impl RowWindow {
    /// Whether rows leaving the window change anything but its start.
    fn tracks_leaving(&self) -> bool {
        !(self.moments.is_empty() && self.mins.is_empty() && self.maxs.is_empty())
    }
}

impl GroupAggregates for RowWindow {
    #[inline]
    fn moments(&self, i: usize) -> &Moments {
        match self.sources[i] {
            MomentSource::Tracked(i) => &self.moments[i],
            MomentSource::Counted { counted, .. } => &self.counted[counted],
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

/// Prefix totals of one input over the current segment: how many of its first `k` rows have a
/// value, and the wrapping sum of their exact values.
#[derive(Debug)]
struct PrefixTotals {
    input: usize,
    /// Whether a read needs the sums (counts alone need only the values' presence).
    sums: bool,
    counts: Vec<u64>,
    exact_sums: Vec<i128>,
}

impl PrefixTotals {
    /// Totals over sorted rows `begin..end` (reusing the buffers).
    fn fill(&mut self, rows: &SortedRows<'_>, begin: usize, end: usize) {
        let column = &rows.inputs[self.input];
        self.counts.clear();
        self.counts.push(0);
        let mut n = 0;
        self.counts.extend((begin..end).map(|row| {
            n += u64::from(column.is_valid(row));
            n
        }));
        self.exact_sums.clear();
        if let (true, Some(exact)) = (self.sums, column.exact) {
            self.exact_sums.push(0);
            let mut sum = 0i128;
            self.exact_sums.extend((begin..end).map(|row| {
                if column.is_valid(row) {
                    sum = sum.wrapping_add(exact[row]);
                }
                sum
            }));
        }
    }

    /// The moments of the segment's rows `from..to` (offsets into the segment).
    fn moments(&self, from: usize, to: usize) -> Moments {
        let sum = match self.exact_sums.is_empty() {
            true => 0,
            false => self.exact_sums[to].wrapping_sub(self.exact_sums[from]),
        };
        Moments::counted(self.counts[to] - self.counts[from], sum)
    }
}

/// Per moments of frame group `g` of `plan`: `Some(sums)` where every read of them is exact (a
/// count, or the exact sum or average of an exact input; `sums` when some read needs the sum),
/// `None` where some read needs the float quantities.
fn exactly_read(plan: &WindowPlan, g: usize) -> Vec<Option<bool>> {
    let group = &plan.groups[g];
    (0..group.moment_inputs.len())
        .map(|i| {
            let specs = (plan.outputs.iter().enumerate())
                .filter(|(_, &(og, slot))| og == g && slot == Slot::Moments(i))
                .map(|(spec, _)| spec);
            let mut sums = false;
            for spec in specs {
                match plan.specs()[spec].kind {
                    AggKind::Count => {}
                    _ if plan.is_exact_output(spec) => sums = true,
                    _ => return None,
                }
            }
            (group.moment_levels[i] <= MomentLevel::Sum).then_some(sums)
        })
        .collect()
}

/// The windows of every frame group of a plan over one segment at a time. Sequence numbers of
/// the extrema trackers are row indices, increasing within a segment as event sequence
/// numbers do.
#[derive(Debug)]
pub(crate) struct SegmentWindows {
    groups: Vec<RowWindow>,
    /// Prefix totals of the inputs of counted moments.
    prefixes: Vec<PrefixTotals>,
    /// Per input, whether tracked moments or trackers read it.
    read: Vec<bool>,
    /// First row of the current segment.
    begin: usize,
}

impl SegmentWindows {
    /// Empty windows for `plan`.
    pub(crate) fn new(plan: &WindowPlan) -> Self {
        let mut prefixes: Vec<PrefixTotals> = Vec::new();
        let mut read = vec![false; plan.inputs()];
        let groups = (plan.groups.iter().enumerate())
            .map(|(g, group)| {
                let mut tracked = FrameGroup {
                    moment_inputs: Vec::new(),
                    moment_levels: Vec::new(),
                    ..group.clone()
                };
                let mut sources = Vec::with_capacity(group.moment_inputs.len());
                let mut counted = 0;
                for (i, exact) in exactly_read(plan, g).into_iter().enumerate() {
                    let input = group.moment_inputs[i];
                    match exact {
                        Some(sums) => {
                            let prefix = match prefixes.iter().position(|p| p.input == input) {
                                Some(p) => p,
                                None => {
                                    prefixes.push(PrefixTotals {
                                        input,
                                        sums: false,
                                        counts: Vec::new(),
                                        exact_sums: Vec::new(),
                                    });
                                    prefixes.len() - 1
                                }
                            };
                            prefixes[prefix].sums |= sums;
                            sources.push(MomentSource::Counted { counted, prefix });
                            counted += 1;
                        }
                        None => {
                            sources.push(MomentSource::Tracked(tracked.moment_inputs.len()));
                            tracked.moment_inputs.push(input);
                            tracked.moment_levels.push(group.moment_levels[i]);
                        }
                    }
                }
                let tracked_inputs = (tracked.moment_inputs.iter())
                    .chain(&tracked.min_inputs)
                    .chain(&tracked.max_inputs);
                for &input in tracked_inputs {
                    read[input] = true;
                }
                let (moments, mins, maxs) = empty_quantities(plan, &tracked);
                RowWindow {
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
                    counted: vec![Moments::default(); counted],
                }
            })
            .collect();
        SegmentWindows {
            groups,
            prefixes,
            read,
            begin: 0,
        }
    }

    /// Empties every window for the segment of sorted rows `begin..end`.
    pub(crate) fn reset(&mut self, rows: &SortedRows<'_>, begin: usize, end: usize) {
        self.begin = begin;
        for prefix in &mut self.prefixes {
            prefix.fill(rows, begin, end);
        }
        for group in &mut self.groups {
            group.start = begin;
            group.moments.fill(Moments::default());
            for tracker in group.mins.iter_mut().chain(group.maxs.iter_mut()) {
                tracker.clear();
            }
        }
    }

    /// The group state of frame group `g` (its counted moments as of the last
    /// [`SegmentWindows::settle`]).
    #[inline]
    pub(crate) fn group(&self, g: usize) -> &RowWindow {
        &self.groups[g]
    }

    /// Moves every range window to end at `t`, with rows `..end` applied: rows older than
    /// `t - width` leave it (as [`crate::KeyWindowState::advance`] removes them).
    #[inline]
    pub(crate) fn advance(&mut self, plan: &WindowPlan, rows: &SortedRows<'_>, end: usize, t: i64) {
        for window in &mut self.groups {
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
            if start == before || !window.tracks_leaving() {
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
                for window in &mut self.groups {
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

    /// Brings every window's counted moments to the rows applied so far, `..end`: what reads
    /// of them then give.
    #[inline]
    pub(crate) fn settle(&mut self, end: usize) {
        let to = end - self.begin;
        for window in &mut self.groups {
            let from = window.start - self.begin;
            for source in &window.sources {
                if let MomentSource::Counted { counted, prefix } = *source {
                    window.counted[counted] = self.prefixes[prefix].moments(from, to);
                }
            }
        }
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
    use crate::plan::{InputKind, WindowSpec};

    const TEN_MINUTES: Frame = Frame::Range {
        width_micros: 600_000_000,
    };

    fn spec(kind: AggKind, input: usize, frame: Frame) -> WindowSpec {
        WindowSpec { kind, input, frame }
    }

    #[test]
    fn only_moments_read_exactly_are_counted_from_prefix_totals() {
        // Inputs: 0 a float, 1 an integer, 2 a decimal, 3 an integer averaged.
        let kinds = vec![
            InputKind::Float,
            InputKind::Integer,
            InputKind::Decimal {
                scale: 2,
                avg_multiplier: 10_000,
            },
            InputKind::Integer,
        ];
        let specs = vec![
            spec(AggKind::Count, 0, TEN_MINUTES),
            spec(AggKind::Sum, 1, TEN_MINUTES),
            spec(AggKind::Avg, 2, TEN_MINUTES),
            spec(AggKind::Avg, 3, TEN_MINUTES),
            spec(AggKind::Sum, 0, Frame::Unbounded),
            spec(AggKind::Count, 1, Frame::Unbounded),
            spec(AggKind::StddevSamp, 1, Frame::Unbounded),
            spec(AggKind::Max, 2, Frame::Unbounded),
        ];
        let plan = WindowPlan::new(specs, 4)
            .and_then(|p| p.with_input_kinds(kinds))
            .unwrap();
        // Ten minutes: a float's count, an integer's sum and a decimal's average are exact; an
        // integer's average is a float (it needs the float sum).
        assert_eq!(
            exactly_read(&plan, 0),
            vec![Some(false), Some(true), Some(true), None]
        );
        // Unbounded: a float's sum is a float; the integer is counted and also has a standard
        // deviation, so its moments are kept value by value.
        assert_eq!(exactly_read(&plan, 1), vec![None, None]);

        let windows = SegmentWindows::new(&plan);
        let inputs: Vec<(usize, bool)> = (windows.prefixes.iter())
            .map(|p| (p.input, p.sums))
            .collect();
        assert_eq!(inputs, vec![(0, false), (1, true), (2, true)]);
        // The ten-minute group tracks only the integer's average; the unbounded one tracks its
        // moments and the maximum.
        assert_eq!(windows.groups[0].tracked.moment_inputs, vec![3]);
        assert_eq!(windows.groups[1].tracked.moment_inputs, vec![0, 1]);
        assert_eq!(windows.groups[1].tracked.max_inputs, vec![2]);
        assert_eq!(windows.read, vec![true, true, true, true]);

        // The fraud demo's counts: nothing reads their inputs row by row.
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
        assert!(windows.groups.iter().all(|g| !g.tracks_leaving()));
    }
}
