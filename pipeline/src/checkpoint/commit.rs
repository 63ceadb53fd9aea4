//! Carrying out a committed epoch's effects on the outputs: publishing staged feature files,
//! replacing a previous run's output, appending the epoch's dead letters. Every step is
//! idempotent, so recovery simply does it again for the latest checkpoint.

use super::state::{CommitRecord, DeadLetterCommit, TableCommit};
use crate::error::JobError;
use crate::kafka_output::KafkaOutput;
use quiver_store::online::OnlineStore;
use quiver_store::{publish, remove_other_runs, sync_dir, StoreDir};
use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

fn io(path: &Path, action: &str, e: std::io::Error) -> JobError {
    JobError::Checkpoint(format!("{action} `{}`: {e}", path.display()))
}

/// Where a committed epoch's effects go besides files and tables: the output topics and the
/// online store, when the run has them.
#[derive(Clone, Copy, Default)]
pub struct Effects<'a> {
    /// The output topics (`output.kafka`).
    pub kafka: Option<&'a KafkaOutput>,
    /// The online store.
    pub online: Option<&'a dyn OnlineStore>,
    /// The epoch's online writes, when the process that made them applies them.
    pub online_writes: Option<&'a [quiver_store::online::OnlineWrite]>,
    /// The checkpoint's window state, for recovery to rebuild the epoch's online tables from.
    pub views: Option<&'a [super::state::ViewCheckpoint]>,
    /// The feature store, when the run commits into one on an object store.
    pub store: Option<&'a StoreDir>,
}

/// Applies a committed epoch's effects (again) for run `run`.
pub fn roll_forward(
    commit: &CommitRecord,
    run: &str,
    effects: Effects<'_>,
) -> Result<(), JobError> {
    let kafka = effects.kafka;
    let store = match (&commit.store, effects.store) {
        (None, _) => None,
        (Some(url), Some(store)) if *url == store.to_string() => Some(store),
        (Some(url), _) => {
            return Err(JobError::Checkpoint(format!(
                "the last epoch of this run commits into the store `{url}`: run it again with `--store {url}` (and the same store options)"
            )))
        }
    };
    match store {
        Some(store) => quiver_store::publish_into(store, &commit.files)?,
        None => publish(&commit.files)?,
    }
    crate::fault::crash_point("after_publish");
    for table in &commit.tables {
        commit_table(table, &StoreDir::of_commit(store, &table.table))?;
        crate::fault::crash_point("after_table_commit");
    }
    if commit.replaces_previous {
        for view in &commit.views {
            remove_other_runs(&commit.root, view, run)?;
        }
    }
    append_dead_letters(&commit.dead_letters)?;
    if let Some(messages) = &commit.kafka {
        let output = kafka.ok_or_else(|| {
            JobError::Checkpoint(format!(
                "epoch {} of the last run still has to be written to its Kafka topics: run it again with `quiver run` (with the same output.kafka) before anything else",
                messages.epoch
            ))
        })?;
        crate::fault::crash_point("before_kafka_commit");
        output.write(run, messages, store)?;
        crate::fault::crash_point("after_kafka_commit");
    }
    if let Some(online) = &commit.online {
        crate::online::epoch::apply(
            online,
            run,
            effects.online,
            effects.online_writes,
            effects.views,
        )?;
    }
    Ok(())
}

/// The Delta commit of one table's epoch into `table` (nothing when the table already has it).
fn commit_table(commit: &TableCommit, table: &StoreDir) -> Result<(), JobError> {
    let fail = |e: &dyn std::fmt::Display| {
        JobError::Checkpoint(format!(
            "cannot commit epoch {} to the Delta table `{table}`: {e}",
            commit.epoch
        ))
    };
    let mut files = Vec::with_capacity(commit.files.len());
    let mut newest: Option<i64> = None;
    for path in &commit.files {
        let relative = path
            .strip_prefix(&commit.table)
            .map_err(|_| fail(&format!("`{}` is outside the table", path.display())))?;
        let (file, newest_in_file) = quiver_store::parquet_stats::table_file_in(
            table,
            &relative.to_string_lossy(),
            &commit.event_time,
        )
        .map_err(|e| fail(&e))?;
        files.push(file);
        newest = newest.max(newest_in_file);
    }
    let mut info: serde_json::Value = serde_json::from_str(&commit.info).map_err(|e| fail(&e))?;
    info["newest_event_us"] = serde_json::json!(newest);
    let delta_commit = quiver_store::delta::Commit {
        files,
        info: serde_json::Map::from_iter([("quiver".to_string(), info)]),
        transaction: Some((commit.app.clone(), commit.epoch as i64)),
        removes: Vec::new(),
    };
    // The table exists (apply created it), so no schema is needed to create it.
    let no_schema = arrow::datatypes::Schema::empty();
    quiver_store::delta::commit(table, &no_schema, &delta_commit).map_err(|e| fail(&e))?;
    Ok(())
}

