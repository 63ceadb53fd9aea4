//! Pipeline configs (YAML): what to read, how to transform it, which feature views to compute,
//! where to write. Unknown keys are errors; every error names the file and line.

use crate::duration::Duration;
use crate::sql_text::SqlText;
use quiver_connectors::{DatagenConfig, FieldSpec, FileFormat};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A whole pipeline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Pipeline name (used for default output paths).
    pub name: String,
    /// The input.
    pub source: SourceConfig,
    /// The event-time column of the stream the views read, and the disorder bound.
    pub event_time: EventTimeConfig,
    /// SQL transforms, applied in order; each reads the previous stream.
    #[serde(default)]
    pub transforms: Vec<SqlStep>,
    /// Feature views; all read the last stream (the last transform, or the source).
    pub views: Vec<SqlStep>,
    /// Where results go.
    #[serde(default)]
    pub output: OutputConfig,
    /// When and where `quiver run` takes checkpoints.
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    /// Which device backfill computes on.
    #[serde(default)]
    pub compute: ComputeConfig,
    /// The feature store `quiver apply` registers views in: a local directory (default
    /// `quiver-store`, relative to where quiver runs) or an object-store URL
    /// (`s3://bucket/prefix`).
    #[serde(default = "default_store")]
    pub store: PathBuf,
    /// Object-store options of an `s3://` store (`aws_endpoint`, `aws_region`,
    /// `aws_access_key_id`, ...; the environment's `AWS_*` variables are read too); values are
    /// never logged.
    #[serde(default)]
    pub store_options: std::collections::BTreeMap<String, String>,
    /// OpenLineage run events of `apply` and `run` (off unless set).
    #[serde(default)]
    pub openlineage: Option<OpenLineageConfig>,
    /// The online store `quiver run` writes at each checkpoint and `quiver get` / `quiver
    /// serve` read (on by default, embedded).
    #[serde(default)]
    pub online: OnlineConfig,
    /// `quiver serve`: where it listens and the tokens it accepts.
    #[serde(default)]
    pub serve: ServeConfig,
}

/// The HTTP server of `quiver serve` and `quiver run --serve`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Address to listen on (default 127.0.0.1:8080).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Bearer tokens, by their SHA-256 (`quiver token` makes one). Without any, the server
    /// only listens on loopback addresses and needs no token.
    #[serde(default)]
    pub tokens: Vec<crate::serve::auth::TokenConfig>,
    /// Serve HTTPS with this certificate and key (default: plain HTTP).
    pub tls: Option<crate::serve::tls::TlsConfig>,
    /// Decoded entity states kept between reads, e.g. `256MiB` (the default) or `off`: reads
    /// of entities read before within the same epoch skip the store and the decoding.
    #[serde(default)]
    pub state_cache: StateCacheSize,
}

/// The capacity of the server's state cache in bytes (0: off); written as a size (`256MiB`),
/// `0` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateCacheSize(pub usize);

impl Default for StateCacheSize {
    fn default() -> Self {
        StateCacheSize(crate::online::state_cache::DEFAULT_STATE_CACHE_BYTES)
    }
}

impl<'de> Deserialize<'de> for StateCacheSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = match yaml_serde::Value::deserialize(d)? {
            yaml_serde::Value::String(s) => s,
            yaml_serde::Value::Number(n) => n.to_string(),
            yaml_serde::Value::Bool(false) => "off".into(),
            other => {
                return Err(serde::de::Error::custom(format!(
                    "serve.state_cache must be a size such as 256MiB, or off; not {other:?}"
                )))
            }
        };
        match text.trim() {
            "off" | "0" => Ok(StateCacheSize(0)),
            size => crate::byte_size::parse_byte_size(size)
                .map(StateCacheSize)
                .map_err(|e| serde::de::Error::custom(format!("serve.state_cache: {e}, or off"))),
        }
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: default_listen(),
            tokens: Vec::new(),
            tls: None,
            state_cache: StateCacheSize::default(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

/// The online store: each entity's window state as of the last committed epoch.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnlineConfig {
    /// Write it during `quiver run` (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The embedded store's file (default `<output.path>/online.redb`).
    pub path: Option<PathBuf>,
    /// A Redis server instead (`redis://[user:password@]host:port[/db]`; `${VAR}` and
    /// `${VAR:-default}` come from the environment).
    pub redis: Option<String>,
    /// A Redis Cluster instead: some of its nodes (`redis://host:port`, `rediss://` for TLS;
    /// the others are found from them), `${VAR}` as for `redis`.
    #[serde(default)]
    pub redis_cluster: Vec<String>,
    /// A PEM certificate to trust for a `rediss://` server (default: the system's roots).
    pub redis_ca: Option<PathBuf>,
    /// Prefix of the Redis keys (default `quiver`).
    #[serde(default = "default_redis_prefix")]
    pub redis_prefix: String,
    /// Tables kept per view, the version a run writes and its newest earlier ones (default 2:
    /// the previous version stays readable as `view@version` during a switch); older
    /// versions' tables are dropped when a run starts. At least 1.
    #[serde(default = "default_keep_versions")]
    pub keep_versions: usize,
}

