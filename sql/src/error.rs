//! Errors of the SQL layer.

use crate::diagnostic::Diagnostic;

/// An error compiling or running SQL.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The user's SQL is wrong or uses a form Quiver does not support.
    #[error("{0}")]
    Invalid(Box<Diagnostic>),
    /// DataFusion failed while executing a plan on data.
    #[error("{context}: {message}")]
    Execution {
        /// What was being executed (transform or view name).
        context: String,
        /// DataFusion's message.
        message: String,
    },
}

impl From<Diagnostic> for SqlError {
    fn from(d: Diagnostic) -> Self {
        SqlError::Invalid(Box::new(d))
    }
}

impl SqlError {
    /// The diagnostic, for invalid SQL.
    pub fn diagnostic(&self) -> Option<&Diagnostic> {
        match self {
            SqlError::Invalid(d) => Some(d),
            SqlError::Execution { .. } => None,
        }
    }

    pub(crate) fn execution(context: &str, e: impl std::fmt::Display) -> Self {
        SqlError::Execution {
            context: context.to_string(),
            message: e.to_string(),
        }
    }
}
