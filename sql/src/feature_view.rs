//! A feature view's SQL compiled for incremental evaluation.
//!
//! DataFusion plans the view; Quiver cuts the plan at its window nodes. The part below the
//! windows is row-local (scan, filter, projection) and runs per batch in DataFusion; the window
//! aggregates run in Quiver's kernels; the projection above the windows (which may combine
//! features, e.g. `amount / avg(amount) OVER w`) is evaluated per row with DataFusion's
//! physical expressions. The result has exactly the schema DataFusion gives the same SQL.

use crate::diagnostic::Diagnostic;
use crate::error::SqlError;
use crate::exact::{exact_array, exact_values, input_kind};
use crate::key_shard::KeyShard;
use crate::lineage::{
    append_lineage, carry_hidden, lineage_fields, LINEAGE_OFFSET, LINEAGE_PARTITION, OFFSET_COLUMN,
    PARTITION_COLUMN,
};
use crate::session::{PreparedPlan, StreamSchema, StreamSession};
use crate::window_frame::to_kernel_frame;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, StringArray};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit, TimestampMicrosecondType};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan, WindowFunctionDefinition};
use datafusion::physical_expr::PhysicalExpr;
use quiver_gpu::{AggKind, FeatureOutput, InputKind, WindowPlan, WindowSpec};
use std::collections::BTreeSet;
use std::sync::Arc;

/// The per-batch inputs of the window kernels, evaluated from one batch of the stream.
pub struct ViewInputs {
    /// The rows after the view's row-local part (its WHERE, if any).
    pub batch: RecordBatch,
    /// Encoded entity key of each row.
    pub keys: Rows,
    /// Event time of each row, microseconds since the epoch.
    pub times: Vec<i64>,
    /// Per kernel input: values as f64.
    pub values: Vec<Vec<f64>>,
    /// Per kernel input: validity (`None` = all valid).
    pub validity: Vec<Option<Vec<bool>>>,
    /// Per kernel input: exact values of integer and decimal inputs (`None` for float ones).
    pub exact: Vec<Option<Vec<i128>>>,
}

impl ViewInputs {
    /// The encoded keys as byte slices.
    pub fn key_bytes(&self) -> Vec<&[u8]> {
        (0..self.keys.num_rows())
            .map(|i| self.keys.row(i).data())
            .collect()
    }
}

/// A kernel input: an argument expression of one or more window aggregates.
struct KernelInput {
    expr: Arc<dyn PhysicalExpr>,
    /// Only counted (any type is fine; only nullness matters).
    count_only: bool,
    /// How the kernels read it (integers and decimals exactly).
    kind: InputKind,
}

/// One projection level above the windows.
struct PostProjection {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
}

/// A compiled feature view.
pub struct FeatureView {
    name: String,
    stream: String,
    session: StreamSession,
    pre_plan: Option<PreparedPlan>,
    key_exprs: Vec<Arc<dyn PhysicalExpr>>,
    key_names: Vec<String>,
    key_types: Vec<DataType>,
    key_converter: RowConverter,
    time_expr: Arc<dyn PhysicalExpr>,
    inputs: Vec<KernelInput>,
    window_plan: WindowPlan,
    window_schema: SchemaRef,
    /// Columns of a prepared batch the windows read (the rest are hidden lineage columns).
    base_columns: Vec<usize>,
    feature_types: Vec<DataType>,
    post: Vec<PostProjection>,
    /// For the window level's columns and then each projection level's outputs: the window
    /// aggregates each column reads, or `None` when it also reads the event's own columns
    /// ([`windows_read`]; fixed by the plan, so computed once).
    reads: Vec<Vec<Option<BTreeSet<usize>>>>,
    /// The window level's schema and each projection level's, every field nullable (what a
    /// point-in-time read evaluates them over).
    nullable_levels: Vec<SchemaRef>,
    output_schema: SchemaRef,
    /// Only rows whose key this shard owns are evaluated (one of several active instances).
    shard: Option<KeyShard>,
}

impl std::fmt::Debug for FeatureView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeatureView")
            .field("name", &self.name)
            .field("stream", &self.stream)
            .field("keys", &self.key_names)
            .field("specs", &self.window_plan.specs())
            .finish()
    }
}

/// The window function of a window node expression, looking through aliases.
fn window_function(expr: &Expr) -> Option<&WindowFunction> {
    match expr {
        Expr::WindowFunction(w) => Some(w),
        Expr::Alias(a) => window_function(&a.expr),
        _ => None,
    }
}

