//! Window kernel benchmark: the CPU backend against the CUDA backend on the same sorted input
//! (the fraud demo's card features over generated transactions), with the largest relative
//! difference between their results. Prints one table row per size and the crossover: the
//! smallest size at which the GPU (copies included) beats the CPU.
//!
//!     cargo run --release -p quiver-gpu --example kernel_bench -- 10000,1000000,10000000
//!
//! Without a usable GPU it times the CPU alone and says why.
//!
//! A second table times the CPU kernels on the demo's own input kinds: amounts as decimals
//! (exact sums, averages and maxima) and the micro flag as an integer, for the card and the
//! merchant features. Such plans always run on the CPU (the CUDA kernels have no exact path).
//!
//! A third table times the streaming state (`KeyedWindows`, what `quiver run` updates event by
//! event) over the same events in time order, a batch of 8,192 at a time, in ns an event: with
//! `rows / 20` keys its state outgrows the caches at 1M rows, where the time an event waits
//! for its key's state to come from memory is part of the figure.

use quiver_gpu::cuda::CudaBackend;
use quiver_gpu::{
    AggKind, CpuBackend, FeatureOutput, Frame, InputColumn, InputKind, KeyedWindows, Scatter,
    SortedRows, WindowBackend, WindowPlan, WindowSpec,
};
use std::time::Instant;

const SECOND: i64 = 1_000_000;

/// A range frame `seconds` wide.
fn range(seconds: i64) -> Frame {
    Frame::Range {
        width_micros: seconds * SECOND,
    }
}

/// A window spec.
fn spec(kind: AggKind, input: usize, frame: Frame) -> WindowSpec {
    WindowSpec { kind, input, frame }
}

/// The card features of configs/features/card_features.sql.
fn card_plan() -> WindowPlan {
    WindowPlan::new(
        vec![
            spec(AggKind::Count, 0, range(600)),
            spec(AggKind::Sum, 2, range(600)),
            spec(AggKind::Sum, 1, range(3600)),
            spec(AggKind::Avg, 1, range(86_400)),
            spec(AggKind::Max, 1, range(86_400)),
            spec(AggKind::StddevSamp, 1, range(7 * 86_400)),
            spec(AggKind::Count, 0, Frame::Unbounded),
        ],
        3,
    )
    .expect("a valid plan")
}

/// The demo's input kinds: `count(*)`'s input, `amount DECIMAL(12, 2)` (averaged to 6
/// places) and `is_micro` as an integer.
fn demo_kinds() -> Vec<InputKind> {
    vec![
        InputKind::Float,
        InputKind::Decimal {
            scale: 2,
            avg_multiplier: 10_000,
        },
        InputKind::Integer,
    ]
}

/// The merchant features of configs/features/merchant_features.sql.
fn merchant_plan() -> WindowPlan {
    WindowPlan::new(
        vec![
            spec(AggKind::Count, 0, range(3600)),
            spec(AggKind::Avg, 1, range(86_400)),
        ],
        3,
    )
    .expect("a valid plan")
}

/// Generated input sorted by card and time: `rows` transactions of `rows / 20` cards (at
/// least one) at about one per card per 2.6 hours, 1% null amounts, a few micro amounts.
struct Input {
    offsets: Vec<usize>,
    times: Vec<i64>,
    ones: Vec<f64>,
    amounts: Vec<f64>,
    valid: Vec<bool>,
    micro: Vec<f64>,
    /// The amounts in cents and the micro flags, for the demo's exact input kinds.
    cents: Vec<i128>,
    micro_flags: Vec<i128>,
}

fn generate(rows: usize) -> Input {
    let cards = (rows / 20).max(1);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut input = Input {
        offsets: vec![0],
        times: Vec::with_capacity(rows),
        ones: vec![1.0; rows],
        amounts: Vec::with_capacity(rows),
        valid: Vec::with_capacity(rows),
        micro: Vec::with_capacity(rows),
        cents: Vec::with_capacity(rows),
        micro_flags: Vec::with_capacity(rows),
    };
    for card in 0..cards {
        let len = rows / cards + usize::from(card < rows % cards);
        let mut t = (next() % 86_400) as i64 * SECOND;
        for _ in 0..len {
            let r = next();
            t += (r % 18_720) as i64 * SECOND;
            let cents = ((r >> 20) % 50_000) as i128;
            let amount = cents as f64 / 100.0;
            input.times.push(t);
            input.amounts.push(amount);
            input.valid.push(r % 100 != 0);
            input.micro.push(if amount < 2.0 { 1.0 } else { 0.0 });
            input.cents.push(cents);
            input.micro_flags.push(i128::from(cents < 200));
        }
        input.offsets.push(input.times.len());
    }
    input
}

