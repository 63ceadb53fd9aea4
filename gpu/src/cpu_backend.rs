//! The CPU backend of the batch contract: each segment replayed through the incremental
//! per-key window state that streaming runs use, so both paths share one implementation.

use crate::backend::{BackendStats, Scatter, SortedRows, WindowBackend};
use crate::error::KernelError;
use crate::key_state::KeyWindowState;
use crate::plan::WindowPlan;
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

/// Events a key's state may retain beyond its windows while no row is read (see `evaluate`).
const DEFERRED_EVENTS: usize = 4096;

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
        let value = |row: usize, input: usize| rows.inputs[input].get(row, plan.input_kind(input));
        let mut reported = 0;
        for segment in rows.offsets.windows(2) {
            let (begin, end) = (segment[0], segment[1]);
            let mut state = KeyWindowState::new(plan);
            let mut i = begin;
            while i < end {
                let t = rows.times[i];
                let mut j = i + 1;
                while j < end && rows.times[j] == t {
                    j += 1;
                }
                let targets = &positions[i..j];
                let emits = targets.iter().any(|&p| p != Scatter::SKIP);
                // Windows only need to end at `t` where something is read there (training
                // sets read at probes only): events that leave them meanwhile are removed
                // at the next read, all at once, with the same result. Every so often anyway,
                // so the events retained meanwhile stay few.
                if emits || state.retained_events() >= DEFERRED_EVENTS {
                    state.advance(plan, t);
                }
                for row in i..j {
                    state.push(plan, t, |input| value(row, input));
                }
                if emits {
                    for spec in 0..specs {
                        out.set_from(
                            plan,
                            &state,
                            spec,
                            (targets.iter())
                                .filter(|&&p| p != Scatter::SKIP)
                                .map(|&p| p as usize),
                        );
                    }
                }
                i = j;
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
