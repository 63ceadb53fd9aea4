//! The feature store's registry: view versions (hashes of their normalized definitions), each
//! view's `latest` version, and `quiver apply`, which registers and backfills new versions.
//! Feature rows of each version live under the store's `offline/` directory as Parquet (Delta
//! Lake tables come next).

pub mod apply;
pub mod compact;
pub mod definition;
pub mod event_log;
pub mod status;
pub mod store;

pub use apply::{apply, Applied, ApplyReport};
pub use definition::{ViewDefinition, ENGINE_SEMANTICS};
pub use store::Registry;
