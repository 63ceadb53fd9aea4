//! Reading Kafka topic partitions as source partitions: one consumer per source, each partition
//! split into its own queue and read on its own thread from a given offset, its messages
//! decoded into [`PartitionItem`]s in offset order.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, DefaultConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::{Offset, Timestamp, TopicPartitionList};
use serde_json::Value;

use super::avro::{AvroDecoder, AvroError};
use super::config::{KafkaConfig, StartFrom};
use crate::dead_letter::DeadLetterReason;
use crate::decode::{decode_json_records, JsonRecord};
use crate::error::ConnectorError;
use crate::partition::{in_offset_order, PartitionItem};
use crate::schema::DeclaredSchema;
use crate::timestamp::micros_to_string;

/// How long metadata and offset lookups may take before the brokers count as unreachable.
const BROKER_TIMEOUT: Duration = Duration::from_secs(15);

/// Fetch settings unless the source's `properties` set them: a fetch waits up to 10 ms for
/// 256 KiB instead of answering each message as it arrives. At 16,000 events/s over 4
/// partitions this cut the run's CPU from 0.88 to 0.6-0.75 of a core (fewer, larger batches;
/// the broker's too), for at most 10 ms of added latency when the topic is quiet.
const FETCH_DEFAULTS: [(&str, &str); 2] =
    [("fetch.wait.max.ms", "10"), ("fetch.min.bytes", "262144")];

/// How long a partition reader waits for messages before checking whether it should stop.
const POLL_WAIT: Duration = Duration::from_millis(100);

/// One partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPartition {
    /// The topic.
    pub topic: String,
    /// The partition number.
    pub partition: i32,
}

impl TopicPartition {
    /// The source partition's name: `topic/partition`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.topic, self.partition)
    }
}

/// Where a partition reader sends what it read.
pub trait PartitionSink {
    /// Sends records; `false` when nobody listens any more (the reader stops).
    fn send(&mut self, item: PartitionItem) -> bool;
    /// Whether nobody listens any more.
    fn is_closed(&self) -> bool;
    /// The partition was read to its current end (more may come); `false` when nobody listens.
    fn caught_up(&mut self) -> bool;
}

/// How a partition reader ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadEnd {
    /// The partition was read to its end (`stop_at_end`).
    Caught,
    /// The listener went away.
    Closed,
}

type Client = BaseConsumer<DefaultConsumerContext>;

/// A Kafka source: the partitions of its topics, read through one consumer.
pub struct KafkaConsumer {
    config: KafkaConfig,
    schema: DeclaredSchema,
    /// The decoder of Avro values (`format: avro`).
    avro: Option<AvroDecoder>,
    consumer: Arc<Client>,
    /// Every partition of the configured topics, topic by topic in config order, then by number
    /// (or in a checkpoint's order, see [`KafkaConsumer::arrange`]).
    partitions: std::sync::RwLock<Vec<TopicPartition>>,
    stop: Arc<AtomicBool>,
    /// A fatal error the consumer reported (the readers stop with it).
    fatal: Arc<Mutex<Option<String>>>,
}

/// The partition numbers of `topic`, sorted; none when the brokers do not know it.
pub(super) fn partition_numbers(
    client: &BaseConsumer<DefaultConsumerContext>,
    topic: &str,
) -> Result<Vec<i32>, KafkaError> {
    let metadata = client.fetch_metadata(Some(topic), BROKER_TIMEOUT)?;
    let found = metadata.topics().iter().find(|t| t.name() == topic);
    let mut numbers: Vec<i32> = match found {
        Some(t) if t.error().is_none() => t.partitions().iter().map(|p| p.id()).collect(),
        _ => Vec::new(),
    };
    numbers.sort_unstable();
    Ok(numbers)
}

