//! The online store as a user meets it: `quiver run` writes it, `quiver get` reads it at a
//! request time T, and every window ends at T. Checked against the definition written out
//! directly (the events of the key with time in `[T - w, T]`), for every aggregate, as T moves
//! past a key's last event and its windows decay.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;
use common::{succeed, Rng};

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
        ("hot", 2500, 180),
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
    let mut lines: Vec<(i64, i64, String)> = events
        .iter()
        .map(|(card, t, amount)| {
            let arrival = t + rng.below(20_000) as i64;
            let amount = amount.map_or("null".to_string(), |a| a.to_string());
            (
                arrival,
                *t,
                format!("{{\"card_id\": \"{card}\", \"amount\": {amount}, \"event_time\": {t}}}"),
            )
        })
        .collect();
    lines.sort_by_key(|l| l.0);
    // Events of the last half hour (event time) go to a second file: a later run's input.
    let split = BASE_MS + 150 * MINUTE_MS;
    let (first, later): (Vec<_>, Vec<_>) = lines.into_iter().partition(|l| l.1 < split);
    for (file, lines) in [("events.ndjson", first), ("later.ndjson", later)] {
        let text: Vec<String> = lines.into_iter().map(|l| l.2).collect();
        std::fs::write(dir.join(file), text.join("\n") + "\n").unwrap();
    }
    std::fs::write(dir.join("view.sql"), VIEW).unwrap();
    let config = format!(
        "name: online
source:
  name: transactions
  files:
    location: {}*.ndjson
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
store: {}
",
        dir.join("").display(),
        dir.join("store").display()
    );
    let path = dir.join("pipeline.yaml");
    std::fs::write(&path, config).unwrap();
    (path, events)
}

/// Adds `online:` with `settings` (YAML lines indented by two) to the config at `config`.
fn set_online(config: &Path, settings: &str) {
    let mut text = std::fs::read_to_string(config).unwrap();
    text.push_str(&format!("online:\n  {settings}\n"));
    std::fs::write(config, text).unwrap();
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

/// `quiver get <config> cards <entities> --json [--at at]`, reading the embedded store file
/// `file`, or the config's store (Redis) when `None`.
fn get(
    config: &Path,
    file: Option<&Path>,
    entities: &[&str],
    at: Option<i64>,
) -> Result<Value, String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quiver"));
    cmd.arg("get")
        .arg(config)
        .arg("cards")
        .args(entities)
        .arg("--json")
        .stdin(Stdio::null());
    if let Some(file) = file {
        cmd.arg("--online").arg(file);
    }
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

/// Reads the store as T moves past every window edge and compares every feature of every card
/// with the definition.
fn check_decay(config: &Path, file: Option<&Path>, events: &[Event], what: &str) {
    let last = events.iter().map(|e| e.1).max().unwrap();
    let cards = ["hot", "a", "b", "early", "never-seen"];
    // Times from the last event on: every window's edge, and one millisecond past it. The
    // store's watermark is just after the last event: reads start there.
    let mut times = vec![last + 1, last + 2, last + 59_999];
    for minutes in [10, 30, 60, 120] {
        times.push(last + minutes * MINUTE_MS);
        times.push(last + minutes * MINUTE_MS + 1);
    }
    times.push(last + 7 * 24 * 60 * MINUTE_MS);
    let mut nonzero = 0;
    for &at in &times {
        let got = get(config, file, &cards, Some(at)).unwrap();
        assert_eq!(got["view"], "cards");
        let rows = got["features"].as_array().unwrap();
        assert_eq!(rows.len(), cards.len());
        for (row, card) in rows.iter().zip(cards) {
            assert_eq!(row["card_id"], card);
            // `amount` reads the event's own column: it has no value at a time with no event.
            assert!(row.get("amount").is_none(), "{row}");
            for (feature, want) in expected(events, card, at) {
                assert_close(
                    &row[feature],
                    want,
                    &format!("{what}: {card}.{feature} at {at}"),
                );
                nonzero += usize::from(want.is_some_and(|w| w != 0.0) && feature == "n_10m");
            }
        }
    }
    assert!(
        nonzero >= 3,
        "some short windows are read before they empty"
    );
}

#[test]
fn windows_read_at_request_time_decay_exactly_as_sql_defines_them() {
    let dir = tempfile::tempdir().unwrap();
    let (config, events) = write_pipeline(dir.path(), 0x5DEE_CE66_D1CE_4E5B);
    let out = dir.path().join("out");
    run(&config, &out);
    let file = out.join("online.redb");
    let file = Some(file.as_path());
    check_decay(&config, file, &events, "embedded");
    let last = events.iter().map(|e| e.1).max().unwrap();
    let cards = ["hot", "a", "b", "early", "never-seen"];

    // Before the store's watermark a read cannot be exact: a clear refusal.
    let e = get(&config, file, &["hot"], Some(last)).unwrap_err();
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
    let again = get(&config, file, &cards, Some(last + 5 * MINUTE_MS)).unwrap();
    for (row, card) in again["features"].as_array().unwrap().iter().zip(cards) {
        for (feature, want) in expected(&events, card, last + 5 * MINUTE_MS) {
            assert_close(&row[feature], want, &format!("rerun {card}.{feature}"));
        }
    }
}

/// `quiver apply` over `first`: the history registered and backfilled.
fn apply_history(config: &str, first: &Path) {
    let applied = quiver(&[
        "apply",
        config,
        "--no-progress",
        "--input",
        first.to_str().unwrap(),
    ]);
    succeed(&applied, "quiver apply");
}

/// `quiver verify-online <config> cards --online <online> --json <extra>`: whether it passed,
/// and its report.
fn verify_cards(config: &str, online: &str, extra: &[&str]) -> (bool, Value) {
    let mut args = vec![
        "verify-online",
        config,
        "cards",
        "--online",
        online,
        "--json",
    ];
    args.extend_from_slice(extra);
    let output = quiver(&args);
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("no report: {}", String::from_utf8_lossy(&output.stderr)));
    (output.status.success(), report)
}

