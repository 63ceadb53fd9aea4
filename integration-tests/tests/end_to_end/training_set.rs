//! Point-in-time training sets against an independent reference: DataFusion evaluating the
//! definition of "features as of t" directly (a range join of spine and events, then GROUP BY),
//! with the leakage traps: events after the spine time, events at exactly t, keys without
//! history, NULL keys and times, duplicate spine rows and unsorted times.

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, TimeUnit};
use quiver_integration_tests::{apply_one_view, apply_one_view_with, read_parquet, write_parquet};
use quiver_pipeline::registry::Registry;
use quiver_pipeline::training_set::{parse_feature_list, training_set, TrainingSetOptions};
use std::path::Path;
use std::sync::Arc;

const MINUTE: i64 = 60_000_000;
const START: i64 = 1_767_225_600_000_000; // 2026-01-01

const VIEW: &str = "SELECT card_id, event_time, amount,
  count(*) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW) AS n_10m,
  sum(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW) AS sum_1h,
  avg(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '1 day' PRECEDING AND CURRENT ROW) AS avg_1d,
  max(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '1 day' PRECEDING AND CURRENT ROW) AS max_1d,
  stddev_samp(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '7 days' PRECEDING AND CURRENT ROW) AS sd_7d,
  count(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS n_amount_life,
  amount / avg(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '1 day' PRECEDING AND CURRENT ROW) AS ratio_1d
FROM source";

const FEATURES: [&str; 6] = [
    "n_10m",
    "sum_1h",
    "avg_1d",
    "max_1d",
    "sd_7d",
    "n_amount_life",
];

const REFERENCE: &str = "SELECT s.row_id,
  count(CASE WHEN e.event_time >= s.ts - INTERVAL '10 minutes' THEN 1 END) AS n_10m,
  sum(CASE WHEN e.event_time >= s.ts - INTERVAL '1 hour' THEN e.amount END) AS sum_1h,
  avg(CASE WHEN e.event_time >= s.ts - INTERVAL '1 day' THEN e.amount END) AS avg_1d,
  max(CASE WHEN e.event_time >= s.ts - INTERVAL '1 day' THEN e.amount END) AS max_1d,
  stddev_samp(CASE WHEN e.event_time >= s.ts - INTERVAL '7 days' THEN e.amount END) AS sd_7d,
  count(e.amount) AS n_amount_life
FROM spine s LEFT JOIN events e ON e.card_id = s.card_id AND e.event_time <= s.ts
GROUP BY s.row_id ORDER BY s.row_id";

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// 3,000 events of 40 cards over 3 days on a one-minute grid (many ties), some NULL amounts;
/// with `hot`, card `c0` has about 60% of them.
fn events(seed: u64, hot: bool) -> RecordBatch {
    let mut rng = Rng(seed);
    let (mut cards, mut times, mut amounts, mut ids) = (vec![], vec![], vec![], vec![]);
    for i in 0..3000 {
        match hot && rng.below(10) < 6 {
            true => cards.push("c0".to_string()),
            false => cards.push(format!("c{}", rng.below(40))),
        }
        times.push(START + rng.below(3 * 24 * 60) as i64 * MINUTE);
        amounts.push(match rng.below(20) {
            0 => None,
            1 => Some(100_000.0 + rng.below(100) as f64),
            _ => Some(rng.below(50_000) as f64 / 100.0),
        });
        ids.push(i as i64);
    }
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("txn_id", DataType::Int64, false),
            Field::new("card_id", DataType::Utf8, false),
            Field::new(
                "event_time",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                false,
            ),
            Field::new("amount", DataType::Float64, true),
        ])),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(cards)),
            Arc::new(TimestampMicrosecondArray::from(times)),
            Arc::new(Float64Array::from(amounts)),
        ],
    )
    .expect("events")
}

