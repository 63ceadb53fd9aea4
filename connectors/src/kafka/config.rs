//! The `source.kafka` section of a pipeline config, and the librdkafka settings it becomes.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use super::avro::AvroDecoder;
use crate::error::ConnectorError;
use crate::schema::{DeclaredSchema, FieldSpec};
use crate::timestamp::parse_rfc3339_micros;

/// Kafka input: JSON messages of one or more topics, each topic partition a source partition
/// with its own watermark, read from the positions of the last checkpoint.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Brokers to bootstrap from, `host:port[,host:port…]`.
    pub bootstrap_servers: String,
    /// Topics to read.
    pub topics: Vec<String>,
    /// Consumer group the consumed offsets are committed to after each checkpoint, for lag
    /// tooling (default `quiver-<pipeline name>`); the checkpoint stays the source of truth.
    #[serde(default)]
    pub group_id: Option<String>,
    /// Message format: `json` (a JSON object per message value) or `avro` (with
    /// `avro_schema` or `schema_registry`).
    #[serde(default)]
    pub format: KafkaFormat,
    /// `format: avro`: the values are plain Avro binary in this schema (a `.avsc` file;
    /// relative to the pipeline config).
    #[serde(default)]
    pub avro_schema: Option<String>,
    /// `format: avro`: the values are in Confluent's wire format, their schemas in the
    /// registry at this http:// or https:// URL.
    #[serde(default)]
    pub schema_registry: Option<String>,
    /// A PEM file of certificates to trust for an https:// `schema_registry` besides the
    /// system's roots (relative to the config).
    #[serde(default)]
    pub schema_registry_ca: Option<String>,
    /// Declared columns, as for files; the event-time column must be among them.
    pub schema: Vec<FieldSpec>,
    /// Where a partition without a checkpointed position starts: `earliest` (default),
    /// `latest`, or an RFC 3339 time (the first message with a Kafka timestamp at or after it).
    #[serde(default = "default_start")]
    pub start: String,
    /// A declared string column that takes the message key (UTF-8).
    #[serde(default)]
    pub key_column: Option<String>,
    /// A declared timestamp column that takes the message's Kafka timestamp.
    #[serde(default)]
    pub timestamp_column: Option<String>,
    /// Declared string columns that take message headers: `column: header-name`.
    #[serde(default)]
    pub header_columns: BTreeMap<String, String>,
    /// librdkafka settings passed through as they are (TLS, SASL, timeouts, …), e.g.
    /// `security.protocol: SASL_SSL`. Their values are never logged or shown in errors.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Messages per batch, at most (default 8192).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Stop once every partition has been read to its end (a bounded run, e.g. catching up a
    /// backlog); by default the run keeps consuming until it is stopped.
    #[serde(default)]
    pub stop_at_end: bool,
    /// Split the job's key space into this many shards, shared by every `quiver run` of this
    /// config (its instances, on machines that see the same output directory): each instance
    /// runs the shards the group `<group_id>.shards` assigns it, and a shard moves to another
    /// instance, with its window state, when its owner stops or dies.
    #[serde(default)]
    pub shards: Option<u32>,
}

/// Formats of Kafka message values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KafkaFormat {
    /// A JSON object per message.
    #[default]
    Json,
    /// An Avro record per message.
    Avro,
}

fn default_start() -> String {
    "earliest".to_string()
}

fn default_batch_size() -> usize {
    8192
}

/// Where a partition without a checkpointed position starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// The oldest retained message.
    Earliest,
    /// Only messages produced after the run started.
    Latest,
    /// The first message whose Kafka timestamp is at or after this time (Unix milliseconds).
    Time(i64),
}

/// librdkafka settings Quiver sets itself: a user's value would break exactly-once reading.
const RESERVED: [&str; 5] = [
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.partition.eof",
    "auto.offset.reset",
    "isolation.level",
];