impl Default for OnlineConfig {
    fn default() -> Self {
        OnlineConfig {
            enabled: true,
            path: None,
            redis: None,
            redis_cluster: Vec::new(),
            redis_ca: None,
            redis_prefix: default_redis_prefix(),
            keep_versions: default_keep_versions(),
        }
    }
}

fn default_redis_prefix() -> String {
    "quiver".into()
}

fn default_keep_versions() -> usize {
    2
}

/// Where OpenLineage run events go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenLineageConfig {
    /// File the events are appended to, one JSON object per line.
    pub file: Option<PathBuf>,
    /// An HTTP(S) endpoint each event is POSTed to (e.g. Marquez's
    /// `http://host:5000/api/v1/lineage`); delivery failures are warnings, never a failed job.
    pub url: Option<String>,
    /// An environment variable holding an API key, sent as `Authorization: Bearer <key>`.
    pub api_key_env: Option<String>,
    /// The jobs' namespace (default `quiver`).
    #[serde(default = "default_openlineage_namespace")]
    pub namespace: String,
}

fn default_openlineage_namespace() -> String {
    "quiver".into()
}

fn default_store() -> PathBuf {
    PathBuf::from("quiver-store")
}

/// The device of the window kernels in backfill (streaming runs compute on the CPU).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComputeConfig {
    /// `auto` (default: CUDA when a driver and a GPU are found, else the CPU), `cpu` or `cuda`
    /// (an error without a usable GPU).
    #[serde(default)]
    pub device: quiver_gpu::Device,
    /// Views over fewer rows than this stay on the CPU under `auto`, where copying to the GPU
    /// costs more than it saves (default 1,048,576).
    #[serde(default = "default_gpu_min_rows")]
    pub gpu_min_rows: usize,
}

fn default_gpu_min_rows() -> usize {
    quiver_gpu::DEFAULT_GPU_MIN_ROWS
}

impl Default for ComputeConfig {
    fn default() -> Self {
        ComputeConfig {
            device: quiver_gpu::Device::Auto,
            gpu_min_rows: default_gpu_min_rows(),
        }
    }
}

/// Checkpoints of the streaming run (on by default).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Take checkpoints (default true). Without them a killed run starts over.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Wall-clock time between checkpoints (default: 500ms from Kafka, where online freshness
    /// comes with checkpoints; 10s from files and the generator). Read it with
    /// [`CheckpointConfig::interval`].
    #[serde(rename = "interval")]
    pub interval_set: Option<Duration>,
    /// Also take one after this many source records (default: only by time).
    pub every_events: Option<u64>,
    /// Checkpoint directory (default `<output.path>/_checkpoints`).
    pub dir: Option<PathBuf>,
    /// Incremental checkpoints (the changed keys' state) kept before they are merged into
    /// whole state, beside the job (default 256; they are merged sooner once they outweigh the
    /// whole state). 0: every checkpoint holds the whole state.
    #[serde(default = "default_max_increments")]
    pub max_increments: usize,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            enabled: true,
            interval_set: None,
            every_events: None,
            dir: None,
            max_increments: default_max_increments(),
        }
    }
}

