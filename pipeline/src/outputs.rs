//! The outputs of a job: feature rows per view and the dead-letter file, both staged per epoch
//! under `<output>/_staging/` and published when the epoch's checkpoint commits.

use crate::checkpoint::state::DeadLetterCommit;
use crate::compile::CompiledPipeline;
use crate::error::JobError;
use quiver_connectors::{DeadLetter, DeadLetterReason, DeadLetterWriter};
use quiver_store::FeatureRowWriter;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where a job's outputs and checkpoints live.
#[derive(Debug, Clone)]
pub struct OutputPaths {
    /// Feature-row root: `<root>/<view>/part-*.parquet`.
    pub root: PathBuf,
    /// Staging area for uncommitted epochs (same file system as `root`, for atomic renames).
    pub staging: PathBuf,
    /// The dead-letter file.
    pub dead_letters: PathBuf,
    /// Checkpoint directory.
    pub checkpoints: PathBuf,
    /// The feature store a store run commits into, when it is on an object store (the
    /// tables' and files' paths of its commits are then relative to it).
    pub object_store: Option<quiver_store::StoreDir>,
}

impl OutputPaths {
    /// The paths of `pipeline`, under `dir` if given (else the config's output path).
    pub fn of(pipeline: &CompiledPipeline, dir: Option<PathBuf>) -> Self {
        Self::of_config(&pipeline.loaded, dir)
    }

    /// [`OutputPaths::of`] a config, before it is compiled.
    pub fn of_config(loaded: &crate::config::LoadedConfig, dir: Option<PathBuf>) -> Self {
        let root = dir.unwrap_or_else(|| loaded.output_dir());
        let dead_letters = loaded
            .config
            .output
            .dead_letter
            .clone()
            .unwrap_or_else(|| root.join("dead_letter.ndjson"));
        let checkpoints = loaded
            .config
            .checkpoint
            .dir
            .clone()
            .unwrap_or_else(|| root.join("_checkpoints"));
        OutputPaths {
            object_store: None,
            staging: root.join("_staging"),
            root,
            dead_letters,
            checkpoints,
        }
    }

    /// The paths of one shard of the job (`quiver run --shard`): everything under
    /// `<root>/shard-I-of-N/`; a configured dead-letter file or checkpoint directory elsewhere
    /// gets the shard's directory inserted before its name.
    pub fn sharded(self, shard: quiver_sql::KeyShard) -> Self {
        let dir = shard.dir_name();
        let root = self.root.join(&dir);
        let moved = |path: PathBuf| match path.strip_prefix(&self.root) {
            Ok(rest) => root.join(rest),
            Err(_) => match (path.parent(), path.file_name()) {
                (Some(parent), Some(name)) => parent.join(&dir).join(name),
                _ => path.join(&dir),
            },
        };
        let checkpoints = match self.checkpoints.strip_prefix(&self.root) {
            Ok(rest) => root.join(rest),
            Err(_) => self.checkpoints.join(&dir),
        };
        OutputPaths {
            staging: moved(self.staging.clone()),
            dead_letters: moved(self.dead_letters.clone()),
            checkpoints,
            object_store: self.object_store.clone(),
            root,
        }
    }

    /// Removes everything staged: called at start-up, after the latest committed epoch was
    /// published, so what is left belongs to epochs that never committed.
    pub fn clear_staging(&self) -> Result<(), JobError> {
        match std::fs::remove_dir_all(&self.staging) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(JobError::Other(format!(
                "cannot clear the staging directory `{}`: {e}",
                self.staging.display()
            ))),
        }
    }
}

/// The dead letters of the epoch in progress, with the run's totals, and in a store run the
/// accepted events for the store's event logs.
pub struct Outputs {
    paths: OutputPaths,
    epoch: u64,
    current: DeadLetterWriter,
    committed_len: u64,
    counts: BTreeMap<String, u64>,
    /// A store run's event logs (directory, writer) and the source's partition names.
    event_logs: Vec<(PathBuf, FeatureRowWriter)>,
    partitions: Vec<String>,
}

