//! Dead letters: rejected records with the reason, and a writer that appends them as NDJSON.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use crate::error::ConnectorError;

/// Why a record was rejected.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterReason {
    /// The record is not parseable at all (invalid JSON, not an object, wrong CSV field count).
    MalformedRecord,
    /// The record's bytes are not valid UTF-8.
    InvalidUtf8,
    /// A field holds a value of the wrong type.
    WrongType,
    /// A non-nullable field is missing or null.
    MissingField,
    /// The event-time field is missing or null.
    MissingEventTime,
    /// The event-time field is present but cannot be parsed as a timestamp.
    InvalidEventTime,
    /// The event arrived after the watermark had passed its event time.
    Late,
    /// The event time is further in the future than `event_time.max_future` allows (a wrong
    /// clock); accepting it would make every later event late.
    FutureEventTime,
    /// A SQL transform failed on the record.
    TransformError,
}

impl DeadLetterReason {
    /// The snake_case name used in dead-letter files and metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            DeadLetterReason::MalformedRecord => "malformed_record",
            DeadLetterReason::InvalidUtf8 => "invalid_utf8",
            DeadLetterReason::WrongType => "wrong_type",
            DeadLetterReason::MissingField => "missing_field",
            DeadLetterReason::MissingEventTime => "missing_event_time",
            DeadLetterReason::InvalidEventTime => "invalid_event_time",
            DeadLetterReason::Late => "late",
            DeadLetterReason::FutureEventTime => "future_event_time",
            DeadLetterReason::TransformError => "transform_error",
        }
    }
}

impl std::fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rejected record.
///
/// `raw` is the original record text; for records that are not valid UTF-8 it is the lossy
/// conversion (invalid bytes shown as U+FFFD) and `detail` says so. For Parquet rows `raw` is
/// the row rendered as a JSON object.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeadLetter {
    /// Why the record was rejected.
    pub reason: DeadLetterReason,
    /// Human-readable explanation, e.g. ``field `amount`: expected float, found string "abc"``.
    pub detail: String,
    /// Source partition of the record.
    pub partition: String,
    /// Source offset of the record (see [`crate::SourceRange`]).
    pub offset: u64,
    /// The original record.
    pub raw: String,
}

/// Appends dead letters as NDJSON lines to a local file (creating parent dirs lazily on first
/// record; no file if no records), counts them per reason.
pub struct DeadLetterWriter {
    path: PathBuf,
    file: Option<BufWriter<File>>,
    counts: BTreeMap<DeadLetterReason, u64>,
    total: u64,
}

impl DeadLetterWriter {
    /// A writer appending to `path`; nothing is created until the first record is written.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            file: None,
            counts: BTreeMap::new(),
            total: 0,
        }
    }

    fn io_error(&self, action: &'static str, source: std::io::Error) -> ConnectorError {
        ConnectorError::Io {
            path: self.path.clone(),
            action,
            source,
        }
    }

    fn open(&mut self) -> Result<&mut BufWriter<File>, ConnectorError> {
        if self.file.is_none() {
            if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .map_err(|e| self.io_error("creating the dead-letter directory", e))?;
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|e| self.io_error("opening the dead-letter file", e))?;
            self.file = Some(BufWriter::new(file));
        }
        let path = &self.path;
        self.file.as_mut().ok_or_else(|| ConnectorError::Io {
            path: path.clone(),
            action: "opening the dead-letter file",
            source: std::io::Error::other("file handle missing after open"),
        })
    }

    /// Appends `records` (buffered; call [`DeadLetterWriter::flush`] to make them durable).
    pub fn write(&mut self, records: &[DeadLetter]) -> Result<(), ConnectorError> {
        if records.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let file = self.open()?;
        for record in records {
            serde_json::to_writer(&mut *file, record)
                .map_err(std::io::Error::from)
                .and_then(|()| file.write_all(b"\n"))
                .map_err(|source| ConnectorError::Io {
                    path: path.clone(),
                    action: "writing dead letters",
                    source,
                })?;
        }
        for record in records {
            *self.counts.entry(record.reason).or_insert(0) += 1;
        }
        self.total += records.len() as u64;
        Ok(())
    }

    /// Number of dead letters written so far, per reason.
    pub fn counts(&self) -> &BTreeMap<DeadLetterReason, u64> {
        &self.counts
    }

    /// Number of dead letters written so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Flushes buffered records to the file and asks the OS to persist them.
    pub fn flush(&mut self) -> Result<(), ConnectorError> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let result = file.flush().and_then(|()| file.get_ref().sync_data());
        result.map_err(|e| self.io_error("flushing dead letters", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(reason: DeadLetterReason, offset: u64) -> DeadLetter {
        DeadLetter {
            reason,
            detail: "d".into(),
            partition: "p".into(),
            offset,
            raw: "{\"x\":1}".into(),
        }
    }

    #[test]
    fn reason_names_match_serde() {
        for reason in [
            DeadLetterReason::MalformedRecord,
            DeadLetterReason::InvalidUtf8,
            DeadLetterReason::WrongType,
            DeadLetterReason::MissingField,
            DeadLetterReason::MissingEventTime,
            DeadLetterReason::InvalidEventTime,
            DeadLetterReason::Late,
            DeadLetterReason::FutureEventTime,
            DeadLetterReason::TransformError,
        ] {
            let json = serde_json::to_string(&reason).unwrap();
            assert_eq!(json, format!("\"{}\"", reason.as_str()));
        }
    }

    #[test]
    fn writes_lazily_appends_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dl.ndjson");
        let mut writer = DeadLetterWriter::new(&path);
        writer.write(&[]).unwrap();
        writer.flush().unwrap();
        assert!(!path.exists(), "no file without records");

        writer
            .write(&[
                letter(DeadLetterReason::Late, 1),
                letter(DeadLetterReason::WrongType, 2),
                letter(DeadLetterReason::Late, 3),
            ])
            .unwrap();
        writer.flush().unwrap();
        assert_eq!(writer.total(), 3);
        assert_eq!(writer.counts()[&DeadLetterReason::Late], 2);
        assert_eq!(writer.counts()[&DeadLetterReason::WrongType], 1);

        let text = std::fs::read_to_string(&path).unwrap();
        let parsed: Vec<DeadLetter> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[1], letter(DeadLetterReason::WrongType, 2));

        // A second writer appends rather than truncating.
        let mut again = DeadLetterWriter::new(&path);
        again.write(&[letter(DeadLetterReason::Late, 4)]).unwrap();
        again.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 4);
    }
}
