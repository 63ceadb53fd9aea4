//! The chain of incremental checkpoints: recovery reads back from the latest checkpoint to
//! the last one with whole state, so once the increments outweigh that whole state (or grow
//! too many) the latest durable checkpoint is rewritten with merged, whole state, beside the
//! job ([`CheckpointDir::compact`]), and the checkpoints before it are removed.

use super::dir::CheckpointDir;
use crate::error::JobError;
use tokio::task::JoinHandle;

/// Increments are merged once they hold more bytes than this, even if the whole state is
/// smaller (merging a few small files again and again is wasted work).
const MIN_MERGE_BYTES: u64 = 1 << 20;

/// What a merge answers: the epoch it rewrote and the new file's size (`None`: nothing to do).
type Merged = (u64, Option<u64>);

/// What the chain of the job's checkpoints looks like, and the merge in progress.
pub struct CheckpointChain {
    dir: CheckpointDir,
    /// Increments are merged once there are this many of them, whatever their size
    /// (recovery reads each): `checkpoint.max_increments`.
    max_increments: usize,
    /// Bytes of the newest checkpoint with whole state.
    whole_bytes: u64,
    /// The incremental checkpoints after it: epoch and bytes.
    increments: Vec<(u64, u64)>,
    /// A merge running on a blocking thread: the epoch it rewrites and the new file's size
    /// (`None`: a whole checkpoint came first).
    merging: Option<JoinHandle<Result<Merged, JobError>>>,
    /// Merges finished by this process.
    pub merges: u64,
}

impl CheckpointChain {
    /// The chain of checkpoints in `dir`, merged after `max_increments` increments at most
    /// (0: no increments); the job's first checkpoint starts it with whole state.
    pub fn new(dir: CheckpointDir, max_increments: usize) -> Self {
        CheckpointChain {
            dir,
            max_increments,
            whole_bytes: 0,
            increments: Vec::new(),
            merging: None,
            merges: 0,
        }
    }

    /// Checkpoint `epoch` of `bytes` became durable; starts a merge when it is due.
    pub async fn durable(
        &mut self,
        epoch: u64,
        bytes: u64,
        incremental: bool,
    ) -> Result<(), JobError> {
        self.finish(false).await?;
        if !incremental {
            self.whole_bytes = bytes;
            self.increments.clear();
            return Ok(());
        }
        self.increments.push((epoch, bytes));
        let behind: u64 = self.increments.iter().map(|(_, b)| b).sum();
        let due = behind > self.whole_bytes.max(MIN_MERGE_BYTES)
            || self.increments.len() >= self.max_increments;
        if due && self.merging.is_none() {
            let dir = self.dir.clone();
            self.merging = Some(tokio::task::spawn_blocking(move || {
                dir.compact(epoch).map(|bytes| (epoch, bytes))
            }));
        }
        Ok(())
    }

    /// Whether checkpoints may hold incremental state.
    pub fn incremental(&self) -> bool {
        self.max_increments > 0
    }

    /// Takes the result of a merge that finished, or waits for the one running (`wait`: at the
    /// end of the run).
    pub async fn finish(&mut self, wait: bool) -> Result<(), JobError> {
        let Some(merging) = self.merging.take_if(|m| wait || m.is_finished()) else {
            return Ok(());
        };
        let (epoch, bytes) = merging.await.map_err(|e| {
            JobError::Checkpoint(format!("merging incremental checkpoints stopped: {e}"))
        })??;
        if let Some(bytes) = bytes {
            self.whole_bytes = bytes;
            self.increments.retain(|(e, _)| *e > epoch);
            self.merges += 1;
        }
        Ok(())
    }
}