/// Brings the dead-letter file to `len_after`: truncate to `len_before` and append the staged
/// epoch (if it still exists), or cut anything beyond `len_after` (a crash after appending).
fn append_dead_letters(dl: &DeadLetterCommit) -> Result<(), JobError> {
    let path = &dl.path;
    let len = std::fs::metadata(path).map_or(0, |m| m.len());
    let staged = dl.staged.as_ref().filter(|s| s.exists());
    if staged.is_none() && len == dl.len_after {
        return Ok(());
    }
    if dl.len_after == 0 {
        if path.exists() {
            std::fs::remove_file(path).map_err(|e| io(path, "cannot replace", e))?;
        }
        return Ok(());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, "cannot create", e))?;
    }
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(path)
        .map_err(|e| io(path, "cannot open", e))?;
    match staged {
        Some(staged) => {
            if len < dl.len_before {
                return Err(JobError::Checkpoint(format!(
                    "the dead-letter file `{}` is shorter ({len} bytes) than its committed part ({} bytes): it was changed outside Quiver; start over with --fresh",
                    path.display(),
                    dl.len_before
                )));
            }
            file.set_len(dl.len_before)
                .map_err(|e| io(path, "cannot truncate", e))?;
            file.seek(SeekFrom::End(0))
                .map_err(|e| io(path, "cannot seek in", e))?;
            let bytes = std::fs::read(staged).map_err(|e| io(staged, "cannot read", e))?;
            file.write_all(&bytes)
                .and_then(|()| file.sync_all())
                .map_err(|e| io(path, "cannot append to", e))?;
            std::fs::remove_file(staged).map_err(|e| io(staged, "cannot remove", e))?;
        }
        None if len > dl.len_after => {
            file.set_len(dl.len_after)
                .and_then(|()| file.sync_all())
                .map_err(|e| io(path, "cannot truncate", e))?;
        }
        None => {
            return Err(JobError::Checkpoint(format!(
                "the dead-letter file `{}` is shorter ({len} bytes) than committed ({} bytes) and the staged epoch is gone: it was changed outside Quiver; start over with --fresh",
                path.display(),
                dl.len_after
            )));
        }
    }
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn commit(dir: &Path, before: u64, after: u64, staged: Option<PathBuf>) -> CommitRecord {
        CommitRecord {
            root: dir.join("out"),
            views: vec!["v".into()],
            files: Vec::new(),
            dead_letters: DeadLetterCommit {
                path: dir.join("out/dead.ndjson"),
                staged,
                len_before: before,
                len_after: after,
            },
            replaces_previous: before == 0,
            tables: Vec::new(),
            store: None,
            kafka: None,
            online: None,
        }
    }

    #[test]
    fn an_epoch_owed_to_kafka_topics_is_not_dropped_without_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut owed = commit(dir.path(), 0, 0, None);
        owed.kafka = Some(crate::kafka_output::KafkaCommit {
            epoch: 3,
            parts: Vec::new(),
        });
        let e = roll_forward(&owed, "r", Effects::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("epoch 3") && e.contains("quiver run"), "{e}");
    }

    #[test]
    fn dead_letters_append_once_however_often_recovery_runs() {
        let dir = tempfile::tempdir().unwrap();
        let staged = dir.path().join("e1.ndjson");
        std::fs::create_dir_all(dir.path().join("out/v")).unwrap();
        std::fs::write(dir.path().join("out/dead.ndjson"), b"old run\n").unwrap();
        std::fs::write(dir.path().join("out/v/part-old-000001-000.parquet"), b"x").unwrap();
        std::fs::write(&staged, b"a\n").unwrap();
        let first = commit(dir.path(), 0, 2, Some(staged));
        roll_forward(&first, "r", Effects::default()).unwrap();
        roll_forward(&first, "r", Effects::default()).unwrap();
        let main = dir.path().join("out/dead.ndjson");
        assert_eq!(std::fs::read(&main).unwrap(), b"a\n");
        assert!(!dir
            .path()
            .join("out/v/part-old-000001-000.parquet")
            .exists());
        // A crash after appending epoch 2 but before removing its staged file.
        let staged = dir.path().join("e2.ndjson");
        std::fs::write(&staged, b"bc\n").unwrap();
        std::fs::write(&main, b"a\nbc\n").unwrap();
        let second = commit(dir.path(), 2, 5, Some(staged));
        roll_forward(&second, "r", Effects::default()).unwrap();
        assert_eq!(std::fs::read(&main).unwrap(), b"a\nbc\n");
        // Bytes of an uncommitted epoch beyond the committed length are cut.
        std::fs::write(&main, b"a\nbc\nzz\n").unwrap();
        roll_forward(&second, "r", Effects::default()).unwrap();
        assert_eq!(std::fs::read(&main).unwrap(), b"a\nbc\n");
        // Lost committed bytes are an error, not silence.
        std::fs::write(&main, b"a\n").unwrap();
        assert!(roll_forward(&second, "r", Effects::default()).is_err());
    }

    #[test]
    fn a_first_commit_without_dead_letters_removes_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("out")).unwrap();
        std::fs::write(dir.path().join("out/dead.ndjson"), b"old\n").unwrap();
        roll_forward(&commit(dir.path(), 0, 0, None), "r", Effects::default()).unwrap();
        assert!(!dir.path().join("out/dead.ndjson").exists());
    }
}
