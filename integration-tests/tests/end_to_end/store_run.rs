//! `quiver run --store`: a streaming run continuing a registered version. Its epochs append
//! to the version's Delta table and event log (one commit per epoch and table, with a `txn`),
//! its windows continue from the event log, and the table ends up equal to a backfill over all
//! the events; events not newer than the table's are dead-lettered as late.

use quiver_integration_tests::{
    apply_one_view, assert_same_features, local, read_parquet, read_view, write_files,
    write_parquet, CARD_EVENTS,
};
use quiver_pipeline::registry::event_log::event_log_dir;
use quiver_pipeline::run::{run, RunOptions};
use quiver_pipeline::source::SourceOverrides;
use quiver_pipeline::training_set::{parse_feature_list, training_set, TrainingSetOptions};
use quiver_pipeline::{CompiledPipeline, LoadedConfig};
use quiver_store::delta;

const VIEW: &str = "SELECT card_id, event_time, amount,
  count(*) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW) AS n_10m,
  sum(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW) AS sum_1h,
  max(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW) AS max_1h,
  count(*) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS n_life
FROM source";

/// `quiver run --store` of `one_view.yaml` in `dir` into `registry`'s store, with `options`.
async fn store_run(
    dir: &std::path::Path,
    registry: &quiver_pipeline::registry::Registry,
    options: RunOptions,
) -> Result<quiver_pipeline::RunSummary, quiver_pipeline::JobError> {
    let loaded = LoadedConfig::load(&dir.join("one_view.yaml")).expect("config");
    let pipeline = CompiledPipeline::compile(loaded).await.expect("compile");
    let store = Some(registry.clone());
    run(pipeline, RunOptions { store, ..options }).await
}

/// Events in the event log of the latest version of view `v` in `registry`.
fn logged_events(registry: &quiver_pipeline::registry::Registry) -> usize {
    let definition = registry.definition("v", None).expect("definition");
    let log =
        quiver_pipeline::registry::event_log::read_event_log(registry, &definition, None, false);
    log.expect("event log")
        .batches
        .iter()
        .map(|b| b.num_rows())
        .sum()
}

/// A run over `input` (in `dir`) into `dir/run-out`, a checkpoint every `every_events` events.
fn streamed(dir: &std::path::Path, input: &str, every_events: u64) -> RunOptions {
    RunOptions {
        source: SourceOverrides {
            input: Some(dir.join(input).display().to_string()),
            ..SourceOverrides::default()
        },
        output: Some(dir.join("run-out")),
        checkpoints: Some(quiver_pipeline::checkpoint::CheckpointPolicy {
            interval: None,
            every_events: Some(every_events),
        }),
        ..RunOptions::default()
    }
}

fn line(k: i64) -> String {
    format!(
        "{{\"card_id\": \"c{}\", \"amount\": {}.5, \"event_time\": {}}}",
        k % 13,
        (k * 37) % 400,
        1_767_225_600_000i64 + k * 20_000
    )
}

/// The rows of `view` applied to all the events (history and streamed) in `dir/all`.
async fn all_events(dir: &std::path::Path, view: &str) -> arrow::record_batch::RecordBatch {
    let registry = apply_one_view(&dir.join("all"), "*.ndjson", &CARD_EVENTS, "v", view, "").await;
    let version = registry.latest("v").expect("latest").expect("version");
    read_view(&local(&registry.data_dir("v", &version)))
}

