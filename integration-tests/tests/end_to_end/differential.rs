//! Differential tests (DESIGN.md 3.1, 3.2): every per-event feature from the streaming run and
//! from backfill equals DataFusion's answer to the same SQL run as one batch query.

use arrow::array::AsArray;
use arrow::compute::filter_record_batch;
use arrow::datatypes::Int64Type;
use arrow::record_batch::RecordBatch;
use quiver_connectors::{datagen_schema, Datagen, DatagenConfig};
use quiver_integration_tests::{assert_same_features, read_view, run_config, write_files};
use quiver_pipeline::backfill::backfill;
use quiver_pipeline::run::{run, RunOptions};
use quiver_pipeline::{CompiledPipeline, LoadedConfig, RunSummary};
use quiver_sql::reference::batch_query;
use std::collections::HashSet;
use std::path::Path;

const TRANSFORM: &str = "SELECT txn_id, card_id, merchant_id, amount, country, event_time,
  CASE WHEN amount < 2.00 THEN 1 ELSE 0 END AS is_micro
FROM transactions_raw WHERE country <> 'XX'";

const CARD_VIEW: &str = "SELECT card_id, event_time, txn_id, amount,
  count(*) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW) AS txn_count_10m,
  count(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW) AS amount_count_10m,
  sum(is_micro) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW) AS micro_count_10m,
  sum(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW) AS amount_sum_1h,
  avg(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '24 hours' PRECEDING AND CURRENT ROW) AS amount_avg_24h,
  min(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '24 hours' PRECEDING AND CURRENT ROW) AS amount_min_24h,
  max(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '24 hours' PRECEDING AND CURRENT ROW) AS amount_max_24h,
  stddev_samp(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '7 days' PRECEDING AND CURRENT ROW) AS amount_stddev_7d,
  var_samp(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '30 seconds' PRECEDING AND CURRENT ROW) AS amount_var_30s,
  count(*) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN CURRENT ROW AND CURRENT ROW) AS same_time_count,
  max(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS amount_max_lifetime,
  count(*) OVER (PARTITION BY card_id ORDER BY event_time) AS txn_count_lifetime,
  amount - avg(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW) AS amount_minus_avg_1h
FROM transactions";

const MERCHANT_VIEW: &str = "SELECT merchant_id, country, event_time, txn_id,
  count(*) OVER (PARTITION BY merchant_id, country ORDER BY event_time RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW) AS txn_count_1h,
  sum(amount) OVER (PARTITION BY merchant_id, country ORDER BY event_time RANGE BETWEEN INTERVAL '5 minutes' PRECEDING AND CURRENT ROW) AS amount_sum_5m
FROM transactions WHERE amount IS NULL OR amount > 1.0";

fn pipeline_yaml(datagen: &DatagenConfig, max_lateness_ms: u64) -> String {
    format!(
        "name: diff
source:
  name: transactions_raw
  datagen:
    events: {events}
    seed: {seed}
    cards: {cards}
    merchants: {merchants}
    zipf_exponent: {zipf}
    events_per_second: {eps}
    max_disorder_ms: {disorder}
    tie_ratio: {ties}
    null_amount_ratio: {nulls}
    burst_ratio: {bursts}
    batch_size: {batch}
event_time:
  column: event_time
  max_lateness: {max_lateness_ms}ms
transforms:
  - name: transactions
    file: transform.sql
views:
  - name: card_features
    file: card.sql
  - name: merchant_features
    file: merchant.sql
",
        events = datagen.events,
        seed = datagen.seed,
        cards = datagen.cards,
        merchants = datagen.merchants,
        zipf = datagen.zipf_exponent,
        eps = datagen.events_per_second,
        disorder = datagen.max_disorder_ms,
        ties = datagen.tie_ratio,
        nulls = datagen.null_amount_ratio,
        bursts = datagen.burst_ratio,
        batch = datagen.batch_size,
    )
}

async fn compile(dir: &Path, datagen: &DatagenConfig, max_lateness_ms: u64) -> CompiledPipeline {
    let yaml = pipeline_yaml(datagen, max_lateness_ms);
    let config = write_files(
        dir,
        &[
            ("pipeline.yaml", &yaml),
            ("transform.sql", TRANSFORM),
            ("card.sql", CARD_VIEW),
            ("merchant.sql", MERCHANT_VIEW),
        ],
    );
    let loaded = LoadedConfig::load(&config).expect("config loads");
    CompiledPipeline::compile(loaded)
        .await
        .expect("pipeline compiles")
}

/// DataFusion's answer for both views over the generated events minus `excluded` txn ids.
async fn reference(datagen: &DatagenConfig, excluded: &HashSet<i64>) -> (RecordBatch, RecordBatch) {
    let schema = datagen_schema().arrow_schema();
    let mut batches = Vec::new();
    for b in Datagen::new(datagen.clone()).expect("datagen") {
        let ids = b
            .batch
            .column_by_name("txn_id")
            .expect("txn_id")
            .as_primitive::<Int64Type>()
            .clone();
        let keep: arrow::array::BooleanArray = ids
            .iter()
            .map(|id| Some(!excluded.contains(&id.unwrap_or(-1))))
            .collect();
        batches.push(filter_record_batch(&b.batch, &keep).expect("filter"));
    }
    let raw = vec![("transactions_raw".to_string(), schema.clone(), batches)];
    let transformed = batch_query(TRANSFORM, &raw)
        .await
        .expect("reference transform");
    let tschema = transformed
        .first()
        .map(|b| b.schema())
        .unwrap_or_else(|| std::sync::Arc::new(arrow::datatypes::Schema::empty()));
    let tables = vec![("transactions".to_string(), tschema.clone(), transformed)];
    let card = batch_query(CARD_VIEW, &tables)
        .await
        .expect("reference card view");
    let merchant = batch_query(MERCHANT_VIEW, &tables)
        .await
        .expect("reference merchant view");
    let concat = |bs: Vec<RecordBatch>| {
        let s = bs[0].schema();
        arrow::compute::concat_batches(&s, &bs).expect("concat")
    };
    (concat(card), concat(merchant))
}

/// The late events, computed independently of Quiver: replays the generator's arrival order
/// (one partition) with the rule of DESIGN.md 3.2 — an event is late when it is older than
/// the largest on-time event time seen before it minus the lateness — over the events the
/// transform keeps (`country <> 'XX'`).
fn replayed_late(datagen: &DatagenConfig, max_lateness_ms: u64) -> HashSet<i64> {
    let lateness = max_lateness_ms as i64 * 1_000;
    let mut max_seen = i64::MIN;
    let mut late = HashSet::new();
    for b in Datagen::new(datagen.clone()).expect("datagen") {
        let column = |name: &str| b.batch.column_by_name(name).expect("column").clone();
        let ids = column("txn_id");
        let ids = ids.as_primitive::<Int64Type>();
        let times = arrow::compute::cast(&column("event_time"), &arrow::datatypes::DataType::Int64)
            .expect("times");
        let times = times.as_primitive::<Int64Type>();
        let countries = column("country");
        let countries = countries.as_string::<i32>();
        for row in 0..b.batch.num_rows() {
            if countries.value(row) == "XX" {
                continue;
            }
            let t = times.value(row);
            if t < max_seen.saturating_sub(lateness) {
                late.insert(ids.value(row));
            } else {
                max_seen = max_seen.max(t);
            }
        }
    }
    late
}

/// Txn ids of the events dead-lettered as late.
fn late_ids(summary: &RunSummary) -> HashSet<i64> {
    let Ok(text) = std::fs::read_to_string(&summary.dead_letter_path) else {
        return HashSet::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "late")
        .filter_map(|v| {
            let raw: serde_json::Value = serde_json::from_str(v["raw"].as_str()?).ok()?;
            raw["txn_id"].as_i64()
        })
        .collect()
}

async fn check(datagen: DatagenConfig, max_lateness_ms: u64, expect_late: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    // Backfill three times: the whole input at once; split by key in memory under a data
    // budget a few times the input; spilled and split under a tiny one.
    let mut input_bytes = 0;
    for (mode, is_backfill) in [
        ("run", false),
        ("backfill", true),
        ("backfill-split", true),
        ("backfill-spilled", true),
    ] {
        // Data budgets rather than memory limits: these inputs are far smaller than what
        // the process holds before reading. The whole input at once gets one that does not
        // depend on what the tests running beside this one hold (the default limit's budget
        // is what it leaves beside the process).
        let data_budget = match mode {
            "backfill" => Some(1 << 40),
            "backfill-split" => Some(input_bytes * 6),
            "backfill-spilled" => Some(16 << 10),
            _ => None,
        };
        let out = dir.path().join(mode);
        let pipeline = compile(dir.path(), &datagen, max_lateness_ms).await;
        let options = RunOptions {
            output: Some(out.clone()),
            // Sweep state often, so that expiry runs many times mid-stream.
            expire_interval_micros: Some(60_000_000),
            data_budget,
            ..RunOptions::default()
        };
        let summary = if is_backfill {
            backfill(pipeline, options).await.expect("backfill")
        } else {
            run(pipeline, options).await.expect("run")
        };
        if let Some(input) = summary.compute.as_ref().and_then(|c| c.input.as_ref()) {
            if mode == "backfill" {
                input_bytes = input.bytes as usize;
            }
            if datagen.events > 1000 {
                assert_eq!(
                    (input.partitions > 1, input.spilled),
                    (mode != "backfill", mode == "backfill-spilled"),
                    "{mode}: how the input was held and split"
                );
                // The generator says how many events it makes: a spilled input is split by
                // key as it is read.
                assert_eq!(input.split_as_read, input.spilled, "{mode}: split as read");
                // Under the tiny budget the hot keys' partitions are cut by time (their
                // slices carry window state); an input evaluated whole never is.
                match mode {
                    "backfill-spilled" => assert!(input.sliced > 0, "{mode}: no time slices"),
                    "backfill" => assert_eq!(input.sliced, 0, "{mode}: time slices"),
                    _ => {}
                }
            }
        }
        let spill_left = std::fs::read_dir(&out)
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().contains("spill"))
            })
            .unwrap_or(false);
        assert!(!spill_left, "{mode}: spill files are removed");
        for view in summary.views.iter().filter(|v| v.rows > 0) {
            assert!(
                view.compute_s > 0.0 && view.write_s > 0.0,
                "{mode}: {} reports the time it took (computed {} s, written {} s)",
                view.view,
                view.compute_s,
                view.write_s
            );
        }
        let late = late_ids(&summary);
        assert_eq!(
            late.len() as u64,
            summary.late,
            "{mode}: late count matches dead letters"
        );
        if !is_backfill {
            assert_eq!(
                !late.is_empty(),
                expect_late,
                "{mode}: late events expected = {expect_late}, got {}",
                late.len()
            );
        }
        assert_eq!(
            summary.events, datagen.events,
            "{mode}: every generated event is counted"
        );
        if !is_backfill {
            assert_eq!(
                late,
                replayed_late(&datagen, max_lateness_ms),
                "{mode}: the late events are exactly those an independent replay finds"
            );
        }
        let (card_ref, merchant_ref) = reference(&datagen, &late).await;
        let what = format!("{mode} seed {} card view", datagen.seed);
        let n = assert_same_features(
            &read_view(&out.join("card_features")),
            &card_ref,
            &["card_id", "event_time", "txn_id"],
            &what,
        );
        let what = format!("{mode} seed {} merchant view", datagen.seed);
        assert_same_features(
            &read_view(&out.join("merchant_features")),
            &merchant_ref,
            &["merchant_id", "country", "event_time", "txn_id"],
            &what,
        );
        assert!(n > 0 || datagen.events == 0);
    }
}

