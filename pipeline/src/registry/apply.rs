//! `quiver apply`: registers the views of a pipeline config in the store, backfills every new
//! version from the configured source, then points each view's `latest` at it.

use crate::backfill::backfill;
use crate::compile::CompiledPipeline;
use crate::error::JobError;
use crate::registry::definition::ViewDefinition;
use crate::registry::store::Registry;
use crate::run::RunOptions;
use crate::summary::thousands;
use quiver_store::StoreDir;

/// What `apply` did to one view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Its latest version already has this definition.
    Unchanged {
        /// The version.
        version: String,
    },
    /// A new version, backfilled and made latest.
    Created {
        /// The new version.
        version: String,
        /// The version it replaced as latest, if any.
        previous: Option<String>,
        /// Feature rows its backfill wrote.
        rows: u64,
    },
    /// An earlier version with this definition, made latest again (its data was kept).
    Restored {
        /// The version.
        version: String,
        /// The version it replaced as latest, if any.
        previous: Option<String>,
    },
}

/// Each view's outcome, in config order.
#[derive(Debug, Clone)]
pub struct ApplyReport {
    /// View name and what happened.
    pub views: Vec<(String, Applied)>,
    /// What new versions were backfilled from: the store's event log (its name under
    /// `events/`) or, when `None`, the configured source.
    pub event_log: Option<String>,
}

impl std::fmt::Display for ApplyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(log) = &self.event_log {
            writeln!(
                f,
                "new versions backfilled from the store's event log events/{log} (the events the store holds; `--from-source` reads the configured source instead)"
            )?;
        }
        for (view, applied) in &self.views {
            match applied {
                Applied::Unchanged { version } => {
                    writeln!(f, "view {view}: unchanged ({version})")?
                }
                Applied::Created {
                    version,
                    previous,
                    rows,
                } => writeln!(
                    f,
                    "view {view}: new version {version} with {} feature rows{}",
                    thousands(*rows),
                    previous
                        .as_ref()
                        .map(|p| format!(" (was {p}, still readable as {view}@{p})"))
                        .unwrap_or_default()
                )?,
                Applied::Restored { version, previous } => writeln!(
                    f,
                    "view {view}: back to version {version}{}",
                    previous
                        .as_ref()
                        .map(|p| format!(" (was {p})"))
                        .unwrap_or_default()
                )?,
            }
        }
        Ok(())
    }
}

