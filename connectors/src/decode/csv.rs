//! CSV decoding: a header line naming columns (any order, extra columns ignored), empty field =
//! null; offset = 1-based line number in the file (the header is line 1 when it comes first).

use super::builder::RowSink;
use super::convert::Reject;
use super::Decoded;
use crate::dead_letter::DeadLetterReason;
use crate::error::ConnectorError;
use crate::schema::DeclaredSchema;

/// Maps each declared column to its index in the file, `None` for nullable columns the header
/// lacks.
fn map_header(
    partition: &str,
    header: &csv::ByteRecord,
    schema: &DeclaredSchema,
) -> Result<Vec<Option<usize>>, ConnectorError> {
    let mut names = Vec::with_capacity(header.len());
    for (i, raw) in header.iter().enumerate() {
        let raw = if i == 0 {
            raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw)
        } else {
            raw
        };
        let name = std::str::from_utf8(raw).map_err(|_| ConnectorError::Csv {
            partition: partition.to_string(),
            detail: format!(
                "header column {} is not valid UTF-8; save the file as UTF-8",
                i + 1
            ),
        })?;
        names.push(name.trim());
    }
    let mut mapping = Vec::with_capacity(schema.fields.len());
    for (index, field) in schema.fields.iter().enumerate() {
        let mut found = names
            .iter()
            .enumerate()
            .filter(|(_, n)| **n == field.name)
            .map(|(i, _)| i);
        let first = found.next();
        if let (Some(a), Some(b)) = (first, found.next()) {
            return Err(ConnectorError::Csv {
                partition: partition.to_string(),
                detail: format!(
                    "column `{}` appears twice in the header (columns {} and {}); rename or \
                     remove one",
                    field.name,
                    a + 1,
                    b + 1
                ),
            });
        }
        if first.is_none() && !schema.is_nullable(index) {
            return Err(ConnectorError::Csv {
                partition: partition.to_string(),
                detail: format!(
                    "header lacks the non-nullable declared column `{}` (header columns: {}); \
                     add the column to the file, fix the name in the schema, or declare it \
                     `nullable: true`",
                    field.name,
                    names
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        mapping.push(first);
    }
    Ok(mapping)
}

/// Incremental byte offset -> 1-based line number, for offsets visited in increasing order.
struct LineCounter<'a> {
    data: &'a [u8],
    counted_to: usize,
    line: u64,
}

impl LineCounter<'_> {
    fn line_of(&mut self, offset: usize) -> u64 {
        let offset = offset.clamp(self.counted_to, self.data.len());
        let newlines = self.data[self.counted_to..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        self.line += newlines as u64;
        self.counted_to = offset;
        self.line
    }
}

/// The bytes of one record, without the line terminator.
fn raw_bytes(data: &[u8], start: usize, end: u64) -> &[u8] {
    let start = start.min(data.len());
    let end = usize::try_from(end)
        .unwrap_or(usize::MAX)
        .clamp(start, data.len());
    let mut raw = &data[start..end];
    while let Some(rest) = raw.strip_suffix(b"\n").or_else(|| raw.strip_suffix(b"\r")) {
        raw = rest;
    }
    raw
}

/// What decoding a CSV file in pieces carries from one piece to the next.
#[derive(Debug, Clone)]
pub(super) struct CsvProgress {
    /// Declared column -> file column, and the header's width, once the header was read.
    header: Option<(Vec<Option<usize>>, usize)>,
    /// The 1-based line number of the first byte of the next piece.
    line: u64,
}

impl Default for CsvProgress {
    fn default() -> Self {
        CsvProgress {
            header: None,
            line: 1,
        }
    }
}

/// Decodes the CSV records of `data`, a piece of a file starting at a record boundary (the
/// file's start first) after what `progress` says was read before (updated); when `last` is
/// false, a record that reaches the end of `data` is left for the next piece (it may be cut
/// short, even inside a quoted field). Returns what was decoded and the bytes consumed.
pub(super) fn decode_chunk(
    partition: &str,
    data: &[u8],
    last: bool,
    progress: &mut CsvProgress,
    schema: &DeclaredSchema,
    batch_size: usize,
) -> Result<(Decoded, usize), ConnectorError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(data);
    let csv_error = |e: csv::Error| ConnectorError::Csv {
        partition: partition.to_string(),
        detail: format!("cannot parse the file: {e}"),
    };
    let mut sink = RowSink::new(partition, schema, batch_size);
    let mut record = csv::ByteRecord::new();
    // Whether the record just read may continue in the next piece.
    let cut_short = |reader: &csv::Reader<&[u8]>| {
        !last && usize::try_from(reader.position().byte()).unwrap_or(usize::MAX) >= data.len()
    };
    let (mapping, header_len) = match &progress.header {
        Some(header) => header.clone(),
        None => {
            if !reader.read_byte_record(&mut record).map_err(csv_error)? || cut_short(&reader) {
                return Ok((sink.finish()?, 0));
            }
            let header = (map_header(partition, &record, schema)?, record.len());
            progress.header = Some(header.clone());
            header
        }
    };
    let mut lines = LineCounter {
        data,
        counted_to: 0,
        line: progress.line,
    };
    let mut consumed = data.len();
    loop {
        let start = reader.position().clone();
        if !reader.read_byte_record(&mut record).map_err(csv_error)? {
            break;
        }
        if cut_short(&reader) {
            consumed = usize::try_from(start.byte())
                .unwrap_or(usize::MAX)
                .min(data.len());
            break;
        }
        // csv reports a record after blank lines at the first blank line, so find the real
        // start and count lines ourselves.
        let begin = record.position().unwrap_or(&start).byte();
        let begin = usize::try_from(begin).unwrap_or(usize::MAX).min(data.len());
        let skipped = data[begin..]
            .iter()
            .take_while(|&&b| b == b'\n' || b == b'\r')
            .count();
        let begin = begin + skipped;
        let line = lines.line_of(begin);
        let raw = raw_bytes(data, begin, reader.position().byte());
        let text = match std::str::from_utf8(raw) {
            Ok(text) => text,
            Err(e) => {
                let reject = Reject {
                    reason: DeadLetterReason::InvalidUtf8,
                    detail: format!(
                        "record is not valid UTF-8 (first invalid byte at byte {} of the \
                         record); `raw` shows invalid bytes as U+FFFD",
                        e.valid_up_to() + 1
                    ),
                };
                sink.reject(line, reject, String::from_utf8_lossy(raw).into_owned());
                continue;
            }
        };
        if record.len() != header_len {
            let reject = Reject {
                reason: DeadLetterReason::MalformedRecord,
                detail: format!(
                    "expected {header_len} fields as in the header, found {}",
                    record.len()
                ),
            };
            sink.reject(line, reject, text.to_string());
            continue;
        }
        let fields = &record;
        sink.push_row(
            line,
            |target, index| {
                let column = mapping.get(index).copied().flatten();
                match column.and_then(|c| fields.get(c)) {
                    None => target.null(true),
                    // The whole record was checked to be UTF-8 above, so each field is too.
                    Some(bytes) => match std::str::from_utf8(bytes) {
                        Ok(field) => target.convert_text(field),
                        Err(_) => Err(Reject {
                            reason: DeadLetterReason::InvalidUtf8,
                            detail: format!("field `{}` is not valid UTF-8", target.spec.name),
                        }),
                    },
                }
            },
            || text.to_string(),
        )?;
    }
    progress.line = lines.line_of(consumed);
    Ok((sink.finish()?, consumed))
}

#[cfg(test)]
mod tests {
    use arrow::array::{AsArray, Int64Array, StringArray};
    use arrow::datatypes::TimestampMicrosecondType;

    use crate::dead_letter::DeadLetterReason as R;
    use crate::decode::{decode_file, FileFormat};
    use crate::error::ConnectorError;

    use crate::decode::tests::text_schema as schema;

    #[test]
    fn every_reason_with_exact_line_numbers() {
        let mut data: Vec<u8> = Vec::new();
        data.extend_from_slice(b"\xEF\xBB\xBFt,extra,id,amount,ok,name\r\n"); // 1 header (BOM, CRLF)
        data.extend_from_slice(b"2026-01-01T00:00:00Z,x,1,1.5,true,\"a,b\"\n"); // 2 good
        data.extend_from_slice(b"\n"); // 3 blank
        data.extend_from_slice(b"2026-01-01T00:00:00Z,x,2,1.5\n"); // 4 wrong field count
        data.extend_from_slice(b"2026-01-01T00:00:00Z,x,3,abc,true,n\n"); // 5 wrong type
        data.extend_from_slice(b"2026-01-01T00:00:00Z,x,,1,true,n\n"); // 6 missing id
        data.extend_from_slice(b",x,4,1,true,n\n"); // 7 missing event time
        data.extend_from_slice(b"soon,x,5,1,true,n\n"); // 8 invalid event time
        data.extend_from_slice(b"2026-01-01T00:00:00Z,\xff,6,1,true,n\n"); // 9 invalid utf-8
        data.extend_from_slice(b"1767225600123,x,7,,,\"multi\nline\"\n"); // 10-11 good, epoch ms
        data.extend_from_slice(b"2026-01-01 00:00:00,x,8,2,maybe,n\n"); // 12 wrong bool
        data.extend_from_slice(b"2026-01-01 00:00:00,x,9,2,FALSE,z"); // 13 good, no newline

        let decoded = decode_file(FileFormat::Csv, "f.csv", &data, &schema(), 100).unwrap();
        let got: Vec<(u64, R)> = decoded
            .dead_letters
            .iter()
            .map(|d| (d.offset, d.reason))
            .collect();
        assert_eq!(
            got,
            vec![
                (4, R::MalformedRecord),
                (5, R::WrongType),
                (6, R::MissingField),
                (7, R::MissingEventTime),
                (8, R::InvalidEventTime),
                (9, R::InvalidUtf8),
                (12, R::WrongType),
            ]
        );
        assert_eq!(
            decoded.dead_letters[1].detail,
            "field `amount`: expected float, found \"abc\""
        );
        assert_eq!(
            decoded.dead_letters[1].raw,
            "2026-01-01T00:00:00Z,x,3,abc,true,n"
        );
        assert_eq!(
            decoded.dead_letters[5].raw,
            "2026-01-01T00:00:00Z,\u{FFFD},6,1,true,n"
        );

        assert_eq!(decoded.batches.len(), 1);
        let sb = &decoded.batches[0];
        assert_eq!(sb.offsets, vec![2, 10, 13]);
        let ids = sb
            .batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(ids.values().to_vec(), vec![1, 7, 9]);
        let names = sb
            .batch
            .column(3)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(names.value(0), "a,b");
        assert_eq!(names.value(1), "multi\nline");
        assert!(sb.batch.column(1).is_null(1), "empty field is null");
        assert!(!sb.batch.column(2).as_boolean().value(2));
        let t = sb
            .batch
            .column(4)
            .as_primitive::<TimestampMicrosecondType>();
        assert_eq!(t.value(1), 1_767_225_600_123_000);
    }

    #[test]
    fn header_errors_name_the_file_and_column() {
        let err = decode_file(
            FileFormat::Csv,
            "in/x.csv",
            b"id,amount\n1,2\n",
            &schema(),
            10,
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, ConnectorError::Csv { .. }));
        assert!(message.contains("in/x.csv"), "{message}");
        assert!(message.contains("`t`"), "{message}");

        let err = decode_file(FileFormat::Csv, "y.csv", b"t,id,id\n", &schema(), 10).unwrap_err();
        assert!(err.to_string().contains("appears twice"), "{err}");

        // A missing nullable column is all nulls, not an error.
        let decoded = decode_file(
            FileFormat::Csv,
            "z.csv",
            b"t,id\n2026-01-01T00:00:00Z,1\n",
            &schema(),
            10,
        )
        .unwrap();
        assert_eq!(decoded.batches[0].batch.column(1).null_count(), 1);
        assert!(decode_file(FileFormat::Csv, "e.csv", b"", &schema(), 10)
            .unwrap()
            .batches
            .is_empty());
    }
}
