//! `quiver lineage`: where a feature value comes from.
//!
//! For one entity at one time: the view version, its registration, and for each point-in-time
//! feature its value and the events inside its window, by source partition (file or generator)
//! with their offset (line, row or sequence) ranges. For a view alone: the definition chain
//! source -> transforms -> view, with every registered version.

use crate::batch_compute::BatchCompute;
use crate::error::JobError;
use crate::registry::event_log::{compile_registered, read_event_log};
use crate::registry::{Registry, ViewDefinition};
use arrow::array::{ArrayRef, AsArray, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{Field, Schema, UInt32Type, UInt64Type};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use quiver_gpu::{Device, Frame};
use quiver_sql::{OFFSET_COLUMN, PARTITION_COLUMN};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The events of one source partition inside a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceRange {
    /// The partition (a file's path, or the generator).
    pub partition: String,
    /// Events of the entity from it inside the window.
    pub events: u64,
    /// First and last offset (NDJSON/CSV line, Parquet row, generator sequence).
    pub offsets: (u64, u64),
    /// First and last event time (RFC 3339).
    pub times: (String, String),
    /// Every offset, in order, when there are at most [`LISTED_OFFSETS`].
    pub listed: Vec<u64>,
}

/// Up to this many events of a partition in a window are listed one by one.
pub const LISTED_OFFSETS: u64 = 16;

/// One feature's value and the events its windows hold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureLineage {
    /// Feature name.
    pub feature: String,
    /// Its value as of the time, as text (`NULL` for none).
    pub value: String,
    /// Its windows, in SQL (e.g. `RANGE 10 minutes`), widest first.
    pub windows: Vec<String>,
    /// Events of the entity inside the widest of them.
    pub events: u64,
    /// Those events by source partition.
    pub sources: Vec<SourceRange>,
}

/// The lineage of one entity's features at one time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EntityLineage {
    /// View name and version.
    pub view: String,
    /// Version.
    pub version: String,
    /// Whether it is the view's latest version.
    pub latest: bool,
    /// When it was registered.
    pub registered: String,
    /// The config it came from.
    pub config: String,
    /// Its event log (under the store's `events/`).
    pub event_log: String,
    /// The entity, as `key=value` pairs.
    pub entity: Vec<(String, String)>,
    /// The time the values are as of (RFC 3339).
    pub at: String,
    /// Per point-in-time feature.
    pub features: Vec<FeatureLineage>,
}

impl std::fmt::Display for EntityLineage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}@{}{} registered {} from {}",
            self.view,
            self.version,
            if self.latest { " (latest)" } else { "" },
            self.registered,
            self.config
        )?;
        writeln!(f, "  event log: events/{}", self.event_log)?;
        let entity: Vec<String> = self
            .entity
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        writeln!(f, "{} as of {}", entity.join(", "), self.at)?;
        for feature in &self.features {
            writeln!(
                f,
                "  {} = {}   ({}: {} events)",
                feature.feature,
                feature.value,
                feature.windows.join(", "),
                feature.events
            )?;
            for s in &feature.sources {
                let offsets = if s.listed.is_empty() {
                    format!("offsets {}..{}", s.offsets.0, s.offsets.1)
                } else {
                    let list: Vec<String> = s.listed.iter().map(u64::to_string).collect();
                    format!("offsets {}", list.join(", "))
                };
                writeln!(
                    f,
                    "      {}  {offsets}  ({} events, {} .. {})",
                    s.partition, s.events, s.times.0, s.times.1
                )?;
            }
        }
        Ok(())
    }
}

/// Microseconds since the epoch as RFC 3339 UTC with microseconds.
pub fn format_micros(micros: i64) -> String {
    arrow::temporal_conversions::timestamp_us_to_datetime(micros)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        .unwrap_or_else(|| micros.to_string())
}

fn frame_sql(frame: Frame) -> String {
    match frame {
        Frame::Unbounded => "UNBOUNDED".to_string(),
        Frame::Range { width_micros } => {
            const UNITS: [(i64, &str); 6] = [
                (86_400_000_000, "day"),
                (3_600_000_000, "hour"),
                (60_000_000, "minute"),
                (1_000_000, "second"),
                (1_000, "millisecond"),
                (1, "microsecond"),
            ];
            let (size, unit) = UNITS
                .into_iter()
                .find(|(size, _)| width_micros % size == 0)
                .unwrap_or((1, "microsecond"));
            let n = width_micros / size;
            format!("RANGE {n} {unit}{}", if n == 1 { "" } else { "s" })
        }
    }
}

