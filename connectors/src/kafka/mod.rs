//! Kafka through librdkafka: the `source.kafka` config, a consumer reading topic partitions as
//! source partitions from checkpointed offsets, a producer for filling topics, and a
//! transactional sink writing each checkpoint epoch exactly once.

mod avro;
mod config;
mod consumer;
mod producer;
mod shard_group;
mod sink;

pub use avro::{AvroDecoder, AvroError};
pub use config::{KafkaConfig, KafkaFormat, StartFrom};
pub use consumer::{KafkaConsumer, PartitionSink, ReadEnd, TopicPartition};
pub use producer::{add_partitions, ensure_topic, JsonProducer};
pub use shard_group::ShardGroup;
pub use sink::{KafkaSinkConfig, SinkMessage, TransactionalSink};
