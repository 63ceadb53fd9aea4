//! SQL transforms: a statement applied to every batch of a stream.

use crate::diagnostic::Diagnostic;
use crate::error::SqlError;
use crate::lineage::carry_hidden;
use crate::session::{PreparedPlan, StreamSchema, StreamSession};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::LogicalPlan;
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
    plan: PreparedPlan,
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
        let plan = carry_hidden(plan).map_err(|e| SqlError::execution(name, e))?;
        let plan = session.optimize(&plan, name)?;
        let plan = session.prepare(plan, name).await?;
        Ok(Transform {
            name: name.to_string(),
            input,
            session,
            plan,
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
        Arc::clone(self.plan.schema())
    }

    /// Applies the transform to a batch. If the batch fails as a whole, the failing rows are
    /// isolated by bisection (halves that fail are split again), so only they are rejected
    /// and the cost is about `2 * failed * log2(rows)` executions, not one per row.
    pub async fn apply(&self, batch: RecordBatch) -> Result<TransformOutput, SqlError> {
        let mut good = Vec::new();
        let mut failed = Vec::new();
        // Ranges still to try, the next one last: rows come out in input order.
        let mut pending = vec![(0, batch.num_rows())];
        while let Some((start, len)) = pending.pop() {
            let part = batch.slice(start, len);
            match self
                .session
                .run(&self.plan, &self.input, part, &self.name)
                .await
            {
                Ok(out) => good.push(out),
                Err(e) if len == 0 => return Err(SqlError::execution(&self.name, e)),
                Err(e) if len == 1 => failed.push((start, e.to_string())),
                Err(_) => {
                    let half = len / 2;
                    pending.push((start + half, len - half));
                    pending.push((start, half));
                }
            }
        }
        let batch = match good.len() {
            1 => good.remove(0),
            _ => datafusion::arrow::compute::concat_batches(self.plan.schema(), &good)
                .map_err(|e| SqlError::execution(&self.name, e))?,
        };
        Ok(TransformOutput { batch, failed })
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

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};

    #[tokio::test]
    async fn failing_rows_are_isolated_in_order() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("note", DataType::Utf8, true),
        ]));
        let bad = [3usize, 500, 501, 999];
        let notes: Vec<String> = (0..1000)
            .map(|i| {
                if bad.contains(&i) {
                    "x".into()
                } else {
                    i.to_string()
                }
            })
            .collect();
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from_iter_values(0..1000)),
                Arc::new(StringArray::from_iter_values(notes)),
            ],
        )
        .unwrap();
        let streams = [StreamSchema {
            name: "s".into(),
            schema,
        }];
        let t = Transform::compile(
            "t",
            "t.sql",
            "SELECT id, CAST(note AS INT) AS n FROM s",
            &streams,
        )
        .await
        .unwrap();
        let out = t.apply(batch).await.unwrap();
        let failed: Vec<usize> = out.failed.iter().map(|(row, _)| *row).collect();
        assert_eq!(failed, bad);
        assert!(out.failed[0].1.contains("x"), "{}", out.failed[0].1);
        let ids: Vec<i64> = out
            .batch
            .column(0)
            .as_primitive::<Int64Type>()
            .values()
            .to_vec();
        let want: Vec<i64> = (0..1000)
            .filter(|i| !bad.contains(&(*i as usize)))
            .collect();
        assert_eq!(ids, want, "good rows keep their order");
    }
}