impl Outputs {
    /// Outputs starting at epoch `epoch`, with the dead-letter file committed up to
    /// `committed_len` bytes and `counts` dead letters so far (both 0 for a fresh run).
    pub fn new(
        paths: OutputPaths,
        epoch: u64,
        committed_len: u64,
        counts: BTreeMap<String, u64>,
    ) -> Self {
        let current = DeadLetterWriter::new(staged_dead_letters(&paths.staging, epoch));
        Outputs {
            paths,
            epoch,
            current,
            committed_len,
            counts,
            event_logs: Vec::new(),
            partitions: Vec::new(),
        }
    }

    /// Also appends the accepted events of every epoch to the event logs `logs` (Delta tables
    /// of the store) for run `run`; `partitions` names the source's partitions.
    pub fn with_event_logs(
        mut self,
        pipeline: &CompiledPipeline,
        logs: &[PathBuf],
        partitions: Vec<String>,
        run: &str,
    ) -> Result<Self, JobError> {
        let empty =
            arrow::record_batch::RecordBatch::new_empty(pipeline.feature_stream_schema.clone());
        let schema = crate::registry::event_log::to_log(&empty, &partitions)?.schema();
        for log in logs {
            let writer = self.table_writer(
                log,
                "events",
                schema.clone(),
                pipeline.loaded.config.output.rows_per_file,
                run,
            )?;
            self.event_logs.push((log.clone(), writer));
        }
        self.partitions = partitions;
        Ok(self)
    }

    /// A writer of run `run` into the Delta table at `table`, staging under `<staging>/<kind>`.
    fn table_writer(
        &self,
        table: &Path,
        kind: &str,
        schema: arrow::datatypes::SchemaRef,
        rows_per_file: usize,
        run: &str,
    ) -> Result<FeatureRowWriter, JobError> {
        let (Some(root), Some(name)) = (table.parent(), table.file_name()) else {
            return Err(JobError::Other(format!(
                "`{}` is not a table directory",
                table.display()
            )));
        };
        Ok(FeatureRowWriter::new(
            root,
            &self.paths.staging.join(kind),
            &name.to_string_lossy(),
            schema,
            rows_per_file,
            run,
            self.epoch,
        )?)
    }

    /// Appends accepted events (feature-stream rows) to the event logs, if any.
    pub fn write_events(
        &mut self,
        batch: &arrow::record_batch::RecordBatch,
    ) -> Result<(), JobError> {
        if self.event_logs.is_empty() || batch.num_rows() == 0 {
            return Ok(());
        }
        let log = crate::registry::event_log::to_log(batch, &self.partitions)?;
        for (_, writer) in &mut self.event_logs {
            quiver_store::Sink::write(writer, &log)?;
        }
        Ok(())
    }

    /// Makes the epoch's events durable under staging names; per event log, the files to
    /// publish and commit when epoch `epoch` commits.
    pub fn stage_events(
        &mut self,
        epoch: u64,
    ) -> Result<Vec<(PathBuf, Vec<quiver_store::StagedFile>)>, JobError> {
        let mut out = Vec::new();
        for (log, writer) in &mut self.event_logs {
            out.push((
                log.clone(),
                quiver_store::Sink::prepare_commit(writer, epoch)?,
            ));
        }
        Ok(out)
    }

    /// The paths.
    pub fn paths(&self) -> &OutputPaths {
        &self.paths
    }