/// Output names (aliases) of the top projection that read each window column, for locating
/// errors in the SQL text.
fn alias_of(projections: &[&LogicalPlan], window_column: &str) -> Option<String> {
    let LogicalPlan::Projection(p) = projections.first()? else {
        return None;
    };
    /// Whether `e` is the window column, possibly under planner-made aliases.
    fn reads(e: &Expr, window_column: &str) -> bool {
        match e {
            Expr::Column(c) => c.name == window_column,
            Expr::Alias(a) => reads(&a.expr, window_column),
            _ => false,
        }
    }
    p.expr.iter().find_map(|e| match e {
        Expr::Alias(a) if reads(&a.expr, window_column) => Some(a.name.clone()),
        _ => None,
    })
}

impl FeatureView {
    /// Compiles the view `name` from `sql` (read from `file`) over `streams`; `event_time` is
    /// the stream's event-time column, which every window must be ordered by.
    pub async fn compile(
        name: &str,
        file: &str,
        sql: &str,
        streams: &[StreamSchema],
        event_time: &str,
    ) -> Result<Self, SqlError> {
        let session = StreamSession::new(streams)?;
        let plan = session.plan(file, sql).await?;
        let err = |message: String| Diagnostic::new(file, message);

        // Above the windows: projections (and aliases) only.
        let mut node = &plan;
        let mut above: Vec<&LogicalPlan> = Vec::new();
        loop {
            match node {
                LogicalPlan::Projection(p) => {
                    above.push(node);
                    node = &p.input;
                }
                LogicalPlan::SubqueryAlias(a) => node = &a.input,
                LogicalPlan::Window(_) | LogicalPlan::TableScan(_) | LogicalPlan::Filter(_) => {
                    break
                }
                other => {
                    let what = other.display().to_string();
                    let what = what.split(':').next().unwrap_or("this clause").trim();
                    return Err(err(format!(
                        "`{what}` is not supported in a feature view: a view computes one row of features per event"
                    ))
                    .with_help("remove ORDER BY / LIMIT / GROUP BY / DISTINCT from the view; put per-event filters in WHERE or in a transform")
                    .at_last_word(sql, first_keyword(other))
                    .into());
                }
            }
        }
        // The window nodes, top to bottom.
        let mut windows = Vec::new();
        while let LogicalPlan::Window(w) = node {
            windows.push(w);
            node = &w.input;
        }
        if windows.is_empty() {
            return Err(err("the view has no window aggregate".into())
                .with_help("a feature view selects at least one `agg(col) OVER (PARTITION BY key ORDER BY event_time RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW)`")
                .into());
        }
        let below = node;
        let stream = check_row_local(below, file, sql)?;
        check_event_time_passthrough(below, event_time).map_err(|redefined| {
            err(format!(
                "the view redefines the event-time column `{event_time}` as `{redefined}`: windows must run on the stream's own event time, which the watermark and the reorder buffer order events by"
            ))
            .with_help(format!(
                "keep `{event_time}` as it is and add the derived time under another name; to window on a derived time, compute it in a transform and declare it as event_time.column"
            ))
            .at_word(sql, first_word(&redefined))
        })?;
        let top_window = windows[0];
        windows.reverse(); // bottom first: the order of their columns in the output schema

        let below_schema = below.schema();
        let mut specs = Vec::new();
        let mut input_exprs: Vec<(Expr, bool)> = Vec::new();
        let mut partition: Option<&Vec<Expr>> = None;
        let mut feature_types = Vec::new();
        let first_feature = below_schema.fields().len();
        for w in &windows {
            for expr in &w.window_expr {
                let field_index = first_feature + feature_types.len();
                let column = top_window.schema.field(field_index).name().clone();
                let alias = alias_of(&above, &column).unwrap_or_else(|| column.clone());
                let at = |d: Diagnostic| d.at_word(sql, &alias);
                let Some(f) = window_function(expr) else {
                    return Err(at(err(format!("unsupported window expression `{column}`"))).into());
                };
                let fname = f.fun.name().to_string();
                let kind = match (&f.fun, AggKind::from_sql_name(&fname)) {
                    (WindowFunctionDefinition::AggregateUDF(_), Some(kind)) => kind,
                    _ => {
                        return Err(at(err(format!(
                            "window function `{fname}` is not supported in feature views"
                        )))
                        .with_help(format!(
                            "supported aggregates: {}",
                            AggKind::SUPPORTED_SQL_NAMES
                        ))
                        .into())
                    }
                };
                let p = &f.params;
                if p.distinct {
                    return Err(at(err(format!("`{fname}(DISTINCT ...)` is not supported in windows")))
                        .with_help("drop DISTINCT; distinct counts over sliding windows are planned (approximate sketches)")
                        .into());
                }
                if p.filter.is_some() {
                    return Err(at(err("FILTER (WHERE ...) on window aggregates is not supported".into()))
                        .with_help("use a CASE expression as the argument, e.g. sum(CASE WHEN cond THEN amount END)")
                        .into());
                }
                if p.partition_by.is_empty() {
                    return Err(at(err(format!("window `{alias}` has no PARTITION BY")))
                        .with_help("partition by the view's entity key, e.g. OVER (PARTITION BY card_id ORDER BY event_time ...)")
                        .into());
                }
                match partition {
                    None => partition = Some(&p.partition_by),
                    Some(keys) if *keys == p.partition_by => {}
                    Some(_) => {
                        return Err(at(err(format!("window `{alias}` is partitioned differently from the view's other windows")))
                            .with_help("a view has one entity key: put windows over other keys (e.g. merchant) in their own view file")
                            .into())
                    }
                }
                check_order_by(&p.order_by, event_time).map_err(|m| {
                    at(err(m)).with_help(format!(
                        "order every window by the event-time column: ORDER BY {event_time}"
                    ))
                })?;
                let frame = to_kernel_frame(&p.window_frame)
                    .map_err(|fp| at(err(fp.message)).with_help(fp.help))?;
                let arg = match p.args.as_slice() {
                    [arg] => arg.clone(),
                    _ => {
                        return Err(
                            at(err(format!("`{fname}` takes exactly one argument here"))).into(),
                        )
                    }
                };
                let count_only = kind == AggKind::Count;
                if !count_only {
                    let arg_type = arg
                        .get_type(below_schema)
                        .map_err(|e| SqlError::execution(name, e))?;
                    if !arg_type.is_numeric() {
                        return Err(at(err(format!(
                            "`{fname}` over a `{arg_type}` argument is not supported"
                        )))
                        .with_help("aggregate a numeric column, or CAST(... AS DOUBLE)")
                        .into());
                    }
                }
                let input = match input_exprs.iter().position(|(e, _)| *e == arg) {
                    Some(i) => {
                        input_exprs[i].1 &= count_only;
                        i
                    }
                    None => {
                        input_exprs.push((arg, count_only));
                        input_exprs.len() - 1
                    }
                };
                specs.push(WindowSpec { kind, input, frame });
                feature_types.push(top_window.schema.field(field_index).data_type().clone());
            }
        }
        let partition = partition.cloned().unwrap_or_default();

        let key_exprs = partition
            .iter()
            .map(|e| session.physical_expr(e, below_schema, name))
            .collect::<Result<Vec<_>, _>>()?;
        let key_names = partition
            .iter()
            .map(|e| match e {
                Expr::Column(c) => c.name.clone(),
                other => other.schema_name().to_string(),
            })
            .collect();
        let key_types: Vec<DataType> = partition
            .iter()
            .map(|e| e.get_type(below_schema))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SqlError::execution(name, e))?;
        let key_fields = key_types.iter().cloned().map(SortField::new).collect();
        let key_converter =
            RowConverter::new(key_fields).map_err(|e| SqlError::execution(name, e))?;
        let time_column = Expr::Column(
            below_schema
                .qualified_field_with_unqualified_name(event_time)
                .map(|(q, f)| datafusion::common::Column::new(q.cloned(), f.name()))
                .map_err(|e| SqlError::execution(name, e))?,
        );
        let time_expr = session.physical_expr(&time_column, below_schema, name)?;
        let inputs = input_exprs
            .iter()
            .enumerate()
            .map(|(i, (e, count_only))| {
                let kind = if *count_only {
                    InputKind::Float
                } else {
                    // An average's output type sets a decimal average's scale.
                    let avg_output = specs
                        .iter()
                        .zip(&feature_types)
                        .find(|(s, _)| s.input == i && s.kind == AggKind::Avg)
                        .map(|(_, t)| t);
                    let arg_type = e
                        .get_type(below_schema)
                        .map_err(|e| SqlError::execution(name, e))?;
                    input_kind(&arg_type, avg_output)
                };
                Ok(KernelInput {
                    expr: session.physical_expr(e, below_schema, name)?,
                    count_only: *count_only,
                    kind,
                })
            })
            .collect::<Result<Vec<_>, SqlError>>()?;
        let window_plan = WindowPlan::new(specs, inputs.len())
            .and_then(|p| p.with_input_kinds(inputs.iter().map(|i| i.kind).collect()))
            .map_err(|e| SqlError::execution(name, e))?;

