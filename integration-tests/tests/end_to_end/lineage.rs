//! Lineage of a feature value: `entity_lineage` names the version, the value (the same as a
//! training set's), and exactly the input lines of the entity's events inside each window.

use quiver_integration_tests::{apply_one_view, write_files, CARD_EVENTS};
use quiver_pipeline::lineage::{definition_lineage, entity_lineage};

const START_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

const VIEW: &str = "SELECT card_id, event_time,
  count(*) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW) AS n_10m,
  sum(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW) AS sum_1h
FROM source";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lineage_names_the_lines_inside_each_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Line k (1-based): card c{k % 3}, one event a minute, amount k.
    let lines: Vec<String> = (1..=300)
        .map(|k| {
            format!(
                "{{\"card_id\": \"c{}\", \"amount\": {k}, \"event_time\": {}}}",
                k % 3,
                START_MS + k * 60_000
            )
        })
        .collect();
    write_files(dir.path(), &[("in.ndjson", &lines.join("\n"))]);
    let registry = apply_one_view(dir.path(), "in.ndjson", &CARD_EVENTS, "v", VIEW, "").await;

    // As of minute 100 and a half: card c1 has lines 91, 94, 97, 100 in the last 10 minutes
    // and lines 43..=100 (every third) in the last hour.
    let at = (START_MS + 100 * 60_000 + 30_000) * 1000;
    let lineage = entity_lineage(&registry, "v", None, &["c1".to_string()], at)
        .await
        .expect("lineage");
    assert!(lineage.latest);
    let n = &lineage.features[0];
    assert_eq!((n.feature.as_str(), n.value.as_str()), ("n_10m", "4"));
    assert_eq!(n.events, 4);
    assert_eq!(n.sources.len(), 1);
    assert!(n.sources[0].partition.ends_with("in.ndjson"));
    assert_eq!(n.sources[0].offsets, (91, 100));
    assert_eq!(n.sources[0].listed, vec![91, 94, 97, 100]);
    let s = &lineage.features[1];
    // Lines 43, 46, ..., 100 hold amounts equal to their line numbers.
    let lines_1h: Vec<i64> = (41..=100).filter(|k| k % 3 == 1).collect();
    assert_eq!(s.events, lines_1h.len() as u64);
    assert_eq!(
        s.value,
        format!("{:.1}", lines_1h.iter().sum::<i64>() as f64)
    );
    assert_eq!(s.sources[0].offsets, (lines_1h[0] as u64, 100));
    assert!(
        s.sources[0].listed.is_empty(),
        "20 events are summarized as a range"
    );
    assert_eq!(s.windows, vec!["RANGE 1 hour".to_string()]);

    // A card without events then: zero, no sources.
    let none = entity_lineage(&registry, "v", None, &["c9".to_string()], at)
        .await
        .expect("lineage");
    assert_eq!(none.features[0].value, "0");
    assert_eq!(none.features[1].value, "NULL");
    assert!(none.features[0].sources.is_empty());

    let chain = definition_lineage(&registry, "v").expect("definition lineage");
    assert!(
        chain.contains("(latest)") && chain.contains("-> view v keyed by card_id"),
        "{chain}"
    );
    let err = entity_lineage(&registry, "v", None, &[], at)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("one --entity value per key"),
        "{err}"
    );
}
