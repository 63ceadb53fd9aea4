//! `quiver validate`: every config and SQL problem, without running anything.

use crate::compile::CompiledPipeline;
use crate::config::LoadedConfig;
use crate::error::JobError;
use quiver_connectors::InputFiles;
use std::path::Path;

/// What a valid pipeline consists of, for the success message.
#[derive(Debug, Clone)]
pub struct ValidationReport {
    /// Lines describing the streams and views.
    pub lines: Vec<String>,
}

/// Loads, checks the input location and compiles all SQL; returns every problem found.
pub async fn validate(path: &Path) -> Result<ValidationReport, JobError> {
    let loaded = LoadedConfig::load(path)?;
    let mut problems = Vec::new();
    if let Some(files) = &loaded.config.source.files {
        if let Err(e) = InputFiles::resolve(&files.location, &files.options).await {
            problems.push(JobError::Other(format!(
                "{}: error: source.files.location: {e}",
                loaded.path.display()
            )));
        }
    }
    let compiled = match CompiledPipeline::compile(loaded).await {
        Ok(c) => Some(c),
        Err(JobError::Many(more)) => {
            problems.extend(more);
            None
        }
        Err(e) => {
            problems.push(e);
            None
        }
    };
    match compiled {
        Some(c) if problems.is_empty() => {
            let mut lines = vec![format!(
                "{}: ok: pipeline `{}`, event time `{}`, max_lateness {}",
                c.loaded.path.display(),
                c.loaded.config.name,
                c.event_time(),
                c.loaded.config.event_time.max_lateness
            )];
            if let Some(note) = &c.source_schema_note {
                lines.push(format!("  source {}", note));
            }
            for t in &c.transforms {
                lines.push(format!("  transform {} (from {})", t.name(), t.input()));
            }
            for v in &c.views {
                let features: Vec<String> = v
                    .output_schema()
                    .fields()
                    .iter()
                    .map(|f| format!("{}: {}", f.name(), f.data_type()))
                    .collect();
                lines.push(format!(
                    "  view {} keyed by {}: {}",
                    v.name(),
                    v.key_names().join(", "),
                    features.join(", ")
                ));
            }
            Ok(ValidationReport { lines })
        }
        _ if problems.len() == 1 => Err(problems.remove(0)),
        _ => Err(JobError::Many(problems)),
    }
}
