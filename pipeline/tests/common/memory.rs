//! Measuring a `quiver` process's memory, for the bounded-memory tests.

use super::sorted_rows;
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// The demo's config.
pub fn demo_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/fraud-demo.yaml")
}

/// Every row of the Parquet files of `dir`, sorted.
pub fn view_rows(dir: &Path) -> RecordBatch {
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

/// Runs `cmd` (which must succeed) with its output to `log`; its output and its peak resident
/// memory in bytes (the child's `ru_maxrss`).
pub fn run_measured(mut cmd: std::process::Command, log: &Path, what: &str) -> (String, u64) {
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

/// The peak resident memory in MiB that the summary of a backfill (or the report of a training
/// set) tells.
pub fn reported_peak_mib(summary: &str) -> f64 {
    let (_, after) = summary
        .split_once("memory: peak ")
        .expect("the memory line");
    let mib = after.split_once(" MiB resident").expect("its peak").0;
    mib.parse().expect("a number of MiB")
}

/// Writes `events` of the demo's generator with `seed` to `out` (its extension picks the
/// format).
pub fn generate_demo(events: u64, seed: u64, out: &Path) {
    let generate = std::process::Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(["generate", "--events", &events.to_string()])
        .args(["--seed", &seed.to_string(), "--from"])
        .arg(demo_config())
        .arg("--out")
        .arg(out)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    super::succeed(generate, "quiver generate");
}
