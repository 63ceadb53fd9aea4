//! Rows of in-memory batches copied into one array per partition and column, each allocated
//! once at its final size: backfill's in-memory key split.
//!
//! Taking each batch's rows of each partition as small arrays and joining them back into one
//! batch per partition (what a spill does) allocated, filled, joined and freed every row twice:
//! at 10M events that was a fifth of backfill's CPU. Here the rows' partitions are counted
//! first, and every batch's rows are then written straight to their place in their
//! partition's arrays while the batch is in cache.

use arrow::array::{
    make_array, Array, ArrayData, ArrayRef, AsArray, BooleanBufferBuilder, GenericByteArray,
    RecordBatch, RecordBatchOptions, UInt32Array,
};
use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{
    ArrowNativeType, BinaryType, ByteArrayType, DataType, LargeBinaryType, LargeUtf8Type,
    SchemaRef, Utf8Type,
};
use arrow::error::ArrowError;

/// The rows of each partition, as one batch per partition once every row has been pushed.
pub struct PartitionCopies {
    schema: SchemaRef,
    /// Rows each partition gets in all.
    sizes: Vec<usize>,
    /// Rows pushed into each partition so far.
    filled: Vec<usize>,
    columns: Vec<ColumnCopies>,
}

/// One column's values of every partition.
enum ColumnCopies {
    /// Fixed-width values of `width` bytes (primitive types).
    Fixed {
        width: usize,
        values: Vec<FixedValues>,
        nulls: Vec<Option<BooleanBufferBuilder>>,
    },
    Utf8(Vec<ByteValues<Utf8Type>>),
    LargeUtf8(Vec<ByteValues<LargeUtf8Type>>),
    Binary(Vec<ByteValues<BinaryType>>),
    LargeBinary(Vec<ByteValues<LargeBinaryType>>),
    /// Booleans, bit-packed.
    Booleans {
        values: Vec<BooleanBufferBuilder>,
        nulls: Vec<Option<BooleanBufferBuilder>>,
    },
    /// Any other type: each batch's rows of a partition taken as an array, joined at the end.
    Pieces(Vec<Vec<ArrayRef>>),
}

/// One partition's fixed-width values, by their width.
enum FixedValues {
    W1(Vec<u8>),
    W2(Vec<u16>),
    W4(Vec<u32>),
    W8(Vec<u64>),
    W16(Vec<i128>),
}

/// `$body` with `$values` bound to the vector of whichever width `$fixed` holds: the one
/// place the widths are matched on (the body is typed for each).
macro_rules! with_fixed_values {
    ($fixed:expr, $values:ident => $body:expr) => {
        match $fixed {
            FixedValues::W1($values) => $body,
            FixedValues::W2($values) => $body,
            FixedValues::W4($values) => $body,
            FixedValues::W8($values) => $body,
            FixedValues::W16($values) => $body,
        }
    };
}

impl FixedValues {
    /// Room for `rows` values of `width` bytes (1, 2, 4, 8 or 16: [`fixed_width`]).
    fn with_capacity(width: usize, rows: usize) -> Self {
        match width {
            1 => FixedValues::W1(Vec::with_capacity(rows)),
            2 => FixedValues::W2(Vec::with_capacity(rows)),
            4 => FixedValues::W4(Vec::with_capacity(rows)),
            8 => FixedValues::W8(Vec::with_capacity(rows)),
            _ => FixedValues::W16(Vec::with_capacity(rows)),
        }
    }
}

/// One partition's variable-length values (strings, binary).
struct ByteValues<T: ByteArrayType> {
    offsets: Vec<T::Offset>,
    data: Vec<u8>,
    nulls: Option<BooleanBufferBuilder>,
}

impl PartitionCopies {
    /// Empty arrays of `sizes[p]` rows for each partition `p`, for batches of `schema`.
    /// Per column, `nullable` says whether any batch has nulls in it (else no validity is
    /// kept), and `row_bytes` about how many bytes a variable-length value takes.
    pub fn new(
        schema: SchemaRef,
        sizes: Vec<usize>,
        nullable: &[bool],
        row_bytes: &[usize],
    ) -> Self {
        let columns = (schema.fields().iter().zip(nullable).zip(row_bytes))
            .map(|((field, &nullable), &bytes)| {
                ColumnCopies::new(field.data_type(), &sizes, nullable, bytes)
            })
            .collect();
        PartitionCopies {
            filled: vec![0; sizes.len()],
            sizes,
            schema,
            columns,
        }
    }

