//! The online store as a user meets it: `quiver run` writes it, `quiver get` reads it at a
//! request time T, and every window ends at T. Checked against the definition written out
//! directly (the events of the key with time in `[T - w, T]`), for every aggregate, as T moves
//! past a key's last event and its windows decay.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;
use common::Rng;

const MINUTE_MS: i64 = 60_000;
/// 2026-01-01T00:00:00Z in ms.
const BASE_MS: i64 = 1_767_225_600_000;

const VIEW: &str = "SELECT card_id, event_time,
  count(*) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW) AS n_10m,
  count(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW) AS valid_10m,
  sum(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW) AS sum_1h,
  avg(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW) AS avg_1h,
  min(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '30 minutes' PRECEDING AND CURRENT ROW) AS min_30m,
  max(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '30 minutes' PRECEDING AND CURRENT ROW) AS max_30m,
  stddev_samp(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '2 hours' PRECEDING AND CURRENT ROW) AS sd_2h,
  var_pop(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '2 hours' PRECEDING AND CURRENT ROW) AS var_pop_2h,
  sum(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW)
    / count(*) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW) AS per_txn_1h,
  count(*) OVER (PARTITION BY card_id ORDER BY event_time) AS n_lifetime,
  amount
FROM transactions";

/// One event: card, time (ms), amount (None = null).
type Event = (String, i64, Option<f64>);

/// Writes NDJSON events (in a shuffled order within the lateness) and the config; returns the
/// config path and the events.
fn write_pipeline(dir: &Path, seed: u64) -> (PathBuf, Vec<Event>) {
    let mut rng = Rng(seed);
    let mut events: Vec<Event> = Vec::new();
    // Keys: a hot one, quiet ones, one that stops early (its windows have long decayed).
    for (card, count, stop_min) in [
        ("hot", 400, 180),
        ("a", 40, 170),
        ("b", 25, 150),
        ("early", 30, 60),
    ] {
        for _ in 0..count {
            let t = BASE_MS + rng.below(stop_min * MINUTE_MS as u64) as i64;
            // Ties at whole minutes, now and then a null amount.
            let t = if rng.below(4) == 0 {
                t - t % MINUTE_MS
            } else {
                t
            };
            let amount = (rng.below(20) != 0).then(|| (rng.below(100_000) as f64) / 100.0);
            events.push((card.to_string(), t, amount));
        }
    }
    // The last events of the hot card, so every window's edge is crossed at known times.
    events.push(("hot".into(), BASE_MS + 180 * MINUTE_MS, Some(5.0)));
    events.sort_by_key(|e| e.1);
    // Arrival order: disorder of up to 20 s, within max_lateness.
    let mut lines: Vec<(i64, String)> = events
        .iter()
        .map(|(card, t, amount)| {
            let arrival = t + rng.below(20_000) as i64;
            let amount = amount.map_or("null".to_string(), |a| a.to_string());
            (
                arrival,
                format!("{{\"card_id\": \"{card}\", \"amount\": {amount}, \"event_time\": {t}}}"),
            )
        })
        .collect();
    lines.sort_by_key(|l| l.0);
    let text: Vec<String> = lines.into_iter().map(|l| l.1).collect();
    std::fs::write(dir.join("events.ndjson"), text.join("\n") + "\n").unwrap();
    std::fs::write(dir.join("view.sql"), VIEW).unwrap();
    let config = format!(
        "name: online
source:
  name: transactions
  files:
    location: {}
    format: ndjson
    batch_size: 50
    schema:
      - {{name: card_id, type: string}}
      - {{name: amount, type: float}}
      - {{name: event_time, type: timestamp, nullable: false}}
event_time:
  column: event_time
  max_lateness: 30s
views:
  - name: cards
    file: view.sql
checkpoint:
  every_events: 100
",
        dir.join("events.ndjson").display()
    );
    let path = dir.join("pipeline.yaml");
    std::fs::write(&path, config).unwrap();
    (path, events)
}

fn run(config: &Path, out: &Path) {
    let output = common::quiver_command("run", config, &[("--output", out)])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "quiver run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `quiver get <config> cards <entities> --json [--at at]` reading the store under `out`.
fn get(config: &Path, out: &Path, entities: &[&str], at: Option<i64>) -> Result<Value, String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quiver"));
    cmd.arg("get")
        .arg(config)
        .arg("cards")
        .args(entities)
        .arg("--json")
        .arg("--online")
        .arg(out.join("online.redb"))
        .stdin(Stdio::null());
    if let Some(at) = at {
        cmd.arg("--at")
            .arg(quiver_pipeline::lineage::format_micros(at * 1000));
    }
    let output = cmd.output().unwrap();
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&output.stdout).unwrap())
}

