//! `quiver backfill --memory-limit`: inputs larger than the limit (an NDJSON file 2.8 times
//! it), hot keys included, complete with the process's peak resident memory under the limit
//! and the feature rows of a backfill without one: spilled whole and then split by key (NDJSON,
//! whose size is unknown until it is read), or split by key as it is read (Parquet). And
//! `quiver training-set --memory-limit` over a store of the same demo, hot keys cut by time.

mod common;

use arrow::record_batch::RecordBatch;
use common::{quiver_command, sorted_rows, succeed};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// The demo's config.
fn demo_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/fraud-demo.yaml")
}

/// Every row of the Parquet files of `dir`, sorted.
fn view_rows(dir: &Path) -> RecordBatch {
    let mut batches = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "parquet") {
            let file = std::fs::File::open(&path).unwrap();
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap()
                .build()
                .unwrap();
            batches.extend(reader.map(Result::unwrap));
        }
    }
    sorted_rows(&batches)
}

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

/// Runs `cmd` (which must succeed) with its output to `log`; its output and its peak resident
/// memory in bytes (the child's `ru_maxrss`).
fn run_measured(mut cmd: std::process::Command, log: &Path, what: &str) -> (String, u64) {
    let file = std::fs::File::create(log).unwrap();
    let child = cmd
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it in for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not yet waited for; the pointers are to live locals.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4: {}", std::io::Error::last_os_error());
    let output = std::fs::read_to_string(log).unwrap();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{what} failed: {output}"
    );
    drop(child);
    (output, usage.ru_maxrss as u64 * 1024)
}

/// The input's size as Arrow arrays in MiB, as the summary of a backfill tells it.
fn input_mib(summary: &str) -> u64 {
    let (_, after) = summary.split_once("  input ").expect("the input's line");
    let mib = after.split_once(" MiB").expect("its size").0;
    mib.replace(',', "").parse().expect("a number of MiB")
}

/// The peak resident memory in MiB that the summary of a backfill (or the report of a training
/// set) tells.
fn reported_peak_mib(summary: &str) -> f64 {
    let (_, after) = summary
        .split_once("memory: peak ")
        .expect("the memory line");
    let mib = after.split_once(" MiB resident").expect("its peak").0;
    mib.parse().expect("a number of MiB")
}

/// Backfills the demo generator's 3M events as `file` (its extension picks the format) under
/// `--memory-limit 160MiB` and without: the peak stays under the limit, the input is larger
/// than the limit, and the feature rows are the same. Returns the limited run's summary.
fn check_under_the_limit(file: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join(file);
    // The demo's generator: its hottest card and merchant hold 13% and 17% of the events, so
    // their key partitions are cut by time.
    let generate = std::process::Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(["generate", "--events", "3000000", "--seed", "3", "--from"])
        .arg(demo_config())
        .arg("--out")
        .arg(&input)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    succeed(generate, "quiver generate");
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

#[test]
fn a_training_set_of_hot_keys_stays_under_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // The demo's 1M events in a store; the spine is the same events (the generator with the
    // config's seed): its hottest card and merchant hold 14% and 17% of the rows.
    let mut apply = quiver_command("apply", &demo_config(), &[("--store", &store)]);
    succeed(
        apply.args(["--events", "1000000"]).output().unwrap(),
        "quiver apply",
    );
    let spine = dir.path().join("spine.parquet");
    let generate = std::process::Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(["generate", "--events", "1000000", "--seed", "42", "--from"])
        .arg(demo_config())
        .arg("--out")
        .arg(&spine)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    succeed(generate, "quiver generate");
    let export = |out: &str, limit: Option<&str>| {
        let out = dir.path().join(out);
        std::fs::create_dir(&out).unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_quiver"));
        cmd.arg("training-set")
            .args(["--store".as_ref(), store.as_os_str()])
            .args(["--spine".as_ref(), spine.as_os_str()])
            .args(["--time-column", "event_time", "--no-progress"])
            .args(["--features", "card_features:*,merchant_features:*"])
            .args(["--out".as_ref(), out.join("train.parquet").as_os_str()]);
        if let Some(limit) = limit {
            cmd.args(["--memory-limit", limit]);
        }
        let (report, peak) = run_measured(cmd, &out.with_extension("log"), "training-set");
        (out, report, peak)
    };
    let limit: u64 = 128 << 20;
    let (limited, report, peak) = export("limited", Some("128MiB"));
    eprintln!(
        "training set: peak resident memory {:.1} MiB under 128MiB: {report}",
        peak as f64 / (1 << 20) as f64
    );
    // Both views have partitions too large for the budget: their hot keys'.
    assert_eq!(report.matches(" hot, in ").count(), 2, "{report}");
    assert!(
        peak < limit,
        "peak resident memory {} MiB over the limit: {report}",
        peak >> 20
    );
    let reported = reported_peak_mib(&report);
    assert!(
        reported <= 128.0 && reported + 8.0 >= peak as f64 / (1 << 20) as f64,
        "the report says a peak of {reported} MiB, the process had {} MiB: {report}",
        peak >> 20
    );
    // The same rows as an export without a limit (every partition evaluated whole).
    let (whole, report, _) = export("whole", None);
    assert!(!report.contains(" hot, in "), "{report}");
    let rows = view_rows(&limited);
    assert_eq!(rows.num_rows(), 1_000_000);
    assert_eq!(rows, view_rows(&whole), "the same training set");
}
