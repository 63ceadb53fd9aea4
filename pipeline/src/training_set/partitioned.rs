//! A view's point-in-time features over a spine in bounded memory: the view's events (read
//! from its event log batch by batch) and the spine's probes are sorted by a hash of their
//! entity key into partitions — in memory when everything fits the memory budget, else in
//! spill files — and each partition is evaluated alone, since a window only ever holds events
//! of one key. Each partition's features come out in spine order (its probes were pushed in
//! spine order), and a *route* per spine row records its partition, so the output is put back
//! together in spine order by reading each partition's features front to back.

use crate::batch_compute::BatchCompute;
use crate::error::JobError;
use crate::evaluation_permits::EvaluationPermits;
use crate::parquet_file::ParquetBatches;
use crate::progress::events_bar;
use crate::registry::event_log::EventLogReader;
use crate::spill::{partitions_of, push_partitioned, Spill, SpilledBatches};
use crate::training_set::probes::{
    missing_spine_key, null_times, probe_features, probe_windows, EncodedProbes, EventRows,
};
use crate::training_set::time_slices::{evaluate_in_slices, HotPartition, Slicing};
use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, FixedSizeBinaryArray, Float64Array, Int64Array,
    RecordBatch, UInt16Array,
};
use arrow::buffer::{Buffer, NullBuffer};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef};
use quiver_sql::{FeatureView, ViewInputs};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The most partitions a view is split into (each is a spill file while written).
pub const MAX_PARTITIONS: usize = 512;

/// Events and spine rows from which a view's partitions are evaluated on several threads.
const PARALLEL_ROWS: usize = 256 * 1024;

/// Rows a partition gets when there is enough work to share.
const PARTITION_ROWS: usize = 1 << 20;

/// What one view's evaluation left for the output.
pub(crate) struct ViewFeatures {
    /// Per partition, the wanted features of its probes in spine order.
    pub results: Spill,
    /// Per spine row in order, its partition (one partition of `UInt16`).
    pub routes: Spill,
    /// Events read from the log.
    pub events: usize,
    /// Partitions used.
    pub partitions: usize,
    /// Partitions too large to evaluate at once, evaluated in time slices instead, and
    /// their slices.
    pub sliced_partitions: usize,
    pub slices: usize,
    /// Events and spine rows of the largest partition or time slice evaluated at once.
    pub largest_evaluated_rows: usize,
}

/// What a view's evaluation needs besides the view.
pub(crate) struct Inputs<'a> {
    /// The spine file.
    pub spine: &'a Path,
    /// Its time column.
    pub time_column: &'a str,
    /// Count only events available at each spine time.
    pub as_known_at: bool,
    /// Bytes the partitions (while held in memory) and their evaluation may take.
    pub budget: usize,
    /// Where spill files go (created when needed).
    pub scratch: &'a Path,
    /// Draw progress bars.
    pub progress: bool,
    /// Partitions evaluated at once (each within `budget / threads`).
    pub threads: usize,
}

fn fail(view: &FeatureView, e: impl std::fmt::Display) -> JobError {
    JobError::in_view(view.name(), e)
}

/// The spilled form of a view's events: key, time, (availability,) then per kernel input its
/// float value or its exact value as 16 little-endian bytes.
fn event_schema(view: &FeatureView, as_known_at: bool) -> SchemaRef {
    let mut fields = vec![
        Field::new("key", DataType::Binary, false),
        Field::new("time", DataType::Int64, false),
    ];
    if as_known_at {
        fields.push(Field::new("available", DataType::Int64, false));
    }
    let plan = view.window_plan();
    for i in 0..plan.inputs() {
        let data_type = if plan.input_kind(i).is_exact() {
            DataType::FixedSizeBinary(16)
        } else {
            DataType::Float64
        };
        fields.push(Field::new(format!("input{i}"), data_type, true));
    }
    Arc::new(Schema::new(fields))
}

/// The spilled form of probes: key (empty for rows no event can match) and time (NULL for
/// NULL spine times).
fn probe_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Binary, false),
        Field::new("time", DataType::Int64, true),
    ]))
}

