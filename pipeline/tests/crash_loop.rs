//! Crash tests of the `quiver` binary (DESIGN.md 3.6), and tests of what its commands leave
//! behind (store commits seen by a reader, OpenLineage events): a run killed at any moment and
//! started again with the same command ends with output identical to an uninterrupted run's, row for
//! row and dead letter for dead letter. Input: several NDJSON files (one partition each) with
//! late events, malformed records and rows that fail a transform.
//!
//! `QUIVER_CRASH_TRIALS=<n>` runs more random kills than the default 20 (a soak).

use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod common;
use common::{delta_table_in, quiver_command, succeed, Rng};

const VIEW: &str = common::CARD_VIEW;

const TRANSFORM: &str =
    "SELECT txn_id, card_id, CAST(amount_text AS DOUBLE) AS amount, event_time FROM raw";

/// Writes the input files and the config; returns the config path.
fn write_pipeline(dir: &Path, files: usize, events_per_file: usize) -> PathBuf {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let input = dir.join("input");
    std::fs::create_dir_all(&input).unwrap();
    let base = 1_767_225_600_000i64; // 2026-01-01T00:00:00Z in ms
    let mut txn = 0;
    for f in 0..files {
        let mut lines = Vec::new();
        // Files overlap in time but start at different offsets: partitions far apart.
        let mut t = base + f as i64 * 3_600_000;
        for _ in 0..events_per_file {
            txn += 1;
            t += rng.below(4_000) as i64; // ties when 0 (rare) and small steps
                                          // Bounded disorder of up to 2 s, and now and then a late event (10 min old).
            let jitter = rng.below(2_000) as i64;
            let time = if rng.below(150) == 0 {
                t - 600_000
            } else {
                t - jitter
            };
            // Enough cards that an epoch (250 events) changes fewer than half of them: checkpoints
            // are incremental and merged. One hot card keeps hundreds of events in its windows:
            // its state goes to segments, sealed, merged and dropped as the windows move.
            let card = match rng.below(8) {
                0 => "hot".to_string(),
                _ => format!("c{}", rng.below(1000)),
            };
            let line = match rng.below(200) {
                0 => "{\"txn_id\": 1, \"card_id\": ".to_string(), // malformed JSON
                1 => format!(
                    "{{\"txn_id\": {txn}, \"card_id\": \"{card}\", \"amount_text\": \"abc\", \"event_time\": {time}}}"
                ), // fails the CAST in the transform
                _ => format!(
                    "{{\"txn_id\": {txn}, \"card_id\": \"{card}\", \"amount_text\": \"{}.{:02}\", \"event_time\": {time}}}",
                    rng.below(500),
                    rng.below(100)
                ),
            };
            lines.push(line);
        }
        std::fs::write(
            input.join(format!("part-{f}.ndjson")),
            lines.join("\n") + "\n",
        )
        .unwrap();
    }
    std::fs::write(dir.join("transform.sql"), TRANSFORM).unwrap();
    std::fs::write(dir.join("view.sql"), VIEW).unwrap();
    let config = format!(
        "name: crash
source:
  name: raw
  files:
    location: {}
    format: ndjson
    batch_size: 64
    schema:
      - {{name: txn_id, type: int}}
      - {{name: card_id, type: string}}
      - {{name: amount_text, type: string}}
      - {{name: event_time, type: timestamp, nullable: false}}
event_time:
  column: event_time
  max_lateness: 3s
transforms:
  - name: transactions
    file: transform.sql
views:
  - name: cards
    file: view.sql
checkpoint:
  interval: 1h
  every_events: 250
  max_increments: 3
",
        input.display()
    );
    let path = dir.join("pipeline.yaml");
    std::fs::write(&path, config).unwrap();
    path
}

fn quiver(config: &Path, out: &Path) -> Command {
    quiver_command("run", config, &[("--output", out)])
}

