//! DataFusion's answer to a view's SQL over a whole bounded input: the differential oracle.

use crate::error::SqlError;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::execution::context::SessionContext;
use std::sync::Arc;

/// Runs `sql` as one batch query over in-memory tables `(name, schema, batches)`.
pub async fn batch_query(
    sql: &str,
    tables: &[(String, SchemaRef, Vec<RecordBatch>)],
) -> Result<Vec<RecordBatch>, SqlError> {
    let ctx = SessionContext::new();
    for (name, schema, batches) in tables {
        let table = MemTable::try_new(Arc::clone(schema), vec![batches.clone()])
            .map_err(|e| SqlError::execution(name, e))?;
        ctx.register_table(name.as_str(), Arc::new(table))
            .map_err(|e| SqlError::execution(name, e))?;
    }
    let frame = ctx
        .sql(sql)
        .await
        .map_err(|e| SqlError::execution("reference query", e))?;
    frame
        .collect()
        .await
        .map_err(|e| SqlError::execution("reference query", e))
}
