//! A registered version over its event log: the view recompiled from its registered SQL, and
//! the transformed events its backfill read (what training sets and lineage recompute from).

use crate::backfill::{EVENT_LOG_FILE, EVENT_LOG_PARTITIONS};
use crate::error::JobError;
use crate::parquet_file::{parquet_file_schema, read_parquet_columns, read_parquet_file};
use crate::registry::{Registry, ViewDefinition};
use arrow::array::RecordBatch;
use quiver_sql::{FeatureView, StreamSchema};
use std::path::PathBuf;

/// Where the event log of a registered version is.
pub fn event_log_file(registry: &Registry, definition: &ViewDefinition) -> PathBuf {
    registry.events_dir(&definition.events).join(EVENT_LOG_FILE)
}

fn label(definition: &ViewDefinition) -> String {
    format!("{}@{}", definition.view, definition.version)
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
    let streams = [StreamSchema {
        name: definition.stream.clone(),
        schema: parquet_file_schema(
            &event_log_file(registry, definition),
            &format!("the event log of {label}"),
        )?,
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

/// The event log's batches, decoding only `columns` (indices into its schema; the others are
/// NULL) when given.
pub fn read_event_log(
    registry: &Registry,
    definition: &ViewDefinition,
    columns: Option<Vec<usize>>,
) -> Result<Vec<RecordBatch>, JobError> {
    let file = event_log_file(registry, definition);
    let what = format!("the event log of {}", label(definition));
    match columns {
        Some(columns) => read_parquet_columns(&file, &what, &columns),
        None => Ok(read_parquet_file(&file, &what)?.1),
    }
}

/// The names of the event log's source partitions (what its partition column indexes).
pub fn event_log_partitions(
    registry: &Registry,
    definition: &ViewDefinition,
) -> Result<Vec<String>, JobError> {
    let path = registry
        .events_dir(&definition.events)
        .join(EVENT_LOG_PARTITIONS);
    let text = std::fs::read(&path)
        .map_err(|e| JobError::Other(format!("cannot read `{}`: {e}", path.display())))?;
    serde_json::from_slice(&text)
        .map_err(|e| JobError::Other(format!("`{}` is not a list of names: {e}", path.display())))
}
