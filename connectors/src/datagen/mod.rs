//! Deterministic fraud-transaction generator.
//!
//! Events are produced in event-time order by `model`, then each is delayed by a random
//! amount of at most `max_disorder_ms` of event time and released in order of
//! `event_time + delay`. Because everything released before an event `e` has
//! `event_time <= release key <= e.event_time + max_disorder`, the disorder bound holds
//! exactly: `e.event_time >= max(previous event times) - max_disorder`.

mod model;
mod rng;

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use self::model::{Event, Model};
use self::rng::Rng;
use crate::error::ConnectorError;
use crate::position::SourceBatch;
use crate::schema::{DeclaredSchema, FieldSpec, FieldType};
use crate::timestamp::parse_rfc3339_micros;

/// Partition name of generated batches.
pub const DATAGEN_PARTITION: &str = "datagen";

const MAX_ENTITIES: u64 = 10_000_000;
const MAX_DISORDER_MS: u64 = 86_400_000;
const MAX_EVENTS_PER_SECOND: f64 = 1_000_000.0;

/// Options of the generator; every field has a default, unknown fields are rejected.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatagenConfig {
    /// Number of events to generate (default 1 000 000).
    pub events: u64,
    /// PRNG seed; the same seed and options give identical output (default 42).
    pub seed: u64,
    /// Number of distinct cards (default 50 000; at most 10 000 000).
    pub cards: u64,
    /// Number of distinct merchants (default 2 000; at most 10 000 000).
    pub merchants: u64,
    /// Zipf exponent of card and merchant popularity (default 1.1).
    pub zipf_exponent: f64,
    /// RFC 3339 start of event time (default "2026-01-01T00:00:00Z").
    pub start: String,
    /// Mean event-time rate (default 20.0: 1 M events span about 14 days).
    pub events_per_second: f64,
    /// Bounded out-of-order arrival: every event arrives at most this much event time after
    /// the max event time already emitted (default 5000; at most one day).
    pub max_disorder_ms: u64,
    /// Fraction of events that reuse the previous event's exact timestamp (half of them also
    /// its card) (default 0.02).
    pub tie_ratio: f64,
    /// Fraction of events with a null amount (default 0.01).
    pub null_amount_ratio: f64,
    /// Probability that an event starts a card-testing burst: 5-30 tiny amounts (0.01-2.00) on
    /// one card, 0.1-1.5 s apart (default 0.0005).
    pub burst_ratio: f64,
    /// Rows per batch (default 8192).
    pub batch_size: usize,
}

impl Default for DatagenConfig {
    fn default() -> Self {
        Self {
            events: 1_000_000,
            seed: 42,
            cards: 50_000,
            merchants: 2_000,
            zipf_exponent: 1.1,
            start: "2026-01-01T00:00:00Z".into(),
            events_per_second: 20.0,
            max_disorder_ms: 5_000,
            tie_ratio: 0.02,
            null_amount_ratio: 0.01,
            burst_ratio: 0.0005,
            batch_size: 8192,
        }
    }
}

fn invalid(field: &'static str, detail: String) -> ConnectorError {
    ConnectorError::InvalidDatagenConfig { field, detail }
}

fn check_ratio(field: &'static str, value: f64) -> Result<(), ConnectorError> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{value} is not a probability; use a value between 0 and 1"),
        ))
    }
}

impl DatagenConfig {
    /// Checks every option, naming the first bad one and its accepted range.
    pub fn validate(&self) -> Result<(), ConnectorError> {
        for (field, value) in [("cards", self.cards), ("merchants", self.merchants)] {
            if !(1..=MAX_ENTITIES).contains(&value) {
                return Err(invalid(
                    field,
                    format!("{value} is out of range; use 1 to {MAX_ENTITIES}"),
                ));
            }
        }
        if !(self.zipf_exponent.is_finite() && (0.0..=10.0).contains(&self.zipf_exponent)) {
            return Err(invalid(
                "zipf_exponent",
                format!(
                    "{} is out of range; use 0 (uniform) to 10",
                    self.zipf_exponent
                ),
            ));
        }
        self.start_micros()?;
        if !(self.events_per_second > 0.0 && self.events_per_second <= MAX_EVENTS_PER_SECOND) {
            return Err(invalid(
                "events_per_second",
                format!(
                    "{} is out of range; use a rate above 0 and at most {MAX_EVENTS_PER_SECOND}",
                    self.events_per_second
                ),
            ));
        }
        if self.max_disorder_ms > MAX_DISORDER_MS {
            return Err(invalid(
                "max_disorder_ms",
                format!(
                    "{} is out of range; use at most {MAX_DISORDER_MS} (one day)",
                    self.max_disorder_ms
                ),
            ));
        }
        check_ratio("tie_ratio", self.tie_ratio)?;
        check_ratio("null_amount_ratio", self.null_amount_ratio)?;
        check_ratio("burst_ratio", self.burst_ratio)?;
        if self.batch_size == 0 {
            return Err(invalid("batch_size", "0 rows; use at least 1".into()));
        }
        Ok(())
    }

