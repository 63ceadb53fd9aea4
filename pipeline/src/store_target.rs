//! `quiver run --store`: a streaming run that commits into the feature store. Each checkpoint
//! epoch appends the views' feature rows to their registered versions' Delta tables and the
//! accepted events to the versions' event logs, one Delta commit per table and epoch, carrying
//! the epoch's source positions and watermark and made idempotent by a `txn` action (run,
//! epoch): recovery redoes the last epoch's commits and never doubles them.
//!
//! A fresh run continues where the versions' data ends: each view's windows are warmed up from
//! its event log, and events not newer than the log's newest event are late (they would change
//! feature rows already in the table). A live source (Kafka) also continues from the offsets
//! the last run committed with its rows.

use crate::compile::CompiledPipeline;
use crate::error::JobError;
use crate::registry::event_log::{event_log_dir, log_files, read_event_log};
use crate::registry::{Registry, ViewDefinition};
use crate::source::PartitionProgress;
use quiver_store::{delta, StoreDir};
use std::path::PathBuf;

/// Where a run's views and events go in the store.
#[derive(Debug, Clone)]
pub struct StoreTarget {
    /// The store.
    pub registry: Registry,
    /// Per view, in view order: its latest version's definition and Delta table (a path in a
    /// local store, or relative to an object store: see [`StoreTarget::dir`]).
    pub views: Vec<(ViewDefinition, PathBuf)>,
    /// The distinct event logs of those versions (paths as for the tables).
    pub event_logs: Vec<PathBuf>,
    /// Per view: whether its table has the availability column (versions registered before
    /// it existed do not).
    pub availability: Vec<bool>,
}

/// The path of `name` (a `/`-separated path in the store) as a run's writers and commits name
/// it: under a local store's directory, or relative to an object store (see
/// [`crate::outputs::OutputPaths::object_store`]).
fn in_store(registry: &Registry, name: &str) -> PathBuf {
    match registry.root().local_path() {
        Some(root) => root.join(name),
        None => PathBuf::from(name),
    }
}

impl StoreTarget {
    /// The store directory of a table or event log path of [`StoreTarget::views`] or
    /// [`StoreTarget::event_logs`].
    pub fn dir(&self, path: &std::path::Path) -> StoreDir {
        StoreDir::of_commit(self.object_store().as_ref(), path)
    }

    /// The object store the run commits into, if the store is on one.
    pub fn object_store(&self) -> Option<StoreDir> {
        let root = self.registry.root();
        root.local_path().is_none().then(|| root.clone())
    }

    /// The target of `pipeline` in `registry`: every view must be registered with exactly this
    /// definition as its latest version (else `quiver apply` first).
    pub fn resolve(pipeline: &CompiledPipeline, registry: Registry) -> Result<Self, JobError> {
        let mut views = Vec::new();
        let mut event_logs: Vec<PathBuf> = Vec::new();
        let mut availability = Vec::new();
        for i in 0..pipeline.views.len() {
            let mine = ViewDefinition::of(pipeline, i)?;
            let latest = registry.latest(&mine.view)?;
            if latest.as_deref() != Some(mine.version.as_str()) {
                return Err(JobError::Other(format!(
                    "view `{}` of this config is version {}, but the store's latest is {}: run `quiver apply {}` first, so its history is backfilled before the run appends to it",
                    mine.view,
                    mine.version,
                    latest.as_deref().unwrap_or("none"),
                    pipeline.loaded.path.display()
                )));
            }
            let definition = registry.definition(&mine.view, Some(&mine.version))?;
            log_files(&event_log_dir(&registry, &definition))?; // a Delta event log, or a clear error
            let log = in_store(&registry, &Registry::events_path(&definition.events));
            if !event_logs.contains(&log) {
                event_logs.push(log);
            }
            let table = in_store(
                &registry,
                &Registry::data_path(&definition.view, &definition.version),
            );
            let columns =
                delta::column_names(&registry.data_dir(&definition.view, &definition.version))
                    .map_err(|e| JobError::Other(e.to_string()))?;
            availability.push(columns.iter().any(|c| c == quiver_store::AVAILABLE_COLUMN));
            views.push((definition, table));
        }
        Ok(StoreTarget {
            registry,
            views,
            event_logs,
            availability,
        })
    }

