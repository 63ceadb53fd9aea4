//! Kafka end to end, against a real broker (scripts/test.sh starts one with scripts/kafka.sh
//! and exports QUIVER_TEST_KAFKA): features computed from a topic equal the batch reference
//! over the same events, bad messages become dead letters with their partitions and offsets,
//! and a store run killed at random moments commits every row exactly once.
//!
//! `QUIVER_KAFKA_CRASH_TRIALS=<n>` kills the store run more often than the default 20 (a soak).

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use quiver_connectors::kafka::{ensure_topic, JsonProducer, KafkaConfig};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

mod common;
use common::{delta_table, quiver_command, Rng};

const VIEW: &str = "SELECT card_id, event_time, txn_id,
  count(*) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW) AS n_10m,
  sum(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW) AS sum_1h,
  stddev_samp(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '1 day' PRECEDING AND CURRENT ROW) AS sd_1d,
  max(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '30 minutes' PRECEDING AND CURRENT ROW) AS max_30m,
  count(*) OVER (PARTITION BY card_id ORDER BY event_time) AS n_lifetime
FROM transactions";

const SCHEMA: &str = "
      - {name: txn_id, type: int}
      - {name: card_id, type: string}
      - {name: amount, type: float, nullable: true}
      - {name: event_time, type: timestamp}";

/// The broker, or `None` when not configured outside CI (the test command always sets it).
fn broker() -> Option<String> {
    match std::env::var("QUIVER_TEST_KAFKA") {
        Ok(b) => Some(b),
        Err(_) if std::env::var("CI").is_ok() => {
            panic!("QUIVER_TEST_KAFKA is not set: run the tests with `bash scripts/test.sh`, which starts a Kafka broker")
        }
        Err(_) => {
            eprintln!("skipping: QUIVER_TEST_KAFKA not set (bash scripts/test.sh starts a broker and sets it)");
            None
        }
    }
}

fn kafka_config(broker: &str, topic: &str) -> KafkaConfig {
    serde_json::from_value(serde_json::json!({
        "bootstrap_servers": broker,
        "topics": [topic],
        "schema": [],
    }))
    .unwrap()
}

/// Creates `topic` with `partitions` partitions.
fn create_topic(broker: &str, topic: &str, partitions: i32) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(ensure_topic(
            &kafka_config(broker, topic),
            topic,
            partitions,
        ))
        .unwrap();
}