/// `quiver apply <config> --store <store>`, reading `input` instead of the configured files
/// when given, and aborting at crash point `crash` (`point:n`) when given.
fn quiver_apply(config: &Path, store: &Path, input: Option<&Path>, crash: Option<&str>) -> Output {
    let mut cmd = quiver_command("apply", config, &[("--store", store)]);
    if let Some(input) = input {
        cmd.arg("--input").arg(input);
    }
    if let Some(point) = crash {
        cmd.env("QUIVER_CRASH_AT", point);
    }
    cmd.output().expect("start quiver")
}

/// A time after the input's last event: the windows of some cards are still open then.
const ONLINE_AT: &str = "2026-01-01T04:50:00Z";

/// Every card's online features at [`ONLINE_AT`], as `quiver get --json` reads them from the
/// store of the run under `out`.
fn online_features(config: &Path, out: &Path) -> serde_json::Value {
    let cards: Vec<String> = (0..40)
        .map(|c| format!("c{c}"))
        .chain(["hot".to_string()])
        .collect();
    let output = Command::new(env!("CARGO_BIN_EXE_quiver"))
        .arg("get")
        .arg(config)
        .arg("cards")
        .args(&cards)
        .args(["--json", "--at", ONLINE_AT, "--online"])
        .arg(out.join("online.redb"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "quiver get: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let read: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    read["features"].clone()
}

fn run_to_end(config: &Path, out: &Path) -> Output {
    let output = quiver(config, out).output().expect("start quiver");
    assert!(
        output.status.success(),
        "quiver run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The committed output: feature rows sorted by key, time and id, and the dead-letter file.
#[derive(Debug, PartialEq)]
struct Committed {
    rows: RecordBatch,
    dead_letters: String,
}

fn committed(out: &Path) -> Committed {
    let mut batches = Vec::new();
    let dir = out.join("cards");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    paths.sort();
    for path in paths {
        assert!(
            path.extension().is_some_and(|e| e == "parquet"),
            "only committed Parquet files in the view directory: {}",
            path.display()
        );
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).unwrap())
            .unwrap()
            .build()
            .unwrap();
        batches.extend(reader.map(|b| b.unwrap()));
    }
    assert!(!batches.is_empty(), "no feature rows in {}", dir.display());
    let rows = common::sorted_rows(&batches);
    let dead_letters = std::fs::read_to_string(out.join("dead_letter.ndjson")).unwrap_or_default();
    Committed { rows, dead_letters }
}

/// Every file under `dir`, for failure messages.
fn listing(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path.display().to_string());
            }
        }
    }
    files.sort();
    files
}

/// Asserts `got` equals `want`, saying what differs first.
fn assert_same(got: &Committed, want: &Committed, what: &str) {
    if got == want {
        return;
    }
    let (g, w) = (&got.rows, &want.rows);
    assert_eq!(g.num_rows(), w.num_rows(), "{what}: feature row counts");
    for c in 0..w.num_columns() {
        if g.column(c) != w.column(c) {
            let name = w.schema().field(c).name().clone();
            let (a, b) = (g.column(c), w.column(c));
            let row = (0..a.len())
                .find(|&r| a.slice(r, 1) != b.slice(r, 1))
                .unwrap_or(0);
            panic!(
                "{what}: column `{name}` differs first at sorted row {row}: {:?} vs {:?} (card {:?}, time {:?})",
                a.slice(row, 1),
                b.slice(row, 1),
                g.column(0).slice(row, 1),
                g.column(1).slice(row, 1)
            );
        }
    }
    let (gl, wl): (Vec<&str>, Vec<&str>) = (
        got.dead_letters.lines().collect(),
        want.dead_letters.lines().collect(),
    );
    let first = (0..gl.len().max(wl.len()))
        .find(|&i| gl.get(i) != wl.get(i))
        .unwrap_or(0);
    panic!(
        "{what}: dead letters differ ({} vs {} lines), first at line {first}:\n  got  {:?}\n  want {:?}",
        gl.len(),
        wl.len(),
        gl.get(first),
        wl.get(first)
    );
}