    /// One feature-row writer per view of `pipeline`, in view order, for run `run`; `rows`
    /// are the rows each view committed earlier in the run (after a restart). Rows go under
    /// the output directory, or for a store run into each view's Delta table (`tables`); the
    /// views whose `availability` is true also write the store's availability column.
    pub fn feature_writers(
        &self,
        pipeline: &CompiledPipeline,
        run: &str,
        rows: &[u64],
        tables: Option<&[PathBuf]>,
        availability: &[bool],
    ) -> Result<Vec<FeatureRowWriter>, JobError> {
        let rows_per_file = pipeline.loaded.config.output.rows_per_file;
        pipeline
            .views
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let writer = match tables {
                    Some(tables) => self.table_writer(
                        &tables[i],
                        "views",
                        v.output_schema(),
                        rows_per_file,
                        run,
                    )?,
                    None => FeatureRowWriter::new(
                        &self.paths.root,
                        &self.paths.staging,
                        v.name(),
                        v.output_schema(),
                        rows_per_file,
                        run,
                        self.epoch,
                    )?,
                };
                let writer = match availability.get(i) {
                    Some(true) => writer.with_availability_column(),
                    _ => writer,
                };
                Ok(writer.with_rows(rows.get(i).copied().unwrap_or(0)))
            })
            .collect()
    }

    /// Appends dead letters to the epoch in progress.
    pub fn write_dead_letters(&mut self, records: &[DeadLetter]) -> Result<(), JobError> {
        if records.is_empty() {
            return Ok(());
        }
        self.current.write(records)?;
        for record in records {
            *self
                .counts
                .entry(record.reason.as_str().to_string())
                .or_insert(0) += 1;
        }
        Ok(())
    }

    /// Syncs the epoch's dead letters and describes how they join the dead-letter file when
    /// the epoch commits; the next records belong to the next epoch.
    pub fn stage_dead_letters(&mut self) -> Result<DeadLetterCommit, JobError> {
        self.current.flush()?;
        let staged = staged_dead_letters(&self.paths.staging, self.epoch);
        let size = std::fs::metadata(&staged).map_or(0, |m| m.len());
        let commit = DeadLetterCommit {
            path: self.paths.dead_letters.clone(),
            staged: (size > 0).then_some(staged),
            len_before: self.committed_len,
            len_after: self.committed_len + size,
        };
        self.epoch += 1;
        self.current = DeadLetterWriter::new(staged_dead_letters(&self.paths.staging, self.epoch));
        Ok(commit)
    }

    /// The dead letters of the next epoch follow `commit`'s in the dead-letter file.
    pub fn committed(&mut self, commit: &DeadLetterCommit) {
        self.committed_len = commit.len_after;
    }

    /// Dead letters so far by reason (the whole run, across restarts).
    pub fn dead_letter_counts(&self) -> BTreeMap<String, u64> {
        self.counts.clone()
    }

    /// Dead letters so far, all reasons.
    pub fn dead_letter_total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Fails when dead letters exceed `max_ratio` of the `records` read so far (checked once
    /// at least `min_records` were read): the input is systematically wrong.
    pub fn check_dead_letter_ratio(
        &self,
        records: u64,
        max_ratio: f64,
        min_records: u64,
    ) -> Result<(), JobError> {
        let dead: u64 = self.counts.values().sum();
        if records < min_records.max(1) || max_ratio >= 1.0 {
            return Ok(());
        }
        if dead as f64 > max_ratio * records as f64 {
            let reasons: Vec<String> = self
                .counts
                .iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect();
            return Err(JobError::Other(format!(
                "stopped: {dead} of the {records} records read so far are dead letters ({:.0}%, above output.max_dead_letter_ratio {max_ratio}); by reason: {}. The input does not look like what the config declares: check source.files.schema/format and the transforms against `{}`. Nothing after the last checkpoint was committed; raise max_dead_letter_ratio (1 never stops) to keep going anyway",
                100.0 * dead as f64 / records as f64,
                reasons.join(", "),
                self.paths.dead_letters.display()
            )));
        }
        Ok(())
    }

    /// Late events so far.
    pub fn late(&self) -> u64 {
        self.counts
            .get(DeadLetterReason::Late.as_str())
            .copied()
            .unwrap_or(0)
    }
}

fn staged_dead_letters(staging: &Path, epoch: u64) -> PathBuf {
    staging.join(format!("dead_letters-{epoch:06}.ndjson"))
}
