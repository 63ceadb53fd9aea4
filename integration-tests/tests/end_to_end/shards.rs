//! Shards of a job (`quiver run --shard I/N`, what the instances of a sharded Kafka job run):
//! over hostile files (disorder, late events, malformed lines, failing transforms) and two
//! views keyed differently, the union of the shards' feature rows equals the unsharded run's,
//! and the dead letters are those of the unsharded run: a record without a key once (shard
//! 0), a late event once per shard owning one of its keys.

use quiver_integration_tests::write_files;
use quiver_pipeline::compare::compare_outputs;
use quiver_pipeline::run::RunOptions;
use quiver_sql::KeyShard;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

fn config(dir: &Path) -> String {
    format!(
        "name: shards
source:
  name: raw
  files:
    location: {}/data/*.ndjson
    batch_size: 100
    schema:
      - {{name: card_id, type: string}}
      - {{name: merchant, type: string}}
      - {{name: amount, type: float, nullable: true}}
      - {{name: note, type: string, nullable: true}}
      - {{name: event_time, type: timestamp}}
event_time:
  column: event_time
  max_lateness: 2s
transforms:
  - name: tx
    sql: SELECT card_id, merchant, amount, event_time, CAST(note AS INT) AS note_int FROM raw
views:
  - name: cards
    sql: |
      SELECT card_id, event_time,
        count(*) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW) AS n_10m,
        sum(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW) AS sum_1h
      FROM tx
  - name: merchants
    sql: |
      SELECT merchant, event_time,
        avg(amount) OVER (PARTITION BY merchant ORDER BY event_time RANGE BETWEEN INTERVAL '30 minutes' PRECEDING AND CURRENT ROW) AS avg_30m,
        max(amount) OVER (PARTITION BY merchant ORDER BY event_time RANGE BETWEEN INTERVAL '5 minutes' PRECEDING AND CURRENT ROW) AS max_5m
      FROM tx
      WHERE amount IS NOT NULL
",
        dir.display()
    )
}

/// Two files of events with disorder within the lateness, and now and then a malformed line,
/// a note no transform can cast, or an event a day late.
fn write_events(dir: &Path, seed: u64) {
    let mut state = seed;
    let mut next = |n: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    for file in 0..2 {
        let mut lines = Vec::new();
        let mut time: i64 = 1_767_225_600_000;
        for i in 0..1_500 {
            time += next(2_000) as i64;
            let t = time - next(1_500) as i64;
            let card = format!("c{}", next(40));
            let merchant = format!("m{}", next(7));
            let amount = match next(20) {
                0 => "null".to_string(),
                _ => format!("{}.{}", next(300), next(100)),
            };
            let line = match next(60) {
                0 => "{\"card_id\": \"c1\", \"amount\": ".to_string(),
                1 => format!("{{\"card_id\": \"{card}\", \"merchant\": \"{merchant}\", \"amount\": 1, \"note\": \"x\", \"event_time\": {t}}}"),
                2 if i > 100 => format!("{{\"card_id\": \"{card}\", \"merchant\": \"{merchant}\", \"amount\": {amount}, \"event_time\": {}}}", t - 86_400_000),
                _ => format!("{{\"card_id\": \"{card}\", \"merchant\": \"{merchant}\", \"amount\": {amount}, \"event_time\": {t}}}"),
            };
            lines.push(line);
        }
        let path = dir.join("data").join(format!("part-{file}.ndjson"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, lines.join("\n")).unwrap();
    }
}

async fn run(config: &Path, out: &Path, shard: Option<KeyShard>) -> quiver_pipeline::RunSummary {
    let loaded = quiver_pipeline::LoadedConfig::load(config).unwrap();
    let pipeline = quiver_pipeline::CompiledPipeline::compile(loaded)
        .await
        .unwrap();
    let options = RunOptions {
        output: Some(out.to_path_buf()),
        shard,
        ..RunOptions::default()
    };
    quiver_pipeline::run::run(pipeline, options).await.unwrap()
}

/// Dead letters of a file as (partition, offset, reason) → details, duplicates kept.
fn dead_letters(file: &Path, into: &mut BTreeMap<(String, u64, String), Vec<String>>) {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let key = (
            v["partition"].as_str().unwrap().to_string(),
            v["offset"].as_u64().unwrap(),
            v["reason"].as_str().unwrap().to_string(),
        );
        let detail = v["detail"].as_str().unwrap_or_default().to_string();
        into.entry(key).or_default().push(detail);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shards_of_a_job_together_compute_what_the_job_does() {
    let dir = tempfile::tempdir().unwrap();
    write_events(dir.path(), 0x5EED);
    let config = write_files(dir.path(), &[("p.yaml", &config(dir.path()))]);
    let full = dir.path().join("full");
    let summary = run(&config, &full, None).await;
    assert!(
        summary.late > 10,
        "the input has late events: {}",
        summary.late
    );
    let sharded = dir.path().join("sharded");
    for index in 0..3 {
        let shard = KeyShard::new(index, 3).unwrap();
        let summary = run(&config, &sharded, Some(shard)).await;
        let rows: u64 = summary.views.iter().map(|v| v.rows).sum();
        assert!(rows > 0, "shard {shard} computed some keys");
        assert!(summary.views[0]
            .dir
            .starts_with(sharded.join(shard.dir_name())));
    }
    for view in compare_outputs(&full, &sharded, 1e-9, false).unwrap() {
        assert!(view.is_equal(), "{view}");
        assert!(view.rows.0 > 1_000, "{view}");
    }

    let mut expected = BTreeMap::new();
    dead_letters(&full.join("dead_letter.ndjson"), &mut expected);
    let mut got = BTreeMap::new();
    for index in 0..3 {
        let shard = KeyShard::new(index, 3).unwrap();
        dead_letters(
            &sharded.join(shard.dir_name()).join("dead_letter.ndjson"),
            &mut got,
        );
    }
    assert_eq!(
        expected.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "the same records are dead letters"
    );
    let reasons: std::collections::BTreeSet<&str> =
        expected.keys().map(|(_, _, r)| r.as_str()).collect();
    assert!(
        reasons.is_superset(&["late", "malformed_record", "transform_error"].into()),
        "{reasons:?}"
    );
    let mut split = 0;
    for (key, details) in &got {
        if key.2 != "late" {
            assert_eq!(details.len(), 1, "{key:?} once: {details:?}");
            continue;
        }
        // A late event's keys in the two views may belong to two shards: each says which
        // views it dropped the event from.
        assert!((1..=2).contains(&details.len()), "{key:?}: {details:?}");
        if details.len() == 2 {
            split += 1;
            let views: Vec<bool> = details
                .iter()
                .map(|d| d.contains("dropped from cards"))
                .collect();
            assert!(
                details.iter().all(|d| d.contains("dropped from")),
                "{details:?}"
            );
            assert_eq!(views.iter().filter(|v| **v).count(), 1, "{details:?}");
        }
    }
    assert!(split > 0, "some late events have keys in two shards");
}
