//! An epoch's online writes: collected from the views at the barrier and applied after the
//! checkpoint commits (and again by recovery, harmlessly: the store skips an epoch it already
//! has). So the online store is never ahead of the committed checkpoint, and never behind it
//! once a run (or its recovery) got past the commit.
//!
//! What recovery applies: an ordinary checkpoint holds every view's whole window state, so a
//! crash between its commit and the online apply is repaired by writing that state as the
//! epoch's tables (replacing what they held). The last checkpoint of a finished input holds no
//! state; its writes are staged in a file before it commits instead. Staging every epoch would
//! write each changed key's state a second time per epoch (measured: about half the online
//! store's cost at 50 ms checkpoints).

use crate::checkpoint::envelope::{self, StateKind};
use crate::checkpoint::state::ViewCheckpoint;
use crate::checkpoint::view_state::KeyStates;
use crate::error::JobError;
use quiver_store::online::{is_new, EntityWrite, OnlineStamp, OnlineStore, OnlineWrite};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The online part of a checkpoint's commit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnlineCommit {
    /// The epoch.
    pub epoch: u64,
    /// The watermark the epoch's tables are stamped with.
    pub watermark: Option<i64>,
    /// Per view written: its name, its table (`view@version`) and its plan fingerprint.
    pub tables: Vec<(String, String, u64)>,
    /// The staged writes of a checkpoint without state (removed once applied).
    pub staged: Option<PathBuf>,
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

/// Applies committed epoch `commit` of run `run` to `store`: `writes` when the caller still
/// has them (the run that made them), else the staged file, else (recovery of an ordinary
/// checkpoint) the whole state in `views`, the checkpoint's.
pub fn apply(
    commit: &OnlineCommit,
    run: &str,
    store: Option<&dyn OnlineStore>,
    writes: Option<&[OnlineWrite]>,
    views: Option<&[ViewCheckpoint]>,
) -> Result<(), JobError> {
    let pending = commit.staged.as_ref().is_some_and(|s| s.exists());
    let store = match store {
        Some(store) => store,
        // Staged writes would be lost with their file: they are owed to the store.
        None if pending => {
            return Err(JobError::Checkpoint(format!(
                "epoch {} of the last run still has to be written to the online store: run it again with `quiver run` (with the online store enabled) before anything else",
                commit.epoch
            )))
        }
        // Without staged writes nothing is lost: a later run with the store enabled replaces
        // its tables at its first epoch.
        None => return Ok(()),
    };
    let fail = |e: &dyn std::fmt::Display| {
        JobError::Checkpoint(format!(
            "cannot apply epoch {} to the online store `{}`: {e}",
            commit.epoch,
            store.describe()
        ))
    };
    if let Some(writes) = writes {
        // An ordinary checkpoint holds the state to rebuild the epoch from (above), so the
        // store may sync it later; the last one's writes (staged) are synced now.
        match commit.staged {
            None => store.apply_recoverable(writes),
            Some(_) => store.apply(writes),
        }
        .map_err(|e| fail(&e))?;
    } else if let Some(staged) = &commit.staged {
        if !staged.exists() {
            return Ok(()); // removed only after the store took the epoch
        }
        let bytes = std::fs::read(staged).map_err(|e| fail(&e))?;
        let writes: Vec<OnlineWrite> =
            envelope::decode(&bytes, StateKind::OnlineWrites, 0).map_err(|e| fail(&e))?;
        store.apply(&writes).map_err(|e| fail(&e))?;
    } else {
        let stamps = store.tables().map_err(|e| fail(&e))?;
        let behind = commit.tables.iter().any(|(_, table, _)| {
            let current = stamps.iter().find(|(t, _)| t == table).map(|(_, s)| s);
            is_new(current, &commit.stamp(run, 0))
        });
        if behind {
            let views = views.ok_or_else(|| fail(&"the checkpoint's window state is needed"))?;
            let writes = from_state(commit, run, views).map_err(|e| fail(&e))?;
            store.apply(&writes).map_err(|e| fail(&e))?;
        }
    }
    crate::fault::crash_point("after_online_apply");
    if let Some(staged) = commit.staged.as_ref().filter(|s| s.exists()) {
        std::fs::remove_file(staged).map_err(|e| fail(&e))?;
    }
    Ok(())
}

impl OnlineCommit {
    /// The stamp of this epoch's tables for run `run` and a plan `fingerprint` (the store sets
    /// the commit time and the key count).
    pub fn stamp(&self, run: &str, fingerprint: u64) -> OnlineStamp {
        OnlineStamp {
            run: run.to_string(),
            epoch: self.epoch,
            watermark: self.watermark,
            committed_unix_ms: 0,
            fingerprint,
            keys: 0,
        }
    }
}

/// Writes replacing each of `commit`'s tables with the whole window state of its view in
/// `views` (a checkpoint's).
fn from_state(
    commit: &OnlineCommit,
    run: &str,
    views: &[ViewCheckpoint],
) -> Result<Vec<OnlineWrite>, String> {
    let mut writes = Vec::with_capacity(commit.tables.len());
    for (view, table, fingerprint) in &commit.tables {
        let state = views
            .iter()
            .find(|v| v.identity.name == *view)
            .ok_or_else(|| format!("the checkpoint has no state of view `{view}`"))?;
        // Whole state (recovery merges incremental checkpoints first), each key's state
        // encoded as the online store keeps it.
        let states = KeyStates::decode(&state.state, *fingerprint)
            .map_err(|e| format!("view `{view}`: {e}"))?;
        if state.incremental {
            return Err(format!(
                "view `{view}`: the checkpoint's state is incremental"
            ));
        }
        let puts: Vec<EntityWrite> = (states.keys().map_err(|e| format!("view `{view}`: {e}"))?)
            .into_iter()
            .map(|k| EntityWrite {
                key: k.key.to_vec(),
                head: k.head.to_vec(),
                deletes: Vec::new(),
                segments: (k.segments.iter())
                    .map(|(id, s)| (*id, s.to_vec()))
                    .collect(),
            })
            .collect();
        writes.push(OnlineWrite {
            table: table.clone(),
            replace: true,
            stamp: commit.stamp(run, *fingerprint),
            deletes: Vec::new(),
            keys_after: Some(puts.len() as u64),
            puts,
        });
    }
    Ok(writes)
}
