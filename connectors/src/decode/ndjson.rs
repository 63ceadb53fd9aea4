//! NDJSON decoding: one JSON object per non-blank line; offset = 1-based line number.

use serde_json::Value;

use super::builder::RowSink;
use super::convert::Reject;
use super::json_fields::{FieldNames, Scalar};
use super::Decoded;
use crate::dead_letter::DeadLetterReason;
use crate::error::ConnectorError;
use crate::schema::DeclaredSchema;

/// Decodes the NDJSON lines of `data`, a piece of a file starting at a line boundary whose
/// first line is line `first_line` of the file; when `last` is false, only up to the last
/// newline (the rest may be a line cut short). Returns what was decoded, the bytes consumed and
/// the lines they held.
pub(super) fn decode_chunk(
    partition: &str,
    data: &[u8],
    last: bool,
    first_line: u64,
    schema: &DeclaredSchema,
    batch_size: usize,
) -> Result<(Decoded, usize, u64), ConnectorError> {
    let complete = match last {
        true => data.len(),
        false => memchr::memrchr(b'\n', data).map_or(0, |end| end + 1),
    };
    let data = &data[..complete];
    let mut sink = RowSink::new(partition, schema, batch_size);
    let names = FieldNames::new(schema);
    for (index, line) in lines(data).enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let offset = first_line + index as u64;
        if !push_declared_fields(&mut sink, &names, offset, line)? {
            push_json_record(&mut sink, offset, line, &[], "line")?;
        }
    }
    let newlines = memchr::memchr_iter(b'\n', data).count() as u64;
    Ok((sink.finish()?, complete, newlines))
}

/// The lines of `data` (split at each `\n`, found with `memchr`), the last one even if empty.
fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let current = rest?;
        match memchr::memchr(b'\n', current) {
            Some(end) => {
                rest = Some(&current[end + 1..]);
                Some(&current[..end])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

/// Appends the record at `offset` as a row when it is one JSON object whose declared fields all
/// convert (parsed without a `Value` tree, see [`FieldNames`]); `false` when it is not, for the
/// general decoder to decode it and say why.
pub(super) fn push_declared_fields(
    sink: &mut RowSink<'_>,
    names: &FieldNames,
    offset: u64,
    record: &[u8],
) -> Result<bool, ConnectorError> {
    let Some(fields) = names.parse(record) else {
        return Ok(false);
    };
    let mut cells = Vec::with_capacity(fields.len());
    for (index, value) in fields.iter().enumerate() {
        let Some(cell) = sink
            .target(index)
            .and_then(|target| Scalar::cell(value.as_ref(), &target))
        else {
            return Ok(false);
        };
        cells.push(cell);
    }
    sink.push_cells(offset, &cells)?;
    Ok(true)
}

/// Decodes one JSON object (a line, a message) at `offset` into `sink`: a row, or a dead
/// letter saying why not. `extra` supplies columns from outside the object (a message's key,
/// timestamp or headers); they take precedence over fields of the same name. `what` names the
/// record in details ("line", "message").
pub(super) fn push_json_record(
    sink: &mut RowSink<'_>,
    offset: u64,
    record: &[u8],
    extra: &[(&str, Value)],
    what: &str,
) -> Result<(), ConnectorError> {
    let text = match std::str::from_utf8(record) {
        Ok(text) => text,
        Err(e) => {
            let reject = Reject {
                reason: DeadLetterReason::InvalidUtf8,
                detail: format!(
                    "{what} is not valid UTF-8 (first invalid byte at byte {} of the {what}); \
                     `raw` shows invalid bytes as U+FFFD",
                    e.valid_up_to() + 1
                ),
            };
            sink.reject(offset, reject, String::from_utf8_lossy(record).into_owned());
            return Ok(());
        }
    };
    let object = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(object)) => object,
        Ok(other) => {
            let kind = match other {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a bool",
                _ => "null",
            };
            let reject = Reject {
                reason: DeadLetterReason::MalformedRecord,
                detail: format!("expected a JSON object, found {kind}"),
            };
            sink.reject(offset, reject, text.to_string());
            return Ok(());
        }
        Err(e) => {
            let reject = Reject {
                reason: DeadLetterReason::MalformedRecord,
                detail: format!("invalid JSON: {e}"),
            };
            sink.reject(offset, reject, text.to_string());
            return Ok(());
        }
    };
    sink.push_row(
        offset,
        |target, _| {
            let name = target.spec.name.as_str();
            match extra.iter().find(|(column, _)| *column == name) {
                Some((_, value)) => target.convert_json(Some(value)),
                None => target.convert_json(object.get(name)),
            }
        },
        || text.to_string(),
    )
}

