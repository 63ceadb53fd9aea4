//! Streaming and backfill give the same values to the bit: random streams (keys, ties, nulls,
//! non-finite values, amounts far apart so that variances rebuild their moments, segments
//! longer than the CPU kernel's deferral) through [`KeyedWindows`] batch by batch, and the
//! same rows sorted and evaluated at once by the [`CpuBackend`], over random plans of float,
//! integer and decimal inputs. Rows the batch evaluation skips (training sets read only at
//! probes) still read the same values where it emits.

mod common;

use common::{random_specs, Rng};
use quiver_gpu::{
    dense_key_ids, key_time_order, CpuBackend, FeatureOutput, InputColumn, InputKind, KeyedWindows,
    Scatter, SortedRows, WindowBackend, WindowPlan,
};

/// Input kinds of the three inputs: a float, an integer and a decimal with 2 digits.
fn kinds() -> Vec<InputKind> {
    vec![
        InputKind::Float,
        InputKind::Integer,
        InputKind::Decimal {
            scale: 2,
            avg_multiplier: 10_000,
        },
    ]
}

struct Stream {
    keys: Vec<Vec<u8>>,
    times: Vec<i64>,
    floats: Vec<f64>,
    exact: Vec<Vec<i128>>,
    valid: Vec<Vec<bool>>,
}

impl Stream {
    fn inputs(&self) -> Vec<InputColumn<'_>> {
        (0..3)
            .map(|i| InputColumn {
                values: if i == 0 { &self.floats } else { &[] },
                validity: Some(&self.valid[i]),
                exact: (i > 0).then(|| &self.exact[i - 1][..]),
            })
            .collect()
    }
}

fn float(rng: &mut Rng) -> f64 {
    match rng.below(40) {
        0 => f64::NAN,
        1 => f64::INFINITY,
        2 => f64::NEG_INFINITY,
        3..=6 => 1e15 + rng.below(100) as f64, // far from the rest: variances rebuild
        _ => (rng.below(20_000) as f64 - 10_000.0) / 8.0,
    }
}

fn stream(rng: &mut Rng, events: usize, keys: u64) -> Stream {
    let mut t = rng.below(1_000) as i64 * 1_000;
    let mut s = Stream {
        keys: Vec::with_capacity(events),
        times: Vec::with_capacity(events),
        floats: Vec::with_capacity(events),
        exact: vec![Vec::with_capacity(events), Vec::with_capacity(events)],
        valid: vec![Vec::new(), Vec::new(), Vec::new()],
    };
    for _ in 0..events {
        match rng.below(10) {
            0..=2 => {}
            3 => t += (100 + rng.below(100)) as i64 * 1_000,
            _ => t += rng.below(7) as i64 * 1_000,
        }
        s.keys.push(vec![b'k', rng.below(keys) as u8]);
        s.times.push(t);
        s.floats.push(float(rng));
        s.exact[0].push(rng.below(1 << 40) as i128 - (1 << 39));
        s.exact[1].push(rng.below(1_000_000) as i128 - 500_000);
        for v in &mut s.valid {
            v.push(rng.below(6) != 0);
        }
    }
    s
}

fn same(a: &FeatureOutput, ra: usize, b: &FeatureOutput, rb: usize, spec: usize) -> bool {
    if a.valid[spec][ra] != b.valid[spec][rb] {
        return false;
    }
    if !a.valid[spec][ra] {
        return true;
    }
    match (&a.exact[spec], &b.exact[spec]) {
        (Some(x), Some(y)) => x[ra] == y[rb],
        (None, None) => a.values[spec][ra].to_bits() == b.values[spec][rb].to_bits(),
        _ => false,
    }
}

