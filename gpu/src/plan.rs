//! Which aggregates a feature view computes, grouped by window frame for the kernels.

use crate::agg::AggKind;
use crate::moments::MomentLevel;
use serde::{Deserialize, Serialize};

/// The extent of a window, relative to the current event at time `t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Frame {
    /// `RANGE BETWEEN INTERVAL w PRECEDING AND CURRENT ROW`: events in `[t - w, t]`.
    Range {
        /// Width `w` in microseconds.
        width_micros: i64,
    },
    /// `RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW`: every event up to `t`.
    Unbounded,
}

/// How the kernels read an input column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InputKind {
    /// Floating point (and anything DataFusion aggregates as `Float64`).
    Float,
    /// Integers that fit `i64`: sums, minima and maxima are exact (summed as `i128`; a sum
    /// that leaves the output type wraps, as DataFusion's does); other aggregates read them as
    /// `f64`. (`UInt64` arguments are [`InputKind::Decimal`] with scale 0.)
    Integer,
    /// Decimals with `scale`, given as unscaled integers: sums, minima, maxima and averages
    /// are exact. An average is the sum times `avg_multiplier` (10^(output scale - scale)),
    /// divided by the count and truncated, as DataFusion computes it.
    Decimal {
        /// Digits after the decimal point.
        scale: i8,
        /// 10^(scale of the average's output type - `scale`).
        avg_multiplier: i128,
    },
}

impl InputKind {
    /// Whether values of this input are given and kept as exact integers.
    pub fn is_exact(self) -> bool {
        !matches!(self, InputKind::Float)
    }

    /// An exact value as the `f64` that float aggregates (variance, integer averages) read,
    /// converted as Arrow casts it.
    #[inline]
    pub fn to_f64(self, value: i128) -> f64 {
        // Both conversions round the same integer to the nearest `f64`; from `i64` it is one
        // instruction, from `i128` a call into the runtime library.
        let float = match i64::try_from(value) {
            Ok(small) => small as f64,
            Err(_) => value as f64,
        };
        match self {
            InputKind::Decimal { scale, .. } => float / power_of_ten(scale),
            _ => float,
        }
    }
}

/// 10^`scale` as `f64`, as `10f64.powi(scale)` gives it: a table for the powers that are
/// exact in `f64` (so `powi`'s products are exact too, and equal them), `powi` beyond.
#[inline]
fn power_of_ten(scale: i8) -> f64 {
    const EXACT: [f64; 23] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
        1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ];
    match usize::try_from(scale) {
        Ok(exact) if exact < EXACT.len() => EXACT[exact],
        _ => 10f64.powi(i32::from(scale)),
    }
}

/// One feature column: an aggregate of one input column over one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WindowSpec {
    /// The aggregate.
    pub kind: AggKind,
    /// Index of the input column (in the order the runtime passes inputs).
    pub input: usize,
    /// The frame.
    pub frame: Frame,
}

/// Where a group keeps one tracked quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Slot {
    /// Index into the group's moments.
    Moments(usize),
    /// Index into the group's minimum trackers.
    Min(usize),
    /// Index into the group's maximum trackers.
    Max(usize),
}

/// All specs sharing one frame, with the distinct quantities they need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct FrameGroup {
    pub(crate) frame: Frame,
    /// Inputs whose moments the group tracks.
    pub(crate) moment_inputs: Vec<usize>,
    /// For each of `moment_inputs`, how much of the moments its aggregates read.
    pub(crate) moment_levels: Vec<MomentLevel>,
    /// Inputs whose minimum the group tracks.
    pub(crate) min_inputs: Vec<usize>,
    /// Inputs whose maximum the group tracks.
    pub(crate) max_inputs: Vec<usize>,
}

/// The compiled form of a list of [`WindowSpec`]s: specs grouped by frame so that each frame's
/// boundary moves once per event and each `(frame, input)` pair's moments are kept once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowPlan {
    specs: Vec<WindowSpec>,
    inputs: usize,
    /// Per input, how it is read.
    kinds: Vec<InputKind>,
    /// Per spec, whether its value is exact (`FeatureOutput::exact`) rather than `f64`.
    exact_outputs: Vec<bool>,
    /// Per input, whether only counts read it (then only its validity is kept).
    count_only: Vec<bool>,
    pub(crate) groups: Vec<FrameGroup>,
    /// For each spec: its group and slot.
    pub(crate) outputs: Vec<(usize, Slot)>,
}

