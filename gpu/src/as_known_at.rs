//! Windows as known at a time (bitemporal): for a probe of key `k` at time `t`, each frame's
//! window holds the events of `k` with event time in the frame ending at `t` **and** available
//! (committed, visible) at or before `t`: what a model in production could have read at `t`.
//!
//! An event enters a probe's view at `max(event time, availability)` and leaves a range frame of
//! width `w` when `t > event time + w`. Both moments are monotone in `t`, so a sweep over each
//! key's probes in time order adds and removes events in any order of event time: the moments
//! support arbitrary removal, and minima and maxima are counted multisets of order keys. The
//! values read are those of the streaming kernels (the same moments and read functions).

use crate::error::KernelError;
use crate::key_state::{read, read_exact, GroupAggregates, InputValue, COUNTED};
use crate::keyed::InputColumn;
use crate::moments::Moments;
use crate::output::FeatureOutput;
use crate::plan::{Frame, WindowPlan};
use std::collections::{BTreeMap, HashMap};

/// Events with the time each became available.
pub struct KnownEvents<'a> {
    /// Encoded key of each event.
    pub keys: &'a [&'a [u8]],
    /// Event time of each event (µs).
    pub times: &'a [i64],
    /// When each event became available (µs).
    pub available: &'a [i64],
    /// Kernel inputs, one column per plan input.
    pub inputs: &'a [InputColumn<'a>],
}

/// The quantities of one frame group over the events in view.
struct Group {
    moments: Vec<Moments>,
    mins: Vec<BTreeMap<i128, u32>>,
    maxs: Vec<BTreeMap<i128, u32>>,
}

impl GroupAggregates for Group {
    fn moments(&self, i: usize) -> &Moments {
        &self.moments[i]
    }
    fn min(&self, i: usize) -> Option<i128> {
        self.mins[i].keys().next().copied()
    }
    fn max(&self, i: usize) -> Option<i128> {
        self.maxs[i].keys().next_back().copied()
    }
}

fn take(multiset: &mut BTreeMap<i128, u32>, key: i128) {
    if let Some(n) = multiset.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            multiset.remove(&key);
        }
    }
}

impl Group {
    fn new(plan: &WindowPlan, g: usize) -> Self {
        let group = &plan.groups[g];
        Group {
            moments: vec![Moments::default(); group.moment_inputs.len()],
            mins: vec![BTreeMap::new(); group.min_inputs.len()],
            maxs: vec![BTreeMap::new(); group.max_inputs.len()],
        }
    }

    fn change(&mut self, plan: &WindowPlan, g: usize, values: &[Option<InputValue>], add: bool) {
        let group = &plan.groups[g];
        for ((m, &input), &level) in self
            .moments
            .iter_mut()
            .zip(&group.moment_inputs)
            .zip(&group.moment_levels)
        {
            if let Some(x) = values[input] {
                if add {
                    m.add(x.as_f64(), level);
                } else {
                    m.remove(x.as_f64(), level);
                }
                if let Some(e) = x.as_exact() {
                    if add {
                        m.add_exact(e);
                    } else {
                        m.remove_exact(e);
                    }
                }
            }
        }
        for (sets, inputs) in [
            (&mut self.mins, &group.min_inputs),
            (&mut self.maxs, &group.max_inputs),
        ] {
            for (set, &input) in sets.iter_mut().zip(inputs) {
                if let Some(x) = values[input] {
                    if add {
                        *set.entry(x.key()).or_insert(0) += 1;
                    } else {
                        take(set, x.key());
                    }
                }
            }
        }
    }
}

