//! [`CudaBackend`]: the batch window contract on a GPU.

use crate::backend::{BackendStats, Scatter, SortedRows, WindowBackend};
use crate::cuda::probe::probe;
use crate::error::KernelError;
use crate::plan::{Frame, InputKind, WindowPlan};
use crate::AggKind;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DeviceRepr, LaunchArgs, LaunchConfig,
    PushKernelArg, ValidAsZeroBits,
};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The kernels' source, compiled by NVRTC when a backend opens.
const SOURCE: &str = include_str!("windows.cu");

/// Threads per block of every launch.
const BLOCK: u32 = 256;

/// Rows per chunk at most, whatever the device memory: bounds the host staging buffers too.
const MAX_CHUNK_ROWS: usize = 64 << 20;

/// A null device pointer, for optional kernel arrays.
static NULL: u64 = 0;

/// The compiled kernels.
struct Kernels {
    segment_ids: CudaFunction,
    segment_prefix: CudaFunction,
    block_extrema_l1: CudaFunction,
    block_extrema_l2: CudaFunction,
    window_aggregate: CudaFunction,
}

/// The window kernels on one CUDA GPU. Evaluations are serialised on one stream; a sorted input
/// larger than the device's free memory allows is cut into chunks of whole segments.
pub struct CudaBackend {
    stream: Arc<CudaStream>,
    kernels: Kernels,
    name: String,
    chunk_rows: Option<usize>,
    /// Serialises evaluations (views call from several threads) on the one stream.
    work: Mutex<()>,
    stats: Mutex<BackendStats>,
}

fn device_error(what: &str) -> impl Fn(cudarc::driver::DriverError) -> KernelError + '_ {
    move |e| KernelError::Device(format!("{what}: {e}"))
}

impl CudaBackend {
    /// Opens GPU 0 and compiles the kernels for it; a clear error when there is no usable GPU.
    pub fn open() -> Result<Self, KernelError> {
        probe().map_err(KernelError::Device)?;
        std::panic::catch_unwind(Self::open_probed).unwrap_or_else(|_| {
            Err(KernelError::Device(
                "the CUDA driver failed while opening the GPU".into(),
            ))
        })
    }

    fn open_probed() -> Result<Self, KernelError> {
        let ctx = CudaContext::new(0).map_err(device_error("cannot open GPU 0"))?;
        let gpu = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let (major, minor) = ctx
            .compute_capability()
            .map_err(device_error("cannot read the GPU's compute capability"))?;
        let ptx = compile_ptx_with_opts(
            SOURCE,
            CompileOptions {
                // Double-double arithmetic needs exact a + b and a * b, never contracted.
                fmad: Some(false),
                options: vec![format!("--gpu-architecture=compute_{major}{minor}")],
                name: Some("windows.cu".into()),
                ..CompileOptions::default()
            },
        )
        .map_err(|e| {
            KernelError::Device(format!("NVRTC cannot compile the window kernels: {e}"))
        })?;
        let module = ctx
            .load_module(ptx)
            .map_err(device_error("cannot load the window kernels"))?;
        let load = |name: &str| {
            module
                .load_function(name)
                .map_err(|e| KernelError::Device(format!("kernel {name}: {e}")))
        };
        let kernels = Kernels {
            segment_ids: load("segment_ids")?,
            segment_prefix: load("segment_prefix")?,
            block_extrema_l1: load("block_extrema_l1")?,
            block_extrema_l2: load("block_extrema_l2")?,
            window_aggregate: load("window_aggregate")?,
        };
        let stream = ctx.default_stream();
        let name = format!("cuda: {gpu} (compute {major}.{minor})");
        Ok(CudaBackend {
            stream,
            kernels,
            name: name.clone(),
            chunk_rows: None,
            work: Mutex::new(()),
            stats: Mutex::new(BackendStats {
                device: name,
                ..BackendStats::default()
            }),
        })
    }

    /// Cuts inputs into chunks of at most `rows` rows (whole segments; a longer segment is a
    /// chunk of its own). Without it, chunks are sized from the free device memory.
    pub fn with_chunk_rows(mut self, rows: usize) -> Self {
        self.chunk_rows = Some(rows.max(1));
        self
    }

