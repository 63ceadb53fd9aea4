//! Reading features from the online store at a request time T: every window ends at T.

use super::shard_tables::{combined_stamp, discovered_layout, shard_table};
use super::state_cache::{CachedState, StateCache, StatesFor};
use super::values_json::JsonCell;
use super::{decode_state, SharedOnline};
use crate::compile::CompiledPipeline;
use crate::error::JobError;
use crate::lineage::format_micros;
use arrow::array::{Array, ArrayRef, StringArray};
use arrow::datatypes::{Field, Schema};
use arrow::record_batch::RecordBatch;
use quiver_gpu::{KernelError, ReadState};
use quiver_sql::{FeatureView, KeyShard};
use quiver_store::online::{table_name, EntityState, OnlineStamp, WantedSegments};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// Why a read failed, in the terms a client needs (an HTTP status follows from it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadErrorKind {
    /// The request itself is wrong (unknown feature, bad key, a time before the store's).
    BadRequest,
    /// No such view, or nothing written for it yet.
    NotFound,
    /// The store failed or holds something this build cannot read.
    Internal,
}

/// A failed read.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ReadError {
    /// What kind of failure.
    pub kind: ReadErrorKind,
    /// What went wrong and how to fix it.
    pub message: String,
}

impl ReadError {
    fn bad(message: String) -> Self {
        ReadError {
            kind: ReadErrorKind::BadRequest,
            message,
        }
    }

    fn not_found(message: String) -> Self {
        ReadError {
            kind: ReadErrorKind::NotFound,
            message,
        }
    }

    fn internal(message: String) -> Self {
        ReadError {
            kind: ReadErrorKind::Internal,
            message,
        }
    }
}

/// How far past the time a read asks for its states' segments are read (µs): a server's
/// cached states then serve reads at "now" for this long before their oldest segments are
/// read again, and a read whose time is the watermark a little after the clock still finds
/// what it needs.
const SEGMENTS_AHEAD_MICROS: i64 = 60_000_000;

/// Why computing values from states failed: an error to report, or states read with only
/// some of their segments whose windows lose unread events at the read time.
enum ValuesFailure {
    Error(ReadError),
    Unread,
}

impl From<ReadError> for ValuesFailure {
    fn from(e: ReadError) -> Self {
        ValuesFailure::Error(e)
    }
}

/// One view the online store can be read for.
pub struct OnlineView {
    /// The compiled view.
    pub view: FeatureView,
    /// Its version (the hash of its normalized definition).
    pub version: String,
    /// Its online table (`view@version`); a sharded job's shards each write their own
    /// ([`shard_table`]).
    pub table: String,
    /// Fingerprint of its plan (the state encoding), checked against the table's stamp; `None`
    /// for a version compiled from the registry (its version hash names its definition).
    fingerprint: Option<u64>,
    /// How many shards wrote its state (0: one unsharded table).
    shards: AtomicU32,
    /// Whether the config sets the shard count (else it is what the store holds).
    pinned: bool,
}

impl OnlineView {
    /// The shard count of its tables (`None`: one unsharded table).
    pub fn shards(&self) -> Option<u32> {
        Some(self.shards.load(Ordering::Relaxed)).filter(|&n| n > 0)
    }

    /// Its tables: the one table, or each shard's in shard order.
    pub fn tables(&self) -> Vec<(Option<KeyShard>, String)> {
        match self.shards() {
            None => vec![(None, self.table.clone())],
            Some(count) => KeyShard::all(count)
                .map(|shard| (Some(shard), shard_table(&self.table, shard)))
                .collect(),
        }
    }

    /// What its tables among `tables` (a store's listing) are as of ([`combined_stamp`] for a
    /// sharded view); `None` until every table of it was written.
    pub fn stamp_in(&self, tables: &[(String, OnlineStamp)]) -> Option<OnlineStamp> {
        let mine: Vec<&OnlineStamp> = (self.tables().iter())
            .map(|(_, t)| tables.iter().find(|(name, _)| name == t).map(|(_, s)| s))
            .collect::<Option<_>>()?;
        combined_stamp(mine)
    }

