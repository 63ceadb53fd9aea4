//! Decoding of NDJSON, CSV and Parquet bytes into [`SourceBatch`]es in a declared schema.
//!
//! Bad records never fail a decode: they become [`DeadLetter`]s with a reason and a detail.
//! Only problems that make a whole file unusable are errors, and those name the file.
//!
//! Row rules shared by the text formats: the event-time column is checked first, then the other
//! columns in declared order; the first problem found decides the dead-letter reason.

mod builder;
mod convert;
mod csv;
mod json_fields;
mod ndjson;
mod parquet;
mod text;

pub use parquet::decode_chunks as decode_parquet_chunks;
pub use parquet::decode_object_chunks as decode_parquet_object;
pub use text::{decode_text_object, TextDecoder, TEXT_PIECE_BYTES};

use crate::dead_letter::DeadLetter;
use crate::error::ConnectorError;
use crate::position::SourceBatch;
use crate::schema::DeclaredSchema;

/// Input file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// Newline-delimited JSON, one object per line.
    Ndjson,
    /// Comma-separated values with a header line.
    Csv,
    /// Apache Parquet.
    Parquet,
}

impl FileFormat {
    /// Guesses the format from a path or URL by extension (case-insensitive):
    /// `.ndjson`/`.jsonl`/`.json` => NDJSON, `.csv` => CSV, `.parquet` => Parquet.
    pub fn from_path(path: &str) -> Option<FileFormat> {
        let name = path.rsplit(['/', '\\']).next().unwrap_or(path);
        let (_, extension) = name.rsplit_once('.')?;
        match extension.to_ascii_lowercase().as_str() {
            "ndjson" | "jsonl" | "json" => Some(FileFormat::Ndjson),
            "csv" => Some(FileFormat::Csv),
            "parquet" => Some(FileFormat::Parquet),
            _ => None,
        }
    }

    /// The config spelling of this format.
    pub fn as_str(&self) -> &'static str {
        match self {
            FileFormat::Ndjson => "ndjson",
            FileFormat::Csv => "csv",
            FileFormat::Parquet => "parquet",
        }
    }
}

/// Output of decoding one chunk: good rows as batches of at most `batch_size` rows, bad rows as
/// dead letters.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Good rows in the declared schema ([`DeclaredSchema::arrow_schema`]), in source order.
    pub batches: Vec<SourceBatch>,
    /// Rejected records, in source order.
    pub dead_letters: Vec<DeadLetter>,
}

/// Decodes the whole content `data` of one file (partition `partition`).
///
/// Never fails on bad records; only fails on things that make the whole file unreadable (a
/// corrupt Parquet footer, a Parquet column whose type cannot be cast to the declared type, a
/// CSV header lacking a non-nullable declared column), and then the error names the file.
/// A `batch_size` of 0 is treated as 1.
pub fn decode_file(
    format: FileFormat,
    partition: &str,
    data: &[u8],
    schema: &DeclaredSchema,
    batch_size: usize,
) -> Result<Decoded, ConnectorError> {
    let batch_size = batch_size.max(1);
    match format {
        FileFormat::Ndjson | FileFormat::Csv => {
            TextDecoder::new(format, partition, schema, batch_size)?.push(data, true)
        }
        FileFormat::Parquet => parquet::decode(partition, data, schema, batch_size),
    }
}

/// One record of a log (a Kafka message) whose value is a JSON object.
#[derive(Debug, Clone)]
pub struct JsonRecord<'r> {
    /// The record's offset in its partition.
    pub offset: u64,
    /// The value; `None` for a record without one (a tombstone), which is a dead letter.
    pub value: Option<&'r [u8]>,
    /// Columns supplied from outside the value (the message key, timestamp, headers); they
    /// take precedence over fields of the same name in the object.
    pub extra: Vec<(&'r str, serde_json::Value)>,
    /// Why the record is bad before its value is looked at (e.g. a key that is not UTF-8).
    pub problem: Option<(crate::dead_letter::DeadLetterReason, String)>,
}

/// Decodes records of partition `partition`, in offset order, like NDJSON lines: good ones
/// into batches of at most `batch_size` rows, bad ones into dead letters with their reasons.
pub fn decode_json_records<'r>(
    partition: &str,
    records: impl IntoIterator<Item = JsonRecord<'r>>,
    schema: &DeclaredSchema,
    batch_size: usize,
) -> Result<Decoded, ConnectorError> {
    let mut sink = builder::RowSink::new(partition, schema, batch_size.max(1));
    let names = json_fields::FieldNames::new(schema);
    for record in records {
        if let Some((reason, detail)) = record.problem {
            let raw = String::from_utf8_lossy(record.value.unwrap_or_default()).into_owned();
            sink.reject(record.offset, convert::Reject { reason, detail }, raw);
            continue;
        }
        match record.value {
            // Values without outside columns take the declared-field path when they can.
            Some(value)
                if record.extra.is_empty()
                    && ndjson::push_declared_fields(&mut sink, &names, record.offset, value)? => {}
            Some(value) => {
                ndjson::push_json_record(&mut sink, record.offset, value, &record.extra, "message")?
            }
            None => sink.reject(
                record.offset,
                convert::Reject {
                    reason: crate::dead_letter::DeadLetterReason::MalformedRecord,
                    detail: "the message has no value (a tombstone)".to_string(),
                },
                String::new(),
            ),
        }
    }
    sink.finish()
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::schema::{DeclaredSchema, FieldSpec, FieldType};

    /// The schema the NDJSON and CSV decoder tests share: one column of every type.
    pub(crate) fn text_schema() -> DeclaredSchema {
        DeclaredSchema::new(
            vec![
                FieldSpec::new("id", FieldType::Int, false),
                FieldSpec::new("amount", FieldType::Float, true),
                FieldSpec::new("ok", FieldType::Bool, true),
                FieldSpec::new("name", FieldType::String, true),
                FieldSpec::new("t", FieldType::Timestamp, false),
            ],
            "t",
        )
        .expect("valid test schema")
    }

    use super::*;

    #[test]
    fn format_from_extension() {
        assert_eq!(
            FileFormat::from_path("a/b.ndjson"),
            Some(FileFormat::Ndjson)
        );
        assert_eq!(FileFormat::from_path("b.JSONL"), Some(FileFormat::Ndjson));
        assert_eq!(
            FileFormat::from_path("s3://x/y.json"),
            Some(FileFormat::Ndjson)
        );
        assert_eq!(FileFormat::from_path("y.csv"), Some(FileFormat::Csv));
        assert_eq!(
            FileFormat::from_path("file:///y.parquet"),
            Some(FileFormat::Parquet)
        );
        assert_eq!(FileFormat::from_path("y.txt"), None);
        assert_eq!(FileFormat::from_path("dir.csv/file"), None);
        assert_eq!(FileFormat::from_path("noext"), None);
    }
}
