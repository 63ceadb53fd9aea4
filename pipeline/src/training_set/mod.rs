//! `quiver training-set`: point-in-time correct features for a spine of entities, times and
//! labels.
//!
//! Each spine row `(key, t)` gets every requested feature as of `t`: its window ends at `t` and
//! holds the view's events of that key with event time in the window and `<= t` (ties at `t`
//! included), exactly as the SQL window would if an event of that key happened at `t` but did
//! not count itself. Rows of keys with no history get SQL's empty-window values (count 0, the
//! other aggregates NULL); NULL keys match no event; NULL times give NULL features.
//!
//! The windows are computed by the same kernels as backfill, over the view version's event log
//! (the transformed events its backfill read), with the spine rows added as probes: rows whose
//! inputs are all NULL, so they are evaluated but never counted. Any spine size and event log
//! fit a memory limit: events and probes are partitioned by entity key and evaluated a
//! partition at a time (`partitioned`), then the output is written in spine order as it is
//! assembled (`output`).

mod assembly;
mod output;
mod partitioned;
mod probes;
mod time_slices;

use crate::batch_compute::BatchCompute;
use crate::error::JobError;
use crate::parquet_file::ParquetBatches;
use crate::progress::events_bar;
use crate::registry::event_log::{compile_registered, EventLogReader};
use crate::registry::{Registry, ViewDefinition};
use crate::resident::{JobMemory, MemoryReport};
use crate::spill::ScratchDir;
use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema};
use probes::{null_times, probe_features, probe_windows, EncodedProbes, EventRows};
use quiver_gpu::{Device, DEFAULT_GPU_MIN_ROWS};
use quiver_sql::{FeatureView, ViewInputs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The features wanted from one view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureRequest {
    /// View name.
    pub view: String,
    /// Version (`None`: the latest).
    pub version: Option<String>,
    /// Feature names (`None`: every point-in-time feature of the view).
    pub features: Option<Vec<String>>,
}

/// Parses `view:feature,view:*,view@version:feature` (what `--features` takes) into one
/// request per view, in order of first mention.
pub fn parse_feature_list(text: &str) -> Result<Vec<FeatureRequest>, JobError> {
    let mut requests: Vec<FeatureRequest> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (view_part, feature) = item.split_once(':').ok_or_else(|| {
            JobError::Other(format!(
                "`{item}` in --features is not `view:feature`; write e.g. card_features:txn_count_10m or card_features:*"
            ))
        })?;
        let (view, version) = match view_part.split_once('@') {
            Some((v, version)) => (v, Some(version.to_string())),
            None => (view_part, None),
        };
        let request = match requests.iter_mut().find(|r| r.view == view) {
            Some(r) => {
                if r.version != version {
                    return Err(JobError::Other(format!(
                        "--features names view `{view}` at two versions; a training set reads one version of a view"
                    )));
                }
                r
            }
            None => {
                requests.push(FeatureRequest {
                    view: view.to_string(),
                    version,
                    features: Some(Vec::new()),
                });
                requests.last_mut().expect("just pushed")
            }
        };
        if feature == "*" {
            request.features = None;
        } else if let Some(list) = &mut request.features {
            if !list.iter().any(|f| f == feature) {
                list.push(feature.to_string());
            }
        }
    }
    if requests.is_empty() {
        return Err(JobError::Other(
            "--features is empty; write e.g. card_features:txn_count_10m,merchant_features:*"
                .into(),
        ));
    }
    Ok(requests)
}

/// What to build.
#[derive(Debug, Clone)]
pub struct TrainingSetOptions {
    /// The spine: a Parquet file with the views' key columns, a timestamp and labels.
    pub spine: PathBuf,
    /// The spine's time column (default: its only timestamp column).
    pub time_column: Option<String>,
    /// Features, per view.
    pub features: Vec<FeatureRequest>,
    /// Output Parquet file.
    pub out: PathBuf,
    /// Draw progress bars.
    pub progress: bool,
    /// Kernel device.
    pub device: Device,
    /// Encrypt the output with Parquet modular encryption under this AES key (16, 24 or 32
    /// bytes; footer and every column).
    pub encryption_key: Option<Vec<u8>>,
    /// Count only events already available (committed to the store) at each spine time.
    pub as_known_at: bool,
    /// The peak resident memory the export is to stay under (`--memory-limit`); `None`:
    /// [`crate::resident::default_memory_limit`], which only sizes the work. What the process holds before
    /// the export reads anything is taken off it, and a limit that leaves too little beside
    /// that is refused. Of the rest, events and spine rows are partitioned by key, held in
    /// memory while they take at most half of it (else in spill files beside the output), and
    /// evaluated a few partitions at a time within the other half (one entity's events always
    /// stay in one partition).
    pub memory_limit: Option<usize>,
    /// The bytes the export's data may take, given directly instead of made from
    /// `memory_limit` and the process's resident size (nothing is then checked against that
    /// size). For embedders that budget memory themselves, and for tests that drive small
    /// inputs through spill files.
    pub data_budget: Option<usize>,
}

