//! Parquet decoding: select the declared columns by name, cast them to the declared types, and
//! dead-letter rows whose non-nullable values are null or failed to cast; offset = 0-based row
//! index in the file.

use std::sync::Arc;

use arrow::array::{new_null_array, Array, ArrayRef, BooleanArray};
use arrow::compute::{can_cast_types, cast_with_options, filter_record_batch, CastOptions};
use arrow::datatypes::{Field, Schema};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use parquet::arrow::arrow_reader::{ArrowReaderBuilder, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;

use super::convert::Reject;
use super::Decoded;
use crate::dead_letter::{DeadLetter, DeadLetterReason};
use crate::error::ConnectorError;
use crate::position::SourceBatch;
use crate::render::json_row;
use crate::schema::{column_list, DeclaredSchema, FieldSpec, FieldType};

fn file_error(partition: &str, detail: String) -> ConnectorError {
    ConnectorError::Parquet {
        partition: partition.to_string(),
        detail,
    }
}

/// Why row `row` must be rejected, if it must: checks the event-time column first, then the
/// others in declared order.
fn row_reject(
    schema: &DeclaredSchema,
    order: &[usize],
    source: &[Option<ArrayRef>],
    cast: &[ArrayRef],
    row: usize,
) -> Option<Reject> {
    for &i in order {
        let (Some(field), Some(column)) = (schema.fields.get(i), cast.get(i)) else {
            continue;
        };
        if column.is_valid(row) {
            continue;
        }
        let is_event_time = field.name == schema.event_time;
        let original = source.get(i).and_then(Option::as_ref);
        let present = original.is_some_and(|a| a.is_valid(row));
        if present {
            let (reason, what) = if is_event_time {
                (DeadLetterReason::InvalidEventTime, "event-time field")
            } else {
                (DeadLetterReason::WrongType, "field")
            };
            let found = original
                .map(|a| crate::render::json_value(a.as_ref(), row).to_string())
                .unwrap_or_default();
            return Some(Reject {
                reason,
                detail: format!(
                    "{what} `{}`: value {found} cannot be converted to {}",
                    field.name,
                    field.field_type.as_str()
                ),
            });
        }
        let what = if original.is_some() {
            "is null"
        } else {
            "is missing"
        };
        if is_event_time {
            return Some(Reject {
                reason: DeadLetterReason::MissingEventTime,
                detail: format!("event-time field `{}` {what}", field.name),
            });
        }
        if !field.nullable {
            return Some(Reject {
                reason: DeadLetterReason::MissingField,
                detail: format!(
                    "non-nullable field `{}` {what}; declare it `nullable: true` to accept this",
                    field.name
                ),
            });
        }
    }
    None
}

/// The rows [`row_reject`] rejects, found column by column over validity bitmaps (a null
/// after the cast where the value was present, or in the event time or a non-nullable
/// field); `None` when there are none. Checking every row of a batch with a nullable column
/// that holds nulls, field by field, cost more than the casts.
fn rejectable_rows(
    schema: &DeclaredSchema,
    source: &[Option<ArrayRef>],
    cast: &[ArrayRef],
) -> Option<arrow::buffer::BooleanBuffer> {
    let mut suspects: Option<arrow::buffer::BooleanBuffer> = None;
    for (i, (field, column)) in schema.fields.iter().zip(cast).enumerate() {
        let Some(valid) = column.logical_nulls() else {
            continue;
        };
        let null = !valid.inner();
        let rejected = if field.name == schema.event_time || !field.nullable {
            null
        } else {
            match source.get(i).and_then(Option::as_ref) {
                // A missing nullable column is all null, as declared.
                None => continue,
                Some(original) => match original.logical_nulls() {
                    Some(present) => &null & present.inner(),
                    None => null,
                },
            }
        };
        if rejected.count_set_bits() == 0 {
            continue;
        }
        suspects = Some(match suspects {
            Some(suspects) => &suspects | &rejected,
            None => rejected,
        });
    }
    suspects
}

/// An integer column declared as a timestamp, read in the field's declared epoch unit (a plain
/// cast would take the integers as microseconds); any other column as it is.
fn epoch_integers(
    column: &ArrayRef,
    field: &FieldSpec,
    options: &CastOptions,
) -> Result<ArrayRef, arrow::error::ArrowError> {
    if field.field_type == FieldType::Timestamp && column.data_type().is_integer() {
        let unit = field.epoch_unit().arrow_unit();
        let wide = cast_with_options(column, &arrow::datatypes::DataType::Int64, options)?;
        return cast_with_options(
            &wide,
            &arrow::datatypes::DataType::Timestamp(unit, None),
            options,
        );
    }
    Ok(Arc::clone(column))
}

pub(super) fn decode(
    partition: &str,
    data: &[u8],
    schema: &DeclaredSchema,
    batch_size: usize,
) -> Result<Decoded, ConnectorError> {
    let mut all = Decoded::default();
    decode_chunks(
        partition,
        Bytes::copy_from_slice(data),
        schema,
        batch_size,
        |chunk| {
            all.batches.extend(chunk.batches);
            all.dead_letters.extend(chunk.dead_letters);
            true
        },
    )?;
    Ok(all)
}

/// Decodes the Parquet file `data` batch by batch, handing each batch's good rows and dead
/// letters to `emit` as soon as they are decoded (in row order), until `emit` returns false:
/// memory holds the file and one batch, not the decoded file.
pub fn decode_chunks(
    partition: &str,
    data: Bytes,
    schema: &DeclaredSchema,
    batch_size: usize,
    emit: impl FnMut(Decoded) -> bool,
) -> Result<(), ConnectorError> {
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(data).map_err(|e| metadata_error(partition, e))?;
    let reader = projected(partition, builder, schema, batch_size)?
        .build()
        .map_err(|e| file_error(partition, format!("cannot start reading: {e}")))?;
    convert_batches(
        partition,
        schema,
        reader.map(|r| r.map_err(|e| e.to_string())),
        emit,
    )
}

/// [`decode_chunks`] of a Parquet object, reading only what it decodes: the footer, then each
/// row group's chunks of the declared columns (ranged reads, coalesced), so memory holds one
/// row group's columns and one batch, whatever the file's size. Runs on a blocking thread of
/// the runtime `runtime` (it waits for the reads there). With more than one core and column,
/// the columns are decoded in two halves on two threads (`column_halves`); the second half
/// runs at most two batches ahead, so at a row group's end memory may hold its half of the
/// next row group's columns too.
pub fn decode_object_chunks(
    (partition, object): (&str, crate::object_ranges::ObjectRanges),
    schema: &DeclaredSchema,
    batch_size: usize,
    runtime: &tokio::runtime::Handle,
    emit: impl FnMut(Decoded) -> bool,
) -> Result<(), ConnectorError> {
    use futures::StreamExt;
    use parquet::arrow::arrow_reader::ArrowReaderMetadata;
    use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
    let metadata = runtime
        .block_on(ArrowReaderMetadata::load_async(
            &mut object.clone(),
            Default::default(),
        ))
        .map_err(|e| metadata_error(partition, e))?;
    let builder = |roots: &[usize]| {
        let builder =
            ParquetRecordBatchStreamBuilder::new_with_metadata(object.clone(), metadata.clone());
        (with_roots(builder, roots, batch_size).build())
            .map_err(|e| file_error(partition, format!("cannot start reading: {e}")))
    };
    let roots = projected_roots(partition, metadata.schema(), schema)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let Some((first, second)) = column_halves(metadata.metadata(), &roots).filter(|_| cores > 1)
    else {
        let mut stream = builder(&roots)?;
        let batches = std::iter::from_fn(|| runtime.block_on(stream.next()));
        return convert_batches(
            partition,
            schema,
            batches.map(|r| r.map_err(|e| e.to_string())),
            emit,
        );
    };
    let (mut ours, mut theirs) = (builder(&first)?, builder(&second)?);
    let join = HalvesJoin::new(&roots, &first, ours.schema(), theirs.schema());
    std::thread::scope(|scope| {
        // The second half runs at most two batches ahead; it stops when the receiver goes.
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        scope.spawn(move || {
            while let Some(batch) = runtime.block_on(theirs.next()) {
                if tx.send(batch.map_err(|e| e.to_string())).is_err() {
                    break;
                }
            }
        });
        let batches = std::iter::from_fn(|| runtime.block_on(ours.next())).map(|batch| {
            let batch = batch.map_err(|e| e.to_string())?;
            let other = rx
                .recv()
                .map_err(|_| "the file's other columns ended before these".to_string())??;
            join.join(&batch, &other)
        });
        convert_batches(partition, schema, batches, emit)
    })
}

/// The projected root columns `roots` split in two halves of about equal compressed bytes
/// (each in file order), to be decoded in parallel; `None` for fewer than two columns.
fn column_halves(
    metadata: &parquet::file::metadata::ParquetMetaData,
    roots: &[usize],
) -> Option<(Vec<usize>, Vec<usize>)> {
    if roots.len() < 2 {
        return None;
    }
    let descriptor = metadata.file_metadata().schema_descr();
    let mut bytes = vec![0i64; descriptor.root_schema().get_fields().len()];
    for group in metadata.row_groups() {
        for (leaf, column) in group.columns().iter().enumerate() {
            bytes[descriptor.get_column_root_idx(leaf)] += column.compressed_size();
        }
    }
    let mut by_size = roots.to_vec();
    by_size.sort_by_key(|&r| std::cmp::Reverse(bytes[r]));
    let (mut halves, mut sizes) = ((Vec::new(), Vec::new()), (0, 0));
    for root in by_size {
        if sizes.0 <= sizes.1 {
            halves.0.push(root);
            sizes.0 += bytes[root];
        } else {
            halves.1.push(root);
            sizes.1 += bytes[root];
        }
    }
    halves.0.sort_unstable();
    halves.1.sort_unstable();
    Some(halves)
}

/// How the batches of the two halves of the columns join into one batch of every projected
/// column, in file order: worked out once per file, not per batch.
struct HalvesJoin {
    schema: arrow::datatypes::SchemaRef,
    /// Per joined column: whether it comes from the first half, and its index there.
    picks: Vec<(bool, usize)>,
}

impl HalvesJoin {
    /// The join of the batches of columns `first` (of schema `ours`) and of the rest of
    /// `roots` (of schema `theirs`).
    fn new(
        roots: &[usize],
        first: &[usize],
        ours: &arrow::datatypes::SchemaRef,
        theirs: &arrow::datatypes::SchemaRef,
    ) -> Self {
        let (mut a, mut b) = (0, 0);
        let mut fields = Vec::with_capacity(roots.len());
        let mut picks = Vec::with_capacity(roots.len());
        for root in roots {
            let (schema, from_first, i) = if first.contains(root) {
                a += 1;
                (ours, true, a - 1)
            } else {
                b += 1;
                (theirs, false, b - 1)
            };
            fields.push(schema.field(i).clone());
            picks.push((from_first, i));
        }
        HalvesJoin {
            schema: Arc::new(Schema::new(fields)),
            picks,
        }
    }

    /// One batch of every column from the batches of the same rows decoded from the first
    /// half (`ours`) and from the second (`theirs`).
    fn join(&self, ours: &RecordBatch, theirs: &RecordBatch) -> Result<RecordBatch, String> {
        if ours.num_rows() != theirs.num_rows() {
            return Err(format!(
                "the file's columns were read in batches of {} and {} rows (internal error)",
                ours.num_rows(),
                theirs.num_rows()
            ));
        }
        let columns = (self.picks.iter())
            .map(|&(from_first, i)| {
                let batch = if from_first { ours } else { theirs };
                Arc::clone(batch.column(i))
            })
            .collect();
        RecordBatch::try_new(Arc::clone(&self.schema), columns).map_err(|e| e.to_string())
    }
}

fn metadata_error(partition: &str, e: parquet::errors::ParquetError) -> ConnectorError {
    file_error(
        partition,
        format!(
            "cannot read the file metadata: {e}; the file is truncated, corrupt or not Parquet"
        ),
    )
}

/// `builder` (of a whole file or of ranged reads) reading the file columns of the declared
/// `schema`, in batches of `batch_size` rows.
fn projected<T>(
    partition: &str,
    builder: ArrowReaderBuilder<T>,
    schema: &DeclaredSchema,
    batch_size: usize,
) -> Result<ArrowReaderBuilder<T>, ConnectorError> {
    let roots = projected_roots(partition, builder.schema(), schema)?;
    Ok(with_roots(builder, &roots, batch_size))
}

/// `builder` reading the file's top-level columns `roots`, in batches of `batch_size` rows.
fn with_roots<T>(
    builder: ArrowReaderBuilder<T>,
    roots: &[usize],
    batch_size: usize,
) -> ArrowReaderBuilder<T> {
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots.iter().copied());
    (builder.with_projection(mask)).with_batch_size(batch_size.max(1))
}

