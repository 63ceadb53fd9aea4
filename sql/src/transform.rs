//! SQL transforms: a statement applied to every batch of a stream.

use crate::diagnostic::Diagnostic;
use crate::error::SqlError;
use crate::session::{StreamSchema, StreamSession};
use crate::OFFSET_COLUMN;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::Column;
use datafusion::logical_expr::{Expr, LogicalPlan, Projection};
use std::sync::Arc;

/// The result of a transform on one batch.
#[derive(Debug)]
pub struct TransformOutput {
    /// Rows that passed, in the transform's output schema.
    pub batch: RecordBatch,
    /// Input rows whose evaluation failed (e.g. a failing CAST), with DataFusion's message.
    pub failed: Vec<(usize, String)>,
}

/// A compiled transform: `SELECT ... FROM <stream> [WHERE ...]`, run per batch.
pub struct Transform {
    name: String,
    input: String,
    session: StreamSession,
    plan: LogicalPlan,
    output_schema: SchemaRef,
}

impl std::fmt::Debug for Transform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transform")
            .field("name", &self.name)
            .field("input", &self.input)
            .finish()
    }
}

impl Transform {
    /// Compiles the transform producing stream `name` from `sql` (read from `file`).
    pub async fn compile(
        name: &str,
        file: &str,
        sql: &str,
        streams: &[StreamSchema],
    ) -> Result<Self, SqlError> {
        let session = StreamSession::new(streams)?;
        let plan = session.plan(file, sql).await?;
        let input = row_local_input(&plan).map_err(|keyword| {
            Diagnostic::new(
                file,
                format!("transform `{name}` is not row-local: transforms run on each event as it arrives"),
            )
            .with_help("a transform may filter (WHERE) and compute columns (expressions, CASE, functions) from one stream; aggregates and windows belong in feature views")
            .at_word(sql, keyword)
        })?;
        let plan = carry_offsets(plan).map_err(|e| SqlError::execution(name, e))?;
        let plan = session.optimize(&plan, name)?;
        let output_schema = Arc::new(plan.schema().as_arrow().clone());
        Ok(Transform {
            name: name.to_string(),
            input,
            session,
            plan,
            output_schema,
        })
    }

    /// Name of the stream this transform produces.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Name of the stream it reads.
    pub fn input(&self) -> &str {
        &self.input
    }

    /// Schema of the produced stream.
    pub fn output_schema(&self) -> SchemaRef {
        Arc::clone(&self.output_schema)
    }

    /// Applies the transform to a batch. If the batch fails as a whole, rows are retried one by
    /// one so that only the failing rows are rejected.
    pub async fn apply(&self, batch: RecordBatch) -> Result<TransformOutput, SqlError> {
        match self
            .session
            .run(&self.plan, &self.input, batch.clone(), &self.name)
            .await
        {
            Ok(out) => Ok(TransformOutput {
                batch: out,
                failed: Vec::new(),
            }),
            Err(_) if batch.num_rows() > 1 => {
                let mut good = Vec::new();
                let mut failed = Vec::new();
                for row in 0..batch.num_rows() {
                    match self
                        .session
                        .run(&self.plan, &self.input, batch.slice(row, 1), &self.name)
                        .await
                    {
                        Ok(out) => good.push(out),
                        Err(e) => failed.push((row, e.to_string())),
                    }
                }
                let batch = datafusion::arrow::compute::concat_batches(&self.output_schema, &good)
                    .map_err(|e| SqlError::execution(&self.name, e))?;
                Ok(TransformOutput { batch, failed })
            }
            Err(e) => Ok(TransformOutput {
                batch: RecordBatch::new_empty(Arc::clone(&self.output_schema)),
                failed: vec![(0, e.to_string())],
            }),
        }
    }
}

/// The single stream a row-local plan reads, or a keyword locating the offending clause.
fn row_local_input(plan: &LogicalPlan) -> Result<String, &'static str> {
    match plan {
        LogicalPlan::TableScan(scan) => Ok(scan.table_name.table().to_string()),
        LogicalPlan::Projection(p) => row_local_input(&p.input),
        LogicalPlan::Filter(f) => row_local_input(&f.input),
        LogicalPlan::SubqueryAlias(a) => row_local_input(&a.input),
        LogicalPlan::Window(_) => Err("over"),
        LogicalPlan::Aggregate(_) => Err("group"),
        LogicalPlan::Sort(_) => Err("order"),
        LogicalPlan::Limit(_) => Err("limit"),
        LogicalPlan::Join(_) => Err("join"),
        LogicalPlan::Distinct(_) => Err("distinct"),
        _ => Err("select"),
    }
}

/// Makes a top-level projection also output the hidden offset column when its input has it,
/// so every output row keeps its source position.
fn carry_offsets(plan: LogicalPlan) -> datafusion::error::Result<LogicalPlan> {
    if plan
        .schema()
        .has_column_with_unqualified_name(OFFSET_COLUMN)
    {
        return Ok(plan);
    }
    let LogicalPlan::Projection(p) = plan else {
        return Ok(plan);
    };
    let Ok((qualifier, field)) = p
        .input
        .schema()
        .qualified_field_with_unqualified_name(OFFSET_COLUMN)
    else {
        return Ok(LogicalPlan::Projection(p));
    };
    let mut exprs = p.expr.clone();
    exprs.push(Expr::Column(Column::new(qualifier.cloned(), field.name())));
    Ok(LogicalPlan::Projection(Projection::try_new(
        exprs, p.input,
    )?))
}
