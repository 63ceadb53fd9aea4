//! The sink contract of the runtime: rows go in during an epoch, become durable under staging
//! names at the epoch's barrier, and become visible only once the epoch's checkpoint commits.
//!
//! Publishing is driven by data ([`StagedFile`] lists stored in the checkpoint), not by the
//! sink object, so that recovery after a crash can finish the publication of the last
//! committed epoch without the sink that staged it.

use crate::error::StoreError;
use crate::location::StoreDir;
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A file written and synced under a staging name for one epoch, and the name it takes when
/// that epoch commits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedFile {
    /// Where the file was written.
    pub staged: PathBuf,
    /// Where readers find it once the epoch is committed.
    pub committed: PathBuf,
}

/// Where feature rows (and later Delta tables, the online store, Kafka topics) go.
///
/// Only [`Sink::write`] and [`Sink::prepare_commit`] are required; the other hooks default to
/// what a file sink needs.
pub trait Sink: Send {
    /// Buffers or writes rows of the current epoch (never visible to readers yet).
    fn write(&mut self, batch: &RecordBatch) -> Result<(), StoreError>;

    /// Makes every row written since the previous call durable under staging names, as epoch
    /// `epoch`, and returns the files to publish when the epoch's checkpoint commits.
    fn prepare_commit(&mut self, epoch: u64) -> Result<Vec<StagedFile>, StoreError>;

    /// Publishes the files of a committed epoch (idempotent: recovery calls it again).
    fn commit(&mut self, files: &[StagedFile]) -> Result<(), StoreError> {
        publish(files)
    }

    /// Rows written so far (committed or not).
    fn rows(&self) -> u64;
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The error for a file of a committed epoch that is neither staged nor published.
fn lost(file: &StagedFile, committed: &dyn std::fmt::Display) -> StoreError {
    StoreError::Io {
        path: file.staged.clone(),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "a file of a committed checkpoint is missing (neither staged nor at `{committed}`); \
                 the staging directory was changed by hand: start over with --fresh"
            ),
        ),
    }
}

/// Renames each staged file to its committed name. A file already published is skipped, so
/// publishing twice (a crash during publication, then recovery) is harmless; a file that is
/// neither staged nor published means the staging area was tampered with, and is an error.
pub fn publish(files: &[StagedFile]) -> Result<(), StoreError> {
    for file in files {
        if file.staged.exists() {
            if let Some(dir) = file.committed.parent() {
                std::fs::create_dir_all(dir).map_err(io(dir))?;
            }
            std::fs::rename(&file.staged, &file.committed).map_err(io(&file.committed))?;
        } else if !file.committed.exists() {
            return Err(lost(file, &file.committed.display()));
        }
    }
    if let Some(dir) = files.first().and_then(|f| f.committed.parent()) {
        sync_dir(dir)?;
    }
    Ok(())
}

/// [`publish`] into the store `store`, whose files' committed names are relative to it: each
/// staged file is uploaded (an object store) or moved (a local one), then its staged copy goes;
/// idempotent in the same way.
pub fn publish_into(store: &StoreDir, files: &[StagedFile]) -> Result<(), StoreError> {
    for file in files {
        let name = file.committed.to_string_lossy();
        if file.staged.exists() {
            store.put_file(&file.staged, &name)?;
        } else if store.size(&name)?.is_none() {
            return Err(lost(file, &store.join(&name)));
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` durably and atomically: into `tmp` (same directory), synced,
/// renamed over `path`, then the directory synced, so readers and a crash see the old content
/// or the new, never part of it. `before_rename` runs between the sync and the rename (the
/// crash tests' fault point).
pub fn write_atomically(
    path: &Path,
    tmp: &Path,
    bytes: &[u8],
    before_rename: impl FnOnce(),
) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    write_synced(tmp, bytes)?;
    before_rename();
    std::fs::rename(tmp, path).map_err(io(path))?;
    sync_dir(dir)
}

/// Writes `bytes` to the new file `tmp` (creating its directory) and syncs it: the first half
/// of an atomic replace or create, whose second half gives it its name.
pub(crate) fn write_synced(tmp: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = tmp.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut file = std::fs::File::create(tmp).map_err(io(tmp))?;
    crate::paced_write::write_paced(&mut file, bytes)
        .and_then(|()| file.sync_all())
        .map_err(io(tmp))
}

/// Flushes a directory entry change (a rename or a new file) to disk.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    match std::fs::File::open(dir) {
        Ok(d) => d.sync_all().map_err(io(dir)),
        // Some platforms cannot open directories; the rename itself is still atomic there.
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_is_idempotent_and_detects_lost_files() {
        let dir = tempfile::tempdir().unwrap();
        let staged = dir.path().join("staging/a.parquet");
        std::fs::create_dir_all(staged.parent().unwrap()).unwrap();
        std::fs::write(&staged, b"x").unwrap();
        let file = StagedFile {
            staged: staged.clone(),
            committed: dir.path().join("view/a.parquet"),
        };
        publish(std::slice::from_ref(&file)).unwrap();
        assert!(!staged.exists());
        assert_eq!(std::fs::read(&file.committed).unwrap(), b"x");
        publish(std::slice::from_ref(&file)).unwrap();
        std::fs::remove_file(&file.committed).unwrap();
        let err = publish(&[file]).unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");
    }
}