/// Writes the history (events 0..1500, applied), what comes after it (1500..3000 with
/// `stale` events inserted at their indices: late), and both without the stale ones under
/// `all/` (the reference's input); applies the history as view `v` and returns the store and
/// the version and its table.
async fn history_and_later(
    dir: &std::path::Path,
    stale: &[(usize, i64)],
) -> (
    quiver_pipeline::registry::Registry,
    String,
    quiver_store::StoreDir,
) {
    let history: Vec<String> = (0..1500).map(line).collect();
    let mut later: Vec<String> = (1500..3000).map(line).collect();
    for &(at, k) in stale {
        later.insert(at, line(k));
    }
    write_files(
        dir,
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
    let registry = apply_one_view(dir, "history.ndjson", &CARD_EVENTS, "v", VIEW, "").await;
    let version = registry.latest("v").expect("latest").expect("version");
    let table = registry.data_dir("v", &version);
    (registry, version, table)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_run_continues_the_table_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    // History (applied) and what comes after it (streamed), plus two stale events: one as
    // old as the history's newest, one far older.
    let (registry, version, table) = history_and_later(dir.path(), &[(10, 1499), (500, 3)]).await;

    let summary = store_run(
        dir.path(),
        &registry,
        streamed(dir.path(), "later.ndjson", 400),
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
    let ours = read_view(&local(&table));
    assert_eq!(ours.num_rows(), 3000);
    let reference = all_events(dir.path(), VIEW).await;
    let ours = ours.project(&[0, 1, 2, 3, 4, 5, 6]).expect("features");
    let reference = reference.project(&[0, 1, 2, 3, 4, 5, 6]).expect("features");
    assert_same_features(&ours, &reference, &["card_id", "event_time"], "store run");

    // Compaction merges the epochs' small files; the rows stay the same, old files go.
    let files_before = delta::active_files(&table).expect("files").len();
    assert!(files_before > 1);
    // Each row's availability is its file's commit time: NULL as written (known only at the
    // commit), written into the rows by the compaction that merges the files.
    let commit_times: std::collections::BTreeSet<i64> = delta::active_files(&table)
        .expect("files")
        .iter()
        .map(|f| f.added_ms.expect("commit time") * 1000)
        .collect();
    let availability = |batch: &arrow::record_batch::RecordBatch| {
        let column = batch
            .column_by_name(quiver_store::AVAILABLE_COLUMN)
            .expect("the availability column");
        arrow::compute::cast(column, &arrow::datatypes::DataType::Int64)
            .expect("int64")
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .expect("int64")
            .iter()
            .collect::<Vec<Option<i64>>>()
    };
    assert!(availability(&read_view(&local(&table)))
        .iter()
        .all(Option::is_none));
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
    let after = read_view(&local(&table))
        .project(&[0, 1, 2, 3, 4, 5, 6])
        .expect("features");
    assert_same_features(&after, &reference, &["card_id", "event_time"], "compacted");
    let filled = availability(&read_view(&local(&table)));
    assert_eq!(filled.len(), 3000);
    assert!(
        filled
            .iter()
            .all(|a| a.is_some_and(|a| commit_times.contains(&a))),
        "every row's availability is the commit time of the file that held it"
    );
    assert!(filled.iter().flatten().min() < filled.iter().flatten().max());
    let status = quiver_pipeline::registry::status::status(&registry, Some("v")).expect("status");
    assert_eq!(status[0].rows, 3000);
    assert!(
        status[0].latency_p50_s.is_some(),
        "commits record their newest event"
    );

    // The event log gained the streamed events (not the late ones).
    assert_eq!(logged_events(&registry), 3000);

    // What an apply killed between moving a version into place and registering it leaves is
    // removed once older than the retention; everything registered stays.
    let orphan_log = local(registry.root()).join("events/transactions/1");
    let orphan_table = local(registry.root()).join("offline/v/0123456789abcdef");
    for orphan in [&orphan_log, &orphan_table] {
        std::fs::create_dir_all(orphan.join("_delta_log")).expect("orphan");
        std::fs::write(orphan.join("part-0.parquet"), b"x").expect("orphan file");
    }
    let kept = quiver_pipeline::registry::compact::remove_unreferenced(
        &registry,
        std::time::Duration::from_secs(3600),
    )
    .expect("gc");
    assert!(
        kept.is_empty(),
        "young directories are left alone: {kept:?}"
    );
    let mut removed = quiver_pipeline::registry::compact::remove_unreferenced(
        &registry,
        std::time::Duration::ZERO,
    )
    .expect("gc");
    removed.sort();
    assert_eq!(
        removed,
        vec![
            orphan_log.display().to_string(),
            orphan_table.display().to_string()
        ]
    );
    assert!(!orphan_log.exists() && !orphan_table.exists());
    let definition = registry.definition("v", None).expect("definition");
    assert!(local(&table).exists() && local(&event_log_dir(&registry, &definition)).exists());
    assert_eq!(logged_events(&registry), 3000, "after the clean-up");

    // A changed view applied again is backfilled from the events the store holds (the apply's
    // history and the run's streamed events, late ones left out), not from the configured
    // source, which has the history only: it equals the changed view over all the events.
    let changed = VIEW.replace("10 minutes", "20 minutes");
    let registry = apply_one_view(
        dir.path(),
        "history.ndjson",
        &CARD_EVENTS,
        "v",
        &changed,
        "",
    )
    .await;
    let v2 = registry.latest("v").expect("latest").expect("version");
    assert_ne!(v2, version);
    assert_eq!(
        registry.definition("v", Some(&v2)).expect("v2").events,
        definition.events,
        "the new version shares the event log it was backfilled from"
    );
    let ours = read_view(&local(&registry.data_dir("v", &v2)))
        .project(&[0, 1, 2, 3, 4, 5, 6])
        .expect("features");
    let reference = all_events(dir.path(), &changed)
        .await
        .project(&[0, 1, 2, 3, 4, 5, 6])
        .expect("features");
    assert_eq!(ours.num_rows(), 3000);
    assert_same_features(
        &ours,
        &reference,
        &["card_id", "event_time"],
        "a new version from the event log",
    );
}

/// `--as-known-at` against a DataFusion reference that joins each spine row with the events of
/// its key that happened by then **and** were committed by then (each event's availability is
/// the commit time of the Delta commit that added its file): spine times before any commit,
/// between the apply's and the run's commits, between epochs and after all of them; and the
/// same answers after a compaction merged the files (availability survives it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_known_at_counts_only_what_was_committed_by_then() {
    use arrow::array::TimestampMicrosecondArray;
    use arrow::array::{Array, AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use std::sync::Arc;
    const KNOWN_VIEW: &str = "SELECT card_id, event_time, amount,
  count(*) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '1 day' PRECEDING AND CURRENT ROW) AS n_1d,
  sum(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '1 day' PRECEDING AND CURRENT ROW) AS sum_1d,
  max(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS max_life
FROM source WHERE amount > 20";
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let at = |k: i64, base: i64| {
        format!(
            "{{\"card_id\": \"c{}\", \"amount\": {}.5, \"event_time\": {}}}",
            k % 7,
            (k * 53) % 300,
            base + k * 10_000
        )
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let history: Vec<String> = (0..300).map(|k| at(k, now_ms - 3 * 3_600_000)).collect();
    // Three files one after another in time: one epoch each.
    let later: Vec<String> = (0..300).map(|k| at(k, now_ms - 3_600_000)).collect();
    write_files(
        dir.path(),
        &[
            ("history.ndjson", &history.join("\n")),
            ("later/a.ndjson", &later[..100].join("\n")),
            ("later/b.ndjson", &later[100..200].join("\n")),
            ("later/c.ndjson", &later[200..].join("\n")),
        ],
    );
    let registry = apply_one_view(
        dir.path(),
        "history.ndjson",
        &CARD_EVENTS,
        "v",
        KNOWN_VIEW,
        "",
    )
    .await;
    store_run(dir.path(), &registry, streamed(dir.path(), "later", 50))
        .await
        .expect("store run");

    // The events with their availability, as the reference sees them: from the Delta log.
    let definition = registry.definition("v", None).expect("definition");
    let log = registry.events_dir(&definition.events);
    let mut cards = Vec::new();
    let mut times = Vec::new();
    let mut amounts = Vec::new();
    let mut available = Vec::new();
    let mut commits = Vec::new();
    for file in delta::active_files(&log).expect("files") {
        let added_us = file.added_ms.expect("commit time") * 1000;
        commits.push(added_us);
        let batch = read_parquet(&local(&log).join(&file.path));
        let card = arrow::compute::cast(batch.column_by_name("card_id").unwrap(), &DataType::Utf8)
            .unwrap();
        let time = batch.column_by_name("event_time").unwrap();
        let time = time.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        let amount = batch
            .column_by_name("amount")
            .unwrap()
            .as_primitive::<arrow::datatypes::Float64Type>();
        for r in 0..batch.num_rows() {
            cards.push(card.as_string::<i32>().value(r).to_string());
            times.push(time.value(r));
            amounts.push(amount.is_valid(r).then(|| amount.value(r)));
            available.push(added_us);
        }
    }
    commits.sort_unstable();
    commits.dedup();
    assert!(
        commits.len() >= 3,
        "the apply and several epochs: {commits:?}"
    );
    let events = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("card_id", DataType::Utf8, false),
            Field::new(
                "event_time",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                false,
            ),
            Field::new("amount", DataType::Float64, true),
            Field::new(
                "available_at",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                false,
            ),
        ])),
        vec![
            Arc::new(StringArray::from(cards)),
            Arc::new(TimestampMicrosecondArray::from(times)),
            Arc::new(Float64Array::from(amounts)),
            Arc::new(TimestampMicrosecondArray::from(available)),
        ],
    )
    .unwrap();
    // Spine times around every commit, and long before and after.
    let mut spine_times = vec![
        (now_ms - 4 * 3_600_000) * 1000,
        (now_ms - 90 * 60_000) * 1000,
    ];
    for &c in &commits {
        spine_times.extend([c - 1, c, c + 1]);
    }
    spine_times.push((now_ms + 3_600_000) * 1000);
    let mut spine_cards = Vec::new();
    let mut spine_ts = Vec::new();
    for &t in &spine_times {
        for card in ["c0", "c3", "c6", "nobody"] {
            spine_cards.push(card.to_string());
            spine_ts.push(t);
        }
    }
    let n = spine_ts.len();
    let spine = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("card_id", DataType::Utf8, false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                false,
            ),
            Field::new("row_id", DataType::Int64, false),
        ])),
        vec![
            Arc::new(StringArray::from(spine_cards)),
            Arc::new(TimestampMicrosecondArray::from(spine_ts)),
            Arc::new(Int64Array::from((0..n as i64).collect::<Vec<_>>())),
        ],
    )
    .unwrap();
    let spine_path = dir.path().join("spine.parquet");
    write_parquet(&spine_path, &spine);
    let reference = quiver_sql::reference::batch_query(
        "SELECT s.row_id,
           count(CASE WHEN e.event_time >= s.ts - INTERVAL '1 day' THEN 1 END) AS n_1d,
           sum(CASE WHEN e.event_time >= s.ts - INTERVAL '1 day' THEN e.amount END) AS sum_1d,
           max(e.amount) AS max_life
         FROM spine s LEFT JOIN events e ON e.card_id = s.card_id
           AND e.event_time <= s.ts AND e.available_at <= s.ts AND e.amount > 20
         GROUP BY s.row_id ORDER BY s.row_id",
        &[
            ("events".into(), events.schema(), vec![events.clone()]),
            ("spine".into(), spine.schema(), vec![spine.clone()]),
        ],
    )
    .await
    .expect("reference");
    let reference = arrow::compute::concat_batches(&reference[0].schema(), &reference).unwrap();

    let check = |label: &str, got: &RecordBatch| {
        let mut seen_partial = false;
        for (f, name) in ["n_1d", "sum_1d", "max_life"].iter().enumerate() {
            let (ours, theirs) = (got.column_by_name(name).unwrap(), reference.column(f + 1));
            let ours = arrow::compute::cast(ours, &DataType::Float64).unwrap();
            let theirs = arrow::compute::cast(theirs, &DataType::Float64).unwrap();
            let (a, b) = (
                ours.as_primitive::<arrow::datatypes::Float64Type>(),
                theirs.as_primitive::<arrow::datatypes::Float64Type>(),
            );
            for r in 0..n {
                let (x, y) = (
                    a.is_valid(r).then(|| a.value(r)),
                    b.is_valid(r).then(|| b.value(r)),
                );
                match (x, y) {
                    (Some(x), Some(y)) => assert!(
                        (x - y).abs() <= 1e-9 * y.abs().max(1.0),
                        "{label} {name} row {r}: {x} vs {y}"
                    ),
                    (x, y) => assert_eq!(x, y, "{label} {name} row {r}"),
                }
            }
            if *name == "n_1d" {
                seen_partial =
                    (0..n).any(|r| b.value(r) > 0.0) && (0..n).any(|r| b.value(r) == 0.0);
            }
        }
        assert!(seen_partial, "{label}: some rows see events, some none");
    };
    let known_at = |out: &str, data_budget: usize| {
        let registry = registry.clone();
        let spine_path = spine_path.clone();
        let out = dir.path().join(out);
        async move {
            let report = training_set(
                &registry,
                TrainingSetOptions {
                    as_known_at: true,
                    data_budget: Some(data_budget),
                    ..TrainingSetOptions::new(
                        spine_path,
                        parse_feature_list("v:*").expect("features"),
                        out.clone(),
                    )
                },
            )
            .await
            .expect("training set");
            assert_eq!(
                report.views[0].partitions > 1,
                data_budget < quiver_pipeline::resident::MAX_DEFAULT_MEMORY_LIMIT
            );
            read_parquet(&out)
        }
    };
    let all = quiver_pipeline::resident::MAX_DEFAULT_MEMORY_LIMIT;
    check("as known at", &known_at("known.parquet", all).await);
    // Partitioned by key into spill files: the same answer.
    check(
        "as known at, partitioned",
        &known_at("known1.parquet", 4 << 10).await,
    );
    quiver_pipeline::registry::compact::compact(
        &registry,
        Some("v"),
        1_000_000,
        std::time::Duration::ZERO,
    )
    .expect("compact");
    assert_eq!(delta::active_files(&log).expect("files").len(), 1);
    check("after compaction", &known_at("known2.parquet", all).await);
}

