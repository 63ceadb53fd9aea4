//! One feature view at run time: its compiled SQL and its keyed window state.

use crate::batch_compute::BatchCompute;
use crate::batch_evaluator::{BatchEvaluator, Evaluated};
use crate::checkpoint::view_state::KeyStates;
use crate::error::JobError;
use crate::operator::{Operator, OperatorState, StateRequest};
use arrow::array::StringArray;
use arrow::record_batch::RecordBatch;
use indicatif::ProgressBar;
use quiver_gpu::{
    FeatureOutput, Frame, InputColumn, KeyWindowState, KeyedWindows, PartWrites, PartsError,
};
use quiver_sql::FeatureView;
use quiver_store::online::{EntityWrite, OnlineStamp, OnlineWrite};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Rows applied to the kernels between progress callbacks during backfill.
const CHUNK_ROWS: usize = 64 * 1024;

/// Computes a view's features incrementally, batch after batch.
pub struct ViewOperator {
    view: Arc<FeatureView>,
    windows: KeyedWindows,
    busy: Duration,
    rows_in: u64,
    rows_out: u64,
    /// Plan fingerprint carried by state envelopes.
    fingerprint: u64,
    /// Counts applied events (backfill's progress bar; hidden otherwise).
    progress: ProgressBar,
    /// Event time between sweeps of idle state.
    expire_interval: i64,
    /// Watermark of the last sweep.
    expired_at: i64,
    /// Backfill's sorted evaluation of a whole input (see [`ViewOperator::with_batch_compute`]).
    batch: Option<BatchCompute>,
    /// Names of the source partitions, by index (feature rows' `_source_partition`).
    partitions: StringArray,
    /// The online store table (`view@version`) this view's changed keys go to, if any.
    online: Option<String>,
}

fn cannot_encode(view: &str, e: &dyn std::fmt::Display) -> JobError {
    JobError::Checkpoint(format!("cannot encode window state of `{view}`: {e}"))
}

/// Shortest event time between sweeps of idle window state.
const MIN_EXPIRE_INTERVAL_MICROS: i64 = 1_000_000;

/// The default event time between sweeps: the longest range window (at least one second). A
/// sweep visits every key, so it runs once per window length, not per batch; state of an idle
/// key lingers at most one window longer than it is needed (measured: sweeping four times per
/// window cost the demo about 10% of its time in its 1-hour merchant view).
pub fn default_expire_interval(view: &FeatureView) -> i64 {
    view.window_plan()
        .specs()
        .iter()
        .filter_map(|s| match s.frame {
            Frame::Range { width_micros } => Some(width_micros),
            Frame::Unbounded => None,
        })
        .max()
        .map_or(i64::MAX, |w| w.max(MIN_EXPIRE_INTERVAL_MICROS))
}

impl ViewOperator {
    /// An operator with empty state; `fingerprint` identifies the view's plan in snapshots.
    pub fn new(view: FeatureView, fingerprint: u64) -> Self {
        let windows = KeyedWindows::new(view.window_plan().clone());
        let expire_interval = default_expire_interval(&view);
        ViewOperator {
            view: Arc::new(view),
            windows,
            busy: Duration::ZERO,
            rows_in: 0,
            rows_out: 0,
            fingerprint,
            progress: ProgressBar::hidden(),
            expire_interval,
            expired_at: i64::MIN,
            batch: None,
            partitions: StringArray::from(Vec::<String>::new()),
            online: None,
        }
    }

    /// Computes only the keys `shard` owns: other events are dropped after the view's
    /// row-local part (one shard of a job, see [`crate::shard`]).
    pub fn set_shard(&mut self, shard: quiver_sql::KeyShard) -> Result<(), JobError> {
        let view = Arc::get_mut(&mut self.view).ok_or_else(|| {
            JobError::Other("a view's shard is set before its batches are evaluated".into())
        })?;
        view.set_shard(shard);
        Ok(())
    }

    /// Names the source partitions (by index) in the feature rows' lineage column.
    pub fn with_partitions(mut self, names: &[String]) -> Self {
        self.partitions = StringArray::from_iter_values(names);
        self
    }