impl KafkaConsumer {
    /// Connects to the brokers and lists the partitions of the configured topics.
    pub fn connect(
        config: &KafkaConfig,
        schema: DeclaredSchema,
        group: &str,
    ) -> Result<Self, ConnectorError> {
        config.validate()?;
        let mut config = config.clone();
        for (key, value) in FETCH_DEFAULTS {
            (config.properties)
                .entry(key.to_string())
                .or_insert_with(|| value.to_string());
        }
        let consumer: Client = config
            .client_config(&[
                ("group.id", group),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("enable.partition.eof", "true"),
                ("auto.offset.reset", "earliest"),
                ("isolation.level", "read_committed"),
            ])?
            .create()
            .map_err(|e| ConnectorError::kafka("creating the consumer (check `properties`)", e))?;
        let brokers = config.brokers()?;
        let mut partitions = Vec::new();
        for topic in &config.topics {
            let numbers = partition_numbers(&consumer, topic).map_err(|e| {
                ConnectorError::kafka(
                    format!("listing the partitions of topic `{topic}`"),
                    format!(
                        "{e}; check that the brokers at `{}` are up and reachable, and the TLS/SASL `properties`",
                        brokers
                    ),
                )
            })?;
            if numbers.is_empty() {
                return Err(ConnectorError::kafka(
                    format!("topic `{topic}`"),
                    format!(
                        "it does not exist on the brokers at `{}` (create it, or fill it with `quiver produce-demo`)",
                        brokers
                    ),
                ));
            }
            partitions.extend(numbers.into_iter().map(|partition| TopicPartition {
                topic: topic.clone(),
                partition,
            }));
        }
        let consumer = Arc::new(consumer);
        let stop = Arc::new(AtomicBool::new(false));
        let fatal = Arc::new(Mutex::new(None));
        spawn_main_queue_poller(consumer.clone(), stop.clone(), fatal.clone());
        Ok(KafkaConsumer {
            avro: config.avro_decoder()?,
            config: config.clone(),
            schema,
            consumer,
            partitions: std::sync::RwLock::new(partitions),
            stop,
            fatal,
        })
    }

    /// The partitions, in source partition order.
    pub fn partitions(&self) -> Vec<TopicPartition> {
        self.partitions
            .read()
            .map(|p| p.clone())
            .unwrap_or_default()
    }

    /// Orders the partitions as `names` (`topic/partition`), partitions not among them after
    /// those in their current order; `false` (nothing changed) when one of `names` is gone.
    pub fn arrange(&self, names: &[String]) -> bool {
        let Ok(mut partitions) = self.partitions.write() else {
            return false;
        };
        let mut arranged = Vec::with_capacity(partitions.len());
        for name in names {
            match partitions.iter().find(|p| p.name() == *name) {
                Some(p) => arranged.push(p.clone()),
                None => return false,
            }
        }
        let rest: Vec<TopicPartition> = partitions
            .iter()
            .filter(|p| !names.contains(&p.name()))
            .cloned()
            .collect();
        arranged.extend(rest);
        *partitions = arranged;
        true
    }

    fn fatal(&self) -> Option<String> {
        self.fatal.lock().ok().and_then(|f| f.clone())
    }

    /// The offset partition `index` starts at after `position` (`None`: the configured start).
    fn start_offset(
        &self,
        tp: &TopicPartition,
        position: Option<u64>,
    ) -> Result<Offset, ConnectorError> {
        if let Some(p) = position {
            return Ok(Offset::Offset(p as i64 + 1));
        }
        Ok(match self.config.start_from()? {
            StartFrom::Earliest => Offset::Beginning,
            StartFrom::Latest => Offset::End,
            StartFrom::Time(ms) => {
                let mut query = TopicPartitionList::new();
                query
                    .add_partition_offset(&tp.topic, tp.partition, Offset::Offset(ms))
                    .map_err(|e| ConnectorError::kafka(format!("partition {}", tp.name()), e))?;
                let found = self
                    .consumer
                    .offsets_for_times(query, BROKER_TIMEOUT)
                    .map_err(|e| {
                        ConnectorError::kafka(format!("finding the start time in {}", tp.name()), e)
                    })?;
                found
                    .find_partition(&tp.topic, tp.partition)
                    .map_or(Offset::End, |e| match e.offset() {
                        Offset::Offset(o) => Offset::Offset(o),
                        _ => Offset::End,
                    })
            }
        })
    }

