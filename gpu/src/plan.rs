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
        Ok(WindowPlan {
            specs,
            inputs,
            groups,
            outputs,
        })
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
