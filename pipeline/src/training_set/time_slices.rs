//! A key partition too large to evaluate at once (a hot key's events and spine rows), evaluated
//! in time slices instead: its events and probes are cut by time into slices of about a given
//! size, all rows of one time in one slice, and the slices run in time order through the
//! view's streaming windows ([`KeyedWindows`]). The windows carry each key's state from one
//! slice to the next and forget what no later row can read, so memory holds a slice and the
//! windows' state (the events inside each key's widest bounded window, one aggregate for an
//! unbounded one) instead of the whole partition.
//!
//! A probe is applied as a row with every input NULL at its spine time, with the events of its
//! key and time (so ties at the time are counted) and read; it counts in no aggregate. Each
//! probe's slice is recorded in the order the probes were pushed, and the slices' features are
//! put back in that order before they are stored, as the partition's.
//!
//! `--as-known-at` partitions are not cut: a probe there sees the events *available* at its
//! time, which the streaming windows, ordered by event time, cannot tell apart.

use crate::error::JobError;
use crate::evaluation_permits::EvaluationPermits;
use crate::spill::{push_partitioned, RowCursor, Spill, SpilledBatches};
use crate::time_cuts::{slice_of, TimeCuts};
use crate::training_set::assembly::Routed;
use crate::training_set::partitioned::{
    append_events, append_probes, evaluated_time, push_in_chunks, result_chunk_rows, route_schema,
    wanted_features, RowBytes,
};
use crate::training_set::probes::{null_times, probe_features, EventRows};
use arrow::array::{AsArray, Int64Array, RecordBatch, UInt16Array};
use arrow::datatypes::{Int64Type, SchemaRef};
use quiver_gpu::{FeatureOutput, KeyedWindows};
use quiver_sql::FeatureView;
use std::sync::Arc;

/// The most slices a partition is cut into: its events' and its probes' slices are files open
/// at once while it is cut.
const MAX_SLICES: usize = 256;

/// What cutting and evaluating a hot partition needs from its view's evaluation.
pub(crate) struct Slicing<'a> {
    pub view: &'a FeatureView,
    /// The spilled forms of events and probes.
    pub event_schema: &'a SchemaRef,
    pub probe_schema: &'a SchemaRef,
    /// The features stored, and their schema.
    pub wanted: &'a [String],
    pub result_schema: &'a SchemaRef,
    /// Bytes per event and probe, held and at evaluation.
    pub bytes: &'a RowBytes,
    /// Evaluation bytes a slice is cut to take.
    pub slice_bytes: usize,
    /// Evaluations held to the budget (a slice at a time holds one).
    pub permits: &'a EvaluationPermits,
    /// A spill for slices (in memory or in files, as the view's partitions are).
    pub spill: &'a (dyn Fn(&str, SchemaRef, usize) -> Spill + Sync),
    /// Rows of a stored result batch.
    pub chunk: usize,
    /// Counts each slice's events and probes once evaluated.
    pub progress: &'a indicatif::ProgressBar,
}

/// One partition's rows, read twice: once for their times (where to cut), once to cut them.
pub(crate) struct HotPartition {
    pub partition: usize,
    pub events_for_times: SpilledBatches,
    pub probes_for_times: SpilledBatches,
    pub events: SpilledBatches,
    pub probes: SpilledBatches,
    /// Rows, and bytes to evaluate them at once.
    pub rows: usize,
    pub working: usize,
}

/// What evaluating a partition in slices did.
pub(crate) struct Sliced {
    pub slices: usize,
    /// Events and probes of the largest slice.
    pub largest_slice_rows: usize,
}

