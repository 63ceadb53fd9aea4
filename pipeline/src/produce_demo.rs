//! `quiver produce-demo`: generated card transactions into a Kafka topic, one JSON message per
//! transaction keyed by its card (so a card's events stay in one partition, in order), for
//! pipelines that read the topic (configs/fraud-kafka.yaml).

use crate::error::JobError;
use crate::progress::events_bar;
use arrow::array::{Array, AsArray};
use quiver_connectors::kafka::{ensure_topic, JsonProducer, KafkaConfig};
use quiver_connectors::render::json_row;
use quiver_connectors::{Datagen, DatagenConfig};

/// Produces `datagen`'s events to the first topic of `kafka` (created with `partitions`
/// partitions if missing); returns how many were delivered.
pub async fn produce_demo(
    kafka: &KafkaConfig,
    datagen: DatagenConfig,
    partitions: i32,
    progress: bool,
) -> Result<u64, JobError> {
    kafka.validate()?;
    let topic = kafka.topics[0].clone();
    ensure_topic(kafka, &topic, partitions).await?;
    let kafka = kafka.clone();
    let bar = events_bar(Some(datagen.events), progress, "produce");
    let produce = move || -> Result<u64, JobError> {
        let producer = JsonProducer::new(&kafka, &topic)?;
        let mut sent = 0;
        for generated in Datagen::new(datagen)? {
            let batch = &generated.batch;
            let cards = batch
                .column_by_name("card_id")
                .and_then(|c| c.as_string_opt::<i32>().cloned());
            for row in 0..batch.num_rows() {
                let key = cards
                    .as_ref()
                    .filter(|c| c.is_valid(row))
                    .map(|c| c.value(row));
                producer.send(key, &json_row(batch, row))?;
            }
            sent += batch.num_rows() as u64;
            bar.inc(batch.num_rows() as u64);
        }
        producer.flush()?;
        bar.finish_and_clear();
        Ok(sent)
    };
    tokio::task::spawn_blocking(produce)
        .await
        .map_err(|e| JobError::Other(format!("the producer stopped: {e}")))?
}
