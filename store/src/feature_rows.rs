//! Per-event feature rows as Parquet files, `<dir>/<view>/part-<run>-<epoch>-<n>.parquet`,
//! staged per epoch and published when the epoch's checkpoint commits.

use crate::column_layout::lay_out_columns;
use crate::error::StoreError;
use crate::sink::{sync_dir, Sink, StagedFile};
use crate::INTERNAL_COLUMN_PREFIX;
use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Writes one view's feature rows for the checkpointed runtime.
///
/// Rows of epoch `e` go to `<staging>/<view>/part-<run>-<e>-<n>.parquet`; at the epoch's
/// barrier [`Sink::prepare_commit`] closes and syncs them and names their committed place,
/// `<root>/<view>/` under the same file name. Readers of `<root>/<view>/*.parquet` therefore
/// never see an epoch that is not committed, nor a half-written file.
pub struct FeatureRowWriter {
    view: String,
    dir: PathBuf,
    staging: PathBuf,
    run: String,
    epoch: u64,
    schema: SchemaRef,
    keep: Vec<usize>,
    /// Whether the availability column is appended to every batch.
    availability: bool,
    rows_per_file: usize,
    /// Rows per Parquet row group (the writer holds one in memory).
    row_group_rows: usize,
    current: Option<(ArrowWriter<File>, PathBuf, usize)>,
    next_file: usize,
    rows: u64,
    staged: Vec<StagedFile>,
    /// Time spent encoding, writing and syncing files.
    busy: Duration,
}

/// Whether `name` is a committed feature-row file of run `run` (`part-<run>-...`).
fn is_part_of_run(name: &str, run: &str) -> bool {
    name.strip_prefix("part-")
        .and_then(|rest| rest.strip_prefix(run))
        .is_some_and(|rest| rest.starts_with('-'))
}

/// Removes the feature-row files of every run other than `run` from `<root>/<view>/`: the
/// first commit of a new run replaces the previous run's output (until then it stays intact).
pub fn remove_other_runs(root: &Path, view: &str, run: &str) -> Result<(), StoreError> {
    let dir = root.join(view);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(StoreError::Io { path: dir, source }),
    };
    for entry in entries {
        let path = entry
            .map_err(|source| StoreError::Io {
                path: dir.clone(),
                source,
            })?
            .path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with("part-") && !is_part_of_run(name, run) {
            std::fs::remove_file(&path).map_err(|source| StoreError::Io {
                path: path.clone(),
                source,
            })?;
        }
    }
    Ok(())
}

impl FeatureRowWriter {
    /// Rows per Parquet row group unless [`FeatureRowWriter::with_row_group_rows`] says less.
    pub const ROW_GROUP_ROWS: usize = 128 * 1024;

    /// Row groups of at most `rows` rows (the writer holds one in memory): fewer under a small
    /// memory limit.
    pub fn with_row_group_rows(mut self, rows: usize) -> Self {
        self.row_group_rows = rows.clamp(1, Self::ROW_GROUP_ROWS);
        self
    }