    /// Rows per chunk: half the free device memory over the bytes a row needs.
    fn chunk_rows(&self, bytes_per_row: usize) -> usize {
        if let Some(rows) = self.chunk_rows {
            return rows;
        }
        let free = self
            .stream
            .context()
            .mem_get_info()
            .map(|(free, _)| free)
            .unwrap_or(1 << 30);
        (free / 2 / bytes_per_row.max(1)).clamp(1 << 16, MAX_CHUNK_ROWS)
    }
}

/// What the plan reads from one input column.
#[derive(Debug, Clone, Copy, Default)]
struct InputNeeds {
    used: bool,
    moments: bool,
    extrema: bool,
    /// A sum reads the exact prefix sums (integer inputs).
    int_sum: bool,
}

fn needs(plan: &WindowPlan) -> Vec<InputNeeds> {
    let mut needs = vec![InputNeeds::default(); plan.inputs()];
    for spec in plan.specs() {
        let n = &mut needs[spec.input];
        n.used = true;
        match spec.kind {
            AggKind::Count => {}
            AggKind::Sum => {
                n.moments = true;
                n.int_sum = plan.input_kind(spec.input) == InputKind::Integer;
            }
            AggKind::Avg => n.moments = true,
            AggKind::Min | AggKind::Max => n.extrema = true,
            AggKind::StddevSamp | AggKind::VarSamp | AggKind::StddevPop | AggKind::VarPop => {
                n.moments = true;
                n.extrema = true; // an all-equal window has variance exactly 0
            }
        }
    }
    needs
}

/// The number the kernels use for an aggregate.
fn kind_code(kind: AggKind) -> i32 {
    match kind {
        AggKind::Count => 0,
        AggKind::Sum => 1,
        AggKind::Avg => 2,
        AggKind::Min => 3,
        AggKind::Max => 4,
        AggKind::StddevSamp => 5,
        AggKind::VarSamp => 6,
        AggKind::StddevPop => 7,
        AggKind::VarPop => 8,
    }
}

/// Pushes an optional kernel array: the buffer, or a null pointer the kernel checks for.
fn arg_or_null<'a, T>(b: &mut LaunchArgs<'a>, buffer: Option<&'a CudaSlice<T>>) {
    match buffer {
        Some(v) => b.arg(v),
        None => b.arg(&NULL),
    };
}

/// Pushes an optional output array (written by the kernel), or a null pointer.
fn arg_mut_or_null<'a, T>(b: &mut LaunchArgs<'a>, buffer: Option<&'a mut CudaSlice<T>>) {
    match buffer {
        Some(v) => b.arg(v),
        None => b.arg(&NULL),
    };
}

/// Pushes each buffer of an optional group of `N` kernel arrays, or `N` null pointers.
fn args_or_nulls<'a, T, const N: usize>(
    b: &mut LaunchArgs<'a>,
    group: Option<&'a [CudaSlice<T>; N]>,
) {
    match group {
        Some(buffers) => {
            for buffer in buffers {
                b.arg(buffer);
            }
        }
        None => {
            for _ in 0..N {
                b.arg(&NULL);
            }
        }
    }
}