    /// Per view, its event log's events as one batch of the stream's schema, for warming up
    /// its windows, and the newest event time in them; each event log is read once however
    /// many views share it. A shard's run takes only what that shard has seen (see
    /// `StoreTarget::shard_seen`).
    pub fn histories(
        &self,
        schema: &arrow::datatypes::SchemaRef,
        event_time: &str,
        shard: Option<quiver_sql::KeyShard>,
    ) -> Result<Vec<History>, JobError> {
        let mut read: Vec<(StoreDir, History)> = Vec::new();
        let mut out = Vec::with_capacity(self.views.len());
        for (definition, _) in &self.views {
            let log = event_log_dir(&self.registry, definition);
            if let Some((_, history)) = read.iter().find(|(l, _)| *l == log) {
                out.push(history.clone());
                continue;
            }
            let history = self.history(definition, schema, event_time, shard)?;
            read.push((log, history.clone()));
            out.push(history);
        }
        Ok(out)
    }

    fn history(
        &self,
        definition: &ViewDefinition,
        schema: &arrow::datatypes::SchemaRef,
        event_time: &str,
        shard: Option<quiver_sql::KeyShard>,
    ) -> Result<History, JobError> {
        let logged = read_event_log(&self.registry, definition, None, false)?;
        let batches = match shard {
            Some(shard) => {
                let log = event_log_dir(&self.registry, definition);
                self.shard_seen(&log, shard, logged)?
            }
            None => logged.batches,
        };
        if batches.iter().all(|b| b.num_rows() == 0) {
            return Ok((None, None));
        }
        let fail = |e: &dyn std::fmt::Display| {
            JobError::Other(format!(
                "the event log of {}@{} does not fit this config's stream: {e}",
                definition.view, definition.version
            ))
        };
        let mut rebuilt = Vec::with_capacity(batches.len());
        for b in batches {
            // The stream's own schema (nullability included), which the views were planned on.
            rebuilt.push(
                arrow::record_batch::RecordBatch::try_new(schema.clone(), b.columns().to_vec())
                    .map_err(|e| fail(&e))?,
            );
        }
        let all = arrow::compute::concat_batches(schema, &rebuilt).map_err(|e| fail(&e))?;
        let newest = crate::event_time::event_times(&all, event_time)
            .map_err(|e| fail(&e))?
            .into_iter()
            .flatten()
            .max();
        Ok((Some(all), newest))
    }
}

