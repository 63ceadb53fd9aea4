//! Writing JSON messages to a topic (the demo's and the tests' way to fill one), and creating
//! topics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use super::config::KafkaConfig;
use crate::error::ConnectorError;

/// An admin client of the brokers in `config`.
pub(super) fn admin(
    config: &KafkaConfig,
) -> Result<AdminClient<DefaultClientContext>, ConnectorError> {
    config
        .client_config(&[])?
        .create()
        .map_err(|e| ConnectorError::kafka("creating an admin client (check `properties`)", e))
}

/// Creates `topic` with `partitions` partitions (replication 1) unless it exists.
pub async fn ensure_topic(
    config: &KafkaConfig,
    topic: &str,
    partitions: i32,
) -> Result<(), ConnectorError> {
    let admin = admin(config)?;
    let new = NewTopic::new(topic, partitions.max(1), TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin.create_topics([&new], &options).await.map_err(|e| {
        ConnectorError::kafka(
            format!("creating topic `{topic}`"),
            format!(
                "{e}; check that the brokers at `{}` are up",
                config.bootstrap_servers
            ),
        )
    })?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(ConnectorError::kafka(
                    format!("creating topic `{name}`"),
                    code,
                ))
            }
        }
    }
    Ok(())
}

/// Grows `topic` to `partitions` partitions (Kafka never shrinks a topic).
pub async fn add_partitions(
    config: &KafkaConfig,
    topic: &str,
    partitions: usize,
) -> Result<(), ConnectorError> {
    let admin = admin(config)?;
    let grow = NewPartitions::new(topic, partitions);
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_partitions([&grow], &options)
        .await
        .map_err(|e| ConnectorError::kafka(format!("adding partitions to `{topic}`"), e))?;
    for result in results {
        if let Err((name, code)) = result {
            return Err(ConnectorError::kafka(
                format!("adding partitions to `{name}`"),
                code,
            ));
        }
    }
    Ok(())
}

/// Counts failed deliveries (the default context drops them silently).
#[derive(Default)]
pub(super) struct Deliveries {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl Deliveries {
    /// An error if any delivery failed, saying how many and the first reason.
    pub(super) fn check(&self, what: &str) -> Result<(), ConnectorError> {
        let failed = self.failed.load(Ordering::Relaxed);
        if failed == 0 {
            return Ok(());
        }
        let first = self
            .first_error
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .unwrap_or_default();
        Err(ConnectorError::kafka(
            format!("delivering {what}"),
            format!("{failed} messages were not delivered (first error: {first})"),
        ))
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut first) = self.first_error.lock() {
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// An idempotent producer of JSON messages to one topic.
pub struct JsonProducer {
    producer: ThreadedProducer<Deliveries>,
    topic: String,
}

impl JsonProducer {
    /// A producer to `topic` of the brokers in `config` (its `properties` apply).
    pub fn new(config: &KafkaConfig, topic: &str) -> Result<Self, ConnectorError> {
        let producer = config
            .client_config(&[("enable.idempotence", "true"), ("linger.ms", "5")])?
            .create_with_context(Deliveries::default())
            .map_err(|e| ConnectorError::kafka("creating the producer (check `properties`)", e))?;
        Ok(JsonProducer {
            producer,
            topic: topic.to_string(),
        })
    }

    /// Queues one message (waiting while the local queue is full), to the partition of its
    /// key.
    pub fn send(&self, key: Option<&str>, value: &str) -> Result<(), ConnectorError> {
        self.send_to(None, key, value.as_bytes())
    }

    /// Queues one message to `partition` (`None`: the key's), any bytes as its value.
    pub fn send_to(
        &self,
        partition: Option<i32>,
        key: Option<&str>,
        value: &[u8],
    ) -> Result<(), ConnectorError> {
        loop {
            let mut record = BaseRecord::to(&self.topic).payload(value);
            if let Some(key) = key {
                record = record.key(key);
            }
            if let Some(partition) = partition {
                record = record.partition(partition);
            }
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => {
                    return Err(ConnectorError::kafka(
                        format!("producing to `{}`", self.topic),
                        e,
                    ))
                }
            }
        }
    }

    /// Waits until every queued message is delivered; fails if any was not.
    pub fn flush(&self) -> Result<(), ConnectorError> {
        self.producer
            .flush(Duration::from_secs(60))
            .map_err(|e| ConnectorError::kafka(format!("delivering to `{}`", self.topic), e))?;
        self.producer
            .context()
            .check(&format!("to `{}`", self.topic))
    }
}
