//! Output topics written exactly once: each checkpoint epoch's messages go out in one Kafka
//! transaction that also commits a marker (offset = epoch, metadata = run) for the sink's
//! consumer group, so redoing an epoch after a crash is a no-op once its transaction committed,
//! and `read_committed` consumers see each message once.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, DefaultConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::config::client_config;
use super::consumer::partition_numbers;
use super::producer::Deliveries;
use crate::error::ConnectorError;

/// How long transactional calls may take.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// `output.kafka`: views' feature rows and the dead letters to topics, exactly once.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Brokers, `host:port[,host:port…]` (`${VAR}` from the environment).
    pub bootstrap_servers: String,
    /// Topic per view: `view: topic`. Each feature row is one JSON message keyed by the
    /// view's key.
    #[serde(default)]
    pub views: BTreeMap<String, String>,
    /// Topic of the dead letters (the raw record as the value; reason, source partition and
    /// offset, and error as headers), besides the dead-letter file.
    #[serde(default)]
    pub dead_letters: Option<String>,
    /// Transactional id (default `quiver-<pipeline>`): one writer at a time per id; a new one
    /// fences the old and aborts what it left open.
    #[serde(default)]
    pub transactional_id: Option<String>,
    /// librdkafka settings passed through as they are (TLS, SASL, …); never logged.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// One message of an epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkMessage {
    /// Target topic.
    pub topic: String,
    /// Message key.
    pub key: Option<String>,
    /// Message value.
    pub value: Vec<u8>,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
}

/// A transactional producer of epochs, with the consumer that reads its markers.
pub struct TransactionalSink {
    producer: ThreadedProducer<Deliveries>,
    markers: BaseConsumer<DefaultConsumerContext>,
    /// Where the marker offsets are committed: partition 0 of the first output topic.
    marker_topic: String,
}

impl KafkaSinkConfig {
    /// Every topic written to.
    pub fn topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self.views.values().cloned().collect();
        topics.extend(self.dead_letters.clone());
        topics.sort();
        topics.dedup();
        topics
    }
}

impl TransactionalSink {
    /// Connects for pipeline `pipeline`, checks the topics exist, and fences any earlier
    /// writer with the same transactional id (aborting its open transaction).
    pub fn connect(config: &KafkaSinkConfig, pipeline: &str) -> Result<Self, ConnectorError> {
        let topics = config.topics();
        let Some(marker_topic) = topics.first().cloned() else {
            return Err(ConnectorError::kafka(
                "output.kafka",
                "name at least one topic under `views` or `dead_letters`",
            ));
        };
        let id = config
            .transactional_id
            .clone()
            .unwrap_or_else(|| format!("quiver-{pipeline}"));
        let group = format!("{id}-epochs");
        let markers: BaseConsumer<DefaultConsumerContext> = client_config(
            &config.bootstrap_servers,
            &config.properties,
            &[("group.id", &group), ("enable.auto.commit", "false")],
        )?
        .create()
        .map_err(|e| {
            ConnectorError::kafka("creating the output's consumer (check `properties`)", e)
        })?;
        for topic in &topics {
            let partitions = partition_numbers(&markers, topic)
                .map_err(|e| ConnectorError::kafka(format!("output topic `{topic}`"), e))?;
            if partitions.is_empty() {
                return Err(ConnectorError::kafka(
                    format!("output topic `{topic}`"),
                    "it does not exist; create it first",
                ));
            }
        }
        let producer: ThreadedProducer<Deliveries> = client_config(
            &config.bootstrap_servers,
            &config.properties,
            &[("transactional.id", &id), ("enable.idempotence", "true")],
        )?
        .create_with_context(Deliveries::default())
        .map_err(|e| {
            ConnectorError::kafka("creating the output's producer (check `properties`)", e)
        })?;
        producer
            .init_transactions(TRANSACTION_TIMEOUT)
            .map_err(|e| ConnectorError::kafka(format!("starting transactions as `{id}`"), e))?;
        Ok(TransactionalSink {
            producer,
            markers,
            marker_topic,
        })
    }

    /// The (run, epoch) of the last epoch committed, if any.
    pub fn committed_epoch(&self) -> Result<Option<(String, u64)>, ConnectorError> {
        let mut query = TopicPartitionList::new();
        query.add_partition(&self.marker_topic, 0);
        let found = self
            .markers
            .committed_offsets(query, Duration::from_secs(30))
            .map_err(|e| ConnectorError::kafka("reading the output's committed epoch", e))?;
        let Some(marker) = found.find_partition(&self.marker_topic, 0) else {
            return Ok(None);
        };
        Ok(match marker.offset() {
            Offset::Offset(epoch) if epoch >= 0 => {
                Some((marker.metadata().to_string(), epoch as u64))
            }
            _ => None,
        })
    }

    /// Writes `messages` as epoch `epoch` of run `run` in one transaction, unless that epoch
    /// (or a later one of the run) is already committed; returns whether it wrote.
    pub fn commit_epoch(
        &self,
        run: &str,
        epoch: u64,
        messages: &mut dyn Iterator<Item = Result<SinkMessage, ConnectorError>>,
    ) -> Result<bool, ConnectorError> {
        if let Some((done_run, done)) = self.committed_epoch()? {
            if done_run == run && done >= epoch {
                return Ok(false);
            }
        }
        let fail = |e: KafkaError| ConnectorError::kafka(format!("writing epoch {epoch}"), e);
        self.producer.begin_transaction().map_err(fail)?;
        let result = self.send_all(run, epoch, messages);
        if let Err(e) = result {
            let _ = self.producer.abort_transaction(TRANSACTION_TIMEOUT);
            return Err(e);
        }
        self.producer
            .commit_transaction(TRANSACTION_TIMEOUT)
            .map_err(fail)?;
        Ok(true)
    }

    fn send_all(
        &self,
        run: &str,
        epoch: u64,
        messages: &mut dyn Iterator<Item = Result<SinkMessage, ConnectorError>>,
    ) -> Result<(), ConnectorError> {
        let fail = |e: KafkaError| ConnectorError::kafka(format!("writing epoch {epoch}"), e);
        for message in messages {
            let message = message?;
            let mut headers = OwnedHeaders::new();
            for (key, value) in &message.headers {
                headers = headers.insert(Header {
                    key,
                    value: Some(value),
                });
            }
            let mut record = BaseRecord::to(&message.topic)
                .payload(&message.value)
                .headers(headers);
            if let Some(key) = &message.key {
                record = record.key(key);
            }
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err((e, _)) => return Err(fail(e)),
                }
            }
        }
        let mut marker = TopicPartitionList::new();
        let mut entry = marker.add_partition(&self.marker_topic, 0);
        entry
            .set_offset(Offset::Offset(epoch as i64))
            .map_err(fail)?;
        entry.set_metadata(run);
        let group = self.markers.group_metadata().ok_or_else(|| {
            ConnectorError::kafka("writing the epoch marker", "no consumer group")
        })?;
        self.producer
            .send_offsets_to_transaction(&marker, &group, TRANSACTION_TIMEOUT)
            .map_err(fail)?;
        self.producer.flush(TRANSACTION_TIMEOUT).map_err(fail)?;
        self.producer.context().check(&format!("epoch {epoch}"))
    }
}
