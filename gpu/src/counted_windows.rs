//! The CPU kernel's exactly read windows: counts, and sums and decimal averages of exact
//! inputs, computed one frame at a time over a key's segment of sorted rows.
//!
//! Such a window's value is a difference of two prefix totals over the segment (non-null
//! values, wrapping exact sums), which are the same integers whatever the order of additions
//! and removals, so nothing is added or removed value by value: per instant, the frame's first
//! row moves forward and each spec reads its two totals. The windows whose values depend on
//! that order (float sums, variances, minima and maxima) are moved row by row by
//! [`crate::segment_windows::SegmentWindows`], as the streaming state moves them.
//!
//! Measured on the fraud demo's views (1M and 10M sorted rows, 20 a key, one core): the merchant
//! view, whose two features are both read exactly, took 92-160 ns a row when its windows were
//! moved row by row with the others, every frame group in turn for every row, and reads went
//! through the generic per-row dispatch; 58-80 ns a row frame by frame (`kernel_bench`).

use crate::backend::{Scatter, SortedRows};
use crate::key_state::{read_exact, GroupAggregates};
use crate::moments::{MomentLevel, Moments};
use crate::output::FeatureOutput;
use crate::plan::{Frame, Slot, WindowPlan};
use crate::AggKind;

/// Per moments of frame group `g` of `plan`: `Some(sums)` where every read of them is exact (a
/// count, or the exact sum or average of an exact input; `sums` when some read needs the sum),
/// `None` where some read needs the float quantities.
pub(crate) fn exactly_read(plan: &WindowPlan, g: usize) -> Vec<Option<bool>> {
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
        match column.validity {
            None => self.counts.extend(1..=(end - begin) as u64),
            Some(valid) => {
                let mut n = 0;
                self.counts.extend(valid[begin..end].iter().map(|&v| {
                    n += u64::from(v);
                    n
                }));
            }
        }
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

/// The moments of one window from prefix totals, read as a frame group's quantities.
struct CountedGroup(Moments);

impl GroupAggregates for CountedGroup {
    #[inline]
    fn moments(&self, _: usize) -> &Moments {
        &self.0
    }
    #[inline]
    fn min(&self, _: usize) -> Option<i128> {
        None
    }
    #[inline]
    fn max(&self, _: usize) -> Option<i128> {
        None
    }
}

/// One exactly read spec.
#[derive(Debug)]
struct CountedSpec {
    spec: usize,
    /// Its input's prefix totals.
    prefix: usize,
}

/// The exactly read specs of one frame.
#[derive(Debug)]
struct CountedFrame {
    /// Width of a range frame; `None` for an unbounded one.
    width: Option<i64>,
    specs: Vec<CountedSpec>,
}

/// Every exactly read spec of a plan, evaluated one key's segment at a time.
#[derive(Debug)]
pub(crate) struct CountedWindows {
    frames: Vec<CountedFrame>,
    prefixes: Vec<PrefixTotals>,
    /// Per instant of the current segment, the first row (offset into the segment) of the
    /// frame being evaluated.
    instant_starts: Vec<usize>,
}

impl CountedWindows {
    /// The exactly read specs of `plan` (none when every read needs the moments kept value by
    /// value).
    pub(crate) fn new(plan: &WindowPlan) -> Self {
        let mut prefixes: Vec<PrefixTotals> = Vec::new();
        let mut frames = Vec::new();
        for (g, group) in plan.groups.iter().enumerate() {
            let exact = exactly_read(plan, g);
            let mut specs = Vec::new();
            for (spec, &(og, slot)) in plan.outputs.iter().enumerate() {
                let (true, Slot::Moments(i)) = (og == g, slot) else {
                    continue;
                };
                let Some(sums) = exact[i] else { continue };
                let input = group.moment_inputs[i];
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
                specs.push(CountedSpec { spec, prefix });
            }
            if !specs.is_empty() {
                frames.push(CountedFrame {
                    width: match group.frame {
                        Frame::Range { width_micros } => Some(width_micros),
                        Frame::Unbounded => None,
                    },
                    specs,
                });
            }
        }
        CountedWindows {
            frames,
            prefixes,
            instant_starts: Vec::new(),
        }
    }

    /// Whether spec `spec` is evaluated here.
    #[cfg(test)]
    pub(crate) fn evaluates(&self, spec: usize) -> bool {
        (self.frames.iter()).any(|f| f.specs.iter().any(|s| s.spec == spec))
    }

    /// Writes every exactly read spec of the segment of sorted rows `begin..end`, whose
    /// instants end at `instant_ends` ([`SortedRows::instant_ends`]), through `positions`
    /// (sorted row to output row, or [`Scatter::SKIP`]) into `out`.
    pub(crate) fn evaluate_segment(
        &mut self,
        plan: &WindowPlan,
        rows: &SortedRows<'_>,
        (begin, end): (usize, usize),
        instant_ends: &[usize],
        out: &mut FeatureOutput,
        positions: &[u32],
    ) {
        if self.frames.is_empty() {
            return;
        }
        for prefix in &mut self.prefixes {
            prefix.fill(rows, begin, end);
        }
        let times = &rows.times[begin..end];
        let positions = &positions[begin..end];
        for frame in &self.frames {
            self.instant_starts.clear();
            let (mut first, mut start) = (0, 0);
            for &next in instant_ends {
                if let Some(width) = frame.width {
                    let lower = times[first].saturating_sub(width);
                    while start < first && times[start] < lower {
                        start += 1;
                    }
                }
                self.instant_starts.push(start);
                first = next;
            }
            for spec in &frame.specs {
                let prefix = &self.prefixes[spec.prefix];
                let exact = plan.is_exact_output(spec.spec);
                let mut first = 0;
                for (&start, &next) in self.instant_starts.iter().zip(instant_ends) {
                    let wanted = &positions[first..next];
                    first = next;
                    // Training sets want a few probes' values only.
                    if wanted.iter().all(|&p| p == Scatter::SKIP) {
                        continue;
                    }
                    let targets = (wanted.iter())
                        .filter(|&&p| p != Scatter::SKIP)
                        .map(|&p| p as usize);
                    // Counts are float outputs; sums and decimal averages exact ones.
                    if exact {
                        let window = CountedGroup(prefix.moments(start, next));
                        let value = read_exact(plan, spec.spec, &window);
                        targets.for_each(|row| out.set_exact(spec.spec, row, value));
                    } else {
                        let count = (prefix.counts[next] - prefix.counts[start]) as f64;
                        targets.for_each(|row| out.set(spec.spec, row, Some(count)));
                    }
                }
            }
        }
    }
}

/// A range frame of ten minutes, for tests.
#[cfg(test)]
pub(crate) const TEN_MINUTES: Frame = Frame::Range {
    width_micros: 600_000_000,
};

/// A spec, for tests.
#[cfg(test)]
pub(crate) fn test_spec(kind: AggKind, input: usize, frame: Frame) -> crate::plan::WindowSpec {
    crate::plan::WindowSpec { kind, input, frame }
}

/// A plan mixing what is read exactly with what is not, over 0 a float, 1 an integer, 2 a
/// decimal and 3 an integer averaged: counted, an integer's sum and a decimal's average over
/// ten minutes, an integer's average there, and unbounded a float's sum, the integer's count
/// and standard deviation and the decimal's maximum.
#[cfg(test)]
pub(crate) fn mixed_test_plan() -> WindowPlan {
    use crate::plan::InputKind;
    let (spec, ten_minutes) = (test_spec, TEN_MINUTES);
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
        spec(AggKind::Count, 0, ten_minutes),
        spec(AggKind::Sum, 1, ten_minutes),
        spec(AggKind::Avg, 2, ten_minutes),
        spec(AggKind::Avg, 3, ten_minutes),
        spec(AggKind::Sum, 0, Frame::Unbounded),
        spec(AggKind::Count, 1, Frame::Unbounded),
        spec(AggKind::StddevSamp, 1, Frame::Unbounded),
        spec(AggKind::Max, 2, Frame::Unbounded),
    ];
    WindowPlan::new(specs, 4)
        .and_then(|p| p.with_input_kinds(kinds))
        .expect("a valid plan")
}

