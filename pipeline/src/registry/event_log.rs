//! Event logs: the transformed events that versions are computed from, kept in the store as a
//! Delta table per apply (`events/<stream>/<id>/`), and a registered version recompiled over
//! its event log (what training sets and lineage recompute from).
//!
//! In the log, an event's source partition is its name (`_quiver_partition`, a string: logs
//! gather events of many runs, whose partition numbers differ) and its offset is a signed
//! `_quiver_offset` (Delta has no unsigned types). Reading converts them back to the hidden
//! columns the views carry (`__quiver_partition` as an index into the names read,
//! `__quiver_offset`).

use crate::error::JobError;
use crate::parquet_file::ParquetBatches;
use crate::registry::{Registry, ViewDefinition};
use arrow::array::{ArrayRef, AsArray, RecordBatch, StringArray, UInt32Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use quiver_sql::{FeatureView, StreamSchema, OFFSET_COLUMN, PARTITION_COLUMN};
use quiver_store::delta;
use quiver_store::StoreDir;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// The data file an apply writes into its event log.
pub const EVENT_LOG_FILE: &str = "events.parquet";
/// The log's column with each event's source partition name.
pub const LOG_PARTITION: &str = "_quiver_partition";
/// The log's column with each event's offset in its partition.
pub const LOG_OFFSET: &str = "_quiver_offset";
/// The log's column with when each event became available (µs since the epoch): see
/// [`quiver_store::AVAILABLE_COLUMN`].
pub const LOG_AVAILABLE: &str = quiver_store::AVAILABLE_COLUMN;

fn other(e: impl std::fmt::Display) -> JobError {
    JobError::Other(e.to_string())
}

/// `batch` of the feature stream (hidden columns included) as event-log rows, naming each
/// event's partition from `partitions` (indexed by the hidden partition column).
pub fn to_log(batch: &RecordBatch, partitions: &[String]) -> Result<RecordBatch, JobError> {
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        match field.name().as_str() {
            PARTITION_COLUMN => {
                // The index itself keys a dictionary of the names: no string per row.
                let index = cast(column, &DataType::UInt32).map_err(other)?;
                let keys: arrow::array::UInt32Array = index
                    .as_primitive::<arrow::datatypes::UInt32Type>()
                    .iter()
                    .map(|i| i.filter(|&i| (i as usize) < partitions.len()))
                    .collect();
                let names = Arc::new(StringArray::from_iter_values(partitions));
                let dictionary =
                    arrow::array::DictionaryArray::<arrow::datatypes::UInt32Type>::try_new(
                        keys, names,
                    )
                    .map_err(other)?;
                fields.push(Field::new(
                    LOG_PARTITION,
                    DataType::Dictionary(Box::new(DataType::UInt32), Box::new(DataType::Utf8)),
                    true,
                ));
                columns.push(Arc::new(dictionary));
            }
            OFFSET_COLUMN => {
                fields.push(Field::new(LOG_OFFSET, DataType::Int64, true));
                columns.push(cast(column, &DataType::Int64).map_err(other)?);
            }
            _ => {
                fields.push(field.as_ref().clone());
                columns.push(Arc::clone(column));
            }
        }
    }
    fields.push(quiver_store::availability_field());
    columns.push(arrow::array::new_null_array(
        &DataType::Int64,
        batch.num_rows(),
    ));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(other)
}

/// The schema of the feature stream for an event-log schema.
fn stream_schema(log: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        log.fields()
            .iter()
            .filter(|f| f.name() != LOG_AVAILABLE)
            .map(|f| match f.name().as_str() {
                LOG_PARTITION => Field::new(PARTITION_COLUMN, DataType::UInt32, true),
                LOG_OFFSET => Field::new(OFFSET_COLUMN, DataType::UInt64, true),
                _ => f.as_ref().clone(),
            })
            .collect::<Vec<_>>(),
    ))
}