    /// Sets its shard count from what `tables` hold, unless the config sets it; whether it
    /// changed.
    fn rediscover(&self, tables: &[(String, OnlineStamp)]) -> bool {
        if self.pinned {
            return false;
        }
        let found = discovered_layout(tables, &self.table).unwrap_or(0);
        self.shards.swap(found, Ordering::Relaxed) != found
    }

    /// The point-in-time features of the view to return: `wanted`, checked, or all.
    fn features(&self, wanted: Option<&[String]>) -> Result<Vec<String>, ReadError> {
        let view = &self.view;
        let available = view.point_in_time_features();
        match wanted {
            None => Ok(available),
            Some(wanted) => {
                if let Some(unknown) = wanted.iter().find(|f| !available.contains(f)) {
                    return Err(ReadError::bad(format!(
                        "view `{}` has no online feature `{unknown}`; its features are: {}",
                        view.name(),
                        available.join(", ")
                    )));
                }
                Ok(wanted.to_vec())
            }
        }
    }
}

/// A read request.
#[derive(Debug, Clone, Default)]
pub struct ReadRequest {
    /// `view` or `view@version`.
    pub view: String,
    /// Each entity's key values, in the view's key order, as text (cast to the key types).
    pub entities: Vec<Vec<String>>,
    /// The features to return (default: every point-in-time feature of the view).
    pub features: Option<Vec<String>>,
    /// The time windows end at (µs since the epoch); default: now, or the store's watermark
    /// if that is later.
    pub at: Option<i64>,
}

/// The answer to a read.
#[derive(Debug, Clone)]
pub struct OnlineValues {
    /// The view.
    pub view: String,
    /// Its version.
    pub version: String,
    /// The time every window ends at (µs).
    pub at: i64,
    /// What the state is as of: run, epoch, watermark, commit time (for a sharded view the
    /// [`combined_stamp`] of the shards read).
    pub stamp: OnlineStamp,
    /// A sharded view's shards read, each with its own stamp (empty when unsharded).
    pub shards: Vec<(KeyShard, OnlineStamp)>,
    /// One row per entity: the key columns (as given) and then the features.
    pub rows: RecordBatch,
}

impl OnlineValues {
    /// The values as a JSON value (what [`OnlineValues`] serializes to).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

impl std::fmt::Display for OnlineValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}@{} at {} (epoch {}, watermark {})",
            self.view,
            self.version,
            format_micros(self.at),
            self.stamp.epoch,
            self.stamp
                .watermark
                .map_or("none".to_string(), format_micros)
        )?;
        let schema = self.rows.schema();
        let cells: Vec<Vec<String>> =
            std::iter::once(schema.fields().iter().map(|f| f.name().clone()).collect())
                .chain((0..self.rows.num_rows()).map(|r| {
                    (self.rows.columns().iter())
                        .map(|c| match json_value(c.as_ref(), r) {
                            serde_json::Value::String(s) => s,
                            v => v.to_string(),
                        })
                        .collect()
                }))
                .collect();
        let widths: Vec<usize> = (0..schema.fields().len())
            .map(|c| cells.iter().map(|row| row[c].len()).max().unwrap_or(0))
            .collect();
        for row in &cells {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, &w)| format!("{cell:<w$}"))
                .collect();
            writeln!(f, "{}", line.join("  ").trim_end())?;
        }
        Ok(())
    }
}

/// The states of `view` as stored (with all or some of their segments), decoded.
pub fn decode_states(
    view: &FeatureView,
    states: &[Option<EntityState>],
) -> Result<Vec<Option<ReadState>>, ReadError> {
    let plan = view.window_plan();
    (states.iter())
        .map(|s| s.as_ref().map(|s| decode_state(plan, s)).transpose())
        .collect::<Result<_, _>>()
        .map_err(|e| {
            ReadError::internal(format!(
                "the online state of `{}` does not decode: {e}",
                view.name()
            ))
        })
}

/// Bytes of a stored state: its head and segments.
fn encoded_size(state: &EntityState) -> usize {
    state.head.len() + state.segments.iter().map(|(_, s)| s.len()).sum::<usize>()
}

/// One value of an Arrow column as JSON: numbers as numbers (non-finite floats as null),
/// decimals as exact strings, times as RFC 3339, the rest as their text (`JsonCell`).
pub fn json_value(column: &dyn Array, row: usize) -> serde_json::Value {
    serde_json::to_value(JsonCell(column, row)).unwrap_or(serde_json::Value::Null)
}