impl WindowPlan {
    /// Compiles specs over `inputs` input columns.
    /// An input index out of range is an error.
    pub fn new(specs: Vec<WindowSpec>, inputs: usize) -> Result<Self, crate::KernelError> {
        let mut groups: Vec<FrameGroup> = Vec::new();
        let mut outputs = Vec::with_capacity(specs.len());
        for spec in &specs {
            if spec.input >= inputs {
                return Err(crate::KernelError::InputMismatch(format!(
                    "spec reads input {} but only {inputs} inputs exist",
                    spec.input
                )));
            }
            let g = match groups.iter().position(|g| g.frame == spec.frame) {
                Some(g) => g,
                None => {
                    groups.push(FrameGroup {
                        frame: spec.frame,
                        moment_inputs: Vec::new(),
                        moment_levels: Vec::new(),
                        min_inputs: Vec::new(),
                        max_inputs: Vec::new(),
                    });
                    groups.len() - 1
                }
            };
            let group = &mut groups[g];
            let (list, make): (&mut Vec<usize>, fn(usize) -> Slot) = match spec.kind {
                AggKind::Min => (&mut group.min_inputs, Slot::Min),
                AggKind::Max => (&mut group.max_inputs, Slot::Max),
                _ => (&mut group.moment_inputs, Slot::Moments),
            };
            let index = match list.iter().position(|&i| i == spec.input) {
                Some(i) => i,
                None => {
                    list.push(spec.input);
                    list.len() - 1
                }
            };
            if let Some(level) = spec.kind.moment_level() {
                match group.moment_levels.get_mut(index) {
                    Some(l) => *l = (*l).max(level),
                    None => group.moment_levels.push(level),
                }
            }
            outputs.push((g, make(index)));
        }
        let count_only = (0..inputs)
            .map(|i| {
                specs
                    .iter()
                    .filter(|s| s.input == i)
                    .all(|s| s.kind == AggKind::Count)
            })
            .collect();
        Ok(WindowPlan {
            exact_outputs: vec![false; specs.len()],
            count_only,
            specs,
            inputs,
            kinds: vec![InputKind::Float; inputs],
            groups,
            outputs,
        })
    }

    /// The same plan with `kinds`, one per input (all [`InputKind::Float`] by default).
    pub fn with_input_kinds(mut self, kinds: Vec<InputKind>) -> Result<Self, crate::KernelError> {
        if kinds.len() != self.inputs {
            return Err(crate::KernelError::InputMismatch(format!(
                "{} input kinds for {} inputs",
                kinds.len(),
                self.inputs
            )));
        }
        self.exact_outputs = self
            .specs
            .iter()
            .map(|s| match (s.kind, kinds[s.input]) {
                (AggKind::Sum | AggKind::Min | AggKind::Max, kind) => kind.is_exact(),
                (AggKind::Avg, InputKind::Decimal { .. }) => true,
                _ => false,
            })
            .collect();
        self.kinds = kinds;
        Ok(self)
    }

    /// How input `input` is read.
    #[inline]
    pub fn input_kind(&self, input: usize) -> InputKind {
        self.kinds[input]
    }

    /// Whether only counts read input `input`: its values do not matter, only their nullness.
    #[inline]
    pub fn is_count_only(&self, input: usize) -> bool {
        self.count_only[input]
    }

    /// Whether any input is exact (such plans run on the CPU kernels).
    pub fn has_exact_inputs(&self) -> bool {
        self.kinds.iter().any(|k| k.is_exact())
    }

    /// Whether spec `spec` produces exact values (in `FeatureOutput::exact`).
    #[inline]
    pub fn is_exact_output(&self, spec: usize) -> bool {
        self.exact_outputs[spec]
    }

    /// The specs, in output order.
    pub fn specs(&self) -> &[WindowSpec] {
        &self.specs
    }

    /// Number of input columns the plan reads.
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// Whether any frame is unbounded (state of such keys is kept for their lifetime).
    pub fn has_unbounded(&self) -> bool {
        self.groups.iter().any(|g| g.frame == Frame::Unbounded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_values_convert_as_through_i128_and_powi() {
        for scale in -40i8..=40 {
            assert_eq!(
                power_of_ten(scale).to_bits(),
                10f64.powi(i32::from(scale)).to_bits(),
                "scale {scale}"
            );
        }
        let mut bits = crate::test_rng::xorshift(0x2545_f491_4f6c_dd1d);
        for shift in 0..127 {
            let value = (((bits() as u128) << 64 | bits() as u128) >> shift) as i128;
            for value in [value, value.wrapping_neg(), value >> 64, -(value >> 64)] {
                let kind = InputKind::Decimal {
                    scale: (shift % 20) as i8,
                    avg_multiplier: 1,
                };
                let slow = value as f64 / 10f64.powi(shift % 20);
                assert_eq!(kind.to_f64(value).to_bits(), slow.to_bits(), "{value}");
                assert_eq!(InputKind::Integer.to_f64(value), value as f64, "{value}");
            }
        }
    }

    #[test]
    fn groups_share_frames_and_moments() {
        let r = Frame::Range { width_micros: 60 };
        let specs = vec![
            WindowSpec {
                kind: AggKind::Sum,
                input: 0,
                frame: r,
            },
            WindowSpec {
                kind: AggKind::Avg,
                input: 0,
                frame: r,
            },
            WindowSpec {
                kind: AggKind::Max,
                input: 0,
                frame: r,
            },
            WindowSpec {
                kind: AggKind::Count,
                input: 1,
                frame: Frame::Unbounded,
            },
        ];
        let plan = WindowPlan::new(specs, 2).unwrap();
        assert_eq!(plan.groups.len(), 2);
        assert_eq!(plan.groups[0].moment_inputs, vec![0]);
        assert_eq!(plan.groups[0].moment_levels, vec![MomentLevel::Sum]);
        assert_eq!(plan.groups[1].moment_levels, vec![MomentLevel::Count]);
        assert_eq!(plan.outputs[1], (0, Slot::Moments(0)));
        assert_eq!(plan.outputs[2], (0, Slot::Max(0)));
        assert!(plan.has_unbounded());
        assert!(WindowPlan::new(
            vec![WindowSpec {
                kind: AggKind::Sum,
                input: 3,
                frame: r
            }],
            2
        )
        .is_err());
    }
}
