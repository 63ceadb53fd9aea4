//! A DataFusion session over Quiver's named streams, and SQL planning with located errors.

use crate::batch_table::{BatchSlot, BatchSlotTable};
use crate::diagnostic::Diagnostic;
use crate::error::SqlError;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNode;
use datafusion::common::DFSchema;
use datafusion::error::DataFusionError;
use datafusion::execution::context::{SessionConfig, SessionContext};
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::{collect, ExecutionPlan};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A named stream and the schema of its rows.
#[derive(Debug, Clone)]
pub struct StreamSchema {
    /// Stream name, as SQL refers to it in `FROM`.
    pub name: String,
    /// Row schema.
    pub schema: SchemaRef,
}

/// A plan run once per batch (see [`StreamSession::prepare`]).
#[derive(Debug, Clone)]
pub(crate) struct PreparedPlan {
    /// The optimized logical plan.
    pub(crate) logical: LogicalPlan,
    /// Its physical plan, reused for every batch; `None` when the plan reads the clock.
    physical: Option<Arc<dyn ExecutionPlan>>,
    /// Schema of the results.
    schema: SchemaRef,
}

impl PreparedPlan {
    /// Schema of the results.
    pub(crate) fn schema(&self) -> &SchemaRef {
        &self.schema
    }
}

/// Whether `plan` calls a stable function such as `now()`, which planning folds into a
/// constant.
fn reads_the_clock(plan: &LogicalPlan) -> bool {
    let stable = |e: &Expr| {
        e.exists(|e| {
            Ok(matches!(e, Expr::ScalarFunction(f)
                if f.func.signature().volatility == Volatility::Stable))
        })
        .unwrap_or(true)
    };
    plan.exists(|node| Ok(node.expressions().iter().any(stable)))
        .unwrap_or(true)
}

/// A DataFusion context with every known stream registered as a swappable table.
#[derive(Clone)]
pub(crate) struct StreamSession {
    ctx: SessionContext,
    slots: BTreeMap<String, BatchSlot>,
    /// Held by each [`StreamSession::run`]: a stream's table is one slot, so runs of one
    /// session (and its clones) over different batches take turns (backfill evaluates several
    /// partitions of a view at once).
    running: Arc<tokio::sync::Mutex<()>>,
}

impl StreamSession {
    /// Registers `streams`; per-batch execution uses a single partition.
    pub(crate) fn new(streams: &[StreamSchema]) -> Result<Self, SqlError> {
        let config = SessionConfig::new()
            .with_target_partitions(1)
            .with_batch_size(64 * 1024)
            .with_information_schema(false);
        let ctx = SessionContext::new_with_config(config);
        let mut slots = BTreeMap::new();
        for stream in streams {
            let slot = BatchSlot::default();
            ctx.register_table(
                stream.name.as_str(),
                Arc::new(BatchSlotTable::new(
                    Arc::clone(&stream.schema),
                    slot.clone(),
                )),
            )
            .map_err(|e| SqlError::execution(&stream.name, e))?;
            slots.insert(stream.name.clone(), slot);
        }
        Ok(StreamSession {
            ctx,
            slots,
            running: Arc::default(),
        })
    }

    /// Parses, plans and type-checks `sql` (not optimised: Quiver inspects the plan's shape).
    pub(crate) async fn plan(&self, file: &str, sql: &str) -> Result<LogicalPlan, SqlError> {
        let state = self.ctx.state();
        let plan = state
            .create_logical_plan(sql)
            .await
            .map_err(|e| self.diagnose(file, sql, e))?;
        state
            .analyzer()
            .execute_and_check(plan, state.config_options(), |_, _| {})
            .map_err(|e| self.diagnose(file, sql, e).into())
    }

    /// Optimises a plan for repeated execution.
    pub(crate) fn optimize(
        &self,
        plan: &LogicalPlan,
        context: &str,
    ) -> Result<LogicalPlan, SqlError> {
        self.ctx
            .state()
            .optimize(plan)
            .map_err(|e| SqlError::execution(context, e))
    }

    /// A physical expression for `expr` over rows of `schema`.
    pub(crate) fn physical_expr(
        &self,
        expr: &Expr,
        schema: &DFSchema,
        context: &str,
    ) -> Result<Arc<dyn PhysicalExpr>, SqlError> {
        self.ctx
            .state()
            .create_physical_expr(expr.clone(), schema)
            .map_err(|e| SqlError::execution(context, e))
    }

