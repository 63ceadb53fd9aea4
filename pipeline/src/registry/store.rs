//! The registry on disk: view versions, the `latest` pointer of each view, and where each
//! version's feature rows live.
//!
//! ```text
//! <store>/registry/<view>/versions/<version>.json   a version's definition
//! <store>/registry/<view>/latest                    the version readers get for `<view>`
//! <store>/offline/<view>/<version>/*.parquet        that version's feature rows
//! <store>/_staging/                                 an apply in progress (removed when it ends)
//! ```
//! Pointers and definitions are written to a temporary file, synced and renamed, so a reader
//! or a crash sees the old state or the new one, never half of one.

use crate::error::JobError;
use crate::registry::definition::ViewDefinition;
use std::path::{Path, PathBuf};

/// A store's registry.
#[derive(Debug, Clone)]
pub struct Registry {
    root: PathBuf,
}

fn io<'a>(path: &'a Path, what: &str) -> impl Fn(std::io::Error) -> JobError + 'a {
    let what = what.to_string();
    move |e| JobError::Other(format!("{what} `{}`: {e}", path.display()))
}

/// Writes `bytes` to `path` through a synced temporary file and a rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), JobError> {
    quiver_store::write_atomically(path, &path.with_extension("tmp"), bytes, || {})
        .map_err(|e| JobError::Other(e.to_string()))
}

/// A view name safe as one path segment.
fn check_name(view: &str) -> Result<(), JobError> {
    if view.is_empty()
        || view.starts_with('.')
        || !view
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(JobError::Other(format!(
            "`{view}` is not a view name the store can hold: use letters, digits, `_`, `-`, `.`"
        )));
    }
    Ok(())
}

impl Registry {
    /// The registry of the store at `root` (created on first write).
    pub fn open(root: impl Into<PathBuf>) -> Self {
        Registry { root: root.into() }
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn view_dir(&self, view: &str) -> PathBuf {
        self.root.join("registry").join(view)
    }

    /// Where the feature rows of `view@version` live.
    pub fn data_dir(&self, view: &str, version: &str) -> PathBuf {
        self.root.join("offline").join(view).join(version)
    }

    /// Where an event log (see [`ViewDefinition::events`]) lives, from its store-relative name.
    pub fn events_dir(&self, events: &str) -> PathBuf {
        self.root.join("events").join(events)
    }

    /// Scratch space for an apply in progress.
    pub fn staging_dir(&self) -> PathBuf {
        self.root.join("_staging")
    }

    /// Registered views, by name (removed ones included while versions remain).
    pub fn views(&self) -> Result<Vec<String>, JobError> {
        let dir = self.root.join("registry");
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut views: Vec<String> = std::fs::read_dir(&dir)
            .map_err(io(&dir, "cannot list"))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        views.sort();
        Ok(views)
    }

    /// The version `view` resolves to, `None` when it has none (never applied, or removed).
    pub fn latest(&self, view: &str) -> Result<Option<String>, JobError> {
        let path = self.view_dir(view).join("latest");
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text.trim().to_string()).filter(|v| !v.is_empty())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path, "cannot read")(e)),
        }
    }

    /// Every registered version of `view`, oldest first.
    pub fn versions(&self, view: &str) -> Result<Vec<ViewDefinition>, JobError> {
        let dir = self.view_dir(view).join("versions");
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut versions = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io(&dir, "cannot list"))? {
            let path = entry.map_err(io(&dir, "cannot list"))?.path();
            if path.extension().is_some_and(|e| e == "json") {
                versions.push(Self::read_definition(&path)?);
            }
        }
        versions.sort_by(|a, b| a.created.cmp(&b.created).then(a.version.cmp(&b.version)));
        Ok(versions)
    }

    fn read_definition(path: &Path) -> Result<ViewDefinition, JobError> {
        let text = std::fs::read_to_string(path).map_err(io(path, "cannot read"))?;
        serde_json::from_str(&text).map_err(|e| {
            JobError::Other(format!(
                "`{}` is not a view definition: {e}",
                path.display()
            ))
        })
    }

    /// The definition of `view@version` (`version` `None`: the latest).
    pub fn definition(
        &self,
        view: &str,
        version: Option<&str>,
    ) -> Result<ViewDefinition, JobError> {
        check_name(view)?;
        let version = match version {
            Some(v) => v.to_string(),
            None => self.latest(view)?.ok_or_else(|| {
                JobError::Other(format!(
                    "view `{view}` has no version in the store `{}` (run `quiver apply` first)",
                    self.root.display()
                ))
            })?,
        };
        let path = self
            .view_dir(view)
            .join("versions")
            .join(format!("{version}.json"));
        if !path.exists() {
            let known: Vec<String> = self
                .versions(view)?
                .into_iter()
                .map(|d| d.version)
                .collect();
            return Err(JobError::Other(format!(
                "view `{view}` has no version `{version}` (versions: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
        Self::read_definition(&path)
    }

    /// Records `definition` as a version of its view (its data must already be in place).
    pub fn register(&self, definition: &ViewDefinition) -> Result<(), JobError> {
        check_name(&definition.view)?;
        let path = self
            .view_dir(&definition.view)
            .join("versions")
            .join(format!("{}.json", definition.version));
        let json = serde_json::to_vec_pretty(definition)
            .map_err(|e| JobError::Other(format!("cannot encode a view definition: {e}")))?;
        write_atomically(&path, &json)
    }

    /// Points `view` at `version` (atomically).
    pub fn set_latest(&self, view: &str, version: &str) -> Result<(), JobError> {
        check_name(view)?;
        write_atomically(&self.view_dir(view).join("latest"), version.as_bytes())
    }

    /// Removes `view` from what readers get: its `latest` pointer goes; its versions and data
    /// stay readable as `view@version` until deleted.
    pub fn remove(&self, view: &str) -> Result<(), JobError> {
        check_name(view)?;
        let path = self.view_dir(view).join("latest");
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(JobError::Other(format!(
                "view `{view}` has no latest version in `{}`",
                self.root.display()
            ))),
            Err(e) => Err(io(&path, "cannot remove")(e)),
        }
    }
}
