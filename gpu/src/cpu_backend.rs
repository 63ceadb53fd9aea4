//! The CPU backend of the batch contract: each segment's windows moved over the sorted rows
//! with the additions and removals the streaming path's per-key state makes, in the same
//! order, so both paths give the same values to the bit (`SegmentWindows`); windows read only
//! exactly (counts, exact sums and decimal averages) are differences of prefix totals, frame by
//! frame (`CountedWindows`).

use crate::backend::{BackendStats, Scatter, SortedRows, WindowBackend};
use crate::counted_windows::CountedWindows;
use crate::error::KernelError;
use crate::plan::WindowPlan;
use crate::segment_windows::SegmentWindows;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Rows between progress callbacks.
const PROGRESS_ROWS: usize = 64 * 1024;

/// The CPU kernels behind [`WindowBackend`].
#[derive(Debug, Default)]
pub struct CpuBackend {
    stats: Mutex<(u64, Duration)>,
}

impl CpuBackend {
    /// A CPU backend.
    pub fn new() -> Self {
        CpuBackend::default()
    }
}

impl WindowBackend for CpuBackend {
    fn device(&self) -> String {
        "cpu".into()
    }

    fn evaluate(
        &self,
        plan: &WindowPlan,
        rows: &SortedRows<'_>,
        scatter: Scatter<'_>,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<(), KernelError> {
        let started = Instant::now();
        rows.validate(plan)?;
        let specs = plan.specs().len();
        scatter.validate(rows.rows(), specs)?;
        let Scatter { out, positions } = scatter;
        let mut counted = CountedWindows::new(plan);
        let mut windows = SegmentWindows::new(plan);
        let tracked = windows.specs().to_vec();
        let mut instant_ends = Vec::new();
        let mut reported = 0;
        for segment in rows.offsets.windows(2) {
            let (begin, end) = (segment[0], segment[1]);
            rows.instant_ends(begin, end, &mut instant_ends);
            counted.evaluate_segment(plan, rows, (begin, end), &instant_ends, out, positions);
            if !tracked.is_empty() {
                windows.reset(begin);
                let mut i = begin;
                for &next in &instant_ends {
                    let j = begin + next;
                    let t = rows.times[i];
                    let targets = &positions[i..j];
                    let emits = targets.iter().any(|&p| p != Scatter::SKIP);
                    // Every instant moves the windows, read or not (training sets read at
                    // probes only): the removals then come in the order the streaming state
                    // makes them, so probes read the same values to the bit as streaming runs.
                    windows.advance(plan, rows, i, t);
                    for row in i..j {
                        windows.add(plan, rows, row);
                    }
                    if emits {
                        for &spec in &tracked {
                            let Some(group) = windows.group(plan.outputs[spec].0) else {
                                continue;
                            };
                            out.set_from_group(
                                plan,
                                group,
                                spec,
                                (targets.iter())
                                    .filter(|&&p| p != Scatter::SKIP)
                                    .map(|&p| p as usize),
                            );
                        }
                    }
                    i = j;
                }
            }
            if end - reported >= PROGRESS_ROWS {
                progress(end - reported);
                reported = end;
            }
        }
        progress(rows.rows() - reported);
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats.0 += rows.rows() as u64;
        stats.1 += started.elapsed();
        Ok(())
    }

    fn stats(&self) -> BackendStats {
        let stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        BackendStats {
            device: self.device(),
            rows: stats.0,
            kernel_time: stats.1,
            ..BackendStats::default()
        }
    }
}
