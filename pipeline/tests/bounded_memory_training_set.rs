//! `quiver training-set --memory-limit` over a store of the fraud demo, whose hottest card and
//! merchant hold 14% and 17% of the events: their key partitions are cut by time, the
//! process's peak resident memory stays under the limit, and the rows are those of an export
//! without one. (A binary of its own: beside the backfill memory tests it competed with them.)

mod common;

use common::memory::{demo_config, generate_demo, reported_peak_mib, run_measured, view_rows};
use common::{quiver_command, succeed};

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
    generate_demo(1_000_000, 42, &spine);
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
