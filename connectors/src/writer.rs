//! Writing Arrow batches to local NDJSON, CSV or Parquet files (used by `quiver generate`,
//! tests and benchmarks).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::decode::FileFormat;
use crate::error::ConnectorError;
use crate::render::{text_value, write_json_row};

fn io_error<'a>(
    path: &'a Path,
    action: &'static str,
) -> impl Fn(std::io::Error) -> ConnectorError + 'a {
    move |source| ConnectorError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

fn write_error(path: &Path, detail: String) -> ConnectorError {
    ConnectorError::Write {
        path: path.to_path_buf(),
        detail,
    }
}

/// Writes `batches` to `path` (replacing it, creating parent directories) and returns the number
/// of rows written.
///
/// NDJSON: one object per row, keys in column order, nulls as `null`, timestamps as RFC 3339
/// UTC with `Z` (sub-second digits only when needed), non-finite floats as `null`.
/// CSV: header line, empty field for null (so an empty string reads back as null).
/// Parquet: Snappy-compressed; needs at least one batch to know the schema.
/// All batches must have the same schema.
pub fn write_file(
    format: FileFormat,
    path: &Path,
    batches: &[RecordBatch],
) -> Result<u64, ConnectorError> {
    write_batches(format, path, batches.iter().cloned())
}

/// [`write_file`] for batches produced as they are written (e.g. by a generator): only one is
/// held at a time. A batch whose schema differs from the first one's is an error (the file
/// written so far stays, incomplete).
pub fn write_batches(
    format: FileFormat,
    path: &Path,
    batches: impl IntoIterator<Item = RecordBatch>,
) -> Result<u64, ConnectorError> {
    let mut batches = batches.into_iter().peekable();
    let first = batches.peek().map(|b| b.schema());
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io_error(path, "creating the output directory"))?;
    }
    let file = File::create(path).map_err(io_error(path, "creating the output file"))?;
    let checked = batches.map(|batch| match &first {
        Some(first) if batch.schema() != *first => Err(write_error(
            path,
            format!(
                "batches have different schemas ({:?} vs {:?}); write them to separate files",
                first.fields(),
                batch.schema().fields()
            ),
        )),
        _ => Ok(batch),
    });
    match format {
        FileFormat::Ndjson => write_ndjson(path, file, checked),
        FileFormat::Csv => write_csv(path, file, first.as_deref(), checked),
        FileFormat::Parquet => write_parquet(path, file, first.clone(), checked),
    }
}

fn write_ndjson(
    path: &Path,
    file: File,
    batches: impl Iterator<Item = Result<RecordBatch, ConnectorError>>,
) -> Result<u64, ConnectorError> {
    let mut out = BufWriter::new(file);
    let mut line = Vec::with_capacity(256);
    let mut rows = 0u64;
    for batch in batches {
        let batch = batch?;
        for row in 0..batch.num_rows() {
            line.clear();
            write_json_row(&batch, row, &mut line);
            line.push(b'\n');
            out.write_all(&line)
                .map_err(io_error(path, "writing NDJSON"))?;
        }
        rows += batch.num_rows() as u64;
    }
    out.flush().map_err(io_error(path, "writing NDJSON"))?;
    Ok(rows)
}

fn write_csv(
    path: &Path,
    file: File,
    schema: Option<&arrow::datatypes::Schema>,
    batches: impl Iterator<Item = Result<RecordBatch, ConnectorError>>,
) -> Result<u64, ConnectorError> {
    let csv_error = |e: csv::Error| write_error(path, format!("CSV output failed: {e}"));
    let mut out = csv::Writer::from_writer(BufWriter::new(file));
    let mut rows = 0u64;
    if let Some(schema) = schema {
        out.write_record(schema.fields().iter().map(|f| f.name().as_str()))
            .map_err(csv_error)?;
    }
    let mut record: Vec<String> = Vec::new();
    for batch in batches {
        let batch = batch?;
        for row in 0..batch.num_rows() {
            record.clear();
            record.extend(
                batch
                    .columns()
                    .iter()
                    .map(|c| text_value(c.as_ref(), row).unwrap_or_default()),
            );
            out.write_record(&record).map_err(csv_error)?;
        }
        rows += batch.num_rows() as u64;
    }
    out.flush().map_err(io_error(path, "writing CSV"))?;
    Ok(rows)
}

fn write_parquet(
    path: &Path,
    file: File,
    schema: Option<arrow::datatypes::SchemaRef>,
    batches: impl Iterator<Item = Result<RecordBatch, ConnectorError>>,
) -> Result<u64, ConnectorError> {
    let Some(schema) = schema else {
        return Err(write_error(
            path,
            "no batches given, so the Parquet schema is unknown; pass at least one (possibly \
             empty) batch"
                .into(),
        ));
    };
    let parquet_error =
        |e: parquet::errors::ParquetError| write_error(path, format!("Parquet output failed: {e}"));
    let properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer = ArrowWriter::try_new(file, schema, Some(properties)).map_err(parquet_error)?;
    let mut rows = 0u64;
    for batch in batches {
        let batch = batch?;
        writer.write(&batch).map_err(parquet_error)?;
        rows += batch.num_rows() as u64;
    }
    writer.close().map_err(parquet_error)?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
            Field::new("t", DataType::Timestamp(TimeUnit::Microsecond, None), false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec![Some("a,\"b\""), None])),
                Arc::new(TimestampMicrosecondArray::from(vec![
                    1_767_225_600_000_000,
                    1_767_225_600_000_001,
                ])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn writes_text_formats() {
        let dir = tempfile::tempdir().unwrap();
        let ndjson = dir.path().join("sub/x.ndjson");
        assert_eq!(
            write_file(FileFormat::Ndjson, &ndjson, &[batch(), batch()]).unwrap(),
            4
        );
        let text = std::fs::read_to_string(&ndjson).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines[0],
            r#"{"id":1,"s":"a,\"b\"","t":"2026-01-01T00:00:00Z"}"#
        );
        assert_eq!(
            lines[1],
            r#"{"id":2,"s":null,"t":"2026-01-01T00:00:00.000001Z"}"#
        );

        let csv = dir.path().join("x.csv");
        assert_eq!(write_file(FileFormat::Csv, &csv, &[batch()]).unwrap(), 2);
        assert_eq!(
            std::fs::read_to_string(&csv).unwrap(),
            "id,s,t\n1,\"a,\"\"b\"\"\",2026-01-01T00:00:00Z\n2,,2026-01-01T00:00:00.000001Z\n"
        );
    }

    #[test]
    fn rejects_unwritable_input() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_file(FileFormat::Parquet, &dir.path().join("e.parquet"), &[]).unwrap_err();
        assert!(err.to_string().contains("e.parquet"), "{err}");
        let other = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)])),
            vec![Arc::new(Int64Array::from(vec![1]))],
        )
        .unwrap();
        let err = write_file(
            FileFormat::Csv,
            &dir.path().join("m.csv"),
            &[batch(), other],
        )
        .unwrap_err();
        assert!(err.to_string().contains("different schemas"), "{err}");
    }
}