fn assert_clean(out: &Path) {
    let staging = out.join("_staging");
    let left: Vec<_> = std::fs::read_dir(&staging)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "staged files left behind: {left:?}");
    // A finished run keeps its last checkpoint only (no chain of increments, no temporary
    // files of an interrupted write or merge).
    let checkpoints: Vec<_> = std::fs::read_dir(out.join("_checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|name| name != "LOCK")
        .collect();
    assert_eq!(
        checkpoints.len(),
        1,
        "checkpoint files left in {}: {checkpoints:?}",
        out.display()
    );
}

struct Reference {
    dir: tempfile::TempDir,
    config: PathBuf,
    expected: Committed,
    /// The online store's features after the run.
    online: serde_json::Value,
    took: Duration,
    /// Checkpoints the uninterrupted run took (the last one is the input's end).
    checkpoints: u64,
}

fn reference() -> Reference {
    let dir = tempfile::tempdir().unwrap();
    let config = write_pipeline(dir.path(), 4, 2_500);
    let out = dir.path().join("reference");
    let started = Instant::now();
    let output = run_to_end(&config, &out);
    let took = started.elapsed();
    let summary = String::from_utf8_lossy(&output.stdout).to_string();
    let expected = committed(&out);
    assert!(expected.rows.num_rows() > 9_000, "{summary}");
    for reason in ["late", "malformed_record", "transform_error"] {
        assert!(
            expected
                .dead_letters
                .contains(&format!("\"reason\":\"{reason}\"")),
            "the input exercises {reason}: {summary}"
        );
    }
    assert_clean(&out);
    let online = online_features(&config, &out);
    assert!(
        online
            .as_array()
            .unwrap()
            .iter()
            .any(|r| !r["max_30m"].is_null()),
        "some short windows are still open at {ONLINE_AT}"
    );
    let checkpoints = summary
        .split("checkpoints ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no checkpoint count in {summary}"));
    Reference {
        dir,
        config,
        expected,
        online,
        took,
        checkpoints,
    }
}

#[test]
fn killed_at_random_moments_the_resumed_output_equals_an_uninterrupted_run() {
    let r = reference();
    let trials: u64 = std::env::var("QUIVER_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let mut kills = 0;
    for trial in 0..trials {
        let out = r.dir.path().join(format!("trial-{trial}"));
        let mut finished = false;
        for attempt in 0..60 {
            let mut child = quiver(&r.config, &out).spawn().expect("start quiver");
            // Kill somewhere in the run (its whole length, sometimes beyond): early attempts
            // often die before the first checkpoint, later ones in the middle of an epoch.
            let limit = (r.took.as_millis() as u64 * 6 / 5).max(20);
            let delay = Duration::from_millis(rng.below(limit));
            let deadline = Instant::now() + delay;
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break Some(status);
                }
                if Instant::now() >= deadline {
                    break None;
                }
                std::thread::sleep(Duration::from_millis(2));
            };
            match status {
                Some(status) => {
                    let output = child.wait_with_output().unwrap();
                    assert!(
                        status.success(),
                        "trial {trial} attempt {attempt}: {}\nfiles: {:#?}",
                        String::from_utf8_lossy(&output.stderr),
                        listing(&out)
                    );
                    finished = true;
                    break;
                }
                None => {
                    child.kill().unwrap(); // SIGKILL
                    child.wait().unwrap();
                    kills += 1;
                }
            }
        }
        assert!(finished, "trial {trial} never finished");
        assert_clean(&out);
        let got = committed(&out);
        assert_same(&got, &r.expected, &format!("trial {trial}"));
        assert_eq!(
            online_features(&r.config, &out),
            r.online,
            "trial {trial}: the online store differs from an uninterrupted run's"
        );
    }
    assert!(kills >= trials / 4, "the runs were killed ({kills} kills)");
}