/// Evaluates `plan` at each probe (key and time): windows over the `events` of its key that
/// were in the frame and available at the probe's time. Rows of the output are the probes.
pub fn evaluate_as_known_at(
    plan: &WindowPlan,
    events: &KnownEvents<'_>,
    probe_keys: &[&[u8]],
    probe_times: &[i64],
) -> Result<FeatureOutput, KernelError> {
    let n = events.times.len();
    if events.keys.len() != n
        || events.available.len() != n
        || probe_keys.len() != probe_times.len()
    {
        return Err(KernelError::InputMismatch(
            "events and probes need one key, time (and availability) each".into(),
        ));
    }
    if events.inputs.len() != plan.inputs() {
        return Err(KernelError::InputMismatch(format!(
            "{} input columns for a plan of {}",
            events.inputs.len(),
            plan.inputs()
        )));
    }
    let mut by_key: HashMap<&[u8], (Vec<u32>, Vec<u32>)> = HashMap::new();
    for (e, key) in events.keys.iter().enumerate() {
        by_key.entry(key).or_default().0.push(e as u32);
    }
    for (p, key) in probe_keys.iter().enumerate() {
        by_key.entry(key).or_default().1.push(p as u32);
    }
    let value =
        |row: usize, input: usize| match events.inputs[input].get(row, plan.input_kind(input)) {
            Some(_) if plan.is_count_only(input) => Some(COUNTED),
            v => v,
        };
    let specs = plan.specs().len();
    let mut out = FeatureOutput::new(specs, probe_times.len());
    let outputs_of: Vec<Vec<usize>> = (0..plan.groups.len())
        .map(|g| (0..specs).filter(|&s| plan.outputs[s].0 == g).collect())
        .collect();
    for (event_rows, mut probes) in by_key.into_values() {
        if probes.is_empty() {
            continue;
        }
        probes.sort_by_key(|&p| probe_times[p as usize]);
        let values: Vec<Vec<Option<InputValue>>> = event_rows
            .iter()
            .map(|&e| (0..plan.inputs()).map(|i| value(e as usize, i)).collect())
            .collect();
        for (g, group) in plan.groups.iter().enumerate() {
            // (time, event, add): an event enters at max(time, availability) and leaves a range
            // frame of width w after time + w; one that leaves before it enters is never seen.
            let mut changes: Vec<(i64, usize, bool)> = Vec::with_capacity(2 * event_rows.len());
            for (k, &e) in event_rows.iter().enumerate() {
                let (t, a) = (events.times[e as usize], events.available[e as usize]);
                let enters = t.max(a);
                match group.frame {
                    Frame::Unbounded => changes.push((enters, k, true)),
                    Frame::Range { width_micros } => {
                        let leaves = t.saturating_add(width_micros).saturating_add(1);
                        if leaves > enters {
                            changes.push((enters, k, true));
                            changes.push((leaves, k, false));
                        }
                    }
                }
            }
            changes.sort_by_key(|c| c.0);
            let mut state = Group::new(plan, g);
            let mut next = 0;
            for &p in &probes {
                let at = probe_times[p as usize];
                while next < changes.len() && changes[next].0 <= at {
                    let (_, k, add) = changes[next];
                    state.change(plan, g, &values[k], add);
                    next += 1;
                }
                for &s in &outputs_of[g] {
                    if plan.is_exact_output(s) {
                        out.set_exact(s, p as usize, read_exact(plan, s, &state));
                    } else {
                        out.set(s, p as usize, read(plan, s, &state));
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AggKind, WindowSpec};

    #[test]
    fn late_available_events_are_seen_only_after_they_arrive() {
        let ten = Frame::Range { width_micros: 10 };
        let plan = WindowPlan::new(
            vec![
                WindowSpec {
                    kind: AggKind::Count,
                    input: 0,
                    frame: ten,
                },
                WindowSpec {
                    kind: AggKind::Max,
                    input: 0,
                    frame: Frame::Unbounded,
                },
            ],
            1,
        )
        .unwrap();
        // Events at 0, 5 and 8; the one at 5 becomes available only at 20.
        let k: &[u8] = b"k";
        let values = [1.0, 7.0, 2.0];
        let inputs = [InputColumn::floats(&values, None)];
        let events = KnownEvents {
            keys: &[k, k, k],
            times: &[0, 5, 8],
            available: &[0, 20, 8],
            inputs: &inputs,
        };
        let probe_times = [8, 12, 15, 20, 30];
        let out = evaluate_as_known_at(&plan, &events, &[k; 5], &probe_times).expect("evaluates");
        // count over [t-10, t] among available: t=8: {0, 8}; 12: {8}; 15: {8}; 20: {5?} 5 is
        // outside [10, 20], so {}; 30: {}.
        assert_eq!(out.values[0], vec![2.0, 1.0, 1.0, 0.0, 0.0]);
        // max over everything available: 2 until 20, then 7.
        assert_eq!(out.values[1], vec![2.0, 2.0, 2.0, 7.0, 7.0]);
        let x: &[u8] = b"x";
        let none = evaluate_as_known_at(&plan, &events, &[x], &[8]).unwrap();
        assert_eq!((none.values[0][0], none.valid[1][0]), (0.0, false));
    }
}
