//! The batch contract of the window kernels: segmented evaluation of a whole, key- and
//! time-sorted input, implemented by the CPU kernels and by CUDA.
//!
//! Streaming runs apply events incrementally to [`crate::KeyedWindows`]; backfill and training
//! sets know their whole input up front, so they sort it by key and time once and hand it to a
//! [`WindowBackend`]: a GPU evaluates every row's windows in parallel. Both backends answer the
//! same question with the same semantics (see the crate docs), checked by one conformance suite.

use crate::error::KernelError;
use crate::keyed::InputColumn;
use crate::output::FeatureOutput;
use crate::plan::WindowPlan;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Rows sorted by key, then event time, cut into one segment per key.
#[derive(Debug, Clone, Copy)]
pub struct SortedRows<'a> {
    /// Segment boundaries: segment `s` is rows `offsets[s]..offsets[s + 1]`; the first entry is
    /// 0 and the last the number of rows.
    pub offsets: &'a [usize],
    /// Event time of each row (microseconds), non-decreasing within a segment.
    pub times: &'a [i64],
    /// Input columns in row order, as many as the plan reads.
    pub inputs: &'a [InputColumn<'a>],
}

impl SortedRows<'_> {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.times.len()
    }

    /// Number of segments (keys).
    pub fn segments(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// The end of each instant (run of equal times) of the segment of rows `begin..end`, as
    /// offsets into the segment, into `ends` (emptied first).
    pub(crate) fn instant_ends(&self, begin: usize, end: usize, ends: &mut Vec<usize>) {
        let times = &self.times[begin..end];
        ends.clear();
        let mut i = 0;
        while i < times.len() {
            let t = times[i];
            i += 1;
            while i < times.len() && times[i] == t {
                i += 1;
            }
            ends.push(i);
        }
    }

    /// Checks the shape the backends rely on: offsets cover the rows in order, columns have one
    /// entry per row, times never decrease inside a segment.
    pub fn validate(&self, plan: &WindowPlan) -> Result<(), KernelError> {
        let rows = self.rows();
        if self.offsets.first() != Some(&0) || self.offsets.last() != Some(&rows) {
            return Err(KernelError::InputMismatch(format!(
                "segment offsets must run from 0 to the {rows} rows"
            )));
        }
        if self.offsets.windows(2).any(|w| w[0] > w[1]) {
            return Err(KernelError::InputMismatch(
                "segment offsets must not decrease".into(),
            ));
        }
        if self.inputs.len() != plan.inputs()
            || self
                .inputs
                .iter()
                .enumerate()
                .any(|(i, c)| !c.check(rows, plan.input_kind(i)))
        {
            return Err(KernelError::InputMismatch(format!(
                "{} input columns for a plan of {} inputs, each needing {rows} rows",
                self.inputs.len(),
                plan.inputs()
            )));
        }
        for w in self.offsets.windows(2) {
            let times = &self.times[w[0]..w[1]];
            if let Some(pair) = times.windows(2).find(|p| p[1] < p[0]) {
                return Err(KernelError::OutOfOrder {
                    time: pair[1],
                    last: pair[0],
                });
            }
        }
        Ok(())
    }
}

/// Where the results of [`WindowBackend::evaluate`] go: sorted row `k` is written to row
/// `positions[k]` of `out` (the caller's original row order), or nowhere when that is
/// [`Scatter::SKIP`].
pub struct Scatter<'a> {
    /// Output buffers in the caller's row order.
    pub out: &'a mut FeatureOutput,
    /// For each sorted row, its row in `out`, or [`Scatter::SKIP`].
    pub positions: &'a [u32],
}

impl Scatter<'_> {
    /// The position of a row that is evaluated (its values enter the windows) but whose
    /// features are not wanted: training sets read windows only at their spine rows.
    pub const SKIP: u32 = u32::MAX;

    /// Checks that `positions` covers as many rows as `rows` and stays inside `out`.
    pub(crate) fn validate(&self, rows: usize, specs: usize) -> Result<(), KernelError> {
        let out_rows = self.out.rows();
        if self.positions.len() != rows
            || self.out.values.len() != specs
            || self
                .positions
                .iter()
                .any(|&p| p != Self::SKIP && p as usize >= out_rows)
        {
            return Err(KernelError::InputMismatch(format!(
                "{} output positions into {out_rows} rows for {rows} sorted rows",
                self.positions.len()
            )));
        }
        Ok(())
    }
}

/// What a backend spent, for the run summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackendStats {
    /// The device, in words (e.g. `cpu` or `cuda: NVIDIA H200`).
    pub device: String,
    /// Rows evaluated.
    pub rows: u64,
    /// Time inside the kernels and their transfers.
    pub kernel_time: Duration,
    /// Bytes copied between host and device.
    pub bytes_moved: u64,
    /// Largest device memory held at once by one evaluation.
    pub peak_device_bytes: u64,
}

/// One implementation of the window kernels' batch contract.
pub trait WindowBackend: Send + Sync {
    /// The device, in words.
    fn device(&self) -> String;

    /// Whether the backend evaluates `plan` (the CUDA kernels have no exact integer path:
    /// plans with exact inputs run on the CPU).
    fn supports(&self, plan: &WindowPlan) -> bool {
        let _ = plan;
        true
    }

    /// Computes every spec of `plan` for every row of `rows` (windows as in the crate docs, ties
    /// seeing each other) and writes them through `scatter`; `progress` is told how many rows
    /// are done, chunk by chunk.
    fn evaluate(
        &self,
        plan: &WindowPlan,
        rows: &SortedRows<'_>,
        scatter: Scatter<'_>,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<(), KernelError>;

    /// What the backend spent so far.
    fn stats(&self) -> BackendStats;
}

/// Which device backfill and training sets compute on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// CUDA when a driver and a GPU are found, else the CPU.
    #[default]
    Auto,
    /// The CPU kernels.
    Cpu,
    /// CUDA; an error when no usable GPU is found.
    Cuda,
}

impl std::str::FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda),
            other => Err(format!(
                "unknown device `{other}`: expected auto, cpu or cuda"
            )),
        }
    }
}

/// Sorted inputs smaller than this stay on the CPU under `device: auto`: below it, copying to
/// the GPU and launching costs more than the CPU kernels take (measured with
/// `scripts/gpu-check.sh`; see the README).
pub const DEFAULT_GPU_MIN_ROWS: usize = 1 << 20;
