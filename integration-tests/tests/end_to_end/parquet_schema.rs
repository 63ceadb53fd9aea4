//! A Parquet source without `schema:` reads its columns from the file: narrower integer and
//! float types, millisecond timestamps and nested columns (left out) all work, features equal
//! DataFusion's batch answer; an integer event-time column is a clear error naming the unit.

use arrow::array::{ArrayRef, Float32Array, Int32Array, ListArray, StringArray};
use arrow::array::{Int64Array, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use quiver_integration_tests::{
    assert_same_features, read_view, reference_answer, run_config, write_files, write_parquet,
    yaml_block,
};
use std::sync::Arc;

const VIEW: &str = "SELECT card_id, event_time, txn_id,
  count(*) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW) AS n_10m,
  max(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW) AS max_1h
FROM source";

fn config(dir: &std::path::Path, file: &str, event_time: &str) -> String {
    format!(
        "name: inferred
source:
  files:
    location: {}/{file}
event_time:
  column: {event_time}
  max_lateness: 1h
views:
  - name: v
    sql: |
{}
",
        dir.display(),
        yaml_block(VIEW)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_columns_are_read_from_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = 3_000;
    let base = 1_767_225_600_000i64;
    let tags =
        ListArray::from_iter_primitive::<Int32Type, _, _>((0..n).map(|i| Some(vec![Some(i)])));
    let batch = RecordBatch::try_from_iter(vec![
        (
            "txn_id",
            Arc::new(Int32Array::from_iter_values(0..n)) as ArrayRef,
        ),
        (
            "card_id",
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("c{}", i % 17)),
            )),
        ),
        (
            "amount",
            Arc::new(Float32Array::from_iter(
                (0..n).map(|i| (i % 11 != 0).then_some((i % 97) as f32 * 0.5)),
            )),
        ),
        (
            "event_time",
            Arc::new(TimestampMillisecondArray::from_iter_values((0..n).map(
                |i| base + (i as i64 * 7_919 % 600) * 1_000 + i as i64 * 20_000,
            ))),
        ),
        ("tags", Arc::new(tags)),
        (
            "epoch_ms",
            Arc::new(Int64Array::from_iter_values(
                (0..n).map(|i| base + i as i64),
            )),
        ),
    ])
    .expect("batch");
    write_parquet(&dir.path().join("in/tx.parquet"), &batch);
    let path = write_files(
        dir.path(),
        &[("p.yaml", &config(dir.path(), "in/tx.parquet", "event_time"))],
    );

    let report = quiver_pipeline::validate::validate(&path)
        .await
        .expect("validates");
    let text = report.lines.join("\n");
    assert!(
        text.contains("schema read from") && text.contains("`tags`"),
        "validate says where the schema came from and what was left out:\n{text}"
    );

    // The reference: DataFusion over the same rows, as the declared types they are read as.
    let schema = Arc::new(Schema::new(vec![
        Field::new("txn_id", DataType::Int64, true),
        Field::new("card_id", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, true),
        Field::new(
            "event_time",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        ),
    ]));
    let cast = |name: &str, to: &DataType| {
        arrow::compute::cast(batch.column_by_name(name).expect("column"), to).expect("cast")
    };
    let reference_input = RecordBatch::try_new(
        schema.clone(),
        schema
            .fields()
            .iter()
            .map(|f| cast(f.name(), f.data_type()))
            .collect(),
    )
    .expect("reference input");
    let reference = reference_answer(VIEW, reference_input).await;
    for backfill in [false, true] {
        let out = dir.path().join(format!("out-{backfill}"));
        let summary = run_config(&path, &out, backfill).await.expect("runs");
        assert_eq!(summary.accepted, n as u64);
        assert_same_features(
            &read_view(&out.join("v")),
            &reference,
            &["card_id", "event_time", "txn_id"],
            if backfill { "backfill" } else { "run" },
        );
    }

    // An integer event-time column: its unit would be a guess, so it is refused with the fix.
    let bad = write_files(
        dir.path(),
        &[("bad.yaml", &config(dir.path(), "in/tx.parquet", "epoch_ms"))],
    );
    let err = quiver_pipeline::validate::validate(&bad)
        .await
        .expect_err("integer event time");
    let text = err.to_string();
    assert!(
        text.contains("epoch_ms") && text.contains("unit: ms"),
        "{text}"
    );
}