    /// Approximate last event time (µs since the epoch): the start plus `events` at the mean
    /// rate. Pipelines dead-letter event times too far past the wall clock, so callers warn when
    /// this lies in the future.
    pub fn approximate_end_micros(&self) -> Result<i64, ConnectorError> {
        let span = self.events as f64 / self.events_per_second * 1e6;
        Ok(self.start_micros()?.saturating_add(span as i64))
    }

    fn start_micros(&self) -> Result<i64, ConnectorError> {
        parse_rfc3339_micros(&self.start).ok_or_else(|| {
            invalid(
                "start",
                format!(
                    "{:?} is not an RFC 3339 timestamp; write e.g. \"2026-01-01T00:00:00Z\"",
                    self.start
                ),
            )
        })
    }
}

/// The fixed schema of generated transactions: txn_id Int64 (non-null), card_id Utf8,
/// merchant_id Utf8, amount Float64 (nullable), mcc Int64, country Utf8, event_time
/// Timestamp(Microsecond, None) (non-null). Only `amount` is nullable.
pub fn datagen_schema() -> DeclaredSchema {
    DeclaredSchema {
        fields: vec![
            FieldSpec::new("txn_id", FieldType::Int, false),
            FieldSpec::new("card_id", FieldType::String, false),
            FieldSpec::new("merchant_id", FieldType::String, false),
            FieldSpec::new("amount", FieldType::Float, true),
            FieldSpec::new("mcc", FieldType::Int, false),
            FieldSpec::new("country", FieldType::String, false),
            FieldSpec::new("event_time", FieldType::Timestamp, false),
        ],
        event_time: "event_time".into(),
    }
}

/// An event waiting in the reorder buffer, released in order of `(release, txn_id)`.
struct Pending {
    release: i64,
    event: Event,
}

impl Pending {
    fn key(&self) -> (i64, u64) {
        (self.release, self.event.txn_id)
    }
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    /// Reversed so that `BinaryHeap` (a max-heap) pops the smallest key first.
    fn cmp(&self, other: &Self) -> Ordering {
        other.key().cmp(&self.key())
    }
}

/// Iterator of [`SourceBatch`]es (partition "datagen", offsets = arrival sequence numbers
/// `0..events`). Same seed + config => identical output.
pub struct Datagen {
    config: DatagenConfig,
    schema: SchemaRef,
    model: Model,
    delays: Rng,
    max_delay_micros: u64,
    buffer: BinaryHeap<Pending>,
    /// Event time of the latest generated event; every later one is at least this.
    frontier: i64,
    generated: u64,
    emitted: u64,
    text: String,
}

impl Datagen {
    /// Validates `config` and prepares the generator.
    pub fn new(config: DatagenConfig) -> Result<Self, ConnectorError> {
        config.validate()?;
        let start = config.start_micros()?;
        Ok(Self {
            schema: datagen_schema().arrow_schema(),
            model: Model::new(&config, start),
            // A separate stream so that delays do not perturb the event model.
            delays: Rng::new(config.seed ^ 0x5DEE_CE66_D1CE_5EED),
            max_delay_micros: config.max_disorder_ms * 1_000,
            buffer: BinaryHeap::new(),
            frontier: i64::MIN,
            generated: 0,
            emitted: 0,
            text: String::with_capacity(32),
            config,
        })
    }

    /// Most events arrive nearly on time; one in five uses the full disorder budget.
    fn delay(&mut self) -> i64 {
        let bound = self.max_delay_micros;
        let limit = if self.delays.chance(0.8) {
            bound / 20
        } else {
            bound
        };
        self.delays.below(limit + 1) as i64
    }