/// 600 spine rows in no particular order: known cards, cards without history, NULL cards and
/// times, times on the events' grid (ties at exactly t) and before, between and after them,
/// and every 10th row repeated; with `hot`, about half of them of card `c0`.
fn spine(seed: u64, hot: bool) -> RecordBatch {
    let mut rng = Rng(seed);
    let (mut rows, mut cards, mut times, mut labels) = (vec![], vec![], vec![], vec![]);
    for i in 0..600i64 {
        let card = match rng.below(20) {
            0 => None,
            1 => Some(format!("nobody{}", rng.below(3))),
            _ if hot && rng.below(2) == 0 => Some("c0".to_string()),
            _ => Some(format!("c{}", rng.below(40))),
        };
        let minute = rng.below(5 * 24 * 60) as i64 - 24 * 60; // a day before to two after
        let time = match rng.below(50) {
            0 => None,
            1 => Some(START + minute * MINUTE + 30_000_000), // between grid points
            _ => Some(START + minute * MINUTE),
        };
        let copies = if i % 10 == 0 { 2 } else { 1 };
        for _ in 0..copies {
            rows.push(rows.len() as i64);
            cards.push(card.clone());
            times.push(time);
            labels.push(i % 2 == 0);
        }
    }
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("is_fraud", DataType::Boolean, false),
            Field::new("card_id", DataType::Utf8, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new("row_id", DataType::Int64, false),
        ])),
        vec![
            Arc::new(arrow::array::BooleanArray::from(labels)),
            Arc::new(StringArray::from(cards)),
            Arc::new(TimestampMicrosecondArray::from(times)),
            Arc::new(Int64Array::from(rows)),
        ],
    )
    .expect("spine")
}

async fn apply_view(dir: &Path, view: &str) -> Registry {
    apply_one_view(dir, "events.parquet", &[], "card_view", view, "").await
}

/// The apply's backfill spilled and split by key, its event log written from the spill.
async fn apply_view_spilled(dir: &Path, view: &str) -> Registry {
    let options = quiver_pipeline::run::RunOptions {
        data_budget: Some(4 << 10),
        ..Default::default()
    };
    apply_one_view_with(dir, "events.parquet", &[], "card_view", view, "", options).await
}