/// Reads the online store for the views of one pipeline, and for other versions of them
/// registered in the config's store.
pub struct OnlineReader {
    store: SharedOnline,
    views: Vec<Arc<OnlineView>>,
    /// The config's feature store, where other versions' definitions are.
    registry: crate::registry::Registry,
    /// Other versions compiled so far, by table.
    others: std::sync::Mutex<std::collections::HashMap<String, Arc<OnlineView>>>,
    /// Decoded states between reads (none unless [`OnlineReader::with_state_cache`]).
    cache: StateCache,
}

impl OnlineReader {
    /// A reader of `store` for the views of `pipeline` (their current definitions).
    ///
    /// A view's tables are sharded when the config's `source.kafka.shards` says so, else as the
    /// store holds them now (see [`super::shard_tables`]; looked at again when a read finds
    /// nothing).
    pub fn new(mut pipeline: CompiledPipeline, store: SharedOnline) -> Result<Self, JobError> {
        let tables = super::view_tables(&pipeline)?;
        let configured = (pipeline.loaded.config.source.kafka.as_ref()).and_then(|k| k.shards);
        let stored = match configured {
            Some(_) => Vec::new(),
            None => store.0.tables()?,
        };
        let mut views = Vec::with_capacity(tables.len());
        for ((view, identity), (version, table)) in std::mem::take(&mut pipeline.views)
            .into_iter()
            .zip(&pipeline.view_identities)
            .zip(tables)
        {
            let shards = configured.or_else(|| discovered_layout(&stored, &table));
            views.push(Arc::new(OnlineView {
                view,
                table,
                version,
                fingerprint: Some(identity.fingerprint()),
                shards: AtomicU32::new(shards.unwrap_or(0)),
                pinned: configured.is_some(),
            }));
        }
        Ok(OnlineReader {
            store,
            views,
            registry: pipeline.loaded.config.store_registry(None)?,
            others: Default::default(),
            cache: StateCache::new(0),
        })
    }

    /// Keeps up to `bytes` of decoded entity states between reads (a server's reads of the
    /// same entities within one epoch then skip the store and the decoding; 0: none).
    pub fn with_state_cache(mut self, bytes: usize) -> Self {
        self.cache = StateCache::new(bytes);
        self
    }

    /// Entities read from the state cache and from the store, since the reader was made.
    pub fn state_cache_counts(&self) -> (u64, u64) {
        self.cache.counts()
    }

    /// The config's views.
    pub fn views(&self) -> &[Arc<OnlineView>] {
        &self.views
    }

    /// The store.
    pub fn store(&self) -> &SharedOnline {
        &self.store
    }

    /// The view a request names: `view` (the config's version) or `view@version`, another
    /// version registered in the config's store whose online table a run wrote (it stays as
    /// of the last epoch a run of that version committed).
    pub async fn resolve(&self, name: &str) -> Result<Arc<OnlineView>, ReadError> {
        let (view, version) = match name.split_once('@') {
            Some((v, ver)) => (v, Some(ver)),
            None => (name, None),
        };
        let Some(current) = self.views.iter().find(|v| v.view.name() == view) else {
            let known: Vec<&str> = self.views.iter().map(|v| v.view.name()).collect();
            return Err(ReadError::not_found(format!(
                "no view `{view}`; the views are: {}",
                known.join(", ")
            )));
        };
        let version = match version {
            Some(v) if v != current.version => v,
            _ => return Ok(Arc::clone(current)),
        };
        let table = table_name(view, version);
        if let Some(found) = self.cached(&table) {
            return Ok(found);
        }
        let missing = || {
            ReadError::not_found(format!(
                "view `{view}` has no version {version} in the online store (the config's is {}); `quiver views` and `quiver describe {view}` list the registered versions",
                current.version
            ))
        };
        let tables = self
            .store
            .0
            .tables()
            .map_err(|e| ReadError::internal(e.to_string()))?;
        let shards = discovered_layout(&tables, &table);
        if shards.is_none() && !tables.iter().any(|(t, _)| *t == table) {
            return Err(missing());
        }
        let definition = self
            .registry
            .definition(view, Some(version))
            .map_err(|_| missing())?;
        let compiled = crate::registry::event_log::compile_registered(&self.registry, &definition)
            .await
            .map_err(|e| ReadError::internal(e.to_string()))?;
        let found = Arc::new(OnlineView {
            view: compiled,
            version: version.to_string(),
            table: table.clone(),
            fingerprint: None,
            shards: AtomicU32::new(shards.unwrap_or(0)),
            pinned: false,
        });
        let mut others = self.others.lock().unwrap_or_else(|e| e.into_inner());
        Ok(Arc::clone(others.entry(table).or_insert(found)))
    }