#[test]
fn crashes_at_each_step_of_a_commit_leave_exactly_once_output() {
    let r = reference();
    let points = [
        "before_checkpoint",
        "before_checkpoint_rename",
        "after_checkpoint",
        "after_publish",
        "after_online_apply",
    ];
    // The last commit (the input's end, whose checkpoint holds no state: its online writes are
    // staged in a file) as well as ordinary ones (recovered from the checkpoint's state).
    let last = r.checkpoints;
    assert!(last > 7, "{last} checkpoints");
    // Merges of incremental checkpoints (every third one here) run beside the job.
    let merges = [
        ("before_compaction_rename", 1),
        ("before_compaction_rename", 2),
    ];
    let points = points
        .iter()
        .flat_map(|p| [1, 3, 7, last].map(|n| (*p, n)))
        .chain(merges);
    for (point, n) in points {
        let out = r.dir.path().join(format!("{point}-{n}"));
        let output = quiver(&r.config, &out)
            .env("QUIVER_CRASH_AT", format!("{point}:{n}"))
            .output()
            .unwrap();
        assert!(!output.status.success(), "{point}:{n} crashed");
        run_to_end(&r.config, &out);
        assert_clean(&out);
        assert_same(&committed(&out), &r.expected, &format!("{point}:{n}"));
        assert_eq!(
            online_features(&r.config, &out),
            r.online,
            "{point}:{n}: the online store differs from an uninterrupted run's"
        );
    }
}

#[test]
fn a_failed_new_run_leaves_the_previous_output_and_sigterm_stops_cleanly() {
    let r = reference();
    let out = r.dir.path().join("kept");
    run_to_end(&r.config, &out);
    // A new run that dies before its first commit leaves the previous output untouched.
    let output = quiver(&r.config, &out)
        .env("QUIVER_CRASH_AT", "before_checkpoint:1")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert_same(&committed(&out), &r.expected, "previous output intact");
    // A new run that dies after some commits resumes as itself: its epochs come after the
    // finished run's, so the finished run's checkpoint is never taken for the latest.
    let output = quiver(&r.config, &out)
        .env("QUIVER_CRASH_AT", "after_publish:3")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let again = run_to_end(&r.config, &out);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("resumed after checkpoint"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    assert_same(
        &committed(&out),
        &r.expected,
        "a second run, crashed and resumed",
    );
    // SIGTERM once the first checkpoint is on disk: a final checkpoint, exit 0, and the same
    // command resumes.
    let fresh_out = r.dir.path().join("sigterm");
    let mut child = quiver(&r.config, &fresh_out)
        .arg("--fresh")
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let checkpoints = fresh_out.join("_checkpoints");
    let has_checkpoint = |dir: &Path| {
        std::fs::read_dir(dir).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("checkpoint-"))
        })
    };
    while !has_checkpoint(&checkpoints) {
        assert!(Instant::now() < deadline, "no checkpoint within 60 s");
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let output = child.wait_with_output().unwrap();
    succeed(&output, "the command");
    let stdout = String::from_utf8_lossy(&output.stdout);
    if stdout.contains("interrupted") {
        let again = run_to_end(&r.config, &fresh_out);
        assert!(String::from_utf8_lossy(&again.stdout).contains("resumed after checkpoint"));
    }
    assert_same(
        &committed(&fresh_out),
        &r.expected,
        "after SIGTERM and resume",
    );
}