    /// A writer for view `view` of run `run`, committing under `root/<view>/` and staging under
    /// `staging/<view>/`; the first rows written belong to epoch `first_epoch`. Nothing is
    /// removed here: the previous output stays until this run's first commit.
    pub fn new(
        root: &Path,
        staging: &Path,
        view: &str,
        schema: SchemaRef,
        rows_per_file: usize,
        run: &str,
        first_epoch: u64,
    ) -> Result<Self, StoreError> {
        let keep: Vec<usize> = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| !f.name().starts_with(INTERNAL_COLUMN_PREFIX))
            .map(|(i, _)| i)
            .collect();
        let schema = Arc::new(schema.project(&keep).map_err(|e| StoreError::Schema {
            view: view.to_string(),
            message: e.to_string(),
        })?);
        Ok(FeatureRowWriter {
            view: view.to_string(),
            dir: root.join(view),
            staging: staging.join(view),
            run: run.to_string(),
            epoch: first_epoch,
            schema,
            keep,
            availability: false,
            rows_per_file: rows_per_file.max(1),
            row_group_rows: Self::ROW_GROUP_ROWS,
            current: None,
            next_file: 0,
            rows: 0,
            staged: Vec::new(),
            busy: Duration::ZERO,
        })
    }

    /// The schema written (internal columns removed).
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Also writes the store tables' availability column ([`crate::AVAILABLE_COLUMN`]): NULL
    /// in every row written, meaning "when this file's Delta commit made it visible" (known
    /// only at commit); compaction fills it in from that commit's time.
    pub fn with_availability_column(mut self) -> Self {
        if self.schema.index_of(crate::AVAILABLE_COLUMN).is_err() {
            let mut fields: Vec<arrow::datatypes::FieldRef> =
                self.schema.fields().iter().cloned().collect();
            fields.push(Arc::new(crate::availability_field()));
            self.schema = Arc::new(Schema::new(fields));
            self.availability = true;
        }
        self
    }

    /// Counts `rows` committed by an earlier process of the same run (after a restart).
    pub fn with_rows(mut self, rows: u64) -> Self {
        self.rows = rows;
        self
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Directory of this view's files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Time spent so far encoding rows, writing and syncing files (the run summary's
    /// "written" time of a view).
    pub fn busy(&self) -> Duration {
        self.busy
    }

    /// Appends feature rows.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), StoreError> {
        self.timed(|writer| writer.write_rows(batch))
    }

    /// Runs `work` and adds the time it took to [`FeatureRowWriter::busy`]: the entry points
    /// that write (`write`, `prepare_commit`) are timed, not what they call.
    fn timed<T>(&mut self, work: impl FnOnce(&mut Self) -> T) -> T {
        let started = Instant::now();
        let done = work(self);
        self.busy += started.elapsed();
        done
    }

    /// [`FeatureRowWriter::write`], untimed.
    fn write_rows(&mut self, batch: &RecordBatch) -> Result<(), StoreError> {
        let batch = batch
            .project(&self.keep)
            .map_err(|e| self.schema_error(e))?;
        let mut columns = batch.columns().to_vec();
        if self.availability {
            columns.push(arrow::array::new_null_array(
                &DataType::Int64,
                batch.num_rows(),
            ));
        }
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns)
            .map_err(|e| self.schema_error(e))?;
        let mut offset = 0;
        while offset < batch.num_rows() {
            if self.current.is_none() {
                self.open(&batch)?;
            }
            let Some((writer, path, rows)) = self.current.as_mut() else {
                break;
            };
            let take = (self.rows_per_file - *rows).min(batch.num_rows() - offset);
            let groups = writer.flushed_row_groups().len();
            writer
                .write(&batch.slice(offset, take))
                .map_err(|e| StoreError::Parquet {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            if writer.flushed_row_groups().len() > groups {
                start_writeback(writer.inner());
            }
            *rows += take;
            offset += take;
            self.rows += take as u64;
            if *rows >= self.rows_per_file {
                self.close_current()?;
            }
        }
        Ok(())
    }

    fn schema_error(&self, e: impl ToString) -> StoreError {
        StoreError::Schema {
            view: self.view.clone(),
            message: e.to_string(),
        }
    }

    /// Starts the next file, its columns laid out for `sample` (the rows about to be written).
    fn open(&mut self, sample: &RecordBatch) -> Result<(), StoreError> {
        let name = format!(
            "part-{}-{:06}-{:03}.parquet",
            self.run, self.epoch, self.next_file
        );
        self.next_file += 1;
        std::fs::create_dir_all(&self.staging).map_err(|source| StoreError::Io {
            path: self.staging.clone(),
            source,
        })?;
        let path = self.staging.join(&name);
        let file = File::create(&path).map_err(|source| StoreError::Io {
            path: path.clone(),
            source,
        })?;
        // Row groups of at most 128k rows keep the writer's buffer small (it holds a whole row
        // group in memory); each column's encoding and compression suit its type and values.
        let props =
            WriterProperties::builder().set_max_row_group_row_count(Some(self.row_group_rows));
        let props = lay_out_columns(props, &self.schema, Some(sample.columns())).build();
        let writer =
            ArrowWriter::try_new(file, Arc::clone(&self.schema), Some(props)).map_err(|e| {
                StoreError::Parquet {
                    path: path.clone(),
                    message: e.to_string(),
                }
            })?;
        self.current = Some((writer, path, 0));
        Ok(())
    }

    /// Writes the footer of the current file, syncs it and records it as staged.
    fn close_current(&mut self) -> Result<(), StoreError> {
        if let Some((writer, staged, _)) = self.current.take() {
            let file = writer.into_inner().map_err(|e| StoreError::Parquet {
                path: staged.clone(),
                message: e.to_string(),
            })?;
            file.sync_all().map_err(|source| StoreError::Io {
                path: staged.clone(),
                source,
            })?;
            let committed = self.dir.join(staged.file_name().unwrap_or_default());
            self.staged.push(StagedFile { staged, committed });
        }
        Ok(())
    }
}