impl TrainingSetOptions {
    /// Features `features` for the spine at `spine`, written to `out`: the spine's only
    /// timestamp column, no progress bar, the kernels' device chosen automatically, not
    /// encrypted, every event counted (not only those available by then), the default memory
    /// limit.
    pub fn new(spine: PathBuf, features: Vec<FeatureRequest>, out: PathBuf) -> Self {
        TrainingSetOptions {
            spine,
            time_column: None,
            features,
            out,
            progress: false,
            device: Device::Auto,
            encryption_key: None,
            as_known_at: false,
            memory_limit: None,
            data_budget: None,
        }
    }
}

/// An AES key from its hex text (what `--encrypt-key-env` names): 32, 48 or 64 hex digits.
/// The error never repeats the text.
pub fn parse_encryption_key(hex: &str) -> Result<Vec<u8>, JobError> {
    let hex = hex.trim();
    let bad = || {
        JobError::Other(format!(
            "the encryption key must be 32, 48 or 64 hex digits (an AES-128, -192 or -256 key); got {} characters{}",
            hex.len(),
            if hex.chars().all(|c| c.is_ascii_hexdigit()) { "" } else { ", not all hex digits" }
        ))
    };
    if !matches!(hex.len(), 32 | 48 | 64) || !hex.is_ascii() {
        return Err(bad());
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| bad()))
        .collect()
}

/// What one view added to a training set.
#[derive(Debug, Clone)]
pub struct ViewReport {
    /// View name.
    pub view: String,
    /// Its version.
    pub version: String,
    /// Events read from its event log.
    pub events: usize,
    /// Key partitions its events and spine rows were evaluated in (1: all in memory at once).
    pub partitions: usize,
    /// Key partitions too large to evaluate at once (hot keys), evaluated in time slices
    /// through the streaming windows instead, and their slices.
    pub sliced_partitions: usize,
    pub slices: usize,
    /// Events and spine rows of the largest key partition or time slice evaluated at once.
    /// With `--as-known-at` partitions are not cut: one key's events are evaluated together,
    /// however many they are.
    pub largest_evaluated_rows: usize,
    /// The output columns it added.
    pub columns: Vec<String>,
}

/// What a training set export did.
#[derive(Debug, Clone)]
pub struct TrainingSetReport {
    /// Spine rows, and so output rows.
    pub rows: usize,
    /// Per view: what it read and added.
    pub views: Vec<ViewReport>,
    /// Output file.
    pub out: PathBuf,
    /// Wall time.
    pub elapsed: Duration,
    /// The process's resident memory against the limit.
    pub memory: MemoryReport,
}

impl std::fmt::Display for TrainingSetReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "training set: {} rows in {:.2} s -> {}",
            crate::summary::thousands(self.rows as u64),
            self.elapsed.as_secs_f64(),
            self.out.display()
        )?;
        for view in &self.views {
            let mut partitions = if view.partitions > 1 {
                format!(" in {} key partitions", view.partitions)
            } else {
                String::new()
            };
            if view.sliced_partitions > 0 {
                partitions += &format!(
                    " ({} hot, in {} time slices)",
                    view.sliced_partitions,
                    crate::summary::thousands(view.slices as u64)
                );
            }
            writeln!(
                f,
                "  {}@{}: {} events{partitions}, features {}",
                view.view,
                view.version,
                crate::summary::thousands(view.events as u64),
                view.columns.join(", ")
            )?;
        }
        crate::summary::write_memory(f, &self.memory)?;
        if self.memory.over_limit().is_some() {
            if let Some(largest) = self.views.iter().max_by_key(|v| v.largest_evaluated_rows) {
                writeln!(
                    f,
                    "  ({}'s largest key partition or time slice evaluated at once held {} events \
                     and spine rows)",
                    largest.view,
                    crate::summary::thousands(largest.largest_evaluated_rows as u64)
                )?;
            }
        }
        Ok(())
    }
}

