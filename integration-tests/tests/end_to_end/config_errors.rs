//! Config and SQL mistakes read like compiler errors: file, line, column, what, how to fix.

use quiver_integration_tests::write_files;
use quiver_pipeline::validate::validate;

const BASE: &str = "name: t
source:
  name: transactions_raw
  datagen: {events: 10}
event_time:
  column: event_time
  max_lateness: 5s
views:
  - name: card
    file: card.sql
";

const GOOD_VIEW: &str = "SELECT card_id, event_time,
  count(*) OVER (PARTITION BY card_id ORDER BY event_time
    RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW) AS n_10m
FROM transactions_raw";

/// Validates a pipeline made of `yaml` and `card.sql` = `view`; returns the error text.
async fn error_of(yaml: &str, view: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_files(dir.path(), &[("pipeline.yaml", yaml), ("card.sql", view)]);
    match validate(&path).await {
        Ok(report) => panic!("expected an error, validation passed: {:?}", report.lines),
        Err(e) => e.to_string(),
    }
}

async fn view_error(view: &str) -> String {
    error_of(BASE, view).await
}

#[tokio::test]
async fn a_good_pipeline_validates_and_describes_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_files(
        dir.path(),
        &[("pipeline.yaml", BASE), ("card.sql", GOOD_VIEW)],
    );
    let report = validate(&path).await.expect("valid");
    let text = report.lines.join("\n");
    assert!(text.contains("view card keyed by"), "{text}");
    assert!(text.contains("n_10m: Int64"), "{text}");
}

#[tokio::test]
async fn the_demo_config_validates() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/fraud-demo.yaml");
    validate(&root)
        .await
        .expect("configs/fraud-demo.yaml is valid");
}

#[tokio::test]
async fn unknown_config_key_names_line_and_alternatives() {
    let e = error_of(&BASE.replace("max_lateness", "max_latenes"), GOOD_VIEW).await;
    assert!(e.contains("pipeline.yaml:7:"), "{e}");
    assert!(e.contains("unknown field `max_latenes`"), "{e}");
    assert!(e.contains("max_lateness"), "lists the expected keys: {e}");
}

#[tokio::test]
async fn wrong_config_type_names_line() {
    let e = error_of(&BASE.replace("{events: 10}", "{events: ten}"), GOOD_VIEW).await;
    assert!(e.contains("pipeline.yaml:4:"), "{e}");
    assert!(e.contains("invalid type"), "{e}");
}

#[tokio::test]
async fn missing_sql_file_is_reported() {
    let e = error_of(&BASE.replace("card.sql", "nope.sql"), GOOD_VIEW).await;
    assert!(e.contains("nope.sql"), "{e}");
    assert!(e.contains("cannot read SQL file"), "{e}");
    assert!(e.contains("relative to the config"), "{e}");
}

#[tokio::test]
async fn missing_data_files_are_reported() {
    let yaml = BASE.replace(
        "  datagen: {events: 10}",
        "  files:\n    location: /nonexistent/dir/*.ndjson\n    schema:\n      - {name: card_id, type: string}\n      - {name: event_time, type: timestamp}",
    );
    let e = error_of(&yaml, GOOD_VIEW).await;
    assert!(e.contains("/nonexistent/dir"), "{e}");
}

#[tokio::test]
async fn sql_syntax_error_has_line_and_column() {
    let e =
        view_error("SELECT card_id,\n  count(* OVER (PARTITION BY card_id)\nFROM transactions_raw")
            .await;
    assert!(e.contains("card.sql:2:"), "{e}");
    assert!(e.contains("error:"), "{e}");
}

#[tokio::test]
async fn unknown_column_is_located() {
    let e = view_error(&GOOD_VIEW.replace("PARTITION BY card_id", "PARTITION BY card_idd")).await;
    assert!(e.contains("card.sql:2:31"), "{e}");
    assert!(e.contains("card_idd"), "{e}");
}

#[tokio::test]
async fn unknown_stream_lists_known_streams() {
    let e = view_error(&GOOD_VIEW.replace("FROM transactions_raw", "FROM transactionz")).await;
    assert!(e.contains("card.sql:4:"), "{e}");
    assert!(e.contains("known streams: transactions_raw"), "{e}");
}

#[tokio::test]
async fn rows_frames_are_refused_with_the_range_form() {
    let e = view_error(&GOOD_VIEW.replace(
        "RANGE BETWEEN INTERVAL '10 minutes' PRECEDING",
        "ROWS BETWEEN 10 PRECEDING",
    ))
    .await;
    assert!(e.contains("card.sql:3:51"), "located at the alias: {e}");
    assert!(e.contains("ROWS frames"), "{e}");
    assert!(e.contains("help: write `RANGE BETWEEN INTERVAL"), "{e}");
}

