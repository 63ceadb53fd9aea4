//! Window state of one entity key.

use crate::extrema::{Extreme, WindowExtreme};
use crate::moments::{MomentLevel, Moments};
use crate::plan::{Frame, Slot, WindowPlan};
use crate::AggKind;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// State of one frame group for one key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct GroupState {
    /// Sequence number of the first event inside the window.
    start: u64,
    moments: Vec<Moments>,
    mins: Vec<WindowExtreme>,
    maxs: Vec<WindowExtreme>,
}

/// Incremental window state of one key: the key's events still inside its longest range window,
/// and per frame the running quantities over the events inside that frame.
///
/// Memory is proportional to the events inside the longest range window; unbounded frames keep
/// O(1) state. Events must be applied in non-decreasing event time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyWindowState {
    /// Sequence number of `times[0]`; sequence numbers count this key's events from 0.
    base: u64,
    times: VecDeque<i64>,
    /// Per input column, the value of each retained event (`None` = SQL null).
    values: Vec<VecDeque<Option<f64>>>,
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
                let sliding = matches!(g.frame, Frame::Range { .. });
                GroupState {
                    start: 0,
                    moments: vec![Moments::default(); g.moment_inputs.len()],
                    mins: (0..g.min_inputs.len())
                        .map(|_| WindowExtreme::new(Extreme::Min, sliding))
                        .collect(),
                    maxs: (0..g.max_inputs.len())
                        .map(|_| WindowExtreme::new(Extreme::Max, sliding))
                        .collect(),
                }
            })
            .collect();
        KeyWindowState {
            base: 0,
            times: VecDeque::new(),
            values: vec![VecDeque::new(); plan.inputs()],
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
    pub fn push(&mut self, plan: &WindowPlan, t: i64, value: impl Fn(usize) -> Option<f64>) {
        let seq = self.next_seq();
        self.times.push_back(t);
        for (i, column) in self.values.iter_mut().enumerate() {
            column.push_back(value(i));
        }
        for (group, g) in self.groups.iter_mut().zip(&plan.groups) {
            for ((m, &input), &level) in group
                .moments
                .iter_mut()
                .zip(&g.moment_inputs)
                .zip(&g.moment_levels)
            {
                if let Some(x) = value(input) {
                    m.add(x, level);
                }
            }
            for (e, &input) in group.mins.iter_mut().zip(&g.min_inputs) {
                if let Some(x) = value(input) {
                    e.add(seq, x);
                }
            }
            for (e, &input) in group.maxs.iter_mut().zip(&g.max_inputs) {
                if let Some(x) = value(input) {
                    e.add(seq, x);
                }
            }
        }
        self.last_time = Some(t);
    }

    /// Moves every range window to end at `t`: events older than `t - width` leave it. Then
    /// drops retained events that no window can reach any more.
    #[inline]
    pub fn advance(&mut self, plan: &WindowPlan, t: i64) {
        let end = self.next_seq();
        for (group, g) in self.groups.iter_mut().zip(&plan.groups) {
            let Frame::Range { width_micros } = g.frame else {
                continue;
            };
            let lower = t.saturating_sub(width_micros);
            let before = group.start;
            while group.start < end && self.times[(group.start - self.base) as usize] < lower {
                let row = (group.start - self.base) as usize;
                for ((m, &input), &level) in group
                    .moments
                    .iter_mut()
                    .zip(&g.moment_inputs)
                    .zip(&g.moment_levels)
                {
                    if let Some(x) = self.values[input][row] {
                        m.remove(x, level);
                    }
                }
                group.start += 1;
            }
            if group.start != before {
                for e in group.mins.iter_mut().chain(group.maxs.iter_mut()) {
                    e.evict_before(group.start);
                }
                // Removals can leave the shift far from what remains: rebuild those moments
                // from the retained values (rare; see `Moments::drifted`).
                let from = (group.start - self.base) as usize;
                for ((m, &input), &level) in group
                    .moments
                    .iter_mut()
                    .zip(&g.moment_inputs)
                    .zip(&g.moment_levels)
                {
                    if level == MomentLevel::Spread && m.drifted() {
                        m.rebuild(self.values[input].range(from..).flatten().copied(), level);
                    }
                }
            }
        }
        self.trim(plan);
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
                column.drain(..drop);
            }
            self.base += drop as u64;
        }
    }

    /// Value of output `spec` (index into the plan's specs) for a window ending at the last
    /// advanced time.
    #[inline]
    pub fn read(&self, plan: &WindowPlan, spec: usize) -> Option<f64> {
        let (g, slot) = plan.outputs[spec];
        let group = &self.groups[g];
        let kind = plan.specs()[spec].kind;
        match slot {
            Slot::Min(i) => group.mins[i].value(),
            Slot::Max(i) => group.maxs[i].value(),
            Slot::Moments(i) => {
                let m = &group.moments[i];
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

    /// Whether the state holds nothing a future event could read (no retained events, no
    /// lifetime aggregates): such a key can be forgotten.
    pub fn is_idle(&self, plan: &WindowPlan) -> bool {
        self.times.is_empty() && !plan.has_unbounded()
    }
}
