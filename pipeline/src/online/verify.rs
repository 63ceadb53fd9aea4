//! `quiver verify-online`: the online store's values against the offline recomputation. For
//! each entity the online store holds (or a sample), the features read online at T are
//! compared with the point-in-time features at T recomputed from the view version's event log
//! in the offline store, over the events the online state is as of (those before its
//! watermark). On a healthy store it finds nothing.

use super::read::{decode_states, json_value, OnlineReader};
use super::shard_tables::combined_stamp;
use crate::batch_compute::BatchCompute;
use crate::error::JobError;
use crate::lineage::format_micros;
use crate::registry::event_log::{compile_registered, read_event_log};
use crate::registry::Registry;
use arrow::array::{Array, BooleanArray, RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::{Field, Schema};
use quiver_sql::KeyShard;
use quiver_store::online::{EntityState, OnlineStamp};
use serde::Serialize;
use std::sync::Arc;

/// Keys read from the online store per page.
const PAGE: usize = 10_000;

/// One value that differs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mismatch {
    /// The entity's key values.
    pub entity: Vec<serde_json::Value>,
    /// The feature.
    pub feature: String,
    /// What the online store answers.
    pub online: serde_json::Value,
    /// What the offline recomputation gives.
    pub offline: serde_json::Value,
}

/// The outcome of a check.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// View and version.
    pub view: String,
    /// Its version.
    pub version: String,
    /// The time the features were compared at (RFC 3339).
    pub at: String,
    /// The online store's epoch and watermark.
    pub epoch: u64,
    /// Its watermark (RFC 3339).
    pub watermark: Option<String>,
    /// Entities in the online store, and how many were compared.
    pub entities: usize,
    /// Entities compared.
    pub checked: usize,
    /// Features compared per entity.
    pub features: usize,
    /// Events of the event log the recomputation read (those before the watermark).
    pub events: usize,
    /// Values that differ (at most `limit` are kept; `mismatched` counts them all).
    pub mismatches: Vec<Mismatch>,
    /// All values that differ.
    pub mismatched: usize,
}

impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}@{} at {} (online epoch {}, watermark {}): {} of {} entities x {} features compared with the offline recomputation from {} events: {} mismatches",
            self.view,
            self.version,
            self.at,
            self.epoch,
            self.watermark.as_deref().unwrap_or("none"),
            self.checked,
            self.entities,
            self.features,
            self.events,
            self.mismatched
        )?;
        for m in &self.mismatches {
            let entity: Vec<String> = m.entity.iter().map(|v| v.to_string()).collect();
            writeln!(
                f,
                "  {} {}: online {}, offline {}",
                entity.join(","),
                m.feature,
                m.online,
                m.offline
            )?;
        }
        if self.mismatched > self.mismatches.len() {
            writeln!(
                f,
                "  ... and {} more",
                self.mismatched - self.mismatches.len()
            )?;
        }
        Ok(())
    }
}

/// Whether two feature values agree: equal, both null, or floats within `rtol` relative.
fn agree(a: &serde_json::Value, b: &serde_json::Value, rtol: f64) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y || (x - y).abs() <= rtol * x.abs().max(y.abs()),
        _ => a == b,
    }
}

/// What to check.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The view.
    pub view: String,
    /// The time (default: the online store's watermark).
    pub at: Option<i64>,
    /// Compare only about this many entities, spread over the key space.
    pub sample: Option<usize>,
    /// Mismatches to list.
    pub limit: usize,
    /// Relative tolerance for floats.
    pub rtol: f64,
}

