//! `quiver status`: rows, commits, the newest event and freshness against the view's SLA,
//! from the version's Delta log and its files' event-time statistics.

use quiver_integration_tests::{apply_one_view, write_files};
use quiver_pipeline::registry::status::status;
use quiver_pipeline::registry::Registry;

const VIEW: &str = "SELECT card_id, event_time,
  count(*) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW) AS n_10m
FROM source";

async fn apply_events(dir: &std::path::Path, newest_ms: i64, sla: &str) -> Registry {
    let lines: Vec<String> = (0..500)
        .map(|k| {
            format!(
                "{{\"card_id\": \"c{}\", \"event_time\": {}}}",
                k % 7,
                newest_ms - (499 - k) * 1_000
            )
        })
        .collect();
    write_files(dir, &[("in.ndjson", &lines.join("\n"))]);
    apply_one_view(
        dir,
        "in.ndjson",
        &[
            "{name: card_id, type: string}",
            "{name: event_time, type: timestamp, nullable: false}",
        ],
        "v",
        VIEW,
        &format!("freshness_sla: {sla}"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_freshness_against_the_sla() {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;

    // Events up to a minute ago, SLA one hour: fresh.
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = apply_events(dir.path(), now_ms - 60_000, "1h").await;
    let views = status(&registry, None).expect("status");
    assert_eq!(views.len(), 1);
    let v = &views[0];
    assert_eq!((v.rows, v.commits), (500, 1));
    let newest = quiver_pipeline::lineage::format_micros((now_ms - 60_000) * 1000);
    assert_eq!(v.last_event_time.as_deref(), Some(newest.as_str()));
    let freshness = v.freshness_s.expect("freshness");
    assert!((60.0..3600.0).contains(&freshness), "{freshness}");
    assert_eq!(v.sla_holds, Some(true));
    let latency = v.latency_p50_s.expect("latency");
    assert!((60.0..3600.0).contains(&latency), "{latency}");

    // Events from a year ago: stale.
    let old = tempfile::tempdir().expect("tempdir");
    let registry = apply_events(old.path(), now_ms - 365 * 86_400_000, "5m").await;
    let v = &status(&registry, Some("v")).expect("status")[0];
    assert_eq!(v.sla_holds, Some(false));
    assert!(v.to_string().contains("VIOLATES freshness_sla"), "{v}");
}
