//! Bad input is data: every malformed record becomes a dead letter with its reason and exact
//! source position; the run completes and reports the counts; nothing panics.

use quiver_integration_tests::{read_view, run_config, write_files};
use quiver_pipeline::RunSummary;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

const SCHEMA: &str = "
    schema:
      - {name: card_id, type: string, nullable: false}
      - {name: amount, type: float}
      - {name: note, type: string}
      - {name: event_time, type: timestamp, nullable: false}";

fn config(location: &str, lateness: &str) -> String {
    format!(
        "name: bad
source:
  name: raw
  files:
    location: {location}
    batch_size: 3{SCHEMA}
event_time:
  column: event_time
  max_lateness: {lateness}
transforms:
  - name: tx
    sql: SELECT card_id, amount, event_time, CAST(note AS INT) AS note_int FROM raw
views:
  - name: card
    sql: |
      SELECT card_id, event_time, count(*) OVER (PARTITION BY card_id ORDER BY event_time
        RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW) AS n_1h
      FROM tx
"
    )
}

fn dead_letters(summary: &RunSummary) -> Vec<Value> {
    std::fs::read_to_string(&summary.dead_letter_path)
        .expect("dead-letter file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("dead letter is JSON"))
        .collect()
}

async fn execute(dir: &Path, location: &str, lateness: &str, is_backfill: bool) -> RunSummary {
    let path = write_files(dir, &[("p.yaml", &config(location, lateness))]);
    run_config(&path, &dir.join("out"), is_backfill)
        .await
        .expect("the job completes despite bad records")
}

/// (reason, offset) of every dead letter, sorted by offset.
fn reasons(letters: &[Value]) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = letters
        .iter()
        .map(|l| {
            (
                l["reason"].as_str().unwrap_or("").to_string(),
                l["offset"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    v.sort_by_key(|(_, o)| *o);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_bad_records_become_dead_letters_with_line_numbers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut data: Vec<u8> = Vec::new();
    let lines: [&[u8]; 12] = [
        br#"{"card_id":"c1","amount":10.5,"note":"1","event_time":"2026-01-01T00:00:00Z"}"#,
        br#"{"card_id":"c1","amount":3.5,"#,
        br#"{"card_id":"c1","amount":"abc","event_time":"2026-01-01T00:00:01Z"}"#,
        br#"{"card_id":"c1","amount":1.0}"#,
        br#"{"card_id":"c1","amount":1.0,"event_time":"yesterday"}"#,
        b"{\"card_id\":\"c\xff\xfe\",\"amount\":1.0,\"event_time\":\"2026-01-01T00:00:02Z\"}",
        br#"{"card_id":"c2","amount":null,"event_time":"2026-01-01 00:00:03"}"#,
        b"",
        br#"[1,2,3]"#,
        br#"{"card_id":"c1","amount":2.0,"note":"x","event_time":"2026-01-01T00:00:04Z"}"#,
        br#"{"card_id":"c1","amount":2.0,"event_time":1767225605000}"#,
        br#"{"card_id":"c1","amount":2.0,"event_time":"2025-12-31T00:00:00Z"}"#,
    ];
    for line in lines {
        data.extend_from_slice(line);
        data.push(b'\n');
    }
    let file = dir.path().join("tx.ndjson");
    std::fs::write(&file, &data).expect("write");
    let summary = execute(dir.path(), file.to_str().expect("utf8"), "1s", false).await;
    let letters = dead_letters(&summary);
    assert_eq!(
        reasons(&letters),
        vec![
            ("malformed_record".into(), 2),
            ("wrong_type".into(), 3),
            ("missing_event_time".into(), 4),
            ("invalid_event_time".into(), 5),
            ("invalid_utf8".into(), 6),
            ("malformed_record".into(), 9),
            ("transform_error".into(), 10),
            ("late".into(), 12),
        ],
        "{letters:#?}"
    );
    for l in &letters {
        assert!(
            l["partition"].as_str().unwrap_or("").ends_with("tx.ndjson"),
            "{l}"
        );
        assert!(!l["detail"].as_str().unwrap_or("").is_empty(), "{l}");
    }
    let wrong = letters
        .iter()
        .find(|l| l["reason"] == "wrong_type")
        .expect("wrong_type");
    assert!(
        wrong["detail"].as_str().unwrap_or("").contains("amount"),
        "{wrong}"
    );
    assert_eq!(summary.events, 11, "blank lines are not events");
    assert_eq!(summary.late, 1);
    assert_eq!(summary.dead_letter_total(), 8);
    let rows = read_view(&dir.path().join("out/card"));
    assert_eq!(rows.num_rows(), 3, "lines 1, 7 and 11 make feature rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_bad_records_become_dead_letters_in_run_and_backfill() {
    for is_backfill in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let csv = "card_id,amount,note,event_time\n\
                   c1,1.5,1,2026-01-01T00:00:00Z\n\
                   c1,abc,1,2026-01-01T00:00:01Z\n\
                   c1,2.5,1,\n\
                   c1,2.5,1,not-a-time\n\
                   c1,2.5\n\
                   ,2.5,1,2026-01-01T00:00:02Z\n\
                   c2,,,2026-01-01T00:00:03Z\n";
        let file = dir.path().join("tx.csv");
        std::fs::write(&file, csv).expect("write");
        let summary = execute(dir.path(), file.to_str().expect("utf8"), "0s", is_backfill).await;
        let got = reasons(&dead_letters(&summary));
        let by_reason: BTreeMap<&str, Vec<u64>> =
            got.iter().fold(BTreeMap::new(), |mut m, (r, o)| {
                m.entry(r.as_str()).or_default().push(*o);
                m
            });
        assert_eq!(by_reason.get("wrong_type"), Some(&vec![3]), "{got:?}");
        assert_eq!(
            by_reason.get("missing_event_time"),
            Some(&vec![4]),
            "{got:?}"
        );
        assert_eq!(
            by_reason.get("invalid_event_time"),
            Some(&vec![5]),
            "{got:?}"
        );
        assert_eq!(by_reason.get("malformed_record"), Some(&vec![6]), "{got:?}");
        assert_eq!(by_reason.get("missing_field"), Some(&vec![7]), "{got:?}");
        assert_eq!(read_view(&dir.path().join("out/card")).num_rows(), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_input_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_files(
        dir.path(),
        &[("p.yaml", &config("/nonexistent/quiver/*.ndjson", "0s"))],
    );
    let err = run_config(&path, &dir.path().join("out"), false)
        .await
        .expect_err("fails");
    assert!(err.to_string().contains("/nonexistent/quiver"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_clock_does_not_poison_the_stream() {
    // One event dated 9999-12-31 among ordinary ones: it is dead-lettered with its own reason
    // and the events after it are neither late nor lost.
    let dir = tempfile::tempdir().expect("tempdir");
    let lines = [
        r#"{"card_id": "c1", "amount": 1.0, "note": "1", "event_time": "2026-01-01T00:00:00Z"}"#,
        r#"{"card_id": "c1", "amount": 1.0, "note": "1", "event_time": "9999-12-31T00:00:00Z"}"#,
        r#"{"card_id": "c1", "amount": 1.0, "note": "1", "event_time": "2026-01-01T00:00:05Z"}"#,
        r#"{"card_id": "c1", "amount": 1.0, "note": "1", "event_time": "2026-01-01T00:00:09Z"}"#,
    ];
    let file = dir.path().join("tx.ndjson");
    std::fs::write(&file, lines.join("\n")).expect("write");
    for is_backfill in [false, true] {
        let summary = execute(dir.path(), file.to_str().expect("utf8"), "1s", is_backfill).await;
        assert_eq!(
            reasons(&dead_letters(&summary)),
            vec![("future_event_time".into(), 2)]
        );
        assert_eq!(summary.late, 0);
        assert_eq!(read_view(&dir.path().join("out/card")).num_rows(), 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_systematically_wrong_input_stops_with_a_clear_message() {
    // Amounts written as words: every record is a dead letter. The job stops once the ratio
    // limit is passed instead of dead-lettering the whole input.
    let dir = tempfile::tempdir().expect("tempdir");
    let lines: Vec<String> = (0..3000)
        .map(|i| {
            format!(
                r#"{{"card_id": "c{}", "amount": "twelve", "note": "1", "event_time": "2026-01-01T00:00:{:02}Z"}}"#,
                i % 7,
                i % 60
            )
        })
        .collect();
    let file = dir.path().join("tx.ndjson");
    std::fs::write(&file, lines.join("\n")).expect("write");
    let yaml = config(file.to_str().expect("utf8"), "1s")
        .replace("views:", "output:\n  dead_letter_min_records: 500\nviews:");
    let path = write_files(dir.path(), &[("p.yaml", &yaml)]);
    for is_backfill in [false, true] {
        let err = run_config(&path, &dir.path().join("out"), is_backfill)
            .await
            .expect_err("stops");
        let text = err.to_string();
        assert!(text.contains("max_dead_letter_ratio"), "{text}");
        assert!(text.contains("wrong_type"), "{text}");
    }
}