/// Event-log rows back as the feature stream; partition names are numbered in `names`, and
/// each row's availability is appended to `available` (`file_added_us` where the log has none).
fn from_log(
    batch: &RecordBatch,
    names: &mut Vec<String>,
    available: &mut Vec<i64>,
    file_added_us: i64,
) -> Result<RecordBatch, JobError> {
    match batch.column_by_name(LOG_AVAILABLE) {
        Some(column) => {
            let column = cast(column, &DataType::Int64).map_err(other)?;
            let column = column.as_primitive::<arrow::datatypes::Int64Type>();
            available.extend(column.iter().map(|a| a.unwrap_or(file_added_us)));
        }
        None => available.extend(std::iter::repeat_n(file_added_us, batch.num_rows())),
    }
    let batch = match batch.schema().index_of(LOG_AVAILABLE) {
        Ok(i) => {
            let keep: Vec<usize> = (0..batch.num_columns()).filter(|&c| c != i).collect();
            batch.project(&keep).map_err(other)?
        }
        Err(_) => batch.clone(),
    };
    let batch = &batch;
    let mut index: HashMap<String, u32> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), i as u32))
        .collect();
    let columns = batch
        .schema()
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(field, column)| match field.name().as_str() {
            LOG_PARTITION => {
                let strings = cast(column, &DataType::Utf8).map_err(other)?;
                let numbered: UInt32Array = strings
                    .as_string::<i32>()
                    .iter()
                    .map(|name| {
                        name.map(|name| {
                            *index.entry(name.to_string()).or_insert_with(|| {
                                names.push(name.to_string());
                                names.len() as u32 - 1
                            })
                        })
                    })
                    .collect();
                Ok(Arc::new(numbered) as ArrayRef)
            }
            LOG_OFFSET => Ok(cast(column, &DataType::UInt64).map_err(other)?),
            _ => Ok(Arc::clone(column)),
        })
        .collect::<Result<Vec<_>, JobError>>()?;
    RecordBatch::try_new(stream_schema(&batch.schema()), columns).map_err(other)
}

/// The directory of a registered version's event log.
pub fn event_log_dir(registry: &Registry, definition: &ViewDefinition) -> StoreDir {
    registry.events_dir(&definition.events)
}

fn label(definition: &ViewDefinition) -> String {
    format!("{}@{}", definition.view, definition.version)
}

/// A data file of an event log.
pub struct LogFile {
    /// The log's directory.
    pub dir: StoreDir,
    /// The file's path in it.
    pub name: String,
    /// When it was committed (µs since the epoch).
    pub added_us: i64,
    /// Its rows (from the Delta log's statistics).
    pub rows: u64,
}

/// The data files of the event log at `dir`, in commit order (those its Delta log adds and
/// does not remove).
pub fn log_files(dir: &StoreDir) -> Result<Vec<LogFile>, JobError> {
    if delta::versions(dir).map_err(other)?.is_empty() {
        return Err(JobError::Other(format!(
            "`{dir}` is not an event log (no Delta log): it was written before event logs were Delta tables; apply the view again into a new store"
        )));
    }
    Ok(delta::active_files(dir)
        .map_err(other)?
        .into_iter()
        .map(|f| LogFile {
            dir: dir.clone(),
            name: f.path,
            added_us: f.added_ms.unwrap_or(i64::MAX / 1000) * 1000,
            rows: f.rows,
        })
        .collect())
}

/// The registered view compiled over the schema of its event log; an error when the version
/// has no event log or when this build compiles it to other columns.
pub async fn compile_registered(
    registry: &Registry,
    definition: &ViewDefinition,
) -> Result<FeatureView, JobError> {
    let label = label(definition);
    if definition.events.is_empty() {
        return Err(JobError::Other(format!(
            "{label} was registered before the store kept event logs; run `quiver apply` on a changed config or into a new store to register a version with one"
        )));
    }
    let files = log_files(&event_log_dir(registry, definition))?;
    let first = files
        .first()
        .ok_or_else(|| JobError::Other(format!("the event log of {label} has no files")))?;
    let what = format!("the event log of {label}");
    let schema =
        Arc::clone(ParquetBatches::open_in(&first.dir, &first.name, &what, |_| Ok(None))?.schema());
    let streams = [StreamSchema {
        name: definition.stream.clone(),
        schema: stream_schema(&schema),
    }];
    let view = FeatureView::compile(
        &definition.view,
        &format!("{label} (registered SQL)"),
        &definition.sql,
        &streams,
        &definition.event_time,
    )
    .await
    .map_err(|e| JobError::Other(format!("compiling {label}: {e}")))?;
    let columns = crate::compile::column_descriptions(&view.output_schema());
    if columns != definition.columns {
        return Err(JobError::Other(format!(
            "{label} compiles to other columns than it was registered with ({columns:?} vs {:?}); this build's SQL engine differs from the one that registered it",
            definition.columns
        )));
    }
    Ok(view)
}

/// The events of a registered version's log.
pub struct LoggedEvents {
    /// Feature-stream batches.
    pub batches: Vec<RecordBatch>,
    /// Names of the source partitions the partition column indexes.
    pub partitions: Vec<String>,
    /// When each event became available (µs since the epoch), in row order over the batches.
    pub available: Vec<i64>,
}

/// The events of a registered version's log as feature-stream batches, decoding only
/// `columns` (indices into the stream's schema; the others are NULL) when given, and with
/// `lineage` the source partition and offset columns too.
pub fn read_event_log(
    registry: &Registry,
    definition: &ViewDefinition,
    columns: Option<Vec<usize>>,
    lineage: bool,
) -> Result<LoggedEvents, JobError> {
    let mut reader = EventLogReader::open(registry, definition, columns, lineage)?;
    let mut logged = LoggedEvents {
        batches: Vec::new(),
        partitions: Vec::new(),
        available: Vec::new(),
    };
    while let Some(batch) = reader.next_batch(&mut logged.available)? {
        logged.batches.push(batch);
    }
    logged.partitions = reader.partitions;
    Ok(logged)
}