    /// Evaluates each batch by sorting it and handing it to `compute`'s backends, a GPU when
    /// one is used, instead of applying it event by event. The evaluation keeps no window
    /// state, so each batch must hold every event of its keys: backfill's whole input, or one
    /// key partition of it.
    pub fn with_batch_compute(mut self, compute: BatchCompute) -> Self {
        self.batch = Some(compute);
        self
    }

    /// The evaluation of whole batches apart from the operator, when it evaluates them
    /// ([`ViewOperator::with_batch_compute`]): backfill evaluates several partitions at once.
    pub fn batch_evaluator(&self) -> Option<BatchEvaluator> {
        let compute = self.batch.clone()?;
        Some(BatchEvaluator::new(
            Arc::clone(&self.view),
            compute,
            self.partitions.clone(),
            self.progress.clone(),
        ))
    }

    /// Counts rows evaluated by a [`BatchEvaluator`]; returns their feature rows.
    fn count(&mut self, evaluated: Evaluated) -> RecordBatch {
        self.rows_in += evaluated.rows_in;
        self.rows_out += evaluated.features.num_rows() as u64;
        self.busy += evaluated.busy;
        evaluated.features
    }

    /// Writes the online store's table `table` (`view@version`): each barrier hands the changed
    /// keys' state over ([`Operator::checkpoint`]); changes are tracked from here if they were
    /// not already (then every key with state counts as changed).
    pub fn enable_online(&mut self, table: String) {
        if !self.windows.tracks_changes() {
            self.track_changes();
        }
        self.online = Some(table);
    }

    /// Counts applied events on `bar`, chunk by chunk.
    pub fn with_progress(mut self, bar: ProgressBar) -> Self {
        self.progress = bar;
        self
    }

    /// Sweeps idle state whenever the watermark moved `micros` of event time since the last
    /// sweep (default: [`default_expire_interval`]).
    pub fn with_expire_interval(mut self, micros: i64) -> Self {
        self.expire_interval = micros.max(1);
        self
    }

    /// The view.
    pub fn view(&self) -> &Arc<FeatureView> {
        &self.view
    }

    /// Time spent computing features (SQL evaluation + kernels), excluding I/O.
    pub fn busy(&self) -> Duration {
        self.busy
    }

    /// Rows received and feature rows produced.
    pub fn rows(&self) -> (u64, u64) {
        (self.rows_in, self.rows_out)
    }

    /// Keys with state and events retained in window state.
    pub fn state_size(&self) -> (usize, usize) {
        (self.windows.key_count(), self.windows.retained_events())
    }

    /// Computes the features of `batch`, whose events must not be older than any event applied
    /// before (the reorder buffer and backfill's sort guarantee it). `progress` is told how many
    /// rows were applied, chunk by chunk.
    pub async fn process(
        &mut self,
        batch: RecordBatch,
        progress: impl FnMut(usize),
    ) -> Result<RecordBatch, JobError> {
        let Some(evaluator) = self.batch_evaluator() else {
            return self.process_streaming(batch, progress).await;
        };
        let evaluated = evaluator.evaluate(batch).await?;
        Ok(self.count(evaluated))
    }

    /// [`ViewOperator::process`] event by event through the windows' state, which carries
    /// to the next batch, even when the operator evaluates whole batches otherwise (the
    /// slices of a key partition too large to evaluate at once).
    async fn process_streaming(
        &mut self,
        batch: RecordBatch,
        mut progress: impl FnMut(usize),
    ) -> Result<RecordBatch, JobError> {
        let started = Instant::now();
        self.rows_in += batch.num_rows() as u64;
        let inputs = self.view.prepare(batch).await?;
        let rows = inputs.times.len();
        let slots = self.windows.slots(&inputs.key_bytes());
        let order = self.windows.key_time_order(&slots, &inputs.times);
        let columns = InputColumn::all(&inputs.values, &inputs.validity, &inputs.exact);
        let mut out = FeatureOutput::new(self.view.window_plan().specs().len(), rows);
        let mut start = 0;
        while start < order.len() {
            // Never split a key's events with equal time: all are applied before any is read.
            let mut end = (start + CHUNK_ROWS).min(order.len());
            let same = |a: u32, b: u32| {
                slots[a as usize] == slots[b as usize]
                    && inputs.times[a as usize] == inputs.times[b as usize]
            };
            while end < order.len() && same(order[end], order[end - 1]) {
                end += 1;
            }
            self.windows.process(
                &slots,
                &inputs.times,
                &columns,
                &order[start..end],
                &mut out,
            )?;
            progress(end - start);
            start = end;
        }
        drop(columns);
        let features = self.view.finish(&inputs.batch, out, &self.partitions)?;
        self.rows_out += features.num_rows() as u64;
        self.busy += started.elapsed();
        Ok(features)
    }

