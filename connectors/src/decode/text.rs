//! NDJSON and CSV files decoded piece by piece: an object is read by ranges of
//! [`TEXT_PIECE_BYTES`] and each piece's complete records are decoded and handed on before
//! the next is read, so memory holds a piece (and a record cut at its end), not the file. Line
//! numbers, dead letters and rows are those of decoding the file whole.

use super::csv::CsvProgress;
use super::{csv, ndjson, Decoded, FileFormat};
use crate::error::ConnectorError;
use crate::object_ranges::ObjectRanges;
use crate::schema::DeclaredSchema;

/// Bytes read from an object per request when decoding NDJSON or CSV.
pub const TEXT_PIECE_BYTES: u64 = 8 << 20;

/// A text file (NDJSON or CSV) decoded as its bytes arrive.
pub struct TextDecoder<'s> {
    format: FileFormat,
    partition: String,
    schema: &'s DeclaredSchema,
    batch_size: usize,
    /// Bytes after the last complete record decoded (a record cut short).
    pending: Vec<u8>,
    /// NDJSON: the line number of `pending`'s first byte.
    line: u64,
    /// CSV: the header and the line number of `pending`'s first byte.
    csv: CsvProgress,
}

impl<'s> TextDecoder<'s> {
    /// A decoder of file `partition` in `format` (NDJSON or CSV) into batches of at most
    /// `batch_size` rows (0 is 1).
    pub fn new(
        format: FileFormat,
        partition: &str,
        schema: &'s DeclaredSchema,
        batch_size: usize,
    ) -> Result<Self, ConnectorError> {
        if format == FileFormat::Parquet {
            return Err(ConnectorError::Parquet {
                partition: partition.to_string(),
                detail: "Parquet is read by row groups, not as text".to_string(),
            });
        }
        Ok(TextDecoder {
            format,
            partition: partition.to_string(),
            schema,
            batch_size: batch_size.max(1),
            pending: Vec::new(),
            line: 1,
            csv: CsvProgress::default(),
        })
    }

    /// Takes the file's next `bytes` (`last`: they end the file) and decodes every record they
    /// complete; a record cut short waits for the next bytes.
    pub fn push(&mut self, bytes: &[u8], last: bool) -> Result<Decoded, ConnectorError> {
        let mut pending = std::mem::take(&mut self.pending);
        let data: &[u8] = match pending.is_empty() {
            true => bytes,
            false => {
                pending.extend_from_slice(bytes);
                &pending
            }
        };
        let (decoded, consumed) = match self.format {
            FileFormat::Ndjson => {
                let (decoded, consumed, lines) = ndjson::decode_chunk(
                    &self.partition,
                    data,
                    last,
                    self.line,
                    self.schema,
                    self.batch_size,
                )?;
                self.line += lines;
                (decoded, consumed)
            }
            FileFormat::Csv => csv::decode_chunk(
                &self.partition,
                data,
                last,
                &mut self.csv,
                self.schema,
                self.batch_size,
            )?,
            FileFormat::Parquet => unreachable!("refused by TextDecoder::new"),
        };
        let rest = &data[consumed..];
        if pending.is_empty() {
            self.pending = rest.to_vec();
        } else {
            pending.drain(..consumed);
            self.pending = pending;
        }
        Ok(decoded)
    }
}