/// Each spine row's partition (or each probe's time slice), in row order.
pub(crate) fn route_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "partition",
        DataType::UInt16,
        false,
    )]))
}

/// `prepared` events (with their availability) in the spilled form, moving their buffers
/// rather than copying them.
fn event_batch(
    view: &FeatureView,
    schema: &SchemaRef,
    prepared: ViewInputs,
    available: Option<Vec<i64>>,
) -> Result<RecordBatch, JobError> {
    let ViewInputs {
        keys,
        times,
        values,
        validity,
        exact,
        ..
    } = prepared;
    let keys = keys.try_into_binary().map_err(|e| fail(view, e))?;
    let mut columns: Vec<ArrayRef> = vec![Arc::new(keys), Arc::new(Int64Array::from(times))];
    if let Some(available) = available {
        columns.push(Arc::new(Int64Array::from(available)));
    }
    for ((values, validity), exact) in values.into_iter().zip(validity).zip(exact) {
        let nulls = validity.map(NullBuffer::from);
        let column: ArrayRef = match exact {
            Some(exact) => Arc::new(
                FixedSizeBinaryArray::try_new(16, Buffer::from_vec(exact), nulls)
                    .map_err(|e| fail(view, e))?,
            ),
            None => Arc::new(Float64Array::new(values.into(), nulls)),
        };
        columns.push(column);
    }
    RecordBatch::try_new(Arc::clone(schema), columns).map_err(|e| fail(view, e))
}

/// A view's event log read on a thread of its own (decoding overlaps the rest), batch by
/// batch with each row's availability.
struct LogBatches {
    batches: std::sync::mpsc::Receiver<Result<(RecordBatch, Vec<i64>), JobError>>,
}

impl LogBatches {
    fn read(mut log: EventLogReader) -> Self {
        let (sender, batches) = std::sync::mpsc::sync_channel(2);
        std::thread::spawn(move || loop {
            let mut available = Vec::new();
            let next = log.next_batch(&mut available);
            let last = !matches!(next, Ok(Some(_)));
            let sent = match next {
                Ok(Some(batch)) => sender.send(Ok((batch, available))),
                Ok(None) => break,
                Err(e) => sender.send(Err(e)),
            };
            if last || sent.is_err() {
                break;
            }
        });
        LogBatches { batches }
    }

    /// The next batch prepared for `view` (its row-local part, which may drop rows, and its
    /// kernel inputs) and, with `as_known_at`, the availability of each row it kept.
    async fn next_prepared(
        &mut self,
        view: &FeatureView,
        as_known_at: bool,
    ) -> Result<Option<(ViewInputs, Option<Vec<i64>>)>, JobError> {
        let Ok(next) = self.batches.recv() else {
            return Ok(None);
        };
        let (batch, available) = next?;
        if !as_known_at {
            let prepared = view.prepare(batch).await.map_err(|e| fail(view, e))?;
            return Ok(Some((prepared, None)));
        }
        // Each kept row's availability: the view's WHERE may drop rows.
        let (prepared, kept) = crate::prepared_rows::prepare_tracking_rows(view, batch).await?;
        let kept = kept.iter().map(|&row| available[row as usize]).collect();
        Ok(Some((prepared, Some(kept))))
    }
}

/// Bytes per event and per probe: held in a spill, and taken at the peak of a partition's
/// evaluation (the rows read back, the kernels' copies — keys, times and inputs gathered in
/// key and time order, the sort, per-window work — and each probe's outputs), estimated from
/// the average encoded key length. The peak was calibrated on the fraud demo (13-byte keys,
/// 7 windows): ~250 bytes per row.
pub(crate) struct RowBytes {
    pub stored_event: usize,
    pub stored_probe: usize,
    pub working_event: usize,
    pub working_probe: usize,
}

