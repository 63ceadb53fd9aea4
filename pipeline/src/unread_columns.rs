//! The stream columns a view never reads, blanked while backfill moves its rows around: a
//! view of card features need not carry every event's merchant, country and category code
//! through its key split, its spill files and its sort.

use arrow::array::{make_array, Array, ArrayData, ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::error::ArrowError;
use quiver_sql::{FeatureView, OFFSET_COLUMN, PARTITION_COLUMN};
use std::sync::Arc;

/// Which columns of a stream schema one view never reads.
#[derive(Clone, Debug)]
pub struct UnreadColumns {
    /// Per stream column: whether the view reads it.
    read: Vec<bool>,
}

impl UnreadColumns {
    /// The columns of `schema` (the feature stream's) that `view` never reads and that can be
    /// blanked cheaply (flat types); none when the view runs row-local SQL below its windows
    /// (it may read any column).
    pub fn of(view: &FeatureView, schema: &SchemaRef) -> Self {
        let fields = schema.fields();
        let mut read = vec![true; fields.len()];
        if let Some(used) = view.stream_columns_used() {
            for (c, field) in fields.iter().enumerate() {
                let hidden = [PARTITION_COLUMN, OFFSET_COLUMN].contains(&field.name().as_str());
                read[c] = hidden || used.contains(&c) || !blankable(field.data_type());
            }
        }
        UnreadColumns { read }
    }

    /// Whether every column is read (nothing to blank).
    pub fn none(&self) -> bool {
        self.read.iter().all(|&r| r)
    }

    /// The rows at `positions` ((batch, row) pairs) of `batches` (of one schema), like
    /// `arrow::compute::interleave_record_batch`, with the unread columns blanked instead
    /// of gathered.
    pub fn interleave(
        &self,
        batches: &[&RecordBatch],
        positions: &[(usize, usize)],
    ) -> Result<RecordBatch, ArrowError> {
        let schema = batches
            .first()
            .map(|b| b.schema())
            .ok_or_else(|| ArrowError::InvalidArgumentError("no batches to take rows of".into()))?;
        let columns = (0..schema.fields().len())
            .map(|c| {
                if !self.read[c] {
                    return Ok(blank(schema.field(c).data_type(), positions.len()));
                }
                let arrays: Vec<&dyn Array> =
                    batches.iter().map(|b| b.column(c).as_ref()).collect();
                arrow::compute::interleave(&arrays, positions)
            })
            .collect::<Result<Vec<_>, _>>()?;
        RecordBatch::try_new(schema, columns)
    }

    /// `batch` with the unread columns blanked.
    pub fn blanked(&self, batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
        if self.none() {
            return Ok(batch.clone());
        }
        let rows = batch.num_rows();
        let columns = (batch.columns().iter().zip(batch.schema().fields()))
            .zip(&self.read)
            .map(|((column, field), &read)| {
                if read {
                    Arc::clone(column)
                } else {
                    blank(field.data_type(), rows)
                }
            })
            .collect();
        RecordBatch::try_new(batch.schema(), columns)
    }
}

/// Types whose zeroed buffers are a valid array without nulls (zeros, false, empty strings).
fn blankable(data_type: &DataType) -> bool {
    data_type.is_primitive()
        || matches!(
            data_type,
            DataType::Boolean
                | DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Binary
                | DataType::LargeBinary
        )
}

/// `rows` values of a [`blankable`] type, all zero or empty and none null: zeroed memory,
/// nothing copied.
fn blank(data_type: &DataType, rows: usize) -> ArrayRef {
    let nulls = ArrayData::new_null(data_type, rows);
    let zeros = nulls.into_builder().nulls(None).null_count(0);
    // `build` validates; for the blankable types zeroed offsets and values are valid.
    match zeros.build() {
        Ok(data) => make_array(data),
        Err(_) => arrow::array::new_null_array(data_type, rows),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array, StringArray};
    use arrow::datatypes::{Field, Int64Type, Schema};

    #[test]
    fn blanks_are_valid_non_null_arrays_of_their_type() {
        for data_type in [
            DataType::Int64,
            DataType::Utf8,
            DataType::Boolean,
            DataType::Float64,
        ] {
            let array = blank(&data_type, 5);
            assert_eq!(array.len(), 5);
            assert_eq!(array.null_count(), 0);
            assert_eq!(array.data_type(), &data_type);
        }
        assert_eq!(blank(&DataType::Utf8, 3).as_string::<i32>().value(2), "");
    }

    #[test]
    fn interleave_gathers_read_columns_and_blanks_the_others() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("s", DataType::Utf8, false),
        ]));
        let batch = |k: Vec<i64>, s: Vec<&str>| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(k)),
                    Arc::new(StringArray::from(s)),
                ],
            )
            .unwrap()
        };
        let (a, b) = (batch(vec![1, 2], vec!["x", "y"]), batch(vec![3], vec!["z"]));
        let unread = UnreadColumns {
            read: vec![true, false],
        };
        let taken = unread.interleave(&[&a, &b], &[(1, 0), (0, 1)]).unwrap();
        assert_eq!(
            taken.column(0).as_primitive::<Int64Type>().values(),
            &[3, 2]
        );
        assert_eq!(taken.column(1).as_string::<i32>().value(0), "");
        let blanked = unread.blanked(&a).unwrap();
        assert_eq!(
            blanked.column(0).as_primitive::<Int64Type>().values(),
            &[1, 2]
        );
        assert_eq!(blanked.column(1).as_string::<i32>().value(1), "");
    }
}
