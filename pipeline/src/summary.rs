//! What a run did, printed at the end and optionally written as JSON.

use crate::batch_compute::ComputeReport;
use crate::coordinator::CheckpointStats;
use crate::outputs::Outputs;
use crate::resident::MemoryReport;
use crate::view_operator::ViewOperator;
use quiver_store::FeatureRowWriter;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// What the job itself counted, for its summary.
pub struct JobTotals {
    /// `run` or `backfill`.
    pub mode: &'static str,
    /// Pipeline name.
    pub pipeline: String,
    /// Records read from the source (the whole run, across restarts).
    pub events: u64,
    /// Events that reached the views.
    pub accepted: u64,
    /// When this process started the job.
    pub started: std::time::Instant,
    /// Engine time outside the views (they run in parallel; the slowest view's time is added).
    pub engine: std::time::Duration,
    /// Whether a stop was requested before the source ended.
    pub interrupted: bool,
    /// Whether a live source was read to its ends without ending (`--until-caught-up`).
    pub caught_up: bool,
}

/// Feature rows written for one view.
#[derive(Debug, Clone, Serialize)]
pub struct ViewSummary {
    /// View name.
    pub view: String,
    /// Rows written.
    pub rows: u64,
    /// Output directory.
    pub dir: PathBuf,
    /// Keys with state at the end.
    pub keys: usize,
    /// Events retained in window state at the end.
    pub retained_events: usize,
    /// Seconds spent computing its features (row-local SQL, sorting, windows), summed over
    /// the partitions evaluated in parallel.
    pub compute_s: f64,
    /// Seconds spent encoding and writing its feature rows (Parquet or Delta files, synced).
    pub write_s: f64,
}

/// Summary of a run or backfill.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// `run` or `backfill`.
    pub mode: String,
    /// Pipeline name.
    pub pipeline: String,
    /// Records read from the source (good and bad).
    pub events: u64,
    /// Events that reached the feature views.
    pub accepted: u64,
    /// Events rejected as late.
    pub late: u64,
    /// Dead letters by reason (late included).
    pub dead_letters: BTreeMap<String, u64>,
    /// Dead-letter file.
    pub dead_letter_path: PathBuf,
    /// Per view output.
    pub views: Vec<ViewSummary>,
    /// Wall-clock seconds.
    pub elapsed_s: f64,
    /// Seconds in the engine (transforms, event time, windows), excluding source and output I/O.
    pub engine_s: f64,
    /// Whether the run stopped on request before its source ended (resume with the same
    /// command).
    pub interrupted: bool,
    /// Whether the run stopped because a live source (Kafka) was read to its ends; events
    /// not yet passed by the watermark wait in the checkpoint for the next run.
    pub caught_up: bool,
    /// Checkpoints taken by this process.
    pub checkpoints: CheckpointStats,
    /// The devices backfill computed on (`None` for streaming runs, which use the CPU).
    pub compute: Option<ComputeReport>,
    /// Per partition of a live source (Kafka): offset, consumer lag and watermark at the end.
    pub partitions: Option<Vec<crate::source::PartitionLag>>,
    /// The online store the run wrote, and per table (`view@version`) its epoch and entities.
    pub online: Option<OnlineSummary>,
}

/// What a run left in the online store.
#[derive(Debug, Clone, Serialize)]
pub struct OnlineSummary {
    /// The store (a file, or a Redis URL without credentials).
    pub store: String,
    /// Per table written by the run: `view@version`, its epoch, its entities.
    pub tables: Vec<(String, u64, u64)>,
}

impl RunSummary {
    /// The summary of a finished job.
    pub fn build(
        job: JobTotals,
        outputs: &Outputs,
        views: &[(ViewOperator, FeatureRowWriter)],
        checkpoints: CheckpointStats,
    ) -> RunSummary {
        let slowest_view = views
            .iter()
            .map(|(op, _)| op.busy())
            .max()
            .unwrap_or_default();
        RunSummary {
            mode: job.mode.to_string(),
            pipeline: job.pipeline,
            events: job.events,
            accepted: job.accepted,
            late: outputs.late(),
            dead_letters: outputs.dead_letter_counts(),
            dead_letter_path: outputs.paths().dead_letters.clone(),
            views: views
                .iter()
                .map(|(op, writer)| {
                    let (keys, retained_events) = op.state_size();
                    ViewSummary {
                        view: op.view().name().to_string(),
                        rows: writer.rows(),
                        dir: writer.dir().to_path_buf(),
                        keys,
                        retained_events,
                        compute_s: op.busy().as_secs_f64(),
                        write_s: writer.busy().as_secs_f64(),
                    }
                })
                .collect(),
            elapsed_s: job.started.elapsed().as_secs_f64(),
            engine_s: (job.engine + slowest_view).as_secs_f64(),
            interrupted: job.interrupted,
            caught_up: job.caught_up,
            checkpoints,
            compute: None,
            partitions: None,
            online: None,
        }
    }

    /// Source events per wall-clock second.
    pub fn events_per_s(&self) -> f64 {
        self.events as f64 / self.elapsed_s.max(1e-9)
    }

    /// Source events per engine second.
    pub fn engine_events_per_s(&self) -> f64 {
        self.events as f64 / self.engine_s.max(1e-9)
    }

