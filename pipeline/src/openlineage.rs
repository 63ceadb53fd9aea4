//! OpenLineage run events (<https://openlineage.io>, spec 2-0-2) for teams that collect lineage
//! centrally: `quiver apply` and `quiver run` append a START event and then a COMPLETE (with
//! the datasets written) or FAIL event, one JSON object per line, to the file the config's
//! `openlineage.file` names. Off unless configured.

use crate::compile::CompiledPipeline;
use crate::error::JobError;
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

const PRODUCER: &str = concat!(
    "https://github.com/quiver/quiver/tree/",
    env!("CARGO_PKG_VERSION")
);
const SCHEMA_URL: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";

/// Emits the run events of one job.
#[derive(Debug, Clone)]
pub struct LineageEmitter {
    file: PathBuf,
    namespace: String,
    job: String,
    run_id: String,
    inputs: Vec<Value>,
}

/// A dataset as OpenLineage names it, with Quiver's facet.
pub fn dataset(namespace: &str, name: &str, facet: Value) -> Value {
    json!({"namespace": namespace, "name": name, "facets": {"quiver": facet}})
}

impl LineageEmitter {
    /// The emitter of `pipeline`'s job `kind` (`apply`, `run`, `backfill`), if the config asks
    /// for OpenLineage events.
    pub fn of(pipeline: &CompiledPipeline, kind: &str) -> Option<Self> {
        let config = pipeline.loaded.config.openlineage.as_ref()?;
        let source = &pipeline.loaded.config.source;
        let input = match (&source.files, &source.kafka) {
            (Some(files), _) => dataset("file", &files.location, json!({"stream": source.name})),
            (None, Some(kafka)) => dataset(
                &format!("kafka://{}", kafka.bootstrap_servers),
                &kafka.topics.join(","),
                json!({"stream": source.name}),
            ),
            (None, _) => dataset("quiver-datagen", &source.name, json!({"generator": true})),
        };
        Some(LineageEmitter {
            file: config.file.clone(),
            namespace: config.namespace.clone(),
            job: format!("{}.{kind}", pipeline.loaded.config.name),
            run_id: uuid::Uuid::new_v4().to_string(),
            inputs: vec![input],
        })
    }

    fn emit(&self, event_type: &str, outputs: &[Value], facets: Value) -> Result<(), JobError> {
        let time = crate::lineage::format_micros(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as i64),
        );
        let event = json!({
            "eventType": event_type,
            "eventTime": time,
            "run": {"runId": self.run_id, "facets": facets},
            "job": {"namespace": self.namespace, "name": self.job},
            "inputs": self.inputs,
            "outputs": outputs,
            "producer": PRODUCER,
            "schemaURL": SCHEMA_URL,
        });
        let fail = |e: std::io::Error| {
            JobError::Other(format!(
                "cannot append to the OpenLineage file `{}`: {e}",
                self.file.display()
            ))
        };
        if let Some(dir) = self.file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.file)
            .map_err(fail)?;
        writeln!(file, "{event}").map_err(fail)
    }

    /// The job started.
    pub fn start(&self) -> Result<(), JobError> {
        self.emit("START", &[], json!({}))
    }

    /// The job completed, writing `outputs`.
    pub fn complete(&self, outputs: &[Value]) -> Result<(), JobError> {
        self.emit("COMPLETE", outputs, json!({}))
    }

    /// The job failed with `error`.
    pub fn fail(&self, error: &str) -> Result<(), JobError> {
        self.emit(
            "FAIL",
            &[],
            json!({"errorMessage": {
                "_producer": PRODUCER,
                "_schemaURL": "https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json",
                "message": error,
                "programmingLanguage": "rust",
            }}),
        )
    }
}

/// Runs `job` between a START and a COMPLETE event (with the datasets `outputs` names from its
/// result) or a FAIL event, when `emitter` is configured.
pub async fn observed<T>(
    emitter: Option<LineageEmitter>,
    job: impl std::future::Future<Output = Result<T, JobError>>,
    outputs: impl FnOnce(&T) -> Vec<Value>,
) -> Result<T, JobError> {
    let Some(emitter) = emitter else {
        return job.await;
    };
    emitter.start()?;
    match job.await {
        Ok(done) => {
            emitter.complete(&outputs(&done))?;
            Ok(done)
        }
        Err(e) => {
            emitter.fail(&e.to_string())?;
            Err(e)
        }
    }
}