        let mut post = Vec::new();
        for level in above.iter().rev() {
            let LogicalPlan::Projection(p) = level else {
                continue;
            };
            let exprs = p
                .expr
                .iter()
                .map(|e| session.physical_expr(e, p.input.schema(), name))
                .collect::<Result<Vec<_>, _>>()?;
            post.push(PostProjection {
                exprs,
                schema: Arc::new(p.schema.as_arrow().clone()),
            });
        }
        let (pre_plan, base_columns) = match below {
            LogicalPlan::TableScan(_) => (None, (0..below_schema.fields().len()).collect()),
            other => {
                // The row-local part also passes the hidden lineage columns through; the
                // windows read only the columns the view's own plan has.
                let carried =
                    carry_hidden(other.clone()).map_err(|e| SqlError::execution(name, e))?;
                let optimized = session.optimize(&carried, name)?;
                let out = optimized.schema().as_arrow().clone();
                let base = below_schema
                    .fields()
                    .iter()
                    .map(|f| {
                        out.index_of(f.name()).map_err(|_| {
                            SqlError::execution(
                                name,
                                format!("column `{}` missing after planning", f.name()),
                            )
                        })
                    })
                    .collect::<Result<Vec<usize>, SqlError>>()?;
                (Some(session.prepare(optimized, name).await?), base)
            }
        };
        let mut output_fields: Vec<datafusion::arrow::datatypes::Field> = plan
            .schema()
            .as_arrow()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        if let Some(clash) = output_fields
            .iter()
            .find(|f| f.name() == LINEAGE_PARTITION || f.name() == LINEAGE_OFFSET)
        {
            return Err(err(format!(
                "the view outputs a column named `{}`, which Quiver adds to every feature row",
                clash.name()
            ))
            .with_help(format!(
                "rename it: `{LINEAGE_PARTITION}` and `{LINEAGE_OFFSET}` name each row's source \
                 partition and offset"
            ))
            .at_word(sql, clash.name())
            .into());
        }
        output_fields.extend(lineage_fields());
        let window_schema: SchemaRef = Arc::new(top_window.schema.as_arrow().clone());
        let reads = windows_read(base_columns.len(), &window_schema, &post);
        let nullable_levels = std::iter::once(&window_schema)
            .chain(post.iter().map(|level| &level.schema))
            .map(all_nullable)
            .collect();
        Ok(FeatureView {
            name: name.to_string(),
            stream,
            session,
            pre_plan,
            key_exprs,
            key_names,
            key_types,
            key_converter,
            time_expr,
            inputs,
            window_plan,
            window_schema,
            base_columns,
            feature_types,
            output_schema: Arc::new(datafusion::arrow::datatypes::Schema::new(output_fields)),
            post,
            reads,
            nullable_levels,
            shard: None,
        })
    }

    /// Evaluates only the rows whose key `shard` owns from now on: [`FeatureView::prepare`]
    /// drops the others after the view's row-local part.
    pub fn set_shard(&mut self, shard: KeyShard) {
        self.shard = Some(shard);
    }

    /// The shard (of `count`) owning each row of `batch` that the view's row-local part keeps:
    /// the kept rows (with the hidden lineage columns the batch carried) and their shards.
    pub async fn key_shards(
        &self,
        batch: RecordBatch,
        count: u32,
    ) -> Result<(RecordBatch, Vec<u32>), SqlError> {
        let batch = self.row_local(batch).await?;
        let keys = self.encoded_keys(&batch)?;
        let shards = (0..keys.num_rows())
            .map(|i| KeyShard::of_key(keys.row(i).data(), count))
            .collect();
        Ok((batch, shards))
    }

    /// The view's row-local part (its WHERE and projections below the windows) over `batch`.
    async fn row_local(&self, batch: RecordBatch) -> Result<RecordBatch, SqlError> {
        match &self.pre_plan {
            Some(plan) => {
                self.session
                    .run(plan, &self.stream, batch, &self.name)
                    .await
            }
            None => Ok(batch),
        }
    }

    /// The encoded entity keys of a batch after the row-local part.
    fn encoded_keys(&self, batch: &RecordBatch) -> Result<Rows, SqlError> {
        let fail = |e: &dyn std::fmt::Display| SqlError::execution(&self.name, e);
        let base = batch.project(&self.base_columns).map_err(|e| fail(&e))?;
        let key_columns = (self.key_exprs.iter())
            .map(|e| {
                e.evaluate(&base)
                    .and_then(|v| v.into_array(batch.num_rows()))
                    .map_err(|e| fail(&e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.key_converter
            .convert_columns(&key_columns)
            .map_err(|e| fail(&e))
    }

    /// `batch` (after the row-local part) and its encoded keys, without the rows whose key
    /// another shard owns when the view runs one shard (the keys are evaluated once).
    fn owned_rows(&self, batch: RecordBatch) -> Result<(RecordBatch, Rows), SqlError> {
        let keys = self.encoded_keys(&batch)?;
        let Some(shard) = self.shard else {
            return Ok((batch, keys));
        };
        let keep: datafusion::arrow::array::BooleanArray = keys
            .iter()
            .map(|key| Some(shard.owns(key.data())))
            .collect();
        let kept_rows = keep.true_count();
        if kept_rows == batch.num_rows() {
            return Ok((batch, keys));
        }
        let mut kept = self.key_converter.empty_rows(kept_rows, keys.size());
        for (key, owned) in keys.iter().zip(keep.values()) {
            if owned {
                kept.push(key);
            }
        }
        let batch = datafusion::arrow::compute::filter_record_batch(&batch, &keep)
            .map_err(|e| SqlError::execution(&self.name, &e))?;
        Ok((batch, kept))
    }

    /// View name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stream the view reads.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The kernel plan (one spec per window aggregate, in output order).
    pub fn window_plan(&self) -> &WindowPlan {
        &self.window_plan
    }

    /// The entity key expressions, as SQL names.
    pub fn key_names(&self) -> &[String] {
        &self.key_names
    }

    /// Schema of the feature rows: exactly as DataFusion types the view's SQL, then the lineage
    /// columns `_source_partition` and `_source_offset`.
    pub fn output_schema(&self) -> SchemaRef {
        Arc::clone(&self.output_schema)
    }

    /// The row-local part of the view over one stream batch and the encoded entity key of
    /// each row left: what [`FeatureView::prepare`] starts with, without the kernel inputs
    /// (for splitting rows by key).
    pub async fn prepare_keys(&self, batch: RecordBatch) -> Result<(RecordBatch, Rows), SqlError> {
        self.owned_rows(self.row_local(batch).await?)
    }

    /// Evaluates the row-local part of the view and the kernel inputs for one stream batch.
    pub async fn prepare(&self, batch: RecordBatch) -> Result<ViewInputs, SqlError> {
        let (batch, keys) = self.prepare_keys(batch).await?;
        let fail = |e: &dyn std::fmt::Display| SqlError::execution(&self.name, e);
        let rows = batch.num_rows();
        // Expressions were planned over the view's own columns (without the hidden lineage
        // columns the batch also carries).
        let base = batch.project(&self.base_columns).map_err(|e| fail(&e))?;
        let eval = |e: &Arc<dyn PhysicalExpr>| -> Result<ArrayRef, SqlError> {
            e.evaluate(&base)
                .and_then(|v| v.into_array(rows))
                .map_err(|e| fail(&e))
        };
        let time = cast(
            &eval(&self.time_expr)?,
            &DataType::Timestamp(TimeUnit::Microsecond, None),
        )
        .map_err(|e| fail(&e))?;
        if time.null_count() > 0 {
            return Err(fail(
                &"event time is null (null event times must be dead-lettered before the windows)",
            ));
        }
        let times = time
            .as_primitive::<TimestampMicrosecondType>()
            .values()
            .to_vec();
        let mut values = Vec::with_capacity(self.inputs.len());
        let mut validity = Vec::with_capacity(self.inputs.len());
        let mut exact = Vec::with_capacity(self.inputs.len());
        for input in &self.inputs {
            let array = eval(&input.expr)?;
            let valid = array
                .logical_nulls()
                .map(|n| n.iter().collect::<Vec<bool>>());
            if input.kind.is_exact() {
                // The kernels derive the f64 of exact values themselves.
                values.push(Vec::new());
                exact.push(Some(exact_values(&array).map_err(|e| fail(&e))?));
                validity.push(valid);
                continue;
            }
            exact.push(None);
            if input.count_only {
                values.push(vec![1.0; rows]);
            } else {
                let floats = cast(&array, &DataType::Float64).map_err(|e| fail(&e))?;
                values.push(
                    floats
                        .as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                        .values()
                        .to_vec(),
                );
            }
            validity.push(valid);
        }
        Ok(ViewInputs {
            batch,
            keys,
            times,
            values,
            validity,
            exact,
        })
    }

    /// The columns of a prepared batch (of `schema`) that [`FeatureView::finish`] reads: the
    /// view's own columns and the lineage columns, in column order. The others may hold
    /// anything of the right length (rows put in another order need not carry them along).
    pub fn columns_finish_reads(&self, schema: &SchemaRef) -> Vec<usize> {
        let lineage = [PARTITION_COLUMN, OFFSET_COLUMN];
        let lineage = lineage.iter().filter_map(|name| schema.index_of(name).ok());
        let read: BTreeSet<usize> = self.base_columns.iter().copied().chain(lineage).collect();
        read.into_iter().collect()
    }

    /// Builds the feature rows of prepared rows (`rows`: a prepared batch, [`ViewInputs::batch`],
    /// or its rows in another order) from the kernels' output for them, row for row;
    /// `partitions` names the source partitions by index (for the lineage columns).
    pub fn finish(
        &self,
        rows: &RecordBatch,
        features: FeatureOutput,
        partitions: &StringArray,
    ) -> Result<RecordBatch, SqlError> {
        let fail = |e: &dyn std::fmt::Display| SqlError::execution(&self.name, e);
        let mut columns: Vec<ArrayRef> = self
            .base_columns
            .iter()
            .map(|&i| Arc::clone(rows.column(i)))
            .collect();
        columns.extend(self.window_columns(features, rows.num_rows())?);
        let mut batch =
            RecordBatch::try_new(Arc::clone(&self.window_schema), columns).map_err(|e| fail(&e))?;
        for level in &self.post {
            let rows = batch.num_rows();
            let columns = level
                .exprs
                .iter()
                .map(|e| e.evaluate(&batch).and_then(|v| v.into_array(rows)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| fail(&e))?;
            batch =
                RecordBatch::try_new(Arc::clone(&level.schema), columns).map_err(|e| fail(&e))?;
        }
        append_lineage(batch, rows, partitions).map_err(|e| fail(&e))
    }

    /// The window aggregate columns of `rows` rows from the kernels' output, typed as
    /// DataFusion types them.
    fn window_columns(
        &self,
        features: FeatureOutput,
        rows: usize,
    ) -> Result<Vec<ArrayRef>, SqlError> {
        let fail = |e: &dyn std::fmt::Display| SqlError::execution(&self.name, e);
        let specs = self.window_plan.specs();
        let mut columns = Vec::with_capacity(specs.len());
        for (spec, (((values, valid), exact), data_type)) in features
            .values
            .into_iter()
            .zip(features.valid)
            .zip(features.exact)
            .zip(&self.feature_types)
            .enumerate()
        {
            let nulls = NullBuffer::from(valid);
            let nulls = (nulls.null_count() > 0).then_some(nulls);
            if self.window_plan.is_exact_output(spec) {
                let exact = exact.unwrap_or_else(|| vec![0; rows]); // all null
                let is_avg = specs[spec].kind == AggKind::Avg;
                columns.push(exact_array(exact, nulls, data_type, is_avg).map_err(|e| fail(&e))?);
                continue;
            }
            let array: ArrayRef = Arc::new(Float64Array::new(values.into(), nulls));
            let array = if data_type == &DataType::Float64 {
                array
            } else {
                cast(&array, data_type).map_err(|e| fail(&e))?
            };
            columns.push(array);
        }
        Ok(columns)
    }

    /// Indices of the stream columns the windows read (keys, event time, aggregate arguments)
    /// when nothing row-local runs below the windows; `None` when the view filters or computes
    /// there (then any column may be read). A reader may leave the other columns NULL.
    pub fn stream_columns_read(&self) -> Option<Vec<usize>> {
        if self.pre_plan.is_some() {
            return None;
        }
        let exprs = (self.key_exprs.iter())
            .chain(std::iter::once(&self.time_expr))
            .chain(self.inputs.iter().map(|i| &i.expr));
        let mut read = std::collections::BTreeSet::new();
        for e in exprs {
            for c in datafusion::physical_expr::utils::collect_columns(e) {
                read.insert(self.base_columns[c.index()]);
            }
        }
        Some(read.into_iter().collect())
    }

    /// Indices of the stream columns whose values reach the view's windows or feature rows
    /// (keys, event time, aggregate arguments and the columns it outputs) when nothing
    /// row-local runs below the windows; `None` when something does (then any column may be
    /// read). The hidden lineage columns are not counted. An evaluation may be given any
    /// values of their types in the other columns: none is read.
    pub fn stream_columns_used(&self) -> Option<Vec<usize>> {
        let mut used: std::collections::BTreeSet<usize> =
            self.stream_columns_read()?.into_iter().collect();
        match self.post.first() {
            // The window level is the output: every column passes through.
            None => used.extend(self.base_columns.iter().copied()),
            Some(level) => {
                for e in &level.exprs {
                    for c in datafusion::physical_expr::utils::collect_columns(e) {
                        // The window level's first columns are the stream's; the others are
                        // the window aggregates.
                        if let Some(&column) = self.base_columns.get(c.index()) {
                            used.insert(column);
                        }
                    }
                }
            }
        }
        Some(used.into_iter().collect())
    }

    /// The key columns (in the view's key types) of keys encoded by
    /// [`FeatureView::encode_keys`] or by the kernels (e.g. the keys an online store holds).
    pub fn decode_keys(&self, keys: &[&[u8]]) -> Result<Vec<ArrayRef>, SqlError> {
        let parser = self.key_converter.parser();
        self.key_converter
            .convert_rows(keys.iter().map(|k| parser.parse(k)))
            .map_err(|e| SqlError::execution(&self.name, &e))
    }

    /// Encodes entity keys given as one column per key expression (e.g. a training spine's
    /// `card_id`), cast to the key types, as the kernels group rows.
    pub fn encode_keys(&self, columns: &[ArrayRef]) -> Result<Rows, SqlError> {
        let fail = |e: &dyn std::fmt::Display| SqlError::execution(&self.name, e);
        if columns.len() != self.key_types.len() {
            return Err(fail(&format!(
                "{} key columns given, the view has {} ({})",
                columns.len(),
                self.key_types.len(),
                self.key_names.join(", ")
            )));
        }
        let cast_columns = columns
            .iter()
            .zip(&self.key_types)
            .zip(&self.key_names)
            .map(|((c, t), name)| {
                cast(c, t).map_err(|e| {
                    fail(&format!(
                        "key `{name}` is {}, the view's key is {t}: {e}",
                        c.data_type()
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.key_converter
            .convert_columns(&cast_columns)
            .map_err(|e| fail(&e))
    }

    /// Output columns whose values depend only on window aggregates (not on the event's own
    /// columns), so they have a value as of any time: what training sets and online reads
    /// serve. In output order.
    pub fn point_in_time_features(&self) -> Vec<String> {
        let last = self.reads.last().expect("the window level");
        self.output_schema
            .fields()
            .iter()
            .zip(last)
            .filter(|(_, windows)| windows.is_some())
            .map(|(f, _)| f.name().clone())
            .collect()
    }

    /// The window aggregates (indices into the plan's specs) that point-in-time feature `name`
    /// reads; `None` when it is not one.
    pub fn feature_windows(&self, name: &str) -> Option<Vec<usize>> {
        let index = self.output_schema.index_of(name).ok()?;
        let windows = self.reads.last()?.get(index)?.as_ref()?;
        Some(windows.iter().copied().collect())
    }

    /// The point-in-time features ([`FeatureView::point_in_time_features`]) of `rows` rows
    /// whose window outputs are `features`: windows ending at each row's time, with no event
    /// of its own.
    pub fn features_at(
        &self,
        features: FeatureOutput,
        rows: usize,
    ) -> Result<RecordBatch, SqlError> {
        let fail = |e: &dyn std::fmt::Display| SqlError::execution(&self.name, e);
        let base = self.base_columns.len();
        let mut columns: Vec<ArrayRef> = self.window_schema.fields()[..base]
            .iter()
            .map(|f| datafusion::arrow::array::new_null_array(f.data_type(), rows))
            .collect();
        columns.extend(self.window_columns(features, rows)?);
        let levels = &self.reads;
        // Every column may be NULL here: the event columns are, and NULL spine times null
        // even the counts.
        let mut schema = &self.nullable_levels[0];
        for ((level, read), nullable) in
            (self.post.iter().zip(&levels[1..])).zip(&self.nullable_levels[1..])
        {
            let input = RecordBatch::try_new(Arc::clone(schema), columns).map_err(|e| fail(&e))?;
            columns = level
                .exprs
                .iter()
                .zip(level.schema.fields())
                .zip(read)
                .map(|((e, field), windows)| match windows {
                    // Only expressions of window aggregates are evaluated.
                    Some(_) => e
                        .evaluate(&input)
                        .and_then(|v| v.into_array(rows))
                        .map_err(|e| fail(&e)),
                    None => Ok(datafusion::arrow::array::new_null_array(
                        field.data_type(),
                        rows,
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?;
            schema = nullable;
        }
        let last = levels.last().expect("the window level");
        let keep: Vec<usize> = (0..last.len()).filter(|&i| last[i].is_some()).collect();
        RecordBatch::try_new(Arc::clone(schema), columns)
            .and_then(|b| b.project(&keep))
            .map_err(|e| fail(&e))
    }
}

/// For the window level's columns (`base` event columns first, then the window aggregates of
/// `window_schema`) and then each projection level's outputs: the window aggregates each
/// column reads, or `None` when it also reads the event's own columns.
fn windows_read(
    base: usize,
    window_schema: &SchemaRef,
    post: &[PostProjection],
) -> Vec<Vec<Option<BTreeSet<usize>>>> {
    let mut levels = vec![(0..window_schema.fields().len())
        .map(|i| (i >= base).then(|| BTreeSet::from([i - base])))
        .collect::<Vec<_>>()];
    for level in post {
        let below = levels.last().expect("the window level");
        let windows = level
            .exprs
            .iter()
            .map(|e| {
                let mut read = BTreeSet::new();
                for c in datafusion::physical_expr::utils::collect_columns(e) {
                    read.extend(below.get(c.index())?.as_ref()?.iter().copied());
                }
                Some(read)
            })
            .collect();
        levels.push(windows);
    }
    levels
}

/// `schema` with every field nullable.
fn all_nullable(schema: &SchemaRef) -> SchemaRef {
    Arc::new(datafusion::arrow::datatypes::Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ))
}

/// The stream a row-local plan reads; errors for anything that is not row-local.
fn check_row_local(plan: &LogicalPlan, file: &str, sql: &str) -> Result<String, SqlError> {
    match plan {
        LogicalPlan::TableScan(scan) => Ok(scan.table_name.table().to_string()),
        LogicalPlan::Projection(p) => check_row_local(&p.input, file, sql),
        LogicalPlan::Filter(f) => check_row_local(&f.input, file, sql),
        LogicalPlan::SubqueryAlias(a) => check_row_local(&a.input, file, sql),
        other => Err(Diagnostic::new(
            file,
            "a feature view reads one stream directly: joins, subqueries with aggregates and unions are not supported below its windows",
        )
        .with_help("move row-level preparation into a transform in the pipeline config and read its stream")
        .at_word(sql, first_keyword(other))
        .into()),
    }
}

/// Checks that the row-local part of a view passes the stream's event-time column through
/// unchanged; returns the expression that redefines it otherwise.
fn check_event_time_passthrough(plan: &LogicalPlan, event_time: &str) -> Result<(), String> {
    match plan {
        LogicalPlan::Projection(p) => {
            let produced = p
                .schema
                .fields()
                .iter()
                .position(|f| f.name() == event_time)
                .and_then(|i| p.expr.get(i));
            let mut expr = produced;
            while let Some(Expr::Alias(a)) = expr {
                expr = Some(&a.expr);
            }
            match expr {
                Some(Expr::Column(c)) if c.name == event_time => {
                    check_event_time_passthrough(&p.input, event_time)
                }
                Some(other) => Err(other.to_string()),
                // Not produced here: the window planner reports the missing column.
                None => Ok(()),
            }
        }
        LogicalPlan::Filter(f) => check_event_time_passthrough(&f.input, event_time),
        LogicalPlan::SubqueryAlias(a) => check_event_time_passthrough(&a.input, event_time),
        _ => Ok(()),
    }
}

/// The first identifier-like word of an expression's text (its function name, or column).
fn first_word(expr: &str) -> &str {
    let word = expr
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .find(|w| !w.is_empty())
        .unwrap_or(expr);
    word
}

/// A keyword to point at for an unsupported plan node.
fn first_keyword(plan: &LogicalPlan) -> &'static str {
    match plan {
        LogicalPlan::Sort(_) => "order",
        LogicalPlan::Limit(_) => "limit",
        LogicalPlan::Aggregate(_) => "group",
        LogicalPlan::Distinct(_) => "distinct",
        LogicalPlan::Join(_) => "join",
        LogicalPlan::Union(_) => "union",
        LogicalPlan::Filter(_) => "where",
        _ => "select",
    }
}

/// Checks `ORDER BY <event_time> [ASC]`.
fn check_order_by(
    order_by: &[datafusion::logical_expr::SortExpr],
    event_time: &str,
) -> Result<(), String> {
    match order_by {
        [] => Err("window has no ORDER BY: a feature window must be ordered by event time".into()),
        [sort] => match &sort.expr {
            Expr::Column(c) if c.name == event_time && sort.asc => Ok(()),
            Expr::Column(c) if c.name == event_time => {
                Err(format!("window is ordered by `{event_time}` DESC: windows look back in time, so order ascending"))
            }
            other => Err(format!(
                "window is ordered by `{other}`, not by the event-time column `{event_time}`"
            )),
        },
        _ => Err("window has several ORDER BY terms; RANGE windows are ordered by event time alone".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Field, Schema};

    fn streams() -> Vec<StreamSchema> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("txn_id", DataType::Int64, false),
            Field::new("card_id", DataType::Utf8, false),
            Field::new("merchant_id", DataType::Utf8, false),
            Field::new("amount", DataType::Float64, true),
            Field::new(
                "event_time",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                false,
            ),
        ]));
        vec![StreamSchema {
            name: "s".into(),
            schema,
        }]
    }

    async fn used(sql: &str) -> Option<Vec<usize>> {
        let view = FeatureView::compile("v", "v.sql", sql, &streams(), "event_time")
            .await
            .unwrap();
        view.stream_columns_used()
    }

    #[tokio::test]
    async fn stream_columns_used_are_the_windows_and_the_output() {
        let over = "OVER (PARTITION BY card_id ORDER BY event_time \
                    RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW)";
        // The merchant (2) is read by nothing; the transaction id (0) only by the output.
        let sql = format!(
            "SELECT card_id, event_time, txn_id, count(*) {over} AS c, sum(amount) {over} AS s FROM s"
        );
        assert_eq!(used(&sql).await, Some(vec![0, 1, 3, 4]));
        let sql = format!("SELECT card_id, event_time, count(*) {over} AS c FROM s");
        assert_eq!(used(&sql).await, Some(vec![1, 4]));
        // A row-local filter below the windows may read any column.
        let sql = format!(
            "SELECT card_id, event_time, count(*) {over} AS c FROM s WHERE merchant_id <> 'm'"
        );
        assert_eq!(used(&sql).await, None);
    }
}