/// `quiver apply` over `first` (history registered and backfilled), then `quiver run --store`
/// over `later` into `out` (its online store holds windows warmed up from the event log plus
/// the new events).
fn apply_then_run_store(config: &str, first: &Path, later: &Path, out: &Path) {
    apply_history(config, first);
    let ran = quiver(&[
        "run",
        config,
        "--store",
        "--no-progress",
        "--input",
        later.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    succeed(&ran, "quiver run");
}

fn quiver(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn verify_online_finds_nothing_on_a_healthy_store_and_names_a_corrupted_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (config, events) = write_pipeline(dir.path(), 0x2545_F491_4F6C_DD1D);
    let config = config.to_str().unwrap();
    let out = dir.path().join("out");
    let online = out.join("online.redb");
    let online = online.to_str().unwrap();
    // History registered and backfilled from the first file, then a store run over the later
    // events: the online store holds windows warmed up from the event log plus the new events.
    let first = dir.path().join("events.ndjson");
    let later = dir.path().join("later.ndjson");
    apply_then_run_store(config, &first, &later, &out);

    let verify = |extra: &[&str]| verify_cards(config, online, extra);
    let (ok, report) = verify(&[]);
    assert!(ok, "{report}");
    assert_eq!(report["mismatched"], 0, "{report}");
    assert_eq!(report["checked"], 4, "every entity: {report}");
    assert_eq!(
        report["events"].as_u64().unwrap() as usize,
        events.len(),
        "{report}"
    );
    // Later, as windows decay, still equal.
    let last = events.iter().map(|e| e.1).max().unwrap();
    let at = quiver_pipeline::lineage::format_micros((last + 20 * MINUTE_MS) * 1000);
    let (ok, report) = verify(&["--at", &at]);
    assert!(ok && report["mismatched"] == 0, "{report}");

    // A changed view is a new version; the old one stays readable as `cards@<version>`.
    let old_version = report["version"].as_str().unwrap().to_string();
    let read = |view: &str| {
        let output = quiver(&[
            "get", config, view, "hot", "a", "--json", "--online", online, "--at", &at,
        ]);
        succeed(&output, "the command");
        serde_json::from_slice::<Value>(&output.stdout).unwrap()
    };
    let before = read("cards");
    let sql = VIEW.replace(
        "  amount\nFROM",
        "  max(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW) AS max_10m,\n  amount\nFROM",
    );
    assert_ne!(sql, VIEW);
    std::fs::write(dir.path().join("view.sql"), sql).unwrap();
    apply_then_run_store(config, &first, &later, &out);
    let new = read("cards");
    assert_ne!(new["version"], before["version"]);
    assert!(new["features"][0].get("max_10m").is_some(), "{new}");
    let old = read(&format!("cards@{old_version}"));
    assert_eq!(old["version"], before["version"]);
    assert_eq!(
        old["features"], before["features"],
        "the old version reads as it was"
    );
    for (a, b) in new["features"]
        .as_array()
        .unwrap()
        .iter()
        .zip(before["features"].as_array().unwrap())
    {
        assert_eq!(
            a["n_10m"], b["n_10m"],
            "the same events, the same shared features"
        );
    }
    let (ok, report) = verify(&[]);
    assert!(
        ok && report["mismatched"] == 0,
        "the new version verifies: {report}"
    );
    let missing = quiver(&["get", config, "cards@0000", "hot", "--online", online]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no version 0000"));

    // One entity's state replaced by another's: reported, by entity and feature.
    {
        use quiver_store::online::{EmbeddedOnline, OnlineStore};
        let store = EmbeddedOnline::open(Path::new(online)).unwrap();
        let current = report["version"].as_str().unwrap();
        let table = format!("cards@{current}");
        let (_, entries) = store.scan(&table, None, 10).unwrap().unwrap();
        let (victim, _) = &entries[0];
        let (_, other_state) = (entries.iter())
            .max_by_key(|(_, s)| s.segments.iter().map(|(_, b)| b.len()).sum::<usize>())
            .unwrap();
        store.put_raw(&table, victim, other_state).unwrap();
    }
    let (ok, report) = verify(&[]);
    assert!(!ok, "a mismatch fails the command");
    let mismatches = report["mismatches"].as_array().unwrap();
    assert!(!mismatches.is_empty(), "{report}");
    let entities: std::collections::BTreeSet<String> =
        mismatches.iter().map(|m| m["entity"].to_string()).collect();
    assert_eq!(entities.len(), 1, "only the corrupted entity: {report}");

    // A third version: a view keeps its two newest versions' tables (online.keep_versions),
    // so the first one's goes and reading it says so; the second stays readable.
    let third = VIEW.replace(
        "  amount\nFROM",
        "  amount AS amount_again,\n  amount\nFROM",
    );
    assert_ne!(third, VIEW);
    std::fs::write(dir.path().join("view.sql"), third).unwrap();
    apply_then_run_store(config, &first, &later, &out);
    let gone = quiver(&[
        "get",
        config,
        &format!("cards@{old_version}"),
        "hot",
        "--online",
        online,
    ]);
    assert!(!gone.status.success());
    let text = String::from_utf8_lossy(&gone.stderr);
    assert!(text.contains("has no version"), "{text}");
    let second = new["version"].as_str().unwrap();
    read(&format!("cards@{second}"));
}

#[test]
fn redis_serves_the_same_decaying_windows_and_survives_a_crash_mid_commit() {
    let Some(redis) = common::RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (config, events) = write_pipeline(dir.path(), 0x94D0_49BB_1331_11EB);
    set_online(
        &config,
        &format!("redis: {}\n  redis_prefix: t1", redis.url()),
    );
    let out = dir.path().join("out");
    // Killed just after a checkpoint committed, before the online store took its epoch:
    // the rerun's recovery applies it, and the run goes on to the end.
    let crashed = common::quiver_command("run", &config, &[("--output", &out)])
        .env("QUIVER_CRASH_AT", "after_checkpoint:3")
        .output()
        .unwrap();
    assert!(!crashed.status.success(), "the crash point fired");
    run(&config, &out);
    assert!(
        !out.join("online.redb").exists(),
        "the Redis store is used, not a file"
    );
    check_decay(&config, None, &events, "redis");
    // A fresh run of the same pipeline replaces the tables, nothing doubles.
    let fresh = common::quiver_command("run", &config, &[("--output", &out)])
        .arg("--fresh")
        .output()
        .unwrap();
    succeed(&fresh, "the fresh run");
    check_decay(&config, None, &events, "redis after a fresh run");
    let views: Value = {
        let output = quiver(&["get", config.to_str().unwrap(), "cards", "hot", "--json"]);
        serde_json::from_slice(&output.stdout).unwrap()
    };
    assert!(views["epoch"].as_u64().unwrap() >= 1, "{views}");
}

/// `quiver run --shard I/N` of each of `count` shards, one after the other, into `out`, with
/// `extra` arguments.
fn run_shards(config: &Path, out: &Path, count: u32, extra: &[&str]) {
    for index in 0..count {
        let shard = format!("{index}/{count}");
        let ran = common::quiver_command("run", config, &[("--output", out)])
            .args(["--shard", &shard])
            .args(extra)
            .output()
            .unwrap();
        succeed(&ran, &format!("shard {shard}"));
    }
}

/// The shards named in a read's answer.
fn shards_read(answer: &Value) -> Vec<String> {
    (answer["shards"].as_array().into_iter().flatten())
        .map(|s| s["shard"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_shards_of_a_job_write_the_online_store_and_a_read_finds_each_key_in_its_shard() {
    let dir = tempfile::tempdir().unwrap();
    let (config, events) = write_pipeline(dir.path(), 0x6C07_8965_D1CE_4E5B);
    let cards = ["hot", "a", "b", "early", "never-seen"];
    let last = events.iter().map(|e| e.1).max().unwrap();

    // Embedded: each shard process writes its own file; a read opens them all.
    let out = dir.path().join("out");
    run_shards(&config, &out, 3, &[]);
    for index in 0..3 {
        let file = out.join(format!("shard-{index}-of-3")).join("online.redb");
        assert!(file.exists(), "{} was written", file.display());
    }
    let file = out.join("online.redb");
    assert!(!file.exists(), "no unsharded file");
    check_decay(&config, Some(&file), &events, "embedded shards");
    let answer = get(&config, Some(&file), &cards, Some(last + MINUTE_MS)).unwrap();
    let read = shards_read(&answer);
    assert!(read.len() >= 2, "the cards are in several shards: {answer}");
    // One card reads one shard.
    let one = get(&config, Some(&file), &["hot"], Some(last + MINUTE_MS)).unwrap();
    assert_eq!(shards_read(&one).len(), 1, "{one}");

    // Into the store: verify-online compares every shard's entities with the offline
    // recomputation, and finds a corrupted entry in one shard's file.
    let store_config = config.to_str().unwrap();
    let stored = dir.path().join("stored");
    let first = dir.path().join("events.ndjson");
    let later = dir.path().join("later.ndjson");
    apply_history(store_config, &first);
    run_shards(
        &config,
        &stored,
        2,
        &["--store", "--input", later.to_str().unwrap()],
    );
    let online = stored.join("online.redb");
    let online = online.to_str().unwrap();
    let verify = || verify_cards(store_config, online, &[]);
    let (ok, report) = verify();
    assert!(ok && report["mismatched"] == 0, "{report}");
    assert_eq!(
        report["checked"], 4,
        "every entity of both shards: {report}"
    );
    {
        use quiver_store::online::{EmbeddedOnline, OnlineStore};
        let version = report["version"].as_str().unwrap();
        // The shard holding the hot card: its state given to another card of that shard, or
        // the hot card's state given to a card of the other shard's file.
        let files: Vec<(EmbeddedOnline, String)> = (0..2)
            .map(|i| {
                let shard = format!("shard-{i}-of-2");
                let file = EmbeddedOnline::open(&stored.join(&shard).join("online.redb")).unwrap();
                (file, format!("cards@{version}/{shard}"))
            })
            .collect();
        let mut entries: Vec<(usize, Vec<u8>, quiver_store::online::EntityState)> = Vec::new();
        for (i, (file, table)) in files.iter().enumerate() {
            let (_, page) = file.scan(table, None, 10).unwrap().unwrap();
            entries.extend(page.into_iter().map(|(k, s)| (i, k, s)));
        }
        assert_eq!(entries.len(), 4);
        let biggest = (entries.iter())
            .max_by_key(|(_, _, s)| s.segments.iter().map(|(_, b)| b.len()).sum::<usize>())
            .unwrap()
            .clone();
        let (shard, victim, _) = entries.iter().find(|(_, k, _)| *k != biggest.1).unwrap();
        let (file, table) = &files[*shard];
        file.put_raw(table, victim, &biggest.2).unwrap();
    }
    let (ok, report) = verify();
    assert!(!ok, "a mismatch fails the command: {report}");
    let entities: std::collections::BTreeSet<String> = (report["mismatches"].as_array())
        .unwrap()
        .iter()
        .map(|m| m["entity"].to_string())
        .collect();
    assert_eq!(entities.len(), 1, "only the corrupted entity: {report}");

    // Redis: the shards share one server, each with its own tables.
    let Some(redis) = common::RedisServer::start() else {
        return;
    };
    set_online(
        &config,
        &format!("redis: {}\n  redis_prefix: shards", redis.url()),
    );
    let out = dir.path().join("redis-out");
    run_shards(&config, &out, 3, &[]);
    check_decay(&config, None, &events, "redis shards");
    let answer = get(&config, None, &cards, Some(last + MINUTE_MS)).unwrap();
    assert_eq!(
        shards_read(&answer),
        read,
        "the same keys in the same shards"
    );
}

/// The stamp of epoch `epoch` of run `r` (watermark the epoch's number, fingerprint 1).
fn test_stamp(epoch: u64) -> quiver_store::online::OnlineStamp {
    quiver_store::online::OnlineStamp {
        run: "r".into(),
        epoch,
        watermark: Some(epoch as i64),
        committed_unix_ms: 0,
        fingerprint: 1,
        keys: 0,
    }
}

/// Writes 150 epochs of 40 keys (every key's head and one segment hold its epoch's number; the
/// previous epoch's segment is deleted) through `writer` while reading all keys over and over
/// through `store`: every read sees one epoch whole.
fn readers_see_whole_epochs(
    writing: std::sync::Arc<dyn quiver_store::online::OnlineStore>,
    store: std::sync::Arc<dyn quiver_store::online::OnlineStore>,
) {
    use quiver_store::online::{EntityState, EntityWrite, OnlineWrite};
    let keys: Vec<Vec<u8>> = (0..40u8).map(|k| vec![k, 0xFF, k]).collect();
    let writer = {
        let (store, keys) = (writing, keys.clone());
        std::thread::spawn(move || {
            for epoch in 1..=150u64 {
                let value = epoch.to_le_bytes().to_vec();
                let write = OnlineWrite {
                    table: "cards@v1".into(),
                    replace: epoch == 1,
                    stamp: test_stamp(epoch),
                    deletes: Vec::new(),
                    puts: (keys.iter())
                        .map(|k| EntityWrite {
                            key: k.clone(),
                            head: value.clone(),
                            deletes: vec![epoch - 1],
                            segments: vec![(epoch, value.clone())],
                        })
                        .collect(),
                    keys_after: None,
                };
                store.apply(&[write]).unwrap();
            }
        })
    };
    let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let mut reads = 0;
    while !writer.is_finished() || reads == 0 {
        let Some((stamp, values)) = store.get("cards@v1", &refs).unwrap() else {
            continue;
        };
        let value = stamp.epoch.to_le_bytes().to_vec();
        let expected = Some(EntityState {
            head: value.clone(),
            segments: vec![(stamp.epoch, value)],
        });
        assert!(
            values.iter().all(|v| *v == expected),
            "a partial epoch was visible at stamp {}",
            stamp.epoch
        );
        assert_eq!(stamp.keys, 40);
        reads += 1;
    }
    writer.join().unwrap();
    let (stamp, _) = store.get("cards@v1", &refs).unwrap().unwrap();
    assert_eq!(stamp.epoch, 150);
    assert!(reads > 1, "reads ran during the commits");
}

#[test]
fn concurrent_readers_never_see_a_partial_epoch_on_either_backend() {
    let dir = tempfile::tempdir().unwrap();
    let embedded =
        quiver_store::online::EmbeddedOnline::open(&dir.path().join("online.redb")).unwrap();
    let embedded = std::sync::Arc::new(embedded);
    readers_see_whole_epochs(embedded.clone(), embedded);
    let Some(redis) = common::RedisServer::start() else {
        return;
    };
    // Two clients, as a run and a server in another process would be.
    let open =
        || quiver_store::online::RedisOnline::open(&redis.url(), "concurrency", None).unwrap();
    readers_see_whole_epochs(std::sync::Arc::new(open()), std::sync::Arc::new(open()));
    // A cluster: the epoch is not one transaction there; readers resolve versions.
    let cluster = common::RedisCluster::start().expect("redis-server is installed");
    let open = || {
        quiver_store::online::RedisClusterOnline::open(&cluster.urls(), "concurrency", None)
            .unwrap()
    };
    readers_see_whole_epochs(std::sync::Arc::new(open()), std::sync::Arc::new(open()));
}

/// A model of the online store's contract: per key its head and segments.
type Model = std::collections::BTreeMap<Vec<u8>, quiver_store::online::EntityState>;

/// One random epoch of writes to table `t@1` (puts that delete and write segments, deleted
/// keys, keys deleted and written again, now and then a replacing epoch), applied to `model`.
fn random_epoch(rng: &mut Rng, epoch: u64, model: &mut Model) -> quiver_store::online::OnlineWrite {
    use quiver_store::online::{EntityWrite, OnlineWrite};
    let replace = epoch == 1 || rng.below(10) == 0;
    if replace {
        model.clear();
    }
    let mut deletes = Vec::new();
    let mut puts = Vec::new();
    for k in 0..30u8 {
        let key = vec![b'k', k];
        let roll = rng.below(10);
        let deleted = !replace && roll < 2 && model.contains_key(&key);
        if deleted {
            deletes.push(key.clone());
            model.remove(&key);
        }
        if roll >= 5 || (deleted && roll == 0) || (replace && model.is_empty()) {
            let mut state = model.remove(&key).unwrap_or_default();
            // A head's first byte says whether its segments are needed (as a window state's
            // does; reads select segments by it).
            let mut head = vec![rng.below(2) as u8];
            head.extend(format!("h{epoch}").into_bytes());
            let mut write = EntityWrite {
                key: key.clone(),
                head,
                ..EntityWrite::default()
            };
            for id in state.segments.iter().map(|(id, _)| *id).collect::<Vec<_>>() {
                if rng.below(3) == 0 {
                    write.deletes.push(id);
                }
            }
            if rng.below(2) == 0 {
                write
                    .segments
                    .push((rng.below(6), format!("s{epoch}").into_bytes()));
            }
            state.segments.retain(|(id, _)| !write.deletes.contains(id));
            for (id, bytes) in &write.segments {
                state.segments.retain(|(s, _)| s != id);
                state.segments.push((*id, bytes.clone()));
            }
            state.segments.sort_by_key(|(id, _)| *id);
            state.head = write.head.clone();
            model.insert(key, state);
            puts.push(write);
        }
    }
    OnlineWrite {
        table: "t@1".into(),
        replace,
        stamp: test_stamp(epoch),
        deletes,
        puts,
        keys_after: None,
    }
}

#[test]
fn every_backend_holds_what_the_contract_says_after_each_of_many_random_epochs() {
    use quiver_store::online::OnlineStore;
    let dir = tempfile::tempdir().unwrap();
    let mut stores: Vec<(&str, Box<dyn OnlineStore>)> = vec![(
        "embedded",
        Box::new(
            quiver_store::online::EmbeddedOnline::open(&dir.path().join("online.redb")).unwrap(),
        ),
    )];
    let server = common::RedisServer::start();
    let cluster = common::RedisCluster::start();
    if let (Some(server), Some(cluster)) = (&server, &cluster) {
        let redis = quiver_store::online::RedisOnline::open(&server.url(), "model", None);
        stores.push(("redis", Box::new(redis.unwrap())));
        let nodes = cluster.urls();
        let cluster = quiver_store::online::RedisClusterOnline::open(&nodes, "model", None);
        stores.push(("cluster", Box::new(cluster.unwrap())));
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut model = Model::new();
    let keys: Vec<Vec<u8>> = (0..30u8).map(|k| vec![b'k', k]).collect();
    let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    // Reads selecting segments by the head's first byte (as online reads do: all or none), by
    // another rule, and some of them by id (as reads of a head indexing its segments do).
    use quiver_store::online::WantedSegments;
    type Selection<'a> = &'a dyn Fn(&[u8]) -> WantedSegments;
    let all_or_none = |all: bool| match all {
        true => WantedSegments::All,
        false => WantedSegments::Only(Vec::new()),
    };
    let by_first_byte = |head: &[u8]| all_or_none(head.first() != Some(&0));
    let by_length = |head: &[u8]| all_or_none(head.len().is_multiple_of(2));
    let by_id = |head: &[u8]| match head.len() % 3 {
        0 => WantedSegments::Only(vec![0, 2, 3, 9]),
        1 => WantedSegments::Only(vec![1, 5]),
        _ => WantedSegments::All,
    };
    let selections: [(&str, Selection); 3] = [
        ("first byte", &by_first_byte),
        ("length", &by_length),
        ("id", &by_id),
    ];
    for epoch in 1..=60 {
        let write = random_epoch(&mut rng, epoch, &mut model);
        for (name, store) in &stores {
            store.apply(std::slice::from_ref(&write)).unwrap();
            // Applying an epoch again changes nothing.
            assert_eq!(store.apply(std::slice::from_ref(&write)).unwrap(), 0);
            let (stamp, values) = store.get("t@1", &refs).unwrap().unwrap();
            assert_eq!(stamp.epoch, epoch, "{name}");
            for (key, value) in keys.iter().zip(values) {
                assert_eq!(
                    value.as_ref(),
                    model.get(key),
                    "{name}: key {key:?} after epoch {epoch}"
                );
            }
            for (rule, wanted) in selections {
                let (_, values) = (store.get_selected("t@1", &refs, wanted)).unwrap().unwrap();
                for (key, value) in keys.iter().zip(values) {
                    let want = model.get(key);
                    let what = format!("{name}, segments by {rule}: key {key:?} epoch {epoch}");
                    assert_eq!(
                        value.as_ref().map(|v| &v.head),
                        want.map(|w| &w.head),
                        "{what}"
                    );
                    let (Some(value), Some(want)) = (value, want) else {
                        continue;
                    };
                    // Segments a head wants are read; others may be (a backend may read them
                    // all anyway), in id order, as stored.
                    let read = |id: u64| value.segments.iter().any(|(s, _)| *s == id);
                    for (id, bytes) in &want.segments {
                        let wants = match wanted(&want.head) {
                            WantedSegments::All => true,
                            WantedSegments::Only(ids) => ids.contains(id),
                        };
                        assert!(!wants || read(*id), "{what}: segment {id} not read");
                        if read(*id) {
                            assert!(value.segments.contains(&(*id, bytes.clone())), "{what}");
                        }
                    }
                    assert!(
                        (value.segments.iter())
                            .all(|(id, _)| want.segments.iter().any(|(s, _)| s == id)),
                        "{what}: a segment not stored"
                    );
                    assert!(value.segments.is_sorted_by_key(|(id, _)| *id), "{what}");
                }
            }
            let listed = store.tables().unwrap();
            assert_eq!(
                listed[0].1.keys,
                model.len() as u64,
                "{name}: keys after epoch {epoch}"
            );
            let (_, page) = store.scan("t@1", None, 100).unwrap().unwrap();
            let scanned: Vec<&Vec<u8>> = page.iter().map(|(k, _)| k).collect();
            assert_eq!(
                scanned,
                model.keys().collect::<Vec<_>>(),
                "{name}: scan after epoch {epoch}"
            );
        }
    }
}

#[test]
fn a_redis_cluster_serves_the_same_decaying_windows_through_crashes_and_shards() {
    let Some(cluster) = common::RedisCluster::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (config, events) = write_pipeline(dir.path(), 0x1B87_3593_CC9E_2D51);
    // Two of the three nodes: the client finds the third.
    let nodes = cluster.urls()[..2].join(", ");
    set_online(
        &config,
        &format!("redis_cluster: [{nodes}]\n  redis_prefix: c1"),
    );
    let out = dir.path().join("out");
    // Killed twice just after a checkpoint committed, before the online store took its epoch:
    // each rerun's recovery applies it (an attempt that wrote versions but not the stamp is
    // the versioned store's unit test).
    for crash in ["after_checkpoint:3", "after_checkpoint:1"] {
        let crashed = common::quiver_command("run", &config, &[("--output", &out)])
            .env("QUIVER_CRASH_AT", crash)
            .output()
            .unwrap();
        assert!(!crashed.status.success(), "the crash point {crash} fired");
    }
    run(&config, &out);
    assert!(!out.join("online.redb").exists(), "the cluster is used");
    check_decay(&config, None, &events, "redis cluster");
    // Shards of the job replace the unsharded table (the same version in another layout).
    run_shards(&config, &dir.path().join("sharded"), 3, &[]);
    check_decay(&config, None, &events, "redis cluster, shards");
    let answer = get(&config, None, &["hot", "a", "b", "early"], None).unwrap();
    assert!(shards_read(&answer).len() >= 2, "{answer}");
}

#[test]
fn redis_over_tls_trusts_the_configured_ca_and_refuses_an_unknown_certificate() {
    let dir = tempfile::tempdir().unwrap();
    // A private CA and a server certificate it signed (rustls refuses a CA as the server's).
    let tls = quiver_connectors::test_ca::TestCa::make(dir.path()).unwrap();
    let (cert, key, ca) = (tls.cert, tls.key, tls.ca);
    let Some(redis) = common::RedisServer::start_with(Some((&cert, &key))) else {
        return;
    };
    let (config, events) = write_pipeline(dir.path(), 0x1234_5678_9ABC_DEF1);
    let base = std::fs::read_to_string(&config).unwrap();
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    std::fs::write(
        &config,
        format!(
            "{base}online:\n  redis: {url}\n  redis_ca: {}\n",
            ca.display()
        ),
    )
    .unwrap();
    run(&config, &dir.path().join("out"));
    let last = events.iter().map(|e| e.1).max().unwrap();
    let read = get(&config, None, &["hot"], Some(last + MINUTE_MS)).unwrap();
    for (feature, want) in expected(&events, "hot", last + MINUTE_MS) {
        assert_close(
            &read["features"][0][feature],
            want,
            &format!("tls hot.{feature}"),
        );
    }
    // Without the CA the server's certificate is not trusted: a clear error, no data.
    std::fs::write(&config, format!("{base}online:\n  redis: {url}\n")).unwrap();
    let e = get(&config, None, &["hot"], None).unwrap_err();
    assert!(
        e.contains("online store") && e.to_lowercase().contains("certificate"),
        "{e}"
    );
}