    /// Reads partition `index` after `position` until it ends (`stop_at_end`) or `sink` closes,
    /// blocking the calling thread. Records arrive in offset order, decoded; bad ones as dead
    /// letters.
    pub fn read(
        &self,
        index: usize,
        position: Option<u64>,
        sink: &mut dyn PartitionSink,
    ) -> Result<ReadEnd, ConnectorError> {
        let tp = self
            .partitions()
            .get(index)
            .ok_or_else(|| {
                ConnectorError::kafka("reading", format!("no partition number {index}"))
            })?
            .clone();
        let name = tp.name();
        let queue = self
            .consumer
            .split_partition_queue(&tp.topic, tp.partition)
            .ok_or_else(|| {
                ConnectorError::kafka(format!("partition {name}"), "cannot open its queue")
            })?;
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&tp.topic, tp.partition, self.start_offset(&tp, position)?)
            .map_err(|e| ConnectorError::kafka(format!("partition {name}"), e))?;
        self.consumer
            .incremental_assign(&assignment)
            .map_err(|e| ConnectorError::kafka(format!("assigning partition {name}"), e))?;
        let result = self.read_queue(&name, &queue, sink);
        let _ = self.consumer.incremental_unassign(&assignment);
        result
    }

    fn read_queue(
        &self,
        name: &str,
        queue: &rdkafka::consumer::base_consumer::PartitionQueue<DefaultConsumerContext>,
        sink: &mut dyn PartitionSink,
    ) -> Result<ReadEnd, ConnectorError> {
        let batch_size = self.config.batch_size.max(1);
        let mut pending: Vec<OwnedMessage> = Vec::new();
        loop {
            if let Some(fatal) = self.fatal() {
                return Err(ConnectorError::kafka(format!("reading {name}"), fatal));
            }
            let wait = if pending.is_empty() {
                POLL_WAIT
            } else {
                Duration::ZERO
            };
            match queue.poll(wait) {
                Some(Ok(message)) => {
                    pending.push(message.detach());
                    if pending.len() >= batch_size && !self.flush(name, &mut pending, sink)? {
                        return Ok(ReadEnd::Closed);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {
                    if !self.flush(name, &mut pending, sink)? {
                        return Ok(ReadEnd::Closed);
                    }
                    if self.config.stop_at_end {
                        return Ok(ReadEnd::Caught);
                    }
                    if !sink.caught_up() {
                        return Ok(ReadEnd::Closed);
                    }
                }
                Some(Err(KafkaError::MessageConsumptionFatal(code))) => {
                    return Err(ConnectorError::kafka(format!("reading {name}"), code));
                }
                // Anything else (a broker restarting, a lost connection) librdkafka retries by
                // itself; the partition simply has no data meanwhile.
                Some(Err(_)) => {}
                None => {
                    if !self.flush(name, &mut pending, sink)? || sink.is_closed() {
                        return Ok(ReadEnd::Closed);
                    }
                }
            }
        }
    }

    /// Decodes and sends the pending messages; `false` when the sink closed.
    fn flush(
        &self,
        name: &str,
        pending: &mut Vec<OwnedMessage>,
        sink: &mut dyn PartitionSink,
    ) -> Result<bool, ConnectorError> {
        if pending.is_empty() {
            return Ok(true);
        }
        // Avro values become JSON text first (a registry that fails stops the reader).
        let values = pending
            .iter()
            .map(|m| self.json_value(m))
            .collect::<Result<Vec<_>, _>>()?;
        let records = pending.iter().zip(&values).map(|(m, value)| {
            let mut record = self.record(m);
            if let Some(value) = value {
                match value {
                    Ok(text) => record.value = Some(text.as_bytes()),
                    Err((reason, detail)) => {
                        record.problem = record.problem.or(Some((*reason, detail.clone())))
                    }
                }
            }
            record
        });
        let decoded = decode_json_records(name, records, &self.schema, pending.len())?;
        pending.clear();
        for item in in_offset_order(decoded) {
            if !sink.send(item) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// An Avro value as JSON text, or why it is a bad record; `None` for JSON messages (and
    /// messages without a value).
    #[allow(clippy::type_complexity)]
    fn json_value(
        &self,
        message: &OwnedMessage,
    ) -> Result<Option<Result<String, (DeadLetterReason, String)>>, ConnectorError> {
        let (Some(avro), Some(bytes)) = (&self.avro, message.payload()) else {
            return Ok(None);
        };
        match avro.decode(bytes) {
            Ok(value) => Ok(Some(Ok(value.to_string()))),
            Err(AvroError::Record(reason, detail)) => Ok(Some(Err((reason, detail)))),
            Err(AvroError::Registry(e)) => Err(e),
        }
    }

    /// A message as a record to decode: its value, and its key, timestamp and headers for the
    /// columns that take them.
    fn record<'m>(&'m self, message: &'m OwnedMessage) -> JsonRecord<'m> {
        let mut extra: Vec<(&str, Value)> = Vec::new();
        let mut problem = None;
        let text = |what: String, bytes: Option<&[u8]>, problem: &mut Option<_>| match bytes {
            None => Value::Null,
            Some(b) => match std::str::from_utf8(b) {
                Ok(s) => Value::String(s.to_string()),
                Err(_) => {
                    *problem = Some((
                        DeadLetterReason::InvalidUtf8,
                        format!("{what} is not valid UTF-8"),
                    ));
                    Value::Null
                }
            },
        };
        if let Some(column) = &self.config.key_column {
            let key = text("the message key".to_string(), message.key(), &mut problem);
            extra.push((column, key));
        }
        if let Some(column) = &self.config.timestamp_column {
            let time = match message.timestamp() {
                Timestamp::CreateTime(ms) | Timestamp::LogAppendTime(ms) => {
                    Value::String(micros_to_string(ms.saturating_mul(1000)))
                }
                Timestamp::NotAvailable => Value::Null,
            };
            extra.push((column, time));
        }
        for (column, header) in &self.config.header_columns {
            let value = message.headers().and_then(|headers| {
                headers
                    .iter()
                    .filter(|h| h.key == header)
                    .last()
                    .and_then(|h| h.value)
            });
            let value = text(format!("header `{header}`"), value, &mut problem);
            extra.push((column, value));
        }
        JsonRecord {
            offset: message.offset().max(0) as u64,
            value: message.payload(),
            extra,
            problem,
        }
    }

    /// Each partition's end: the offset the next message will get (its high watermark), `None`
    /// where the brokers did not answer.
    pub fn end_offsets(&self) -> Vec<Option<u64>> {
        self.partitions()
            .iter()
            .map(|tp| {
                self.consumer
                    .fetch_watermarks(&tp.topic, tp.partition, BROKER_TIMEOUT)
                    .ok()
                    .map(|(_, high)| high.max(0) as u64)
            })
            .collect()
    }

    /// Each partition's end offset as the last fetch responses told it (no broker round trip;
    /// `None` where no fetch answered yet): cheap enough for every checkpoint.
    pub fn cached_end_offsets(&self) -> Vec<Option<u64>> {
        let client = self.consumer.client();
        self.partitions()
            .iter()
            .map(|tp| {
                let topic = std::ffi::CString::new(tp.topic.as_str()).ok()?;
                let (mut low, mut high) = (-1i64, -1i64);
                // SAFETY: the client handle lives as long as `self.consumer`; the topic is a
                // NUL-terminated string that outlives the call; librdkafka only writes the two
                // offsets (rdkafka has no safe wrapper for this cached lookup).
                let error = unsafe {
                    rdkafka::bindings::rd_kafka_get_watermark_offsets(
                        client.native_ptr(),
                        topic.as_ptr(),
                        tp.partition,
                        &mut low,
                        &mut high,
                    )
                };
                let ok =
                    error == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR;
                ok.then_some(high).and_then(|h| u64::try_from(h).ok())
            })
            .collect()
    }

    /// Commits `positions` (partition index, last consumed offset) to the consumer group, for
    /// lag tooling; best effort (the checkpoint is what a restart reads), asynchronous unless
    /// `wait` (before the process stops).
    pub fn commit_positions(
        &self,
        positions: &[(usize, u64)],
        wait: bool,
    ) -> Result<(), ConnectorError> {
        let mut offsets = TopicPartitionList::new();
        for &(index, position) in positions {
            if let Some(tp) = self.partitions().get(index) {
                offsets
                    .add_partition_offset(
                        &tp.topic,
                        tp.partition,
                        Offset::Offset(position as i64 + 1),
                    )
                    .map_err(|e| ConnectorError::kafka("committing offsets", e))?;
            }
        }
        if offsets.count() == 0 {
            return Ok(());
        }
        self.consumer
            .commit(
                &offsets,
                if wait {
                    CommitMode::Sync
                } else {
                    CommitMode::Async
                },
            )
            .map_err(|e| ConnectorError::kafka("committing offsets to the consumer group", e))
    }
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Serves the consumer's main queue (callbacks, errors) until `stop`; fatal errors are kept
/// for the readers, transient ones (librdkafka retries them) are not.
fn spawn_main_queue_poller(
    consumer: Arc<Client>,
    stop: Arc<AtomicBool>,
    fatal: Arc<Mutex<Option<String>>>,
) {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match consumer.poll(POLL_WAIT) {
                Some(Err(KafkaError::MessageConsumptionFatal(code))) => {
                    if let Ok(mut f) = fatal.lock() {
                        *f = Some(format!("the consumer failed: {code}"));
                    }
                }
                Some(Ok(message)) => {
                    // Every assigned partition has its own queue: a message here is a bug.
                    if let Ok(mut f) = fatal.lock() {
                        *f = Some(format!(
                            "internal error: a message of {}/{} arrived outside its partition's queue; please report this",
                            message.topic(),
                            message.partition()
                        ));
                    }
                }
                _ => {}
            }
        }
    });
}