/// The file's top-level columns to read for the declared `schema` (by name), in file order,
/// checking that each declared column is there (or nullable) and converts to its declared
/// type.
fn projected_roots(
    partition: &str,
    file_schema: &arrow::datatypes::SchemaRef,
    schema: &DeclaredSchema,
) -> Result<Vec<usize>, ConnectorError> {
    // Declared column -> index of the top-level file column with that name.
    let mut file_index = Vec::with_capacity(schema.fields.len());
    for (i, field) in schema.fields.iter().enumerate() {
        let found = file_schema.index_of(&field.name).ok();
        match found {
            None if !schema.is_nullable(i) => {
                return Err(file_error(
                    partition,
                    format!(
                        "the file has no column `{}`, which is declared non-nullable (file \
                         columns: {}); fix the name in the schema or declare it `nullable: true`",
                        field.name,
                        column_list(file_schema)
                    ),
                ))
            }
            Some(j) => {
                let from = file_schema.field(j).data_type();
                let to = field.field_type.arrow_type();
                if !can_cast_types(from, &to) {
                    return Err(file_error(
                        partition,
                        format!(
                            "column `{}` has type {from}, which cannot be converted to the \
                             declared type {}; change the declared type",
                            field.name,
                            field.field_type.as_str()
                        ),
                    ));
                }
            }
            None => {}
        }
        file_index.push(found);
    }

    let mut roots: Vec<usize> = file_index.iter().flatten().copied().collect();
    roots.sort_unstable();
    roots.dedup();
    Ok(roots)
}