    /// Copies rows of `batch` (of the schema) into their partitions: `order` holds row
    /// indices grouped by partition, partition `p`'s at `starts[p]..starts[p + 1]`.
    pub fn push(
        &mut self,
        batch: &RecordBatch,
        order: &[u32],
        starts: &[usize],
    ) -> Result<(), ArrowError> {
        if starts.len() != self.sizes.len() + 1 || batch.num_columns() != self.columns.len() {
            return Err(internal("rows of another shape than the partitions'"));
        }
        for p in 0..self.sizes.len() {
            if self.filled[p] + (starts[p + 1] - starts[p]) > self.sizes[p] {
                return Err(internal("more rows than a partition was sized for"));
            }
        }
        for (copies, column) in self.columns.iter_mut().zip(batch.columns()) {
            copies.push(column.as_ref(), order, starts)?;
        }
        for p in 0..self.sizes.len() {
            self.filled[p] += starts[p + 1] - starts[p];
        }
        Ok(())
    }

    /// Each partition's rows as one batch (`None` for a partition without rows).
    pub fn finish(self) -> Result<Vec<Option<RecordBatch>>, ArrowError> {
        if self.filled != self.sizes {
            return Err(internal("fewer rows than the partitions were sized for"));
        }
        let mut columns: Vec<_> = (self.columns.into_iter())
            .zip(self.schema.fields())
            .map(|(copies, field)| copies.finish(field.data_type()))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .map(|arrays| arrays.into_iter())
            .collect();
        (self.sizes.iter())
            .map(|&rows| {
                let arrays: Vec<ArrayRef> = columns.iter_mut().filter_map(Iterator::next).collect();
                if rows == 0 {
                    return Ok(None);
                }
                let options = RecordBatchOptions::new().with_row_count(Some(rows));
                RecordBatch::try_new_with_options(self.schema.clone(), arrays, &options).map(Some)
            })
            .collect()
    }
}

fn internal(what: &str) -> ArrowError {
    ArrowError::InvalidArgumentError(format!(
        "copying rows by partition: {what} (internal error)"
    ))
}

/// A validity builder per partition when the column has nulls.
fn null_builders(sizes: &[usize], nullable: bool) -> Vec<Option<BooleanBufferBuilder>> {
    (sizes.iter())
        .map(|&n| nullable.then(|| BooleanBufferBuilder::new(n)))
        .collect()
}

impl ColumnCopies {
    fn new(data_type: &DataType, sizes: &[usize], nullable: bool, row_bytes: usize) -> Self {
        fn bytes<T: ByteArrayType>(
            sizes: &[usize],
            nullable: bool,
            row_bytes: usize,
        ) -> Vec<ByteValues<T>> {
            (sizes.iter())
                .map(|&n| ByteValues::new(n, nullable, row_bytes))
                .collect()
        }
        if let Some(width) = fixed_width(data_type) {
            let values = (sizes.iter())
                .map(|&n| FixedValues::with_capacity(width, n))
                .collect();
            return ColumnCopies::Fixed {
                width,
                values,
                nulls: null_builders(sizes, nullable),
            };
        }
        match data_type {
            DataType::Utf8 => ColumnCopies::Utf8(bytes(sizes, nullable, row_bytes)),
            DataType::LargeUtf8 => ColumnCopies::LargeUtf8(bytes(sizes, nullable, row_bytes)),
            DataType::Binary => ColumnCopies::Binary(bytes(sizes, nullable, row_bytes)),
            DataType::LargeBinary => ColumnCopies::LargeBinary(bytes(sizes, nullable, row_bytes)),
            DataType::Boolean => ColumnCopies::Booleans {
                values: sizes
                    .iter()
                    .map(|&n| BooleanBufferBuilder::new(n))
                    .collect(),
                nulls: null_builders(sizes, nullable),
            },
            _ => ColumnCopies::Pieces(vec![Vec::new(); sizes.len()]),
        }
    }

