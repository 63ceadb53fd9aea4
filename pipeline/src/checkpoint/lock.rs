//! One job per checkpoint directory: an exclusive advisory lock (`flock`) on `<dir>/LOCK`, held
//! while the job runs and released by the operating system when the process ends, however it
//! ends. Two jobs sharing checkpoints would overwrite each other's epochs and commit the same
//! events twice.

use crate::error::JobError;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// The lock of a checkpoint directory, held until dropped.
#[derive(Debug)]
pub struct JobLock {
    _file: File,
}

impl JobLock {
    /// Takes the lock of `dir` (created if missing), or says which process holds it.
    pub fn acquire(dir: &Path) -> Result<Self, JobError> {
        match Self::try_acquire(dir)? {
            Ok(lock) => Ok(lock),
            Err(by) => Err(JobError::Checkpoint(format!(
                "another quiver job{by} is running with the checkpoints in `{}`: stop it, or give this one its own --output (or run it with --standby to take over when it stops)",
                dir.display()
            ))),
        }
    }

    /// Waits until no other job holds the lock of `dir`, then takes it: a standby instance
    /// that takes over from the last checkpoint as soon as the active one stops or dies (the
    /// operating system releases a dead process's lock at once). Says once on stderr that it
    /// stands by. `None` when `stop` completes first.
    pub async fn wait(
        dir: &Path,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<Option<Self>, JobError> {
        tokio::pin!(stop);
        let mut told = false;
        loop {
            match Self::try_acquire(dir)? {
                Ok(lock) => {
                    if told {
                        eprintln!(
                            "taking over: the other job stopped; resuming from its last checkpoint"
                        );
                    }
                    return Ok(Some(lock));
                }
                Err(by) if !told => {
                    eprintln!(
                        "standing by: another quiver job{by} runs with the checkpoints in `{}`; this one takes over when it stops",
                        dir.display()
                    );
                    told = true;
                }
                Err(_) => {}
            }
            tokio::select! {
                _ = &mut stop => return Ok(None),
                _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
            }
        }
    }

    /// Takes the lock of `dir` if no other process holds it; else who holds it (` (process
    /// N)`, or nothing when unknown).
    pub fn try_acquire(dir: &Path) -> Result<Result<Self, String>, JobError> {
        let fail = |what: &str, e: std::io::Error| {
            JobError::Checkpoint(format!("cannot {what} `{}`: {e}", dir.display()))
        };
        std::fs::create_dir_all(dir).map_err(|e| fail("create", e))?;
        let path = dir.join("LOCK");
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| fail("open the lock in", e))?;
        if !try_lock(&file).map_err(|e| fail("lock", e))? {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let by = if holder.is_empty() {
                String::new()
            } else {
                format!(" (process {holder})")
            };
            return Ok(Err(by));
        }
        let _ = file.set_len(0);
        let _ = file.seek(SeekFrom::Start(0));
        let _ = write!(file, "{}", std::process::id());
        Ok(Ok(JobLock { _file: file }))
    }
}

/// A lock taken before a run starts (a standby that waited for it), handed to the run.
#[derive(Debug, Clone, Default)]
pub struct HeldLock(std::sync::Arc<std::sync::Mutex<Option<JobLock>>>);

impl HeldLock {
    /// Holds `lock` for a run.
    pub fn new(lock: JobLock) -> Self {
        HeldLock(std::sync::Arc::new(std::sync::Mutex::new(Some(lock))))
    }

    /// The lock, once.
    pub fn take(&self) -> Option<JobLock> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// An exclusive, non-blocking `flock`: `Ok(false)` when another process holds it.
#[cfg(unix)]
fn try_lock(file: &File) -> std::io::Result<bool> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a descriptor this function borrows; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.kind() == std::io::ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(e)
    }
}

#[cfg(not(unix))]
fn try_lock(_file: &File) -> std::io::Result<bool> {
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_of_one_directory_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = JobLock::acquire(dir.path()).unwrap();
        let e = JobLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(e.contains("another quiver job"), "{e}");
        assert!(e.contains(&std::process::id().to_string()), "{e}");
        drop(first);
        JobLock::acquire(dir.path()).unwrap();
    }

    #[tokio::test]
    async fn a_standby_takes_the_lock_when_it_is_released_or_stops_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let first = JobLock::acquire(dir.path()).unwrap();
        let stopped = JobLock::wait(dir.path(), async {}).await.unwrap();
        assert!(stopped.is_none(), "a stop while standing by gives up");
        let path = dir.path().to_path_buf();
        let waiting =
            tokio::spawn(
                async move { JobLock::wait(&path, std::future::pending()).await.unwrap() },
            );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!waiting.is_finished(), "it waits while the lock is held");
        drop(first);
        let taken = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("taken over once released")
            .unwrap();
        assert!(taken.is_some());
    }
}
