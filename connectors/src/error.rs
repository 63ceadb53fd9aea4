//! The single error type of this crate.
//!
//! Every message says what went wrong, where (path, location, column, field) and how to fix it.
//! Bad *records* are never errors: they become [`crate::DeadLetter`]s. Errors are reserved for
//! problems that make a whole input, config or output unusable.

use std::path::PathBuf;

/// Errors raised by sources, decoders and sinks.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The declared input schema is inconsistent.
    #[error("invalid declared schema: {detail}; fix the `schema` section of the pipeline config")]
    InvalidSchema {
        /// What is wrong with the schema.
        detail: String,
    },

    /// A datagen option is out of range.
    #[error("invalid datagen option `{field}`: {detail}")]
    InvalidDatagenConfig {
        /// Name of the offending option.
        field: &'static str,
        /// What is wrong and what is accepted.
        detail: String,
    },

    /// An input location could not be understood (bad URL, bad pattern, unsupported scheme).
    #[error("invalid input location `{location}`: {detail}")]
    InvalidLocation {
        /// The location as given by the user.
        location: String,
        /// What is wrong and how to write it instead.
        detail: String,
    },

    /// An input location exists syntactically but matches no object.
    #[error(
        "input location `{location}` matches no files; check the path or URL, the glob pattern \
         (wildcards `*` and `?` are allowed in the last path segment only) and that the files exist"
    )]
    NoMatch {
        /// The location as given by the user.
        location: String,
    },

    /// An object store request failed.
    #[error(
        "object store error at `{location}`: {source}; check the URL, credentials and network"
    )]
    ObjectStore {
        /// The location or object being accessed.
        location: String,
        /// The underlying object store error.
        #[source]
        source: object_store::Error,
    },

    /// An input index passed to [`crate::InputFiles::read`] is out of range.
    #[error("input file index {index} is out of range: only {len} files were resolved")]
    FileIndex {
        /// The requested index.
        index: usize,
        /// Number of resolved files.
        len: usize,
    },

    /// A local file could not be read or written.
    #[error("I/O error on `{path}` while {action}: {source}; check that the path is writable and the disk is not full", path = path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// What was being done, e.g. "writing dead letters".
        action: &'static str,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A CSV file cannot be decoded as a whole (its header does not fit the declared schema).
    #[error("CSV file `{partition}`: {detail}")]
    Csv {
        /// The file (partition) being decoded.
        partition: String,
        /// What is wrong with the header and how to fix it.
        detail: String,
    },

    /// A Parquet file cannot be decoded as a whole (corrupt footer, incompatible column type).
    #[error("Parquet file `{partition}`: {detail}")]
    Parquet {
        /// The file (partition) being decoded.
        partition: String,
        /// What is wrong and how to fix it.
        detail: String,
    },

    /// Output could not be written.
    #[error("cannot write `{path}`: {detail}", path = path.display())]
    Write {
        /// The output file.
        path: PathBuf,
        /// What went wrong and how to fix it.
        detail: String,
    },

    /// Kafka refused or failed something (broker unreachable, unknown topic, bad setting).
    #[error("Kafka: {context}: {detail}")]
    Kafka {
        /// What was being done (and on which topic or partition).
        context: String,
        /// What went wrong and how to fix it; never a setting's value.
        detail: String,
    },

    /// Arrow refused to build a batch (an internal invariant of this crate was broken).
    #[error("internal error while building an Arrow batch for `{context}`: {source}; please report this as a bug")]
    Arrow {
        /// Which partition or output the batch was for.
        context: String,
        /// The underlying Arrow error.
        #[source]
        source: arrow::error::ArrowError,
    },
}

impl ConnectorError {
    /// A [`ConnectorError::Kafka`]: what was being done, and what went wrong (never a setting's
    /// value).
    pub fn kafka(context: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        ConnectorError::Kafka {
            context: context.into(),
            detail: detail.to_string(),
        }
    }
}
