//! Variance stays exact when values far from the rest leave a window that never empties
//! (issue: a key's first amount of 1,000,000 followed by a week of amounts around 10). The
//! reference is exact: amounts are whole cents, so sums of cents and of squared cents are exact
//! integers and each variance is one rounding away from the true value.

use quiver_gpu::{AggKind, Frame, InputColumn, KeyedWindows, WindowPlan, WindowSpec};

const MINUTE: i64 = 60_000_000;
const DAY: i64 = 24 * 60 * MINUTE;

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Exact sample and population variance of `cents` / 100.
fn exact(cents: &[i64]) -> (Option<f64>, f64) {
    exact_in_units(cents, 100)
}

/// Exact sample and population variance of `units` / `per_unit`.
fn exact_in_units(cents: &[i64], per_unit: i64) -> (Option<f64>, f64) {
    let n = cents.len() as i128;
    let s1: i128 = cents.iter().map(|&c| c as i128).sum();
    let s2: i128 = cents.iter().map(|&c| (c as i128) * (c as i128)).sum();
    let numerator = (n * s2 - s1 * s1) as f64; // n^2 * var_pop * 10^4, exact before this cast
    let scale = (per_unit * per_unit) as f64;
    let pop = numerator / (n * n) as f64 / scale;
    let samp = (n > 1).then(|| numerator / (n * (n - 1)) as f64 / scale);
    (samp, pop)
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-9 * want.abs().max(1e-300)
}

#[test]
fn windows_that_never_empty_stay_exact_after_far_values_leave() {
    let week = Frame::Range {
        width_micros: 7 * DAY,
    };
    let specs = vec![
        WindowSpec {
            kind: AggKind::StddevSamp,
            input: 0,
            frame: week,
        },
        WindowSpec {
            kind: AggKind::VarPop,
            input: 0,
            frame: week,
        },
        WindowSpec {
            kind: AggKind::VarSamp,
            input: 0,
            frame: Frame::Unbounded,
        },
    ];
    let plan = WindowPlan::new(specs, 1).unwrap();
    let mut windows = KeyedWindows::new(plan);
    // Key "a": 1,000,000.00 first, then ~10.00 every 10 minutes for 9 days. Key "b": random
    // amounts with a 10,000,000.00 spike now and then.
    let mut rng = 42u64;
    let mut events: Vec<(&[u8], i64, i64)> = Vec::new();
    events.push((b"a", 0, 100_000_000));
    for i in 1..(9 * 24 * 6) {
        let t = i * 10 * MINUTE;
        events.push((b"a", t, 1000 + (xorshift(&mut rng) % 200) as i64 - 100));
        let b = if xorshift(&mut rng).is_multiple_of(300) {
            1_000_000_000
        } else {
            (xorshift(&mut rng) % 50_000) as i64
        };
        events.push((b"b", t + 1, b));
    }
    let mut checked = 0;
    for chunk in events.chunks(97) {
        let keys: Vec<&[u8]> = chunk.iter().map(|e| e.0).collect();
        let times: Vec<i64> = chunk.iter().map(|e| e.1).collect();
        let values: Vec<f64> = chunk.iter().map(|e| e.2 as f64 / 100.0).collect();
        let out = windows
            .apply(&keys, &times, &[InputColumn::floats(&values, None)])
            .unwrap();
        for (row, &(key, t, _)) in chunk.iter().enumerate() {
            let same: Vec<&(&[u8], i64, i64)> =
                events.iter().filter(|e| e.0 == key && e.1 <= t).collect();
            let window: Vec<i64> = same
                .iter()
                .filter(|e| e.1 >= t - 7 * DAY)
                .map(|e| e.2)
                .collect();
            let lifetime: Vec<i64> = same.iter().map(|e| e.2).collect();
            let (samp, pop) = exact(&window);
            let (life_samp, _) = exact(&lifetime);
            let got = |spec: usize| out.valid[spec][row].then_some(out.values[spec][row]);
            match samp {
                Some(v) => {
                    let sd = got(0).expect("stddev");
                    assert!(
                        close(sd, v.sqrt()),
                        "stddev {key:?} at {t}: {sd} vs {}",
                        v.sqrt()
                    );
                }
                None => assert_eq!(got(0), None),
            }
            let vp = got(1).expect("var_pop");
            assert!(close(vp, pop), "var_pop {key:?} at {t}: {vp} vs {pop}");
            if let Some(v) = life_samp {
                let life = got(2).expect("lifetime var");
                assert!(close(life, v), "lifetime var {key:?} at {t}: {life} vs {v}");
            }
            checked += 1;
        }
    }
    assert!(checked > 2500);
}

