//! `/metrics` in the Prometheus text format: request counts and latency histograms of this
//! server, and per view what the online store holds (epoch, keys, watermark lag, freshness).

use crate::run_gauges::RunFigures;
use quiver_store::online::OnlineStamp;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Upper bounds of the latency histogram's buckets, seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A per-view gauge: name, help, and its value from a stamp at a time (ms).
type Gauge = (
    &'static str,
    &'static str,
    fn(&OnlineStamp, u64) -> Option<f64>,
);

#[derive(Default)]
struct Histogram {
    /// Observations at or below each bucket's bound (cumulative when rendered).
    buckets: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Counters {
    /// Requests by (endpoint, status).
    requests: BTreeMap<(String, u16), u64>,
    /// Latency by endpoint.
    latency: BTreeMap<String, Histogram>,
    /// Entities read.
    entities: u64,
}

/// The server's metrics.
#[derive(Default)]
pub struct Metrics {
    counters: Mutex<Counters>,
}

/// The job's figures: counters, watermark lag, checkpoints, rows per view.
fn render_run(out: &mut String, run: &RunFigures, now_ms: u64) {
    let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    };
    metric(
        "quiver_run_events_total",
        "counter",
        "Source records read by the run.",
        run.events as f64,
    );
    metric(
        "quiver_run_accepted_total",
        "counter",
        "Events accepted (not dead letters).",
        run.accepted as f64,
    );
    metric(
        "quiver_run_dead_letters_total",
        "counter",
        "Dead letters, all reasons.",
        run.dead_letters as f64,
    );
    metric(
        "quiver_run_checkpoints_total",
        "counter",
        "Checkpoints committed by this process.",
        run.checkpoints as f64,
    );
    if let Some(w) = run.watermark_us {
        metric(
            "quiver_run_watermark_lag_seconds",
            "gauge",
            "Now minus the job watermark.",
            now_ms as f64 / 1e3 - w as f64 / 1e6,
        );
    }
    if let Some(s) = run.last_checkpoint_s {
        metric(
            "quiver_run_checkpoint_duration_seconds",
            "gauge",
            "The last checkpoint, from barrier to durable and published.",
            s,
        );
    }
    let _ = writeln!(
        out,
        "# HELP quiver_run_rows_total Feature rows committed per view."
    );
    let _ = writeln!(out, "# TYPE quiver_run_rows_total counter");
    for (view, rows) in &run.view_rows {
        let _ = writeln!(
            out,
            "quiver_run_rows_total{{view=\"{}\"}} {rows}",
            label(view)
        );
    }
}