impl KafkaConfig {
    /// The declared schema of the messages.
    pub fn declared_schema(&self, event_time: &str) -> Result<DeclaredSchema, ConnectorError> {
        let schema = DeclaredSchema::new(self.schema.clone(), event_time.to_string())?;
        let field = |name: &str| schema.fields.iter().find(|f| f.name == name);
        let mut metadata: Vec<(&str, &str)> = Vec::new();
        if let Some(c) = &self.key_column {
            metadata.push(("key_column", c));
        }
        if let Some(c) = &self.timestamp_column {
            metadata.push(("timestamp_column", c));
        }
        for column in self.header_columns.keys() {
            metadata.push(("header_columns", column));
        }
        for (option, column) in metadata {
            if field(column).is_none() {
                return Err(ConnectorError::InvalidSchema {
                    detail: format!(
                        "`{option}` names `{column}`, which is not a declared column; add it to `schema`"
                    ),
                });
            }
        }
        Ok(schema)
    }

    /// The parsed `start` option.
    pub fn start_from(&self) -> Result<StartFrom, ConnectorError> {
        match self.start.as_str() {
            "earliest" => Ok(StartFrom::Earliest),
            "latest" => Ok(StartFrom::Latest),
            text => parse_rfc3339_micros(text)
                .map(|micros| StartFrom::Time(micros.div_euclid(1000)))
                .ok_or_else(|| ConnectorError::Kafka {
                    context: "option `start`".to_string(),
                    detail: format!(
                        "`{text}` is neither `earliest`, `latest` nor an RFC 3339 time like 2026-01-01T00:00:00Z"
                    ),
                }),
        }
    }

    /// The consumer group (the configured one, or `quiver-<pipeline>`).
    pub fn group(&self, pipeline: &str) -> String {
        self.group_id
            .clone()
            .unwrap_or_else(|| format!("quiver-{pipeline}"))
    }

    /// Checks what can be checked without a broker.
    pub fn validate(&self) -> Result<(), ConnectorError> {
        let bad = |context: &str, detail: String| ConnectorError::Kafka {
            context: context.to_string(),
            detail,
        };
        if self.bootstrap_servers.trim().is_empty() {
            return Err(bad(
                "option `bootstrap_servers`",
                "is empty; give the brokers as host:port[,host:port]".to_string(),
            ));
        }
        if self.topics.is_empty() || self.topics.iter().any(|t| t.trim().is_empty()) {
            return Err(bad(
                "option `topics`",
                "name at least one topic, none of them empty".to_string(),
            ));
        }
        if let Some(key) = self
            .properties
            .keys()
            .find(|k| RESERVED.contains(&k.as_str()))
        {
            return Err(bad(
                "option `properties`",
                format!(
                    "`{key}` is set by Quiver itself (offsets live in its checkpoints); remove it"
                ),
            ));
        }
        self.start_from()?;
        if let Some(shards) = self.shards {
            if !(1..=256).contains(&shards) {
                return Err(bad(
                    "option `shards`",
                    format!("is {shards}; a job has 1 to 256 shards"),
                ));
            }
        }
        match (self.format, &self.avro_schema, &self.schema_registry) {
            (KafkaFormat::Avro, Some(_), None) | (KafkaFormat::Avro, None, Some(_)) => {}
            (KafkaFormat::Avro, _, _) => {
                return Err(bad(
                    "option `format: avro`",
                    "give exactly one of `avro_schema` (plain Avro) or `schema_registry` (Confluent wire format)"
                        .to_string(),
                ))
            }
            (KafkaFormat::Json, None, None) => {}
            (KafkaFormat::Json, _, _) => {
                return Err(bad(
                    "option `format`",
                    "`avro_schema` and `schema_registry` need `format: avro`".to_string(),
                ))
            }
        }
        Ok(())
    }

