//! Where each row came from: hidden columns that carry a row's source partition and offset
//! through transforms and views, and the lineage columns of feature rows built from them.

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, DictionaryArray, Int64Array, StringArray, UInt32Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, UInt32Type, UInt64Type};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::Column;
use datafusion::logical_expr::{Expr, LogicalPlan, Projection};
use std::sync::Arc;

/// Hidden column with each row's offset in its source partition (line, row, sequence number),
/// so records rejected later (late events) and feature rows name their exact source position.
pub const OFFSET_COLUMN: &str = "__quiver_offset";

/// Hidden column with the index of each row's source partition (in the source's partition
/// list).
pub const PARTITION_COLUMN: &str = "__quiver_partition";

/// The hidden columns, in the order they follow the declared ones.
pub const HIDDEN_COLUMNS: [&str; 2] = [PARTITION_COLUMN, OFFSET_COLUMN];

/// Feature-row column naming the source partition of the event (a file, the generator).
pub const LINEAGE_PARTITION: &str = "_source_partition";

/// Feature-row column with the event's offset in its source partition.
pub const LINEAGE_OFFSET: &str = "_source_offset";

/// Whether `name` is one of the hidden columns.
pub fn is_hidden(name: &str) -> bool {
    HIDDEN_COLUMNS.contains(&name)
}

/// The hidden columns' fields.
pub fn hidden_fields() -> [Field; 2] {
    [
        Field::new(PARTITION_COLUMN, DataType::UInt32, false),
        Field::new(OFFSET_COLUMN, DataType::UInt64, false),
    ]
}

/// The lineage fields appended to every feature row.
pub fn lineage_fields() -> [Field; 2] {
    [
        Field::new(
            LINEAGE_PARTITION,
            DataType::Dictionary(Box::new(DataType::UInt32), Box::new(DataType::Utf8)),
            true,
        ),
        // Signed: Delta Lake has no unsigned types, and readers such as Polars refuse to
        // narrow one. Offsets stay far below 2^63.
        Field::new(LINEAGE_OFFSET, DataType::Int64, true),
    ]
}

/// Makes a top-level projection also output the hidden columns its input has, so every output
/// row keeps its source position.
pub fn carry_hidden(plan: LogicalPlan) -> datafusion::error::Result<LogicalPlan> {
    let LogicalPlan::Projection(p) = plan else {
        return Ok(plan);
    };
    let mut exprs = p.expr.clone();
    for name in HIDDEN_COLUMNS {
        if p.schema.has_column_with_unqualified_name(name) {
            continue;
        }
        if let Ok((qualifier, field)) = p.input.schema().qualified_field_with_unqualified_name(name)
        {
            exprs.push(Expr::Column(Column::new(qualifier.cloned(), field.name())));
        }
    }
    Ok(LogicalPlan::Projection(Projection::try_new(
        exprs, p.input,
    )?))
}

/// `features` with the lineage columns appended, read from the hidden columns of `rows` (the
/// rows the features were computed for, in the same order). `partitions` names the partition
/// of each index; rows without hidden columns, or with an unknown index, get nulls.
pub fn append_lineage(
    features: RecordBatch,
    rows: &RecordBatch,
    partitions: &StringArray,
) -> Result<RecordBatch, ArrowError> {
    let n = features.num_rows();
    let index = rows
        .column_by_name(PARTITION_COLUMN)
        .and_then(|c| c.as_primitive_opt::<UInt32Type>())
        .map(|c| {
            c.iter()
                .map(|i| i.filter(|&i| (i as usize) < partitions.len()))
                .collect::<UInt32Array>()
        })
        .unwrap_or_else(|| UInt32Array::new_null(n));
    let partition: ArrayRef = Arc::new(DictionaryArray::<UInt32Type>::try_new(
        index,
        Arc::new(partitions.clone()),
    )?);
    let offset: ArrayRef = match rows
        .column_by_name(OFFSET_COLUMN)
        .and_then(|c| c.as_primitive_opt::<UInt64Type>())
    {
        Some(c) => Arc::new(c.unary::<_, Int64Type>(|o| o as i64)),
        None => Arc::new(Int64Array::new_null(n)),
    };
    let mut fields: Vec<Field> = features
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.extend(lineage_fields());
    let mut columns = features.columns().to_vec();
    columns.push(partition);
    columns.push(offset);
    RecordBatch::try_new(
        Arc::new(datafusion::arrow::datatypes::Schema::new(fields)),
        columns,
    )
}