/// Launch shape for one thread per item.
fn grid(items: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((items as u64).div_ceil(BLOCK as u64).max(1) as u32, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Device buffers of one input column for one chunk.
struct InputBuffers {
    values: CudaSlice<f64>,
    /// Integer inputs: the exact values and their exact prefix sums (when a sum reads them).
    ivalues: Option<CudaSlice<i64>>,
    isum: Option<CudaSlice<u64>>,
    valid: Option<CudaSlice<bool>>,
    count: CudaSlice<u32>,
    nan: CudaSlice<u32>,
    pos_inf: CudaSlice<u32>,
    neg_inf: CudaSlice<u32>,
    /// shift, sum hi/lo, squares hi/lo: only for inputs with moments.
    sums: Option<[CudaSlice<f64>; 5]>,
    /// min/max of level-1 and level-2 blocks: only for inputs with extrema.
    extrema: Option<[CudaSlice<i64>; 4]>,
}

/// Allocation and copies of one chunk, with the bytes they took.
struct Chunk<'s> {
    stream: &'s Arc<CudaStream>,
    device_bytes: u64,
    moved: u64,
}

impl Chunk<'_> {
    fn zeros<T: DeviceRepr + ValidAsZeroBits>(
        &mut self,
        len: usize,
    ) -> Result<CudaSlice<T>, KernelError> {
        self.device_bytes += (len.max(1) * std::mem::size_of::<T>()) as u64;
        self.stream
            .alloc_zeros::<T>(len.max(1))
            .map_err(device_error("cannot allocate GPU memory"))
    }

    fn upload<T: DeviceRepr>(&mut self, host: &[T]) -> Result<CudaSlice<T>, KernelError> {
        let bytes = std::mem::size_of_val(host) as u64;
        self.device_bytes += bytes;
        self.moved += bytes;
        self.stream
            .clone_htod(host)
            .map_err(device_error("cannot copy to the GPU"))
    }

    /// Copies `device` back (the copy synchronises the stream) and keeps its first `len`.
    fn download<T: DeviceRepr>(
        &mut self,
        device: &CudaSlice<T>,
        len: usize,
    ) -> Result<Vec<T>, KernelError> {
        let mut host = self
            .stream
            .clone_dtoh(device)
            .map_err(device_error("cannot copy from the GPU"))?;
        host.truncate(len);
        self.moved += std::mem::size_of_val(&host[..]) as u64;
        Ok(host)
    }
}

impl WindowBackend for CudaBackend {
    fn device(&self) -> String {
        self.name.clone()
    }

    fn supports(&self, plan: &WindowPlan) -> bool {
        // Integers are exact here too (i64 prefix sums); decimals need 128 bits: CPU only.
        (0..plan.inputs()).all(|i| !matches!(plan.input_kind(i), InputKind::Decimal { .. }))
    }

    fn evaluate(
        &self,
        plan: &WindowPlan,
        rows: &SortedRows<'_>,
        scatter: Scatter<'_>,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<(), KernelError> {
        if !self.supports(plan) {
            return Err(KernelError::InputMismatch(
                "the CUDA kernels have no decimal path: evaluate this plan on the CPU".into(),
            ));
        }
        rows.validate(plan)?;
        scatter.validate(rows.rows(), plan.specs().len())?;
        let _serial = self.work.lock().unwrap_or_else(|e| e.into_inner());
        let started = Instant::now();
        let needs = needs(plan);
        let per_input = 8 + 8 + 8 + 1 + 16 + 40 + 2;
        let bytes_per_row = 8 + 4 + 9 + per_input * needs.iter().filter(|n| n.used).count();
        let limit = self.chunk_rows(bytes_per_row);
        let Scatter { out, positions } = scatter;
        let mut first_segment = 0;
        while first_segment < rows.segments() {
            let begin = rows.offsets[first_segment];
            let mut last_segment = first_segment + 1;
            while last_segment < rows.segments() && rows.offsets[last_segment + 1] - begin <= limit
            {
                last_segment += 1;
            }
            let end = rows.offsets[last_segment];
            if end == begin {
                first_segment = last_segment; // only empty segments: nothing to compute
                continue;
            }
            let offsets: Vec<u64> = rows.offsets[first_segment..=last_segment]
                .iter()
                .map(|&o| (o - begin) as u64)
                .collect();
            let values = self.evaluate_chunk(plan, &needs, rows, begin..end, &offsets)?;
            for (spec, column) in values.into_iter().enumerate() {
                for (k, &ok) in column.valid.iter().enumerate() {
                    if !ok {
                        continue;
                    }
                    let p = positions[begin + k];
                    if p == Scatter::SKIP {
                        continue;
                    }
                    let p = p as usize;
                    match &column.exact {
                        Some(exact) => out.set_exact(spec, p, Some(exact[k] as i128)),
                        None => out.set(spec, p, Some(column.values[k])),
                    }
                }
            }
            self.stats.lock().unwrap_or_else(|e| e.into_inner()).rows += (end - begin) as u64;
            progress(end - begin);
            first_segment = last_segment;
        }
        self.stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .kernel_time += started.elapsed();
        Ok(())
    }

