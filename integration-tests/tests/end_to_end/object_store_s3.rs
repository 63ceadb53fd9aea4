//! Reading input files from a real S3-compatible object store (moto's server on loopback,
//! started by scripts/test.sh, which exports QUIVER_TEST_S3_ENDPOINT).

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};
use quiver_connectors::{write_file, FileFormat};
use quiver_integration_tests::{read_view, run_config, s3_bucket, s3_endpoint, write_files};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_ndjson_and_parquet_from_s3() {
    let Some(endpoint) = s3_endpoint() else {
        return;
    };
    let bucket = s3_bucket();
    let store = AmazonS3Builder::new()
        .with_endpoint(&endpoint)
        .with_allow_http(true)
        .with_bucket_name(&bucket)
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .with_region("us-east-1")
        .build()
        .expect("s3 client");
    let ndjson = "{\"card_id\":\"c1\",\"amount\":1.5,\"event_time\":\"2026-01-01T00:00:00Z\"}\n\
                  {\"card_id\":\"c1\",\"amount\":2.5,\"event_time\":\"2026-01-01T00:01:00Z\"}\n\
                  not json\n";
    store
        .put(
            &ObjectPath::from("in/a.ndjson"),
            PutPayload::from(ndjson.as_bytes().to_vec()),
        )
        .await
        .expect("upload ndjson");
    // A Parquet file with the same rows, decoded from the NDJSON above.
    let dir = tempfile::tempdir().expect("tempdir");
    let schema = quiver_connectors::DeclaredSchema::new(
        vec![
            quiver_connectors::FieldSpec::new(
                "card_id",
                quiver_connectors::FieldType::String,
                false,
            ),
            quiver_connectors::FieldSpec::new("amount", quiver_connectors::FieldType::Float, true),
            quiver_connectors::FieldSpec::new(
                "event_time",
                quiver_connectors::FieldType::Timestamp,
                false,
            ),
        ],
        "event_time",
    )
    .expect("schema");
    let decoded = quiver_connectors::decode_file(
        FileFormat::Ndjson,
        "local",
        ndjson.as_bytes(),
        &schema,
        100,
    )
    .expect("decode");
    let local = dir.path().join("b.parquet");
    let mut later = decoded.batches[0].batch.clone();
    // Shift the Parquet rows by two minutes so that the two files form one ordered stream.
    let shifted = arrow::compute::kernels::numeric::add(
        later.column(2),
        &arrow::array::DurationMicrosecondArray::new_scalar(120_000_000),
    )
    .expect("shift");
    let mut columns = later.columns().to_vec();
    columns[2] = arrow::compute::cast(&shifted, later.schema().field(2).data_type()).expect("cast");
    later = arrow::record_batch::RecordBatch::try_new(later.schema(), columns).expect("batch");
    write_file(FileFormat::Parquet, &local, &[later]).expect("write parquet");
    store
        .put(
            &ObjectPath::from("in/b.parquet"),
            PutPayload::from(std::fs::read(&local).expect("read")),
        )
        .await
        .expect("upload parquet");

    let yaml = format!(
        "name: s3
source:
  files:
    location: s3://{bucket}/in/
    options:
      aws_endpoint: {endpoint}
      aws_allow_http: \"true\"
      aws_access_key_id: test
      aws_secret_access_key: test
      aws_region: us-east-1
    schema:
      - {{name: card_id, type: string, nullable: false}}
      - {{name: amount, type: float}}
      - {{name: event_time, type: timestamp, nullable: false}}
event_time:
  column: event_time
views:
  - name: card
    sql: |
      SELECT card_id, event_time, sum(amount) OVER (PARTITION BY card_id ORDER BY event_time
        RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW) AS amount_10m
      FROM source
"
    );
    let path = write_files(dir.path(), &[("p.yaml", &yaml)]);
    let out = dir.path().join("out");
    let summary = run_config(&path, &out, false).await.expect("run over s3");
    assert_eq!(summary.events, 5);
    assert_eq!(summary.dead_letter_total(), 1);
    let letters = std::fs::read_to_string(&summary.dead_letter_path).expect("dead letters");
    assert!(
        letters.contains(&format!("\"partition\":\"s3://{bucket}/in/a.ndjson\"")),
        "{letters}"
    );
    assert!(letters.contains("\"offset\":3"), "{letters}");
    let rows = read_view(&out.join("card"));
    assert_eq!(rows.num_rows(), 4);
    let sums = arrow::compute::cast(
        rows.column_by_name("amount_10m").expect("column"),
        &arrow::datatypes::DataType::Float64,
    )
    .expect("f64");
    let total: f64 = sums
        .as_any()
        .downcast_ref::<arrow::array::Float64Array>()
        .expect("f64")
        .iter()
        .flatten()
        .sum();
    // Events at minutes 0, 1 (a.ndjson), 2, 3 (b.parquet), all within one 10-minute window:
    // running sums 1.5, 4.0, 5.5, 8.0.
    assert!((total - (1.5 + 4.0 + 5.5 + 8.0)).abs() < 1e-9, "{total}");
}