/// Decodes text object `object` (file `partition`, NDJSON or CSV) piece by piece, handing each
/// piece's rows and dead letters to `emit` (which returns `false` to stop) before reading the
/// next; `runtime` runs the reads (this is called on a blocking thread).
pub fn decode_text_object(
    format: FileFormat,
    (partition, object): (&str, &ObjectRanges),
    schema: &DeclaredSchema,
    batch_size: usize,
    runtime: &tokio::runtime::Handle,
    mut emit: impl FnMut(Decoded) -> bool,
) -> Result<(), ConnectorError> {
    let mut decoder = TextDecoder::new(format, partition, schema, batch_size)?;
    let size = object.size();
    let mut next = 0;
    loop {
        let end = size.min(next + TEXT_PIECE_BYTES);
        let bytes = match next < end {
            true => runtime.block_on(object.read(next..end)).map_err(|source| {
                ConnectorError::ObjectStore {
                    location: partition.to_string(),
                    source,
                }
            })?,
            false => Default::default(),
        };
        next = end;
        let last = next >= size;
        if !emit(decoder.push(&bytes, last)?) || last {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::decode_file;

    /// Rows (offset and every column, as text) and dead letters (offset, reason, raw) of
    /// `decoded`, to compare decodings.
    fn summary(decoded: &[Decoded]) -> (Vec<String>, Vec<String>) {
        let mut rows = Vec::new();
        let mut dead = Vec::new();
        for d in decoded {
            for b in &d.batches {
                for r in 0..b.batch.num_rows() {
                    let cells: Vec<String> = (b.batch.columns().iter())
                        .map(|c| arrow::util::display::array_value_to_string(c, r).unwrap())
                        .collect();
                    rows.push(format!("{} {}", b.offsets[r], cells.join("|")));
                }
            }
            for l in &d.dead_letters {
                dead.push(format!("{} {:?} {}", l.offset, l.reason, l.raw));
            }
        }
        (rows, dead)
    }

    /// Decoding `data` in pieces of every size from 1 to 40 bytes gives what decoding it whole
    /// gives: the same rows and dead letters at the same line numbers.
    fn pieces_decode_as_the_whole(format: FileFormat, data: &[u8]) {
        let schema = crate::decode::tests::text_schema();
        let whole = decode_file(format, "f", data, &schema, 3).unwrap();
        let expected = summary(&[whole]);
        assert!(!expected.0.is_empty() && !expected.1.is_empty());
        for size in 1..=40 {
            let mut decoder = TextDecoder::new(format, "f", &schema, 3).unwrap();
            let mut decoded = Vec::new();
            let pieces: Vec<&[u8]> = data.chunks(size).collect();
            for (i, piece) in pieces.iter().enumerate() {
                decoded.push(decoder.push(piece, i + 1 == pieces.len()).unwrap());
            }
            assert_eq!(
                summary(&decoded),
                expected,
                "{format:?} in pieces of {size} bytes"
            );
            assert!(decoder.pending.is_empty());
        }
    }

    #[test]
    fn ndjson_in_pieces_decodes_as_the_whole_file() {
        let data = concat!(
            "{\"id\":1,\"amount\":1.5,\"t\":\"2026-01-01T00:00:00Z\",\"name\":\"a\"}\n",
            "\n",
            "{\"id\":2,\"t\":\"2026-01-01T00:00:00Z\"\r\n",
            "{\"id\":3,\"amount\":\"abc\",\"t\":\"2026-01-01T00:00:00Z\"}\n",
            "   \n",
            "{\"id\":4,\"amount\":2,\"t\":1767225600123,\"name\":\"a long name to cut somewhere\"}\n",
            "{\"id\":5,\"t\":\"2026-01-01 00:00:00.5\"}",
        );
        pieces_decode_as_the_whole(FileFormat::Ndjson, data.as_bytes());
    }

    #[test]
    fn csv_in_pieces_decodes_as_the_whole_file_quoted_newlines_included() {
        let mut data: Vec<u8> = Vec::new();
        data.extend_from_slice(b"\xEF\xBB\xBFt,extra,id,amount,ok,name\r\n");
        data.extend_from_slice(b"2026-01-01T00:00:00Z,x,1,1.5,true,\"a,b\"\n");
        data.extend_from_slice(b"\n");
        data.extend_from_slice(b"2026-01-01T00:00:00Z,x,2,1.5\n");
        data.extend_from_slice(b"1767225600123,x,7,,,\"multi\nline\n\"\"quoted\"\"\"\n");
        data.extend_from_slice(b"2026-01-01T00:00:00Z,\xff,6,1,true,n\n");
        data.extend_from_slice(b"2026-01-01 00:00:00,x,9,2,FALSE,z");
        pieces_decode_as_the_whole(FileFormat::Csv, &data);
    }
}
