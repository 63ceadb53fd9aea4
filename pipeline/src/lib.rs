//! Quiver job runtime: pipeline configs, the streaming run, backfill and validation, and the
//! `quiver` binary.
//!
//! Data flow (DESIGN.md section 2): source batches (with source offsets) → SQL transforms →
//! event time and watermark (late events dead-lettered) → reorder buffer → one
//! [`view_operator::ViewOperator`] per feature view (keyed incremental window state) → feature
//! rows (Parquet files under the output directory).

pub mod backfill;
pub mod compile;
pub mod config;
pub mod dead_letters;
pub mod duration;
pub mod error;
pub mod event_time;
pub mod ingest;
pub mod outputs;
pub mod progress;
pub mod reorder;
pub mod run;
pub mod source;
pub mod sql_text;
pub mod summary;
pub mod validate;
pub mod view_operator;
pub mod view_task;
pub mod watermark;

pub use compile::CompiledPipeline;
pub use config::LoadedConfig;
pub use error::JobError;
pub use summary::RunSummary;
