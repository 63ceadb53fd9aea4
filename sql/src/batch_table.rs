//! A table whose contents are swapped batch by batch.
//!
//! Plans over a stream are built once, down to the physical plan: its scan is a [`SlotExec`]
//! that reads the table's slot when the plan executes. For every batch the runtime puts the
//! batch into the slot and executes the same physical plan again, without parsing, optimizing
//! or planning anything anew.

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    ReplaceChildrenOptions, SendableRecordBatchStream,
};
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
        Ok(Arc::new(SlotExec::new(
            &self.schema,
            self.slot.clone(),
            projection.cloned(),
        )?))
    }
}

/// The scan of a [`BatchSlotTable`]: one partition holding the slot's batches as of each
/// [`ExecutionPlan::execute`], so one physical plan serves every batch.
#[derive(Debug)]
pub struct SlotExec {
    slot: BatchSlot,
    projection: Option<Vec<usize>>,
    properties: Arc<PlanProperties>,
}

impl SlotExec {
    fn new(schema: &SchemaRef, slot: BatchSlot, projection: Option<Vec<usize>>) -> Result<Self> {
        let projected = match &projection {
            Some(columns) => Arc::new(schema.project(columns)?),
            None => Arc::clone(schema),
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(projected),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(SlotExec {
            slot,
            projection,
            properties: Arc::new(properties),
        })
    }
}

impl DisplayAs for SlotExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "SlotExec")
    }
}

impl ExecutionPlan for SlotExec {
    fn name(&self) -> &str {
        "SlotExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let batches = match &self.projection {
            Some(columns) => (self.slot.get().iter())
                .map(|b| b.project(columns))
                .collect::<std::result::Result<Vec<_>, _>>()?,
            None => self.slot.get(),
        };
        Ok(Box::pin(MemoryStream::try_new(
            batches,
            self.schema(),
            None,
        )?))
    }
}