/// The shards of a store run (`--shard I/N`, what the instances of a sharded Kafka job run)
/// each commit their keys' rows into the one table, naming their shard in the commits: the
/// table equals a backfill over all the events, every row once, and the event log gets every
/// streamed event once (from shard 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shards_of_a_store_run_fill_one_table_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (registry, _, table) = history_and_later(dir.path(), &[(700, 20)]).await;
    let mut late = 0;
    for index in 0..2 {
        let options = RunOptions {
            shard: Some(quiver_sql::KeyShard::new(index, 2).expect("shard")),
            ..streamed(dir.path(), "later.ndjson", 500)
        };
        let summary = store_run(dir.path(), &registry, options)
            .await
            .expect("store run of a shard");
        late += summary.dead_letters.get("late").copied().unwrap_or(0);
    }
    assert_eq!(
        late, 1,
        "the late event is a dead letter of the shard owning its key"
    );
    // Another layout cannot continue where each of these shards stopped: refused.
    for shard in [None, Some(quiver_sql::KeyShard::new(0, 3).expect("shard"))] {
        let options = RunOptions {
            output: Some(dir.path().join("other-layout")),
            shard,
            ..RunOptions::default()
        };
        let refused = store_run(dir.path(), &registry, options)
            .await
            .expect_err("another shard layout is refused");
        assert!(refused.to_string().contains("2 shards"), "{refused}");
    }
    let shards: std::collections::BTreeSet<String> = (delta::versions(&table).expect("log"))
        .into_iter()
        .flat_map(|v| delta::read_commit(&table, v).expect("commit"))
        .filter_map(|a| {
            a.pointer("/commitInfo/quiver/shard")
                .and_then(|s| s.as_str())
                .map(String::from)
        })
        .collect();
    assert_eq!(shards, ["0/2".to_string(), "1/2".to_string()].into());
    let ours = read_view(&local(&table));
    assert_eq!(ours.num_rows(), 3000);
    let reference = all_events(dir.path(), VIEW).await;
    let ours = ours.project(&[0, 1, 2, 3, 4, 5, 6]).expect("features");
    let reference = reference.project(&[0, 1, 2, 3, 4, 5, 6]).expect("features");
    assert_same_features(
        &ours,
        &reference,
        &["card_id", "event_time"],
        "sharded store run",
    );
    assert_eq!(logged_events(&registry), 3000);
}
