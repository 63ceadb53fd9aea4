//! Times the CPU window kernel on the fraud demo's card features (7 features over 5 frames)
//! for generated sorted rows: `cargo run --release -p quiver-gpu --example cpu_kernel_bench
//! [rows] [keys]`. Prints nanoseconds per row, best of 5.

use quiver_gpu::{
    AggKind, CpuBackend, FeatureOutput, Frame, InputColumn, InputKind, Scatter, SortedRows,
    WindowBackend, WindowPlan, WindowSpec,
};
use std::time::Instant;

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>().expect("a number"));
    let rows = args.next().unwrap_or(1_000_000);
    let keys = args.next().unwrap_or(50_000).max(1);
    const MINUTE: i64 = 60_000_000;
    let range = |minutes: i64| Frame::Range {
        width_micros: minutes * MINUTE,
    };
    let spec = |kind, input, frame| WindowSpec { kind, input, frame };
    // Inputs: 0 = count(*) (ones), 1 = is_micro (integer), 2 = amount (float).
    let specs = vec![
        spec(AggKind::Count, 0, range(10)),
        spec(AggKind::Sum, 1, range(10)),
        spec(AggKind::Sum, 2, range(60)),
        spec(AggKind::Avg, 2, range(24 * 60)),
        spec(AggKind::Max, 2, range(24 * 60)),
        spec(AggKind::StddevSamp, 2, range(7 * 24 * 60)),
        spec(AggKind::Count, 0, Frame::Unbounded),
    ];
    let plan = WindowPlan::new(specs, 3)
        .and_then(|p| {
            p.with_input_kinds(vec![InputKind::Float, InputKind::Integer, InputKind::Float])
        })
        .expect("a plan");
    // Each key's events about 20 s apart on average, in key order (as sorted rows are).
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let per_key = rows.div_ceil(keys);
    let mut offsets = vec![0];
    let mut times = Vec::with_capacity(rows);
    let mut amount = Vec::with_capacity(rows);
    let mut valid = Vec::with_capacity(rows);
    let mut micro = Vec::with_capacity(rows);
    while times.len() < rows {
        let mut t = (next() % 1_000_000) as i64 * 1_000_000;
        for _ in 0..per_key.min(rows - times.len()) {
            t += (next() % 40 * 1_000_000) as i64 * (keys as i64 / 1000).max(1);
            times.push(t);
            let a = (next() % 100_000) as f64 / 100.0;
            amount.push(a);
            valid.push(next() % 100 != 0);
            micro.push(i128::from(a < 2.0));
        }
        offsets.push(times.len());
    }
    let ones = vec![1.0; rows];
    let inputs = [
        InputColumn::floats(&ones, None),
        InputColumn {
            values: &[],
            validity: None,
            exact: Some(&micro),
        },
        InputColumn::floats(&amount, Some(&valid)),
    ];
    let sorted = SortedRows {
        offsets: &offsets,
        times: &times,
        inputs: &inputs,
    };
    // Results in row order, as backfill takes them.
    let positions: Vec<u32> = (0..rows as u32).collect();
    let backend = CpuBackend::new();
    let mut best = f64::MAX;
    for _ in 0..5 {
        let mut out = FeatureOutput::new(plan.specs().len(), rows);
        let started = Instant::now();
        backend
            .evaluate(
                &plan,
                &sorted,
                Scatter {
                    out: &mut out,
                    positions: &positions,
                },
                &|_| {},
            )
            .expect("evaluates");
        best = best.min(started.elapsed().as_secs_f64());
    }
    println!(
        "{rows} rows, {keys} keys: {:.1} ns/row (best of 5, {:.3} s)",
        best * 1e9 / rows as f64,
        best
    );
}
