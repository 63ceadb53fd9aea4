//! Accumulates validated rows into Arrow columns and cuts them into [`SourceBatch`]es.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use super::convert::{Cell, Reject, Target};
use crate::dead_letter::DeadLetter;
use crate::error::ConnectorError;
use crate::position::SourceBatch;
use crate::schema::{DeclaredSchema, FieldType};

enum Column {
    String(StringBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Timestamp(TimestampMicrosecondBuilder),
}

impl Column {
    fn new(field_type: FieldType, capacity: usize) -> Self {
        match field_type {
            FieldType::String => {
                Column::String(StringBuilder::with_capacity(capacity, capacity * 8))
            }
            FieldType::Int => Column::Int(Int64Builder::with_capacity(capacity)),
            FieldType::Float => Column::Float(Float64Builder::with_capacity(capacity)),
            FieldType::Bool => Column::Bool(BooleanBuilder::with_capacity(capacity)),
            FieldType::Timestamp => {
                Column::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity))
            }
        }
    }

    /// Appends a cell; a cell of another type (impossible after conversion) becomes null and is
    /// then caught by batch validation for non-nullable columns.
    fn append(&mut self, cell: Cell<'_>) {
        match (self, cell) {
            (Column::String(b), Cell::Str(s)) => b.append_value(s),
            (Column::Int(b), Cell::Int(v)) => b.append_value(v),
            (Column::Float(b), Cell::Float(v)) => b.append_value(v),
            (Column::Bool(b), Cell::Bool(v)) => b.append_value(v),
            (Column::Timestamp(b), Cell::Timestamp(v)) => b.append_value(v),
            (Column::String(b), _) => b.append_null(),
            (Column::Int(b), _) => b.append_null(),
            (Column::Float(b), _) => b.append_null(),
            (Column::Bool(b), _) => b.append_null(),
            (Column::Timestamp(b), _) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Column::String(b) => Arc::new(b.finish()),
            Column::Int(b) => Arc::new(b.finish()),
            Column::Float(b) => Arc::new(b.finish()),
            Column::Bool(b) => Arc::new(b.finish()),
            Column::Timestamp(b) => Arc::new(b.finish()),
        }
    }
}

/// Converts rows field by field and collects good rows into batches and bad rows into dead
/// letters.
pub(super) struct RowSink<'s> {
    partition: String,
    schema: &'s DeclaredSchema,
    arrow_schema: SchemaRef,
    /// Column indices in checking order: event time first, then declared order.
    order: Vec<usize>,
    columns: Vec<Column>,
    offsets: Vec<u64>,
    batch_size: usize,
    batches: Vec<SourceBatch>,
    dead_letters: Vec<DeadLetter>,
}

impl<'s> RowSink<'s> {
    pub fn new(partition: &str, schema: &'s DeclaredSchema, batch_size: usize) -> Self {
        let event_time = schema.event_time_index();
        let order = std::iter::once(event_time)
            .chain((0..schema.fields.len()).filter(|&i| i != event_time))
            .collect();
        let capacity = batch_size.min(65_536);
        Self {
            partition: partition.to_string(),
            schema,
            arrow_schema: schema.arrow_schema(),
            order,
            columns: schema
                .fields
                .iter()
                .map(|f| Column::new(f.field_type, capacity))
                .collect(),
            offsets: Vec::with_capacity(capacity),
            batch_size,
            batches: Vec::new(),
            dead_letters: Vec::new(),
        }
    }

    /// The conversion target of declared column `index`.
    pub fn target(&self, index: usize) -> Option<Target<'s>> {
        let schema = self.schema;
        schema.fields.get(index).map(|spec| Target {
            spec,
            is_event_time: spec.name == schema.event_time,
        })
    }

    /// Converts one row: `convert(target, column_index)` yields each cell. The row is appended
    /// only if every field converts; otherwise the first rejection becomes a dead letter with
    /// `raw` produced lazily.
    pub fn push_row<'a>(
        &mut self,
        offset: u64,
        mut convert: impl FnMut(Target<'s>, usize) -> Result<Cell<'a>, Reject>,
        raw: impl FnOnce() -> String,
    ) -> Result<(), ConnectorError> {
        let mut cells = vec![Cell::Null; self.columns.len()];
        let mut rejected = None;
        for &index in &self.order {
            let Some(target) = self.target(index) else {
                continue;
            };
            match convert(target, index) {
                Ok(cell) => cells[index] = cell,
                Err(reject) => {
                    rejected = Some(reject);
                    break;
                }
            }
        }
        if let Some(reject) = rejected {
            self.reject(offset, reject, raw());
            return Ok(());
        }
        self.push_cells(offset, &cells)
    }

    /// Appends a row whose cells (one per declared column, in declared order) are converted
    /// already.
    pub fn push_cells(&mut self, offset: u64, cells: &[Cell<'_>]) -> Result<(), ConnectorError> {
        for (column, cell) in self.columns.iter_mut().zip(cells) {
            column.append(*cell);
        }
        self.offsets.push(offset);
        if self.offsets.len() >= self.batch_size {
            self.cut()?;
        }
        Ok(())
    }

    /// Records a rejected record.
    pub fn reject(&mut self, offset: u64, reject: Reject, raw: String) {
        self.dead_letters.push(DeadLetter {
            reason: reject.reason,
            detail: reject.detail,
            partition: self.partition.clone(),
            offset,
            raw,
        });
    }

    fn cut(&mut self) -> Result<(), ConnectorError> {
        if self.offsets.is_empty() {
            return Ok(());
        }
        let arrays: Vec<ArrayRef> = self.columns.iter_mut().map(Column::finish).collect();
        let batch = RecordBatch::try_new(self.arrow_schema.clone(), arrays).map_err(|source| {
            ConnectorError::Arrow {
                context: self.partition.clone(),
                source,
            }
        })?;
        self.batches.push(SourceBatch {
            batch,
            partition: self.partition.clone(),
            offsets: std::mem::take(&mut self.offsets),
        });
        Ok(())
    }

    /// Flushes the last partial batch and returns everything decoded.
    pub fn finish(mut self) -> Result<super::Decoded, ConnectorError> {
        self.cut()?;
        Ok(super::Decoded {
            batches: self.batches,
            dead_letters: self.dead_letters,
        })
    }
}