    /// Applies `history` (events older than any the operator will see next) to the windows
    /// without emitting feature rows or counting them: a store run continuing a table.
    pub async fn warm_up(&mut self, history: RecordBatch) -> Result<(), JobError> {
        let (rows_in, rows_out, busy) = (self.rows_in, self.rows_out, self.busy);
        self.process(history, |_| {}).await?;
        (self.rows_in, self.rows_out, self.busy) = (rows_in, rows_out, busy);
        Ok(())
    }

    /// Releases state no event at or after `watermark` can read.
    pub fn expire(&mut self, watermark: i64) {
        let started = Instant::now();
        self.windows.expire(watermark);
        self.busy += started.elapsed();
    }

    /// Tracks which keys change, so that barriers can ask for incremental state
    /// ([`StateRequest::Changes`]); every key with state now counts as changed.
    pub fn track_changes(&mut self) {
        self.windows.track_changes();
    }

    /// Encodes the whole state of the keys accepted by `select` (e.g. one source partition's
    /// keys) in a versioned envelope carrying the plan fingerprint: every key's head and
    /// segments, sorted by key.
    pub fn snapshot_keys(&self, select: impl Fn(&[u8]) -> bool) -> Result<Vec<u8>, JobError> {
        self.encode_whole(select, &[])
    }

    /// [`ViewOperator::snapshot_keys`], taking the parts in `written` (keys' parts just
    /// written, e.g. for the online store) as they are instead of encoding them again.
    fn encode_whole(
        &self,
        select: impl Fn(&[u8]) -> bool,
        written: &[(Vec<u8>, PartWrites)],
    ) -> Result<Vec<u8>, JobError> {
        let name = self.view.name();
        let done: HashMap<&[u8], &PartWrites> =
            (written.iter()).map(|(k, w)| (&k[..], w)).collect();
        let mut parts = (self
            .windows
            .whole_parts(select, |key| done.get(key).copied()))
        .map_err(|e| cannot_encode(name, &e))?;
        parts.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let states = KeyStates {
            heads: parts.iter().map(|(k, p)| (*k, &p.head[..])).collect(),
            segments: (parts.iter())
                .flat_map(|(k, p)| p.segments.iter().map(|(id, s)| (*k, *id, &s[..])))
                .collect(),
            dropped: Vec::new(),
            forgotten: Vec::new(),
        };
        states
            .encode(self.fingerprint)
            .map_err(|e| cannot_encode(name, &e))
    }

    /// Restores whole state encoded by [`ViewOperator::snapshot_keys`] (or merged from
    /// incremental checkpoints); state of another plan, truncated or damaged bytes are errors
    /// naming the view.
    pub fn restore_keys(&mut self, bytes: &[u8]) -> Result<(), JobError> {
        let fail = |e: &dyn std::fmt::Display| {
            JobError::Checkpoint(format!(
                "cannot restore window state of view `{}`: {e}",
                self.view.name()
            ))
        };
        let states = KeyStates::decode(bytes, self.fingerprint).map_err(|e| fail(&e))?;
        if !states.forgotten.is_empty() || !states.dropped.is_empty() {
            return Err(fail(&"the state is incremental, not whole"));
        }
        let keys = (states.keys().map_err(|e| fail(&e))?.into_iter())
            .map(|k| {
                let (state, stored) = KeyWindowState::from_parts(k.head, &k.segments)?;
                Ok((k.key.to_vec(), state, stored))
            })
            .collect::<Result<Vec<_>, PartsError>>()
            .map_err(|e| fail(&e))?;
        self.windows.restore_parts(keys);
        Ok(())
    }
}

