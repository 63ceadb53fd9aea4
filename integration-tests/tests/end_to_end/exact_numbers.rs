//! Integer and decimal features are exact: sums, minima and maxima of Int64 values beyond 2^53
//! (including sums that overflow and wrap, as DataFusion's do), of narrower integers, and sums,
//! minima, maxima and averages of decimals equal DataFusion's batch answer digit for digit, in
//! streaming and in backfill. The average of such integers is a float (as in DataFusion) and
//! is checked against exact arithmetic: DataFusion's own sliding float sum drifts there.

use quiver_integration_tests::{
    assert_same_features, read_view, reference_answer, run_config, write_files, yaml_block,
};

/// The view Quiver runs: the reference's plus an average of the integers (a float).
fn view() -> String {
    VIEW.replace(
        "\nFROM source",
        ",\n  avg(cents) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW) AS cents_avg_1h\nFROM source",
    )
}

/// One event: id, card, cents, event time (ms).
type Row = (i64, String, Option<i64>, i64);

/// `cents_avg_1h` against the exact average (an `i128` sum over the window, divided once).
fn check_float_average(ours: &arrow::record_batch::RecordBatch, rows: &[Row]) {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, Int64Type};
    let ids = ours.column_by_name("txn_id").expect("txn_id");
    let ids = ids.as_primitive::<Int64Type>();
    let avgs = ours.column_by_name("cents_avg_1h").expect("cents_avg_1h");
    let avgs = avgs.as_primitive::<Float64Type>();
    for r in 0..ours.num_rows() {
        let (_, card, _, t) = &rows[ids.value(r) as usize];
        let window: Vec<i128> = rows
            .iter()
            .filter(|e| &e.1 == card && e.3 <= *t && e.3 >= t - 3_600_000)
            .filter_map(|e| e.2.map(i128::from))
            .collect();
        if window.is_empty() {
            assert!(avgs.is_null(r), "row {r}: empty window");
            continue;
        }
        let exact = window.iter().sum::<i128>() as f64 / window.len() as f64;
        let got = avgs.value(r);
        assert!(
            (got - exact).abs() <= 1e-9 * exact.abs().max(1.0),
            "row {r}: average {got} vs exact {exact}"
        );
    }
}

const VIEW: &str = "SELECT card_id, event_time, txn_id,
  sum(cents) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW) AS cents_sum_10m,
  min(cents) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW) AS cents_min_1h,
  max(cents) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS cents_max,
  max(CAST(cents % 1000 AS INT)) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW) AS small_max_1h,
  sum(CAST(cents AS DECIMAL(38, 2)) / 100) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW) AS amount_sum_1h,
  avg(CAST(cents AS DECIMAL(30, 2))) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '30 minutes' PRECEDING AND CURRENT ROW) AS amount_avg_30m,
  min(CAST(cents AS DECIMAL(30, 2))) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW) AS amount_min_10m
FROM source";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integer_and_decimal_features_equal_datafusion_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = 1_767_225_600_000i64;
    let mut rng = 0x853c_49e6_748f_ea9bu64;
    let mut lines = Vec::new();
    let mut rows: Vec<Row> = Vec::new();
    let mut t = base;
    for id in 0..3_000i64 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        if !rng.is_multiple_of(5) {
            t += (rng % 120) as i64 * 1_000; // ties when 0
        }
        // Odd values around 2^61: f64 cannot represent them; four of them overflow i64.
        let cents: Option<i64> = match rng % 10 {
            0 => None,
            1..=4 => Some((1i64 << 61) + ((rng >> 16) % 100_000) as i64 * 2 + 1),
            _ => Some(((rng >> 16) % 2_000_000) as i64 - 1_000_000),
        };
        let card = format!("c{}", rng % 7);
        let value = cents.map_or("null".to_string(), |c| c.to_string());
        lines.push(format!(
            "{{\"txn_id\": {id}, \"card_id\": \"{card}\", \"cents\": {value}, \"event_time\": {t}}}"
        ));
        rows.push((id, card, cents, t));
    }
    let yaml = format!(
        "name: exact
source:
  files:
    location: {}/in.ndjson
    schema:
      - {{name: txn_id, type: int}}
      - {{name: card_id, type: string}}
      - {{name: cents, type: int}}
      - {{name: event_time, type: timestamp, nullable: false}}
event_time:
  column: event_time
  max_lateness: 0s
views:
  - name: v
    sql: |
{}
",
        dir.path().display(),
        yaml_block(&view())
    );
    let config = write_files(
        dir.path(),
        &[("p.yaml", &yaml), ("in.ndjson", &lines.join("\n"))],
    );

    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    let schema = std::sync::Arc::new(Schema::new(vec![
        Field::new("txn_id", DataType::Int64, true),
        Field::new("card_id", DataType::Utf8, true),
        Field::new("cents", DataType::Int64, true),
        Field::new(
            "event_time",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
    ]));
    let columns: Vec<arrow::array::ArrayRef> = vec![
        std::sync::Arc::new(arrow::array::Int64Array::from_iter_values(
            rows.iter().map(|r| r.0),
        )),
        std::sync::Arc::new(arrow::array::StringArray::from_iter_values(
            rows.iter().map(|r| r.1.clone()),
        )),
        std::sync::Arc::new(arrow::array::Int64Array::from_iter(
            rows.iter().map(|r| r.2),
        )),
        std::sync::Arc::new(arrow::array::TimestampMicrosecondArray::from_iter_values(
            rows.iter().map(|r| r.3 * 1_000),
        )),
    ];
    let batch = arrow::record_batch::RecordBatch::try_new(schema.clone(), columns).expect("batch");
    let reference = reference_answer(VIEW, batch).await;
    // The reference does overflow: a sum of four values near 2^61 wraps.
    let sums = reference.column_by_name("cents_sum_10m").expect("column");
    let sums = arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(sums);
    assert!(sums.iter().flatten().any(|s| s < -(1i64 << 62)));

    for backfill in [false, true] {
        let out = dir.path().join(format!("out-{backfill}"));
        run_config(&config, &out, backfill).await.expect("runs");
        let ours = read_view(&out.join("v"));
        check_float_average(&ours, &rows);
        let ours = ours
            .project(
                &(0..ours.num_columns())
                    .filter(|&i| ours.schema().field(i).name() != "cents_avg_1h")
                    .collect::<Vec<_>>(),
            )
            .expect("project");
        for b in reference.schema().fields() {
            let a = ours
                .schema()
                .field_with_name(b.name())
                .expect("column")
                .clone();
            assert_eq!(a.data_type(), b.data_type(), "type of `{}`", a.name());
        }
        assert_same_features(
            &ours,
            &reference,
            &["card_id", "event_time", "txn_id"],
            if backfill { "backfill" } else { "run" },
        );
    }
}
