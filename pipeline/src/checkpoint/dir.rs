//! The checkpoint directory: checkpoints written atomically (temporary file, sync, rename,
//! directory sync) and read back with clear errors.

use super::envelope::{self, StateKind};
use super::state::Checkpoint;
use super::view_state;
use crate::error::JobError;
use quiver_store::write_atomically;
use std::path::{Path, PathBuf};

/// Fingerprint of the checkpoint envelope: checkpoints of any pipeline share one layout; what
/// they belong to is checked field by field (pipeline, source, views) for clear messages.
const CHECKPOINT_LAYOUT: u64 = 1;

/// Extension of a checkpoint being written by [`CheckpointDir::write`].
const WRITING: &str = "qvck.tmp";

/// Extension of a merged checkpoint being written by [`CheckpointDir::compact`].
const COMPACTING: &str = "qvck.compacting";

/// Where a job's checkpoints live.
#[derive(Debug, Clone)]
pub struct CheckpointDir {
    dir: PathBuf,
    /// Held while files are removed or merged (a merge beside the job, the removal of older
    /// files after a whole checkpoint), so neither removes what the other reads.
    cleanup: std::sync::Arc<std::sync::Mutex<()>>,
}

/// A checkpoint written, for the run summary.
#[derive(Debug, Clone, Copy, Default)]
pub struct Written {
    /// Bytes of the checkpoint file.
    pub bytes: u64,
}