fn default_max_increments() -> usize {
    256
}

fn default_true() -> bool {
    true
}

impl CheckpointConfig {
    /// The time between checkpoints: as configured, else 500ms for a `live` source (each
    /// checkpoint makes its epoch visible: online, in output topics, in the store) and 10s
    /// for files and the generator (fewer, larger output files).
    pub fn interval(&self, live: bool) -> Duration {
        self.interval_set
            .unwrap_or(Duration::from_micros(match live {
                true => 500_000,
                false => 10_000_000,
            }))
    }
}

/// The input of a pipeline: exactly one of `datagen`, `files` or `kafka`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Stream name SQL uses for the raw input (default `source`).
    #[serde(default = "default_source_name")]
    pub name: String,
    /// Built-in deterministic transaction generator.
    pub datagen: Option<DatagenConfig>,
    /// NDJSON, CSV or Parquet files on a local path or object store.
    pub files: Option<FilesConfig>,
    /// JSON messages of Kafka topics, each partition a source partition.
    pub kafka: Option<quiver_connectors::kafka::KafkaConfig>,
}

fn default_source_name() -> String {
    "source".to_string()
}

/// File input.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// Local path, directory, glob (`data/*.ndjson`) or URL (`s3://bucket/prefix/`).
    pub location: String,
    /// File format; by default from each file's extension.
    pub format: Option<FileFormat>,
    /// Declared columns; the event-time column must be among them, typed `timestamp`. Empty
    /// or omitted for Parquet input: the columns are read from the first file.
    #[serde(default)]
    pub schema: Vec<FieldSpec>,
    /// Object store options (e.g. `aws_endpoint`, `aws_region`); values are never logged.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Rows per batch (default 8192).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Files read at the same time, each a partition with its own watermark (default 16);
    /// further files open, in name order, as earlier ones finish.
    #[serde(default = "default_max_open_files")]
    pub max_open_files: usize,
}

fn default_max_open_files() -> usize {
    16
}

fn default_batch_size() -> usize {
    8192
}

/// Event time and lateness.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventTimeConfig {
    /// Timestamp column every window is ordered by.
    pub column: String,
    /// Largest disorder tolerated: results are exact for any arrival order whose disorder is
    /// at most this; older events are dead-lettered as `late`. Default 0.
    #[serde(default)]
    pub max_lateness: Duration,
    /// A live partition (Kafka, later) without data for this long stops holding the job's
    /// watermark back (default 30s). Files and the generator never go idle.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Duration,
    /// Events dated more than this ahead of the wall clock are dead-lettered as
    /// `future_event_time` instead of moving the watermark (default 1d; 0 turns it off).
    #[serde(default = "default_max_future")]
    pub max_future: Duration,
}

fn default_max_future() -> Duration {
    Duration::from_micros(86_400_000_000)
}

fn default_idle_timeout() -> Duration {
    Duration::from_micros(30_000_000)
}

/// A named SQL statement, inline or in a file (relative to the config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlStep {
    /// Name of the produced stream (transform) or view.
    pub name: String,
    /// Inline SQL.
    pub sql: Option<String>,
    /// SQL file, relative to the config file.
    pub file: Option<PathBuf>,
    /// Views only: how old the newest visible feature may be before `quiver status` reports
    /// the view stale (e.g. `5m`).
    #[serde(default)]
    pub freshness_sla: Option<Duration>,
}

/// Outputs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// Directory of feature rows: `<path>/<view>/part-NNNNN.parquet` (default `out/<name>`).
    pub path: Option<PathBuf>,
    /// Dead-letter NDJSON file (default `<path>/dead_letter.ndjson`).
    pub dead_letter: Option<PathBuf>,
    /// Rows per Parquet file before rolling to the next (default 1,000,000).
    #[serde(default = "default_rows_per_file")]
    pub rows_per_file: usize,
    /// Stop the job with an error when dead letters exceed this share of the records read
    /// (default 0.5; 1 never stops): an input that is systematically wrong (wrong schema,
    /// wrong format) is reported, not dead-lettered record by record.
    #[serde(default = "default_max_dead_letter_ratio")]
    pub max_dead_letter_ratio: f64,
    /// Records read before the ratio is checked (default 10,000).
    #[serde(default = "default_dead_letter_min_records")]
    pub dead_letter_min_records: u64,
    /// Also write views' feature rows and the dead letters to Kafka topics, each epoch in one
    /// transaction (`quiver run` only).
    #[serde(default)]
    pub kafka: Option<quiver_connectors::kafka::KafkaSinkConfig>,
}

