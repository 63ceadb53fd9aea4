//! Kafka through librdkafka: the `source.kafka` config, a consumer reading topic partitions as
//! source partitions from checkpointed offsets, and a producer for filling topics.

mod config;
mod consumer;
mod producer;

pub use config::{KafkaConfig, KafkaFormat, StartFrom};
pub use consumer::{KafkaConsumer, PartitionSink, ReadEnd, TopicPartition};
pub use producer::{ensure_topic, JsonProducer};