/// Seconds since the Unix epoch as RFC 3339 UTC (`2026-11-30T00:30:00Z`).
fn utc_rfc3339(secs: i64) -> String {
    arrow::temporal_conversions::timestamp_s_to_datetime(secs)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// The items of `items` whose index is in `keep`, in order.
fn keep_indices<T>(items: Vec<T>, keep: &[usize]) -> Vec<T> {
    items
        .into_iter()
        .enumerate()
        .filter(|(i, _)| keep.contains(i))
        .map(|(_, item)| item)
        .collect()
}

/// Where an apply stages its backfill: `<store>/_staging` for a local store (moved into place
/// by renames), a scratch directory of the local temporary directory for an object store
/// (uploaded); the scratch directory is removed when the apply ends, and by the next apply
/// after a kill.
fn staging_dir(registry: &Registry) -> (std::path::PathBuf, Option<crate::spill::ScratchDir>) {
    match registry.root().local_path() {
        Some(root) => (root.join("_staging"), None),
        None => {
            let scratch =
                crate::spill::ScratchDir::beside(&std::env::temp_dir().join("quiver-apply"));
            (scratch.path().to_path_buf(), Some(scratch))
        }
    }
}

/// The registered version whose event log a new version of `wanted` can be backfilled from:
/// one over the same stream, transforms, source schema and event time (so its log holds the
/// very events the new version's views read), preferring a view's latest version (store runs
/// append to those logs) and then the newest log.
pub fn reusable_event_log(
    registry: &Registry,
    wanted: &ViewDefinition,
) -> Result<Option<ViewDefinition>, JobError> {
    let mut candidates: Vec<((bool, u64), ViewDefinition)> = Vec::new();
    for view in registry.views()? {
        let latest = registry.latest(&view)?;
        for d in registry.versions(&view)? {
            let same_stream = d.stream == wanted.stream
                && d.transforms == wanted.transforms
                && d.source_schema == wanted.source_schema
                && d.event_time == wanted.event_time;
            if !same_stream || d.events.is_empty() {
                continue;
            }
            let id = d
                .events
                .rsplit('/')
                .next()
                .and_then(|id| id.parse::<u64>().ok())
                .unwrap_or(0);
            candidates.push(((latest.as_deref() == Some(d.version.as_str()), id), d));
        }
    }
    // Best first; only the logs looked at are read (an old store's may not be Delta tables).
    candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
    Ok(candidates
        .into_iter()
        .map(|(_, d)| d)
        .find(|d| crate::registry::event_log::log_files(&registry.events_dir(&d.events)).is_ok()))
}

/// Applies `pipeline` to the store `registry`: every view whose definition is not its latest
/// version gets one. A new version is backfilled into a staging directory first and moved into
/// place only when its backfill committed; `latest` moves last, so a failed or killed apply
/// leaves every view on its previous version. New versions are backfilled from the store's
/// event log of the same stream when it has one ([`reusable_event_log`]) and `from_source` is
/// false, and share it; otherwise from the configured source, whose events become a new event
/// log.
pub async fn apply(
    mut pipeline: CompiledPipeline,
    registry: &Registry,
    options: RunOptions,
    from_source: bool,
) -> Result<ApplyReport, JobError> {
    let (staging, _scratch) = staging_dir(registry);
    if staging.exists() {
        // What an interrupted apply left: never visible to readers, safe to drop.
        std::fs::remove_dir_all(&staging)
            .map_err(|e| JobError::Other(format!("cannot clear `{}`: {e}", staging.display())))?;
    }
    let definitions = (0..pipeline.views.len())
        .map(|i| ViewDefinition::of(&pipeline, i))
        .collect::<Result<Vec<_>, _>>()?;
    let mut outcomes: Vec<Option<Applied>> = Vec::with_capacity(definitions.len());
    // Views needing a new version, with the version each one replaces.
    let mut to_backfill: Vec<(usize, Option<String>)> = Vec::new();
    for (i, d) in definitions.iter().enumerate() {
        let previous = registry.latest(&d.view)?;
        if previous.as_deref() == Some(d.version.as_str()) {
            outcomes.push(Some(Applied::Unchanged {
                version: d.version.clone(),
            }));
        } else if registry.definition(&d.view, Some(&d.version)).is_ok()
            && !quiver_store::delta::versions(&registry.data_dir(&d.view, &d.version))
                .map_err(|e| JobError::Other(e.to_string()))?
                .is_empty()
        {
            registry.set_latest(&d.view, &d.version)?;
            outcomes.push(Some(Applied::Restored {
                version: d.version.clone(),
                previous,
            }));
        } else {
            outcomes.push(None);
            to_backfill.push((i, previous));
        }
    }
    let mut reused = None;
    if !to_backfill.is_empty() {
        if !from_source {
            reused = reusable_event_log(registry, &definitions[to_backfill[0].0])?;
        }
        // Only the views that need a new version are computed.
        let keep: Vec<usize> = to_backfill.iter().map(|(i, _)| *i).collect();
        pipeline.views = keep_indices(std::mem::take(&mut pipeline.views), &keep);
        pipeline.view_identities =
            keep_indices(std::mem::take(&mut pipeline.view_identities), &keep);
        let schemas: Vec<arrow::datatypes::SchemaRef> =
            pipeline.views.iter().map(|v| v.output_schema()).collect();
        let out = staging.join("backfill");
        let staged_events = staging.join("events");
        let stream = pipeline.loaded.feature_stream().to_string();
        let summary = backfill(
            pipeline,
            RunOptions {
                output: Some(out.clone()),
                event_log: reused.is_none().then(|| staged_events.clone()),
                availability_column: true,
                from_event_log: reused.clone().map(|d| (registry.clone(), d)),
                ..options
            },
        )
        .await?;
        crate::fault::crash_point("apply_after_backfill");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let created = utc_rfc3339(now.as_secs() as i64);
        // The event log the versions it creates share: the one they were backfilled from, or
        // this apply's.
        let events = match &reused {
            Some(d) => d.events.clone(),
            None => {
                let events = format!("{stream}/{}", now.as_micros());
                move_into_place(&staged_events, &registry.events_dir(&events))?;
                events
            }
        };
        for (k, (i, previous)) in to_backfill.into_iter().enumerate() {
            let mut definition = definitions[i].clone();
            let rows = summary
                .views
                .iter()
                .find(|v| v.view == definition.view)
                .map_or(0, |v| v.rows);
            definition.rows = rows;
            definition.created = created.clone();
            definition.events = events.clone();
            let target = registry.data_dir(&definition.view, &definition.version);
            let staged = out.join(&definition.view);
            let files = version_files(&staged, &definition)?;
            move_into_place(&staged, &target)?;
            crate::fault::crash_point("apply_after_move");
            commit_version_table(&target, files, &schemas[k], &definition)?;
            registry.register(&definition)?;
            crate::fault::crash_point("apply_before_latest");
            registry.set_latest(&definition.view, &definition.version)?;
            outcomes[i] = Some(Applied::Created {
                version: definition.version.clone(),
                previous,
                rows,
            });
        }
        std::fs::remove_dir_all(&staging)
            .map_err(|e| JobError::Other(format!("cannot clear `{}`: {e}", staging.display())))?;
    }
    Ok(ApplyReport {
        event_log: reused.map(|d| d.events),
        views: definitions
            .iter()
            .zip(outcomes)
            .filter_map(|(d, o)| o.map(|o| (d.view.clone(), o)))
            .collect(),
    })
}

/// Moves the staged directory `from` to `to`, replacing what is there (nothing when nothing
/// was staged): a rename for a local store, made durable; an upload of each file for an
/// object store. Nothing refers to `to` until its Delta commit and registration.
fn move_into_place(from: &std::path::Path, to: &StoreDir) -> Result<(), JobError> {
    let fail = |action: &str, what: &dyn std::fmt::Display, e: &dyn std::fmt::Display| {
        JobError::Other(format!("cannot {action} `{what}`: {e}"))
    };
    to.remove_all().map_err(|e| fail("replace", to, &e))?;
    if let Some(to) = to.local_path() {
        let parent = to.parent().unwrap_or(std::path::Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| fail("create", &parent.display(), &e))?;
        if from.exists() {
            std::fs::rename(from, to).map_err(|e| fail("move", &from.display(), &e))?;
        } else {
            std::fs::create_dir_all(to).map_err(|e| fail("create", &to.display(), &e))?;
        }
        return quiver_store::sync_dir(parent).map_err(|e| JobError::Other(e.to_string()));
    }
    upload_dir(from, to, "")
}

/// Uploads every file under the local directory `from` (at `prefix` below it) into `to`.
fn upload_dir(from: &std::path::Path, to: &StoreDir, prefix: &str) -> Result<(), JobError> {
    let entries = match std::fs::read_dir(from.join(prefix)) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(JobError::Other(format!(
                "cannot list `{}`: {e}",
                from.join(prefix).display()
            )))
        }
    };
    for entry in entries {
        let entry = entry.map_err(|e| JobError::Other(e.to_string()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let relative = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        if entry.path().is_dir() {
            upload_dir(from, to, &relative)?;
        } else {
            to.put_file(&entry.path(), &relative)
                .map_err(|e| JobError::Other(e.to_string()))?;
        }
    }
    Ok(())
}

/// The staged Parquet files of a version (at `dir`) as Delta `add` actions, and the newest
/// event time in them.
fn version_files(
    dir: &std::path::Path,
    definition: &ViewDefinition,
) -> Result<(Vec<quiver_store::delta::AddFile>, Option<i64>), JobError> {
    let fail = |e: &dyn std::fmt::Display| {
        JobError::Other(format!(
            "cannot read the staged rows of {}@{} in `{}`: {e}",
            definition.view,
            definition.version,
            dir.display()
        ))
    };
    let mut files = Vec::new();
    let mut newest: Option<i64> = None;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((files, newest)),
        Err(e) => return Err(fail(&e)),
    };
    for entry in entries {
        let path = entry.map_err(|e| fail(&e))?.path();
        if path.extension().is_none_or(|x| x != "parquet") {
            continue;
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let (file, newest_in_file) = quiver_store::parquet_stats::table_file(
            &path,
            name.unwrap_or_default(),
            &definition.event_time,
        )
        .map_err(|e| fail(&e))?;
        files.push(file);
        newest = newest.max(newest_in_file);
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((files, newest))
}

/// Makes a version's directory of Parquet files a Delta table: one commit adding `files`, with
/// the version's definition in its commit info.
fn commit_version_table(
    dir: &StoreDir,
    (files, newest): (Vec<quiver_store::delta::AddFile>, Option<i64>),
    schema: &arrow::datatypes::Schema,
    definition: &ViewDefinition,
) -> Result<(), JobError> {
    let info = serde_json::json!({
        "newest_event_us": newest,
        "view": definition.view,
        "version": definition.version,
        "engine": definition.engine,
        "rows": definition.rows,
        "event_log": definition.events,
        "config": definition.config,
        "operation": "apply",
    });
    let commit = quiver_store::delta::Commit {
        files,
        info: serde_json::Map::from_iter([("quiver".to_string(), info)]),
        transaction: None,
        removes: Vec::new(),
    };
    // The rows' availability column comes last, as the writers add it.
    let mut fields: Vec<arrow::datatypes::FieldRef> = schema.fields().iter().cloned().collect();
    fields.push(std::sync::Arc::new(quiver_store::availability_field()));
    let schema = arrow::datatypes::Schema::new(fields);
    quiver_store::delta::commit(dir, &schema, &commit)
        .map_err(|e| JobError::Other(format!("cannot make `{dir}` a Delta table: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_utc_times() {
        assert_eq!(super::utc_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::utc_rfc3339(1_796_000_400), "2026-11-30T01:00:00Z");
        assert_eq!(super::utc_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