/// Builds a point-in-time training set from the store `registry`.
pub async fn training_set(
    registry: &Registry,
    options: TrainingSetOptions,
) -> Result<TrainingSetReport, JobError> {
    let started = Instant::now();
    let spine = ParquetBatches::open(&options.spine, "the spine", Some(&[]))?;
    let spine_schema = Arc::clone(spine.schema());
    let spine_rows = spine.rows();
    drop(spine);
    let time_column = spine_time_column(&spine_schema, options.time_column.as_deref())?;
    let compute = BatchCompute::open(options.device, DEFAULT_GPU_MIN_ROWS)?;
    // First every view compiled and its features checked, so a typo fails before any work.
    let mut plans = Vec::new();
    for request in &options.features {
        let definition = registry.definition(&request.view, request.version.as_deref())?;
        let view = compile_registered(registry, &definition).await?;
        if let Some(key) = (view.key_names().iter()).find(|k| spine_schema.index_of(k).is_err()) {
            return Err(probes::missing_spine_key(&view, key, &spine_schema));
        }
        let available = view.point_in_time_features();
        let wanted: Vec<String> = match &request.features {
            None => available.clone(),
            Some(names) => {
                for name in names {
                    if !available.contains(name) {
                        return Err(unknown_feature(&view, &definition, name, &available));
                    }
                }
                names.clone()
            }
        };
        plans.push((definition, view, wanted));
    }
    // A feature keeps its name unless the spine or another view has it: then `<view>__<name>`.
    let mut out_names: Vec<String> = spine_schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let spine_names = out_names.clone();
    let clashes = |name: &String| {
        spine_names.contains(name)
            || plans
                .iter()
                .filter(|(_, _, wanted)| wanted.contains(name))
                .count()
                > 1
    };
    let mut named = Vec::new();
    for (definition, _, wanted) in &plans {
        let mut names = Vec::new();
        for name in wanted {
            let out_name = if clashes(name) {
                format!("{}__{name}", definition.view)
            } else {
                name.clone()
            };
            if out_names.contains(&out_name) {
                return Err(JobError::Other(format!(
                    "two output columns would be named `{out_name}`; rename the spine column"
                )));
            }
            out_names.push(out_name.clone());
            names.push(out_name);
        }
        named.push(names);
    }
    // Measured once the views are compiled, before their events are read, and a limit too
    // small for it refused before any work. What the rest (reading, spilling, assembling,
    // writing) takes is small and bounded.
    let (memory, budget) = JobMemory::start(options.memory_limit, options.data_budget)
        .map_err(|e| JobError::Other(e.to_string()))?;
    // Spill files go beside the output (not to a temporary directory that may be in memory).
    let scratch = ScratchDir::beside(&options.out);
    // The output's writer holds a row group: small enough to take an eighth of the budget,
    // and the partitions share the rest.
    let out_row_bytes = output::row_bytes(&spine_schema, out_names.len() - spine_names.len());
    let group_rows = (budget / 8 / out_row_bytes).clamp(4096, output::ROW_GROUP_ROWS);
    let mut inputs = partitioned::Inputs {
        spine: &options.spine,
        time_column: &time_column,
        as_known_at: options.as_known_at,
        budget: budget.saturating_sub(group_rows * out_row_bytes),
        scratch: scratch.path(),
        progress: options.progress,
        threads: crate::batch_compute::cores(),
    };
    let mut views = Vec::new();
    let mut evaluated = Vec::new();
    for ((definition, view, wanted), names) in plans.iter().zip(&named) {
        let log = EventLogReader::open(registry, definition, view.stream_columns_read(), false)?;
        let features =
            partitioned::evaluate_view(view, log, wanted, names, &inputs, &compute).await?;
        if !features.results.in_files_now() {
            // Held until the assembly: the views after it have that much less.
            let held = partitioned::held_results_bytes(spine_rows, names.len());
            inputs.budget = inputs.budget.saturating_sub(held);
        }
        views.push(ViewReport {
            view: definition.view.clone(),
            version: definition.version.clone(),
            events: features.events,
            partitions: features.partitions,
            sliced_partitions: features.sliced_partitions,
            slices: features.slices,
            largest_evaluated_rows: features.largest_evaluated_rows,
            columns: names.clone(),
        });
        evaluated.push(features);
    }
    // The spine again, batch by batch, with every view's features beside it.
    let fields = (spine_schema.fields().iter())
        .chain(evaluated.iter().flat_map(|f| f.results.schema().fields()))
        .cloned()
        .collect::<Vec<_>>();
    let schema = Arc::new(Schema::new(fields));
    let mut assembly = assembly::Assembly::new(evaluated)?;
    let mut writer = output::TrainingSetWriter::create(
        &options.out,
        Arc::clone(&schema),
        options.encryption_key.as_deref(),
        group_rows,
    )?;
    let bar = events_bar(Some(spine_rows as u64), options.progress, "training set");
    bar.set_message("writing");
    for batch in ParquetBatches::open(&options.spine, "the spine", None)? {
        let batch = batch?;
        let mut columns = batch.columns().to_vec();
        columns.extend(assembly.next(batch.num_rows())?);
        let batch = RecordBatch::try_new(Arc::clone(&schema), columns)
            .map_err(|e| JobError::Other(format!("assembling the training set: {e}")))?;
        writer.write(&batch)?;
        bar.inc(batch.num_rows() as u64);
    }
    writer.finish()?;
    bar.finish_and_clear();
    // The peak is read once everything the export held is let go of, spill files removed.
    drop((assembly, scratch, compute, plans));
    Ok(TrainingSetReport {
        rows: spine_rows,
        views,
        out: options.out,
        elapsed: started.elapsed(),
        memory: memory.report(),
    })
}