/// Card-like histories: amounts over six orders of magnitude, with pairs one unit apart, so
/// windows often hold two close amounts after far larger ones have left (what generated card
/// data showed: 1e-8 relative error with `f64` shifted sums). Amounts are whole 1/128ths, so
/// the `f64` inputs are exactly the reference's values. Every stddev and variance within 1e-12
/// of the exact value, and exactly 0 where the window's amounts are all equal.
#[test]
fn close_amounts_after_far_ones_are_exact_to_1e_12() {
    let day = Frame::Range { width_micros: DAY };
    let specs = vec![
        WindowSpec {
            kind: AggKind::StddevSamp,
            input: 0,
            frame: day,
        },
        WindowSpec {
            kind: AggKind::VarPop,
            input: 0,
            frame: Frame::Range {
                width_micros: 7 * DAY,
            },
        },
    ];
    let plan = WindowPlan::new(specs, 1).unwrap();
    let mut windows = KeyedWindows::new(plan);
    let mut rng = 7u64;
    let keys: Vec<Vec<u8>> = (0..60).map(|k| format!("card_{k}").into_bytes()).collect();
    // Per key: (time, cents), in time order.
    let mut history: Vec<Vec<(i64, i64)>> = vec![Vec::new(); keys.len()];
    let mut events: Vec<(usize, i64, i64)> = Vec::new();
    for (k, h) in history.iter_mut().enumerate() {
        let mut t = 0i64;
        let mut last = 1000i64;
        for _ in 0..120 {
            t += (xorshift(&mut rng) % (30 * 60)) as i64 * MINUTE;
            let r = xorshift(&mut rng);
            let cents = match r % 5 {
                0 => last + 1,                            // one unit above the previous amount
                1 => last,                                // the same amount again
                2 => 100 + (r >> 8) as i64 % 128_000_000, // up to 1,000,000
                _ => 100 + (r >> 8) as i64 % 10_000,
            };
            last = cents;
            h.push((t, cents));
            events.push((k, t, cents));
        }
    }
    events.sort_by_key(|e| (e.1, e.0));
    let close = |got: f64, want: f64| {
        if want == 0.0 {
            got == 0.0
        } else {
            ((got - want) / want).abs() <= 1e-12
        }
    };
    let mut worst = 0f64;
    for chunk in events.chunks(101) {
        let ks: Vec<&[u8]> = chunk.iter().map(|e| keys[e.0].as_slice()).collect();
        let times: Vec<i64> = chunk.iter().map(|e| e.1).collect();
        let values: Vec<f64> = chunk.iter().map(|e| e.2 as f64 / 128.0).collect();
        let out = windows
            .apply(&ks, &times, &[InputColumn::floats(&values, None)])
            .unwrap();
        for (row, &(k, t, _)) in chunk.iter().enumerate() {
            let within = |width: i64| -> Vec<i64> {
                history[k]
                    .iter()
                    .filter(|e| e.0 <= t && e.0 >= t - width)
                    .map(|e| e.1)
                    .collect()
            };
            let (samp, _) = exact_in_units(&within(DAY), 128);
            let (_, pop) = exact_in_units(&within(7 * DAY), 128);
            if let Some(v) = samp {
                let sd = out.values[0][row];
                assert!(out.valid[0][row]);
                assert!(close(sd, v.sqrt()), "stddev at {t}: {sd} vs {}", v.sqrt());
                if v > 0.0 {
                    worst = worst.max(((sd - v.sqrt()) / v.sqrt()).abs());
                }
            } else {
                assert!(!out.valid[0][row]);
            }
            let vp = out.values[1][row];
            assert!(close(vp, pop), "var_pop at {t}: {vp} vs {pop}");
        }
    }
    println!("largest relative stddev error: {worst:.2e}");
}