impl CheckpointDir {
    /// The checkpoint directory `dir` (created on first write).
    pub fn new(dir: PathBuf) -> Self {
        CheckpointDir {
            dir,
            cleanup: Default::default(),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn file(&self, epoch: u64) -> PathBuf {
        self.dir.join(format!("checkpoint-{epoch:010}.qvck"))
    }

    /// Checkpoint files present, by epoch.
    fn list(&self) -> Result<Vec<(u64, PathBuf)>, JobError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(JobError::Checkpoint(format!(
                    "cannot list checkpoints in `{}`: {e}",
                    self.dir.display()
                )))
            }
        };
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if let Some(epoch) = name
                .strip_prefix("checkpoint-")
                .and_then(|n| n.strip_suffix(".qvck"))
                .and_then(|n| n.parse::<u64>().ok())
            {
                found.push((epoch, path));
            }
        }
        found.sort();
        Ok(found)
    }

    /// The largest epoch of any checkpoint file present, readable or not. A new run numbers
    /// its epochs after it, so that the latest checkpoint is always the one with the largest
    /// epoch, across runs.
    pub fn max_epoch(&self) -> Result<Option<u64>, JobError> {
        Ok(self.list()?.last().map(|(epoch, _)| *epoch))
    }

    /// The latest committed checkpoint, if any, with whole view state (an incremental one is
    /// merged with the checkpoints before it). A damaged or missing checkpoint is an error that
    /// says how to start over, never a silent fallback (its epoch may already be published).
    pub fn latest(&self) -> Result<Option<Checkpoint>, JobError> {
        self.remove_interrupted_writes();
        let Some((epoch, _)) = self.list()?.pop() else {
            return Ok(None);
        };
        self.whole(epoch).map(Some)
    }

    /// Reads checkpoint `epoch` as written.
    fn read(&self, epoch: u64) -> Result<Checkpoint, JobError> {
        let path = self.file(epoch);
        let unusable = |e: &dyn std::fmt::Display| {
            JobError::Checkpoint(format!(
                "checkpoint `{}` cannot be used: {e}; to start over, run with --fresh (the output of the interrupted run will be replaced)",
                path.display()
            ))
        };
        let bytes = std::fs::read(&path).map_err(|e| unusable(&e))?;
        envelope::decode(&bytes, StateKind::Checkpoint, CHECKPOINT_LAYOUT).map_err(|e| match e {
            // Another build's checkpoint: its run may have finished; nothing is damaged.
            envelope::EnvelopeError::UnsupportedVersion { .. } => JobError::Checkpoint(format!(
                "checkpoint `{}` was {e}: a run cannot continue from it; run with --fresh to start a new run (its output replaces the previous run's at its first checkpoint)",
                path.display()
            )),
            e => unusable(&e),
        })
    }

    /// Checkpoint `epoch` with whole view state: incremental state is merged with the
    /// checkpoints of the epochs before, back to one whose state is whole.
    fn whole(&self, epoch: u64) -> Result<Checkpoint, JobError> {
        let mut latest = self.read(epoch)?;
        if !latest.is_incremental() {
            return Ok(latest);
        }
        // Oldest first once reversed: the chain back to a checkpoint without incremental state.
        let mut chain = Vec::new();
        let mut at = epoch;
        loop {
            let previous = at.checked_sub(1).filter(|e| *e > 0).ok_or_else(|| {
                JobError::Checkpoint(format!(
                    "checkpoint {at} in `{}` holds incremental state but no checkpoint precedes it; to start over, run with --fresh",
                    self.dir.display()
                ))
            })?;
            let c = self.read(previous)?;
            let fits = c.run == latest.run
                && c.views.len() == latest.views.len()
                && (c.views.iter().zip(&latest.views)).all(|(a, b)| a.identity == b.identity);
            if !fits {
                return Err(JobError::Checkpoint(format!(
                    "checkpoint {previous} in `{}` does not belong to the run of checkpoint {epoch}, which continues it; to start over, run with --fresh",
                    self.dir.display()
                )));
            }
            let whole = !c.is_incremental();
            chain.push(c);
            if whole {
                break;
            }
            at = previous;
        }
        chain.reverse();
        for (i, view) in latest.views.iter_mut().enumerate() {
            if !view.incremental {
                continue;
            }
            // The newest whole state of this view, and every change after it.
            let base = (chain.iter().rposition(|c| !c.views[i].incremental))
                .expect("the chain starts with whole state");
            let changes: Vec<&[u8]> = (chain[base + 1..].iter())
                .map(|c| &c.views[i].state[..])
                .chain(std::iter::once(&view.state[..]))
                .collect();
            let merged = view_state::merge(
                &chain[base].views[i].state,
                &changes,
                view.identity.fingerprint(),
            )
            .map_err(|e| {
                JobError::Checkpoint(format!(
                    "cannot merge the window state of view `{}` from checkpoints {} to {epoch} in `{}`: {e}; to start over, run with --fresh",
                    view.identity.name,
                    chain[base].epoch,
                    self.dir.display()
                ))
            })?;
            view.state = merged;
            view.incremental = false;
        }
        Ok(latest)
    }

    /// Rewrites checkpoint `epoch` (committed, incremental) with whole view state, merged from
    /// the checkpoints before it, and then removes those: recovery reads one file again, and
    /// the directory stops growing. Runs beside the job: the file is replaced atomically by an
    /// equivalent one, so a reader or a crash sees either. Answers the new file's size, or
    /// `None` when a checkpoint with whole state after `epoch` already removed it.
    pub fn compact(&self, epoch: u64) -> Result<Option<u64>, JobError> {
        let _cleanup = self.cleanup.lock().unwrap_or_else(|p| p.into_inner());
        if !self.file(epoch).exists() {
            return Ok(None);
        }
        let whole = self.whole(epoch)?;
        let bytes = encode(&whole).map_err(|e| {
            JobError::Checkpoint(format!("cannot encode merged checkpoint {epoch}: {e}"))
        })?;
        let path = self.file(epoch);
        let tmp = path.with_extension(COMPACTING);
        write_atomically(&path, &tmp, &bytes, || {
            crate::fault::crash_point("before_compaction_rename")
        })
        .map_err(|e| {
            JobError::Checkpoint(format!(
                "cannot write merged checkpoint {epoch} in `{}`: {e}",
                self.dir.display()
            ))
        })?;
        for (older, path) in self.list()? {
            if older < epoch {
                let _ = std::fs::remove_file(path);
            }
        }
        Ok(Some(bytes.len() as u64))
    }

    /// Removes what writes and merges interrupted by a crash left (never renamed: never
    /// committed). Only at start-up: while a job runs, its writer and its merge have such
    /// files open.
    fn remove_interrupted_writes(&self) {
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if name.ends_with(WRITING) || name.ends_with(COMPACTING) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }

    /// Writes `checkpoint` durably; this is the commit point of its epoch. When its state is
    /// whole, every other checkpoint file is removed afterwards (epochs only grow, so they are
    /// all older, or a damaged one a `--fresh` run replaces); an incremental one needs those
    /// before it, which [`CheckpointDir::compact`] retires.
    pub fn write(&self, checkpoint: &Checkpoint) -> Result<Written, JobError> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            JobError::Checkpoint(format!(
                "cannot {what} checkpoint {} in `{}`: {e}",
                checkpoint.epoch,
                self.dir.display()
            ))
        };
        let bytes = encode(checkpoint).map_err(|e| fail("encode", &e))?;
        let path = self.file(checkpoint.epoch);
        let tmp = path.with_extension(WRITING);
        write_atomically(&path, &tmp, &bytes, || {
            crate::fault::crash_point("before_checkpoint_rename")
        })
        .map_err(|e| fail("write", &e))?;
        if !checkpoint.is_incremental() {
            let _cleanup = self.cleanup.lock().unwrap_or_else(|p| p.into_inner());
            for (epoch, old) in self.list()? {
                if epoch != checkpoint.epoch {
                    let _ = std::fs::remove_file(old);
                }
            }
        }
        Ok(Written {
            bytes: bytes.len() as u64,
        })
    }
}