#[async_trait::async_trait]
impl Operator for ViewOperator {
    async fn on_batch(&mut self, batch: RecordBatch) -> Result<RecordBatch, JobError> {
        let progress = self.progress.clone();
        self.process(batch, |n| progress.inc(n as u64)).await
    }

    async fn on_slice(&mut self, batch: RecordBatch) -> Result<RecordBatch, JobError> {
        let progress = self.progress.clone();
        self.process_streaming(batch, |n| progress.inc(n as u64))
            .await
    }

    fn on_slices_end(&mut self) {
        self.windows = KeyedWindows::new(self.view.window_plan().clone());
    }

    fn on_evaluated(&mut self, evaluated: Evaluated) -> RecordBatch {
        self.count(evaluated)
    }

    fn on_watermark(&mut self, watermark: i64) {
        if self.expire_interval == i64::MAX {
            return; // no range window: nothing ever expires
        }
        if self.expired_at == i64::MIN {
            self.expired_at = watermark; // the first watermark starts the sweep clock
        } else if watermark.saturating_sub(self.expired_at) >= self.expire_interval {
            self.expire(watermark);
            self.expired_at = watermark;
        }
    }

    fn checkpoint(&mut self, request: StateRequest) -> Result<OperatorState, JobError> {
        let started = Instant::now();
        // The changed keys' parts are encoded once, for the online store and for an
        // incremental checkpoint alike: each key's head and its newest events, not all of them.
        // When most keys changed and every stored segment is one just written, whole state
        // costs about as much and needs no merge later; segments written before would have to
        // be encoded again (a merchant's day of events at every checkpoint).
        let (keys, tracked) = (self.windows.key_count(), self.windows.tracks_changes());
        let name = self.view.name().to_string();
        let mut changes = self.windows.take_changes();
        let changes_asked = request == StateRequest::Changes && tracked;
        let mut written = Vec::new();
        if changes_asked || self.online.is_some() {
            written.reserve(changes.changed.len());
            for changed in &mut changes.changed {
                let parts = (changed.write_parts()).map_err(|e| cannot_encode(&name, &e))?;
                written.push((changed.key.to_vec(), parts));
            }
        }
        let changed = changes.changed.len();
        let deletes: Vec<Vec<u8>> = changes.forgotten.into_iter().map(Vec::from).collect();
        // Counted only when most keys changed (it is a pass over every key).
        let every_segment_just_written = || {
            let new: usize = written.iter().map(|(_, p)| p.segments.len()).sum();
            self.windows.stored_segments() == new
        };
        let incremental = changes_asked && (changed * 2 < keys || !every_segment_just_written());
        let state = match request {
            StateRequest::Nothing => Vec::new(),
            _ if incremental => KeyStates {
                heads: (written.iter())
                    .map(|(k, p)| (&k[..], &p.head[..]))
                    .collect(),
                segments: (written.iter())
                    .flat_map(|(k, p)| p.segments.iter().map(|(id, s)| (&k[..], *id, &s[..])))
                    .collect(),
                dropped: (written.iter())
                    .flat_map(|(k, p)| p.deletes.iter().map(|id| (&k[..], *id)))
                    .collect(),
                forgotten: deletes.iter().map(|k| &k[..]).collect(),
            }
            .encode(self.fingerprint)
            .map_err(|e| cannot_encode(&name, &e))?,
            _ => self.encode_whole(|_| true, &written)?,
        };
        let online = self.online.clone().map(|table| OnlineWrite {
            table,
            replace: false,
            stamp: OnlineStamp {
                run: String::new(),
                epoch: 0,
                watermark: None,
                committed_unix_ms: 0,
                fingerprint: self.fingerprint,
                keys: 0,
            },
            deletes,
            puts: (written.into_iter())
                .map(|(key, p)| EntityWrite {
                    key,
                    head: p.head,
                    deletes: p.deletes,
                    segments: p.segments,
                })
                .collect(),
            // The table holds this view's keys: a run's first write replaces it, recovery brings
            // it to the checkpoint the view restored, and every write brings the keys changed
            // or forgotten since. (The file's write counts its keys again.)
            keys_after: Some(keys as u64),
        });
        self.busy += started.elapsed();
        Ok(OperatorState {
            state,
            incremental,
            online,
        })
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), JobError> {
        self.restore_keys(state)
    }
}
