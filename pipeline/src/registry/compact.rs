//! `quiver compact`: merges the small files store runs leave (one per table and epoch) into
//! files of about `target_rows` rows, vacuums files removed longer ago than a retention, and
//! deletes what no version refers to (an apply killed between moving a version's table or
//! event log into place and registering it), once it is older than the retention.
//!
//! A merge writes the new file first, then one Delta commit removes the merged files and adds
//! it (`dataChange: false`: readers see the same rows before and after, never both or neither),
//! so a crash leaves at most an unreferenced file. Files stay on disk after they are removed
//! from the table until the retention has passed, so readers of older table versions and
//! in-flight queries keep working; `--retention 0s` deletes them at once.

use crate::error::JobError;
use crate::parquet_file::read_store_file;
use crate::registry::event_log::{event_log_dir, LOG_AVAILABLE};
use crate::registry::Registry;
use quiver_store::{delta, StoreDir};

/// What compaction did to one table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TableCompaction {
    /// The table's directory (a path or URL).
    pub table: String,
    /// Active files before and after.
    pub files: (usize, usize),
    /// Rows merged into new files.
    pub rows_merged: u64,
    /// Files deleted by the vacuum.
    pub vacuumed: usize,
}

impl std::fmt::Display for TableCompaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} -> {} files ({} rows merged), {} old files vacuumed",
            self.table,
            self.files.0,
            self.files.1,
            crate::summary::thousands(self.rows_merged),
            self.vacuumed
        )
    }
}

fn other(e: impl std::fmt::Display) -> JobError {
    JobError::Other(e.to_string())
}

/// Compacts and vacuums the latest version tables of `view` (or of every view) and their event
/// logs.
pub fn compact(
    registry: &Registry,
    view: Option<&str>,
    target_rows: u64,
    retention: std::time::Duration,
) -> Result<Vec<TableCompaction>, JobError> {
    let views = match view {
        Some(v) => vec![v.to_string()],
        None => registry.views()?,
    };
    let mut tables: Vec<StoreDir> = Vec::new();
    for name in views {
        if registry.latest(&name)?.is_none() && view.is_none() {
            continue;
        }
        let definition = registry.definition(&name, None)?;
        let mut own = vec![registry.data_dir(&definition.view, &definition.version)];
        if !definition.events.is_empty() {
            own.push(event_log_dir(registry, &definition));
        }
        for table in own {
            if !tables.contains(&table) {
                tables.push(table);
            }
        }
    }
    tables
        .iter()
        .map(|t| compact_table(t, target_rows.max(1), retention))
        .collect()
}

/// An event-log batch with its availability column filled in from the time its file was
/// committed (`added_ms`), which a merged file would otherwise lose; other batches unchanged.
fn with_availability(
    batch: arrow::record_batch::RecordBatch,
    added_ms: Option<i64>,
) -> Result<arrow::record_batch::RecordBatch, JobError> {
    use arrow::array::{Array, AsArray, Int64Array};
    let Ok(index) = batch.schema().index_of(LOG_AVAILABLE) else {
        return Ok(batch);
    };
    let column = batch.column(index);
    if column.null_count() == 0 {
        return Ok(batch);
    }
    let added = added_ms.map(|ms| ms * 1000);
    let filled: Int64Array = arrow::compute::cast(column, &arrow::datatypes::DataType::Int64)
        .map_err(other)?
        .as_primitive::<arrow::datatypes::Int64Type>()
        .iter()
        .map(|a| a.or(added))
        .collect();
    let mut columns = batch.columns().to_vec();
    columns[index] = std::sync::Arc::new(filled);
    arrow::record_batch::RecordBatch::try_new(batch.schema(), columns).map_err(other)
}

