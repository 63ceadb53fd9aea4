//! `quiver backfill --memory-limit`: an input several times the limit, hot keys included,
//! completes with the process's peak resident memory under the limit and the feature rows of
//! a backfill without one.

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
/// summary and its peak resident memory in bytes (the child's `ru_maxrss`).
fn backfill(input: &Path, out: &Path, limit: Option<&str>) -> (String, u64) {
    let log = out.with_extension("log");
    let mut cmd = quiver_command(
        "backfill",
        &demo_config(),
        &[("--input", input), ("--output", out)],
    );
    if let Some(limit) = limit {
        cmd.args(["--memory-limit", limit]);
    }
    let file = std::fs::File::create(&log).unwrap();
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
    let summary = std::fs::read_to_string(&log).unwrap();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "backfill failed: {summary}"
    );
    drop(child);
    (summary, usage.ru_maxrss as u64 * 1024)
}

#[test]
fn a_backfill_of_an_input_several_times_the_limit_stays_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.ndjson");
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
    let input_bytes = std::fs::metadata(&input).unwrap().len();
    let limit: u64 = 160 << 20;

    let (summary, peak) = backfill(&input, &dir.path().join("limited"), Some("160MiB"));
    assert!(
        summary.contains("spilled to disk") && summary.contains("evaluated in time slices"),
        "{summary}"
    );
    eprintln!(
        "peak resident memory {:.1} MiB",
        peak as f64 / (1 << 20) as f64
    );
    assert!(
        peak < limit,
        "peak resident memory {} MiB over the limit of {} MiB: {summary}",
        peak >> 20,
        limit >> 20
    );
    assert!(
        input_bytes > 5 * limit / 2,
        "the input is {input_bytes} bytes"
    );

    let (_, unlimited_peak) = backfill(&input, &dir.path().join("whole"), None);
    for view in ["card_features", "merchant_features"] {
        let limited = view_rows(&dir.path().join("limited").join(view));
        let whole = view_rows(&dir.path().join("whole").join(view));
        assert_eq!(limited.num_rows(), 3_000_000, "{view}");
        assert_eq!(limited, whole, "{view}: the same feature rows");
    }
    eprintln!(
        "input {} MiB: peak {} MiB under --memory-limit 160MiB, {} MiB without",
        input_bytes >> 20,
        peak >> 20,
        unlimited_peak >> 20
    );
}
