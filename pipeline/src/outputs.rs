//! The outputs of a job: feature rows per view and the dead-letter file.

use crate::compile::CompiledPipeline;
use crate::error::JobError;
use crate::summary::{RunSummary, ViewSummary};
use crate::view_operator::ViewOperator;
use quiver_connectors::{DeadLetter, DeadLetterReason, DeadLetterWriter};
use quiver_store::FeatureRowWriter;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Feature-row writers (one per view, same order as the views; views take them while they
/// run) and the dead-letter writer.
pub struct Outputs {
    writers: Vec<FeatureRowWriter>,
    dead_letters: DeadLetterWriter,
    dead_letter_path: PathBuf,
}

impl Outputs {
    /// Opens outputs under `dir` (default: the config's output path).
    pub fn open(pipeline: &CompiledPipeline, dir: Option<PathBuf>) -> Result<Self, JobError> {
        let dir = dir.unwrap_or_else(|| pipeline.loaded.output_dir());
        let rows_per_file = pipeline.loaded.config.output.rows_per_file;
        let writers = pipeline
            .views
            .iter()
            .map(|v| FeatureRowWriter::new(&dir, v.name(), v.output_schema(), rows_per_file))
            .collect::<Result<Vec<_>, _>>()?;
        let dead_letter_path = match &pipeline.loaded.config.output.dead_letter {
            Some(p) => p.clone(),
            None => dir.join("dead_letter.ndjson"),
        };
        // A run replaces the previous run's dead letters, like its feature rows.
        if dead_letter_path.exists() {
            std::fs::remove_file(&dead_letter_path).map_err(|e| {
                JobError::Other(format!(
                    "cannot replace `{}`: {e}",
                    dead_letter_path.display()
                ))
            })?;
        }
        Ok(Outputs {
            writers,
            dead_letters: DeadLetterWriter::new(dead_letter_path.clone()),
            dead_letter_path,
        })
    }

    /// Hands out the feature-row writers (one per view, in view order) so that views can write
    /// in parallel; give them back with [`Outputs::return_feature_writers`] before finishing.
    pub fn take_feature_writers(&mut self) -> Vec<FeatureRowWriter> {
        std::mem::take(&mut self.writers)
    }

    /// Takes back writers handed out by [`Outputs::take_feature_writers`].
    pub fn return_feature_writers(&mut self, writers: Vec<FeatureRowWriter>) {
        self.writers = writers;
    }

    /// Appends dead letters.
    pub fn write_dead_letters(&mut self, records: &[DeadLetter]) -> Result<(), JobError> {
        if !records.is_empty() {
            self.dead_letters.write(records)?;
        }
        Ok(())
    }

    /// Dead letters so far by reason.
    pub fn dead_letter_counts(&self) -> BTreeMap<String, u64> {
        self.dead_letters
            .counts()
            .iter()
            .map(|(r, n)| (r.as_str().to_string(), *n))
            .collect()
    }

    /// Late events so far.
    pub fn late(&self) -> u64 {
        self.dead_letters
            .counts()
            .get(&DeadLetterReason::Late)
            .copied()
            .unwrap_or(0)
    }

    /// Dead-letter file.
    pub fn dead_letter_path(&self) -> PathBuf {
        self.dead_letter_path.clone()
    }

    /// Closes every file and summarises the job.
    pub fn finish(
        mut self,
        job: JobTotals,
        operators: &[ViewOperator],
    ) -> Result<RunSummary, JobError> {
        self.dead_letters.flush()?;
        let late = self.late();
        let dead_letters = self.dead_letter_counts();
        let mut views = Vec::new();
        for (writer, op) in self.writers.into_iter().zip(operators) {
            let rows = writer.rows();
            let dir = writer.dir().to_path_buf();
            writer.finish()?;
            let (keys, retained_events) = op.state_size();
            views.push(ViewSummary {
                view: op.view().name().to_string(),
                rows,
                dir,
                keys,
                retained_events,
            });
        }
        Ok(RunSummary {
            mode: job.mode.to_string(),
            pipeline: job.pipeline,
            events: job.events,
            accepted: job.accepted,
            late,
            dead_letters,
            dead_letter_path: self.dead_letter_path,
            views,
            elapsed_s: job.started.elapsed().as_secs_f64(),
            engine_s: job.engine.as_secs_f64(),
        })
    }
}

/// What the job itself counted, for its summary.
pub struct JobTotals {
    /// `run` or `backfill`.
    pub mode: &'static str,
    /// Pipeline name.
    pub pipeline: String,
    /// Records read from the source.
    pub events: u64,
    /// Events that reached the views.
    pub accepted: u64,
    /// When the job started.
    pub started: std::time::Instant,
    /// Engine time.
    pub engine: std::time::Duration,
}
