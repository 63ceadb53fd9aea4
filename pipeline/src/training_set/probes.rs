//! Window values as of probe times: a view's events and *probe* rows (an entity key and a
//! time, every kernel input NULL) evaluated together, so each probe's windows end at its time
//! and hold exactly its key's events in them (ties at the time included) without counting the
//! probe. What training sets (per partition), lineage and `verify-online` compute.

use crate::batch_compute::BatchCompute;
use crate::error::JobError;
use arrow::array::{Array, AsArray, BooleanArray, RecordBatch, TimestampMicrosecondArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Schema, TimeUnit, TimestampMicrosecondType};
use quiver_gpu::{evaluate_as_known_at, FeatureOutput, InputColumn, KnownEvents, Scatter};
use quiver_sql::{FeatureView, ViewInputs};

/// Spine rows as probes of one view: their encoded keys and times.
pub(crate) struct EncodedProbes {
    keys: arrow::row::Rows,
    /// Rows no event can match: a NULL key (SQL equality) or a NULL time (no window).
    unmatched: Vec<bool>,
    /// The spine's times (µs).
    pub times: TimestampMicrosecondArray,
}

impl EncodedProbes {
    /// The probes of `spine`'s rows for `view`: its key columns (by the view's key names)
    /// at `times` (any timestamp or date type).
    pub fn encode(
        view: &FeatureView,
        spine: &RecordBatch,
        times: &dyn Array,
    ) -> Result<Self, JobError> {
        let fail = |e: &dyn std::fmt::Display| JobError::in_view(view.name(), e);
        let times = cast(times, &DataType::Timestamp(TimeUnit::Microsecond, None))
            .map_err(|e| JobError::Other(format!("the spine's time column: {e}")))?
            .as_primitive::<TimestampMicrosecondType>()
            .clone();
        let key_columns = view
            .key_names()
            .iter()
            .map(|name| {
                (spine.column_by_name(name).cloned())
                    .ok_or_else(|| missing_spine_key(view, name, &spine.schema()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let keys = view.encode_keys(&key_columns).map_err(|e| fail(&e))?;
        let unmatched = (0..spine.num_rows())
            .map(|r| times.is_null(r) || key_columns.iter().any(|c| c.is_null(r)))
            .collect();
        Ok(EncodedProbes {
            keys,
            unmatched,
            times,
        })
    }

    /// The key of row `r`: empty (no event has it) for rows that match no event.
    pub fn key(&self, r: usize) -> &[u8] {
        if self.unmatched[r] {
            &[]
        } else {
            self.keys.row(r).data()
        }
    }

    /// The time of row `r` (0 for NULL: its features are nulled).
    pub fn time(&self, r: usize) -> i64 {
        if self.times.is_null(r) {
            0
        } else {
            self.times.value(r)
        }
    }
}

/// A view's events as the kernels read them, in any order.
pub(crate) struct EventRows<'a> {
    /// Encoded entity key per event.
    pub keys: Vec<&'a [u8]>,
    /// Event time per event (µs).
    pub times: Vec<i64>,
    /// Per kernel input: float values (empty for exact inputs).
    pub values: Vec<Vec<f64>>,
    /// Per kernel input: validity per event.
    pub validity: Vec<Vec<bool>>,
    /// Per kernel input: exact values of exact inputs.
    pub exact: Vec<Option<Vec<i128>>>,
}

impl<'a> EventRows<'a> {
    /// No events, with `view`'s kernel inputs.
    pub fn empty(view: &FeatureView) -> Self {
        Self::with_capacity(view, 0)
    }

    /// No events, with `view`'s kernel inputs and room for `rows` rows.
    pub fn with_capacity(view: &FeatureView, rows: usize) -> Self {
        let plan = view.window_plan();
        let exact = |i: usize| plan.input_kind(i).is_exact();
        EventRows {
            keys: Vec::with_capacity(rows),
            times: Vec::with_capacity(rows),
            values: (0..plan.inputs())
                .map(|i| Vec::with_capacity(if exact(i) { 0 } else { rows }))
                .collect(),
            validity: (0..plan.inputs())
                .map(|_| Vec::with_capacity(rows))
                .collect(),
            exact: (0..plan.inputs())
                .map(|i| exact(i).then(|| Vec::with_capacity(rows)))
                .collect(),
        }
    }

    /// The events of `prepared` batches (see [`crate::training_set::prepare_events`]).
    pub fn from_prepared(view: &FeatureView, prepared: &'a [ViewInputs]) -> Self {
        let mut rows = EventRows::empty(view);
        for p in prepared {
            let n = p.times.len();
            rows.keys
                .extend((0..p.keys.num_rows()).map(|i| p.keys.row(i).data()));
            rows.times.extend_from_slice(&p.times);
            for i in 0..rows.values.len() {
                match (&mut rows.exact[i], &p.exact[i]) {
                    (Some(exact), Some(values)) => exact.extend_from_slice(values),
                    (Some(exact), None) => exact.extend(std::iter::repeat_n(0, n)),
                    (None, _) => rows.values[i].extend_from_slice(&p.values[i]),
                }
                match &p.validity[i] {
                    Some(valid) => rows.validity[i].extend_from_slice(valid),
                    None => rows.validity[i].extend(std::iter::repeat_n(true, n)),
                }
            }
        }
        rows
    }

    /// Appends probes: rows of `keys` at `times` with every input NULL.
    pub fn append_probes(&mut self, keys: &[&'a [u8]], times: &[i64]) {
        self.keys.extend_from_slice(keys);
        self.times.extend_from_slice(times);
        let total = self.times.len();
        for i in 0..self.values.len() {
            match &mut self.exact[i] {
                Some(exact) => exact.resize(total, 0),
                None => self.values[i].resize(total, 0.0),
            }
            self.validity[i].resize(total, false);
        }
    }

    /// The kernel input columns.
    pub fn columns(&self) -> Vec<InputColumn<'_>> {
        (0..self.values.len())
            .map(|i| InputColumn {
                values: &self.values[i],
                validity: Some(&self.validity[i]),
                exact: self.exact[i].as_deref(),
            })
            .collect()
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.times.len()
    }
}

/// The error for a spine without the column `name`, a key of `view`.
pub(crate) fn missing_spine_key(view: &FeatureView, name: &str, spine: &Schema) -> JobError {
    JobError::Other(format!(
        "the spine has no column `{name}`, the key of view `{}`; its columns: {}",
        view.name(),
        super::column_names(spine)
    ))
}

/// The window outputs of `view` at each probe (`probe_keys`, `probe_times`, in probe order)
/// over `events`; with `available` (when each event became visible, in event order) only
/// events available at each probe's time count (`--as-known-at`).
pub(crate) fn probe_windows<'a>(
    view: &FeatureView,
    mut events: EventRows<'a>,
    available: Option<&[i64]>,
    probe_keys: &[&'a [u8]],
    probe_times: &[i64],
    compute: &BatchCompute,
) -> Result<FeatureOutput, JobError> {
    let fail = |e: &dyn std::fmt::Display| JobError::in_view(view.name(), e);
    let event_rows = events.len();
    if let Some(available) = available {
        if available.len() != event_rows {
            return Err(fail(&format!(
                "{} availability times for {event_rows} events",
                available.len()
            )));
        }
        let inputs = events.columns();
        let known = KnownEvents {
            keys: &events.keys,
            times: &events.times,
            available,
            inputs: &inputs,
        };
        return evaluate_as_known_at(view.window_plan(), &known, probe_keys, probe_times)
            .map_err(|e| fail(&e));
    }
    // The probes follow the events.
    let probes = probe_times.len();
    events.append_probes(probe_keys, probe_times);
    // Only the probes' windows are read: events are evaluated but not emitted.
    let emit: Vec<u32> = std::iter::repeat_n(Scatter::SKIP, event_rows)
        .chain(0..probes as u32)
        .collect();
    let inputs = events.columns();
    let windows = compute.evaluate_rows(
        view.window_plan(),
        &events.keys,
        &events.times,
        &inputs,
        Some(&emit),
        &indicatif::ProgressBar::hidden(),
    )?;
    Ok(windows)
}

/// The point-in-time features of `rows` probes from their window outputs; probes whose time
/// is NULL (`null_times`) get NULL features, the counts too.
pub(crate) fn probe_features(
    view: &FeatureView,
    windows: FeatureOutput,
    rows: usize,
    null_times: Option<&BooleanArray>,
) -> Result<RecordBatch, JobError> {
    let fail = |e: &dyn std::fmt::Display| JobError::in_view(view.name(), e);
    let features = view.features_at(windows, rows).map_err(|e| fail(&e))?;
    match null_times.filter(|n| n.true_count() > 0) {
        Some(null_times) => {
            let columns = features
                .columns()
                .iter()
                .map(|c| arrow::compute::nullif(c, null_times))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| fail(&e))?;
            RecordBatch::try_new(features.schema(), columns).map_err(|e| fail(&e))
        }
        None => Ok(features),
    }
}

/// Which of `times` are NULL, when any is.
pub(crate) fn null_times(times: &dyn Array) -> Option<BooleanArray> {
    (times.null_count() > 0).then(|| (0..times.len()).map(|r| Some(times.is_null(r))).collect())
}
