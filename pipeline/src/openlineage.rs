//! OpenLineage run events (<https://openlineage.io>, spec 2-0-2) for teams that collect lineage
//! centrally: `quiver apply` and `quiver run` emit a START event and then a COMPLETE (with
//! the datasets written) or FAIL event: appended, one JSON object per line, to the file the
//! config's `openlineage.file` names, and POSTed to `openlineage.url` (the HTTP transport of
//! OpenLineage clients; Marquez and others accept it). Off unless configured. A lineage
//! endpoint that is down delays a job by its retries at most, and never fails it.

use crate::compile::CompiledPipeline;
use crate::error::JobError;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

const PRODUCER: &str = concat!(
    "https://github.com/quiver/quiver/tree/",
    env!("CARGO_PKG_VERSION")
);
/// Time one delivery attempt may take.
const HTTP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Delivery attempts per event (with 0.5 s, then 1 s between them).
const HTTP_ATTEMPTS: u32 = 3;

const SCHEMA_URL: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";

/// Emits the run events of one job.
#[derive(Debug, Clone)]
pub struct LineageEmitter {
    file: Option<PathBuf>,
    /// The endpoint, its client, and the API key (never shown).
    http: Option<(String, reqwest::Client, Option<String>)>,
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
        let http = config.url.as_ref().map(|url| {
            let key = config
                .api_key_env
                .as_ref()
                .and_then(|var| std::env::var(var).ok());
            let client = reqwest::Client::builder()
                .timeout(HTTP_TIMEOUT)
                .build()
                .unwrap_or_default();
            (url.clone(), client, key)
        });
        Some(LineageEmitter {
            file: config.file.clone(),
            http,
            namespace: config.namespace.clone(),
            job: format!("{}.{kind}", pipeline.loaded.config.name),
            run_id: uuid::Uuid::new_v4().to_string(),
            inputs: vec![input],
        })
    }

    /// With `inputs` as the job's input datasets instead of the configured source.
    pub fn with_inputs(mut self, inputs: Vec<Value>) -> Self {
        self.inputs = inputs;
        self
    }

    async fn emit(
        &self,
        event_type: &str,
        outputs: &[Value],
        facets: Value,
    ) -> Result<(), JobError> {
        let time = crate::lineage::format_micros(crate::clock::now_micros());
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
        if let Some(file) = &self.file {
            append(file, &event)?;
        }
        if let Some((url, client, key)) = &self.http {
            if let Err(e) = post(client, url, key.as_deref(), &event).await {
                eprintln!("warning: OpenLineage {event_type} event not delivered to {url}: {e}");
            }
        }
        Ok(())
    }

    /// The job started.
    pub async fn start(&self) -> Result<(), JobError> {
        self.emit("START", &[], json!({})).await
    }

    /// The job completed, writing `outputs`.
    pub async fn complete(&self, outputs: &[Value]) -> Result<(), JobError> {
        self.emit("COMPLETE", outputs, json!({})).await
    }

    /// The job failed with `error`.
    pub async fn fail(&self, error: &str) -> Result<(), JobError> {
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
        .await
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
    emitter.start().await?;
    match job.await {
        Ok(done) => {
            emitter.complete(&outputs(&done)).await?;
            Ok(done)
        }
        Err(e) => {
            emitter.fail(&e.to_string()).await?;
            Err(e)
        }
    }
}

/// Appends `event` to `file`, one line.
fn append(file: &Path, event: &Value) -> Result<(), JobError> {
    let fail = |e: std::io::Error| {
        JobError::Other(format!(
            "cannot append to the OpenLineage file `{}`: {e}",
            file.display()
        ))
    };
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .map_err(fail)?;
    writeln!(out, "{event}").map_err(fail)
}

/// POSTs `event` to `url` as JSON (with `key` as a bearer token), retrying failures and 5xx
/// answers; the error says what the last attempt got.
async fn post(
    client: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    event: &Value,
) -> Result<(), String> {
    let body = event.to_string();
    let mut last = String::new();
    for attempt in 0..HTTP_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(500 << (attempt - 1))).await;
        }
        let mut request = client
            .post(url)
            .header("Content-Type", "application/json")
            .body(body.clone());
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => return Ok(()),
            // A client error will not change on a retry.
            Ok(response) if response.status().is_client_error() => {
                return Err(format!("the endpoint answered {}", response.status()))
            }
            Ok(response) => last = format!("the endpoint answered {}", response.status()),
            // The error names the URL, which holds no secret (the key goes in a header).
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!("{last} (after {HTTP_ATTEMPTS} attempts)"))
}