fn small(seed: u64) -> DatagenConfig {
    DatagenConfig {
        events: 12_000,
        seed,
        cards: 300,
        merchants: 40,
        zipf_exponent: 1.3,
        events_per_second: 0.4, // sparse: cards go idle for longer than the 10-minute windows
        max_disorder_ms: 3_000,
        tie_ratio: 0.08,
        null_amount_ratio: 0.05,
        burst_ratio: 0.01,
        batch_size: 257,
        ..DatagenConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparse_streams_match_datafusion_for_several_seeds() {
    for seed in [1, 2, 3] {
        check(small(seed), 3_000, false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dense_hot_keys_match_datafusion() {
    let datagen = DatagenConfig {
        events: 30_000,
        cards: 50,
        merchants: 5,
        zipf_exponent: 1.6,
        events_per_second: 40.0,
        batch_size: 1000,
        ..small(11)
    };
    check(datagen, 3_000, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_events_are_dead_lettered_and_never_change_results() {
    let datagen = DatagenConfig {
        max_disorder_ms: 20_000,
        events_per_second: 5.0,
        ..small(5)
    };
    // Lateness below the disorder: some events are late; the rest must still be exact.
    check(datagen, 2_000, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_event_and_empty_inputs() {
    check(
        DatagenConfig {
            events: 1,
            ..small(7)
        },
        1_000,
        false,
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = DatagenConfig {
        events: 0,
        ..small(8)
    };
    compile(dir.path(), &empty, 1_000).await;
    let summary = run_config(
        &dir.path().join("pipeline.yaml"),
        &dir.path().join("out"),
        false,
    )
    .await
    .expect("empty run");
    assert_eq!(summary.events, 0);
    assert_eq!(summary.views[0].rows, 0);
}
