//! Who runs which shard of a job: a consumer group over a small coordination topic with one
//! partition per shard. The partitions a member is assigned are the shards it runs; the
//! group's rebalances (cooperative, so shards that stay put are not touched) are the
//! handovers. No message is ever produced to the topic: only its partition count matters.

use std::collections::BTreeSet;
use std::time::Duration;

use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer, DefaultConsumerContext};
use rdkafka::error::RDKafkaErrorCode;

use super::config::KafkaConfig;
use super::consumer::partition_numbers;
use super::producer::admin;
use crate::error::ConnectorError;

/// How long a member may be silent before the group hands its shards to the others (unless
/// `properties` set `session.timeout.ms`): the takeover time after an instance dies.
const SESSION_TIMEOUT_MS: &str = "10000";

/// A member of the group that shares a job's shards.
pub struct ShardGroup {
    consumer: BaseConsumer<DefaultConsumerContext>,
    topic: String,
    shards: u32,
}

impl ShardGroup {
    /// The coordination topic of consumer group `group`.
    pub fn topic_of(group: &str) -> String {
        format!("{group}.shards")
    }

    /// Joins group `<group>.shards` over the coordination topic [`ShardGroup::topic_of`]
    /// (created with `shards` partitions if missing; one with another count is an error), with
    /// the brokers and `properties` (TLS, SASL, …) of `config`.
    pub async fn join(
        config: &KafkaConfig,
        group: &str,
        shards: u32,
    ) -> Result<Self, ConnectorError> {
        config.validate()?;
        let topic = ShardGroup::topic_of(group);
        let brokers = config.brokers()?;
        let admin = admin(config)?;
        // The brokers' default replication, so the group outlives any one broker.
        let new = NewTopic::new(&topic, shards as i32, TopicReplication::Fixed(-1));
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let created = admin.create_topics([&new], &options).await.map_err(|e| {
            ConnectorError::kafka(
                format!("creating the shards' coordination topic `{topic}`"),
                format!("{e}; check that the brokers at `{brokers}` are up"),
            )
        })?;
        for result in created {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(ConnectorError::kafka(
                        format!("creating the shards' coordination topic `{name}`"),
                        format!("{code} (or create it yourself with {shards} partitions)"),
                    ))
                }
            }
        }
        let session = (config.properties.get("session.timeout.ms").cloned())
            .unwrap_or_else(|| SESSION_TIMEOUT_MS.to_string());
        let consumer: BaseConsumer<DefaultConsumerContext> = config
            .client_config(&[
                ("group.id", &format!("{group}.shards")),
                ("enable.auto.commit", "false"),
                ("auto.offset.reset", "latest"),
                ("partition.assignment.strategy", "cooperative-sticky"),
                ("session.timeout.ms", &session),
            ])?
            .create()
            .map_err(|e| {
                ConnectorError::kafka("creating the shards' group member (check `properties`)", e)
            })?;
        // A topic just created may take a moment to show in the brokers' metadata.
        let listed = std::time::Instant::now();
        let found = loop {
            let found = partition_numbers(&consumer, &topic).map_err(|e| {
                ConnectorError::kafka(
                    format!("listing the partitions of `{topic}`"),
                    format!("{e}; check that the brokers at `{brokers}` are up"),
                )
            })?;
            if !found.is_empty() || listed.elapsed() > Duration::from_secs(10) {
                break found;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if found.len() != shards as usize {
            return Err(ConnectorError::kafka(
                format!("the shards' coordination topic `{topic}`"),
                format!(
                    "it has {} partitions but `shards` is {shards}: every instance of a job must name the same count (to change it, stop every instance and delete the topic)",
                    found.len()
                ),
            ));
        }
        consumer
            .subscribe(&[&topic])
            .map_err(|e| ConnectorError::kafka(format!("joining the group of `{topic}`"), e))?;
        Ok(ShardGroup {
            consumer,
            topic,
            shards,
        })
    }

    /// Serves the group for up to `wait` (heartbeats, rebalances) and returns the shards this
    /// member owns now; a transient client error (a broker away) comes back as `Err` and the
    /// membership goes on.
    pub fn owned(&self, wait: Duration) -> Result<BTreeSet<u32>, String> {
        if let Some(Err(e)) = self.consumer.poll(wait) {
            return Err(e.to_string());
        }
        let assignment = self.consumer.assignment().map_err(|e| e.to_string())?;
        Ok((assignment.elements_for_topic(&self.topic).iter())
            .map(|e| e.partition() as u32)
            .filter(|&p| p < self.shards)
            .collect())
    }

    /// Leaves the group now (its shards go to the other members at once).
    pub fn leave(self) {
        self.consumer.unsubscribe();
        // Dropping the consumer closes it, which sends the group its leave.
    }
}
