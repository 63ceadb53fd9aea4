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
//! inputs are all NULL, so they are evaluated but never counted.

use crate::batch_compute::BatchCompute;
use crate::error::JobError;
use crate::parquet_file::read_parquet_file;
use crate::progress::events_bar;
use crate::registry::event_log::{compile_registered, read_event_log};
use crate::registry::{Registry, ViewDefinition};
use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit, TimestampMicrosecondType};
use parquet::arrow::ArrowWriter;
use quiver_gpu::{
    evaluate_as_known_at, Device, InputColumn, KnownEvents, Scatter, DEFAULT_GPU_MIN_ROWS,
};
use quiver_sql::{FeatureView, ViewInputs};
use std::path::{Path, PathBuf};
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
}

impl TrainingSetOptions {
    /// Features `features` for the spine at `spine`, written to `out`: the spine's only
    /// timestamp column, no progress bar, the kernels' device chosen automatically, not
    /// encrypted, every event counted (not only those available by then).
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

/// What a training set export did.
#[derive(Debug, Clone)]
pub struct TrainingSetReport {
    /// Spine rows, and so output rows.
    pub rows: usize,
    /// Per view: name, version, events read and the output columns it added.
    pub views: Vec<(String, String, usize, Vec<String>)>,
    /// Output file.
    pub out: PathBuf,
    /// Wall time.
    pub elapsed: Duration,
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
        for (view, version, events, columns) in &self.views {
            writeln!(
                f,
                "  {view}@{version}: {} events, features {}",
                crate::summary::thousands(*events as u64),
                columns.join(", ")
            )?;
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
    let spine = read_parquet(&options.spine, "the spine")?;
    let time_column = spine_time_column(&spine, options.time_column.as_deref())?;
    let times = cast(
        spine.column_by_name(&time_column).expect("checked"),
        &DataType::Timestamp(TimeUnit::Microsecond, None),
    )
    .map_err(|e| JobError::Other(format!("spine column `{time_column}`: {e}")))?;
    let compute = BatchCompute::open(options.device, DEFAULT_GPU_MIN_ROWS)?;
    let mut fields: Vec<Field> = spine
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut columns: Vec<ArrayRef> = spine.columns().to_vec();
    // First every view compiled and its features checked, so a typo fails before any work.
    let mut plans = Vec::new();
    for request in &options.features {
        let definition = registry.definition(&request.view, request.version.as_deref())?;
        let view = compile_registered(registry, &definition).await?;
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
    let spine_names: Vec<String> = fields.iter().map(|f| f.name().clone()).collect();
    let clashes = |name: &String| {
        spine_names.contains(name)
            || plans
                .iter()
                .filter(|(_, _, wanted)| wanted.contains(name))
                .count()
                > 1
    };
    let mut views = Vec::new();
    for (definition, view, wanted) in &plans {
        let logged = read_event_log(registry, definition, view.stream_columns_read(), false)?;
        let events = prepare_events(view, &logged.batches).await?;
        let features = point_in_time(
            view,
            &events,
            options.as_known_at.then_some(logged.available.as_slice()),
            &spine,
            times.as_primitive::<TimestampMicrosecondType>(),
            &compute,
            options.progress,
        )
        .await?;
        let mut added = Vec::new();
        for name in wanted {
            let column = features
                .column_by_name(name)
                .expect("a point-in-time feature");
            let out_name = if clashes(name) {
                format!("{}__{name}", definition.view)
            } else {
                name.clone()
            };
            if fields.iter().any(|f| f.name() == &out_name) {
                return Err(JobError::Other(format!(
                    "two output columns would be named `{out_name}`; rename the spine column"
                )));
            }
            fields.push(Field::new(&out_name, column.data_type().clone(), true));
            columns.push(Arc::clone(column));
            added.push(out_name);
        }
        views.push((
            definition.view.clone(),
            definition.version.clone(),
            events.iter().map(|p| p.times.len()).sum(),
            added,
        ));
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| JobError::Other(format!("assembling the training set: {e}")))?;
    write_parquet(&options.out, &batch, options.encryption_key.as_deref())?;
    Ok(TrainingSetReport {
        rows: spine.num_rows(),
        views,
        out: options.out,
        elapsed: started.elapsed(),
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
fn spine_time_column(spine: &RecordBatch, named: Option<&str>) -> Result<String, JobError> {
    let schema = spine.schema();
    if let Some(name) = named {
        let field = schema.field_with_name(name).map_err(|_| {
            JobError::Other(format!(
                "the spine has no column `{name}`; its columns: {}",
                column_names(&schema)
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
            column_names(&schema)
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
                .map_err(|e| JobError::Other(format!("view `{}`: {e}", view.name())))?,
        );
    }
    Ok(prepared)
}

/// The point-in-time features of `view` at every spine row: the view's events (`prepared`
/// by [`prepare_events`]) and the spine rows as probes, evaluated together.
/// With `available` (when each event became visible, in row order), only events available at
/// each spine time count (`--as-known-at`).
pub(crate) async fn point_in_time(
    view: &FeatureView,
    prepared: &[ViewInputs],
    available: Option<&[i64]>,
    spine: &RecordBatch,
    times: &arrow::array::TimestampMicrosecondArray,
    compute: &BatchCompute,
    progress: bool,
) -> Result<RecordBatch, JobError> {
    let fail = |e: &dyn std::fmt::Display| JobError::Other(format!("view `{}`: {e}", view.name()));
    // The spine's key columns, by the view's key names.
    let key_columns = view
        .key_names()
        .iter()
        .map(|name| {
            spine.column_by_name(name).cloned().ok_or_else(|| {
                JobError::Other(format!(
                    "the spine has no column `{name}`, the key of view `{}`; its columns: {}",
                    view.name(),
                    column_names(&spine.schema())
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let spine_keys = view.encode_keys(&key_columns).map_err(|e| fail(&e))?;
    let rows = spine.num_rows();
    // A NULL key matches no event (SQL equality) and a NULL time has no window: both get a key
    // no event has (the empty encoding), and NULL times NULL features afterwards.
    let unmatched: Vec<bool> = (0..rows)
        .map(|r| times.is_null(r) || key_columns.iter().any(|c| c.is_null(r)))
        .collect();

    let event_rows: usize = prepared.iter().map(|p| p.times.len()).sum();
    let total = event_rows + rows;
    let mut keys: Vec<&[u8]> = Vec::with_capacity(total);
    let mut all_times: Vec<i64> = Vec::with_capacity(total);
    for p in prepared {
        keys.extend((0..p.keys.num_rows()).map(|i| p.keys.row(i).data()));
        all_times.extend_from_slice(&p.times);
    }
    for (r, &unmatched) in unmatched.iter().enumerate() {
        keys.push(if unmatched {
            &[]
        } else {
            spine_keys.row(r).data()
        });
        all_times.push(if times.is_null(r) { 0 } else { times.value(r) });
    }
    // Kernel inputs: the events' values, then NULL for every probe.
    let inputs = view.window_plan().inputs();
    let mut values: Vec<Vec<f64>> = Vec::with_capacity(inputs);
    let mut validity: Vec<Option<Vec<bool>>> = Vec::with_capacity(inputs);
    let mut exact: Vec<Option<Vec<i128>>> = Vec::with_capacity(inputs);
    for i in 0..inputs {
        let is_exact = prepared.first().map_or_else(
            || view.window_plan().input_kind(i).is_exact(),
            |p| p.exact[i].is_some(),
        );
        let mut v = Vec::with_capacity(if is_exact { 0 } else { total });
        let mut ok = Vec::with_capacity(total);
        let mut e = Vec::with_capacity(if is_exact { total } else { 0 });
        for p in prepared {
            let n = p.times.len();
            if is_exact {
                e.extend_from_slice(p.exact[i].as_deref().unwrap_or(&[]));
            } else {
                v.extend_from_slice(&p.values[i]);
            }
            match &p.validity[i] {
                Some(valid) => ok.extend_from_slice(valid),
                None => ok.extend(std::iter::repeat_n(true, n)),
            }
        }
        if is_exact {
            e.resize(total, 0);
        } else {
            v.resize(total, 0.0);
        }
        ok.resize(total, false);
        values.push(v);
        validity.push(Some(ok));
        exact.push(is_exact.then_some(e));
    }
    let columns = InputColumn::all(&values, &validity, &exact);
    let probes = match available {
        Some(available) => {
            if available.len() != event_rows {
                return Err(fail(&format!(
                    "{} availability times for {event_rows} events",
                    available.len()
                )));
            }
            // The events alone (the probes are not events here): their columns' first rows.
            let event_columns: Vec<InputColumn<'_>> = columns
                .iter()
                .map(|c| InputColumn {
                    values: c.values.get(..event_rows).unwrap_or(c.values),
                    validity: c.validity.map(|v| &v[..event_rows]),
                    exact: c.exact.map(|e| &e[..event_rows]),
                })
                .collect();
            let known = KnownEvents {
                keys: &keys[..event_rows],
                times: &all_times[..event_rows],
                available,
                inputs: &event_columns,
            };
            evaluate_as_known_at(
                view.window_plan(),
                &known,
                &keys[event_rows..],
                &all_times[event_rows..],
            )
            .map_err(|e| fail(&e))?
        }
        None => {
            let bar = events_bar(Some(total as u64), progress, view.name());
            // Only the probes' windows are read: events are evaluated but not emitted.
            let emit: Vec<u32> = std::iter::repeat_n(Scatter::SKIP, event_rows)
                .chain(0..rows as u32)
                .collect();
            let probes = compute.evaluate_rows(
                view.window_plan(),
                &keys,
                &all_times,
                &columns,
                Some(&emit),
                &bar,
            )?;
            bar.finish_and_clear();
            probes
        }
    };
    let features = view.features_at(probes, rows).map_err(|e| fail(&e))?;
    if times.null_count() > 0 {
        // NULL spine times: NULL features (also the counts, which would read 0).
        let null_time = BooleanArray::from((0..rows).map(|r| times.is_null(r)).collect::<Vec<_>>());
        let columns = features
            .columns()
            .iter()
            .map(|c| arrow::compute::nullif(c, &null_time))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(&e))?;
        return RecordBatch::try_new(features.schema(), columns).map_err(|e| fail(&e));
    }
    Ok(features)
}

fn read_parquet(path: &Path, what: &str) -> Result<RecordBatch, JobError> {
    let (schema, batches) = read_parquet_file(path, what)?;
    concat_batches(&schema, &batches)
        .map_err(|e| JobError::Other(format!("cannot read {what} `{}`: {e}", path.display())))
}

/// Writes `batch` to `path` through a temporary file, so a failed export leaves no partial
/// file behind (and an earlier file at `path` stays until the new one is complete); encrypted
/// (footer and columns, AES-GCM) under `key` when one is given.
fn write_parquet(path: &Path, batch: &RecordBatch, key: Option<&[u8]>) -> Result<(), JobError> {
    let fail = |e: &dyn std::fmt::Display| {
        JobError::Other(format!("cannot write `{}`: {e}", path.display()))
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
    }
    let mut properties = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY);
    if let Some(key) = key {
        let encryption =
            parquet::encryption::encrypt::FileEncryptionProperties::builder(key.to_vec())
                .build()
                .map_err(|e| fail(&e))?;
        properties = properties.with_file_encryption_properties(encryption);
    }
    let tmp = path.with_extension("parquet.tmp");
    let result = (|| -> Result<(), JobError> {
        let file = std::fs::File::create(&tmp).map_err(|e| fail(&e))?;
        let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(properties.build()))
            .map_err(|e| fail(&e))?;
        writer.write(batch).map_err(|e| fail(&e))?;
        writer.close().map_err(|e| fail(&e))?;
        std::fs::rename(&tmp, path).map_err(|e| fail(&e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
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