/// A topic name no earlier test run used (the broker outlives test runs when started by hand).
fn fresh_topic(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

/// A Kafka pipeline over `topic` (with `kafka_extra` lines in its `kafka` section) and the same
/// view over NDJSON files (the reference).
fn write_configs(dir: &Path, broker: &str, topic: &str, kafka_extra: &str) -> (PathBuf, PathBuf) {
    let common_tail = format!(
        "event_time:
  column: event_time
  max_lateness: 5s
views:
  - name: cards
    sql: |
{}
checkpoint:
  interval: 100ms
",
        VIEW.lines()
            .map(|l| format!("      {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let kafka = dir.join("kafka.yaml");
    std::fs::write(
        &kafka,
        format!(
            "name: kafka-test
source:
  name: transactions
  kafka:
    bootstrap_servers: {broker}
    topics: [{topic}]
    group_id: {topic}-group
    batch_size: 200
{kafka_extra}    schema:{SCHEMA}
{common_tail}"
        ),
    )
    .unwrap();
    let files = dir.join("files.yaml");
    std::fs::write(
        &files,
        format!(
            "name: files-test
source:
  name: transactions
  files:
    location: {}
    format: ndjson
    schema:{SCHEMA}
{common_tail}",
            dir.join("reference.ndjson").display()
        ),
    )
    .unwrap();
    (kafka, files)
}

/// What the test produced: the good, on-time events (the reference's input) and the bad
/// messages as (partition name, offset, reason).
#[derive(Default)]
struct Produced {
    good: Vec<String>,
    bad: BTreeSet<(String, u64, String)>,
    next_txn: u64,
    /// Per partition: next offset and event time (ms).
    partitions: Vec<(u64, i64)>,
}

/// Produces `events` messages over the topic's partitions: cards are spread over partitions
/// (a card's events in one partition, as a keyed producer does), times rise with up to 2 s of
/// disorder, and now and then a message is malformed, of the wrong type, or a day late.
fn produce(broker: &str, topic: &str, produced: &mut Produced, events: usize, seed: u64) {
    let producer = JsonProducer::new(&kafka_config(broker, topic), topic).unwrap();
    let mut rng = Rng(seed);
    let count = produced.partitions.len() as u64;
    for _ in 0..events {
        let p = rng.below(count) as usize;
        let (offset, time) = produced.partitions[p];
        let t = time + rng.below(3_000) as i64;
        let card = format!("c{}", rng.below(12) * count + p as u64);
        produced.next_txn += 1;
        let txn = produced.next_txn;
        let name = format!("{topic}/{p}");
        let amount = format!("{}.{:02}", rng.below(500), rng.below(100));
        let on_time = t - rng.below(2_000) as i64;
        let (message, bad) = match rng.below(100) {
            0 => ("{\"txn_id\": 1, \"card_id\": ".to_string(), Some("malformed_record")),
            1 => (
                format!("{{\"txn_id\": {txn}, \"card_id\": \"{card}\", \"amount\": \"abc\", \"event_time\": {t}}}"),
                Some("wrong_type"),
            ),
            // Late only once every partition delivered its first batch: before, the slowest
            // partition has no watermark and the job's is at its minimum.
            2 if offset > 500 => (
                format!("{{\"txn_id\": {txn}, \"card_id\": \"{card}\", \"amount\": {amount}, \"event_time\": {}}}", t - 86_400_000),
                Some("late"),
            ),
            _ => (
                format!("{{\"txn_id\": {txn}, \"card_id\": \"{card}\", \"amount\": {amount}, \"event_time\": {on_time}}}"),
                None,
            ),
        };
        producer
            .send_to(Some(p as i32), Some(&card), message.as_bytes())
            .unwrap();
        match bad {
            Some(reason) => {
                produced.bad.insert((name, offset, reason.to_string()));
            }
            None => produced.good.push(message),
        }
        produced.partitions[p] = (offset + 1, t);
    }
    producer.flush().unwrap();
}

fn succeed(output: Output, what: &str) -> Output {
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `quiver compare --ignore-lineage` of two output directories succeeds.
fn assert_same_features(reference: &Path, got: &Path) {
    let compare = std::process::Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(["compare", "--ignore-lineage"])
        .arg(reference)
        .arg(got)
        .output()
        .unwrap();
    assert!(
        compare.status.success(),
        "features differ from the reference:\n{}",
        String::from_utf8_lossy(&compare.stdout)
    );
}

/// The dead letters of an output directory as (partition, offset, reason).
fn dead_letters(out: &Path) -> BTreeSet<(String, u64, String)> {
    let text = std::fs::read_to_string(out.join("dead_letter.ndjson")).unwrap_or_default();
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            (
                v["partition"].as_str().unwrap().to_string(),
                v["offset"].as_u64().unwrap(),
                v["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Every message of a topic with three partitions, read as a stream: the features equal a
/// backfill over the good events from a file, and the dead letters are exactly the malformed,
/// mistyped and late messages, each with its partition and offset.
#[test]
fn features_from_a_topic_equal_the_batch_reference_and_bad_messages_are_dead_letters() {
    let Some(broker) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    let topic = &fresh_topic("features-reference");
    create_topic(&broker, topic, 3);
    // The topic is all the input there is: its end ends the run, and every event is final.
    let (kafka, files) = write_configs(dir.path(), &broker, topic, "    stop_at_end: true\n");
    let mut produced = Produced {
        partitions: vec![(0, 1_767_225_600_000); 3],
        ..Produced::default()
    };
    produce(&broker, topic, &mut produced, 4_000, 0x5EED_0001);
    std::fs::write(
        dir.path().join("reference.ndjson"),
        produced.good.join("\n"),
    )
    .unwrap();

    let out = dir.path().join("out");
    let run = quiver_command("run", &kafka, &[("--output", &out)])
        .output()
        .unwrap();
    let run = succeed(run, "quiver run over Kafka");
    let summary = String::from_utf8_lossy(&run.stdout);
    assert!(summary.contains("4,000 events"), "{summary}");

    let reference = dir.path().join("reference");
    succeed(
        quiver_command("backfill", &files, &[("--output", &reference)])
            .output()
            .unwrap(),
        "the reference backfill",
    );
    let letters = dead_letters(&out);
    let unexpected: Vec<_> = letters.difference(&produced.bad).take(5).collect();
    let missing: Vec<_> = produced.bad.difference(&letters).take(5).collect();
    assert!(
        unexpected.is_empty() && missing.is_empty(),
        "dead letters differ: unexpected {unexpected:?}, missing {missing:?}"
    );
    assert_same_features(&reference, &out);
    assert!(produced.bad.iter().any(|(_, _, r)| r == "late"));
}

/// A streaming store run over a topic, killed with SIGKILL at random moments and started
/// again, round after round of newly produced messages: the view's Delta table ends with every
/// good event's feature row exactly once, equal to a backfill over the same events, and a run
/// started after a finished one continues from the offsets committed with its rows.
#[test]
fn a_store_run_killed_at_random_moments_commits_every_row_once() {
    let Some(broker) = broker() else { return };
    let trials: usize = std::env::var("QUIVER_KAFKA_CRASH_TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let topic = &fresh_topic("store-crash-loop");
    create_topic(&broker, topic, 3);
    let (kafka, files) = write_configs(dir.path(), &broker, topic, "");
    let store = dir.path().join("store");
    // Registered while the topic is empty: the run consumes everything.
    succeed(
        quiver_command("apply", &kafka, &[("--store", &store)])
            .output()
            .unwrap(),
        "quiver apply",
    );
    let mut produced = Produced {
        partitions: vec![(0, 1_767_225_600_000); 3],
        ..Produced::default()
    };
    let mut rng = Rng(0xC0FF_EE00_1234_5678);
    let mut kills = 0;
    let mut round = 0;
    while kills < trials {
        round += 1;
        produce(&broker, topic, &mut produced, 10_000, 0xABCD + round);
        loop {
            let out = dir.path().join("out");
            let mut child =
                quiver_command("run", &kafka, &[("--output", &out), ("--store", &store)])
                    .arg("--until-caught-up")
                    .spawn()
                    .unwrap();
            let deadline = Instant::now() + Duration::from_millis(50 + rng.below(750));
            let mut finished = None;
            while Instant::now() < deadline {
                if let Some(status) = child.try_wait().unwrap() {
                    finished = Some(status);
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            match finished {
                Some(status) => {
                    let output = child.wait_with_output().unwrap();
                    assert!(
                        status.success(),
                        "round {round}: {}",
                        String::from_utf8_lossy(&output.stderr)
                    );
                    break;
                }
                None => {
                    child.kill().unwrap();
                    child.wait().unwrap();
                    kills += 1;
                }
            }
        }
        assert!(
            round < 200,
            "the run never got killed: is it too fast for the trials?"
        );
    }
    // Time moves on in every partition (an hour later): the watermark passes every event
    // produced before, whose rows are then final; the closing events wait in the checkpoint.
    let producer = JsonProducer::new(&kafka_config(&broker, topic), topic).unwrap();
    for (p, (_, time)) in produced.partitions.iter().enumerate() {
        let closing = format!(
            "{{\"txn_id\": {}, \"card_id\": \"closing\", \"amount\": 1, \"event_time\": {}}}",
            1_000_000_000 + p,
            time + 3_600_000
        );
        producer
            .send_to(Some(p as i32), None, closing.as_bytes())
            .unwrap();
    }
    producer.flush().unwrap();
    let out = dir.path().join("out");
    let last = quiver_command("run", &kafka, &[("--output", &out), ("--store", &store)])
        .arg("--until-caught-up")
        .output()
        .unwrap();
    let last = succeed(last, "the last run");
    assert!(
        String::from_utf8_lossy(&last.stdout).contains("caught up"),
        "{}",
        String::from_utf8_lossy(&last.stdout)
    );

    let version = std::fs::read_to_string(store.join("registry/cards/latest")).unwrap();
    let (rows, _) = delta_table(&store.join("offline/cards").join(version.trim()));
    let ids = rows
        .column_by_name("txn_id")
        .unwrap()
        .as_primitive::<Int64Type>();
    let unique: BTreeSet<i64> = ids.iter().flatten().collect();
    assert_eq!(unique.len(), ids.len() - ids.null_count(), "a row twice");
    assert_eq!(unique.len(), produced.good.len(), "rows missing");

    std::fs::write(
        dir.path().join("reference.ndjson"),
        produced.good.join("\n"),
    )
    .unwrap();
    let reference = dir.path().join("reference");
    succeed(
        quiver_command("backfill", &files, &[("--output", &reference)])
            .output()
            .unwrap(),
        "the reference backfill",
    );
    // The table's files as an output directory, for `quiver compare`.
    let table_view = dir.path().join("table-view").join("cards");
    std::fs::create_dir_all(&table_view).unwrap();
    let table = store.join("offline/cards").join(version.trim());
    for entry in std::fs::read_dir(&table).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "parquet") {
            std::fs::hard_link(&path, table_view.join(path.file_name().unwrap())).unwrap();
        }
    }
    assert_same_features(&reference, &dir.path().join("table-view"));
    eprintln!("{kills} kills over {round} rounds");
}
