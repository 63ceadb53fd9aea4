//! The schema of a file source when the config declares none: read from the first Parquet file.

use crate::config::FilesConfig;
use quiver_connectors::{infer_fields, DeclaredSchema, FileFormat, InputFiles};

/// A schema read from a file, with a note for `quiver validate` (which file, what was skipped).
pub struct InferredSchema {
    /// The schema, as if declared.
    pub schema: DeclaredSchema,
    /// Where it came from and which columns were left out, in words.
    pub note: String,
}

/// Reads the schema of the first file `files` resolves to. Only Parquet describes its columns:
/// other formats, an integer event-time column (its unit would be a guess), or a missing one
/// are errors saying what to declare.
pub async fn infer_file_schema(
    files: &FilesConfig,
    event_time: &str,
) -> Result<InferredSchema, String> {
    let input = InputFiles::resolve(&files.location, &files.options)
        .await
        .map_err(|e| e.to_string())?;
    let first = input.names().into_iter().next().unwrap_or_default();
    let format = files.format.or_else(|| FileFormat::from_path(&first));
    if format != Some(FileFormat::Parquet) {
        return Err(format!(
            "`schema:` is required for {} input: only Parquet files describe their columns",
            format.map_or("this", |f| f.as_str())
        ));
    }
    let arrow_schema = input.parquet_schema(0).await.map_err(|e| e.to_string())?;
    let (fields, skipped) =
        infer_fields(&first, &arrow_schema, event_time).map_err(|e| e.to_string())?;
    let columns = fields.len();
    let schema = DeclaredSchema::new(fields, event_time).map_err(|e| e.to_string())?;
    let mut note = format!("schema read from `{first}`: {columns} columns");
    if !skipped.is_empty() {
        note.push_str(&format!(
            "; left out (types Quiver does not read): {}",
            skipped.join(", ")
        ));
    }
    Ok(InferredSchema { schema, note })
}