/// The input columns of `input`: floats, or the demo's exact kinds when the plan has exact
/// inputs.
fn columns<'a>(plan: &WindowPlan, input: &'a Input) -> [InputColumn<'a>; 3] {
    match plan.has_exact_inputs() {
        false => [
            InputColumn::floats(&input.ones, None),
            InputColumn::floats(&input.amounts, Some(&input.valid)),
            InputColumn::floats(&input.micro, None),
        ],
        true => [
            InputColumn::floats(&input.ones, None),
            InputColumn {
                values: &[],
                validity: Some(&input.valid),
                exact: Some(&input.cents),
            },
            InputColumn {
                values: &[],
                validity: None,
                exact: Some(&input.micro_flags),
            },
        ],
    }
}

/// Evaluates on `backend`, with the inputs as floats, or as the demo's exact kinds when the plan
/// has exact inputs; returns seconds and the output.
fn time(backend: &dyn WindowBackend, plan: &WindowPlan, input: &Input) -> (f64, FeatureOutput) {
    let inputs = columns(plan, input);
    let rows = input.times.len();
    let positions: Vec<u32> = (0..rows as u32).collect();
    let mut out = FeatureOutput::new(plan.specs().len(), rows);
    let started = Instant::now();
    backend
        .evaluate(
            plan,
            &SortedRows {
                offsets: &input.offsets,
                times: &input.times,
                inputs: &inputs,
            },
            Scatter {
                out: &mut out,
                positions: &positions,
            },
            &|_| {},
        )
        .unwrap_or_else(|e| {
            eprintln!("{}: {e}", backend.device());
            std::process::exit(1)
        });
    (started.elapsed().as_secs_f64(), out)
}

/// Rows a batch of the streaming state's table (a live source's batches are smaller, a file's
/// larger).
const STREAM_BATCH: usize = 8192;

/// The streaming state ([`KeyedWindows`]) over `input`'s events in time order, as a run applies
/// them (batches of [`STREAM_BATCH`] rows, never splitting a time): seconds.
fn time_streaming(plan: &WindowPlan, input: &Input) -> f64 {
    let rows = input.times.len();
    let mut cards = vec![0u32; rows];
    for (card, range) in input.offsets.windows(2).enumerate() {
        cards[range[0]..range[1]].fill(card as u32);
    }
    let mut order: Vec<usize> = (0..rows).collect();
    order.sort_by_key(|&r| (input.times[r], r));
    let by_time = Input {
        offsets: vec![0, rows],
        times: gather(&order, &input.times),
        ones: gather(&order, &input.ones),
        amounts: gather(&order, &input.amounts),
        valid: gather(&order, &input.valid),
        micro: gather(&order, &input.micro),
        cents: gather(&order, &input.cents),
        micro_flags: gather(&order, &input.micro_flags),
    };
    let keys: Vec<[u8; 4]> = gather(&order, &cards)
        .into_iter()
        .map(u32::to_le_bytes)
        .collect();
    let all = columns(plan, &by_time);
    let mut windows = KeyedWindows::new(plan.clone());
    let started = Instant::now();
    let mut start = 0;
    while start < rows {
        let mut end = (start + STREAM_BATCH).min(rows);
        while end < rows && by_time.times[end] == by_time.times[end - 1] {
            end += 1;
        }
        let batch_keys: Vec<&[u8]> = keys[start..end].iter().map(|k| &k[..]).collect();
        windows
            .apply(
                &batch_keys,
                &by_time.times[start..end],
                &all.map(|c| rows_of(c, start..end)),
            )
            .unwrap_or_else(|e| {
                eprintln!("streaming state: {e}");
                std::process::exit(1)
            });
        start = end;
    }
    started.elapsed().as_secs_f64()
}

/// `column`'s values of rows `order`, in that order.
fn gather<T: Copy>(order: &[usize], column: &[T]) -> Vec<T> {
    order.iter().map(|&r| column[r]).collect()
}

