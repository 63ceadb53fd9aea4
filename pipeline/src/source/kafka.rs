//! Kafka as a source: every partition of the configured topics is a source partition, named
//! `topic/partition`, whose positions are Kafka offsets. Partitions are live: one without
//! messages for `event_time.idle_timeout` stops holding the watermark back. A checkpoint's
//! offsets are where a resumed run continues; they are also committed to the consumer group
//! once durable, for lag tooling.

use crate::error::JobError;
use crate::source::connector::{ReaderMessage, ReaderSender, SourceConnector};
use crate::source::PartitionProgress;
use quiver_connectors::kafka::{KafkaConfig, KafkaConsumer, PartitionSink, ReadEnd};
use quiver_connectors::{DeclaredSchema, PartitionItem};
use std::sync::Arc;

/// The configured topics, read through one consumer.
pub struct KafkaConnector {
    consumer: Arc<KafkaConsumer>,
    topics: Vec<String>,
    /// The configured `stop_at_end`: the topics' ends are the end of the input.
    bounded: bool,
}

impl KafkaConnector {
    /// Connects to the brokers of `config` and lists its topics' partitions; `pipeline` names
    /// the default consumer group. With `until_caught_up` the partitions are read to their
    /// current ends (a later run continues from there).
    pub fn connect(
        config: &KafkaConfig,
        schema: DeclaredSchema,
        pipeline: &str,
        until_caught_up: bool,
    ) -> Result<Self, JobError> {
        let mut reading = config.clone();
        reading.stop_at_end |= until_caught_up;
        let consumer = KafkaConsumer::connect(&reading, schema, &config.group(pipeline))?;
        Ok(KafkaConnector {
            consumer: Arc::new(consumer),
            topics: config.topics.clone(),
            bounded: config.stop_at_end,
        })
    }
}

/// Sends a reader's items to the run (blocking: the reader runs on its own thread).
struct ChannelSink(ReaderSender);

impl PartitionSink for ChannelSink {
    fn send(&mut self, item: PartitionItem) -> bool {
        self.0.blocking_send(Ok(ReaderMessage::Item(item))).is_ok()
    }

    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    fn caught_up(&mut self) -> bool {
        self.0.blocking_send(Ok(ReaderMessage::CaughtUp)).is_ok()
    }
}

impl SourceConnector for KafkaConnector {
    fn partition_names(&self) -> Vec<String> {
        self.consumer
            .partitions()
            .iter()
            .map(|p| p.name())
            .collect()
    }

    fn fingerprint(&self) -> String {
        // The topics identify the input; brokers may move and settings may change.
        serde_json::json!({ "kafka": { "topics": &self.topics } }).to_string()
    }

    fn max_open(&self) -> usize {
        usize::MAX
    }

    fn is_live(&self) -> bool {
        true
    }

    fn end_is_final(&self) -> bool {
        self.bounded
    }

    fn spawn_reader(&self, partition: usize, progress: PartitionProgress, tx: ReaderSender) {
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || {
            let mut sink = ChannelSink(tx.clone());
            match consumer.read(partition, progress.position, &mut sink) {
                Ok(ReadEnd::Caught) => {
                    let _ = tx.blocking_send(Ok(ReaderMessage::Done));
                }
                Ok(ReadEnd::Closed) => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(e.into()));
                }
            }
        });
    }

    fn arrange(&self, names: &[String]) -> bool {
        self.consumer.arrange(names)
    }

    fn end_offsets(&self) -> Option<Vec<Option<u64>>> {
        Some(self.consumer.end_offsets())
    }

    fn cached_end_offsets(&self) -> Option<Vec<Option<u64>>> {
        Some(self.consumer.cached_end_offsets())
    }

    fn committed(&self, partitions: &[PartitionProgress], last: bool) {
        let positions: Vec<(usize, u64)> = partitions
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.position.map(|o| (i, o)))
            .collect();
        // Best effort: the checkpoint, not the group, is what a restart reads.
        let _ = self.consumer.commit_positions(&positions, last);
    }
}
