//! The conformance suite of the batch window contract: every backend against a brute-force
//! oracle written from the semantics (DESIGN.md 3.1), and the backends against each other.
//!
//! The CPU backend always runs. The CUDA backend runs when a GPU is usable and is skipped with
//! the reason printed otherwise; `QUIVER_REQUIRE_CUDA=1` turns the skip into a failure (the GPU
//! check script sets it, so a broken driver setup cannot pass as a skip).

mod common;

use common::{Rng, KINDS};
use quiver_gpu::cuda::CudaBackend;
use quiver_gpu::{
    AggKind, CpuBackend, FeatureOutput, Frame, InputColumn, Scatter, SortedRows, WindowBackend,
    WindowPlan, WindowSpec,
};

const MIN: i64 = 60_000_000;

/// A sorted input: per segment, times and one nullable value column.
#[derive(Debug, Clone, Default)]
struct Case {
    name: &'static str,
    offsets: Vec<usize>,
    times: Vec<i64>,
    values: Vec<Option<f64>>,
    frames: Vec<Frame>,
    /// The oracle checks every `sample`-th row (its cost is quadratic in the window length).
    sample: usize,
}

impl Case {
    fn new(name: &'static str, frames: Vec<Frame>) -> Self {
        Case {
            name,
            offsets: vec![0],
            frames,
            sample: 1,
            ..Case::default()
        }
    }

    fn segment(&mut self, rows: &[(i64, Option<f64>)]) {
        for &(t, v) in rows {
            self.times.push(t);
            self.values.push(v);
        }
        self.offsets.push(self.times.len());
    }

    /// Every kind over every frame, on input 1 (the values); `count(*)` on input 0 (all valid).
    fn plan(&self) -> WindowPlan {
        let mut specs = Vec::new();
        for &frame in &self.frames {
            specs.push(WindowSpec {
                kind: AggKind::Count,
                input: 0,
                frame,
            });
            for kind in KINDS {
                specs.push(WindowSpec {
                    kind,
                    input: 1,
                    frame,
                });
            }
        }
        WindowPlan::new(specs, 2).expect("valid plan")
    }
}

/// What a backend computed, in sorted row order, per spec.
type Results = Vec<Vec<Option<f64>>>;

/// Runs `backend` on `case`, scattering through a reversed permutation to test positions.
fn run(backend: &dyn WindowBackend, case: &Case) -> Results {
    let plan = case.plan();
    let n = case.times.len();
    let ones = vec![1.0; n];
    let values: Vec<f64> = case.values.iter().map(|v| v.unwrap_or(0.0)).collect();
    let valid: Vec<bool> = case.values.iter().map(Option::is_some).collect();
    let inputs = [
        InputColumn::floats(&ones, None),
        InputColumn::floats(&values, Some(&valid)),
    ];
    let rows = SortedRows {
        offsets: &case.offsets,
        times: &case.times,
        inputs: &inputs,
    };
    let positions: Vec<u32> = (0..n as u32).rev().collect();
    let mut out = FeatureOutput::new(plan.specs().len(), n);
    let done = std::sync::atomic::AtomicUsize::new(0);
    backend
        .evaluate(
            &plan,
            &rows,
            Scatter {
                out: &mut out,
                positions: &positions,
            },
            &|k| {
                done.fetch_add(k, std::sync::atomic::Ordering::Relaxed);
            },
        )
        .unwrap_or_else(|e| panic!("{} on {}: {e}", backend.device(), case.name));
    assert_eq!(done.into_inner(), n, "progress covers every row");
    let results: Results = (0..plan.specs().len())
        .map(|s| {
            (0..n)
                .map(|k| {
                    let p = positions[k] as usize;
                    out.valid[s][p].then_some(out.values[s][p])
                })
                .collect()
        })
        .collect();

    // Skipped rows enter the windows but are not written: every third row skipped, the rest
    // packed into a smaller output, must read exactly what the full evaluation read.
    let emitted: Vec<usize> = (0..n).filter(|k| k % 3 != 1).collect();
    let mut packed = vec![Scatter::SKIP; n];
    for (i, &k) in emitted.iter().enumerate() {
        packed[k] = i as u32;
    }
    let mut few = FeatureOutput::new(plan.specs().len(), emitted.len());
    backend
        .evaluate(
            &plan,
            &rows,
            Scatter {
                out: &mut few,
                positions: &packed,
            },
            &|_| {},
        )
        .unwrap_or_else(|e| panic!("{} on {} (skipping): {e}", backend.device(), case.name));
    for (s, column) in results.iter().enumerate() {
        for (i, &k) in emitted.iter().enumerate() {
            let got = few.valid[s][i].then_some(few.values[s][i]);
            let same = match (got, column[k]) {
                (Some(a), Some(b)) => a == b || (a.is_nan() && b.is_nan()),
                (a, b) => a == b,
            };
            assert!(
                same,
                "{} on {} skipping: spec {s} row {k}",
                backend.device(),
                case.name
            );
        }
    }
    results
}

