//! The registry in the store: view versions, the `latest` pointer of each view, and where each
//! version's feature rows live.
//!
//! ```text
//! <store>/registry/<view>/versions/<version>.json   a version's definition
//! <store>/registry/<view>/latest                    the version readers get for `<view>`
//! <store>/offline/<view>/<version>/                 that version's feature rows (a Delta table)
//! <store>/events/<stream>/<id>/                     an apply's event log (a Delta table)
//! ```
//! The store is a local directory or an object-store prefix ([`StoreDir`]). Pointers and
//! definitions are replaced atomically (a synced temporary file and a rename, or one PUT), so
//! a reader or a crash sees the old state or the new one, never half of one.

use crate::error::JobError;
use crate::registry::definition::ViewDefinition;
use quiver_store::StoreDir;

/// A store's registry.
#[derive(Debug, Clone)]
pub struct Registry {
    root: StoreDir,
}

fn store_error(e: quiver_store::StoreError) -> JobError {
    JobError::Other(e.to_string())
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
    pub fn open(root: StoreDir) -> Self {
        Registry { root }
    }

    /// The registry of the store at `location` (a local directory or an `s3://` URL, see
    /// [`StoreDir::parse`] for `options`).
    pub fn at(
        location: &std::path::Path,
        options: &std::collections::BTreeMap<String, String>,
    ) -> Result<Self, JobError> {
        let root = match location.to_str() {
            Some(text) => StoreDir::parse(text, options).map_err(store_error)?,
            None => StoreDir::local(location),
        };
        Ok(Self::open(root))
    }

    /// The store's root directory.
    pub fn root(&self) -> &StoreDir {
        &self.root
    }

    fn view_dir(&self, view: &str) -> StoreDir {
        self.root.join("registry").join(view)
    }

    /// Where the feature rows of `view@version` live.
    pub fn data_dir(&self, view: &str, version: &str) -> StoreDir {
        self.root.join(&Self::data_path(view, version))
    }

    /// [`Registry::data_dir`] as a `/`-separated path in the store.
    pub fn data_path(view: &str, version: &str) -> String {
        format!("offline/{view}/{version}")
    }

    /// Where an event log (see [`ViewDefinition::events`]) lives, from its store-relative name.
    pub fn events_dir(&self, events: &str) -> StoreDir {
        self.root.join(&Self::events_path(events))
    }

    /// [`Registry::events_dir`] as a `/`-separated path in the store.
    pub fn events_path(events: &str) -> String {
        format!("events/{events}")
    }

    /// Registered views, by name (removed ones included while versions remain).
    pub fn views(&self) -> Result<Vec<String>, JobError> {
        Ok(self
            .root
            .join("registry")
            .list()
            .map_err(store_error)?
            .into_iter()
            .filter(|e| e.is_dir)
            .map(|e| e.name)
            .collect())
    }

    /// The version `view` resolves to, `None` when it has none (never applied, or removed).
    pub fn latest(&self, view: &str) -> Result<Option<String>, JobError> {
        let text = self.view_dir(view).read("latest").map_err(store_error)?;
        Ok(text
            .map(|t| String::from_utf8_lossy(&t).trim().to_string())
            .filter(|v| !v.is_empty()))
    }

    /// Every registered version of `view`, oldest first.
    pub fn versions(&self, view: &str) -> Result<Vec<ViewDefinition>, JobError> {
        let dir = self.view_dir(view).join("versions");
        let mut versions = Vec::new();
        for entry in dir.list().map_err(store_error)? {
            if !entry.is_dir && entry.name.ends_with(".json") {
                if let Some(definition) = Self::read_definition(&dir, &entry.name)? {
                    versions.push(definition);
                }
            }
        }
        versions.sort_by(|a, b| a.created.cmp(&b.created).then(a.version.cmp(&b.version)));
        Ok(versions)
    }

    /// The definition in the file `name` of `dir`, `None` when there is none.
    fn read_definition(dir: &StoreDir, name: &str) -> Result<Option<ViewDefinition>, JobError> {
        let Some(bytes) = dir.read(name).map_err(store_error)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            JobError::Other(format!(
                "`{}` is not a view definition: {e}",
                dir.join(name)
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
                    self.root
                ))
            })?,
        };
        let dir = self.view_dir(view).join("versions");
        match Self::read_definition(&dir, &format!("{version}.json"))? {
            Some(definition) => Ok(definition),
            None => {
                let known: Vec<String> = self
                    .versions(view)?
                    .into_iter()
                    .map(|d| d.version)
                    .collect();
                Err(JobError::Other(format!(
                    "view `{view}` has no version `{version}` (versions: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )))
            }
        }
    }

    /// Records `definition` as a version of its view (its data must already be in place).
    pub fn register(&self, definition: &ViewDefinition) -> Result<(), JobError> {
        check_name(&definition.view)?;
        let json = serde_json::to_vec_pretty(definition)
            .map_err(|e| JobError::Other(format!("cannot encode a view definition: {e}")))?;
        self.view_dir(&definition.view)
            .join("versions")
            .write(&format!("{}.json", definition.version), &json)
            .map_err(store_error)
    }

    /// Points `view` at `version` (atomically).
    pub fn set_latest(&self, view: &str, version: &str) -> Result<(), JobError> {
        check_name(view)?;
        self.view_dir(view)
            .write("latest", version.as_bytes())
            .map_err(store_error)
    }

    /// Removes `view` from what readers get: its `latest` pointer goes; its versions and data
    /// stay readable as `view@version` until deleted.
    pub fn remove(&self, view: &str) -> Result<(), JobError> {
        check_name(view)?;
        if self.view_dir(view).remove("latest").map_err(store_error)? {
            Ok(())
        } else {
            Err(JobError::Other(format!(
                "view `{view}` has no latest version in `{}`",
                self.root
            )))
        }
    }
}
