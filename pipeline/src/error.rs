//! Job errors.

use crate::config::ConfigError;
use quiver_connectors::ConnectorError;
use quiver_gpu::KernelError;
use quiver_sql::SqlError;
use quiver_store::StoreError;

/// Why a job could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The config is wrong.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// SQL is wrong or failed to execute.
    #[error("{0}")]
    Sql(#[from] SqlError),
    /// A source or the dead-letter output failed.
    #[error("{0}")]
    Connector(#[from] ConnectorError),
    /// Window kernels refused input (a runtime bug, reported rather than panicking).
    #[error("{0}")]
    Kernel(#[from] KernelError),
    /// Feature rows could not be written.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// Several problems (from validation).
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Many(Vec<JobError>),
    /// Anything else, with context.
    #[error("{0}")]
    Other(String),
}
