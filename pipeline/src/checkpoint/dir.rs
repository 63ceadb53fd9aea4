//! The checkpoint directory: checkpoints written atomically (temporary file, sync, rename,
//! directory sync) and read back with clear errors.

use super::envelope::{self, StateKind};
use super::state::Checkpoint;
use crate::error::JobError;
use quiver_store::write_atomically;
use std::path::{Path, PathBuf};

/// Fingerprint of the checkpoint envelope: checkpoints of any pipeline share one layout; what
/// they belong to is checked field by field (pipeline, source, views) for clear messages.
const CHECKPOINT_LAYOUT: u64 = 1;

/// Where a job's checkpoints live.
#[derive(Debug, Clone)]
pub struct CheckpointDir {
    dir: PathBuf,
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
        CheckpointDir { dir }
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
            } else if name.ends_with(".tmp") {
                // An interrupted write: never renamed, so never committed.
                let _ = std::fs::remove_file(&path);
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

    /// The latest committed checkpoint, if any. A damaged one is an error that says how to
    /// start over, never a silent fallback (its epoch may already be published).
    pub fn latest(&self) -> Result<Option<Checkpoint>, JobError> {
        let Some((_, path)) = self.list()?.pop() else {
            return Ok(None);
        };
        let bytes = std::fs::read(&path).map_err(|e| {
            JobError::Checkpoint(format!("cannot read checkpoint `{}`: {e}", path.display()))
        })?;
        envelope::decode(&bytes, StateKind::Checkpoint, CHECKPOINT_LAYOUT)
            .map(Some)
            .map_err(|e| {
                JobError::Checkpoint(format!(
                    "checkpoint `{}` cannot be used: {e}; to start over, run with --fresh (the output of the interrupted run will be replaced)",
                    path.display()
                ))
            })
    }

    /// Writes `checkpoint` durably; this is the commit point of its epoch. Every other
    /// checkpoint file is removed afterwards (epochs only grow, so they are all older, or a
    /// damaged one a `--fresh` run replaces).
    pub fn write(&self, checkpoint: &Checkpoint) -> Result<Written, JobError> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            JobError::Checkpoint(format!(
                "cannot {what} checkpoint {} in `{}`: {e}",
                checkpoint.epoch,
                self.dir.display()
            ))
        };
        let large: usize = checkpoint
            .views
            .iter()
            .map(|v| v.state.len())
            .sum::<usize>()
            + checkpoint.reorder.ipc.len();
        let bytes = envelope::encode_with_capacity(
            StateKind::Checkpoint,
            CHECKPOINT_LAYOUT,
            checkpoint,
            large + 64 * 1024,
        )
        .map_err(|e| fail("encode", &e))?;
        let path = self.file(checkpoint.epoch);
        let tmp = path.with_extension("qvck.tmp");
        write_atomically(&path, &tmp, &bytes, || {
            crate::fault::crash_point("before_checkpoint_rename")
        })
        .map_err(|e| fail("write", &e))?;
        for (epoch, old) in self.list()? {
            if epoch != checkpoint.epoch {
                let _ = std::fs::remove_file(old);
            }
        }
        Ok(Written {
            bytes: bytes.len() as u64,
        })
    }
}
