//! From a loaded config to compiled transforms and views, collecting every problem.

use crate::checkpoint::envelope::fingerprint;
use crate::checkpoint::ViewIdentity;
use crate::config::{at_key, LoadedConfig};
use crate::error::JobError;
use crate::event_time::is_timestamp;
use crate::source_schema::infer_file_schema;
use arrow::datatypes::{Field, Schema, SchemaRef};
use quiver_connectors::{datagen_schema, DeclaredSchema};
use quiver_sql::lineage::{hidden_fields, is_hidden};
use quiver_sql::{FeatureView, StreamSchema, Transform};
use std::sync::Arc;

/// A pipeline ready to run.
pub struct CompiledPipeline {
    /// The config it came from.
    pub loaded: LoadedConfig,
    /// Declared schema of the raw input.
    pub source_schema: DeclaredSchema,
    /// Where the schema came from when it was read from a file rather than declared.
    pub source_schema_note: Option<String>,
    /// Schema of source batches as the runtime feeds them to SQL (declared + offset column).
    pub source_stream_schema: SchemaRef,
    /// Transforms in order.
    pub transforms: Vec<Transform>,
    /// Schema of the stream the views read.
    pub feature_stream_schema: SchemaRef,
    /// Feature views.
    pub views: Vec<FeatureView>,
    /// What each view's state depends on, in view order (checkpoints are checked against it).
    pub view_identities: Vec<ViewIdentity>,
}

/// The identity of a compiled view with SQL text `sql`.
fn identity(view: &FeatureView, sql: &str) -> ViewIdentity {
    ViewIdentity {
        name: view.name().to_string(),
        sql: fingerprint(sql.as_bytes()),
        keys: view.key_names().to_vec(),
        windows: view
            .window_plan()
            .specs()
            .iter()
            .map(|s| format!("{:?}({}) over {:?}", s.kind, s.input, s.frame))
            .collect(),
        columns: column_descriptions(&view.output_schema()),
    }
}

/// `name: type` of each column of `schema`, as identities and definitions record them.
pub fn column_descriptions(schema: &Schema) -> Vec<String> {
    schema
        .fields()
        .iter()
        .map(|f| format!("{}: {}", f.name(), f.data_type()))
        .collect()
}

/// The raw stream schema: declared columns plus the hidden source partition and offset
/// columns (`quiver_sql::lineage`).
pub fn with_hidden_columns(schema: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(hidden_fields());
    Arc::new(Schema::new(fields))
}

impl CompiledPipeline {
    /// Compiles everything; on failure returns every problem found, not just the first.
    pub async fn compile(loaded: LoadedConfig) -> Result<Self, JobError> {
        let c = &loaded.config;
        let cfg_err = |key: &str, m: String| at_key(&loaded.path, &loaded.text, key, m);
        let event_time = c.event_time.column.clone();
        let mut schema_note = None;
        let source_schema = match (&c.source.datagen, &c.source.files) {
            (Some(_), _) => datagen_schema(),
            (None, None) if c.source.kafka.is_some() => c
                .source
                .kafka
                .as_ref()
                .map(|k| k.declared_schema(&event_time))
                .transpose()
                .map_err(|e| {
                    cfg_err("schema", e.to_string()).with_help(format!(
                        "declare the message fields under `source.kafka.schema`, the event-time column among them: `- {{name: {event_time}, type: timestamp}}`"
                    ))
                })?
                .unwrap_or_else(datagen_schema),
            (None, Some(files)) if files.schema.is_empty() => {
                let inferred = infer_file_schema(files, &event_time).await.map_err(|e| {
                    cfg_err("files", e)
                        .with_help("declare the columns under `schema:` (see the config reference)")
                })?;
                schema_note = Some(inferred.note);
                inferred.schema
            }
            (None, Some(files)) => DeclaredSchema::new(files.schema.clone(), event_time.clone())
                .map_err(|e| {
                    cfg_err("schema", e.to_string()).with_help(format!(
                        "declare the event-time column: `- {{name: {event_time}, type: timestamp}}`"
                    ))
                })?,
            (None, None) => return Err(cfg_err("source", "no source".into()).into()),
        };
        let source_stream_schema = with_hidden_columns(&source_schema.arrow_schema());
        let mut problems: Vec<JobError> = Vec::new();
        let mut streams = vec![StreamSchema {
            name: c.source.name.clone(),
            schema: Arc::clone(&source_stream_schema),
        }];
        let mut transforms = Vec::new();
        for step in &c.transforms {
            let text = match loaded.step_sql(step) {
                Ok(x) => x,
                Err(e) => {
                    problems.push(e.into());
                    continue;
                }
            };
            let previous = streams.last().map(|s| s.name.clone()).unwrap_or_default();
            match Transform::compile(&step.name, &text.file, &text.sql, &streams)
                .await
                .map_err(|e| text.locate(e))
            {
                Ok(t) if t.input() != previous => problems.push(
                    cfg_err(
                        "name",
                        format!("transform `{}` reads `{}`, but transforms form a chain: it must read `{previous}`", step.name, t.input()),
                    )
                    .into(),
                ),
                Ok(t) => {
                    streams.push(StreamSchema {
                        name: step.name.clone(),
                        schema: t.output_schema(),
                    });
                    transforms.push(t);
                }
                Err(e) => problems.push(e.into()),
            }
        }
        let feature_stream = streams.last().cloned();
        let feature_stream_schema = feature_stream
            .as_ref()
            .map(|s| Arc::clone(&s.schema))
            .unwrap_or_else(|| Arc::new(Schema::empty()));
        if problems.is_empty() {
            match feature_stream_schema.field_with_name(&event_time) {
                Ok(f) if is_timestamp(f.data_type()) => {}
                Ok(f) => problems.push(
                    cfg_err(
                        "column",
                        format!(
                            "event-time column `{event_time}` has type {}, not a timestamp",
                            f.data_type()
                        ),
                    )
                    .with_help("declare it as `type: timestamp` or CAST it in a transform")
                    .into(),
                ),
                Err(_) => problems.push(
                    cfg_err(
                        "column",
                        format!(
                            "event-time column `{event_time}` is not in stream `{}`",
                            loaded.feature_stream()
                        ),
                    )
                    .with_help(format!(
                        "columns of `{}`: {}",
                        loaded.feature_stream(),
                        feature_stream_schema
                            .fields()
                            .iter()
                            .filter(|f| !is_hidden(f.name()))
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                    .into(),
                ),
            }
        }
        let mut views = Vec::new();
        let mut view_identities = Vec::new();
        for step in &c.views {
            let text = match loaded.step_sql(step) {
                Ok(x) => x,
                Err(e) => {
                    problems.push(e.into());
                    continue;
                }
            };
            // Views may only read the feature stream: register just that one.
            let visible: Vec<StreamSchema> = feature_stream.iter().cloned().collect();
            match FeatureView::compile(&step.name, &text.file, &text.sql, &visible, &event_time)
                .await
                .map_err(|e| text.locate(e))
            {
                Ok(v) => {
                    view_identities.push(identity(&v, &text.sql));
                    views.push(v);
                }
                Err(e) => problems.push(e.into()),
            }
        }
        if !problems.is_empty() {
            return Err(if problems.len() == 1 {
                problems.remove(0)
            } else {
                JobError::Many(problems)
            });
        }
        Ok(CompiledPipeline {
            loaded,
            source_schema,
            source_schema_note: schema_note,
            source_stream_schema,
            transforms,
            feature_stream_schema,
            views,
            view_identities,
        })
    }

    /// Event-time column.
    pub fn event_time(&self) -> &str {
        &self.loaded.config.event_time.column
    }
}
