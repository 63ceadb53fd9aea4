//! The chain of incremental checkpoints: recovery reads back from the latest checkpoint to
//! the last one with whole state, so once the increments outweigh that whole state (or grow
//! too many) the latest durable checkpoint is rewritten with merged, whole state, beside the
//! job ([`CheckpointDir::compact`]), and the checkpoints before it are removed. A merge runs
//! on a thread of its own at a lower CPU priority: on a busy machine it waits for the job's
//! own work (measured: merges were in most of the longest waits between commits at 25 ms
//! checkpoints on 2 cores).

use super::dir::CheckpointDir;
use crate::error::JobError;
use tokio::sync::oneshot;

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
    /// A merge running on its thread: the epoch it rewrites and the new file's size (`None`:
    /// a whole checkpoint came first).
    merging: Option<oneshot::Receiver<Result<Merged, JobError>>>,
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
            let (done, merged) = oneshot::channel();
            std::thread::Builder::new()
                .name("checkpoint-merge".into())
                .spawn(move || {
                    lower_priority();
                    let _ = done.send(dir.compact(epoch).map(|bytes| (epoch, bytes)));
                })
                .map_err(|e| {
                    JobError::Checkpoint(format!("cannot start merging checkpoints: {e}"))
                })?;
            self.merging = Some(merged);
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
        let Some(mut merging) = self.merging.take() else {
            return Ok(());
        };
        let merged = match wait {
            true => merging.await.map_err(|_| ()),
            false => match merging.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => {
                    self.merging = Some(merging);
                    return Ok(());
                }
                Ok(merged) => Ok(merged),
                Err(oneshot::error::TryRecvError::Closed) => Err(()),
            },
        };
        let (epoch, bytes) = merged.map_err(|_| {
            JobError::Checkpoint("merging incremental checkpoints stopped".into())
        })??;
        if let Some(bytes) = bytes {
            self.whole_bytes = bytes;
            self.increments.retain(|(e, _)| *e > epoch);
            self.merges += 1;
        }
        Ok(())
    }
}

/// Lowers the calling thread's CPU priority (nice +10; Linux gives each thread its own). A
/// failure only leaves it where it was.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread's id, no memory shared.
    unsafe {
        let thread = libc::gettid() as libc::id_t;
        let now = libc::getpriority(libc::PRIO_PROCESS, thread);
        libc::setpriority(libc::PRIO_PROCESS, thread, (now + 10).min(19));
    }
}