/// The answer written from the definition, with a tolerance for the floating-point kinds.
fn oracle(kind: AggKind, window: &[f64]) -> (Option<f64>, f64) {
    let n = window.len();
    let nan = window.iter().any(|x| x.is_nan());
    let pos = window.contains(&f64::INFINITY);
    let neg = window.contains(&f64::NEG_INFINITY);
    let special = if nan || (pos && neg) {
        Some(f64::NAN)
    } else if pos {
        Some(f64::INFINITY)
    } else if neg {
        Some(f64::NEG_INFINITY)
    } else {
        None
    };
    let magnitude: f64 = window
        .iter()
        .filter(|x| x.is_finite())
        .map(|x| x.abs())
        .sum();
    let sum = || {
        // Neumaier over values sorted by magnitude: accurate to ~1 ulp of the magnitude.
        let mut xs: Vec<f64> = window.to_vec();
        xs.sort_by(|a, b| a.abs().total_cmp(&b.abs()));
        let (mut s, mut c) = (0.0f64, 0.0f64);
        for x in xs {
            let t = s + x;
            c += if s.abs() >= x.abs() {
                (s - t) + x
            } else {
                (x - t) + s
            };
            s = t;
        }
        s + c
    };
    let m2 = || {
        let mean = sum() / n as f64;
        window.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>()
    };
    let extreme = |pick_max: bool| {
        window
            .iter()
            .map(|&x| if x.is_nan() { f64::NAN } else { x })
            .reduce(|a, b| {
                let b_wins = if pick_max {
                    b.total_cmp(&a).is_gt()
                } else {
                    b.total_cmp(&a).is_lt()
                };
                if b_wins {
                    b
                } else {
                    a
                }
            })
    };
    let tol = 1e-12 * magnitude;
    match kind {
        AggKind::Count => (Some(n as f64), 0.0),
        AggKind::Min => (extreme(false), 0.0),
        AggKind::Max => (extreme(true), 0.0),
        _ if n == 0 => (None, 0.0),
        AggKind::Sum => (Some(special.unwrap_or_else(sum)), tol),
        AggKind::Avg => (Some(special.unwrap_or_else(sum) / n as f64), tol / n as f64),
        AggKind::VarSamp | AggKind::StddevSamp if n < 2 => (None, 0.0),
        _ => {
            let m2 = if special.is_some() { f64::NAN } else { m2() };
            let divisor = match kind {
                AggKind::VarSamp | AggKind::StddevSamp => (n - 1) as f64,
                _ => n as f64,
            };
            let var = m2 / divisor;
            match kind {
                AggKind::StddevSamp | AggKind::StddevPop => (Some(var.sqrt()), 1e-9 * var.sqrt()),
                _ => (Some(var), 1e-9 * var),
            }
        }
    }
}

/// Checks `got` against the oracle for every row and spec.
fn check_oracle(device: &str, case: &Case, got: &Results) {
    let plan = case.plan();
    for (s, spec) in plan.specs().iter().enumerate() {
        for w in case.offsets.windows(2) {
            for r in (w[0]..w[1]).filter(|r| r % case.sample == 0 || r + 1 == w[1]) {
                let t = case.times[r];
                let lower = match spec.frame {
                    Frame::Range { width_micros } => t.saturating_sub(width_micros),
                    Frame::Unbounded => i64::MIN,
                };
                let window: Vec<f64> = (w[0]..w[1])
                    .filter(|&j| case.times[j] >= lower && case.times[j] <= t)
                    .filter_map(|j| {
                        if spec.input == 0 {
                            Some(1.0)
                        } else {
                            case.values[j]
                        }
                    })
                    .collect();
                let (want, tol) = oracle(spec.kind, &window);
                let have = got[s][r];
                let ok = match (have, want) {
                    (Some(a), Some(b)) if b.is_nan() => a.is_nan(),
                    (Some(a), Some(b)) if b == 0.0 && spec.kind != AggKind::Sum => a == 0.0,
                    (Some(a), Some(b)) if b.is_infinite() => a == b,
                    (Some(a), Some(b)) => (a - b).abs() <= tol.max(1e-300) || a == b,
                    (a, b) => a == b,
                };
                assert!(
                    ok,
                    "{device}, case {}: row {r} (t={t}), spec {s} {:?} over {:?}: got {have:?}, \
                     want {want:?} (tolerance {tol:e}); window {window:?}",
                    case.name, spec.kind, spec.frame
                );
            }
        }
    }
}