    /// Plans `plan` (optimized) for execution batch by batch: down to the physical plan
    /// when it can be reused, which saves optimizing and planning for every batch.
    pub(crate) async fn prepare(
        &self,
        plan: LogicalPlan,
        context: &str,
    ) -> Result<PreparedPlan, SqlError> {
        // Stable functions (`now()`, `current_date`) are folded into constants while
        // planning: such a plan is planned again for every batch, as it always was.
        let physical = if reads_the_clock(&plan) {
            None
        } else {
            let state = self.ctx.state();
            let physical = state
                .create_physical_plan(&plan)
                .await
                .map_err(|e| SqlError::execution(context, e))?;
            Some(physical)
        };
        let schema = Arc::new(plan.schema().as_arrow().clone());
        Ok(PreparedPlan {
            logical: plan,
            physical,
            schema,
        })
    }

    /// Runs `plan` with `batch` as the contents of stream `stream`, returning one batch (one
    /// run at a time: see [`StreamSession::running`]).
    pub(crate) async fn run(
        &self,
        plan: &PreparedPlan,
        stream: &str,
        batch: RecordBatch,
        context: &str,
    ) -> Result<RecordBatch, SqlError> {
        let _turn = self.running.lock().await;
        let slot = self
            .slots
            .get(stream)
            .ok_or_else(|| SqlError::execution(context, format!("unknown stream `{stream}`")))?;
        slot.set(vec![batch]);
        let result = async {
            match &plan.physical {
                Some(physical) => {
                    // Operators with state between executions (none in row-local plans
                    // today) start afresh.
                    let physical = reset_plan_states(Arc::clone(physical))?;
                    collect(physical, self.ctx.task_ctx()).await
                }
                None => {
                    let frame = self.ctx.execute_logical_plan(plan.logical.clone()).await?;
                    frame.collect().await
                }
            }
        }
        .await;
        slot.set(Vec::new());
        let batches = result.map_err(|e| SqlError::execution(context, e))?;
        concat_batches(&plan.schema, &batches).map_err(|e| SqlError::execution(context, e))
    }

    /// Turns a DataFusion planning error into a located, actionable diagnostic.
    fn diagnose(&self, file: &str, sql: &str, e: DataFusionError) -> Diagnostic {
        let text = e.strip_backtrace();
        let message = text
            .trim_start_matches("SQL error: ")
            .trim_start_matches("Error during planning: ")
            .trim_start_matches("Schema error: ")
            .to_string();
        let mut d = Diagnostic::new(file, message.clone());
        if let Some((line, column)) = parser_position(&message) {
            d = d
                .at(line, column)
                .with_help("fix the SQL syntax at this position");
        }
        if let Some(name) = between(&message, "No field named ", ".") {
            let name = name.trim_matches('"');
            let bare = name.rsplit('.').next().unwrap_or(name).trim_matches('"');
            d = d
                .at_word(sql, bare)
                .with_help("check the column name against the stream's schema (see `quiver validate` output or the config's schema)");
        }
        if let Some(table) = between(&message, "table '", "' not found") {
            let bare = table.rsplit('.').next().unwrap_or(table);
            let known: Vec<&str> = self.slots.keys().map(String::as_str).collect();
            d = d
                .at_word(sql, bare)
                .with_help(format!("known streams: {}", known.join(", ")));
        }
        if message.starts_with("type_coercion") {
            if let Some(literal) = between(&message, "Cannot cast string '", "'") {
                d = Diagnostic::new(
                    file,
                    format!("`{literal}` does not fit the type of the window's ORDER BY column"),
                )
                .at_word(sql, literal)
                .with_help("RANGE windows with INTERVAL bounds must be ordered by the event-time column (a timestamp)");
            }
        }
        if d.line.is_none() {
            if let Some(name) = between(&message, "Invalid function '", "'") {
                d = d.at_word(sql, name);
            }
        }
        d
    }
}

/// `(line, column)` from a SQL parser message ending in "at Line: L, Column: C".
fn parser_position(message: &str) -> Option<(usize, usize)> {
    let line: usize = between(message, "Line: ", ",")?.trim().parse().ok()?;
    let rest = &message[message.find("Column: ")? + "Column: ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((line, digits.parse().ok()?))
}

/// The text between the first `start` and the following `end`.
fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_parser_positions() {
        assert_eq!(
            parser_position("Expected: an expression, found: FROM at Line: 3, Column: 12"),
            Some((3, 12))
        );
        assert_eq!(parser_position("nothing"), None);
    }
}