/// Evaluates `hot` in time slices, and pushes its probes' features, in the order its probes
/// were pushed, to its partition of `results`.
pub(crate) fn evaluate_in_slices(
    slicing: &Slicing<'_>,
    hot: HotPartition,
    results: &std::sync::Mutex<Spill>,
) -> Result<Sliced, JobError> {
    let view = slicing.view;
    let fail = |e: &dyn std::fmt::Display| JobError::in_view(view.name(), e);
    let slices = hot.working.div_ceil(slicing.slice_bytes.max(1));
    let bounds = cut_times(hot.events_for_times, hot.probes_for_times, hot.rows, slices)?;
    let name = |what: &str| format!("{}-hot-{}-{what}", view.name(), hot.partition);
    let mut events = (slicing.spill)(
        &name("events"),
        Arc::clone(slicing.event_schema),
        bounds.len() + 1,
    );
    let mut probes = (slicing.spill)(
        &name("probes"),
        Arc::clone(slicing.probe_schema),
        bounds.len() + 1,
    );
    let mut routes = (slicing.spill)(&name("routes"), route_schema(), 1);
    for batch in hot.events {
        let batch = batch?;
        let slice = slices_of(&bounds, batch.column(1).as_primitive::<Int64Type>());
        push_partitioned(&mut events, &batch, None, &slice)?;
    }
    for batch in hot.probes {
        let batch = batch?;
        let slice = slices_of(&bounds, batch.column(1).as_primitive::<Int64Type>());
        push_partitioned(&mut probes, &batch, None, &slice)?;
        let route = RecordBatch::try_new(route_schema(), vec![Arc::new(UInt16Array::from(slice))])
            .map_err(|e| fail(&e))?;
        routes.push(0, route)?;
    }
    events.finish()?;
    probes.finish()?;
    routes.finish()?;

    // The slices in time order through one set of windows.
    let mut windows = KeyedWindows::new(view.window_plan().clone());
    let mut features = (slicing.spill)(
        &name("features"),
        Arc::clone(slicing.result_schema),
        bounds.len() + 1,
    );
    // The slices' features are read back side by side to put them in probe order.
    let slice_chunk =
        result_chunk_rows(slicing.slice_bytes, bounds.len() + 1, slicing.wanted.len());
    let mut largest_slice_rows = 0;
    for s in 0..events.partitions() {
        let (event_rows, probe_rows) = (events.rows(s), probes.rows(s));
        largest_slice_rows = largest_slice_rows.max(event_rows + probe_rows);
        let working = event_rows * slicing.bytes.working_event
            + probe_rows * slicing.bytes.working_probe
            + windows.retained_events() * slicing.bytes.stored_event;
        let _permit = slicing.permits.acquire_blocking(working)?;
        let event_batches = events.take(s)?.collect::<Result<Vec<_>, _>>()?;
        let probe_batches = probes.take(s)?.collect::<Result<Vec<_>, _>>()?;
        // Probes first: their outputs are the first rows, kept by truncating the rest.
        let mut rows = EventRows::with_capacity(view, event_rows + probe_rows);
        let probe_times = append_probes(&mut rows, &probe_batches);
        append_events(&mut rows, &event_batches, None);
        let inputs = rows.columns();
        let mut output = windows
            .apply(&rows.keys, &rows.times, &inputs)
            .map_err(|e| fail(&e))?;
        drop(inputs);
        drop(rows);
        slicing.progress.inc((event_rows + probe_rows) as u64);
        if let Some(&next) = bounds.get(s) {
            // Every later row is at `next` or after it.
            windows.expire(next);
        }
        if probe_rows == 0 {
            continue;
        }
        keep_first_rows(&mut output, probe_rows);
        let probe_features =
            probe_features(view, output, probe_rows, null_times(&probe_times).as_ref())?;
        let batch = wanted_features(view, &probe_features, slicing.wanted, slicing.result_schema)?;
        push_in_chunks(&mut features, s, &batch, slice_chunk)?;
    }
    drop(windows);
    features.finish()?;

    // Back in the order the probes were pushed.
    let probe_count = routes.rows(0);
    let cursors = (0..features.partitions())
        .map(|s| {
            let batches = features.take(s)?;
            Ok(RowCursor::new(Arc::clone(slicing.result_schema), batches))
        })
        .collect::<Result<Vec<_>, JobError>>()?;
    let mut in_order = Routed::new(&mut routes, cursors)?;
    let mut done = 0;
    while done < probe_count {
        let n = slicing.chunk.min(probe_count - done);
        let columns = in_order.next_rows(n)?;
        let batch = RecordBatch::try_new(Arc::clone(slicing.result_schema), columns)
            .map_err(|e| fail(&e))?;
        results
            .lock()
            .expect("not poisoned")
            .push(hot.partition, batch)?;
        done += n;
    }
    Ok(Sliced {
        slices: bounds.len() + 1,
        largest_slice_rows,
    })
}

/// Where to cut the `rows` events and probes of `events` and `probes` into about `slices`
/// slices: the slices' lower bounds.
fn cut_times(
    events: SpilledBatches,
    probes: SpilledBatches,
    rows: usize,
    slices: usize,
) -> Result<Vec<i64>, JobError> {
    let mut cuts = TimeCuts::sampling(rows);
    for batch in events.chain(probes) {
        let batch = batch?;
        let times = batch.column(1).as_primitive::<Int64Type>();
        cuts.add(times.len(), |r| evaluated_time(times, r));
    }
    Ok(cuts.bounds(slices.min(MAX_SLICES)))
}

/// The slice of each of `times`, given the slices' lower `bounds`.
fn slices_of(bounds: &[i64], times: &Int64Array) -> Vec<u16> {
    (0..times.len())
        .map(|r| slice_of(bounds, evaluated_time(times, r)))
        .collect()
}

/// Drops every row of `output` after its first `rows`.
fn keep_first_rows(output: &mut FeatureOutput, rows: usize) {
    output.values.iter_mut().for_each(|v| v.truncate(rows));
    output.valid.iter_mut().for_each(|v| v.truncate(rows));
    output
        .exact
        .iter_mut()
        .flatten()
        .for_each(|v| v.truncate(rows));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_a_time_share_a_slice_and_null_times_count_as_zero() {
        let bounds = vec![10, 20];
        let times = Int64Array::from(vec![Some(5), Some(10), Some(19), None, Some(20), Some(99)]);
        assert_eq!(slices_of(&bounds, &times), vec![0, 1, 1, 0, 2, 2]);
    }

    #[test]
    fn first_rows_are_kept() {
        let mut output = FeatureOutput::new(2, 5);
        output.exact[1] = Some(vec![1, 2, 3, 4, 5]);
        keep_first_rows(&mut output, 2);
        assert_eq!(output.rows(), 2);
        assert_eq!(output.valid[0].len(), 2);
        assert_eq!(output.exact[1].as_deref(), Some(&[1, 2][..]));
    }
}
