//! The feature store on an object store (`store: s3://...`, against the tests' real S3 server):
//! apply, versions, Delta tables, status, training sets, compaction, the clean-up of
//! unreferenced data and the audit log behave as with a local store, with the same versions
//! and the same rows.

use quiver_integration_tests::{
    local, read_view, s3_bucket, s3_endpoint, sorted, write_files, yaml_block,
};
use quiver_pipeline::parquet_file::ParquetBatches;
use quiver_pipeline::registry::{apply, Applied, Registry};
use quiver_pipeline::run::RunOptions;
use quiver_pipeline::training_set::{parse_feature_list, training_set, TrainingSetOptions};
use quiver_pipeline::{CompiledPipeline, LoadedConfig};
use quiver_store::{delta, StoreDir};
use std::path::{Path, PathBuf};

const VIEW: &str = "SELECT card_id, event_time, amount,
  count(*) OVER w AS n_10m,
  sum(amount) OVER w AS sum_10m
FROM source
WINDOW w AS (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW)";

/// A config over `dir/in.ndjson` with `store` and its options.
fn config(dir: &Path, name: &str, view: &str, store: &str, options: &str) -> PathBuf {
    let yaml = format!(
        "name: s3store
source:
  files:
    location: {}/in.ndjson
    schema:
      - {{name: card_id, type: string}}
      - {{name: amount, type: float}}
      - {{name: event_time, type: timestamp, nullable: false}}
event_time:
  column: event_time
views:
  - name: cards
    sql: |
{}
store: {store}
{options}",
        dir.display(),
        yaml_block(view),
    );
    write_files(dir, &[(name, &yaml)])
}

/// Events `range` over 40 cards (the `stride`-th card after the previous one), with tied
/// times (every third event shares its time), as NDJSON lines.
fn card_events(range: std::ops::Range<i64>, stride: i64, amounts: i64) -> String {
    let lines: Vec<String> = range
        .map(|i| {
            format!(
                "{{\"card_id\": \"c{}\", \"amount\": {}.25, \"event_time\": {}}}",
                (i * stride) % 40,
                i % amounts,
                1_767_225_600_000i64 + (i / 3) * 15_000
            )
        })
        .collect();
    lines.join("\n")
}

/// 3,000 events over 40 cards.
fn events(dir: &Path) {
    write_files(dir, &[("in.ndjson", &card_events(0..3000, 7, 97))]);
}

async fn apply_config(path: &Path) -> (Registry, Vec<(String, Applied)>) {
    let loaded = LoadedConfig::load(path).expect("config");
    let registry = loaded.config.store_registry(None).expect("store");
    let pipeline = CompiledPipeline::compile(loaded).await.expect("compile");
    let report = apply(pipeline, &registry, RunOptions::default(), false)
        .await
        .expect("apply");
    (registry, report.views)
}

/// Every row of the Delta table at `table` (its active files, read through the store).
fn table_rows(table: &StoreDir) -> arrow::record_batch::RecordBatch {
    let mut batches = Vec::new();
    for file in delta::active_files(table).expect("files") {
        for batch in
            ParquetBatches::open_in(table, &file.path, "a table file", |_| Ok(None)).expect("open")
        {
            batches.push(batch.expect("batch"));
        }
    }
    let schema = batches[0].schema();
    arrow::compute::concat_batches(&schema, &batches).expect("concat")
}