impl RowBytes {
    fn estimate(view: &FeatureView, key_bytes: usize) -> Self {
        let inputs = view.window_plan().inputs();
        let outputs = view.window_plan().specs().len();
        let working_event = 2 * key_bytes + 128 + 48 * inputs + 16 * outputs;
        RowBytes {
            stored_event: key_bytes + 20 + 17 * inputs,
            stored_probe: key_bytes + 16,
            working_event,
            working_probe: working_event + 24 * outputs,
        }
    }
}

/// About the bytes a view's results for `spine_rows` spine rows take in memory until the
/// training set is assembled: `features` values of up to 16 bytes with their validity, and
/// each row's route.
pub(crate) fn held_results_bytes(spine_rows: usize, features: usize) -> usize {
    spine_rows * (17 * features + std::mem::size_of::<u16>())
}

/// Rows of a stored result batch of `features` features when `cursors` such batches are read
/// back at once (a spilled view's partitions at assembly, a hot partition's slices) within
/// `bytes`.
pub(crate) fn result_chunk_rows(bytes: usize, cursors: usize, features: usize) -> usize {
    let row_bytes = held_results_bytes(1, features);
    (bytes / (cursors.max(1) * row_bytes)).clamp(256, 64 * 1024)
}

/// Evaluates `wanted` features (output names `names`) of `view` over its event log `log` at
/// every spine row; see the module's description.
pub(crate) async fn evaluate_view(
    view: &FeatureView,
    log: EventLogReader,
    wanted: &[String],
    names: &[String],
    inputs: &Inputs<'_>,
    compute: &BatchCompute,
) -> Result<ViewFeatures, JobError> {
    let event_schema = event_schema(view, inputs.as_known_at);
    let log_rows = log.rows;
    let mut log = LogBatches::read(log);
    // The first batch tells how long keys are, which sizes the partitions.
    let mut first = log.next_prepared(view, inputs.as_known_at).await?;
    let mut spine = spine_reader(view, inputs)?;
    let spine_rows = spine.rows();
    let key_bytes = first
        .as_ref()
        .filter(|(p, _)| p.keys.num_rows() > 0)
        .map_or(16, |(p, _)| p.keys.size() / p.keys.num_rows());
    let bytes = RowBytes::estimate(view, key_bytes);
    let threads = inputs.threads.max(1);
    // Half the budget holds the partitions (in memory while they fit), half evaluates them:
    // enough partitions that `threads` of them fit it at once; with enough work to share,
    // about `PARTITION_ROWS` rows each (smaller sorts and key tables stay in cache), a
    // multiple of the threads so they finish together.
    // The results stay until the training set is assembled (after every view).
    let stored = log_rows as usize * bytes.stored_event
        + spine_rows * bytes.stored_probe
        + held_results_bytes(spine_rows, wanted.len());
    let working = log_rows as usize * bytes.working_event + spine_rows * bytes.working_probe;
    let evaluating = inputs.budget / 2;
    let rows = log_rows as usize + spine_rows;
    let partitions = working.div_ceil((evaluating / threads).max(1));
    let partitions = if rows >= PARALLEL_ROWS {
        partitions
            .max(rows.div_ceil(PARTITION_ROWS))
            .next_multiple_of(threads)
    } else {
        partitions
    }
    .clamp(1, MAX_PARTITIONS);
    let in_memory = stored <= inputs.budget - evaluating;
    let spill = |name: &str, schema: SchemaRef, n: usize| match in_memory {
        true => Spill::in_memory(name, schema, n),
        false => Spill::in_files(
            inputs.scratch,
            &format!("{}-{name}", view.name()),
            schema,
            n,
        ),
    };
    let mut events = spill("events", Arc::clone(&event_schema), partitions);
    let mut probes = spill("probes", probe_schema(), partitions);
    let mut routes = spill("routes", route_schema(), 1);

    let bar = events_bar(
        Some(log_rows + spine_rows as u64),
        inputs.progress,
        view.name(),
    );
    bar.set_message(format!("partitioning ({partitions} partitions)"));
    // Events, by key.
    let mut event_count = 0;
    while let Some((prepared, available)) = first.take() {
        let rows = prepared.times.len();
        let partition = partitions_of(prepared.keys.iter().map(|k| k.data()), partitions);
        let batch = event_batch(view, &event_schema, prepared, available)?;
        push_partitioned(&mut events, &batch, None, &partition)?;
        event_count += rows;
        bar.inc(rows as u64);
        first = log.next_prepared(view, inputs.as_known_at).await?;
    }
    events.finish()?;
    // Probes, by key, and each spine row's partition.
    for batch in spine.by_ref() {
        let batch = batch?;
        let times = batch.column_by_name(inputs.time_column).ok_or_else(|| {
            fail(
                view,
                format!("the spine has no column `{}`", inputs.time_column),
            )
        })?;
        let encoded = EncodedProbes::encode(view, &batch, times)?;
        let rows = batch.num_rows();
        let partition = partitions_of((0..rows).map(|r| encoded.key(r)), partitions);
        let probe = RecordBatch::try_new(
            probe_schema(),
            vec![
                Arc::new(BinaryArray::from_iter_values(
                    (0..rows).map(|r| encoded.key(r)),
                )),
                Arc::new(Int64Array::from_iter((0..rows).map(|r| {
                    (!encoded.times.is_null(r)).then(|| encoded.times.value(r))
                }))),
            ],
        )
        .map_err(|e| fail(view, e))?;
        push_partitioned(&mut probes, &probe, None, &partition)?;
        routes.push(
            0,
            RecordBatch::try_new(route_schema(), vec![Arc::new(UInt16Array::from(partition))])
                .map_err(|e| fail(view, e))?,
        )?;
        bar.inc(rows as u64);
    }
    probes.finish()?;
    routes.finish()?;

    // Each partition alone, on every core (one view's partitions share nothing).
    bar.set_position(0);
    bar.set_message(format!("evaluating {partitions} partitions"));
    let result_schema = result_schema(view, wanted, names)?;
    let results = std::sync::Mutex::new(spill("features", Arc::clone(&result_schema), partitions));
    // A spilled view's partitions are read back side by side at assembly, a batch each.
    let chunk = result_chunk_rows(inputs.budget / 8, partitions, wanted.len());
    // Largest first, so a partition of hot keys does not start last.
    let mut order: Vec<usize> = (0..partitions).collect();
    order.sort_by_key(|&p| std::cmp::Reverse(events.rows(p) + probes.rows(p)));
    let work = std::sync::Mutex::new((order.into_iter(), events, probes));
    let permits = EvaluationPermits::new(inputs.threads, evaluating);
    // A partition too large for the evaluation budget (a hot key's) is cut by time into
    // slices of half a thread's share, unless availability decides what a probe sees
    // (see `time_slices`). One up to the whole budget is evaluated at once, the other threads
    // waiting for what it leaves.
    let share = evaluating / threads;
    let probe_schema = probe_schema();
    let slicing = Slicing {
        view,
        event_schema: &event_schema,
        probe_schema: &probe_schema,
        wanted,
        result_schema: &result_schema,
        bytes: &bytes,
        slice_bytes: (share / 2).max(1),
        permits: &permits,
        spill: &spill,
        chunk,
        progress: &bar,
    };
    let largest_evaluated = AtomicUsize::new(0);
    let sliced = std::sync::Mutex::new((0usize, 0usize));
    let evaluate_next = || -> Result<bool, JobError> {
        let (p, events, probes, rows, working, reread) = {
            let mut work = work.lock().expect("not poisoned");
            let (next, events, probes) = &mut *work;
            let Some(p) = next.next() else {
                return Ok(false);
            };
            let rows = events.rows(p) + probes.rows(p);
            let working =
                events.rows(p) * bytes.working_event + probes.rows(p) * bytes.working_probe;
            // Read for the times first: taking an in-memory partition leaves nothing.
            let reread = match !inputs.as_known_at && working > evaluating {
                true => Some((events.read(p)?, probes.read(p)?)),
                false => None,
            };
            (p, events.take(p)?, probes.take(p)?, rows, working, reread)
        };
        if let Some((events_for_times, probes_for_times)) = reread {
            let hot = HotPartition {
                partition: p,
                events_for_times,
                probes_for_times,
                events,
                probes,
                rows,
                working,
            };
            let done = evaluate_in_slices(&slicing, hot, &results)?;
            largest_evaluated.fetch_max(done.largest_slice_rows, Ordering::Relaxed);
            let mut sliced = sliced.lock().expect("not poisoned");
            sliced.0 += 1;
            sliced.1 += done.slices;
            // Its rows were counted slice by slice.
            return Ok(true);
        }
        largest_evaluated.fetch_max(rows, Ordering::Relaxed);
        let features = {
            let _permit = permits.acquire_blocking(working)?;
            evaluate_partition(view, events, probes, inputs.as_known_at, compute)?
        };
        let features = wanted_features(view, &features, wanted, &result_schema)?;
        push_in_chunks(
            &mut results.lock().expect("not poisoned"),
            p,
            &features,
            chunk,
        )?;
        bar.inc(rows as u64);
        Ok(true)
    };
    let threads = inputs.threads.clamp(1, partitions);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    while evaluate_next()? {}
                    Ok::<(), JobError>(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join().unwrap_or_else(|_| {
                Err(fail(
                    view,
                    "evaluating a partition failed unexpectedly (a bug)",
                ))
            })
        })
    })?;
    let mut results = results.into_inner().expect("not poisoned");
    results.finish()?;
    bar.finish_and_clear();
    let (sliced_partitions, slices) = sliced.into_inner().expect("not poisoned");
    Ok(ViewFeatures {
        results,
        routes,
        events: event_count,
        partitions,
        sliced_partitions,
        slices,
        largest_evaluated_rows: largest_evaluated.into_inner(),
    })
}

