//! Each registered version is a Delta Lake table: its log adds exactly the version's Parquet
//! files, records the definition in the commit, and an independent reader (delta-rs through
//! Polars, when the test command provides Python with it) reads the same rows.

use quiver_integration_tests::{apply_one_view, local, read_view, write_files, CARD_EVENTS};
use quiver_store::delta;

const VIEW: &str = "SELECT card_id, event_time, amount,
  count(*) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW) AS n_10m,
  sum(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW) AS sum_1h
FROM source";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_version_is_a_delta_table_other_engines_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lines: Vec<String> = (0..2000)
        .map(|k| {
            format!(
                "{{\"card_id\": \"c{}\", \"amount\": {}.25, \"event_time\": {}}}",
                k % 17,
                k % 100,
                1_767_225_600_000i64 + k * 7_000
            )
        })
        .collect();
    write_files(dir.path(), &[("in.ndjson", &lines.join("\n"))]);
    let registry = apply_one_view(dir.path(), "in.ndjson", &CARD_EVENTS, "v", VIEW, "").await;
    let version = registry.latest("v").expect("latest").expect("version");
    let table = registry.data_dir("v", &version);

    assert_eq!(delta::versions(&table).expect("log"), vec![0]);
    let actions = delta::read_commit(&table, 0).expect("commit");
    let info = &actions[0]["commitInfo"]["quiver"];
    assert_eq!(info["version"], version.as_str());
    assert_eq!(info["rows"], 2000);
    let added: Vec<&serde_json::Value> = actions.iter().filter_map(|a| a.get("add")).collect();
    let files: Vec<String> = std::fs::read_dir(local(&table))
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".parquet"))
        .collect();
    assert_eq!(added.len(), files.len());
    let rows: u64 = added
        .iter()
        .map(|a| {
            let stats: serde_json::Value =
                serde_json::from_str(a["stats"].as_str().expect("stats")).expect("json");
            stats["numRecords"].as_u64().expect("numRecords")
        })
        .sum();
    assert_eq!(rows, 2000);
    let ours = read_view(&local(&table));
    assert_eq!(ours.num_rows(), 2000);
    // The events the version was computed from: a Delta table too.
    let definition = registry.definition("v", None).expect("definition");
    let events = registry.events_dir(&definition.events);
    assert_eq!(delta::versions(&events).expect("event log"), vec![0]);

    // An independent reader: delta-rs through Polars (the test command installs them).
    let Ok(python) = std::env::var("QUIVER_TEST_PYTHON") else {
        eprintln!(
            "skipping the Polars read: QUIVER_TEST_PYTHON is not set (scripts/test.sh sets it)"
        );
        return;
    };
    let script = "import sys, polars as pl
df = pl.read_delta(sys.argv[1])
print(df.height, df['n_10m'].sum(), round(df['sum_1h'].sum(), 6), df['_source_offset'].max())";
    let out = std::process::Command::new(python)
        .args(["-c", script, &table.to_string()])
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "polars could not read the table: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n_10m: i64 = ours
        .column_by_name("n_10m")
        .map(|c| {
            arrow::compute::sum(
                c.as_any()
                    .downcast_ref::<arrow::array::Int64Array>()
                    .expect("i64"),
            )
            .unwrap_or(0)
        })
        .expect("n_10m");
    let printed = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = printed.split_whitespace().collect();
    assert_eq!(fields[0], "2000", "{printed}");
    assert_eq!(fields[1], n_10m.to_string(), "{printed}");
    assert_eq!(
        fields[3], "2000",
        "offsets are the 1-based input lines: {printed}"
    );
    let out = std::process::Command::new(std::env::var("QUIVER_TEST_PYTHON").expect("python"))
        .args([
            "-c",
            "import sys, polars as pl; df = pl.read_delta(sys.argv[1]); print(df.height, df['_quiver_partition'].n_unique())",
            &events.to_string(),
        ])
        .output()
        .expect("python runs");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        printed.trim(),
        "2000 1",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
