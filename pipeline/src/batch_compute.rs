//! Backfill's window evaluation: the whole input of a view sorted by key and time once, then
//! evaluated by a [`WindowBackend`] (a GPU for large inputs when one is used, else the CPU).

use crate::error::JobError;
use arrow::array::{RecordBatch, UInt32Array};
use arrow::compute::take;
use indicatif::ProgressBar;
use quiver_gpu::{
    dense_key_ids, key_time_order, open_backend, BackendStats, Device, FeatureOutput, InputColumn,
    KeyTimeOrder, OpenedBackend, Scatter, SortedRows, WindowBackend, WindowPlan,
};
use quiver_sql::ViewInputs;
use std::sync::Arc;

/// The backends of one job and when to use the GPU.
#[derive(Clone)]
pub struct BatchCompute {
    opened: Arc<OpenedBackend>,
    gpu_min_rows: usize,
}

impl BatchCompute {
    /// Opens the backends for `device` (see [`open_backend`]).
    pub fn open(device: Device, gpu_min_rows: usize) -> Result<Self, JobError> {
        let opened = open_backend(device).map_err(|e| JobError::Other(e.to_string()))?;
        Ok(BatchCompute {
            opened: Arc::new(opened),
            gpu_min_rows,
        })
    }

    /// The backend for `plan` over an input of `rows` rows.
    fn backend_for(&self, plan: &WindowPlan, rows: usize) -> &Arc<dyn WindowBackend> {
        match &self.opened.gpu {
            Some(gpu) if rows >= self.gpu_min_rows && gpu.supports(plan) => gpu,
            _ => &self.opened.cpu,
        }
    }

    /// Computes every feature of `inputs` (rows in any order). The rows come back sorted by
    /// key and event time, with their features in that order: the kernels then write their
    /// output in order, where writing it back in the input's order would miss the cache
    /// once per feature and row (half the CPU kernels' time), and the rows are taken in that
    /// order once instead. Only the columns `ordered` (indices into `inputs.batch`) are taken:
    /// the others are left as they were, in the input's order, for a caller that never reads
    /// them (columns a view leaves blank or does not output).
    pub fn evaluate(
        &self,
        plan: &WindowPlan,
        inputs: ViewInputs,
        ordered: &[usize],
        progress: &ProgressBar,
    ) -> Result<KeyOrdered, JobError> {
        let keys = inputs.key_bytes();
        let (ids, key_count) = dense_key_ids(&keys);
        drop(keys);
        let KeyTimeOrder { order, offsets } = key_time_order(&ids, key_count, &inputs.times);
        drop(ids);
        let columns = InputColumn::all(&inputs.values, &inputs.validity, &inputs.exact);
        let gathered = Gathered::new(&inputs.times, &columns, &order);
        drop(columns);
        let rows = take_columns(&inputs.batch, ordered, &UInt32Array::from(order))
            .map_err(|e| JobError::Other(format!("ordering rows by key and time: {e}")))?;
        drop(inputs);
        let rows_in_order: Vec<u32> = (0..gathered.times.len() as u32).collect();
        let mut features = FeatureOutput::new(plan.specs().len(), rows_in_order.len());
        let scatter = Scatter {
            out: &mut features,
            positions: &rows_in_order,
        };
        self.run(plan, &offsets, &gathered, scatter, progress)?;
        Ok(KeyOrdered { rows, features })
    }

