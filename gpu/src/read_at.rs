//! Point-in-time reads from stored window state: each window of a key ending at a requested
//! time, with no event of its own (what an online store serves).

use crate::error::KernelError;
use crate::key_state::{KeyWindowState, MovedGroups, ReadState};
use crate::output::FeatureOutput;
use crate::plan::WindowPlan;

/// The windows of each key ending at `at`, one row per entry of `states`: `None` is a key with
/// no state (empty windows: count 0, other aggregates null). A window `RANGE w PRECEDING`
/// holds the key's events with time in `[at - w, at]`, as SQL's frame for a row at `at`.
///
/// A state only knows the events up to its newest one, so `at` must not be older than that
/// ([`KernelError::ReadBeforeState`] otherwise). The states are read, not changed: each
/// window's aggregates are moved to `at` on a copy (a server's cached state serves many
/// reads at once).
///
/// A state read with only some of its segments ([`ReadState`]) holds what the reads it
/// [`ReadState::serves`] need; when a window still loses an event that was not read (a later
/// `at`, or moments to rebuild from the whole window) the read fails with
/// [`KernelError::UnreadEvents`], naming every such row, for the caller to read those states
/// whole.
pub fn read_at(
    plan: &WindowPlan,
    states: &[Option<&ReadState>],
    at: i64,
) -> Result<FeatureOutput, KernelError> {
    let specs = plan.specs().len();
    let mut out = FeatureOutput::new(specs, states.len());
    let empty = ReadState::from(KeyWindowState::new(plan));
    let mut moved = MovedGroups::default();
    let mut unread = Vec::new();
    for (row, state) in states.iter().enumerate() {
        let state = match state {
            Some(state) => {
                if let Some(last) = state.last_time().filter(|&last| last > at) {
                    return Err(KernelError::ReadBeforeState { at, last });
                }
                *state
            }
            None => &empty,
        };
        if moved.load(&state.state, state, plan, at).is_err() {
            unread.push(row);
            continue;
        }
        for spec in 0..specs {
            let group = moved.group(&state.state, plan.outputs[spec].0);
            out.set_from_group(plan, group, spec, std::iter::once(row));
        }
    }
    if !unread.is_empty() {
        return Err(KernelError::UnreadEvents { rows: unread });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AggKind, Frame, InputColumn, KeyedWindows, WindowSpec};

    const MIN: i64 = 60_000_000;

    fn plan() -> WindowPlan {
        let ten = Frame::Range {
            width_micros: 10 * MIN,
        };
        let spec = |kind, input, frame| WindowSpec { kind, input, frame };
        WindowPlan::new(
            vec![
                spec(AggKind::Count, 0, ten),
                spec(AggKind::Sum, 1, ten),
                spec(AggKind::Max, 1, ten),
                spec(AggKind::StddevSamp, 1, ten),
                spec(AggKind::Count, 0, Frame::Unbounded),
            ],
            2,
        )
        .unwrap()
    }

    /// The windows of one key ending at `at`, straight from the definition.
    fn brute(events: &[(i64, f64)], at: i64) -> (f64, Option<f64>, Option<f64>, Option<f64>, f64) {
        let inside: Vec<f64> = events
            .iter()
            .filter(|(t, _)| *t >= at - 10 * MIN && *t <= at)
            .map(|e| e.1)
            .collect();
        let n = inside.len() as f64;
        let sum = (!inside.is_empty()).then(|| inside.iter().sum::<f64>());
        let max = inside.iter().copied().reduce(f64::max);
        let sd = (inside.len() > 1).then(|| {
            let mean = sum.unwrap() / n;
            (inside.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        });
        let lifetime = events.iter().filter(|(t, _)| *t <= at).count() as f64;
        (n, sum, max, sd, lifetime)
    }

    #[test]
    fn windows_decay_as_the_read_time_moves_on() {
        let plan = plan();
        let events: Vec<(i64, f64)> = vec![(0, 5.0), (MIN, 7.0), (MIN, 1.0), (4 * MIN, 2.5)];
        let mut windows = KeyedWindows::new(plan.clone());
        let times: Vec<i64> = events.iter().map(|e| e.0).collect();
        let values: Vec<f64> = events.iter().map(|e| e.1).collect();
        let ones = vec![1.0; events.len()];
        let keys = vec![&b"k"[..]; events.len()];
        windows
            .apply(
                &keys,
                &times,
                &[
                    InputColumn::floats(&ones, None),
                    InputColumn::floats(&values, None),
                ],
            )
            .unwrap();
        let snapshot = windows.snapshot(|_| true).to_owned();
        let state = &snapshot.keys[0].1;
        let read = ReadState::from(state.clone());
        for at in [
            4 * MIN,
            9 * MIN,
            10 * MIN,
            11 * MIN,
            12 * MIN,
            14 * MIN,
            15 * MIN,
            100 * MIN,
        ] {
            let out = read_at(&plan, &[Some(&read), None], at).unwrap();
            // The same as the state moved to `at` in place, which the read leaves unchanged.
            let mut advanced = state.clone();
            advanced.advance(&plan, at);
            for spec in 0..5 {
                let value = advanced.read(&plan, spec);
                assert_eq!(out.valid[spec][0], value.is_some(), "spec {spec} at {at}");
                assert_eq!(out.values[spec][0], value.unwrap_or(out.values[spec][0]));
            }
            assert_eq!(state, &snapshot.keys[0].1);
            let (n, sum, max, sd, lifetime) = brute(&events, at);
            let get =
                |spec: usize, row: usize| out.valid[spec][row].then_some(out.values[spec][row]);
            assert_eq!(get(0, 0), Some(n), "count at {at}");
            assert_eq!(get(1, 0), sum, "sum at {at}");
            assert_eq!(get(2, 0), max, "max at {at}");
            match (get(3, 0), sd) {
                (Some(a), Some(b)) => assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0)),
                (a, b) => assert_eq!(a, b, "stddev at {at}"),
            }
            assert_eq!(get(4, 0), Some(lifetime));
            // No state: SQL's empty window.
            assert_eq!(
                (get(0, 1), get(1, 1), get(4, 1)),
                (Some(0.0), None, Some(0.0))
            );
        }
        // Reading from state is never exact before its newest event.
        assert!(matches!(
            read_at(&plan, &[Some(&read)], 3 * MIN),
            Err(KernelError::ReadBeforeState { .. })
        ));
    }

    #[test]
    fn a_read_of_many_keys_equals_each_key_read_alone() {
        // Keys whose windows lose all, some or none of their events at the read time, read
        // in one call (the moved groups' buffers are reused from key to key) and one by one.
        let plan = plan();
        let mut windows = KeyedWindows::new(plan.clone());
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let (mut times, mut values) = (Vec::new(), Vec::new());
        for t in 0..200i64 {
            let key = (t * 7919) % 13;
            if key < 4 && t > 90 {
                continue; // these keys' events end after half an hour
            }
            keys.push(format!("k{key}").into_bytes());
            times.push(t * MIN / 3); // an event every 20 s
            values.push(((t * 31) % 17) as f64 - 8.0);
        }
        let mut order: Vec<usize> = (0..times.len()).collect();
        order.sort_by_key(|&i| times[i]);
        let keys: Vec<&[u8]> = order.iter().map(|&i| &keys[i][..]).collect();
        let times: Vec<i64> = order.iter().map(|&i| times[i]).collect();
        let values: Vec<f64> = order.iter().map(|&i| values[i]).collect();
        let ones = vec![1.0; times.len()];
        let inputs = [
            InputColumn::floats(&ones, None),
            InputColumn::floats(&values, None),
        ];
        windows.apply(&keys, &times, &inputs).unwrap();
        let snapshot = windows.snapshot(|_| true).to_owned();
        let reads: Vec<ReadState> = (snapshot.keys.iter())
            .map(|(_, s)| ReadState::from(s.clone()))
            .collect();
        let mut states: Vec<Option<&ReadState>> = reads.iter().map(Some).collect();
        states.insert(3, None);
        assert!(states.len() > 10);
        let newest = *times.last().unwrap();
        for at in [
            newest,
            newest + 3 * MIN,
            newest + 8 * MIN,
            newest + 60 * MIN,
        ] {
            let together = read_at(&plan, &states, at).unwrap();
            for (row, state) in states.iter().enumerate() {
                let alone = read_at(&plan, &[*state], at).unwrap();
                for spec in 0..plan.specs().len() {
                    assert_eq!(
                        together.valid[spec][row], alone.valid[spec][0],
                        "spec {spec} row {row} at {at}"
                    );
                    if alone.valid[spec][0] {
                        assert_eq!(
                            together.values[spec][row].to_bits(),
                            alone.values[spec][0].to_bits(),
                            "spec {spec} row {row} at {at}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn changes_name_the_keys_to_write_and_to_delete() {
        let plan = plan();
        let mut windows = KeyedWindows::new(plan);
        windows.track_changes();
        let ones = [1.0, 1.0];
        let apply = |w: &mut KeyedWindows, keys: &[&[u8]], t: i64| {
            let times = vec![t; keys.len()];
            w.apply(
                keys,
                &times,
                &[
                    InputColumn::floats(&ones[..keys.len()], None),
                    InputColumn::floats(&ones[..keys.len()], None),
                ],
            )
            .unwrap();
        };
        apply(&mut windows, &[b"a", b"b"], 0);
        let changed = |c: &crate::keyed::StateChanges<'_>| {
            let mut k: Vec<Vec<u8>> = c.changed.iter().map(|c| c.key.to_vec()).collect();
            k.sort();
            k
        };
        let first = windows.take_changes();
        assert_eq!(changed(&first), vec![b"a".to_vec(), b"b".to_vec()]);
        apply(&mut windows, &[b"b"], MIN);
        let second = windows.take_changes();
        assert_eq!(changed(&second), vec![b"b".to_vec()]);
        assert!(second.forgotten.is_empty());
        assert!(windows.take_changes().changed.is_empty());
    }
}