/// Merges runs of consecutive small files of `table` and deletes files removed more than
/// `retention` ago.
pub fn compact_table(
    table: &StoreDir,
    target_rows: u64,
    retention: std::time::Duration,
) -> Result<TableCompaction, JobError> {
    let active = delta::active_files(table).map_err(other)?;
    let before = active.len();
    // Consecutive files grouped up to the target; groups of one file stay as they are.
    let mut groups: Vec<Vec<&delta::ActiveFile>> = Vec::new();
    let mut current: Vec<&delta::ActiveFile> = Vec::new();
    let mut rows = 0;
    for file in &active {
        if !current.is_empty() && rows + file.rows > target_rows {
            groups.push(std::mem::take(&mut current));
            rows = 0;
        }
        rows += file.rows;
        current.push(file);
    }
    groups.push(current);
    let stamp = crate::clock::now_micros();
    let mut removes = Vec::new();
    let mut adds = Vec::new();
    let mut rows_merged = 0;
    for (n, group) in groups.iter().filter(|g| g.len() > 1).enumerate() {
        let mut batches = Vec::new();
        for file in group {
            let (_, b) = read_store_file(table, &file.path, "a table file")?;
            for batch in b {
                batches.push(with_availability(batch, file.added_ms)?);
            }
        }
        let expected: u64 = group.iter().map(|f| f.rows).sum();
        let name = format!("part-compact-{stamp:x}-{n:06}.parquet");
        // Written in place on a local disk; on an object store, locally first, then uploaded.
        let (path, scratch) = match table.local_path() {
            Some(dir) => (dir.join(&name), None),
            None => {
                let scratch =
                    crate::spill::ScratchDir::beside(&std::env::temp_dir().join("quiver-compact"));
                std::fs::create_dir_all(scratch.path()).map_err(other)?;
                (scratch.path().join(&name), Some(scratch))
            }
        };
        let written =
            quiver_connectors::write_file(quiver_connectors::FileFormat::Parquet, &path, &batches)
                .map_err(other)?;
        if written != expected {
            let _ = std::fs::remove_file(&path);
            return Err(JobError::Other(format!(
                "compacting `{table}`: {written} rows written for {expected} read; nothing committed"
            )));
        }
        let size = std::fs::metadata(&path).map_err(other)?.len();
        if scratch.is_some() {
            table.put_file(&path, &name).map_err(other)?;
        }
        adds.push(delta::AddFile {
            path: name,
            size,
            rows: written,
        });
        removes.extend(group.iter().map(|f| f.path.clone()));
        rows_merged += written;
    }
    if !adds.is_empty() {
        let commit = delta::Commit {
            files: adds,
            info: serde_json::Map::from_iter([(
                "quiver".to_string(),
                serde_json::json!({"operation": "compact", "rows": rows_merged}),
            )]),
            transaction: None,
            removes,
        };
        delta::commit(table, &arrow::datatypes::Schema::empty(), &commit).map_err(other)?;
    }
    let now_ms = crate::clock::now_ms() as i64;
    let cutoff_ms = now_ms - retention.as_millis() as i64;
    let mut vacuumed = 0;
    for path in delta::removed_before(table, cutoff_ms).map_err(other)? {
        if table.remove(&path).map_err(other)? {
            vacuumed += 1;
        }
    }
    let after = delta::active_files(table).map_err(other)?.len();
    Ok(TableCompaction {
        table: table.to_string(),
        files: (before, after),
        rows_merged,
        vacuumed,
    })
}

/// What no registered version refers to, among the store's version tables and event logs,
/// last changed longer ago than `retention`: deleted, and returned. (An apply in progress moves
/// its directories into place just before it registers them, so young ones are left alone.)
pub fn remove_unreferenced(
    registry: &Registry,
    retention: std::time::Duration,
) -> Result<Vec<String>, JobError> {
    let mut referenced: Vec<StoreDir> = Vec::new();
    for view in registry.views()? {
        for definition in registry.versions(&view)? {
            referenced.push(registry.data_dir(&definition.view, &definition.version));
            if !definition.events.is_empty() {
                referenced.push(event_log_dir(registry, &definition));
            }
        }
    }
    // Two levels under each root: offline/<view>/<version>, events/<stream>/<id>.
    let mut candidates = Vec::new();
    for top in ["offline", "events"] {
        for group in subdirectories(&registry.root().join(top))? {
            candidates.extend(subdirectories(&group)?);
        }
    }
    let now = std::time::SystemTime::now();
    let mut removed = Vec::new();
    for dir in candidates {
        if referenced.contains(&dir) {
            continue;
        }
        let Some(modified) = dir.last_modified().map_err(other)? else {
            continue;
        };
        if now.duration_since(modified).unwrap_or_default() < retention {
            continue;
        }
        dir.remove_all().map_err(other)?;
        removed.push(dir.to_string());
    }
    Ok(removed)
}

/// The directories directly under `dir` (none if it does not exist), sorted.
fn subdirectories(dir: &StoreDir) -> Result<Vec<StoreDir>, JobError> {
    Ok(dir
        .list()
        .map_err(other)?
        .into_iter()
        .filter(|e| e.is_dir)
        .map(|e| dir.join(&e.name))
        .collect())
}