/// Converts decoded `batches` (the declared columns) to the declared types, dead-lettering
/// rows that break the schema, and hands each batch's outcome to `emit` until it returns false.
fn convert_batches(
    partition: &str,
    schema: &DeclaredSchema,
    batches: impl Iterator<Item = Result<RecordBatch, String>>,
    mut emit: impl FnMut(Decoded) -> bool,
) -> Result<(), ConnectorError> {
    let declared = schema.arrow_schema();
    // Nulls are filtered out only after building, so the working batch allows them everywhere.
    let relaxed = Arc::new(Schema::new(
        declared
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), f.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let event_time = schema.event_time_index();
    let order: Vec<usize> = std::iter::once(event_time)
        .chain((0..schema.fields.len()).filter(|&i| i != event_time))
        .collect();
    let cast_options = CastOptions {
        safe: true,
        ..CastOptions::default()
    };
    let arrow_error = |source| ConnectorError::Arrow {
        context: partition.to_string(),
        source,
    };

    let mut base: u64 = 0;
    for read in batches {
        let mut decoded = Decoded::default();
        let chunk = read.map_err(|e| {
            file_error(
                partition,
                format!(
                    "cannot decode data near row {base}: {e}; the file is corrupt, or written \
                     in a way Quiver does not read"
                ),
            )
        })?;
        let rows = chunk.num_rows();
        let source: Vec<Option<ArrayRef>> = schema
            .fields
            .iter()
            .map(|f| chunk.column_by_name(&f.name).cloned())
            .collect();
        let mut cast = Vec::with_capacity(source.len());
        for (field, column) in schema.fields.iter().zip(&source) {
            let to = field.field_type.arrow_type();
            cast.push(match column {
                None => new_null_array(&to, rows),
                Some(column) => epoch_integers(column, field, &cast_options)
                    .and_then(|column| cast_with_options(&column, &to, &cast_options))
                    .map_err(|e| {
                        file_error(
                            partition,
                            format!(
                                "cannot convert column `{}` to {}: {e}; change the declared type",
                                field.name,
                                field.field_type.as_str()
                            ),
                        )
                    })?,
            });
        }

        let mut keep = Vec::with_capacity(rows);
        let mut offsets = Vec::with_capacity(rows);
        let suspects = rejectable_rows(schema, &source, &cast);
        for row in 0..rows {
            let offset = base + row as u64;
            let reject = match &suspects {
                Some(suspects) if suspects.value(row) => {
                    row_reject(schema, &order, &source, &cast, row)
                }
                _ => None,
            };
            match reject {
                None => {
                    keep.push(true);
                    offsets.push(offset);
                }
                Some(reject) => {
                    keep.push(false);
                    decoded.dead_letters.push(DeadLetter {
                        reason: reject.reason,
                        detail: reject.detail,
                        partition: partition.to_string(),
                        offset,
                        raw: json_row(&chunk, row),
                    });
                }
            }
        }
        base += rows as u64;

        let working = RecordBatch::try_new(relaxed.clone(), cast).map_err(arrow_error)?;
        let kept = if offsets.len() == rows {
            working
        } else {
            filter_record_batch(&working, &BooleanArray::from(keep)).map_err(arrow_error)?
        };
        if kept.num_rows() > 0 {
            let batch = RecordBatch::try_new(declared.clone(), kept.columns().to_vec())
                .map_err(arrow_error)?;
            decoded.batches.push(SourceBatch {
                batch,
                partition: partition.to_string(),
                offsets,
            });
        }
        if !emit(decoded) {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        AsArray, Float64Array, Int32Array, Int64Array, StringArray, TimestampMillisecondArray,
    };
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit, TimestampMicrosecondType};
    use arrow::record_batch::RecordBatch;

    use crate::dead_letter::DeadLetterReason as R;
    use crate::decode::{decode_file, FileFormat};
    use crate::error::ConnectorError;
    use crate::schema::{DeclaredSchema, EpochUnit, FieldSpec, FieldType};
    use crate::writer::write_file;

    use super::{decode_chunks, decode_object_chunks};
    use crate::decode::Decoded;

    fn schema() -> DeclaredSchema {
        DeclaredSchema::new(
            vec![
                FieldSpec::new("id", FieldType::Int, false),
                FieldSpec::new("amount", FieldType::Float, true),
                FieldSpec::new("note", FieldType::String, true),
                FieldSpec::new("t", FieldType::Timestamp, false),
            ],
            "t",
        )
        .unwrap()
    }

    /// A file whose types differ from the declared ones (Int32, ms timestamps, strings for
    /// floats) and that has an extra column and lacks the nullable `note`.
    fn file_batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("extra", DataType::Utf8, true),
            Field::new("t", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            Field::new("amount", DataType::Utf8, true),
            Field::new("id", DataType::Int32, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["a", "b", "c", "d", "e"])),
                Arc::new(TimestampMillisecondArray::from(vec![
                    Some(1_767_225_600_000),
                    None,
                    Some(1_767_225_600_002),
                    Some(1_767_225_600_003),
                    Some(1_767_225_600_004),
                ])),
                Arc::new(StringArray::from(vec![
                    Some("1.5"),
                    Some("2"),
                    Some("oops"),
                    None,
                    Some("4"),
                ])),
                Arc::new(Int32Array::from(vec![
                    Some(0),
                    Some(1),
                    Some(2),
                    Some(3),
                    None,
                ])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn roundtrip_with_casts_and_dead_letters() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.parquet");
        assert_eq!(
            write_file(FileFormat::Parquet, &path, &[file_batch()]).unwrap(),
            5
        );
        let data = std::fs::read(&path).unwrap();
        let decoded = decode_file(FileFormat::Parquet, "x.parquet", &data, &schema(), 2).unwrap();

        let got: Vec<(u64, R)> = decoded
            .dead_letters
            .iter()
            .map(|d| (d.offset, d.reason))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, R::MissingEventTime),
                (2, R::WrongType),
                (4, R::MissingField)
            ]
        );
        assert_eq!(
            decoded.dead_letters[0].raw,
            r#"{"t":null,"amount":"2","id":1}"#
        );
        assert!(decoded.dead_letters[1].detail.contains("`amount`"));

        let offsets: Vec<u64> = decoded
            .batches
            .iter()
            .flat_map(|b| b.offsets.clone())
            .collect();
        assert_eq!(offsets, vec![0, 3]);
        let first = &decoded.batches[0].batch;
        assert_eq!(first.schema(), schema().arrow_schema());
        let ids = first
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(ids.value(0), 0);
        let amounts = first
            .column(1)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        assert_eq!(amounts.value(0), 1.5);
        assert!(first.column(2).is_null(0), "absent nullable column is null");
        let t = first.column(3).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(t.value(0), 1_767_225_600_000_000);
        let second = &decoded.batches[1].batch;
        assert!(second.column(1).is_null(0), "null amount stays null");
    }

    #[test]
    fn files_of_every_common_codec_decode_alike() {
        use parquet::arrow::ArrowWriter;
        use parquet::basic::{BrotliLevel, Compression, GzipLevel, ZstdLevel};
        use parquet::file::properties::WriterProperties;
        // What other tools write: Polars zstd by default, Spark and pyarrow Snappy, Hive gzip.
        let codecs = [
            Compression::UNCOMPRESSED,
            Compression::SNAPPY,
            Compression::ZSTD(ZstdLevel::default()),
            Compression::GZIP(GzipLevel::default()),
            Compression::LZ4_RAW,
            Compression::LZ4,
            Compression::BROTLI(BrotliLevel::default()),
        ];
        let mut decoded = Vec::new();
        for codec in codecs {
            let mut data = Vec::new();
            let batch = file_batch();
            let properties = WriterProperties::builder().set_compression(codec).build();
            let mut writer = ArrowWriter::try_new(&mut data, batch.schema(), Some(properties))
                .expect("a writer");
            writer.write(&batch).unwrap();
            writer.close().unwrap();
            let file = decode_file(FileFormat::Parquet, "x.parquet", &data, &schema(), 2)
                .unwrap_or_else(|e| panic!("{codec:?}: {e}"));
            let rows: Vec<RecordBatch> = file.batches.iter().map(|b| b.batch.clone()).collect();
            assert_eq!(
                rows.iter().map(|b| b.num_rows()).sum::<usize>(),
                2,
                "{codec:?}"
            );
            decoded.push((codec, rows, file.dead_letters.len()));
        }
        for (codec, rows, dead) in &decoded[1..] {
            assert_eq!(rows, &decoded[0].1, "{codec:?}");
            assert_eq!(*dead, decoded[0].2, "{codec:?}");
        }
    }

    #[test]
    fn ranged_reads_of_a_file_of_many_row_groups_decode_what_the_whole_file_does() {
        use crate::object_ranges::ObjectRanges;
        use object_store::{memory::InMemory, ObjectStoreExt, PutPayload};
        // The same rows many times over, in row groups of 7 rows, plus a wide column nobody
        // declared (its chunks are never read).
        let one = file_batch();
        let wide = Arc::new(StringArray::from(vec!["x".repeat(1000); one.num_rows()]));
        let one = RecordBatch::try_new(
            Arc::new(Schema::new(
                (one.schema().fields().iter().map(|f| f.as_ref().clone()))
                    .chain([Field::new("unused", DataType::Utf8, false)])
                    .collect::<Vec<_>>(),
            )),
            one.columns().iter().cloned().chain([wide as _]).collect(),
        )
        .unwrap();
        let mut data = Vec::new();
        let props = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(7))
            .build();
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(&mut data, one.schema(), Some(props)).unwrap();
        for _ in 0..20 {
            writer.write(&one).unwrap();
        }
        writer.close().unwrap();
        let mut whole = Vec::new();
        decode_chunks("f", data.clone().into(), &schema(), 3, |d| {
            whole.push(d);
            true
        })
        .unwrap();

        let store = Arc::new(InMemory::new());
        let path = object_store::path::Path::from("f.parquet");
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let size = data.len() as u64;
        runtime
            .block_on(store.put(&path, PutPayload::from(data)))
            .unwrap();
        let object = ObjectRanges::new(store, path, size);
        let mut ranged = Vec::new();
        decode_object_chunks(("f", object.clone()), &schema(), 3, runtime.handle(), |d| {
            ranged.push(d);
            true
        })
        .unwrap();
        let flat = |all: &[Decoded]| {
            let offsets: Vec<u64> = (all.iter())
                .flat_map(|d| d.batches.iter().flat_map(|b| b.offsets.clone()))
                .collect();
            let letters: Vec<(u64, String, String)> = (all.iter())
                .flat_map(|d| d.dead_letters.iter())
                .map(|l| (l.offset, l.detail.clone(), l.raw.clone()))
                .collect();
            // Whole files are read in batches across row groups, ranged reads by row group.
            let batches: Vec<RecordBatch> = (all.iter())
                .flat_map(|d| d.batches.iter().map(|b| b.batch.clone()))
                .collect();
            let rows = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
            (offsets, letters, rows)
        };
        // (With more than one core, the ranged reads decode the columns in two halves.)
        let (offsets, letters, batches) = flat(&ranged);
        assert_eq!((offsets.clone(), letters.clone(), batches), flat(&whole));
        assert_eq!(offsets.len(), 40, "two good rows in each of the 20 copies");
        assert_eq!(letters.len(), 60);
        assert_eq!(*offsets.last().unwrap(), 98);

        // Stopping after the first chunk stops both halves.
        let mut chunks = 0;
        decode_object_chunks(("f", object), &schema(), 3, runtime.handle(), |_| {
            chunks += 1;
            false
        })
        .unwrap();
        assert_eq!(chunks, 1);
    }

    #[test]
    fn roundtrip_of_declared_schema_is_lossless() {
        let decoded_in = crate::decode::decode_file(
            FileFormat::Ndjson,
            "in",
            br#"{"id":1,"amount":2.25,"note":"n","t":"2026-01-01T00:00:00.000001Z"}
{"id":2,"t":"2026-01-02T00:00:00Z"}"#,
            &schema(),
            10,
        )
        .unwrap();
        let batch = decoded_in.batches[0].batch.clone();
        let dir = tempfile::tempdir().unwrap();
        for format in [FileFormat::Parquet, FileFormat::Ndjson, FileFormat::Csv] {
            let path = dir.path().join(format!("y.{}", format.as_str()));
            write_file(format, &path, std::slice::from_ref(&batch)).unwrap();
            let data = std::fs::read(&path).unwrap();
            let out = decode_file(format, "y", &data, &schema(), 10).unwrap();
            assert!(
                out.dead_letters.is_empty(),
                "{format:?}: {:?}",
                out.dead_letters
            );
            assert_eq!(out.batches.len(), 1);
            assert_eq!(out.batches[0].batch, batch, "{format:?}");
        }
    }

    #[test]
    fn file_level_errors_name_the_file() {
        let err = decode_file(
            FileFormat::Parquet,
            "bad.parquet",
            b"not parquet",
            &schema(),
            8,
        )
        .unwrap_err();
        assert!(matches!(err, ConnectorError::Parquet { .. }));
        assert!(err.to_string().contains("bad.parquet"), "{err}");

        let only_extra = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)])),
            vec![Arc::new(Int64Array::from(vec![1]))],
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("z.parquet");
        write_file(FileFormat::Parquet, &path, &[only_extra]).unwrap();
        let err = decode_file(
            FileFormat::Parquet,
            "z.parquet",
            &std::fs::read(&path).unwrap(),
            &schema(),
            8,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("z.parquet") && err.contains("`id`"), "{err}");
    }

    #[test]
    fn integer_timestamps_are_read_in_the_declared_unit() {
        let file = Arc::new(Schema::new(vec![Field::new("t", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            file,
            vec![Arc::new(Int64Array::from(vec![
                1_767_225_600,
                1_767_225_601,
            ]))],
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.parquet");
        write_file(FileFormat::Parquet, &path, &[batch]).unwrap();
        let data = std::fs::read(&path).unwrap();
        let declared = DeclaredSchema::new(
            vec![FieldSpec::new("t", FieldType::Timestamp, false).with_unit(EpochUnit::S)],
            "t",
        )
        .unwrap();
        let decoded = decode_file(FileFormat::Parquet, "s.parquet", &data, &declared, 8).unwrap();
        let t = decoded.batches[0]
            .batch
            .column(0)
            .as_primitive::<TimestampMicrosecondType>()
            .values()
            .to_vec();
        assert_eq!(t, vec![1_767_225_600_000_000, 1_767_225_601_000_000]);
    }
}