#[test]
fn a_changed_view_or_a_damaged_checkpoint_is_a_clear_error_and_fresh_starts_over() {
    let r = reference();
    let out = r.dir.path().join("changed");
    let crashed = quiver(&r.config, &out)
        .env("QUIVER_CRASH_AT", "after_publish:2")
        .output()
        .unwrap();
    assert!(!crashed.status.success());
    // Change the view: its state no longer fits.
    let view = r.config.with_file_name("view.sql");
    let original = std::fs::read_to_string(&view).unwrap();
    let changed = original.replace(
        "  count(*) OVER (PARTITION BY card_id ORDER BY event_time) AS n_lifetime",
        "  count(*) OVER (PARTITION BY card_id ORDER BY event_time) AS n_lifetime,\n  min(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '2 hours' PRECEDING AND CURRENT ROW) AS min_2h",
    );
    assert_ne!(changed, original);
    std::fs::write(&view, &changed).unwrap();
    let refused = quiver(&r.config, &out).output().unwrap();
    let text = String::from_utf8_lossy(&refused.stderr).to_string();
    std::fs::write(&view, &original).unwrap();
    assert!(!refused.status.success());
    assert!(text.contains("view `cards`"), "{text}");
    assert!(text.contains("windows changed"), "{text}");
    assert!(text.contains("--fresh"), "{text}");
    // A damaged checkpoint: one flipped byte.
    let checkpoint = std::fs::read_dir(out.join("_checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "qvck"))
        .expect("a checkpoint");
    let mut bytes = std::fs::read(&checkpoint).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&checkpoint, &bytes).unwrap();
    let refused = quiver(&r.config, &out).output().unwrap();
    let text = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(!refused.status.success());
    assert!(text.contains("checksum mismatch"), "{text}");
    assert!(text.contains("--fresh"), "{text}");
    // --fresh starts over and ends with the uninterrupted run's output.
    let fresh = quiver(&r.config, &out).arg("--fresh").output().unwrap();
    succeed(&fresh, "the fresh run");
    assert_same(&committed(&out), &r.expected, "after --fresh");
}

/// `quiver apply` killed at each step of registering a changed view: the view stays on its
/// previous version, which stays readable; the next apply finishes the new version.
#[test]
fn an_apply_killed_at_any_step_leaves_latest_on_the_previous_version() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_pipeline(dir.path(), 2, 300);
    let store = dir.path().join("store");
    let apply = |config: &Path, crash: Option<&str>| {
        quiver_apply(
            config,
            &store,
            None,
            crash.map(|p| format!("{p}:1")).as_deref(),
        )
    };
    let latest = || std::fs::read_to_string(store.join("registry/cards/latest")).unwrap();
    let first = apply(&config, None);
    succeed(&first, "the first run");
    let v1 = latest();
    let v1_rows = read_dir_rows(&store.join("offline/cards").join(v1.trim()));

    // A wider window: a new version.
    let view = dir.path().join("view.sql");
    std::fs::write(&view, VIEW.replace("10 minutes", "20 minutes")).unwrap();
    for point in [
        "apply_after_backfill",
        "apply_after_move",
        "apply_before_latest",
    ] {
        let crashed = apply(&config, Some(point));
        assert!(
            !crashed.status.success(),
            "{point}: the crash point was not reached"
        );
        assert_eq!(latest(), v1, "{point}: latest moved");
        let rows = read_dir_rows(&store.join("offline/cards").join(v1.trim()));
        assert_eq!(rows, v1_rows, "{point}: the previous version changed");
    }
    let done = apply(&config, None);
    succeed(&done, "the run");
    let v2 = latest();
    assert_ne!(v2, v1);
    let v2_rows = read_dir_rows(&store.join("offline/cards").join(v2.trim()));
    assert_eq!(v2_rows, v1_rows, "the same events, one feature row each");
    assert!(!store.join("_staging").exists(), "staging is cleared");
}

/// Rows in the Parquet files of a directory.
fn read_dir_rows(dir: &Path) -> usize {
    let mut rows = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "parquet") {
            let reader =
                ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).unwrap())
                    .unwrap()
                    .build()
                    .unwrap();
            rows += reader.map(|b| b.unwrap().num_rows()).sum::<usize>();
        }
    }
    rows
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// `quiver run --store` killed at each step of committing an epoch (files published, one
/// table committed, checkpoint written or not) and started again: the version's Delta table
/// and event log hold every row exactly once, equal to an uninterrupted store run's.
#[test]
fn a_store_run_killed_at_each_commit_step_commits_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_pipeline(dir.path(), 2, 600);
    let history = store_history(dir.path());
    let applied = dir.path().join("applied");
    succeed(
        &quiver_apply(&config, &applied, Some(&history), None),
        "the apply",
    );
    // Each trial starts from a copy of the applied store.
    let prepare = |name: &str| {
        let store = dir.path().join(name);
        copy_dir(&applied, &store);
        store.display().to_string()
    };
    store_run_crash_trials(dir.path(), &config, prepare, &[], &Default::default());
}