/// `text` as a Prometheus label value.
fn label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Records one request to `endpoint` answered with `status` after `seconds`.
    pub fn observe(&self, endpoint: &str, status: u16, seconds: f64) {
        let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        *c.requests
            .entry((endpoint.to_string(), status))
            .or_insert(0) += 1;
        let h = c.latency.entry(endpoint.to_string()).or_default();
        if let Some(i) = BUCKETS.iter().position(|&b| seconds <= b) {
            h.buckets[i] += 1;
        }
        h.sum += seconds;
        h.count += 1;
    }

    /// Counts entities read by feature requests.
    pub fn entities_read(&self, n: usize) {
        let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        c.entities += n as u64;
    }

    /// The metrics page, with the online store's `tables` and, when the server runs next to
    /// the job, the job's figures, as of `now_ms` (ms since the Unix epoch).
    pub fn render(
        &self,
        tables: &[(String, OnlineStamp)],
        run: Option<&RunFigures>,
        state_cache: (u64, u64),
        now_ms: u64,
    ) -> String {
        let mut out = String::new();
        if let Some(run) = run {
            render_run(&mut out, run, now_ms);
        }
        let c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(
            out,
            "# HELP quiver_http_requests_total HTTP requests by endpoint and status."
        );
        let _ = writeln!(out, "# TYPE quiver_http_requests_total counter");
        for ((endpoint, status), n) in &c.requests {
            let _ = writeln!(
                out,
                "quiver_http_requests_total{{endpoint=\"{}\",status=\"{status}\"}} {n}",
                label(endpoint)
            );
        }
        let _ = writeln!(
            out,
            "# HELP quiver_http_request_duration_seconds Time to answer a request."
        );
        let _ = writeln!(out, "# TYPE quiver_http_request_duration_seconds histogram");
        for (endpoint, h) in &c.latency {
            let endpoint = label(endpoint);
            let mut cumulative = 0;
            for (bound, n) in BUCKETS.iter().zip(h.buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "quiver_http_request_duration_seconds_bucket{{endpoint=\"{endpoint}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "quiver_http_request_duration_seconds_bucket{{endpoint=\"{endpoint}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "quiver_http_request_duration_seconds_sum{{endpoint=\"{endpoint}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "quiver_http_request_duration_seconds_count{{endpoint=\"{endpoint}\"}} {}",
                h.count
            );
        }
        let _ = writeln!(
            out,
            "# HELP quiver_online_entities_read_total Entities read by feature requests."
        );
        let _ = writeln!(out, "# TYPE quiver_online_entities_read_total counter");
        let _ = writeln!(out, "quiver_online_entities_read_total {}", c.entities);
        drop(c);
        let (hits, misses) = state_cache;
        let _ = writeln!(
            out,
            "# HELP quiver_online_state_cache_reads_total Entity states read from the server's state cache (hit) and from the store (miss)."
        );
        let _ = writeln!(out, "# TYPE quiver_online_state_cache_reads_total counter");
        let _ = writeln!(
            out,
            "quiver_online_state_cache_reads_total{{result=\"hit\"}} {hits}"
        );
        let _ = writeln!(
            out,
            "quiver_online_state_cache_reads_total{{result=\"miss\"}} {misses}"
        );
        let gauges: [Gauge; 5] = [
            ("quiver_online_epoch", "Last checkpoint epoch applied to the online store.", |s, _| {
                Some(s.epoch as f64)
            }),
            ("quiver_online_keys", "Entities with state in the online store.", |s, _| {
                Some(s.keys as f64)
            }),
            (
                "quiver_online_watermark_lag_seconds",
                "Now minus the online store's watermark: how far behind in event time reads are.",
                |s, now| s.watermark.map(|w| now as f64 / 1e3 - w as f64 / 1e6),
            ),
            (
                "quiver_online_freshness_seconds",
                "At the last commit, its time minus the watermark it made visible (event to visible in the online store).",
                |s, _| s.watermark.map(|w| s.committed_unix_ms as f64 / 1e3 - w as f64 / 1e6),
            ),
            (
                "quiver_online_commit_age_seconds",
                "Now minus the time of the last commit to the online store.",
                |s, now| Some(now.saturating_sub(s.committed_unix_ms) as f64 / 1e3),
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            for (table, stamp) in tables {
                let (view, version) = table.split_once('@').unwrap_or((table, ""));
                if let Some(v) = value(stamp, now_ms) {
                    let _ = writeln!(
                        out,
                        "{name}{{view=\"{}\",version=\"{}\"}} {v}",
                        label(view),
                        label(version)
                    );
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_labels_escaped() {
        let m = Metrics::default();
        m.observe("/v1/features", 200, 0.0007);
        m.observe("/v1/features", 200, 0.003);
        m.observe("/v1/features", 401, 9.0);
        let stamp = OnlineStamp {
            run: "r".into(),
            epoch: 4,
            watermark: Some(1_000_000),
            committed_unix_ms: 1_500,
            fingerprint: 0,
            keys: 12,
        };
        let run = RunFigures {
            events: 10,
            view_rows: vec![("cards".into(), 7)],
            ..RunFigures::default()
        };
        let text = m.render(&[("v\"x@abc".into(), stamp)], Some(&run), (7, 3), 3_000);
        for line in [
            "quiver_http_requests_total{endpoint=\"/v1/features\",status=\"200\"} 2",
            "quiver_http_request_duration_seconds_bucket{endpoint=\"/v1/features\",le=\"0.001\"} 1",
            "quiver_http_request_duration_seconds_bucket{endpoint=\"/v1/features\",le=\"0.005\"} 2",
            "quiver_http_request_duration_seconds_bucket{endpoint=\"/v1/features\",le=\"2.5\"} 2",
            "quiver_http_request_duration_seconds_bucket{endpoint=\"/v1/features\",le=\"+Inf\"} 3",
            "quiver_online_keys{view=\"v\\\"x\",version=\"abc\"} 12",
            "quiver_online_watermark_lag_seconds{view=\"v\\\"x\",version=\"abc\"} 2",
            "quiver_online_freshness_seconds{view=\"v\\\"x\",version=\"abc\"} 0.5",
            "quiver_run_events_total 10",
            "quiver_run_rows_total{view=\"cards\"} 7",
            "quiver_online_state_cache_reads_total{result=\"hit\"} 7",
            "quiver_online_state_cache_reads_total{result=\"miss\"} 3",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