    fn cached(&self, table: &str) -> Option<Arc<OnlineView>> {
        let others = self.others.lock().unwrap_or_else(|e| e.into_inner());
        others.get(table).cloned()
    }

    /// Reads features of `online` (resolved from `request.view` by [`OnlineReader::resolve`])
    /// for `request`'s entities, every window ending at the request's time.
    pub fn read(
        &self,
        online: &OnlineView,
        request: &ReadRequest,
    ) -> Result<OnlineValues, ReadError> {
        let view = &online.view;
        let keys = view.key_names();
        if let Some(bad) = request.entities.iter().find(|e| e.len() != keys.len()) {
            return Err(ReadError::bad(format!(
                "view `{}` is keyed by {} ({}); entity {bad:?} has {} values",
                view.name(),
                keys.len(),
                keys.join(", "),
                bad.len()
            )));
        }
        let features = online.features(request.features.as_deref())?;
        let key_columns: Vec<ArrayRef> = (0..keys.len())
            .map(|k| {
                let values = request.entities.iter().map(|e| e[k].as_str());
                Arc::new(StringArray::from_iter_values(values)) as ArrayRef
            })
            .collect();
        let encoded = view
            .encode_keys(&key_columns)
            .map_err(|e| ReadError::bad(e.to_string()))?;
        let encoded: Vec<&[u8]> = (0..encoded.num_rows())
            .map(|r| encoded.row(r).data())
            .collect();
        self.read_encoded(online, &encoded, key_columns, &features, request.at)
    }

    /// Reads `features` of the entities whose encoded keys are `encoded` (and whose key
    /// columns, returned with the values, are `key_columns`) at `at` (default: now, or the
    /// watermark if later). When nothing is found and the view's layout is the store's, the
    /// store's tables are looked at again (a run of another layout may have written since).
    fn read_encoded(
        &self,
        online: &OnlineView,
        encoded: &[&[u8]],
        key_columns: Vec<ArrayRef>,
        features: &[String],
        at: Option<i64>,
    ) -> Result<OnlineValues, ReadError> {
        // States read for the time asked (default: the clock's; the watermark may be later),
        // with the segments windows ending then lose events from; read whole when that was
        // not enough (a later time, or moments to rebuild from a whole window).
        let mut wanted = StatesFor::ReadsFrom(at.unwrap_or_else(crate::clock::now_micros));
        loop {
            let (stamps, states) = match self.states(online, encoded, wanted) {
                Err(e) if e.kind == ReadErrorKind::NotFound && !online.pinned => {
                    let tables =
                        (self.store.0.tables()).map_err(|e| ReadError::internal(e.to_string()))?;
                    if !online.rediscover(&tables) {
                        return Err(e);
                    }
                    self.states(online, encoded, wanted)?
                }
                other => other?,
            };
            let states: Vec<Option<&ReadState>> = states.iter().map(|s| s.as_deref()).collect();
            match Self::compute(online, stamps, &states, key_columns.clone(), features, at) {
                Ok(values) => return Ok(values),
                Err(ValuesFailure::Error(e)) => return Err(e),
                Err(ValuesFailure::Unread) if wanted != StatesFor::Whole => {
                    wanted = StatesFor::Whole
                }
                Err(ValuesFailure::Unread) => return Err(Self::unread_error(online)),
            }
        }
    }