/// Encodes a checkpoint file.
fn encode(checkpoint: &Checkpoint) -> Result<Vec<u8>, envelope::EnvelopeError> {
    let large: usize = (checkpoint.views.iter())
        .map(|v| v.state.len())
        .sum::<usize>()
        + checkpoint.reorder.ipc.len();
    envelope::encode_with_capacity(
        StateKind::Checkpoint,
        CHECKPOINT_LAYOUT,
        checkpoint,
        large + 64 * 1024,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::state::{
        CommitRecord, Counters, DeadLetterCommit, ReorderState, ViewCheckpoint, ViewIdentity,
    };
    use crate::checkpoint::view_state::KeyStates;
    use crate::watermark::WatermarkState;

    fn identity() -> ViewIdentity {
        ViewIdentity {
            name: "cards".into(),
            sql: 1,
            keys: vec!["card".into()],
            windows: vec!["count(*) 10m".into()],
            columns: vec!["n BIGINT".into()],
        }
    }

    /// Checkpoint `epoch` of run `run` whose one view holds the heads `states` and `forgotten`.
    fn checkpoint(
        epoch: u64,
        run: &str,
        incremental: bool,
        states: &[(&[u8], &[u8])],
        forgotten: &[&[u8]],
    ) -> Checkpoint {
        let state = KeyStates {
            heads: states.to_vec(),
            forgotten: forgotten.to_vec(),
            ..KeyStates::default()
        }
        .encode(identity().fingerprint())
        .unwrap();
        Checkpoint {
            epoch,
            run: run.into(),
            complete: false,
            written_unix_ms: 0,
            pipeline: "p".into(),
            source: "s".into(),
            partitions: Vec::new(),
            watermarks: WatermarkState {
                clocks: Vec::new(),
                job: i64::MIN,
            },
            reorder: ReorderState::default(),
            views: vec![ViewCheckpoint {
                identity: identity(),
                state,
                incremental,
                rows: epoch,
            }],
            counters: Counters::default(),
            commit: CommitRecord {
                root: PathBuf::from("out"),
                views: Vec::new(),
                files: Vec::new(),
                dead_letters: DeadLetterCommit {
                    path: PathBuf::from("out/dead_letter.ndjson"),
                    staged: None,
                    len_before: 0,
                    len_after: 0,
                },
                replaces_previous: false,
                tables: Vec::new(),
                store: None,
                kafka: None,
                online: None,
            },
        }
    }

    fn keys(c: &Checkpoint) -> Vec<(Vec<u8>, Vec<u8>)> {
        let view = &c.views[0];
        assert!(!view.incremental);
        let states = KeyStates::decode(&view.state, identity().fingerprint()).unwrap();
        assert!(states.forgotten.is_empty());
        (states.heads.iter())
            .map(|(k, s)| (k.to_vec(), s.to_vec()))
            .collect()
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn incremental_checkpoints_are_read_back_merged_and_compacted() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = CheckpointDir::new(tmp.path().join("ck"));
        dir.write(&checkpoint(
            4,
            "r",
            false,
            &[(b"a", b"a4"), (b"b", b"b4")],
            &[],
        ))
        .unwrap();
        dir.write(&checkpoint(5, "r", true, &[(b"c", b"c5")], &[b"a"]))
            .unwrap();
        dir.write(&checkpoint(
            6,
            "r",
            true,
            &[(b"b", b"b6"), (b"a", b"a6")],
            &[],
        ))
        .unwrap();
        // Increments keep the files before them.
        assert_eq!(files(dir.path()).len(), 3);
        let expected = vec![
            (b"a".to_vec(), b"a6".to_vec()),
            (b"b".to_vec(), b"b6".to_vec()),
            (b"c".to_vec(), b"c5".to_vec()),
        ];
        let latest = dir.latest().unwrap().unwrap();
        assert_eq!((latest.epoch, latest.views[0].rows), (6, 6));
        assert_eq!(keys(&latest), expected);
        // Merged into checkpoint 6 itself; the files before it go.
        assert!(dir.compact(6).unwrap().is_some());
        assert_eq!(files(dir.path()), vec!["checkpoint-0000000006.qvck"]);
        assert_eq!(keys(&dir.latest().unwrap().unwrap()), expected);
        // More increments chain onto the merged checkpoint; a whole one removes the rest.
        dir.write(&checkpoint(7, "r", true, &[], &[b"c"])).unwrap();
        assert_eq!(keys(&dir.latest().unwrap().unwrap()), expected[..2]);
        dir.write(&checkpoint(8, "r", false, &[(b"z", b"z8")], &[]))
            .unwrap();
        assert_eq!(files(dir.path()), vec!["checkpoint-0000000008.qvck"]);
        // A merge that comes after that finds nothing to do.
        assert_eq!(dir.compact(7).unwrap(), None);
    }

    #[test]
    fn another_builds_checkpoint_asks_for_a_new_run() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = CheckpointDir::new(tmp.path().join("ck"));
        dir.write(&checkpoint(1, "r", false, &[(b"a", b"1")], &[]))
            .unwrap();
        let mut bytes = std::fs::read(dir.file(1)).unwrap();
        let older = envelope::FORMAT_VERSION - 1;
        bytes[8..10].copy_from_slice(&older.to_le_bytes());
        std::fs::write(dir.file(1), bytes).unwrap();
        let e = dir.latest().unwrap_err().to_string();
        assert!(
            e.contains(&format!("state format version {older}"))
                && e.contains("--fresh to start a new run"),
            "{e}"
        );
    }

    #[test]
    fn a_broken_chain_is_an_error_not_a_guess() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = CheckpointDir::new(tmp.path().join("ck"));
        dir.write(&checkpoint(1, "r", false, &[(b"a", b"1")], &[]))
            .unwrap();
        dir.write(&checkpoint(2, "r", true, &[(b"a", b"2")], &[]))
            .unwrap();
        dir.write(&checkpoint(3, "r", true, &[(b"a", b"3")], &[]))
            .unwrap();
        std::fs::remove_file(dir.file(2)).unwrap();
        let e = dir.latest().unwrap_err().to_string();
        assert!(
            e.contains("checkpoint-0000000002.qvck") && e.contains("--fresh"),
            "{e}"
        );
        // Another run's checkpoint in the middle.
        dir.write(&checkpoint(2, "other", true, &[(b"a", b"2")], &[]))
            .unwrap();
        let e = dir.latest().unwrap_err().to_string();
        assert!(e.contains("does not belong to the run"), "{e}");
        // An increment with nothing before it.
        let lone = CheckpointDir::new(tmp.path().join("lone"));
        lone.write(&checkpoint(1, "r", true, &[(b"a", b"1")], &[]))
            .unwrap();
        let e = lone.latest().unwrap_err().to_string();
        assert!(e.contains("no checkpoint precedes it"), "{e}");
        // An interrupted write or merge is removed at start-up, never read.
        std::fs::write(lone.path().join("checkpoint-0000000002.qvck.tmp"), b"x").unwrap();
        std::fs::write(
            lone.path().join("checkpoint-0000000001.qvck.compacting"),
            b"x",
        )
        .unwrap();
        let _ = lone.latest();
        assert_eq!(files(lone.path()), vec!["checkpoint-0000000001.qvck"]);
    }
}
