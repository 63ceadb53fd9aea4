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
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// SQL is wrong or failed to execute.
    #[error(transparent)]
    Sql(#[from] SqlError),
    /// A source or the dead-letter output failed.
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    /// Window kernels refused input (a runtime bug, reported rather than panicking).
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// Feature rows could not be written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A checkpoint cannot be written, read or used.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// Several problems (from validation).
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Many(Vec<JobError>),
    /// Anything else, with context.
    #[error("{0}")]
    Other(String),
}

impl JobError {
    /// `e` as an error of view `view` (its name leads the message).
    pub fn in_view(view: &str, e: impl std::fmt::Display) -> Self {
        JobError::Other(format!("view `{view}`: {e}"))
    }
}