    /// The decoder of Avro values, for `format: avro`.
    pub fn avro_decoder(&self) -> Result<Option<AvroDecoder>, ConnectorError> {
        if self.format != KafkaFormat::Avro {
            return Ok(None);
        }
        if let Some(url) = &self.schema_registry {
            return AvroDecoder::registry(url, self.schema_registry_ca.as_deref()).map(Some);
        }
        let path = self.avro_schema.as_deref().unwrap_or_default();
        let text = std::fs::read_to_string(path).map_err(|e| ConnectorError::Kafka {
            context: format!("Avro schema `{path}`"),
            detail: format!("cannot read it: {e}"),
        })?;
        AvroDecoder::plain(&text, path).map(Some)
    }

    /// The brokers, with environment variables expanded.
    pub fn brokers(&self) -> Result<String, ConnectorError> {
        expand_env(&self.bootstrap_servers, "bootstrap_servers")
    }

    /// librdkafka settings for a client of this source: the user's `properties`, then the
    /// brokers, then `extra` (Quiver's own settings for that client). `${VAR}` and
    /// `${VAR:-default}` in values are taken from the environment (keep secrets there).
    pub fn client_config(&self, extra: &[(&str, &str)]) -> Result<ClientConfig, ConnectorError> {
        client_config(&self.bootstrap_servers, &self.properties, extra)
    }
}

/// librdkafka settings: `properties`, then the brokers, then `extra`, with `${VAR}` and
/// `${VAR:-default}` in values taken from the environment.
pub(super) fn client_config(
    bootstrap_servers: &str,
    properties: &BTreeMap<String, String>,
    extra: &[(&str, &str)],
) -> Result<ClientConfig, ConnectorError> {
    let mut config = ClientConfig::new();
    for (key, value) in properties {
        config.set(key, expand_env(value, key)?);
    }
    config.set(
        "bootstrap.servers",
        expand_env(bootstrap_servers, "bootstrap_servers")?,
    );
    for (key, value) in extra {
        config.set(*key, *value);
    }
    Ok(config)
}

/// `text` with `${VAR}` / `${VAR:-default}` expanded ([`crate::env::expand_env`]); errors name
/// the setting.
fn expand_env(text: &str, setting: &str) -> Result<String, ConnectorError> {
    crate::env::expand_env(text).map_err(|detail| ConnectorError::Kafka {
        context: format!("setting `{setting}`"),
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_variables_expand_with_defaults() {
        std::env::set_var("QUIVER_TEST_KAFKA_SECRET", "s3cr3t");
        assert_eq!(
            expand_env("user:${QUIVER_TEST_KAFKA_SECRET}", "x").unwrap(),
            "user:s3cr3t"
        );
        assert_eq!(
            expand_env("${QUIVER_TEST_UNSET_VARIABLE:-127.0.0.1:9092}", "x").unwrap(),
            "127.0.0.1:9092"
        );
        let e = expand_env("${QUIVER_TEST_UNSET_VARIABLE}", "sasl.password").unwrap_err();
        assert!(e.to_string().contains("QUIVER_TEST_UNSET_VARIABLE"), "{e}");
        assert!(expand_env("${OPEN", "x").is_err());
        assert_eq!(expand_env("plain", "x").unwrap(), "plain");
    }

    #[test]
    fn settings_quiver_owns_are_refused() {
        let config: KafkaConfig = serde_json::from_value(serde_json::json!({
            "bootstrap_servers": "127.0.0.1:1",
            "topics": ["t"],
            "schema": [],
            "properties": {"enable.auto.commit": "true"}
        }))
        .unwrap();
        let e = config.validate().unwrap_err().to_string();
        assert!(e.contains("enable.auto.commit"), "{e}");
        let mut config = config;
        config.properties.clear();
        config.start = "yesterday".into();
        assert!(config.validate().is_err());
        config.start = "2026-01-01T00:00:00Z".into();
        assert_eq!(
            config.start_from().unwrap(),
            StartFrom::Time(1_767_225_600_000)
        );
    }
}
