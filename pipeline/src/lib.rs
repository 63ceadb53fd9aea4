//! Quiver job runtime: pipeline configs, the streaming run, backfill and validation, and the
//! `quiver` binary.
//!
//! Data flow (docs/architecture.md): source partitions (with positions) → SQL transforms →
//! event time and per-partition watermarks (late events dead-lettered) → reorder buffer → one
//! [`view_operator::ViewOperator`] per feature view (keyed incremental window state) → sinks
//! (feature rows staged per epoch) → checkpoints that commit source positions, state and
//! outputs together.

pub mod audit;
pub mod backfill;
pub mod batch_compute;
pub mod batch_evaluator;
pub mod byte_size;
pub mod checkpoint;
pub mod clock;
pub mod compare;
pub mod compile;
pub mod config;
pub mod coordinator;
pub mod dead_letters;
pub mod duration;
pub mod error;
pub mod evaluation_permits;
pub mod event_time;
pub mod fault;
pub mod ingest;
pub mod kafka_output;
pub mod keyed_input;
pub mod lineage;
pub mod online;
pub mod openlineage;
pub mod operator;
pub mod outputs;
pub mod parquet_file;
pub mod partition_copies;
pub mod prepared_rows;
pub mod produce_demo;
pub mod progress;
pub mod reading_split;
pub mod registry;
pub mod reorder;
pub mod resident;
pub mod run;
pub mod run_gauges;
pub mod serve;
pub mod shard;
pub mod shard_instance;
pub mod shared_input;
pub mod source;
pub mod source_schema;
pub mod spill;
pub mod sql_text;
pub mod store_target;
pub mod summary;
pub mod time_cuts;
pub mod training_set;
pub mod unread_columns;
pub mod validate;
pub mod view_operator;
pub mod view_task;
pub mod watermark;

pub use compile::CompiledPipeline;
pub use config::LoadedConfig;
pub use error::JobError;
pub use summary::RunSummary;
