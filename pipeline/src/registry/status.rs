//! `quiver status`: how fresh each view's latest version is, from its Delta log and the
//! event-time statistics of its files.
//!
//! Per commit, the event-to-visible latency is the commit's time minus the newest event time it
//! made visible (its freshest row's delay; writers record it in `commitInfo.quiver`); the
//! p50/p99 are over the most recent commits.
//! A view's freshness is now minus the newest event time visible, checked against the view's
//! `freshness_sla`.

use crate::error::JobError;
use crate::registry::{Registry, ViewDefinition};
use quiver_store::delta;
use serde::Serialize;

/// Commits the latency percentiles are taken over.
const RECENT_COMMITS: usize = 100;

/// The status of one view's latest version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ViewStatus {
    /// View name.
    pub view: String,
    /// Its latest version.
    pub version: String,
    /// Rows in the version's table.
    pub rows: u64,
    /// Commits in the version's table.
    pub commits: usize,
    /// Time of the last commit (RFC 3339).
    pub last_commit: Option<String>,
    /// Newest event time in the table (RFC 3339).
    pub last_event_time: Option<String>,
    /// Median event-to-visible latency over recent commits, seconds.
    pub latency_p50_s: Option<f64>,
    /// 99th percentile of the same, seconds.
    pub latency_p99_s: Option<f64>,
    /// Now minus the newest event time, seconds.
    pub freshness_s: Option<f64>,
    /// The view's `freshness_sla`, if it has one.
    pub freshness_sla: Option<String>,
    /// Whether the freshness is within the SLA (`None` without one).
    pub sla_holds: Option<bool>,
    /// The job watermark of the last commit of a streaming run (RFC 3339).
    pub watermark: Option<String>,
    /// Per source partition, where the last commit of a streaming run stood.
    pub partitions: Vec<PartitionPosition>,
}

/// Where a source partition stood at a commit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionPosition {
    /// Partition name (a file, `datagen`, or `topic/partition`).
    pub partition: String,
    /// The last offset (line, row, Kafka offset) consumed.
    pub offset: Option<u64>,
    /// The newest event time the partition had delivered (RFC 3339).
    pub newest_event: Option<String>,
    /// Now minus that event time, seconds: how far the partition is behind in event time.
    pub event_lag_s: Option<f64>,
    /// Messages between the offset and the partition's end when the commit was taken (Kafka).
    pub consumer_lag: Option<u64>,
}

impl std::fmt::Display for ViewStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let seconds = |s: Option<f64>| s.map_or("-".to_string(), human_seconds);
        writeln!(f, "{}@{}", self.view, self.version)?;
        writeln!(
            f,
            "  rows {} in {} commits, last commit {}",
            crate::summary::thousands(self.rows),
            self.commits,
            self.last_commit.as_deref().unwrap_or("-")
        )?;
        writeln!(
            f,
            "  newest event {}, event-to-visible p50 {} p99 {}",
            self.last_event_time.as_deref().unwrap_or("-"),
            seconds(self.latency_p50_s),
            seconds(self.latency_p99_s)
        )?;
        let sla = match (&self.freshness_sla, self.sla_holds) {
            (Some(sla), Some(true)) => format!("within freshness_sla {sla}"),
            (Some(sla), _) => format!("VIOLATES freshness_sla {sla}"),
            (None, _) => "no freshness_sla".to_string(),
        };
        writeln!(f, "  freshness {} ({sla})", seconds(self.freshness_s))?;
        if let Some(watermark) = &self.watermark {
            writeln!(f, "  last streaming commit: watermark {watermark}")?;
        }
        for p in &self.partitions {
            let behind = p
                .consumer_lag
                .map_or(String::new(), |n| format!(", {n} messages behind its end"));
            writeln!(
                f,
                "    {}: offset {}{behind}, newest event {} ({} behind now)",
                p.partition,
                p.offset.map_or("-".to_string(), |o| o.to_string()),
                p.newest_event.as_deref().unwrap_or("-"),
                seconds(p.event_lag_s)
            )?;
        }
        Ok(())
    }
}