/// The spine's key and time columns of `view`, batch by batch.
fn spine_reader(view: &FeatureView, inputs: &Inputs<'_>) -> Result<ParquetBatches, JobError> {
    ParquetBatches::open_selecting(inputs.spine, "the spine", |schema| {
        let names = view.key_names().iter().map(String::as_str);
        names
            .chain([inputs.time_column])
            .map(|name| {
                schema
                    .index_of(name)
                    .map_err(|_| missing_spine_key(view, name, schema))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    })
}

/// The output columns of a view: `wanted` features as `names`, typed as the view types them.
fn result_schema(
    view: &FeatureView,
    wanted: &[String],
    names: &[String],
) -> Result<SchemaRef, JobError> {
    let output = view.output_schema();
    let fields = wanted
        .iter()
        .zip(names)
        .map(|(w, name)| {
            output
                .field_with_name(w)
                .map(|f| Field::new(name, f.data_type().clone(), true))
                .map_err(|e| fail(view, e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

/// The point-in-time features of one partition's probes (in the order pushed) over its
/// events.
fn evaluate_partition(
    view: &FeatureView,
    events: SpilledBatches,
    probes: SpilledBatches,
    as_known_at: bool,
    compute: &BatchCompute,
) -> Result<RecordBatch, JobError> {
    let events = events.collect::<Result<Vec<_>, _>>()?;
    let probes = probes.collect::<Result<Vec<_>, _>>()?;
    // Room for the probes too, which the evaluation appends.
    let count = |batches: &[RecordBatch]| batches.iter().map(|b| b.num_rows()).sum::<usize>();
    let mut rows = EventRows::with_capacity(view, count(&events) + count(&probes));
    let mut available = Vec::new();
    append_events(&mut rows, &events, as_known_at.then_some(&mut available));
    let mut probe_keys: Vec<&[u8]> = Vec::new();
    for batch in &probes {
        probe_keys.extend(probe_keys_of(batch));
    }
    let times = probe_times_of(&probes);
    let probe_times = evaluated_times(&times);
    let count = probe_times.len();
    let windows = probe_windows(
        view,
        rows,
        as_known_at.then_some(available.as_slice()),
        &probe_keys,
        &probe_times,
        compute,
    )?;
    probe_features(view, windows, count, null_times(&times).as_ref())
}

/// Appends the spilled `events` (of [`event_schema`]) to `rows`, and their availability to
/// `available` when given (the schema has it then).
pub(crate) fn append_events<'b>(
    rows: &mut EventRows<'b>,
    events: &'b [RecordBatch],
    mut available: Option<&mut Vec<i64>>,
) {
    let first_input = if available.is_some() { 3 } else { 2 };
    for batch in events {
        let keys = batch.column(0).as_binary::<i32>();
        rows.keys.extend(keys.iter().map(|k| k.unwrap_or(&[])));
        rows.times
            .extend_from_slice(batch.column(1).as_primitive::<Int64Type>().values());
        if let Some(available) = available.as_deref_mut() {
            available.extend_from_slice(batch.column(2).as_primitive::<Int64Type>().values());
        }
        for i in 0..rows.values.len() {
            let column = batch.column(first_input + i);
            match column.nulls() {
                Some(nulls) => rows.validity[i].extend(nulls.iter()),
                None => rows.validity[i].extend(std::iter::repeat_n(true, column.len())),
            }
            match &mut rows.exact[i] {
                Some(exact) => exact.extend(
                    column
                        .as_fixed_size_binary()
                        .values()
                        .chunks_exact(16)
                        .map(|b| i128::from_le_bytes(b.try_into().expect("16 bytes"))),
                ),
                None => {
                    rows.values[i].extend_from_slice(column.as_primitive::<Float64Type>().values())
                }
            }
        }
    }
}

/// Appends the spilled `probes` (of [`probe_schema`]) to `rows` as rows with every input
/// NULL, a NULL time as 0; returns their times (NULL where the spine's is).
pub(crate) fn append_probes<'b>(rows: &mut EventRows<'b>, probes: &'b [RecordBatch]) -> Int64Array {
    let times = probe_times_of(probes);
    let keys: Vec<&[u8]> = probes.iter().flat_map(probe_keys_of).collect();
    rows.append_probes(&keys, &evaluated_times(&times));
    times
}

/// The time probe `row` of `times` is evaluated (and cut) at: its spine time, 0 when that is
/// NULL (its features are nulled).
pub(crate) fn evaluated_time(times: &Int64Array, row: usize) -> i64 {
    if times.is_null(row) {
        0
    } else {
        times.value(row)
    }
}

/// [`evaluated_time`] of every probe of `times`.
fn evaluated_times(times: &Int64Array) -> Vec<i64> {
    (0..times.len()).map(|r| evaluated_time(times, r)).collect()
}

/// The keys of a spilled probe batch (empty for probes no event can match).
fn probe_keys_of(batch: &RecordBatch) -> impl Iterator<Item = &[u8]> {
    (batch.column(0).as_binary::<i32>().iter()).map(|k| k.unwrap_or(&[]))
}

/// The times of spilled probe batches, NULL where the spine's is.
fn probe_times_of(probes: &[RecordBatch]) -> Int64Array {
    probes
        .iter()
        .flat_map(|b| b.column(1).as_primitive::<Int64Type>().iter())
        .collect()
}

/// The `wanted` columns of a partition's `features`, as `schema` names them.
pub(crate) fn wanted_features(
    view: &FeatureView,
    features: &RecordBatch,
    wanted: &[String],
    schema: &SchemaRef,
) -> Result<RecordBatch, JobError> {
    let columns = wanted
        .iter()
        .map(|name| {
            features
                .column_by_name(name)
                .cloned()
                .ok_or_else(|| fail(view, format!("no feature `{name}` (internal error)")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(Arc::clone(schema), columns).map_err(|e| fail(view, e))
}

/// Pushes `batch` to `partition` of `spill` in batches of at most `chunk` rows (a result
/// spilled to files is read back a batch at a time).
pub(crate) fn push_in_chunks(
    spill: &mut Spill,
    partition: usize,
    batch: &RecordBatch,
    chunk: usize,
) -> Result<(), JobError> {
    let mut offset = 0;
    while offset < batch.num_rows() {
        let n = chunk.max(1).min(batch.num_rows() - offset);
        spill.push(partition, batch.slice(offset, n))?;
        offset += n;
    }
    Ok(())
}