    fn stats(&self) -> BackendStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One feature column of a chunk.
struct Column {
    values: Vec<f64>,
    valid: Vec<bool>,
    /// Exact values of exact specs (integer sums, minima, maxima).
    exact: Option<Vec<i64>>,
}

impl CudaBackend {
    /// Evaluates rows `range` (whole segments, `offsets` relative to its start) on the GPU.
    fn evaluate_chunk(
        &self,
        plan: &WindowPlan,
        needs: &[InputNeeds],
        rows: &SortedRows<'_>,
        range: std::ops::Range<usize>,
        offsets: &[u64],
    ) -> Result<Vec<Column>, KernelError> {
        let stream = &self.stream;
        let mut chunk = Chunk {
            stream,
            device_bytes: 0,
            moved: 0,
        };
        let n = range.len();
        let segments = offsets.len() - 1;
        let launch = |what: &str, r: Result<_, cudarc::driver::DriverError>| {
            r.map(|_| ())
                .map_err(|e| KernelError::Device(format!("kernel {what}: {e}")))
        };
        let d_offsets = chunk.upload(offsets)?;
        let d_times = chunk.upload(&rows.times[range.clone()])?;
        let mut d_segment = chunk.zeros::<u32>(n)?;
        let (n64, segs32) = (n as u64, segments as u32);
        {
            let mut b = stream.launch_builder(&self.kernels.segment_ids);
            b.arg(&d_offsets).arg(&segs32).arg(&mut d_segment);
            // SAFETY: argument types and lengths match the kernel's signature in windows.cu.
            launch("segment_ids", unsafe { b.launch(grid(segments)) })?;
        }
        let l1_blocks = n.div_ceil(1 << 6);
        let l2_blocks = n.div_ceil(1 << 12);
        let mut inputs: Vec<Option<InputBuffers>> = Vec::with_capacity(needs.len());
        for (index, (column, need)) in rows.inputs.iter().zip(needs).enumerate() {
            if !need.used {
                inputs.push(None);
                continue;
            }
            let integer = plan.input_kind(index) == InputKind::Integer;
            let (values, ivalues) = match (integer, column.exact) {
                (true, Some(exact)) => {
                    let exact: Vec<i64> = exact[range.clone()].iter().map(|&x| x as i64).collect();
                    let floats: Vec<f64> = exact.iter().map(|&x| x as f64).collect();
                    (chunk.upload(&floats)?, Some(chunk.upload(&exact)?))
                }
                (true, None) => {
                    return Err(KernelError::InputMismatch(format!(
                        "integer input {index} has no exact values"
                    )))
                }
                (false, _) => (chunk.upload(&column.values[range.clone()])?, None),
            };
            let isum = match (&ivalues, need.int_sum) {
                (Some(_), true) => Some(chunk.zeros::<u64>(n)?),
                _ => None,
            };
            let valid = match column.validity {
                Some(v) => Some(chunk.upload(&v[range.clone()])?),
                None => None,
            };
            let mut buffers = InputBuffers {
                values,
                ivalues,
                isum,
                valid,
                count: chunk.zeros(n)?,
                nan: chunk.zeros(n)?,
                pos_inf: chunk.zeros(n)?,
                neg_inf: chunk.zeros(n)?,
                sums: None,
                extrema: None,
            };
            if need.moments {
                buffers.sums = Some([
                    chunk.zeros(segments)?,
                    chunk.zeros(n)?,
                    chunk.zeros(n)?,
                    chunk.zeros(n)?,
                    chunk.zeros(n)?,
                ]);
            }
            {
                let InputBuffers {
                    values,
                    ivalues,
                    isum,
                    valid,
                    count,
                    nan,
                    pos_inf,
                    neg_inf,
                    sums,
                    ..
                } = &mut buffers;
                let mut b = stream.launch_builder(&self.kernels.segment_prefix);
                b.arg(&d_offsets).arg(&segs32).arg(&*values);
                arg_or_null(&mut b, valid.as_ref());
                b.arg(count).arg(nan).arg(pos_inf).arg(neg_inf);
                match sums {
                    Some(s) => {
                        for buffer in s.iter_mut() {
                            b.arg(buffer);
                        }
                    }
                    None => args_or_nulls::<f64, 5>(&mut b, None),
                }
                arg_or_null(&mut b, ivalues.as_ref());
                arg_mut_or_null(&mut b, isum.as_mut());
                // SAFETY: as above; null sums tell the kernel to keep counts only.
                launch("segment_prefix", unsafe { b.launch(grid(segments)) })?;
            }
            if need.extrema {
                let mut e = [
                    chunk.zeros::<i64>(l1_blocks)?,
                    chunk.zeros::<i64>(l1_blocks)?,
                    chunk.zeros::<i64>(l2_blocks)?,
                    chunk.zeros::<i64>(l2_blocks)?,
                ];
                let [min_l1, max_l1, min_l2, max_l2] = &mut e;
                {
                    let mut b = stream.launch_builder(&self.kernels.block_extrema_l1);
                    b.arg(&buffers.values);
                    arg_or_null(&mut b, buffers.ivalues.as_ref());
                    arg_or_null(&mut b, buffers.valid.as_ref());
                    b.arg(&n64).arg(&mut *min_l1).arg(&mut *max_l1);
                    // SAFETY: as above.
                    launch("block_extrema_l1", unsafe { b.launch(grid(l1_blocks)) })?;
                }
                {
                    let l1 = l1_blocks as u64;
                    let mut b = stream.launch_builder(&self.kernels.block_extrema_l2);
                    b.arg(&*min_l1)
                        .arg(&*max_l1)
                        .arg(&l1)
                        .arg(min_l2)
                        .arg(max_l2);
                    // SAFETY: as above.
                    launch("block_extrema_l2", unsafe { b.launch(grid(l2_blocks)) })?;
                }
                buffers.extrema = Some(e);
            }
            inputs.push(Some(buffers));
        }
        let mut columns = Vec::with_capacity(plan.specs().len());
        for (s, spec) in plan.specs().iter().enumerate() {
            let Some(input) = inputs[spec.input].as_ref() else {
                return Err(KernelError::InputMismatch(format!(
                    "spec reads input {} which has no buffers",
                    spec.input
                )));
            };
            let width = match spec.frame {
                Frame::Range { width_micros } => width_micros.max(0),
                Frame::Unbounded => -1,
            };
            let mut out = chunk.zeros::<f64>(n)?;
            let mut out_valid = chunk.zeros::<u8>(n)?;
            let exact = plan.is_exact_output(s);
            let mut out_int = if exact {
                Some(chunk.zeros::<i64>(n)?)
            } else {
                None
            };
            {
                let kind = kind_code(spec.kind);
                let mut b = stream.launch_builder(&self.kernels.window_aggregate);
                b.arg(&n64)
                    .arg(&d_offsets)
                    .arg(&d_segment)
                    .arg(&d_times)
                    .arg(&kind)
                    .arg(&width)
                    .arg(&input.values);
                arg_or_null(&mut b, input.valid.as_ref());
                b.arg(&input.count)
                    .arg(&input.nan)
                    .arg(&input.pos_inf)
                    .arg(&input.neg_inf);
                args_or_nulls(&mut b, input.sums.as_ref());
                args_or_nulls(&mut b, input.extrema.as_ref());
                arg_or_null(&mut b, input.ivalues.as_ref());
                arg_or_null(&mut b, input.isum.as_ref());
                b.arg(&mut out).arg(&mut out_valid);
                arg_mut_or_null(&mut b, out_int.as_mut());
                // SAFETY: as above; the kernel reads sums and extrema only for kinds that
                // need them, which `needs` allocated, and writes `out_int` only for integer
                // inputs' sums, minima and maxima, the specs the plan marks exact.
                launch("window_aggregate", unsafe { b.launch(grid(n)) })?;
            }
            let values = chunk.download(&out, n)?;
            let valid = chunk.download(&out_valid, n)?;
            let exact = match &out_int {
                Some(v) => Some(chunk.download(v, n)?),
                None => None,
            };
            columns.push(Column {
                values,
                valid: valid.into_iter().map(|v| v != 0).collect(),
                exact,
            });
        }
        stream
            .synchronize()
            .map_err(device_error("the window kernels failed"))?;
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats.bytes_moved += chunk.moved;
        stats.peak_device_bytes = stats.peak_device_bytes.max(chunk.device_bytes);
        Ok(columns)
    }
}