fn default_max_dead_letter_ratio() -> f64 {
    0.5
}

fn default_dead_letter_min_records() -> u64 {
    10_000
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            path: None,
            dead_letter: None,
            rows_per_file: default_rows_per_file(),
            max_dead_letter_ratio: default_max_dead_letter_ratio(),
            dead_letter_min_records: default_dead_letter_min_records(),
            kafka: None,
        }
    }
}

fn default_rows_per_file() -> usize {
    1_000_000
}

/// A config mistake, located like a compiler error (file:line:column, message, help).
pub type ConfigError = quiver_sql::Diagnostic;

/// An error about `file`, located at the first line where `key` appears (if it does).
pub fn at_key(file: &Path, text: &str, key: &str, message: impl Into<String>) -> ConfigError {
    let line = text
        .lines()
        .position(|l| {
            l.trim_start()
                .trim_start_matches("- ")
                .starts_with(&format!("{key}:"))
        })
        .map(|i| i + 1);
    ConfigError {
        line,
        ..ConfigError::new(&file.display().to_string(), message)
    }
}

/// A parsed config with the file it came from.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The config.
    pub config: PipelineConfig,
    /// Path of the config file.
    pub path: PathBuf,
    /// Its text (for locating errors found after parsing).
    pub text: String,
}

impl PipelineConfig {
    /// The registry of the feature store at `over` (a `--store` argument), else at the
    /// config's `store`, with the config's `store_options`.
    pub fn store_registry(
        &self,
        over: Option<&Path>,
    ) -> Result<crate::registry::Registry, crate::error::JobError> {
        crate::registry::Registry::at(over.unwrap_or(&self.store), &self.store_options)
    }
}

