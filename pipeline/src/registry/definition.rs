//! A view's definition as the registry keeps it, and its version: a hash of everything that
//! decides its feature values.

use crate::compile::{column_descriptions, CompiledPipeline};
use crate::error::JobError;
use quiver_sql::normalize::normalized_sql;
use serde::{Deserialize, Serialize};

/// The semantics of the engine's window evaluation. Part of every version: bump it when the
/// same SQL over the same events would give different values.
pub const ENGINE_SEMANTICS: &str = "quiver-windows-3";

/// One registered version of a view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewDefinition {
    /// View name.
    pub view: String,
    /// Version: hex hash of the fields below (but not of `created`, `rows` or `config`).
    pub version: String,
    /// The view's SQL, normalized (comments, layout and keyword case removed).
    pub sql: String,
    /// The transforms the view reads through, in order: name and normalized SQL.
    pub transforms: Vec<(String, String)>,
    /// The source's declared columns (`name: type`).
    pub source_schema: Vec<String>,
    /// The event-time column.
    pub event_time: String,
    /// Entity key expressions.
    pub keys: Vec<String>,
    /// Output columns with their types.
    pub columns: Vec<String>,
    /// [`ENGINE_SEMANTICS`] when the version was made.
    pub engine: String,
    /// When the version was registered (RFC 3339, UTC); not part of the version.
    #[serde(default)]
    pub created: String,
    /// Feature rows its backfill wrote; not part of the version.
    #[serde(default)]
    pub rows: u64,
    /// The config it came from; not part of the version.
    #[serde(default)]
    pub config: String,
    /// The stream the view reads (its FROM), as the event log names it.
    #[serde(default)]
    pub stream: String,
    /// The event log its backfill computed from: `<stream>/<id>` under the store's `events/`
    /// (the transformed events, which training sets recompute windows over); empty for
    /// versions registered before event logs existed. Not part of the version.
    #[serde(default)]
    pub events: String,
    /// The view's `freshness_sla` (e.g. `5m`), checked by `quiver status`; not part of the
    /// version.
    #[serde(default)]
    pub freshness_sla: Option<String>,
}

impl ViewDefinition {
    /// The definition of view `index` of `pipeline`, with its version computed.
    pub fn of(pipeline: &CompiledPipeline, index: usize) -> Result<Self, JobError> {
        let loaded = &pipeline.loaded;
        let step = &loaded.config.views[index];
        let normalize = |sql: &crate::sql_text::SqlText| {
            normalized_sql(&sql.sql).map_err(|e| JobError::Other(format!("{}: {e}", sql.file)))
        };
        let sql = normalize(&loaded.step_sql(step)?)?;
        let transforms = loaded
            .config
            .transforms
            .iter()
            .map(|t| Ok((t.name.clone(), normalize(&loaded.step_sql(t)?)?)))
            .collect::<Result<Vec<_>, JobError>>()?;
        let view = pipeline
            .views
            .get(index)
            .ok_or_else(|| JobError::Other(format!("view `{}` is not compiled", step.name)))?;
        let mut definition = ViewDefinition {
            view: step.name.clone(),
            version: String::new(),
            sql,
            transforms,
            source_schema: column_descriptions(&pipeline.source_schema.arrow_schema()),
            event_time: pipeline.event_time().to_string(),
            keys: view.key_names().to_vec(),
            columns: column_descriptions(&view.output_schema()),
            engine: ENGINE_SEMANTICS.to_string(),
            created: String::new(),
            rows: 0,
            config: loaded.path.display().to_string(),
            stream: view.stream().to_string(),
            events: String::new(),
            freshness_sla: step.freshness_sla.map(|d| d.to_string()),
        };
        definition.version = definition.hash();
        Ok(definition)
    }

    /// The version hash of the fields that decide feature values.
    fn hash(&self) -> String {
        let decisive = serde_json::json!({
            "view": self.view,
            "sql": self.sql,
            "transforms": self.transforms,
            "source_schema": self.source_schema,
            "event_time": self.event_time,
            "keys": self.keys,
            "columns": self.columns,
            "engine": self.engine,
        });
        let text = decisive.to_string();
        let h = crate::checkpoint::envelope::fingerprint(text.as_bytes());
        // A second, differently seeded pass widens the id to 96 bits.
        let h2 = crate::checkpoint::envelope::fingerprint(format!("v2:{text}").as_bytes());
        format!("{h:016x}{:08x}", h2 >> 32)
    }
}