/// The same trials with the store on S3 (the tests' S3 server): uploads, conditional-PUT
/// commits and recovery's re-publication leave every row in each table exactly once.
#[test]
fn a_store_run_on_s3_killed_at_each_commit_step_commits_every_row_once() {
    let Some((endpoint, bucket)) = common::s3_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = write_pipeline(dir.path(), 2, 600);
    let history = store_history(dir.path());
    let env = [
        ("AWS_ENDPOINT", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ];
    let options: std::collections::BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect();
    let prefix = format!(
        "crash-{:x}",
        std::process::id() as u64 * 1_000_003 + now_ms()
    );
    // Each trial applies the history into a prefix of its own.
    let prepare = |name: &str| {
        let url = format!("s3://{bucket}/{prefix}/{name}");
        let mut apply = quiver_command("apply", &config, &[("--store", Path::new(&url))]);
        apply.arg("--input").arg(&history).envs(env);
        succeed(apply.output().unwrap(), "the apply");
        url
    };
    store_run_crash_trials(dir.path(), &config, prepare, &env, &options);
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// History a day before the input of [`write_pipeline`], for a store run to continue.
fn store_history(dir: &Path) -> PathBuf {
    let history: Vec<String> = (0..200)
        .map(|k| {
            format!(
                "{{\"txn_id\": {}, \"card_id\": \"c{}\", \"amount_text\": \"{k}.5\", \"event_time\": {}}}",
                1_000_000 + k,
                k % 40,
                1_767_225_600_000i64 - 86_400_000 + k * 60_000
            )
        })
        .collect();
    let file = dir.join("history.ndjson");
    std::fs::write(&file, history.join("\n")).unwrap();
    file
}

/// Store runs killed at each commit step and resumed, each into a store `prepare(name)` returns
/// (history applied), compared with an uninterrupted run's tables; `env` and `options`
/// configure an object store.
fn store_run_crash_trials(
    dir: &Path,
    config: &Path,
    prepare: impl Fn(&str) -> String,
    env: &[(&str, &str)],
    options: &std::collections::BTreeMap<String, String>,
) {
    let store_run = |store: &str, out: &Path, crash: Option<String>| {
        let mut cmd = quiver(config, out);
        cmd.arg("--store").arg(store).envs(env.iter().copied());
        if let Some(c) = crash {
            cmd.env("QUIVER_CRASH_AT", c);
        }
        cmd.output().unwrap()
    };
    let tables = |store: &str| {
        let registry = quiver_pipeline::registry::Registry::at(Path::new(store), options).unwrap();
        let version = registry.latest("cards").unwrap().unwrap();
        let definition = registry.definition("cards", Some(&version)).unwrap();
        (
            registry.data_dir("cards", &version),
            registry.events_dir(&definition.events),
        )
    };

    let reference = prepare("reference");
    let done = store_run(&reference, &dir.join("out-ref"), None);
    succeed(&done, "the run");
    let (want_rows, _) = delta_table_in(&tables(&reference).0);
    let (want_events, _) = delta_table_in(&tables(&reference).1);
    assert_eq!(want_rows.num_rows(), want_events.num_rows());

    for point in [
        "after_publish",
        "after_table_commit",
        "before_checkpoint",
        "after_checkpoint",
    ] {
        for n in [1, 3] {
            let store = prepare(&format!("store-{point}-{n}"));
            let out = dir.join(format!("out-{point}-{n}"));
            let crashed = store_run(&store, &out, Some(format!("{point}:{n}")));
            assert!(!crashed.status.success(), "{point}:{n} was not reached");
            let resumed = store_run(&store, &out, None);
            assert!(
                resumed.status.success(),
                "{point}:{n}: {}",
                String::from_utf8_lossy(&resumed.stderr)
            );
            let (table, events) = tables(&store);
            let (rows, txns) = delta_table_in(&table);
            assert_eq!(rows, want_rows, "{point}:{n}: feature rows");
            let mut unique = txns.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(
                txns.len(),
                unique.len(),
                "{point}:{n}: an epoch committed twice"
            );
            assert_eq!(
                delta_table_in(&events).0,
                want_events,
                "{point}:{n}: events"
            );
        }
    }
}

/// A reader polling a version's Delta table while `quiver run --store` commits epoch after
/// epoch only ever sees whole epochs: every row count it reads is the table's count at one of
/// its versions. The reader is delta-rs through Polars (the test command provides it).
#[test]
fn a_reader_during_store_commits_never_sees_a_partial_epoch() {
    let Ok(python) = std::env::var("QUIVER_TEST_PYTHON") else {
        eprintln!("skipping: QUIVER_TEST_PYTHON is not set (scripts/test.sh sets it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = write_pipeline(dir.path(), 3, 4_000);
    let history = dir.path().join("history.ndjson");
    std::fs::write(
        &history,
        "{\"txn_id\": 0, \"card_id\": \"c0\", \"amount_text\": \"1.0\", \"event_time\": 1767139200000}\n",
    )
    .unwrap();
    let store = dir.path().join("store");
    let applied = quiver_apply(&config, &store, Some(&history), None);
    succeed(&applied, "quiver apply");
    let version = std::fs::read_to_string(store.join("registry/cards/latest")).unwrap();
    let table = store.join("offline/cards").join(version.trim());
    let counts = dir.path().join("counts.txt");
    // Reads the table as fast as it can until told to stop, writing each row count it saw.
    let reader = Command::new(python)
        .args([
            "-c",
            "import sys, os, polars as pl
table, out, stop = sys.argv[1:4]
seen = [pl.read_delta(table).height]
open(stop + '.ready', 'w').close()
while not os.path.exists(stop):
    seen.append(pl.read_delta(table).height)
seen.append(pl.read_delta(table).height)
open(out, 'w').write('\\n'.join(map(str, seen)))",
            &table.to_string_lossy(),
            &counts.to_string_lossy(),
            &dir.path().join("stop").to_string_lossy(),
        ])
        .spawn()
        .unwrap();
    let ready = dir.path().join("stop.ready");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut cmd = quiver(&config, &dir.path().join("out"));
    let run = cmd
        .arg("--store")
        .arg(&store)
        .arg("--checkpoint-every-events")
        .arg("100")
        .output()
        .unwrap();
    std::fs::write(dir.path().join("stop"), b"").unwrap();
    let reader = reader.wait_with_output().unwrap();
    succeed(&run, "quiver run");
    assert!(reader.status.success(), "the reader failed");
    // The row count of each table version.
    let mut at_versions = vec![0u64];
    let mut rows = 0;
    for v in quiver_store::delta::versions(&quiver_store::StoreDir::local(&table)).unwrap() {
        for action in
            quiver_store::delta::read_commit(&quiver_store::StoreDir::local(&table), v).unwrap()
        {
            if let Some(stats) = action.pointer("/add/stats").and_then(|s| s.as_str()) {
                let stats: serde_json::Value = serde_json::from_str(stats).unwrap();
                rows += stats["numRecords"].as_u64().unwrap();
            }
        }
        at_versions.push(rows);
    }
    assert!(
        at_versions.len() > 5,
        "a few epochs were committed: {at_versions:?}"
    );
    let seen: Vec<u64> = std::fs::read_to_string(&counts)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(!seen.is_empty());
    for count in &seen {
        assert!(
            at_versions.contains(count),
            "a reader saw {count} rows, which no table version has: {at_versions:?}"
        );
    }
    assert_eq!(
        seen.last(),
        at_versions.last(),
        "the reader ends at the last version"
    );
    let mut distinct = seen.clone();
    distinct.dedup();
    assert!(
        distinct.len() > 2,
        "the reads overlapped the commits: {seen:?}"
    );
    eprintln!(
        "{} reads over {} versions",
        seen.len(),
        at_versions.len() - 1
    );
}

/// With `openlineage.file` in the config, `quiver apply` appends a START and a COMPLETE run
/// event (the version's table among the outputs), and a failing run a START and a FAIL.
#[test]
fn apply_and_run_emit_openlineage_events() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_pipeline(dir.path(), 1, 300);
    let events = dir.path().join("lineage/events.ndjson");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("openlineage:\n  file: {}\n", events.display()));
    std::fs::write(&config, text).unwrap();
    let apply = quiver_apply(&config, &dir.path().join("store"), None, None);
    succeed(&apply, "quiver apply");
    // A run whose checkpoint directory is a file fails.
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("_checkpoints"), b"not a directory").unwrap();
    let failed = quiver(&config, &out).output().unwrap();
    assert!(!failed.status.success());
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = lines
        .iter()
        .map(|e| e["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["START", "COMPLETE", "START", "FAIL"]);
    assert_eq!(lines[0]["run"]["runId"], lines[1]["run"]["runId"]);
    let run_id = lines[0]["run"]["runId"].as_str().unwrap();
    assert_eq!(
        (run_id.len(), &run_id[14..15]),
        (36, "4"),
        "a version-4 UUID: {run_id}"
    );
    assert_ne!(lines[1]["run"]["runId"], lines[2]["run"]["runId"]);
    assert_eq!(lines[1]["job"]["name"], "crash.apply");
    let output = lines[1]["outputs"][0]["name"].as_str().unwrap();
    assert!(output.starts_with("offline/cards/"), "{output}");
    assert!(lines[1]["inputs"][0]["name"]
        .as_str()
        .unwrap()
        .contains("input"));
    assert!(lines[3]["run"]["facets"]["errorMessage"]["message"].is_string());
}

/// A lineage endpoint on a loopback port: each request's head (lower-cased) and body arrive on
/// the channel; every request is answered 200.
fn lineage_endpoint() -> (String, std::sync::mpsc::Receiver<(String, String)>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line.to_lowercase());
            }
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            if tx
                .send((head, String::from_utf8_lossy(&body).into_owned()))
                .is_err()
            {
                break;
            }
        }
    });
    (addr, rx)
}