/// Compares the online values of `options.view` with the offline recomputation from
/// `registry`'s event log of the same version.
pub async fn verify_online(
    reader: &OnlineReader,
    registry: &Registry,
    options: &VerifyOptions,
) -> Result<VerifyReport, JobError> {
    let fail = |e: &dyn std::fmt::Display| JobError::Other(e.to_string());
    let online = reader.resolve(&options.view).await.map_err(|e| fail(&e))?;
    let online = online.as_ref();
    let name = online.view.name().to_string();
    let definition = registry
        .definition(&name, Some(&online.version))
        .map_err(|e| {
            JobError::Other(format!(
                "{e}. verify-online recomputes the features from the store's event log: register the view with `quiver apply` and write the online store with `quiver run --store`"
            ))
        })?;

    // Every key of the online tables (one stamp per table throughout: the run may not be
    // writing).
    let mut tables = Vec::new();
    for (shard, table) in online.tables() {
        let (stamp, entries) = scan_table(reader, &table, &name, &online.version, shard)?;
        tables.push((shard, stamp, entries));
    }
    let stamp = combined_stamp(tables.iter().map(|(_, s, _)| s)).expect("one table at least");
    let entities: usize = tables.iter().map(|(_, _, e)| e.len()).sum();
    if let Some(n) = options.sample.filter(|&n| n < entities) {
        // About `n` entities spread over each table's key space, in proportion to its size.
        for (_, _, entries) in &mut tables {
            let share = (n as f64 * entries.len() as f64 / entities as f64).ceil() as usize;
            let step = entries.len() as f64 / share.max(1) as f64;
            *entries = (0..share.min(entries.len()))
                .map(|i| entries[(i as f64 * step) as usize].clone())
                .collect();
        }
    }
    // Exact for every table from the newest watermark on.
    let at = options.at.or(stamp.watermark).unwrap_or(i64::MIN);
    let features = online.view.point_in_time_features();
    let view = compile_registered(registry, &definition).await?;
    let logged = read_event_log(registry, &definition, view.stream_columns_read(), false)?;
    let mut report = VerifyReport {
        view: name,
        version: online.version.clone(),
        at: format_micros(at),
        epoch: stamp.epoch,
        watermark: stamp.watermark.map(format_micros),
        entities,
        checked: 0,
        features: features.len(),
        events: 0,
        mismatches: Vec::new(),
        mismatched: 0,
    };
    let times = (logged.batches.iter())
        .map(|batch| crate::event_time::event_times(batch, &definition.event_time))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(&e))?;
    let compute = BatchCompute::open(quiver_gpu::Device::Cpu, usize::MAX)?;
    // The events before a watermark, prepared for the view: shards at the same watermark (all
    // of them at the end of an input) share them.
    let mut prepared: Option<(i64, Vec<quiver_sql::ViewInputs>)> = None;
    for (shard, stamp, entries) in tables {
        let watermark = stamp.watermark.unwrap_or(i64::MIN);
        // Online: the states just scanned, read at `at`.
        let encoded: Vec<&[u8]> = entries.iter().map(|(k, _)| k.as_slice()).collect();
        let key_columns = online.view.decode_keys(&encoded).map_err(|e| fail(&e))?;
        let states: Vec<Option<EntityState>> = entries.into_iter().map(|(_, s)| Some(s)).collect();
        let decoded = decode_states(&online.view, &states).map_err(|e| fail(&e))?;
        let decoded: Vec<_> = decoded.iter().map(Option::as_ref).collect();
        let values = OnlineReader::values(
            online,
            vec![(shard, stamp)],
            &decoded,
            key_columns.clone(),
            &features,
            Some(at),
        )
        .map_err(|e| fail(&e))?;
        // Offline: the version's events before the table's watermark, evaluated at `at`.
        if prepared.as_ref().is_none_or(|(w, _)| *w != watermark) {
            let mut before = Vec::with_capacity(logged.batches.len());
            for (batch, times) in logged.batches.iter().zip(&times) {
                let keep: BooleanArray = times
                    .iter()
                    .map(|t| Some(t.is_some_and(|t| t < watermark)))
                    .collect();
                before
                    .push(arrow::compute::filter_record_batch(batch, &keep).map_err(|e| fail(&e))?);
            }
            let events = before.iter().map(RecordBatch::num_rows).sum();
            report.events = report.events.max(events);
            let inputs = crate::training_set::prepare_events(&view, &before).await?;
            prepared = Some((watermark, inputs));
        }
        let (_, inputs) = prepared.as_ref().expect("prepared above");
        let spine = RecordBatch::try_new(
            Arc::new(Schema::new(
                view.key_names()
                    .iter()
                    .zip(&key_columns)
                    .map(|(k, c)| Field::new(k, c.data_type().clone(), true))
                    .collect::<Vec<_>>(),
            )),
            key_columns,
        )
        .map_err(|e| fail(&e))?;
        let spine_times = TimestampMicrosecondArray::from(vec![at; spine.num_rows()]);
        let offline = crate::training_set::point_in_time(
            &view,
            inputs,
            None,
            &spine,
            &spine_times,
            &compute,
        )?;
        compare(&values.rows, &offline, &features, options, &mut report)?;
    }
    Ok(report)
}

