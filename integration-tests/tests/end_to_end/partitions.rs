//! Files are partitions with their own watermarks: files covering different time ranges need no
//! extra lateness, and the features equal DataFusion's batch answer over all files.

use quiver_integration_tests::{
    assert_same_features, read_view, reference_answer, run_config, write_files, yaml_block,
};

const VIEW: &str = "SELECT card_id, event_time, txn_id,
  count(*) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW) AS n_10m,
  sum(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW) AS sum_1h
FROM source";

/// One event: id, card, amount, event time in ms.
type Event = (u64, u64, f64, i64);

/// One NDJSON line.
fn line(&(id, card, amount, ms): &Event) -> String {
    format!("{{\"txn_id\": {id}, \"card_id\": \"c{card}\", \"amount\": {amount}, \"event_time\": {ms}}}")
}

/// Every feature row names the file and the (1-based) line its event came from.
fn check_lineage(rows: &arrow::record_batch::RecordBatch, files: &[(&str, &[Event])]) {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int64Type, UInt32Type};
    let ids = rows.column_by_name("txn_id").expect("txn_id");
    let ids = ids.as_primitive::<Int64Type>();
    let partitions = rows
        .column_by_name("_source_partition")
        .expect("_source_partition");
    let partitions = partitions.as_dictionary::<UInt32Type>();
    let names = partitions.values().as_string::<i32>();
    let offsets = rows
        .column_by_name("_source_offset")
        .expect("_source_offset");
    let offsets = offsets.as_primitive::<Int64Type>();
    for r in 0..rows.num_rows() {
        let name = names.value(partitions.keys().value(r) as usize);
        let (_, events) = files
            .iter()
            .find(|(file, _)| name.ends_with(file))
            .unwrap_or_else(|| panic!("row {r}: unknown partition {name}"));
        let line = events
            .iter()
            .position(|e| e.0 as i64 == ids.value(r))
            .unwrap_or_else(|| panic!("row {r}: txn {} is not in {name}", ids.value(r)));
        assert!(offsets.is_valid(r));
        assert_eq!(
            offsets.value(r),
            line as i64 + 1,
            "row {r}: line of txn in {name}"
        );
    }
}

fn lines(events: &[Event]) -> String {
    events.iter().map(line).collect::<Vec<_>>().join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_over_different_time_ranges_are_exact_without_extra_lateness() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = 1_767_225_600_000i64;
    // a.ndjson: hours 0-2; b.ndjson: hours 1-3 (it starts an hour behind where a ends);
    // c.ndjson: two events only, inside a's range: it finishes early and must not stall.
    let mut a = Vec::new();
    let mut b = Vec::new();
    for i in 0..2_000u64 {
        let t = base + i as i64 * 3_600 + (i % 3) as i64 * 100; // in-file order, small steps
        a.push((i, i % 13, (i % 50) as f64, t));
        b.push((10_000 + i, i % 7, (i % 30) as f64, t + 3_600_000));
    }
    let c = vec![
        (20_000, 1, 5.0, base + 60_000),
        (20_001, 2, 6.0, base + 61_000),
    ];
    let yaml = format!(
        "name: parts
source:
  files:
    location: {}/in
    batch_size: 100
    schema:
      - {{name: txn_id, type: int}}
      - {{name: card_id, type: string}}
      - {{name: amount, type: float}}
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
        yaml_block(VIEW)
    );
    let config = write_files(
        dir.path(),
        &[
            ("p.yaml", &yaml),
            ("in/a.ndjson", &lines(&a)),
            ("in/b.ndjson", &lines(&b)),
            ("in/c.ndjson", &lines(&c)),
        ],
    );
    let summary = run_config(&config, &dir.path().join("out"), false)
        .await
        .expect("run");
    assert_eq!(summary.late, 0, "no event is late: each file is in order");
    assert_eq!(summary.accepted, 4_002);
    // The reference: DataFusion over every event of every file.
    let all: Vec<Event> = a.iter().chain(&b).chain(&c).copied().collect();
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    let schema = std::sync::Arc::new(Schema::new(vec![
        Field::new("txn_id", DataType::Int64, true),
        Field::new("card_id", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, true),
        Field::new(
            "event_time",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
    ]));
    let columns: Vec<arrow::array::ArrayRef> = vec![
        std::sync::Arc::new(arrow::array::Int64Array::from_iter_values(
            all.iter().map(|e| e.0 as i64),
        )),
        std::sync::Arc::new(arrow::array::StringArray::from_iter_values(
            all.iter().map(|e| format!("c{}", e.1)),
        )),
        std::sync::Arc::new(arrow::array::Float64Array::from_iter_values(
            all.iter().map(|e| e.2),
        )),
        std::sync::Arc::new(arrow::array::TimestampMicrosecondArray::from_iter_values(
            all.iter().map(|e| e.3 * 1_000),
        )),
    ];
    let batch = arrow::record_batch::RecordBatch::try_new(schema.clone(), columns).expect("batch");
    let reference = reference_answer(VIEW, batch).await;
    let ours = read_view(&dir.path().join("out/v"));
    check_lineage(
        &ours,
        &[("a.ndjson", &a), ("b.ndjson", &b), ("c.ndjson", &c)],
    );
    let n = assert_same_features(
        &ours,
        &reference,
        &["card_id", "event_time", "txn_id"],
        "three file partitions",
    );
    assert!(n > 4_000);
}