    /// Computes the features of rows given by their encoded keys, times and kernel input
    /// columns (rows in any order). `emit` maps each row to its row of the output, or to
    /// [`Scatter::SKIP`] for rows that only enter windows; `None` emits every row in row order.
    pub fn evaluate_rows(
        &self,
        plan: &WindowPlan,
        keys: &[&[u8]],
        times: &[i64],
        inputs: &[InputColumn<'_>],
        emit: Option<&[u32]>,
        progress: &ProgressBar,
    ) -> Result<FeatureOutput, JobError> {
        let (ids, key_count) = dense_key_ids(keys);
        let sorted = key_time_order(&ids, key_count, times);
        drop(ids);
        let order = &sorted.order;
        let (positions, out_rows) = match emit {
            None => (None, times.len()),
            Some(emit) => (
                Some(gather(emit, order)),
                emit.iter().filter(|&&p| p != Scatter::SKIP).count(),
            ),
        };
        let gathered = Gathered::new(times, inputs, order);
        let mut out = FeatureOutput::new(plan.specs().len(), out_rows);
        let scatter = Scatter {
            out: &mut out,
            positions: positions.as_deref().unwrap_or(order),
        };
        self.run(plan, &sorted.offsets, &gathered, scatter, progress)?;
        Ok(out)
    }

    /// Evaluates `gathered` rows, sorted and cut into keys at `offsets`, on the backend for
    /// their size.
    fn run(
        &self,
        plan: &WindowPlan,
        offsets: &[usize],
        gathered: &Gathered,
        scatter: Scatter<'_>,
        progress: &ProgressBar,
    ) -> Result<(), JobError> {
        let columns = InputColumn::all(&gathered.values, &gathered.validity, &gathered.exact);
        let rows = SortedRows {
            offsets,
            times: &gathered.times,
            inputs: &columns,
        };
        self.backend_for(plan, rows.rows())
            .evaluate(plan, &rows, scatter, &|n| progress.inc(n as u64))
            .map_err(JobError::from)
    }

    /// What each backend used so far spent (the GPU first), and why the GPU is not used when
    /// it is not.
    pub fn report(&self) -> ComputeReport {
        let mut used: Vec<BackendStats> = self
            .opened
            .gpu
            .iter()
            .chain(std::iter::once(&self.opened.cpu))
            .map(|b| b.stats())
            .filter(|s| s.rows > 0)
            .collect();
        if used.is_empty() {
            used.push(self.opened.cpu.stats());
        }
        ComputeReport {
            backends: used,
            gpu_unused_because: self.opened.cpu_reason.clone(),
            input: None,
            memory: None,
        }
    }
}

/// The cores batch evaluations may use at once (backfill's key partitions, training sets'
/// partitions).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `batch` with its columns `columns` taken at `indices` (one per row), the others as they are.
fn take_columns(
    batch: &RecordBatch,
    columns: &[usize],
    indices: &UInt32Array,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let taken = (batch.columns().iter().enumerate())
        .map(|(c, column)| {
            if columns.contains(&c) {
                take(column.as_ref(), indices, None)
            } else {
                Ok(Arc::clone(column))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(batch.schema(), taken)
}

/// Times and kernel inputs of rows gathered in key and time order.
struct Gathered {
    times: Vec<i64>,
    values: Vec<Vec<f64>>,
    validity: Vec<Option<Vec<bool>>>,
    exact: Vec<Option<Vec<i128>>>,
}

impl Gathered {
    /// `times` and `inputs` in the row order `order`.
    fn new(times: &[i64], inputs: &[InputColumn<'_>], order: &[u32]) -> Self {
        Gathered {
            times: gather(times, order),
            values: inputs.iter().map(|c| gather(c.values, order)).collect(),
            validity: (inputs.iter())
                .map(|c| c.validity.map(|v| gather(v, order)))
                .collect(),
            exact: (inputs.iter())
                .map(|c| c.exact.map(|v| gather(v, order)))
                .collect(),
        }
    }
}

/// `column` in the row order `order`. An empty column stays empty: exact inputs carry no
/// `f64` values.
fn gather<T: Copy>(column: &[T], order: &[u32]) -> Vec<T> {
    if column.is_empty() {
        return Vec::new();
    }
    order.iter().map(|&r| column[r as usize]).collect()
}

/// Rows evaluated by [`BatchCompute::evaluate`], sorted by key and event time, and their
/// features in the same order.
pub struct KeyOrdered {
    /// The prepared rows ([`ViewInputs::batch`]): the columns asked for in key and time order,
    /// the others as they came.
    pub rows: RecordBatch,
    /// Their features, row for row.
    pub features: FeatureOutput,
}

/// The compute part of a run summary.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ComputeReport {
    /// Per backend that computed rows: device, rows, kernel time, bytes moved, device memory.
    pub backends: Vec<BackendStats>,
    /// Why no GPU was used (`None` when one was available).
    pub gpu_unused_because: Option<String>,
    /// How backfill held and split its input (`None` elsewhere).
    pub input: Option<InputReport>,
    /// Backfill's resident memory against its limit (`None` elsewhere).
    pub memory: Option<crate::resident::MemoryReport>,
}

/// How backfill held and split its input.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct InputReport {
    /// Bytes of the input as Arrow arrays.
    pub bytes: u64,
    /// Key partitions each view was evaluated in (1: the whole input at once).
    pub partitions: usize,
    /// Whether the input went to spill files (it exceeded a quarter of the memory limit).
    pub spilled: bool,
    /// Whether it went there split by key as it was read, straight into the partitions' spill
    /// files (its size was known up front), rather than spilled whole and split after.
    pub split_as_read: bool,
    /// Key partitions (of all views) too large for the limit, cut by event time and evaluated
    /// slice by slice with window state carried between slices.
    pub sliced: usize,
    /// Rows of those partitions (evaluated through the streaming windows, not the kernels
    /// the backends report).
    pub sliced_rows: u64,
}
