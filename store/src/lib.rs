//! Quiver feature store.
//!
//! Today: the [`Sink`] contract (rows staged per epoch, published when the epoch's checkpoint
//! commits) and per-event feature rows written as Parquet files, one directory per view
//! ([`FeatureRowWriter`]). Next (DESIGN.md): the registry of view versions, the Delta Lake
//! offline store with source positions in each commit, and the online store.

pub mod delta;
pub mod error;
pub mod feature_rows;
pub mod location;
pub mod object_parquet;
pub mod online;
pub mod parquet_stats;
pub mod sink;

pub use error::StoreError;
pub use feature_rows::{remove_other_runs, FeatureRowWriter};
pub use location::{Entry, StoreDir};
pub use sink::{publish, publish_into, sync_dir, write_atomically, Sink, StagedFile};

/// Columns whose names start with this prefix are Quiver's internal bookkeeping (e.g. source
/// offsets) and are not written as features.
pub const INTERNAL_COLUMN_PREFIX: &str = "__quiver_";