    /// Total dead letters.
    pub fn dead_letter_total(&self) -> u64 {
        self.dead_letters.values().sum()
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The memory line of a backfill's or a training set's summary: its peak against its limit,
/// and a warning when it went over one the user set.
pub(crate) fn write_memory(f: &mut fmt::Formatter<'_>, memory: &MemoryReport) -> fmt::Result {
    // To a tenth of a MiB: a peak just under a limit must not read as equal to it.
    let mib = |bytes: u64| format!("{:.1}", bytes as f64 / (1u64 << 20) as f64);
    let Some(peak) = memory.peak_bytes else {
        return Ok(());
    };
    let limit = match memory.explicit {
        true => format!("--memory-limit {} MiB", mib(memory.limit_bytes)),
        false => format!("default limit {} MiB", mib(memory.limit_bytes)),
    };
    let before = memory
        .held_before_reading_bytes
        .map(|b| format!("; {} MiB held before reading", mib(b)))
        .unwrap_or_default();
    writeln!(
        f,
        "  memory: peak {} MiB resident ({limit}{before})",
        mib(peak)
    )?;
    if let Some(over) = memory.over_limit() {
        writeln!(
            f,
            "  over the memory limit by {} MiB: give a larger --memory-limit",
            mib(over)
        )?;
    }
    Ok(())
}

impl fmt::Display for RunSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "quiver {} `{}`: {} events in {:.2} s ({} events/s; engine {:.2} s, {} events/s)",
            self.mode,
            self.pipeline,
            thousands(self.events),
            self.elapsed_s,
            thousands(self.events_per_s() as u64),
            self.engine_s,
            thousands(self.engine_events_per_s() as u64),
        )?;
        writeln!(
            f,
            "  accepted {} · late {} · dead letters {}",
            thousands(self.accepted),
            thousands(self.late),
            thousands(self.dead_letter_total())
        )?;
        if !self.dead_letters.is_empty() {
            let reasons: Vec<String> = self
                .dead_letters
                .iter()
                .map(|(r, n)| format!("{r} {}", thousands(*n)))
                .collect();
            writeln!(
                f,
                "    {} -> {}",
                reasons.join(", "),
                self.dead_letter_path.display()
            )?;
        }
        let c = &self.checkpoints;
        if c.count > 0 {
            writeln!(
                f,
                "  checkpoints {}{} · largest {} bytes · paused {:.3} s in total, longest {:.3} s · longest to durable {:.3} s{}",
                c.count,
                match (c.incremental, c.merges) {
                    (0, _) => String::new(),
                    (n, 0) => format!(" ({n} incremental)"),
                    (n, m) => format!(" ({n} incremental, merged {m} times)"),
                },
                thousands(c.max_bytes),
                c.total_s,
                c.max_s,
                c.max_commit_s,
                c.resumed_from
                    .map(|e| format!(" · resumed after checkpoint {e}"))
                    .unwrap_or_default()
            )?;
        }
        if let Some(compute) = &self.compute {
            for b in &compute.backends {
                let device = if b.bytes_moved > 0 || b.peak_device_bytes > 0 {
                    format!(
                        " · {} MiB moved · peak device memory {} MiB",
                        thousands(b.bytes_moved >> 20),
                        thousands(b.peak_device_bytes >> 20)
                    )
                } else {
                    String::new()
                };
                writeln!(
                    f,
                    "  compute {}: {} rows · kernels {:.2} s{device}",
                    b.device,
                    thousands(b.rows),
                    b.kernel_time.as_secs_f64(),
                )?;
            }
            if let Some(reason) = &compute.gpu_unused_because {
                writeln!(f, "    GPU not used: {reason}")?;
            }
            if let Some(input) = compute.input.as_ref().filter(|i| i.partitions > 1) {
                writeln!(
                    f,
                    "  input {} MiB, evaluated in {} key partitions per view ({})",
                    thousands(input.bytes >> 20),
                    input.partitions,
                    if input.split_as_read {
                        "spilled to disk, split by key as it was read: over a quarter of the \
                         memory limit"
                    } else if input.spilled {
                        "spilled to disk: over a quarter of the memory limit"
                    } else {
                        "in memory"
                    }
                )?;
                if input.sliced > 0 {
                    writeln!(
                        f,
                        "  {} key partitions (hot keys, {} rows) over the limit, evaluated in time slices through the streaming windows",
                        input.sliced,
                        thousands(input.sliced_rows)
                    )?;
                }
            }
            if let Some(memory) = &compute.memory {
                write_memory(f, memory)?;
            }
        }
        if self.interrupted {
            writeln!(
                f,
                "  interrupted: everything up to the last checkpoint is committed; run the same command again to resume"
            )?;
        }
        for p in self.partitions.iter().flatten() {
            writeln!(
                f,
                "  partition {}: offset {} · lag {} · watermark {}",
                p.partition,
                p.position.map_or("-".to_string(), |o| o.to_string()),
                p.lag.map_or("unknown".to_string(), thousands),
                p.watermark
                    .map_or("none".to_string(), crate::lineage::format_micros)
            )?;
        }
        if self.caught_up {
            writeln!(
                f,
                "  caught up: every partition was read to its end; events the watermark has not passed yet wait in the checkpoint; run the same command again to continue"
            )?;
        }
        for v in &self.views {
            // Backfill's sorted evaluation keeps no state: nothing to report then.
            let state = if v.keys > 0 {
                format!(
                    " (state: {} keys, {} events in windows)",
                    thousands(v.keys as u64),
                    thousands(v.retained_events as u64)
                )
            } else {
                String::new()
            };
            writeln!(
                f,
                "  view {}: {} feature rows -> {}{state} · computed {:.2} s, written {:.2} s",
                v.view,
                thousands(v.rows),
                v.dir.display(),
                v.compute_s,
                v.write_s,
            )?;
        }
        if let Some(online) = &self.online {
            for (table, epoch, entities) in &online.tables {
                writeln!(
                    f,
                    "  online {table}: {} entities as of epoch {epoch} -> {}",
                    thousands(*entities),
                    online.store
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn groups_thousands() {
        assert_eq!(super::thousands(1_234_567), "1,234,567");
        assert_eq!(super::thousands(12), "12");
    }
}
