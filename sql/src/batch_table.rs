//! A table whose contents are swapped batch by batch.
//!
//! Plans over a stream are built once; for every batch the runtime puts the batch into the
//! table's slot and executes the same logical plan again, without parsing or planning SQL anew.

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use std::sync::{Arc, Mutex};

/// The batches a [`BatchSlotTable`] currently holds.
#[derive(Debug, Clone, Default)]
pub struct BatchSlot(Arc<Mutex<Vec<RecordBatch>>>);

impl BatchSlot {
    /// Replaces the contents.
    pub fn set(&self, batches: Vec<RecordBatch>) {
        // A poisoned lock only means another thread panicked mid-swap; the Vec is still valid.
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = batches;
    }

    fn get(&self) -> Vec<RecordBatch> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A table provider reading whatever its [`BatchSlot`] holds at execution time.
#[derive(Debug)]
pub struct BatchSlotTable {
    schema: SchemaRef,
    slot: BatchSlot,
}

impl BatchSlotTable {
    /// A table of `schema` reading `slot`.
    pub fn new(schema: SchemaRef, slot: BatchSlot) -> Self {
        BatchSlotTable { schema, slot }
    }
}

#[async_trait]
impl TableProvider for BatchSlotTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let exec = MemorySourceConfig::try_new_exec(
            &[self.slot.get()],
            Arc::clone(&self.schema),
            projection.cloned(),
        )?;
        Ok(exec)
    }
}
