//! `output.kafka`: each checkpoint epoch's feature rows (per configured view) and dead letters
//! written to Kafka topics in one transaction, after the checkpoint is durable and its files are
//! published. Recovery redoes the latest epoch like every other effect of a commit; the sink's
//! epoch marker makes that a no-op when the transaction had committed, so `read_committed`
//! consumers see every row once.

use crate::compile::CompiledPipeline;
use crate::error::JobError;
use crate::parquet_file::{read_parquet_file, read_store_file};
use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use quiver_connectors::kafka::{SinkMessage, TransactionalSink};
use quiver_connectors::render::json_row;
use quiver_connectors::{ConnectorError, DeadLetter};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

/// What one epoch writes to Kafka (kept in the checkpoint's commit record).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaCommit {
    /// The epoch (the transaction's marker).
    pub epoch: u64,
    /// The epoch's messages, by where they come from.
    pub parts: Vec<TopicPart>,
}

/// Messages of an epoch from one place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TopicPart {
    /// A view's feature rows of the epoch, from its committed Parquet files.
    Rows {
        /// Target topic.
        topic: String,
        /// The view (`view` header).
        view: String,
        /// Key columns of the view (the message key, joined by `|`).
        keys: Vec<String>,
        /// The epoch's files of the view.
        files: Vec<PathBuf>,
    },
    /// The epoch's dead letters: bytes `from..to` of the dead-letter file.
    DeadLetters {
        /// Target topic.
        topic: String,
        /// The dead-letter file.
        path: PathBuf,
        /// Where the epoch's dead letters start.
        from: u64,
        /// Where they end.
        to: u64,
    },
}

/// The configured output topics of a run.
pub struct KafkaOutput {
    sink: TransactionalSink,
    /// Per view with a topic: the topic and the view's key columns.
    views: BTreeMap<String, (String, Vec<String>)>,
    dead_letters: Option<String>,
}

impl KafkaOutput {
    /// Connects the pipeline's `output.kafka`, if configured (fencing any earlier writer).
    pub fn connect(pipeline: &CompiledPipeline) -> Result<Option<Self>, JobError> {
        let Some(config) = &pipeline.loaded.config.output.kafka else {
            return Ok(None);
        };
        let name = &pipeline.loaded.config.name;
        let mut views = BTreeMap::new();
        for (view, topic) in &config.views {
            let Some(v) = pipeline.views.iter().find(|v| v.name() == view) else {
                return Err(JobError::Other(format!(
                    "output.kafka.views names `{view}`, which is not a view of this pipeline"
                )));
            };
            views.insert(view.clone(), (topic.clone(), v.key_names().to_vec()));
        }
        let sink = TransactionalSink::connect(config, name)?;
        Ok(Some(KafkaOutput {
            sink,
            views,
            dead_letters: config.dead_letters.clone(),
        }))
    }

    /// The topic and key columns of `view`, if its rows go to Kafka.
    pub fn view_topic(&self, view: &str) -> Option<(&str, &[String])> {
        self.views
            .get(view)
            .map(|(topic, keys)| (topic.as_str(), keys.as_slice()))
    }

    /// The dead-letter topic, if any.
    pub fn dead_letter_topic(&self) -> Option<&str> {
        self.dead_letters.as_deref()
    }

    /// Writes `commit` for run `run` (nothing if its transaction already committed); feature
    /// files are read from `store` when the run commits into an object store (their paths are
    /// then relative to it).
    pub fn write(
        &self,
        run: &str,
        commit: &KafkaCommit,
        store: Option<&quiver_store::StoreDir>,
    ) -> Result<(), JobError> {
        let mut messages = commit.parts.iter().flat_map(|part| {
            match part_messages(run, commit.epoch, part, store) {
                Ok(messages) => messages.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            }
        });
        self.sink.commit_epoch(run, commit.epoch, &mut messages)?;
        Ok(())
    }
}

fn other(e: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::kafka("preparing an epoch's messages", e)
}

/// The messages of one part of an epoch.
fn part_messages(
    run: &str,
    epoch: u64,
    part: &TopicPart,
    store: Option<&quiver_store::StoreDir>,
) -> Result<Vec<SinkMessage>, ConnectorError> {
    let base = |view: &str| {
        vec![
            ("quiver-run".to_string(), run.to_string()),
            ("quiver-epoch".to_string(), epoch.to_string()),
            ("quiver-view".to_string(), view.to_string()),
        ]
    };
    match part {
        TopicPart::Rows {
            topic,
            view,
            keys,
            files,
        } => {
            let mut out = Vec::new();
            for path in files {
                let (_, batches) = match store {
                    Some(store) => {
                        read_store_file(store, &path.to_string_lossy(), "a feature file")
                    }
                    None => read_parquet_file(path, "a feature file"),
                }
                .map_err(other)?;
                for batch in batches {
                    let key_values = key_strings(&batch, keys).map_err(other)?;
                    for row in 0..batch.num_rows() {
                        out.push(SinkMessage {
                            topic: topic.clone(),
                            key: key_values.as_ref().map(|k| k[row].clone()),
                            value: json_row(&batch, row).into_bytes(),
                            headers: base(view),
                        });
                    }
                }
            }
            Ok(out)
        }
        TopicPart::DeadLetters {
            topic,
            path,
            from,
            to,
        } => {
            let mut file = std::fs::File::open(path).map_err(other)?;
            file.seek(SeekFrom::Start(*from)).map_err(other)?;
            let mut text = String::new();
            file.take(to.saturating_sub(*from))
                .read_to_string(&mut text)
                .map_err(other)?;
            let mut out = Vec::new();
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let letter: DeadLetter = serde_json::from_str(line).map_err(other)?;
                out.push(SinkMessage {
                    topic: topic.clone(),
                    key: None,
                    value: letter.raw.into_bytes(),
                    headers: vec![
                        ("reason".to_string(), letter.reason.as_str().to_string()),
                        ("source-partition".to_string(), letter.partition),
                        ("source-offset".to_string(), letter.offset.to_string()),
                        ("error".to_string(), letter.detail),
                        ("quiver-run".to_string(), run.to_string()),
                        ("quiver-epoch".to_string(), epoch.to_string()),
                    ],
                });
            }
            Ok(out)
        }
    }
}

/// Each row's key (the key columns as text, joined by `|`; `None` without key columns).
fn key_strings(batch: &RecordBatch, keys: &[String]) -> Result<Option<Vec<String>>, String> {
    if keys.is_empty() {
        return Ok(None);
    }
    let mut columns = Vec::new();
    for key in keys {
        let column = batch
            .column_by_name(key)
            .ok_or_else(|| format!("the feature rows have no key column `{key}`"))?;
        columns.push(cast(column, &DataType::Utf8).map_err(|e| e.to_string())?);
    }
    let strings: Vec<_> = columns.iter().map(|c| c.as_string::<i32>()).collect();
    Ok(Some(
        (0..batch.num_rows())
            .map(|row| {
                strings
                    .iter()
                    .map(|s| if s.is_null(row) { "" } else { s.value(row) })
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect(),
    ))
}