    /// The decoded states of the entities `encoded`, each from its shard's table when the view
    /// is sharded, with the stamp of each table read; each holding what `wanted` says.
    #[allow(clippy::type_complexity)]
    fn states(
        &self,
        online: &OnlineView,
        encoded: &[&[u8]],
        wanted: StatesFor,
    ) -> Result<(Vec<(Option<KeyShard>, OnlineStamp)>, Vec<CachedState>), ReadError> {
        let read = |table: &str, keys: &[&[u8]], shard: Option<KeyShard>| {
            self.table_states(online, table, keys, shard, wanted)
        };
        let Some(count) = online.shards() else {
            let (stamp, states) = read(&online.table, encoded, None)?;
            return Ok((vec![(None, stamp)], states));
        };
        // Each entity from the table of the shard owning its key.
        let mut by_shard: Vec<Vec<usize>> = vec![Vec::new(); count as usize];
        for (i, key) in encoded.iter().enumerate() {
            by_shard[KeyShard::of_key(key, count) as usize].push(i);
        }
        let mut states = vec![None; encoded.len()];
        let mut stamps = Vec::new();
        for (shard, rows) in KeyShard::all(count).zip(&by_shard) {
            if rows.is_empty() {
                continue;
            }
            let keys: Vec<&[u8]> = rows.iter().map(|&r| encoded[r]).collect();
            let (stamp, found) = read(&shard_table(&online.table, shard), &keys, Some(shard))?;
            for (&row, state) in rows.iter().zip(found) {
                states[row] = state;
            }
            stamps.push((Some(shard), stamp));
        }
        Ok((stamps, states))
    }

    /// The stamp of `table` (one of `online`'s, of `shard` when sharded) and the decoded
    /// states of `keys` in it, as of one epoch, each holding what `wanted` says (read from
    /// the store for reads from its time to [`SEGMENTS_AHEAD_MICROS`] later): from the state
    /// cache where it holds them at the table's current stamp, the rest from the store (and
    /// then kept).
    fn table_states(
        &self,
        online: &OnlineView,
        table: &str,
        keys: &[&[u8]],
        shard: Option<KeyShard>,
        wanted: StatesFor,
    ) -> Result<(OnlineStamp, Vec<CachedState>), ReadError> {
        let view = &online.view;
        let plan = view.window_plan();
        let segments = |head: &[u8]| match wanted {
            StatesFor::Whole => WantedSegments::All,
            StatesFor::ReadsFrom(t) => {
                let until = t.saturating_add(SEGMENTS_AHEAD_MICROS);
                quiver_gpu::segments_needed(plan, head, t, until)
                    .map_or(WantedSegments::All, WantedSegments::Only)
            }
        };
        let get = |keys: &[&[u8]]| {
            let read = (self.store.0)
                .get_selected(table, keys, &segments)
                .map_err(|e| ReadError::internal(e.to_string()))?
                .ok_or_else(|| {
                    let which = shard.map_or(String::new(), |s| format!(" by shard {s}"));
                    ReadError::not_found(format!(
                        "nothing was written to the online store for `{}` (version {}){which} yet: run `quiver run` on this config first",
                        view.name(),
                        online.version
                    ))
                })?;
            let sizes: Vec<usize> = (read.1.iter())
                .map(|s| s.as_ref().map_or(0, encoded_size))
                .collect();
            let states = (decode_states(view, &read.1)?.into_iter())
                .map(|s| s.map(Arc::new))
                .collect();
            Ok::<_, ReadError>((read.0, states, sizes))
        };
        if !self.cache.enabled() {
            let (stamp, states, _) = get(keys)?;
            return Ok((stamp, states));
        }
        // What the cache holds, then the rest from the store with the table's stamp (only the
        // stamp when the cache holds them all): one store read, two when an epoch committed
        // since the cached states were read.
        let lookup = self.cache.lookup(table, keys, wanted);
        let missing: Vec<&[u8]> = lookup.missing.iter().map(|&i| keys[i]).collect();
        let (stamp, read, sizes) = get(&missing)?;
        if !lookup.is_at(&stamp) {
            if missing.len() == keys.len() {
                self.cache.insert(table, &stamp, keys, &read, &sizes);
                return Ok((stamp, read));
            }
            let (stamp, states, sizes) = get(keys)?;
            self.cache.insert(table, &stamp, keys, &states, &sizes);
            return Ok((stamp, states));
        }
        self.cache.insert(table, &stamp, &missing, &read, &sizes);
        let mut states = lookup.found;
        for (i, state) in lookup.missing.into_iter().zip(read) {
            states[i] = Some(state);
        }
        Ok((stamp, states.into_iter().flatten().collect()))
    }