/// The features of `card` with every window ending at `at` (ms), from the definition.
fn expected(events: &[Event], card: &str, at: i64) -> Vec<(&'static str, Option<f64>)> {
    let within = |minutes: i64| -> Vec<Option<f64>> {
        events
            .iter()
            .filter(|(c, t, _)| c == card && *t <= at && *t >= at - minutes * MINUTE_MS)
            .map(|e| e.2)
            .collect()
    };
    let values = |minutes| -> Vec<f64> { within(minutes).into_iter().flatten().collect() };
    let sum = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>());
    let mean = |v: &[f64]| sum(v).map(|s| s / v.len() as f64);
    let squares = |v: &[f64]| {
        let m = mean(v).unwrap_or(0.0);
        v.iter().map(|x| (x - m) * (x - m)).sum::<f64>()
    };
    let (v60, v30, v120) = (values(60), values(30), values(120));
    let n60 = within(60).len() as f64;
    vec![
        ("n_10m", Some(within(10).len() as f64)),
        ("valid_10m", Some(values(10).len() as f64)),
        ("sum_1h", sum(&v60)),
        ("avg_1h", mean(&v60)),
        ("min_30m", v30.iter().copied().reduce(f64::min)),
        ("max_30m", v30.iter().copied().reduce(f64::max)),
        (
            "sd_2h",
            (v120.len() > 1).then(|| (squares(&v120) / (v120.len() - 1) as f64).sqrt()),
        ),
        (
            "var_pop_2h",
            (!v120.is_empty()).then(|| squares(&v120) / v120.len() as f64),
        ),
        (
            "per_txn_1h",
            sum(&v60).filter(|_| n60 > 0.0).map(|s| s / n60),
        ),
        (
            "n_lifetime",
            Some(
                events
                    .iter()
                    .filter(|(c, t, _)| c == card && *t <= at)
                    .count() as f64,
            ),
        ),
    ]
}

fn assert_close(got: &Value, want: Option<f64>, what: &str) {
    match (got.as_f64(), want) {
        (None, None) => assert!(got.is_null(), "{what}: {got}"),
        (Some(g), Some(w)) => assert!(
            (g - w).abs() <= 1e-9 * w.abs().max(1.0),
            "{what}: got {g}, want {w}"
        ),
        _ => panic!("{what}: got {got}, want {want:?}"),
    }
}

#[test]
fn windows_read_at_request_time_decay_exactly_as_sql_defines_them() {
    let dir = tempfile::tempdir().unwrap();
    let (config, events) = write_pipeline(dir.path(), 0x5DEE_CE66_D1CE_4E5B);
    let out = dir.path().join("out");
    run(&config, &out);
    let last = events.iter().map(|e| e.1).max().unwrap();
    let cards = ["hot", "a", "b", "early", "never-seen"];
    // Times from the last event on: every window's edge, and one microsecond past some.
    let mut times = vec![last, last + 1, last + 59_999];
    for minutes in [10, 30, 60, 120] {
        times.push(last + minutes * MINUTE_MS);
        times.push(last + minutes * MINUTE_MS + 1);
    }
    times.push(last + 7 * 24 * 60 * MINUTE_MS);
    let mut nonzero = 0;
    for &at in &times {
        let got = get(&config, &out, &cards, Some(at)).unwrap();
        assert_eq!(got["view"], "cards");
        let rows = got["features"].as_array().unwrap();
        assert_eq!(rows.len(), cards.len());
        for (row, card) in rows.iter().zip(cards) {
            assert_eq!(row["card_id"], card);
            // `amount` reads the event's own column: it has no value at a time with no event.
            assert!(row.get("amount").is_none(), "{row}");
            for (feature, want) in expected(&events, card, at) {
                assert_close(&row[feature], want, &format!("{card}.{feature} at {at}"));
                nonzero += usize::from(want.is_some_and(|w| w != 0.0) && feature == "n_10m");
            }
        }
    }
    assert!(
        nonzero >= 3,
        "some short windows are read before they empty"
    );

    // Before the store's watermark a read cannot be exact: a clear refusal.
    let e = get(&config, &out, &["hot"], Some(last - MINUTE_MS)).unwrap_err();
    assert!(e.contains("before the online store's watermark"), "{e}");
    // Unknown features and views are named.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quiver"));
    let output = cmd
        .args(["get"])
        .arg(&config)
        .args(["cards", "hot", "--features", "n_10m,nope", "--online"])
        .arg(out.join("online.redb"))
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && e.contains("no online feature `nope`") && e.contains("n_10m"),
        "{e}"
    );

    // A second run over the same output replaces the table: same values, nothing doubled.
    run(&config, &out);
    let again = get(&config, &out, &cards, Some(last + 5 * MINUTE_MS)).unwrap();
    for (row, card) in again["features"].as_array().unwrap().iter().zip(cards) {
        for (feature, want) in expected(&events, card, last + 5 * MINUTE_MS) {
            assert_close(&row[feature], want, &format!("rerun {card}.{feature}"));
        }
    }
}
