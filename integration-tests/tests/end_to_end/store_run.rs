//! `quiver run --store`: a streaming run continuing a registered version. Its epochs append
//! to the version's Delta table and event log (one commit per epoch and table, with a `txn`),
//! its windows continue from the event log, and the table ends up equal to a backfill over all
//! the events; events not newer than the table's are dead-lettered as late.

use quiver_integration_tests::{apply_one_view, assert_same_features, read_view, write_files};
use quiver_pipeline::run::{run, RunOptions};
use quiver_pipeline::source::SourceOverrides;
use quiver_pipeline::{CompiledPipeline, LoadedConfig};
use quiver_store::delta;

const VIEW: &str = "SELECT card_id, event_time, amount,
  count(*) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW) AS n_10m,
  sum(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW) AS sum_1h,
  max(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW) AS max_1h,
  count(*) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS n_life
FROM source";

const SCHEMA: [&str; 3] = [
    "{name: card_id, type: string}",
    "{name: amount, type: float}",
    "{name: event_time, type: timestamp, nullable: false}",
];

fn line(k: i64) -> String {
    format!(
        "{{\"card_id\": \"c{}\", \"amount\": {}.5, \"event_time\": {}}}",
        k % 13,
        (k * 37) % 400,
        1_767_225_600_000i64 + k * 20_000
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_run_continues_the_table_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    // History (applied) and what comes after it (streamed), plus two stale events.
    let history: Vec<String> = (0..1500).map(line).collect();
    let mut later: Vec<String> = (1500..3000).map(line).collect();
    later.insert(10, line(1499)); // as old as the history's newest: late
    later.insert(500, line(3)); // far older: late
    write_files(
        dir.path(),
        &[
            ("history.ndjson", &history.join("\n")),
            ("later.ndjson", &later.join("\n")),
            ("all/a.ndjson", &history.join("\n")),
            (
                "all/b.ndjson",
                &(1500..3000).map(line).collect::<Vec<_>>().join("\n"),
            ),
        ],
    );
    let registry = apply_one_view(dir.path(), "history.ndjson", &SCHEMA, "v", VIEW, "").await;
    let version = registry.latest("v").expect("latest").expect("version");
    let table = registry.data_dir("v", &version);

    let loaded = LoadedConfig::load(&dir.path().join("one_view.yaml")).expect("config");
    let pipeline = CompiledPipeline::compile(loaded).await.expect("compile");
    let summary = run(
        pipeline,
        RunOptions {
            source: SourceOverrides {
                input: Some(dir.path().join("later.ndjson").display().to_string()),
                events: None,
            },
            output: Some(dir.path().join("run-out")),
            checkpoints: Some(quiver_pipeline::checkpoint::CheckpointPolicy {
                interval: None,
                every_events: Some(400),
            }),
            store: Some(registry.clone()),
            ..RunOptions::default()
        },
    )
    .await
    .expect("store run");
    assert_eq!(
        summary.dead_letters.get("late").copied(),
        Some(2),
        "{summary}"
    );

    // The table: apply's commit, then the run's epochs, each with its txn.
    let versions = delta::versions(&table).expect("log");
    assert!(versions.len() >= 2, "{versions:?}");
    let epochs: Vec<i64> = versions[1..]
        .iter()
        .flat_map(|v| delta::read_commit(&table, *v).expect("commit"))
        .filter_map(|a| a.pointer("/txn/version").and_then(|v| v.as_i64()))
        .collect();
    let mut unique = epochs.clone();
    unique.dedup();
    assert_eq!(epochs, unique, "one commit per epoch");
    // Every row exactly once, equal to a backfill over all events.
    let ours = read_view(&table);
    assert_eq!(ours.num_rows(), 3000);
    let reference_registry =
        apply_one_view(&dir.path().join("all"), "*.ndjson", &SCHEMA, "v", VIEW, "").await;
    let reference_version = reference_registry
        .latest("v")
        .expect("latest")
        .expect("version");
    let reference = read_view(&reference_registry.data_dir("v", &reference_version));
    let ours = ours.project(&[0, 1, 2, 3, 4, 5, 6]).expect("features");
    let reference = reference.project(&[0, 1, 2, 3, 4, 5, 6]).expect("features");
    assert_same_features(&ours, &reference, &["card_id", "event_time"], "store run");

    // Compaction merges the epochs' small files; the rows stay the same, old files go.
    let files_before = delta::active_files(&table).expect("files").len();
    assert!(files_before > 1);
    let compacted = quiver_pipeline::registry::compact::compact(
        &registry,
        Some("v"),
        1_000_000,
        std::time::Duration::ZERO,
    )
    .expect("compact");
    assert_eq!(compacted.len(), 2, "the view's table and its event log");
    assert_eq!(delta::active_files(&table).expect("files").len(), 1);
    assert_eq!(compacted[0].vacuumed, files_before);
    let after = read_view(&table)
        .project(&[0, 1, 2, 3, 4, 5, 6])
        .expect("features");
    assert_same_features(&after, &reference, &["card_id", "event_time"], "compacted");
    let status = quiver_pipeline::registry::status::status(&registry, Some("v")).expect("status");
    assert_eq!(status[0].rows, 3000);
    assert!(
        status[0].latency_p50_s.is_some(),
        "commits record their newest event"
    );

    // The event log gained the streamed events (not the late ones).
    let definition = registry.definition("v", None).expect("definition");
    let (events, _) =
        quiver_pipeline::registry::event_log::read_event_log(&registry, &definition, None)
            .expect("event log");
    assert_eq!(events.iter().map(|b| b.num_rows()).sum::<usize>(), 3000);
}
