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
            return Err(JobError::Checkpoint(format!(
                "another quiver job{by} is running with the checkpoints in `{}`: stop it, or give this one its own --output",
                dir.display()
            )));
        }
        let _ = file.set_len(0);
        let _ = file.seek(SeekFrom::Start(0));
        let _ = write!(file, "{}", std::process::id());
        Ok(JobLock { _file: file })
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
}