fn frames() -> Vec<Frame> {
    vec![
        Frame::Range {
            width_micros: 10 * MIN,
        },
        Frame::Range { width_micros: 0 },
        Frame::Unbounded,
    ]
}

/// Hand-made edge cases plus seeded random ones.
fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    cases.push(Case::new("empty input", frames()));

    let mut one = Case::new("one-row segments", frames());
    for i in 0..50 {
        one.segment(&[(i * MIN, (i % 3 != 0).then_some(i as f64))]);
    }
    cases.push(one);

    let mut ties = Case::new("all rows tied", frames());
    ties.segment(
        &(0..40)
            .map(|i| (5 * MIN, Some(i as f64)))
            .collect::<Vec<_>>(),
    );
    ties.segment(&[(-3, None), (-3, None), (-3, Some(2.5))]);
    cases.push(ties);

    let mut non_finite = Case::new("NaN and infinities", frames());
    let specials = [
        f64::NAN,
        -f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.0,
        0.0,
        1.5,
    ];
    non_finite.segment(
        &(0..60)
            .map(|i| (i as i64 * MIN / 3, Some(specials[i * 7 % specials.len()])))
            .collect::<Vec<_>>(),
    );
    cases.push(non_finite);

    let mut equal = Case::new("identical amounts have variance exactly 0", frames());
    let mut rows = vec![(0, Some(5.0))];
    rows.extend((1..30).map(|i| (i * 3 * MIN, Some(0.37))));
    equal.segment(&rows);
    cases.push(equal);

    let mut far = Case::new("a far first value leaves the window", frames());
    let mut rows = vec![(0, Some(1_000_000.0))];
    rows.extend((1..300).map(|i| (i * MIN, Some(10.0 + (i % 7) as f64 * 0.01))));
    far.segment(&rows);
    cases.push(far);

    let mut huge = Case::new("huge windows across GPU block boundaries", {
        let mut f = frames();
        f.push(Frame::Range {
            width_micros: i64::MAX,
        });
        f
    });
    let mut rng = Rng(99);
    let mut t = i64::MIN / 2;
    let rows: Vec<(i64, Option<f64>)> = (0..9000)
        .map(|_| {
            let r = rng.next();
            t += (r % 4) as i64; // many ties
            (
                t,
                (!r.is_multiple_of(13)).then(|| ((r >> 20) % 100_000) as f64 / 7.0),
            )
        })
        .collect();
    huge.sample = 97;
    huge.segment(&rows[..10]);
    huge.segment(&rows[10..]);
    cases.push(huge);

    for seed in [1u64, 2, 3] {
        let mut c = Case::new("random keys, ties, nulls, idle gaps", frames());
        let mut rng = Rng(seed * 7919);
        for _ in 0..120 {
            let len = (rng.next() % 60) as usize;
            let mut t = (rng.next() % 1000) as i64 * MIN;
            let rows: Vec<(i64, Option<f64>)> = (0..len)
                .map(|_| {
                    let r = rng.next();
                    if !r.is_multiple_of(4) {
                        t += (r % 180) as i64 * 1_000_000;
                    }
                    if r.is_multiple_of(53) {
                        t += 60 * MIN;
                    }
                    let v = match r % 17 {
                        0 => None,
                        1 => Some(-(((r >> 9) % 1000) as f64)),
                        _ => Some(((r >> 9) % 100_000) as f64 / 100.0),
                    };
                    (t, v)
                })
                .collect();
            c.segment(&rows);
        }
        cases.push(c);
    }
    cases
}

fn cuda() -> Option<CudaBackend> {
    match CudaBackend::open() {
        Ok(b) => Some(b),
        Err(e) => {
            assert!(
                std::env::var("QUIVER_REQUIRE_CUDA").as_deref() != Ok("1"),
                "QUIVER_REQUIRE_CUDA=1 but the CUDA backend cannot open: {e}"
            );
            eprintln!("skipping the CUDA backend: {e}");
            None
        }
    }
}

#[test]
fn cpu_backend_matches_the_oracle() {
    let cpu = CpuBackend::new();
    for case in cases() {
        check_oracle("cpu", &case, &run(&cpu, &case));
    }
}