/// Asks the kernel to start writing `file`'s dirty pages to disk now, without waiting (Linux's
/// `sync_file_range`; nothing elsewhere): the row groups written so far are then on their way
/// while the next ones are computed, and the `fsync` that closes the file waits for the last
/// ones only. Best effort: the `fsync` still makes the file durable whatever this did.
fn start_writeback(file: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is open for the borrow's length; offset 0 with length 0 means
        // the whole file, and the flag only starts writeback.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

impl Sink for FeatureRowWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), StoreError> {
        FeatureRowWriter::write(self, batch)
    }

    fn prepare_commit(&mut self, epoch: u64) -> Result<Vec<StagedFile>, StoreError> {
        self.timed(|writer| {
            writer.close_current()?;
            if !writer.staged.is_empty() {
                sync_dir(&writer.staging)?;
            }
            Ok::<_, StoreError>(())
        })?;
        self.epoch = epoch + 1;
        self.next_file = 0;
        Ok(std::mem::take(&mut self.staged))
    }

    fn rows(&self) -> u64 {
        self.rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, UInt64Array};
    use arrow::datatypes::{DataType, Field};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    #[test]
    fn stages_per_epoch_rolls_files_and_drops_internal_columns() {
        let dir = tempfile::tempdir().unwrap();
        let (root, staging) = (dir.path().join("out"), dir.path().join("staging"));
        let schema = Arc::new(Schema::new(vec![
            Field::new("x", DataType::Int64, false),
            Field::new("__quiver_offset", DataType::UInt64, false),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from_iter_values(0..25)),
                Arc::new(UInt64Array::from_iter_values(0..25)),
            ],
        )
        .unwrap();
        // An older run's output stays until the new run commits.
        std::fs::create_dir_all(root.join("v")).unwrap();
        std::fs::write(root.join("v/part-old-000001-000.parquet"), b"old").unwrap();
        let mut w = FeatureRowWriter::new(&root, &staging, "v", schema, 10, "r1", 1).unwrap();
        assert_eq!(w.busy(), Duration::ZERO);
        w.write(&batch).unwrap();
        assert!(w.busy() > Duration::ZERO, "writing is timed");
        assert!(root.join("v/part-old-000001-000.parquet").exists());
        let files = w.prepare_commit(1).unwrap();
        assert_eq!(files.len(), 3);
        assert!(files
            .iter()
            .all(|f| f.staged.exists() && !f.committed.exists()));
        w.write(&batch.slice(0, 5)).unwrap();
        let second = w.prepare_commit(2).unwrap();
        assert_eq!(second.len(), 1);
        assert!(second[0].committed.ends_with("part-r1-000002-000.parquet"));
        assert!(w.prepare_commit(3).unwrap().is_empty(), "no rows, no file");
        w.commit(&files).unwrap();
        w.commit(&second).unwrap();
        remove_other_runs(&root, "v", "r1").unwrap();
        let mut total = 0;
        for f in files.iter().chain(&second) {
            let reader =
                ParquetRecordBatchReaderBuilder::try_new(File::open(&f.committed).unwrap())
                    .unwrap()
                    .build()
                    .unwrap();
            for b in reader {
                let b = b.unwrap();
                assert_eq!(b.num_columns(), 1);
                total += b.num_rows();
            }
        }
        assert_eq!(total, 30);
        assert_eq!(std::fs::read_dir(root.join("v")).unwrap().count(), 4);
    }

    #[test]
    fn run_prefix_matching_is_exact() {
        assert!(is_part_of_run("part-r1-000001-000.parquet", "r1"));
        assert!(!is_part_of_run("part-r10-000001-000.parquet", "r1"));
        assert!(!is_part_of_run("part-00000.parquet", "r1"));
    }
}