    /// The next event in arrival order, `None` when all were emitted.
    fn next_arrival(&mut self) -> Option<Event> {
        loop {
            let releasable = self.buffer.peek().is_some_and(|top| {
                top.release <= self.frontier || self.generated >= self.config.events
            });
            if releasable {
                return self.buffer.pop().map(|p| p.event);
            }
            if self.generated >= self.config.events {
                return None;
            }
            let event = self.model.next_event();
            self.generated += 1;
            self.frontier = event.event_time;
            let release = event.event_time.saturating_add(self.delay());
            self.buffer.push(Pending { release, event });
        }
    }
}

/// Writes `prefix` and `value` zero-padded to at least `width` digits into `text` (replacing
/// its content); hand-rolled because `format!` dominated generation time.
fn padded_id(text: &mut String, prefix: &str, value: u64, width: usize) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    let mut rest = value;
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    text.clear();
    text.push_str(prefix);
    for _ in (digits.len() - start)..width {
        text.push('0');
    }
    for &d in &digits[start..] {
        text.push(char::from(d));
    }
}

/// Column builders of one output batch.
struct Columns {
    txn_id: Int64Builder,
    card_id: StringBuilder,
    merchant_id: StringBuilder,
    amount: Float64Builder,
    mcc: Int64Builder,
    country: StringBuilder,
    event_time: TimestampMicrosecondBuilder,
}

impl Columns {
    fn new(rows: usize) -> Self {
        Self {
            txn_id: Int64Builder::with_capacity(rows),
            card_id: StringBuilder::with_capacity(rows, rows * 11),
            merchant_id: StringBuilder::with_capacity(rows, rows * 7),
            amount: Float64Builder::with_capacity(rows),
            mcc: Int64Builder::with_capacity(rows),
            country: StringBuilder::with_capacity(rows, rows * 2),
            event_time: TimestampMicrosecondBuilder::with_capacity(rows),
        }
    }

    fn push(&mut self, event: &Event, text: &mut String) {
        self.txn_id.append_value(event.txn_id as i64);
        padded_id(text, "card_", event.card, 6);
        self.card_id.append_value(&*text);
        padded_id(text, "m_", event.merchant, 5);
        self.merchant_id.append_value(&*text);
        self.amount.append_option(event.amount);
        self.mcc.append_value(event.mcc);
        self.country.append_value(event.country);
        self.event_time.append_value(event.event_time);
    }

    fn finish(mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.txn_id.finish()),
            Arc::new(self.card_id.finish()),
            Arc::new(self.merchant_id.finish()),
            Arc::new(self.amount.finish()),
            Arc::new(self.mcc.finish()),
            Arc::new(self.country.finish()),
            Arc::new(self.event_time.finish()),
        ]
    }
}

impl Iterator for Datagen {
    type Item = SourceBatch;

    fn next(&mut self) -> Option<SourceBatch> {
        let remaining = self.config.events.saturating_sub(self.emitted);
        let rows = usize::try_from(remaining)
            .unwrap_or(usize::MAX)
            .min(self.config.batch_size);
        if rows == 0 {
            return None;
        }
        let mut columns = Columns::new(rows);
        let mut offsets = Vec::with_capacity(rows);
        let mut text = std::mem::take(&mut self.text);
        while offsets.len() < rows {
            let Some(event) = self.next_arrival() else {
                break;
            };
            columns.push(&event, &mut text);
            offsets.push(self.emitted);
            self.emitted += 1;
        }
        self.text = text;
        if offsets.is_empty() {
            return None;
        }
        // Cannot fail: the columns match the schema by construction and only `amount` has nulls.
        let batch = RecordBatch::try_new(self.schema.clone(), columns.finish()).ok()?;
        Some(SourceBatch {
            batch,
            partition: DATAGEN_PARTITION.to_string(),
            offsets,
        })
    }
}

/// Event times in arrival order, for tests of the ordering logic.
#[cfg(test)]
fn rows_in_order_for_test(config: DatagenConfig) -> Vec<i64> {
    let Ok(mut generator) = Datagen::new(config) else {
        return Vec::new();
    };
    std::iter::from_fn(|| generator.next_arrival().map(|e| e.event_time)).collect()
}

#[cfg(test)]
mod tests;