    fn push(
        &mut self,
        column: &dyn Array,
        order: &[u32],
        starts: &[usize],
    ) -> Result<(), ArrowError> {
        let rows_of = |p: usize| &order[starts[p]..starts[p + 1]];
        match self {
            ColumnCopies::Fixed {
                width,
                values,
                nulls,
            } => {
                let data = column.to_data();
                if data.buffers().len() != 1 || fixed_width(data.data_type()) != Some(*width) {
                    return Err(internal("a column of another type"));
                }
                let column_nulls = column.nulls();
                for (p, values) in values.iter_mut().enumerate() {
                    let rows = rows_of(p);
                    with_fixed_values!(values, v => copy_fixed(v, data.buffer(0), rows));
                    copy_nulls(&mut nulls[p], column_nulls, rows)?;
                }
            }
            ColumnCopies::Utf8(parts) => push_bytes(parts, column, order, starts)?,
            ColumnCopies::LargeUtf8(parts) => push_bytes(parts, column, order, starts)?,
            ColumnCopies::Binary(parts) => push_bytes(parts, column, order, starts)?,
            ColumnCopies::LargeBinary(parts) => push_bytes(parts, column, order, starts)?,
            ColumnCopies::Booleans { values, nulls } => {
                let booleans = column
                    .as_boolean_opt()
                    .ok_or_else(|| internal("a column of another type"))?;
                for (p, values) in values.iter_mut().enumerate() {
                    let rows = rows_of(p);
                    for &r in rows {
                        values.append(booleans.values().value(r as usize));
                    }
                    copy_nulls(&mut nulls[p], booleans.nulls(), rows)?;
                }
            }
            ColumnCopies::Pieces(parts) => {
                let order = UInt32Array::from(order.to_vec());
                for (p, pieces) in parts.iter_mut().enumerate() {
                    let (from, to) = (starts[p], starts[p + 1]);
                    if from < to {
                        let indices = order.slice(from, to - from);
                        pieces.push(arrow::compute::take(column, &indices, None)?);
                    }
                }
            }
        }
        Ok(())
    }

    /// One array per partition.
    fn finish(self, data_type: &DataType) -> Result<Vec<ArrayRef>, ArrowError> {
        match self {
            ColumnCopies::Fixed { values, nulls, .. } => (values.into_iter().zip(nulls))
                .map(|(values, nulls)| {
                    let (len, buffer) =
                        with_fixed_values!(values, v => (v.len(), Buffer::from_vec(v)));
                    let data = ArrayData::builder(data_type.clone())
                        .len(len)
                        .add_buffer(buffer)
                        .nulls(finish_nulls(nulls))
                        .build()?;
                    Ok(make_array(data))
                })
                .collect(),
            ColumnCopies::Utf8(parts) => parts.into_iter().map(ByteValues::finish).collect(),
            ColumnCopies::LargeUtf8(parts) => parts.into_iter().map(ByteValues::finish).collect(),
            ColumnCopies::Binary(parts) => parts.into_iter().map(ByteValues::finish).collect(),
            ColumnCopies::LargeBinary(parts) => parts.into_iter().map(ByteValues::finish).collect(),
            ColumnCopies::Booleans { values, nulls } => (values.into_iter().zip(nulls))
                .map(|(mut values, nulls)| {
                    let array =
                        arrow::array::BooleanArray::new(values.finish(), finish_nulls(nulls));
                    Ok(std::sync::Arc::new(array) as ArrayRef)
                })
                .collect(),
            ColumnCopies::Pieces(parts) => (parts.into_iter())
                .map(|pieces| {
                    if pieces.is_empty() {
                        return Ok(arrow::array::new_empty_array(data_type));
                    }
                    // One piece is not copied: concatenating one array slices it.
                    let pieces: Vec<&dyn Array> = pieces.iter().map(|a| a.as_ref()).collect();
                    arrow::compute::concat(&pieces)
                })
                .collect(),
        }
    }
}