#[tokio::test]
async fn month_intervals_are_refused() {
    let e = view_error(&GOOD_VIEW.replace("'10 minutes'", "'1 month'")).await;
    assert!(e.contains("months"), "{e}");
    assert!(e.contains("days"), "{e}");
}

#[tokio::test]
async fn windows_longer_than_30_days_are_refused() {
    let e = view_error(&GOOD_VIEW.replace("'10 minutes'", "'31 days'")).await;
    assert!(
        e.contains("exceeds the longest supported window of 30 days"),
        "{e}"
    );
}

#[tokio::test]
async fn following_frames_are_refused() {
    let e = view_error(&GOOD_VIEW.replace("AND CURRENT ROW", "AND INTERVAL '1 minute' FOLLOWING"))
        .await;
    assert!(e.contains("must end at the current event"), "{e}");
}

#[tokio::test]
async fn views_need_partition_by_and_one_key() {
    let e = view_error(&GOOD_VIEW.replace("PARTITION BY card_id ", "")).await;
    assert!(e.contains("no PARTITION BY"), "{e}");
    let two = "SELECT card_id, merchant_id, event_time,
  count(*) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW) AS a,
  count(*) OVER (PARTITION BY merchant_id ORDER BY event_time RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW) AS b
FROM transactions_raw";
    let e = view_error(two).await;
    assert!(e.contains("partitioned differently"), "{e}");
    assert!(e.contains("own view"), "{e}");
}

#[tokio::test]
async fn windows_must_be_ordered_by_event_time() {
    let e = view_error(&GOOD_VIEW.replace("ORDER BY event_time", "ORDER BY amount")).await;
    assert!(e.contains("card.sql:3:29"), "{e}");
    assert!(e.contains("ordered by the event-time column"), "{e}");
    let e = view_error(&GOOD_VIEW.replace(
        "ORDER BY event_time\n    RANGE BETWEEN INTERVAL '10 minutes' PRECEDING",
        "ORDER BY txn_id\n    RANGE BETWEEN 10 PRECEDING",
    ))
    .await;
    assert!(
        e.contains("not by the event-time column `event_time`"),
        "{e}"
    );
}

#[tokio::test]
async fn ranking_functions_are_refused_with_the_supported_list() {
    let e = view_error("SELECT card_id, event_time, row_number() OVER (PARTITION BY card_id ORDER BY event_time) AS rn FROM transactions_raw").await;
    assert!(e.contains("`row_number` is not supported"), "{e}");
    assert!(e.contains("stddev_samp"), "{e}");
}

#[tokio::test]
async fn views_without_windows_or_with_order_by_are_refused() {
    let e = view_error("SELECT card_id, event_time FROM transactions_raw").await;
    assert!(e.contains("no window aggregate"), "{e}");
    let e = view_error(&format!("{GOOD_VIEW}\nORDER BY card_id")).await;
    assert!(e.contains("not supported in a feature view"), "{e}");
    assert!(e.contains("card.sql:5:"), "{e}");
}

#[tokio::test]
async fn event_time_column_must_exist() {
    let e = error_of(&BASE.replace("column: event_time", "column: ts"), GOOD_VIEW).await;
    assert!(e.contains("pipeline.yaml:6"), "{e}");
    assert!(e.contains("`ts`"), "{e}");
}

#[tokio::test]
async fn several_problems_are_reported_together() {
    let yaml = format!("{BASE}  - name: other\n    file: other.sql\n");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_files(
        dir.path(),
        &[
            ("pipeline.yaml", &yaml),
            ("card.sql", "SELEC 1"),
            ("other.sql", "SELECT nope FROM transactions_raw"),
        ],
    );
    let e = validate(&path).await.expect_err("invalid").to_string();
    assert!(e.contains("card.sql:1:1"), "{e}");
    assert!(e.contains("other.sql:1:8"), "{e}");
}

#[tokio::test]
async fn a_view_that_redefines_event_time_is_refused_where_it_does() {
    let e = view_error(
        "SELECT card_id, event_time,
  count(*) OVER (PARTITION BY card_id ORDER BY event_time
    RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW) AS n_10m
FROM (SELECT card_id,
        date_trunc('minute', event_time) AS event_time
      FROM transactions_raw) t",
    )
    .await;
    assert!(e.contains("card.sql:5:"), "{e}");
    assert!(e.contains("redefines the event-time column"), "{e}");
    assert!(e.contains("transform"), "says what to do instead: {e}");
}