async fn training(
    registry: &Registry,
    spine: &Path,
    out: &Path,
) -> arrow::record_batch::RecordBatch {
    let options = TrainingSetOptions::new(
        spine.to_path_buf(),
        parse_feature_list("cards:*").expect("features"),
        out.to_path_buf(),
    );
    training_set(registry, options).await.expect("training set");
    quiver_integration_tests::read_parquet(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_on_s3_holds_what_a_local_store_holds() {
    let Some(endpoint) = s3_endpoint() else {
        return;
    };
    let bucket = s3_bucket();
    let dir = tempfile::tempdir().expect("tempdir");
    events(dir.path());
    let prefix = format!("run-{}", uuid::Uuid::new_v4().simple());
    let url = format!("s3://{bucket}/{prefix}");
    let options = format!(
        "store_options:
  aws_endpoint: {endpoint}
  aws_allow_http: \"true\"
  aws_access_key_id: test
  aws_secret_access_key: test
  aws_region: us-east-1
"
    );
    let on_s3 = config(dir.path(), "s3.yaml", VIEW, &url, &options);
    let on_disk = config(
        dir.path(),
        "local.yaml",
        VIEW,
        &dir.path().join("store").display().to_string(),
        "",
    );

    let (s3, applied) = apply_config(&on_s3).await;
    let (disk, applied_locally) = apply_config(&on_disk).await;
    let version = match (&applied[0].1, &applied_locally[0].1) {
        (Applied::Created { version, rows, .. }, Applied::Created { version: v, .. }) => {
            assert_eq!(
                version, v,
                "the same definition has the same version anywhere"
            );
            assert_eq!(*rows, 3000);
            version.clone()
        }
        other => panic!("both applies create a version: {other:?}"),
    };
    assert_eq!(s3.views().expect("views"), vec!["cards"]);
    assert_eq!(s3.latest("cards").expect("latest"), Some(version.clone()));
    assert!(
        s3.root().local_path().is_none(),
        "the store is on S3, not on the local disk"
    );
    assert!(
        !dir.path().join("s3:").exists() && !Path::new(&format!("s3:/{bucket}")).exists(),
        "nothing was written to a local directory named like the URL"
    );

    // The Delta table on S3 holds the rows the local one holds.
    let table = s3.data_dir("cards", &version);
    assert_eq!(delta::versions(&table).expect("log"), vec![0]);
    let by = ["card_id", "event_time", "amount"];
    let remote_rows = sorted(&table_rows(&table), &by);
    let local_rows = sorted(&read_view(&local(&disk.data_dir("cards", &version))), &by);
    assert_eq!(remote_rows.num_rows(), 3000);
    assert_eq!(remote_rows, local_rows);

    // Status, from the Delta log and the files' footers (ranged reads).
    let status = quiver_pipeline::registry::status::status(&s3, None).expect("status");
    assert_eq!(status[0].rows, 3000);
    assert!(status[0].last_event_time.is_some());

    // A training set from the S3 store's event log equals one from the local store's.
    let spine_rows: Vec<String> = (0..200i64)
        .map(|i| {
            format!(
                "{{\"card_id\": \"c{}\", \"ts\": {}, \"label\": {}}}",
                i % 45,
                1_767_225_600_000i64 + i * 75_000 + 15_000 * (i % 2),
                i % 2
            )
        })
        .collect();
    let spine = dir.path().join("spine.parquet");
    let spine_batch = quiver_connectors::decode_file(
        quiver_connectors::FileFormat::Ndjson,
        "spine",
        spine_rows.join("\n").as_bytes(),
        &quiver_connectors::DeclaredSchema::new(
            vec![
                quiver_connectors::FieldSpec::new(
                    "card_id",
                    quiver_connectors::FieldType::String,
                    true,
                ),
                quiver_connectors::FieldSpec::new(
                    "ts",
                    quiver_connectors::FieldType::Timestamp,
                    false,
                ),
                quiver_connectors::FieldSpec::new("label", quiver_connectors::FieldType::Int, true),
            ],
            "ts",
        )
        .expect("schema"),
        1000,
    )
    .expect("decode")
    .batches[0]
        .batch
        .clone();
    quiver_integration_tests::write_parquet(&spine, &spine_batch);
    let from_s3 = training(&s3, &spine, &dir.path().join("train-s3.parquet")).await;
    let from_disk = training(&disk, &spine, &dir.path().join("train-local.parquet")).await;
    assert_eq!(from_s3.num_rows(), 200);
    assert_eq!(from_s3, from_disk);

    // Applying again changes nothing; a changed view gets a new version, the old stays.
    let (_, again) = apply_config(&on_s3).await;
    assert!(matches!(again[0].1, Applied::Unchanged { .. }), "{again:?}");
    let changed = VIEW.replace("10 minutes", "20 minutes");
    let on_s3_v2 = config(dir.path(), "s3-v2.yaml", &changed, &url, &options);
    let (_, second) = apply_config(&on_s3_v2).await;
    let Applied::Created { version: v2, .. } = &second[0].1 else {
        panic!("a changed view gets a new version: {second:?}");
    };
    assert_ne!(v2, &version);
    assert_eq!(s3.latest("cards").expect("latest").as_ref(), Some(v2));
    assert_eq!(s3.versions("cards").expect("versions").len(), 2);
    assert_eq!(table_rows(&table).num_rows(), 3000, "the old version stays");

    // A streaming run appends to the latest version on S3 as it does to a local store: the
    // same events streamed into both give the same rows, one commit per epoch, and the later
    // events reach the event log (training sets and lineage read them).
    write_files(
        dir.path(),
        &[("later.ndjson", &card_events(3000..4200, 11, 89))],
    );
    let on_disk_v2 = config(
        dir.path(),
        "local-v2.yaml",
        &changed,
        &dir.path().join("store").display().to_string(),
        "",
    );
    apply_config(&on_disk_v2).await;
    for (config_path, registry, out) in [
        (&on_s3_v2, &s3, "run-s3"),
        (&on_disk_v2, &disk, "run-local"),
    ] {
        let loaded = LoadedConfig::load(config_path).expect("config");
        let pipeline = CompiledPipeline::compile(loaded).await.expect("compile");
        let options = RunOptions {
            source: quiver_pipeline::source::SourceOverrides {
                input: Some(dir.path().join("later.ndjson").display().to_string()),
                ..Default::default()
            },
            output: Some(dir.path().join(out)),
            checkpoints: Some(quiver_pipeline::checkpoint::CheckpointPolicy {
                interval: None,
                every_events: Some(400),
            }),
            store: Some(registry.clone()),
            ..RunOptions::default()
        };
        quiver_pipeline::run::run(pipeline, options)
            .await
            .expect("store run");
    }
    let table2 = s3.data_dir("cards", v2);
    let streamed = sorted(&table_rows(&table2), &by);
    let streamed_locally = sorted(&read_view(&local(&disk.data_dir("cards", v2))), &by);
    assert_eq!(streamed.num_rows(), 3000 + 1200);
    assert_eq!(
        streamed.project(&[0, 1, 2, 3, 4]).expect("features"),
        streamed_locally
            .project(&[0, 1, 2, 3, 4])
            .expect("features")
    );
    let commits = delta::versions(&table2).expect("log").len();
    assert!(
        commits >= 3,
        "the apply's commit, then one per epoch: {commits}"
    );
    let v2_definition = s3.definition("cards", Some(v2)).expect("definition");
    let logged =
        quiver_pipeline::registry::event_log::read_event_log(&s3, &v2_definition, None, false)
            .expect("event log");
    let logged_rows: usize = logged.batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(logged_rows, 3000 + 1200);

    // Compaction on S3 merges the run's small files (one per epoch) and the apply's into one,
    // the rows unchanged, and vacuums the merged files with a zero retention.
    let before = sorted(&table_rows(&table2), &by);
    let files_before = delta::active_files(&table2).expect("files").len();
    assert!(files_before >= 3, "{files_before}");
    let compacted = quiver_pipeline::registry::compact::compact(
        &s3,
        Some("cards"),
        1_000_000,
        std::time::Duration::ZERO,
    )
    .expect("compact");
    assert_eq!(compacted[0].files, (files_before, 1), "{compacted:?}");
    assert_eq!(compacted[0].vacuumed, files_before);
    assert!(
        compacted[0].table.starts_with("s3://"),
        "{}",
        compacted[0].table
    );
    // The same rows; the compaction wrote each row's availability (its file's commit time).
    let after = sorted(&table_rows(&table2), &by);
    let features: Vec<usize> = (0..before.num_columns() - 1).collect();
    assert_eq!(
        after.project(&features).expect("features"),
        before.project(&features).expect("features")
    );
    let available = after
        .column_by_name(quiver_store::AVAILABLE_COLUMN)
        .expect("availability column");
    assert_eq!(
        before
            .column_by_name(quiver_store::AVAILABLE_COLUMN)
            .expect("column")
            .null_count(),
        before.num_rows()
    );
    assert_eq!(available.null_count(), 0);
    assert!(table2
        .list()
        .expect("list")
        .iter()
        .all(|e| e.is_dir || e.name.starts_with("part-compact-")));

    // Data no version refers to (an apply killed before registering) is removed.
    let orphan = s3.root().join("offline/cards/0123456789abcdef");
    orphan.write("part-0.parquet", b"x").expect("orphan");
    let removed =
        quiver_pipeline::registry::compact::remove_unreferenced(&s3, std::time::Duration::ZERO)
            .expect("clean-up");
    assert_eq!(removed, vec![orphan.to_string()]);
    assert!(orphan.list().expect("list").is_empty());
    assert_eq!(table_rows(&table).num_rows(), 3000, "registered data stays");

    // The audit log: one object per entry, read back in order.
    let audit = quiver_pipeline::audit::AuditLog::of_store(s3.root());
    let first = quiver_pipeline::audit::AuditEntry::now("alice", "apply", "ok");
    let second = quiver_pipeline::audit::AuditEntry::now("bob", "compact", "failed");
    audit.append(&first).expect("audit");
    audit.append(&second).expect("audit");
    assert_eq!(audit.read().expect("read"), vec![first, second]);

    // Two writers racing for one Delta version: exactly one wins (a conditional PUT).
    let race = s3.root().join("race");
    assert!(race
        .create("00000000000000000000.json", b"a")
        .expect("first"));
    assert!(!race
        .create("00000000000000000000.json", b"b")
        .expect("second"));
    assert_eq!(
        race.read("00000000000000000000.json")
            .expect("read")
            .as_deref(),
        Some(&b"a"[..])
    );
}
