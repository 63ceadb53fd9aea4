//! Quiver's end-to-end tests, one module per concern, linked into one test binary: each binary
//! links DataFusion, and nine of them cost minutes of linking and gigabytes of disk per build.

mod bad_input;
mod config_errors;
mod differential;
mod exact_numbers;
mod lineage;
mod object_store_s3;
mod offline_delta;
mod online_writes;
mod parquet_schema;
mod partitions;
mod registry;
mod shards;
mod snapshot;
mod status;
mod store_run;
mod store_s3;
mod training_set;