/// The bytes of the values of a variable-length column (strings, binary), 0 for others: what
/// sizes its partitions' value buffers.
pub fn variable_bytes(column: &dyn Array) -> usize {
    fn of<T: ByteArrayType>(column: &dyn Array) -> usize {
        column.as_bytes_opt::<T>().map_or(0, |c| {
            let offsets = c.value_offsets();
            (offsets[offsets.len() - 1] - offsets[0]).as_usize()
        })
    }
    match column.data_type() {
        DataType::Utf8 => of::<Utf8Type>(column),
        DataType::LargeUtf8 => of::<LargeUtf8Type>(column),
        DataType::Binary => of::<BinaryType>(column),
        DataType::LargeBinary => of::<LargeBinaryType>(column),
        _ => 0,
    }
}

/// The width of a primitive type's values when they are copied as plain integers of that
/// width: its values' alignment is their width (interval types, structs of smaller fields, and
/// 256-bit decimals are taken and joined instead).
fn fixed_width(data_type: &DataType) -> Option<usize> {
    if !data_type.is_primitive() || matches!(data_type, DataType::Interval(_)) {
        return None;
    }
    data_type
        .primitive_width()
        .filter(|w| matches!(w, 1 | 2 | 4 | 8 | 16))
}

/// Appends `source[r]` for each of `rows`.
#[inline]
fn copy_fixed<T: Copy>(values: &mut Vec<T>, source: &[T], rows: &[u32]) {
    values.extend(rows.iter().map(|&r| source[r as usize]));
}

/// Appends the validity of each of `rows` when the partition keeps validity.
fn copy_nulls(
    builder: &mut Option<BooleanBufferBuilder>,
    nulls: Option<&NullBuffer>,
    rows: &[u32],
) -> Result<(), ArrowError> {
    match (builder, nulls) {
        (Some(builder), Some(nulls)) => {
            for &r in rows {
                builder.append(nulls.is_valid(r as usize));
            }
        }
        (Some(builder), None) => builder.append_n(rows.len(), true),
        (None, Some(nulls)) if rows.iter().any(|&r| nulls.is_null(r as usize)) => {
            return Err(internal("nulls in a column counted without"));
        }
        (None, _) => {}
    }
    Ok(())
}

/// The validity of a partition's values (`None` when every value is valid).
fn finish_nulls(builder: Option<BooleanBufferBuilder>) -> Option<NullBuffer> {
    builder
        .map(|mut b| NullBuffer::new(b.finish()))
        .filter(|n| n.null_count() > 0)
}

/// Pushes the `order`ed rows of `column` (of `T`) into the byte partitions `parts`.
fn push_bytes<T: ByteArrayType>(
    parts: &mut [ByteValues<T>],
    column: &dyn Array,
    order: &[u32],
    starts: &[usize],
) -> Result<(), ArrowError> {
    let column = column
        .as_bytes_opt::<T>()
        .ok_or_else(|| internal("a column of another type"))?;
    let offsets = column.value_offsets();
    let data = column.value_data();
    for (p, part) in parts.iter_mut().enumerate() {
        let rows = &order[starts[p]..starts[p + 1]];
        for &r in rows {
            let (from, to) = (
                offsets[r as usize].as_usize(),
                offsets[r as usize + 1].as_usize(),
            );
            part.data.extend_from_slice(&data[from..to]);
            let end = T::Offset::from_usize(part.data.len())
                .ok_or_else(|| internal("more bytes than the offsets hold"))?;
            part.offsets.push(end);
        }
        copy_nulls(&mut part.nulls, column.nulls(), rows)?;
    }
    Ok(())
}

impl<T: ByteArrayType> ByteValues<T> {
    fn new(rows: usize, nullable: bool, row_bytes: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(T::Offset::usize_as(0));
        ByteValues {
            offsets,
            data: Vec::with_capacity(rows.saturating_mul(row_bytes)),
            nulls: nullable.then(|| BooleanBufferBuilder::new(rows)),
        }
    }

    fn finish(self) -> Result<ArrayRef, ArrowError> {
        let offsets = OffsetBuffer::new(ScalarBuffer::from(self.offsets));
        let array = GenericByteArray::<T>::try_new(
            offsets,
            Buffer::from_vec(self.data),
            finish_nulls(self.nulls),
        )?;
        Ok(std::sync::Arc::new(array))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        BooleanArray, Decimal128Array, DictionaryArray, Float64Array, Int32Array,
        IntervalMonthDayNanoArray, LargeStringArray, StringArray, TimestampMicrosecondArray,
        UInt16Array,
    };
    use arrow::compute::take_record_batch;
    use arrow::datatypes::{Field, IntervalMonthDayNano, Schema, TimeUnit, UInt16Type};
    use std::sync::Arc;