#[cfg(test)]
mod tests {
    use super::*;

    use test_spec as spec;

    #[test]
    fn only_moments_read_exactly_are_counted_from_prefix_totals() {
        let plan = mixed_test_plan();
        // Ten minutes: a float's count, an integer's sum and a decimal's average are exact; an
        // integer's average is a float (it needs the float sum).
        assert_eq!(
            exactly_read(&plan, 0),
            vec![Some(false), Some(true), Some(true), None]
        );
        // Unbounded: a float's sum is a float; the integer is counted and also has a standard
        // deviation, so its moments are kept value by value.
        assert_eq!(exactly_read(&plan, 1), vec![None, None]);

        let counted = CountedWindows::new(&plan);
        let inputs: Vec<(usize, bool)> = (counted.prefixes.iter())
            .map(|p| (p.input, p.sums))
            .collect();
        assert_eq!(inputs, vec![(0, false), (1, true), (2, true)]);
        let evaluated: Vec<usize> = (0..8).filter(|&s| counted.evaluates(s)).collect();
        assert_eq!(evaluated, vec![0, 1, 2]);
    }

    #[test]
    fn windows_end_after_ties_and_start_at_their_width() {
        let plan = WindowPlan::new(
            vec![
                spec(AggKind::Count, 0, TEN_MINUTES),
                spec(AggKind::Count, 0, Frame::Unbounded),
            ],
            1,
        )
        .unwrap();
        let minute = 60_000_000;
        // One key: two rows at 0, one at 10 minutes (the rows at 0 still inside), one at 11.
        let times = [0, 0, 10 * minute, 11 * minute];
        let valid = [true, false, true, true];
        let ones = [1.0; 4];
        let inputs = [crate::InputColumn::floats(&ones, Some(&valid))];
        let rows = SortedRows {
            offsets: &[0, 4],
            times: &times,
            inputs: &inputs,
        };
        let mut out = FeatureOutput::new(2, 4);
        // The second row's features are not wanted.
        let positions = [3, Scatter::SKIP, 1, 0];
        let mut counted = CountedWindows::new(&plan);
        let mut ends = Vec::new();
        rows.instant_ends(0, 4, &mut ends);
        assert_eq!(ends, vec![2, 3, 4]);
        counted.evaluate_segment(&plan, &rows, (0, 4), &ends, &mut out, &positions);
        assert_eq!(out.values[0], vec![2.0, 2.0, 0.0, 1.0]);
        assert_eq!(out.values[1], vec![3.0, 2.0, 0.0, 1.0]);
        assert_eq!(out.valid[0], vec![true, true, false, true]);
    }

    #[test]
    fn an_exact_spec_without_any_value_has_no_exact_column() {
        let plan = WindowPlan::new(vec![spec(AggKind::Sum, 0, TEN_MINUTES)], 1)
            .and_then(|p| p.with_input_kinds(vec![crate::InputKind::Integer]))
            .unwrap();
        let (times, valid, values) = ([0, 1], [false, false], [7, 8]);
        let inputs = [crate::InputColumn {
            values: &[],
            validity: Some(&valid),
            exact: Some(&values),
        }];
        let rows = SortedRows {
            offsets: &[0, 2],
            times: &times,
            inputs: &inputs,
        };
        let mut out = FeatureOutput::new(1, 2);
        let mut counted = CountedWindows::new(&plan);
        counted.evaluate_segment(&plan, &rows, (0, 2), &[1, 2], &mut out, &[0, 1]);
        assert_eq!(out.exact[0], None, "as the streaming state leaves it");
        assert_eq!(out.valid[0], vec![false, false]);
    }
}