/// Every key of `table` with its state and the stamp they are as of (one stamp throughout: the
/// table must not change while it is read).
#[allow(clippy::type_complexity)]
fn scan_table(
    reader: &OnlineReader,
    table: &str,
    name: &str,
    version: &str,
    shard: Option<KeyShard>,
) -> Result<(OnlineStamp, Vec<(Vec<u8>, EntityState)>), JobError> {
    let store = &reader.store().0;
    let mut entries: Vec<(Vec<u8>, EntityState)> = Vec::new();
    let mut stamp = None;
    loop {
        let after = entries.last().map(|(k, _)| k.as_slice());
        let page = store.scan(table, after, PAGE)?.ok_or_else(|| {
            let which = shard.map_or(String::new(), |s| format!(" by shard {s}"));
            JobError::Other(format!(
                "nothing was written to the online store for `{name}` (version {version}){which} yet"
            ))
        })?;
        if stamp.as_ref().is_some_and(|s| *s != page.0) {
            return Err(JobError::Other(format!(
                "the online store of `{name}` changed while it was read: stop the run writing it (or verify from `quiver run --serve`'s process later)"
            )));
        }
        stamp = Some(page.0);
        let done = page.1.len() < PAGE;
        entries.extend(page.1);
        if done {
            return Ok((stamp.expect("a page was read"), entries));
        }
    }
}

/// Compares the `online` and `offline` values of `features`, row by row, into `report`.
fn compare(
    online: &RecordBatch,
    offline: &RecordBatch,
    features: &[String],
    options: &VerifyOptions,
    report: &mut VerifyReport,
) -> Result<(), JobError> {
    let key_count = online.num_columns() - features.len();
    for feature in features {
        let (Some(on), Some(off)) = (
            online.column_by_name(feature),
            offline.column_by_name(feature),
        ) else {
            return Err(JobError::Other(format!(
                "feature `{feature}` is missing from one side of the comparison"
            )));
        };
        for row in 0..online.num_rows() {
            let (a, b) = (json_value(on.as_ref(), row), json_value(off.as_ref(), row));
            if agree(&a, &b, options.rtol) {
                continue;
            }
            report.mismatched += 1;
            if report.mismatches.len() < options.limit {
                report.mismatches.push(Mismatch {
                    entity: (0..key_count)
                        .map(|k| json_value(online.column(k).as_ref(), row))
                        .collect(),
                    feature: feature.clone(),
                    online: a,
                    offline: b,
                });
            }
        }
    }
    report.checked += online.num_rows();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_agree_within_the_tolerance_and_nulls_only_with_nulls() {
        assert!(agree(&json!(1.0), &json!(1.0 + 1e-12), 1e-9));
        assert!(!agree(&json!(1.0), &json!(1.001), 1e-9));
        assert!(agree(&json!(3), &json!(3.0), 0.0));
        assert!(agree(&json!(null), &json!(null), 1e-9));
        assert!(!agree(&json!(null), &json!(0), 1e-9));
        assert!(agree(&json!("a"), &json!("a"), 1e-9));
    }
}
