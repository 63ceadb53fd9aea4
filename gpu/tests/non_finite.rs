//! NaN and infinities (from CSV/Parquet, or overflow upstream) give, for every window, what
//! IEEE arithmetic over exactly the values inside it gives, and the window recovers as soon as
//! they leave: checked against a brute-force evaluation of each window.

use quiver_gpu::{AggKind, Frame, InputColumn, KeyedWindows, WindowPlan, WindowSpec};

const MINUTE: i64 = 60_000_000;

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// The aggregate over exactly `values`, evaluated directly.
fn brute(kind: AggKind, values: &[f64]) -> Option<f64> {
    let n = values.len() as f64;
    let sum = || values.iter().sum::<f64>();
    let largest_nan = |a: f64, b: f64| {
        if a.is_nan() || b.is_nan() {
            f64::NAN
        } else {
            a.max(b)
        }
    };
    let smallest = |a: f64, b: f64| {
        if a.is_nan() {
            b
        } else if b.is_nan() {
            a
        } else {
            a.min(b)
        }
    };
    let var = |ddof: f64| {
        if values.iter().any(|x| !x.is_finite()) {
            return f64::NAN;
        }
        let mean = sum() / n;
        values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - ddof)
    };
    match kind {
        AggKind::Count => Some(n),
        _ if values.is_empty() => None,
        AggKind::Sum => Some(sum()),
        AggKind::Avg => Some(sum() / n),
        AggKind::Max => values.iter().copied().reduce(largest_nan),
        AggKind::Min => values.iter().copied().reduce(smallest),
        AggKind::VarPop => Some(var(0.0)),
        AggKind::VarSamp => (values.len() > 1).then(|| var(1.0)),
        AggKind::StddevSamp => (values.len() > 1).then(|| var(1.0).sqrt()),
        AggKind::StddevPop => Some(var(0.0).sqrt()),
    }
}

fn same(got: Option<f64>, want: Option<f64>) -> bool {
    match (got, want) {
        (Some(g), Some(w)) if g.is_nan() || w.is_nan() => g.is_nan() && w.is_nan(),
        (Some(g), Some(w)) if g.is_infinite() || w.is_infinite() => g == w,
        (Some(g), Some(w)) => (g - w).abs() <= 1e-9 * w.abs().max(1.0),
        (g, w) => g == w,
    }
}

#[test]
fn non_finite_values_count_while_inside_and_are_forgotten_when_they_leave() {
    let kinds = [
        AggKind::Count,
        AggKind::Sum,
        AggKind::Avg,
        AggKind::Min,
        AggKind::Max,
        AggKind::VarSamp,
        AggKind::VarPop,
        AggKind::StddevSamp,
    ];
    let frames = [
        Frame::Range {
            width_micros: 10 * MINUTE,
        },
        Frame::Unbounded,
    ];
    let specs: Vec<WindowSpec> = frames
        .iter()
        .flat_map(|&frame| {
            kinds.iter().map(move |&kind| WindowSpec {
                kind,
                input: 0,
                frame,
            })
        })
        .collect();
    let plan = WindowPlan::new(specs.clone(), 1).unwrap();
    let mut windows = KeyedWindows::new(plan);
    let mut rng = 7u64;
    let mut events: Vec<(&[u8], i64, f64)> = Vec::new();
    let mut t = 0;
    for i in 0..1500 {
        t += (xorshift(&mut rng) % 120) as i64 * 1_000_000;
        let key: &[u8] = if i % 3 == 0 { b"b" } else { b"a" };
        let r = xorshift(&mut rng) % 100;
        let x = match r {
            0 => f64::NAN,
            1 => -f64::NAN, // a NaN with the sign bit set, as 0.0 / 0.0 gives on x86
            2 => f64::INFINITY,
            3 => f64::NEG_INFINITY,
            _ => (xorshift(&mut rng) % 10_000) as f64 / 100.0,
        };
        events.push((key, t, x));
    }
    let mut checked = 0;
    let mut saw_recovery = false;
    for chunk in events.chunks(50) {
        let keys: Vec<&[u8]> = chunk.iter().map(|e| e.0).collect();
        let times: Vec<i64> = chunk.iter().map(|e| e.1).collect();
        let values: Vec<f64> = chunk.iter().map(|e| e.2).collect();
        let out = windows
            .apply(&keys, &times, &[InputColumn::floats(&values, None)])
            .unwrap();
        for (row, &(key, t, _)) in chunk.iter().enumerate() {
            let past: Vec<&(&[u8], i64, f64)> =
                events.iter().filter(|e| e.0 == key && e.1 <= t).collect();
            for (s, spec) in specs.iter().enumerate() {
                let inside: Vec<f64> = past
                    .iter()
                    .filter(|e| match spec.frame {
                        Frame::Range { width_micros } => e.1 >= t - width_micros,
                        Frame::Unbounded => true,
                    })
                    .map(|e| e.2)
                    .collect();
                let got = out.valid[s][row].then_some(out.values[s][row]);
                let want = brute(spec.kind, &inside);
                assert!(
                    same(got, want),
                    "{:?} over {:?} for {key:?} at {t}: {got:?} vs {want:?} (window {inside:?})",
                    spec.kind,
                    spec.frame
                );
                let ever_bad = past.iter().any(|e| !e.2.is_finite());
                if spec.kind == AggKind::Sum && ever_bad && got.is_some_and(f64::is_finite) {
                    saw_recovery = true;
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 1500);
    assert!(
        saw_recovery,
        "some windows recovered after a non-finite value left them"
    );
}