    fn schema() -> SchemaRef {
        let dictionary = DataType::Dictionary(Box::new(DataType::UInt16), Box::new(DataType::Utf8));
        Arc::new(Schema::new(vec![
            Field::new("f", DataType::Float64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("l", DataType::LargeUtf8, false),
            Field::new("b", DataType::Boolean, true),
            Field::new("i", DataType::Int32, false),
            Field::new(
                "t",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("d", dictionary, true),
            Field::new("m", DataType::Decimal128(20, 2), true),
            Field::new(
                "v",
                DataType::Interval(arrow::datatypes::IntervalUnit::MonthDayNano),
                false,
            ),
        ]))
    }

    /// Rows `from..to` of a batch with nulls in its nullable columns.
    fn rows(from: i32, to: i32) -> RecordBatch {
        let r: Vec<i32> = (from..to).collect();
        let keys = UInt16Array::from_iter(r.iter().map(|&i| (i % 4 != 1).then_some(i as u16 % 3)));
        let dictionary = DictionaryArray::<UInt16Type>::try_new(
            keys,
            Arc::new(StringArray::from(vec!["x", "y", "z"])),
        )
        .unwrap();
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Float64Array::from_iter(
                    r.iter().map(|&i| (i % 3 != 0).then_some(i as f64 / 2.0)),
                )),
                Arc::new(StringArray::from_iter(
                    r.iter()
                        .map(|&i| (i % 5 != 0).then(|| "v".repeat(i as usize % 7))),
                )),
                Arc::new(LargeStringArray::from_iter_values(
                    r.iter().map(|i| format!("large {i}")),
                )),
                Arc::new(BooleanArray::from_iter(
                    r.iter().map(|&i| (i % 4 != 3).then_some(i % 2 == 0)),
                )),
                Arc::new(Int32Array::from(r.clone())),
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(r.iter().map(|&i| i as i64 * 1000))
                        .with_timezone("UTC"),
                ),
                Arc::new(dictionary),
                Arc::new(
                    Decimal128Array::from_iter(
                        r.iter()
                            .map(|&i| (i % 6 != 5).then_some(i as i128 * 1_000_003)),
                    )
                    .with_precision_and_scale(20, 2)
                    .unwrap(),
                ),
                Arc::new(IntervalMonthDayNanoArray::from_iter_values(
                    r.iter()
                        .map(|&i| IntervalMonthDayNano::new(i, -i, i as i64 * 7)),
                )),
            ],
        )
        .unwrap()
    }

    /// Copies `batches` into `partitions` by `partition_of` each row's `i` value, through
    /// [`PartitionCopies`], and the same rows taken the plain way.
    fn both_ways(
        batches: &[RecordBatch],
        partitions: usize,
        partition_of: impl Fn(i32) -> usize,
    ) -> (Vec<Option<RecordBatch>>, Vec<Option<RecordBatch>>) {
        let assigned: Vec<Vec<u32>> = (batches.iter())
            .map(|b| {
                let i = b.column(4).as_primitive::<arrow::datatypes::Int32Type>();
                i.values().iter().map(|&v| partition_of(v) as u32).collect()
            })
            .collect();
        let mut sizes = vec![0; partitions];
        assigned
            .iter()
            .flatten()
            .for_each(|&p| sizes[p as usize] += 1);
        let nullable: Vec<bool> = (0..schema().fields().len())
            .map(|c| batches.iter().any(|b| b.column(c).null_count() > 0))
            .collect();
        let row_bytes = vec![3; nullable.len()];
        let mut copies = PartitionCopies::new(schema(), sizes, &nullable, &row_bytes);
        let mut plain: Vec<Vec<RecordBatch>> = vec![Vec::new(); partitions];
        for (batch, slots) in batches.iter().zip(&assigned) {
            let (order, starts) = quiver_gpu::group_rows(slots, partitions, 0..slots.len() as u32);
            copies.push(batch, &order, &starts).unwrap();
            for p in 0..partitions {
                let indices = UInt32Array::from(order[starts[p]..starts[p + 1]].to_vec());
                plain[p].push(take_record_batch(batch, &indices).unwrap());
            }
        }
        let plain = (plain.into_iter())
            .map(|b| {
                let joined = arrow::compute::concat_batches(&schema(), &b).unwrap();
                (joined.num_rows() > 0).then_some(joined)
            })
            .collect();
        (copies.finish().unwrap(), plain)
    }

    #[test]
    fn each_partition_gets_its_rows_in_order_with_their_nulls() {
        // Batches sliced out of larger ones (their arrays start at an offset), and one empty.
        let batches = [rows(0, 100).slice(7, 60), rows(100, 100), rows(100, 357)];
        let (copied, plain) = both_ways(&batches, 5, |i| (i as usize * 7) % 5);
        assert_eq!(copied.len(), 5);
        for (p, (copied, plain)) in copied.iter().zip(&plain).enumerate() {
            let (copied, plain) = (copied.as_ref().unwrap(), plain.as_ref().unwrap());
            assert_eq!(copied, plain, "partition {p}");
            assert_eq!(copied.schema(), schema());
        }
        let total: usize = copied.iter().flatten().map(RecordBatch::num_rows).sum();
        assert_eq!(total, 60 + 257);
    }

    #[test]
    fn a_partition_without_rows_is_none_and_columns_without_nulls_keep_none() {
        let (copied, plain) = both_ways(&[rows(1, 40)], 3, |i| if i % 2 == 0 { 0 } else { 2 });
        assert!(copied[1].is_none() && plain[1].is_none());
        assert_eq!(copied[0], plain[0]);
        assert_eq!(copied[2], plain[2]);
        // A float column without nulls in any batch comes out without a validity buffer.
        let (copied, _) = both_ways(&[rows(1, 3)], 1, |_| 0);
        assert!(copied[0].as_ref().unwrap().column(0).nulls().is_none());
    }

    #[test]
    fn rows_beyond_or_short_of_the_sizes_are_errors_not_panics() {
        let batch = rows(0, 10);
        let order: Vec<u32> = (0..10).collect();
        let nullable = vec![true; 9];
        let row_bytes = vec![0; 9];
        let mut copies = PartitionCopies::new(schema(), vec![4], &nullable, &row_bytes);
        assert!(
            copies.push(&batch, &order, &[0, 10]).is_err(),
            "10 rows for 4"
        );
        assert!(copies.push(&batch, &order[..3], &[0, 3]).is_ok());
        assert!(copies.finish().is_err(), "3 rows for 4");
        let mut copies = PartitionCopies::new(schema(), vec![10, 0], &nullable, &row_bytes);
        assert!(
            copies.push(&batch, &order, &[0, 10]).is_err(),
            "two partitions"
        );
        // A column counted without nulls that has some is refused, not silently made valid.
        let mut copies = PartitionCopies::new(schema(), vec![10], &[false; 9], &row_bytes);
        assert!(copies.push(&batch, &order, &[0, 10]).is_err());
    }

    #[test]
    fn only_types_aligned_to_their_width_are_copied_as_plain_integers() {
        assert_eq!(fixed_width(&DataType::Int64), Some(8));
        assert_eq!(fixed_width(&DataType::Float16), Some(2));
        assert_eq!(fixed_width(&DataType::Decimal128(20, 2)), Some(16));
        assert_eq!(fixed_width(&schema().field(5).data_type().clone()), Some(8));
        for taken in [
            DataType::Interval(arrow::datatypes::IntervalUnit::DayTime),
            DataType::Interval(arrow::datatypes::IntervalUnit::MonthDayNano),
            DataType::Decimal256(40, 2),
            DataType::Utf8,
        ] {
            assert_eq!(fixed_width(&taken), None, "{taken}");
        }
    }

    #[test]
    fn variable_bytes_counts_a_slice_of_values() {
        let strings = StringArray::from(vec!["ab", "cde", "f"]);
        assert_eq!(variable_bytes(&strings), 6);
        assert_eq!(variable_bytes(&strings.slice(1, 2)), 4);
        assert_eq!(variable_bytes(&Int32Array::from(vec![1, 2])), 0);
    }
}
