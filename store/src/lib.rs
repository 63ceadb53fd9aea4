//! Quiver feature store.
//!
//! Today: the [`Sink`] contract (rows staged per epoch, published when the epoch's checkpoint
//! commits) and per-event feature rows written as Parquet files, one directory per view
//! ([`FeatureRowWriter`]). Next (DESIGN.md): the registry of view versions, the Delta Lake
//! offline store with source positions in each commit, and the online store.

pub mod column_layout;
pub mod delta;
pub mod error;
pub mod feature_rows;
pub mod location;
pub mod object_parquet;
pub mod online;
mod paced_write;
pub mod parquet_stats;
pub mod sink;

pub use error::StoreError;
pub use feature_rows::{remove_other_runs, FeatureRowWriter};
pub use location::{Entry, StoreDir};
pub use sink::{publish, publish_into, sync_dir, write_atomically, Sink, StagedFile};

/// The column of the store's tables (feature tables and event logs) with when each row became
/// available, in microseconds since the epoch: NULL in files as written, meaning the time of
/// the Delta commit that added the file (known only at commit); compaction writes that time
/// into the files it merges, which the log no longer ties to their commits.
pub const AVAILABLE_COLUMN: &str = "_quiver_available_at";

/// The availability column's field (nullable `Int64`), last in every store table.
pub fn availability_field() -> arrow::datatypes::Field {
    arrow::datatypes::Field::new(AVAILABLE_COLUMN, arrow::datatypes::DataType::Int64, true)
}

/// Columns whose names start with this prefix are Quiver's internal bookkeeping (e.g. source
/// offsets) and are not written as features.
pub const INTERNAL_COLUMN_PREFIX: &str = "__quiver_";