fn run_case(seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let specs = random_specs(&mut rng, 7, 3, 200);
    let plan = WindowPlan::new(specs, 3)
        .and_then(|p| p.with_input_kinds(kinds()))
        .unwrap();
    // Every tenth case has one long key: its segment passes the kernel's deferral length.
    let (events, keys) = if seed.is_multiple_of(10) {
        (6_000, 1)
    } else {
        (1 + rng.below(400) as usize, 1 + rng.below(6))
    };
    let s = stream(&mut rng, events, keys);
    let inputs = s.inputs();

    let mut windows = KeyedWindows::new(plan.clone());
    let mut streamed = FeatureOutput::new(plan.specs().len(), events);
    let mut start = 0;
    while start < events {
        let mut end = (start + 1 + rng.below(80) as usize).min(events);
        while end < events && s.times[end] == s.times[end - 1] {
            end += 1;
        }
        let keys: Vec<&[u8]> = s.keys[start..end].iter().map(Vec::as_slice).collect();
        let part: Vec<InputColumn<'_>> = (inputs.iter())
            .map(|c| InputColumn {
                values: if c.values.is_empty() {
                    &[]
                } else {
                    &c.values[start..end]
                },
                validity: c.validity.map(|v| &v[start..end]),
                exact: c.exact.map(|v| &v[start..end]),
            })
            .collect();
        let out = windows
            .apply(&keys, &s.times[start..end], &part)
            .unwrap_or_else(|e| panic!("case {seed}: {e}"));
        for spec in 0..plan.specs().len() {
            for row in 0..end - start {
                streamed.values[spec][start + row] = out.values[spec][row];
                streamed.valid[spec][start + row] = out.valid[spec][row];
                if let Some(exact) = &out.exact[spec] {
                    streamed.exact[spec].get_or_insert_with(|| vec![0; events])[start + row] =
                        exact[row];
                }
            }
        }
        start = end;
    }

    // The same rows sorted by key and time, evaluated at once.
    let keys: Vec<&[u8]> = s.keys.iter().map(Vec::as_slice).collect();
    let (ids, count) = dense_key_ids(&keys);
    let sorted = key_time_order(&ids, count, &s.times);
    let gather = |column: &[f64]| -> Vec<f64> {
        if column.is_empty() {
            return Vec::new();
        }
        sorted.order.iter().map(|&r| column[r as usize]).collect()
    };
    let floats = gather(&s.floats);
    let valid: Vec<Vec<bool>> = (s.valid.iter())
        .map(|v| sorted.order.iter().map(|&r| v[r as usize]).collect())
        .collect();
    let exact: Vec<Vec<i128>> = (s.exact.iter())
        .map(|v| sorted.order.iter().map(|&r| v[r as usize]).collect())
        .collect();
    let times: Vec<i64> = sorted.order.iter().map(|&r| s.times[r as usize]).collect();
    let sorted_inputs: Vec<InputColumn<'_>> = (0..3)
        .map(|i| InputColumn {
            values: if i == 0 { &floats } else { &[] },
            validity: Some(&valid[i]),
            exact: (i > 0).then(|| &exact[i - 1][..]),
        })
        .collect();
    let rows = SortedRows {
        offsets: &sorted.offsets,
        times: &times,
        inputs: &sorted_inputs,
    };
    let cpu = CpuBackend::new();
    let mut batch = FeatureOutput::new(plan.specs().len(), events);
    cpu.evaluate(
        &plan,
        &rows,
        Scatter {
            out: &mut batch,
            positions: &sorted.order,
        },
        &|_| {},
    )
    .unwrap_or_else(|e| panic!("case {seed}: {e}"));
    for spec in 0..plan.specs().len() {
        for row in 0..events {
            assert!(
                same(&streamed, row, &batch, row, spec),
                "case {seed}: {:?} row {row} (time {}): streamed {:?}/{:?} batch {:?}/{:?}",
                plan.specs()[spec],
                s.times[row],
                streamed.values[spec][row],
                streamed.exact[spec].as_ref().map(|e| e[row]),
                batch.values[spec][row],
                batch.exact[spec].as_ref().map(|e| e[row]),
            );
        }
    }

    // Read at one row in 97 only (probes): the rows read get the same values.
    let mut packed = vec![Scatter::SKIP; events];
    let mut read = Vec::new();
    for (k, &row) in sorted.order.iter().enumerate() {
        if row % 97 == 3 {
            packed[k] = read.len() as u32;
            read.push(row as usize);
        }
    }
    let mut probes = FeatureOutput::new(plan.specs().len(), read.len());
    cpu.evaluate(
        &plan,
        &rows,
        Scatter {
            out: &mut probes,
            positions: &packed,
        },
        &|_| {},
    )
    .unwrap_or_else(|e| panic!("case {seed}: {e}"));
    for spec in 0..plan.specs().len() {
        for (i, &row) in read.iter().enumerate() {
            assert!(
                same(&streamed, row, &probes, i, spec),
                "case {seed}, probes: {:?} row {row}: {:?} vs {:?}",
                plan.specs()[spec],
                streamed.values[spec][row],
                probes.values[spec][i]
            );
        }
    }
}

#[test]
fn backfill_equals_streaming_to_the_bit() {
    let cases: u64 = std::env::var("QUIVER_PROPERTY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    for seed in 0..cases {
        run_case(seed);
    }
}
