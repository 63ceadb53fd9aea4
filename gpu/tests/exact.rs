//! Integer and decimal inputs are exact: sums, minima and maxima of integers beyond 2^53 (where
//! `f64` cannot tell neighbours apart) and of decimals, and truncated decimal averages, equal an
//! `i128` evaluation of the window's definition, through the streaming state (batches, expiry)
//! and through the CPU batch backend.

use quiver_gpu::{
    AggKind, CpuBackend, FeatureOutput, Frame, InputColumn, InputKind, KeyedWindows, Scatter,
    SortedRows, WindowBackend, WindowPlan, WindowSpec,
};

const MIN: i64 = 60_000_000;

fn plan(kind: InputKind) -> WindowPlan {
    let mut specs = Vec::new();
    for frame in [
        Frame::Range {
            width_micros: 10 * MIN,
        },
        Frame::Unbounded,
    ] {
        for agg in [
            AggKind::Sum,
            AggKind::Min,
            AggKind::Max,
            AggKind::Avg,
            AggKind::Count,
        ] {
            specs.push(WindowSpec {
                kind: agg,
                input: 0,
                frame,
            });
        }
    }
    WindowPlan::new(specs, 1)
        .and_then(|p| p.with_input_kinds(vec![kind]))
        .expect("plan")
}

/// The exact answer of spec `s` of `plan` at row `r` (rows of one key, sorted by time).
fn oracle(
    plan: &WindowPlan,
    times: &[i64],
    values: &[Option<i128>],
    r: usize,
    s: usize,
) -> Option<i128> {
    let spec = plan.specs()[s];
    let lower = match spec.frame {
        Frame::Range { width_micros } => times[r] - width_micros,
        Frame::Unbounded => i64::MIN,
    };
    let window: Vec<i128> = (0..times.len())
        .filter(|&j| times[j] >= lower && times[j] <= times[r])
        .filter_map(|j| values[j])
        .collect();
    if window.is_empty() {
        return None;
    }
    let sum = window.iter().fold(0i128, |a, &b| a.wrapping_add(b));
    Some(match (spec.kind, plan.input_kind(0)) {
        // Integer sums wrap into i64 as DataFusion's Int64 sums do; decimals keep 128 bits.
        (AggKind::Sum, InputKind::Integer) => sum as i64 as i128,
        (AggKind::Sum, _) => sum,
        (AggKind::Min, _) => *window.iter().min().expect("non-empty"),
        (AggKind::Max, _) => *window.iter().max().expect("non-empty"),
        (AggKind::Avg, InputKind::Decimal { avg_multiplier, .. }) => {
            sum * avg_multiplier / window.len() as i128
        }
        _ => unreachable!("only exact specs are checked"),
    })
}

/// One key's events: ties, nulls, and values whose neighbours `f64` cannot tell apart.
fn stream(big: i128) -> (Vec<i64>, Vec<Option<i128>>) {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut t = 0i64;
    let mut times = Vec::new();
    let mut values = Vec::new();
    for _ in 0..400 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        if !rng.is_multiple_of(4) {
            t += (rng % 240) as i64 * 1_000_000;
        }
        times.push(t);
        let small = (rng >> 20) as i128 % 1000 - 400;
        values.push(
            (!rng.is_multiple_of(9)).then_some(if rng.is_multiple_of(3) {
                big + small
            } else {
                small
            }),
        );
    }
    (times, values)
}

fn check(kind: InputKind, big: i128) {
    let plan = plan(kind);
    let (times, values) = stream(big);
    let n = times.len();
    let exact: Vec<i128> = values.iter().map(|v| v.unwrap_or(0)).collect();
    let valid: Vec<bool> = values.iter().map(Option::is_some).collect();
    let floats = vec![0.0; n]; // exact inputs never read these
    let column = InputColumn {
        values: &floats,
        validity: Some(&valid),
        exact: Some(&exact),
    };

    // Streaming: three batches with an expiry sweep between them.
    let mut windows = KeyedWindows::new(plan.clone());
    let keys = vec![b"k".as_slice(); n];
    let mut streamed = FeatureOutput::new(plan.specs().len(), n);
    for range in [0..150usize, 150..151, 151..n] {
        let slots = windows.slots(&keys[range.clone()]);
        let order: Vec<u32> = (0..range.len() as u32).collect();
        let mut out = FeatureOutput::new(plan.specs().len(), range.len());
        let part = InputColumn {
            values: &floats[range.clone()],
            validity: Some(&valid[range.clone()]),
            exact: Some(&exact[range.clone()]),
        };
        windows
            .process(&slots, &times[range.clone()], &[part], &order, &mut out)
            .expect("in order");
        for s in 0..plan.specs().len() {
            for (k, r) in range.clone().enumerate() {
                streamed.valid[s][r] = out.valid[s][k];
                if let Some(e) = &out.exact[s] {
                    streamed.exact[s].get_or_insert_with(|| vec![0; n])[r] = e[k];
                }
                streamed.values[s][r] = out.values[s][k];
            }
        }
        windows.expire(times[range.end - 1]);
    }

    // Batch: the CPU backend over the sorted input.
    let mut batch = FeatureOutput::new(plan.specs().len(), n);
    let positions: Vec<u32> = (0..n as u32).collect();
    CpuBackend::new()
        .evaluate(
            &plan,
            &SortedRows {
                offsets: &[0, n],
                times: &times,
                inputs: &[column],
            },
            Scatter {
                out: &mut batch,
                positions: &positions,
            },
            &|_| {},
        )
        .expect("evaluates");

    for (name, out) in [("streaming", &streamed), ("batch", &batch)] {
        for s in 0..plan.specs().len() {
            let spec = plan.specs()[s];
            for r in 0..n {
                if plan.is_exact_output(s) {
                    let got = out.valid[s][r].then(|| out.exact[s].as_ref().expect("exact")[r]);
                    assert_eq!(
                        got,
                        oracle(&plan, &times, &values, r, s),
                        "{name} {kind:?}: row {r} {:?} over {:?}",
                        spec.kind,
                        spec.frame
                    );
                } else if spec.kind == AggKind::Count {
                    let lower = match spec.frame {
                        Frame::Range { width_micros } => times[r] - width_micros,
                        Frame::Unbounded => i64::MIN,
                    };
                    let want = (0..n)
                        .filter(|&j| times[j] >= lower && times[j] <= times[r] && valid[j])
                        .count();
                    assert_eq!(out.values[s][r], want as f64, "{name}: count row {r}");
                }
            }
        }
    }
}

#[test]
fn integers_beyond_2_pow_53_are_summed_and_compared_exactly() {
    // 2^62 + small: f64 has a spacing of 1024 there.
    check(InputKind::Integer, 1i128 << 62);
}

#[test]
fn integer_sums_wrap_exactly_like_i128_arithmetic_near_the_edge() {
    // Sums of several values near i64::MAX leave i64: kept exact in i128 (the output cast
    // wraps them as DataFusion does).
    check(InputKind::Integer, i64::MAX as i128 - 1000);
}

#[test]
fn decimals_sum_compare_and_average_exactly() {
    // Decimal(38, 2) values with 30 significant digits; averages at scale 6 (multiplier 10^4).
    check(
        InputKind::Decimal {
            scale: 2,
            avg_multiplier: 10_000,
        },
        123_456_789_012_345_678_901_234_567_890,
    );
}

#[test]
fn exact_plans_do_not_run_on_the_gpu_kernels() {
    let plan = plan(InputKind::Integer);
    assert!(plan.has_exact_inputs());
    assert!(CpuBackend::new().supports(&plan));
}
