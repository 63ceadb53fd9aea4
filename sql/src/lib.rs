//! Quiver SQL: the only crate that imports DataFusion.
//!
//! - [`Transform`]: a SQL statement applied to every batch of a stream (filters, computed
//!   columns, CASE, scalar functions), executed by DataFusion.
//! - [`FeatureView`]: a feature view's SQL compiled into a plan for Quiver's incremental window
//!   kernels: the row-local part below the windows and the projection above them still run in
//!   DataFusion, the window aggregates run in `quiver-gpu`.
//! - `reference`: DataFusion's own answer to the same SQL over a whole bounded input, the
//!   oracle of the differential tests.

pub mod batch_table;
pub mod diagnostic;
pub mod error;
pub mod exact;
pub mod feature_view;
pub mod key_shard;
pub mod lineage;
pub mod normalize;
pub mod reference;
pub mod session;
pub mod transform;
pub mod window_frame;

pub use diagnostic::Diagnostic;
pub use error::SqlError;
pub use feature_view::{FeatureView, ViewInputs};
pub use key_shard::KeyShard;
pub use lineage::{OFFSET_COLUMN, PARTITION_COLUMN};
pub use session::StreamSchema;
pub use transform::{Transform, TransformOutput};