    /// `features` at `at` (default: now, or the newest watermark of the tables read if later)
    /// from the entities' decoded `states`, read from tables with `stamps` (one, or a sharded
    /// view's shards read), one row per entity with its key columns `key_columns`.
    pub fn values(
        online: &OnlineView,
        stamps: Vec<(Option<KeyShard>, OnlineStamp)>,
        states: &[Option<&ReadState>],
        key_columns: Vec<ArrayRef>,
        features: &[String],
        at: Option<i64>,
    ) -> Result<OnlineValues, ReadError> {
        match Self::compute(online, stamps, states, key_columns, features, at) {
            Ok(values) => Ok(values),
            Err(ValuesFailure::Error(e)) => Err(e),
            Err(ValuesFailure::Unread) => Err(Self::unread_error(online)),
        }
    }

    /// A read that still found unread events after reading its states whole.
    fn unread_error(online: &OnlineView) -> ReadError {
        ReadError::internal(format!(
            "view `{}`: windows lose events that were not read although every segment was",
            online.view.name()
        ))
    }

    /// [`OnlineReader::values`], telling states read with too few of their segments apart.
    fn compute(
        online: &OnlineView,
        stamps: Vec<(Option<KeyShard>, OnlineStamp)>,
        states: &[Option<&ReadState>],
        key_columns: Vec<ArrayRef>,
        features: &[String],
        at: Option<i64>,
    ) -> Result<OnlineValues, ValuesFailure> {
        let view = &online.view;
        let keys = view.key_names();
        let stale =
            (stamps.iter()).any(|(_, s)| online.fingerprint.is_some_and(|f| f != s.fingerprint));
        if stale {
            return Err(ReadError::internal(format!(
                "the online state of `{}` was written by another plan of the view: run `quiver run` with this config to rewrite it",
                view.name()
            ))
            .into());
        }
        let stamp = combined_stamp(stamps.iter().map(|(_, s)| s))
            .ok_or_else(|| ReadError::internal("no table was read".to_string()))?;
        let watermark = stamp.watermark.unwrap_or(i64::MIN);
        let at = at.unwrap_or_else(|| crate::clock::now_micros().max(watermark));
        if at < watermark {
            let (shard, newest) = (stamps.iter())
                .max_by_key(|(_, s)| s.watermark)
                .expect("a stamp, combined above");
            let which = shard.map_or(String::new(), |s| format!(", shard {s}"));
            return Err(ReadError::bad(format!(
                "`at` {} is before the online store's watermark {} (epoch {}{which}): online reads are exact only from there on; for earlier times export a training set (`quiver training-set`)",
                format_micros(at),
                format_micros(watermark),
                newest.epoch
            ))
            .into());
        }
        let windows = match quiver_gpu::read_at(view.window_plan(), states, at) {
            Ok(windows) => windows,
            Err(KernelError::UnreadEvents { .. }) => return Err(ValuesFailure::Unread),
            Err(e) => {
                let message = format!("view `{}`: {e}", view.name());
                return Err(ReadError::internal(message).into());
            }
        };
        let values = view
            .features_at(windows, states.len())
            .map_err(|e| ReadError::internal(e.to_string()))?;
        let mut fields: Vec<Field> = keys
            .iter()
            .zip(&key_columns)
            .map(|(k, c)| Field::new(k, c.data_type().clone(), true))
            .collect();
        let mut columns = key_columns;
        for name in features {
            let index = values
                .schema()
                .index_of(name)
                .map_err(|e| ReadError::internal(e.to_string()))?;
            fields.push(values.schema().field(index).clone());
            columns.push(values.column(index).clone());
        }
        let rows = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
            .map_err(|e| ReadError::internal(e.to_string()))?;
        Ok(OnlineValues {
            view: view.name().to_string(),
            version: online.version.clone(),
            at,
            stamp,
            shards: (stamps.into_iter())
                .filter_map(|(shard, stamp)| Some((shard?, stamp)))
                .collect(),
            rows,
        })
    }
}
