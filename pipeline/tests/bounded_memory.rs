//! `quiver backfill --memory-limit`: inputs larger than the limit (an NDJSON file 2.8 times
//! it), hot keys included, complete with the process's peak resident memory under the limit
//! and the feature rows of a backfill without one: spilled whole and then split by key (NDJSON,
//! whose size is unknown until it is read), or split by key as it is read (Parquet).

mod common;

use common::memory::{demo_config, generate_demo, reported_peak_mib, run_measured, view_rows};
use common::{quiver_command, succeed};
use std::path::Path;

/// Runs `quiver backfill` of `input` into `out` (with `--memory-limit limit` if given); its
/// summary and its peak resident memory in bytes.
fn backfill(input: &Path, out: &Path, limit: Option<&str>) -> (String, u64) {
    let mut cmd = quiver_command(
        "backfill",
        &demo_config(),
        &[("--input", input), ("--output", out)],
    );
    if let Some(limit) = limit {
        cmd.args(["--memory-limit", limit]);
    }
    run_measured(cmd, &out.with_extension("log"), "backfill")
}

/// The input's size as Arrow arrays in MiB, as the summary of a backfill tells it.
fn input_mib(summary: &str) -> u64 {
    let (_, after) = summary.split_once("  input ").expect("the input's line");
    let mib = after.split_once(" MiB").expect("its size").0;
    mib.replace(',', "").parse().expect("a number of MiB")
}

/// Backfills the demo generator's 3M events as `file` (its extension picks the format) under
/// `--memory-limit 160MiB` and without: the peak stays under the limit, the input is larger
/// than the limit, and the feature rows are the same. Returns the limited run's summary.
fn check_under_the_limit(file: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join(file);
    // The demo's generator: its hottest card and merchant hold 13% and 17% of the events, so
    // their key partitions are cut by time.
    generate_demo(3_000_000, 3, &input);
    let limit: u64 = 160 << 20;

    let (summary, peak) = backfill(&input, &dir.path().join("limited"), Some("160MiB"));
    assert!(
        summary.contains("spilled to disk") && summary.contains("evaluated in time slices"),
        "{summary}"
    );
    eprintln!(
        "{file}: peak resident memory {:.1} MiB",
        peak as f64 / (1 << 20) as f64
    );
    assert!(
        peak < limit,
        "{file}: peak resident memory {} MiB over the limit of {} MiB: {summary}",
        peak >> 20,
        limit >> 20
    );
    // The summary's own figure is the process's high-water mark before it exits.
    let reported = reported_peak_mib(&summary);
    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    assert!(
        reported <= mib(limit) && reported + 8.0 >= mib(peak),
        "{file}: the summary says a peak of {reported} MiB, the process had {} MiB: {summary}",
        peak >> 20
    );
    // As Arrow arrays, the input is 1.5-1.7 times the limit (the NDJSON file 2.8 times).
    assert!(
        input_mib(&summary) > 3 * (limit >> 20) / 2,
        "{file}: the input is smaller than intended: {summary}"
    );

    let (_, unlimited_peak) = backfill(&input, &dir.path().join("whole"), None);
    for view in ["card_features", "merchant_features"] {
        let limited = view_rows(&dir.path().join("limited").join(view));
        let whole = view_rows(&dir.path().join("whole").join(view));
        assert_eq!(limited.num_rows(), 3_000_000, "{file}: {view}");
        assert_eq!(limited, whole, "{file}: {view}: the same feature rows");
    }
    eprintln!(
        "{file}: input {} MiB: peak {} MiB under --memory-limit 160MiB, {} MiB without",
        input_mib(&summary),
        peak >> 20,
        unlimited_peak >> 20
    );
    summary
}

#[test]
fn a_backfill_of_an_input_several_times_the_limit_stays_under_it() {
    // NDJSON's size is not known before it is read: it is spilled whole, then split by key.
    let summary = check_under_the_limit("events.ndjson");
    assert!(!summary.contains("as it was read"), "{summary}");
}

#[test]
fn a_parquet_input_larger_than_the_limit_is_split_as_it_is_read_and_stays_under_it() {
    // Parquet footers tell its size: it is split by key as it is read.
    let summary = check_under_the_limit("events.parquet");
    assert!(summary.contains("split by key as it was read"), "{summary}");
}

#[test]
fn a_limit_too_small_for_the_process_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut cmd = quiver_command("backfill", &demo_config(), &[("--output", &out)]);
    let refused = cmd
        .args(["--events", "1000", "--memory-limit", "16MiB"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "a 16MiB limit ran: {stderr}");
    assert!(
        stderr.contains("is too small") && stderr.contains("give --memory-limit"),
        "{stderr}"
    );
    assert!(!out.exists(), "output written before the refusal");
    // The limit it suggests runs, and stays under itself.
    let suggested = stderr
        .split_once("give --memory-limit ")
        .and_then(|(_, rest)| rest.split_once("MiB"))
        .expect("a suggested limit")
        .0;
    let mut cmd = quiver_command("backfill", &demo_config(), &[("--output", &out)]);
    let ran = cmd
        .args([
            "--events",
            "1000",
            "--memory-limit",
            &format!("{suggested}MiB"),
        ])
        .output()
        .unwrap();
    let ran = succeed(ran, "backfill under the suggested limit");
    let summary = String::from_utf8_lossy(&ran.stdout);
    let limit: f64 = suggested.parse().unwrap();
    assert!(reported_peak_mib(&summary) <= limit, "{summary}");
}