#[test]
fn cuda_backend_matches_the_oracle_and_the_cpu() {
    let Some(gpu) = cuda() else { return };
    eprintln!("CUDA backend: {}", gpu.device());
    // Small chunks: chunking cuts between segments, and a segment longer than a chunk is a
    // chunk of its own.
    let chunked = CudaBackend::open()
        .expect("opened once")
        .with_chunk_rows(500);
    let cpu = CpuBackend::new();
    let mut worst = 0.0f64;
    for case in cases() {
        let on_gpu = run(&gpu, &case);
        check_oracle(&gpu.device(), &case, &on_gpu);
        assert_eq!(on_gpu.len(), run(&chunked, &case).len());
        let on_chunks = run(&chunked, &case);
        for (a, b) in on_gpu.iter().flatten().zip(on_chunks.iter().flatten()) {
            assert!(
                a.map(f64::to_bits) == b.map(f64::to_bits),
                "chunking changes nothing"
            );
        }
        for (a, b) in on_gpu
            .iter()
            .flatten()
            .zip(run(&cpu, &case).iter().flatten())
        {
            if let (Some(a), Some(b)) = (a, b) {
                if a.is_finite() && b.is_finite() && *b != 0.0 {
                    worst = worst.max(((a - b) / b).abs());
                }
            }
        }
    }
    eprintln!("largest relative difference CUDA vs CPU: {worst:e}");
    assert!(worst < 1e-9);
}

#[test]
fn out_of_order_and_bad_shapes_are_errors() {
    let cpu = CpuBackend::new();
    let mut case = Case::new("decreasing time", frames());
    case.segment(&[(10, Some(1.0)), (5, Some(2.0))]);
    let plan = case.plan();
    let ones = [1.0, 1.0];
    let col = InputColumn::floats(&ones, None);
    let evaluate = |offsets: &[usize], times: &[i64]| {
        let mut out = FeatureOutput::new(plan.specs().len(), 2);
        cpu.evaluate(
            &plan,
            &SortedRows {
                offsets,
                times,
                inputs: &[col, col],
            },
            Scatter {
                out: &mut out,
                positions: &[0, 1],
            },
            &|_| {},
        )
        .unwrap_err()
    };
    let err = evaluate(&case.offsets, &case.times);
    assert!(err.to_string().contains("event time 5"), "{err}");
    let err = evaluate(&[0, 3], &[1, 2]);
    assert!(err.to_string().contains("offsets"), "{err}");
}

/// Integer inputs on the GPU: sums, minima and maxima exact (beyond 2^53, wrapping sums), the
/// float aggregates of integers as the CPU computes them.
#[test]
fn cuda_integer_inputs_match_the_cpu() {
    use quiver_gpu::InputKind;
    let Some(gpu) = cuda() else { return };
    let chunked = CudaBackend::open()
        .expect("opened once")
        .with_chunk_rows(700);
    let mut rng = Rng(4242);
    let mut offsets = vec![0usize];
    let (mut times, mut exact, mut valid) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..200 {
        let mut t = (rng.next() % 100) as i64 * MIN;
        for _ in 0..rng.below(40) {
            let r = rng.next();
            if !r.is_multiple_of(4) {
                t += (r % 300) as i64 * 1_000_000;
            }
            times.push(t);
            let big = if r.is_multiple_of(3) {
                (1i64 << 62) + 1
            } else {
                0
            };
            exact.push((big + (r >> 30) as i64 % 10_000 - 5_000) as i128);
            valid.push(!r.is_multiple_of(11));
        }
        offsets.push(times.len());
    }
    let n = times.len();
    let mut specs = Vec::new();
    for frame in frames() {
        for kind in KINDS {
            specs.push(WindowSpec {
                kind,
                input: 0,
                frame,
            });
        }
    }
    let plan = WindowPlan::new(specs, 1)
        .and_then(|p| p.with_input_kinds(vec![InputKind::Integer]))
        .expect("plan");
    let column = InputColumn {
        values: &[],
        validity: Some(&valid),
        exact: Some(&exact),
    };
    let rows = SortedRows {
        offsets: &offsets,
        times: &times,
        inputs: &[column],
    };
    let positions: Vec<u32> = (0..n as u32).collect();
    let evaluate = |backend: &dyn WindowBackend| {
        let mut out = FeatureOutput::new(plan.specs().len(), n);
        backend
            .evaluate(
                &plan,
                &rows,
                Scatter {
                    out: &mut out,
                    positions: &positions,
                },
                &|_| {},
            )
            .expect("evaluates");
        out
    };
    let cpu = evaluate(&CpuBackend::new());
    for (name, out) in [
        ("gpu", evaluate(&gpu)),
        ("gpu in chunks", evaluate(&chunked)),
    ] {
        assert_eq!(out.valid, cpu.valid, "{name}: nulls");
        for s in 0..plan.specs().len() {
            if plan.is_exact_output(s) {
                assert_eq!(out.exact[s], cpu.exact[s], "{name}: exact spec {s}");
                continue;
            }
            for r in 0..n {
                let (a, b) = (out.values[s][r], cpu.values[s][r]);
                assert!(
                    a == b || (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                    "{name}: spec {s} row {r}: {a} vs {b}"
                );
            }
        }
    }
}