fn float(column: &ArrayRef, row: usize) -> Option<f64> {
    if column.is_null(row) {
        return None;
    }
    Some(match column.data_type() {
        DataType::Int64 => column.as_primitive::<Int64Type>().value(row) as f64,
        _ => arrow::compute::cast(column, &DataType::Float64)
            .expect("cast")
            .as_primitive::<Float64Type>()
            .value(row),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn features_as_of_spine_times_equal_the_range_join_reference() {
    // The second round filters below the windows (a WHERE), so every event column is read;
    // the third has a hot card.
    for (seed, filtered, hot) in [(11u64, false, false), (2026, true, false), (7, false, true)] {
        let (view, reference_sql) = if filtered {
            (
                VIEW.replace("FROM source", "FROM source WHERE amount IS NOT NULL"),
                REFERENCE.replace(
                    "AND e.event_time <= s.ts",
                    "AND e.event_time <= s.ts AND e.amount IS NOT NULL",
                ),
            )
        } else {
            (VIEW.to_string(), REFERENCE.to_string())
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let events = events(seed, hot);
        write_parquet(&dir.path().join("events.parquet"), &events);
        let spine = spine(seed ^ 0x5eed, hot);
        write_parquet(&dir.path().join("spine.parquet"), &spine);
        let registry = if filtered {
            apply_view_spilled(dir.path(), &view).await
        } else {
            apply_view(dir.path(), &view).await
        };

        // All in memory, and partitioned by key into spill files under a tiny data budget
        // (many partitions then cut by time); with a hot card, a budget that its partition
        // does not fit, and most others do.
        let budgets = match hot {
            false => [None, Some(16 << 10)],
            true => [None, Some(1 << 20)],
        };
        for data_budget in budgets {
            let out = dir.path().join("train.parquet");
            let mut options = TrainingSetOptions::new(
                dir.path().join("spine.parquet"),
                parse_feature_list("card_view:*").expect("features"),
                out.clone(),
            );
            if let Some(budget) = data_budget {
                options.data_budget = Some(budget);
            }
            let report = training_set(&registry, options)
                .await
                .expect("training set");
            let view = &report.views[0];
            assert_eq!(view.partitions > 1, data_budget.is_some());
            match (data_budget, hot) {
                (None, _) => assert_eq!(view.sliced_partitions, 0),
                (Some(_), false) => assert!(view.sliced_partitions > 0, "{report}"),
                (Some(_), true) => assert!(
                    (1..view.partitions).contains(&view.sliced_partitions),
                    "{report}"
                ),
            }
            assert!(view.slices >= 2 * view.sliced_partitions, "{report}");
            // Spill files are gone.
            let left: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains("spill"))
                .collect();
            assert!(left.is_empty(), "{left:?}");
            assert_eq!(report.rows, spine.num_rows());
            let got = read_parquet(&out);
            // The spine's columns, as they were and in their order, then the window features
            // (`ratio_1d` reads the event's own amount: not a feature as of a time).
            let schema = got.schema();
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            let mut want_names = vec!["is_fraud", "card_id", "ts", "row_id"];
            want_names.extend(FEATURES);
            assert_eq!(names, want_names);
            for c in 0..4 {
                assert_eq!(
                    got.column(c).as_ref(),
                    spine.column(c).as_ref(),
                    "spine column {c}"
                );
            }

            let reference = quiver_sql::reference::batch_query(
                &reference_sql,
                &[
                    ("events".into(), events.schema(), vec![events.clone()]),
                    ("spine".into(), spine.schema(), vec![spine.clone()]),
                ],
            )
            .await
            .expect("reference");
            let reference =
                arrow::compute::concat_batches(&reference[0].schema(), &reference).expect("concat");
            assert_eq!(reference.num_rows(), spine.num_rows());
            let times = spine.column(2);
            let mut checked = 0;
            for (f, name) in FEATURES.iter().enumerate() {
                let ours = got.column_by_name(name).expect("feature");
                let theirs = reference.column(f + 1);
                for row in 0..spine.num_rows() {
                    let (a, b) = (float(ours, row), float(theirs, row));
                    if times.is_null(row) {
                        assert_eq!(a, None, "{name} row {row}: a NULL time has NULL features");
                        continue;
                    }
                    match (a, b) {
                        (Some(a), Some(b)) => assert!(
                            a == b || (a - b).abs() <= 1e-9 * b.abs(),
                            "seed {seed} {name} row {row}: {a} vs {b}"
                        ),
                        (a, b) => assert_eq!(a, b, "seed {seed} {name} row {row}"),
                    }
                    checked += 1;
                }
            }
            assert!(checked > 3000);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_columns_and_unknown_features_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_parquet(&dir.path().join("events.parquet"), &events(5, false));
    write_parquet(&dir.path().join("spine.parquet"), &spine(6, false));
    let registry = apply_view(dir.path(), VIEW).await;
    // A keyless spine: every column but card_id.
    let keyless = spine(6, false)
        .project(&[0, 2, 3])
        .expect("the spine without card_id");
    write_parquet(&dir.path().join("keyless.parquet"), &keyless);
    let attempt_with = |spine: &str, features: &str, memory_limit: Option<usize>| {
        let registry = &registry;
        let options = TrainingSetOptions {
            memory_limit,
            ..TrainingSetOptions::new(
                dir.path().join(spine),
                parse_feature_list(features).expect("features"),
                dir.path().join("t.parquet"),
            )
        };
        async move { training_set(registry, options).await }
    };
    let attempt = |features: &str| attempt_with("spine.parquet", features, None);
    let err = attempt("card_view:ratio_1d").await.unwrap_err().to_string();
    assert!(err.contains("not a window feature"), "{err}");
    let err = attempt("card_view:n_1y").await.unwrap_err().to_string();
    assert!(
        err.contains("has no feature `n_1y`") && err.contains("n_10m"),
        "{err}"
    );
    let err = attempt("other_view:x").await.unwrap_err().to_string();
    assert!(err.contains("other_view"), "{err}");
    // A spine without a view's key column is refused before any view is evaluated.
    let err = attempt_with("keyless.parquet", "card_view:*", None).await;
    let err = err.unwrap_err().to_string();
    assert!(
        err.contains("no column `card_id`, the key of view `card_view`") && err.contains("row_id"),
        "{err}"
    );
    // A memory limit smaller than what the process holds is refused with one that would do.
    let err = attempt_with("spine.parquet", "card_view:*", Some(1 << 20)).await;
    let err = err.unwrap_err().to_string();
    assert!(
        err.contains("is too small") && err.contains("give --memory-limit"),
        "{err}"
    );
    assert!(!dir.path().join("t.parquet").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_training_set_reads_only_with_its_key() {
    use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
    use parquet::encryption::decrypt::FileDecryptionProperties;
    let dir = tempfile::tempdir().expect("tempdir");
    write_parquet(&dir.path().join("events.parquet"), &events(8, false));
    write_parquet(&dir.path().join("spine.parquet"), &spine(9, false));
    let registry = apply_view(dir.path(), VIEW).await;
    let key: Vec<u8> = (0u8..32).map(|b| b.wrapping_mul(37)).collect();
    let out = dir.path().join("secret.parquet");
    training_set(
        &registry,
        TrainingSetOptions {
            time_column: Some("ts".into()),
            encryption_key: Some(key.clone()),
            ..TrainingSetOptions::new(
                dir.path().join("spine.parquet"),
                parse_feature_list("card_view:n_10m,card_view:sd_7d").expect("features"),
                out.clone(),
            )
        },
    )
    .await
    .expect("training set");
    // Without the key: a clear error, not garbage.
    let err =
        match ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&out).expect("open")) {
            Ok(_) => panic!("readable without the key"),
            Err(e) => e.to_string(),
        };
    assert!(err.to_lowercase().contains("encrypt"), "{err}");
    // With it: the rows.
    let decryption = FileDecryptionProperties::builder(key).build().expect("key");
    let options = ArrowReaderOptions::new().with_file_decryption_properties(decryption);
    let reader = ParquetRecordBatchReaderBuilder::try_new_with_options(
        std::fs::File::open(&out).expect("open"),
        options,
    )
    .expect("readable with the key")
    .build()
    .expect("reader");
    let rows: usize = reader.map(|b| b.expect("batch").num_rows()).sum();
    assert_eq!(rows, spine(9, false).num_rows());
}

/// The same numbers in training as in serving: a spine made of the view's own events (key and
/// event time) gets exactly the feature values backfill wrote for those events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spine_of_the_events_themselves_gets_the_backfilled_feature_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_parquet(&dir.path().join("events.parquet"), &events(21, false));
    let registry = apply_view(dir.path(), VIEW).await;
    let version = registry
        .latest("card_view")
        .expect("latest")
        .expect("a version");
    let rows = quiver_integration_tests::read_view(&quiver_integration_tests::local(
        &registry.data_dir("card_view", &version),
    ));
    let spine = rows
        .project(&[
            rows.schema().index_of("card_id").expect("card_id"),
            rows.schema().index_of("event_time").expect("event_time"),
        ])
        .expect("spine");
    write_parquet(&dir.path().join("spine.parquet"), &spine);
    let out = dir.path().join("train.parquet");
    training_set(
        &registry,
        TrainingSetOptions::new(
            dir.path().join("spine.parquet"),
            parse_feature_list("card_view:*").expect("features"),
            out.clone(),
        ),
    )
    .await
    .expect("training set");
    let got = read_parquet(&out);
    assert_eq!(got.num_rows(), rows.num_rows());
    for name in FEATURES {
        let (ours, backfilled) = (
            got.column_by_name(name).expect("feature"),
            rows.column_by_name(name).expect("feature row"),
        );
        for row in 0..got.num_rows() {
            match (float(ours, row), float(backfilled, row)) {
                (Some(a), Some(b)) => assert!(
                    a == b || (a - b).abs() <= 1e-12 * b.abs(),
                    "{name} row {row}: {a} vs {b}"
                ),
                (a, b) => assert_eq!(a, b, "{name} row {row}"),
            }
        }
    }
}