#[cfg(test)]
mod tests {
    use arrow::array::{AsArray, Float64Array, Int64Array};
    use arrow::datatypes::TimestampMicrosecondType;

    use crate::dead_letter::DeadLetterReason as R;
    use crate::decode::{decode_file, FileFormat};

    use crate::decode::tests::text_schema as schema;

    #[test]
    fn every_reason_with_exact_line_numbers() {
        let mut data = Vec::new();
        let lines: [&[u8]; 13] = [
            br#"{"id":1,"amount":1.5,"ok":true,"name":"a","t":"2026-01-01T00:00:00Z","extra":[1]}"#, // 1 good
            b"",                                                      // 2 blank
            br#"{"id":2,"t":"2026-01-01T00:00:00Z""#,                 // 3 malformed
            br#"[1,2]"#,                                              // 4 not an object
            br#"{"id":3,"amount":"abc","t":"2026-01-01T00:00:00Z"}"#, // 5 wrong type
            br#"{"amount":1,"t":"2026-01-01T00:00:00Z"}"#,            // 6 missing id
            br#"{"id":null,"t":"2026-01-01T00:00:00Z"}"#,             // 7 null id
            br#"{"id":4}"#,                                           // 8 missing event time
            br#"{"id":5,"t":"yesterday"}"#,                           // 9 invalid event time
            b"{\"id\":6,\"name\":\"\xff\xfe\",\"t\":1767225600000}",  // 10 invalid utf-8
            br#"{"id":7,"amount":2,"t":1767225600123}"#,              // 11 good, epoch ms
            br#"{"id":8.0,"t":"2026-01-01 00:00:00.5"}"#,             // 12 float for int
            b"   \r",                                                 // 13 blank
        ];
        for line in lines {
            data.extend_from_slice(line);
            data.push(b'\n');
        }
        data.extend_from_slice(br#"{"id":9,"t":"2026-01-01T00:00:00.123+02:00"}"#); // 14, no newline

        let decoded = decode_file(FileFormat::Ndjson, "f.ndjson", &data, &schema(), 2).unwrap();
        let got: Vec<(u64, R)> = decoded
            .dead_letters
            .iter()
            .map(|d| (d.offset, d.reason))
            .collect();
        assert_eq!(
            got,
            vec![
                (3, R::MalformedRecord),
                (4, R::MalformedRecord),
                (5, R::WrongType),
                (6, R::MissingField),
                (7, R::MissingField),
                (8, R::MissingEventTime),
                (9, R::InvalidEventTime),
                (10, R::InvalidUtf8),
                (12, R::WrongType),
            ]
        );
        let wrong = &decoded.dead_letters[2];
        assert_eq!(
            wrong.detail,
            "field `amount`: expected float, found string \"abc\""
        );
        assert_eq!(
            wrong.raw,
            r#"{"id":3,"amount":"abc","t":"2026-01-01T00:00:00Z"}"#
        );
        assert_eq!(wrong.partition, "f.ndjson");
        assert!(decoded.dead_letters[7].raw.contains('\u{FFFD}'));

        assert_eq!(decoded.batches.len(), 2, "batch_size 2 splits 3 good rows");
        let offsets: Vec<u64> = decoded
            .batches
            .iter()
            .flat_map(|b| b.offsets.clone())
            .collect();
        assert_eq!(offsets, vec![1, 11, 14]);
        let first = &decoded.batches[0].batch;
        assert_eq!(first.schema(), schema().arrow_schema());
        let ids = first
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(ids.values().to_vec(), vec![1, 7]);
        let amounts = first
            .column(1)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        assert_eq!(amounts.value(1), 2.0);
        let times = first.column(4).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(times.value(0), 1_767_225_600_000_000);
        assert_eq!(times.value(1), 1_767_225_600_123_000);
        let last = decoded.batches[1]
            .batch
            .column(4)
            .as_primitive::<TimestampMicrosecondType>();
        assert_eq!(last.value(0), 1_767_225_600_123_000 - 7_200_000_000);
        assert!(decoded.batches[1].batch.column(1).is_null(0));
    }

    /// The declared-field path and the general decoder give the same rows and dead letters on
    /// records that probe their differences: numbers of every kind for every type, escapes,
    /// repeated keys, nested values, nulls, missing fields, timestamps in every form.
    #[test]
    fn the_declared_field_path_decodes_as_the_general_one() {
        let ids = [
            "1",
            "-0",
            "8.0",
            "1e2",
            "9223372036854775807",
            "9223372036854775808",
            "18446744073709551616",
            "\"7\"",
            "true",
            "null",
            "[1]",
            "{}",
        ];
        let amounts = [
            "2.5",
            "3",
            "-1e-300",
            "18446744073709551615",
            "\"2.5\"",
            "null",
            "{\"a\":1}",
        ];
        let names = [
            "\"plain\"",
            "\"esc\\\"aped\\u00e9\"",
            "5",
            "null",
            "[\"x\"]",
        ];
        let times = [
            "\"2026-01-01T00:00:00Z\"",
            "\"2026-01-01 00:00:00.5\"",
            "1767225600123",
            "1767225600123.0",
            "\"soon\"",
            "null",
            "-1",
        ];
        let mut lines = Vec::new();
        let mut k = 0usize;
        for id in ids {
            for amount in amounts {
                let name = names[k % names.len()];
                let t = times[k % times.len()];
                k += 1;
                lines.push(match k % 5 {
                    0 => format!("{{\"id\":{id},\"amount\":{amount},\"name\":{name},\"t\":{t}}}"),
                    1 => format!("{{\"t\":{t},\"name\":{name},\"extra\":{{\"deep\":[1,2,{{}}]}},\"amount\":{amount},\"id\":{id}}}"),
                    2 => format!("{{\"id\":{id},\"id\":1,\"amount\":{amount},\"t\":{t},\"ok\":true}}"),
                    3 => format!("{{\"amount\":{amount},\"t\":{t},\"ok\":\"yes\"}} "),
                    _ => format!("  {{\"id\":{id},\"amount\":{amount},\"name\":{name},\"t\":{t},\"t\":\"2026-02-01T00:00:00Z\"}}\r"),
                });
            }
        }
        lines.push("{\"id\":1,\"t\":1} trailing".into());
        lines.push("\u{feff}{\"id\":1,\"t\":1}".into());
        let data = lines.join("\n");
        let fast = decode_file(FileFormat::Ndjson, "f", data.as_bytes(), &schema(), 7).unwrap();
        let schema = schema();
        let mut sink = super::RowSink::new("f", &schema, 7);
        for (i, line) in data.split('\n').enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            super::push_json_record(&mut sink, i as u64 + 1, line.as_bytes(), &[], "line").unwrap();
        }
        let general = sink.finish().unwrap();
        let rows = |d: &crate::decode::Decoded| {
            d.batches
                .iter()
                .map(|b| (b.batch.clone(), b.offsets.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(rows(&fast), rows(&general));
        assert_eq!(fast.dead_letters, general.dead_letters);
        assert!(
            fast.batches
                .iter()
                .map(|b| b.batch.num_rows())
                .sum::<usize>()
                > 10
        );
        assert!(fast.dead_letters.len() > 10);
    }

    #[test]
    fn empty_input_gives_nothing() {
        let decoded = decode_file(FileFormat::Ndjson, "f", b"\n\n", &schema(), 10).unwrap();
        assert!(decoded.batches.is_empty());
        assert!(decoded.dead_letters.is_empty());
    }
}