impl StoreTarget {
    /// The events of an event log that shard `shard` has seen: those committed before any
    /// shard of a sharded run committed into the log (what the apply and unsharded runs
    /// logged), and of the later ones (shard 0 logs every event, at its own pace) those at or
    /// before the positions of this shard's own newest commit. A shard starting without its
    /// checkpoint thus warms up from, and is late against, exactly what its rows were
    /// computed from, however far the other shards have gone.
    fn shard_seen(
        &self,
        log: &StoreDir,
        shard: quiver_sql::KeyShard,
        logged: crate::registry::event_log::LoggedEvents,
    ) -> Result<Vec<arrow::record_batch::RecordBatch>, JobError> {
        let store = |e: quiver_store::StoreError| JobError::Other(e.to_string());
        let mut sharded_from_ms = None;
        for version in delta::versions(log).map_err(store)? {
            let actions = delta::read_commit(log, version).map_err(store)?;
            let info = actions.iter().find_map(|a| a.get("commitInfo"));
            let by_shard = info
                .and_then(|i| i.pointer("/quiver/shard"))
                .is_some_and(|s| !s.is_null());
            if by_shard {
                sharded_from_ms = info
                    .and_then(|i| i.get("timestamp"))
                    .and_then(|t| t.as_i64());
                break;
            }
        }
        let Some(from_ms) = sharded_from_ms else {
            return Ok(logged.batches);
        };
        let own: std::collections::HashMap<String, u64> = (self.own_positions(shard)?)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| p.position.map(|o| (p.name, o)))
            .collect();
        let mut available = logged.available.iter();
        let mut out = Vec::with_capacity(logged.batches.len());
        for batch in logged.batches {
            let as_u64 = |name: &str| {
                let column = batch.column_by_name(name)?;
                let column =
                    arrow::compute::cast(column, &arrow::datatypes::DataType::UInt64).ok()?;
                (column.as_any())
                    .downcast_ref::<arrow::array::UInt64Array>()
                    .cloned()
            };
            let (partitions, offsets) = (
                as_u64(quiver_sql::PARTITION_COLUMN),
                as_u64(quiver_sql::OFFSET_COLUMN),
            );
            let value = |column: &Option<arrow::array::UInt64Array>, row: usize| {
                use arrow::array::Array;
                column
                    .as_ref()
                    .filter(|c| c.is_valid(row))
                    .map(|c| c.value(row))
            };
            let name = |row: usize| logged.partitions.get(value(&partitions, row)? as usize);
            let offset = |row: usize| value(&offsets, row);
            let keep: arrow::array::BooleanArray = (0..batch.num_rows())
                .map(|row| {
                    let before = available.next().is_some_and(|&us| us < from_ms * 1000);
                    let seen = || {
                        let (Some(name), Some(offset)) = (name(row), offset(row)) else {
                            return false;
                        };
                        own.get(name).is_some_and(|&p| offset <= p)
                    };
                    Some(before || seen())
                })
                .collect();
            out.push(
                arrow::compute::filter_record_batch(&batch, &keep)
                    .map_err(|e| JobError::Other(e.to_string()))?,
            );
        }
        Ok(out)
    }

    /// Refuses a fresh run whose shard layout (`shard`, or none) differs from that of the
    /// runs that last committed into the store: their rows stand at positions this run cannot
    /// continue from exactly (each shard of the other layout stopped at its own).
    pub fn check_shard_layout(&self, shard: Option<quiver_sql::KeyShard>) -> Result<(), JobError> {
        let Some((_, table)) = self.views.first() else {
            return Ok(());
        };
        let log = &self.dir(table);
        let store = |e: quiver_store::StoreError| JobError::Other(e.to_string());
        // The newest commit of a run (compactions and applies name none).
        let mut last = None;
        for version in delta::versions(log).map_err(store)?.into_iter().rev() {
            let actions = delta::read_commit(log, version).map_err(store)?;
            let info = actions.iter().find_map(|a| a.pointer("/commitInfo/quiver"));
            if let Some(info) = info.filter(|i| i.get("run").is_some()) {
                last = (info.get("shard").and_then(|s| s.as_str()))
                    .and_then(|s| quiver_sql::KeyShard::parse(s).ok());
                break;
            }
        }
        match (last, shard) {
            (Some(l), Some(s)) if l.count() == s.count() => Ok(()),
            (None, _) => Ok(()),
            (Some(l), _) => Err(JobError::Other(format!(
                "the store's tables were last written by a job with {} shards, and this run is {}: continue with the same `shards` (a different layout cannot continue exactly where each of those shards stopped)",
                l.count(),
                shard.map_or("not sharded".to_string(), |s| format!("a shard of {}", s.count()))
            ))),
        }
    }

    /// The positions of shard `shard`'s newest commit into the first view's table, if it has
    /// committed there.
    fn own_positions(
        &self,
        shard: quiver_sql::KeyShard,
    ) -> Result<Option<Vec<PartitionProgress>>, JobError> {
        let Some((_, table)) = self.views.first() else {
            return Ok(None);
        };
        let name = shard.to_string();
        self.newest_positions(table, |info| {
            info.get("shard").and_then(|s| s.as_str()) == Some(name.as_str())
        })
    }

    /// The source positions the last run committed into these tables (`commitInfo.quiver.
    /// positions` of the newest commit of a run in the first event log), if any: where a new
    /// run over a live source (Kafka) continues. A shard continues from the newest commit of
    /// the same shard in the first view's table (each shard reads at its own pace), else, as
    /// the first run of that shard layout, from the event log.
    pub fn committed_positions(
        &self,
        shard: Option<quiver_sql::KeyShard>,
    ) -> Result<Option<Vec<PartitionProgress>>, JobError> {
        if let Some(own) = shard.map(|s| self.own_positions(s)).transpose()?.flatten() {
            return Ok(Some(own));
        }
        // Before a shard's first commit, where the unsharded runs left off.
        let unsharded = |info: &serde_json::Value| info.get("shard").is_none_or(|s| s.is_null());
        match self.event_logs.first() {
            Some(log) if shard.is_some() => self.newest_positions(log, unsharded),
            Some(log) => self.newest_positions(log, |_| true),
            None => Ok(None),
        }
    }

    /// The positions of the newest commit of the Delta table `table` whose `commitInfo.quiver`
    /// records positions and is accepted by `select`.
    fn newest_positions(
        &self,
        table: &std::path::Path,
        select: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<Option<Vec<PartitionProgress>>, JobError> {
        let log = &self.dir(table);
        let store = |e: quiver_store::StoreError| JobError::Other(e.to_string());
        for version in delta::versions(log).map_err(store)?.into_iter().rev() {
            let actions = delta::read_commit(log, version).map_err(store)?;
            let info = (actions.iter())
                .find_map(|a| a.pointer("/commitInfo/quiver"))
                .filter(|info| select(info));
            if let Some(positions) = info.and_then(|i| i.get("positions")) {
                let positions = serde_json::from_value(positions.clone()).map_err(|e| {
                    JobError::Other(format!(
                        "commit {version} of `{log}` records unreadable source positions: {e}"
                    ))
                })?;
                return Ok(Some(positions));
            }
        }
        Ok(None)
    }
}

/// An event log's events (one batch, if any) and its newest event time.
pub type History = (Option<arrow::record_batch::RecordBatch>, Option<i64>);