/// Rows `range` of column `c`.
fn rows_of(c: InputColumn<'_>, range: std::ops::Range<usize>) -> InputColumn<'_> {
    InputColumn {
        values: c.values.get(range.clone()).unwrap_or(&[]),
        validity: c.validity.map(|v| &v[range.clone()]),
        exact: c.exact.map(|e| &e[range]),
    }
}

/// Largest relative difference between two outputs, and the number of nulls that differ.
fn compare(a: &FeatureOutput, b: &FeatureOutput) -> (f64, usize) {
    let mut worst = 0.0f64;
    let mut null_mismatch = 0;
    for s in 0..a.values.len() {
        for r in 0..a.rows() {
            if a.valid[s][r] != b.valid[s][r] {
                null_mismatch += 1;
            } else if a.valid[s][r] {
                let (x, y) = (a.values[s][r], b.values[s][r]);
                if x != y {
                    worst = worst.max((x - y).abs() / y.abs().max(f64::MIN_POSITIVE));
                }
            }
        }
    }
    (worst, null_mismatch)
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "10000,100000,1000000,10000000".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("sizes are comma-separated row counts")
        })
        .collect();
    let plan = card_plan();
    let cpu = CpuBackend::new();
    let gpu = match CudaBackend::open() {
        Ok(g) => Some(g),
        Err(e) => {
            println!("no GPU ({e}): timing the CPU backend alone");
            None
        }
    };
    if let Some(g) = &gpu {
        println!("GPU backend: {}", g.device());
        // The first evaluation pays for lazy driver setup; keep it out of the table.
        let warm = generate(1000);
        time(g, &plan, &warm);
    }
    println!("| rows | cpu s | gpu s | cpu/gpu | max rel diff | null mismatches |");
    println!("|---|---|---|---|---|---|");
    let mut crossover = None;
    for &rows in &sizes {
        let input = generate(rows);
        let (cpu_s, cpu_out) = time(&cpu, &plan, &input);
        match &gpu {
            Some(g) => {
                let (gpu_s, gpu_out) = time(g, &plan, &input);
                let (diff, nulls) = compare(&gpu_out, &cpu_out);
                if crossover.is_none() && gpu_s < cpu_s {
                    crossover = Some(rows);
                }
                println!(
                    "| {rows} | {cpu_s:.3} | {gpu_s:.3} | {:.1} | {diff:.1e} | {nulls} |",
                    cpu_s / gpu_s
                );
            }
            None => println!("| {rows} | {cpu_s:.3} | - | - | - | - |"),
        }
    }
    println!();
    println!("The demo's input kinds (decimal amounts, integer flags), CPU only:");
    println!("| rows | card features s | ns a row | merchant features s | ns a row |");
    println!("|---|---|---|---|---|");
    let card = card_plan()
        .with_input_kinds(demo_kinds())
        .expect("three kinds");
    let merchant = merchant_plan()
        .with_input_kinds(demo_kinds())
        .expect("three kinds");
    for &rows in &sizes {
        let input = generate(rows);
        let (card_s, _) = time(&cpu, &card, &input);
        let (merchant_s, _) = time(&cpu, &merchant, &input);
        let per_row = |s: f64| s * 1e9 / rows.max(1) as f64;
        println!(
            "| {rows} | {card_s:.3} | {:.0} | {merchant_s:.3} | {:.0} |",
            per_row(card_s),
            per_row(merchant_s)
        );
    }
    println!();
    println!(
        "The streaming state (KeyedWindows), the same events in time order, {STREAM_BATCH} a batch:"
    );
    println!("| rows | card features s | ns an event | merchant features s | ns an event |");
    println!("|---|---|---|---|---|");
    for &rows in &sizes {
        let input = generate(rows);
        let card_s = time_streaming(&card, &input);
        let merchant_s = time_streaming(&merchant, &input);
        let per_event = |s: f64| s * 1e9 / rows.max(1) as f64;
        println!(
            "| {rows} | {card_s:.3} | {:.0} | {merchant_s:.3} | {:.0} |",
            per_event(card_s),
            per_event(merchant_s)
        );
    }
    if let Some(g) = &gpu {
        let stats = g.stats();
        println!(
            "GPU totals: {} rows, {:.2} s, {} MiB moved, peak device memory {} MiB",
            stats.rows,
            stats.kernel_time.as_secs_f64(),
            stats.bytes_moved >> 20,
            stats.peak_device_bytes >> 20
        );
        match crossover {
            Some(rows) => println!("crossover: the GPU is faster from {rows} rows"),
            None => println!("crossover: the GPU was not faster at any size tried"),
        }
    }
}