fn unknown_feature(
    view: &FeatureView,
    definition: &ViewDefinition,
    name: &str,
    available: &[String],
) -> JobError {
    let list = available.join(", ");
    let is_event_column = view
        .output_schema()
        .fields()
        .iter()
        .any(|f| f.name() == name);
    if is_event_column {
        JobError::Other(format!(
            "`{name}` of view `{}` is not a window feature (it reads the event's own columns), so it has no value as of a spine time; features of the view: {list}",
            definition.view
        ))
    } else {
        JobError::Other(format!(
            "view `{}@{}` has no feature `{name}`; its features: {list}",
            definition.view, definition.version
        ))
    }
}

/// The spine's time column: the named one, or its only timestamp column.
fn spine_time_column(schema: &Schema, named: Option<&str>) -> Result<String, JobError> {
    if let Some(name) = named {
        let field = schema.field_with_name(name).map_err(|_| {
            JobError::Other(format!(
                "the spine has no column `{name}`; its columns: {}",
                column_names(schema)
            ))
        })?;
        return match field.data_type() {
            DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => Ok(name.into()),
            other => Err(JobError::Other(format!(
                "spine column `{name}` is {other}, not a timestamp"
            ))),
        };
    }
    let timestamps: Vec<&str> = schema
        .fields()
        .iter()
        .filter(|f| matches!(f.data_type(), DataType::Timestamp(_, _)))
        .map(|f| f.name().as_str())
        .collect();
    match timestamps.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(JobError::Other(format!(
            "the spine has no timestamp column; its columns: {} (name one with --time-column)",
            column_names(schema)
        ))),
        many => Err(JobError::Other(format!(
            "the spine has several timestamp columns ({}); name the one features are taken as of with --time-column",
            many.join(", ")
        ))),
    }
}

fn column_names(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The row-local part of `view` and its kernel inputs over stream batches `events`.
pub(crate) async fn prepare_events(
    view: &FeatureView,
    events: &[RecordBatch],
) -> Result<Vec<ViewInputs>, JobError> {
    let mut prepared = Vec::with_capacity(events.len());
    for batch in events {
        prepared.push(
            view.prepare(batch.clone())
                .await
                .map_err(|e| JobError::in_view(view.name(), e))?,
        );
    }
    Ok(prepared)
}

/// The point-in-time features of `view` at every row of `spine` (keys) at `times`, all in
/// memory: the view's events (`prepared` by [`prepare_events`]) and the spine rows as
/// probes, evaluated together. With `available` (when each event became visible, in row order),
/// only events available at each spine time count (`--as-known-at`).
pub(crate) fn point_in_time(
    view: &FeatureView,
    prepared: &[ViewInputs],
    available: Option<&[i64]>,
    spine: &RecordBatch,
    times: &arrow::array::TimestampMicrosecondArray,
    compute: &BatchCompute,
) -> Result<RecordBatch, JobError> {
    let probes = EncodedProbes::encode(view, spine, times)?;
    let rows = spine.num_rows();
    let keys: Vec<&[u8]> = (0..rows).map(|r| probes.key(r)).collect();
    let times: Vec<i64> = (0..rows).map(|r| probes.time(r)).collect();
    let events = EventRows::from_prepared(view, prepared);
    let windows = probe_windows(view, events, available, &keys, &times, compute)?;
    probe_features(view, windows, rows, null_times(&probes.times).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_feature_lists() {
        let r =
            parse_feature_list("card_features:a, card_features:b,merchant_features@v1:*").unwrap();
        assert_eq!(
            r,
            vec![
                FeatureRequest {
                    view: "card_features".into(),
                    version: None,
                    features: Some(vec!["a".into(), "b".into()]),
                },
                FeatureRequest {
                    view: "merchant_features".into(),
                    version: Some("v1".into()),
                    features: None,
                },
            ]
        );
        assert!(parse_feature_list("card_features").is_err());
        assert!(parse_feature_list("").is_err());
        assert!(parse_feature_list("a@1:x,a@2:y").is_err());
    }

    #[test]
    fn parses_hex_keys_without_echoing_them() {
        assert_eq!(
            parse_encryption_key("000102030405060708090a0b0c0d0e0f").unwrap(),
            (0u8..16).collect::<Vec<_>>()
        );
        let err = parse_encryption_key("secret-passphrase")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secret"), "{err}");
        assert!(parse_encryption_key(&"zz".repeat(16)).is_err());
    }
}
