//! Property test: for random streams (keys, ties, nulls, gaps longer than windows, batch
//! splits, expiry sweeps) and random plans (any aggregate over any frame), every feature equals
//! a brute-force evaluation of the window's definition. Seeded: a failure names its case, and
//! `QUIVER_PROPERTY_CASES` runs more cases.

mod common;

use common::{random_specs, Rng};
use quiver_gpu::{AggKind, Frame, InputColumn, KeyedWindows, WindowPlan};

/// The aggregate over `values` (non-null values inside the window), straight from its definition.
fn oracle(kind: AggKind, values: &[f64]) -> Option<f64> {
    let n = values.len() as f64;
    if kind == AggKind::Count {
        return Some(n);
    }
    if values.is_empty() {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n;
    let m2 = values.iter().map(|x| (x - mean).powi(2)).sum::<f64>();
    match kind {
        AggKind::Sum => Some(values.iter().sum()),
        AggKind::Avg => Some(mean),
        AggKind::Min => values.iter().copied().reduce(f64::min),
        AggKind::Max => values.iter().copied().reduce(f64::max),
        AggKind::VarPop => Some(m2 / n),
        AggKind::StddevPop => Some((m2 / n).sqrt()),
        AggKind::VarSamp => (values.len() > 1).then(|| m2 / (n - 1.0)),
        AggKind::StddevSamp => (values.len() > 1).then(|| (m2 / (n - 1.0)).sqrt()),
        AggKind::Count => unreachable!(),
    }
}

fn run_case(seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    // A random plan over two inputs.
    let specs = random_specs(&mut rng, 6, 2, 50);
    let plan = WindowPlan::new(specs.clone(), 2).unwrap();
    // A random stream in time order: few or many keys, ties, nulls, long gaps.
    let keys: Vec<Vec<u8>> = (0..1 + rng.below(6)).map(|k| vec![b'k', k as u8]).collect();
    let events = 1 + rng.below(300) as usize;
    let mut t = rng.below(1_000) as i64 * 1_000;
    let mut stream = Vec::with_capacity(events);
    for _ in 0..events {
        match rng.below(10) {
            0..=2 => {}                                      // a tie
            3 => t += (100 + rng.below(100)) as i64 * 1_000, // a gap beyond every window
            _ => t += rng.below(7) as i64 * 1_000,
        }
        let key = keys[rng.below(keys.len() as u64) as usize].clone();
        let a = (rng.below(6) != 0).then(|| (rng.below(20_000) as f64 - 10_000.0) / 8.0);
        let b = (rng.below(3) != 0).then(|| rng.below(5) as f64);
        stream.push((key, t, a, b));
    }
    let mut windows = KeyedWindows::new(plan);
    let mut start = 0;
    while start < events {
        // Batches end between instants: ties of one key are never split across calls.
        let mut end = (start + 1 + rng.below(60) as usize).min(events);
        while end < events && stream[end].1 == stream[end - 1].1 {
            end += 1;
        }
        let batch = &stream[start..end];
        let key_refs: Vec<&[u8]> = batch.iter().map(|e| e.0.as_slice()).collect();
        let times: Vec<i64> = batch.iter().map(|e| e.1).collect();
        let a: Vec<f64> = batch.iter().map(|e| e.2.unwrap_or(0.0)).collect();
        let a_valid: Vec<bool> = batch.iter().map(|e| e.2.is_some()).collect();
        let b: Vec<f64> = batch.iter().map(|e| e.3.unwrap_or(0.0)).collect();
        let b_valid: Vec<bool> = batch.iter().map(|e| e.3.is_some()).collect();
        let inputs = [
            InputColumn::floats(&a, Some(&a_valid)),
            InputColumn::floats(&b, Some(&b_valid)),
        ];
        let out = windows
            .apply(&key_refs, &times, &inputs)
            .unwrap_or_else(|e| panic!("case {seed}: {e}"));
        for (row, (key, t, _, _)) in batch.iter().enumerate() {
            for (s, spec) in specs.iter().enumerate() {
                let inside: Vec<f64> = stream[..end]
                    .iter()
                    .filter(|e| &e.0 == key && e.1 <= *t)
                    .filter(|e| match spec.frame {
                        Frame::Range { width_micros } => e.1 >= t - width_micros,
                        Frame::Unbounded => true,
                    })
                    .filter_map(|e| if spec.input == 0 { e.2 } else { e.3 })
                    .collect();
                let want = oracle(spec.kind, &inside);
                let got = out.valid[s][row].then_some(out.values[s][row]);
                let ok = match (got, want) {
                    (Some(g), Some(w)) => (g - w).abs() <= 1e-9 * w.abs().max(1.0),
                    (g, w) => g == w,
                };
                assert!(
                    ok,
                    "case {seed}: {:?}(input {}) over {:?}, key {key:?} at {t}: {got:?} vs {want:?}",
                    spec.kind, spec.input, spec.frame
                );
            }
        }
        // Sweep idle state now and then, at the last applied time (no older event follows).
        if rng.below(3) == 0 {
            windows.expire(stream[end - 1].1);
        }
        start = end;
    }
}

#[test]
fn random_streams_and_plans_match_the_window_definition() {
    let cases: u64 = std::env::var("QUIVER_PROPERTY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    for seed in 0..cases {
        run_case(seed);
    }
}
