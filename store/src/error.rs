//! Store errors.

use std::path::PathBuf;

/// Errors writing feature rows.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file or directory could not be created or written.
    #[error("cannot write `{path}`: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Parquet encoding failed.
    #[error("cannot encode Parquet file `{path}`: {message}")]
    Parquet {
        /// The path.
        path: PathBuf,
        /// The cause.
        message: String,
    },
    /// The online store failed.
    #[error("online store `{store}`: {message}")]
    Online {
        /// Where the store is (no credentials).
        store: String,
        /// What went wrong.
        message: String,
    },
    /// A Delta Lake log could not be written or read.
    #[error("Delta table `{table}`: {message}")]
    Delta {
        /// The table directory (a path or URL).
        table: String,
        /// What went wrong.
        message: String,
    },
    /// An object-store request failed.
    #[error("object store `{location}`: {message}")]
    Object {
        /// The object or prefix (a URL without credentials).
        location: String,
        /// What went wrong.
        message: String,
    },
    /// A batch's schema differs from the view's.
    #[error("feature rows for `{view}` changed schema: {message}")]
    Schema {
        /// The view.
        view: String,
        /// What differs.
        message: String,
    },
}