/// Reads a registered version's event log batch by batch (bounded memory), as
/// [`read_event_log`] does whole.
pub struct EventLogReader {
    files: std::vec::IntoIter<LogFile>,
    current: Option<(ParquetBatches, i64)>,
    columns: Option<Vec<usize>>,
    lineage: bool,
    what: String,
    /// Rows of the log (from its Delta log's statistics).
    pub rows: u64,
    /// Names of the source partitions the partition column of the batches read so far indexes.
    pub partitions: Vec<String>,
}

impl EventLogReader {
    /// A reader of the log of `definition` (see [`read_event_log`] for `columns` and
    /// `lineage`).
    pub fn open(
        registry: &Registry,
        definition: &ViewDefinition,
        columns: Option<Vec<usize>>,
        lineage: bool,
    ) -> Result<Self, JobError> {
        let files = log_files(&event_log_dir(registry, definition))?;
        let rows = files.iter().map(|f| f.rows).sum();
        Ok(EventLogReader {
            files: files.into_iter(),
            current: None,
            columns,
            lineage,
            what: format!("the event log of {}", label(definition)),
            rows,
            partitions: Vec::new(),
        })
    }

    /// The next feature-stream batch, appending each row's availability (µs since the epoch)
    /// to `available`; `None` at the end of the log.
    pub fn next_batch(
        &mut self,
        available: &mut Vec<i64>,
    ) -> Result<Option<RecordBatch>, JobError> {
        loop {
            if let Some((batches, added_us)) = &mut self.current {
                if let Some(batch) = batches.next() {
                    let batch = from_log(&batch?, &mut self.partitions, available, *added_us)?;
                    return Ok(Some(batch));
                }
            }
            let Some(file) = self.files.next() else {
                return Ok(None);
            };
            // The stream's column indices are the log's (the availability column comes last).
            let (columns, lineage) = (&self.columns, self.lineage);
            let batches = ParquetBatches::open_in(&file.dir, &file.name, &self.what, |schema| {
                let Some(columns) = columns else {
                    return Ok(None);
                };
                let mut columns = columns.clone();
                let lineage_columns: &[&str] = if lineage {
                    &[LOG_PARTITION, LOG_OFFSET]
                } else {
                    &[]
                };
                for name in lineage_columns.iter().chain([&LOG_AVAILABLE]) {
                    if let Ok(i) = schema.index_of(name) {
                        columns.push(i);
                    }
                }
                columns.sort_unstable();
                columns.dedup();
                Ok(Some(columns))
            })?;
            self.current = Some((batches, file.added_us));
        }
    }
}

/// Writes feature-stream batches `events` (of `schema`) as the event log of an apply into
/// `dir` (data file and a first Delta commit carrying `info`), batch by batch.
pub fn write_event_log(
    dir: &Path,
    schema: &SchemaRef,
    events: impl Iterator<Item = Result<RecordBatch, JobError>>,
    partitions: &[String],
    info: serde_json::Value,
) -> Result<(), JobError> {
    let fail = |e: &dyn std::fmt::Display| {
        JobError::Other(format!(
            "cannot write the event log `{}`: {e}",
            dir.display()
        ))
    };
    let log_schema = to_log(&RecordBatch::new_empty(Arc::clone(schema)), partitions)?.schema();
    let path = dir.join(EVENT_LOG_FILE);
    // An empty batch first gives the file its schema however many events follow; the first
    // error ends the writing and is returned.
    let mut failed = None;
    let logs = std::iter::once(Ok(RecordBatch::new_empty(Arc::clone(&log_schema))))
        .chain(events.map(|batch| batch.and_then(|b| to_log(&b, partitions))))
        .map_while(|log| log.map_err(|e| failed = Some(e)).ok());
    let rows =
        quiver_connectors::write_batches(quiver_connectors::FileFormat::Parquet, &path, logs)
            .map_err(|e| fail(&e))?;
    if let Some(e) = failed {
        return Err(e);
    }
    let size = std::fs::metadata(&path).map_err(|e| fail(&e))?.len();
    let commit = delta::Commit {
        files: vec![delta::AddFile {
            path: EVENT_LOG_FILE.to_string(),
            size,
            rows,
        }],
        info: serde_json::Map::from_iter([("quiver".to_string(), info)]),
        transaction: None,
        removes: Vec::new(),
    };
    delta::commit(&StoreDir::local(dir), &log_schema, &commit).map_err(|e| fail(&e))?;
    Ok(())
}