impl LoadedConfig {
    /// Reads and parses `path`, checking structure (unknown keys, types, one source kind).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            line: None,
            column: None,
            message: format!("cannot read config: {e}"),
            help: Some(
                "pass the path of a pipeline YAML file, e.g. configs/fraud-demo.yaml".into(),
            ),
        })?;
        Self::parse(path, text)
    }

    /// Parses config `text` as if read from `path`.
    pub fn parse(path: &Path, text: String) -> Result<Self, ConfigError> {
        let config: PipelineConfig = yaml_serde::from_str(&text).map_err(|e| {
            let message = e.to_string();
            let message = match message.rfind(" at line ") {
                Some(i) => message[..i].to_string(),
                None => message,
            };
            let help = if message.contains("unknown field") {
                Some(
                    "remove the key or fix its spelling; the accepted keys are listed above"
                        .to_string(),
                )
            } else {
                None
            };
            ConfigError {
                file: path.display().to_string(),
                line: e.location().map(|l| l.line()),
                column: e.location().map(|l| l.column()),
                message,
                help,
            }
        })?;
        let loaded = LoadedConfig {
            config,
            path: path.to_path_buf(),
            text,
        };
        loaded.check_structure()?;
        Ok(loaded)
    }

    fn check_structure(&self) -> Result<(), ConfigError> {
        let c = &self.config;
        let err = |key: &str, m: String| at_key(&self.path, &self.text, key, m);
        let kinds = [
            c.source.datagen.is_some(),
            c.source.files.is_some(),
            c.source.kafka.is_some(),
        ];
        match kinds.iter().filter(|k| **k).count() {
            0 => {
                return Err(err("source", "source has none of `datagen`, `files` or `kafka`".into())
                    .with_help("add `datagen: {}` for generated transactions, `files: {location: ..., schema: [...]}`, or `kafka: {bootstrap_servers: ..., topics: [...], schema: [...]}`"))
            }
            1 => {}
            _ => {
                return Err(err("source", "source has more than one of `datagen`, `files` and `kafka`".into())
                    .with_help("keep exactly one of them"))
            }
        }
        if let Some(k) = &c.source.kafka {
            k.validate().map_err(|e| err("kafka", e.to_string()))?;
            if k.batch_size == 0 {
                return Err(err("batch_size", "batch_size must be at least 1".into()));
            }
        }
        if let Some(d) = &c.source.datagen {
            d.validate().map_err(|e| err("datagen", e.to_string()))?;
        }
        if let Some(o) = &c.openlineage {
            if o.file.is_none() && o.url.is_none() {
                return Err(err(
                    "openlineage",
                    "openlineage needs a `file` or a `url` to send events to".into(),
                )
                .with_help("e.g. `openlineage: {url: http://localhost:5000/api/v1/lineage}`"));
            }
        }
        if let Some(t) = c.transforms.iter().find(|t| t.freshness_sla.is_some()) {
            return Err(err(
                "freshness_sla",
                format!(
                    "transform `{}` has a freshness_sla; only views have one",
                    t.name
                ),
            )
            .with_help("move it to the view whose freshness it bounds"));
        }
        if let Some(f) = &c.source.files {
            if f.batch_size == 0 {
                return Err(err("batch_size", "batch_size must be at least 1".into()));
            }
            if f.max_open_files == 0 {
                return Err(err(
                    "max_open_files",
                    "max_open_files must be at least 1".into(),
                ));
            }
        }
        if c.views.is_empty() {
            return Err(
                err("views", "the pipeline has no feature views".into()).with_help(
                    "add `views: [{name: card_features, file: features/card_features.sql}]`",
                ),
            );
        }
        let mut names = vec![c.source.name.as_str()];
        for step in c.transforms.iter().chain(&c.views) {
            match (&step.sql, &step.file) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(err(
                        "name",
                        format!("`{}` needs exactly one of `sql` or `file`", step.name),
                    ))
                }
                _ => {}
            }
            if names.contains(&step.name.as_str()) {
                return Err(err("name", format!("name `{}` is used twice", step.name))
                    .with_help("give every source, transform and view its own name"));
            }
            names.push(&step.name);
        }
        let interval = c.checkpoint.interval_set.map(|i| i.as_micros());
        if c.checkpoint.enabled && interval.is_some_and(|i| i <= 0) {
            return Err(err(
                "interval",
                "the checkpoint interval must be positive".into(),
            )
            .with_help("e.g. `interval: 10s`, or `enabled: false` to run without checkpoints"));
        }
        if c.checkpoint.every_events == Some(0) {
            return Err(err(
                "every_events",
                "every_events must be at least 1".into(),
            ));
        }
        let ratio = c.output.max_dead_letter_ratio;
        if !(ratio > 0.0 && ratio <= 1.0) {
            return Err(err(
                "max_dead_letter_ratio",
                format!("max_dead_letter_ratio {ratio} is not in (0, 1]"),
            )
            .with_help(
                "e.g. 0.5 stops a job when half of its records are dead letters; 1 never stops",
            ));
        }
        if c.output.rows_per_file == 0 {
            return Err(err(
                "rows_per_file",
                "rows_per_file must be at least 1".into(),
            ));
        }
        if c.online.redis.is_some() && !c.online.redis_cluster.is_empty() {
            return Err(err(
                "redis_cluster",
                "online.redis (one server) and online.redis_cluster (a cluster's nodes) are two stores: set one".into(),
            ));
        }
        if c.online.keep_versions == 0 {
            return Err(err(
                "keep_versions",
                "online.keep_versions must be at least 1 (the version a run writes)".into(),
            ));
        }
        Ok(())
    }

    /// The SQL of a step, with where it sits for error positions.
    pub fn step_sql(&self, step: &SqlStep) -> Result<SqlText, ConfigError> {
        match (&step.sql, &step.file) {
            (Some(sql), _) => Ok(SqlText::inline(
                sql.clone(),
                self.path.display().to_string(),
                &self.text,
                &step.name,
            )),
            (None, Some(file)) => {
                let path = self.path.parent().unwrap_or(Path::new(".")).join(file);
                let sql = std::fs::read_to_string(&path).map_err(|e| {
                    at_key(
                        &self.path,
                        &self.text,
                        "file",
                        format!(
                            "cannot read SQL file `{}` of `{}`: {e}",
                            path.display(),
                            step.name
                        ),
                    )
                    .with_help("SQL file paths are relative to the config file's directory")
                })?;
                Ok(SqlText::from_file(sql, path.display().to_string()))
            }
            (None, None) => Err(at_key(
                &self.path,
                &self.text,
                "name",
                format!("`{}` has no SQL", step.name),
            )),
        }
    }

    /// The output directory: `output.path`, else `out/<name>`.
    pub fn output_dir(&self) -> PathBuf {
        self.config
            .output
            .path
            .clone()
            .unwrap_or_else(|| PathBuf::from("out").join(&self.config.name))
    }

    /// Name of the stream the views read.
    pub fn feature_stream(&self) -> &str {
        self.config
            .transforms
            .last()
            .map_or(self.config.source.name.as_str(), |t| t.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "name: t\nsource:\n  datagen: {events: 10}\nevent_time:\n  column: event_time\n  max_lateness: 5s\nviews:\n  - name: v\n    sql: SELECT 1\n";

    #[test]
    fn parses_a_good_config() {
        let c = LoadedConfig::parse(Path::new("p.yaml"), GOOD.into()).unwrap();
        assert_eq!(c.config.event_time.max_lateness.as_micros(), 5_000_000);
        assert_eq!(c.feature_stream(), "source");
        assert_eq!(c.output_dir(), PathBuf::from("out/t"));
    }

    #[test]
    fn unknown_key_is_located() {
        let text = GOOD.replace("  column: event_time", "  colum: event_time");
        let e = LoadedConfig::parse(Path::new("p.yaml"), text).unwrap_err();
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.message.contains("unknown field `colum`"), "{e}");
        assert!(e.to_string().starts_with("p.yaml:5:"), "{e}");
    }

    #[test]
    fn openlineage_needs_somewhere_to_send_events() {
        let text = format!("{GOOD}openlineage:\n  namespace: fraud\n");
        let e = LoadedConfig::parse(Path::new("p.yaml"), text).unwrap_err();
        assert!(e.message.contains("a `file` or a `url`"), "{e}");
        assert_eq!(e.line, Some(10), "{e}");
        let text = format!("{GOOD}openlineage:\n  url: http://127.0.0.1:5000/api/v1/lineage\n");
        assert!(LoadedConfig::parse(Path::new("p.yaml"), text).is_ok());
    }

    #[test]
    fn one_redis_server_or_one_cluster() {
        let both = format!(
            "{GOOD}online:\n  redis: redis://127.0.0.1:6379\n  redis_cluster: [redis://127.0.0.1:7000]\n"
        );
        let e = LoadedConfig::parse(Path::new("p.yaml"), both).unwrap_err();
        assert!(e.message.contains("set one"), "{e}");
        let cluster = format!("{GOOD}online:\n  redis_cluster: [redis://a:7000, redis://b:7000]\n");
        let c = LoadedConfig::parse(Path::new("p.yaml"), cluster).unwrap();
        assert_eq!(c.config.online.redis_cluster.len(), 2);
    }

    #[test]
    fn wrong_type_is_located() {
        let text = GOOD.replace("{events: 10}", "{events: many}");
        let e = LoadedConfig::parse(Path::new("p.yaml"), text).unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("invalid type"), "{e}");
    }

    #[test]
    fn bad_duration_is_explained() {
        let text = GOOD.replace("5s", "5 parsecs");
        let e = LoadedConfig::parse(Path::new("p.yaml"), text).unwrap_err();
        assert!(e.message.contains("unknown unit"), "{e}");
        assert_eq!(e.line, Some(6));
    }

    #[test]
    fn two_sources_are_refused() {
        let text = GOOD.replace(
            "  datagen: {events: 10}",
            "  datagen: {events: 10}\n  files: {location: x, schema: []}",
        );
        let e = LoadedConfig::parse(Path::new("p.yaml"), text).unwrap_err();
        assert!(e.message.contains("more than one"), "{e}");
        assert_eq!(e.line, Some(2));
    }
}
