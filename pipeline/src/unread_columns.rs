//! The stream columns a view never reads, left out while backfill moves its rows around and
//! blanked when they are evaluated: a view of card features need not carry every event's
//! merchant, country and category code through its key split, its spill files and its sort.

use arrow::array::{make_array, ArrayData, ArrayRef, RecordBatch};
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

    /// Indices of the read columns.
    fn read_columns(&self) -> Vec<usize> {
        (0..self.read.len()).filter(|&c| self.read[c]).collect()
    }

    /// The read columns of stream `schema`.
    pub fn projected_schema(&self, schema: &SchemaRef) -> SchemaRef {
        let fields: Vec<_> = (self.read_columns().iter())
            .map(|&c| schema.field(c).clone())
            .collect();
        Arc::new(arrow::datatypes::Schema::new_with_metadata(
            fields,
            schema.metadata().clone(),
        ))
    }

    /// The read columns of `batch` (of the stream schema), unread ones left out.
    pub fn project(&self, batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
        batch.project(&self.read_columns())
    }

    /// A [`UnreadColumns::project`]ed batch back in stream `schema`, its unread columns
    /// blanked.
    pub fn widen(
        &self,
        schema: &SchemaRef,
        batch: &RecordBatch,
    ) -> Result<RecordBatch, ArrowError> {
        let rows = batch.num_rows();
        let mut projected = batch.columns().iter();
        let columns = (schema.fields().iter().zip(&self.read))
            .map(|(field, &read)| {
                if read {
                    projected.next().cloned().ok_or_else(|| {
                        ArrowError::InvalidArgumentError("fewer columns than read".into())
                    })
                } else {
                    Ok(blank(field.data_type(), rows))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        RecordBatch::try_new(Arc::clone(schema), columns)
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
    fn projected_batches_widen_back_with_the_unread_columns_blanked() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8, false),
            Field::new("k", DataType::Int64, false),
            Field::new("t", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec!["x", "y"])),
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec!["p", "q"])),
            ],
        )
        .unwrap();
        let unread = UnreadColumns {
            read: vec![false, true, true],
        };
        let projected = unread.project(&batch).unwrap();
        assert_eq!(projected.schema(), unread.projected_schema(&schema));
        assert_eq!(projected.num_columns(), 2);
        let widened = unread.widen(&schema, &projected).unwrap();
        assert_eq!(widened.schema(), schema);
        assert_eq!(widened.column(0).as_string::<i32>().value(1), "");
        assert_eq!(
            widened.column(1).as_primitive::<Int64Type>().values(),
            &[1, 2]
        );
        assert_eq!(widened.column(2).as_string::<i32>().value(1), "q");
        assert!(unread
            .widen(&schema, &projected.project(&[0]).unwrap())
            .is_err());
    }
}
