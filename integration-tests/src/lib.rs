//! Shared helpers for end-to-end tests: temporary pipelines, reading feature rows back, and
//! comparing them with DataFusion's batch answer.

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::{cast, concat_batches, lexsort_to_indices, take_record_batch, SortColumn};
use arrow::datatypes::{DataType, Float64Type, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::{Path, PathBuf};

/// Writes `files` (relative path, content) under `dir` and returns the path of the first.
pub fn write_files(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    for (name, content) in files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create test dir");
        }
        std::fs::write(&path, content).expect("write test file");
    }
    dir.join(files[0].0)
}

/// Reads every `part-*.parquet` file of a view directory as one batch.
pub fn read_view(dir: &Path) -> RecordBatch {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("view dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    paths.sort();
    let mut batches = Vec::new();
    let mut schema: Option<SchemaRef> = None;
    for path in paths {
        let file = std::fs::File::open(&path).expect("open parquet");
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .expect("parquet")
            .build()
            .expect("reader");
        for b in reader {
            let b = b.expect("batch");
            schema.get_or_insert(b.schema());
            batches.push(b);
        }
    }
    match schema {
        Some(s) => concat_batches(&s, &batches).expect("concat"),
        None => RecordBatch::new_empty(std::sync::Arc::new(arrow::datatypes::Schema::empty())),
    }
}

/// Sorts a batch by the named columns.
pub fn sorted(batch: &RecordBatch, by: &[&str]) -> RecordBatch {
    if batch.num_rows() == 0 {
        return batch.clone();
    }
    let columns: Vec<SortColumn> = by
        .iter()
        .map(|name| SortColumn {
            values: batch.column_by_name(name).expect("sort column").clone(),
            options: None,
        })
        .collect();
    let indices = lexsort_to_indices(&columns, None).expect("sort");
    take_record_batch(batch, &indices).expect("take")
}

fn as_strings(array: &ArrayRef) -> Vec<Option<String>> {
    let s = cast(array, &DataType::Utf8).expect("cast to string");
    s.as_string::<i32>()
        .iter()
        .map(|v| v.map(str::to_string))
        .collect()
}

/// Asserts two feature-row batches are equal after sorting by `by`: same columns (by name),
/// same row count, exact equality except floats, which may differ by 1e-9 relative (absolute
/// below 1). Returns the number of values compared.
pub fn assert_same_features(
    ours: &RecordBatch,
    reference: &RecordBatch,
    by: &[&str],
    what: &str,
) -> usize {
    assert_eq!(
        ours.num_rows(),
        reference.num_rows(),
        "{what}: row counts differ"
    );
    let ours = sorted(ours, by);
    let reference = sorted(reference, by);
    let mut compared = 0;
    for field in reference.schema().fields() {
        let name = field.name();
        let theirs = reference.column_by_name(name).expect("reference column");
        let mine = ours
            .column_by_name(name)
            .unwrap_or_else(|| panic!("{what}: column `{name}` missing from Quiver's output"));
        if matches!(field.data_type(), DataType::Float64 | DataType::Float32) {
            let a = cast(mine, &DataType::Float64).expect("f64");
            let b = cast(theirs, &DataType::Float64).expect("f64");
            let (a, b) = (
                a.as_primitive::<Float64Type>(),
                b.as_primitive::<Float64Type>(),
            );
            for row in 0..a.len() {
                match (a.is_valid(row), b.is_valid(row)) {
                    (true, true) => {
                        let (x, y) = (a.value(row), b.value(row));
                        let scale = x.abs().max(y.abs()).max(1.0);
                        assert!(
                            (x - y).abs() <= 1e-9 * scale,
                            "{what}: `{name}` row {row}: quiver {x} vs datafusion {y}\nquiver row: {:?}",
                            row_text(&ours, row)
                        );
                    }
                    (va, vb) => assert_eq!(
                        va,
                        vb,
                        "{what}: `{name}` row {row} nullness differs: {:?}",
                        row_text(&ours, row)
                    ),
                }
                compared += 1;
            }
        } else {
            let (a, b) = (as_strings(mine), as_strings(theirs));
            for row in 0..a.len() {
                assert_eq!(
                    a[row],
                    b[row],
                    "{what}: `{name}` row {row}: {:?}",
                    row_text(&ours, row)
                );
                compared += 1;
            }
        }
    }
    compared
}

fn row_text(batch: &RecordBatch, row: usize) -> Vec<String> {
    batch
        .columns()
        .iter()
        .map(|c| as_strings(c)[row].clone().unwrap_or_else(|| "NULL".into()))
        .collect()
}

/// Compiles the pipeline config at `config` and runs it (streaming, or backfill) with feature
/// rows and dead letters under `out`.
pub async fn run_config(
    config: &Path,
    out: &Path,
    is_backfill: bool,
) -> Result<quiver_pipeline::RunSummary, quiver_pipeline::JobError> {
    use quiver_pipeline::run::RunOptions;
    let loaded = quiver_pipeline::LoadedConfig::load(config)?;
    let pipeline = quiver_pipeline::CompiledPipeline::compile(loaded).await?;
    let options = RunOptions {
        output: Some(out.to_path_buf()),
        ..RunOptions::default()
    };
    if is_backfill {
        quiver_pipeline::backfill::backfill(pipeline, options).await
    } else {
        quiver_pipeline::run::run(pipeline, options).await
    }
}

/// `sql` indented to sit under `sql: |` of a view in a pipeline YAML.
pub fn yaml_block(sql: &str) -> String {
    sql.lines()
        .map(|l| format!("      {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// DataFusion's batch answer to `sql` over `batch` (registered as `source`), as one batch.
pub async fn reference_answer(sql: &str, batch: RecordBatch) -> RecordBatch {
    let schema = batch.schema();
    let out = quiver_sql::reference::batch_query(sql, &[("source".into(), schema, vec![batch])])
        .await
        .expect("reference query");
    concat_batches(&out[0].schema(), &out).expect("concat")
}

/// The declared schema of the store tests' NDJSON card events: `card_id`, `amount` and an
/// epoch-milliseconds `event_time`.
pub const CARD_EVENTS: [&str; 3] = [
    "{name: card_id, type: string}",
    "{name: amount, type: float}",
    "{name: event_time, type: timestamp, nullable: false}",
];

/// A store with one view: writes a config reading `input` (under `dir`; `schema` lines such as
/// `{name: card_id, type: string}`, none to read a Parquet file's own schema) into view `view`
/// defined by `sql` (with `view_extra` YAML keys such as `freshness_sla: 5m`), with its store
/// at `<dir>/store`, and applies it.
pub async fn apply_one_view(
    dir: &Path,
    input: &str,
    schema: &[&str],
    view: &str,
    sql: &str,
    view_extra: &str,
) -> quiver_pipeline::registry::Registry {
    let options = quiver_pipeline::run::RunOptions::default();
    apply_one_view_with(dir, input, schema, view, sql, view_extra, options).await
}

/// [`apply_one_view`] with run options (e.g. a memory limit for the apply's backfill).
pub async fn apply_one_view_with(
    dir: &Path,
    input: &str,
    schema: &[&str],
    view: &str,
    sql: &str,
    view_extra: &str,
    options: quiver_pipeline::run::RunOptions,
) -> quiver_pipeline::registry::Registry {
    let schema = if schema.is_empty() {
        String::new()
    } else {
        let fields: Vec<String> = schema.iter().map(|f| format!("      - {f}\n")).collect();
        format!("    schema:\n{}", fields.concat())
    };
    let extra = if view_extra.is_empty() {
        String::new()
    } else {
        format!("    {view_extra}\n")
    };
    let yaml = format!(
        "name: one_view
source:
  files:
    location: {}/{input}
{schema}event_time:
  column: event_time
views:
  - name: {view}
{extra}    sql: |
{}
store: {}/store
",
        dir.display(),
        yaml_block(sql),
        dir.display()
    );
    let config = write_files(dir, &[("one_view.yaml", &yaml)]);
    let loaded = quiver_pipeline::LoadedConfig::load(&config).expect("config");
    let registry = loaded.config.store_registry(None).expect("store");
    let pipeline = quiver_pipeline::CompiledPipeline::compile(loaded)
        .await
        .expect("compile");
    quiver_pipeline::registry::apply(pipeline, &registry, options, false)
        .await
        .expect("apply");
    registry
}

/// Writes `batch` as a Parquet file at `path` (creating its directory).
pub fn write_parquet(path: &Path, batch: &RecordBatch) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("mkdir");
    }
    let file = std::fs::File::create(path).expect("create");
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
    writer.write(batch).expect("write");
    writer.close().expect("close");
}

/// The local directory of a store directory (the tests' stores are local unless they say).
pub fn local(dir: &quiver_store::StoreDir) -> PathBuf {
    dir.local_path()
        .expect("a local store directory")
        .to_path_buf()
}

/// Reads the Parquet file at `path` as one batch.
pub fn read_parquet(path: &Path) -> RecordBatch {
    let file = std::fs::File::open(path).expect("open");
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("parquet")
        .build()
        .expect("reader");
    let batches: Vec<RecordBatch> = reader.map(|b| b.expect("batch")).collect();
    concat_batches(&batches[0].schema(), &batches).expect("concat")
}

/// The endpoint of the tests' S3 server (moto, started by scripts/test.sh), or `None` when not configured outside CI (the test command always sets it).
pub fn s3_endpoint() -> Option<String> {
    match std::env::var("QUIVER_TEST_S3_ENDPOINT") {
        Ok(e) => Some(e),
        Err(_) if std::env::var("CI").is_ok() => {
            panic!("QUIVER_TEST_S3_ENDPOINT is not set: run the tests with `bash scripts/test.sh`, which starts an S3 server")
        }
        Err(_) => {
            eprintln!("skipping: QUIVER_TEST_S3_ENDPOINT not set (bash scripts/test.sh sets it)");
            None
        }
    }
}

/// The tests' bucket on the S3 server (created by scripts/test.sh; tests write under their own
/// prefixes).
pub fn s3_bucket() -> String {
    std::env::var("QUIVER_TEST_S3_BUCKET").unwrap_or_else(|_| "quiver-test".to_string())
}

/// The generator's events for `config` as one batch in event-time order, with the hidden
/// lineage columns the runtime adds (partition 0, the generator's sequence numbers): what a
/// view operator is fed.
pub fn generated_in_time_order(config: quiver_connectors::DatagenConfig) -> RecordBatch {
    let batches: Vec<RecordBatch> = quiver_connectors::Datagen::new(config)
        .expect("datagen")
        .map(|b| {
            let rows = b.batch.num_rows();
            let mut columns = b.batch.columns().to_vec();
            columns.push(std::sync::Arc::new(arrow::array::UInt32Array::from(vec![
                0;
                rows
            ])));
            columns.push(std::sync::Arc::new(arrow::array::UInt64Array::from(
                b.offsets,
            )));
            let schema = quiver_pipeline::compile::with_hidden_columns(&b.batch.schema());
            RecordBatch::try_new(schema, columns).expect("batch")
        })
        .collect();
    let all = concat_batches(&batches[0].schema(), &batches).expect("concat");
    let times = all.column_by_name("event_time").expect("time").clone();
    let order = arrow::compute::sort_to_indices(&times, None, None).expect("sort");
    take_record_batch(&all, &order).expect("take")
}