fn human_seconds(s: f64) -> String {
    match s.abs() {
        a if a < 1.0 => format!("{:.0} ms", s * 1e3),
        a if a < 120.0 => format!("{s:.1} s"),
        a if a < 7200.0 => format!("{:.1} min", s / 60.0),
        a if a < 172_800.0 => format!("{:.1} h", s / 3600.0),
        _ => format!("{:.1} days", s / 86_400.0),
    }
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// The status of `definition`'s table at `now_micros`.
pub fn version_status(
    registry: &Registry,
    definition: &ViewDefinition,
    now_micros: i64,
) -> Result<ViewStatus, JobError> {
    let table = registry.data_dir(&definition.view, &definition.version);
    let store = |e: quiver_store::StoreError| JobError::Other(e.to_string());
    let versions = delta::versions(&table).map_err(store)?;
    if versions.is_empty() {
        return Err(JobError::Other(format!(
            "{}@{} has no Delta log at `{}` (registered before the store wrote them): apply it again into a new store",
            definition.view,
            definition.version,
            table
        )));
    }
    let mut latencies = Vec::new();
    let mut last_commit = None;
    let mut last_run_info = None;
    for v in &versions {
        let actions = delta::read_commit(&table, *v).map_err(store)?;
        let info = actions.iter().find_map(|a| a.get("commitInfo"));
        if let Some(quiver) = info
            .and_then(|i| i.get("quiver"))
            .filter(|q| q.get("positions").is_some())
        {
            last_run_info = Some(quiver.clone());
        }
        let commit_ms = info
            .and_then(|i| i.get("timestamp"))
            .and_then(|t| t.as_i64());
        // Writers record the newest event each commit made visible (compactions do not).
        let newest = info
            .and_then(|i| i.pointer("/quiver/newest_event_us"))
            .and_then(|t| t.as_i64());
        if let (Some(ms), Some(t)) = (commit_ms, newest) {
            latencies.push((ms * 1000 - t) as f64 / 1e6);
        }
        last_commit = commit_ms.or(last_commit);
    }
    let active = delta::active_files(&table).map_err(store)?;
    let rows = active.iter().map(|f| f.rows).sum();
    let mut newest: Option<i64> = None;
    for file in &active {
        let t = quiver_store::parquet_stats::newest_timestamp(
            &table,
            &file.path,
            &definition.event_time,
        )
        .map_err(store)?;
        newest = newest.max(t);
    }
    let recent = &mut latencies[latencies.len().saturating_sub(RECENT_COMMITS)..].to_vec();
    recent.sort_by(f64::total_cmp);
    let freshness_s = newest.map(|t| (now_micros - t) as f64 / 1e6);
    let sla_holds = match (&definition.freshness_sla, freshness_s) {
        (Some(sla), Some(age)) => crate::duration::Duration::parse(sla)
            .ok()
            .map(|d| age <= d.as_micros() as f64 / 1e6),
        (Some(_), None) => Some(false),
        (None, _) => None,
    };
    let (watermark, partitions) = match &last_run_info {
        Some(info) => run_positions(info, now_micros),
        None => (None, Vec::new()),
    };
    Ok(ViewStatus {
        view: definition.view.clone(),
        version: definition.version.clone(),
        rows,
        commits: versions.len(),
        last_commit: last_commit.map(|ms| crate::lineage::format_micros(ms * 1000)),
        last_event_time: newest.map(crate::lineage::format_micros),
        latency_p50_s: percentile(recent, 0.5),
        latency_p99_s: percentile(recent, 0.99),
        freshness_s,
        freshness_sla: definition.freshness_sla.clone(),
        sla_holds,
        watermark,
        partitions,
    })
}

/// The watermark and per-partition positions a streaming run's commit recorded.
fn run_positions(
    info: &serde_json::Value,
    now_micros: i64,
) -> (Option<String>, Vec<PartitionPosition>) {
    let watermark = info["watermark"]
        .as_i64()
        .filter(|w| *w != i64::MIN)
        .map(crate::lineage::format_micros);
    let newest = info["partition_max_event_us"].as_array();
    let ends = info["end_offsets"].as_array();
    let partitions = info["positions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, p)| {
            let max = newest.and_then(|n| n.get(i)).and_then(|t| t.as_i64());
            let end = ends.and_then(|e| e.get(i)).and_then(|e| e.as_u64());
            let next = p["position"].as_u64().map_or(0, |o| o + 1);
            PartitionPosition {
                consumer_lag: end.map(|end| end.saturating_sub(next)),
                partition: p["name"].as_str().unwrap_or_default().to_string(),
                offset: p["position"].as_u64(),
                newest_event: max.map(crate::lineage::format_micros),
                event_lag_s: max.map(|t| (now_micros - t) as f64 / 1e6),
            }
        })
        .collect();
    (watermark, partitions)
}

/// The status of every view's latest version (or of `view` only).
pub fn status(registry: &Registry, view: Option<&str>) -> Result<Vec<ViewStatus>, JobError> {
    let now = crate::clock::now_micros();
    let views = match view {
        Some(v) => vec![v.to_string()],
        None => registry.views()?,
    };
    let mut out = Vec::new();
    for name in views {
        if registry.latest(&name)?.is_none() && view.is_none() {
            continue; // removed from the latest views
        }
        let definition = registry.definition(&name, None)?;
        out.push(version_status(registry, &definition, now)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentiles_and_durations() {
        let xs = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(super::percentile(&xs, 0.5), Some(2.0));
        assert_eq!(super::percentile(&xs, 0.99), Some(4.0));
        assert_eq!(super::percentile(&[], 0.5), None);
        assert_eq!(super::human_seconds(0.25), "250 ms");
        assert_eq!(super::human_seconds(90.0), "90.0 s");
        assert_eq!(super::human_seconds(3.0 * 86_400.0), "3.0 days");
    }
}
