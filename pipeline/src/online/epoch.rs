//! An epoch's online writes: collected from the views at the barrier, staged in a file before
//! the checkpoint commits, applied after it (and again by recovery, harmlessly: the store
//! skips an epoch it already has). So the online store is never ahead of the committed
//! checkpoint, and never behind it once a run (or its recovery) got past the commit.

use crate::checkpoint::envelope::{self, StateKind};
use crate::error::JobError;
use quiver_store::online::{OnlineStore, OnlineWrite};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The online part of a checkpoint's commit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnlineCommit {
    /// The epoch.
    pub epoch: u64,
    /// The staged writes (removed once applied).
    pub staged: PathBuf,
}

/// The staged file of epoch `epoch` under `staging`.
pub fn staged_path(staging: &Path, epoch: u64) -> PathBuf {
    staging.join(format!("online-{epoch:06}.bin"))
}

/// Writes the epoch's `writes` durably to `path` (before the checkpoint that refers to it).
pub fn stage(path: &Path, writes: &[OnlineWrite]) -> Result<(), JobError> {
    let bytes = envelope::encode(StateKind::OnlineWrites, 0, &writes).map_err(|e| {
        JobError::Checkpoint(format!("cannot encode the epoch's online writes: {e}"))
    })?;
    let tmp = path.with_extension("bin.tmp");
    quiver_store::write_atomically(path, &tmp, &bytes, || {})?;
    Ok(())
}

/// Applies a committed epoch's staged writes to `store` and removes the staged file. Nothing
/// to do when the file is gone: it is removed only after the store took the epoch. `staged`
/// are the writes themselves when the caller still has them (the run that staged them), so the
/// file is only read back by recovery.
pub fn apply(
    commit: &OnlineCommit,
    store: Option<&dyn OnlineStore>,
    staged: Option<&[OnlineWrite]>,
) -> Result<(), JobError> {
    if !commit.staged.exists() {
        return Ok(());
    }
    let store = store.ok_or_else(|| {
        JobError::Checkpoint(format!(
            "epoch {} of the last run still has to be written to the online store: run it again with `quiver run` (with the online store enabled) before anything else",
            commit.epoch
        ))
    })?;
    let fail = |e: &dyn std::fmt::Display| {
        JobError::Checkpoint(format!(
            "cannot apply epoch {} to the online store `{}`: {e}",
            commit.epoch,
            store.describe()
        ))
    };
    match staged {
        Some(writes) => store.apply(writes).map_err(|e| fail(&e))?,
        None => {
            let bytes = std::fs::read(&commit.staged).map_err(|e| fail(&e))?;
            let writes: Vec<OnlineWrite> =
                envelope::decode(&bytes, StateKind::OnlineWrites, 0).map_err(|e| fail(&e))?;
            store.apply(&writes).map_err(|e| fail(&e))?
        }
    };
    crate::fault::crash_point("after_online_apply");
    std::fs::remove_file(&commit.staged).map_err(|e| fail(&e))?;
    Ok(())
}