/// With `openlineage.url`, events are POSTed as JSON with the API key as a bearer token; an
/// endpoint that is down is a warning, and the job still succeeds.
#[test]
fn openlineage_events_go_to_an_http_endpoint_and_a_dead_one_does_not_stop_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_pipeline(dir.path(), 1, 300);
    let (addr, received) = lineage_endpoint();
    let base = std::fs::read_to_string(&config).unwrap();
    let with_url = |url: &str| {
        let text = format!(
            "{base}openlineage:\n  url: {url}\n  api_key_env: QUIVER_TEST_LINEAGE_KEY\n  namespace: fraud\n"
        );
        std::fs::write(&config, text).unwrap();
    };
    with_url(&format!("http://{addr}/api/v1/lineage"));
    let apply = quiver_command("apply", &config, &[("--store", &dir.path().join("store"))])
        .env("QUIVER_TEST_LINEAGE_KEY", "lineage-secret-42")
        .output()
        .unwrap();
    succeed(&apply, "quiver apply");
    let events: Vec<(String, serde_json::Value)> = received
        .try_iter()
        .map(|(head, body)| (head, serde_json::from_str(&body).unwrap()))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|(_, e)| e["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["START", "COMPLETE"]);
    for (head, event) in &events {
        assert!(head.starts_with("post /api/v1/lineage "), "{head}");
        assert!(
            head.contains("authorization: bearer lineage-secret-42"),
            "{head}"
        );
        assert!(head.contains("content-type: application/json"), "{head}");
        assert_eq!(event["job"]["namespace"], "fraud");
    }
    // Nobody listens on the port any more: the run warns and succeeds.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    with_url(&format!("http://{dead}/api/v1/lineage"));
    let ran = quiver(&config, &dir.path().join("out"))
        .env("QUIVER_TEST_LINEAGE_KEY", "lineage-secret-42")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&ran.stderr);
    assert!(ran.status.success(), "{stderr}");
    assert!(
        stderr.contains("OpenLineage START event not delivered"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("lineage-secret-42"),
        "the key leaked: {stderr}"
    );
}
