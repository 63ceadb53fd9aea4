//! Kafka end to end, against a real broker (scripts/test.sh starts one with scripts/kafka.sh
//! and exports QUIVER_TEST_KAFKA): features computed from a topic equal the batch reference
//! over the same events, bad messages become dead letters with their partitions and offsets,
//! and a store run killed at random moments commits every row exactly once.
//!
//! `QUIVER_KAFKA_CRASH_TRIALS=<n>` kills the store run more often than the default 20 (a soak).

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use quiver_connectors::kafka::{add_partitions, ensure_topic, JsonProducer, KafkaConfig};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

mod common;
use common::{delta_table, quiver_command, succeed, Rng};

const VIEW: &str = common::CARD_VIEW;

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
    write_configs_with_output(dir, broker, topic, kafka_extra, "")
}

/// As [`write_configs`], with `output` as the Kafka pipeline's `output` section.
fn write_configs_with_output(
    dir: &Path,
    broker: &str,
    topic: &str,
    kafka_extra: &str,
    output: &str,
) -> (PathBuf, PathBuf) {
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
  every_events: 2000  # several epochs however fast the run reads (crash points count them)
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
{output}{common_tail}"
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

/// Every committed message of `topic` (value and headers), read from the beginning.
fn read_committed(
    broker: &str,
    topic: &str,
) -> Vec<(Vec<u8>, std::collections::BTreeMap<String, String>)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("group.id", format!("{topic}-reader"))
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions = metadata.topics()[0].partitions().len();
    let mut assignment = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p as i32, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut ended = BTreeSet::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ended.len() < partitions {
        assert!(Instant::now() < deadline, "reading {topic} took too long");
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                let value =
                                    h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                                (h.key.to_string(), value.unwrap_or_default())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push((m.payload().unwrap_or_default().to_vec(), headers));
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                ended.insert(p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    out
}

/// One event an hour after the newest in every partition (not counted as produced): the
/// watermark then passes every produced event, whose rows become final, while these wait.
fn produce_closing(broker: &str, topic: &str, produced: &Produced) {
    let producer = JsonProducer::new(&kafka_config(broker, topic), topic).unwrap();
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
}

/// Backfills the files pipeline over `good` (written to `dir/reference.ndjson`, where the
/// config reads it) into `dir/reference`, the reference output.
fn reference_backfill(dir: &Path, files: &Path, good: &[String]) -> PathBuf {
    std::fs::write(dir.join("reference.ndjson"), good.join("\n")).unwrap();
    let reference = dir.join("reference");
    succeed(
        quiver_command("backfill", files, &[("--output", &reference)])
            .output()
            .unwrap(),
        "the reference backfill",
    );
    reference
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
/// What [`run_to_topic_end`] leaves: the run's output directory and summary, what was
/// produced, and the batch reference's features.
struct TopicRun {
    out: PathBuf,
    summary: String,
    produced: Produced,
    reference: PathBuf,
}

/// Produces 4,000 messages (some bad, some late) with `seed` to a new 3-partition topic
/// `name`, runs the Kafka config over it to its end (the topic is all the input there is, so
/// every event is final), its text changed by `edit` first, and backfills the reference.
fn run_to_topic_end(
    broker: &str,
    dir: &Path,
    name: &str,
    seed: u64,
    edit: impl FnOnce(String) -> String,
) -> TopicRun {
    let topic = &fresh_topic(name);
    create_topic(broker, topic, 3);
    let (kafka, files) = write_configs(dir, broker, topic, "    stop_at_end: true\n");
    let text = edit(std::fs::read_to_string(&kafka).unwrap());
    std::fs::write(&kafka, text).unwrap();
    let mut produced = Produced {
        partitions: vec![(0, 1_767_225_600_000); 3],
        ..Produced::default()
    };
    produce(broker, topic, &mut produced, 4_000, seed);
    let out = dir.join("out");
    let run = quiver_command("run", &kafka, &[("--output", &out)])
        .output()
        .unwrap();
    let run = succeed(run, &format!("quiver run over Kafka ({name})"));
    let summary = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(summary.contains("4,000 events"), "{summary}");
    let reference = reference_backfill(dir, &files, &produced.good);
    TopicRun {
        out,
        summary,
        produced,
        reference,
    }
}

#[test]
fn features_from_a_topic_equal_the_batch_reference_and_bad_messages_are_dead_letters() {
    let Some(broker) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    let r = run_to_topic_end(
        &broker,
        dir.path(),
        "features-reference",
        0x5EED_0001,
        |t| t,
    );
    let letters = dead_letters(&r.out);
    let unexpected: Vec<_> = letters.difference(&r.produced.bad).take(5).collect();
    let missing: Vec<_> = r.produced.bad.difference(&letters).take(5).collect();
    assert!(
        unexpected.is_empty() && missing.is_empty(),
        "dead letters differ: unexpected {unexpected:?}, missing {missing:?}"
    );
    assert_same_features(&r.reference, &r.out);
    assert!(r.produced.bad.iter().any(|(_, _, r)| r == "late"));
}

/// Checkpoints due every millisecond, by time only: nearly every one is due while the
/// previous one is still being written, so the run reads on into the waiting epoch and takes
/// it when the write ends. Every event is still in exactly one epoch: the features equal the
/// batch reference and the dead letters are the bad messages.
#[test]
fn checkpoints_due_while_one_is_written_wait_and_lose_nothing() {
    let Some(broker) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    let time_only = |text: String| {
        let every_events = (text.lines())
            .find(|l| l.trim_start().starts_with("every_events:"))
            .unwrap()
            .to_string();
        (text.replace(&every_events, "")).replace("interval: 100ms", "interval: 1ms")
    };
    let r = run_to_topic_end(
        &broker,
        dir.path(),
        "deferred-checkpoints",
        0x5EED_0007,
        time_only,
    );
    let checkpoints: u64 = (r.summary.split("checkpoints ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.replace(',', "").parse().ok())
        .unwrap_or_else(|| panic!("no checkpoint count in {}", r.summary));
    assert!(checkpoints > 1, "{}", r.summary);
    assert_eq!(dead_letters(&r.out), r.produced.bad);
    assert_same_features(&r.reference, &r.out);
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
    // Feature rows and dead letters also go to topics, each epoch in one transaction.
    let features_topic = &fresh_topic("scored");
    let dead_topic = &fresh_topic("dead-letters");
    create_topic(&broker, features_topic, 2);
    create_topic(&broker, dead_topic, 1);
    let output = format!(
        "output:
  kafka:
    bootstrap_servers: {broker}
    views: {{cards: {features_topic}}}
    dead_letters: {dead_topic}
    transactional_id: {topic}-writer
"
    );
    let (kafka, files) = write_configs_with_output(dir.path(), &broker, topic, "", &output);
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
        // A few kills per round at random moments (a run with output topics takes a second
        // or two, most of it starting transactions), then one run is left to finish.
        for attempt in 0.. {
            let out = dir.path().join("out");
            let mut command =
                quiver_command("run", &kafka, &[("--output", &out), ("--store", &store)]);
            command.arg("--until-caught-up");
            // The first rounds also die right before and right after an epoch's transaction.
            let crash = match (round, attempt) {
                (1, 0) => Some("before_kafka_commit:2"),
                (2, 0) => Some("after_kafka_commit:1"),
                _ => None,
            };
            if let Some(point) = crash {
                command.env("QUIVER_CRASH_AT", point);
            }
            let mut child = command.spawn().unwrap();
            let patience = if attempt < 4 {
                100 + rng.below(2_500)
            } else {
                120_000
            };
            let deadline = Instant::now() + Duration::from_millis(patience);
            let mut finished = None;
            while Instant::now() < deadline {
                if let Some(status) = child.try_wait().unwrap() {
                    finished = Some(status);
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            match finished {
                Some(status) if crash.is_some() => {
                    assert!(!status.success(), "crash point {crash:?} not reached");
                    kills += 1;
                }
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
            round < 100,
            "the run never got killed: is it too fast for the trials?"
        );
    }
    // Time moves on in every partition (an hour later): the watermark passes every event
    // produced before, whose rows are then final; the closing events wait in the checkpoint.
    produce_closing(&broker, topic, &produced);
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

    let reference = reference_backfill(dir.path(), &files, &produced.good);
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

    // `quiver status` shows where each partition's last commit stood.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(["status", "cards", "--json", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    let status: serde_json::Value =
        serde_json::from_slice(&succeed(status, "quiver status").stdout).unwrap();
    let partitions = status[0]["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 3, "{status}");
    for (p, position) in partitions.iter().enumerate() {
        assert_eq!(position["partition"], format!("{topic}/{p}"));
        // Every produced message, and the closing one after them, was consumed.
        assert_eq!(position["offset"], produced.partitions[p].0, "{status}");
        assert!(position["event_lag_s"].as_f64().is_some(), "{status}");
        // Read to its end: no message behind at the last commit.
        assert_eq!(position["consumer_lag"], 0, "{status}");
    }

    // The output topics, read as committed: every feature row once, every dead letter once.
    let messages = read_committed(&broker, features_topic);
    let mut seen = BTreeSet::new();
    for (value, headers) in &messages {
        let row: serde_json::Value = serde_json::from_slice(value).unwrap();
        let txn = row["txn_id"].as_i64().unwrap();
        assert!(seen.insert(txn), "txn {txn} twice in the output topic");
        assert_eq!(
            headers.get("quiver-view").map(String::as_str),
            Some("cards")
        );
    }
    assert_eq!(
        seen, unique,
        "the output topic holds other rows than the table"
    );
    let letters: BTreeSet<(String, u64, String)> = read_committed(&broker, dead_topic)
        .into_iter()
        .map(|(_, h)| {
            (
                h["source-partition"].clone(),
                h["source-offset"].parse().unwrap(),
                h["reason"].clone(),
            )
        })
        .collect();
    assert_eq!(
        letters.len(),
        read_committed(&broker, dead_topic).len(),
        "a dead letter twice in the dead-letter topic"
    );
    assert_eq!(letters, produced.bad, "dead-letter topic");
    eprintln!("{kills} kills over {round} rounds");
}

/// A child process killed when dropped (a failing test leaves no run behind).
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A broker of this test's own (scripts/kafka.sh), stopped when dropped.
struct OwnBroker {
    dir: PathBuf,
    address: String,
}

fn kafka_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka.sh")
}

impl OwnBroker {
    fn start(dir: PathBuf) -> OwnBroker {
        let out = std::process::Command::new("bash")
            .arg(kafka_script())
            .arg("start")
            .arg(&dir)
            .output()
            .unwrap();
        let out = succeed(out, "starting a broker");
        let address = String::from_utf8(out.stdout).unwrap().trim().to_string();
        OwnBroker { dir, address }
    }

    fn restart(&self) {
        let out = std::process::Command::new("bash")
            .arg(kafka_script())
            .arg("restart")
            .arg(&self.dir)
            .output()
            .unwrap();
        succeed(out, "restarting the broker");
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(kafka_script())
            .arg("stop")
            .arg(&self.dir)
            .output();
    }
}

/// Waits until `group` has committed every partition of `topic` up to `ends` (the offsets the
/// next messages get), failing if `child` exits first or it takes over a minute.
fn wait_for_group(
    broker: &str,
    group: &str,
    topic: &str,
    ends: &[u64],
    child: &mut std::process::Child,
) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run stopped early ({status})");
        }
        let mut query = rdkafka::TopicPartitionList::new();
        for p in 0..ends.len() {
            query.add_partition(topic, p as i32);
        }
        let committed: Vec<Option<i64>> =
            match consumer.committed_offsets(query, Duration::from_secs(5)) {
                Ok(found) => (0..ends.len())
                    .map(
                        |p| match found.find_partition(topic, p as i32).map(|e| e.offset()) {
                            Some(rdkafka::Offset::Offset(o)) => Some(o),
                            _ => None,
                        },
                    )
                    .collect(),
                Err(_) => vec![None; ends.len()],
            };
        if committed
            .iter()
            .zip(ends)
            .all(|(c, end)| c.is_some_and(|c| c as u64 >= *end))
        {
            return;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!(
                "the run did not catch up within a minute: committed {committed:?}, ends {ends:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs the pipeline of `kafka` once more into `out`, told the topic ended (`stop_at_end`):
/// it resumes from the last checkpoint and makes every row final.
fn finish_bounded(dir: &Path, kafka: &Path, out: &Path) -> Output {
    let text = std::fs::read_to_string(kafka).unwrap();
    let bounded = dir.join("kafka-bounded.yaml");
    std::fs::write(
        &bounded,
        text.replace(
            "    batch_size: 200\n",
            "    batch_size: 200\n    stop_at_end: true\n",
        ),
    )
    .unwrap();
    let output = quiver_command("run", &bounded, &[("--output", out)])
        .output()
        .unwrap();
    succeed(
        output,
        "the run resumed with the topic's end as the input's",
    )
}

/// A streaming run keeps going through a broker restart (librdkafka reconnects), commits its
/// offsets to the consumer group as it checkpoints, stops cleanly on SIGTERM with a final
/// checkpoint, and the run that resumes it ends with features equal to the batch reference.
#[test]
fn a_run_rides_out_a_broker_restart_and_resumes_after_sigterm() {
    if broker().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let own = OwnBroker::start(dir.path().join("broker"));
    let broker = own.address.clone();
    let topic = &fresh_topic("restart");
    create_topic(&broker, topic, 2);
    let (kafka, files) = write_configs(dir.path(), &broker, topic, "");
    let mut produced = Produced {
        partitions: vec![(0, 1_767_225_600_000); 2],
        ..Produced::default()
    };
    produce(&broker, topic, &mut produced, 3_000, 0xB0B);
    let out = dir.path().join("out");
    // Killed if the test fails before it stops the run itself.
    let mut running = KillOnDrop(Some(
        quiver_command("run", &kafka, &[("--output", &out)])
            .spawn()
            .unwrap(),
    ));
    let child = running.0.as_mut().unwrap();
    let ends = |p: &Produced| p.partitions.iter().map(|(o, _)| *o).collect::<Vec<_>>();
    let group = format!("{topic}-group");
    wait_for_group(&broker, &group, topic, &ends(&produced), child);
    // A second job on the same checkpoints is refused while this one runs.
    let second = quiver_command("run", &kafka, &[("--output", &out)])
        .output()
        .unwrap();
    assert!(!second.status.success());
    let refusal = String::from_utf8_lossy(&second.stderr);
    assert!(refusal.contains("another quiver job"), "{refusal}");

    own.restart();
    produce(&broker, topic, &mut produced, 3_000, 0xB0C);
    wait_for_group(&broker, &group, topic, &ends(&produced), child);

    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let stopped = succeed(
        running.0.take().unwrap().wait_with_output().unwrap(),
        "the run stopped by SIGTERM",
    );
    let summary = String::from_utf8_lossy(&stopped.stdout);
    assert!(summary.contains("interrupted"), "{summary}");

    // The same pipeline, now told the topic ended: it resumes and makes every row final.
    let resumed = finish_bounded(dir.path(), &kafka, &out);
    assert!(
        String::from_utf8_lossy(&resumed.stdout).contains("resumed after checkpoint"),
        "{}",
        String::from_utf8_lossy(&resumed.stdout)
    );

    let reference = reference_backfill(dir.path(), &files, &produced.good);
    assert_same_features(&reference, &out);
    assert_eq!(dead_letters(&out), produced.bad);
}

const AVRO_SCHEMA: &str = r#"{"type": "record", "name": "transaction", "fields": [
  {"name": "txn_id", "type": "long"},
  {"name": "card_id", "type": "string"},
  {"name": "amount", "type": ["null", "double"]},
  {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}"#;

/// Serves one schema (id 7) the way a Confluent schema registry does, on a loopback port;
/// returns its URL.
fn serve_schema_registry(schema: &'static str) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            reader.read_line(&mut request).unwrap_or_default();
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let (status, body) = if request.starts_with("GET /schemas/ids/7 ") {
                (
                    "200 OK",
                    serde_json::json!({ "schema": schema }).to_string(),
                )
            } else {
                ("404 Not Found", r#"{"error_code":40403}"#.to_string())
            };
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

/// Avro values, plain with a schema file and in Confluent's wire format through a registry:
/// the features equal the batch reference over the same events, and values that are not
/// Avro (or name a schema the registry does not have) are dead letters.
#[test]
fn avro_messages_plain_and_through_a_registry_equal_the_batch_reference() {
    use apache_avro::types::Value as Avro;
    let Some(broker) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("transaction.avsc"), AVRO_SCHEMA).unwrap();
    let schema = apache_avro::Schema::parse_str(AVRO_SCHEMA).unwrap();
    let registry = serve_schema_registry(AVRO_SCHEMA);
    let mut rng = Rng(0xA7B0);
    let mut good = Vec::new();
    let mut values = Vec::new();
    let mut time = 1_767_225_600_000i64;
    for txn in 1..=1_500i64 {
        time += rng.below(3_000) as i64;
        let card = format!("c{}", rng.below(20));
        let amount = (rng.below(50_000) as f64) / 100.0;
        let record = Avro::Record(vec![
            ("txn_id".into(), Avro::Long(txn)),
            ("card_id".into(), Avro::String(card.clone())),
            (
                "amount".into(),
                Avro::Union(1, Box::new(Avro::Double(amount))),
            ),
            ("event_time".into(), Avro::TimestampMillis(time)),
        ]);
        values.push(apache_avro::to_avro_datum(&schema, record).unwrap());
        good.push(format!(
            "{{\"txn_id\": {txn}, \"card_id\": \"{card}\", \"amount\": {amount}, \"event_time\": {time}}}"
        ));
    }
    let mut reference = None;
    for (name, format) in [
        (
            "plain",
            "    format: avro\n    avro_schema: transaction.avsc\n".to_string(),
        ),
        (
            "registry",
            format!("    format: avro\n    schema_registry: {registry}\n"),
        ),
    ] {
        let topic = &fresh_topic(&format!("avro-{name}"));
        create_topic(&broker, topic, 1);
        let producer = JsonProducer::new(&kafka_config(&broker, topic), topic).unwrap();
        let mut bad = BTreeSet::new();
        for (i, value) in values.iter().enumerate() {
            let framed = match name {
                "plain" => value.clone(),
                _ => [&[0u8, 0, 0, 0, 7][..], value].concat(),
            };
            producer.send_to(Some(0), None, &framed).unwrap();
            if i % 500 == 250 {
                // Not Avro for the schema; through the registry: an unknown schema id.
                let junk: Vec<u8> = match name {
                    "plain" => vec![0xff, 0xff, 0xff, 0xff],
                    _ => [&[0u8, 0, 0, 0, 9][..], value].concat(),
                };
                producer.send_to(Some(0), None, &junk).unwrap();
                bad.insert((
                    format!("{topic}/0"),
                    (i + bad.len() + 1) as u64,
                    "malformed_record".to_string(),
                ));
            }
        }
        producer.flush().unwrap();
        let sub = dir.path().join(name);
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::copy(
            dir.path().join("transaction.avsc"),
            sub.join("transaction.avsc"),
        )
        .unwrap();
        let (kafka, files) = write_configs(
            &sub,
            &broker,
            topic,
            &format!("    stop_at_end: true\n{format}"),
        );
        let out = sub.join("out");
        succeed(
            quiver_command("run", &kafka, &[("--output", &out)])
                .output()
                .unwrap(),
            &format!("the {name} Avro run"),
        );
        let reference = reference.get_or_insert_with(|| reference_backfill(&sub, &files, &good));
        assert_same_features(reference, &out);
        assert_eq!(dead_letters(&out), bad, "{name}");
    }
}

/// A topic that grows while a pipeline reads it: the resumed run keeps the checkpoint's
/// partitions where they were, reads the new one from its start, and the result equals the
/// batch reference.
#[test]
fn partitions_added_to_a_topic_are_read_by_the_resumed_run() {
    let Some(broker) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    let topic = &fresh_topic("growing");
    create_topic(&broker, topic, 2);
    let (kafka, files) = write_configs(dir.path(), &broker, topic, "");
    let mut produced = Produced {
        partitions: vec![(0, 1_767_225_600_000); 2],
        ..Produced::default()
    };
    produce(&broker, topic, &mut produced, 2_000, 0x6A0);
    let out = dir.path().join("out");
    let run = || {
        let run = quiver_command("run", &kafka, &[("--output", &out)])
            .arg("--until-caught-up")
            .output()
            .unwrap();
        succeed(run, "quiver run --until-caught-up")
    };
    run();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(add_partitions(&kafka_config(&broker, topic), topic, 3))
        .unwrap();
    // The new partition's events are as recent as the others'.
    let newest = produced.partitions.iter().map(|(_, t)| *t).max().unwrap();
    produced.partitions.push((0, newest));
    produce(&broker, topic, &mut produced, 3_000, 0x6A1);
    let second = run();
    assert!(
        String::from_utf8_lossy(&second.stdout).contains(&format!("{topic}/2")),
        "{}",
        String::from_utf8_lossy(&second.stdout)
    );
    // Time moves on everywhere, so every event produced is final.
    produce_closing(&broker, topic, &produced);
    run();
    let reference = reference_backfill(dir.path(), &files, &produced.good);
    // The closing events wait in the checkpoint: the rows are those of the produced events.
    assert_same_features(&reference, &out);
    assert_eq!(dead_letters(&out), produced.bad);
}

/// Lines a child writes to stderr, as they come.
fn stderr_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits (a minute at most) for a line containing `text`.
fn wait_for_line(lines: &std::sync::mpsc::Receiver<String>, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if line.contains(text) {
            return;
        }
        seen.push(line);
    }
    panic!("no line with `{text}` within a minute: {seen:#?}");
}

/// Two instances of one job with the same consumer group and checkpoints (an active/standby
/// pair on a shared volume): the active one is killed with `kill -9` mid-stream, the standby
/// takes over from its last checkpoint at once, and the features still equal the batch
/// reference, every dead letter once.
#[test]
fn a_standby_instance_takes_over_from_a_killed_one_and_the_results_stay_exact() {
    let Some(broker) = broker() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let topic = &fresh_topic("failover");
    create_topic(&broker, topic, 3);
    let (kafka, files) = write_configs(dir.path(), &broker, topic, "");
    let mut produced = Produced {
        partitions: vec![(0, 1_767_225_600_000); 3],
        ..Produced::default()
    };
    produce(&broker, topic, &mut produced, 3_000, 0xFA11);
    let out = dir.path().join("out");
    let start = || {
        quiver_command("run", &kafka, &[("--output", &out)])
            .arg("--standby")
            .spawn()
            .unwrap()
    };
    let ends = |p: &Produced| p.partitions.iter().map(|(o, _)| *o).collect::<Vec<_>>();
    let group = format!("{topic}-group");
    let mut active = KillOnDrop(Some(start()));
    wait_for_group(
        &broker,
        &group,
        topic,
        &ends(&produced),
        active.0.as_mut().unwrap(),
    );
    let mut standby = KillOnDrop(Some(start()));
    let lines = stderr_lines(standby.0.as_mut().unwrap());
    wait_for_line(&lines, "standing by");

    // More events, and the active instance dies in the middle of them.
    produce(&broker, topic, &mut produced, 3_000, 0xFA12);
    let mut killed = active.0.take().unwrap();
    killed.kill().unwrap(); // SIGKILL
    killed.wait().unwrap();
    wait_for_line(&lines, "taking over");
    let survivor = standby.0.as_mut().unwrap();
    wait_for_group(&broker, &group, topic, &ends(&produced), survivor);

    // Stopped, then resumed once more told the topic ended: every row final.
    let term = std::process::Command::new("kill")
        .args(["-TERM", &survivor.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let took_over = succeed(
        standby.0.take().unwrap().wait_with_output().unwrap(),
        "the instance that took over, stopped by SIGTERM",
    );
    let summary = String::from_utf8_lossy(&took_over.stdout);
    assert!(
        summary.contains("resumed after checkpoint"),
        "the standby continued the killed run's checkpoints: {summary}"
    );
    finish_bounded(dir.path(), &kafka, &out);
    let reference = reference_backfill(dir.path(), &files, &produced.good);
    assert_same_features(&reference, &out);
    assert_eq!(dead_letters(&out), produced.bad);
}

/// A second view of the test configs, keyed by something that is not the message key (the
/// card): its keys' events come from every partition.
const NON_MESSAGE_KEY_VIEW: &str = "  - name: by_tens
    sql: |
      SELECT txn_id, event_time,
        count(*) OVER (PARTITION BY txn_id % 10 ORDER BY event_time RANGE BETWEEN INTERVAL '1 minute' PRECEDING AND CURRENT ROW) AS n_1m,
        sum(amount) OVER (PARTITION BY txn_id % 10 ORDER BY event_time RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW) AS sum_10m
      FROM transactions
";

/// Adds [`NON_MESSAGE_KEY_VIEW`] to a config written by [`write_configs`].
fn add_non_message_key_view(config: &Path) {
    let text = std::fs::read_to_string(config).unwrap();
    let text = text.replace(
        "checkpoint:\n",
        &format!("{NON_MESSAGE_KEY_VIEW}checkpoint:\n"),
    );
    std::fs::write(config, text).unwrap();
}

/// Every dead letter of a sharded output (all shards' files) as (partition, offset, reason,
/// detail), duplicates kept.
fn sharded_dead_letters(out: &Path) -> Vec<(String, u64, String, String)> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(out).unwrap() {
        let path = entry.unwrap().path().join("dead_letter.ndjson");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            all.push((
                v["partition"].as_str().unwrap().to_string(),
                v["offset"].as_u64().unwrap(),
                v["reason"].as_str().unwrap().to_string(),
                v["detail"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    all
}

/// Waits until every shard's consumer group (`<group>.shard-I-of-N`) has committed every
/// partition up to `ends`.
fn wait_for_shards(
    broker: &str,
    group: &str,
    shards: u32,
    topic: &str,
    ends: &[u64],
    child: &mut std::process::Child,
) {
    for shard in 0..shards {
        let group = format!("{group}.shard-{shard}-of-{shards}");
        wait_for_group(broker, &group, topic, ends, child);
    }
}

/// Two active instances of a job with three shards and two views, one keyed by the message
/// key and one by a value from every partition: the second instance takes a shard over from
/// the first (a handover with its window state), then the first is killed with its shards'
/// processes (`kill -9` of its process group) mid-stream, the survivor takes its shards over
/// from their checkpoints, and the union of the shards' features equals the batch reference.
/// Every bad message is a dead letter once; a late one once per shard owning one of its keys.
#[test]
fn instances_of_a_sharded_job_share_its_shards_and_take_over_from_a_killed_one() {
    let Some(broker) = broker() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let topic = &fresh_topic("sharded");
    create_topic(&broker, topic, 3);
    let (kafka, files) = write_configs(dir.path(), &broker, topic, "    shards: 3\n");
    add_non_message_key_view(&kafka);
    add_non_message_key_view(&files);
    let mut produced = Produced {
        partitions: vec![(0, 1_767_225_600_000); 3],
        ..Produced::default()
    };
    produce(&broker, topic, &mut produced, 3_000, 0x5A4D);
    let out = dir.path().join("out");
    let start = || {
        use std::os::unix::process::CommandExt;
        let mut command = quiver_command("run", &kafka, &[("--output", &out)]);
        // Its own process group: the test kills the instance with its shards' processes.
        command.process_group(0);
        command.spawn().unwrap()
    };
    let ends = |p: &Produced| p.partitions.iter().map(|(o, _)| *o).collect::<Vec<_>>();
    let group = format!("{topic}-group");
    let mut first = KillOnDrop(Some(start()));
    let first_lines = stderr_lines(first.0.as_mut().unwrap());
    wait_for_line(&first_lines, "owns shards 0, 1, 2 (of 3)");
    wait_for_shards(
        &broker,
        &group,
        3,
        topic,
        &ends(&produced),
        first.0.as_mut().unwrap(),
    );

    // A second instance joins: one shard moves to it, with its state.
    let mut second = KillOnDrop(Some(start()));
    let second_lines = stderr_lines(second.0.as_mut().unwrap());
    wait_for_line(&first_lines, "instance: handing shard");
    wait_for_line(&second_lines, "instance: owns shards");
    produce(&broker, topic, &mut produced, 3_000, 0x5A4E);

    // The first instance dies with its shards' processes, in the middle of the new events.
    let killed = first.0.take().unwrap();
    // SAFETY: kill(2) of the process group the test started.
    unsafe { libc::kill(-(killed.id() as libc::pid_t), libc::SIGKILL) };
    let _ = KillOnDrop(Some(killed));
    wait_for_line(&second_lines, "owns shards 0, 1, 2 (of 3)");
    let survivor = second.0.as_mut().unwrap();
    wait_for_shards(&broker, &group, 3, topic, &ends(&produced), survivor);
    let term = std::process::Command::new("kill")
        .args(["-TERM", &survivor.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    succeed(
        second.0.take().unwrap().wait_with_output().unwrap(),
        "the surviving instance, stopped by SIGTERM",
    );

    // Resumed once more told the topic ended (one instance runs every shard): rows final.
    finish_bounded(dir.path(), &kafka, &out);
    let reference = reference_backfill(dir.path(), &files, &produced.good);
    assert_same_features(&reference, &out);
    let letters = sharded_dead_letters(&out);
    for (partition, offset, reason) in &produced.bad {
        let copies: Vec<_> = (letters.iter())
            .filter(|l| (&l.0, l.1, &l.2) == (partition, *offset, reason))
            .collect();
        match reason.as_str() {
            // One per shard owning one of its keys (the views' keys may be in two shards).
            "late" => {
                assert!((1..=2).contains(&copies.len()), "{copies:?}");
                if copies.len() == 2 {
                    assert!(
                        copies.iter().all(|c| c.3.contains("dropped from")),
                        "{copies:?}"
                    );
                }
            }
            _ => assert_eq!(copies.len(), 1, "{partition}@{offset} {reason}: {copies:?}"),
        }
    }
    let bad: BTreeSet<_> = (letters.iter())
        .map(|l| (l.0.clone(), l.1, l.2.clone()))
        .collect();
    assert_eq!(bad, produced.bad);

    // The shards wrote the online store through the handovers and the kill, each its own
    // file: a read of every card finds it in its shard, with every event it had.
    let mut lifetime = std::collections::BTreeMap::<String, u64>::new();
    for line in &produced.good {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        *lifetime
            .entry(event["card_id"].as_str().unwrap().into())
            .or_default() += 1;
    }
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args([
            "get",
            kafka.to_str().unwrap(),
            "cards",
            "--json",
            "--online",
        ])
        .arg(out.join("online.redb"))
        .args(lifetime.keys())
        .output()
        .unwrap();
    let answer: serde_json::Value =
        serde_json::from_slice(&succeed(output, "quiver get").stdout).unwrap();
    assert_eq!(answer["shards"].as_array().unwrap().len(), 3, "{answer}");
    let rows = answer["features"].as_array().unwrap();
    assert_eq!(rows.len(), lifetime.len());
    for (row, (card, n)) in rows.iter().zip(&lifetime) {
        assert_eq!(row["card_id"], card.as_str());
        assert_eq!(row["n_lifetime"], *n, "{card}: {row}");
    }
}
