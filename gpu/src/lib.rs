//! Quiver feature kernels.
//!
//! This crate holds the math of windowed feature aggregates, in two shapes:
//! - [`KeyedWindows`]: per-key sliding window state updated incrementally, one event at a time,
//!   in event-time order (streaming runs);
//! - [`WindowBackend`]: segmented evaluation of a whole input sorted by key and time (backfill),
//!   implemented by the CPU kernels ([`CpuBackend`]: the streaming state's additions and
//!   removals, in the same order, over the sorted rows in place) and by
//!   CUDA ([`cuda::CudaBackend`], cudarc with dynamic loading and NVRTC; it builds and the
//!   binary runs where no CUDA exists). [`open_backend`] picks one for a [`Device`].
//!
//! Semantics (DESIGN.md section 3.1): for an event of key `k` at time `t`, a `RANGE` window of
//! width `w` covers every event of `k` with event time in `[t - w, t]`, ties at `t` included;
//! `UNBOUNDED PRECEDING` covers every event of `k` up to and including `t`. Null inputs are
//! ignored as SQL aggregates ignore them.

pub mod agg;
pub mod as_known_at;
pub mod backend;
pub mod compensated;
mod counted_windows;
pub mod cpu_backend;
pub mod cuda;
pub mod delta_times;
pub mod double_double;
pub mod error;
pub mod extrema;
pub mod key_state;
pub mod keyed;
pub mod moments;
pub mod open;
pub mod output;
pub mod plan;
mod prefetch;
pub mod read_at;
mod segment_windows;
pub mod sort;
#[cfg(test)]
mod test_rng;

pub use agg::AggKind;
pub use as_known_at::{evaluate_as_known_at, KnownEvents};
pub use backend::{BackendStats, Device, Scatter, SortedRows, WindowBackend, DEFAULT_GPU_MIN_ROWS};
pub use cpu_backend::CpuBackend;
pub use error::KernelError;
pub use key_state::{
    segments_needed, InputValue, KeyWindowState, PartWrites, PartsError, ReadState, StoredParts,
    WholeParts,
};
pub use keyed::{
    ChangedKey, InputColumn, KeyedWindows, StateChanges, WindowSnapshot, WindowSnapshotRef,
};
pub use open::{open_backend, OpenedBackend};
pub use output::FeatureOutput;
pub use plan::{Frame, InputKind, WindowPlan, WindowSpec};
pub use read_at::read_at;
pub use sort::{dense_key_ids, group_rows, key_time_order, KeyTimeOrder};