/// The lineage of the point-in-time features of `view` (at `version`, else the latest) for
/// the entity whose key values are `entity` (in key order), as of `at` (µs since the epoch).
pub async fn entity_lineage(
    registry: &Registry,
    view_name: &str,
    version: Option<&str>,
    entity: &[String],
    at: i64,
) -> Result<EntityLineage, JobError> {
    let definition = registry.definition(view_name, version)?;
    let view = compile_registered(registry, &definition).await?;
    let keys = view.key_names().to_vec();
    if entity.len() != keys.len() {
        return Err(JobError::Other(format!(
            "view `{view_name}` is keyed by {} ({}); give one --entity value per key, in that order",
            keys.len(),
            keys.join(", ")
        )));
    }
    let logged = read_event_log(registry, &definition, view.stream_columns_read(), true)?;
    let partitions = logged.partitions;
    // Prepared once: for the values and for the entity's events.
    let events = crate::training_set::prepare_events(&view, &logged.batches).await?;

    // The value of every feature, computed as a training set of one row computes it.
    let key_columns: Vec<ArrayRef> = entity
        .iter()
        .map(|v| Arc::new(StringArray::from(vec![v.as_str()])) as ArrayRef)
        .collect();
    let spine = RecordBatch::try_new(
        Arc::new(Schema::new(
            keys.iter()
                .map(|k| Field::new(k, arrow::datatypes::DataType::Utf8, false))
                .collect::<Vec<_>>(),
        )),
        key_columns.clone(),
    )
    .map_err(|e| JobError::Other(e.to_string()))?;
    let times = TimestampMicrosecondArray::from(vec![at]);
    let compute = BatchCompute::open(Device::Cpu, usize::MAX)?;
    let values =
        crate::training_set::point_in_time(&view, &events, None, &spine, &times, &compute)?;

    // The entity's events up to `at`: time, partition index, offset.
    let wanted = view
        .encode_keys(&key_columns)
        .map_err(|e| JobError::Other(e.to_string()))?;
    let wanted = wanted.row(0);
    let mut mine: Vec<(i64, u32, u64)> = Vec::new();
    for prepared in &events {
        let partition = prepared
            .batch
            .column_by_name(PARTITION_COLUMN)
            .map(|c| c.as_primitive::<UInt32Type>().clone());
        let offset = prepared
            .batch
            .column_by_name(OFFSET_COLUMN)
            .map(|c| c.as_primitive::<UInt64Type>().clone());
        for (row, &t) in prepared.times.iter().enumerate() {
            if t <= at && prepared.keys.row(row) == wanted {
                mine.push((
                    t,
                    partition.as_ref().map_or(0, |p| p.value(row)),
                    offset.as_ref().map_or(0, |o| o.value(row)),
                ));
            }
        }
    }

    let specs = view.window_plan().specs();
    let mut features = Vec::new();
    let options = FormatOptions::default().with_null("NULL");
    for name in view.point_in_time_features() {
        let windows = view.feature_windows(&name).unwrap_or_default();
        let mut frames: Vec<Frame> = windows.iter().map(|&s| specs[s].frame).collect();
        frames.sort_by_key(|f| match f {
            Frame::Unbounded => i64::MIN,
            Frame::Range { width_micros } => -width_micros,
        });
        frames.dedup();
        let lower = match frames.first() {
            Some(Frame::Range { width_micros }) => at.saturating_sub(*width_micros),
            _ => i64::MIN,
        };
        let column = values
            .column_by_name(&name)
            .ok_or_else(|| JobError::Other(format!("feature `{name}` was not computed")))?;
        let value = ArrayFormatter::try_new(column.as_ref(), &options)
            .map(|f| f.value(0).to_string())
            .map_err(|e| JobError::Other(e.to_string()))?;
        // Per partition: its events' offsets and times.
        let mut by_partition: BTreeMap<u32, (Vec<u64>, i64, i64)> = BTreeMap::new();
        let mut count = 0;
        for &(t, p, o) in mine.iter().filter(|e| e.0 >= lower) {
            count += 1;
            let entry = by_partition.entry(p).or_insert((Vec::new(), t, t));
            entry.0.push(o);
            entry.1 = entry.1.min(t);
            entry.2 = entry.2.max(t);
        }
        let sources: Vec<SourceRange> = by_partition
            .into_iter()
            .map(|(p, (mut offsets, first, last))| {
                offsets.sort_unstable();
                let events = offsets.len() as u64;
                SourceRange {
                    partition: partitions
                        .get(p as usize)
                        .cloned()
                        .unwrap_or_else(|| format!("partition {p}")),
                    events,
                    offsets: (offsets[0], offsets[offsets.len() - 1]),
                    times: (format_micros(first), format_micros(last)),
                    listed: if events > LISTED_OFFSETS {
                        Vec::new()
                    } else {
                        offsets
                    },
                }
            })
            .collect();
        features.push(FeatureLineage {
            feature: name,
            value,
            windows: frames.into_iter().map(frame_sql).collect(),
            events: count,
            sources,
        });
    }
    let latest = registry.latest(view_name)?;
    Ok(EntityLineage {
        view: definition.view.clone(),
        latest: latest.as_deref() == Some(definition.version.as_str()),
        version: definition.version.clone(),
        registered: definition.created.clone(),
        config: definition.config.clone(),
        event_log: definition.events.clone(),
        entity: keys.into_iter().zip(entity.iter().cloned()).collect(),
        at: format_micros(at),
        features,
    })
}

/// The definition lineage of a view: source, transforms and view, per registered version.
pub fn definition_lineage(registry: &Registry, view: &str) -> Result<String, JobError> {
    let versions = registry.versions(view)?;
    if versions.is_empty() {
        return Err(JobError::Other(format!(
            "view `{view}` has no version in the store `{}`",
            registry.root()
        )));
    }
    let latest = registry.latest(view)?;
    let mut out = String::new();
    for d in &versions {
        out.push_str(&describe_chain(
            d,
            latest.as_deref() == Some(d.version.as_str()),
        ));
    }
    Ok(out)
}

fn describe_chain(d: &ViewDefinition, latest: bool) -> String {
    let mut out = format!(
        "{}@{}{}  registered {} from {}{}\n",
        d.view,
        d.version,
        if latest { " (latest)" } else { "" },
        d.created,
        d.config,
        if d.events.is_empty() {
            String::new()
        } else {
            format!(", event log events/{}", d.events)
        }
    );
    out.push_str(&format!("  source ({})\n", d.source_schema.join(", ")));
    for (name, sql) in &d.transforms {
        out.push_str(&format!("  -> transform {name}: {sql}\n"));
    }
    out.push_str(&format!(
        "  -> view {} keyed by {} on {} (engine {}): {}\n",
        d.view,
        d.keys.join(", "),
        d.event_time,
        d.engine,
        d.sql.replace('\n', " ")
    ));
    out
}
